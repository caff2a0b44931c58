//! The vxlan backend (`pkg/backend/vxlan`): one VXLAN device `flannel.<VNI>` on the external
//! interface, its MAC chosen before creation and published in the lease; per peer lease a
//! permanent neighbour `<peer>.0 → VtepMAC`, an FDB entry `VtepMAC → PublicIP` and the route
//! `<peer subnet> via <peer>.0 dev flannel.<VNI> onlink`, in that order (the route last, so
//! the kernel never has to resolve anything), rolled back on failure; removed with the lease.
//! With DirectRouting, a peer on the same link gets `<peer subnet> via <PublicIP>` instead.
//!
//! Unlike Go, [`Vxlan`] reconciles ([`Backend::reconcile`]): a deleted device is recreated
//! with the same MAC (the published lease stays valid) *and* every peer; missing entries come
//! back; entries of peers that are gone are removed.

mod kernel;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use node_kernel::link::VxlanSpec;
use serde::Deserialize;
use serde_json::{Value, json};

pub use kernel::{Device, Fdb, KernelVxlan, Neighbour, PeerRoute, VxlanAttrs, VxlanKernel};

use super::{Backend, BackendError, Repairs};
use crate::cache::LeaseEvent;
use crate::config::NetworkConfig;
use crate::iface::ExternalInterface;
use crate::lease::{Lease, LeaseAttrs};
use crate::log::{error, info, warning};

/// The backend's `BackendType`.
pub const TYPE: &str = "vxlan";
/// The port the kernel uses when none is given (the vxlan module's `udp_port`).
pub const KERNEL_DEFAULT_PORT: u16 = 8472;
/// IPv4 + UDP + VXLAN + inner Ethernet headers: the device MTU is the underlay's minus this.
pub const OVERHEAD: u32 = 50;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// The `Backend` object of a vxlan network config (Go's `VXLANConfig`; keys matched as Go
/// matches them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// `VNI`, default 1.
    pub vni: u32,
    /// `Port`; 0 (the default) leaves the attribute out: the kernel's 8472.
    pub port: u16,
    /// `GBP`.
    pub gbp: bool,
    /// `Learning`.
    pub learning: bool,
    /// `DirectRouting`.
    pub direct_routing: bool,
    /// `MTU` of the underlay; 0 (the default) takes the external interface's.
    pub mtu: u32,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawConfig {
    #[serde(rename = "VNI")]
    vni: i64,
    #[serde(rename = "Port")]
    port: i64,
    #[serde(rename = "GBP")]
    gbp: bool,
    #[serde(rename = "Learning")]
    learning: bool,
    #[serde(rename = "DirectRouting")]
    direct_routing: bool,
    #[serde(rename = "MTU")]
    mtu: i64,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            vni: 1,
            port: 0,
            gbp: false,
            learning: false,
            direct_routing: false,
            mtu: 0,
        }
    }
}

impl VxlanConfig {
    /// Reads the config's `Backend` object.
    pub fn parse(backend: &Value) -> Result<VxlanConfig, BackendError> {
        let bad =
            |e: String| BackendError::Config(format!("error decoding VXLAN backend config: {e}"));
        let raw: RawConfig =
            cni_common::gojson::from_value(backend).map_err(|e| bad(e.to_string()))?;
        let vni = u32::try_from(raw.vni)
            .ok()
            .filter(|v| *v <= MAX_VNI)
            .ok_or_else(|| bad(format!("VNI {} is not in 0..={MAX_VNI}", raw.vni)))?;
        let port = u16::try_from(raw.port)
            .map_err(|_| bad(format!("Port {} is not in 0..=65535", raw.port)))?;
        let mtu = u32::try_from(raw.mtu)
            .ok()
            .filter(|m| *m == 0 || *m > OVERHEAD)
            .ok_or_else(|| {
                bad(format!(
                    "MTU {} is too small for VXLAN's {OVERHEAD} bytes",
                    raw.mtu
                ))
            })?;
        Ok(VxlanConfig {
            vni,
            port,
            gbp: raw.gbp,
            learning: raw.learning,
            direct_routing: raw.direct_routing,
            mtu,
        })
    }

    /// The device name, `flannel.<VNI>`.
    pub fn device_name(&self) -> String {
        format!("flannel.{}", self.vni)
    }
}

/// A random locally administered unicast MAC (Go's `pkg/mac`), chosen before the device is
/// created so that no udev/systemd MACAddressPolicy changes it afterwards.
pub fn random_mac() -> [u8; 6] {
    use std::io::Read;
    let mut mac = [0u8; 6];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut mac));
    if read.is_err() {
        let mut pick = crate::subnet::Pick::seeded();
        for b in &mut mac {
            *b = (pick.below(256) & 0xff) as u8;
        }
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// A MAC as Go's `net.HardwareAddr.String()` writes it.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// What to do about the device found under our name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAction {
    /// None there: create it.
    Create,
    /// A compatible VXLAN device: keep it (and its MAC).
    Reuse,
    /// Something else: delete it and create ours (the reason, as Go words it).
    Replace(String),
}

/// Go's `vxlanLinksIncompat`: a device is reused when it is VXLAN with the same VNI,
/// underlay link, local address, L2 miss, port and GBP (a missing link or address, or a port
/// of 0, is no conflict).
pub fn decide(existing: Option<&Device>, want: &VxlanSpec) -> DeviceAction {
    let Some(dev) = existing else {
        return DeviceAction::Create;
    };
    let Some(v) = &dev.vxlan else {
        return DeviceAction::Replace("link type: not vxlan".into());
    };
    let local = match want.local {
        std::net::IpAddr::V4(a) => Some(a),
        std::net::IpAddr::V6(_) => None,
    };
    let why = if v.vni != want.vni {
        format!("vni: {} vs {}", v.vni, want.vni)
    } else if v.link.is_some_and(|l| l != want.link) {
        format!("vtep (external) interface: {:?} vs {}", v.link, want.link)
    } else if let (Some(a), Some(b)) = (v.local, local)
        && a != b
    {
        format!("vtep (external) IP: {a} vs {b}")
    } else if v.l2miss {
        "l2miss: true vs false".into()
    } else if v.port != 0 && want.port != 0 && v.port != want.port {
        format!("port: {} vs {}", v.port, want.port)
    } else if v.gbp != want.gbp {
        format!("gbp: {} vs {}", v.gbp, want.gbp)
    } else {
        return DeviceAction::Reuse;
    };
    DeviceAction::Replace(why)
}

/// A peer as programmed: its subnet, PublicIP, VTEP MAC, and whether it is routed directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Peer {
    subnet: Ipv4Network,
    public_ip: Ipv4Addr,
    mac: [u8; 6],
    direct: bool,
}

impl Peer {
    fn neighbour(&self) -> Neighbour {
        Neighbour {
            ip: self.subnet.network(),
            mac: self.mac,
        }
    }

    fn fdb(&self) -> Fdb {
        Fdb {
            mac: self.mac,
            dst: self.public_ip,
        }
    }

    fn route(&self, index: u32) -> PeerRoute {
        if self.direct {
            PeerRoute {
                dst: self.subnet,
                gw: self.public_ip,
                oif: None,
                onlink: false,
            }
        } else {
            PeerRoute {
                dst: self.subnet,
                gw: self.subnet.network(),
                oif: Some(index),
                onlink: true,
            }
        }
    }
}

fn key(n: Ipv4Network) -> (u32, u8) {
    (u32::from(n.network()), n.prefix())
}

/// The vxlan backend on one external interface.
#[derive(Debug)]
pub struct Vxlan<K> {
    kernel: K,
    ext: ExternalInterface,
    config: VxlanConfig,
    network: Ipv4Network,
    subnet_len: u8,
    spec: VxlanSpec,
    index: u32,
    own: Option<Ipv4Network>,
    peers: BTreeMap<(u32, u8), Peer>,
    repairs: Repairs,
}

fn step(what: impl Into<String>) -> impl FnOnce(io::Error) -> BackendError {
    let what = what.into();
    move |source| BackendError::Step { what, source }
}

impl<K: VxlanKernel> Vxlan<K> {
    /// Reads the config, then creates `flannel.<VNI>` with `mac`, or reuses a compatible
    /// device of that name (keeping its MAC), or replaces an incompatible one.
    pub fn new(
        kernel: K,
        ext: ExternalInterface,
        config: &NetworkConfig,
        mac: [u8; 6],
    ) -> Result<Vxlan<K>, BackendError> {
        let vx = VxlanConfig::parse(&config.backend)?;
        let v4 = config.v4.as_ref().ok_or_else(|| {
            BackendError::Config("the vxlan backend of this flanneld needs an IPv4 network".into())
        })?;
        if config.v6.is_some() {
            return Err(BackendError::Config(
                "the vxlan backend of this flanneld does not do IPv6 yet (flannel-v6.<VNI>): use EnableIPv6=false".into(),
            ));
        }
        let underlay = if vx.mtu == 0 { ext.mtu } else { vx.mtu };
        let spec = VxlanSpec {
            name: vx.device_name(),
            vni: vx.vni,
            link: ext.index,
            local: ext.iface_addr.into(),
            port: vx.port,
            gbp: vx.gbp,
            learning: vx.learning,
            mtu: underlay.saturating_sub(OVERHEAD),
            mac,
        };
        let mut backend = Vxlan {
            kernel,
            ext,
            config: vx,
            network: v4.network,
            subnet_len: v4.subnet_len,
            spec,
            index: 0,
            own: None,
            peers: BTreeMap::new(),
            repairs: Repairs::default(),
        };
        backend.ensure_device()?;
        Ok(backend)
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.spec.name
    }

    /// The VTEP MAC published in the lease.
    pub fn mac(&self) -> [u8; 6] {
        self.spec.mac
    }

    /// The in-memory kernel of the tests, or the real one.
    pub fn kernel(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// Makes the device exist as configured; on reuse, adopts its MAC. Returns whether it
    /// was (re)created.
    fn ensure_device(&mut self) -> Result<bool, BackendError> {
        let name = self.spec.name.clone();
        let existing = self
            .kernel
            .device(&name)
            .map_err(step(format!("looking up {name}")))?;
        let created = match (decide(existing.as_ref(), &self.spec), &existing) {
            (DeviceAction::Reuse, Some(dev)) => {
                info!("reusing vxlan device {name} (MAC {})", mac_string(&dev.mac));
                self.spec.mac = dev.mac;
                self.index = dev.index;
                if dev.mtu != self.spec.mtu {
                    self.kernel
                        .set_mtu(dev.index, self.spec.mtu)
                        .map_err(step(format!(
                            "setting the MTU of {name} to {}",
                            self.spec.mtu
                        )))?;
                }
                false
            }
            (action, _) => {
                if let (DeviceAction::Replace(why), Some(dev)) = (&action, &existing) {
                    warning!(
                        "{name} already exists with incompatible configuration: {why}; recreating device"
                    );
                    self.kernel
                        .delete_device(dev.index)
                        .map_err(step(format!("deleting {name}")))?;
                }
                self.kernel
                    .create_device(&self.spec)
                    .map_err(step(format!("creating vxlan device {name}")))?;
                let dev = self
                    .kernel
                    .device(&name)
                    .map_err(step(format!("looking up {name}")))?
                    .ok_or_else(|| {
                        BackendError::Config(format!("created {name} but it is not there"))
                    })?;
                info!(
                    "created vxlan device {name} (VNI {}, MAC {}, MTU {})",
                    self.spec.vni,
                    mac_string(&self.spec.mac),
                    self.spec.mtu
                );
                self.index = dev.index;
                true
            }
        };
        if let Err(e) = self.kernel.disable_accept_ra(&name) {
            warning!("setting accept_ra=0 on {name}: {e}");
        }
        Ok(created)
    }

    /// The device's address and state for the node's subnet: `<subnet>.0/32` (other IPv4
    /// addresses removed), up, MAC unchanged.
    fn configure(&mut self, own: Ipv4Network) -> Result<(), BackendError> {
        let name = self.spec.name.clone();
        let want =
            Ipv4Network::new(own.network(), 32).map_err(|e| BackendError::Config(e.to_string()))?;
        let have = self
            .kernel
            .addresses(self.index)
            .map_err(step(format!("listing the addresses of {name}")))?;
        for a in have.iter().filter(|a| **a != want) {
            warning!("removing address {a} from {name}");
            self.kernel
                .delete_address(self.index, *a)
                .map_err(step(format!("removing {a} from {name}")))?;
        }
        if !have.contains(&want) {
            self.kernel
                .add_address(self.index, want)
                .map_err(step(format!("adding {want} to {name}")))?;
        }
        self.kernel
            .set_up(self.index)
            .map_err(step(format!("bringing {name} up")))?;
        let dev = self
            .kernel
            .device(&name)
            .map_err(step(format!("looking up {name}")))?;
        if let Some(dev) = dev
            && dev.mac != self.spec.mac
        {
            return Err(BackendError::Config(format!(
                "the MAC of {name} changed from {} to {} after creation (udev/systemd MACAddressPolicy?)",
                mac_string(&self.spec.mac),
                mac_string(&dev.mac)
            )));
        }
        Ok(())
    }

    fn peer_of(&mut self, lease: &Lease) -> Result<Peer, String> {
        let data = lease.attrs.backend_data.as_ref().ok_or("no BackendData")?;
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Data {
            #[serde(rename = "VNI")]
            vni: i64,
            #[serde(rename = "VtepMAC")]
            vtep_mac: String,
        }
        let d: Data =
            cni_common::gojson::from_value(data).map_err(|e| format!("BackendData: {e}"))?;
        let mac = parse_mac(&d.vtep_mac.to_ascii_lowercase())
            .ok_or_else(|| format!("VtepMAC {:?} is not a MAC address", d.vtep_mac))?;
        if d.vni != i64::from(self.config.vni) {
            warning!(
                "lease {} has VNI {} (this node: {}); programming it anyway, as Go does",
                lease.subnet,
                d.vni,
                self.config.vni
            );
        }
        let public_ip = lease.attrs.public_ip;
        let direct = self.config.direct_routing
            && match self.kernel.on_link(public_ip) {
                Ok(d) => d,
                Err(e) => {
                    warning!("route lookup of {public_ip} for DirectRouting: {e}");
                    false
                }
            };
        Ok(Peer {
            subnet: lease.subnet.v4,
            public_ip,
            mac,
            direct,
        })
    }

    /// Neighbour, FDB entry, route, in that order; on a failure the steps already made are
    /// undone (in reverse) and the error names the failed step.
    fn program(&mut self, p: &Peer) -> Result<(), BackendError> {
        let (i, name) = (self.index, self.spec.name.clone());
        let route = p.route(i);
        if p.direct {
            return self.kernel.replace_route(&route).map_err(step(format!(
                "adding route {} via {}",
                p.subnet, p.public_ip
            )));
        }
        let (n, f) = (p.neighbour(), p.fdb());
        self.kernel.replace_neighbour(i, n).map_err(step(format!(
            "adding neighbour {} lladdr {} dev {name}",
            n.ip,
            mac_string(&n.mac)
        )))?;
        if let Err(e) = self.kernel.replace_fdb(i, f) {
            self.undo_neighbour(n);
            return Err(step(format!(
                "adding fdb {} dst {} dev {name}",
                mac_string(&f.mac),
                f.dst
            ))(e));
        }
        if let Err(e) = self.kernel.replace_route(&route) {
            self.undo_fdb(f);
            self.undo_neighbour(n);
            return Err(step(format!(
                "adding route {} via {} dev {name} onlink",
                route.dst, route.gw
            ))(e));
        }
        Ok(())
    }

    fn undo_neighbour(&mut self, n: Neighbour) {
        if let Err(e) = self.kernel.delete_neighbour(self.index, n) {
            error!("rolling back neighbour {}: {e}", n.ip);
        }
    }

    fn undo_fdb(&mut self, f: Fdb) {
        if let Err(e) = self.kernel.delete_fdb(self.index, f) {
            error!("rolling back fdb entry {}: {e}", mac_string(&f.mac));
        }
    }

    /// Route, neighbour, FDB entry removed (each failure logged, the rest still done).
    fn unprogram(&mut self, p: &Peer, keep: Option<&Peer>) {
        let i = self.index;
        let keep_route = keep.is_some_and(|k| k.subnet == p.subnet);
        if !keep_route && let Err(e) = self.kernel.delete_route(&p.route(i)) {
            error!("deleting route {}: {e}", p.subnet);
        }
        if p.direct {
            return;
        }
        let kept = keep.filter(|k| !k.direct);
        if kept.is_none_or(|k| k.neighbour().ip != p.neighbour().ip) {
            self.undo_neighbour(p.neighbour());
        }
        if kept.is_none_or(|k| k.mac != p.mac) {
            self.undo_fdb(p.fdb());
        }
    }

    fn added(&mut self, lease: &Lease) {
        let peer = match self.peer_of(lease) {
            Ok(p) => p,
            Err(e) => {
                error!("ignoring vxlan lease {}: {e}", lease.subnet);
                return;
            }
        };
        let old = self.peers.insert(key(peer.subnet), peer);
        match self.program(&peer) {
            Ok(()) => info!(
                "peer {} programmed: {}",
                peer.subnet,
                if peer.direct {
                    format!("route via {} (direct)", peer.public_ip)
                } else {
                    format!(
                        "{} lladdr {}, fdb dst {}, route via {} dev {} onlink",
                        peer.subnet.network(),
                        mac_string(&peer.mac),
                        peer.public_ip,
                        peer.subnet.network(),
                        self.spec.name
                    )
                }
            ),
            Err(e) => error!("{e} (retried by the next reconcile)"),
        }
        if let Some(old) = old
            && old != peer
        {
            self.unprogram(&old, Some(&peer));
        }
    }

    fn removed(&mut self, lease: &Lease) {
        if let Some(p) = self.peers.remove(&key(lease.subnet.v4)) {
            self.unprogram(&p, None);
            info!("peer {} removed", p.subnet);
        }
    }

    /// Whether a route is one of ours by shape: a subnet of the flannel network of the
    /// subnet length (not our own), through our device or with a gateway on the external
    /// interface side.
    fn ours(&self, r: &PeerRoute) -> bool {
        r.dst.prefix() == self.subnet_len
            && self.network.contains(r.dst.network())
            && Some(r.dst) != self.own
            && (r.oif == Some(self.index)
                || self.peers.values().any(|p| p.direct && p.public_ip == r.gw))
    }

    fn try_reconcile(&mut self) -> Result<(), BackendError> {
        let name = self.spec.name.clone();
        let dev = self
            .kernel
            .device(&name)
            .map_err(step(format!("looking up {name}")))?;
        let broken = match (&dev, decide(dev.as_ref(), &self.spec)) {
            (None, _) => Some("missing".to_owned()),
            (Some(_), DeviceAction::Replace(why)) => Some(why),
            (Some(d), _) if d.mac != self.spec.mac => Some(format!(
                "MAC {} (published: {})",
                mac_string(&d.mac),
                mac_string(&self.spec.mac)
            )),
            _ => None,
        };
        if let Some(why) = broken {
            warning!(
                "reconcile: device {name} {why}: recreating it with MAC {} and every peer",
                mac_string(&self.spec.mac)
            );
            if let Some(d) = &dev {
                self.kernel
                    .delete_device(d.index)
                    .map_err(step(format!("deleting {name}")))?;
            }
            self.ensure_device()?;
            self.repairs.device += 1;
            if let Some(own) = self.own {
                self.configure(own)?;
            }
            let peers: Vec<Peer> = self.peers.values().copied().collect();
            for p in peers {
                if let Err(e) = self.program(&p) {
                    error!("reconcile: {e}");
                }
            }
            return Ok(());
        }
        let Some(dev) = dev else { return Ok(()) };
        if !dev.up || dev.mtu != self.spec.mtu {
            warning!(
                "reconcile: device {name} was down or had MTU {}: restoring",
                dev.mtu
            );
            if dev.mtu != self.spec.mtu {
                self.kernel
                    .set_mtu(self.index, self.spec.mtu)
                    .map_err(step(format!("setting the MTU of {name}")))?;
            }
            self.kernel
                .set_up(self.index)
                .map_err(step(format!("bringing {name} up")))?;
            self.repairs.device += 1;
        }
        if let Some(own) = self.own {
            let want = Ipv4Network::new(own.network(), 32)
                .map_err(|e| BackendError::Config(e.to_string()))?;
            let have = self
                .kernel
                .addresses(self.index)
                .map_err(step(format!("listing the addresses of {name}")))?;
            if !have.contains(&want) {
                warning!("reconcile: address {want} missing on {name}: restoring");
                self.kernel
                    .add_address(self.index, want)
                    .map_err(step(format!("adding {want} to {name}")))?;
                self.repairs.address += 1;
            }
        }
        self.reconcile_peers()
    }

    fn reconcile_peers(&mut self) -> Result<(), BackendError> {
        let (i, name) = (self.index, self.spec.name.clone());
        let neighbours: BTreeSet<Neighbour> = self
            .kernel
            .neighbours(i)
            .map_err(step(format!("listing the neighbours of {name}")))?
            .into_iter()
            .collect();
        let fdb: BTreeSet<Fdb> = self
            .kernel
            .fdb(i)
            .map_err(step(format!("listing the fdb of {name}")))?
            .into_iter()
            .collect();
        let routes: BTreeSet<PeerRoute> = self
            .kernel
            .routes()
            .map_err(step("listing routes"))?
            .into_iter()
            .collect();
        let overlay: Vec<Peer> = self.peers.values().filter(|p| !p.direct).copied().collect();
        let want_n: BTreeSet<Neighbour> = overlay.iter().map(Peer::neighbour).collect();
        let want_f: BTreeSet<Fdb> = overlay.iter().map(Peer::fdb).collect();
        let want_r: BTreeSet<PeerRoute> = self.peers.values().map(|p| p.route(i)).collect();

        // Stale routes first: nothing should route into entries about to go.
        // A wrong route to a peer's subnet is replaced below, not deleted.
        let want_dst: BTreeSet<Ipv4Network> = want_r.iter().map(|r| r.dst).collect();
        let stale: Vec<PeerRoute> = routes
            .iter()
            .filter(|r| !want_dst.contains(&r.dst) && self.ours(r))
            .copied()
            .collect();
        for r in &stale {
            warning!("reconcile: removing stale route {} via {}", r.dst, r.gw);
            match self.kernel.delete_route(r) {
                Ok(()) => self.repairs.stale_route += 1,
                Err(e) => error!("reconcile: deleting route {}: {e}", r.dst),
            }
        }
        for n in want_n.difference(&neighbours) {
            warning!(
                "reconcile: restoring neighbour {} lladdr {}",
                n.ip,
                mac_string(&n.mac)
            );
            match self.kernel.replace_neighbour(i, *n) {
                Ok(()) => self.repairs.neighbour += 1,
                Err(e) => error!("reconcile: neighbour {}: {e}", n.ip),
            }
        }
        for f in want_f.difference(&fdb) {
            warning!(
                "reconcile: restoring fdb {} dst {}",
                mac_string(&f.mac),
                f.dst
            );
            match self.kernel.replace_fdb(i, *f) {
                Ok(()) => self.repairs.fdb += 1,
                Err(e) => error!("reconcile: fdb {}: {e}", mac_string(&f.mac)),
            }
        }
        for r in want_r.difference(&routes) {
            warning!("reconcile: restoring route {} via {}", r.dst, r.gw);
            match self.kernel.replace_route(r) {
                Ok(()) => self.repairs.route += 1,
                Err(e) => error!("reconcile: route {}: {e}", r.dst),
            }
        }
        let want_ips: BTreeSet<Ipv4Addr> = want_n.iter().map(|n| n.ip).collect();
        for n in neighbours.iter().filter(|n| !want_ips.contains(&n.ip)) {
            warning!("reconcile: removing stale neighbour {}", n.ip);
            match self.kernel.delete_neighbour(i, *n) {
                Ok(()) => self.repairs.stale_neighbour += 1,
                Err(e) => error!("reconcile: deleting neighbour {}: {e}", n.ip),
            }
        }
        let want_macs: BTreeSet<[u8; 6]> = want_f.iter().map(|f| f.mac).collect();
        for f in fdb.iter().filter(|f| !want_macs.contains(&f.mac)) {
            warning!(
                "reconcile: removing stale fdb {} dst {}",
                mac_string(&f.mac),
                f.dst
            );
            match self.kernel.delete_fdb(i, *f) {
                Ok(()) => self.repairs.stale_fdb += 1,
                Err(e) => error!("reconcile: deleting fdb {}: {e}", mac_string(&f.mac)),
            }
        }
        Ok(())
    }
}

impl<K: VxlanKernel> Backend for Vxlan<K> {
    fn backend_type(&self) -> &'static str {
        TYPE
    }

    fn lease_attrs(&self) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: self.ext.public_ip,
            public_ipv6: None,
            backend_type: TYPE.to_owned(),
            backend_data: Some(
                json!({"VNI": self.config.vni, "VtepMAC": mac_string(&self.spec.mac)}),
            ),
            backend_v6_data: None,
        }
    }

    fn mtu(&self) -> u32 {
        self.spec.mtu
    }

    fn lease_acquired(&mut self, lease: &Lease) -> Result<(), BackendError> {
        self.own = Some(lease.subnet.v4);
        self.configure(lease.subnet.v4)
    }

    fn handle(&mut self, events: &[LeaseEvent]) {
        for (lease, add) in crate::backend::events_of_type(events, TYPE) {
            if add {
                self.added(lease);
            } else {
                self.removed(lease);
            }
        }
    }

    fn reconcile(&mut self) {
        if let Err(e) = self.try_reconcile() {
            error!("reconcile: {e}");
        }
    }

    fn repairs(&self) -> Repairs {
        self.repairs
    }

    fn watched_links(&self) -> Vec<String> {
        vec![self.spec.name.clone(), self.ext.name.clone()]
    }

    fn programmed(&self) -> usize {
        self.peers.len()
    }
}
