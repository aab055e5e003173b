//! harness inside a container, as a CI job that runs in one with the host's Docker socket
//! mounted (GitLab's docker executor, a dev container): the suite tests/user_in_container.rs
//! runs in a busybox container built here, with this machine's Docker socket, CLI and the
//! suite's shared libraries mounted, against a topology with a process (in the job's
//! container) and a container (on the engine's host) that reach each other. Published ports are
//! not on the job's `127.0.0.1` there: harness must find the engine's host itself.
//!
//! Afterwards nothing the job made is left: no container, network or image whose owner is in
//! the job's pid namespace.

#[path = "support/docker.rs"]
mod docker;
#[path = "support/fixtures.rs"]
mod fixtures;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::exec::{OWNER_PIDNS_LABEL, pid_namespace};
use harness::orchestrator::RUN_LABEL;

/// The shared libraries `binary` loads, as `ldd` lists them.
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    assert!(out.status.success(), "ldd {}", binary.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Everything in Docker that carries the run label and whose owner is in another pid
/// namespace than this process: `KIND ID`.
fn foreign_objects() -> BTreeSet<String> {
    let ours = pid_namespace().expect("a pid namespace").to_string();
    let filter = format!("label={RUN_LABEL}");
    let format = format!("{{{{.ID}}}} {{{{.Label \"{OWNER_PIDNS_LABEL}\"}}}}");
    let mut found = BTreeSet::new();
    for (kind, mut args) in [
        ("container", vec!["ps", "--all"]),
        ("network", vec!["network", "ls"]),
    ] {
        args.extend(["--filter", &filter, "--format", &format]);
        for line in docker::docker_lines(&args) {
            if let Some((id, ns)) = line.split_once(' ')
                && !ns.is_empty()
                && ns != ours
            {
                found.insert(format!("{kind} {id}"));
            }
        }
    }
    let images = docker::docker_lines(&["image", "ls", "--quiet", "--filter", &filter]);
    for id in images {
        let labels = docker::docker_lines(&[
            "image",
            "inspect",
            "--format",
            &format!("{{{{index .Config.Labels \"{OWNER_PIDNS_LABEL}\"}}}}"),
            &id,
        ]);
        if labels
            .first()
            .is_some_and(|ns| !ns.is_empty() && *ns != ours)
        {
            found.insert(format!("image {id}"));
        }
    }
    found
}

#[test]
fn a_suite_in_a_container_with_the_hosts_docker_socket_reaches_its_services() {
    let test = "a_suite_in_a_container_with_the_hosts_docker_socket_reaches_its_services";
    if !docker::require_docker(test) {
        return;
    }
    let suite = fixtures::test_binary("user_in_container");
    let socket = "/var/run/docker.sock";
    assert!(
        Path::new(socket).exists(),
        "the engine's socket is {socket}"
    );
    let cli = which("docker");
    let topologies = fixtures::workspace_dir().join("fixtures/topologies");
    let before = foreign_objects();
    docker::run(async {
        let job = docker::DockerTest::start(test).await.expect("docker runs");
        let mut run = Command::new("docker");
        run.args(["run", "--rm", "--label"])
            .arg(format!("{}={}", docker::TEST_LABEL, job.id))
            .args(["--volume", &format!("{socket}:{socket}")])
            .arg("--volume")
            .arg(format!("{}:/suite:ro", suite.display()))
            .arg("--volume")
            .arg(format!("{}:/usr/local/bin/docker:ro", cli.display()))
            .arg("--volume")
            .arg(format!("{0}:{0}:ro", topologies.display()))
            .args(["--tmpfs", "/tmp:exec"])
            .args(["--env", "HARNESS_IN_CONTAINER_SUITE=1"])
            .args(["--env", "HARNESS_BASE_DIR=/tmp"])
            .args(["--env", "HARNESS_STATE_DIR=/tmp/state"])
            .args(["--env", "PATH=/usr/local/bin:/bin"]);
        for library in shared_libraries(&suite) {
            run.arg("--volume")
                .arg(format!("{0}:{0}:ro", library.display()));
        }
        let out = run
            .arg(job.tag())
            .args(["/suite", "--test-threads", "1"])
            .output()
            .expect("run docker");
        let text = fixtures::both(&out);
        assert!(out.status.success(), "the suite in its container:\n{text}");
        assert!(text.contains("1 passed"), "{text}");
        job.finish().await;
    });
    let left: Vec<String> = foreign_objects().difference(&before).cloned().collect();
    assert!(left.is_empty(), "the job in its container left {left:?}");
}

/// `program` as `PATH` finds it.
fn which(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is on PATH"))
}
