//! The errors of building and verifying packages.

use std::io;
use std::path::PathBuf;

use super::manifest::ManifestError;

/// Building or verifying a package failed.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The package breaks a rule of the format; nothing was written.
    #[error("{action} {}: {refusal}", package.display())]
    Refused {
        /// `build package from` or `verify package`.
        action: &'static str,
        /// The directory or the archive.
        package: PathBuf,
        /// Which entry, and why.
        refusal: Refusal,
    },
    /// The manifest is missing fields or holds mistakes, listed with file, line and column.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Reading or writing failed (a missing directory, a full disk, an unreadable file).
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, as in "read" or "write package".
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl PackageError {
    /// Whether the package itself is at fault (a rule, the manifest, the checksum), rather
    /// than the machine (an unreadable or unwritable file).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Io { .. })
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// Why a package is refused. Each names the entry (its path inside the package) and the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `manifest.yaml` is missing or is not a regular file.
    #[error(
        "no manifest.yaml at the package root (a regular file naming the package and its version)"
    )]
    MissingManifest,
    /// `scripts/start.sh` or `scripts/stop.sh` is missing.
    #[error("missing required script {0}: deployment runs it to {verb}", verb = script_verb(.0))]
    MissingScript(&'static str),
    /// A script is not a regular file.
    #[error("{0} is not a regular file: scripts must be files (not links or directories)")]
    ScriptNotFile(String),
    /// A script has no execute bit.
    #[error("{path} is not executable (mode {mode:04o}): run `chmod +x {path}`")]
    NotExecutable {
        /// The script.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// An entry with an absolute path.
    #[error("entry {0} has an absolute path: entries must be relative to the package root")]
    AbsolutePath(String),
    /// An entry with a `..` component.
    #[error("entry {0} has a `..` component: entries must stay inside the package")]
    ParentDir(String),
    /// An entry whose name is not UTF-8.
    #[error("entry {0} has a name that is not UTF-8")]
    NotUtf8(String),
    /// A symbolic link that points outside the package.
    #[error("link {path} -> {target} points outside the package: {why}")]
    LinkOutside {
        /// The link.
        path: String,
        /// Its target, as written.
        target: String,
        /// How it gets out.
        why: &'static str,
    },
    /// A device, fifo or socket, or a hard link or other entry the format has no place for.
    #[error(
        "entry {path} is a {kind}: a package holds only regular files, directories and symbolic links"
    )]
    Unsupported {
        /// The entry.
        path: String,
        /// What it is: `character device`, `fifo`, `socket`, `hard link`...
        kind: String,
    },
    /// An entry below a file or a link (`link/file`), which extraction would write through
    /// the link.
    #[error("entry {path} lies below {parent}, which is not a directory")]
    BelowNonDirectory {
        /// The entry.
        path: String,
        /// Its ancestor that is a file or a link.
        parent: String,
    },
    /// The same path twice in an archive: the second would replace the first after it was
    /// checked.
    #[error("entry {0} appears twice")]
    Duplicate(String),
    /// The package's content is larger than the limit.
    #[error("it holds more than {limit} bytes ({size}{more} bytes of {what}); raise the limit (--max-size) if this is intended", more = if *.partial { " or more" } else { "" })]
    Oversize {
        /// What was measured: `file content` or `compressed archive`.
        what: &'static str,
        /// How large it is (or how large it got before reading stopped).
        size: u64,
        /// Whether reading stopped early, so the package is larger still.
        partial: bool,
        /// The limit.
        limit: u64,
    },
    /// The archive does not match its `.sha256` file.
    #[error("sha256 {actual} does not match {} ({expected}): the archive is corrupt or was replaced", file.display())]
    ChecksumMismatch {
        /// The checksum file.
        file: PathBuf,
        /// The sum it records.
        expected: String,
        /// The archive's sum.
        actual: String,
    },
    /// The checksum file is not in `sha256sum` format.
    #[error("{} is not a sha256sum line (`<64 hex digits>  <file name>`)", .0.display())]
    BadChecksumFile(PathBuf),
    /// The archive is not a readable tar.gz.
    #[error("it is not a valid tar.gz archive: {0}")]
    Corrupt(String),
    /// An entry with setuid, setgid or sticky bits.
    #[error(
        "entry {path} has mode {mode:04o}: setuid, setgid and sticky bits are refused in a package"
    )]
    SpecialBits {
        /// The entry.
        path: String,
        /// Its permission bits, all of them.
        mode: u32,
    },
    /// An entry whose name holds a control character (a newline, a tab, ...).
    #[error("entry {0:?} has a control character in its name")]
    ControlCharacter(String),
    /// An entry at a path harness writes its own files to.
    #[error("entry {0} uses a name harness keeps for itself (`.harness-*` at the package root)")]
    Reserved(String),
    /// Bytes after the archive's end: a second gzip member, or data after the tar archive.
    #[error(
        "it has {0}: an archive must be one gzip member holding one tar archive, since the host's \
         tar would read what follows"
    )]
    TrailingData(String),
    /// The tar archive has no end-of-archive blocks.
    #[error(
        "its tar archive has no end-of-archive blocks: it was cut short, or it continues where \
         the verifier stopped reading"
    )]
    NoEndOfArchive,
    /// More entries than the limit.
    #[error("it holds more than {limit} entries (headers included)")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// A GNU long-name or pax header larger than harness reads.
    #[error(
        "its {what} header at byte {at} of the tar stream claims {size} bytes (at most {limit})"
    )]
    ExtensionTooLarge {
        /// `GNU long name`, `GNU long link name`, `pax extended` or `pax global`.
        what: &'static str,
        /// The size it claims.
        size: u64,
        /// Where its header starts in the tar stream.
        at: u64,
        /// The limit.
        limit: u64,
    },
    /// A pax header that tar implementations could read differently.
    #[error("{0}")]
    PaxConflict(String),
    /// The output would be written inside the directory being packed.
    #[error("the output {} lies inside the package directory; write it elsewhere", .0.display())]
    OutputInside(PathBuf),
}

fn script_verb(script: &str) -> &'static str {
    if script.ends_with("stop.sh") {
        "stop the service"
    } else {
        "start the service"
    }
}
