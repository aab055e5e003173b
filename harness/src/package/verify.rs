//! Verifying a package archive: the checks deployment makes before it extracts anything.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};

use super::checksum::{HashReader, checksum_path, hex, parse_checksum};
use super::error::{PackageError, Refusal};
use super::manifest::{MANIFEST_FILE, Manifest};
use super::rules::{
    DEFAULT_MAX_SIZE, FileKind, PackageFile, check_link, check_scripts, check_tree, entry_path,
};

/// The largest manifest read from an archive.
const MAX_MANIFEST_SIZE: u64 = 1 << 20;

/// What a verified archive holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageInfo {
    /// The archive.
    pub path: PathBuf,
    /// Its sha256, in lowercase hex.
    pub sha256: String,
    /// The `.sha256` file beside it that matched, if there was one.
    pub checksum_file: Option<PathBuf>,
    /// The archive's size in bytes.
    pub size: u64,
    /// Bytes of file content (before compression).
    pub content_size: u64,
    /// The manifest.
    pub manifest: Manifest,
    /// The manifest's text, as stored.
    pub manifest_text: String,
    /// The entries, in archive order (the root entry `./`, if any, left out).
    pub files: Vec<PackageFile>,
}

/// Verifies an archive with the default size limit: see [`Verifier`].
pub fn verify(archive: impl AsRef<Path>) -> Result<PackageInfo, PackageError> {
    Verifier::new().verify(archive)
}

/// Checks a package archive as deployment does, before anything is extracted: the checksum
/// file beside it (if there is one) matches; the archive is a tar.gz whose entries are all
/// relative, without `..`, not below a link or a file, not repeated, and only regular files,
/// directories and links that stay inside; its content is within the size limit; the manifest
/// is valid; the start and stop scripts are there and executable.
#[derive(Clone, Debug)]
#[must_use = "a verifier does nothing until verify() is called"]
pub struct Verifier {
    max_size: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// A verifier with the limit [`DEFAULT_MAX_SIZE`].
    pub fn new() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
        }
    }

    /// Refuses archives with more than `bytes` of content, or larger than that compressed.
    pub fn with_max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }

    /// Verifies `archive`; see [`Verifier`].
    pub fn verify(&self, archive: impl AsRef<Path>) -> Result<PackageInfo, PackageError> {
        let archive = archive.as_ref();
        let refused = |refusal| PackageError::Refused {
            action: "verify package",
            package: archive.to_path_buf(),
            refusal,
        };
        let mut file = File::open(archive).map_err(PackageError::io("open package", archive))?;
        let size = file
            .metadata()
            .map_err(PackageError::io("open package", archive))?
            .len();
        if size > self.max_size {
            return Err(refused(Refusal::Oversize {
                what: "compressed archive",
                size,
                partial: false,
                limit: self.max_size,
            }));
        }
        let mut hasher = Sha256::new();
        let read = self
            .read_entries(&mut file, &mut hasher)
            .map_err(|e| match e {
                ReadError::Refused(refusal) => refused(refusal),
                ReadError::Corrupt(e) => refused(Refusal::Corrupt(e.to_string())),
            })?;
        // Hash what the decoders left unread (trailing bytes) so the sum covers the file.
        io::copy(
            &mut HashReader {
                inner: &mut file,
                hasher: &mut hasher,
                read: 0,
            },
            &mut io::sink(),
        )
        .map_err(PackageError::io("read package", archive))?;
        let sha256 = hex(&hasher.finalize());

        let checksum = checksum_path(archive);
        let checksum_file = match fs::read_to_string(&checksum) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(PackageError::io("read checksum", &checksum)(e)),
            Ok(text) => {
                let Some(expected) = parse_checksum(&text) else {
                    return Err(refused(Refusal::BadChecksumFile(checksum)));
                };
                if expected != sha256 {
                    return Err(refused(Refusal::ChecksumMismatch {
                        file: checksum,
                        expected,
                        actual: sha256,
                    }));
                }
                Some(checksum)
            }
        };

        check_tree(&read.files).map_err(refused)?;
        let Some(manifest_text) = read.manifest else {
            return Err(refused(Refusal::MissingManifest));
        };
        let shown = PathBuf::from(format!("{}!/{MANIFEST_FILE}", archive.display()));
        let manifest = Manifest::from_yaml(shown, &manifest_text)?;
        check_scripts(&read.files).map_err(refused)?;
        Ok(PackageInfo {
            path: archive.to_path_buf(),
            sha256,
            checksum_file,
            size,
            content_size: read.content_size,
            manifest,
            manifest_text,
            files: read.files,
        })
    }

    fn read_entries(&self, file: &mut File, hasher: &mut Sha256) -> Result<EntriesRead, ReadError> {
        let reader = HashReader {
            inner: file,
            hasher,
            read: 0,
        };
        let mut archive = tar::Archive::new(GzDecoder::new(reader));
        let mut out = EntriesRead {
            files: Vec::new(),
            manifest: None,
            content_size: 0,
        };
        for entry in archive.entries().map_err(ReadError::Corrupt)? {
            let mut entry = entry.map_err(ReadError::Corrupt)?;
            let raw = entry.path_bytes().into_owned();
            let header = entry.header();
            let entry_type = header.entry_type();
            if entry_type.is_pax_global_extensions() {
                continue;
            }
            let Some(path) = entry_path(&raw).map_err(ReadError::Refused)? else {
                // The root itself (`./`), which `tar -C dir .` writes.
                continue;
            };
            let mode = header.mode().map_err(ReadError::Corrupt)? & 0o7777;
            let size = entry.size();
            let kind = match entry_type {
                tar::EntryType::Regular | tar::EntryType::Continuous => FileKind::File,
                tar::EntryType::Directory => FileKind::Directory,
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    let target = String::from_utf8(target).map_err(|t| {
                        ReadError::Refused(Refusal::NotUtf8(format!(
                            "{path} -> {}",
                            String::from_utf8_lossy(t.as_bytes())
                        )))
                    })?;
                    check_link(&path, &target).map_err(ReadError::Refused)?;
                    FileKind::Symlink { target }
                }
                other => {
                    let kind = match other {
                        tar::EntryType::Char => "character device".to_string(),
                        tar::EntryType::Block => "block device".to_string(),
                        tar::EntryType::Fifo => "fifo".to_string(),
                        tar::EntryType::Link => "hard link".to_string(),
                        tar::EntryType::GNUSparse => "sparse file".to_string(),
                        other => format!("entry of tar type {:?}", other.as_byte() as char),
                    };
                    return Err(ReadError::Refused(Refusal::Unsupported { path, kind }));
                }
            };
            let size = if kind == FileKind::File { size } else { 0 };
            out.content_size = out.content_size.saturating_add(size);
            if out.content_size > self.max_size {
                return Err(ReadError::Refused(Refusal::Oversize {
                    what: "file content",
                    size: out.content_size,
                    partial: true,
                    limit: self.max_size,
                }));
            }
            if path == MANIFEST_FILE && kind == FileKind::File && size <= MAX_MANIFEST_SIZE {
                let mut text = String::new();
                entry
                    .read_to_string(&mut text)
                    .map_err(ReadError::Corrupt)?;
                out.manifest = Some(text);
            }
            out.files.push(PackageFile {
                path,
                kind,
                mode,
                size,
            });
        }
        // Read the gzip stream to its end, so that its checksum and length are checked too.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(ReadError::Corrupt)?;
        Ok(out)
    }
}

/// What reading an archive's entries found.
struct EntriesRead {
    files: Vec<PackageFile>,
    manifest: Option<String>,
    content_size: u64,
}

enum ReadError {
    Refused(Refusal),
    Corrupt(io::Error),
}
