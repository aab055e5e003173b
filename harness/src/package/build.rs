//! Building a package from a directory: a reproducible tar.gz and its `.sha256`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

use super::checksum::{HashWriter, checksum_path, hex, write_checksum_file};
use super::error::{PackageError, Refusal};
use super::manifest::{MANIFEST_FILE, Manifest};
use super::rules::{
    DEFAULT_MAX_SIZE, FileKind, PackageFile, check_link, check_name, check_scripts, stored_mode,
};

/// The environment variable that fixes the time stored for every entry (seconds since the
/// epoch), as reproducible-builds.org defines it. Without it the time is 0.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// The default gzip level: with the zlib-rs backend it packs faster than `tar czf` (gzip -6)
/// and within a few percent of its size (benches/package_build.rs).
pub const DEFAULT_LEVEL: u32 = 6;

/// Progress is reported at least this often, in bytes of content read.
const PROGRESS_STEP: u64 = 4 << 20;

/// What [`PackageBuilder::with_progress`] calls.
type ProgressFn = Box<dyn FnMut(&BuildProgress) + Send>;

/// How far a build has got, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildProgress {
    /// Bytes of file content packed so far.
    pub bytes_done: u64,
    /// Bytes of file content in all.
    pub bytes_total: u64,
    /// Entries packed so far.
    pub files_done: usize,
    /// Entries in all.
    pub files_total: usize,
}

/// A package that was built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltPackage {
    /// The archive.
    pub path: PathBuf,
    /// Where its checksum was written: the archive's path with `.sha256` added.
    pub checksum_path: PathBuf,
    /// The sha256 of the archive, in lowercase hex.
    pub sha256: String,
    /// The archive's size in bytes.
    pub size: u64,
    /// Bytes of file content packed (before compression).
    pub content_size: u64,
    /// The manifest.
    pub manifest: Manifest,
    /// The entries, in archive order, with their stored modes.
    pub files: Vec<PackageFile>,
    /// How long the build took.
    pub elapsed: Duration,
}

/// Builds a package from a directory with the defaults: see [`PackageBuilder`].
pub fn build(
    dir: impl AsRef<Path>,
    output: impl AsRef<Path>,
) -> Result<BuiltPackage, PackageError> {
    PackageBuilder::new(dir).build(output)
}

/// Builds a reproducible package: the same directory gives the same bytes, whatever the
/// files' times, owners and umask.
///
/// Entries are sorted by path; each has the time from `SOURCE_DATE_EPOCH` (or 0), owner 0:0
/// with no names, and the mode from [`stored_mode`]; the gzip header has no time or name.
/// The archive is written to a temporary file beside `output` and renamed over it, so a
/// failed build leaves nothing behind; then `output.sha256` is written the same way.
///
/// ```no_run
/// use harness::package::PackageBuilder;
/// # fn main() -> Result<(), harness::package::PackageError> {
/// let built = PackageBuilder::new("packages/load-generator")
///     .with_max_size(64 << 20)
///     .build("target/load-generator.tar.gz")?;
/// println!("{}  {}", built.sha256, built.path.display());
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until build() is called"]
pub struct PackageBuilder {
    dir: PathBuf,
    max_size: u64,
    mtime: u64,
    level: u32,
    progress: Option<ProgressFn>,
}

impl PackageBuilder {
    /// A builder for the package in `dir`, with the time from `SOURCE_DATE_EPOCH` (or 0), the
    /// size limit [`DEFAULT_MAX_SIZE`] and gzip level [`DEFAULT_LEVEL`].
    pub fn new(dir: impl AsRef<Path>) -> Self {
        let mtime = std::env::var(SOURCE_DATE_EPOCH)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Self {
            dir: dir.as_ref().to_path_buf(),
            max_size: DEFAULT_MAX_SIZE,
            mtime,
            level: DEFAULT_LEVEL,
            progress: None,
        }
    }

    /// Refuses a package with more than `bytes` of file content.
    pub fn with_max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }

    /// The time stored for every entry, in seconds since the epoch.
    pub fn with_mtime(mut self, seconds: u64) -> Self {
        self.mtime = seconds;
        self
    }

    /// The gzip level, 0 (store) to 9 (smallest).
    pub fn with_level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// Calls `report` as the build goes: after each entry, and every few MiB within large
    /// files.
    pub fn with_progress(mut self, report: impl FnMut(&BuildProgress) + Send + 'static) -> Self {
        self.progress = Some(Box::new(report));
        self
    }

    /// Checks the directory, then writes the archive to `output` and its checksum to
    /// `output.sha256`.
    pub fn build(mut self, output: impl AsRef<Path>) -> Result<BuiltPackage, PackageError> {
        let started = Instant::now();
        let output = output.as_ref();
        let refused = |refusal| PackageError::Refused {
            action: "build package from",
            package: self.dir.clone(),
            refusal,
        };
        let meta = fs::metadata(&self.dir)
            .map_err(PackageError::io("read package directory", &self.dir))?;
        if !meta.is_dir() {
            return Err(PackageError::io("read package directory", &self.dir)(
                io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        let out_dir = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let canonical_out = fs::canonicalize(&out_dir)
            .map_err(PackageError::io("find output directory", &out_dir))?;
        let canonical_dir = fs::canonicalize(&self.dir)
            .map_err(PackageError::io("read package directory", &self.dir))?;
        if canonical_out.starts_with(&canonical_dir) {
            return Err(refused(Refusal::OutputInside(output.to_path_buf())));
        }

        let mut entries = Vec::new();
        walk(&self.dir, "", &mut entries).map_err(|e| match e {
            WalkError::Io(path, source) => PackageError::Io {
                action: "read",
                path,
                source,
            },
            WalkError::Refused(refusal) => refused(refusal),
        })?;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let content_size: u64 = entries.iter().map(|e| e.size).sum();
        if content_size > self.max_size {
            return Err(refused(Refusal::Oversize {
                what: "file content",
                size: content_size,
                partial: false,
                limit: self.max_size,
            }));
        }
        match entries.iter().find(|e| e.path == MANIFEST_FILE) {
            Some(e) if e.kind == FileKind::File => {}
            _ => return Err(refused(Refusal::MissingManifest)),
        }
        let manifest_path = self.dir.join(MANIFEST_FILE);
        let text =
            fs::read_to_string(&manifest_path).map_err(PackageError::io("read", &manifest_path))?;
        let manifest = Manifest::from_yaml(&manifest_path, &text)?;
        check_scripts(&entries).map_err(refused)?;

        let mut temp = tempfile::Builder::new()
            .prefix(".harness-package-")
            .suffix(".tmp")
            .tempfile_in(&out_dir)
            .map_err(PackageError::io("create a temporary file in", &out_dir))?;
        let mut hasher = Sha256::new();
        let files = self
            .write_archive(
                &entries,
                content_size,
                (temp.as_file_mut(), output),
                &mut hasher,
            )
            .map_err(|(path, source)| PackageError::Io {
                action: "write package from",
                path,
                source,
            })?;
        // No fsync: the rename makes a failed build leave nothing behind, which is what
        // matters here; after a power loss the checksum file catches a damaged archive, and
        // an fsync would cost more than the whole build of a small package.
        temp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(PackageError::io("write package", output))?;
        let size = temp
            .as_file()
            .metadata()
            .map_err(PackageError::io("write package", output))?
            .len();
        temp.persist(output)
            .map_err(|e| PackageError::io("write package", output)(e.error))?;
        let sha256 = hex(&hasher.finalize());
        let checksum_path = checksum_path(output);
        write_checksum_file(&checksum_path, &sha256, output)
            .map_err(PackageError::io("write checksum", &checksum_path))?;
        Ok(BuiltPackage {
            path: output.to_path_buf(),
            checksum_path,
            sha256,
            size,
            content_size,
            manifest,
            files,
            elapsed: started.elapsed(),
        })
    }

    /// Writes the tar.gz; an error names the file it was reading or the output.
    fn write_archive(
        &mut self,
        entries: &[PackageFile],
        bytes_total: u64,
        (out, out_path): (&mut File, &Path),
        hasher: &mut Sha256,
    ) -> Result<Vec<PackageFile>, (PathBuf, io::Error)> {
        let gzip = GzBuilder::new().write(
            HashWriter::new(BufWriter::with_capacity(1 << 20, out), hasher),
            Compression::new(self.level),
        );
        let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, gzip));
        let mut progress = BuildProgress {
            bytes_done: 0,
            bytes_total,
            files_done: 0,
            files_total: entries.len(),
        };
        let mut files = Vec::with_capacity(entries.len());
        for entry in entries {
            let mode = stored_mode(&entry.kind, entry.mode);
            let mut header = tar::Header::new_gnu();
            header.set_mode(mode);
            header.set_mtime(self.mtime);
            header.set_uid(0);
            header.set_gid(0);
            // new_gnu() leaves the owner names empty.
            let result = match &entry.kind {
                FileKind::Directory => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    tar.append_data(&mut header, format!("{}/", entry.path), io::empty())
                }
                FileKind::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    tar.append_link(&mut header, &entry.path, target)
                }
                FileKind::File => {
                    let source = self.dir.join(&entry.path);
                    let file = File::open(&source).map_err(|e| (source.clone(), e))?;
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(entry.size);
                    let reader = Counted {
                        inner: file.take(entry.size),
                        read: 0,
                        progress: &mut progress,
                        report: &mut self.progress,
                    };
                    let mut reader = reader;
                    let result = tar.append_data(&mut header, &entry.path, &mut reader);
                    if result.is_ok() && reader.read != entry.size {
                        return Err((
                            source,
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the file shrank while it was being packed",
                            ),
                        ));
                    }
                    result
                }
            };
            result.map_err(|e| (self.dir.join(&entry.path), e))?;
            progress.files_done += 1;
            if let Some(report) = self.progress.as_deref_mut() {
                report(&progress);
            }
            files.push(PackageFile {
                mode,
                ..entry.clone()
            });
        }
        let finish = |e| (out_path.to_path_buf(), e);
        let buffered = tar.into_inner().map_err(finish)?;
        let gzip = buffered.into_inner().map_err(|e| finish(e.into_error()))?;
        let mut hashed = gzip.finish().map_err(finish)?;
        hashed.flush().map_err(finish)?;
        Ok(files)
    }
}

/// A reader that counts what it reads and reports progress every [`PROGRESS_STEP`] bytes.
struct Counted<'a, R> {
    inner: R,
    read: u64,
    progress: &'a mut BuildProgress,
    report: &'a mut Option<ProgressFn>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        let before = self.progress.bytes_done;
        self.progress.bytes_done += n as u64;
        if before / PROGRESS_STEP != self.progress.bytes_done / PROGRESS_STEP
            && let Some(report) = self.report
        {
            report(self.progress);
        }
        Ok(n)
    }
}

enum WalkError {
    Io(PathBuf, io::Error),
    Refused(Refusal),
}

/// Collects the entries below `dir` (`prefix` is their path from the package root), without
/// following links, refusing what a package may not hold.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<PackageFile>) -> Result<(), WalkError> {
    let read = fs::read_dir(dir).map_err(|e| WalkError::Io(dir.to_path_buf(), e))?;
    for item in read {
        let item = item.map_err(|e| WalkError::Io(dir.to_path_buf(), e))?;
        let full = item.path();
        let name = item.file_name();
        let Some(name) = name.to_str() else {
            return Err(WalkError::Refused(Refusal::NotUtf8(format!(
                "{prefix}{}",
                name.to_string_lossy()
            ))));
        };
        let path = format!("{prefix}{name}");
        check_name(&path).map_err(WalkError::Refused)?;
        let meta = fs::symlink_metadata(&full).map_err(|e| WalkError::Io(full.clone(), e))?;
        let file_type = meta.file_type();
        let (kind, size) = if file_type.is_dir() {
            (FileKind::Directory, 0)
        } else if file_type.is_file() {
            (FileKind::File, meta.len())
        } else if file_type.is_symlink() {
            let target = fs::read_link(&full).map_err(|e| WalkError::Io(full.clone(), e))?;
            let Some(target) = target.to_str() else {
                return Err(WalkError::Refused(Refusal::NotUtf8(format!(
                    "{path} -> {}",
                    target.display()
                ))));
            };
            check_link(&path, target).map_err(WalkError::Refused)?;
            (
                FileKind::Symlink {
                    target: target.to_string(),
                },
                0,
            )
        } else {
            let kind = if file_type.is_block_device() {
                "block device"
            } else if file_type.is_char_device() {
                "character device"
            } else if file_type.is_fifo() {
                "fifo"
            } else if file_type.is_socket() {
                "socket"
            } else {
                "special file"
            };
            return Err(WalkError::Refused(Refusal::Unsupported {
                path,
                kind: kind.to_string(),
            }));
        };
        let is_dir = kind == FileKind::Directory;
        out.push(PackageFile {
            path: path.clone(),
            kind,
            mode: meta.mode() & 0o7777,
            size,
        });
        if is_dir {
            walk(&full, &format!("{path}/"), out)?;
        }
    }
    Ok(())
}
