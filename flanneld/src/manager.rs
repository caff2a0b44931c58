//! The seam between the agent and the place leases live (Go's `subnet.Manager`): etcd
//! ([`crate::etcd`]) or the Kubernetes API ([`crate::kube`]). The agent knows leases and
//! lease updates only; keys, revisions, TTLs, Node objects and annotations stay in the wings.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

use crate::cache::Change;
use crate::config::NetworkConfig;
use crate::lease::{Lease, LeaseAttrs};
use crate::metrics::Metrics;
use crate::peer::PeerCheck;

/// What the agent does after a manager call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The store was unreachable or slow: retry with a growing delay.
    Transient,
    /// No subnet can be had now (every one leased, lost races, none assigned yet): retry
    /// soon, a subnet may be freed or assigned.
    Wait,
    /// The node's lease now names another node: acquire one again.
    Lost,
    /// Retrying cannot help (the operator must fix something): the agent stops.
    Fatal,
}

/// An error of a subnet manager, classified for the agent.
pub trait ManagerError: std::error::Error + Send + Sync + 'static {
    /// How the agent goes on.
    fn failure(&self) -> Failure;
}

/// What a lease watch reports.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseUpdate {
    /// Every lease there is now (the first listing, or a listing again after the watch
    /// broke): the agent's cache diffs it with what it holds.
    Snapshot(Vec<Lease>),
    /// Changes since the last update.
    Changes(Vec<Change>),
    /// The node's own lease was rewritten for it by someone else (an operator's `etcdctl
    /// put` on another etcd lease): the lease as it is now (that etcd lease and its expiry).
    Own(Lease),
    /// The node's own lease is gone, or names another node now: acquire one again.
    OwnLost(String),
}

/// A watch of the leases, as a stream: it keeps its own place (revision, resource
/// version, backoff), so the agent may poll it among other things without losing any.
pub type LeaseWatch = Pin<Box<dyn Stream<Item = LeaseUpdate>>>;

/// Addresses and MACs an operator or an earlier run left for this node in the store (kube's
/// Node annotations; etcd keeps none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// `node-public-ip`: the address the node is to use.
    pub public_ip: Option<Ipv4Addr>,
    /// `node-public-ipv6`.
    pub public_ipv6: Option<Ipv6Addr>,
    /// The VTEP MAC the node published last (`backend-data`): a recreated device takes it,
    /// so the peers' FDB entries stay valid.
    pub vtep_mac: Option<[u8; 6]>,
    /// The same for `flannel-v6.<VNI>` (`backend-v6-data`).
    pub vtep_mac_v6: Option<[u8; 6]>,
}

/// Where the node's lease and its peers' leases come from (Go's `subnet.Manager`).
#[allow(async_fn_in_trait)] // used through generics on one runtime; no Send bound needed
pub trait SubnetManager {
    /// Why a call failed.
    type Error: ManagerError;

    /// The network config.
    async fn network_config(&self) -> Result<NetworkConfig, Self::Error>;

    /// What the store holds for this node from before (kube: annotations).
    async fn stored(&self) -> Result<Stored, Self::Error> {
        Ok(Stored::default())
    }

    /// Acquires the node's lease, publishing `attrs`.
    async fn acquire(
        &mut self,
        config: &NetworkConfig,
        attrs: &LeaseAttrs,
    ) -> Result<Lease, Self::Error>;

    /// Acquires the node's lease again after `old` was lost, preferring its subnet.
    async fn reacquire(
        &mut self,
        config: &NetworkConfig,
        old: &Lease,
    ) -> Result<Lease, Self::Error> {
        self.acquire(config, &old.attrs).await
    }

    /// Renews a lease that expires ([`Lease::expiration`] set).
    async fn renew(&mut self, lease: &Lease) -> Result<Lease, Self::Error>;

    /// The renew margin to use with `margin` asked for (`--subnet-lease-renew-margin`).
    fn renew_margin(&self, margin: Duration) -> Duration {
        margin
    }

    /// The lease is in use (backend configured, subnet.env written): kube marks the node's
    /// network available.
    async fn complete(&mut self, _lease: &Lease) -> Result<(), Self::Error> {
        Ok(())
    }

    /// The lease as the log names it (etcd: with its key).
    fn describe(&self, lease: &Lease) -> String;

    /// Watches every lease; `own` is the node's (reported as [`LeaseUpdate::OwnLost`] when
    /// it goes).
    fn watch(&mut self, own: &Lease, metrics: &Metrics) -> LeaseWatch;

    /// What a peer's lease must be before the backend sees it.
    fn peer_check(&self, config: &NetworkConfig, own: &LeaseAttrs) -> PeerCheck {
        PeerCheck::new(config, own)
    }
}
