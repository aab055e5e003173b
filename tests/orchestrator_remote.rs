//! The orchestrator's `remote_lan` targets against emulated LAN hosts ([`harness::lab`]): real
//! programs (redis-server, the fixture kv-server) started over SSH on two hosts, chained to
//! each other and to local processes through the addresses harness injects, then stopped, or
//! dropped, with nothing left running on the hosts.
//!
//! Needs root, `ip netns`, `unshare` and openssh-server, as `tests/lab.rs` does. Without them
//! each test prints why and passes, unless `HARNESS_REQUIRE_LAB=1` (CI), where that is a
//! failure.

#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/http.rs"]
mod http;
#[path = "support/lab.rs"]
mod lab_support;
#[expect(dead_code, reason = "this suite uses only the deadline helpers")]
#[path = "support/local.rs"]
mod local_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::exec::{Command, Launcher};
use harness::lab::{Lab, leftovers};
use harness::orchestrator::ServiceManager;
use harness::registry::{Location, Registry, StateKind};
use harness::topology::TopologyConfig;
use lab_support::shut_down;
use local_support::run;

use fixtures::{bin, env_value};
use http::http;

/// How long the hosts get to end what a dropped manager left: the watchdogs fire when the
/// sessions close, within milliseconds; this only bounds the wait.
const CLEANUP_DEADLINE: Duration = Duration::from_secs(20);

/// Why a lab cannot run here, if it cannot (see [`lab_support::skip_without_lab`]).
fn skip() -> bool {
    lab_support::skip_without_lab(&["/usr/bin/redis-server"])
}

/// A lab with one LAN, `subnet`, and hosts `alpha` and `beta` on it.
async fn two_host_lab(subnet: &str) -> Lab {
    Lab::builder()
        .network("lan", subnet)
        .host("alpha", &["lan"])
        .host("beta", &["lan"])
        .build()
        .await
        .expect("the lab builds")
}

/// A topology from YAML text written into `dir`.
fn inline(dir: &Path, yaml: &str) -> TopologyConfig {
    let path = dir.join("services.yaml");
    std::fs::write(&path, yaml).unwrap();
    TopologyConfig::load(&path).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// The `remote_lan:` target fields for `host` of `lab`: root with the lab's key.
fn remote(lab: &Lab, host: &str, binary: &Path) -> String {
    format!(
        "host: {}, user: root, key: {}, binary: {}",
        lab.host(host).addr("lan"),
        lab.key().display(),
        visible_on_hosts(lab, binary).display()
    )
}

/// `binary`, or a copy of it in the lab's directory when it lies under `/tmp`, which every lab
/// host replaces with a private one (a checkout in `/tmp` would be out of the hosts' sight).
fn visible_on_hosts(lab: &Lab, binary: &Path) -> PathBuf {
    if !binary.starts_with("/tmp") {
        return binary.to_path_buf();
    }
    let copy = lab.dir().join("bin").join(binary.file_name().unwrap());
    if !copy.exists() {
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::copy(binary, &copy)
            .unwrap_or_else(|e| panic!("copy {} into the lab: {e}", binary.display()));
    }
    copy
}

/// The names of the programs running on `host` (its own PID namespace), apart from sshd and
/// the probe itself (its shells, and `setsid` and `env` on their way to exec what they run).
async fn programs_on(lab: &Lab, host: &str) -> Vec<String> {
    processes_on(lab, host)
        .await
        .into_iter()
        .map(|(_, _, command)| command)
        .filter(|c| !matches!(c.as_str(), "sshd" | "ps" | "sh" | "setsid" | "env" | ""))
        .collect()
}

/// Waits until neither host runs anything of the run, and fails if something stays.
async fn assert_hosts_empty(lab: &Lab) {
    let deadline = Instant::now() + CLEANUP_DEADLINE;
    for host in ["alpha", "beta"] {
        loop {
            let left = programs_on(lab, host).await;
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still running on {host} after {CLEANUP_DEADLINE:?}: {left:?}"
            );
            smol::Timer::after(Duration::from_millis(50)).await;
        }
    }
}

/// One redis command over TCP; the first line of the answer.
fn redis(addr: SocketAddr, command: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "{command}\r\n").unwrap();
    let mut buf = [0; 256];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).trim().to_string()
}

#[test]
fn a_chain_across_lan_hosts_and_this_machine_works_and_stops_cleanly() {
    if skip() {
        return;
    }
    run(async {
        let lab = two_host_lab("10.214.1.0/24").await;
        let (a, b) = (lab.host("alpha").addr("lan"), lab.host("beta").addr("lan"));
        let gateway = lab.network("lan").expect("the lab's network").gateway();
        let kv = bin("kv-server");
        let dir = tempfile::tempdir().unwrap();
        // A write to `web` (here) goes to `kv` (beta), to `kv-store` (alpha), to `origin`
        // (here again): every direction a LAN address is needed in.
        let yaml = format!(
            r#"services:
  origin:
    target: {{ process: {{ binary: {kv}, env: {{ KV_BACKEND: memory }} }} }}
    port: auto
    health_check: {{ http: {{ path: /health }} }}
  cache:
    target:
      remote_lan: {{ {cache}, args: ["--port", "${{port}}", "--bind", "${{host}}", "--save", "", "--appendonly", "no", "--protected-mode", "no"] }}
    port: 6390
    # Its output streams back from alpha: a `log` check sees it.
    health_check: {{ log: "Ready to accept connections" }}
  kv-store:
    target:
      remote_lan: {{ {store}, env: {{ KV_BACKEND: upstream, KV_STORE_ADDR: "${{ORIGIN_ADDR}}" }}, working_dir: /tmp }}
    dependencies: [origin]
    port: 7001
    # Uploaded to alpha before it starts: relative to its working directory, or absolute.
    files:
      - {{ content: "origin ${{ORIGIN_ADDR}}\n", target: kv/conf/kv.conf, mode: "0600" }}
      - {{ source: seed.txt, target: /tmp/seeds/seed.txt }}
    health_check: {{ http: {{ path: /health }} }}
  kv:
    target:
      remote_lan: {{ {kv_b}, env: {{ KV_BACKEND: upstream }} }}
    dependencies: [kv-store, cache]
    port: 7002
    health_check: {{ http: {{ path: /health }} }}
  web:
    target: {{ process: {{ binary: {kv}, env: {{ KV_BACKEND: upstream, KV_STORE_ADDR: "${{KV_ADDR}}" }} }} }}
    dependencies: [kv]
    port: auto
    health_check: {{ http: {{ path: /health }} }}
"#,
            kv = kv.display(),
            cache = remote(&lab, "alpha", Path::new("/usr/bin/redis-server")),
            store = remote(&lab, "alpha", &kv),
            kv_b = remote(&lab, "beta", &kv),
        );
        std::fs::write(dir.path().join("seed.txt"), "seeded\n").unwrap();
        let manager = ServiceManager::new(inline(dir.path(), &yaml), Registry::new())
            .with_base_dir(dir.path())
            .with_stop_grace(Duration::from_secs(5));
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));

        // The service's files are on its host, with their modes.
        let files = manager
            .exec(
                "kv-store",
                &[
                    "sh".to_string(),
                    "-c".to_string(),
                    "cat kv/conf/kv.conf /tmp/seeds/seed.txt; stat -c %a kv/conf/kv.conf"
                        .to_string(),
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let origin_addr = format!(
            "{gateway}:{}",
            manager.status("origin").await.unwrap().addr.unwrap().port()
        );
        assert_eq!(
            files.stdout_text(),
            format!("origin {origin_addr}\nseeded\n600"),
            "{files:?}"
        );

        // A command runs on the service's host, over its SSH connection, with its
        // environment.
        let on_alpha = manager
            .exec(
                "kv-store",
                &[
                    "sh".to_string(),
                    "-c".to_string(),
                    "echo $PORT; ip -o -4 addr show".to_string(),
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(on_alpha.success(), "{on_alpha:?}");
        assert_eq!(
            on_alpha.stdout.first().map(String::as_str),
            Some("7001"),
            "{on_alpha:?}"
        );
        // Alpha's network namespace: its LAN address.
        assert!(
            on_alpha.stdout_text().contains(&format!("inet {a}/")),
            "{on_alpha:?}"
        );

        // The injected addresses are the ones each side can reach.
        let state = manager
            .state_dir()
            .expect("a running run has a state directory");
        let origin = manager.status("origin").await.unwrap().addr.unwrap();
        assert_eq!(
            env_value(&state.join("kv-store.env"), "KV_STORE_ADDR"),
            format!("{gateway}:{}", origin.port()),
            "alpha reaches this machine at the LAN's gateway address"
        );
        assert_eq!(
            env_value(&state.join("kv.env"), "KV_STORE_ADDR"),
            format!("{a}:7001")
        );
        assert_eq!(
            env_value(&state.join("kv.env"), "CACHE_ADDR"),
            format!("{a}:6390")
        );
        assert_eq!(
            env_value(&state.join("web.env"), "KV_ADDR"),
            format!("{b}:7002")
        );
        assert!(state.join("known_hosts").is_file(), "the run's known hosts");
        // `cache` and `kv-store` share one connection to alpha: its sshd serves two
        // connections, that one and the probe's.
        let connections = processes_on(&lab, "alpha")
            .await
            .into_iter()
            .filter(|(_, ppid, comm)| *ppid == 1 && comm.starts_with("sshd"))
            .count();
        assert_eq!(connections, 2, "connections to alpha");

        // status() gives the LAN addresses, and they answer from here.
        let cache = manager.status("cache").await.unwrap().addr.unwrap();
        assert_eq!(cache, SocketAddr::from((a, 6390)));
        assert_eq!(redis(cache, "PING"), "+PONG");
        let kv_addr = manager.status("kv").await.unwrap().addr.unwrap();
        assert_eq!(kv_addr, SocketAddr::from((b, 7002)));
        assert_eq!(http(kv_addr, "GET", "/health", "").status, 200);
        let entry = manager.registry().get("kv").await.unwrap();
        assert_eq!(
            entry.location,
            Location::Lan {
                host: b.to_string()
            }
        );
        assert_eq!(entry.endpoints[0].address, kv_addr);
        assert_eq!(entry.endpoints[0].lan_addr, Some(kv_addr));

        // Real traffic through the whole chain, and back.
        let web = manager.status("web").await.unwrap().addr.unwrap();
        let put = http(web, "PUT", "/kv/greeting", "hello over the LAN");
        assert!(
            put.status < 300,
            "PUT through web: {} {}",
            put.status,
            put.body
        );
        assert_eq!(
            http(origin, "GET", "/kv/greeting", "").body,
            "hello over the LAN"
        );
        assert_eq!(
            http(web, "GET", "/kv/greeting", "").body,
            "hello over the LAN"
        );
        // A restarted LAN service comes back on its port, and the chain still works.
        manager
            .restart("kv")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            http(web, "GET", "/kv/greeting", "").body,
            "hello over the LAN"
        );

        manager.stop_all().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!state.exists(), "the state directory is removed");
        assert_hosts_empty(&lab).await;
        let alpha = lab.host("alpha").launcher().await.unwrap();
        let left = alpha
            .output(&Command::new("ls").args(["/tmp/kv/conf", "/tmp/seeds"]))
            .await
            .unwrap();
        assert_eq!(
            left.stdout_text(),
            "/tmp/kv/conf:\n\n/tmp/seeds:",
            "{left:?}"
        );
        shut_down(lab).await;
    });
}

#[test]
fn dropping_the_manager_leaves_nothing_on_the_hosts() {
    if skip() {
        return;
    }
    run(async {
        let lab = two_host_lab("10.214.2.0/24").await;
        let kv = bin("kv-server");
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            r#"services:
  cache:
    target:
      remote_lan: {{ {cache}, args: ["--port", "${{port}}", "--bind", "${{host}}", "--save", "", "--appendonly", "no", "--protected-mode", "no"] }}
    port: 6390
  kv-store:
    target:
      remote_lan: {{ {store}, env: {{ KV_BACKEND: memory }} }}
    port: 7001
"#,
            cache = remote(&lab, "beta", Path::new("/usr/bin/redis-server")),
            store = remote(&lab, "alpha", &kv),
        );
        let manager = ServiceManager::new(inline(dir.path(), &yaml), Registry::new())
            .with_base_dir(dir.path());
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(programs_on(&lab, "alpha").await, ["kv-server"]);
        assert_eq!(programs_on(&lab, "beta").await, ["redis-server"]);
        drop(manager);
        assert_hosts_empty(&lab).await;
        shut_down(lab).await;
    });
}

/// `(pid, parent pid, command)` of every process on `host`.
async fn processes_on(lab: &Lab, host: &str) -> Vec<(u32, u32, String)> {
    let ssh = lab
        .host(host)
        .launcher()
        .await
        .unwrap_or_else(|e| panic!("connect to host {host}: {e}"));
    let out = ssh
        .output(&Command::new("ps").args(["-e", "-o", "pid=,ppid=,comm="]))
        .await
        .unwrap_or_else(|e| panic!("run ps on {host}: {e}"));
    assert!(out.success(), "ps on {host}: {out:?}");
    out.stdout
        .iter()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let pid = words.next()?.parse().ok()?;
            let ppid = words.next()?.parse().ok()?;
            Some((pid, ppid, words.next().unwrap_or_default().to_string()))
        })
        .collect()
}

#[test]
fn a_dropped_connection_kills_the_remote_program_and_fails_the_service() {
    if skip() {
        return;
    }
    run(async {
        let lab = two_host_lab("10.214.4.0/24").await;
        let kv = bin("kv-server");
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "services:\n  kv-store:\n    target:\n      remote_lan: {{ {}, env: {{ KV_BACKEND: memory }} }}\n    port: 7001\n",
            remote(&lab, "alpha", &kv),
        );
        let manager = ServiceManager::new(inline(dir.path(), &yaml), Registry::new())
            .with_base_dir(dir.path());
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));

        // The connection drops at the host's end: kill the sshd processes that serve the
        // manager's connection (the ancestors of kv-server below the host's PID 1), by pid.
        let processes = processes_on(&lab, "alpha").await;
        let parent = |pid: u32| processes.iter().find(|p| p.0 == pid).map(|p| p.1);
        let program = processes
            .iter()
            .find(|p| p.2 == "kv-server")
            .unwrap_or_else(|| panic!("kv-server runs on alpha: {processes:?}"));
        let mut serving = Vec::new();
        let mut pid = program.1;
        while pid > 1 {
            serving.push(pid);
            pid = parent(pid).unwrap_or(0);
        }
        let sshd: Vec<String> = serving
            .iter()
            .filter(|pid| {
                processes
                    .iter()
                    .any(|p| p.0 == **pid && p.2.starts_with("sshd"))
            })
            .map(|pid| pid.to_string())
            .collect();
        assert!(!sshd.is_empty(), "kv-server's sshd on alpha: {processes:?}");
        let ssh = lab.host("alpha").launcher().await.unwrap();
        let killed = ssh
            .output(&Command::new("kill").arg("-KILL").args(&sshd))
            .await
            .unwrap();
        assert!(killed.success(), "kill {sshd:?}: {killed:?}");
        drop(ssh);

        // The watchdog kills the program, and the manager notices that it ended.
        assert_hosts_empty(&lab).await;
        let deadline = Instant::now() + CLEANUP_DEADLINE;
        loop {
            let state = manager.registry().get("kv-store").await.unwrap().state;
            if state.kind() == StateKind::Failed {
                break;
            }
            assert!(Instant::now() < deadline, "kv-store is still {state:?}");
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        manager.stop_all().await.unwrap_or_else(|e| panic!("{e}"));
        shut_down(lab).await;
    });
}

#[test]
fn a_missing_remote_binary_fails_the_start_naming_the_service_and_the_host() {
    if skip() {
        return;
    }
    run(async {
        let lab = two_host_lab("10.214.3.0/24").await;
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "services:\n  ghost:\n    target:\n      remote_lan: {{ {} }}\n    port: 7001\n",
            remote(&lab, "alpha", Path::new("/opt/no-such-dir/no-such-program")),
        );
        let manager = ServiceManager::new(inline(dir.path(), &yaml), Registry::new())
            .with_base_dir(dir.path());
        let error = manager.start_all().await.expect_err("the start fails");
        let message = error.to_string();
        assert_eq!(error.failed_service(), Some("ghost"), "{message}");
        assert!(
            message.contains("/opt/no-such-dir/no-such-program")
                && message.contains(&lab.host("alpha").addr("lan").to_string()),
            "{message}"
        );
        assert!(
            manager.state_dir().is_none(),
            "stopped again after the failure"
        );
        assert_hosts_empty(&lab).await;
        shut_down(lab).await;
    });
}

/// The labs this process owns, by prefix (`/run/harness-lab/PREFIX/owner` names this pid).
fn own_labs() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(harness::lab::REGISTRY_DIR) else {
        return Vec::new();
    };
    let pid = std::process::id().to_string();
    let mut labs: Vec<String> = entries
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("owner"))
                .is_ok_and(|owner| owner.split_whitespace().next() == Some(pid.as_str()))
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    labs.sort();
    labs
}

#[test]
fn a_topology_builds_its_own_lab_and_an_overlay_moves_a_service_onto_it() {
    if skip() {
        return;
    }
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let kv = bin("kv-server");
        // For real machines: the cache on a LAN host, the store here, through it.
        let base = dir.path().join("services.yaml");
        std::fs::write(
            &base,
            format!(
                r#"services:
  cache:
    target:
      remote_lan:
        host: 192.0.2.10
        user: deploy
        binary: /usr/bin/redis-server
        args: ["--port", "${{port}}", "--bind", "${{host}}", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
    port: 6391
    health_check: {{ tcp: {{}} }}
  store:
    target: {{ process: {{ binary: {kv}, env: {{ KV_BACKEND: memory }} }} }}
    dependencies: [cache]
    port: auto
    health_check: {{ http: {{ path: /health }} }}
"#,
                kv = kv.display()
            ),
        )
        .unwrap();
        // For CI: the same file, with the cache's host emulated.
        let overlay = dir.path().join("lab.yaml");
        std::fs::write(
            &overlay,
            "lab:\n  networks: { lan: auto }\n  hosts:\n    cache-host: { networks: [lan] }\n\
             services:\n  cache:\n    target:\n      remote_lan: { host: cache-host }\n",
        )
        .unwrap();
        let topology = TopologyConfig::load_with_overlays(&base, &[&overlay])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            topology.lab.as_ref().map(|l| l.hosts.len()),
            Some(1),
            "the overlay adds the lab"
        );
        let before = own_labs();
        let manager = ServiceManager::new(topology, Registry::new());
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));

        let built: Vec<String> = own_labs()
            .into_iter()
            .filter(|l| !before.contains(l))
            .collect();
        assert_eq!(built.len(), 1, "one lab for the run: {built:?}");
        let cache = manager
            .status("cache")
            .await
            .unwrap()
            .addr
            .expect("an address");
        assert!(
            cache.ip().to_string().starts_with("10.231."),
            "the cache runs on the lab host: {cache}"
        );
        assert_eq!(redis(cache, "PING"), "+PONG");
        let env = manager.state_dir().expect("a state dir").join("store.env");
        assert_eq!(env_value(&env, "CACHE_ADDR"), cache.to_string());

        manager.stop_all().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            leftovers(&built[0]),
            Vec::<String>::new(),
            "lab {}",
            built[0]
        );
        assert!(
            !own_labs().contains(&built[0]),
            "the lab's directory is gone"
        );
    });
}

#[test]
fn a_bad_lab_section_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.yaml");
    std::fs::write(
        &path,
        "lab:\n  networks: { lan: 10.77.1.0/33 }\n  hosts:\n    Cache: { networks: [lan, wan] }\n\
         services:\n  s:\n    target: { process: { binary: /bin/true } }\n",
    )
    .unwrap();
    let error = TopologyConfig::load(&path).unwrap_err().to_string();
    for expected in [
        "services.yaml:2:",
        "/33",
        "services.yaml:4:",
        "invalid lab host name `Cache`",
        "`wan`, which `lab.networks` does not declare; it declares: lan",
    ] {
        assert!(error.contains(expected), "{expected:?} in:\n{error}");
    }
}
