//! The registry on disk: a JSON snapshot written atomically, a backup of the previous one,
//! recovery from a corrupted file, and debounced auto-save on a thread of its own.
//!
//! A save never leaves a torn file, even if the process is killed halfway: the snapshot goes to
//! a temporary file in the same directory, which is flushed to disk and then renamed over the
//! old file (a rename within a directory is atomic), and the directory is flushed so the rename
//! itself survives a power cut. Before the rename the old file is hard-linked (or copied) to
//! `<file>.bak`, itself through a temporary name and a rename, so the backup is never torn
//! either.
//!
//! A save that fails (a full disk, a directory gone) is remembered ([`Registry::last_save_failure`])
//! until one succeeds, and autosave tells its reporter once per distinct failure and once when
//! saves work again ([`Registry::autosave_reporting`]), so that the file's readers can be warned
//! that it is stale without a warning per change.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_listener::{Event as Notify, Listener as _};
use serde::{Deserialize, Serialize};

use crate::registry::error::RegistryError;
use crate::registry::model::{ServiceEntry, Timestamp};
use crate::registry::store::{self, Registry};

/// The snapshot format this version writes and reads. A file with a higher version is refused
/// rather than overwritten.
pub const FORMAT_VERSION: u32 = 1;

/// The registry as written to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The format version, [`FORMAT_VERSION`].
    pub version: u32,
    /// When it was taken.
    pub saved_at: Timestamp,
    /// The sequence number of the last event published before it was taken; a registry loaded
    /// from it goes on numbering from there, so clients never see numbers go backwards.
    pub last_sequence: u64,
    /// Every service, sorted by name.
    pub services: Vec<ServiceEntry>,
}

/// Why the registry could not be saved or loaded. Messages read well after "failed to ..." and
/// name the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// A file operation failed.
    #[error("{doing} {}: {source}", path.display())]
    Io {
        /// What was being done ("write registry file").
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file is not a registry snapshot: bad JSON, or entries that break the registry's
    /// rules (unknown dependencies, a cycle, duplicate names).
    #[error("read registry file {}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line and column for bad JSON.
        reason: String,
    },
    /// The file was written by a newer harness in a format this one cannot read.
    #[error(
        "read registry file {}: format version {found} is newer than this harness reads ({FORMAT_VERSION})",
        path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        found: u32,
    },
    /// The registry could not be turned into JSON.
    #[error("serialize the registry: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// A save of the registry that failed, as [`Registry::last_save_failure`] remembers it until a
/// save succeeds again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveFailure {
    /// The registry file that could not be written.
    pub path: PathBuf,
    /// What failed, with the file and the operating system's error; it reads well after
    /// "failed to ..." (`create temporary registry file /x/.registry.json.tmp-7-1: No space
    /// left on device (os error 28)`).
    pub error: String,
    /// When a save first failed this way.
    pub since: Timestamp,
    /// How many saves in a row have failed this way.
    pub attempts: u64,
    /// What tells this failure from another: the operation and the error, without the names of
    /// temporary files, which differ every time.
    cause: String,
}

impl fmt::Display for SaveFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the registry could not be saved at {}: failed to {}",
            self.path.display(),
            self.error
        )
    }
}

/// What autosave tells its reporter ([`Registry::autosave_reporting`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaveReport {
    /// A save failed, after one that worked or one that failed another way. Saves that go on
    /// failing the same way are not reported again.
    Failed(SaveFailure),
    /// A save worked again, after this failure.
    Recovered(SaveFailure),
}

/// What [`Registry::load_or_new`] did about a corrupted file: it moved the file aside and loaded
/// the backup, or started empty. Show it to the user; the data may be older than they expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadWarning {
    /// The registry file that could not be read.
    pub path: PathBuf,
    /// What was wrong with it.
    pub reason: String,
    /// Where the corrupted file was moved, for a post-mortem.
    pub kept_as: PathBuf,
    /// What was loaded instead.
    pub recovered: Recovery,
}

/// What a registry was loaded from after its file turned out corrupted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The backup, `<file>.bak`.
    Backup(PathBuf),
    /// Nothing: the registry starts empty.
    Empty {
        /// Why the backup could not be used ("no backup", or what was wrong with it).
        backup_problem: String,
    },
}

impl fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "registry file {} is unreadable ({}); kept it as {} and ",
            self.path.display(),
            self.reason,
            self.kept_as.display()
        )?;
        match &self.recovered {
            Recovery::Backup(bak) => write!(f, "loaded the backup {}", bak.display()),
            Recovery::Empty { backup_problem } => {
                write!(f, "started with an empty registry ({backup_problem})")
            }
        }
    }
}

impl Snapshot {
    /// Reads a snapshot file. A missing file is an [`PersistError::Io`] whose source has kind
    /// [`io::ErrorKind::NotFound`].
    pub fn read(path: &Path) -> Result<Snapshot, PersistError> {
        let bytes = fs::read(path).map_err(io_error("read registry file", path))?;
        Snapshot::parse(&bytes, path)
    }

    fn parse(bytes: &[u8], path: &Path) -> Result<Snapshot, PersistError> {
        // The version is read first and on its own, so a file from a newer harness is refused
        // as such even if the rest of its format changed.
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let corrupt = |e: serde_json::Error| PersistError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let Version { version } = serde_json::from_slice(bytes).map_err(corrupt)?;
        if version > FORMAT_VERSION {
            return Err(PersistError::UnsupportedVersion {
                path: path.to_owned(),
                found: version,
            });
        }
        serde_json::from_slice(bytes).map_err(corrupt)
    }

    /// Writes the snapshot to `path` atomically, keeping the file it replaces as
    /// `<path>.bak` (see the module docs). Blocks; from async code use [`Registry::save`].
    pub fn write(&self, path: &Path) -> Result<(), PersistError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(PersistError::Serialize)?;
        bytes.push(b'\n');
        write_atomic(path, &bytes)
    }
}

impl Registry {
    /// A snapshot of the registry as it is now.
    pub async fn snapshot(&self) -> Snapshot {
        let (services, last_sequence, _) = self.read_state().await;
        Snapshot {
            version: FORMAT_VERSION,
            saved_at: Timestamp::now(),
            last_sequence,
            services: services.into_values().collect(),
        }
    }

    /// A registry holding a snapshot's services, checked against the registry's rules.
    pub fn from_snapshot(snapshot: Snapshot) -> Result<Registry, RegistryError> {
        let mut services = std::collections::BTreeMap::new();
        for entry in snapshot.services {
            if services.contains_key(&entry.name) {
                return Err(RegistryError::AlreadyRegistered {
                    service: entry.name,
                });
            }
            services.insert(entry.name.clone(), entry);
        }
        store::check_all(&services)?;
        Ok(Registry::with_state(services, snapshot.last_sequence))
    }

    /// Saves the registry to `path` atomically, keeping the previous file as `<path>.bak`.
    /// The file work runs on the `blocking` thread pool, so this suits any async runtime.
    pub async fn save(&self, path: impl AsRef<Path>) -> Result<(), PersistError> {
        let snapshot = self.snapshot().await;
        let path = path.as_ref().to_owned();
        let (result, path) = blocking::unblock(move || (snapshot.write(&path), path)).await;
        self.note_save(&path, &result);
        result
    }

    /// How the last save failed, if it did: by [`Registry::save`] or by autosave. `None` once
    /// a save works again.
    pub fn last_save_failure(&self) -> Option<SaveFailure> {
        self.save_failure_slot().clone()
    }

    fn save_failure_slot(&self) -> std::sync::MutexGuard<'_, Option<SaveFailure>> {
        self.inner
            .save_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers how a save of `path` went; returns what changed: a failure unlike the last
    /// one, or the end of a failure.
    fn note_save(&self, path: &Path, result: &Result<(), PersistError>) -> Option<SaveReport> {
        let mut slot = self.save_failure_slot();
        let error = match result {
            Ok(()) => return slot.take().map(SaveReport::Recovered),
            Err(error) => error,
        };
        let cause = match error {
            PersistError::Io { doing, source, .. } => format!("{doing}: {source}"),
            other => other.to_string(),
        };
        if let Some(failure) = slot.as_mut()
            && failure.cause == cause
            && failure.path == path
        {
            failure.attempts += 1;
            return None;
        }
        let failure = SaveFailure {
            path: path.to_owned(),
            error: error.to_string(),
            since: Timestamp::now(),
            attempts: 1,
            cause,
        };
        *slot = Some(failure.clone());
        Some(SaveReport::Failed(failure))
    }

    /// Loads a registry saved by [`Registry::save`]; a missing or corrupted file is an error.
    pub async fn load(path: impl AsRef<Path>) -> Result<Registry, PersistError> {
        let path = path.as_ref().to_owned();
        blocking::unblock(move || load_strict(&path)).await
    }

    /// Loads the registry saved at `path`, or an empty one if there is no file.
    ///
    /// A corrupted file is not fatal: it is moved aside to `<path>.corrupt-<unix ms>`, the
    /// backup `<path>.bak` is loaded instead (or, if that is unusable too, an empty registry),
    /// and a [`LoadWarning`] saying so is logged and returned for the caller to show.
    /// Temporary files left by a process killed while saving are removed.
    ///
    /// Errors are what recovery cannot fix: an unreadable file or directory, or a file written
    /// in a newer format (which is left alone).
    pub async fn load_or_new(
        path: impl AsRef<Path>,
    ) -> Result<(Registry, Option<LoadWarning>), PersistError> {
        let path = path.as_ref().to_owned();
        let (registry, warning) = blocking::unblock(move || load_or_new(&path)).await?;
        // Logged here rather than on the pool thread, so the caller's tracing subscriber (and
        // span) sees it.
        if let Some(warning) = &warning {
            tracing::warn!("{warning}");
        }
        Ok((registry, warning))
    }

    /// Saves the registry to `path` whenever it changes, from a thread of its own (never the
    /// caller's runtime), until the returned guard is dropped.
    ///
    /// Changes are coalesced: after a change the thread waits `debounce`, then writes the state
    /// as it is then, so a burst of changes within `debounce` costs one write and the file is
    /// at most about `debounce` behind. It also writes once soon after it starts. Dropping the
    /// guard writes any change not yet saved, then stops the thread; [`AutosaveGuard::stop`]
    /// does the same and says whether that last write worked. A failed write is retried after
    /// the next change, logged once per distinct failure and remembered until a write works
    /// ([`Registry::last_save_failure`]).
    pub fn autosave(
        &self,
        path: impl AsRef<Path>,
        debounce: Duration,
    ) -> Result<AutosaveGuard, PersistError> {
        self.autosave_reporting(path, debounce, |_| {})
    }

    /// [`Registry::autosave`], calling `report` on the autosave thread when a write fails
    /// other than the last one did ([`SaveReport::Failed`]: once, not per change, while the
    /// disk stays full) and when a write works again after failing
    /// ([`SaveReport::Recovered`]). A supervisor uses it to tell its users that the file is
    /// stale. `report` must not block for long: saves wait for it.
    pub fn autosave_reporting(
        &self,
        path: impl AsRef<Path>,
        debounce: Duration,
        mut report: impl FnMut(SaveReport) + Send + 'static,
    ) -> Result<AutosaveGuard, PersistError> {
        let path = path.as_ref().to_owned();
        let shared = Arc::new(AutosaveShared {
            stop: AtomicBool::new(false),
            wake: Notify::new(),
            saves: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let registry = self.clone();
        let thread = std::thread::Builder::new()
            .name("harness-autosave".into())
            .spawn({
                let shared = Arc::clone(&shared);
                let path = path.clone();
                move || autosave_loop(&registry, &path, debounce, &shared, &mut report)
            })
            .map_err(io_error("start the autosave thread for", &path))?;
        Ok(AutosaveGuard {
            shared,
            registry: self.clone(),
            path,
            thread: Some(thread),
        })
    }
}

/// Keeps a registry saved to a file; see [`Registry::autosave`]. Dropping it writes the last
/// state and stops the background thread.
#[must_use = "dropping the guard stops autosave at once"]
pub struct AutosaveGuard {
    shared: Arc<AutosaveShared>,
    registry: Registry,
    path: PathBuf,
    thread: Option<JoinHandle<Result<(), PersistError>>>,
}

struct AutosaveShared {
    stop: AtomicBool,
    /// Ends a debounce wait early, when the guard is dropped.
    wake: Notify,
    saves: AtomicU64,
    failures: AtomicU64,
}

impl AutosaveGuard {
    /// The file it saves to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many times it has written the file so far.
    pub fn saves(&self) -> u64 {
        self.shared.saves.load(Ordering::Acquire)
    }

    /// How many writes have failed so far (each is logged).
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Acquire)
    }
}

impl fmt::Debug for AutosaveGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutosaveGuard")
            .field("path", &self.path)
            .field("saves", &self.saves())
            .field("failures", &self.failures())
            .finish()
    }
}

impl AutosaveGuard {
    /// Stops autosave: writes any change not yet saved, waits for the thread, and returns the
    /// error of that last write if it failed (the file then holds an older state).
    pub fn stop(mut self) -> Result<(), PersistError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), PersistError> {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify(usize::MAX);
        // The thread may be waiting for a change rather than in a debounce.
        self.registry.inner.changed.notify(usize::MAX);
        match self.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(PersistError::Io {
                doing: "autosave registry file",
                path: self.path.clone(),
                source: io::Error::other("the autosave thread panicked"),
            }),
        }
    }
}

impl Drop for AutosaveGuard {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::error!("failed to save the registry's last state: {e}");
        }
    }
}

/// Runs until stopped; returns the error of the last write if the registry's final state could
/// not be saved.
fn autosave_loop(
    registry: &Registry,
    path: &Path,
    debounce: Duration,
    shared: &AutosaveShared,
    report: &mut dyn FnMut(SaveReport),
) -> Result<(), PersistError> {
    // The generation last written, and the one last tried (written or failed). Neither is
    // set at first, so the first pass writes the registry as it is.
    let mut saved: Option<u64> = None;
    let mut tried: Option<u64> = None;
    loop {
        // Listen before looking, so a change or a stop in between still wakes us.
        let change = registry.inner.changed.listen();
        let stopping = shared.stop.load(Ordering::Acquire);
        let generation = registry.generation();
        if saved == Some(generation) && stopping {
            return Ok(());
        }
        // Up to date, or a write of this state just failed: wait for the next change rather
        // than retry in a loop. A stop still gets one more try, below.
        if saved == Some(generation) || (tried == Some(generation) && !stopping) {
            change.wait();
            continue;
        }
        drop(change);
        if !stopping {
            let deadline = Instant::now() + debounce;
            loop {
                let wake = shared.wake.listen();
                if shared.stop.load(Ordering::Acquire) || wake.wait_deadline(deadline).is_none() {
                    break;
                }
            }
        }
        let (services, last_sequence, generation) =
            futures_lite::future::block_on(registry.read_state());
        let snapshot = Snapshot {
            version: FORMAT_VERSION,
            saved_at: Timestamp::now(),
            last_sequence,
            services: services.into_values().collect(),
        };
        tried = Some(generation);
        let result = snapshot.write(path);
        match &result {
            Ok(()) => {
                saved = Some(generation);
                shared.saves.fetch_add(1, Ordering::AcqRel);
            }
            Err(_) => {
                shared.failures.fetch_add(1, Ordering::AcqRel);
            }
        }
        match registry.note_save(path, &result) {
            Some(SaveReport::Failed(failure)) => {
                tracing::warn!("{failure}");
                report(SaveReport::Failed(failure));
            }
            Some(SaveReport::Recovered(failure)) => {
                tracing::info!(
                    "the registry is saved at {} again, after {} failed attempts",
                    failure.path.display(),
                    failure.attempts
                );
                report(SaveReport::Recovered(failure));
            }
            None => {}
        }
        // The final write, made after the stop was asked for, is the last: changes that keep
        // coming from elsewhere must not keep the thread alive.
        if stopping {
            return result;
        }
    }
}

fn load_strict(path: &Path) -> Result<Registry, PersistError> {
    let snapshot = Snapshot::read(path)?;
    Registry::from_snapshot(snapshot).map_err(|e| PersistError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn load_or_new(path: &Path) -> Result<(Registry, Option<LoadWarning>), PersistError> {
    remove_stale_temp_files(path);
    let reason = match load_strict(path) {
        Ok(registry) => return Ok((registry, None)),
        Err(PersistError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok((Registry::new(), None));
        }
        Err(PersistError::Corrupt { reason, .. }) => reason,
        Err(other) => return Err(other),
    };
    let kept_as = corrupt_name(path);
    fs::rename(path, &kept_as).map_err(io_error("move aside corrupted registry file", path))?;
    let bak = backup_path(path);
    let (registry, recovered) = match load_strict(&bak) {
        Ok(registry) => (registry, Recovery::Backup(bak)),
        Err(PersistError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => (
            Registry::new(),
            Recovery::Empty {
                backup_problem: "there is no backup".into(),
            },
        ),
        Err(e) => (
            Registry::new(),
            Recovery::Empty {
                backup_problem: format!("the backup is unusable too: failed to {e}"),
            },
        ),
    };
    let warning = LoadWarning {
        path: path.to_owned(),
        reason,
        kept_as,
        recovered,
    };
    Ok((registry, Some(warning)))
}

/// `<path>.bak`.
pub(crate) fn backup_path(path: &Path) -> PathBuf {
    with_suffix(path, ".bak")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// `<path>.corrupt-<unix ms>`, made unique if that exists already.
fn corrupt_name(path: &Path) -> PathBuf {
    let base = with_suffix(path, &format!(".corrupt-{}", Timestamp::now().as_millis()));
    let mut candidate = base.clone();
    let mut n = 1;
    while candidate.exists() {
        candidate = with_suffix(&base, &format!("-{n}"));
        n += 1;
    }
    candidate
}

/// The directory holding `path` (`.` for a bare file name) and the file's name.
fn split(path: &Path) -> Result<(PathBuf, OsString), PersistError> {
    let name = path.file_name().ok_or_else(|| PersistError::Io {
        doing: "write registry file",
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_owned()))
}

/// The prefix of the temporary files made while saving `name`: `.<name>.tmp-`. The rest is
/// `<pid>-<n>`, so a later load can tell which belong to a process that is gone.
fn temp_prefix(name: &OsString) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp-");
    prefix
}

fn temp_path(dir: &Path, name: &OsString) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut file = temp_prefix(name);
    file.push(format!("{}-{n}", std::process::id()));
    dir.join(file)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let (dir, name) = split(path)?;
    let tmp = temp_path(&dir, &name);
    let result = write_then_rename(path, &dir, &name, &tmp, bytes);
    if result.is_err() {
        // Best effort: the temporary file is ours and useless now.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_then_rename(
    path: &Path,
    dir: &Path,
    name: &OsString,
    tmp: &Path,
    bytes: &[u8],
) -> Result<(), PersistError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(io_error("create temporary registry file", tmp))?;
    file.write_all(bytes)
        .map_err(io_error("write temporary registry file", tmp))?;
    file.sync_all()
        .map_err(io_error("flush temporary registry file", tmp))?;
    drop(file);
    keep_backup(path, dir, name)?;
    fs::rename(tmp, path).map_err(io_error("replace registry file", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("flush directory", dir))
}

/// Makes `<path>.bak` the current `path`, if there is one, without ever leaving a torn backup.
fn keep_backup(path: &Path, dir: &Path, name: &OsString) -> Result<(), PersistError> {
    let bak = backup_path(path);
    let staged = temp_path(dir, name);
    match fs::hard_link(path, &staged) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        // A file system without hard links: copy instead, and flush the copy.
        Err(_) => {
            let copied = fs::copy(path, &staged).and_then(|_| File::open(&staged)?.sync_all());
            match copied {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let _ = fs::remove_file(&staged);
                    return Ok(());
                }
                Err(e) => {
                    let _ = fs::remove_file(&staged);
                    return Err(PersistError::Io {
                        doing: "back up registry file",
                        path: path.to_owned(),
                        source: e,
                    });
                }
            }
        }
    }
    fs::rename(&staged, &bak).map_err(|e| {
        let _ = fs::remove_file(&staged);
        PersistError::Io {
            doing: "back up registry file to",
            path: bak,
            source: e,
        }
    })
}

/// Removes the temporary files a process killed while saving `path` left behind: those whose
/// writer's pid is gone. Best effort; a file it cannot remove is only logged.
fn remove_stale_temp_files(path: &Path) {
    let Ok((dir, name)) = split(path) else {
        return;
    };
    let prefix = temp_prefix(&name);
    let prefix = prefix.as_encoded_bytes();
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(rest) = file.as_encoded_bytes().strip_prefix(prefix) else {
            continue;
        };
        let pid = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok());
        let Some(pid) = pid else { continue };
        if !writer_is_gone(pid) {
            continue;
        }
        if let Err(e) = fs::remove_file(entry.path()) {
            tracing::debug!(
                "failed to remove stale temporary file {}: {e}",
                entry.path().display()
            );
        }
    }
}

fn writer_is_gone(pid: i32) -> bool {
    if u32::try_from(pid).is_ok_and(|p| p == std::process::id()) {
        return false;
    }
    match rustix::process::Pid::from_raw(pid) {
        Some(pid) => rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH),
        None => false,
    }
}

fn io_error(doing: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PersistError {
    let path = path.to_owned();
    move |source| PersistError::Io {
        doing,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::{Endpoint, ServiceState};

    fn sample() -> Registry {
        smol::block_on(async {
            let reg = Registry::new();
            reg.register(ServiceEntry::local_process("db"))
                .await
                .unwrap();
            reg.register(
                ServiceEntry::local_process("api")
                    .with_dependency("db")
                    .with_endpoint(Endpoint::new("main", "127.0.0.1:8080".parse().unwrap())),
            )
            .await
            .unwrap();
            reg.set_state("db", ServiceState::Starting).await.unwrap();
            reg
        })
    }

    #[test]
    fn a_snapshot_round_trips_and_keeps_numbering_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        smol::block_on(async {
            let reg = sample();
            reg.save(&path).await.unwrap();
            let loaded = Registry::load(&path).await.unwrap();
            assert_eq!(loaded.list().await, reg.list().await);
            assert_eq!(loaded.last_sequence(), 3);
            let mut sub = loaded.subscribe();
            loaded.remove("api").await.unwrap();
            assert_eq!(sub.try_recv().unwrap().sequence, 4);
        });
    }

    #[test]
    fn the_second_save_keeps_the_first_as_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        smol::block_on(async {
            let reg = sample();
            reg.save(&path).await.unwrap();
            assert!(!backup_path(&path).exists());
            let first = fs::read(&path).unwrap();
            reg.set_state("db", ServiceState::Running).await.unwrap();
            reg.save(&path).await.unwrap();
            assert_eq!(fs::read(backup_path(&path)).unwrap(), first);
            let names: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(names.len(), 2, "only the file and its backup: {names:?}");
        });
    }

    #[test]
    fn a_newer_format_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let text = r#"{"version": 2, "whatever": "the future holds"}"#;
        fs::write(&path, text).unwrap();
        let err = smol::block_on(Registry::load_or_new(&path)).unwrap_err();
        assert!(
            matches!(err, PersistError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("format version 2"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn a_file_that_breaks_the_rules_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let mut snapshot = smol::block_on(sample().snapshot());
        snapshot.services.retain(|s| s.name == "api");
        snapshot.write(&path).unwrap();
        let err = smol::block_on(Registry::load(&path)).unwrap_err();
        assert!(matches!(err, PersistError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("depends on `db`"), "{err}");
    }

    #[test]
    fn stale_temp_files_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        // A pid that cannot be alive (above the kernel's maximum) and our own (alive, and
        // perhaps mid-save).
        let dead = dir.path().join(".r.json.tmp-2147483646-0");
        let ours = dir
            .path()
            .join(format!(".r.json.tmp-{}-99", std::process::id()));
        let other = dir.path().join(".other.json.tmp-2147483646-0");
        for f in [&dead, &ours, &other] {
            fs::write(f, "partial").unwrap();
        }
        let (reg, warning) = smol::block_on(Registry::load_or_new(&path)).unwrap();
        assert!(warning.is_none());
        assert!(smol::block_on(reg.is_empty()));
        assert!(!dead.exists());
        assert!(ours.exists());
        assert!(other.exists());
    }

    #[test]
    fn autosave_reports_a_failure_once_and_its_end_once() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let path = missing.join("r.json");
        let reg = Registry::new();
        let (tx, reports) = std::sync::mpsc::channel();
        let guard = reg
            .autosave_reporting(&path, Duration::from_millis(5), move |r| {
                let _ = tx.send(r);
            })
            .unwrap();
        let wait_for = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done() {
                assert!(Instant::now() < deadline, "no {what} after 20 s");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // The first write, then one per change, all into a directory that is not there.
        for (n, name) in ["a", "b", "c"].into_iter().enumerate() {
            wait_for("failed write", &|| guard.failures() > n as u64);
            smol::block_on(reg.register(ServiceEntry::local_process(name))).unwrap();
        }
        wait_for("fourth failed write", &|| guard.failures() == 4);
        let failure = reg.last_save_failure().unwrap();
        assert_eq!(failure.path, path);
        assert_eq!(failure.attempts, 4);
        assert!(
            failure.error.starts_with("create temporary registry file ")
                && failure
                    .error
                    .ends_with("No such file or directory (os error 2)"),
            "{failure}"
        );
        assert_eq!(
            reports.try_recv(),
            Ok(SaveReport::Failed(SaveFailure {
                attempts: 1,
                ..failure.clone()
            }))
        );
        assert!(
            reports.try_recv().is_err(),
            "the same failure was reported again"
        );

        fs::create_dir(&missing).unwrap();
        smol::block_on(reg.register(ServiceEntry::local_process("d"))).unwrap();
        wait_for("saved write", &|| guard.saves() == 1);
        guard.stop().unwrap();
        assert_eq!(reports.try_recv(), Ok(SaveReport::Recovered(failure)));
        assert!(reports.try_recv().is_err());
        assert_eq!(reg.last_save_failure(), None);
        let saved = smol::block_on(async { Registry::load(&path).await.unwrap().len().await });
        assert_eq!(saved, 4);
    }

    #[test]
    fn errors_name_the_file() {
        let err = Snapshot::read(Path::new("/nonexistent/dir/r.json")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("read registry file /nonexistent/dir/r.json: "),
            "{err}"
        );
    }
}
