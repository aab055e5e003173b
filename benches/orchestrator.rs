//! Orchestrator figures, each next to a baseline measured in the same run:
//!
//! 1. Time to all-healthy for a 10-service local topology (a chain of 5 echo servers, then 5
//!    more that each depend on the chain's end; `tcp` health checks, free ports), next to a
//!    baseline that spawns the same programs in the same order and polls their ports directly
//!    every millisecond. Goal: overhead under 20 % or 30 ms, whichever is larger.
//! 2. Teardown of the same topology (`stop_all`: SIGTERM, wait, in reverse dependency order),
//!    next to sending SIGTERM to every baseline process and waiting for them. Goal: under
//!    100 ms.
//! 3. The same for 100 services (a chain of 10 and a fan-out of 90), to show how start time
//!    grows.
//!
//! Run: `cargo bench --bench orchestrator` (release). `ORCH_BENCH_RUNS` sets how many runs
//! each figure is the median of (default 5).

#[path = "../tests/support/fixtures.rs"]
mod fixtures;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::orchestrator::ServiceManager;
use harness::registry::Registry;
use harness::topology::TopologyConfig;
use rustix::process::{Pid, Signal};

fn main() {
    let runs: usize = std::env::var("ORCH_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let echo = fixtures::bin("echo-server");
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (chain, fan_out) in [(5, 5), (10, 90)] {
        let total = chain + fan_out;
        let path = dir.path().join(format!("services-{total}.yaml"));
        std::fs::write(&path, topology(&echo, chain, fan_out)).expect("write the topology");
        let topology = TopologyConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));

        let mut harness_up = Vec::new();
        let mut harness_down = Vec::new();
        let mut base_up = Vec::new();
        let mut base_down = Vec::new();
        for _ in 0..runs {
            let (up, down) = with_harness(&topology);
            harness_up.push(up);
            harness_down.push(down);
            let (up, down) = baseline(&echo, chain, fan_out);
            base_up.push(up);
            base_down.push(down);
        }
        let (hu, bu) = (median(&mut harness_up), median(&mut base_up));
        let (hd, bd) = (median(&mut harness_down), median(&mut base_down));
        println!("{total} services (chain {chain}, fan-out {fan_out}), median of {runs} runs:");
        println!(
            "  all healthy: harness {:7.1} ms, baseline {:7.1} ms, ratio {:.2}, overhead {:+.1} ms",
            ms(hu),
            ms(bu),
            hu.as_secs_f64() / bu.as_secs_f64(),
            ms(hu) - ms(bu)
        );
        println!(
            "  teardown:    harness {:7.1} ms, baseline {:7.1} ms, ratio {:.2}",
            ms(hd),
            ms(bd),
            hd.as_secs_f64() / bd.as_secs_f64()
        );
    }
}

/// The topology: `s0 <- s1 <- ... <- s{chain-1}`, then `chain .. chain+fan_out` each depending
/// on the chain's end.
fn topology(echo: &Path, chain: usize, fan_out: usize) -> String {
    let mut yaml = String::from("services:\n");
    for i in 0..chain + fan_out {
        yaml.push_str(&format!(
            "  s{i}:\n    target: {{ process: {{ binary: {}, env: {{ HOST: 127.0.0.1 }} }} }}\n    port: auto\n    health_check: {{ tcp: {{}} }}\n",
            echo.display()
        ));
        if i > 0 {
            let dependency = if i < chain { i - 1 } else { chain - 1 };
            yaml.push_str(&format!("    dependencies: [s{dependency}]\n"));
        }
    }
    yaml
}

fn with_harness(topology: &TopologyConfig) -> (Duration, Duration) {
    let manager = ServiceManager::new(topology.clone(), Registry::new());
    smol::block_on(async {
        let start = Instant::now();
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let up = start.elapsed();
        let start = Instant::now();
        manager.stop_all().await.expect("stop the topology");
        (up, start.elapsed())
    })
}

/// The same programs, started layer by layer (each layer once the one before accepts
/// connections), ports polled every millisecond.
fn baseline(echo: &Path, chain: usize, fan_out: usize) -> (Duration, Duration) {
    let mut layers: Vec<usize> = vec![1; chain];
    layers.push(fan_out);
    let start = Instant::now();
    let mut children: Vec<Child> = Vec::new();
    for size in layers {
        let mut ports = Vec::new();
        for _ in 0..size {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = Command::new(echo)
                .env("PORT", port.to_string())
                .env("HOST", "127.0.0.1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn echo-server");
            children.push(child);
            ports.push(port);
        }
        for port in ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            while TcpStream::connect(addr).is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let up = start.elapsed();
    let start = Instant::now();
    for child in &children {
        let pid = Pid::from_raw(child.id() as i32).expect("a pid");
        let _ = rustix::process::kill_process(pid, Signal::TERM);
    }
    for child in &mut children {
        child.wait().expect("wait for echo-server");
    }
    (up, start.elapsed())
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort_unstable();
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
