//! Whether the emulated lab (`harness::lab`) can run here, for the suites that need one.

#![allow(dead_code)]

use std::path::Path;

/// True (after saying why on stderr) when a lab cannot run here: not root, no `ip netns`, or a
/// program missing (`/usr/sbin/sshd` always, plus `programs`). With `HARNESS_REQUIRE_LAB=1`
/// that is a failure instead of a skip.
pub fn skip_without_lab(programs: &[&str]) -> bool {
    let missing = std::iter::once("/usr/sbin/sshd")
        .chain(programs.iter().copied())
        .find(|p| !Path::new(p).exists());
    let reason = if !rustix::process::geteuid().is_root() {
        Some("not root".to_string())
    } else if let Some(program) = missing {
        Some(format!("{program} is missing"))
    } else {
        match std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
        {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(format!(
                "`ip netns list` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Some(format!("`ip` cannot run: {e}")),
        }
    };
    let Some(reason) = reason else {
        return false;
    };
    if std::env::var("HARNESS_REQUIRE_LAB").as_deref() == Ok("1") {
        panic!("HARNESS_REQUIRE_LAB=1 but a lab cannot run here: {reason}");
    }
    eprintln!("skipped: a lab cannot run here: {reason}");
    true
}

/// A child process, killed and reaped when dropped.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs this test binary again for the one test `test`, with `env` set to `1` (the test's
/// child branch), and waits for the line the child prints with `tag` (libtest may print
/// `test NAME ... ` before it on the same line). Returns the child and what follows the tag;
/// panics if the child exits first.
pub fn rerun_as_child(test: &str, env: &str, tag: &str) -> (ChildGuard, String) {
    use std::io::BufRead;
    let exe = std::env::current_exe().unwrap();
    let child = std::process::Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the test binary starts again");
    let mut child = ChildGuard(child);
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    while lines.read_line(&mut line).unwrap() > 0 {
        if let Some((_, rest)) = line.trim().split_once(&format!("{tag} ")) {
            return (child, rest.trim().to_string());
        }
        line.clear();
    }
    panic!("the child exited before it printed `{tag}`");
}

/// Shuts `lab` down and checks that nothing of it is left.
pub async fn shut_down(lab: harness::lab::Lab) {
    let prefix = lab.prefix().to_string();
    lab.shutdown().await.expect("the lab shuts down cleanly");
    assert_eq!(
        harness::lab::leftovers(&prefix),
        Vec::<String>::new(),
        "lab {prefix}"
    );
}
