//! The errors of deploying, rolling back and stopping a package on a host.

use crate::exec::LaunchError;

use super::error::PackageError;

/// Deploying (or rolling back, stopping, removing) a service on a host failed. Every variant
/// names the host; messages read after "failed to".
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The package was refused or could not be read or built; no host was touched.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// An option is not valid (an env variable name, a service name); no host was touched.
    #[error("deploy {what}: {reason}")]
    Invalid {
        /// What was being deployed.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The host could not be reached, or refused the login.
    #[error("deploy {service} to {host}: {source}")]
    Connect {
        /// The host.
        host: String,
        /// The service.
        service: String,
        /// What ssh said (boxed: it is large, and rare).
        source: Box<LaunchError>,
    },
    /// The host lacks programs or files the manifest's `system_requires` lists, or a program
    /// deployment runs there (`tar`, `sha256sum`, ...); nothing was changed on it.
    #[error(
        "deploy {service} to {host}: the host lacks {}: {}; nothing was changed",
        if missing.len() == 1 { "a required program or file" } else { "required programs or files" },
        missing.join(", ")
    )]
    MissingRequirements {
        /// The host.
        host: String,
        /// The service.
        service: String,
        /// The paths or programs not found, in manifest order.
        missing: Vec<String>,
    },
    /// A step failed before the running release was touched (the transfer, extraction, the
    /// checksum, the env file); the host is as it was, apart from a temporary directory that
    /// the next deployment sweeps if the connection was lost.
    #[error("deploy {service} to {host}: {step}: {reason}")]
    Step {
        /// The host.
        host: String,
        /// The service.
        service: String,
        /// The step, as a fragment ("upload the package").
        step: String,
        /// What went wrong, with the remote output's tail.
        reason: String,
    },
    /// The new release did not start or did not become healthy; it was stopped and removed,
    /// and the previous release (if there was one) is live and healthy again.
    #[error(
        "deploy {release} to {host}: {step} failed{}:\n{output}",
        match restored {
            Some(r) => format!("; rolled back to {r}, which is running and healthy again"),
            None => "; it was removed again (there was no previous release)".to_string(),
        }
    )]
    RolledBack {
        /// The host.
        host: String,
        /// The release that failed (`name-version`).
        release: String,
        /// What failed: `start.sh`, `health.sh`, `stop.sh of the live release`.
        step: &'static str,
        /// The tail of the failing script's output.
        output: String,
        /// The release that is live again, if there was one.
        restored: Option<String>,
    },
    /// The new release failed and restoring the previous one failed too: the host needs a
    /// look. Both failures are told.
    #[error(
        "deploy {release} to {host}: {step} failed:\n{output}\nand restoring the previous release failed too: {rollback}"
    )]
    RollbackFailed {
        /// The host.
        host: String,
        /// The release that failed.
        release: String,
        /// What failed first.
        step: &'static str,
        /// The tail of its output.
        output: String,
        /// Why the restore failed.
        rollback: String,
    },
    /// `rollback` or `stop` found nothing to act on.
    #[error("{action} {service} on {host}: {reason}")]
    NothingThere {
        /// `roll back`, `stop`.
        action: &'static str,
        /// The host.
        host: String,
        /// The service.
        service: String,
        /// What is missing.
        reason: String,
    },
}

impl DeployError {
    /// The host the error happened on, if it got that far.
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::Package(_) | Self::Invalid { .. } => None,
            Self::Connect { host, .. }
            | Self::MissingRequirements { host, .. }
            | Self::Step { host, .. }
            | Self::RolledBack { host, .. }
            | Self::RollbackFailed { host, .. }
            | Self::NothingThere { host, .. } => Some(host),
        }
    }

    /// Whether the input was at fault (the package, an option) rather than a host: nothing was
    /// tried on any host.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::Package(_) | Self::Invalid { .. })
    }
}
