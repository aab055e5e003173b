//! `<run dir>/registry.error`: why the supervisor cannot save the run's registry, for
//! `harness status` to warn that `registry.json` is stale. The supervisor writes it when saves
//! begin to fail and removes it when one works again.
//!
//! Saves fail mostly because the disk is full, and then a new file cannot be written either.
//! So the supervisor sets space aside at its start, while there is some, in a hidden spare
//! record (`.registry.error.spare`); a failure is written into it and the spare is renamed
//! into place (a rename needs no space), and once saves work again it is renamed back.

use std::fs::{self, File};
use std::io::{self, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use harness::registry::SaveFailure;

/// The record's name in the run directory.
const RECORD: &str = "registry.error";
/// The spare record, holding the space set aside for the next failure.
const SPARE: &str = ".registry.error.spare";
/// The space set aside: more than a record takes.
const RESERVE: u64 = 4096;

/// A failed save as `harness status` reads it from the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveFailureRecord {
    /// The registry file that could not be written.
    pub path: PathBuf,
    /// What failed, if the record says (it reads after "failed to ...").
    pub error: Option<String>,
}

/// Sets space aside for a record in `dir`. Best effort: without it a record is still tried.
pub fn reserve(dir: &Path) {
    if let Ok(spare) = File::create(dir.join(SPARE)) {
        let _ = harness::sys::reserve_space(&spare, RESERVE);
    }
}

/// Writes the record of `failure` into `dir`, into the space set aside if there is some.
pub fn record(dir: &Path, failure: &SaveFailure) -> io::Result<()> {
    let text = format!(
        "path={}\nerror={}\nsince_ms={}\n",
        failure.path.display(),
        failure.error.replace('\n', " "),
        failure.since.as_millis()
    );
    let (record, spare) = (dir.join(RECORD), dir.join(SPARE));
    // Rewritten in place, so the space the file holds is used again rather than asked for.
    let target = if record.exists() { &record } else { &spare };
    let mut file = File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)?;
    file.rewind()?;
    file.write_all(text.as_bytes())?;
    // Shorter than what it replaces: the page it is in stays allocated.
    file.set_len(text.len() as u64)?;
    drop(file);
    if target == &spare {
        fs::rename(&spare, &record)?;
    }
    Ok(())
}

/// Removes the record from `dir`, keeping its space for the next failure.
pub fn clear(dir: &Path) {
    let _ = fs::rename(dir.join(RECORD), dir.join(SPARE));
}

/// The record in `dir`, if saves are failing. One written without space to write its text in
/// is still a failure, of unknown cause.
pub fn read(dir: &Path) -> Option<SaveFailureRecord> {
    let text = match fs::read_to_string(dir.join(RECORD)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(_) => String::new(),
    };
    let mut found = SaveFailureRecord {
        path: dir.join("registry.json"),
        error: None,
    };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("path", path)) => found.path = PathBuf::from(path),
            Some(("error", error)) => found.error = Some(error.to_string()),
            _ => {}
        }
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        assert_eq!(read(dir), None);
        // A failure to save into a directory that is gone.
        let registry = harness::registry::Registry::new();
        let path = dir.join("gone").join("registry.json");
        smol::block_on(registry.save(&path)).unwrap_err();
        let failure = registry.last_save_failure().unwrap();
        reserve(dir);
        record(dir, &failure).unwrap();
        let found = read(dir).unwrap();
        assert_eq!(found.path, path);
        assert_eq!(found.error.as_deref(), Some(failure.error.as_str()));
        clear(dir);
        assert_eq!(read(dir), None);
        // The space set aside is used again, in place.
        record(dir, &failure).unwrap();
        assert_eq!(read(dir), Some(found));
        assert!(!dir.join(SPARE).exists());
    }

    #[test]
    fn an_empty_record_is_a_failure_of_unknown_cause() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(RECORD), "").unwrap();
        let found = read(dir.path()).unwrap();
        assert_eq!(found.path, dir.path().join("registry.json"));
        assert_eq!(found.error, None);
    }
}
