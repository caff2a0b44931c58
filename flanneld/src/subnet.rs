//! Subnet keys (`10.5.52.0-24`, `10.5.52.0-24&fc00:0:0:5::-64`) as Go writes and parses them
//! (`pkg/subnet/subnet.go`), and the small random pick subnet allocation and MACs use.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

/// `ip + n`, wrapping.
pub fn v4_add(ip: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip).wrapping_add(n))
}

/// `ip + n`, wrapping.
pub fn v6_add(ip: Ipv6Addr, n: u128) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(ip).wrapping_add(n))
}

/// A lease's subnets: the key of `<prefix>/subnets/<key>`. At least one is set: etcd's
/// leases always have the IPv4 one; a kube lease of an IPv6-only network has only the IPv6
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubnetKey {
    /// The IPv4 subnet (always present with etcd).
    pub v4: Option<Ipv4Network>,
    /// The IPv6 subnet of a dual-stack or IPv6-only lease.
    pub v6: Option<Ipv6Network>,
}

impl fmt::Display for SubnetKey {
    /// Go's `MakeSubnetKey`: `.`-separated address, `-` before the prefix length; `&` joins
    /// the IPv6 part in its compressed form (alone without an IPv4 subnet).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v4) = self.v4 {
            write!(f, "{}-{}", v4.ip(), v4.prefix())?;
        }
        match (self.v4, self.v6) {
            (Some(_), Some(v6)) => write!(f, "&{}-{}", v6.ip(), v6.prefix()),
            (None, Some(v6)) => write!(f, "{}-{}", v6.ip(), v6.prefix()),
            _ => Ok(()),
        }
    }
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl SubnetKey {
    /// Parses the last component of a lease key. Go's regex
    /// (`(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$`, prefix lengths parsed into 5 and 7
    /// bits) decides what is a key; beyond Go, a subnet that is not its own network address
    /// (`10.5.52.7-24`) is refused too, so no route is ever made from it.
    pub fn parse(s: &str) -> Option<SubnetKey> {
        let (v4_part, v6_part) = match s.split_once('&') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let (addr, len) = v4_part.rsplit_once('-')?;
        if !digits(len) || len.len() > 2 {
            return None;
        }
        let len: u8 = len.parse().ok().filter(|l| *l < 32)?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let v4 = Ipv4Network::new(addr, len).ok()?;
        if v4.network() != addr {
            return None;
        }
        let v6 = match v6_part {
            None => None,
            Some(p) => {
                let (addr, len) = p.rsplit_once('-')?;
                if addr.is_empty()
                    || !addr
                        .bytes()
                        .all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9' | b':'))
                    || !digits(len)
                    || len.len() > 3
                {
                    return None;
                }
                let len: u8 = len.parse().ok().filter(|l| *l < 128)?;
                let addr: Ipv6Addr = addr.parse().ok()?;
                let v6 = Ipv6Network::new(addr, len).ok()?;
                if v6.network() != addr {
                    return None;
                }
                Some(v6)
            }
        };
        Some(SubnetKey { v4: Some(v4), v6 })
    }

    /// The subnet that names the lease among the others: the IPv4 one, else the IPv6 one
    /// (a peer re-keyed to another IPv6 subnet under the same IPv4 one is the same peer).
    pub fn id(&self) -> Option<IpNetwork> {
        self.v4
            .map(IpNetwork::V4)
            .or_else(|| self.v6.map(IpNetwork::V6))
    }
}

/// A small xorshift generator for the random pick (Go seeds math/rand with the time); no
/// cryptographic quality is needed, only different nodes picking different subnets.
#[derive(Debug, Clone)]
pub struct Pick(u64);

impl Pick {
    /// Seeded from the clock and the process id.
    pub fn seeded() -> Pick {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Pick((t ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    /// An index below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        if n == 0 { 0 } else { (x % n as u64) as usize }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SubnetKey {
        SubnetKey::parse(s).unwrap()
    }

    #[test]
    fn key_forms_as_go_writes_them() {
        let k = key("10.5.52.0-24");
        assert_eq!(k.v4.unwrap().to_string(), "10.5.52.0/24");
        assert_eq!(k.to_string(), "10.5.52.0-24");
        let d = key("10.5.52.0-24&fc00:0:0:5::-64");
        assert_eq!(d.v6.unwrap().to_string(), "fc00:0:0:5::/64");
        assert_eq!(d.to_string(), "10.5.52.0-24&fc00:0:0:5::-64");
        // Rust prints IPv6 as Go does (RFC 5952).
        let k = SubnetKey {
            v4: Some("10.0.1.0/24".parse().unwrap()),
            v6: Some("2001:db8:0:1::/64".parse().unwrap()),
        };
        assert_eq!(k.to_string(), "10.0.1.0-24&2001:db8:0:1::-64");
    }

    #[test]
    fn bad_keys_refused() {
        for bad in [
            "",
            "10.5.52.0",
            "10.5.52.0-",
            "10.5.52.0-33",
            "10.5.52.0-32",
            "10.5.52.7-24",
            "10.5.52.0/24",
            "x-24",
            "10.5.52.0-24&FC00::-64",
            "10.5.52.0-24&fc00::-129",
            "10.5.52.0-24&fc00::1-64",
            "10.5.52.0-+4",
            "300.5.52.0-24",
            "10.5.52.0-24&",
        ] {
            assert_eq!(SubnetKey::parse(bad), None, "{bad}");
        }
    }
    #[test]
    fn pick_stays_below() {
        let mut p = Pick::seeded();
        for n in 1..200 {
            assert!(p.below(n) < n);
        }
        assert_eq!(p.below(0), 0);
    }
}
