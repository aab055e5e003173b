//! `MeshError`: what can go wrong building, changing or tearing down a mesh.

use std::io;

use crate::exec::LaunchError;

/// Why a mesh operation failed; the message reads after "failed to ".
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The `wireguard_subnet` is not a usable IPv4 subnet.
    #[error("use `{subnet}` as the mesh subnet: {reason}")]
    InvalidSubnet {
        /// The subnet as given.
        subnet: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Every host address of the subnet is taken.
    #[error("give node `{node}` an address: all {capacity} addresses of {subnet} are taken")]
    SubnetExhausted {
        /// The node that got none.
        node: String,
        /// The mesh subnet.
        subnet: String,
        /// How many host addresses it has.
        capacity: u32,
    },
    /// This machine already routes the subnet (another mesh, a lab network, a real network).
    #[error("use {subnet} for a mesh: this machine already routes it (`{route}`)")]
    SubnetInUse {
        /// The mesh subnet.
        subnet: String,
        /// The route that covers it.
        route: String,
    },
    /// A node of that name is already in the mesh.
    #[error("add node `{0}`: the mesh already has a node of that name")]
    DuplicateNode(String),
    /// No node of that name is in the mesh.
    #[error("find node `{name}` in the mesh (nodes: {known})")]
    UnknownNode {
        /// The name asked for.
        name: String,
        /// The nodes there are.
        known: String,
    },
    /// A node that the test machine has no address for.
    #[error("add node `{0}`: it has no underlay address (give it one with `MeshNode::at`)")]
    NoUnderlay(String),
    /// Something the mesh needs is missing here.
    #[error("start a mesh: {0}")]
    Unsupported(String),
    /// A command on a node failed.
    #[error("{doing} on node `{node}` ({location}): {source}")]
    Node {
        /// The node.
        node: String,
        /// Where its commands run (its launcher's location).
        location: String,
        /// What was being done.
        doing: String,
        /// What went wrong (boxed: launch errors are large).
        #[source]
        source: Box<LaunchError>,
    },
    /// A local file operation failed.
    #[error("{doing}: {source}")]
    Io {
        /// What was being done.
        doing: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// Teardown left something behind.
    #[error("tear down mesh {prefix}: still there: {}", .left.join(", "))]
    Leftover {
        /// The mesh's prefix (its interface name).
        prefix: String,
        /// What is left.
        left: Vec<String>,
    },
}

impl MeshError {
    pub(crate) fn io(doing: impl Into<String>, source: io::Error) -> MeshError {
        MeshError::Io {
            doing: doing.into(),
            source,
        }
    }
}
