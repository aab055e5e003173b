//! Loading: read the files, parse, merge overlays, decode, validate, and report every mistake.

use std::ffi::OsStr;
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
            let text = std::fs::read_to_string(file).map_err(|source| TopologyError::Read {
                path: file.to_path_buf(),
                source,
            })?;
            files.push((file.to_path_buf(), text));
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
