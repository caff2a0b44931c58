//! The other nodes' leases as the agent last saw them (Go's `LeaseWatcher`): watch changes and
//! re-listings become Added/Removed events for the backend. A delete carries only the key, so
//! the removed lease's attributes (the peer's PublicIP, MAC...) come from here.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;

use crate::lease::Lease;
use crate::log::{info, warning};
use crate::peer::PeerCheck;

/// What the backend is told.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseEvent {
    /// A peer's lease appeared or changed.
    Added(Lease),
    /// A peer's lease is gone (deleted or expired); the lease as last seen.
    Removed(Lease),
}

/// A lease's digest (its subnet and value), to tell the same lease again.
fn digest(lease: &Lease) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    lease.subnet.to_string().hash(&mut h);
    lease.attrs.to_json().hash(&mut h);
    h.finish()
}

/// Whether one subnet lies inside the other.
fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// One change from the watch, already parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A lease was written.
    Put(Lease),
    /// The lease of this subnet (its [`crate::subnet::SubnetKey::id`]) was deleted.
    Delete(IpNetwork),
    /// The lease of this subnet is no longer usable (a key holding junk, a Node no longer
    /// managed; already logged): what was programmed for it goes, as a re-listing would drop
    /// it; nothing is said when there was none.
    Invalid(IpNetwork),
}

/// The cache of every lease but our own, keyed by IPv4 subnet (as Go's `sameSubnet` does for
/// etcd), or by IPv6 subnet for IPv6-only leases.
#[derive(Debug, Default)]
pub struct LeaseCache {
    own: Option<IpNetwork>,
    peers: BTreeMap<IpNetwork, Lease>,
    check: Option<PeerCheck>,
    /// The leases skipped, by key, as a digest: the same lease again (a Node's status
    /// update, a re-listing) is skipped without another line.
    skipped: BTreeMap<IpNetwork, u64>,
}

impl LeaseCache {
    /// An empty cache ignoring the node's own subnet (its lease's id).
    pub fn new(own: Option<IpNetwork>) -> LeaseCache {
        LeaseCache {
            own,
            peers: BTreeMap::new(),
            check: None,
            skipped: BTreeMap::new(),
        }
    }

    /// The cache passing on only the leases `check` finds nothing wrong with; a skipped
    /// lease is logged (naming its key and why) and, if it replaced a good one, that one is
    /// removed.
    pub fn guarded(mut self, check: PeerCheck) -> LeaseCache {
        self.check = Some(check);
        self
    }

    /// The lease's key, `None` for the node's own subnet: the node's own lease is left out
    /// quietly, another node's claim on the subnet with a line.
    fn peer_key(&self, lease: &Lease) -> Option<IpNetwork> {
        let k = lease.subnet.id()?;
        if Some(k) != self.own {
            return Some(k);
        }
        if self
            .check
            .as_ref()
            .is_some_and(|c| !c.names_this_node(lease))
        {
            warning!(
                "skipping lease {}: it claims this node's own subnet for PublicIP {}",
                lease.subnet,
                lease.attrs.public_ip
            );
        }
        None
    }

    fn refused(&mut self, lease: &Lease) -> bool {
        let overlap = match (self.own, lease.subnet.id()) {
            (Some(own), Some(sn)) if own != sn && overlaps(own, sn) => {
                Some(format!("its subnet {sn} overlaps this node's {own}"))
            }
            _ => None,
        };
        let Some(key) = lease.subnet.id() else {
            return false;
        };
        match self
            .check
            .as_ref()
            .and_then(|c| c.problem(lease))
            .or(overlap)
        {
            Some(why) => {
                let digest = digest(lease);
                if self.skipped.insert(key, digest) != Some(digest) {
                    warning!("skipping lease {}: {why}", lease.subnet);
                }
                true
            }
            None => {
                self.skipped.remove(&key);
                false
            }
        }
    }

    /// Changes the node's own subnet (after a re-acquire); a cached peer lease of it is dropped.
    pub fn set_own(&mut self, own: Option<IpNetwork>) -> Vec<LeaseEvent> {
        self.own = own;
        own.and_then(|own| self.peers.remove(&own))
            .map(LeaseEvent::Removed)
            .into_iter()
            .collect()
    }

    /// The cached peers.
    pub fn peers(&self) -> impl Iterator<Item = &Lease> {
        self.peers.values()
    }

    /// Applies watch changes. A put of an unchanged lease (a peer's renewal) is no event; a
    /// delete of an unknown lease is logged and dropped.
    pub fn update(&mut self, changes: Vec<Change>) -> Vec<LeaseEvent> {
        let mut out = Vec::new();
        for change in changes {
            match change {
                Change::Put(lease) => {
                    let Some(k) = self.peer_key(&lease) else {
                        continue;
                    };
                    if self.refused(&lease) {
                        out.extend(self.peers.remove(&k).map(LeaseEvent::Removed));
                        continue;
                    }
                    let same = self
                        .peers
                        .get(&k)
                        .is_some_and(|old| old.attrs == lease.attrs && old.subnet == lease.subnet);
                    self.peers.insert(k, lease.clone());
                    if !same {
                        out.push(LeaseEvent::Added(lease));
                    }
                }
                Change::Delete(sn) => {
                    self.skipped.remove(&sn);
                    if Some(sn) == self.own {
                        continue;
                    }
                    match self.peers.remove(&sn) {
                        Some(old) => out.push(LeaseEvent::Removed(old)),
                        None => info!("deleted lease {sn} was not known: nothing to remove"),
                    }
                }
                Change::Invalid(sn) => {
                    self.skipped.remove(&sn);
                    if Some(sn) != self.own {
                        out.extend(self.peers.remove(&sn).map(LeaseEvent::Removed));
                    }
                }
            }
        }
        out
    }

    /// Replaces the cache with a fresh listing (start, reconnection, compaction): Added for
    /// new or changed leases, Removed for vanished ones.
    pub fn reset(&mut self, snapshot: Vec<Lease>) -> Vec<LeaseEvent> {
        let listed: std::collections::BTreeSet<IpNetwork> =
            snapshot.iter().filter_map(|l| l.subnet.id()).collect();
        self.skipped.retain(|k, _| listed.contains(k));
        let mut fresh = BTreeMap::new();
        let mut out = Vec::new();
        for lease in snapshot {
            let Some(k) = self.peer_key(&lease) else {
                continue;
            };
            if self.refused(&lease) {
                continue;
            }
            let same = self
                .peers
                .get(&k)
                .is_some_and(|old| old.attrs == lease.attrs && old.subnet == lease.subnet);
            if !same {
                out.push(LeaseEvent::Added(lease.clone()));
            }
            fresh.insert(k, lease);
        }
        for (k, old) in std::mem::take(&mut self.peers) {
            if !fresh.contains_key(&k) {
                out.push(LeaseEvent::Removed(old));
            }
        }
        self.peers = fresh;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseAttrs;
    use crate::subnet::SubnetKey;

    fn lease(key: &str, ip: &str) -> Lease {
        Lease {
            subnet: SubnetKey::parse(key).unwrap(),
            attrs: LeaseAttrs::from_json(
                format!(r#"{{"PublicIP":"{ip}","BackendType":"host-gw"}}"#).as_bytes(),
            )
            .unwrap(),
            lease_id: 1,
            expiration: None,
        }
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn delete_carries_cached_attrs_and_own_is_ignored() {
        let mut c = LeaseCache::new(Some(net("10.5.1.0/24")));
        let ev = c.update(vec![
            Change::Put(lease("10.5.1.0-24", "10.0.0.1")),
            Change::Put(lease("10.5.2.0-24", "10.0.0.2")),
        ]);
        assert_eq!(
            ev,
            vec![LeaseEvent::Added(lease("10.5.2.0-24", "10.0.0.2"))]
        );
        // A renewal (same value) is no event; a changed PublicIP is.
        assert!(
            c.update(vec![Change::Put(lease("10.5.2.0-24", "10.0.0.2"))])
                .is_empty()
        );
        assert_eq!(
            c.update(vec![Change::Put(lease("10.5.2.0-24", "10.0.0.3"))])
                .len(),
            1
        );
        let ev = c.update(vec![
            Change::Delete(net("10.5.2.0/24")),
            Change::Delete(net("10.5.9.0/24")),
            Change::Delete(net("10.5.1.0/24")),
        ]);
        assert_eq!(
            ev,
            vec![LeaseEvent::Removed(lease("10.5.2.0-24", "10.0.0.3"))]
        );
    }

    #[test]
    fn a_good_lease_overwritten_with_a_bad_one_is_removed() {
        let check = PeerCheck::new(
            &crate::config::NetworkConfig::parse(br#"{"Network":"10.5.0.0/16"}"#).unwrap(),
            &LeaseAttrs::from_json(br#"{"PublicIP":"10.0.0.1","BackendType":"host-gw"}"#).unwrap(),
        );
        let mut c = LeaseCache::new(Some(net("10.5.1.0/24"))).guarded(check);
        let good = lease("10.5.2.0-24", "10.0.0.2");
        assert_eq!(
            c.update(vec![Change::Put(good.clone())]),
            vec![LeaseEvent::Added(good.clone())]
        );
        // Overwritten with this node's PublicIP: the route to 10.0.0.2 goes, nothing new.
        assert_eq!(
            c.update(vec![Change::Put(lease("10.5.2.0-24", "10.0.0.1"))]),
            vec![LeaseEvent::Removed(good.clone())]
        );
        assert!(c.reset(vec![lease("10.6.0.0-24", "10.0.0.3")]).is_empty());
        // Overwritten with a value that is no lease at all: the same.
        c.update(vec![Change::Put(good.clone())]);
        assert_eq!(
            c.update(vec![
                Change::Invalid(net("10.5.2.0/24")),
                Change::Invalid(net("10.5.1.0/24")),
                Change::Invalid(net("10.5.7.0/24"))
            ]),
            vec![LeaseEvent::Removed(good)]
        );
    }

    #[test]
    fn reset_diffs_against_the_cache() {
        let mut c = LeaseCache::new(Some(net("10.5.1.0/24")));
        c.reset(vec![
            lease("10.5.2.0-24", "10.0.0.2"),
            lease("10.5.3.0-24", "10.0.0.3"),
        ]);
        let ev = c.reset(vec![
            lease("10.5.1.0-24", "10.0.0.1"),
            lease("10.5.3.0-24", "10.0.0.3"),
            lease("10.5.4.0-24", "10.0.0.4"),
        ]);
        assert_eq!(
            ev,
            vec![
                LeaseEvent::Added(lease("10.5.4.0-24", "10.0.0.4")),
                LeaseEvent::Removed(lease("10.5.2.0-24", "10.0.0.2"))
            ]
        );
        assert_eq!(c.peers().count(), 2);
        let ev = c.set_own(Some(net("10.5.3.0/24")));
        assert_eq!(
            ev,
            vec![LeaseEvent::Removed(lease("10.5.3.0-24", "10.0.0.3"))]
        );
    }
}
