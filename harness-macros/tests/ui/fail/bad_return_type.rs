use harness::harness_test;

#[harness_test(topology = "topologies/kv.yaml")]
async fn t() -> u32 {
    7
}

harness::main!();
