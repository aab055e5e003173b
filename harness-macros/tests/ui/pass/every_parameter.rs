// Every kind of parameter, return type and option compiles. The tests are ignored: this case
// only needs to build and list them.
use std::net::SocketAddr;

use harness::{Service, Topology, harness_test};

#[harness_test(topology = "topologies/kv.yaml", ignore)]
async fn by_name(api_server: Service, cache: SocketAddr) {
    let _ = (api_server.addr(), cache);
}

#[harness_test(topology = "topologies/kv.yaml", ignore = "needs nothing", timeout = "30s")]
async fn by_attribute(#[service("api-server")] api: std::net::SocketAddr, topo: &Topology) {
    let _ = (api, topo.services());
}

#[harness_test(topology = "topologies/kv.yaml", overlays = ["topologies/extra.yaml"], isolated, ignore)]
async fn from_an_overlay(metrics: Service) -> Result<(), Box<dyn std::error::Error>> {
    let _ = metrics.name();
    Ok(())
}

mod nested {
    #[harness::harness_test(topology = "topologies/kv.yaml", ignore)]
    async fn in_a_module(_topo: &harness::Topology) -> Result<(), String> {
        Ok(())
    }
}

harness::main!();
