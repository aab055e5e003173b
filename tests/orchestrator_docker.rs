//! The orchestrator with `docker:` targets on the machine's real Docker engine: the demo
//! topology with one service, then two, as containers built here from the fixture programs,
//! talking across every edge (process to container, container to process, container to
//! container) through the addresses harness injected; a missing image and a container that
//! exits fail the start, named, with the log tail, and roll back; dropping the manager and
//! stopping it leave no container, network, image or state directory; the janitor removes
//! what a dead run left; an image's own HEALTHCHECK, `tmpfs:`, `volumes:`, `cpus:`, `memory:`
//! and `network_mode: host` take effect in the engine; a `compose:` target is reached both ways
//! and goes with its project.
//!
//! Without a Docker engine each test says why it did not run and passes, unless
//! `HARNESS_REQUIRE_DOCKER=1`.

#[path = "support/docker.rs"]
mod docker;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/http.rs"]
mod http;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::orchestrator::{DockerExecutor, OrchestratorError, RUN_LABEL, ServiceManager};
use harness::registry::{ExecutionKind, Registry, ServiceState};
use harness::topology::TopologyConfig;

use docker::{docker_lines, require_docker, run};
use fixtures::{project_dir, topology_file};
use http::http;

/// A manager for `topology` run from `project`, and its run id (the `harness.run` label of
/// everything it creates in Docker).
fn new_manager(topology: TopologyConfig, project: &Path) -> (ServiceManager, String) {
    let executor = DockerExecutor::new();
    let run_id = executor.run_id().to_string();
    let manager = ServiceManager::new(topology, Registry::new())
        .with_base_dir(project)
        .with_stop_grace(Duration::from_secs(5))
        .with_executor("docker", executor);
    (manager, run_id)
}

/// The demo with `overlays` from fixtures/topologies.
fn demo(overlays: &[&str]) -> TopologyConfig {
    let overlays: Vec<PathBuf> = overlays.iter().map(|o| topology_file(o)).collect();
    TopologyConfig::load_with_overlays(topology_file("demo.yaml"), &overlays)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A topology from YAML text written into `dir`.
fn inline(dir: &Path, yaml: &str) -> TopologyConfig {
    let path = dir.join("services.yaml");
    std::fs::write(&path, yaml).unwrap();
    TopologyConfig::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn image_exists(tag: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", tag])
        .output()
        .expect("run docker")
        .status
        .success()
}

/// What Docker still holds of run `run_id`: its containers and networks, then `images` that
/// exist.
fn leftovers(run_id: &str, images: &[&str]) -> Vec<String> {
    let label = format!("label={RUN_LABEL}={run_id}");
    let mut left = docker_lines(&[
        "ps",
        "--all",
        "--filter",
        &label,
        "--format",
        "container {{.Names}}",
    ]);
    left.extend(docker_lines(&[
        "network",
        "ls",
        "--filter",
        &label,
        "--format",
        "network {{.Name}}",
    ]));
    left.extend(
        images
            .iter()
            .filter(|i| image_exists(i))
            .map(|i| format!("image {i}")),
    );
    left
}

/// Waits (up to 30 s) until Docker holds nothing of the run, and fails naming what is left.
fn assert_nothing_left(run_id: &str, images: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = leftovers(run_id, images);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "run {run_id} left {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes what a failed test left, so that one failure does not leave containers behind.
struct Cleanup {
    run_id: String,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let label = format!("label={RUN_LABEL}={}", self.run_id);
        for id in docker_lines(&["ps", "--all", "--quiet", "--filter", &label]) {
            let _ = Command::new("docker").args(["rm", "--force", &id]).output();
        }
        for id in docker_lines(&["network", "ls", "--quiet", "--filter", &label]) {
            let _ = Command::new("docker").args(["network", "rm", &id]).output();
        }
        for image in &self.images {
            let _ = Command::new("docker").args(["image", "rm", image]).output();
        }
    }
}

/// One variable of a service's env file in the run's state directory.
fn env_var(manager: &ServiceManager, service: &str, name: &str) -> String {
    let path = manager
        .state_dir()
        .expect("a state directory while running")
        .join(format!("{service}.env"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('\'').to_string())
        .unwrap_or_else(|| panic!("{name} is not in {}:\n{text}", path.display()))
}

async fn addr(manager: &ServiceManager, service: &str) -> SocketAddr {
    let status = manager.status(service).await.unwrap();
    assert_eq!(status.state, ServiceState::Running, "{status:?}");
    status.addr.expect("an address")
}

/// Waits (up to 10 s) until `service`'s log has a line containing `text`.
async fn log_has(manager: &ServiceManager, service: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = manager.logs(service).unwrap();
        if lines.iter().any(|l| l.text.contains(text)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{service} never logged {text:?}: {lines:?}"
        );
        smol::Timer::after(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_container_between_two_processes_is_reached_both_ways() {
    if !require_docker("a_container_between_two_processes_is_reached_both_ways") {
        return;
    }
    const IMAGE: &str = "harness-demo/kv-api:dev";
    let project = project_dir();
    let (manager, run_id) = new_manager(demo(&["demo-docker.yaml"]), project.path());
    let _cleanup = Cleanup {
        run_id: run_id.clone(),
        images: vec![IMAGE.into()],
    };
    assert!(!image_exists(IMAGE), "{IMAGE} exists before the test");
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let state_dir = manager.state_dir().expect("a state directory");
        let (kv_store, kv_api, web) = (
            addr(&manager, "kv-store").await,
            addr(&manager, "kv-api").await,
            addr(&manager, "web").await,
        );

        // kv-api runs in a container of the run, recorded as such.
        let entry = manager.registry().get("kv-api").await.unwrap();
        assert_eq!(entry.execution.kind, ExecutionKind::Docker);
        let container = entry
            .execution
            .container_id
            .clone()
            .expect("a container id");
        let labels = docker_lines(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"harness.run\"}} {{index .Config.Labels \"harness.service\"}}",
            &container,
        ]);
        assert_eq!(labels, [format!("{run_id} kv-api")]);
        assert_eq!(
            entry
                .endpoints
                .iter()
                .map(|e| e.address)
                .collect::<Vec<_>>(),
            [kv_api]
        );
        // Its address on the run's network is recorded beside it.
        let inside = entry.endpoints[0]
            .host_addr
            .expect("the container's own address");
        assert!(
            !inside.ip().is_loopback() && inside.port() == kv_api.port(),
            "{inside}"
        );

        // Container -> process: through the host gateway, to kv-store's own port.
        assert_eq!(
            env_var(&manager, "kv-api", "KV_STORE_ADDR"),
            format!("host.docker.internal:{}", kv_store.port())
        );
        log_has(
            &manager,
            "kv-api",
            &format!(
                "storing in kv-server at host.docker.internal:{}",
                kv_store.port()
            ),
        )
        .await;
        // Process -> container: the published port on 127.0.0.1, which status reports too.
        assert_eq!(env_var(&manager, "web", "KV_API_ADDR"), kv_api.to_string());
        // auto: the container listens on the port it is published on.
        assert_eq!(
            env_var(&manager, "kv-api", "PORT"),
            kv_api.port().to_string()
        );

        // Values go through the container into the process, and back.
        assert_eq!(http(kv_api, "PUT", "/kv/greeting", "hello").status, 204);
        let got = http(kv_api, "GET", "/kv/greeting", "");
        assert_eq!((got.status, got.body.as_str()), (200, "hello"));
        let direct = http(kv_store, "GET", "/kv/greeting", "");
        assert_eq!((direct.status, direct.body.as_str()), (200, "hello"));
        assert_eq!(http(web, "GET", "/health", "").status, 200);

        // A restarted container comes back on the same address, as a new container.
        manager
            .restart("kv-api")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(addr(&manager, "kv-api").await, kv_api);
        let again = manager.registry().get("kv-api").await.unwrap();
        assert_ne!(again.execution.container_id, Some(container.clone()));
        let got = http(kv_api, "GET", "/kv/greeting", "");
        assert_eq!((got.status, got.body.as_str()), (200, "hello"));

        manager.stop_all().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!state_dir.exists(), "{} is left", state_dir.display());
    });
    // stop_all waited for everything: nothing to wait for here.
    assert_eq!(leftovers(&run_id, &[IMAGE]), Vec::<String>::new());
}

#[test]
fn containers_reach_each_other_by_name_on_the_run_network() {
    if !require_docker("containers_reach_each_other_by_name_on_the_run_network") {
        return;
    }
    const IMAGE: &str = "harness-demo/kv-server:dev";
    let project = project_dir();
    let (manager, run_id) = new_manager(
        demo(&["demo-docker.yaml", "demo-docker-store.yaml"]),
        project.path(),
    );
    let _cleanup = Cleanup {
        run_id: run_id.clone(),
        images: vec![IMAGE.into()],
    };
    assert!(!image_exists(IMAGE), "{IMAGE} exists before the test");
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let (kv_store, kv_api) = (
            addr(&manager, "kv-store").await,
            addr(&manager, "kv-api").await,
        );
        // Container -> container: the dependency's name and its port inside its container.
        let store_port = env_var(&manager, "kv-store", "PORT");
        assert_eq!(
            env_var(&manager, "kv-api", "KV_STORE_ADDR"),
            format!("kv-store:{store_port}")
        );
        // Both run from the one image built for the run, on the run's network.
        let mut images = Vec::new();
        for service in ["kv-store", "kv-api"] {
            let entry = manager.registry().get(service).await.unwrap();
            let id = entry.execution.container_id.expect("a container id");
            images.extend(docker_lines(&[
                "inspect",
                "--format",
                "{{.Image}} {{range $n, $c := .NetworkSettings.Networks}}{{$n}}{{end}}",
                &id,
            ]));
        }
        assert_eq!(images.len(), 2);
        assert_eq!(images[0], images[1]);
        assert!(images[0].ends_with(&format!(" {run_id}")), "{images:?}");

        assert_eq!(
            http(kv_api, "PUT", "/kv/k", "across the network").status,
            204
        );
        let direct = http(kv_store, "GET", "/kv/k", "");
        assert_eq!(
            (direct.status, direct.body.as_str()),
            (200, "across the network")
        );
        manager.stop_all().await.unwrap_or_else(|e| panic!("{e}"));
    });
    assert_eq!(leftovers(&run_id, &[IMAGE]), Vec::<String>::new());
}

/// The start error, which must name `service`.
fn start_error(result: Result<(), OrchestratorError>, service: &str) -> String {
    let error = result.expect_err("the start must fail");
    assert_eq!(error.failed_service(), Some(service), "{error}");
    error.to_string()
}

#[test]
fn a_missing_image_fails_the_start_and_rolls_back() {
    if !require_docker("a_missing_image_fails_the_start_and_rolls_back") {
        return;
    }
    let project = project_dir();
    let image = format!("harness-test/missing-{}:none", std::process::id());
    let topology = inline(
        project.path(),
        &format!(
            "services:
  kv-store:
    target:
      process: {{ binary: ./target/debug/kv-server, env: {{ KV_BACKEND: memory }} }}
    port: auto
  ghost:
    target:
      docker: {{ image: \"{image}\" }}
    dependencies: [kv-store]
    port: auto
"
        ),
    );
    let (manager, run_id) = new_manager(topology, project.path());
    let _cleanup = Cleanup {
        run_id: run_id.clone(),
        images: Vec::new(),
    };
    run(async {
        let error = start_error(manager.start_all().await, "ghost");
        // No registry has it (or none is reachable): the pull fails, naming the image.
        assert!(
            error.contains(&format!("pull image `{image}`")) && error.contains("build:"),
            "{error}"
        );
        assert_eq!(
            manager.status("kv-store").await.unwrap().state,
            ServiceState::Stopped
        );
        assert!(manager.state_dir().is_none());
    });
    assert_eq!(leftovers(&run_id, &[]), Vec::<String>::new());
}

#[test]
fn a_container_that_exits_fails_with_its_log_tail_and_leaves_nothing() {
    if !require_docker("a_container_that_exits_fails_with_its_log_tail_and_leaves_nothing") {
        return;
    }
    let project = project_dir();
    let image = format!("harness-test/exits-{}:dev", std::process::id());
    // No KV_BACKEND and no store to use: kv-server says so and exits with 2.
    let topology = inline(
        project.path(),
        &format!(
            "services:
  broken:
    target:
      docker: {{ image: \"{image}\", build: {{ binary: ./target/debug/kv-server }} }}
    port: auto
"
        ),
    );
    let (manager, run_id) = new_manager(topology, project.path());
    let _cleanup = Cleanup {
        run_id: run_id.clone(),
        images: vec![image.clone()],
    };
    run(async {
        let error = start_error(manager.start_all().await, "broken");
        assert!(error.contains("exited with"), "{error}");
        assert!(error.contains("KV_BACKEND"), "no log tail in: {error}");
    });
    assert_eq!(leftovers(&run_id, &[&image]), Vec::<String>::new());
}

#[test]
fn a_container_that_dies_is_noticed_and_dropping_the_manager_removes_the_run() {
    if !require_docker("a_container_that_dies_is_noticed_and_dropping_the_manager_removes_the_run")
    {
        return;
    }
    let project = project_dir();
    let image = format!("harness-test/dropped-{}:dev", std::process::id());
    let topology = inline(
        project.path(),
        &format!(
            "services:
  store:
    target:
      docker:
        image: \"{image}\"
        build: {{ binary: ./target/debug/kv-server, base: scratch }}
        env: {{ KV_BACKEND: memory }}
        ports: [9999]
    port: 7000
"
        ),
    );
    let (manager, run_id) = new_manager(topology, project.path());
    let _cleanup = Cleanup {
        run_id: run_id.clone(),
        images: vec![image.clone()],
    };
    let state_dir = run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        // A fixed port is the port inside the container, published on a free one.
        assert_eq!(env_var(&manager, "store", "PORT"), "7000");
        let store = addr(&manager, "store").await;
        assert_ne!(store.port(), 7000);
        assert_eq!(http(store, "GET", "/health", "").status, 200);
        // `ports:` extras are published too, and registered.
        let entry = manager.registry().get("store").await.unwrap();
        assert!(
            entry.endpoints.iter().any(|e| e.name == "port-9999"),
            "{:?}",
            entry.endpoints
        );
        // A container that ends on its own is noticed, like a process: the service is failed.
        docker_lines(&[
            "kill",
            &entry.execution.container_id.expect("a container id"),
        ]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = manager.status("store").await.unwrap().state;
            if matches!(state, ServiceState::Failed { .. }) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still {state:?} after docker kill"
            );
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        manager.state_dir().expect("a state directory")
    });
    assert!(!leftovers(&run_id, &[&image]).is_empty());
    drop(manager);
    assert_nothing_left(&run_id, &[&image]);
    assert!(!state_dir.exists(), "{} is left", state_dir.display());
}

#[test]
fn the_janitor_removes_what_dead_runs_left() {
    if !require_docker("the_janitor_removes_what_dead_runs_left") {
        return;
    }
    // A process that is gone: its pid labels the leftovers of a "killed" run.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let dead_run = format!("harness-dead{}", std::process::id());
    // Named after the run, as the executor names its networks.
    let live_run = format!("{dead_run}-live");
    let create = |name: &str, pid: u32| {
        docker_lines(&[
            "network",
            "create",
            "--label",
            &format!("{RUN_LABEL}={name}"),
            "--label",
            &format!("harness.pid={pid}"),
            name,
        ]);
    };
    create(&dead_run, dead);
    // One owned by a live process (this one) stays.
    create(&live_run, std::process::id());
    // One whose owner is in another pid namespace stays too.
    let foreign_run = format!("{dead_run}-foreign");
    docker_lines(&[
        "network",
        "create",
        "--label",
        &format!("{RUN_LABEL}={foreign_run}"),
        "--label",
        &format!("harness.pid={dead}"),
        "--label",
        "harness.pidns=1",
        &foreign_run,
    ]);
    // A compose project's network and volume, named for the dead owner as harness names its
    // projects, and one of a live owner.
    let hex = format!("{:012x}", u64::from(std::process::id()) * 7919);
    let dead_project = format!("harness-{hex}-p{dead}-web-0");
    let live_project = format!("harness-{hex}-p{}-web-0", std::process::id());
    // The same dead pid in another pid namespace (a test job in a container with this
    // engine's socket) means another process, which this janitor cannot judge: it stays.
    let foreign_project = format!("harness-{hex}-p{dead}n1-web-0");
    for project in [&dead_project, &live_project, &foreign_project] {
        let label = format!("com.docker.compose.project={project}");
        docker_lines(&["network", "create", "--label", &label, project]);
        docker_lines(&["volume", "create", "--label", &label, project]);
    }
    let compose_objects = |project: &str| {
        let filter = format!("label=com.docker.compose.project={project}");
        let mut found = docker_lines(&["network", "ls", "--quiet", "--filter", &filter]);
        found.extend(docker_lines(&[
            "volume", "ls", "--quiet", "--filter", &filter,
        ]));
        found
    };
    let _cleanup = (
        Cleanup {
            run_id: dead_run.clone(),
            images: Vec::new(),
        },
        Cleanup {
            run_id: live_run.clone(),
            images: Vec::new(),
        },
        Cleanup {
            run_id: foreign_run.clone(),
            images: Vec::new(),
        },
    );

    let project = project_dir();
    let image = format!("harness-test/janitor-{}:dev", std::process::id());
    let topology = inline(
        project.path(),
        &format!(
            "services:
  store:
    target:
      docker:
        image: \"{image}\"
        build: {{ binary: ./target/debug/kv-server }}
        env: {{ KV_BACKEND: memory }}
    port: auto
"
        ),
    );
    let (manager, run_id) = new_manager(topology, project.path());
    let _cleanup_run = Cleanup {
        run_id: run_id.clone(),
        images: vec![image.clone()],
    };
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        manager.stop_all().await.unwrap_or_else(|e| panic!("{e}"));
    });
    assert_eq!(leftovers(&dead_run, &[]), Vec::<String>::new());
    assert_eq!(leftovers(&live_run, &[]), [format!("network {live_run}")]);
    assert_eq!(
        leftovers(&foreign_run, &[]),
        [format!("network {foreign_run}")]
    );
    assert_eq!(leftovers(&run_id, &[&image]), Vec::<String>::new());
    assert_eq!(compose_objects(&dead_project), Vec::<String>::new());
    for kept in [&live_project, &foreign_project] {
        assert_eq!(compose_objects(kept).len(), 2, "{kept}");
        docker_lines(&["network", "rm", kept]);
        docker_lines(&["volume", "rm", kept]);
    }
}

#[test]
fn a_command_runs_inside_a_container_with_its_environment() {
    if !require_docker("a_command_runs_inside_a_container_with_its_environment") {
        return;
    }
    let project = project_dir();
    let image = format!("harness-test/exec-{}:dev", std::process::id());
    let topology = inline(
        project.path(),
        &format!(
            "services:
  store:
    target:
      docker:
        image: \"{image}\"
        build: {{ binary: ./target/debug/kv-server, base: busybox }}
        env: {{ KV_BACKEND: memory, KV_NOTE: \"from the topology\" }}
        working_dir: /tmp
    port: 7000
"
        ),
    );
    let (manager, run_id) = new_manager(topology, project.path());
    let _cleanup = Cleanup {
        run_id: run_id.clone(),
        images: vec![image.clone()],
    };
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let words = |argv: &[&str]| argv.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let out = manager
            .exec(
                "store",
                &words(&[
                    "sh",
                    "-c",
                    "echo \"$KV_NOTE:$PORT:$(pwd)\"; echo oops >&2; exit 4",
                ]),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.stdout_text(), "from the topology:7000:/tmp", "{out:?}");
        assert_eq!(out.stderr_text(), "oops", "{out:?}");
        assert_eq!(out.status.and_then(|s| s.code()), Some(4), "{out:?}");
        // The container's own process is what answers on its port inside it.
        let wget = manager
            .exec(
                "store",
                &words(&["wget", "-q", "-O", "-", "http://127.0.0.1:7000/health"]),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(wget.success(), "{wget:?}");
        manager.stop("store").await.unwrap();
        let stopped = manager.exec("store", &words(&["true"])).await.unwrap_err();
        assert!(stopped.to_string().contains("not running"), "{stopped}");
        manager.stop_all().await.unwrap();
    });
    assert_nothing_left(&run_id, &[&image]);
}

/// `files:` are in the container before its program starts: a copy of a file of the project
/// with its mode, and a text with its placeholders filled, owned by root, in directories made
/// on the way; after a restart they are there again.
#[test]
fn files_are_copied_into_a_container_before_it_starts() {
    if !require_docker("files_are_copied_into_a_container_before_it_starts") {
        return;
    }
    let project = project_dir();
    std::fs::write(project.path().join("seed.txt"), "seeded\n").unwrap();
    std::fs::set_permissions(
        project.path().join("seed.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let image = format!("harness-test/files-{}:dev", std::process::id());
    let topology = inline(
        project.path(),
        &format!(
            "services:
  store:
    target:
      docker:
        image: \"{image}\"
        build: {{ binary: ./target/debug/kv-server, base: busybox }}
        env: {{ KV_BACKEND: memory }}
        entrypoint: [sh, -c, 'cat /etc/kv/seed.txt /srv/conf/kv.toml > /tmp/seen && exec kv-server']
    port: 7000
    files:
      - {{ source: seed.txt, target: /etc/kv/seed.txt }}
      - {{ content: \"port = ${{port}}\\n\", target: /srv/conf/kv.toml, mode: \"0600\" }}
"
        ),
    );
    let (manager, run_id) = new_manager(topology, project.path());
    let _cleanup = Cleanup {
        run_id: run_id.clone(),
        images: vec![image.clone()],
    };
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        for _ in 0..2 {
            // What the entrypoint read before the server started.
            let seen = manager.exec("store", &sh("cat /tmp/seen")).await.unwrap();
            assert_eq!(seen.stdout_text(), "seeded\nport = 7000", "{seen:?}");
            let modes = manager
                .exec(
                    "store",
                    &sh("stat -c '%a %u %n' /etc/kv/seed.txt /srv/conf/kv.toml /srv/conf"),
                )
                .await
                .unwrap();
            assert_eq!(
                modes.stdout_text(),
                "640 0 /etc/kv/seed.txt\n600 0 /srv/conf/kv.toml\n755 0 /srv/conf",
                "{modes:?}"
            );
            manager
                .restart("store")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        manager.stop_all().await.unwrap();
    });
    assert_nothing_left(&run_id, &[&image]);
}

/// busybox's httpd, built into an image as its entrypoint: a program with no SIGTERM handler,
/// which as a container's PID 1 ignores SIGTERM.
fn httpd_service(name: &str, image: &str, extra: &str) -> String {
    format!(
        "  {name}:
    target:
      docker:
        image: \"{image}\"
        build: {{ binary: /bin/busybox, base: busybox }}
        command: [httpd, -f, -p, \"${{port}}\"]
{extra}    port: auto
"
    )
}

#[test]
fn a_built_program_without_a_signal_handler_stops_on_sigterm_through_init() {
    if !require_docker("a_built_program_without_a_signal_handler_stops_on_sigterm_through_init") {
        return;
    }
    let project = project_dir();
    let image = format!("harness-test/httpd-{}:dev", std::process::id());
    let topology = inline(
        project.path(),
        &format!(
            "services:\n{}{}",
            // Built, so init is on by default.
            httpd_service("with-init", &image, ""),
            // The same program as PID 1, which SIGTERM does not end: killed after its grace.
            httpd_service(
                "without-init",
                &image,
                "        init: false\n    stop_grace: 1s\n"
            ),
        ),
    );
    let (manager, run_id) = new_manager(topology, project.path());
    let _cleanup = Cleanup {
        run_id: run_id.clone(),
        images: vec![image.clone()],
    };
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let pid1 = |service: &'static str| {
            let manager = &manager;
            async move {
                let argv = ["cat".to_string(), "/proc/1/cmdline".to_string()];
                let out = manager.exec(service, &argv).await.unwrap();
                out.stdout_text().replace('\0', " ")
            }
        };
        let with = pid1("with-init").await;
        assert!(with.contains("docker-init"), "PID 1 of with-init: {with}");
        let without = pid1("without-init").await;
        assert!(
            without.contains("httpd"),
            "PID 1 of without-init: {without}"
        );

        // The manager's grace is 5 s (new_manager): with init, SIGTERM ends the program at
        // once; without, only the SIGKILL after the service's own 1 s grace does.
        let started = Instant::now();
        manager.stop("with-init").await.unwrap();
        let with_init = started.elapsed();
        assert!(
            with_init < Duration::from_secs(4),
            "SIGTERM did not end the program under init: the stop took {with_init:?}"
        );
        let started = Instant::now();
        manager.stop("without-init").await.unwrap();
        let without_init = started.elapsed();
        assert!(
            without_init >= Duration::from_secs(1) && without_init < Duration::from_secs(4),
            "PID 1 without a handler is killed after stop_grace (1 s), not the run's 5 s: \
             the stop took {without_init:?}"
        );
        manager.stop_all().await.unwrap();
    });
    assert_nothing_left(&run_id, &[&image]);
}

#[test]
fn a_container_gets_its_stop_signal() {
    if !require_docker("a_container_gets_its_stop_signal") {
        return;
    }
    let project = project_dir();
    let image = format!("harness-test/stop-signal-{}:dev", std::process::id());
    let topology = inline(
        project.path(),
        &format!(
            "services:
  echo:
    target:
      docker:
        image: \"{image}\"
        build: {{ binary: ./target/debug/echo-server }}
    port: 7000
    stop_signal: SIGINT
"
        ),
    );
    let (manager, run_id) = new_manager(topology, project.path());
    let _cleanup = Cleanup {
        run_id: run_id.clone(),
        images: vec![image.clone()],
    };
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let id = manager
            .registry()
            .get("echo")
            .await
            .unwrap()
            .execution
            .container_id;
        let id = id.expect("a container id");
        let signal = docker_lines(&["inspect", "--format", "{{.Config.StopSignal}}", &id]);
        assert_eq!(signal, ["SIGINT"]);
        // Torn down with the run, it still gets its own signal: a service that names one is
        // stopped gracefully.
        manager.stop_all().await.unwrap();
        log_has(&manager, "echo", "received SIGINT").await;
    });
    assert_nothing_left(&run_id, &[&image]);
}

/// A real registry (Debian's docker-registry) on a free port of 127.0.0.1, with its storage in
/// a temporary directory; killed when dropped.
struct LocalRegistry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    fn start() -> LocalRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: error }}\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start docker-registry (Debian's docker-registry package)");
        let registry = LocalRegistry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn images_are_pulled_from_a_registry_as_the_pull_policy_says() {
    if !require_docker("images_are_pulled_from_a_registry_as_the_pull_policy_says") {
        return;
    }
    let registry = LocalRegistry::start();
    let local = format!("harness-test/pushed-{}:dev", std::process::id());
    let remote = format!(
        "127.0.0.1:{}/harness-test/pulled:{}",
        registry.port,
        std::process::id()
    );
    // An image made here, pushed to the registry, then removed from this machine.
    let built = run(harness::exec::DockerImage::busybox(&local)
        .with_bytes("ok\n", "/www/index.html", 0o644)
        .with_entrypoint(["/bin/busybox", "httpd", "-f", "-h", "/www", "-p"])
        .build(&harness::exec::LocalLauncher))
    .unwrap_or_else(|e| panic!("{e}"));
    docker_lines(&["tag", &local, &remote]);
    let push = Command::new("docker")
        .args(["push", &remote])
        .output()
        .unwrap();
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    docker_lines(&["image", "rm", &remote]);
    run(built.remove()).unwrap();
    let _cleanup = Cleanup {
        run_id: String::from("none"),
        images: vec![remote.clone(), local.clone()],
    };
    assert!(!image_exists(&remote));

    let project = project_dir();
    let service = |image: &str, pull: &str| {
        format!(
            "services:\n  web:\n    target:\n      docker:\n        image: \"{image}\"\n        \
             command: [\"${{port}}\"]\n{pull}    port: auto\n"
        )
    };
    // `pull: never`: not here, so the start fails and says what to do.
    let topology = inline(project.path(), &service(&remote, "        pull: never\n"));
    let (manager, run_id) = new_manager(topology, project.path());
    let error = start_error(run(manager.start_all()), "web");
    assert!(
        error.contains(&remote) && error.contains("pull: missing"),
        "{error}"
    );
    drop(manager);
    assert_nothing_left(&run_id, &[]);

    // The default, `missing`: pulled, with its progress reported, then started.
    let topology = inline(project.path(), &service(&remote, ""));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let (manager, run_id) = new_manager(topology, project.path());
    let manager = manager.with_progress(move |p| {
        if let harness::orchestrator::Progress::Pulling { status, .. } = p {
            record.lock().unwrap().push(status.clone());
        }
    });
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            http(addr(&manager, "web").await, "GET", "/", "").status,
            200
        );
        manager.stop_all().await.unwrap();
    });
    let pulled = seen.lock().unwrap().clone();
    assert!(
        pulled.iter().any(|l| l.contains("Downloaded newer image")),
        "the pull's progress: {pulled:?}"
    );
    assert!(
        image_exists(&remote),
        "the pulled image stays, as docker compose leaves it"
    );
    assert_nothing_left(&run_id, &[]);

    // An image no registry has: the error names it, the engine's reason and the ways out.
    let missing = format!("127.0.0.1:{}/harness-test/absent:1", registry.port);
    let topology = inline(project.path(), &service(&missing, "        pull: always\n"));
    let (manager, run_id) = new_manager(topology, project.path());
    let error = start_error(run(manager.start_all()), "web");
    assert!(
        error.contains(&format!("pull image `{missing}`"))
            && error.contains("manifest unknown")
            && error.contains("build:")
            && error.contains("pull: never"),
        "{error}"
    );
    drop(manager);
    assert_nothing_left(&run_id, &[]);
}

/// Builds `tag` from busybox-static (no registry needed) with the Dockerfile `lines` after it.
/// Without the build cache: another test's removal of an image that shares cached layers
/// could take them away in the middle of this build.
fn build_busybox_image(tag: &str, lines: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", dir.path().join("busybox")).expect("busybox-static is installed");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             RUN [\"/bin/busybox\", \"mkdir\", \"-m\", \"1777\", \"/tmp\"]\n{lines}\n"
        ),
    )
    .unwrap();
    let out = Command::new("docker")
        .args(["build", "--quiet", "--no-cache", "--force-rm", "--tag", tag])
        .arg(dir.path())
        .output()
        .expect("run docker build");
    assert!(
        out.status.success(),
        "docker build {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One container of `image` running `command`, checked by the image's HEALTHCHECK, with the
/// check's `timing` fields after it.
fn checked_by_its_image(image: &str, command: &str, timing: &str) -> String {
    format!(
        "services:
  web:
    target:
      docker:
        image: \"{image}\"
        pull: never
        command: [sh, -c, \"{command}\"]
    port: auto
    health_check:
      docker: {{}}
{timing}"
    )
}

#[test]
fn an_images_own_healthcheck_is_its_health_check() {
    if !require_docker("an_images_own_healthcheck_is_its_health_check") {
        return;
    }
    let project = project_dir();
    let tag = |what: &str| format!("harness-test/healthcheck-{what}-{}:dev", std::process::id());
    let (ready, failing, none) = (tag("ready"), tag("failing"), tag("none"));
    // A long interval: Docker's own runs of the test decide nothing here. The shell form
    // (CMD-SHELL) runs through the container's shell, with its environment.
    build_busybox_image(
        &ready,
        "HEALTHCHECK --interval=1h CMD test -f /tmp/ready && wget -qO- http://127.0.0.1:$PORT/",
    );
    build_busybox_image(&failing, "HEALTHCHECK --interval=1h CMD [\"false\"]");
    build_busybox_image(&none, "");
    let _images = Cleanup {
        run_id: String::new(),
        images: vec![ready.clone(), failing.clone(), none.clone()],
    };

    // The server answers at once, but the test passes only once /tmp/ready exists, which this
    // test makes while the start waits: until then the service must still be starting.
    let serve = "mkdir /www && echo served > /www/index.html && exec httpd -f -p ${port} -h /www";
    let topology = inline(project.path(), &checked_by_its_image(&ready, serve, ""));
    let (manager, run_id) = new_manager(topology, project.path());
    let _cleanup = Cleanup {
        run_id: run_id.clone(),
        images: Vec::new(),
    };
    run(async {
        let registry = manager.registry().clone();
        let make_ready = async {
            let id = loop {
                let entry = registry.get("web").await.unwrap();
                if let Some(id) = entry.execution.container_id {
                    break id;
                }
                smol::Timer::after(Duration::from_millis(20)).await;
            };
            smol::Timer::after(Duration::from_millis(500)).await;
            let entry = registry.get("web").await.unwrap();
            assert_eq!(entry.state, ServiceState::Starting, "{:?}", entry.health);
            let touched = Command::new("docker")
                .args(["exec", &id, "touch", "/tmp/ready"])
                .status()
                .unwrap();
            assert!(touched.success());
        };
        let (started, ()) = smol::future::zip(manager.start_all(), make_ready).await;
        started.unwrap_or_else(|e| panic!("{e}"));
        let last = registry.get("web").await.unwrap().health.expect("a result");
        assert!(
            last.healthy && last.detail.contains("docker exec"),
            "the last result: {last:?}"
        );
        manager.stop_all().await.unwrap();
    });
    assert_nothing_left(&run_id, &[]);

    // A test that fails fails the start, naming what ran; an image without one says so.
    let once = "      start_period: 0s\n      retries: 1\n";
    for (image, expected) in [
        (&failing, "false` exited with code 1"),
        (&none, "has no HEALTHCHECK"),
    ] {
        let serve = "exec httpd -f -p ${port}";
        let topology = inline(project.path(), &checked_by_its_image(image, serve, once));
        let (manager, run_id) = new_manager(topology, project.path());
        let _cleanup = Cleanup {
            run_id: run_id.clone(),
            images: Vec::new(),
        };
        run(async {
            let error = manager.start_all().await.expect_err("the check fails");
            let error = error.to_string();
            assert!(error.contains(expected), "{image}: {error}");
            assert!(error.contains("web"), "{image}: {error}");
        });
        assert_nothing_left(&run_id, &[]);
    }
}

#[test]
fn tmpfs_volumes_limits_and_the_host_network_reach_the_container() {
    if !require_docker("tmpfs_volumes_limits_and_the_host_network_reach_the_container") {
        return;
    }
    let project = project_dir();
    let image = format!("harness-test/host-net-{}:dev", std::process::id());
    let origin = tempfile::tempdir().unwrap();
    std::fs::write(origin.path().join("index.html"), "from-origin\n").unwrap();
    // `origin` listens on 127.0.0.1 only, where no container on a bridge reaches it; `web`,
    // on this machine's network, fetches from it, then serves what it got and its mounts from
    // a tmpfs, on 127.0.0.1 too.
    let topology = inline(
        project.path(),
        &format!(
            "services:
  origin:
    target:
      process:
        binary: /bin/busybox
        args: [httpd, -f, -p, \"127.0.0.1:${{port}}\", -h, \"{origin}\"]
    port: auto
  web:
    target:
      docker:
        image: \"{image}\"
        build: {{ binary: /bin/busybox, base: busybox }}
        network_mode: host
        tmpfs: [\"/www:size=1m\"]
        volumes: [\"./data:/data\"]
        cpus: 0.5
        memory: 64M
        command: [sh, -c, \"wget -qO /www/origin http://${{ORIGIN_ADDR}}/ && grep ' /www ' /proc/mounts > /www/index.html && echo written > /data/out && exec httpd -f -p 127.0.0.1:${{port}} -h /www\"]
    dependencies: [origin]
    port: auto
",
            origin = origin.path().display()
        ),
    );
    let (manager, run_id) = new_manager(topology, project.path());
    let _cleanup = Cleanup {
        run_id: run_id.clone(),
        images: vec![image.clone()],
    };
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let entry = manager.registry().get("web").await.unwrap();
        let addr = entry.endpoints[0].address;
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(
            env_var(&manager, "web", "ORIGIN_ADDR"),
            manager.registry().get("origin").await.unwrap().endpoints[0]
                .address
                .to_string(),
            "a container on this machine's network reaches a process where this machine does"
        );
        let origin_copy = http(addr, "GET", "/origin", "").body;
        assert!(origin_copy.contains("from-origin"), "{origin_copy}");
        let mounts = http(addr, "GET", "/", "").body;
        assert!(mounts.contains("tmpfs /www tmpfs"), "{mounts}");
        assert!(mounts.contains("size=1024k"), "{mounts}");
        let written = std::fs::read_to_string(project.path().join("data/out")).unwrap();
        assert_eq!(written, "written\n", "the bind mount of ./data");
        let id = entry.execution.container_id.expect("a container id");
        let limits = docker_lines(&[
            "inspect",
            "--format",
            "{{.HostConfig.NetworkMode}} {{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}",
            &id,
        ]);
        assert_eq!(limits, [format!("host 500000000 {}", 64 << 20)]);
        manager.stop_all().await.unwrap();
    });
    assert_nothing_left(&run_id, &[&image]);
}

/// What Docker holds of the compose projects of run `run_id`: containers, networks, volumes.
fn compose_leftovers(run_id: &str) -> Vec<String> {
    let mut left = Vec::new();
    for (what, args) in [
        (
            "container",
            vec![
                "ps",
                "--all",
                "--format",
                "{{.Names}} {{.Label \"com.docker.compose.project\"}}",
            ],
        ),
        (
            "network",
            vec![
                "network",
                "ls",
                "--format",
                "{{.Name}} {{.Label \"com.docker.compose.project\"}}",
            ],
        ),
        (
            "volume",
            vec![
                "volume",
                "ls",
                "--format",
                "{{.Name}} {{.Label \"com.docker.compose.project\"}}",
            ],
        ),
    ] {
        left.extend(
            docker_lines(&args)
                .into_iter()
                .filter(|l| l.split(' ').nth(1).is_some_and(|p| p.starts_with(run_id)))
                .map(|l| format!("{what} {l}")),
        );
    }
    left
}

#[test]
fn a_compose_service_is_reached_both_ways_and_taken_down_with_its_project() {
    if !require_docker("a_compose_service_is_reached_both_ways_and_taken_down_with_its_project") {
        return;
    }
    let project = project_dir();
    let image = format!("harness-test/compose-{}:dev", std::process::id());
    let client_image = format!("harness-test/compose-client-{}:dev", std::process::id());
    build_busybox_image(&image, "");
    let _images = Cleanup {
        run_id: String::new(),
        images: vec![image.clone()],
    };
    let origin = tempfile::tempdir().unwrap();
    std::fs::write(origin.path().join("index.html"), "from-origin\n").unwrap();
    // The user's file: `web` (with a named volume and a healthcheck, which is its health check
    // here) depends on `sidecar`, which starts with it in the run's project. `$$` is compose's
    // own escape of `$`.
    std::fs::write(
        project.path().join("compose.yaml"),
        format!(
            r#"version: "2.4"
services:
  web:
    image: "{image}"
    command: ["sh", "-c", "mkdir -p /www && wget -qO /www/origin http://$$ORIGIN_ADDR/ && echo $$ORIGIN_ADDR > /www/seen && exec httpd -f -p $$PORT -h /www"]
    volumes: ["data:/data"]
    depends_on: [sidecar]
    healthcheck:
      test: ["CMD-SHELL", "test -s /www/seen"]
      interval: 1h
  sidecar:
    image: "{image}"
    command: ["sleep", "1d"]
    init: true
volumes:
  data: {{}}
"#
        ),
    )
    .unwrap();
    // A process it depends on, and a container that depends on it: they reach each other
    // through the addresses harness injects, the container on the run's network by name.
    let topology = inline(
        project.path(),
        &format!(
            "services:
  origin:
    target:
      process:
        binary: /bin/busybox
        args: [httpd, -f, -p, \"0.0.0.0:${{port}}\", -h, \"{origin}\"]
    port: auto
  web:
    target:
      compose: {{ file: ./compose.yaml }}
    dependencies: [origin]
    port: 8080
    health_check: {{ docker: {{}} }}
  client:
    target:
      docker:
        image: \"{client_image}\"
        build: {{ binary: /bin/busybox, base: busybox }}
        command: [sh, -c, \"mkdir /www && wget -qO /www/index.html http://${{WEB_ADDR}}/origin && exec httpd -f -p ${{port}} -h /www\"]
    dependencies: [web]
    port: auto
",
            origin = origin.path().display()
        ),
    );
    let (manager, run_id) = new_manager(topology, project.path());
    let _cleanup = Cleanup {
        run_id: run_id.clone(),
        images: vec![client_image.clone()],
    };
    run(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let registry = manager.registry();
        let web = registry.get("web").await.unwrap();
        assert_eq!(web.execution.kind, ExecutionKind::Compose);
        let checked = web
            .health
            .expect("a result of the file's healthcheck")
            .detail;
        assert!(checked.contains("test -s /www/seen"), "{checked}");
        let web_addr = web.endpoints[0].address;
        assert!(web_addr.ip().is_loopback(), "{web_addr}");
        // From here to the compose service, and from it to the process.
        let fetched = http(web_addr, "GET", "/origin", "").body;
        assert_eq!(fetched, "from-origin\n");
        let origin_port = registry.get("origin").await.unwrap().endpoints[0]
            .address
            .port();
        let seen = http(web_addr, "GET", "/seen", "").body;
        assert_eq!(seen.trim(), format!("host.docker.internal:{origin_port}"));
        // From a container to the compose service, by name on the run's network.
        assert_eq!(env_var(&manager, "client", "WEB_ADDR"), "web:8080");
        let client_addr = registry.get("client").await.unwrap().endpoints[0].address;
        assert_eq!(http(client_addr, "GET", "/", "").body, "from-origin\n");
        // The file's own dependency runs in the run's project, with its volume.
        let running = compose_leftovers(&run_id);
        let count = |kind: &str| running.iter().filter(|l| l.starts_with(kind)).count();
        assert!(
            count("container") == 2 && count("volume") == 1 && count("network") == 1,
            "{running:?}"
        );
        assert!(running.iter().any(|l| l.contains("sidecar")), "{running:?}");
        manager.stop_all().await.unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = compose_leftovers(&run_id);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run's projects left {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_nothing_left(&run_id, &[&client_image]);
}
