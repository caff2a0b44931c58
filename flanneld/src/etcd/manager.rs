//! The etcd subnet manager: the network config, acquiring the node's subnet, renewing it
//! (`pkg/subnet/etcd/local_manager.go` and `registry.go`), over any [`Store`]; the other
//! nodes' leases are watched in `watch.rs`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use ipnetwork::{Ipv4Network, Ipv6Network};
use tokio::time::Instant;

use super::allocate::{self, Fits};
use super::keys::Keys;
use super::store::{Expect, KeyValue, Store, StoreError};
use crate::config::{ConfigError, NetworkConfig};
use crate::lease::{Lease, LeaseAttrs};
use crate::log::{info, warning};
use crate::manager::{Failure, LeaseWatch, ManagerError, SubnetManager};
use crate::metrics::Metrics;
use crate::subnet::{Pick, SubnetKey};

/// Go's `subnetTTL`: every lease is a 24 h etcd lease.
pub const SUBNET_TTL: Duration = Duration::from_secs(24 * 3600);
/// Go's `raceRetries`.
pub const RACE_RETRIES: usize = 10;
/// The default etcd prefix.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";

/// Why the lease manager failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// etcd failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The config key is missing.
    #[error(
        "{key} not found: create the network config, e.g. etcdctl put {key} '{{\"Network\":\"10.5.0.0/16\",\"Backend\":{{\"Type\":\"host-gw\"}}}}' (with ETCDCTL_API=3)"
    )]
    NoConfig {
        /// The key.
        key: String,
    },
    /// The config is invalid.
    #[error("network config {key}: {source}")]
    BadConfig {
        /// The key.
        key: String,
        /// Why.
        source: ConfigError,
    },
    /// The config's `Backend` object names a backend this agent does not have, or has keys
    /// the backend refuses (checked with the config, so a bad one is retried like a bad
    /// config).
    #[error("network config {key}: {source}")]
    BadBackend {
        /// The key.
        key: String,
        /// Why.
        source: crate::backend::BackendError,
    },
    /// No free subnet in SubnetMin..SubnetMax.
    #[error("out of subnets: every subnet of {range} is leased")]
    OutOfSubnets {
        /// The range.
        range: String,
    },
    /// The node's key names another node: its lease ran out and the subnet was taken
    /// (renewing over it would steal the subnet back from a live node).
    #[error("the lease {key} was taken by {by} after it ran out")]
    Taken {
        /// The key.
        key: String,
        /// Whom it names now (its PublicIP, or the value cut short).
        by: String,
    },
    /// The node's key changed between the renewal's reads (retried like a failure).
    #[error("{key} changed while renewing it")]
    RenewRaced {
        /// The key.
        key: String,
    },
    /// Every create lost a race ([`RACE_RETRIES`] times).
    #[error("failed to acquire a subnet lease: lost the race to other nodes {0} times")]
    RaceLost(usize),
}

/// The lease manager for one network (`--etcd-prefix`).
#[derive(Debug)]
pub struct LeaseManager<S> {
    store: S,
    keys: Keys,
    /// The etcd lease the node's key is on as this manager last wrote it (shared with the
    /// lease watch: a write of the key on another lease is someone else's).
    own_lease: Rc<Cell<i64>>,
    previous: (Option<Ipv4Network>, Option<Ipv6Network>),
    pick: Pick,
    ttl: Duration,
}

impl<S: Store> LeaseManager<S> {
    /// A manager for `prefix`; `previous` are the subnets the last subnet.env named.
    pub fn new(
        store: S,
        prefix: &str,
        previous: (Option<Ipv4Network>, Option<Ipv6Network>),
    ) -> Self {
        LeaseManager {
            store,
            keys: Keys::new(prefix),
            own_lease: Rc::default(),
            previous,
            pick: Pick::seeded(),
            ttl: SUBNET_TTL,
        }
    }

    /// The same manager granting leases of `ttl` instead of [`SUBNET_TTL`] (the test-only
    /// `FLANNELD_TEST_LEASE_TTL`).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// `<prefix>/config`.
    pub fn config_key(&self) -> String {
        self.keys.config_key()
    }

    /// `<prefix>/subnets/` (what the watch covers).
    pub fn subnets_prefix(&self) -> String {
        self.keys.subnets_prefix()
    }

    /// `<prefix>/subnets/<key>`.
    pub fn lease_key(&self, sn: &SubnetKey) -> String {
        self.keys.lease_key(sn)
    }

    /// Replaces the subnet preferred after the node's own lease is gone (the one it held).
    pub fn prefer(&mut self, sn: &SubnetKey) {
        self.previous = (sn.v4, sn.v6);
    }

    /// The network config, once.
    pub async fn network_config(&self) -> Result<NetworkConfig, LeaseError> {
        let key = self.config_key();
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| LeaseError::NoConfig { key: key.clone() })?;
        let config = NetworkConfig::parse(&kv.value).map_err(|source| LeaseError::BadConfig {
            key: key.clone(),
            source,
        })?;
        if config.v4.is_none() {
            // Go accepts an IPv6-only config, but its etcd key form cannot hold one (the
            // key's IPv4 part is mandatory), so it fails later; say so here.
            return Err(LeaseError::BadConfig {
                key,
                source: ConfigError::Invalid(
                    "EnableIPv4 is false: an etcd subnet lease needs IPv4 (IPv6-only is not possible with etcd; it is with --kube-subnet-mgr)".into(),
                ),
            });
        }
        crate::backend::check(&config).map_err(|source| LeaseError::BadBackend { key, source })?;
        Ok(config)
    }

    /// The subnet a key under `subnets/` names; `None` for any other key.
    pub fn subnet_of(&self, key: &str) -> Option<SubnetKey> {
        self.keys.subnet_of(key)
    }

    /// A stored key/value as a lease; `None` (with a log line) when the key or value is not
    /// one flannel could have written.
    pub fn parse_lease(&self, kv: &KeyValue) -> Option<Lease> {
        self.keys.parse_lease(kv)
    }

    /// Every parseable lease and the listing's revision.
    pub async fn leases(&self) -> Result<(Vec<Lease>, i64), LeaseError> {
        let (kvs, rev) = self.store.list(&self.subnets_prefix()).await?;
        Ok((
            kvs.iter().filter_map(|kv| self.parse_lease(kv)).collect(),
            rev,
        ))
    }

    fn granted(subnet: SubnetKey, attrs: &LeaseAttrs, g: super::store::Granted) -> Lease {
        Lease {
            subnet,
            attrs: attrs.clone(),
            lease_id: g.id,
            expiration: Some(Instant::now() + g.ttl),
        }
    }

    /// Acquires the node's subnet lease as Go does: the lease of the same PublicIP if it fits
    /// the config (updated with our attributes and a new 24 h lease; one that does not fit is
    /// deleted), else the previous subnet.env's subnet if free and fitting, else a random one
    /// of the first 100 free. The create is a transaction on "key absent"; a lost race is
    /// retried up to [`RACE_RETRIES`] times (Go exits 1 on the first).
    pub async fn acquire(
        &mut self,
        config: &NetworkConfig,
        attrs: &LeaseAttrs,
    ) -> Result<Lease, LeaseError> {
        let value = attrs.to_json();
        for attempt in 1..=RACE_RETRIES {
            let (kvs, _) = self.store.list(&self.subnets_prefix()).await?;
            let leases: Vec<Lease> = kvs.iter().filter_map(|kv| self.parse_lease(kv)).collect();
            // A lease of this node's PublicIP is this node's, also when its PublicIPv6
            // differs (IPv6 just enabled, or the interface's address changed): left in
            // place, it would name this node under a second key until it expires, and its
            // expiry would remove the live lease's routes from peers caching by IPv4 subnet.
            // Of several (a crash between writes, a hand-made copy), the one subnet.env
            // names is kept, else the first; the others go.
            let mut mine: Vec<&Lease> = leases
                .iter()
                .filter(|l| l.attrs.public_ip == attrs.public_ip)
                .collect();
            mine.sort_by_key(|l| l.subnet.v4 != self.previous.0);
            let mut reused = None;
            let mut deleted = Vec::new();
            for l in mine {
                let same_v6 =
                    attrs.public_ipv6.is_none() || l.attrs.public_ipv6 == attrs.public_ipv6;
                if reused.is_none() && l.subnet.fits(config) && same_v6 {
                    reused = Some(l.subnet);
                    continue;
                }
                info!(
                    "lease {} of PublicIP {} {}: deleting it",
                    l.subnet,
                    attrs.public_ip,
                    if reused.is_some() {
                        "is a second lease of this node"
                    } else if same_v6 {
                        "does not fit the config"
                    } else {
                        "names another PublicIPv6"
                    }
                );
                self.store.delete(&self.lease_key(&l.subnet)).await?;
                deleted.push(l.subnet);
            }
            if let Some(sn) = reused {
                info!(
                    "found lease {sn} for PublicIP {}: reusing it",
                    attrs.public_ip
                );
                let key = self.lease_key(&sn);
                let g = self.store.put(&key, value.as_bytes(), self.ttl).await?;
                return Ok(Self::granted(sn, attrs, g));
            }
            // Every subnet key counts as taken, whatever its value: a key holding junk still
            // exists, and creating it would fail as a lost race. But not one wider than a
            // quarter of the Network (or outside it): `0.0.0.0-0` would "overlap" every
            // subnet, and the node would never get one.
            let plausible = |sn: &SubnetKey| {
                matches!((&config.v4, sn.v4), (Some(r), Some(v4))
                    if r.network.contains(v4.network())
                        && u32::from(v4.prefix()) >= u32::from(r.network.prefix()) + 2)
            };
            // The listing predates the delete above.
            let ours = |sn: &SubnetKey| deleted.contains(sn);
            let taken: Vec<SubnetKey> = kvs
                .iter()
                .filter_map(|kv| self.subnet_of(&kv.key))
                .filter(|sn| plausible(sn) && !ours(sn))
                .collect();
            let previous = match self.previous {
                (Some(v4), v6) => {
                    let sn = SubnetKey {
                        v4: Some(v4),
                        v6: if config.v6.is_some() { v6 } else { None },
                    };
                    (sn.fits(config) && !allocate::is_taken(&sn, &taken)).then_some(sn)
                }
                _ => None,
            };
            let sn = match previous {
                Some(sn) => {
                    info!("using the previous subnet {sn} (from the subnet file)");
                    sn
                }
                None => {
                    let pick = &mut self.pick;
                    allocate::allocate(config, &taken, |n| pick.below(n)).ok_or_else(|| {
                        LeaseError::OutOfSubnets {
                            range: config
                                .v4
                                .as_ref()
                                .map(|r| {
                                    format!("{}..{} /{}", r.subnet_min, r.subnet_max, r.subnet_len)
                                })
                                .unwrap_or_default(),
                        }
                    })?
                }
            };
            let key = self.lease_key(&sn);
            match self.store.create(&key, value.as_bytes(), self.ttl).await? {
                Some(g) => {
                    info!("allocated lease {sn} ({key})");
                    return Ok(Self::granted(sn, attrs, g));
                }
                None => {
                    warning!(
                        "lost the race for {key} (attempt {attempt} of {RACE_RETRIES}): trying again"
                    );
                    if previous == Some(sn) {
                        self.previous = (None, None);
                    }
                }
            }
        }
        Err(LeaseError::RaceLost(RACE_RETRIES))
    }

    /// Renews the node's lease: the same value under a fresh 24 h etcd lease (Go's
    /// `RenewLease`).
    pub async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let key = self.lease_key(&lease.subnet);
        let value = lease.attrs.to_json();
        let granted = |g| Ok(Self::granted(lease.subnet, &lease.attrs, g));
        // Conditional, unlike Go's plain put: a lease that ran out (etcd unreachable from
        // this node for a TTL) may have been handed to another node meanwhile.
        let put_if = |expect| self.store.put_if(&key, value.as_bytes(), self.ttl, expect);
        if let Some(g) = put_if(Expect::Value(value.as_bytes())).await? {
            return granted(g);
        }
        let now = self.store.get(&key).await?;
        let expect = match &now {
            None => Expect::Absent,
            // Rewritten for this node (an operator, or a Go agent's format): still ours.
            Some(kv)
                if self
                    .parse_lease(kv)
                    .is_some_and(|l| l.attrs.public_ip == lease.attrs.public_ip) =>
            {
                Expect::Value(&kv.value)
            }
            Some(kv) => {
                return Err(LeaseError::Taken {
                    key,
                    by: self.parse_lease(kv).map_or_else(
                        || crate::log::shown(&String::from_utf8_lossy(&kv.value)),
                        |l| l.attrs.public_ip.to_string(),
                    ),
                });
            }
        };
        match put_if(expect).await? {
            Some(g) => granted(g),
            // Changed between the two reads: whoever wrote it, the next renewal decides.
            None => Err(LeaseError::RenewRaced { key }),
        }
    }

    /// The renew margin used with leases of `ttl`: `margin` when shorter than the TTL, else
    /// a third of the TTL. (`--subnet-lease-renew-margin` is at least a minute: against a
    /// TTL of seconds it would put every renewal due at once, a renewal loop.)
    pub fn renew_margin(margin: Duration, ttl: Duration) -> Duration {
        if margin < ttl { margin } else { ttl / 3 }
    }

    /// When the lease is renewed: `margin` before it expires (now if that has passed).
    pub fn renew_at(lease: &Lease, margin: Duration) -> Instant {
        let now = Instant::now();
        lease
            .expiration
            .and_then(|e| e.checked_sub(margin))
            .map_or(now, |t| t.max(now))
    }
}

impl ManagerError for LeaseError {
    fn failure(&self) -> Failure {
        match self {
            LeaseError::Store(_) | LeaseError::RenewRaced { .. } => Failure::Transient,
            // A lease may be freed (a node removed, a lease expired): wait for one.
            LeaseError::OutOfSubnets { .. } | LeaseError::RaceLost(_) => Failure::Wait,
            LeaseError::Taken { .. } => Failure::Lost,
            LeaseError::NoConfig { .. }
            | LeaseError::BadConfig { .. }
            | LeaseError::BadBackend { .. } => Failure::Fatal,
        }
    }
}

impl<S: Store + Clone + 'static> SubnetManager for LeaseManager<S> {
    type Error = LeaseError;

    async fn network_config(&self) -> Result<NetworkConfig, LeaseError> {
        LeaseManager::network_config(self).await
    }

    async fn acquire(
        &mut self,
        config: &NetworkConfig,
        attrs: &LeaseAttrs,
    ) -> Result<Lease, LeaseError> {
        let lease = LeaseManager::acquire(self, config, attrs).await?;
        self.own_lease.set(lease.lease_id);
        Ok(lease)
    }

    async fn reacquire(
        &mut self,
        config: &NetworkConfig,
        old: &Lease,
    ) -> Result<Lease, LeaseError> {
        self.prefer(&old.subnet);
        let lease = LeaseManager::acquire(self, config, &old.attrs).await?;
        self.own_lease.set(lease.lease_id);
        Ok(lease)
    }

    async fn renew(&mut self, lease: &Lease) -> Result<Lease, LeaseError> {
        let renewed = LeaseManager::renew(self, lease).await?;
        self.own_lease.set(renewed.lease_id);
        Ok(renewed)
    }

    fn renew_margin(&self, margin: Duration) -> Duration {
        Self::renew_margin(margin, self.ttl)
    }

    fn describe(&self, lease: &Lease) -> String {
        format!("{} ({})", lease.subnet, self.lease_key(&lease.subnet))
    }

    fn watch(&mut self, own: &Lease, metrics: &Metrics) -> LeaseWatch {
        self.own_lease.set(own.lease_id);
        super::watch::watch(&self.store, &self.keys, own, &self.own_lease, metrics)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::etcd::store::mem::MemStore;

    const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#;

    fn attrs(last: u8) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: Ipv4Addr::new(192, 168, 1, last),
            public_ipv6: None,
            backend_type: "host-gw".into(),
            backend_data: None,
            backend_v6_data: None,
        }
    }

    fn setup() -> (MemStore, LeaseManager<MemStore>, NetworkConfig) {
        let store = MemStore::default();
        store.put_raw("/coreos.com/network/config", CONFIG);
        let m = LeaseManager::new(store.clone(), DEFAULT_PREFIX, (None, None));
        (store, m, NetworkConfig::parse(CONFIG.as_bytes()).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn config_missing_and_bad() {
        let store = MemStore::default();
        let m = LeaseManager::new(store.clone(), "/my/net/", (None, None));
        let e = m.network_config().await.unwrap_err().to_string();
        assert!(
            e.contains("/my/net/config not found") && e.contains("etcdctl put /my/net/config"),
            "{e}"
        );
        store.put_raw("/my/net/config", r#"{"Network":"10.0.0.0/30"}"#);
        let e = m.network_config().await.unwrap_err().to_string();
        assert!(e.contains("Minimum useful network prefix is /28"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_new_then_reuse_by_public_ip() {
        let (store, mut m, c) = setup();
        let l = m.acquire(&c, &attrs(2)).await.unwrap();
        assert!(l.subnet.fits(&c));
        let key = m.lease_key(&l.subnet);
        assert_eq!(
            store.value(&key).unwrap(),
            r#"{"PublicIP":"192.168.1.2","PublicIPv6":null,"BackendType":"host-gw"}"#
        );
        assert_eq!(
            store.time_to_live(l.lease_id).await.unwrap(),
            Some(SUBNET_TTL)
        );
        // Same PublicIP again (a restart): the same subnet, a new etcd lease.
        let again = m.acquire(&c, &attrs(2)).await.unwrap();
        assert_eq!(again.subnet, l.subnet);
        assert_ne!(again.lease_id, l.lease_id);
        assert_eq!(store.keys("/coreos.com/network/subnets/").len(), 1);
        // Another node gets another subnet.
        let other = m.acquire(&c, &attrs(3)).await.unwrap();
        assert_ne!(other.subnet, l.subnet);
    }

    #[tokio::test(start_paused = true)]
    async fn enabling_ipv6_replaces_the_nodes_ipv4_only_lease_without_a_second_key() {
        // Before: the IPv4-only lease of this PublicIP was neither reused nor counted as
        // taken, so the node could be handed its own IPv4 subnet again under a second key.
        let dual = r#"{"Network":"10.5.0.0/28","SubnetLen":30,"EnableIPv6":true,
            "IPv6Network":"fc00::/48","Backend":{"Type":"host-gw"}}"#;
        let store = MemStore::default();
        store.put_raw("/coreos.com/network/config", dual);
        let c = NetworkConfig::parse(dual.as_bytes()).unwrap();
        let mut attrs6 = attrs(2);
        attrs6.public_ipv6 = Some("fd00::2".parse().unwrap());
        // Every IPv4 subnet once, so a second key for the old one would show.
        for _ in 0..16 {
            store.put_raw(
                "/coreos.com/network/subnets/10.5.0.4-30",
                r#"{"PublicIP":"192.168.1.2","PublicIPv6":null,"BackendType":"host-gw"}"#,
            );
            let mut m = LeaseManager::new(store.clone(), DEFAULT_PREFIX, (None, None));
            let l = m.acquire(&c, &attrs6).await.unwrap();
            assert!(l.subnet.v6.is_some());
            assert_eq!(
                store.keys("/coreos.com/network/subnets/"),
                vec![m.lease_key(&l.subnet)]
            );
            store.delete(&m.lease_key(&l.subnet)).await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_never_writes_over_another_nodes_lease() {
        // Before: a plain put, so a node whose lease ran out (etcd out of its reach for a
        // TTL) took the subnet back from the node it had been handed to meanwhile.
        let (store, mut m, c) = setup();
        let l = m.acquire(&c, &attrs(2)).await.unwrap();
        let key = m.lease_key(&l.subnet);
        // Ours as written: renewed.
        let l = m.renew(&l).await.unwrap();
        assert_eq!(store.value(&key).unwrap(), attrs(2).to_json());
        // Rewritten for this node in another spelling (Go's, an operator's): still ours.
        store.put_raw(&key, r#"{"PublicIP":"192.168.1.2"}"#);
        let l = m.renew(&l).await.unwrap();
        assert_eq!(store.value(&key).unwrap(), attrs(2).to_json());
        // Ran out and still free: taken again.
        store.delete_raw(&key);
        let l = m.renew(&l).await.unwrap();
        assert_eq!(store.value(&key).unwrap(), attrs(2).to_json());
        // Ran out and handed to another node: left to it.
        store.put_raw(&key, &attrs(3).to_json());
        let e = m.renew(&l).await.unwrap_err();
        assert!(
            matches!(&e, LeaseError::Taken { by, .. } if by == "192.168.1.3"),
            "{e}"
        );
        assert_eq!(store.value(&key).unwrap(), attrs(3).to_json());
        // Junk there: not ours either, and shown escaped (a newline cannot forge a line).
        store.put_raw(&key, "junk\nI1130 forged] line");
        let e = m.renew(&l).await.unwrap_err();
        assert!(matches!(e, LeaseError::Taken { .. }));
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn of_several_leases_naming_this_node_the_one_subnet_env_names_is_kept() {
        // Before: the first in key order was reused and the others named the node until
        // they expired (each a second set of routes to it on every peer).
        let (store, _, c) = setup();
        for k in ["10.5.3.0-24", "10.5.7.0-24", "10.5.9.0-24"] {
            store.put_raw(
                &format!("/coreos.com/network/subnets/{k}"),
                r#"{"PublicIP":"192.168.1.2"}"#,
            );
        }
        let previous = SubnetKey::parse("10.5.7.0-24").unwrap();
        let mut m = LeaseManager::new(store.clone(), DEFAULT_PREFIX, (previous.v4, None));
        let l = m.acquire(&c, &attrs(2)).await.unwrap();
        assert_eq!(l.subnet, previous);
        assert_eq!(
            store.keys("/coreos.com/network/subnets/"),
            ["/coreos.com/network/subnets/10.5.7.0-24"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unfit_lease_of_same_ip_is_replaced() {
        let (store, mut m, c) = setup();
        store.put_raw(
            "/coreos.com/network/subnets/10.5.0.0-24",
            r#"{"PublicIP":"192.168.1.2"}"#,
        );
        let l = m.acquire(&c, &attrs(2)).await.unwrap();
        assert_ne!(l.subnet.to_string(), "10.5.0.0-24");
        assert_eq!(
            store.keys("/coreos.com/network/subnets/"),
            vec![m.lease_key(&l.subnet)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn previous_subnet_from_subnet_env_if_free() {
        let (store, _, c) = setup();
        let prev = "10.5.77.0/24".parse().unwrap();
        let mut m = LeaseManager::new(store.clone(), DEFAULT_PREFIX, (Some(prev), None));
        assert_eq!(
            m.acquire(&c, &attrs(2)).await.unwrap().subnet.to_string(),
            "10.5.77.0-24"
        );
        // Taken by someone else: another one.
        let mut m = LeaseManager::new(store.clone(), DEFAULT_PREFIX, (Some(prev), None));
        assert_ne!(
            m.acquire(&c, &attrs(3)).await.unwrap().subnet.to_string(),
            "10.5.77.0-24"
        );
        // Outside the range: ignored.
        let mut m = LeaseManager::new(
            store,
            DEFAULT_PREFIX,
            (Some("10.9.1.0/24".parse().unwrap()), None),
        );
        assert!(m.acquire(&c, &attrs(4)).await.unwrap().subnet.fits(&c));
    }

    #[tokio::test(start_paused = true)]
    async fn lost_race_is_retried() {
        let (store, _, c) = setup();
        let prev = "10.5.77.0/24".parse().unwrap();
        let mut m = LeaseManager::new(store.clone(), DEFAULT_PREFIX, (Some(prev), None));
        store.race(
            "/coreos.com/network/subnets/10.5.77.0-24",
            r#"{"PublicIP":"192.168.1.9","PublicIPv6":null,"BackendType":"host-gw"}"#,
        );
        let l = m.acquire(&c, &attrs(2)).await.unwrap();
        assert_ne!(l.subnet.to_string(), "10.5.77.0-24");
        assert_eq!(store.creates(), 2);
        assert!(
            store
                .value("/coreos.com/network/subnets/10.5.77.0-24")
                .unwrap()
                .contains("192.168.1.9")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_subnets_is_a_clear_error() {
        let store = MemStore::default();
        let cfg = r#"{"Network":"10.5.0.0/28","Backend":{"Type":"host-gw"}}"#;
        store.put_raw("/coreos.com/network/config", cfg);
        let c = NetworkConfig::parse(cfg.as_bytes()).unwrap();
        let mut m = LeaseManager::new(store, DEFAULT_PREFIX, (None, None));
        for i in 0..3 {
            m.acquire(&c, &attrs(10 + i)).await.unwrap();
        }
        let e = m.acquire(&c, &attrs(20)).await.unwrap_err().to_string();
        assert_eq!(
            e,
            "out of subnets: every subnet of 10.5.0.4..10.5.0.12 /30 is leased"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn renew_timing() {
        let (store, mut m, c) = setup();
        let l = m.acquire(&c, &attrs(2)).await.unwrap();
        let margin = Duration::from_secs(3600);
        let at = LeaseManager::<MemStore>::renew_at(&l, margin);
        assert_eq!(at - Instant::now(), Duration::from_secs(23 * 3600));
        tokio::time::advance(Duration::from_secs(23 * 3600 + 1)).await;
        assert_eq!(
            LeaseManager::<MemStore>::renew_at(&l, margin),
            Instant::now()
        );
        let r = m.renew(&l).await.unwrap();
        assert_eq!(r.subnet, l.subnet);
        assert_eq!(
            store.time_to_live(r.lease_id).await.unwrap(),
            Some(SUBNET_TTL)
        );
        // The old lease runs out an hour later; the key stays (it is on the new one).
        tokio::time::advance(Duration::from_secs(3600)).await;
        store.expire();
        assert!(store.value(&m.lease_key(&l.subnet)).is_some());
    }

    #[test]
    fn renew_margin_fits_the_ttl() {
        let min = Duration::from_secs(60);
        assert_eq!(
            LeaseManager::<MemStore>::renew_margin(min * 60, SUBNET_TTL),
            min * 60
        );
        assert_eq!(
            LeaseManager::<MemStore>::renew_margin(min * 1439, SUBNET_TTL),
            min * 1439
        );
        assert_eq!(
            LeaseManager::<MemStore>::renew_margin(min * 60, Duration::from_secs(6)),
            Duration::from_secs(2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn short_ttl_is_granted_and_renewed() {
        let (store, m, c) = setup();
        let mut m = m.with_ttl(Duration::from_secs(6));
        let l = m.acquire(&c, &attrs(2)).await.unwrap();
        assert_eq!(
            store.time_to_live(l.lease_id).await.unwrap(),
            Some(Duration::from_secs(6))
        );
        let r = m.renew(&l).await.unwrap();
        assert_eq!(
            store.time_to_live(r.lease_id).await.unwrap(),
            Some(Duration::from_secs(6))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn keys_holding_junk_are_taken_not_raced_for() {
        // A /24 network of /28 subnets: 15 candidates, 14 of them keys holding junk. Before,
        // junk keys counted as free: nearly every create "lost the race", and after 10 the
        // agent gave up (exit 1).
        let store = MemStore::default();
        let cfg = r#"{"Network":"10.5.0.0/24","SubnetLen":28,"Backend":{"Type":"host-gw"}}"#;
        store.put_raw("/coreos.com/network/config", cfg);
        let c = NetworkConfig::parse(cfg.as_bytes()).unwrap();
        for i in 1..15 {
            store.put_raw(
                &format!("/coreos.com/network/subnets/10.5.0.{}-28", i * 16),
                "junk",
            );
        }
        for n in 1..=5 {
            let mut m = LeaseManager::new(store.clone(), DEFAULT_PREFIX, (None, None));
            let l = m.acquire(&c, &attrs(2)).await.unwrap();
            assert_eq!(l.subnet.to_string(), "10.5.0.240-28");
            assert_eq!(store.creates(), n, "never a create on an existing key");
            store.delete_raw("/coreos.com/network/subnets/10.5.0.240-28");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_covering_the_network_does_not_starve_allocation() {
        // Before: "out of subnets", and the agent exited.
        let (store, mut m, c) = setup();
        let peer = r#"{"PublicIP":"192.168.1.9","BackendType":"host-gw"}"#;
        for k in ["0.0.0.0-0", "10.0.0.0-8", "10.5.0.0-16", "10.5.0.0-17"] {
            store.put_raw(&format!("/coreos.com/network/subnets/{k}"), peer);
        }
        store.put_raw("/coreos.com/network/subnets/10.5.128.0-18", peer);
        let l = m.acquire(&c, &attrs(2)).await.unwrap();
        assert!(l.subnet.fits(&c));
        assert!(l.subnet.v4.unwrap().ip() < "10.5.128.0".parse::<Ipv4Addr>().unwrap());
        // A quarter of the Network still counts: that much may be a real (older) lease.
        let only = m.acquire(&c, &attrs(3)).await.unwrap();
        assert!(
            !"10.5.128.0/18"
                .parse::<Ipv4Network>()
                .unwrap()
                .contains(only.subnet.v4.unwrap().ip())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bad_leases_skipped() {
        let (store, m, _) = setup();
        store.put_raw("/coreos.com/network/subnets/garbage", "{}");
        store.put_raw("/coreos.com/network/subnets/10.5.3.0-24", "not json");
        store.put_raw(
            "/coreos.com/network/subnets/10.5.4.0-24",
            r#"{"PublicIP":"10.0.0.4","Extra":1}"#,
        );
        let (leases, _) = m.leases().await.unwrap();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].subnet.to_string(), "10.5.4.0-24");
    }
}
