//! A developer's own crate, outside this repository, built and run as its author would: its own
//! Cargo.toml with harness as a path dependency (`tests/user_crate/`, copied to a temporary
//! directory), and a target directory elsewhere (this workspace's, so that the dependencies
//! already built are reused). Its suite uses tokio-based clients (redis's async client,
//! `tokio::net`) against a real redis-server under `runtime = "tokio"`, and starts the crate's
//! own binary through `${cargo_bin:kvapp}` and another package's through `${cargo_bin:greeter}`,
//! with `cargo test` and with `cargo nextest run`; its container suite runs redis in a container
//! built from this machine's redis-server and as a service of the crate's compose file; its job
//! suite seeds redis with a one-shot job before its test;
//! variants of it check that a suite cannot silently run nothing.

#[path = "support/docker.rs"]
mod docker;
#[path = "support/fixtures.rs"]
mod fixtures;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A copy of `tests/user_crate/` in a temporary directory, with harness's path filled in and
/// this workspace's lock file, so that it builds with the versions already built here.
fn user_crate() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("harness-user-crate-")
        .tempdir()
        .expect("a temporary directory");
    copy_tree(
        &fixtures::workspace_dir().join("tests/user_crate"),
        dir.path(),
    );
    let template = dir.path().join("Cargo.toml.template");
    let manifest = std::fs::read_to_string(&template)
        .expect("the template")
        .replace(
            "@HARNESS@",
            &fixtures::workspace_dir()
                .join("harness")
                .display()
                .to_string(),
        );
    std::fs::write(dir.path().join("Cargo.toml"), manifest).expect("write Cargo.toml");
    std::fs::remove_file(template).expect("remove the template");
    std::fs::copy(
        fixtures::workspace_dir().join("Cargo.lock"),
        dir.path().join("Cargo.lock"),
    )
    .expect("copy Cargo.lock");
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read the template") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            std::fs::create_dir_all(&target).expect("create a directory");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// `cargo ARGS` in the crate, as its author runs it: no variable of this run's test harness
/// (nextest's, harness's) leaks in, the target directory is this workspace's.
fn cargo(dir: &Path, args: &[&str]) -> Output {
    cargo_with(dir, args, &[])
}

/// [`cargo`] with variables of the author's own.
fn cargo_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(fixtures::cargo());
    without_this_runs_env(&mut command);
    command
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", fixtures::target_dir())
        .env("CARGO_TERM_COLOR", "never");
    command.output().expect("run cargo")
}

/// Removes what this repository's test run set (cargo's CARGO_BIN_EXE_harness and
/// CARGO_PKG_NAME, nextest's, harness's) and is not the user's; CARGO_HOME is theirs.
fn without_this_runs_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let cargos = name.starts_with("CARGO_") && name != "CARGO_HOME";
        if cargos || name.starts_with("NEXTEST") || name.starts_with("HARNESS_") {
            command.env_remove(&*name);
        }
    }
}

fn text(output: &Output) -> String {
    fixtures::both(output)
}

#[test]
fn a_users_crate_runs_its_tokio_suite_under_cargo_test_and_nextest() {
    let dir = user_crate();
    let run = cargo(dir.path(), &["test", "--offline", "--test", "store"]);
    assert!(run.status.success(), "{}", text(&run));
    // The other package's binary was built for this run, by the runner or one of its workers.
    let stamp = fixtures::target_dir().join("harness/greeter.run");
    let built_for = || std::fs::read_to_string(&stamp).unwrap_or_default();
    assert!(built_for().starts_with("runner "), "{}", built_for());
    let stdout = String::from_utf8_lossy(&run.stdout);
    // libtest-mimic pads the names: `test set_then_get       ... ok`.
    let passed = |name: &str| {
        stdout.lines().any(|line| {
            line.strip_prefix("test ")
                .and_then(|rest| rest.strip_prefix(name))
                .is_some_and(|rest| rest.trim_start() == "... ok")
        })
    };
    assert!(
        passed("set_then_get")
            && passed("tokio_net_connects")
            && passed("the_crates_own_binary_answers")
            && passed("the_binary_is_the_one_this_run_built")
            && passed("prints_while_it_passes")
            && stdout.contains("test result: ok. 6 passed; 0 failed"),
        "{}",
        text(&run)
    );
    // Captured: neither stdout nor stderr shows what passing tests printed.
    let all = text(&run);
    assert!(
        !all.contains("USER-PASSING-OUTPUT")
            && !all.contains("USER-PASSING-STDERR")
            && !all.contains("USER-FAILING-OUTPUT"),
        "{all}"
    );
    // A failing test's output is shown with its failure, and only that test's.
    let failing = cargo_with(
        dir.path(),
        &["test", "--offline", "--test", "store"],
        &[("USER_CRATE_FAIL", "1")],
    );
    assert!(!failing.status.success(), "{}", text(&failing));
    let stdout = String::from_utf8_lossy(&failing.stdout);
    let section = stdout
        .split("---- fails_when_asked ----")
        .nth(1)
        .unwrap_or_else(|| panic!("no failure section: {}", text(&failing)));
    assert!(
        section.contains("USER-FAILING-OUTPUT before the check")
            && section.contains("thread 'fails_when_asked'")
            && section.contains("USER-FAILING-PANIC")
            && stdout.contains("test result: FAILED. 5 passed; 1 failed")
            && !text(&failing).contains("USER-PASSING-OUTPUT"),
        "{}",
        text(&failing)
    );
    // --nocapture and --show-output show it, as libtest does.
    let nocapture = cargo(
        dir.path(),
        &[
            "test",
            "--offline",
            "--test",
            "store",
            "--",
            "--nocapture",
            "prints_",
        ],
    );
    assert!(
        nocapture.status.success() && text(&nocapture).contains("USER-PASSING-OUTPUT"),
        "{}",
        text(&nocapture)
    );
    let show = cargo(
        dir.path(),
        &[
            "test",
            "--offline",
            "--test",
            "store",
            "--",
            "--show-output",
            "prints_",
        ],
    );
    let stdout = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.status.success()
            && stdout.contains("---- prints_while_it_passes stdout ----\nUSER-PASSING-OUTPUT")
            && stdout.contains("USER-PASSING-STDERR"),
        "{}",
        text(&show)
    );

    if Command::new(fixtures::cargo())
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let run = cargo(
            dir.path(),
            &["nextest", "run", "--offline", "--test", "store"],
        );
        assert!(run.status.success(), "{}", text(&run));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains("6 tests run: 6 passed"), "{}", text(&run));
        // Built once for the nextest run, whose processes all know its id.
        assert!(built_for().starts_with("nextest "), "{}", built_for());
        assert!(
            !text(&run).contains("USER-PASSING-OUTPUT"),
            "{}",
            text(&run)
        );
        let failing = cargo_with(
            dir.path(),
            &["nextest", "run", "--offline", "--test", "store"],
            &[("USER_CRATE_FAIL", "1")],
        );
        let all = text(&failing);
        assert!(
            !failing.status.success()
                && all.contains("USER-FAILING-OUTPUT before the check")
                && all.contains("USER-FAILING-PANIC")
                && !all.contains("USER-PASSING-OUTPUT"),
            "{all}"
        );

        // Archived, then run from where the archive is unpacked, as on a machine without cargo
        // (`cargo-nextest nextest run`, and no cargo to find): the crate's binary and the other
        // package's travel in the archive and are the ones the services run
        // (the_binary_is_the_one_this_run_built).
        let archive = dir.path().join("suite.tar.zst");
        let archive = archive.to_str().expect("a UTF-8 path");
        // The other package's binary, built before archiving, as .config/nextest.toml says.
        let run = cargo(dir.path(), &["build", "--offline", "-p", "kvtools"]);
        assert!(run.status.success(), "{}", text(&run));
        let run = cargo(
            dir.path(),
            &[
                "nextest",
                "archive",
                "--offline",
                "--test",
                "store",
                "--archive-file",
                archive,
            ],
        );
        assert!(run.status.success(), "{}", text(&run));
        let unpacked = tempfile::tempdir().expect("a temporary directory");
        let crate_dir = dir.path().to_str().expect("a UTF-8 path");
        let mut nextest = Command::new("cargo-nextest");
        without_this_runs_env(&mut nextest);
        let run = nextest
            .current_dir(dir.path())
            .env("CARGO", "/nonexistent/cargo")
            .env("CARGO_TERM_COLOR", "never")
            .args([
                "nextest",
                "run",
                "--archive-file",
                archive,
                "--workspace-remap",
                crate_dir,
                "--extract-to",
                unpacked.path().to_str().expect("a UTF-8 path"),
            ])
            .output()
            .expect("run cargo-nextest");
        assert!(run.status.success(), "{}", text(&run));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains("6 tests run: 6 passed"), "{}", text(&run));
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "cargo-nextest is not installed, and CI has it"
        );
    }
}

/// Replaces `from` by `to` in the crate's `file`.
#[test]
fn a_users_crate_runs_redis_in_a_container_and_its_compose_file_under_cargo_test_and_nextest() {
    if !docker::require_docker(
        "a_users_crate_runs_redis_in_a_container_and_its_compose_file_under_cargo_test_and_nextest",
    ) {
        return;
    }
    let dir = user_crate();
    let left = || {
        let mut left = docker::docker_lines(&[
            "ps",
            "--all",
            "--filter",
            "label=com.docker.compose.service=queue",
            "--format",
            "{{.Names}}",
        ]);
        left.extend(docker::docker_lines(&[
            "image",
            "ls",
            "--quiet",
            "kvapp-test/redis",
        ]));
        left
    };
    let run = cargo(dir.path(), &["test", "--offline", "--test", "containers"]);
    assert!(
        run.status.success() && text(&run).contains("test result: ok. 1 passed"),
        "{}",
        text(&run)
    );
    assert_eq!(left(), Vec::<String>::new(), "after cargo test");
    let run = cargo(
        dir.path(),
        &["nextest", "run", "--offline", "--test", "containers"],
    );
    assert!(
        run.status.success() && text(&run).contains("1 test run: 1 passed"),
        "{}",
        text(&run)
    );
    // The supervisor that owned the copy tears it down once the run is over.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !left().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "after nextest: {:?}",
            left()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_users_crate_seeds_redis_with_a_job_before_its_test_under_cargo_test_and_nextest() {
    let dir = user_crate();
    let run = cargo(dir.path(), &["test", "--offline", "--test", "jobs"]);
    assert!(
        run.status.success() && text(&run).contains("test result: ok. 1 passed"),
        "{}",
        text(&run)
    );
    let run = cargo(
        dir.path(),
        &["nextest", "run", "--offline", "--test", "jobs"],
    );
    assert!(
        run.status.success() && text(&run).contains("1 test run: 1 passed"),
        "{}",
        text(&run)
    );
}

fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).expect("a file of the crate");
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(&path, text.replace(from, to)).expect("edit a file of the crate");
}

/// Replaces the crate's suite by `suite` in `tests/NAME.rs` and its `[[test]]` by `declared`.
fn variant(name: &str, suite: &str, declared: &str) -> tempfile::TempDir {
    let dir = user_crate();
    std::fs::remove_file(dir.path().join("tests/store.rs")).expect("remove the suite");
    std::fs::write(dir.path().join(format!("tests/{name}.rs")), suite).expect("write the suite");
    edit(
        dir.path(),
        "Cargo.toml",
        "[[test]]\nname = \"store\"\nharness = false\n",
        declared,
    );
    dir
}

const BODY: &str = "use harness::{harness_test, Service};\n\n\
    #[harness_test(topology = \"topologies/redis.yaml\", runtime = \"tokio\")]\n\
    async fn reaches_redis(redis: Service) {\n    \
        tokio::net::TcpStream::connect(redis.addr()).await.unwrap();\n}\n";

#[test]
fn harness_tests_in_a_target_that_libtest_runs_fail_to_compile() {
    // No [[test]] entry: cargo runs tests/plain.rs with libtest, which would run 0 tests.
    let dir = variant("plain", BODY, "");
    let run = cargo(dir.path(), &["test", "--offline", "--test", "plain"]);
    let out = text(&run);
    assert!(!run.status.success(), "{out}");
    assert!(
        out.contains("#[harness_test] functions do not run in a test target that libtest runs")
            && out.contains("harness = false")
            && out.contains("harness::main!()"),
        "{out}"
    );
    assert!(!out.contains("0 passed"), "{out}");
}

#[test]
fn a_harness_false_target_without_main_names_harness_main() {
    let dir = variant(
        "nomain",
        BODY,
        "[[test]]\nname = \"nomain\"\nharness = false\n",
    );
    let run = cargo(dir.path(), &["test", "--offline", "--test", "nomain"]);
    let out = text(&run);
    assert!(!run.status.success(), "{out}");
    assert!(
        out.contains("tests/nomain.rs has no harness::main!()")
            && out.contains("End that file with `harness::main!();`"),
        "{out}"
    );
}

#[test]
fn a_mistake_in_the_topology_is_one_compile_error_with_its_place() {
    let dir = user_crate();
    edit(
        dir.path(),
        "topologies/redis.yaml",
        "health_check:",
        "helth_check:",
    );
    let run = cargo(
        dir.path(),
        &["test", "--offline", "--test", "store", "--no-run"],
    );
    let out = text(&run);
    assert!(!run.status.success(), "{out}");
    let place: PathBuf = Path::new("topologies/redis.yaml").to_path_buf();
    assert!(
        out.contains(&format!(
            "{}:8:5: unknown field `helth_check`, did you mean `health_check`?",
            place.display()
        )),
        "{out}"
    );
    // One error for the file, not one per test.
    assert_eq!(
        out.matches("unknown field `helth_check`").count(),
        1,
        "{out}"
    );
}

#[test]
fn a_cargo_bin_the_package_does_not_have_is_a_compile_error_naming_those_it_has() {
    let dir = user_crate();
    edit(
        dir.path(),
        "topologies/app.yaml",
        "${cargo_bin:kvapp}",
        "${cargo_bin:kvap}",
    );
    let run = cargo(
        dir.path(),
        &["test", "--offline", "--test", "store", "--no-run"],
    );
    let out = text(&run);
    assert!(!run.status.success(), "{out}");
    assert!(
        out.contains(
            "`${cargo_bin:kvap}` of service `app` names no binary of this package or of its \
             cargo workspace"
        ) && out.contains("are kvapp; the workspace's: kvapp, greeter."),
        "{out}"
    );
}

/// `harness ARGS` in the crate's directory, as its author runs it there.
fn harness(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harness"));
    without_this_runs_env(&mut command);
    command
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", fixtures::target_dir())
        .env("CARGO", fixtures::cargo())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run harness")
}

#[test]
fn harness_up_starts_the_workspaces_binary_that_cargo_bin_names() {
    let dir = user_crate();
    let up = harness(dir.path(), &["up", "-d", "topologies/app.yaml"]);
    let out = text(&up);
    let status = harness(dir.path(), &["status", "topologies/app.yaml"]);
    let down = harness(dir.path(), &["down", "topologies/app.yaml"]);
    assert!(up.status.success(), "{out}");
    let shown = text(&status);
    assert!(status.status.success(), "{shown}");
    assert!(
        shown.contains("app") && shown.contains("greeter") && shown.contains("running"),
        "{shown}"
    );
    assert!(down.status.success(), "{}", text(&down));

    // A name no package of the workspace has a binary of: refused before anything starts.
    edit(
        dir.path(),
        "topologies/app.yaml",
        "${cargo_bin:kvapp}",
        "${cargo_bin:kvap}",
    );
    let up = harness(dir.path(), &["up", "topologies/app.yaml"]);
    let out = text(&up);
    // 125: harness itself failed, before any service (as for a bad file).
    assert_eq!(up.status.code(), Some(125), "{out}");
    assert!(
        out.contains(
            "no package of the cargo workspace here has a binary `kvap` (its binaries: kvapp, \
             greeter)"
        ),
        "{out}"
    );
}
