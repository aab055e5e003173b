//! Who peers with whom: each node's WireGuard configuration, computed from the nodes alone.
//!
//! Two nodes are *linked* when one can send to the other over the underlay: they share a
//! network, or one of them is the test machine, which reaches every node at its first address.
//! Linked nodes are peers. A pair that is not linked is routed through a relay node linked to
//! both (the relay's peer entry carries the far node's /32 too, and the relay forwards between
//! its peers); with no such relay the pair has no path and no peer entry.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::network::key::{PrivateKey, PublicKey};

/// How traffic between two mesh nodes travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Straight between the two: one can reach the other over the underlay.
    Direct,
    /// Through this relay node, which both reach.
    Via(String),
    /// No path: neither reaches the other, and no relay reaches both.
    None,
}

/// What the plan needs to know of a node.
#[derive(Debug, Clone)]
pub(crate) struct View<'a> {
    pub(crate) name: &'a str,
    pub(crate) addr: Ipv4Addr,
    pub(crate) public: PublicKey,
    pub(crate) port: u16,
    pub(crate) underlay: &'a [(String, IpAddr)],
    pub(crate) local: bool,
    pub(crate) relay: bool,
}

/// The underlay address at which `from` sends to `to`, if it can.
pub(crate) fn endpoint(from: &View, to: &View) -> Option<IpAddr> {
    let shared = to
        .underlay
        .iter()
        .find(|(net, _)| from.underlay.iter().any(|(mine, _)| mine == net));
    match shared {
        Some(&(_, addr)) => Some(addr),
        None if from.local => to.underlay.first().map(|&(_, addr)| addr),
        None => None,
    }
}

fn linked(a: &View, b: &View) -> bool {
    endpoint(a, b).is_some() || endpoint(b, a).is_some()
}

/// How traffic from node `a` to node `b` (indices into `nodes`) travels.
pub(crate) fn route(nodes: &[View], a: usize, b: usize) -> Route {
    if linked(&nodes[a], &nodes[b]) {
        return Route::Direct;
    }
    // The test machine never relays: forwarding in the root namespace would change the
    // machine for everything else on it (and Docker's FORWARD policy drops it anyway).
    nodes
        .iter()
        .enumerate()
        .find(|&(r, n)| {
            r != a && r != b && n.relay && !n.local && linked(n, &nodes[a]) && linked(n, &nodes[b])
        })
        .map_or(Route::None, |(_, n)| Route::Via(n.name.to_string()))
}

/// Node `i`'s whole configuration, in the form `wg setconf` and `wg syncconf` read.
/// `keepalive` gives the persistent keepalive for each peer, by its key.
pub(crate) fn render(
    nodes: &[View],
    i: usize,
    key: &PrivateKey,
    keepalive: impl Fn(&PublicKey) -> Option<u16>,
) -> String {
    let me = &nodes[i];
    // Per peer (by index): the addresses it carries for this node.
    let mut allowed: Vec<BTreeSet<Ipv4Addr>> = vec![BTreeSet::new(); nodes.len()];
    for (j, node) in nodes.iter().enumerate() {
        if j == i {
            continue;
        }
        match route(nodes, i, j) {
            Route::Direct => {
                allowed[j].insert(node.addr);
            }
            Route::Via(relay) => {
                let r = nodes
                    .iter()
                    .position(|n| n.name == relay)
                    .expect("a relay is a node");
                allowed[r].insert(node.addr);
            }
            Route::None => {}
        }
    }
    let mut text = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = {}\n",
        key.to_base64(),
        me.port
    );
    for (j, addrs) in allowed.iter().enumerate() {
        if addrs.is_empty() {
            continue;
        }
        let peer = &nodes[j];
        let ips: Vec<String> = addrs.iter().map(|a| format!("{a}/32")).collect();
        let _ = write!(
            text,
            "\n[Peer]\nPublicKey = {}\nAllowedIPs = {}\n",
            peer.public,
            ips.join(", ")
        );
        if let Some(addr) = endpoint(me, peer) {
            let _ = writeln!(text, "Endpoint = {}", SocketAddr::new(addr, peer.port));
            if let Some(seconds) = keepalive(&peer.public) {
                let _ = writeln!(text, "PersistentKeepalive = {seconds}");
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Node {
        name: &'static str,
        underlay: Vec<(String, IpAddr)>,
        local: bool,
        relay: bool,
        key: PrivateKey,
    }

    fn node(name: &'static str, nets: &[(&str, [u8; 4])], local: bool, relay: bool) -> Node {
        Node {
            name,
            underlay: nets
                .iter()
                .map(|&(n, a)| (n.to_string(), IpAddr::from(a)))
                .collect(),
            local,
            relay,
            key: PrivateKey::from_bytes([name.len() as u8 + name.as_bytes()[0]; 32]),
        }
    }

    fn views(nodes: &[Node]) -> Vec<View<'_>> {
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| View {
                name: n.name,
                addr: Ipv4Addr::new(10, 42, 0, i as u8 + 1),
                public: n.key.public_key(),
                port: 51820 + i as u16,
                underlay: &n.underlay,
                local: n.local,
                relay: n.relay,
            })
            .collect()
    }

    /// The test machine on both networks, a LAN host, a WAN host, and an edge host on both.
    fn lab(edge_relays: bool) -> Vec<Node> {
        vec![
            node(
                "local",
                &[("lan", [10, 1, 0, 254]), ("wan", [10, 2, 0, 254])],
                true,
                false,
            ),
            node("lan-a", &[("lan", [10, 1, 0, 1])], false, false),
            node("wan-b", &[("wan", [10, 2, 0, 1])], false, false),
            node(
                "edge",
                &[("lan", [10, 1, 0, 2]), ("wan", [10, 2, 0, 2])],
                false,
                edge_relays,
            ),
        ]
    }

    #[test]
    fn pairs_without_a_shared_network_go_through_a_relay_or_nowhere() {
        let nodes = lab(true);
        let v = views(&nodes);
        assert_eq!(route(&v, 0, 1), Route::Direct);
        assert_eq!(route(&v, 1, 0), Route::Direct);
        assert_eq!(route(&v, 1, 3), Route::Direct);
        assert_eq!(route(&v, 1, 2), Route::Via("edge".into()));
        assert_eq!(route(&v, 2, 1), Route::Via("edge".into()));
        let nodes = lab(false);
        let v = views(&nodes);
        assert_eq!(route(&v, 1, 2), Route::None);
    }

    #[test]
    fn configs_name_endpoints_on_shared_networks_and_relay_routes() {
        let nodes = lab(true);
        let v = views(&nodes);
        let lan = render(&v, 1, &nodes[1].key, |_| Some(25));
        let want = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 51821\n\
             \n[Peer]\nPublicKey = {}\nAllowedIPs = 10.42.0.1/32\n\
             Endpoint = 10.1.0.254:51820\nPersistentKeepalive = 25\n\
             \n[Peer]\nPublicKey = {}\nAllowedIPs = 10.42.0.3/32, 10.42.0.4/32\n\
             Endpoint = 10.1.0.2:51823\nPersistentKeepalive = 25\n",
            nodes[1].key.to_base64(),
            nodes[0].key.public_key(),
            nodes[3].key.public_key(),
        );
        assert_eq!(lan, want);
        // The test machine reaches the WAN host on the WAN.
        let local = render(&v, 0, &nodes[0].key, |_| None);
        assert!(local.contains("AllowedIPs = 10.42.0.3/32\nEndpoint = 10.2.0.1:51822\n"));
        assert!(!local.contains("PersistentKeepalive"));
    }

    #[test]
    fn a_host_the_test_machine_reaches_but_not_back_has_no_endpoint_for_it() {
        let nodes = vec![
            node("local", &[], true, false),
            node("cloud", &[("internet", [203, 0, 113, 9])], false, false),
        ];
        let v = views(&nodes);
        assert_eq!(route(&v, 1, 0), Route::Direct);
        assert!(
            render(&v, 0, &nodes[0].key, |_| Some(25)).contains("Endpoint = 203.0.113.9:51821")
        );
        assert!(!render(&v, 1, &nodes[1].key, |_| Some(25)).contains("Endpoint"));
    }
}
