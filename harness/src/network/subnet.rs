//! The mesh's subnet and the addresses handed out from it.

use std::fmt;
use std::net::Ipv4Addr;

/// The subnet a mesh uses when none is given: ADR-007's `wireguard_subnet` default.
pub const DEFAULT_SUBNET: &str = "10.42.0.0/16";

/// An IPv4 subnet for a mesh: every node gets one of its host addresses (a /32 to its peers),
/// and each node's interface gets the whole subnet as its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshSubnet {
    base: Ipv4Addr,
    len: u8,
}

impl MeshSubnet {
    /// Parses `a.b.c.d/len` with `len` from 8 to 30 and no host bits set.
    pub fn parse(text: &str) -> Result<MeshSubnet, String> {
        let (addr, len) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| "expected `a.b.c.d/len`, like 10.42.0.0/16".to_string())?;
        let base: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("`{len}` is not a prefix length"))?;
        if !(8..=30).contains(&len) {
            return Err(format!(
                "a /{len} prefix is not supported (use /8 to /30, so there are host addresses)"
            ));
        }
        let mask = u32::MAX << (32 - len);
        if u32::from(base) & !mask != 0 {
            let network = Ipv4Addr::from(u32::from(base) & mask);
            return Err(format!(
                "`{text}` has host bits set (the network is {network}/{len})"
            ));
        }
        Ok(MeshSubnet { base, len })
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// How many host addresses there are (neither the network nor the broadcast address).
    pub fn capacity(&self) -> u32 {
        (1u32 << (32 - self.len)) - 2
    }

    /// The `n`th host address (from 1), or `None` past the last one.
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        (n >= 1 && n <= self.capacity()).then(|| Ipv4Addr::from(u32::from(self.base) + n))
    }

    /// Whether `addr` lies in the subnet.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.len);
        u32::from(addr) & mask == u32::from(self.base)
    }
}

impl fmt::Display for MeshSubnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.len)
    }
}

impl Default for MeshSubnet {
    fn default() -> Self {
        MeshSubnet::parse(DEFAULT_SUBNET).expect("the default subnet parses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_handed_out_from_the_first() {
        let s = MeshSubnet::default();
        assert_eq!(s.to_string(), "10.42.0.0/16");
        assert_eq!(s.host(1), Some(Ipv4Addr::new(10, 42, 0, 1)));
        assert_eq!(s.host(256), Some(Ipv4Addr::new(10, 42, 1, 0)));
        assert_eq!(s.capacity(), 65534);
        assert_eq!(s.host(65534), Some(Ipv4Addr::new(10, 42, 255, 254)));
        assert_eq!(s.host(65535), None);
        assert_eq!(s.host(0), None);
        assert!(s.contains(Ipv4Addr::new(10, 42, 7, 9)));
        assert!(!s.contains(Ipv4Addr::new(10, 43, 0, 1)));
        let small = MeshSubnet::parse("10.9.0.0/30").unwrap();
        assert_eq!(small.capacity(), 2);
        assert_eq!(small.host(3), None);
    }

    #[test]
    fn bad_subnets_say_why() {
        let cases = [
            ("10.42.0.0", "expected `a.b.c.d/len`"),
            ("10.42.0/16", "is not an IPv4 address"),
            ("10.42.0.0/x", "is not a prefix length"),
            ("10.42.0.0/31", "/31 prefix is not supported"),
            ("10.0.0.0/4", "/4 prefix is not supported"),
            (
                "10.42.0.1/16",
                "host bits set (the network is 10.42.0.0/16)",
            ),
        ];
        for (text, want) in cases {
            let err = MeshSubnet::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
