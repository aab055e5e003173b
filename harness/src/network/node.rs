//! `MeshNode`: a machine to add to a mesh, with the launcher that runs commands on it and the
//! underlay addresses at which other nodes reach it.

use std::net::IpAddr;
use std::sync::Arc;

use crate::exec::{LaunchError, Launcher};
use crate::lab::Lab;
use crate::network::shell::Shell;

/// A machine to add to a [`Mesh`](crate::network::Mesh): a name, the launcher that runs
/// commands there as root (an `SshLauncher` for a host), and its underlay addresses, each on
/// a named network. Two nodes on a network of the same name reach each other at those
/// addresses; the test machine reaches every node at its first address.
///
/// ```
/// use harness::exec::LocalLauncher;
/// use harness::network::MeshNode;
/// // A host on the "lan" network at 192.168.1.10 (here reached through a local launcher).
/// let node = MeshNode::new("db", LocalLauncher).at("lan", "192.168.1.10".parse().unwrap());
/// assert_eq!(node.name(), "db");
/// ```
#[derive(Clone)]
#[must_use = "a MeshNode does nothing until it is added to a mesh"]
pub struct MeshNode {
    pub(crate) name: String,
    pub(crate) shell: Arc<dyn Shell>,
    pub(crate) underlay: Vec<(String, IpAddr)>,
    pub(crate) relay: bool,
}

impl MeshNode {
    /// A node named `name`, whose commands run through `launcher` (as root: it creates
    /// interfaces).
    pub fn new(name: impl Into<String>, launcher: impl Launcher) -> MeshNode {
        MeshNode {
            name: name.into(),
            shell: Arc::new(launcher),
            underlay: Vec::new(),
            relay: false,
        }
    }

    /// Adds an underlay address: the node is at `addr` on the network `network`.
    pub fn at(mut self, network: impl Into<String>, addr: IpAddr) -> MeshNode {
        self.underlay.push((network.into(), addr));
        self
    }

    /// Lets the node relay mesh traffic between peers that cannot reach each other but both
    /// reach it. The mesh then enables IPv4 forwarding in the node's network namespace
    /// (`/proc/sys/net/ipv4/ip_forward`): on a real machine that changes the machine, so it is
    /// off by default.
    pub fn relay(mut self, relay: bool) -> MeshNode {
        self.relay = relay;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node for the host `host` of `lab`: connects to it as root, and gives it its address
    /// on each lab network it is attached to.
    ///
    /// # Panics
    ///
    /// If the lab has no host of that name.
    pub async fn lab_host(lab: &Lab, host: &str) -> Result<MeshNode, LaunchError> {
        let h = lab.host(host);
        let launcher = h.launcher().await?;
        let mut node = MeshNode::new(host, launcher);
        for net in &lab.networks {
            if let Some(addr) = h.get_addr(&net.name) {
                node = node.at(net.name.clone(), addr);
            }
        }
        Ok(node)
    }
}

impl std::fmt::Debug for MeshNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshNode")
            .field("name", &self.name)
            .field("location", &self.shell.location())
            .field("underlay", &self.underlay)
            .field("relay", &self.relay)
            .finish()
    }
}
