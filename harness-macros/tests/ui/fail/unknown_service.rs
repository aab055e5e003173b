use harness::{Service, harness_test};

#[harness_test(topology = "topologies/kv.yaml")]
async fn t(api_sever: Service, #[service("db")] database: Service) {
    let _ = (api_sever, database);
}

harness::main!();
