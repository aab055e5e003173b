//! Finding (and if need be building) the fixture programs (`fixtures/src/bin/`), and a project
//! directory in which the fixture topologies' `./target/debug/NAME` paths lead to them.
//!
//! The programs belong to another package of the workspace, so cargo gives tests no
//! `CARGO_BIN_EXE_*` for them: they are looked up beside the test's own target directory
//! (`target/debug/echo-server`). If one is missing or older than the fixtures' sources,
//! `cargo build -p harness-fixtures --bins` runs once, into the same target directory.

#![allow(dead_code, reason = "each test uses a part of these helpers")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The directory cargo puts this profile's binaries in: `target/debug` for
/// `target/debug/deps/TEST-HASH`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/PROFILE/deps/TEST")
        .to_path_buf()
}

/// The workspace root.
pub fn workspace_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture topology file, `fixtures/topologies/NAME`.
pub fn topology_file(name: &str) -> PathBuf {
    workspace_dir().join("fixtures/topologies").join(name)
}

fn newest_source() -> SystemTime {
    fn walk(dir: &Path, newest: &mut SystemTime) {
        for entry in
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        {
            let entry = entry.expect("a directory entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                walk(&entry.path(), newest);
            } else {
                *newest = (*newest).max(meta.modified().expect("mtime"));
            }
        }
    }
    let root = workspace_dir().join("fixtures");
    let mut newest = std::fs::metadata(root.join("Cargo.toml"))
        .and_then(|m| m.modified())
        .expect("fixtures/Cargo.toml");
    walk(&root.join("src"), &mut newest);
    newest
}

/// The path of fixture program `name`, built first if missing or stale.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = profile_dir();
    let path = dir.join(name);
    let fresh = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= newest_source())
    };
    if !fresh(&path) {
        BUILT.get_or_init(|| {
            let profile = dir
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a profile directory");
            let target_dir = dir.parent().expect("the target directory");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = Command::new(cargo);
            build
                .args(["build", "-p", "harness-fixtures", "--bins", "--target-dir"])
                .arg(target_dir);
            match profile {
                "debug" => {}
                "release" => {
                    build.arg("--release");
                }
                other => {
                    build.args(["--profile", other]);
                }
            }
            let status = build
                .current_dir(workspace_dir())
                .status()
                .expect("run cargo build");
            assert!(
                status.success(),
                "cargo build -p harness-fixtures --bins failed: {status}"
            );
        });
    }
    assert!(
        path.is_file(),
        "{} is missing after building harness-fixtures",
        path.display()
    );
    path
}

/// A temporary directory standing in for the project root: its `target/debug` is this
/// profile's binary directory (whatever `CARGO_TARGET_DIR` says), so the fixture topologies'
/// `./target/debug/NAME` paths work from it. Builds the fixture programs if needed.
pub fn project_dir() -> tempfile::TempDir {
    for name in ["echo-server", "http-health", "kv-server", "failing-service"] {
        bin(name);
    }
    let dir = tempfile::Builder::new()
        .prefix("harness-project-")
        .tempdir()
        .expect("a temporary directory");
    std::fs::create_dir(dir.path().join("target")).expect("create target/");
    let profile = profile_dir();
    std::os::unix::fs::symlink(
        &profile,
        dir.path().join("target").join(profile.file_name().unwrap()),
    )
    .expect("link target/PROFILE");
    dir
}

/// The pids of the live processes whose environment has `name=value`: how a test finds every
/// process a run it started left, whoever its parent is (zombies have no environment).
pub fn processes_with_env(name: &str, value: &str) -> Vec<u32> {
    let wanted = format!("{name}={value}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end while we look.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|&b| b == 0)
            .any(|var| var == wanted.as_bytes())
        {
            found.push(pid);
        }
    }
    found
}

/// A command's stdout and stderr, for failure messages.
pub fn both(output: &std::process::Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The cargo that runs this test.
pub fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// This test's target directory.
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("the target directory")
        .to_path_buf()
}

/// The test binary of the workspace's test target `name`, built (if need be) into this
/// target directory; `--workspace`, as CI's `cargo nextest run --workspace` builds, so nothing
/// builds twice.
pub fn test_binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let out = Command::new(cargo())
        .args(["test", "--workspace", "--no-run", "--message-format=json"])
        .args(["--test", name, "--target-dir"])
        .arg(target_dir())
        .current_dir(workspace_dir())
        .output()
        .expect("run cargo test --no-run");
    assert!(out.status.success(), "{}", both(&out));
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|m| m["target"]["name"] == name && m["executable"].is_string())
        .map(|m| PathBuf::from(m["executable"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("cargo names the {name} binary"));
    built.push((name.to_string(), path.clone()));
    path
}

/// The value `name` has in the env file `file` that harness wrote for a service
/// (`export NAME='VALUE'` lines).
pub fn env_value(file: &Path, name: &str) -> String {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let prefix = format!("export {name}='");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or_else(|| panic!("{} has no {name}:\n{text}", file.display()))
        .to_string()
}
