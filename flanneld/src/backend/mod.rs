//! Backends: what a node does with its own lease and its peers' leases (Go's
//! `pkg/backend`). Each sits behind [`Backend`]; [`create`] picks one by the config's
//! `Backend.Type`: `vxlan` (device, neighbours, FDB entries, onlink routes) or `host-gw`
//! (routes via the peers' addresses). [`masq::Firewalled`] wraps either with the firewall
//! nftables rules.

/// The [`Backend`] methods a wrapper of another backend (its field `inner`) passes on
/// unchanged, named in the wrapper's `impl Backend`.
macro_rules! pass_to_inner {
    ($($method:ident),* $(,)?) => { $( pass_to_inner!(@ $method); )* };
    (@ backend_type) => { fn backend_type(&self) -> &'static str { self.inner.backend_type() } };
    (@ lease_attrs) => { fn lease_attrs(&self) -> $crate::lease::LeaseAttrs { self.inner.lease_attrs() } };
    (@ mtu) => { fn mtu(&self) -> u32 { self.inner.mtu() } };
    (@ handle) => { fn handle(&mut self, events: &[$crate::cache::LeaseEvent]) { self.inner.handle(events) } };
    (@ listed) => { fn listed(&mut self) { self.inner.listed() } };
    (@ reconcile_without_entries) => {
        fn reconcile_without_entries(&mut self) { self.inner.reconcile_without_entries() }
    };
    (@ watched_links) => { fn watched_links(&self) -> Vec<String> { self.inner.watched_links() } };
    (@ watched_entries) => {
        fn watched_entries(&self) -> $crate::backend::WatchedEntries { self.inner.watched_entries() }
    };
    (@ settled) => { fn settled(&self) -> bool { self.inner.settled() } };
    (@ programmed) => { fn programmed(&self) -> usize { self.inner.programmed() } };
    (@ stop) => { fn stop(&mut self) { self.inner.stop() } };
}
pub(crate) use pass_to_inner;

pub mod blackhole;
pub mod go_iptables;
pub mod hostgw;
pub mod masq;
pub mod vxlan;
pub mod wireguard;

use crate::cache::LeaseEvent;
use crate::config::NetworkConfig;
use crate::iface::ExternalInterface;
use crate::lease::{Lease, LeaseAttrs};

/// Why a backend cannot start or act.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The config names a backend this agent does not have (yet).
    #[error(
        "backend type {} is not supported by this flanneld (supported: vxlan, host-gw, wireguard)",
        crate::log::shown(.0)
    )]
    Unsupported(String),
    /// The `Backend` object has a value Go would refuse, or asks for what is not done here.
    #[error("{0}")]
    Config(String),
    /// A kernel step of the backend failed (what was being done, and the errno).
    #[error("{what}: {source}")]
    Step {
        /// What was being done, e.g. `creating vxlan device flannel.1`.
        what: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The masquerade/forward rules could not be written.
    #[error(transparent)]
    Firewall(#[from] cni_nft::NftError),
    /// host-gw needs the PublicIP to be the interface's own address.
    #[error(
        "the host-gw backend needs PublicIP {public_ip} to be an address of interface {iface} ({iface_addr}): is the node behind NAT?"
    )]
    Nat {
        /// `--public-ip` (or `--public-ipv6`).
        public_ip: std::net::IpAddr,
        /// The external interface.
        iface: String,
        /// Its address of that family.
        iface_addr: std::net::IpAddr,
    },
    /// The kernel refused something.
    #[error(transparent)]
    Kernel(#[from] node_kernel::KernelError),
}

/// A backend, registered once the external interface is known.
pub trait Backend {
    /// The `BackendType` published in the lease.
    fn backend_type(&self) -> &'static str;
    /// The lease value to publish (PublicIP, BackendType, BackendData).
    fn lease_attrs(&self) -> LeaseAttrs;
    /// The MTU written to subnet.env.
    fn mtu(&self) -> u32;
    /// The node's lease was acquired (or re-acquired): configure what depends on it.
    fn lease_acquired(&mut self, lease: &Lease) -> Result<(), BackendError>;
    /// Peers' leases changed. Failures are logged per lease, never fatal (as in Go).
    fn handle(&mut self, events: &[LeaseEvent]);
    /// The events handed so far came from a whole listing of the leases: what the backend
    /// finds of its own in the kernel that no lease names is stale.
    fn listed(&mut self) {}
    /// Compares the kernel with the peers the backend was told of and repairs what differs
    /// (called every few seconds); failures are logged and retried next time.
    fn reconcile(&mut self) {}
    /// What [`Backend::reconcile`] repaired so far, by kind.
    fn repairs(&self) -> Repairs {
        Repairs::default()
    }
    /// The links whose change or deletion calls for a prompt [`Backend::reconcile`] (the
    /// agent reconciles when the kernel notifies a change of one): the backend's device,
    /// the external interface.
    fn watched_links(&self) -> Vec<String> {
        Vec::new()
    }
    /// How many peers the backend holds programmed (`flanneld_peers_programmed`; a peer whose
    /// kernel step failed counts too: the next reconcile retries it).
    fn programmed(&self) -> usize {
        0
    }
    /// The links whose neighbours/FDB entries and routes [`Backend::reconcile`] compares.
    /// When the kernel notifies no change of those since the last reconcile, the agent
    /// skips the dumps and calls [`Backend::reconcile_without_entries`] (empty: always the
    /// whole reconcile).
    fn watched_entries(&self) -> WatchedEntries {
        WatchedEntries::default()
    }
    /// The part of [`Backend::reconcile`] that needs no dump of neighbours, FDB entries and
    /// routes (state the kernel does not notify, e.g. nftables rules; a device's state).
    fn reconcile_without_entries(&mut self) {}
    /// Whether every kernel step since the last [`Backend::reconcile`] worked; when not, the
    /// next tick reconciles whole whatever the kernel notified (a failed step sends none).
    fn settled(&self) -> bool {
        true
    }
    /// The agent stops: ends what lives only with the agent's process (a userspace
    /// WireGuard device and its control socket). Kernel state stays for the next run.
    fn stop(&mut self) {}
}

/// The route protocol number of the agent's own routes (host-gw's peer routes,
/// `--ip-blackhole-route`'s): `proto 102` in `ip route`. Unassigned in iproute2's
/// `rt_protos` (0–4 the kernel's, 8–18, 42, 99, 186–192 routing daemons'); it lets the agent
/// find its routes after a restart and never take anyone else's.
pub const ROUTE_PROTOCOL: u8 = 102;

/// The links whose entries a backend programs (see [`Backend::watched_entries`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WatchedEntries {
    /// Links whose neighbours and FDB entries are the backend's.
    pub neighbours: Vec<u32>,
    /// Links whose routes are the backend's.
    pub routes: Vec<u32>,
    /// Networks whose routes are the backend's, on whatever link (one replaced by hand to
    /// go elsewhere is notified as a route of that other link).
    pub networks: Vec<ipnetwork::IpNetwork>,
}

impl WatchedEntries {
    /// Whether the backend watches entries at all.
    pub fn is_empty(&self) -> bool {
        self.neighbours.is_empty() && self.routes.is_empty()
    }

    /// Whether an entry notification may concern what the backend programmed.
    pub fn concern(
        &self,
        kind: node_kernel::EntryKind,
        index: u32,
        dst: Option<ipnetwork::IpNetwork>,
    ) -> bool {
        match kind {
            node_kernel::EntryKind::Neighbour => self.neighbours.contains(&index),
            node_kernel::EntryKind::Route => {
                self.routes.contains(&index)
                    || dst.is_some_and(|d| {
                        self.networks
                            .iter()
                            .any(|n| d.prefix() >= n.prefix() && n.contains(d.network()))
                    })
            }
        }
    }
}

impl Backend for Box<dyn Backend> {
    fn backend_type(&self) -> &'static str {
        self.as_ref().backend_type()
    }
    fn lease_attrs(&self) -> LeaseAttrs {
        self.as_ref().lease_attrs()
    }
    fn mtu(&self) -> u32 {
        self.as_ref().mtu()
    }
    fn lease_acquired(&mut self, lease: &Lease) -> Result<(), BackendError> {
        self.as_mut().lease_acquired(lease)
    }
    fn handle(&mut self, events: &[LeaseEvent]) {
        self.as_mut().handle(events)
    }
    fn listed(&mut self) {
        self.as_mut().listed()
    }
    fn reconcile(&mut self) {
        self.as_mut().reconcile()
    }
    fn repairs(&self) -> Repairs {
        self.as_ref().repairs()
    }
    fn watched_links(&self) -> Vec<String> {
        self.as_ref().watched_links()
    }
    fn programmed(&self) -> usize {
        self.as_ref().programmed()
    }
    fn watched_entries(&self) -> WatchedEntries {
        self.as_ref().watched_entries()
    }
    fn reconcile_without_entries(&mut self) {
        self.as_mut().reconcile_without_entries()
    }
    fn settled(&self) -> bool {
        self.as_ref().settled()
    }
    fn stop(&mut self) {
        self.as_mut().stop()
    }
}

/// Repairs made by reconciling, counted by kind (exported as `flanneld_reconcile_repairs`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Repairs {
    /// The device recreated (deleted, or changed into something incompatible), or brought
    /// back up, or its MTU restored.
    pub device: u64,
    /// The device's `<subnet>.0/32` address restored.
    pub address: u64,
    /// A peer's neighbour entry restored.
    pub neighbour: u64,
    /// A peer's FDB entry restored.
    pub fdb: u64,
    /// A peer's route restored.
    pub route: u64,
    /// A neighbour entry of no current peer removed.
    pub stale_neighbour: u64,
    /// An FDB entry of no current peer removed.
    pub stale_fdb: u64,
    /// A route of no current peer removed.
    pub stale_route: u64,
    /// The masquerade/forward rules rewritten because they differed from what was written.
    pub rules: u64,
    /// A WireGuard peer restored (missing, or with another endpoint, key or allowed IPs).
    pub peer: u64,
    /// A WireGuard peer of no current lease removed.
    pub stale_peer: u64,
}

impl Repairs {
    /// Each counter of `self` and `o` combined by `f` (the one list of the fields besides
    /// [`Repairs::by_kind`]).
    fn zip(self, o: Repairs, f: impl Fn(u64, u64) -> u64) -> Repairs {
        Repairs {
            device: f(self.device, o.device),
            address: f(self.address, o.address),
            neighbour: f(self.neighbour, o.neighbour),
            fdb: f(self.fdb, o.fdb),
            route: f(self.route, o.route),
            stale_neighbour: f(self.stale_neighbour, o.stale_neighbour),
            stale_fdb: f(self.stale_fdb, o.stale_fdb),
            stale_route: f(self.stale_route, o.stale_route),
            rules: f(self.rules, o.rules),
            peer: f(self.peer, o.peer),
            stale_peer: f(self.stale_peer, o.stale_peer),
        }
    }

    /// The sum of two counters (a backend's and its masquerade rules').
    pub fn plus(self, o: Repairs) -> Repairs {
        self.zip(o, |a, b| a + b)
    }

    /// What was repaired since `before` (an earlier reading of the same counters).
    pub fn since(self, before: Repairs) -> Repairs {
        self.zip(before, u64::saturating_sub)
    }

    /// Each counter with its kind's name (the metric's `kind` label).
    pub fn by_kind(&self) -> [(&'static str, u64); 11] {
        [
            ("device", self.device),
            ("address", self.address),
            ("neighbour", self.neighbour),
            ("fdb", self.fdb),
            ("route", self.route),
            ("stale_neighbour", self.stale_neighbour),
            ("stale_fdb", self.stale_fdb),
            ("stale_route", self.stale_route),
            ("rules", self.rules),
            ("peer", self.peer),
            ("stale_peer", self.stale_peer),
        ]
    }

    /// Every repair of any kind.
    pub fn total(&self) -> u64 {
        self.by_kind().iter().map(|(_, n)| n).sum()
    }
}

/// Checks the config's `Backend` object without touching the kernel: a type this agent has,
/// and keys its backend takes (vxlan's VNI, Port, MTU...). The agent checks this with the
/// rest of the config, so a bad `Backend` is logged and retried every second until fixed
/// in etcd, as a bad `Network` is (Go exits 1).
pub fn check(config: &NetworkConfig) -> Result<(), BackendError> {
    match config.backend_type.as_str() {
        hostgw::TYPE => Ok(()),
        vxlan::TYPE => vxlan::VxlanConfig::parse(&config.backend).map(|_| ()),
        wireguard::TYPE => wireguard::WireguardConfig::parse(&config.backend).map(|_| ()),
        other => Err(BackendError::Unsupported(other.to_owned())),
    }
}

/// The VTEP MACs a node published before (kube mode keeps them in the Node's annotations),
/// for devices created anew.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredMacs {
    /// `flannel.<VNI>`'s.
    pub v4: Option<[u8; 6]>,
    /// `flannel-v6.<VNI>`'s.
    pub v6: Option<[u8; 6]>,
}

/// What the flags and environment tell the backends beyond the network config.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The VTEP MACs published before.
    pub vtep_macs: StoredMacs,
    /// `--vxlan-tx-checksum-off`.
    pub vxlan_tx_checksum_off: bool,
    /// The wireguard backend's key file.
    pub wireguard_key_file: std::path::PathBuf,
    /// Userspace WireGuard even where the kernel has the module.
    pub wireguard_userspace: bool,
}

/// The backend the config asks for, on the external interface.
pub fn create(
    config: &NetworkConfig,
    ext: &ExternalInterface,
    opts: &Options,
) -> Result<Box<dyn Backend>, BackendError> {
    let (vtep_macs, vxlan_tx_checksum_off) = (opts.vtep_macs, opts.vxlan_tx_checksum_off);
    match config.backend_type.as_str() {
        hostgw::TYPE | wireguard::TYPE if vxlan_tx_checksum_off => {
            Err(BackendError::Config(format!(
                "--vxlan-tx-checksum-off: the {} backend has no vxlan device",
                config.backend_type
            )))
        }
        wireguard::TYPE => {
            let key = wireguard::keys::load_or_create(&opts.wireguard_key_file)
                .map_err(|e| BackendError::Config(e.to_string()))?;
            let kernel = wireguard::NodeWg::current(opts.wireguard_userspace)?;
            Ok(Box::new(wireguard::Wireguard::new(
                kernel,
                ext.clone(),
                config,
                key,
            )?))
        }
        hostgw::TYPE => {
            let routes = hostgw::KernelRoutes::current()?;
            Ok(Box::new(hostgw::HostGw::new(ext.clone(), routes, config)?))
        }
        vxlan::TYPE => {
            let kernel = vxlan::KernelVxlan::current()?;
            // A MAC the node published before (kube's annotation) is taken again: the peers'
            // FDB entries name it.
            Ok(Box::new(vxlan::Vxlan::with_options(
                kernel,
                ext.clone(),
                config,
                vtep_macs.v4.unwrap_or_else(vxlan::random_mac),
                vtep_macs.v6.unwrap_or_else(vxlan::random_mac),
                vxlan_tx_checksum_off,
            )?))
        }
        other => Err(BackendError::Unsupported(other.to_owned())),
    }
}

/// The events of leases of backend type `ty`, as (lease, added); a lease of another type is
/// skipped with a warning, as Go flanneld skips it.
pub(crate) fn events_of_type<'a>(
    events: &'a [LeaseEvent],
    ty: &'a str,
) -> impl Iterator<Item = (&'a Lease, bool)> + 'a {
    events.iter().filter_map(move |ev| {
        let (lease, add) = match ev {
            LeaseEvent::Added(l) => (l, true),
            LeaseEvent::Removed(l) => (l, false),
        };
        if lease.attrs.backend_type == ty {
            return Some((lease, add));
        }
        crate::log::warning!(
            "ignoring lease {} of backend type {:?} (this node runs {ty})",
            lease.subnet,
            lease.attrs.backend_type
        );
        None
    })
}
