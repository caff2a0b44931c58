//! The allocation of a free subnet in etcd mode (`allocateSubnet` in Go's
//! `local_manager.go`): the first 100 free subnets from SubnetMin to SubnetMax, one of them
//! picked at random, and whether a leased subnet still fits the config.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

use crate::config::{NetworkConfig, V4Range, V6Range};
use crate::subnet::SubnetKey;

/// How many free subnets Go collects before picking one at random.
pub const CANDIDATES: usize = 100;

/// Whether a lease's subnets fit the network config.
pub trait Fits {
    /// Whether the subnets fit the config (Go's `isSubnetConfigCompat` and its IPv6 twin):
    /// inside SubnetMin..SubnetMax with the config's prefix length; an IPv6 subnet exactly
    /// when the config enables IPv6.
    fn fits(&self, config: &NetworkConfig) -> bool;
}

impl Fits for SubnetKey {
    fn fits(&self, config: &NetworkConfig) -> bool {
        let v4_ok = matches!((&config.v4, self.v4), (Some(r), Some(sn)) if fits_v4(r, sn));
        let v6_ok = match (&config.v6, self.v6) {
            (Some(r), Some(sn)) => fits_v6(r, sn),
            (None, None) => true,
            _ => false,
        };
        v4_ok && v6_ok
    }
}

fn fits_v4(r: &V4Range, sn: Ipv4Network) -> bool {
    sn.prefix() == r.subnet_len && sn.ip() >= r.subnet_min && sn.ip() <= r.subnet_max
}

fn fits_v6(r: &V6Range, sn: Ipv6Network) -> bool {
    sn.prefix() == r.subnet_len && sn.ip() >= r.subnet_min && sn.ip() <= r.subnet_max
}

fn overlaps_v4(a: Ipv4Network, b: Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

fn overlaps_v6(a: Ipv6Network, b: Ipv6Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// Whether `key` overlaps any of `taken` (either family).
pub fn is_taken(key: &SubnetKey, taken: &[SubnetKey]) -> bool {
    taken.iter().any(|t| {
        matches!((t.v4, key.v4), (Some(a), Some(b)) if overlaps_v4(a, b))
            || matches!((t.v6, key.v6), (Some(a), Some(b)) if overlaps_v6(a, b))
    })
}

/// The first [`CANDIDATES`] IPv4 subnets of the range that overlap no taken subnet.
pub fn free_v4(r: &V4Range, taken: &[SubnetKey]) -> Vec<Ipv4Network> {
    let size = 1u64 << (32 - u32::from(r.subnet_len));
    let mut out = Vec::new();
    let mut ip = u64::from(u32::from(r.subnet_min));
    while ip <= u64::from(u32::from(r.subnet_max)) && out.len() < CANDIDATES {
        if let Ok(sn) = Ipv4Network::new(Ipv4Addr::from(ip as u32), r.subnet_len)
            && !taken
                .iter()
                .any(|t| t.v4.is_some_and(|a| overlaps_v4(a, sn)))
        {
            out.push(sn);
        }
        ip += size;
    }
    out
}

/// The first [`CANDIDATES`] IPv6 subnets of the range that overlap no taken subnet.
pub fn free_v6(r: &V6Range, taken: &[SubnetKey]) -> Vec<Ipv6Network> {
    let size = 1u128 << (128 - u32::from(r.subnet_len));
    let mut out = Vec::new();
    let mut ip = u128::from(r.subnet_min);
    while ip <= u128::from(r.subnet_max) && out.len() < CANDIDATES {
        if let Ok(sn) = Ipv6Network::new(Ipv6Addr::from(ip), r.subnet_len)
            && !taken
                .iter()
                .any(|t| matches!(t.v6, Some(a) if overlaps_v6(a, sn)))
        {
            out.push(sn);
        }
        match ip.checked_add(size) {
            Some(n) => ip = n,
            None => break,
        }
    }
    out
}

/// A free subnet (pair) for the config, picked with `pick(n)` (an index below `n`) among the
/// first [`CANDIDATES`] free ones; `None` when the range is full ("out of subnets").
pub fn allocate(
    config: &NetworkConfig,
    taken: &[SubnetKey],
    mut pick: impl FnMut(usize) -> usize,
) -> Option<SubnetKey> {
    let r4 = config.v4.as_ref()?;
    let bag = free_v4(r4, taken);
    let v4 = *bag.get(pick(bag.len()).min(bag.len().checked_sub(1)?))?;
    let v6 = match &config.v6 {
        None => None,
        Some(r6) => {
            let bag = free_v6(r6, taken);
            Some(*bag.get(pick(bag.len()).min(bag.len().checked_sub(1)?))?)
        }
    };
    Some(SubnetKey { v4: Some(v4), v6 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(s: &str) -> NetworkConfig {
        NetworkConfig::parse(s.as_bytes()).unwrap()
    }

    fn key(s: &str) -> SubnetKey {
        SubnetKey::parse(s).unwrap()
    }

    #[test]
    fn first_hundred_free_in_order() {
        let c = cfg(r#"{"Network":"10.5.0.0/16"}"#);
        let taken = [key("10.5.1.0-24"), key("10.5.3.0-24")];
        let free = free_v4(c.v4.as_ref().unwrap(), &taken);
        assert_eq!(free.len(), 100);
        assert_eq!(free[0].to_string(), "10.5.2.0/24");
        assert_eq!(free[1].to_string(), "10.5.4.0/24");
        assert_eq!(free[99].to_string(), "10.5.102.0/24");
        // The pick chooses among them.
        let got = allocate(&c, &taken, |n| n - 1).unwrap();
        assert_eq!(got.to_string(), "10.5.102.0-24");
        let got = allocate(&c, &taken, |_| 0).unwrap();
        assert_eq!(got.to_string(), "10.5.2.0-24");
    }

    #[test]
    fn min_max_and_alignment() {
        let c = cfg(
            r#"{"Network":"10.5.0.0/16","SubnetLen":26,"SubnetMin":"10.5.0.192","SubnetMax":"10.5.1.64"}"#,
        );
        let free = free_v4(c.v4.as_ref().unwrap(), &[]);
        let names: Vec<String> = free.iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["10.5.0.192/26", "10.5.1.0/26", "10.5.1.64/26"]);
        // A bigger lease overlapping several candidates takes them all.
        let free = free_v4(c.v4.as_ref().unwrap(), &[key("10.5.1.0-24")]);
        assert_eq!(free.len(), 1);
    }

    #[test]
    fn out_of_subnets() {
        let c = cfg(r#"{"Network":"10.5.0.0/28","Backend":{"Type":"host-gw"}}"#);
        // /28 → /30 subnets 10.5.0.4, .8, .12 (the first is never used).
        let all = [key("10.5.0.4-30"), key("10.5.0.8-30"), key("10.5.0.12-30")];
        assert_eq!(
            allocate(&c, &all[..2], |_| 0).unwrap().to_string(),
            "10.5.0.12-30"
        );
        assert_eq!(allocate(&c, &all, |_| 0), None);
    }

    #[test]
    fn dual_stack_allocation() {
        let c = cfg(r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}"#);
        let got = allocate(&c, &[key("10.5.1.0-24&fc00:0:0:1::-64")], |_| 0).unwrap();
        assert_eq!(got.to_string(), "10.5.2.0-24&fc00:0:0:2::-64");
        assert!(got.fits(&c));
        assert!(!key("10.5.2.0-24").fits(&c));
        assert!(!key("10.5.0.0-24").fits(&cfg(r#"{"Network":"10.5.0.0/16"}"#)));
        assert!(!key("10.5.2.0-25").fits(&cfg(r#"{"Network":"10.5.0.0/16"}"#)));
    }
}
