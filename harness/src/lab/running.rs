//! `Lab` and `LabHost`: a running lab, its hosts, and its teardown.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::exec::{
    HostKeys, LaunchError, LocalLauncher, LocalProcess, ProcessHandle, SshBuilder, SshLauncher,
};
use crate::lab::builder::LabBuilder;
use crate::lab::error::LabError;
use crate::lab::host::SSH_PORT;
use crate::lab::janitor;

/// Hosts on this machine, for tests: each a network namespace with its own PID, mount and UTS
/// namespaces and an sshd as its PID 1, on named networks joined by bridges.
///
/// Build one with [`Lab::builder`]. Everything the lab creates is named by its prefix
/// ([`Lab::prefix`]), so labs run side by side, and is removed by [`Lab::shutdown`], by `Drop`,
/// or, after the owning process was killed, by the next lab built on this machine (see
/// [`sweep`](crate::lab::sweep)).
///
/// ```no_run
/// # smol::block_on(async {
/// use harness::exec::{Command, Launcher};
/// use harness::lab::Lab;
/// let lab = Lab::builder()
///     .network("lan", "10.77.1.0/24")
///     .network("wan", "10.77.2.0/24")
///     .host("web", &["lan"])
///     .host("db", &["lan"])
///     .host("edge", &["wan"])
///     .build()
///     .await?;
/// let web = lab.host("web").launcher().await?;
/// let out = web.output(&Command::new("hostname")).await?;
/// assert_eq!(out.stdout, ["web"]);
/// println!("db is at {}", lab.host("db").addr("lan"));
/// drop(web);
/// lab.shutdown().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(()) });
/// ```
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    pub(crate) networks: Vec<LabNetwork>,
    pub(crate) hosts: Vec<LabHost>,
    torn_down: bool,
}

/// A network of a running lab.
#[derive(Debug, Clone)]
pub struct LabNetwork {
    pub(crate) name: String,
    pub(crate) subnet: String,
    pub(crate) gateway: Ipv4Addr,
}

impl LabNetwork {
    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its subnet, `a.b.c.d/len`.
    pub fn subnet(&self) -> &str {
        &self.subnet
    }

    /// The test machine's address on it (the subnet's last host address).
    pub fn gateway(&self) -> IpAddr {
        IpAddr::V4(self.gateway)
    }
}

/// A host of a running lab.
#[derive(Debug)]
pub struct LabHost {
    name: String,
    namespace: String,
    addrs: Vec<(String, Ipv4Addr)>,
    lab_dir: PathBuf,
    pid: u32,
    process: Option<LocalProcess>,
}

impl Lab {
    /// Declares a lab's networks and hosts.
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    pub(crate) fn empty(prefix: String, dir: PathBuf) -> Lab {
        Lab {
            prefix,
            dir,
            networks: Vec::new(),
            hosts: Vec::new(),
            torn_down: false,
        }
    }

    /// The lab's prefix (`hx` and 4 hex digits): every namespace, link and directory of the
    /// lab is named by it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lab's directory (`/run/harness-lab/PREFIX`): keys, sshd configs and logs, and each
    /// host's `/root` under `hosts/NAME/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The host named `name`.
    ///
    /// # Panics
    ///
    /// If the lab has no such host; [`Lab::get_host`] returns an `Option` instead.
    pub fn host(&self, name: &str) -> &LabHost {
        self.get_host(name).unwrap_or_else(|| {
            let known: Vec<&str> = self.hosts.iter().map(|h| h.name()).collect();
            panic!(
                "lab {} has no host `{name}` (hosts: {})",
                self.prefix,
                known.join(", ")
            )
        })
    }

    /// The host named `name`, if there is one.
    pub fn get_host(&self, name: &str) -> Option<&LabHost> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The hosts, in the order they were declared.
    pub fn hosts(&self) -> impl Iterator<Item = &LabHost> {
        self.hosts.iter()
    }

    /// The network named `name`, if there is one.
    pub fn network(&self, name: &str) -> Option<&LabNetwork> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The private key that logs in as root on every host.
    pub fn key(&self) -> PathBuf {
        self.dir.join("client_key")
    }

    /// A known-hosts file listing every host's key at each of its addresses.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// Stops every host and removes everything of the lab: namespaces, links, processes and
    /// the lab directory. Fails with [`LabError::Leftover`] if something is still there after.
    pub async fn shutdown(mut self) -> Result<(), LabError> {
        let processes: Vec<LocalProcess> = self
            .hosts
            .iter_mut()
            .filter_map(|h| h.process.take())
            .collect();
        for mut p in processes {
            // SIGKILL: `unshare --fork` ignores SIGTERM; with it goes its child, the host's
            // PID 1, and with that every process of the host.
            let _ = p.kill().await;
            let _ = p.wait().await;
        }
        self.torn_down = true;
        let prefix = self.prefix.clone();
        blocking::unblock(move || janitor::teardown(&prefix)).await
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        // Dropping a host's process handle kills its process group; the teardown then finds
        // whatever else runs in the lab's namespaces. This blocks for as long as that takes
        // (tens of milliseconds per host); call `shutdown` to do it without blocking.
        for h in &mut self.hosts {
            drop(h.process.take());
        }
        if let Err(e) = janitor::teardown(&self.prefix) {
            tracing::warn!("failed to {e}");
        }
    }
}

impl LabHost {
    pub(crate) fn new(
        name: String,
        namespace: String,
        addrs: Vec<(String, Ipv4Addr)>,
        lab_dir: PathBuf,
        process: LocalProcess,
    ) -> LabHost {
        LabHost {
            name,
            namespace,
            addrs,
            lab_dir,
            pid: process.pid(),
            process: Some(process),
        }
    }

    /// The host's name, also its hostname.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's network namespace (`PREFIX-NAME`), for `ip netns exec`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The pid of the host's `unshare` process on this machine; killing it with SIGKILL takes
    /// the whole host down.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The host's address on `network`.
    ///
    /// # Panics
    ///
    /// If the host is not attached to `network`; [`LabHost::get_addr`] returns an `Option`.
    pub fn addr(&self, network: &str) -> IpAddr {
        self.get_addr(network).unwrap_or_else(|| {
            let known: Vec<&str> = self.addrs.iter().map(|(n, _)| n.as_str()).collect();
            panic!(
                "host `{}` is not on network `{network}` (it is on: {})",
                self.name,
                known.join(", ")
            )
        })
    }

    /// The host's address on `network`, if it is attached to it.
    pub fn get_addr(&self, network: &str) -> Option<IpAddr> {
        self.addrs
            .iter()
            .find(|(n, _)| n == network)
            .map(|&(_, a)| IpAddr::V4(a))
    }

    /// The port its sshd listens on (22: each host has a network namespace of its own).
    pub fn ssh_port(&self) -> u16 {
        SSH_PORT
    }

    /// Where the test machine reaches its sshd: its address on its first network.
    pub fn ssh_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.addrs[0].1), SSH_PORT)
    }

    /// The lab's known-hosts file, which lists this host's key.
    pub fn known_hosts(&self) -> PathBuf {
        self.lab_dir.join("known_hosts")
    }

    /// The options of an SSH connection to this host as root with the lab's key, checking its
    /// host key against the lab's known-hosts file, for adding options before connecting.
    pub fn ssh_builder(&self) -> SshBuilder {
        SshLauncher::builder(self.ssh_addr().to_string(), "root")
            .key(self.lab_dir.join("client_key"))
            .host_keys(HostKeys::Strict(self.known_hosts()))
    }

    /// Connects to the host as root (see [`LabHost::ssh_builder`]).
    pub async fn launcher(&self) -> Result<SshLauncher<LocalLauncher>, LaunchError> {
        self.ssh_builder().connect(LocalLauncher).await
    }
}
