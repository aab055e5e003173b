use harness::{Service, harness_test};

#[harness_test(topology = "topologies/missing.yaml")]
async fn t(api_server: Service) {
    let _ = api_server;
}

harness::main!();
