//! The orchestrator's errors: why a topology or a service could not be started or stopped.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::exec::{ExitStatus, LaunchError};
use crate::registry::RegistryError;
use crate::topology::{EnvFileError, GraphError, SourceLocation, SubstitutionError};

use super::logs::{LogLine, render_tail};

/// Starting, stopping or controlling services failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestratorError {
    /// A service did not start or did not become healthy. Everything the same call had started
    /// was stopped again.
    #[error(
        "start service {service} ({location}): {reason}{}{}",
        render_tail(log_tail),
        render_check_output(reason)
    )]
    StartFailed {
        /// The service.
        service: String,
        /// Where the topology file defines it.
        location: SourceLocation,
        /// Why (boxed: it may carry a large launch error).
        reason: Box<StartFailure>,
        /// The last lines of its output (at most [`FAILURE_TAIL`](super::FAILURE_TAIL)).
        log_tail: Vec<LogLine>,
    },
    /// The name is not a service of the topology.
    #[error("find service {0}: the topology has no such service")]
    UnknownService(String),
    /// A service was started alone while a service it needs is not running.
    #[error("start service {service}: its dependency {dependency} is not running")]
    DependencyNotRunning {
        /// The service.
        service: String,
        /// The dependency that is not running.
        dependency: String,
    },
    /// The per-run state directory could not be created.
    #[error("create the state directory for the run: {0}")]
    StateDir(#[source] io::Error),
    /// The topology's dependency graph is broken (only for a topology built in code).
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The registry refused a change.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// What an executor made for the run (a Docker network, built images) could not be
    /// removed after its services stopped.
    #[error("remove what the run made for its `{kind}` services: {source}")]
    CleanUp {
        /// The target kind whose executor failed to clean up.
        kind: &'static str,
        /// Why.
        #[source]
        source: LaunchError,
    },
    /// A test asked the supervisor that owns a copy shared under nextest to start, stop or
    /// restart a service, and it could not (the message is the supervisor's error).
    #[error("{action} service {service} in the shared copy: {message}")]
    SharedCopy {
        /// `start`, `stop` or `restart`.
        action: &'static str,
        /// The service.
        service: String,
        /// What the supervisor answered, or why it could not be asked.
        message: String,
    },
    /// The topology's `lab:` could not be built or removed.
    #[error("lab of {}: {source}", file.display())]
    Lab {
        /// The topology file.
        file: PathBuf,
        /// Why (boxed: a lab error is large).
        #[source]
        source: Box<crate::lab::LabError>,
    },
    /// A command was to run in a service that is not running.
    #[error("run a command in service {0}: it is not running")]
    NotRunning(String),
    /// A command could not be run where a service runs ([`ServiceManager::exec`]).
    ///
    /// [`ServiceManager::exec`]: super::ServiceManager::exec
    #[error("run a command in service {service}: {source}")]
    Exec {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: LaunchError,
    },
    /// A service could not be stopped.
    #[error("stop service {service}: {source}")]
    Stop {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: LaunchError,
    },
}

impl OrchestratorError {
    /// The service a start failure is about.
    pub fn failed_service(&self) -> Option<&str> {
        match self {
            Self::StartFailed { service, .. } => Some(service),
            _ => None,
        }
    }
}

/// Why one service failed to start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartFailure {
    /// Its process ended before it became healthy.
    Exited(ExitStatus),
    /// A job (`job: true`) exited with a status other than 0.
    JobFailed(ExitStatus),
    /// Its health check kept failing.
    Unhealthy {
        /// How many times the check was tried; 0 when it could not be tried at all.
        tries: u32,
        /// What the last try said, in one line.
        last_error: String,
        /// The last lines the last try of a `command` check wrote (at most
        /// [`CHECK_OUTPUT_LINES`](super::CHECK_OUTPUT_LINES)); empty for other checks. They
        /// are kept apart from the service's log, and a start failure shows them after it.
        check_output: Vec<String>,
    },
    /// A process target's binary is not there.
    MissingBinary(PathBuf),
    /// A process target's binary is there but is no file: a directory, a FIFO, a device.
    NotAProgram {
        /// The path.
        path: PathBuf,
        /// What it is: "a directory", "a FIFO".
        kind: &'static str,
    },
    /// A container's image is not on this machine, and its pull policy is `never`.
    MissingImage(String),
    /// A container's image could not be pulled.
    Pull {
        /// The image.
        image: String,
        /// The engine's reason.
        reason: String,
    },
    /// A container's image could not be built.
    Build {
        /// The image's tag.
        image: String,
        /// Why.
        source: LaunchError,
    },
    /// The target kind has no executor (yet).
    Unsupported(&'static str),
    /// The process could not be spawned.
    Launch(LaunchError),
    /// A placeholder could not be filled.
    Substitution(SubstitutionError),
    /// The env file could not be written.
    EnvFile(EnvFileError),
    /// A file of its `files:` could not be put in place.
    File {
        /// Where the topology file lists it.
        location: SourceLocation,
        /// Its `target`, as written.
        target: String,
        /// Why, in one line.
        reason: String,
    },
    /// No free port could be found, or the log file could not be opened.
    Io {
        /// What was being done.
        doing: &'static str,
        /// Why it failed.
        source: io::Error,
    },
}

/// What the last try of a failed `command` check wrote, under the service's own lines; nothing
/// when it wrote no more than the one line its failure already quotes.
fn render_check_output(reason: &StartFailure) -> String {
    let StartFailure::Unhealthy {
        last_error,
        check_output,
        ..
    } = reason
    else {
        return String::new();
    };
    match check_output.as_slice() {
        [] => return String::new(),
        [only] if last_error.ends_with(only.trim()) => return String::new(),
        _ => {}
    }
    let mut out = String::from("\nwhat the last health check wrote:");
    for line in check_output {
        out.push_str("\n  > ");
        out.push_str(line);
    }
    out
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(status) => write!(f, "it {status} before it was healthy"),
            Self::JobFailed(status) => write!(f, "the job {status}"),
            Self::Unhealthy {
                tries: 0,
                last_error,
                ..
            } => write!(f, "health check cannot run: {last_error}"),
            Self::Unhealthy {
                tries, last_error, ..
            } => {
                write!(f, "health check failed after {tries} tries: {last_error}")
            }
            Self::MissingBinary(path) => write!(f, "binary {} does not exist", path.display()),
            Self::NotAProgram { path, kind } => {
                write!(f, "binary {} is {kind}, not a program", path.display())
            }
            Self::MissingImage(image) => write!(
                f,
                "image `{image}` is not on this machine, and the service's pull policy is \
                 `never` (`pull: never`, `--pull never` or HARNESS_PULL=never); pull or build \
                 it first, allow the pull with `pull: missing`, or add `build: {{ binary: \
                 ./path/to/program }}` to the service's docker target to have harness build it"
            ),
            Self::Pull { image, reason } => write!(
                f,
                "pull image `{image}`: {reason}; if no registry this machine reaches has it, \
                 add `build: {{ binary: ./path/to/program }}` to the service's docker target to \
                 have harness build it, or use an image that is here with `pull: never`"
            ),
            Self::Build { image, source } => write!(f, "build image `{image}`: {source}"),
            Self::Unsupported(kind) => {
                write!(
                    f,
                    "`{kind}` targets cannot be started by this orchestrator yet"
                )
            }
            Self::Launch(e) => e.fmt(f),
            Self::Substitution(e) => e.fmt(f),
            Self::EnvFile(e) => e.fmt(f),
            Self::File {
                location,
                target,
                reason,
            } => write!(f, "put file `{target}` ({location}): {reason}"),
            Self::Io { doing, source } => {
                write!(f, "{doing}: {}", crate::limits::explain_io_error(source))
            }
        }
    }
}
