use harness::{Service, harness_test};

#[harness_test(topology = "topologies/kv.yaml")]
fn t(cache: Service) {
    let _ = cache;
}

harness::main!();
