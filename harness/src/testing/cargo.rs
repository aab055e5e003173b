//! `${cargo_bin:NAME}` for a binary of another package of the suite's cargo workspace: cargo
//! gives a test only its own package's binaries, so the runner builds this one, once per run.
//!
//! The binary is built with the test binary's own profile and target
//! (`cargo build -p PACKAGE --bin NAME`, which does nothing when it is fresh), into the
//! workspace's real target directory, wherever `CARGO_TARGET_DIR` or `build.target-dir` put
//! it. Every process of one run (the runner, its workers, each process nextest starts) asks;
//! the first builds it under a lock in `<target>/harness/`, and leaves a stamp with the run's
//! id, so the others only take its path.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use crate::topology::cargo::{BuildDir, CargoWorkspace, build_bin, cargo_program};

/// The path of the binary `name` of `package`, in the workspace of `manifest`, built for this
/// run if it was not yet.
pub(crate) fn workspace_bin(name: &str, package: &str, manifest: &str) -> Result<String, String> {
    static BUILT: OnceLock<Mutex<HashMap<String, Result<String, String>>>> = OnceLock::new();
    let built = BUILT.get_or_init(Mutex::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = built.get(name) {
        return known.clone();
    }
    let result = build_once(name, package, Path::new(manifest)).map_err(|why| {
        format!(
            "`${{cargo_bin:{name}}}`, the binary of package `{package}` of the workspace of \
             {manifest}: {why}"
        )
    });
    built.insert(name.to_string(), result.clone());
    result
}

fn build_once(name: &str, package: &str, manifest: &Path) -> Result<String, String> {
    let cargo = cargo_program();
    let workspace = CargoWorkspace::read(&cargo, Some(manifest)).map_err(|why| {
        format!(
            "{why}. A run from a nextest archive has no cargo workspace: there only the test's \
             own package's binaries are known; name another binary by a path the archive \
             carries"
        )
    })?;
    let exe = std::env::current_exe().map_err(|e| format!("find the test binary: {e}"))?;
    let build = BuildDir::of_test_binary(&exe, &workspace.target_dir)
        .unwrap_or_else(|| BuildDir::debug(&workspace.target_dir));
    let path = build.dir.join(name);
    let stamps = workspace.target_dir.join("harness");
    fs::create_dir_all(&stamps).map_err(|e| format!("create {}: {e}", stamps.display()))?;
    let lock_path = stamps.join("cargo-bin.lock");
    let lock =
        fs::File::create(&lock_path).map_err(|e| format!("open {}: {e}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    let stamp = stamps.join(format!("{name}.run"));
    let run = run_id();
    let stamped = fs::read_to_string(&stamp).is_ok_and(|text| text == run);
    if stamped && path.is_file() {
        return Ok(path.display().to_string());
    }
    tracing::info!(
        binary = name,
        package,
        "building a binary of the workspace for this run"
    );
    let path = build_bin(&cargo, Some(manifest), package, name, &build)?;
    if let Err(e) = fs::write(&stamp, &run) {
        tracing::warn!("write {}: {e}", stamp.display());
    }
    Ok(path.display().to_string())
}

/// What tells this run apart from every other: nextest's run id, else the runner's process
/// (its pid and start time; a worker's runner is its parent).
fn run_id() -> String {
    if let Ok(id) = std::env::var("NEXTEST_RUN_ID")
        && !id.is_empty()
    {
        return format!("nextest {id}");
    }
    let pid = match super::worker::runner_pid() {
        Some(runner) => runner,
        None => std::process::id(),
    };
    let start = crate::sys::start_time(pid).unwrap_or_default();
    format!("runner {pid} {start}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_has_one_id_in_every_process_of_it() {
        let id = run_id();
        assert_eq!(id, run_id());
        assert!(
            id.starts_with("nextest ") || id.starts_with("runner "),
            "{id}"
        );
    }
}
