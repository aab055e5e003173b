//! The `harness` binary, run as a user runs it.

use std::process::{Command, Output};

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .output()
        .expect("the harness binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_passes_output_env_dir_and_exit_code_through() {
    let dir = tempfile::tempdir().unwrap();
    let out = harness(&[
        "run",
        "-e",
        "GREETING=hello there",
        "-C",
        dir.path().to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo \"$GREETING\"; pwd; echo to-stderr >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        text(&out.stdout),
        format!(
            "hello there\n{}\n",
            dir.path().canonicalize().unwrap().display()
        )
    );
    assert_eq!(text(&out.stderr), "to-stderr\n");
}

#[test]
fn run_reports_a_signal_as_128_plus_n() {
    let out = harness(&["run", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(128 + 15));
}

#[test]
fn run_timestamps_mark_start_lines_and_exit() {
    let out = harness(&["run", "-t", "--", "sh", "-c", "echo a; echo b >&2"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(stdout.trim_end().ends_with("s out a"), "{stdout}");
    let err_lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(err_lines.len(), 3, "{stderr}");
    assert!(err_lines[0].contains("--- started, pid "), "{stderr}");
    assert!(err_lines[1].ends_with("s err b"), "{stderr}");
    assert!(err_lines[2].ends_with("--- exited with code 0"), "{stderr}");
}

#[test]
fn run_errors_name_what_was_wrong_with_docker_style_codes() {
    let cases: [(&[&str], i32, &str); 4] = [
        (
            &["run", "no-such-program-harness"],
            127,
            "run `no-such-program-harness`: no such program",
        ),
        (
            &["run", "-C", "/no/such/dir", "true"],
            125,
            "in `/no/such/dir`: no such directory",
        ),
        (
            &["run", "--ssh", "no-at-sign", "true"],
            125,
            "`no-at-sign` as an ssh target",
        ),
        (
            &["run", "-e", "NOEQUALS", "true"],
            2,
            "`NOEQUALS` is not KEY=VALUE",
        ),
    ];
    for (args, code, message) in cases {
        let out = harness(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn run_refuses_an_unreachable_host_by_name() {
    // Bind then drop a listener: the port is free and nothing answers on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = harness(&["run", "--ssh", &format!("root@127.0.0.1:{port}"), "true"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
}
