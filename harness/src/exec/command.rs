//! `Command`: what to run, wherever a launcher runs it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::exec::event::{EventSink, LogFilter, OutputStream};

/// Sees a line before the filter does; returning `false` swallows it.
pub(crate) type LineTap = Arc<dyn Fn(OutputStream, &str) -> bool + Send + Sync>;

/// A program with its arguments, environment and working directory.
///
/// Mirrors `std::process::Command`, but is plain data: a launcher decides where it runs (locally,
/// over SSH, inside a container), so the same value can be spawned anywhere. Strings rather than
/// `OsString`s, because every remote launcher has to quote them into a shell command line.
///
/// ```
/// use harness::exec::Command;
/// let cmd = Command::new("sh").arg("-c").arg("echo $GREETING").env("GREETING", "hello");
/// assert_eq!(cmd.get_program(), "sh");
/// ```
#[derive(Clone, Default)]
#[must_use = "a Command does nothing until a launcher spawns it"]
pub struct Command {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) env_clear: bool,
    pub(crate) current_dir: Option<String>,
    pub(crate) stdin: bool,
    pub(crate) raw_stdout: bool,
    pub(crate) filter: Option<Arc<dyn LogFilter>>,
    /// Where events go; set by wrappers (restarting processes) that merge several runs into one
    /// stream.
    pub(crate) sink: Option<EventSink>,
    /// Sees every line before the filter; returning `false` swallows it. Remote launchers use it
    /// to read their wrapper's control lines.
    pub(crate) tap: Option<LineTap>,
    /// Whether the launcher sends `Started` itself; remote launchers send the remote pid instead.
    pub(crate) announce_start: bool,
    /// Whether the launcher sends `Exited`; log followers of attached services leave it to
    /// their owner, whose process is the one that matters.
    pub(crate) announce_exit: bool,
    /// How many batches of events may wait to be read; `None` for no bound.
    pub(crate) event_capacity: Option<usize>,
    /// Run in a cgroup of its own, named after this label (a service), where cgroups are
    /// available: `LocalLauncher` kills the whole cgroup with the process. Local only.
    pub(crate) cgroup: Option<String>,
}

impl Command {
    /// A command that runs `program` (looked up in `PATH` when it has no `/`).
    pub fn new(program: impl Into<String>) -> Self {
        Command {
            program: program.into(),
            announce_start: true,
            announce_exit: true,
            ..Default::default()
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets one environment variable for the child (on top of the inherited environment).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets several environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Starts the child with an empty environment plus what [`Command::env`] sets.
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// Runs the child in `dir`. A directory that does not exist is an error at spawn time.
    pub fn current_dir(mut self, dir: impl Into<String>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Gives the child a pipe as stdin, to be taken with `ProcessHandle::take_stdin`.
    /// Without it, stdin is `/dev/null`.
    pub fn piped_stdin(mut self) -> Self {
        self.stdin = true;
        self
    }

    /// Bounds the output waiting to be read to `batches` batches of lines (a batch is what one
    /// read of a pipe returned, at most 64 KiB). Once that many wait, the process's pipes are
    /// not read until the events are, so a process that writes faster than its events are read
    /// blocks on its pipe, as it would writing to a terminal, instead of filling memory, and a
    /// line longer than 64 KiB is sent in pieces of 64 KiB. Without it the events buffer
    /// without bound and lines arrive whole, like `std::process::Command::output`.
    ///
    /// Services a topology starts run with a bound: their output flows at the speed its log
    /// file is written.
    pub fn bounded_output(mut self, batches: usize) -> Self {
        self.event_capacity = Some(batches.max(1));
        self
    }

    /// Hands stdout over as raw bytes (`ProcessHandle::take_stdout`) instead of line events,
    /// for binary output such as a file download.
    pub fn raw_stdout(mut self) -> Self {
        self.raw_stdout = true;
        self
    }

    /// Drops output lines the filter rejects before they become events.
    pub fn filter(mut self, filter: impl LogFilter + 'static) -> Self {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// The program.
    pub fn get_program(&self) -> &str {
        &self.program
    }

    /// The arguments.
    pub fn get_args(&self) -> &[String] {
        &self.args
    }

    /// The environment variables set on top of the inherited (or cleared) environment.
    pub fn get_envs(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// The working directory, if one was set.
    pub fn get_current_dir(&self) -> Option<&str> {
        self.current_dir.as_deref()
    }

    /// Whether the environment is cleared first.
    pub fn get_env_clear(&self) -> bool {
        self.env_clear
    }

    /// The same command with a different program and arguments, keeping its I/O settings,
    /// filter and event routing. Launchers that wrap a command (ssh, sudo, docker exec) use this
    /// so the caller's options survive the wrapping.
    pub(crate) fn rewrap(&self, program: impl Into<String>, args: Vec<String>) -> Command {
        Command {
            program: program.into(),
            args,
            env: BTreeMap::new(),
            env_clear: false,
            current_dir: None,
            stdin: self.stdin,
            raw_stdout: self.raw_stdout,
            filter: self.filter.clone(),
            sink: self.sink.clone(),
            tap: self.tap.clone(),
            announce_start: self.announce_start,
            announce_exit: self.announce_exit,
            event_capacity: self.event_capacity,
            // The wrapper runs here, the command elsewhere.
            cgroup: None,
        }
    }

    /// Runs a local child in a cgroup of its own (see `cgroup.rs`), so that everything it
    /// starts, also what leaves its process group, is killed with it.
    pub(crate) fn own_cgroup(mut self, label: impl Into<String>) -> Self {
        self.cgroup = Some(label.into());
        self
    }

    /// The program and arguments as one line, for messages.
    pub fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(&crate::exec::quote::quote(a));
        }
        s
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env)
            .field("env_clear", &self.env_clear)
            .field("current_dir", &self.current_dir)
            .field("stdin", &self.stdin)
            .field("raw_stdout", &self.raw_stdout)
            .field("filter", &self.filter.is_some())
            .finish()
    }
}
