//! ADR-007's Hybrid Topology Example, end to end on emulated hosts
//! (`fixtures/topologies/hybrid.yaml` with the overlay `hybrid-lab.yaml`): an API server here,
//! a real PostgreSQL here, a real Redis on a LAN host over `remote_lan`, and the load-generator
//! package deployed to a WAN host that joins the run's WireGuard mesh. The load generator sends
//! PUT requests to the API server at the mesh address harness injects, and the test reads what
//! arrived.
//!
//! Needs root, iproute2, openssh-server, wireguard-tools, wireguard-go, redis-server and
//! postgresql; without them the test prints why and passes, unless `HARNESS_REQUIRE_LAB=1`
//! (CI), where that is a failure.

#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/http.rs"]
mod http;
#[path = "support/lab.rs"]
mod lab_support;
#[expect(dead_code, reason = "this suite uses only the deadline helpers")]
#[path = "support/local.rs"]
mod local_support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use harness::orchestrator::ServiceManager;
use harness::registry::{Registry, RegistryEvent};
use harness::topology::TopologyConfig;

use fixtures::{bin, env_value, workspace_dir};
use http::http;

/// How long the test may take before it fails instead of hanging. Never a measurement.
const TEST_DEADLINE: Duration = Duration::from_secs(180);

/// The prefixes of what this process registered under `registry` (labs, meshes): the entries
/// whose `owner` file names this pid.
fn owned(registry: &str) -> Vec<String> {
    let pid = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir(registry) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("owner"))
                .is_ok_and(|owner| owner.split_whitespace().next() == Some(pid.as_str()))
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

fn in_subnet(ip: IpAddr, subnet: &str) -> bool {
    let (base, len) = subnet.split_once('/').expect("a subnet");
    let (IpAddr::V4(ip), Ok(base), Ok(len)) =
        (ip, base.parse::<std::net::Ipv4Addr>(), len.parse::<u32>())
    else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(base) & mask
}

#[test]
fn the_adr_hybrid_topology_runs_on_emulated_hosts_and_its_traffic_arrives() {
    let programs = [
        "/usr/bin/redis-server",
        "/usr/bin/wg",
        "/usr/bin/wireguard-go",
    ];
    if lab_support::skip_without_lab(&programs) {
        return;
    }
    smol::block_on(local_support::within(TEST_DEADLINE, "the test", async {
        let root = workspace_dir();
        let dir = tempfile::tempdir().unwrap();
        // The API server from wherever this build put the fixtures.
        let local = dir.path().join("local.yaml");
        std::fs::write(
            &local,
            format!(
                "services:\n  api-server:\n    target:\n      process: {{ binary: {} }}\n  \
                 load-generator:\n    files:\n      \
                 - {{ content: \"api ${{API_SERVER_ADDR}}\\n\", target: conf/extra.conf }}\n",
                bin("kv-server").display()
            ),
        )
        .unwrap();
        let topology = TopologyConfig::load_with_overlays(
            root.join("fixtures/topologies/hybrid.yaml"),
            &[root.join("fixtures/topologies/hybrid-lab.yaml"), local],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mesh_subnet = topology.network.wireguard_subnet.to_string();
        let registry = Registry::new();
        let mut events = registry.subscribe_with(Default::default(), 4096);
        let manager = ServiceManager::new(topology, registry).with_base_dir(root);
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let labs = owned(harness::lab::REGISTRY_DIR);
        let meshes = owned(harness::network::MESH_REGISTRY_DIR);
        assert_eq!((labs.len(), meshes.len()), (1, 1), "{labs:?} {meshes:?}");

        // The LAN service has its LAN address, and the API server here is told that one.
        let cache = manager.status("cache-server").await.unwrap().addr.unwrap();
        assert!(
            in_subnet(cache.ip(), "10.231.0.0/16"),
            "cache-server at {cache}"
        );
        let state = manager.state_dir().expect("a state dir");
        assert_eq!(
            env_value(&state.join("api-server.env"), "CACHE_SERVER_ADDR"),
            cache.to_string()
        );
        // The mesh service is told the API server's address on the mesh.
        let api = manager.status("api-server").await.unwrap().addr.unwrap();
        let told: SocketAddr = env_value(&state.join("load-generator.env"), "API_SERVER_ADDR")
            .parse()
            .unwrap();
        assert!(in_subnet(told.ip(), &mesh_subnet), "API_SERVER_ADDR={told}");
        assert_eq!(told.port(), api.port());
        // Its file is on its host, in its service directory, where a command runs.
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let seen = manager
            .exec(
                "load-generator",
                &argv(&["sh", "-c", "cat conf/extra.conf; ls current/"]),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(seen.success(), "{seen:?}");
        assert_eq!(
            seen.stdout.first(),
            Some(&format!("api {told}")),
            "{seen:?}"
        );
        assert!(seen.stdout.iter().any(|l| l == "manifest.yaml"), "{seen:?}");

        // The deployment reported its steps as `deployment_progress` events.
        let mut stages = Vec::new();
        while let Ok(event) = events.try_recv() {
            if let RegistryEvent::DeploymentProgress(p) = &event.event {
                assert_eq!(
                    (p.service.as_str(), p.host.as_str()),
                    ("load-generator", "load-host")
                );
                stages.push(p.stage.clone());
            }
        }
        for stage in ["upload", "start", "health"] {
            assert!(stages.iter().any(|s| s == stage), "{stage} in {stages:?}");
        }

        // What the load generator sent arrived, through PostgreSQL and Redis.
        let deadline = Instant::now() + Duration::from_secs(30);
        let body = loop {
            let (status, body) = {
                let answer = http(api, "GET", "/kv/load-generator", "");
                (answer.status, answer.body)
            };
            if status == 200 && body.starts_with("sent ") {
                break body;
            }
            assert!(
                Instant::now() < deadline,
                "nothing from the load generator arrived: {status} {body}"
            );
            smol::Timer::after(Duration::from_millis(200)).await;
        };
        let sent: u64 = body["sent ".len()..].trim().parse().unwrap();
        assert!(sent > 0, "{body}");

        manager.stop_all().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(owned(harness::lab::REGISTRY_DIR), Vec::<String>::new());
        assert_eq!(
            owned(harness::network::MESH_REGISTRY_DIR),
            Vec::<String>::new()
        );
        assert_eq!(harness::lab::leftovers(&labs[0]), Vec::<String>::new());
        assert_eq!(
            harness::network::mesh_leftovers(&meshes[0]),
            Vec::<String>::new()
        );
    }));
}
