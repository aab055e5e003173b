//! `LaunchError`: why a process could not be started or controlled.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::exec::event::ExitStatus;

/// Why spawning, attaching to or controlling a process failed. Messages read well after
/// "failed to ...", and name what was wrong: the program, the directory, the host, the key file
/// or the container.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The command's program is the empty string.
    #[error("run a command with an empty program name")]
    EmptyProgram,
    /// The program does not exist (or is not in `PATH`).
    #[error("run `{program}`{on}: no such program", on = on_host(host))]
    NotFound {
        /// The program that was asked for.
        program: String,
        /// The host it was looked for on, if remote.
        host: Option<String>,
    },
    /// The program exists but may not be executed.
    #[error("run `{program}`: permission denied")]
    PermissionDenied {
        /// The program.
        program: String,
    },
    /// The working directory does not exist.
    #[error("run `{program}` in `{dir}`{on}: no such directory", on = on_host(host))]
    MissingWorkDir {
        /// The program.
        program: String,
        /// The directory that was asked for.
        dir: String,
        /// The host, if remote.
        host: Option<String>,
    },
    /// An I/O error while doing something named. Running out of open files says which limit
    /// was reached and how to raise it ([`explain_io_error`](crate::limits::explain_io_error)).
    #[error("{doing}: {}", crate::limits::explain_io_error(source))]
    Io {
        /// What was being done, as a fragment ("spawn `ssh`").
        doing: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The host could not be reached (refused, no route, unknown name).
    #[error("connect to {host}: {reason}")]
    Unreachable {
        /// The host, as `user@host:port`.
        host: String,
        /// What ssh said.
        reason: String,
    },
    /// The host refused our credentials.
    #[error("log in to {host}: {reason}")]
    AuthFailed {
        /// The host, as `user@host:port`.
        host: String,
        /// What ssh said.
        reason: String,
    },
    /// A key file is missing, unreadable or not a private key.
    #[error("use key file {}: {reason}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting took longer than allowed.
    #[error("connect to {host}: no answer within {after:?}")]
    Timeout {
        /// The host, as `user@host:port`.
        host: String,
        /// The time allowed.
        after: Duration,
    },
    /// A container that was named does not exist or is not running.
    #[error("use container `{container}`: {reason}")]
    NoSuchContainer {
        /// The container name or id.
        container: String,
        /// What docker said.
        reason: String,
    },
    /// A container image is neither present nor pullable.
    #[error(
        "use image `{image}`: not found locally and cannot be pulled{}",
        stderr_tail(reason)
    )]
    NoSuchImage {
        /// The image reference.
        image: String,
        /// What docker said.
        reason: String,
    },
    /// A helper command (a `docker kill`, an `ssh -O check`, a `systemctl stop`) failed.
    #[error("{doing}: `{command}` {status}{}", stderr_tail(stderr))]
    CommandFailed {
        /// What was being done, as a fragment.
        doing: String,
        /// The command line.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// The process has already exited, so it cannot be signalled.
    #[error("signal process {pid}: it has already exited")]
    AlreadyExited {
        /// The process id.
        pid: u32,
    },
    /// The operation makes no sense for this kind of process.
    #[error("{0}")]
    Unsupported(String),
}

impl LaunchError {
    pub(crate) fn io(doing: impl Into<String>, source: io::Error) -> Self {
        LaunchError::Io {
            doing: doing.into(),
            source,
        }
    }
}

fn on_host(host: &Option<String>) -> String {
    host.as_ref()
        .map(|h| format!(" on {h}"))
        .unwrap_or_default()
}

fn stderr_tail(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        return String::new();
    }
    let tail: Vec<&str> = s.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!(": {}", tail.join(" / "))
}
