//! `LabError`: why a lab could not be built or torn down.

use std::io;

use crate::exec::LaunchError;

/// Why building or tearing down a [`Lab`](crate::lab::Lab) failed. Messages read well after
/// "failed to ...", and name the lab prefix, the network or the host involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// A network or host name that cannot be used.
    #[error("use {what} name `{name}`: {reason}")]
    InvalidName {
        /// "network" or "host".
        what: &'static str,
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A subnet that is not an IPv4 `a.b.c.d/len` network, or has no room for the hosts.
    #[error("use subnet `{subnet}` for network `{network}`: {reason}")]
    InvalidSubnet {
        /// The network.
        network: String,
        /// The subnet given.
        subnet: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A subnet that this machine already routes (another lab, Docker, a real interface).
    #[error(
        "use subnet {subnet} for network `{network}`: this machine already routes it ({route}); \
         give each lab that runs at once a subnet of its own"
    )]
    SubnetInUse {
        /// The network.
        network: String,
        /// The subnet.
        subnet: String,
        /// The route found.
        route: String,
    },
    /// A host attached to a network that was not declared.
    #[error("attach host `{host}` to network `{network}`: no such network (declared: {known})")]
    UnknownNetwork {
        /// The host.
        host: String,
        /// The network it names.
        network: String,
        /// The networks that were declared.
        known: String,
    },
    /// What the lab needs is missing here (root, `ip netns`, `unshare`, `sshd`).
    #[error("build a lab: {0}")]
    Unsupported(String),
    /// A command that sets the lab up failed.
    #[error("{doing} (lab {prefix}): `{command}` failed: {stderr}")]
    Command {
        /// The lab's prefix.
        prefix: String,
        /// What was being done, as a fragment.
        doing: String,
        /// The command line.
        command: String,
        /// What it wrote on stderr, or its exit status.
        stderr: String,
    },
    /// An I/O error while doing something named.
    #[error("{doing}: {source}")]
    Io {
        /// What was being done, as a fragment, naming the file or the lab.
        doing: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A host's sshd did not come up.
    #[error("start host `{host}` of lab {prefix}: {reason}\n{log}")]
    HostStart {
        /// The lab's prefix.
        prefix: String,
        /// The host.
        host: String,
        /// What went wrong.
        reason: String,
        /// The host's init and sshd output.
        log: String,
    },
    /// Starting a host's process failed.
    #[error("start host `{host}`: {source}")]
    Launch {
        /// The host.
        host: String,
        /// The error.
        #[source]
        source: LaunchError,
    },
    /// Something of the lab was still there after teardown.
    #[error("tear down lab {prefix}: {left} is left")]
    Leftover {
        /// The lab's prefix.
        prefix: String,
        /// What is left (namespaces, links, processes, the directory).
        left: String,
    },
}

impl LabError {
    pub(crate) fn io(doing: impl Into<String>, source: io::Error) -> Self {
        LabError::Io {
            doing: doing.into(),
            source,
        }
    }
}
