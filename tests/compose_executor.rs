//! The compose target, against the machine's real Docker engine and compose command line.
//!
//! Each test builds its own busybox image, writes a compose file that uses it in a temporary
//! directory, and checks at its end that the project left no container, network or volume.

#[path = "support/docker.rs"]
mod docker_support;

use std::net::{Ipv4Addr, SocketAddr};

use docker_support::{DockerTest, WAIT, assert_gone, assert_no_file, http_get, run, within};
use harness::exec::{
    ComposeCli, ComposeService, Executor, ExitStatus, LaunchError, Launcher, LocalLauncher,
    ProcessEvent, ProcessHandle,
};

/// Two services from the test's image: `web` serves a page on 8080 (published on a host port
/// docker picks) and keeps a named volume; `idle` only sleeps, and depends on `web`.
fn compose_file(t: &DockerTest) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"version: "2.4"
services:
  web:
    image: "{image}"
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && echo web-ready && echo to-stderr >&2 && exec httpd -f -p 8080 -h /www"]
    ports: ["127.0.0.1::8080"]
    volumes: ["data:/data"]
  idle:
    image: "{image}"
    command: ["sleep", "300"]
    init: true
    depends_on: [web]
volumes:
  data: {{}}
"#,
        image = t.tag()
    );
    let path = dir.path().join("compose.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path.display().to_string())
}

/// Waits until the project's containers, networks, volumes and label file are all gone.
async fn assert_project_gone(project: &str) {
    let label = format!("label=com.docker.compose.project={project}");
    assert_gone(&["ps", "-aq", "--filter", &label]).await;
    assert_gone(&["network", "ls", "-q", "--filter", &label]).await;
    assert_gone(&["volume", "ls", "-q", "--filter", &label]).await;
    assert_no_file(&format!("/tmp/{project}.harness-labels.yaml")).await;
}

#[test]
fn compose_up_exec_reach_by_name_logs_signal_and_down() {
    run(async {
        let Some(t) = DockerTest::start("compose_up_exec_reach_by_name_logs_signal_and_down").await
        else {
            return;
        };
        let (_dir, file) = compose_file(&t);
        // `idle` brings `web` up with it, as its dependency.
        let mut run = Executor::local("idle")
            .execute(ComposeService::new(&file, "idle"))
            .await
            .unwrap();
        let project = run.handle.project_name().to_string();
        assert!(project.starts_with("harness-"), "{project}");
        let pid = run.handle.id().expect("a running container has a pid");
        assert_eq!(run.events.recv().await, Some(ProcessEvent::Started { pid }));

        // Exec in one service, and reach the other by its service name.
        let script =
            "for i in $(seq 100); do wget -qO- http://web:8080/ && exit 0; sleep 0.1; done; exit 1";
        let out = run
            .handle
            .exec_launcher("idle")
            .await
            .unwrap()
            .output(&harness::exec::Command::new("sh").args(["-c", script]))
            .await
            .unwrap();
        assert_eq!(out.stdout, ["hello-from-web"], "{out:?}");
        let out = run
            .handle
            .exec(&harness::exec::Command::new("hostname"))
            .await
            .unwrap()
            .take_events()
            .unwrap()
            .collect()
            .await;
        assert!(out.success(), "{out:?}");

        // The published port of `web` answers on the host.
        let port = run.handle.host_port("web", 8080).await.unwrap();
        let reply = http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await;
        assert!(reply.contains("hello-from-web"), "{reply}");
        let web = run.handle.container_of("web").await.unwrap();
        assert!(web.contains(&project), "{web}");
        // Compose's containers carry the ownership labels too.
        let owner = docker_support::docker_lines(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"harness.pid\"}}",
            &web,
        ]);
        assert_eq!(owner, [std::process::id().to_string()]);

        // A signal ends the followed service; its exit code is the container's.
        run.handle.kill().await.unwrap();
        assert_eq!(
            run.handle.wait().await.unwrap(),
            ExitStatus::from_code(128 + 9)
        );
        let out = run.events.collect().await;
        assert_eq!(out.status, Some(ExitStatus::from_code(128 + 9)));

        run.handle.down().await.unwrap();
        assert_project_gone(&project).await;
        t.finish().await;
    });
}

#[test]
fn compose_logs_arrive_as_events_and_drop_takes_the_project_down() {
    run(async {
        let Some(t) =
            DockerTest::start("compose_logs_arrive_as_events_and_drop_takes_the_project_down")
                .await
        else {
            return;
        };
        let (_dir, file) = compose_file(&t);
        let cli = ComposeCli::detect(&LocalLauncher).await.unwrap();
        let mut run = Executor::local("web")
            .execute(
                ComposeService::new(&file, "web")
                    .with_all_services()
                    .with_cli(cli),
            )
            .await
            .unwrap();
        let project = run.handle.project_name().to_string();
        // Stdout and stderr keep their own order, but interleave as they arrive.
        let first = run.events.recv().await;
        assert!(
            matches!(first, Some(ProcessEvent::Started { .. })),
            "{first:?}"
        );
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let event = within(WAIT, "the next log line", run.events.recv())
                .await
                .expect("the log ended early");
            seen.push(event);
        }
        seen.sort_by_key(|e| e.line().map(str::to_string));
        assert_eq!(
            seen,
            [
                ProcessEvent::Stderr("to-stderr".into()),
                ProcessEvent::Stdout("web-ready".into())
            ]
        );
        // Both services run: `idle` was started too.
        let idle = run.handle.container_of("idle").await.unwrap();
        let exec = run.handle.exec_launcher("idle").await.unwrap();
        assert_eq!(exec.container(), idle);
        let out = exec
            .output(&harness::exec::Command::new("echo").arg("in-idle"))
            .await
            .unwrap();
        assert_eq!(out.stdout, ["in-idle"]);

        drop(run);
        assert_project_gone(&project).await;
        t.finish().await;
    });
}

#[test]
fn compose_errors_name_the_service_and_leave_nothing() {
    run(async {
        let Some(t) = DockerTest::start("compose_errors_name_the_service_and_leave_nothing").await
        else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        std::fs::write(
            &file,
            "version: \"2.4\"\nservices:\n  broken:\n    image: harness-no-such-image:none\n",
        )
        .unwrap();
        let project = format!("harness-{}", t.id);
        let err = Executor::local("broken")
            .execute(
                ComposeService::new(file.display().to_string(), "broken").with_project(&project),
            )
            .await
            .unwrap_err();
        let message = err.to_string();
        println!("{message}");
        assert!(
            matches!(err, LaunchError::CommandFailed { .. }) && message.contains("`broken`"),
            "{message}"
        );
        assert_project_gone(&project).await;

        let err = Executor::local("nothing")
            .execute(ComposeService::new("/no/such/compose.yaml", "x"))
            .await
            .unwrap_err();
        println!("{err}");
        assert!(err.to_string().contains("/no/such/compose.yaml"), "{err}");
        t.finish().await;
    });
}

#[test]
fn compose_cli_is_detected() {
    run(async {
        if !docker_support::require_docker("compose_cli_is_detected") {
            return;
        }
        let cli = ComposeCli::detect(&LocalLauncher).await.unwrap();
        let out = LocalLauncher
            .output(&match cli {
                ComposeCli::Plugin => {
                    harness::exec::Command::new("docker").args(["compose", "version"])
                }
                ComposeCli::Standalone => {
                    harness::exec::Command::new("docker-compose").arg("version")
                }
            })
            .await
            .unwrap();
        assert!(out.success(), "{out:?}");
    });
}
