//! `harness serve` as a process: it loads the registry file, serves it, and on SIGTERM or
//! SIGINT closes its clients with a close frame, saves the state and exits 0.

mod api_support;

use std::io::{BufRead as _, BufReader, Lines};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use api_support::{Client, try_connect};
use harness::registry::{Registry, ServiceEntry};
use rustix::process::{Pid, Signal, kill_process};
use serde_json::json;

struct Serve {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Serve {
    fn start(args: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run harness serve");
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Serve { child, stdout }
    }

    fn line(&mut self) -> String {
        self.stdout
            .next()
            .expect("harness serve printed a line")
            .unwrap()
    }

    /// Reads lines until the one with the address; returns the address and the lines before.
    fn listening(&mut self) -> (SocketAddr, Vec<String>) {
        let mut before = Vec::new();
        loop {
            let line = self.line();
            if let Some(addr) = line.strip_prefix("harness serve: listening on ws://") {
                return (addr.parse().unwrap(), before);
            }
            before.push(line);
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_child(&self.child);
        kill_process(pid, signal).unwrap();
    }

    /// Waits for the exit (killing it after 30 s, by pid); returns the exit code and the rest
    /// of stdout.
    fn wait(mut self) -> (Option<i32>, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let rest = self.stdout.map(Result::unwrap).collect();
                return (status.code(), rest);
            }
            if Instant::now() > deadline {
                self.child.kill().unwrap();
                self.child.wait().unwrap();
                panic!("harness serve did not exit within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn saved(path: &Path) -> Vec<String> {
    let registry = smol::block_on(Registry::load(path)).expect("a valid registry file");
    smol::block_on(registry.list())
        .into_iter()
        .map(|s| s.name)
        .collect()
}

#[test]
fn sigterm_closes_clients_saves_the_state_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("registry.json");
    smol::block_on(async {
        let registry = Registry::new();
        registry
            .register(ServiceEntry::local_process("db"))
            .await
            .unwrap();
        registry
            .register(ServiceEntry::local_process("api").with_dependency("db"))
            .await
            .unwrap();
        registry.save(&state).await.unwrap();
    });
    let mut serve = Serve::start(&["--bind", "127.0.0.1:0", "--state", state.to_str().unwrap()]);
    let (addr, _) = serve.listening();
    smol::block_on(async {
        let mut clients = Vec::new();
        for _ in 0..3 {
            let mut c = Client::connect(addr).await;
            let list = c.ok("list_services", json!({})).await;
            let names: Vec<&str> = list["services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["api", "db"]);
            c.ok("subscribe", json!({})).await;
            clients.push(c);
        }
        serve.signal(Signal::TERM);
        for mut c in clients {
            let (_, close) = c.until_close().await;
            assert_eq!(close, Some((1001, "server shutting down".to_owned())));
        }
    });
    let (code, rest) = serve.wait();
    assert_eq!(code, Some(0), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("state saved to")),
        "{rest:?}"
    );
    assert_eq!(saved(&state), ["api", "db"]);
}

#[test]
fn a_generated_token_file_is_private_and_required_and_sigint_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("registry.json");
    let token_file = dir.path().join("token");
    let mut serve = Serve::start(&[
        "--bind",
        "127.0.0.1:0",
        "--state",
        state.to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    let (addr, before) = serve.listening();
    assert_eq!(
        before,
        [format!(
            "harness serve: token written to {} (mode 0600)",
            token_file.display()
        )]
    );
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(token.len(), 64);
    smol::block_on(async {
        let (status, _) = try_connect(addr, "/", &[]).await.err().expect("refused");
        assert_eq!(status, 401);
        let (status, _) = try_connect(
            addr,
            &format!("/?token={token}"),
            &[("Origin", "https://evil.example")],
        )
        .await
        .err()
        .expect("refused");
        assert_eq!(status, 403);
        let bearer = format!("Bearer {token}");
        let mut c = try_connect(addr, "/", &[("Authorization", &bearer)])
            .await
            .unwrap();
        c.ok("hello", json!({})).await;
        c.close().await;
    });
    serve.signal(Signal::INT);
    let (code, _) = serve.wait();
    assert_eq!(code, Some(0));
    // An empty registry was created and saved.
    assert!(saved(&state).is_empty());
}

#[test]
fn bad_arguments_fail_with_the_harness_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("registry.json");
    // A file that exists but is empty is refused as a token file.
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["serve", "--bind", "127.0.0.1:0", "--state"])
        .arg(&state)
        .arg("--token-file")
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("it is empty"), "{stderr}");
    let output = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["serve", "--bind", "127.0.0.1", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("resolve --bind 127.0.0.1"), "{stderr}");
    assert!(!state.exists(), "nothing was served, so nothing was saved");
}
