use harness::{Service, harness_test};

// harness is built here without its `tokio` feature.
#[harness_test(topology = "topologies/kv.yaml", runtime = "tokio")]
async fn t(api_server: Service) {
    let _ = api_server;
}

#[harness_test(topology = "topologies/kv.yaml", runtime = "smol")]
async fn u() {}

harness::main!(runtime = "tokio-multi-thread");
