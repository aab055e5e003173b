//! Clients that are not ours against the server: Python's `websockets` (from PyPI; CI installs
//! it) and, where Node has a WebSocket (`node --experimental-websocket`, Node >= 20.10), the
//! Phase 2 plan's JavaScript snippet.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::api::WsServer;
use harness::registry::{Registry, ServiceEntry, ServiceState};

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// Waits for the child to exit, killing it (by its pid) after a deadline; returns its status
/// and stderr.
fn finish(mut child: Child, what: &str) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read as _;
                e.read_to_string(&mut stderr).unwrap();
            }
            return (status, stderr);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{what} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn registry_with_db() -> Registry {
    let registry = Registry::new();
    registry
        .register(ServiceEntry::local_process("db"))
        .await
        .unwrap();
    registry
}

#[test]
fn python_websockets_speaks_the_protocol() {
    let registry = smol::block_on(registry_with_db());
    let server = smol::block_on(WsServer::bind("127.0.0.1:0", registry.clone()))
        .unwrap()
        .start()
        .unwrap();
    let port = server.local_addr().port().to_string();
    let mut child = Command::new("python3")
        .arg(script("ws_client.py"))
        .arg(&port)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (the interop test needs Python 3 with `pip install websockets`)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().transpose().unwrap();
    if first.as_deref() != Some("subscribed") {
        let (status, stderr) = finish(child, "ws_client.py");
        panic!("ws_client.py failed before subscribing ({status}): {stderr}");
    }
    smol::block_on(registry.set_state("db", ServiceState::Starting)).unwrap();
    let last = lines.next().transpose().unwrap();
    let (status, stderr) = finish(child, "ws_client.py");
    assert!(status.success(), "ws_client.py failed ({status}): {stderr}");
    assert_eq!(last.as_deref(), Some("ok"));
    server.shutdown().unwrap();
    assert_eq!(registry.subscriber_count(), 0);
}

#[test]
fn the_seed_javascript_client_works_in_node() {
    let probe = Command::new("node")
        .args([
            "--experimental-websocket",
            "-e",
            "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
        ])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!(
            "skipped: this machine has no Node with a WebSocket (node --experimental-websocket)"
        );
        return;
    }
    let registry = smol::block_on(registry_with_db());
    let server = smol::block_on(WsServer::bind("127.0.0.1:0", registry.clone()))
        .unwrap()
        .start()
        .unwrap();
    let child = Command::new("node")
        .arg("--experimental-websocket")
        .arg(script("seed_client.mjs"))
        .arg(server.local_addr().port().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The script exits by itself within 20 s; wait_with_output reads both pipes to the end.
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "seed_client.mjs failed ({}): {}{}",
        output.status,
        text,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(text.trim(), "ok");
    server.shutdown().unwrap();
}
