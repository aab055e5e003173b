//! A run's temporary state directory, when the caller names none; its removal when the
//! process is terminated by a signal; and the sweep of the ones whose owner was killed.
//!
//! The directory is `harness-run-<pid>-<start time>-XXXXXX` in the temporary directory, named
//! after the process that owns it, and removed when the run stops or its manager is dropped.
//! A process ended by a signal runs no destructor, so:
//!
//! - a runner that owns its process (the test runner of `harness::main!()`) has the live
//!   directories removed on SIGTERM (nextest's timeout) or SIGINT (Ctrl-C) before the signal
//!   ends the process ([`remove_live`], called by `termination.rs`);
//! - the directory of a process killed with SIGKILL stays, and the first run that a later
//!   process starts removes every such directory whose owner is gone. The start time tells an
//!   owner from a later process that reuses its pid.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, Once};

use crate::sys::start_time;

/// What every run's temporary directory is called, before its owner.
const PREFIX: &str = "harness-run-";

/// The temporary state directories of this process's runs that have not been removed.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A run's temporary state directory, removed when dropped or closed.
pub(crate) struct RunDir(Option<tempfile::TempDir>);

impl RunDir {
    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        self.0.as_ref().expect("open until closed").path()
    }

    /// Removes the directory, reporting an error.
    pub(crate) fn close(mut self) -> std::io::Result<()> {
        let dir = self.0.take().expect("open until closed");
        forget(dir.path());
        dir.close()
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            forget(dir.path());
        }
    }
}

fn forget(path: &Path) {
    live().retain(|p| p != path);
}

/// Creates a fresh temporary state directory, after removing those of dead owners (once per
/// process).
pub(crate) fn create() -> std::io::Result<RunDir> {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(sweep);
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or_default();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{pid}-{start}-"))
        .tempdir()?;
    live().push(dir.path().to_path_buf());
    Ok(RunDir(Some(dir)))
}

/// Removes this process's live run directories now: for a process about to be ended by a
/// signal, whose destructors will not run.
pub(crate) fn remove_live() {
    for dir in live().drain(..) {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Removes this user's run directories in the temporary directory whose owner is gone: also
/// for a test runner whose worker process ended without its destructors.
pub(crate) fn sweep() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let uid = rustix::process::getuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let mut parts = owner.splitn(3, '-');
        let (Some(Ok(pid)), Some(Ok(start))) = (
            parts.next().map(str::parse::<u32>),
            parts.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        if start_time(pid) == Some(start) {
            continue;
        }
        // Not following links, and only what this user made.
        let ours = entry
            .metadata()
            .is_ok_and(|meta| meta.is_dir() && meta.uid() == uid);
        if ours {
            tracing::info!(
                "removing {}, left by dead process {pid}",
                entry.path().display()
            );
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_owner_s_directory_is_swept_and_a_live_one_s_is_kept() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let tmp = std::env::temp_dir();
        let left = tmp.join(format!("{PREFIX}{dead}-1-test{}", unique()));
        fs::create_dir_all(left.join("sub")).unwrap();
        fs::write(left.join("sub/echo.log"), "x").unwrap();
        let live = create().unwrap();
        sweep();
        assert!(!left.exists(), "{} was not swept", left.display());
        assert!(live.path().is_dir(), "a live run's directory was swept");
    }

    /// A suffix that no other test run uses.
    fn unique() -> String {
        format!(
            "{}{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos()
        )
    }
}
