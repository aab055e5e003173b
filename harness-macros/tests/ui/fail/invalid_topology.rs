use harness::{Service, harness_test};

// Every mistake of the file is one compile error at its path, each with its line and column.
#[harness_test(topology = "topologies/typo.yaml")]
async fn t(api_server: Service) {
    let _ = api_server;
}

harness::main!();
