//! `LabBuilder`: declares a lab's networks and hosts, then builds it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::lab::error::LabError;
use crate::lab::host;
use crate::lab::ip::{self, ip};
use crate::lab::janitor;
use crate::lab::running::{Lab, LabHost, LabNetwork};
use crate::lab::subnet::Subnet;

/// The longest host name: it is part of a namespace name and the host's hostname.
const MAX_HOST_NAME: usize = 32;

/// The subnet text that asks the lab to choose a free one.
pub const AUTO_SUBNET: &str = "auto";
/// Where `auto` subnets come from: the /24s of this /16, the first without a route here.
const AUTO_POOL: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 0);
/// Held while a lab chooses `auto` subnets and creates its links, so that two labs building
/// at once do not choose the same one.
const AUTO_LOCK: &str = ".subnets.lock";

/// Declares the networks and hosts of a [`Lab`]; [`LabBuilder::build`] creates them.
#[derive(Debug, Clone, Default)]
#[must_use = "a LabBuilder does nothing until `build` is called"]
pub struct LabBuilder {
    networks: Vec<(String, String)>,
    hosts: Vec<(String, Vec<String>)>,
}

/// A network as planned: its name and subnet.
struct NetPlan {
    name: String,
    subnet: Subnet,
}

/// A host as planned: its name and, per interface (`eth0`, `eth1`, ...), the network's index
/// and the host's address on it.
struct HostPlan {
    name: String,
    links: Vec<(usize, Ipv4Addr)>,
}

impl LabBuilder {
    /// Adds a network named `name` with the IPv4 `subnet` (`"10.77.1.0/24"`): a bridge in the
    /// lab's switch namespace. Hosts get its addresses from the first up, in the order they
    /// are declared; the test machine gets the last one. Labs that run at the same time need
    /// subnets of their own: `"auto"` ([`AUTO_SUBNET`]) has the lab choose a free /24 from
    /// `10.231.0.0/16` at build time, one that no route of this machine covers.
    pub fn network(mut self, name: impl Into<String>, subnet: impl Into<String>) -> Self {
        self.networks.push((name.into(), subnet.into()));
        self
    }

    /// Adds a host named `name` attached to `networks` (declared with [`LabBuilder::network`],
    /// before or after), as `eth0`, `eth1`, ... in that order. The name becomes its hostname.
    pub fn host(mut self, name: impl Into<String>, networks: &[&str]) -> Self {
        self.hosts.push((
            name.into(),
            networks.iter().map(|n| n.to_string()).collect(),
        ));
        self
    }

    /// Creates the lab: sweeps labs whose owner died, reserves a prefix, generates the keys,
    /// creates the namespaces, bridges and links, starts every host's sshd and waits until each
    /// accepts connections. If anything fails, what was created is removed again.
    pub async fn build(mut self) -> Result<Lab, LabError> {
        // Checked with a stand-in for `auto` subnets, before anything is created.
        self.plan()?;
        check_support()?;
        // Sweep first: a dead lab's routes would make its subnets look taken.
        blocking::unblock(janitor::sweep).await;
        // Held until the links exist, when `auto` subnets are taken.
        let _choosing = match self.networks.iter().any(|(_, s)| s == AUTO_SUBNET) {
            true => Some(blocking::unblock(lock_auto_subnets).await?),
            false => None,
        };
        self.choose_auto_subnets()?;
        let (networks, hosts) = self.plan()?;
        for net in &networks {
            check_unrouted(net)?;
        }
        let prefix = blocking::unblock(janitor::reserve).await?;
        // From here on, a failure (or a dropped future) tears down what exists so far.
        let mut lab = Lab::empty(prefix.clone(), janitor::lab_dir(&prefix));
        lab.networks = networks
            .iter()
            .map(|n| LabNetwork {
                name: n.name.clone(),
                subnet: n.subnet.to_string(),
                gateway: n.subnet.gateway(),
            })
            .collect();
        let dir = lab.dir().to_path_buf();
        let plumbing = {
            let (prefix, dir) = (prefix.clone(), dir.clone());
            let hosts: Vec<(String, Vec<(usize, Ipv4Addr)>)> = hosts
                .iter()
                .map(|h| (h.name.clone(), h.links.clone()))
                .collect();
            let subnets: Vec<Subnet> = networks.iter().map(|n| n.subnet).collect();
            blocking::unblock(move || plumb(&prefix, &dir, &subnets, &hosts))
        };
        let inits = plumbing.await?;

        for (plan, init) in hosts.iter().zip(inits) {
            let namespace = format!("{prefix}-{}", plan.name);
            let host_dir = dir.join("hosts").join(&plan.name);
            let mut process = host::spawn(&plan.name, &namespace, &init).await?;
            let addrs: Vec<(String, Ipv4Addr)> = plan
                .links
                .iter()
                .map(|&(net, addr)| (networks[net].name.clone(), addr))
                .collect();
            let first = addrs[0].1;
            let result =
                host::wait_ready(&prefix, &plan.name, &host_dir, &mut process, first).await;
            lab.hosts.push(LabHost::new(
                plan.name.clone(),
                namespace,
                addrs,
                dir.clone(),
                process,
            ));
            result?;
        }
        Ok(lab)
    }

    /// Replaces each `auto` subnet with the first /24 of the pool that no route covers and
    /// no other network of this lab has.
    fn choose_auto_subnets(&mut self) -> Result<(), LabError> {
        let mut taken: Vec<String> = self.networks.iter().map(|(_, s)| s.clone()).collect();
        for i in 0..self.networks.len() {
            if self.networks[i].1 != AUTO_SUBNET {
                continue;
            }
            let name = self.networks[i].0.clone();
            let free = (0..=255u8)
                .map(|third| {
                    let [a, b, _, _] = AUTO_POOL.octets();
                    format!("{}/24", Ipv4Addr::new(a, b, third, 0))
                })
                .filter(|candidate| !taken.contains(candidate))
                .find(|candidate| {
                    let plan = NetPlan {
                        name: name.clone(),
                        subnet: Subnet::parse(candidate).expect("a valid /24"),
                    };
                    check_unrouted(&plan).is_ok()
                })
                .ok_or_else(|| LabError::InvalidSubnet {
                    network: name.clone(),
                    subnet: AUTO_SUBNET.to_string(),
                    reason: format!("every /24 of {AUTO_POOL}/16 is routed already"),
                })?;
            taken.push(free.clone());
            self.networks[i].1 = free;
        }
        Ok(())
    }

    /// Checks names, subnets and attachments, and hands out addresses.
    fn plan(&self) -> Result<(Vec<NetPlan>, Vec<HostPlan>), LabError> {
        let mut networks: Vec<NetPlan> = Vec::new();
        for (name, subnet) in &self.networks {
            check_name("network", name, 64)?;
            if networks.iter().any(|n| &n.name == name) {
                return Err(invalid("network", name, "declared twice"));
            }
            // A stand-in of the size an `auto` subnet gets.
            let subnet = match subnet.as_str() {
                AUTO_SUBNET => "10.231.0.0/24",
                subnet => subnet,
            };
            let parsed = Subnet::parse(subnet).map_err(|reason| LabError::InvalidSubnet {
                network: name.clone(),
                subnet: subnet.to_string(),
                reason,
            })?;
            networks.push(NetPlan {
                name: name.clone(),
                subnet: parsed,
            });
        }
        let mut used = vec![0u32; networks.len()];
        let mut hosts: Vec<HostPlan> = Vec::new();
        for (name, attached) in &self.hosts {
            check_name("host", name, MAX_HOST_NAME)?;
            if hosts.iter().any(|h| &h.name == name) {
                return Err(invalid("host", name, "declared twice"));
            }
            if attached.is_empty() {
                return Err(invalid("host", name, "it is attached to no network"));
            }
            let mut links = Vec::new();
            for network in attached {
                let Some(i) = networks.iter().position(|n| &n.name == network) else {
                    return Err(LabError::UnknownNetwork {
                        host: name.clone(),
                        network: network.clone(),
                        known: networks
                            .iter()
                            .map(|n| n.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                };
                if links.iter().any(|&(j, _)| j == i) {
                    return Err(invalid(
                        "host",
                        name,
                        &format!("it is attached to `{network}` twice"),
                    ));
                }
                used[i] += 1;
                // The last address is the test machine's.
                if used[i] >= networks[i].subnet.capacity() {
                    return Err(LabError::InvalidSubnet {
                        network: network.clone(),
                        subnet: networks[i].subnet.to_string(),
                        reason: format!("no address left for host `{name}`"),
                    });
                }
                links.push((i, networks[i].subnet.host(used[i])));
            }
            hosts.push(HostPlan {
                name: name.clone(),
                links,
            });
        }
        Ok((networks, hosts))
    }
}

fn invalid(what: &'static str, name: &str, reason: &str) -> LabError {
    LabError::InvalidName {
        what,
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

/// Names are lower-case letters, digits and `-`, starting with a letter or digit: they become
/// namespace names and hostnames.
fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), LabError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.is_empty() || name.len() > max || !ok_chars || name.starts_with('-') {
        return Err(invalid(
            what,
            name,
            &format!("use 1 to {max} lower-case letters, digits and `-`, not starting with `-`"),
        ));
    }
    Ok(())
}

/// Root, `ip` with `netns`, `unshare` and `sshd`: without them there is no lab.
fn check_support() -> Result<(), LabError> {
    if !rustix::process::geteuid().is_root() {
        return Err(LabError::Unsupported(
            "a lab creates network namespaces, which needs root".into(),
        ));
    }
    for program in ["ip", "unshare", "ssh-keygen"] {
        let found = std::process::Command::new(program)
            .arg(if program == "ip" { "-V" } else { "--help" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Err(LabError::Unsupported(format!(
                "`{program}` is not installed (iproute2, util-linux, openssh-client)"
            )));
        }
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        return Err(LabError::Unsupported(
            "/usr/sbin/sshd is not installed (openssh-server)".into(),
        ));
    }
    Ok(())
}

/// Takes the lock under which labs choose `auto` subnets (blocking).
fn lock_auto_subnets() -> Result<std::fs::File, LabError> {
    let dir = Path::new(janitor::REGISTRY_DIR);
    std::fs::create_dir_all(dir)
        .map_err(|e| LabError::io(format!("create the lab registry {}", dir.display()), e))?;
    let path = dir.join(AUTO_LOCK);
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LabError::io(format!("open {}", path.display()), e))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| LabError::io(format!("lock {}", path.display()), e.into()))?;
    Ok(file)
}

/// Refuses a subnet that this machine already has a route into: the test machine joins every
/// lab network, and two routes for one subnet would send its traffic to the wrong lab.
fn check_unrouted(net: &NetPlan) -> Result<(), LabError> {
    let subnet = net.subnet.to_string();
    let routes = ip(
        "-",
        "list the routes",
        &["-4", "route", "show", "root", &subnet],
    )?;
    match routes.lines().find(|l| !l.trim().is_empty()) {
        None => Ok(()),
        Some(route) => Err(LabError::SubnetInUse {
            network: net.name.clone(),
            subnet,
            route: route.trim().to_string(),
        }),
    }
}

/// Creates the keys, the files of each host, the namespaces, bridges, links and addresses, and
/// returns each host's init script. Runs on a blocking thread.
///
/// Layout: namespace `PREFIX` (the switch) holds bridge `brN` per network. The test machine
/// joins network N through the veth `PREFIX-N` (root namespace) / `upN` (switch), with the
/// network's last address. Host J joins its Kth network through `ethK` (its namespace) /
/// `hJnK` (switch). The bridges live outside the root namespace so that the root namespace's
/// firewall (Docker's, with `br_netfilter` loaded) never sees the traffic bridged between hosts.
fn plumb(
    prefix: &str,
    dir: &Path,
    subnets: &[Subnet],
    hosts: &[(String, Vec<(usize, Ipv4Addr)>)],
) -> Result<Vec<PathBuf>, LabError> {
    let p = prefix;
    keygen(p, &dir.join("host_key"))?;
    keygen(p, &dir.join("client_key"))?;
    let copy = |from: &str, to: &str| {
        std::fs::copy(dir.join(from), dir.join(to))
            .map_err(|e| LabError::io(format!("copy {from} to {to} in {}", dir.display()), e))
    };
    copy("client_key.pub", "authorized_keys")?;
    let host_public = std::fs::read_to_string(dir.join("host_key.pub"))
        .map_err(|e| LabError::io(format!("read {}/host_key.pub", dir.display()), e))?;
    let host_public: Vec<&str> = host_public.split_whitespace().take(2).collect();
    let mut known_hosts = String::new();
    for (_, links) in hosts {
        for (_, addr) in links {
            known_hosts.push_str(&format!("{addr} {}\n", host_public.join(" ")));
        }
    }
    std::fs::write(dir.join("known_hosts"), known_hosts)
        .map_err(|e| LabError::io(format!("write {}/known_hosts", dir.display()), e))?;

    ip(p, "create the switch namespace", &["netns", "add", p])?;
    for (n, subnet) in subnets.iter().enumerate() {
        let (br, up, root) = (format!("br{n}"), format!("up{n}"), format!("{p}-{n}"));
        let doing = format!("create the bridge of network {n} ({subnet})");
        ip(p, &doing, &["-n", p, "link", "add", &br, "type", "bridge"])?;
        ip(p, &doing, &["-n", p, "link", "set", &br, "up"])?;
        let doing = format!("attach this machine to network {n} ({subnet})");
        ip(
            p,
            &doing,
            &[
                "link", "add", &root, "type", "veth", "peer", "name", &up, "netns", p,
            ],
        )?;
        ip(
            p,
            &doing,
            &["-n", p, "link", "set", &up, "master", &br, "up"],
        )?;
        let gateway = format!("{}/{}", subnet.gateway(), subnet.len);
        ip(p, &doing, &["addr", "add", &gateway, "dev", &root])?;
        ip(p, &doing, &["link", "set", &root, "up"])?;
    }
    let mut inits = Vec::new();
    for (j, (name, links)) in hosts.iter().enumerate() {
        let ns = format!("{p}-{name}");
        let doing = format!("create host `{name}`");
        ip(p, &doing, &["netns", "add", &ns])?;
        ip(p, &doing, &["-n", &ns, "link", "set", "lo", "up"])?;
        for (k, &(net, addr)) in links.iter().enumerate() {
            let (eth, port, br) = (format!("eth{k}"), format!("h{j}n{k}"), format!("br{net}"));
            let doing = format!("attach host `{name}` to network {net} as {eth}");
            ip(
                p,
                &doing,
                &[
                    "link", "add", &eth, "netns", &ns, "type", "veth", "peer", "name", &port,
                    "netns", p,
                ],
            )?;
            ip(
                p,
                &doing,
                &["-n", p, "link", "set", &port, "master", &br, "up"],
            )?;
            let cidr = format!("{addr}/{}", subnets[net].len);
            ip(p, &doing, &["-n", &ns, "addr", "add", &cidr, "dev", &eth])?;
            ip(p, &doing, &["-n", &ns, "link", "set", &eth, "up"])?;
        }
        inits.push(host::write_files(dir, &dir.join("hosts").join(name), name)?);
    }
    Ok(inits)
}

fn keygen(prefix: &str, path: &Path) -> Result<(), LabError> {
    let path = path.to_string_lossy();
    ip::run(
        prefix,
        "generate a lab key",
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-C", prefix, "-f", &path],
    )
    .map(drop)
}
