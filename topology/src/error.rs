//! The errors of the topology layer, one type per operation.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::diagnostic::Diagnostic;
use super::model::SourceLocation;

/// Loading a topology failed: a file could not be read, or the files hold mistakes.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A topology or overlay file could not be read.
    #[error("read topology file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A topology or overlay file is not a regular file (a FIFO, a device, a directory), so
    /// it was not read.
    #[error("read topology file {}: it is {kind}, not a regular file", path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
        /// What it is instead: "a FIFO", "a character device", "a directory".
        kind: &'static str,
    },
    /// A topology or overlay file is larger than
    /// [`MAX_TOPOLOGY_FILE_SIZE`](super::MAX_TOPOLOGY_FILE_SIZE).
    #[error(
        "read topology file {}: it is larger than {} MiB ({size} bytes), the most a topology \
         file may hold",
        path.display(),
        limit / (1024 * 1024)
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size, or as much of it as was read.
        size: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The files were read but are not a valid topology. Every mistake found is listed, in file
    /// order; nothing was started.
    #[error("{}", Invalid { file, diagnostics })]
    Invalid {
        /// The main topology file.
        file: PathBuf,
        /// Every problem found, each with its file, line and column.
        diagnostics: Vec<Diagnostic>,
    },
}

impl TopologyError {
    /// The located problems, empty for [`TopologyError::Read`].
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Invalid { diagnostics, .. } => diagnostics,
            Self::Read { .. } | Self::NotAFile { .. } | Self::TooLarge { .. } => &[],
        }
    }
}

struct Invalid<'a> {
    file: &'a PathBuf,
    diagnostics: &'a [Diagnostic],
}

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        let plural = if n == 1 { "" } else { "s" };
        write!(
            f,
            "load topology {}: {n} error{plural}",
            self.file.display()
        )?;
        for diagnostic in self.diagnostics {
            write!(f, "\n\n{diagnostic}")?;
        }
        Ok(())
    }
}

/// A dependency graph could not be built from a topology (only possible for one built in code,
/// since loading refuses these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A service depends on a name that is not in the topology.
    #[error(
        "build the dependency graph: service {service} depends on unknown service {dependency}"
    )]
    UnknownDependency {
        /// The dependent.
        service: String,
        /// The missing name.
        dependency: String,
    },
    /// The dependencies go round in a circle.
    #[error("build the dependency graph: dependency cycle {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// A `${...}` placeholder could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("substitute placeholders in {field} of service {service}: {problem}")]
pub struct SubstitutionError {
    /// The service.
    pub service: String,
    /// The field, as a path from the service: `target.process.args[1]`.
    pub field: String,
    /// What is wrong.
    pub problem: PlaceholderError,
    /// Where the field was written, when known.
    pub location: Option<SourceLocation>,
}

/// What is wrong with a placeholder in one string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceholderError {
    /// `${name}` names no known value.
    #[error("unknown placeholder `${{{0}}}`")]
    Unknown(String),
    /// `${cargo_bin:NAME}` names a binary that is not known where the topology runs.
    #[error(
        "`${{cargo_bin:{0}}}` names no binary known here: a #[harness_test] suite knows its \
         package's binaries (cargo's CARGO_BIN_EXE_{0}), `harness up` its cargo workspace's, \
         and a ServiceManager those given to with_cargo_bins"
    )]
    UnknownCargoBin(String),
    /// `${` without its `}`.
    #[error("unterminated placeholder: `${{` at byte {0} has no closing `}}`")]
    Unterminated(usize),
    /// `${}`.
    #[error("empty placeholder `${{}}` at byte {0}")]
    Empty(usize),
}

/// An env file could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    /// A variable name a shell cannot assign.
    #[error(
        "write env file: `{0}` is not a valid variable name (letters, digits and `_`, not starting with a digit)"
    )]
    InvalidName(String),
    /// A value holding a NUL byte, which no environment can carry.
    #[error("write env file: the value of {0} holds a NUL byte")]
    NulInValue(String),
    /// Writing the file failed.
    #[error("write env file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}
