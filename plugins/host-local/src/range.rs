//! Ranges and range sets: validation with the reference's messages, containment, overlap,
//! and the round-robin walk over a set.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

/// A validated range: every address is of the subnet's family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNetwork,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

/// A range as written in the config, before defaults and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSpec {
    pub subnet: IpNetwork,
    pub start: Option<IpAddr>,
    pub end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
}

/// Addresses as integers so that v4 and v6 share one arithmetic.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        // Callers stay within the subnet, so the value fits in 32 bits.
        IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address, as Go's `To4` makes it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

impl RangeSpec {
    /// Fills defaults and checks the range, with the Go plugin's messages.
    pub fn canonicalize(&self) -> Result<Range, String> {
        let subnet = IpNetwork::new(canonical(self.subnet.ip()), self.subnet.prefix())
            .map_err(|_| "IPNet IP and Mask version mismatch".to_owned())?;
        let bits: u8 = if subnet.is_ipv4() { 32 } else { 128 };
        if subnet.prefix() > bits - 2 {
            return Err(format!("Network {subnet} too small to allocate from"));
        }
        if subnet.ip() != subnet.network() {
            return Err(format!(
                "Network has host bits set. For a subnet mask of length {} the network address is {}",
                subnet.prefix(),
                subnet.network()
            ));
        }
        let v4 = subnet.is_ipv4();
        let first = to_u128(subnet.network()) + 1;
        let last = to_u128(subnet.broadcast()) - u128::from(v4);
        let check = |what: &str, ip: IpAddr| -> Result<IpAddr, String> {
            let ip = canonical(ip);
            if !same_family(ip, subnet.ip()) {
                return Err(format!(
                    "{what} {ip} is not the same protocol as subnet {subnet}"
                ));
            }
            if !subnet.contains(ip) {
                return Err(format!("{what} {ip} not in network {subnet}"));
            }
            Ok(ip)
        };
        let start = match self.start {
            Some(ip) => check("RangeStart", ip)?,
            None => from_u128(first, v4),
        };
        let end = match self.end {
            Some(ip) => check("RangeEnd", ip)?,
            // Broadcast excluded for IPv4; for IPv6 the last address is usable.
            None => from_u128(last, v4),
        };
        if to_u128(end) < to_u128(start) {
            return Err(format!("RangeEnd {end} is before RangeStart {start}"));
        }
        // An explicit gateway is not required to lie in the subnet (as in Go).
        let gateway = self
            .gateway
            .map(canonical)
            .unwrap_or_else(|| from_u128(first, v4));
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }
}

impl Range {
    pub fn is_ipv4(&self) -> bool {
        self.subnet.is_ipv4()
    }

    /// In the subnet and between start and end, inclusive.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        same_family(ip, self.start)
            && self.subnet.contains(ip)
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        same_family(self.start, other.start)
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }

    /// The address after `ip`, or `None` past the end of the range.
    fn next(&self, ip: IpAddr) -> Option<IpAddr> {
        let v = to_u128(ip);
        (v < to_u128(self.end)).then(|| from_u128(v + 1, self.is_ipv4()))
    }

    /// Addresses this range can hand out (the gateway excluded).
    pub fn capacity(&self) -> u128 {
        let n = to_u128(self.end) - to_u128(self.start) + 1;
        if self.contains(self.gateway) {
            n - 1
        } else {
            n
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Ranges of one family from which one address is allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl RangeSet {
    pub fn from_specs(specs: &[RangeSpec]) -> Result<RangeSet, String> {
        if specs.is_empty() {
            return Err("empty range set".into());
        }
        let ranges = specs
            .iter()
            .map(RangeSpec::canonicalize)
            .collect::<Result<Vec<_>, _>>()?;
        if ranges.iter().any(|r| r.is_ipv4() != ranges[0].is_ipv4()) {
            return Err("mixed address families".into());
        }
        for (i, a) in ranges.iter().enumerate() {
            if let Some(b) = ranges[i + 1..].iter().find(|b| a.overlaps(b)) {
                return Err(format!("subnets {a} and {b} overlap"));
            }
        }
        Ok(RangeSet(ranges))
    }

    pub fn is_ipv4(&self) -> bool {
        self.0.first().is_some_and(Range::is_ipv4)
    }

    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    pub fn capacity(&self) -> u128 {
        self.0
            .iter()
            .map(Range::capacity)
            .fold(0, u128::saturating_add)
    }

    /// The allocation order: just after `last` when it lies in the set (round-robin), else
    /// from the first range's start; each range's gateway skipped; every address at most once.
    pub fn walk(&self, last: Option<IpAddr>) -> Walk<'_> {
        let resume = last.and_then(|ip| {
            self.0
                .iter()
                .position(|r| r.contains(ip))
                .map(|idx| (idx, canonical(ip)))
        });
        Walk {
            set: self,
            state: match resume {
                Some((idx, ip)) => WalkState::After(idx, ip),
                None => WalkState::Fresh,
            },
            first: None,
        }
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Range::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[derive(Debug, Clone, Copy)]
enum WalkState {
    Fresh,
    After(usize, IpAddr),
    Done,
}

/// Iterator over candidate addresses with their range.
#[derive(Debug)]
pub struct Walk<'a> {
    set: &'a RangeSet,
    state: WalkState,
    first: Option<IpAddr>,
}

impl<'a> Iterator for Walk<'a> {
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (idx, ip) = match self.state {
                WalkState::Done => return None,
                WalkState::Fresh => (0, self.set.0.first()?.start),
                WalkState::After(idx, cur) => {
                    let range = self.set.0.get(idx)?;
                    match range.next(cur) {
                        Some(ip) => (idx, ip),
                        None => {
                            let next = (idx + 1) % self.set.0.len();
                            (next, self.set.0[next].start)
                        }
                    }
                }
            };
            if self.first == Some(ip) {
                self.state = WalkState::Done;
                return None;
            }
            self.first.get_or_insert(ip);
            self.state = WalkState::After(idx, ip);
            let range = &self.set.0[idx];
            if ip != range.gateway {
                return Some((ip, range));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnet: &str) -> RangeSpec {
        RangeSpec {
            subnet: subnet.parse().unwrap(),
            start: None,
            end: None,
            gateway: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults() {
        let r = spec("10.1.2.0/29").canonicalize().unwrap();
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.1.2.1"), ip("10.1.2.6"), ip("10.1.2.1"))
        );
        let r6 = spec("fd00:1::/125").canonicalize().unwrap();
        // The last IPv6 address is allocatable (no broadcast).
        assert_eq!((r6.start, r6.end), (ip("fd00:1::1"), ip("fd00:1::7")));
        assert_eq!(r.to_string(), "10.1.2.1-10.1.2.6");
        assert_eq!(r.capacity(), 5);
    }

    #[test]
    fn validation_messages() {
        let err = |s: RangeSpec| s.canonicalize().unwrap_err();
        assert_eq!(
            err(spec("10.0.0.0/31")),
            "Network 10.0.0.0/31 too small to allocate from"
        );
        assert_eq!(
            err(spec("fd00::/127")),
            "Network fd00::/127 too small to allocate from"
        );
        assert_eq!(
            err(spec("10.7.0.1/24")),
            "Network has host bits set. For a subnet mask of length 24 the network address is 10.7.0.0"
        );
        let mut s = spec("10.9.0.0/24");
        s.start = Some(ip("10.10.0.1"));
        assert_eq!(err(s), "RangeStart 10.10.0.1 not in network 10.9.0.0/24");
        let mut s = spec("10.9.0.0/24");
        s.end = Some(ip("fd00::1"));
        assert_eq!(
            err(s),
            "RangeEnd fd00::1 is not the same protocol as subnet 10.9.0.0/24"
        );
        let mut s = spec("10.9.0.0/24");
        s.start = Some(ip("10.9.0.50"));
        s.end = Some(ip("10.9.0.10"));
        assert_eq!(err(s), "RangeEnd 10.9.0.10 is before RangeStart 10.9.0.50");
    }

    #[test]
    fn set_validation() {
        assert_eq!(RangeSet::from_specs(&[]).unwrap_err(), "empty range set");
        assert_eq!(
            RangeSet::from_specs(&[spec("10.0.0.0/24"), spec("fd00::/64")]).unwrap_err(),
            "mixed address families"
        );
        assert_eq!(
            RangeSet::from_specs(&[spec("10.0.0.0/24"), spec("10.0.0.0/25")]).unwrap_err(),
            "subnets 10.0.0.1-10.0.0.254 and 10.0.0.1-10.0.0.126 overlap"
        );
    }

    #[test]
    fn walk_skips_gateway_wraps_and_ends() {
        let set = RangeSet::from_specs(&[spec("10.1.2.0/29")]).unwrap();
        let all: Vec<String> = set.walk(None).map(|(ip, _)| ip.to_string()).collect();
        assert_eq!(
            all,
            ["10.1.2.2", "10.1.2.3", "10.1.2.4", "10.1.2.5", "10.1.2.6"]
        );
        let after: Vec<String> = set
            .walk(Some(ip("10.1.2.4")))
            .map(|(ip, _)| ip.to_string())
            .collect();
        assert_eq!(
            after,
            ["10.1.2.5", "10.1.2.6", "10.1.2.2", "10.1.2.3", "10.1.2.4"]
        );
        // A last-reserved address outside the set restarts at the beginning.
        assert_eq!(
            set.walk(Some(ip("10.9.9.9"))).next().map(|x| x.0),
            Some(ip("10.1.2.2"))
        );
    }

    #[test]
    fn walk_crosses_ranges() {
        let mut a = spec("10.1.0.0/24");
        a.start = Some(ip("10.1.0.10"));
        a.end = Some(ip("10.1.0.11"));
        let mut b = spec("10.2.0.0/24");
        b.start = Some(ip("10.2.0.1"));
        b.end = Some(ip("10.2.0.3"));
        let set = RangeSet::from_specs(&[a, b]).unwrap();
        let all: Vec<String> = set
            .walk(Some(ip("10.1.0.11")))
            .map(|(ip, _)| ip.to_string())
            .collect();
        // 10.2.0.1 is range b's default gateway.
        assert_eq!(all, ["10.2.0.2", "10.2.0.3", "10.1.0.10", "10.1.0.11"]);
        assert_eq!(set.to_string(), "10.1.0.10-10.1.0.11,10.2.0.1-10.2.0.3");
    }

    #[test]
    fn mapped_v4_is_v4() {
        let r = spec("10.0.0.0/24").canonicalize().unwrap();
        assert!(r.contains(ip("::ffff:10.0.0.5")));
        assert!(!r.contains(ip("10.0.0.255")));
    }
}
