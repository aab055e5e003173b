//! harness as its users write tests: `#[harness_test]` functions over the demo topology
//! (fixtures/topologies/demo.yaml), run by `harness::main!()`. Declared in Cargo.toml with
//! `harness = false`.
//!
//! The topology's binaries are `./target/debug/NAME`, relative to the directory the tests run
//! in (the workspace root under cargo) or to `HARNESS_BASE_DIR`. cargo does not build another
//! package's binaries for this target, so the runner's setup builds them when they are missing
//! or stale (`cargo build -p harness-fixtures --bins`, into this target directory).

#[path = "support/fixtures.rs"]
mod fixtures;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Mutex;

use harness::{Service, Topology, harness_test};

/// Sends one HTTP/1.1 request and returns the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn echo_answers_at_its_address(echo: Service) {
    let mut stream = TcpStream::connect(echo.addr()).unwrap();
    stream.write_all(b"hello harness\n").unwrap();
    let mut answer = [0; 14];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"hello harness\n");
    assert_eq!(echo.name(), "echo");
    assert_eq!(echo.host(), echo.addr().ip());
    assert_eq!(echo.env_var("PORT"), Some(echo.port().to_string().as_str()));
}

#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn kv_api_stores_through_kv_store(
    kv_api: Service,
    kv_store: SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    // harness told kv-api where its dependency is.
    assert_eq!(
        kv_api.env_var("KV_STORE_ADDR"),
        Some(kv_store.to_string().as_str())
    );
    assert_eq!(kv_api.env_var("KV_BACKEND"), Some("upstream"));
    assert_eq!(http(kv_api.addr(), "PUT", "/kv/greeting", "hi").0, 204);
    // The value went through kv-api into kv-store.
    assert_eq!(
        http(kv_store, "GET", "/kv/greeting", ""),
        (200, "hi".to_string())
    );
    Ok(())
}

#[harness_test(topology = "fixtures/topologies/demo.yaml", timeout = "2m")]
async fn web_is_healthy(#[service("web")] frontend: Service) {
    assert!(frontend.url("http").starts_with("http://127.0.0.1:"));
    assert_eq!(http(frontend.addr(), "GET", "/health", "").0, 200);
}

#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn the_topology_names_every_service(topo: &Topology) {
    let names: Vec<String> = topo
        .services()
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    assert_eq!(names, ["kv-store", "kv-api", "echo", "web"]);
    assert_eq!(
        topo.addr("echo").unwrap(),
        topo.service("echo").unwrap().addr()
    );
    let unknown = topo.addr("cache").unwrap_err().to_string();
    assert!(
        unknown.contains("find service cache") && unknown.contains("kv-store, kv-api, echo, web"),
        "{unknown}"
    );
    assert!(topo.logs("cache").is_err());
}

/// The state directories the shared tests saw: one running copy means one directory.
static SHARED_COPIES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn record_copy(topo: &Topology) {
    let dir = topo
        .state_dir()
        .expect("a running topology has a state directory");
    let mut seen = SHARED_COPIES.lock().unwrap();
    seen.push(dir);
    seen.dedup();
    assert_eq!(
        seen.len(),
        1,
        "the tests of one topology ran on different copies: {seen:?}"
    );
}

#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn shares_one_copy_a(topo: &Topology) {
    record_copy(topo);
}

#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn shares_one_copy_b(topo: &Topology) {
    record_copy(topo);
}

#[harness_test(
    topology = "fixtures/topologies/demo.yaml",
    overlays = ["tests/user_demo/overlay.yaml"]
)]
async fn overlays_add_services_and_settings(
    second_echo: Service,
    kv_store: Service,
    topo: &Topology,
) {
    assert_eq!(kv_store.env_var("KV_NOTE"), Some("overlaid"));
    assert_eq!(kv_store.env_var("KV_BACKEND"), Some("memory"));
    TcpStream::connect(second_echo.addr()).unwrap();
    // Another file set, so another copy than the plain demo's.
    let dir = topo.state_dir().unwrap();
    assert!(
        !SHARED_COPIES.lock().unwrap().contains(&dir),
        "the plain demo's copy"
    );
}

/// A test may stop, start and restart services of a shared copy (under nextest, the
/// supervisor that owns the copy does it). No other test names this file, so the restart
/// disturbs nobody.
#[harness_test(topology = "tests/user_demo/restart.yaml")]
async fn restarts_a_service_of_its_shared_copy(topo: &Topology, kv_api: Service) {
    assert_eq!(http(kv_api.addr(), "PUT", "/kv/k", "before").0, 204);
    let store = topo.addr("kv-store").unwrap();
    topo.restart("kv-store").await.unwrap();
    assert_eq!(topo.addr("kv-store").unwrap(), store, "same port");
    assert_eq!(http(kv_api.addr(), "GET", "/kv/k", "").0, 404, "emptied");
    topo.stop("kv-store").await.unwrap();
    assert!(TcpStream::connect(store).is_err(), "stopped");
    let error = topo.restart("no-such").await.unwrap_err().to_string();
    assert!(error.contains("no-such"), "{error}");
    topo.start("kv-store").await.unwrap();
    assert_eq!(http(kv_api.addr(), "PUT", "/kv/k", "after").0, 204);
    assert_eq!(http(kv_api.addr(), "GET", "/kv/k", "").1, "after");
}

mod isolated {
    use super::*;

    #[harness_test(topology = "fixtures/topologies/demo.yaml", isolated)]
    async fn restarts_and_stops_in_a_private_copy(topo: &Topology) {
        let dir = topo.manager().state_dir().unwrap();
        assert!(
            !SHARED_COPIES.lock().unwrap().contains(&dir),
            "not a private copy"
        );
        let kv_api = topo.addr("kv-api").unwrap();
        assert_eq!(http(kv_api, "PUT", "/kv/k", "before").0, 204);
        // kv-store keeps its values in memory: a restart empties it, on the same port.
        let store = topo.addr("kv-store").unwrap();
        topo.restart("kv-store").await.unwrap();
        assert_eq!(topo.addr("kv-store").unwrap(), store);
        assert_eq!(http(kv_api, "GET", "/kv/k", "").0, 404);
        topo.stop("echo").await.unwrap();
        assert!(TcpStream::connect(topo.addr("echo").unwrap()).is_err());
        topo.start("echo").await.unwrap();
        TcpStream::connect(topo.addr("echo").unwrap()).unwrap();
    }
}

#[harness_test(
    topology = "fixtures/topologies/demo.yaml",
    ignore = "shows how a test is left out unless asked for"
)]
async fn runs_only_when_asked(echo: Service) {
    TcpStream::connect(echo.addr()).unwrap();
}

/// Builds the fixture programs the topology starts, if they are missing or stale.
fn build_fixture_programs() {
    for name in ["kv-server", "echo-server", "http-health"] {
        fixtures::bin(name);
    }
}

harness::main!(setup = build_fixture_programs);

/// A command runs beside a process service, with its environment and working directory; under
/// cargo test the runner that owns the shared copy runs it, under nextest the supervisor.
#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn exec_runs_a_command_beside_a_service(echo: Service) {
    let out = echo
        .exec(&["sh", "-c", "echo \"$PORT\"; echo to-stderr >&2; exit 3"])
        .await
        .unwrap();
    assert_eq!(out.stdout, echo.port().to_string(), "{out:?}");
    assert_eq!(out.stderr, "to-stderr", "{out:?}");
    assert_eq!((out.code, out.success()), (Some(3), false), "{out:?}");
    // Its own port, by number; a port it does not declare has no address.
    assert_eq!(echo.addr_of(echo.port()), Some(echo.addr()));
    assert_eq!(echo.addr_of(1), None);
    assert_eq!(echo.ports(), vec![(echo.port(), echo.addr())]);
    let missing = echo.exec(&["/no/such/program"]).await.unwrap_err();
    assert!(missing.to_string().contains("no such program"), "{missing}");
}

/// Data of a test's own in a shared copy: keys under a prefix no other test, run or process
/// has, so tests sharing the store never see each other's keys.
#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn a_test_prefix_keeps_a_tests_data_apart(kv_api: Service) {
    let prefix = harness::testing::test_prefix();
    assert!(
        prefix.starts_with("a_test_prefix_keeps_a_tests_data_apart_"),
        "{prefix}"
    );
    assert_eq!(
        harness::testing::test_prefix(),
        prefix,
        "stable in the test"
    );
    let key = format!("/kv/{prefix}_k");
    assert_eq!(http(kv_api.addr(), "PUT", &key, "mine").0, 204);
    assert_eq!(http(kv_api.addr(), "GET", &key, "").1, "mine");
}
