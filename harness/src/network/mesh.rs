//! `Mesh`: a WireGuard mesh of the test machine and the nodes added to it.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::exec::LocalLauncher;
use crate::join::join_all;
use crate::lab::Lab;
use crate::network::error::MeshError;
use crate::network::iface::{self, StepError};
use crate::network::janitor;
use crate::network::key::{PrivateKey, PublicKey};
use crate::network::node::MeshNode;
use crate::network::plan::{self, Route, View};
use crate::network::shell::{Daemon, Shell};
use crate::network::subnet::{DEFAULT_SUBNET, MeshSubnet};

/// The name of the test machine's node.
pub const LOCAL_NODE: &str = "local";

/// The persistent keepalive a mesh sets by default, in seconds: WireGuard's usual value, which
/// keeps a NAT mapping open so a node behind NAT stays reachable.
pub const DEFAULT_KEEPALIVE: u16 = 25;

/// The options of a [`Mesh`]; [`MeshBuilder::start`] brings up the test machine's node.
#[derive(Debug, Clone)]
#[must_use = "a MeshBuilder does nothing until `start` is called"]
pub struct MeshBuilder {
    subnet: String,
    keepalive: Option<u16>,
    local_underlay: Vec<(String, IpAddr)>,
}

/// A WireGuard mesh: the test machine (node [`LOCAL_NODE`], in the root network namespace) and
/// the nodes added to it, each with a /32 address from the mesh subnet and every other node it
/// can reach as a peer. The test machine reaches every node's mesh address directly.
///
/// Every interface of the mesh, on every node, is named by the mesh's prefix
/// ([`Mesh::interface`]), so meshes run side by side (with subnets of their own). Teardown:
/// [`Mesh::shutdown`], or `Drop`, or, after the owner was killed, the next mesh started on this
/// machine (see [`sweep_meshes`](crate::network::sweep_meshes)).
///
/// ```no_run
/// # smol::block_on(async {
/// use harness::lab::Lab;
/// use harness::network::{Mesh, MeshNode};
/// let lab = Lab::builder()
///     .network("lan", "10.77.1.0/24")
///     .host("a", &["lan"])
///     .host("b", &["lan"])
///     .build()
///     .await?;
/// let mut mesh = Mesh::builder().subnet("10.88.0.0/16").lab(&lab).start().await?;
/// let nodes = vec![
///     MeshNode::lab_host(&lab, "a").await?,
///     MeshNode::lab_host(&lab, "b").await?,
/// ];
/// mesh.add_all(nodes).await?; // brought up in parallel
/// println!("a is at {} on the mesh", mesh.addr("a").unwrap());
/// mesh.shutdown().await?;
/// lab.shutdown().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(()) });
/// ```
pub struct Mesh {
    prefix: String,
    subnet: MeshSubnet,
    keepalive: Option<u16>,
    /// The test machine first, then the nodes in the order they joined.
    members: Vec<Member>,
    /// Revoked nodes: no longer anyone's peer, their interfaces left as they were until
    /// teardown.
    revoked: Vec<Member>,
    torn_down: bool,
}

struct Member {
    name: String,
    shell: Arc<dyn Shell>,
    underlay: Vec<(String, IpAddr)>,
    relay: bool,
    local: bool,
    key: PrivateKey,
    public: PublicKey,
    addr: Ipv4Addr,
    port: u16,
    daemon: Option<Box<dyn Daemon>>,
    /// The configuration last applied, so unchanged nodes are not touched.
    applied: String,
}

impl MeshBuilder {
    /// The mesh subnet, `a.b.c.d/len` (default [`DEFAULT_SUBNET`], ADR-007's
    /// `wireguard_subnet`). Meshes that run at once need subnets of their own.
    pub fn subnet(mut self, subnet: impl Into<String>) -> Self {
        self.subnet = subnet.into();
        self
    }

    /// The persistent keepalive on every peer that has an endpoint (default
    /// [`DEFAULT_KEEPALIVE`] seconds); `None` for none.
    pub fn keepalive(mut self, seconds: Option<u16>) -> Self {
        self.keepalive = seconds;
        self
    }

    /// Says the test machine is at `addr` on the underlay network `network`: nodes on that
    /// network reach it there. Without any, nodes cannot initiate to the test machine, which
    /// then initiates (and keeps alive) every session.
    pub fn local_at(mut self, network: impl Into<String>, addr: IpAddr) -> Self {
        self.local_underlay.push((network.into(), addr));
        self
    }

    /// Places the test machine on every network of `lab`, at its gateway address there.
    pub fn lab(mut self, lab: &Lab) -> Self {
        for net in &lab.networks {
            self.local_underlay
                .push((net.name.clone(), IpAddr::V4(net.gateway)));
        }
        self
    }

    /// Sweeps meshes whose owner died, reserves a prefix, checks that the subnet is free here,
    /// and brings up the test machine's interface with the subnet's first address.
    pub async fn start(self) -> Result<Mesh, MeshError> {
        let subnet =
            MeshSubnet::parse(&self.subnet).map_err(|reason| MeshError::InvalidSubnet {
                subnet: self.subnet.clone(),
                reason,
            })?;
        check_support()?;
        blocking::unblock(janitor::sweep_meshes).await;
        check_unrouted(&subnet)?;
        let prefix = blocking::unblock(janitor::reserve).await?;
        let mut mesh = Mesh {
            prefix,
            subnet,
            keepalive: self.keepalive,
            members: Vec::new(),
            revoked: Vec::new(),
            torn_down: false,
        };
        let local = MeshNode {
            name: LOCAL_NODE.to_string(),
            shell: Arc::new(LocalLauncher),
            underlay: self.local_underlay,
            relay: false,
        };
        // On failure `mesh` is dropped, which removes the reservation.
        mesh.join(vec![local], true).await?;
        Ok(mesh)
    }
}

impl Mesh {
    /// The options of a mesh.
    pub fn builder() -> MeshBuilder {
        MeshBuilder {
            subnet: DEFAULT_SUBNET.to_string(),
            keepalive: Some(DEFAULT_KEEPALIVE),
            local_underlay: Vec::new(),
        }
    }

    /// The mesh's prefix (`hm` and 4 hex digits), which is also the name of its interface on
    /// every node.
    pub fn interface(&self) -> &str {
        &self.prefix
    }

    /// The mesh subnet.
    pub fn subnet(&self) -> MeshSubnet {
        self.subnet
    }

    /// The test machine's mesh address.
    pub fn local_addr(&self) -> Ipv4Addr {
        self.members[0].addr
    }

    /// The mesh address of the node `name` (the test machine is [`LOCAL_NODE`]).
    pub fn addr(&self, name: &str) -> Option<Ipv4Addr> {
        self.member(name).map(|m| m.addr)
    }

    /// The public key of the node `name`.
    pub fn public_key(&self, name: &str) -> Option<PublicKey> {
        self.member(name).map(|m| m.public)
    }

    /// The UDP port the node `name` listens on.
    pub fn listen_port(&self, name: &str) -> Option<u16> {
        self.member(name).map(|m| m.port)
    }

    /// The nodes' names, the test machine first.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.name.as_str())
    }

    /// How traffic between the nodes `a` and `b` travels.
    pub fn route(&self, a: &str, b: &str) -> Result<Route, MeshError> {
        let i = self.index(a)?;
        let j = self.index(b)?;
        Ok(plan::route(&self.views(), i, j))
    }

    /// Adds `node`: brings up its interface, and makes it and the other nodes peers.
    pub async fn add(&mut self, node: MeshNode) -> Result<Ipv4Addr, MeshError> {
        self.add_all(vec![node]).await.map(|a| a[0])
    }

    /// Adds `nodes`, bringing their interfaces up in parallel, then updates every node's peers
    /// in parallel. Returns their mesh addresses, in order. If one fails, none is added.
    pub async fn add_all(&mut self, nodes: Vec<MeshNode>) -> Result<Vec<Ipv4Addr>, MeshError> {
        self.join(nodes, false).await
    }

    /// Takes the node `name` out of the mesh: removes it from every other node's peers, then
    /// stops its interface.
    pub async fn remove(&mut self, name: &str) -> Result<(), MeshError> {
        let member = self.take(name)?;
        let synced = self.sync_all().await;
        iface::stop(&*member.shell, &self.prefix, member.daemon).await;
        synced
    }

    /// Revokes the node `name`'s key: every other node drops it as a peer at once (in
    /// parallel), so from then on nothing it sends is accepted and nothing is sent to it. The
    /// node itself is not asked to do anything (its key may be lost or its host compromised):
    /// its interface stays as it is until the mesh is torn down.
    pub async fn revoke(&mut self, name: &str) -> Result<(), MeshError> {
        let member = self.take(name)?;
        self.revoked.push(member);
        self.sync_all().await
    }

    /// Stops every node's interface (in parallel) and removes the test machine's part of the
    /// mesh. Fails with [`MeshError::Leftover`] if anything of it is still there on this
    /// machine (interface, socket, registry directory, a `wireguard-go` of the mesh's name,
    /// lab hosts included).
    pub async fn shutdown(mut self) -> Result<(), MeshError> {
        self.torn_down = true;
        let prefix = self.prefix.clone();
        let members: Vec<Member> = self
            .members
            .drain(..)
            .chain(self.revoked.drain(..))
            .collect();
        join_all(members.into_iter().map(|m| {
            let prefix = prefix.clone();
            async move { iface::stop(&*m.shell, &prefix, m.daemon).await }
        }))
        .await;
        let p = prefix.clone();
        let left = blocking::unblock(move || {
            janitor::remove_local(&p);
            janitor::mesh_leftovers(&p)
        })
        .await;
        if left.is_empty() {
            Ok(())
        } else {
            Err(MeshError::Leftover { prefix, left })
        }
    }

    fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    fn index(&self, name: &str) -> Result<usize, MeshError> {
        self.members
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| MeshError::UnknownNode {
                name: name.to_string(),
                known: self
                    .members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn take(&mut self, name: &str) -> Result<Member, MeshError> {
        let i = self.index(name)?;
        if i == 0 {
            return Err(MeshError::UnknownNode {
                name: format!("{name} (the test machine cannot leave its own mesh)"),
                known: self
                    .members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(self.members.remove(i))
    }

    fn views(&self) -> Vec<View<'_>> {
        self.members
            .iter()
            .map(|m| View {
                name: &m.name,
                addr: m.addr,
                public: m.public,
                port: m.port,
                underlay: &m.underlay,
                local: m.local,
                relay: m.relay,
            })
            .collect()
    }

    /// The lowest free host number of the subnet, not counting `taken` extra ones.
    fn free_addr(&self, taken: &[Ipv4Addr], node: &str) -> Result<Ipv4Addr, MeshError> {
        let used = |a: &Ipv4Addr| {
            self.members
                .iter()
                .chain(&self.revoked)
                .any(|m| &m.addr == a)
                || taken.contains(a)
        };
        (1..=self.subnet.capacity())
            .filter_map(|n| self.subnet.host(n))
            .find(|a| !used(a))
            .ok_or_else(|| MeshError::SubnetExhausted {
                node: node.to_string(),
                subnet: self.subnet.to_string(),
                capacity: self.subnet.capacity(),
            })
    }

    /// Checks, addresses and brings up `nodes` in parallel, then syncs every node's peers.
    async fn join(
        &mut self,
        nodes: Vec<MeshNode>,
        local: bool,
    ) -> Result<Vec<Ipv4Addr>, MeshError> {
        let mut planned = Vec::new();
        let mut addrs: Vec<Ipv4Addr> = Vec::new();
        for node in nodes {
            let taken_by_earlier = planned
                .iter()
                .any(|(n, _, _): &(MeshNode, _, _)| n.name == node.name);
            if self.index(&node.name).is_ok()
                || taken_by_earlier
                || self.revoked.iter().any(|m| m.name == node.name)
            {
                return Err(MeshError::DuplicateNode(node.name));
            }
            if !local && node.underlay.is_empty() {
                return Err(MeshError::NoUnderlay(node.name));
            }
            let addr = self.free_addr(&addrs, &node.name)?;
            let key = PrivateKey::generate().map_err(|e| {
                MeshError::io(format!("generate a key for node `{}`", node.name), e)
            })?;
            addrs.push(addr);
            planned.push((node, addr, key));
        }
        let prefix = self.prefix.clone();
        let subnet = self.subnet;
        let results =
            join_all(
                planned.iter().map(|(node, addr, key)| {
                    let prefix = &prefix;
                    async move {
                        iface::create(&*node.shell, prefix, key, *addr, &subnet, node.relay).await
                    }
                }),
            )
            .await;
        // Keep what came up, so a failure takes every new interface down again.
        let mut failure = None;
        let mut joined = Vec::new();
        for ((node, addr, key), result) in planned.into_iter().zip(results) {
            match result {
                Ok(up) => joined.push(Member {
                    public: key.public_key(),
                    name: node.name,
                    shell: node.shell,
                    underlay: node.underlay,
                    relay: node.relay,
                    local,
                    key,
                    addr,
                    port: up.port,
                    daemon: up.daemon,
                    applied: String::new(),
                }),
                Err(step) => {
                    if failure.is_none() {
                        failure = Some(node_error(&node.name, &*node.shell, step));
                    }
                }
            }
        }
        // The sweep kills a dead owner's wireguard-go by this record, should it outlive it.
        if failure.is_none()
            && local
            && let Some(pid) = joined[0].daemon.as_ref().and_then(|d| d.pid())
        {
            let prefix = self.prefix.clone();
            if let Err(e) = blocking::unblock(move || janitor::record_daemon(&prefix, pid)).await {
                failure = Some(e);
            }
        }
        if let Some(e) = failure {
            join_all(joined.into_iter().map(|m| {
                let prefix = &prefix;
                async move { iface::stop(&*m.shell, prefix, m.daemon).await }
            }))
            .await;
            return Err(e);
        }
        let start = self.members.len();
        self.members.extend(joined);
        if let Err(e) = self.sync_all().await {
            // Take the new nodes out again; the others are synced back without them.
            let new: Vec<Member> = self.members.drain(start..).collect();
            join_all(new.into_iter().map(|m| {
                let prefix = &prefix;
                async move { iface::stop(&*m.shell, prefix, m.daemon).await }
            }))
            .await;
            let _ = self.sync_all().await;
            return Err(e);
        }
        Ok(addrs)
    }

    /// Applies each node's configuration where it changed, all nodes in parallel.
    ///
    /// In two passes when there is a keepalive: WireGuard sends a keepalive, and so starts a
    /// handshake, as soon as a peer gets one; if the other node does not know this one yet, it
    /// drops the handshake, and the retry comes only after 5 s (measured: a 10-host mesh took
    /// 5.6 s to have every pair up instead of under a second). So new peers first get no
    /// keepalive, and their keepalive once every node knows every other.
    async fn sync_all(&mut self) -> Result<(), MeshError> {
        self.sync_pass(true).await?;
        if self.keepalive.is_some() {
            self.sync_pass(false).await?;
        }
        Ok(())
    }

    /// One pass of [`Mesh::sync_all`]; with `first`, peers a node does not have yet get no
    /// keepalive.
    async fn sync_pass(&mut self, first: bool) -> Result<(), MeshError> {
        let configs: Vec<String> = {
            let views = self.views();
            (0..self.members.len())
                .map(|i| {
                    let applied = &self.members[i].applied;
                    let keepalive = |peer: &PublicKey| {
                        self.keepalive
                            .filter(|_| !first || applied.contains(&peer.to_base64()))
                    };
                    plan::render(&views, i, &self.members[i].key, keepalive)
                })
                .collect()
        };
        let prefix = &self.prefix;
        let results = join_all(
            self.members
                .iter()
                .zip(&configs)
                .map(|(m, config)| async move {
                    if &m.applied == config {
                        return Ok(());
                    }
                    iface::sync(&*m.shell, prefix, config.clone()).await
                }),
        )
        .await;
        let mut failure = None;
        for ((m, config), result) in self.members.iter_mut().zip(configs).zip(results) {
            match result {
                Ok(()) => m.applied = config,
                Err(step) => {
                    if failure.is_none() {
                        failure = Some(node_error(&m.name, &*m.shell, step));
                    }
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        // Dropping a daemon's handle kills it (remote ones through their launcher's
        // watchdog), and its interface goes with it; then this machine's remains are removed.
        // This blocks for as long as that takes; `shutdown` does it without blocking.
        for m in self.members.iter_mut().chain(self.revoked.iter_mut()) {
            drop(m.daemon.take());
        }
        janitor::remove_local(&self.prefix);
    }
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("interface", &self.prefix)
            .field("subnet", &self.subnet.to_string())
            .field(
                "nodes",
                &self
                    .members
                    .iter()
                    .map(|m| (&m.name, m.addr))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn node_error(node: &str, shell: &dyn Shell, (doing, source): StepError) -> MeshError {
    MeshError::Node {
        node: node.to_string(),
        location: shell.location(),
        doing,
        source: Box::new(source),
    }
}

/// Root, `ip` and `wg`: without them there is no mesh (`wireguard-go` is checked where it is
/// needed, on each node).
fn check_support() -> Result<(), MeshError> {
    if !rustix::process::geteuid().is_root() {
        return Err(MeshError::Unsupported(
            "a mesh creates network interfaces, which needs root".into(),
        ));
    }
    for (program, package) in [("ip", "iproute2"), ("wg", "wireguard-tools")] {
        let found = std::process::Command::new(program)
            .arg(if program == "ip" { "-V" } else { "--version" })
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Err(MeshError::Unsupported(format!(
                "`{program}` is not installed ({package})"
            )));
        }
    }
    Ok(())
}

/// Refuses a subnet this machine already routes: the test machine's interface gets the whole
/// subnet, and two routes for it would send traffic to the wrong place.
fn check_unrouted(subnet: &MeshSubnet) -> Result<(), MeshError> {
    let text = subnet.to_string();
    let out = std::process::Command::new("ip")
        .args(["-4", "route", "show", "root", &text])
        .output()
        .map_err(|e| MeshError::io("list the routes (`ip route`)", e))?;
    let routes = String::from_utf8_lossy(&out.stdout);
    match routes.lines().find(|l| !l.trim().is_empty()) {
        None => Ok(()),
        Some(route) => Err(MeshError::SubnetInUse {
            subnet: text,
            route: route.trim().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles only if a mesh and the futures of its operations can move between threads
    /// (what a multi-threaded runtime's `spawn` needs).
    fn futures_are_send(mesh: &mut Mesh, node: MeshNode) {
        fn send<T: Send>(_: T) {}
        send(mesh.add(node));
        send(mesh.remove("a"));
        send(mesh.revoke("a"));
        send(Mesh::builder().start());
    }

    fn shutdown_is_send(mesh: Mesh) {
        fn send<T: Send>(_: T) {}
        send(mesh.shutdown());
    }

    #[test]
    fn a_mesh_and_its_futures_are_send() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Mesh>();
        let _ = futures_are_send as fn(&mut Mesh, MeshNode);
        let _ = shutdown_is_send as fn(Mesh);
    }
}
