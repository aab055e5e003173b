//! Service packages: the ADR's tarball format, its manifest, and building and verifying
//! packages.
//!
//! A package is a `tar.gz` holding one service and what it needs on a remote host:
//!
//! ```text
//! manifest.yaml        name, version, port, system_requires, network (see Manifest)
//! bin/                 the service's executable(s)
//! scripts/start.sh     required: called as start.sh WORK_DIR ENV_FILE
//! scripts/stop.sh      required: called as stop.sh WORK_DIR
//! scripts/health.sh    optional: exit 0 when healthy
//! config/              optional configuration templates
//! network/             optional WireGuard configuration
//! ```
//!
//! [`build`] (or [`PackageBuilder`]) packs a directory into a reproducible archive and writes
//! its sha256 beside it; [`verify`] (or [`Verifier`]) checks an archive as deployment does
//! before extracting it. Both refuse, with the entry and the reason ([`Refusal`]): a missing
//! start or stop script, a script without an execute bit, an absolute path, a `..`
//! component, a link that points outside the package, a device, fifo, socket or hard link, an
//! invalid name or version, an invalid manifest (with file, line and column, and the closest
//! valid field name), and a package over the size limit ([`DEFAULT_MAX_SIZE`]). Archives are
//! also refused for what the host's GNU tar would read differently from the verifier: a second
//! gzip member or trailing bytes, a missing end of archive, setuid bits, oversized or ambiguous
//! GNU and pax headers ([`Verifier`] lists them all); and the host checks that the tree it
//! extracted is the one verified here before it installs it.
//!
//! ```no_run
//! # fn main() -> Result<(), harness::package::PackageError> {
//! let built = harness::package::build("packages/load-generator", "load-generator.tar.gz")?;
//! let info = harness::package::verify(&built.path)?;
//! assert_eq!(info.sha256, built.sha256);
//! println!("{} {}", info.manifest.name, info.manifest.version);
//! # Ok(()) }
//! ```
//!
//! Reproducible: the same directory gives the same bytes. Entries are sorted by path; every
//! entry has owner 0:0 with no names and the time from `SOURCE_DATE_EPOCH` (or 0); modes keep
//! only the execute bit ([`stored_mode`]); the gzip header has no time and no file name.
//!
//! The format is documented for users in `docs/packages.md`.

mod build;
mod checksum;
mod deploy;
mod deploy_api;
mod deploy_error;
mod deploy_installed;
mod deploy_remote;
mod deploy_switch;
mod error;
mod listing;
mod manifest;
mod name;
mod rules;
mod tar_guard;
mod verify;

pub use build::{
    BuildProgress, BuiltPackage, DEFAULT_LEVEL, PackageBuilder, SOURCE_DATE_EPOCH, build,
};
pub use checksum::checksum_path;
pub use deploy::{
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_ROOT, DEFAULT_SCRIPT_TIMEOUT, Deploy, DeployHost,
    DeployOutcome, DeployProgress, DeployReport, ProgressFn, Stage, deploy_all,
};
pub use deploy_api::SshDeployer;
pub use deploy_error::DeployError;
pub use deploy_installed::{Installed, InstalledStatus};
pub use error::{PackageError, Refusal};
pub use manifest::{MANIFEST_FILE, Manifest, ManifestError, ManifestNetwork, WireguardSettings};
pub use name::{
    MAX_NAME_LEN, MAX_VERSION_LEN, NAME_RULE, VERSION_RULE, install_dir_name, sanitize_name,
    validate_name, validate_version,
};
pub use rules::{
    DEFAULT_MAX_SIZE, FileKind, HEALTH_SCRIPT, PackageFile, START_SCRIPT, STOP_SCRIPT, stored_mode,
};
pub use verify::{DEFAULT_MAX_ENTRIES, PackageInfo, Verifier, verify};

#[cfg(test)]
mod tests;
