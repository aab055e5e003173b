//! The orchestrator with the real fixture programs: the demo topology comes up in dependency
//! order and its services answer through the addresses harness injected; health checks of
//! every kind; a failing topology is rolled back with the failing service named and its log
//! tail shown; restart; and nothing is left running or on disk afterwards.

#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/http.rs"]
mod http;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::api::{ServiceCommand, ServiceController};
use harness::orchestrator::{OrchestratorError, Progress, ServiceManager};
use harness::registry::{Registry, ServiceState, StateKind};
use harness::topology::TopologyConfig;
use rustix::process::Pid;

use fixtures::{bin, project_dir, topology_file};
use http::http;

/// How long any one test may take: generous, for a loaded 2-core CI runner. Never a
/// measurement.
const TEST_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `test` on smol, failing if it does not finish within [`TEST_DEADLINE`].
fn run<T>(test: impl std::future::Future<Output = T>) -> T {
    smol::block_on(futures_lite::future::or(test, async {
        smol::Timer::after(TEST_DEADLINE).await;
        panic!("the test did not finish within {TEST_DEADLINE:?}");
    }))
}

/// A manager for `topology` run from `project`, recording its progress.
fn new_manager(
    topology: TopologyConfig,
    project: &Path,
) -> (ServiceManager, Arc<Mutex<Vec<Progress>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let manager = ServiceManager::new(topology, Registry::new())
        .with_base_dir(project)
        .with_stop_grace(Duration::from_secs(5))
        .with_progress(move |p| record.lock().unwrap().push(p.clone()));
    (manager, seen)
}

/// A topology from YAML text written into `dir`.
fn inline(dir: &Path, yaml: &str) -> TopologyConfig {
    let path = dir.join("services.yaml");
    std::fs::write(&path, yaml).unwrap();
    TopologyConfig::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// The pid of every service that was started, from the progress reports.
fn started_pids(progress: &[Progress]) -> Vec<(String, u32)> {
    progress
        .iter()
        .filter_map(|p| match p {
            Progress::Waiting {
                service,
                pid: Some(pid),
                ..
            } => Some((service.clone(), *pid)),
            _ => None,
        })
        .collect()
}

/// Where in the progress reports `what` happened to `service`.
fn position(progress: &[Progress], service: &str, healthy: bool) -> usize {
    progress
        .iter()
        .position(|p| match p {
            Progress::Waiting { service: s, .. } => !healthy && s == service,
            Progress::Healthy { service: s, .. } => healthy && s == service,
            _ => false,
        })
        .unwrap_or_else(|| panic!("no report for {service} in {progress:?}"))
}

/// Whether a process group still has a member. Every service is its group's leader, and the
/// launcher reaps it, so an empty group means the service and everything it started are gone.
fn group_alive(pid: u32) -> bool {
    let pid = Pid::from_raw(pid as i32).unwrap();
    rustix::process::test_kill_process_group(pid).is_ok()
}

fn assert_gone(pids: &[(String, u32)]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for (service, pid) in pids {
        while group_alive(*pid) {
            assert!(
                Instant::now() < deadline,
                "{service} (process group {pid}) is still running"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The variables in an env file, as `NAME=value` without quotes (the values here need none).
fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|l| {
            let (name, value) = l.strip_prefix("export ").unwrap().split_once('=').unwrap();
            (name.to_string(), value.trim_matches('\'').to_string())
        })
        .collect()
}

#[test]
fn demo_comes_up_in_order_and_answers_through_injected_addresses() {
    let project = project_dir();
    let topology = TopologyConfig::load(topology_file("demo.yaml")).unwrap();
    let (manager, progress) = new_manager(topology, project.path());
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let state_dir = manager
            .state_dir()
            .expect("a state directory while running");

        let status = manager.status_all().await;
        let names: Vec<&str> = status.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["kv-store", "kv-api", "echo", "web"]);
        for s in &status {
            assert_eq!(s.state, ServiceState::Running, "{}", s.name);
            assert!(s.pid.is_some() && s.addr.is_some(), "{s:?}");
            assert!(s.health.as_ref().is_some_and(|h| h.healthy), "{s:?}");
        }
        let addr = |name: &str| {
            status
                .iter()
                .find(|s| s.name == name)
                .unwrap()
                .addr
                .unwrap()
        };

        // Each service started only once its dependencies were healthy.
        {
            let progress = progress.lock().unwrap();
            assert!(position(&progress, "kv-store", true) < position(&progress, "kv-api", false));
            for dependency in ["kv-api", "echo"] {
                assert!(position(&progress, dependency, true) < position(&progress, "web", false));
            }
        }

        // kv-api stores through kv-store, which it reaches at the injected KV_STORE_ADDR.
        let put = http(addr("kv-api"), "PUT", "/kv/greeting", "hello");
        assert_eq!(put.status, 204);
        let got = http(addr("kv-api"), "GET", "/kv/greeting", "");
        assert_eq!((got.status, got.body.as_str()), (200, "hello"));
        assert!(
            got.headers.contains("x-kv-source: upstream"),
            "{}",
            got.headers
        );
        let direct = http(addr("kv-store"), "GET", "/kv/greeting", "");
        assert_eq!((direct.status, direct.body.as_str()), (200, "hello"));

        // echo got its port through `${port}`, and echoes.
        let mut echo = TcpStream::connect(addr("echo")).unwrap();
        echo.write_all(b"ping\n").unwrap();
        let mut line = String::new();
        BufReader::new(&echo).read_line(&mut line).unwrap();
        assert_eq!(line, "ping\n");
        assert_eq!(http(addr("web"), "GET", "/", "").body.trim(), "web");

        // The env files say what each service was given.
        let kv_api = env_file(&state_dir.join("kv-api.env"));
        assert!(kv_api.contains(&("PORT".into(), addr("kv-api").port().to_string())));
        assert!(kv_api.contains(&("KV_STORE_ADDR".into(), addr("kv-store").to_string())));
        assert!(kv_api.contains(&("KV_BACKEND".into(), "upstream".into())));
        let web = env_file(&state_dir.join("web.env"));
        assert!(web.contains(&("KV_API_ADDR".into(), addr("kv-api").to_string())));
        assert!(web.contains(&("ECHO_ADDR".into(), addr("echo").to_string())));

        // Logs: the tail in memory and the file in the state directory.
        let logs = manager.logs("echo").unwrap();
        assert!(
            logs.iter().any(|l| l.text.contains("listening on")),
            "{logs:?}"
        );
        let file = std::fs::read_to_string(state_dir.join("echo.log")).unwrap();
        assert!(file.contains("listening on"), "{file}");

        // The registry has the endpoint and the pid.
        let entry = manager.registry().get("kv-api").await.unwrap();
        assert_eq!(entry.endpoint("main").unwrap().address, addr("kv-api"));
        assert_eq!(
            entry.execution.pid,
            manager.status("kv-api").await.unwrap().pid
        );

        let pids = started_pids(&progress.lock().unwrap());
        assert_eq!(pids.len(), 4);
        manager.stop_all().await.unwrap();
        assert_gone(&pids);
        assert!(!state_dir.exists(), "{} is left", state_dir.display());
        assert!(manager.state_dir().is_none());
        for entry in manager.registry().list().await {
            assert_eq!(entry.state, ServiceState::Stopped, "{}", entry.name);
        }
    });
}

#[test]
fn failing_topology_is_rolled_back_and_names_the_service_with_its_log_tail() {
    let project = project_dir();
    let topology = TopologyConfig::load(topology_file("failing.yaml")).unwrap();
    let (manager, progress) = new_manager(topology, project.path());
    run(async {
        let mut state_dir: Option<PathBuf> = None;
        // The state directory exists only during the start; note its path meanwhile.
        let watch = async {
            loop {
                if let Some(dir) = manager.state_dir() {
                    state_dir.get_or_insert(dir);
                }
                smol::Timer::after(Duration::from_millis(10)).await;
            }
        };
        let error = futures_lite::future::or(manager.start_all(), watch)
            .await
            .unwrap_err();
        assert_eq!(error.failed_service(), Some("broken"));
        let message = error.to_string();
        assert!(message.contains("start service broken ("), "{message}");
        assert!(message.contains("failing.yaml:16:3"), "{message}");
        assert!(message.contains("health check failed after"), "{message}");
        assert!(message.contains("answered 500, expected 200"), "{message}");
        let OrchestratorError::StartFailed { log_tail, .. } = &error else {
            panic!("{error:?}");
        };
        assert!(
            log_tail.iter().any(|l| l.text.contains("failing-service")),
            "{log_tail:?}"
        );

        let pids = started_pids(&progress.lock().unwrap());
        let names: Vec<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["healthy", "broken"]);
        assert_gone(&pids);
        let state_dir = state_dir.expect("the state directory existed during the start");
        assert!(!state_dir.exists(), "{} is left", state_dir.display());

        let registry = manager.registry();
        assert_eq!(
            registry.get("healthy").await.unwrap().state,
            ServiceState::Stopped
        );
        assert_eq!(
            registry.get("broken").await.unwrap().state.kind(),
            StateKind::Failed
        );
        assert_eq!(
            registry.get("never").await.unwrap().state,
            ServiceState::Pending
        );
    });
}

#[test]
fn exit_during_start_and_missing_binary_fail_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let failing = bin("failing-service");
    let topology = inline(
        dir.path(),
        &format!(
            r#"
services:
  quitter:
    target:
      process:
        binary: {}
        env: {{ FAIL_MODE: exit }}
    port: auto
"#,
            failing.display()
        ),
    );
    let (manager, progress) = new_manager(topology, dir.path());
    run(async {
        let error = manager.start_all().await.unwrap_err();
        let message = error.to_string();
        assert!(message.contains("start service quitter"), "{message}");
        assert!(message.contains("exited with code 3"), "{message}");
        let OrchestratorError::StartFailed { log_tail, .. } = &error else {
            panic!("{error:?}");
        };
        assert!(!log_tail.is_empty(), "the tail shows why it exited");
        assert_gone(&started_pids(&progress.lock().unwrap()));
    });

    let topology = inline(
        dir.path(),
        "services:\n  ghost:\n    target: { process: { binary: ./no/such/server } }\n",
    );
    let (manager, _) = new_manager(topology, dir.path());
    run(async {
        let message = manager.start_all().await.unwrap_err().to_string();
        let path = dir.path().join("no/such/server");
        assert!(message.contains("start service ghost ("), "{message}");
        assert!(message.contains("services.yaml:2:3"), "{message}");
        assert!(!message.contains("last lines"), "it never ran: {message}");
        assert!(
            message.contains(&format!("binary {} does not exist", path.display())),
            "{message}"
        );
        assert!(manager.state_dir().is_none());
    });
}

#[test]
fn log_and_command_checks_restart_and_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let topology = inline(
        dir.path(),
        &format!(
            r#"
services:
  echo:
    target:
      process: {{ binary: {echo}, env: {{ HOST: 127.0.0.1 }} }}
    port: auto
    health_check: {{ log: "listening on", interval: 20ms }}
  checked:
    target:
      process:
        binary: {health}
        env: {{ GREETING: hi }}
    dependencies: [echo]
    port: auto
    health_check:
      command: ["sh", "-c", "test \"$GREETING\" = hi && test \"$ECHO_ADDR\" = \"${{ECHO_ADDR}}\""]
  sleeper:
    target:
      process: {{ binary: sleep, args: ["300"] }}
"#,
            echo = bin("echo-server").display(),
            health = bin("http-health").display(),
        ),
    );
    let (manager, progress) = new_manager(topology, dir.path());
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let sleeper = manager.status("sleeper").await.unwrap();
        assert_eq!(sleeper.state, ServiceState::Running);
        assert_eq!(sleeper.addr, None, "no port, no address");
        let checked = manager.registry().get("checked").await.unwrap();
        assert!(checked.health.unwrap().detail.contains("exited with 0"));

        let before = manager.status("echo").await.unwrap();
        manager.restart("echo").await.unwrap();
        let after = manager.status("echo").await.unwrap();
        assert_ne!(before.pid, after.pid);
        assert_eq!(
            before.addr, after.addr,
            "a restarted service keeps its port"
        );
        assert_eq!(after.state, ServiceState::Running);
        assert_gone(&[("echo".into(), before.pid.unwrap())]);
        let follow = manager.follow("echo").unwrap();
        let mut echo = TcpStream::connect(after.addr.unwrap()).unwrap();
        echo.write_all(b"again\n").unwrap();
        let mut line = String::new();
        BufReader::new(&echo).read_line(&mut line).unwrap();
        assert_eq!(line, "again\n");
        // A follower sees the lines written after it subscribed, with the service's name.
        loop {
            let line = follow.recv().await.expect("echo's log stays open");
            assert_eq!(line.service, "echo");
            if line.text.contains("echoed") {
                break;
            }
        }
        assert_eq!(manager.registry().get("echo").await.unwrap().restarts, 1);

        // The WebSocket API's controller interface drives the same manager.
        let old = manager.status("sleeper").await.unwrap().pid.unwrap();
        manager
            .control("sleeper", ServiceCommand::Stop)
            .await
            .unwrap();
        assert_eq!(
            manager.status("sleeper").await.unwrap().state,
            ServiceState::Stopped
        );
        assert_gone(&[("sleeper".into(), old)]);
        manager
            .control("sleeper", ServiceCommand::Start)
            .await
            .unwrap();
        assert_eq!(
            manager.status("sleeper").await.unwrap().state,
            ServiceState::Running
        );
        assert!(
            manager
                .control("nobody", ServiceCommand::Start)
                .await
                .is_err()
        );

        let mut pids = started_pids(&progress.lock().unwrap());
        pids.extend(
            manager
                .status("sleeper")
                .await
                .unwrap()
                .pid
                .map(|p| ("sleeper".into(), p)),
        );
        manager.stop_all().await.unwrap();
        assert_gone(&pids);
    });
}

#[test]
fn a_service_ignoring_sigterm_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let topology = inline(
        dir.path(),
        "services:\n  stubborn:\n    target:\n      process:\n        binary: sh\n        args: [\"-c\", \"trap '' TERM; echo up; while true; do sleep 1; done\"]\n    health_check: { log: up }\n",
    );
    let (manager, progress) = new_manager(topology, dir.path());
    let manager = manager.with_stop_grace(Duration::from_millis(300));
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let pids = started_pids(&progress.lock().unwrap());
        manager.stop_all().await.unwrap();
        assert_gone(&pids);
    });
}

#[test]
fn a_service_stops_with_its_own_signal_and_grace() {
    let dir = tempfile::tempdir().unwrap();
    let echo = bin("echo-server");
    // polite: asked with SIGINT, which it catches. stubborn: ignores SIGTERM, and its own
    // 200 ms grace, not the run's 5 s, is what it gets before SIGKILL.
    let topology = inline(
        dir.path(),
        &format!(
            "services:
  polite:
    target: {{ process: {{ binary: \"{}\" }} }}
    port: auto
    stop_signal: INT
  stubborn:
    target:
      process:
        binary: sh
        args: [\"-c\", \"trap '' TERM; echo up; while true; do sleep 1; done\"]
    health_check: {{ log: up }}
    stop_grace: 200ms
",
            echo.display()
        ),
    );
    let (manager, progress) = new_manager(topology, dir.path());
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let pids = started_pids(&progress.lock().unwrap());
        manager.stop("polite").await.unwrap();
        // Its last lines may still be on their way to the log.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = manager.logs("polite").unwrap();
            if lines.iter().any(|l| l.text.contains("received SIGINT")) {
                break;
            }
            assert!(Instant::now() < deadline, "{lines:?}");
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        let started = Instant::now();
        manager.stop("stubborn").await.unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(4),
            "killed after its own 200 ms grace, not the run's 5 s: the stop took {took:?}"
        );
        assert_gone(&pids);
        manager.stop_all().await.unwrap();
    });
}

#[test]
fn a_service_that_exits_after_its_start_is_marked_failed_and_can_restart() {
    let dir = tempfile::tempdir().unwrap();
    let topology = inline(
        dir.path(),
        &format!(
            r#"
services:
  crasher:
    target:
      process:
        binary: {}
        env: {{ FAIL_MODE: crash-later, FAIL_AFTER_MS: "300" }}
    port: auto
    health_check: {{ http: {{ path: /health }} }}
"#,
            bin("failing-service").display()
        ),
    );
    let (manager, progress) = new_manager(topology, dir.path());
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let first = manager.status("crasher").await.unwrap().pid.unwrap();
        let mut state = manager.status("crasher").await.unwrap().state;
        while state == ServiceState::Running {
            smol::Timer::after(Duration::from_millis(20)).await;
            state = manager.status("crasher").await.unwrap().state;
        }
        let ServiceState::Failed { reason } = state else {
            panic!("{state:?}");
        };
        assert!(reason.contains("exited with code 3"), "{reason}");
        assert_eq!(manager.status("crasher").await.unwrap().pid, None);
        assert!(progress.lock().unwrap().iter().any(|p| matches!(
            p,
            Progress::Exited { service, status } if service == "crasher" && status.code() == Some(3)
        )));
        assert_gone(&[("crasher".into(), first)]);

        // A failed service starts again; stopping it on purpose is not a failure.
        manager.restart("crasher").await.unwrap();
        let second = manager.status("crasher").await.unwrap().pid.unwrap();
        assert_ne!(first, second);
        manager.stop_all().await.unwrap();
        assert_eq!(
            manager.status("crasher").await.unwrap().state,
            ServiceState::Stopped
        );
        assert_gone(&[("crasher".into(), second)]);
    });
}

#[test]
fn a_service_waits_only_for_its_own_dependencies_and_the_first_failure_ends_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let topology = inline(
        dir.path(),
        &format!(
            r#"
services:
  slow:
    target: {{ process: {{ binary: sleep, args: ["300"] }} }}
    health_check: {{ command: ["test", "-e", "{go}"], interval: 20ms }}
  fast:
    target: {{ process: {{ binary: {echo} }} }}
    port: auto
  after-fast:
    target: {{ process: {{ binary: {echo} }} }}
    dependencies: [fast]
    port: auto
"#,
            go = go.display(),
            echo = bin("echo-server").display(),
        ),
    );
    let (manager, progress) = new_manager(topology, dir.path());
    run(async {
        let release = async {
            // `after-fast` comes up while `slow`, which it does not need, is still starting.
            loop {
                let after = manager.status("after-fast").await.unwrap().state;
                if after == ServiceState::Running {
                    break;
                }
                smol::Timer::after(Duration::from_millis(10)).await;
            }
            assert_eq!(
                manager.status("slow").await.unwrap().state,
                ServiceState::Starting
            );
            std::fs::write(&go, "").unwrap();
        };
        let (started, ()) = futures_lite::future::zip(manager.start_all(), release).await;
        started.unwrap_or_else(|e| panic!("{e}"));
        let pids = started_pids(&progress.lock().unwrap());
        manager.stop_all().await.unwrap();
        assert_gone(&pids);
    });

    // `hang` would take its whole 30 s start period to fail; `quitter` fails at once, and that
    // ends the start: `hang` is abandoned and killed.
    let topology = inline(
        dir.path(),
        &format!(
            r#"
services:
  hang:
    target: {{ process: {{ binary: {failing}, env: {{ FAIL_MODE: hang }} }} }}
    port: auto
  quitter:
    target: {{ process: {{ binary: {failing}, env: {{ FAIL_MODE: exit, FAIL_AFTER_MS: "200" }} }} }}
    port: auto
  needs-both:
    target: {{ process: {{ binary: sleep, args: ["300"] }} }}
    dependencies: [hang, quitter]
"#,
            failing = bin("failing-service").display(),
        ),
    );
    let (manager, progress) = new_manager(topology, dir.path());
    run(async {
        let error = manager.start_all().await.unwrap_err();
        assert_eq!(error.failed_service(), Some("quitter"), "{error}");
        let pids = started_pids(&progress.lock().unwrap());
        let mut names: Vec<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["hang", "quitter"]);
        assert_gone(&pids);
        let registry = manager.registry();
        assert_eq!(
            registry.get("hang").await.unwrap().state,
            ServiceState::Stopped
        );
        assert_eq!(
            registry.get("needs-both").await.unwrap().state,
            ServiceState::Pending
        );
        assert!(manager.state_dir().is_none());
    });
}

/// The topology with a real PostgreSQL and a real Redis (both from the Debian packages, run as
/// processes), and kv-server using both through the addresses harness injects.
#[test]
fn kv_server_uses_a_real_postgres_and_redis_through_injected_addresses() {
    let project = project_dir();
    // postgres.sh is referenced as ./fixtures/scripts/postgres.sh, relative to the project.
    std::os::unix::fs::symlink(
        fixtures::workspace_dir().join("fixtures"),
        project.path().join("fixtures"),
    )
    .unwrap();
    let topology = TopologyConfig::load(topology_file("kv-postgres-redis.yaml")).unwrap();
    let (manager, progress) = new_manager(topology, project.path());
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let state_dir = manager.state_dir().unwrap();
        let addr = |name: &str| {
            let manager = &manager;
            let name = name.to_string();
            async move { manager.status(&name).await.unwrap().addr.unwrap() }
        };
        let (kv, postgres, redis) = (
            addr("kv").await,
            addr("postgres").await,
            addr("redis").await,
        );

        // kv was told where its dependencies are.
        let env = env_file(&state_dir.join("kv.env"));
        assert!(
            env.contains(&("POSTGRES_ADDR".into(), postgres.to_string())),
            "{env:?}"
        );
        assert!(
            env.contains(&("REDIS_ADDR".into(), redis.to_string())),
            "{env:?}"
        );

        // A value goes into PostgreSQL; reading it fills the Redis cache.
        assert_eq!(http(kv, "PUT", "/kv/e2e", "kept in postgres").status, 204);
        let first = http(kv, "GET", "/kv/e2e", "");
        assert_eq!(
            (first.status, first.body.as_str()),
            (200, "kept in postgres")
        );
        let second = http(kv, "GET", "/kv/e2e", "");
        assert_eq!(second.body, "kept in postgres");
        assert!(
            second.headers.contains("x-kv-source: cache"),
            "{}",
            second.headers
        );

        // A fresh Redis holds nothing, so a value still read must come from PostgreSQL.
        manager.restart("redis").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let after = http(kv, "GET", "/kv/e2e", "");
            assert_eq!(
                (after.status, after.body.as_str()),
                (200, "kept in postgres")
            );
            if after.headers.contains("x-kv-source: database") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never read from the database: {}",
                after.headers
            );
            smol::Timer::after(Duration::from_millis(100)).await;
        }

        // postgres.sh names its data directory; stopping it must remove it.
        let data_dir = manager
            .logs("postgres")
            .unwrap()
            .iter()
            .find_map(|l| {
                l.text
                    .strip_prefix("postgres.sh: data directory ")
                    .map(PathBuf::from)
            })
            .expect("postgres.sh names its data directory");
        assert!(data_dir.exists());

        let pids = started_pids(&progress.lock().unwrap());
        manager.stop_all().await.unwrap();
        assert_gone(&pids);
        assert!(!data_dir.exists(), "{} is left", data_dir.display());
        assert!(!state_dir.exists(), "{} is left", state_dir.display());
    });
}

/// A Redis Cluster node on `${port}`, its cluster state in its own directory.
fn cluster_node(name: &str) -> String {
    format!(
        "  {name}:
    target:
      process:
        binary: redis-server
        args: [--port, \"${{port}}\", --bind, 127.0.0.1, --cluster-enabled, \"yes\",
               --cluster-config-file, \"${{dir}}/nodes.conf\", --dir, \"${{dir}}\",
               --save, \"\", --appendonly, \"no\"]
    port: auto
"
    )
}

#[test]
fn a_job_forms_a_redis_cluster_before_the_service_that_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<String> = (1..=6).map(|i| format!("node{i}")).collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("\"${{{}_ADDR}}\"", n.to_uppercase()))
        .collect();
    // Six real redis-server processes, a `redis-cli --cluster create` job over them, and a
    // client that needs the formed cluster: it starts only once the job has exited with 0, and
    // fails at once if the slots are not assigned by then (the nodes' gossip may take a moment
    // more to call the cluster ok).
    let topology = inline(
        dir.path(),
        &format!(
            "services:
{}  form-cluster:
    job: true
    target:
      process:
        binary: redis-cli
        args: [--cluster, create, {}, --cluster-replicas, \"1\", --cluster-yes]
    dependencies: [{}]
  client:
    target:
      process:
        binary: sh
        args: [-c, \"info() {{ redis-cli -h 127.0.0.1 -p $${{NODE1_ADDR##*:}} cluster info; }}; info | grep -q cluster_slots_assigned:16384 || {{ echo no slots yet; exit 1; }}; until info | grep -q cluster_state:ok; do sleep 0.05; done; echo cluster_state:ok; exec sleep 3600\"]
    dependencies: [form-cluster, node1]
    health_check: {{ log: \"cluster_state:ok\" }}
",
            nodes.iter().map(|n| cluster_node(n)).collect::<String>(),
            addrs.join(", "),
            nodes.join(", ")
        ),
    );
    let (manager, progress) = new_manager(topology, dir.path());
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let job = manager.registry().get("form-cluster").await.unwrap();
        assert_eq!(job.state, ServiceState::Completed);
        let done =
            progress.lock().unwrap().iter().any(
                |p| matches!(p, Progress::Completed { service, .. } if service == "form-cluster"),
            );
        assert!(done, "no Completed progress for the job");
        let log = manager.logs("form-cluster").unwrap();
        assert!(
            log.iter()
                .any(|l| l.text.contains("All 16384 slots covered")),
            "{log:?}"
        );
        // The cluster serves: a key set through one node is read through another.
        let port = |n: &str| {
            let manager = &manager;
            let n = n.to_string();
            async move {
                manager.registry().get(&n).await.unwrap().endpoints[0]
                    .address
                    .port()
                    .to_string()
            }
        };
        let (p1, p4) = (port("node1").await, port("node4").await);
        let cli = |port: &str, args: &[&str]| {
            let out = std::process::Command::new("redis-cli")
                .args(["-c", "-h", "127.0.0.1", "-p", port])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(cli(&p1, &["set", "greeting", "hello"]), "OK");
        assert_eq!(cli(&p4, &["get", "greeting"]), "hello");
        manager.stop_all().await.unwrap();
    });
}

#[test]
fn a_failing_job_fails_the_start_with_its_log_and_its_dependents_never_start() {
    let dir = tempfile::tempdir().unwrap();
    let echo = bin("echo-server");
    let topology = inline(
        dir.path(),
        &format!(
            "services:
  db:
    target: {{ process: {{ binary: \"{}\" }} }}
    port: auto
  migrate:
    job: true
    target:
      process:
        binary: sh
        args: [-c, \"echo applying 0001_init against $DB_ADDR; echo 'relation exists' >&2; exit 3\"]
    dependencies: [db]
  api:
    target: {{ process: {{ binary: \"{}\" }} }}
    port: auto
    dependencies: [migrate]
",
            echo.display(),
            echo.display()
        ),
    );
    let (manager, progress) = new_manager(topology, dir.path());
    run(async {
        let error = manager
            .start_all()
            .await
            .expect_err("the job fails")
            .to_string();
        assert!(error.contains("migrate"), "{error}");
        assert!(error.contains("the job exited with code 3"), "{error}");
        assert!(
            error.contains("applying 0001_init against 127.0.0.1:"),
            "{error}"
        );
        assert!(error.contains("relation exists"), "{error}");
        let started = started_pids(&progress.lock().unwrap());
        assert!(
            !started.iter().any(|(s, _)| s == "api"),
            "api started: {started:?}"
        );
        // What had started is stopped again, the job's group too.
        let db = manager.registry().get("db").await.unwrap();
        assert!(!db.state.is_active(), "{:?}", db.state);
        assert_gone(&started);
    });
}

#[test]
fn a_job_runs_again_when_a_service_it_names_in_rerun_on_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let echo = bin("echo-server");
    let runs = dir.path().join("runs");
    let topology = inline(
        dir.path(),
        &format!(
            "services:
  db:
    target: {{ process: {{ binary: \"{echo}\" }} }}
    port: auto
  cache:
    target: {{ process: {{ binary: \"{echo}\" }} }}
    port: auto
  seed:
    job: true
    target:
      process:
        binary: sh
        args: [-c, \"echo seeded $DB_ADDR >> {runs}\"]
    dependencies: [db, cache]
    rerun_on: [db]
  api:
    target: {{ process: {{ binary: \"{echo}\" }} }}
    port: auto
    dependencies: [seed]
",
            echo = echo.display(),
            runs = runs.display()
        ),
    );
    let (manager, _progress) = new_manager(topology, dir.path());
    let count = || {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
    };
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count(), 1);
        // A completed job is a met dependency: its dependent restarts without it running again.
        manager
            .restart("api")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count(), 1);
        // Not named in `rerun_on`: no run.
        manager
            .restart("cache")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count(), 1);
        manager
            .restart("db")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count(), 2);
        let seed = manager.registry().get("seed").await.unwrap();
        assert_eq!(seed.state, ServiceState::Completed);
        manager.stop_all().await.unwrap();
    });
}

#[test]
fn a_migration_job_makes_the_schema_a_real_postgres_service_needs() {
    let project = project_dir();
    std::os::unix::fs::symlink(
        fixtures::workspace_dir().join("fixtures"),
        project.path().join("fixtures"),
    )
    .unwrap();
    // psql against the server harness started, through the address it injects.
    let psql = "psql -v ON_ERROR_STOP=1 -h $${POSTGRES_ADDR%:*} -p $${POSTGRES_ADDR##*:} \
                -U postgres -d postgres";
    let topology = inline(
        project.path(),
        &format!(
            "services:
  postgres:
    target: {{ process: {{ binary: ./fixtures/scripts/postgres.sh }} }}
    port: auto
    health_check: {{ log: \"database system is ready to accept connections\" }}
  migrate:
    job: true
    target:
      process:
        binary: sh
        args: [-c, \"{psql} -c 'CREATE TABLE settings (key text PRIMARY KEY, value text)' \
                -c \\\"INSERT INTO settings VALUES ('greeting', 'hello')\\\"\"]
    dependencies: [postgres]
  reader:
    target:
      process:
        binary: sh
        args: [-c, \"{psql} -tAc \\\"SELECT value FROM settings WHERE key = 'greeting'\\\"; exec sleep 3600\"]
    dependencies: [migrate, postgres]
    health_check: {{ log: \"^hello$\" }}
"
        ),
    );
    let (manager, _progress) = new_manager(topology, project.path());
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            manager.registry().get("migrate").await.unwrap().state,
            ServiceState::Completed
        );
        let log = manager.logs("migrate").unwrap();
        assert!(log.iter().any(|l| l.text == "CREATE TABLE"), "{log:?}");
        assert!(log.iter().any(|l| l.text == "INSERT 0 1"), "{log:?}");
        manager.stop_all().await.unwrap();
    });
}
