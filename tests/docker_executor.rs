//! The Docker target and the `docker exec` launcher, against the machine's real Docker engine.
//!
//! The engine has no images and no registry, so each test builds its own busybox image from
//! the host's busybox-static, and removes it. Every container carries a label with the test's
//! id, and each test checks at its end that nothing with that label is left.

#[path = "support/docker.rs"]
mod docker_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use docker_support::{DockerTest, TEST_LABEL, WAIT, assert_gone, http_get, rest, run, until_line};
use harness::exec::{
    Command, DockerExecLauncher, DockerImage, DockerNetwork, Executor, ExitStatus, LaunchError,
    Launcher, LocalLauncher, ProcessEvent, ProcessHandle,
};

/// A container that runs until stopped; `--init` so that `SIGTERM` ends it at once.
fn sleeper(t: &DockerTest) -> harness::exec::DockerContainer {
    t.container().with_init().with_args(["sleep", "300"])
}

/// The seed's criterion 4, for Docker: the same `Executor` API as local and SSH.
#[test]
fn executor_docker_runs_echo_in_a_container() {
    run(async {
        let Some(t) = DockerTest::start("executor_docker_runs_echo_in_a_container").await else {
            return;
        };
        let container = Executor::local("box").spawn(sleeper(&t)).await.unwrap();

        let executor = Executor::docker("svc", container.name()).await.unwrap();
        assert_eq!(executor.service_name(), "svc");
        let mut result = executor
            .execute(Command::new("echo").arg("hello"))
            .await
            .unwrap();
        let mut events = Vec::new();
        while let Some(event) = result.events.recv().await {
            println!("{event:?}");
            events.push(event);
        }
        assert!(
            matches!(events.first(), Some(ProcessEvent::Started { pid }) if *pid > 0),
            "{events:?}"
        );
        assert_eq!(
            events[1..],
            [
                ProcessEvent::Stdout("hello".into()),
                ProcessEvent::Exited(ExitStatus::from_code(0))
            ]
        );

        container.remove().await.unwrap();
        t.finish().await;
    });
}

#[test]
fn container_log_lines_arrive_as_events() {
    run(async {
        let Some(t) = DockerTest::start("container_log_lines_arrive_as_events").await else {
            return;
        };
        let executor = Executor::local("logger");

        // Long enough to be seen running: `Started` carries the container's main pid.
        let slow = t.container().with_args([
            "sh",
            "-c",
            "echo one; echo two >&2; sleep 1; echo three; exit 3",
        ]);
        let mut run = executor.execute(slow).await.unwrap();
        let pid = run.handle.id().expect("seen running, so its pid is known");
        assert_eq!(run.events.recv().await, Some(ProcessEvent::Started { pid }));
        let rest_of_it = rest(run.events).await;
        let stdout: Vec<_> = rest_of_it
            .iter()
            .filter_map(|e| match e {
                ProcessEvent::Stdout(l) => Some(l.as_str()),
                _ => None,
            })
            .collect();
        let stderr: Vec<_> = rest_of_it
            .iter()
            .filter_map(|e| match e {
                ProcessEvent::Stderr(l) => Some(l.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(stdout, ["one", "three"]);
        assert_eq!(stderr, ["two"]);
        assert_eq!(
            rest_of_it.last(),
            Some(&ProcessEvent::Exited(ExitStatus::from_code(3)))
        );
        assert_eq!(run.handle.wait().await.unwrap(), ExitStatus::from_code(3));
        run.handle.remove().await.unwrap();

        // A container that is done before anyone looks still delivers all it wrote.
        let quick = t.container().with_args(["echo", "quick"]);
        let mut run = executor.execute(quick).await.unwrap();
        let out = run.events.collect().await;
        assert_eq!(out.stdout, ["quick"]);
        assert_eq!(out.status, Some(ExitStatus::from_code(0)));
        assert_eq!(run.handle.wait().await.unwrap(), ExitStatus::from_code(0));
        run.handle.remove().await.unwrap();

        t.finish().await;
    });
}

#[test]
fn exec_runs_with_env_cwd_and_user_and_names_what_is_missing() {
    run(async {
        let Some(t) =
            DockerTest::start("exec_runs_with_env_cwd_and_user_and_names_what_is_missing").await
        else {
            return;
        };
        let container = Executor::local("box").spawn(sleeper(&t)).await.unwrap();
        let exec = container.exec_launcher();

        let out = exec
            .output(
                &Command::new("sh")
                    .args(["-c", "echo \"$GREETING\"; pwd"])
                    .env("GREETING", "it's $HOME")
                    .current_dir("/tmp"),
            )
            .await
            .unwrap();
        assert_eq!(out.stdout, ["it's $HOME", "/tmp"]);
        assert!(out.success());

        let out = exec
            .clone()
            .with_user("nobody")
            .output(&Command::new("id").arg("-u"))
            .await
            .unwrap();
        assert_eq!(out.stdout, ["65534"]);

        let err = container
            .exec(&Command::new("no-such-program"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, LaunchError::NotFound { ref program, .. } if program == "no-such-program"),
            "{err}"
        );
        assert!(err.to_string().contains(container.name()), "{err}");
        let err = container
            .exec(&Command::new("true").current_dir("/no/such/dir"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, LaunchError::MissingWorkDir { ref dir, .. } if dir == "/no/such/dir"),
            "{err}"
        );

        // Signals reach the exec'd process; dropping its handle kills it (the watchdog).
        let mut p = container
            .exec(&Command::new("sleep").arg("301"))
            .await
            .unwrap();
        p.terminate().await.unwrap();
        assert_eq!(p.wait().await.unwrap(), ExitStatus::from_code(128 + 15));
        let p = container
            .exec(&Command::new("sleep").arg("302"))
            .await
            .unwrap();
        let ps_cmd = Command::new("ps").args(["-o", "args"]);
        let ps = || exec.output(&ps_cmd);
        assert!(ps().await.unwrap().stdout.iter().any(|l| l == "sleep 302"));
        drop(p);
        let deadline = std::time::Instant::now() + WAIT;
        while ps().await.unwrap().stdout.iter().any(|l| l == "sleep 302") {
            assert!(
                std::time::Instant::now() < deadline,
                "the exec'd process outlived its handle"
            );
            smol::Timer::after(Duration::from_millis(50)).await;
        }

        container.remove().await.unwrap();
        t.finish().await;
    });
}

#[test]
fn volume_mount_shares_files_with_the_host() {
    run(async {
        let Some(t) = DockerTest::start("volume_mount_shares_files_with_the_host").await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.txt"), "written-on-host\n").unwrap();
        let spec = format!("{}:/data", dir.path().display());
        let ro = format!("{}:/ro:ro", dir.path().display());
        let container = Executor::local("box")
            .spawn(sleeper(&t).with_volume(spec).with_volume(ro))
            .await
            .unwrap();
        let exec = container.exec_launcher();

        let out = exec
            .output(&Command::new("sh").args([
                "-c",
                "cat /data/in.txt && echo written-in-container > /data/out.txt",
            ]))
            .await
            .unwrap();
        assert_eq!(out.stdout, ["written-on-host"]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
            "written-in-container\n"
        );
        let out = exec
            .output(&Command::new("sh").args(["-c", "echo x > /ro/nope.txt"]))
            .await
            .unwrap();
        assert!(!out.success(), "a read-only mount took a write");
        assert!(!dir.path().join("nope.txt").exists());

        container.remove().await.unwrap();
        t.finish().await;
    });
}

#[test]
fn published_port_is_reachable_from_the_host() {
    run(async {
        let Some(t) = DockerTest::start("published_port_is_reachable_from_the_host").await else {
            return;
        };
        let web = t.container().with_port(8080).with_args([
            "sh",
            "-c",
            "mkdir /www && echo hello-from-httpd > /www/index.html && exec httpd -f -p 8080 -h /www",
        ]);
        let container = Executor::local("web").spawn(web).await.unwrap();
        let port = container.host_port(8080).expect("8080 was published");
        assert_ne!(port, 0);
        assert_eq!(container.host_port(9999), None);
        let reply = http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await;
        assert!(reply.contains("hello-from-httpd"), "{reply}");

        container.remove().await.unwrap();
        t.finish().await;
    });
}

#[test]
fn signals_reach_the_container() {
    run(async {
        let Some(t) = DockerTest::start("signals_reach_the_container").await else {
            return;
        };
        let executor = Executor::local("box");

        // PID 1 gets SIGTERM only if it handles it: this one traps it.
        let trapper = t.container().with_args([
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.1; done",
        ]);
        let mut run = executor.execute(trapper).await.unwrap();
        until_line(&mut run.events, "ready").await;
        run.handle.terminate().await.unwrap();
        until_line(&mut run.events, "got-term").await;
        assert_eq!(run.handle.wait().await.unwrap(), ExitStatus::from_code(42));
        let err = run.handle.kill().await.unwrap_err();
        assert!(
            matches!(err, LaunchError::AlreadyExited { .. }),
            "signalling an exited container: {err}"
        );
        run.handle.remove().await.unwrap();

        let mut sleeper = executor
            .spawn(t.container().with_args(["sleep", "300"]))
            .await
            .unwrap();
        sleeper.kill().await.unwrap();
        assert_eq!(
            sleeper.wait().await.unwrap(),
            ExitStatus::from_code(128 + 9)
        );
        sleeper.remove().await.unwrap();

        t.finish().await;
    });
}

#[test]
fn stop_terminates_then_kills() {
    run(async {
        let Some(t) = DockerTest::start("stop_terminates_then_kills").await else {
            return;
        };
        let executor = Executor::local("box");

        // With --init, the init forwards SIGTERM to `sleep`, which dies of it.
        let mut with_init = executor.spawn(sleeper(&t)).await.unwrap();
        let status = with_init.stop(Duration::from_secs(20)).await.unwrap();
        assert_eq!(status, ExitStatus::from_code(128 + 15));
        with_init.remove().await.unwrap();

        // Without it, `sleep` as PID 1 ignores SIGTERM and is killed after the grace period.
        let mut bare = executor
            .spawn(t.container().with_args(["sleep", "300"]))
            .await
            .unwrap();
        let status = bare.stop(Duration::from_millis(500)).await.unwrap();
        assert_eq!(status, ExitStatus::from_code(128 + 9));
        bare.remove().await.unwrap();

        t.finish().await;
    });
}

#[test]
fn missing_image_program_and_container_are_named() {
    run(async {
        let Some(t) = DockerTest::start("missing_image_program_and_container_are_named").await
        else {
            return;
        };
        let executor = Executor::local("box");

        // Docker tries the registry and fails: the error names the image.
        let missing = harness::exec::DockerContainer::new("harness-no-such-image:none")
            .with_label(TEST_LABEL, &t.id);
        let err = executor.spawn(missing).await.unwrap_err();
        assert!(
            matches!(err, LaunchError::NoSuchImage { ref image, .. } if image == "harness-no-such-image:none"),
            "{err}"
        );
        let message = err.to_string();
        println!("{message}");
        assert!(
            message.contains("`harness-no-such-image:none`") && message.contains("not found"),
            "{message}"
        );

        let err = executor
            .spawn(t.container().with_args(["no-such-program", "x"]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, LaunchError::NotFound { ref program, .. } if program == "no-such-program"),
            "{err}"
        );

        let err = Executor::docker("svc", "harness-no-such-container")
            .await
            .unwrap_err();
        assert!(
            matches!(err, LaunchError::NoSuchContainer { ref container, .. } if container == "harness-no-such-container"),
            "{err}"
        );
        assert!(err.to_string().contains("no such container"), "{err}");

        // An exited container exists, but commands cannot run in it.
        let mut done = executor
            .spawn(t.container().with_args(["true"]))
            .await
            .unwrap();
        done.wait().await.unwrap();
        let err = DockerExecLauncher::connect(LocalLauncher, done.name())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(done.name()) && err.to_string().contains("exited"),
            "{err}"
        );
        done.remove().await.unwrap();

        t.finish().await;
    });
}

#[test]
fn dropping_the_handle_removes_the_container() {
    run(async {
        let Some(t) = DockerTest::start("dropping_the_handle_removes_the_container").await else {
            return;
        };
        let container = Executor::local("box")
            .spawn(t.container().with_args(["sleep", "300"]))
            .await
            .unwrap();
        let name = container.name().to_string();
        assert_eq!(
            docker_support::docker_lines(&["ps", "-q", "--filter", &format!("name=^/{name}$")])
                .len(),
            1
        );
        drop(container);
        assert_gone(&["ps", "-aq", "--filter", &format!("name=^/{name}$")]).await;
        t.finish().await;
    });
}

#[test]
fn containers_find_each_other_on_a_network() {
    run(async {
        let Some(t) = DockerTest::start("containers_find_each_other_on_a_network").await else {
            return;
        };
        let net = DockerNetwork::create(&LocalLauncher).await.unwrap();
        let net_name = net.name().to_string();
        let executor = Executor::local("box");
        let web = executor
            .spawn(
                t.container()
                    .with_network(net.name())
                    .with_network_alias("web")
                    .with_args([
                        "sh",
                        "-c",
                        "mkdir /www && echo hello-by-alias > /www/index.html && exec httpd -f -p 8080 -h /www",
                    ]),
            )
            .await
            .unwrap();
        let ip = web.ip_address().expect("an address on the network");
        let client = executor
            .spawn(sleeper(&t).with_network(net.name()))
            .await
            .unwrap();
        for host in ["web".to_string(), ip.to_string()] {
            let script = format!(
                "for i in $(seq 100); do wget -qO- http://{host}:8080/ && exit 0; sleep 0.1; done; exit 1"
            );
            let out = client
                .exec_launcher()
                .output(&Command::new("sh").args(["-c", &script]))
                .await
                .unwrap();
            assert_eq!(out.stdout, ["hello-by-alias"], "via {host}: {out:?}");
        }

        web.remove().await.unwrap();
        client.remove().await.unwrap();
        net.remove().await.unwrap();
        assert_gone(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{net_name}$"),
        ])
        .await;
        t.finish().await;
    });
}

/// A locally built, dynamically linked Rust program (this test binary) runs in a scratch image
/// that holds nothing but it and the libraries `ldd` lists.
#[test]
fn scratch_image_runs_a_locally_built_binary() {
    run(async {
        let Some(t) = DockerTest::start("scratch_image_runs_a_locally_built_binary").await else {
            return;
        };
        let me = std::env::current_exe().unwrap();
        let tag = format!("harness-test-scratch:{}", t.id);
        let image = DockerImage::scratch(&tag)
            .with_binary(&me, "/app/tests")
            .with_entrypoint(["/app/tests"])
            .build(&LocalLauncher)
            .await
            .unwrap();
        let container = t
            .container_from(image.tag())
            .with_args(["--list", "scratch_image_runs_a_locally_built_binary"]);
        let run = Executor::local("app").execute(container).await.unwrap();
        let out = run.events.collect().await;
        assert_eq!(
            out.stdout.first().map(String::as_str),
            Some("scratch_image_runs_a_locally_built_binary: test"),
            "{out:?}"
        );
        assert!(out.success(), "{out:?}");
        run.handle.remove().await.unwrap();
        image.remove().await.unwrap();
        assert_gone(&["images", "-q", &tag]).await;
        t.finish().await;
    });
}
