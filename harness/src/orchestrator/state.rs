//! Where runs that outlive one command keep their state: `harness up -d` runs and the
//! supervisors that share a topology across nextest's test processes.

use std::path::PathBuf;

/// The environment variable that names the state root.
pub const STATE_DIR_ENV: &str = "HARNESS_STATE_DIR";

/// The state root: `$HARNESS_STATE_DIR`, else `$XDG_RUNTIME_DIR/harness`, else
/// `/tmp/harness-<uid>`.
pub fn state_root() -> PathBuf {
    if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("harness");
    }
    PathBuf::from(format!(
        "/tmp/harness-{}",
        rustix::process::getuid().as_raw()
    ))
}
