//! One container from a local image, started and torn down three ways in the same run:
//!
//! - the floor a user has by hand: `docker run -d -p 127.0.0.1:PORT:8080 IMAGE`, polling
//!   `GET /` through the published port until it answers 200, then `docker rm -f`;
//! - harness: a topology with one `docker:` service of the same image and an `http` health
//!   check on `/` (`ServiceManager::start_all`, then `stop_all`);
//! - testcontainers-rs, when its peer binary is built (`benches/peers/testcontainers`, see its
//!   README); skipped with a note otherwise.
//!
//! "Ready" means a `GET /` through the published port answered 200. Teardown ends when the
//! container is gone. Rounds interleave the three, so that a slow moment of the engine hits
//! all of them. Then 20 tests that each need their own copy: harness with a manager per test
//! (what `isolated` does) next to 20 rounds of the floor.
//!
//! The image is busybox's httpd as PID 1, which ignores SIGTERM: where stopping gracefully
//! buys nothing, harness must not wait for it.
//!
//! Goals: start to ready and teardown each within 1.0x of the floor; a copy per test within
//! 1.2x of the floor. Run: `cargo bench --bench containers` (needs a Docker engine and
//! `/bin/busybox`). `CONTAINER_BENCH_ROUNDS` sets the rounds (default 10).

#[path = "../tests/support/http.rs"]
mod http;
use http::http;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::exec::{DockerImage, LocalLauncher};
use harness::orchestrator::ServiceManager;
use harness::registry::Registry;
use harness::topology::TopologyConfig;

const IMAGE: &str = "harness-bench/httpd:latest";
const COPIES: usize = 20;

fn main() {
    if !Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("containers: no Docker engine here, nothing measured");
        return;
    }
    let rounds: usize = std::env::var("CONTAINER_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .max(1);
    let image = smol::block_on(
        DockerImage::busybox(IMAGE)
            .with_bytes("ok\n", "/www/index.html", 0o644)
            .with_entrypoint(["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"])
            .build(&LocalLauncher),
    )
    .unwrap_or_else(|e| panic!("build {IMAGE}: {e}"));
    // The image goes whatever happens: a panic's unwinding would not wait for its removal.
    let measured = std::panic::catch_unwind(|| measure(rounds));
    if let Err(e) = smol::block_on(image.remove()) {
        eprintln!("remove {IMAGE}: {e}");
    }
    if let Err(panic) = measured {
        std::panic::resume_unwind(panic);
    }
}

/// Every figure, printed as it is measured.
fn measure(rounds: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("services.yaml");
    std::fs::write(
        &file,
        format!(
            "services:\n  web:\n    target:\n      docker:\n        image: {IMAGE}\n    \
             port: 8080\n    health_check: {{ http: {{ path: / }} }}\n"
        ),
    )
    .expect("write the topology");
    let topology = TopologyConfig::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let peer = peer_binary();

    // One of each first, so that the engine's caches are warm for all.
    floor();
    with_harness(&topology, dir.path());
    let (mut floor_up, mut floor_down) = (Vec::new(), Vec::new());
    let (mut harness_up, mut harness_down) = (Vec::new(), Vec::new());
    let (mut peer_up, mut peer_down) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (up, down) = floor();
        floor_up.push(up);
        floor_down.push(down);
        let (up, down) = with_harness(&topology, dir.path());
        harness_up.push(up);
        harness_down.push(down);
        if let Some(peer) = &peer {
            let (up, down) = testcontainers(peer);
            peer_up.push(up);
            peer_down.push(down);
        }
    }
    println!("one container from a local image, median of {rounds} interleaved rounds:");
    let (fu, fd) = (median(&mut floor_up), median(&mut floor_down));
    let (hu, hd) = (median(&mut harness_up), median(&mut harness_down));
    println!("  start to ready:  floor {:6.0} ms", ms(fu));
    println!(
        "                   harness {:4.0} ms  {:.2}x the floor (goal 1.0x)",
        ms(hu),
        ratio(hu, fu)
    );
    if !peer_up.is_empty() {
        let pu = median(&mut peer_up);
        println!(
            "                   testcontainers-rs {:4.0} ms  {:.2}x the floor; harness {:.2}x it",
            ms(pu),
            ratio(pu, fu),
            ratio(hu, pu)
        );
    }
    println!("  teardown:        floor {:6.0} ms", ms(fd));
    println!(
        "                   harness {:4.0} ms  {:.2}x the floor (goal 1.0x)",
        ms(hd),
        ratio(hd, fd)
    );
    if !peer_down.is_empty() {
        let pd = median(&mut peer_down);
        println!(
            "                   testcontainers-rs {:4.0} ms  {:.2}x the floor; harness {:.2}x it",
            ms(pd),
            ratio(pd, fd),
            ratio(hd, pd)
        );
    }
    if peer.is_none() {
        println!(
            "  testcontainers-rs: not built (cd benches/peers/testcontainers && \
             CARGO_TARGET_DIR=../../../target/peers cargo build --release)"
        );
    }

    let started = Instant::now();
    for _ in 0..COPIES {
        floor();
    }
    let floor_copies = started.elapsed();
    let started = Instant::now();
    for _ in 0..COPIES {
        with_harness(&topology, dir.path());
    }
    let harness_copies = started.elapsed();
    println!("{COPIES} tests, a copy of the container each:");
    println!("  floor   {:6.0} ms", ms(floor_copies));
    println!(
        "  harness {:6.0} ms  {:.2}x the floor (goal 1.2x)",
        ms(harness_copies),
        ratio(harness_copies, floor_copies)
    );
}

/// `docker run -d -p`, poll, `docker rm -f`: start to ready and teardown.
fn floor() -> (Duration, Duration) {
    let port = free_port();
    let started = Instant::now();
    let out = Command::new("docker")
        .args(["run", "-d", "-p", &format!("127.0.0.1:{port}:8080"), IMAGE])
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_ready(port);
    let up = started.elapsed();
    let started = Instant::now();
    let out = Command::new("docker")
        .args(["rm", "-f", &id])
        .output()
        .expect("run docker");
    assert!(out.status.success(), "docker rm -f {id}");
    (up, started.elapsed())
}

/// The topology's start to all healthy, and its teardown, with a fresh manager (as each
/// isolated copy has).
fn with_harness(topology: &TopologyConfig, base: &Path) -> (Duration, Duration) {
    let manager = ServiceManager::new(topology.clone(), Registry::new()).with_base_dir(base);
    let started = Instant::now();
    smol::block_on(manager.start_all()).unwrap_or_else(|e| panic!("{e}"));
    let up = started.elapsed();
    // The same check as the floor's, so that "ready" means the same for both.
    let addr = smol::block_on(manager.registry().get("web"))
        .ok()
        .and_then(|e| e.endpoints.first().map(|p| p.address))
        .expect("web has an address");
    assert_eq!(http(addr, "GET", "/", "").status, 200);
    let started = Instant::now();
    smol::block_on(manager.stop_all()).unwrap_or_else(|e| panic!("{e}"));
    drop(manager);
    (up, started.elapsed())
}

/// One round of the testcontainers-rs peer: start to ready and teardown.
fn testcontainers(peer: &Path) -> (Duration, Duration) {
    let out = Command::new(peer)
        .args([IMAGE, "8080", "1"])
        .output()
        .expect("run the testcontainers peer");
    assert!(
        out.status.success(),
        "testcontainers peer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let field = |name: &str| -> Duration {
        let at = words
            .iter()
            .position(|w| *w == name)
            .unwrap_or_else(|| panic!("no {name} in the peer's output: {text}"));
        Duration::from_secs_f64(words[at + 1].parse::<f64>().expect("a number") / 1000.0)
    };
    (field("start_ms"), field("teardown_ms"))
}

/// The peer's binary, if it was built.
fn peer_binary() -> Option<PathBuf> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/release/testcontainers-peer");
    path.exists().then_some(path)
}

/// Polls `GET /` on 127.0.0.1:`port` every 5 ms until it answers 200.
fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
            let mut reply = Vec::new();
            let _ = stream.read_to_end(&mut reply);
            if reply.starts_with(b"HTTP/1.0 200") || reply.starts_with(b"HTTP/1.1 200") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "port {port} never answered 200");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
