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
