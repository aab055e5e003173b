//! IPv4 subnets of lab networks and the addresses handed out in them.

use std::net::Ipv4Addr;

/// An IPv4 network, `a.b.c.d/len`, with the host bits of `base` zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subnet {
    pub(crate) base: Ipv4Addr,
    pub(crate) len: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/len`; the length must leave room for at least two hosts (at most /30).
    pub(crate) fn parse(s: &str) -> Result<Subnet, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| "expected an IPv4 network such as 10.77.1.0/24".to_string())?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| (8..=30).contains(l))
            .ok_or_else(|| format!("prefix length `{len}` is not between 8 and 30"))?;
        let mask = u32::MAX << (32 - len);
        if u32::from(addr) & !mask != 0 {
            return Err(format!(
                "host bits are set; the network is {}/{len}",
                Ipv4Addr::from(u32::from(addr) & mask)
            ));
        }
        Ok(Subnet { base: addr, len })
    }

    /// The `n`th host address (1 is the first after the network address).
    pub(crate) fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + n)
    }

    /// How many host addresses the subnet has (without network and broadcast addresses).
    pub(crate) fn capacity(&self) -> u32 {
        (1u32 << (32 - self.len)) - 2
    }

    /// The address of the test machine on this network: the last host address, so hosts count
    /// up from the first without meeting it.
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        self.host(self.capacity())
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_hand_out_addresses() {
        let s = Subnet::parse("10.77.1.0/24").unwrap();
        assert_eq!(s.host(1), Ipv4Addr::new(10, 77, 1, 1));
        assert_eq!(s.capacity(), 254);
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 77, 1, 254));
        assert_eq!(s.to_string(), "10.77.1.0/24");
        let s = Subnet::parse("10.77.1.8/30").unwrap();
        assert_eq!(
            (s.host(1), s.gateway()),
            (Ipv4Addr::new(10, 77, 1, 9), s.host(2))
        );
    }

    #[test]
    fn bad_subnets_say_why() {
        for (input, fragment) in [
            ("10.77.1.0", "expected an IPv4 network"),
            ("10.77.1.300/24", "not an IPv4 address"),
            ("10.77.1.0/31", "not between 8 and 30"),
            ("10.77.1.1/24", "the network is 10.77.1.0/24"),
        ] {
            let err = Subnet::parse(input).unwrap_err();
            assert!(err.contains(fragment), "{input}: {err}");
        }
    }
}
