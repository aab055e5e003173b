//! Each service's output: a bounded in-memory tail, a file in the run's state directory, and
//! followers that receive new lines as they arrive.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::exec::OutputStream;
use crate::topology::LogPattern;

/// How many lines of each service's output are kept in memory.
pub const DEFAULT_LOG_TAIL: usize = 1000;

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
    file: Option<LineWriter<File>>,
    followers: Vec<async_channel::Sender<LogLine>>,
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
                file: None,
                followers: Vec::new(),
                watch: None,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends every later line to `path` (created, or appended to across restarts).
    pub(crate) fn write_to(&self, path: &Path) -> std::io::Result<()> {
        let file = File::options().create(true).append(true).open(path)?;
        self.lock().file = Some(LineWriter::new(file));
        Ok(())
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

    /// Adds one line the service wrote.
    pub fn push(&self, stream: OutputStream, text: String) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some((pattern, matched)) = &mut inner.watch
            && !*matched
        {
            *matched = pattern.is_match(&text);
        }
        if let Some(file) = &mut inner.file {
            // A full disk must not stop the service's output from being read; the tail and the
            // followers still get the line.
            let _ = writeln!(file, "{text}");
        }
        let line = LogLine {
            service: inner.service.clone(),
            stream,
            text,
        };
        inner.followers.retain(|f| f.try_send(line.clone()).is_ok());
        if inner.tail.len() == inner.capacity {
            inner.tail.pop_front();
        }
        inner.tail.push_back(line);
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

    /// Sends every later line to `follower`, until it is closed.
    pub(crate) fn follow(&self, follower: async_channel::Sender<LogLine>) {
        self.lock().followers.push(follower);
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
}
