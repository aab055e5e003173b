// A test that runs: the topology's processes start, the parameters receive them, and the run
// passes.
use harness::{Service, Topology, harness_test};

#[harness_test(topology = "topologies/kv.yaml", timeout = "60s")]
async fn receives_running_services(api_server: Service, topo: &Topology) {
    assert_eq!(api_server.name(), "api-server");
    assert_eq!(api_server.env_var("GREETING"), Some("hello"));
    assert_eq!(api_server.try_addr(), None);
    let names: Vec<String> = topo.services().iter().map(|s| s.name().to_string()).collect();
    assert_eq!(names, ["api-server", "cache"]);
    // A command runs beside the cache, so it runs (the shared copy's owner runs it).
    let beside = topo.exec("cache", &["true"]).await.unwrap();
    assert!(beside.success(), "{beside:?}");
}

harness::main!();
