//! Verifying a package archive: the checks deployment makes before it extracts anything.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::GzDecoder;
use sha2::{Digest, Sha256};

use super::checksum::{HashReader, checksum_path, hex, parse_checksum};
use super::error::{PackageError, Refusal};
use super::manifest::{MANIFEST_FILE, Manifest};
use super::rules::{
    DEFAULT_MAX_SIZE, FileKind, PackageFile, check_link, check_mode, check_name, check_scripts,
    check_tree, entry_path,
};
use super::tar_guard::{self, TarGuard};

/// The default limit on the number of entries of an archive, extension headers included.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

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
    /// The sha256 of each regular file's content, by path: what the host checks it extracted.
    pub file_sha256: BTreeMap<String, String>,
}

/// Verifies an archive with the default size limit: see [`Verifier`].
pub fn verify(archive: impl AsRef<Path>) -> Result<PackageInfo, PackageError> {
    Verifier::new().verify(archive)
}

/// Checks a package archive as deployment does, before anything is extracted: the checksum
/// file beside it (if there is one) matches; the archive is one gzip member holding one tar
/// archive that ends with its end-of-archive blocks, with nothing after either; its entries
/// are all relative, without `..`, not below a link or a file, not repeated, without control
/// characters in their names, without setuid, setgid or sticky bits, not named `.harness-*` at
/// the root, and only regular files, directories and links that stay inside; its extension
/// headers (GNU long names, pax) are small and unambiguous; its content and its whole tar
/// stream are within the size limit, its entries within the entry limit; the manifest is
/// valid; the start and stop scripts are there and executable.
///
/// A refused archive costs little: headers are checked as they stream past, before anything
/// they claim is read.
#[derive(Clone, Debug)]
#[must_use = "a verifier does nothing until verify() is called"]
pub struct Verifier {
    max_size: u64,
    max_entries: u64,
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
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }

    /// Refuses archives with more than `bytes` of content, a tar stream (headers and padding
    /// included) longer than that, or larger than that compressed.
    pub fn with_max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }

    /// Refuses archives with more than `entries` entries, extension headers included
    /// (default [`DEFAULT_MAX_ENTRIES`]).
    pub fn with_max_entries(mut self, entries: u64) -> Self {
        self.max_entries = entries;
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
                ReadError::Corrupt(e) => refused(
                    tar_guard::refusal_of(&e).unwrap_or_else(|| Refusal::Corrupt(e.to_string())),
                ),
            })?;
        // The decoders read to the end of the file (anything after the gzip stream is refused);
        // hash whatever is left all the same, so the sum covers the file.
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
            file_sha256: read.file_sha256,
        })
    }

    fn read_entries(&self, file: &mut File, hasher: &mut Sha256) -> Result<EntriesRead, ReadError> {
        let reader = BufReader::with_capacity(
            CHUNK,
            HashReader {
                inner: file,
                hasher,
                read: 0,
            },
        );
        let limits = tar_guard::Limits {
            stream: self.max_size,
            entries: self.max_entries,
        };
        let mut archive = tar::Archive::new(TarGuard::new(GzDecoder::new(reader), limits));
        let mut out = EntriesRead {
            files: Vec::new(),
            manifest: None,
            content_size: 0,
            file_sha256: BTreeMap::new(),
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
                // The root itself (`./`), which `tar -C dir .` writes; anything but a directory
                // there is what GNU tar would try to write over the release directory.
                if entry_type != tar::EntryType::Directory {
                    return Err(ReadError::Refused(Refusal::Corrupt(format!(
                        "an entry named {:?} (the package root) is not a directory",
                        String::from_utf8_lossy(&raw)
                    ))));
                }
                continue;
            };
            check_name(&path).map_err(ReadError::Refused)?;
            // GNU tar on the host fails on numeric fields it cannot read (it takes an empty
            // one as 0); so does verify.
            let raw_header = header.as_bytes();
            for (field, range, value) in [
                ("mtime", 136..148, header.mtime()),
                ("uid", 108..116, header.uid()),
                ("gid", 116..124, header.gid()),
            ] {
                let raw_field = &raw_header[range];
                if tar_guard::ambiguous_base256(raw_field[0])
                    || (value.is_err() && raw_field.iter().any(|b| *b != 0))
                {
                    return Err(ReadError::Refused(Refusal::Corrupt(format!(
                        "entry {path} has an unreadable {field} field"
                    ))));
                }
            }
            let mode = header.mode().map_err(ReadError::Corrupt)? & 0o7777;
            check_mode(&path, mode).map_err(ReadError::Refused)?;
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
            // tar-rs skips a directory's or link's content by its size, GNU tar reads on at the
            // next block: what one skips, the other would take for an entry.
            if kind != FileKind::File && size != 0 {
                return Err(ReadError::Refused(Refusal::Corrupt(format!(
                    "entry {path} is a directory or link with {size} bytes of content, which tar \
                     implementations skip differently"
                ))));
            }
            out.content_size = out.content_size.saturating_add(size);
            if out.content_size > self.max_size {
                return Err(ReadError::Refused(Refusal::Oversize {
                    what: "file content",
                    size: out.content_size,
                    partial: true,
                    limit: self.max_size,
                }));
            }
            if kind == FileKind::File {
                let mut digest = Sha256::new();
                let mut manifest = (path == MANIFEST_FILE && size <= MAX_MANIFEST_SIZE)
                    .then(|| Vec::with_capacity(size as usize));
                let mut buf = vec![0u8; CHUNK.min(size.max(1) as usize)];
                loop {
                    let n = entry.read(&mut buf).map_err(ReadError::Corrupt)?;
                    if n == 0 {
                        break;
                    }
                    digest.update(&buf[..n]);
                    if let Some(text) = &mut manifest {
                        text.extend_from_slice(&buf[..n]);
                    }
                }
                if let Some(text) = manifest {
                    let text = String::from_utf8(text).map_err(|_| {
                        ReadError::Corrupt(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "manifest.yaml is not UTF-8",
                        ))
                    })?;
                    out.manifest = Some(text);
                }
                out.file_sha256
                    .insert(path.clone(), hex(&digest.finalize()));
            }
            out.files.push(PackageFile {
                path,
                kind,
                mode,
                size,
            });
        }
        // Read the tar stream and then the gzip stream to their ends, so that the end of the
        // archive, the gzip checksum and its length are checked too; then nothing may follow.
        let mut gzip = archive.into_inner().finish().map_err(ReadError::Corrupt)?;
        io::copy(&mut gzip, &mut io::sink()).map_err(ReadError::Corrupt)?;
        let mut rest = gzip.into_inner();
        let after = rest.fill_buf().map_err(ReadError::Corrupt)?;
        if !after.is_empty() {
            let what = if after.starts_with(&[0x1f, 0x8b]) {
                "a second gzip member after the first"
            } else {
                "bytes after its gzip stream"
            };
            return Err(ReadError::Refused(Refusal::TrailingData(what.to_string())));
        }
        Ok(out)
    }
}

/// The size of each read of an archive.
const CHUNK: usize = 256 << 10;

/// What reading an archive's entries found.
struct EntriesRead {
    files: Vec<PackageFile>,
    manifest: Option<String>,
    content_size: u64,
    file_sha256: BTreeMap<String, String>,
}

enum ReadError {
    Refused(Refusal),
    Corrupt(io::Error),
}
