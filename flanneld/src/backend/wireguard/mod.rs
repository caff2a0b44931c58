//! The wireguard backend (`pkg/backend/wireguard`): pod traffic between nodes encrypted by
//! WireGuard. A device `flannel-wg` (and `flannel-wg-v6` in the default `separate` mode with
//! IPv6), MTU the underlay's − 80, the node's private key kept in `/run/flannel/wgkey` so
//! a restart keeps its public key, the address `<subnet>.0/32`, one scope-link route for the
//! whole Network through the device; per peer lease a WireGuard peer: its public key, the
//! endpoint `PublicIP:Port` and its subnet(s) as allowed IPs, removed with the lease. The
//! lease publishes `{"PublicKey":"…","Port":51820}` as Go does, so Go's nodes and ours peer.
//!
//! Beyond Go: where the kernel has no WireGuard, the device is userspace WireGuard in the
//! agent (boringtun on a TUN device of the same name, [`userspace`]) instead of a failure;
//! the log says which runs. The kernel device of an earlier run is reused (Go deletes it on
//! exit and recreates it at start: traffic stops for the restart), and [`Backend::reconcile`]
//! repairs the device, its address, route and peers, and removes peers no lease names.

mod device;
pub mod keys;
mod peers;
pub mod uapi;
mod userspace;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use node_kernel::wireguard::{DeviceSettings, PeerChange, WgPeer};
use serde::Deserialize;
use serde_json::{Value, json};

pub use device::{Flavor, Link, NodeWg, WgKernel};
pub use keys::{DEFAULT_KEY_FILE, Key};
pub use peers::Mode;

use super::{Backend, BackendError, Repairs};
use crate::cache::LeaseEvent;
use crate::config::NetworkConfig;
use crate::iface::ExternalInterface;
use crate::lease::{Lease, LeaseAttrs};
use crate::log::{error, info, warning};
use node_kernel::Context;

/// The backend's `BackendType`.
pub const TYPE: &str = "wireguard";
/// The IPv4 (or IPv6) device.
pub const DEVICE: &str = "flannel-wg";
/// The IPv6 device of `separate` mode.
pub const DEVICE_V6: &str = "flannel-wg-v6";
/// WireGuard's bytes per packet (outer IPv6 header, UDP, its header and tag), as Go counts.
pub const OVERHEAD: u32 = 80;
/// The largest device MTU userspace WireGuard serves: boringtun reads packets into a
/// buffer sized by the TUN device's MTU when it starts (1500).
pub const USERSPACE_MAX_MTU: u32 = 1500;

/// The `Backend` object of a wireguard network config (Go's keys, matched as Go matches them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireguardConfig {
    /// `ListenPort` (51820): the port of `flannel-wg`.
    pub listen_port: u16,
    /// `ListenPortV6` (51821): the port of `flannel-wg-v6`.
    pub listen_port_v6: u16,
    /// `MTU` of the underlay; 0 takes the external interface's.
    pub mtu: u32,
    /// `PSK`: a preshared key for every peer.
    pub psk: Option<Key>,
    /// `PersistentKeepaliveInterval` in seconds; 0 is off.
    pub keepalive: u16,
    /// `Mode`.
    pub mode: Mode,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawConfig {
    #[serde(rename = "ListenPort")]
    listen_port: i64,
    #[serde(rename = "ListenPortV6")]
    listen_port_v6: i64,
    #[serde(rename = "MTU")]
    mtu: i64,
    #[serde(rename = "PSK")]
    psk: String,
    #[serde(rename = "PersistentKeepaliveInterval")]
    keepalive: i64,
    #[serde(rename = "Mode")]
    mode: String,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            listen_port: 51820,
            listen_port_v6: 51821,
            mtu: 0,
            psk: String::new(),
            keepalive: 0,
            mode: "separate".into(),
        }
    }
}

impl WireguardConfig {
    /// Reads the config's `Backend` object. Go takes a port of 0 (a random port, published
    /// as 0, which peers read as their own port) and any MTU; both are refused here.
    pub fn parse(backend: &Value) -> Result<WireguardConfig, BackendError> {
        let bad = |e: String| {
            BackendError::Config(format!("error decoding wireguard backend config: {e}"))
        };
        let raw: RawConfig = cni_common::gojson::from_value(backend)
            .map_err(|e| bad(crate::log::bounded(&e.to_string())))?;
        let port = |name: &str, v: i64| {
            u16::try_from(v)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(format!("{name} {v} is not in 1..=65535")))
        };
        let mtu = u32::try_from(raw.mtu)
            .ok()
            .filter(|m| *m == 0 || (*m >= OVERHEAD + 68 && *m <= 65535))
            .ok_or_else(|| {
                bad(format!(
                    "MTU {} leaves no room for WireGuard's {OVERHEAD} bytes",
                    raw.mtu
                ))
            })?;
        let psk = match raw.psk.as_str() {
            "" => None,
            // The key's text is a secret: not shown.
            text => Some(Key::parse(text).map_err(|e| bad(format!("PSK: {e}")))?),
        };
        let keepalive = u16::try_from(raw.keepalive).map_err(|_| {
            bad(format!(
                "PersistentKeepaliveInterval {} is not in 0..=65535 seconds",
                raw.keepalive
            ))
        })?;
        let mode = Mode::parse(&raw.mode).ok_or_else(|| {
            bad(format!(
                "no valid Mode configured: {} (separate, auto, ipv4 or ipv6)",
                crate::log::shown(&raw.mode)
            ))
        })?;
        Ok(WireguardConfig {
            listen_port: port("ListenPort", raw.listen_port)?,
            listen_port_v6: port("ListenPortV6", raw.listen_port_v6)?,
            mtu,
            psk,
            keepalive,
            mode,
        })
    }
}

/// One device's wanted state.
#[derive(Debug)]
struct Dev {
    name: &'static str,
    port: u16,
    /// The families it carries (both for a single device with dual-stack).
    v4: bool,
    v6: bool,
    /// Its index once made.
    index: u32,
    /// Its addresses (`<subnet>.0/32`, the IPv6 subnet's first address /128), once leased.
    addresses: Vec<IpNetwork>,
    /// The networks routed through it.
    networks: Vec<IpNetwork>,
    /// The peers wanted, by public key.
    peers: BTreeMap<Key, WgPeer>,
    /// Each peer lease's key (by the lease's id).
    by_lease: BTreeMap<IpNetwork, Key>,
}

/// The wireguard backend over `K`.
#[derive(Debug)]
pub struct Wireguard<K> {
    kernel: K,
    ext: ExternalInterface,
    config: WireguardConfig,
    private: Key,
    public: Key,
    v4: bool,
    v6: bool,
    devs: Vec<Dev>,
    mtu: u32,
    flavor: Flavor,
    repairs: Repairs,
    /// A kernel step failed since the last reconcile.
    failing: bool,
    /// A whole listing of the leases was handed: a peer of no lease is stale.
    listed: bool,
}

impl<K: WgKernel> Wireguard<K> {
    /// Makes (or takes over) the device(s) with the node's key and port(s); peers and
    /// addresses come with the leases.
    pub fn new(
        kernel: K,
        ext: ExternalInterface,
        network: &NetworkConfig,
        private: Key,
    ) -> Result<Wireguard<K>, BackendError> {
        let config = WireguardConfig::parse(&network.backend)?;
        let (v4, v6) = (network.v4.is_some(), network.v6.is_some());
        if v6 && ext.public_ipv6.is_none() {
            return Err(BackendError::Config(format!(
                "EnableIPv6: the wireguard backend needs an IPv6 address on {} (or --public-ipv6)",
                ext.name
            )));
        }
        let dev = |name, port, v4, v6| Dev {
            name,
            port,
            v4,
            v6,
            index: 0,
            addresses: Vec::new(),
            networks: Vec::new(),
            peers: BTreeMap::new(),
            by_lease: BTreeMap::new(),
        };
        let devs = match config.mode {
            Mode::Separate => {
                let mut d = Vec::new();
                if v4 {
                    d.push(dev(DEVICE, config.listen_port, true, false));
                }
                if v6 {
                    d.push(dev(DEVICE_V6, config.listen_port_v6, false, true));
                }
                d
            }
            _ => vec![dev(DEVICE, config.listen_port, v4, v6)],
        };
        let mut devs = devs;
        for d in &mut devs {
            if d.v4
                && let Some(r) = &network.v4
            {
                d.networks.push(IpNetwork::V4(r.network));
            }
            if d.v6
                && let Some(r) = &network.v6
            {
                d.networks.push(IpNetwork::V6(r.network));
            }
        }
        let underlay = if config.mtu == 0 { ext.mtu } else { config.mtu };
        let mut wg = Wireguard {
            kernel,
            ext,
            public: private.public(),
            private,
            config,
            v4,
            v6,
            devs,
            mtu: underlay.saturating_sub(OVERHEAD),
            flavor: Flavor::Kernel,
            repairs: Repairs::default(),
            failing: false,
            listed: false,
        };
        for i in 0..wg.devs.len() {
            wg.make_device(i, false)?;
        }
        Ok(wg)
    }

    /// The kernel side (tests read the fake's record).
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// Which WireGuard runs the devices.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Creates device `i` (or takes over ours of an earlier run; deletes a foreign link of
    /// the name, as Go does), sets its MTU, key and port. `again`: a repair.
    fn make_device(&mut self, i: usize, again: bool) -> Result<(), BackendError> {
        let name = self.devs[i].name;
        let found = self
            .kernel
            .link(name)
            .context(format!("looking up {name}"))?;
        let index = match found {
            Some(l) if l.ours => l.index,
            found => {
                if let Some(l) = found {
                    warning!(
                        "{name:?} already exists and is not a WireGuard device; recreating it"
                    );
                    self.kernel
                        .delete(name, l.index)
                        .context(format!("deleting {name}"))?;
                }
                self.flavor = self
                    .kernel
                    .create(name, self.mtu)
                    .context(format!("creating WireGuard device {name}"))?;
                if self.flavor == Flavor::Userspace && self.mtu > USERSPACE_MAX_MTU {
                    warning!(
                        "userspace WireGuard serves at most MTU {USERSPACE_MAX_MTU}: {name} gets {USERSPACE_MAX_MTU}, not {}",
                        self.mtu
                    );
                    self.mtu = USERSPACE_MAX_MTU;
                }
                let l = self
                    .kernel
                    .link(name)
                    .context(format!("looking up {name}"))?
                    .ok_or_else(|| {
                        BackendError::Config(format!(
                            "WireGuard device {name} vanished after creation"
                        ))
                    })?;
                if !again {
                    info!("{name}: {}", self.flavor.describe());
                }
                l.index
            }
        };
        self.devs[i].index = index;
        let settings = DeviceSettings {
            private_key: Some(self.private.0),
            listen_port: Some(self.devs[i].port),
            replace_peers: false,
        };
        let mtu = self.mtu;
        self.kernel
            .set_mtu(index, mtu)
            .context(format!("setting the MTU of {name} to {mtu}"))?;
        self.kernel
            .configure(name, &settings, &[])
            .context(format!(
                "setting the key and port {} of {name}",
                settings.listen_port.unwrap_or_default()
            ))?;
        Ok(())
    }

    /// Brings device `i` up with its addresses (others of the cluster network removed: an
    /// earlier lease's) and its routes.
    fn program_links(&mut self, i: usize) -> Result<(), BackendError> {
        let (name, index) = (self.devs[i].name, self.devs[i].index);
        let have = self
            .kernel
            .addresses(index)
            .context(format!("listing the addresses of {name}"))?;
        let dev = &self.devs[i];
        let old: Vec<IpNetwork> = have
            .iter()
            .filter(|a| !dev.addresses.contains(a))
            .filter(|a| dev.networks.iter().any(|n| n.contains(a.ip())))
            .copied()
            .collect();
        for a in old {
            self.kernel
                .delete_address(index, a)
                .context(format!("removing the old address {a} from {name}"))?;
            info!("{name}: removed the old address {a}");
        }
        for a in self.devs[i].addresses.clone() {
            if !have.contains(&a) {
                self.kernel
                    .add_address(index, a)
                    .context(format!("adding {a} to {name}"))?;
            }
        }
        self.kernel
            .set_up(index)
            .context(format!("bringing {name} up"))?;
        for n in self.devs[i].networks.clone() {
            self.kernel
                .replace_route(index, n)
                .context(format!("adding the route {n} dev {name}"))?;
        }
        Ok(())
    }

    /// Sets every wanted peer of device `i`.
    fn program_peers(&mut self, i: usize) -> Result<(), BackendError> {
        let name = self.devs[i].name;
        let peers: Vec<PeerChange> = self.devs[i]
            .peers
            .values()
            .cloned()
            .map(PeerChange::Set)
            .collect();
        self.kernel
            .configure(name, &DeviceSettings::default(), &peers)
            .context(format!("setting the peers of {name}"))?;
        Ok(())
    }

    /// Applies one peer change to device `i`, logging the outcome.
    fn change(&mut self, i: usize, change: PeerChange, what: &str) {
        let name = self.devs[i].name;
        match self
            .kernel
            .configure(name, &DeviceSettings::default(), &[change])
        {
            Ok(()) => info!("{name}: {what}"),
            Err(e) => {
                self.failing = true;
                error!("{name}: {what}: {e} (retried by the next reconcile)");
            }
        }
    }

    /// One peer lease added or re-announced on device `i`.
    fn peer_added(&mut self, i: usize, lease: &Lease) {
        let dev = &self.devs[i];
        let Some(id) = lease.subnet.id() else {
            return;
        };
        let spec = peers::Spec {
            v4: dev.v4,
            v6: dev.v6,
            separate_v6: self.config.mode == Mode::Separate && dev.v6,
            mode: self.config.mode,
            own_port: dev.port,
            ext: &self.ext,
        };
        let peer = match peers::peer_of(lease, &spec) {
            Ok(Some(p)) => p,
            // Nothing for this device (any more): a peer it had from this lease goes.
            Ok(None) => return self.peer_removed(i, lease),
            Err(e) => {
                warning!("ignoring lease {}: {e}", lease.subnet);
                return;
            }
        };
        let key = Key(peer.public_key);
        if key == self.public {
            return;
        }
        let peer = WgPeer {
            preshared_key: self.config.psk.map(|k| k.0),
            keepalive: self.config.keepalive,
            ..peer
        };
        let dev = &mut self.devs[i];
        let old = dev.by_lease.insert(id, key);
        if let Some(old) = old.filter(|o| *o != key)
            && !dev.by_lease.values().any(|k| *k == old)
        {
            dev.peers.remove(&old);
            self.change(
                i,
                PeerChange::Remove(old.0),
                &format!("removed the old key of {}", lease.subnet),
            );
        }
        let dev = &mut self.devs[i];
        if dev.peers.get(&key) == Some(&peer) {
            return;
        }
        dev.peers.insert(key, peer.clone());
        let what = format!(
            "peer {} via {}",
            peer.allowed_ips
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            peer.endpoint.map(|e| e.to_string()).unwrap_or_default()
        );
        self.change(i, PeerChange::Set(peer), &what);
    }

    /// One peer lease gone from device `i`.
    fn peer_removed(&mut self, i: usize, lease: &Lease) {
        let Some(id) = lease.subnet.id() else {
            return;
        };
        let dev = &mut self.devs[i];
        let Some(key) = dev.by_lease.remove(&id) else {
            return;
        };
        if dev.by_lease.values().any(|k| *k == key) {
            return;
        }
        dev.peers.remove(&key);
        self.change(
            i,
            PeerChange::Remove(key.0),
            &format!("removed the peer of {}", lease.subnet),
        );
    }

    /// Compares device `i` with what is wanted and repairs it.
    fn reconcile_device(&mut self, i: usize) -> Result<(), BackendError> {
        let name = self.devs[i].name;
        let link = self
            .kernel
            .link(name)
            .context(format!("looking up {name}"))?;
        let Some(link) = link.filter(|l| l.ours) else {
            warning!("reconcile: {name} is gone (or replaced): recreating it with every peer");
            self.make_device(i, true)?;
            self.repairs.device += 1;
            self.program_links(i)?;
            return self.program_peers(i);
        };
        self.devs[i].index = link.index;
        if link.mtu != self.mtu || !link.up {
            warning!(
                "reconcile: {name} was down or had MTU {}: restored",
                link.mtu
            );
            self.repairs.device += 1;
            self.kernel
                .set_mtu(link.index, self.mtu)
                .context(format!("setting the MTU of {name}"))?;
        }
        let have = self
            .kernel
            .addresses(link.index)
            .context(format!("listing the addresses of {name}"))?;
        let missing_addresses = missing(&self.devs[i].addresses, &have);
        self.repairs.address += missing_addresses as u64;
        let mut routes = Vec::new();
        let families = [(self.devs[i].v4, true), (self.devs[i].v6, false)];
        for v4 in families.iter().filter(|f| f.0).map(|f| f.1) {
            routes.extend(
                self.kernel
                    .routes(link.index, v4)
                    .context(format!("listing the routes of {name}"))?,
            );
        }
        let missing_routes = missing(&self.devs[i].networks, &routes);
        self.repairs.route += missing_routes as u64;
        let read = self
            .kernel
            .read(name)
            .context(format!("reading the peers of {name}"))?;
        let dev = &self.devs[i];
        let mut changes = Vec::new();
        if read.public_key != Some(self.public.0) || read.listen_port != dev.port {
            warning!(
                "reconcile: {name} had another key or port {}: restored",
                read.listen_port
            );
            self.repairs.device += 1;
            self.kernel
                .configure(
                    name,
                    &DeviceSettings {
                        private_key: Some(self.private.0),
                        listen_port: Some(dev.port),
                        replace_peers: false,
                    },
                    &[],
                )
                .context(format!("setting the key and port of {name}"))?;
        }
        let dev = &self.devs[i];
        for want in dev.peers.values() {
            if !read.peers.iter().any(|p| want.is_met_by(p)) {
                warning!(
                    "reconcile: {name}: restored the peer of {:?}",
                    want.allowed_ips
                );
                self.repairs.peer += 1;
                changes.push(PeerChange::Set(want.clone()));
            }
        }
        if self.listed {
            for p in &read.peers {
                if !dev.peers.contains_key(&Key(p.public_key)) {
                    warning!(
                        "reconcile: {name}: removed a peer no lease names ({:?})",
                        p.allowed_ips
                    );
                    self.repairs.stale_peer += 1;
                    changes.push(PeerChange::Remove(p.public_key));
                }
            }
        }
        // Written again only when something is missing: a quiet reconcile only reads.
        if missing_addresses + missing_routes > 0 || !link.up {
            self.program_links(i)?;
        }
        if changes.is_empty() {
            return Ok(());
        }
        self.kernel
            .configure(name, &DeviceSettings::default(), &changes)
            .context(format!("repairing the peers of {name}"))?;
        Ok(())
    }
}

/// How many of `want` are not in `have`.
fn missing(want: &[IpNetwork], have: &[IpNetwork]) -> usize {
    want.iter().filter(|w| !have.contains(w)).count()
}

/// `<subnet>.0/32` or the IPv6 subnet's first address /128.
fn own_address(net: IpNetwork) -> IpNetwork {
    let prefix = if net.is_ipv4() { 32 } else { 128 };
    IpNetwork::new(net.network(), prefix).unwrap_or(net)
}

impl<K: WgKernel + std::fmt::Debug> Backend for Wireguard<K> {
    fn backend_type(&self) -> &'static str {
        TYPE
    }

    fn lease_attrs(&self) -> LeaseAttrs {
        // In a single-device mode the device listens on ListenPort whatever the family; Go
        // publishes ListenPortV6 in BackendV6Data there, a port nobody listens on.
        let v6_port = match self.config.mode {
            Mode::Separate => self.config.listen_port_v6,
            _ => self.config.listen_port,
        };
        let data = |port: u16| json!({"PublicKey": self.public.to_base64(), "Port": port});
        LeaseAttrs {
            public_ip: self.ext.public_ip,
            public_ipv6: if self.v6 { self.ext.public_ipv6 } else { None },
            backend_type: TYPE.to_owned(),
            backend_data: self.v4.then(|| data(self.config.listen_port)),
            backend_v6_data: self.v6.then(|| data(v6_port)),
        }
    }

    fn mtu(&self) -> u32 {
        self.mtu
    }

    fn lease_acquired(&mut self, lease: &Lease) -> Result<(), BackendError> {
        let (v4, v6) = (self.v4, self.v6);
        for i in 0..self.devs.len() {
            let dev = &mut self.devs[i];
            dev.addresses.clear();
            if dev.v4 && v4 {
                let sn = lease.subnet.v4.ok_or_else(|| {
                    BackendError::Config("IPv4 is enabled but the lease has no IPv4 subnet".into())
                })?;
                dev.addresses.push(own_address(IpNetwork::V4(sn)));
            }
            if dev.v6 && v6 {
                let sn = lease.subnet.v6.ok_or_else(|| {
                    BackendError::Config("IPv6 is enabled but the lease has no IPv6 subnet".into())
                })?;
                dev.addresses.push(own_address(IpNetwork::V6(sn)));
            }
            self.program_links(i)?;
        }
        Ok(())
    }

    fn handle(&mut self, events: &[LeaseEvent]) {
        for (lease, add) in super::events_of_type(events, TYPE) {
            for i in 0..self.devs.len() {
                if add {
                    self.peer_added(i, lease);
                } else {
                    self.peer_removed(i, lease);
                }
            }
        }
    }

    fn listed(&mut self) {
        if !self.listed {
            self.listed = true;
            self.reconcile();
        }
    }

    fn reconcile(&mut self) {
        self.failing = false;
        for i in 0..self.devs.len() {
            if let Err(e) = self.reconcile_device(i) {
                self.failing = true;
                error!("reconcile: {e}");
            }
        }
    }

    fn repairs(&self) -> Repairs {
        self.repairs
    }

    fn watched_links(&self) -> Vec<String> {
        self.devs.iter().map(|d| d.name.to_owned()).collect()
    }

    fn programmed(&self) -> usize {
        self.devs.iter().map(|d| d.peers.len()).sum()
    }

    fn settled(&self) -> bool {
        !self.failing
    }

    fn stop(&mut self) {
        self.kernel.stop();
    }
}
