//! `${cargo_bin:NAME}` for a binary of another package of the suite's cargo workspace: cargo
//! gives a test only its own package's binaries, so the runner builds this one, once per run.
//!
//! The binary is built with the test binary's own profile and target
//! (`cargo build -p PACKAGE --bin NAME`, which does nothing when it is fresh), into the
//! workspace's real target directory, wherever `CARGO_TARGET_DIR` or `build.target-dir` put
//! it. Every process of one run (the runner, its workers, each process nextest starts) asks;
//! the first builds it under a lock in `<target>/harness/`, and leaves a stamp with the run's
//! id, so the others only take its path.
//!
//! A run from a nextest archive unpacked elsewhere (the test binary is outside the workspace's
//! target directory, or there is no cargo or no workspace) builds nothing: it takes the binary
//! beside the test binaries, where the archive put it if `archive.include` named it.

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
    let exe = std::env::current_exe().map_err(|e| format!("find the test binary: {e}"))?;
    let cargo = cargo_program();
    let workspace = match CargoWorkspace::read(&cargo, Some(manifest)) {
        Ok(workspace) => workspace,
        // No cargo, or no workspace where the test was built: a run from a nextest archive
        // on another machine.
        Err(why) => return from_archive(name, &exe, &why),
    };
    // The test binary's path has its links resolved; so must the target directory's.
    let target_dir = fs::canonicalize(&workspace.target_dir).unwrap_or(workspace.target_dir);
    let Some(build) = BuildDir::of_test_binary(&exe, &target_dir) else {
        // The test binary runs from outside the workspace's target directory: a nextest
        // archive unpacked elsewhere, which carries its own copy.
        let why = format!(
            "the test binary {} is not in the workspace's target directory {}",
            exe.display(),
            target_dir.display()
        );
        return from_archive(name, &exe, &why);
    };
    let path = build.dir.join(name);
    let stamps = target_dir.join("harness");
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

/// The binary `name` beside the test binary `exe` (`<profile dir>/deps/NAME-HASH`), where a
/// nextest archive that carries it (`archive.include`) unpacks it; `why` says why cargo was
/// not asked.
fn from_archive(name: &str, exe: &Path, why: &str) -> Result<String, String> {
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{why}; and {} is in no profile directory", exe.display()))?;
    let path = profile_dir.join(name);
    if path.is_file() {
        tracing::info!(
            binary = name,
            path = %path.display(),
            "taking the binary from beside the test binary: {why}"
        );
        return Ok(path.display().to_string());
    }
    let profile = profile_dir
        .file_name()
        .map_or_else(|| "debug".into(), |p| p.to_string_lossy());
    Err(format!(
        "{why}, and {} does not exist. A run from a nextest archive finds another package's \
         binary beside the test binaries: build it before archiving and add it to the archive \
         in .config/nextest.toml: [profile.default] archive.include = \
         [{{ path = \"{profile}/{name}\", relative-to = \"target\" }}]",
        path.display()
    ))
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
    fn a_run_from_an_archive_takes_the_binary_beside_the_test_binaries_or_says_how() {
        let target = tempfile::tempdir().unwrap();
        let deps = target.path().join("debug/deps");
        fs::create_dir_all(&deps).unwrap();
        let exe = deps.join("suite-0123");
        let missing = from_archive("tool", &exe, "no cargo").unwrap_err();
        assert!(
            missing.starts_with("no cargo, and ")
                && missing.contains("debug/tool does not exist")
                && missing.contains(
                    r#"archive.include = [{ path = "debug/tool", relative-to = "target" }]"#
                ),
            "{missing}"
        );
        fs::write(target.path().join("debug/tool"), "").unwrap();
        assert_eq!(
            from_archive("tool", &exe, "no cargo").unwrap(),
            target.path().join("debug/tool").display().to_string()
        );
    }

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
