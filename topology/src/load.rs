//! Loading: read the files, parse, merge overlays, decode, validate, and report every mistake.

use std::ffi::OsStr;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::decode::Decoder;
use super::diagnostic::Sources;
use super::error::TopologyError;
use super::model::TopologyConfig;
use super::overlay::merge;
use super::parse::parse;
use super::validate::validate;

/// The environment variable naming overlays to apply: a `:`-separated list of files, applied
/// in order; relative paths are relative to the current directory; empty entries are skipped.
pub const OVERLAY_ENV: &str = "HARNESS_OVERLAY";

/// The largest topology or overlay file harness reads: 4 MiB. A real topology is a few
/// kilobytes; the cap keeps a wrong path (`/dev/zero`, a log file) from exhausting memory.
pub const MAX_TOPOLOGY_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// Reads a topology or overlay file: a regular file of at most [`MAX_TOPOLOGY_FILE_SIZE`]
/// bytes, as UTF-8. A FIFO, a device, a socket or a directory is refused before it is opened
/// for reading (a FIFO would block until someone writes to it, a device may never end), and
/// so is a larger file.
pub fn read_topology_file(path: &Path) -> Result<String, TopologyError> {
    let read_error = |source| TopologyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let not_a_file = |kind| TopologyError::NotAFile {
        path: path.to_path_buf(),
        kind,
    };
    let too_large = |size| TopologyError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit: MAX_TOPOLOGY_FILE_SIZE,
    };
    let kind = file_kind(&std::fs::metadata(path).map_err(read_error)?);
    if let Some(kind) = kind {
        return Err(not_a_file(kind));
    }
    // Non-blocking, in case the path was replaced by a FIFO since it was looked at; the file
    // opened is checked again.
    let file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(read_error)?
    };
    let metadata = file.metadata().map_err(read_error)?;
    if let Some(kind) = file_kind(&metadata) {
        return Err(not_a_file(kind));
    }
    if metadata.len() > MAX_TOPOLOGY_FILE_SIZE {
        return Err(too_large(metadata.len()));
    }
    // Read one byte more than allowed, to notice a file that grew since its size was taken.
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_TOPOLOGY_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_TOPOLOGY_FILE_SIZE {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it is not UTF-8 text (byte {})",
                e.utf8_error().valid_up_to()
            ),
        ))
    })
}

/// What a file is when it is not a regular file: "a FIFO", "a directory".
fn file_kind(metadata: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt as _;
    let kind = metadata.file_type();
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

impl TopologyConfig {
    /// Reads and checks a topology file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TopologyError> {
        Self::load_with_overlays(path, &[] as &[&Path])
    }

    /// Reads a topology file and merges `overlays` over it, in order, then checks the result.
    /// An error in an overlay names the overlay's file and line.
    pub fn load_with_overlays<P: AsRef<Path>>(
        path: impl AsRef<Path>,
        overlays: &[P],
    ) -> Result<Self, TopologyError> {
        let mut files = Vec::with_capacity(overlays.len() + 1);
        for file in std::iter::once(path.as_ref()).chain(overlays.iter().map(AsRef::as_ref)) {
            files.push((file.to_path_buf(), read_topology_file(file)?));
        }
        Self::from_yaml_files(&files)
    }

    /// Like [`TopologyConfig::load_with_overlays`], with the overlays named by
    /// `HARNESS_OVERLAY` ([`OVERLAY_ENV`]) applied first and then `overlays` (the command
    /// line's, which are the more specific).
    pub fn load_with_env<P: AsRef<Path>>(
        path: impl AsRef<Path>,
        overlays: &[P],
    ) -> Result<Self, TopologyError> {
        let mut all = std::env::var_os(OVERLAY_ENV)
            .map(|v| overlay_paths(&v))
            .unwrap_or_default();
        all.extend(overlays.iter().map(|p| p.as_ref().to_path_buf()));
        Self::load_with_overlays(path, &all)
    }

    /// Checks a topology given as text; `name` is the file name its diagnostics show.
    pub fn from_yaml(name: impl AsRef<Path>, text: &str) -> Result<Self, TopologyError> {
        Self::from_yaml_files(&[(name.as_ref().to_path_buf(), text.to_string())])
    }

    /// Checks a topology given as texts: the main file and then its overlays, each with the
    /// name its diagnostics show.
    pub fn from_yaml_files(files: &[(PathBuf, String)]) -> Result<Self, TopologyError> {
        let main = files.first().map(|(p, _)| p.clone()).unwrap_or_default();
        let mut sources = Sources::default();
        let ids: Vec<usize> = files.iter().map(|(p, t)| sources.add(p, t)).collect();
        let mut errors = Vec::new();
        let mut merged = None;
        for id in ids {
            match parse(&sources, id) {
                Err(diagnostic) => errors.push(diagnostic),
                Ok(node) => {
                    merged = Some(match merged {
                        None => node,
                        Some(base) => merge(base, node),
                    });
                }
            }
        }
        // A file that does not parse would leave the merge incomplete and its findings
        // misleading, so syntax errors are reported alone.
        if errors.is_empty()
            && let Some(root) = merged
        {
            let mut decoder = Decoder::new(&sources);
            let mut decoded = decoder.topology(&root);
            errors.extend(decoder.errors);
            errors.extend(validate(&decoded, &sources));
            if errors.is_empty() {
                decoded.config.files = files.iter().map(|(p, _)| p.clone()).collect();
                return Ok(decoded.config);
            }
        }
        let order = sources.paths();
        errors.sort_by_key(|d| d.sort_key(&order));
        Err(TopologyError::Invalid {
            file: main,
            diagnostics: errors,
        })
    }
}

/// The overlay files a `HARNESS_OVERLAY` value names, in order.
///
/// ```
/// use std::path::PathBuf;
/// use harness::topology::overlay_paths;
/// assert_eq!(
///     overlay_paths("ci/docker.yaml::/etc/harness/local.yaml".as_ref()),
///     [PathBuf::from("ci/docker.yaml"), PathBuf::from("/etc/harness/local.yaml")],
/// );
/// ```
pub fn overlay_paths(value: &OsStr) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    value
        .as_bytes()
        .split(|&b| b == b':')
        .filter(|part| !part.is_empty())
        .map(|part| PathBuf::from(OsStr::from_bytes(part)))
        .collect()
}
