//! Process events and the stream that carries them.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::Stream;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitStatus {
    code: Option<i32>,
    signal: Option<i32>,
}

impl ExitStatus {
    /// A status from an exit code.
    pub fn from_code(code: i32) -> Self {
        ExitStatus {
            code: Some(code),
            signal: None,
        }
    }

    /// A status for a process killed by signal number `signal`.
    pub fn from_signal(signal: i32) -> Self {
        ExitStatus {
            code: None,
            signal: Some(signal),
        }
    }

    /// The status of a process that ended but whose exit code we cannot know: it was not our
    /// child (an attached service), so its parent collected the code.
    pub fn unknown() -> Self {
        ExitStatus {
            code: None,
            signal: None,
        }
    }

    /// Whether the process exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The exit code, if the process exited rather than being killed.
    pub fn code(&self) -> Option<i32> {
        self.code
    }

    /// The signal number that killed the process, if it was killed.
    pub fn signal(&self) -> Option<i32> {
        self.signal
    }
}

impl From<std::process::ExitStatus> for ExitStatus {
    fn from(s: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        ExitStatus {
            code: s.code(),
            signal: s.signal(),
        }
    }
}

/// How the process ended, as the predicate of a sentence about it: "exited with code 3", "was
/// killed by signal 9 (SIGKILL)", "ended with an unknown status". Write "`NAME` {status}".
impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exited with code {c}"),
            (None, Some(s)) => match signal_name(s) {
                Some(name) => write!(f, "was killed by signal {s} ({name})"),
                None => write!(f, "was killed by signal {s}"),
            },
            (None, None) => f.write_str("ended with an unknown status"),
        }
    }
}

/// The name of a Linux signal number: `SIGKILL` for 9.
fn signal_name(signal: i32) -> Option<&'static str> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(signal - 1)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
}

/// Something that happened to a process: it started, wrote a line, or exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    /// The process is running with this id (a local pid, or the remote pid for remote launchers
    /// that can tell it).
    Started {
        /// The process id.
        pid: u32,
    },
    /// One line of standard output, without its line ending.
    Stdout(String),
    /// One line of standard error, without its line ending.
    Stderr(String),
    /// The process ended. Lines still buffered in its pipes have been delivered before this.
    Exited(ExitStatus),
}

impl ProcessEvent {
    /// The line, if this is an output event.
    pub fn line(&self) -> Option<&str> {
        match self {
            ProcessEvent::Stdout(l) | ProcessEvent::Stderr(l) => Some(l),
            _ => None,
        }
    }
}

/// Decides which output lines become events.
///
/// Implemented for closures `Fn(OutputStream, &str) -> bool`.
///
/// ```
/// use harness::exec::{Command, OutputStream};
/// // Keep only stderr lines that mention an error.
/// let cmd = Command::new("my-server")
///     .filter(|stream: OutputStream, line: &str| stream == OutputStream::Stderr && line.contains("ERROR"));
/// # let _ = cmd;
/// ```
pub trait LogFilter: Send + Sync {
    /// Whether `line`, read from `stream`, should be delivered.
    fn keep(&self, stream: OutputStream, line: &str) -> bool;
}

impl<F> LogFilter for F
where
    F: Fn(OutputStream, &str) -> bool + Send + Sync,
{
    fn keep(&self, stream: OutputStream, line: &str) -> bool {
        self(stream, line)
    }
}

/// Lines read from one stream, kept in one buffer until the receiver cuts them apart.
///
/// The receiving thread allocates each line's `String`, so the thread that frees it (the
/// caller's) is the one that allocated it. Allocated on the pipe reader thread and freed on the
/// caller's, every line crossed malloc arenas, and the two threads fought over one arena lock:
/// that halved throughput on a chatty process.
#[derive(Default)]
pub(crate) struct Lines {
    text: String,
    /// Where each line ends in `text`.
    ends: Vec<usize>,
}

impl Lines {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Lines {
            text: String::with_capacity(bytes),
            ends: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, line: &str) {
        self.text.push_str(line);
        self.ends.push(self.text.len());
    }

    fn into_events(self, stream: OutputStream, out: &mut VecDeque<ProcessEvent>) {
        out.reserve(self.ends.len());
        let mut start = 0;
        for end in self.ends {
            let line = self.text[start..end].to_owned();
            start = end;
            out.push_back(match stream {
                OutputStream::Stdout => ProcessEvent::Stdout(line),
                OutputStream::Stderr => ProcessEvent::Stderr(line),
            });
        }
    }
}

/// What travels on an event channel: events, or lines still in one buffer.
enum Chunk {
    Events(Vec<ProcessEvent>),
    Lines(OutputStream, Lines),
}

/// The sending side of an event stream. Events travel in batches, so a chatty process costs one
/// channel operation per read rather than one per line.
#[derive(Clone)]
pub(crate) struct EventSink(async_channel::Sender<Chunk>);

impl EventSink {
    /// Sends a batch; false if nobody listens any more.
    pub(crate) fn send(&self, batch: Vec<ProcessEvent>) -> bool {
        batch.is_empty() || self.0.send_blocking(Chunk::Events(batch)).is_ok()
    }

    /// Sends lines read from `stream`; false if nobody listens any more.
    pub(crate) fn send_lines(&self, stream: OutputStream, lines: Lines) -> bool {
        lines.ends.is_empty() || self.0.send_blocking(Chunk::Lines(stream, lines)).is_ok()
    }

    pub(crate) fn send_one(&self, event: ProcessEvent) -> bool {
        self.send(vec![event])
    }
}

/// The events of one process, in order per output stream.
///
/// Lines of stdout keep their order, as do lines of stderr; how the two interleave depends on
/// when the process wrote them. `Started` comes first and `Exited` last. The stream ends after
/// `Exited` (or when the process's pipes close). It buffers without bound, like
/// `std::process::Command::output`, so a process never blocks because nobody reads its events,
/// unless the command asked for a bound ([`Command::bounded_output`]).
///
/// [`Command::bounded_output`]: crate::exec::Command::bounded_output
pub struct EventStream {
    // Boxed and pinned: the receiver is `!Unpin`, and the stream is polled through `&mut self`.
    rx: Pin<Box<async_channel::Receiver<Chunk>>>,
    buf: VecDeque<ProcessEvent>,
}

impl EventStream {
    pub(crate) fn channel() -> (EventSink, EventStream) {
        Self::channel_with(None)
    }

    /// A channel holding at most `capacity` batches (without bound for `None`); a sender to a
    /// full one waits.
    pub(crate) fn channel_with(capacity: Option<usize>) -> (EventSink, EventStream) {
        let (tx, rx) = match capacity {
            Some(n) => async_channel::bounded(n),
            None => async_channel::unbounded(),
        };
        (
            EventSink(tx),
            EventStream {
                rx: Box::pin(rx),
                buf: VecDeque::new(),
            },
        )
    }

    /// The next event, or `None` once the process has exited and everything was delivered.
    pub async fn recv(&mut self) -> Option<ProcessEvent> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Some(e);
            }
            let chunk = self.rx.recv().await.ok()?;
            self.unpack(chunk);
        }
    }

    /// The next event if one is ready now.
    pub fn try_recv(&mut self) -> Option<ProcessEvent> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Some(e);
            }
            let chunk = self.rx.try_recv().ok()?;
            self.unpack(chunk);
        }
    }

    fn unpack(&mut self, chunk: Chunk) {
        match chunk {
            Chunk::Events(events) => self.buf.extend(events),
            Chunk::Lines(stream, lines) => lines.into_events(stream, &mut self.buf),
        }
    }

    /// Reads every remaining event and returns the output and the exit status, like
    /// `std::process::Command::output`.
    pub async fn collect(mut self) -> Output {
        let mut out = Output::default();
        while let Some(e) = self.recv().await {
            match e {
                ProcessEvent::Stdout(l) => out.stdout.push(l),
                ProcessEvent::Stderr(l) => out.stderr.push(l),
                ProcessEvent::Exited(s) => out.status = Some(s),
                ProcessEvent::Started { .. } => {}
            }
        }
        out
    }
}

impl Stream for EventStream {
    type Item = ProcessEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ProcessEvent>> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Poll::Ready(Some(e));
            }
            match self.rx.as_mut().poll_next(cx) {
                Poll::Ready(Some(chunk)) => self.unpack(chunk),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

/// Everything a finished process wrote, and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Standard output, a line per entry.
    pub stdout: Vec<String>,
    /// Standard error, a line per entry.
    pub stderr: Vec<String>,
    /// The exit status, if the `Exited` event arrived.
    pub status: Option<ExitStatus>,
}

impl Output {
    /// Whether the process exited with code 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Standard output joined with newlines.
    pub fn stdout_text(&self) -> String {
        self.stdout.join("\n")
    }

    /// Standard error joined with newlines.
    pub fn stderr_text(&self) -> String {
        self.stderr.join("\n")
    }
}
