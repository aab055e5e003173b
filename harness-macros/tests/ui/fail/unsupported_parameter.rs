use harness::{Topology, harness_test};

#[harness_test(topology = "topologies/kv.yaml")]
async fn t(cache: u16, topo: &mut Topology, (a, b): (u8, u8)) {
    let _ = (cache, topo, a, b);
}

harness::main!();
