//! The allocation algorithm, over any lease store: one address per range set, requested
//! addresses first, otherwise round-robin from the set's last reserved address. All or
//! nothing: on failure, what this call took is given back.

use std::net::IpAddr;

use cni_common::result::IpConfig;
use ipnetwork::IpNetwork;

use crate::config::IpamConfig;
use crate::error::HostLocalError;

/// The attachment a lease belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    pub id: &'a str,
    pub ifname: &'a str,
}

/// What allocation needs of a lease store. Implementations hold the network's lock.
pub trait Leases {
    /// Takes `ip` for `owner` if it is free and records it as set `set`'s last reservation.
    /// `Ok(false)` when someone holds it.
    fn reserve(&mut self, ip: IpAddr, owner: Owner<'_>, set: usize)
    -> Result<bool, HostLocalError>;
    /// Gives back one address this call reserved.
    fn unreserve(&mut self, ip: IpAddr, owner: Owner<'_>) -> Result<(), HostLocalError>;
    fn last_reserved(&mut self, set: usize) -> Option<IpAddr>;
    /// Addresses held by `owner` (or, for leases written before ifnames, by its container).
    fn owned(&mut self, owner: Owner<'_>) -> Result<Vec<IpAddr>, HostLocalError>;
}

/// Allocates one address in every range set of `cfg`.
pub fn allocate(
    cfg: &IpamConfig,
    leases: &mut impl Leases,
    owner: Owner<'_>,
) -> Result<Vec<IpConfig>, HostLocalError> {
    let mut taken: Vec<IpAddr> = Vec::new();
    let outcome = allocate_all(cfg, leases, owner, &mut taken);
    if outcome.is_err() {
        for ip in taken {
            // Best effort: the original error is the one to report.
            let _ = leases.unreserve(ip, owner);
        }
    }
    outcome
}

fn allocate_all(
    cfg: &IpamConfig,
    leases: &mut impl Leases,
    owner: Owner<'_>,
    taken: &mut Vec<IpAddr>,
) -> Result<Vec<IpConfig>, HostLocalError> {
    let mut requested = cfg.requested.clone();
    let mut out = Vec::with_capacity(cfg.range_sets.len());
    for (set_index, set) in cfg.range_sets.iter().enumerate() {
        let wanted = requested
            .iter()
            .position(|ip| set.contains(*ip))
            .map(|pos| requested.remove(pos));
        let (ip, range) = match wanted {
            Some(ip) => {
                let Some(range) = set.range_for(ip) else {
                    return Err(HostLocalError::RequestedUnmatched(vec![ip]));
                };
                if ip == range.gateway {
                    return Err(HostLocalError::RequestedGateway { set: set_index, ip });
                }
                if !leases.reserve(ip, owner, set_index)? {
                    return Err(HostLocalError::RequestedTaken {
                        set: set_index,
                        ip,
                        ranges: set.to_string(),
                    });
                }
                (ip, range)
            }
            None => {
                if let Some(ip) = leases
                    .owned(owner)?
                    .into_iter()
                    .find(|ip| set.contains(*ip))
                {
                    return Err(HostLocalError::Duplicate {
                        set: set_index,
                        ip,
                        id: owner.id.to_owned(),
                    });
                }
                let last = leases.last_reserved(set_index);
                let mut found = None;
                for (ip, range) in set.walk(last) {
                    if leases.reserve(ip, owner, set_index)? {
                        found = Some((ip, range));
                        break;
                    }
                }
                found.ok_or_else(|| HostLocalError::Exhausted {
                    set: set_index,
                    ranges: set.to_string(),
                })?
            }
        };
        taken.push(ip);
        out.push(IpConfig {
            address: IpNetwork::new(ip, range.subnet.prefix())
                .map_err(|e| HostLocalError::Config(e.to_string()))?,
            gateway: Some(range.gateway),
            interface: None,
        });
    }
    if !requested.is_empty() {
        return Err(HostLocalError::RequestedUnmatched(requested));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use cni_common::NetConf;

    use super::*;

    /// Leases in memory: ip -> (id, ifname).
    #[derive(Default)]
    struct MemLeases {
        held: BTreeMap<IpAddr, (String, String)>,
        last: HashMap<usize, IpAddr>,
    }

    impl Leases for MemLeases {
        fn reserve(
            &mut self,
            ip: IpAddr,
            o: Owner<'_>,
            set: usize,
        ) -> Result<bool, HostLocalError> {
            if self.held.contains_key(&ip) {
                return Ok(false);
            }
            self.held.insert(ip, (o.id.into(), o.ifname.into()));
            self.last.insert(set, ip);
            Ok(true)
        }
        fn unreserve(&mut self, ip: IpAddr, _: Owner<'_>) -> Result<(), HostLocalError> {
            self.held.remove(&ip);
            Ok(())
        }
        fn last_reserved(&mut self, set: usize) -> Option<IpAddr> {
            self.last.get(&set).copied()
        }
        fn owned(&mut self, o: Owner<'_>) -> Result<Vec<IpAddr>, HostLocalError> {
            Ok(self
                .held
                .iter()
                .filter(|(_, (id, ifname))| id == o.id && ifname == o.ifname)
                .map(|(ip, _)| *ip)
                .collect())
        }
    }

    fn cfg(ipam: &str, extra: &str) -> IpamConfig {
        let json = format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{ipam}{extra}}}"#);
        IpamConfig::load(&NetConf::parse(json.as_bytes()).unwrap(), "").unwrap()
    }

    fn owner(id: &str) -> Owner<'_> {
        Owner { id, ifname: "eth0" }
    }

    fn addrs(r: &[IpConfig]) -> Vec<String> {
        r.iter().map(|c| c.address.to_string()).collect()
    }

    const DUAL: &str = r#"{"ranges":[[{"subnet":"10.1.2.0/29"}],[{"subnet":"fd00:1::/125"}]]}"#;

    #[test]
    fn dual_stack_round_robin() {
        let c = cfg(DUAL, "");
        let mut l = MemLeases::default();
        let a = allocate(&c, &mut l, owner("a")).unwrap();
        assert_eq!(addrs(&a), ["10.1.2.2/29", "fd00:1::2/125"]);
        assert_eq!(a[0].gateway, Some("10.1.2.1".parse().unwrap()));
        let b = allocate(&c, &mut l, owner("b")).unwrap();
        assert_eq!(addrs(&b), ["10.1.2.3/29", "fd00:1::3/125"]);
        // A released address is not reused until the set has been cycled.
        l.unreserve("10.1.2.2".parse().unwrap(), owner("a"))
            .unwrap();
        let c3 = allocate(&c, &mut l, owner("c")).unwrap();
        assert_eq!(addrs(&c3)[0], "10.1.2.4/29");
    }

    #[test]
    fn exhaustion_releases_earlier_sets_then_reuse_after_release() {
        let c = cfg(DUAL, "");
        let mut l = MemLeases::default();
        for id in ["a", "b", "c", "d", "e"] {
            allocate(&c, &mut l, owner(id)).unwrap();
        }
        let err = allocate(&c, &mut l, owner("f")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to allocate for range 0: no IP addresses available in range set: 10.1.2.1-10.1.2.6"
        );
        // The v4 set failed first; nothing of "f" is held.
        assert!(l.owned(owner("f")).unwrap().is_empty());
        l.unreserve("10.1.2.4".parse().unwrap(), owner("c"))
            .unwrap();
        l.unreserve("fd00:1::4".parse().unwrap(), owner("c"))
            .unwrap();
        let f = allocate(&c, &mut l, owner("f")).unwrap();
        assert_eq!(addrs(&f), ["10.1.2.4/29", "fd00:1::7/125"]);
    }

    #[test]
    fn failure_in_second_set_gives_back_the_first() {
        let c = cfg(DUAL, "");
        let mut l = MemLeases::default();
        for i in 2..=7 {
            let ip: IpAddr = format!("fd00:1::{i}").parse().unwrap();
            l.reserve(ip, owner("x"), 1).unwrap();
        }
        let err = allocate(&c, &mut l, owner("a")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed to allocate for range 1: no IP"),
            "{err}"
        );
        assert!(l.owned(owner("a")).unwrap().is_empty());
    }

    #[test]
    fn duplicate_allocation_is_refused() {
        let c = cfg(DUAL, "");
        let mut l = MemLeases::default();
        allocate(&c, &mut l, owner("a")).unwrap();
        let err = allocate(&c, &mut l, owner("a")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to allocate for range 0: 10.1.2.2 has been allocated to a, duplicate allocation is not allowed"
        );
        // Another interface of the same container is a different attachment.
        let other = Owner {
            id: "a",
            ifname: "net1",
        };
        assert!(allocate(&c, &mut l, other).is_ok());
    }

    #[test]
    fn requested_ips() {
        let c = cfg(
            DUAL,
            r#","runtimeConfig":{"ips":["fd00:1::5/64","10.1.2.5"]}"#,
        );
        let mut l = MemLeases::default();
        let a = allocate(&c, &mut l, owner("a")).unwrap();
        assert_eq!(addrs(&a), ["10.1.2.5/29", "fd00:1::5/125"]);
        let err = allocate(&c, &mut l, owner("b")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to allocate for range 0: requested IP address 10.1.2.5 is not available in range set 10.1.2.1-10.1.2.6"
        );
        let gw = cfg(DUAL, r#","runtimeConfig":{"ips":["10.1.2.1"]}"#);
        assert_eq!(
            allocate(&gw, &mut l, owner("g")).unwrap_err().to_string(),
            "failed to allocate for range 0: requested ip 10.1.2.1 is subnet's gateway"
        );
        let two = cfg(DUAL, r#","runtimeConfig":{"ips":["10.1.2.3","10.1.2.4"]}"#);
        assert_eq!(
            allocate(&two, &mut l, owner("t")).unwrap_err().to_string(),
            "failed to allocate all requested IPs: 10.1.2.4"
        );
        assert!(l.owned(owner("t")).unwrap().is_empty());
        assert!(l.owned(owner("g")).unwrap().is_empty());
    }
}
