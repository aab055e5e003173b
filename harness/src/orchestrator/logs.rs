//! Each service's output: a bounded in-memory tail, a file in the run's state directory that
//! rotates at a size limit, and followers that receive new lines as they arrive.
//!
//! Memory stays bounded however fast a service writes: the tail holds [`DEFAULT_LOG_TAIL`]
//! lines, a follower's queue [`FOLLOWER_CAPACITY`] lines (a follower that falls further behind
//! misses lines and is told how many), and the reader that feeds a [`LogBuffer`] waits for it,
//! so a service that writes faster than its log is written blocks on its pipe.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::exec::OutputStream;
use crate::topology::{LogLimits, LogPattern, parse_size};

/// How many lines of each service's output are kept in memory.
pub const DEFAULT_LOG_TAIL: usize = 1000;

/// How many bytes of lines the in-memory tail holds at most, whatever its count of lines: a
/// service that writes long lines (up to 64 KiB each, where they are cut) keeps fewer.
pub const MAX_TAIL_BYTES: usize = 4 << 20;

/// How many lines wait for a follower before it misses some.
pub const FOLLOWER_CAPACITY: usize = 4096;

/// The largest a log file grows by default before it is rotated: 64 MiB.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 64 << 20;

/// How many files a log is kept in by default: the live one and two rotated ones.
pub const DEFAULT_LOG_MAX_FILES: u32 = 3;

/// The run's `max_size` for services whose topology sets none, such as `16M`.
pub const LOG_MAX_SIZE_ENV: &str = "HARNESS_LOG_MAX_SIZE";

/// The run's `max_files` for services whose topology sets none.
pub const LOG_MAX_FILES_ENV: &str = "HARNESS_LOG_MAX_FILES";

/// The limits a service's log file gets: what its topology sets, else what the run sets
/// ([`LOG_MAX_SIZE_ENV`], [`LOG_MAX_FILES_ENV`]), else the defaults. An environment variable
/// that is set but not valid is an error naming it.
pub fn effective_log_limits(service: &LogLimits) -> Result<(u64, u32), String> {
    limits_from(service, |name| std::env::var(name).ok())
}

/// [`effective_log_limits`] with the run's variables read by `env`.
fn limits_from(
    service: &LogLimits,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(u64, u32), String> {
    let from_env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let max_size = match (service.max_size, from_env(LOG_MAX_SIZE_ENV)) {
        (Some(size), _) => size,
        (None, Some(text)) => match parse_size(&text) {
            Ok(size) if size >= LogLimits::MIN_SIZE => size,
            Ok(size) => {
                return Err(format!(
                    "{LOG_MAX_SIZE_ENV}={text} is {size} bytes; it must be at least {} (`1K`)",
                    LogLimits::MIN_SIZE
                ));
            }
            Err(e) => return Err(format!("{LOG_MAX_SIZE_ENV}={text}: {e}")),
        },
        (None, None) => DEFAULT_LOG_MAX_SIZE,
    };
    let max_files = match (service.max_files, from_env(LOG_MAX_FILES_ENV)) {
        (Some(files), _) => files,
        (None, Some(text)) => match text.trim().parse::<u32>() {
            Ok(files) if (1..=LogLimits::MAX_FILES).contains(&files) => files,
            _ => {
                return Err(format!(
                    "{LOG_MAX_FILES_ENV}={text}: expected a count of files from 1 to {}",
                    LogLimits::MAX_FILES
                ));
            }
        },
        (None, None) => DEFAULT_LOG_MAX_FILES,
    };
    Ok((max_size, max_files))
}

/// The files a log at `path` is kept in, oldest first: `path.N`, ..., `path.1`, then `path`
/// (those that exist).
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=LogLimits::MAX_FILES)
        .map(|n| rotated(path, n))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}

/// The last `lines` lines of the log at `path`, across its rotated files: reads files from
/// the newest on until it has enough, so it holds at most those files in memory. A missing
/// log is empty.
pub fn read_log_tail(path: &Path, lines: usize) -> std::io::Result<Vec<u8>> {
    let mut text: Vec<u8> = Vec::new();
    for file in log_files(path).iter().rev() {
        let mut older = match std::fs::read(file) {
            Ok(bytes) => bytes,
            // Rotated away since it was listed: the next older one has its lines.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !older.is_empty() && !older.ends_with(b"\n") {
            older.push(b'\n');
        }
        older.extend_from_slice(&text);
        text = older;
        if text.iter().filter(|&&b| b == b'\n').count() > lines {
            break;
        }
    }
    Ok(last_lines(&text, lines).to_vec())
}

/// The last `lines` lines of `text`.
fn last_lines(text: &[u8], lines: usize) -> &[u8] {
    if lines == 0 {
        return &[];
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut start = body.len();
    for _ in 0..lines {
        match body[..start].iter().rposition(|&b| b == b'\n') {
            Some(newline) => start = newline,
            None => return text,
        }
    }
    &text[start + 1..]
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// A log file that is rotated before it would grow past `max_size`.
struct LogFile {
    path: PathBuf,
    writer: BufWriter<File>,
    /// Bytes in the live file.
    written: u64,
    max_size: u64,
    max_files: u32,
}

impl LogFile {
    fn open(path: &Path, max_size: u64, max_files: u32) -> std::io::Result<Self> {
        let file = File::options().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        let mut log = LogFile {
            path: path.to_path_buf(),
            writer: BufWriter::with_capacity(64 << 10, file),
            written,
            max_size,
            max_files,
        };
        // Rotated files beyond the limit (an earlier run kept more) are removed.
        for n in max_files..=LogLimits::MAX_FILES {
            let _ = std::fs::remove_file(rotated(path, n));
        }
        if log.written >= max_size {
            log.rotate()?;
        }
        Ok(log)
    }

    /// Writes one line; a line is never split between two files, so a file holds at most
    /// `max_size` bytes or one line.
    fn write_line(&mut self, text: &str) -> std::io::Result<()> {
        let len = text.len() as u64 + 1;
        if self.written > 0 && self.written + len > self.max_size {
            self.rotate()?;
        }
        self.writer.write_all(text.as_bytes())?;
        self.writer.write_all(b"\n")?;
        self.written += len;
        Ok(())
    }

    /// Moves the live file to `path.1` and puts an empty one at `path`, so that `path` never
    /// goes missing: a reader (`harness logs`) opening it mid-rotation finds one file or the
    /// other. The old file is linked as `path.1`, and a new one renamed over `path`; where
    /// links cannot be made, the file is renamed and `path` is missing for a moment.
    fn replace_with_empty(&self) -> std::io::Result<File> {
        let older = rotated(&self.path, 1);
        // Kept in two files, the older one is replaced.
        match std::fs::remove_file(&older) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        if std::fs::hard_link(&self.path, &older).is_err() {
            std::fs::rename(&self.path, &older)?;
            return File::options().create(true).append(true).open(&self.path);
        }
        // A hidden name beside the log, which no reader takes for one of its files.
        let mut name = std::ffi::OsString::from(".");
        name.push(self.path.file_name().unwrap_or_default());
        name.push(".new");
        let new = self.path.with_file_name(name);
        let file = File::options()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&new)?;
        std::fs::rename(&new, &self.path)?;
        Ok(file)
    }

    /// `path.N-1` becomes `path.N` (the oldest is replaced), ..., `path` becomes `path.1`, and
    /// a new `path` begins; with one file, the file starts again empty.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.writer.flush()?;
        let file = if self.max_files == 1 {
            File::options()
                .write(true)
                .truncate(true)
                .open(&self.path)?
        } else {
            for n in (1..self.max_files - 1).rev() {
                match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            self.replace_with_empty()?
        };
        self.writer = BufWriter::with_capacity(64 << 10, file);
        self.written = 0;
        Ok(())
    }
}

/// A follower's queue, and how many lines it missed since it last kept up.
struct Follower {
    tx: async_channel::Sender<LogLine>,
    dropped: u64,
}

impl Follower {
    /// Sends `line`, after a line saying how many it missed if it did; false once the
    /// follower is gone.
    fn send(&mut self, line: &LogLine) -> bool {
        use async_channel::TrySendError;
        if self.tx.is_full() {
            // Counted without building the line or the note: a follower that does not read
            // costs the writer next to nothing.
            self.dropped += 1;
            return !self.tx.is_closed();
        }
        if self.dropped > 0 {
            let note = LogLine {
                service: line.service.clone(),
                stream: OutputStream::Stderr,
                text: format!(
                    "harness: {} lines of {} not shown here: this reader fell behind (the log \
                     file has them)",
                    self.dropped, line.service
                ),
            };
            match self.tx.try_send(note) {
                Ok(()) => self.dropped = 0,
                Err(TrySendError::Full(_)) => {
                    self.dropped += 1;
                    return true;
                }
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        match self.tx.try_send(line.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

/// How many lines a failure report shows.
pub const FAILURE_TAIL: usize = 20;

/// One line a service wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The service that wrote it.
    pub service: String,
    /// Standard output or standard error.
    pub stream: OutputStream,
    /// The line, without its line ending.
    pub text: String,
}

/// A service's log: the last lines in memory, every line in a file, and followers. Executors
/// feed it with [`LogBuffer::push`]; the manager reads it.
#[derive(Clone)]
pub struct LogBuffer {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    service: String,
    capacity: usize,
    tail: VecDeque<LogLine>,
    /// The bytes of text in `tail`, kept at most [`MAX_TAIL_BYTES`].
    tail_bytes: usize,
    file: Option<LogFile>,
    followers: Vec<Follower>,
    /// The `log:` health check's pattern, and whether a line since the last start matched it.
    watch: Option<(LogPattern, bool)>,
}

impl LogBuffer {
    pub(crate) fn new(service: &str, capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                service: service.to_string(),
                capacity,
                tail: VecDeque::new(),
                tail_bytes: 0,
                file: None,
                followers: Vec::new(),
                watch: None,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends every later line to `path` (created, or appended to across restarts), rotated
    /// before it grows past `max_size` bytes and kept in at most `max_files` files.
    pub(crate) fn write_to(
        &self,
        path: &Path,
        max_size: u64,
        max_files: u32,
    ) -> std::io::Result<()> {
        let file = LogFile::open(path, max_size, max_files)?;
        self.lock().file = Some(file);
        Ok(())
    }

    /// Writes what [`LogBuffer::push_buffered`] left in memory to the file.
    pub(crate) fn flush(&self) {
        if let Some(file) = &mut self.lock().file {
            let _ = file.writer.flush();
        }
    }

    /// Stops writing the file (before the state directory is removed).
    pub(crate) fn close_file(&self) {
        self.lock().file = None;
    }

    /// Watches for `pattern` from now on: [`LogBuffer::matched`] says whether a line did.
    pub(crate) fn watch(&self, pattern: Option<LogPattern>) {
        self.lock().watch = pattern.map(|p| (p, false));
    }

    /// Whether a line matched the watched pattern since [`LogBuffer::watch`].
    pub(crate) fn matched(&self) -> bool {
        self.lock().watch.as_ref().is_some_and(|(_, m)| *m)
    }

    /// Adds one line the service wrote, written to the file at once.
    pub fn push(&self, stream: OutputStream, text: String) {
        self.push_buffered(stream, text);
        self.flush();
    }

    /// Adds one line, leaving it in the file's buffer until [`LogBuffer::flush`] (or until
    /// the buffer fills): for a reader that flushes when it has nothing more to read.
    pub(crate) fn push_buffered(&self, stream: OutputStream, text: String) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some((pattern, matched)) = &mut inner.watch
            && !*matched
        {
            *matched = pattern.is_match(&text);
        }
        if let Some(file) = &mut inner.file
            && let Err(e) = file.write_line(&text)
        {
            // A full disk must not stop the service's output from being read; the tail and the
            // followers still get the line. A file that cannot be rotated is not written on,
            // so it cannot grow past its limit.
            if file.written >= file.max_size {
                tracing::warn!(
                    service = %inner.service, path = %file.path.display(), error = %e,
                    "the log file could not be rotated; no more lines are written to it"
                );
                inner.file = None;
            }
        }
        let line = LogLine {
            service: inner.service.clone(),
            stream,
            text,
        };
        inner.followers.retain_mut(|f| f.send(&line));
        inner.tail_bytes += line.text.len();
        inner.tail.push_back(line);
        while inner.tail.len() > inner.capacity.max(1)
            || (inner.tail_bytes > MAX_TAIL_BYTES && inner.tail.len() > 1)
        {
            let old = inner.tail.pop_front().expect("more than one line");
            inner.tail_bytes -= old.text.len();
        }
    }

    /// The last `n` lines kept, oldest first.
    pub(crate) fn tail(&self, n: usize) -> Vec<LogLine> {
        let inner = self.lock();
        inner
            .tail
            .iter()
            .skip(inner.tail.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// Sends every later line to `follower`, until it is closed. A bounded follower that is
    /// full misses lines, and is told how many with the next line it takes.
    pub(crate) fn follow(&self, follower: async_channel::Sender<LogLine>) {
        self.lock().followers.push(Follower {
            tx: follower,
            dropped: 0,
        });
    }
}

/// Renders lines for a failure report, each indented under a heading; nothing when the
/// service wrote nothing (or never ran).
pub(crate) fn render_tail(lines: &[LogLine]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nlast lines of its output:");
    for line in lines {
        out.push_str("\n  | ");
        out.push_str(&line.text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_tail_and_feeds_followers() {
        let log = LogBuffer::new("db", 3);
        let (tx, rx) = async_channel::unbounded();
        log.follow(tx);
        log.watch(Some(LogPattern(regex::Regex::new("ready").unwrap())));
        for i in 0..5 {
            log.push(OutputStream::Stdout, format!("line {i}"));
        }
        assert!(!log.matched());
        log.push(OutputStream::Stderr, "ready now".into());
        assert!(log.matched());
        let tail: Vec<String> = log.tail(10).into_iter().map(|l| l.text).collect();
        assert_eq!(tail, ["line 3", "line 4", "ready now"]);
        assert_eq!(log.tail(1)[0].text, "ready now");
        assert_eq!(rx.len(), 6);
    }

    #[test]
    fn the_tail_is_bounded_in_bytes_as_well_as_in_lines() {
        let log = LogBuffer::new("svc", 1000);
        let long = "y".repeat(64 << 10);
        for i in 0..200 {
            log.push(OutputStream::Stdout, format!("{i} {long}"));
        }
        let tail = log.tail(1000);
        let bytes: usize = tail.iter().map(|l| l.text.len()).sum();
        assert!(bytes <= MAX_TAIL_BYTES, "{bytes} bytes in the tail");
        assert!(tail.len() >= FAILURE_TAIL, "{} lines", tail.len());
        assert!(tail.last().unwrap().text.starts_with("199 "));
        assert_eq!(log.lock().tail_bytes, bytes);
    }

    #[test]
    fn tails_keep_the_last_lines() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
    }

    fn line(i: usize) -> String {
        format!("line {i:04} {}", "x".repeat(40))
    }

    #[test]
    fn the_file_rotates_at_its_size_and_keeps_its_count_of_files_with_the_newest_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let log = LogBuffer::new("svc", 10);
        log.write_to(&path, 1024, 3).unwrap();
        for i in 0..200 {
            log.push_buffered(OutputStream::Stdout, line(i));
        }
        log.flush();
        let files = log_files(&path);
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["svc.log.2", "svc.log.1", "svc.log"]);
        assert!(!dir.path().join("svc.log.3").exists());
        let mut all = String::new();
        for file in &files {
            let len = std::fs::metadata(file).unwrap().len();
            assert!(len <= 1024, "{} holds {len} bytes", file.display());
            all.push_str(&std::fs::read_to_string(file).unwrap());
        }
        // The files hold the newest lines, in order, with none missing in between.
        let kept: Vec<&str> = all.lines().collect();
        let first = 200 - kept.len();
        let expected: Vec<String> = (first..200).map(line).collect();
        assert_eq!(kept, expected);
        assert!(
            kept.len() > 40,
            "three files of 1 KiB hold more than 40 lines"
        );
        let tail = read_log_tail(&path, 30).unwrap();
        let tail: Vec<String> = String::from_utf8(tail)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(
            tail,
            (170..200).map(line).collect::<Vec<_>>(),
            "a tail across files"
        );
    }

    #[test]
    fn a_log_kept_in_one_file_starts_again_and_a_restart_appends_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        std::fs::write(dir.path().join("svc.log.5"), "from a run that kept more\n").unwrap();
        let log = LogBuffer::new("svc", 10);
        log.write_to(&path, 1024, 1).unwrap();
        assert!(
            !dir.path().join("svc.log.5").exists(),
            "files beyond the count go"
        );
        for i in 0..100 {
            log.push(OutputStream::Stdout, line(i));
        }
        assert_eq!(log_files(&path), std::slice::from_ref(&path));
        assert!(std::fs::metadata(&path).unwrap().len() <= 1024);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .ends_with(&format!("{}\n", line(99)))
        );
        // Opened again (a restart), the file is appended to and still rotated at its size.
        let size = std::fs::metadata(&path).unwrap().len();
        log.write_to(&path, 4096, 2).unwrap();
        log.push(OutputStream::Stdout, "after the restart".into());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size + 18);
    }

    #[test]
    fn a_follower_that_falls_behind_misses_lines_and_is_told_how_many() {
        let log = LogBuffer::new("svc", 10);
        let (tx, rx) = async_channel::bounded(4);
        log.follow(tx);
        for i in 0..10 {
            log.push(OutputStream::Stdout, format!("{i}"));
        }
        let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|l| l.text)
            .collect();
        assert_eq!(got, ["0", "1", "2", "3"]);
        log.push(OutputStream::Stdout, "10".into());
        let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|l| l.text)
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].starts_with("harness: 6 lines of svc not shown here"),
            "{got:?}"
        );
        assert_eq!(got[1], "10");
        drop(rx);
        log.push(OutputStream::Stdout, "11".into());
        assert!(
            log.lock().followers.is_empty(),
            "a closed follower is dropped"
        );
    }

    #[test]
    fn limits_come_from_the_service_then_the_run_then_the_defaults() {
        let set = LogLimits {
            max_size: Some(2048),
            max_files: Some(2),
        };
        let run = |size: &'static str, files: &'static str| {
            move |name: &str| match name {
                LOG_MAX_SIZE_ENV => Some(size.to_string()),
                LOG_MAX_FILES_ENV => Some(files.to_string()),
                _ => None,
            }
        };
        assert_eq!(limits_from(&set, |_| None), Ok((2048, 2)));
        assert_eq!(
            limits_from(&LogLimits::default(), run("8K", "5")),
            Ok((8192, 5))
        );
        assert_eq!(limits_from(&set, run("8K", "5")), Ok((2048, 2)));
        let error = limits_from(&LogLimits::default(), run("12", "")).unwrap_err();
        assert!(
            error.contains("HARNESS_LOG_MAX_SIZE=12 is 12 bytes"),
            "{error}"
        );
        let error = limits_from(&LogLimits::default(), run("", "0")).unwrap_err();
        assert!(
            error.contains("HARNESS_LOG_MAX_FILES=0: expected a count"),
            "{error}"
        );
        let error = limits_from(&LogLimits::default(), run("lots", "")).unwrap_err();
        assert!(
            error.starts_with("HARNESS_LOG_MAX_SIZE=lots: expected a size"),
            "{error}"
        );
        assert_eq!(
            limits_from(&LogLimits::default(), run("", "")),
            Ok((DEFAULT_LOG_MAX_SIZE, DEFAULT_LOG_MAX_FILES))
        );
    }
}
