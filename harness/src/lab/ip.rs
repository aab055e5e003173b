//! Running `ip` (and other setup commands) on this machine, synchronously.
//!
//! Setup and teardown are a few dozen short commands; they run on a blocking thread
//! (`blocking::unblock`) during `build` and `shutdown`, and directly in `Drop`, which cannot
//! await.

use std::process::{Command, Stdio};

use crate::lab::error::LabError;

/// Runs `program args` and fails with its stderr unless it exits with 0.
pub(crate) fn run(
    prefix: &str,
    doing: &str,
    program: &str,
    args: &[&str],
) -> Result<String, LabError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::io(format!("{doing} (lab {prefix}): run `{command}`"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(LabError::Command {
            prefix: prefix.to_string(),
            doing: doing.to_string(),
            command,
            stderr: if stderr.is_empty() {
                out.status.to_string()
            } else {
                stderr
            },
        })
    }
}

/// `ip ARGS`.
pub(crate) fn ip(prefix: &str, doing: &str, args: &[&str]) -> Result<String, LabError> {
    run(prefix, doing, "ip", args)
}

/// The names of the network namespaces `ip netns` knows.
pub(crate) fn namespaces() -> Vec<String> {
    // `ip netns list` prints "name (id: N)" or just "name"; the files in /run/netns are the
    // same list without running anything.
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

/// The names of the links in this (the root) network namespace.
pub(crate) fn root_links() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

/// The pids of the processes in network namespace `ns`.
pub(crate) fn pids_in(ns: &str) -> Vec<u32> {
    run(
        "-",
        "list the processes of a namespace",
        "ip",
        &["netns", "pids", ns],
    )
    .map(|out| {
        out.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    })
    .unwrap_or_default()
}
