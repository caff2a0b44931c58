//! The vxlan backend (`pkg/backend/vxlan`): one VXLAN device `flannel.<VNI>` on the external
//! interface, its MAC chosen before creation and published in the lease; per peer lease a
//! permanent neighbour `<peer>.0 → VtepMAC`, an FDB entry `VtepMAC → PublicIP` and the route
//! `<peer subnet> via <peer>.0 dev flannel.<VNI> onlink`, in that order (the route last, so
//! the kernel never has to resolve anything), rolled back on failure; removed with the lease.
//! With DirectRouting, a peer on the same link gets `<peer subnet> via <PublicIP>` instead.
//!
//! Dual-stack (`EnableIPv6`), as Go: a second device `flannel-v6.<VNI>` with its own MAC
//! (published in `BackendV6Data`), local address the external interface's IPv6 address
//! (`PublicIPv6` is that address unless `--public-ipv6` says otherwise); the same three
//! entries per peer from the peer's IPv6 subnet, `PublicIPv6` and `BackendV6Data`. Each
//! device is a [`Stack`] of its own. A peer whose IPv6 side is unusable is still reached
//! over IPv4 (Go skips the whole lease).
//!
//! Unlike Go, [`Vxlan`] reconciles ([`Backend::reconcile`]): a deleted device is recreated
//! with the same MAC (the published lease stays valid) *and* every peer; missing entries come
//! back; entries of peers that are gone are removed.

mod kernel;

#[cfg(test)]
pub(crate) mod tests;

mod stack;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use node_kernel::link::VxlanSpec;
use serde::Deserialize;
use serde_json::{Value, json};

pub use kernel::{Device, Fdb, KernelVxlan, Neighbour, PeerRoute, VxlanAttrs, VxlanKernel};
use stack::Peer;
pub use stack::Stack;

use super::{Backend, BackendError, Repairs, WatchedEntries};
use crate::cache::LeaseEvent;
use crate::config::NetworkConfig;
use crate::iface::ExternalInterface;
use crate::lease::{Lease, LeaseAttrs};
use crate::log::{error, info, warning};
use crate::vtep::decode_vtep;
pub use crate::vtep::{mac_string, parse_mac, random_mac};

/// The backend's `BackendType`.
pub const TYPE: &str = crate::vtep::VXLAN;
/// The port the kernel uses when none is given (the vxlan module's `udp_port`).
pub const KERNEL_DEFAULT_PORT: u16 = 8472;
/// IPv4 + UDP + VXLAN + inner Ethernet headers: the device MTU is the underlay's minus this.
pub const OVERHEAD: u32 = 50;
/// The same over IPv6 (its header is 20 bytes longer): `flannel-v6.<VNI>`'s MTU is the
/// underlay's minus this (Go subtracts 50 there too, so full-size packets need fragmenting
/// or a "packet too big" round trip).
pub const OVERHEAD_V6: u32 = 70;
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
        let raw: RawConfig = cni_common::gojson::from_value(backend)
            .map_err(|e| bad(crate::log::bounded(&e.to_string())))?;
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

    /// The IPv6 device's name, `flannel-v6.<VNI>`.
    pub fn device_name_v6(&self) -> String {
        format!("flannel-v6.{}", self.vni)
    }
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
    let why = if v.vni != want.vni {
        format!("vni: {} vs {}", v.vni, want.vni)
    } else if v.link.is_some_and(|l| l != want.link) {
        format!("vtep (external) interface: {:?} vs {}", v.link, want.link)
    } else if let Some(a) = v.local
        && a != want.local
    {
        format!("vtep (external) IP: {a} vs {}", want.local)
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

/// The VTEP MAC to program from a peer's `field` (a VNI other than ours is warned about
/// and used anyway, as Go does).
fn vtep_mac(
    data: Option<&Value>,
    field: &str,
    vni: u32,
    own: &[u8; 6],
    subnet: &str,
) -> Result<[u8; 6], String> {
    let (peer_vni, mac) = decode_vtep(data, field, own).map_err(|e| format!("{field}: {e}"))?;
    if peer_vni != i64::from(vni) {
        warning!(
            "lease {subnet} has VNI {peer_vni} in {field} (this node: {vni}); programming it anyway, as Go does"
        );
    }
    Ok(mac)
}

/// Refuses, with the reason, a device the kernel would refuse with a bare `EINVAL` or
/// create without IPv6: a name longer than an interface name can be (VNIs of 8 digits,
/// or 5 for `flannel-v6.`), an IPv6 device under IPv6's minimum MTU.
fn check_spec(spec: &VxlanSpec) -> Result<(), BackendError> {
    if spec.name.len() > cni_common::validate::IFNAME_MAX {
        return Err(BackendError::Config(format!(
            "VNI {} makes the device name {} longer than {} characters",
            spec.vni,
            spec.name,
            cni_common::validate::IFNAME_MAX
        )));
    }
    if spec.local.is_ipv6() && spec.mtu < IPV6_MIN_MTU {
        return Err(BackendError::Config(format!(
            "{} would get MTU {}, under IPv6's minimum of {IPV6_MIN_MTU} (underlay MTU too small)",
            spec.name, spec.mtu
        )));
    }
    Ok(())
}

/// RFC 8200's minimum link MTU; below it the kernel disables IPv6 on a device.
const IPV6_MIN_MTU: u32 = 1280;

/// The vxlan backend on one external interface: the IPv4 device, and the IPv6 one for a
/// dual-stack network.
#[derive(Debug)]
pub struct Vxlan<K> {
    kernel: K,
    ext: ExternalInterface,
    config: VxlanConfig,
    /// `flannel.<VNI>`, unless IPv4 is off (a kube IPv6-only network).
    v4: Option<Stack>,
    /// `flannel-v6.<VNI>`, with IPv6 on.
    v6: Option<Stack>,
    /// The IPv6 subnet programmed for each peer (by the lease cache's key, its IPv4 subnet
    /// in a dual-stack network): a peer whose lease now names another IPv6 subnet, or none,
    /// arrives as one `Added`.
    v6_of: BTreeMap<IpNetwork, IpNetwork>,
    repairs: Repairs,
}

impl<K: VxlanKernel> Vxlan<K> {
    /// Reads the config, then creates `flannel.<VNI>` with `mac` (unless IPv4 is off) and,
    /// with `EnableIPv6`, `flannel-v6.<VNI>` with `mac6` on the external interface's IPv6
    /// address, or reuses a compatible device of that name (keeping its MAC), or replaces
    /// an incompatible one.
    pub fn new(
        kernel: K,
        ext: ExternalInterface,
        config: &NetworkConfig,
        mac: [u8; 6],
        mac6: [u8; 6],
    ) -> Result<Vxlan<K>, BackendError> {
        Vxlan::with_options(kernel, ext, config, mac, mac6, false)
    }

    /// [`Vxlan::new`], and with `tx_checksum_off` (`--vxlan-tx-checksum-off`) the devices'
    /// `tx-checksum-ip-generic` turned off, on every creation and reuse.
    pub fn with_options(
        kernel: K,
        ext: ExternalInterface,
        config: &NetworkConfig,
        mac: [u8; 6],
        mac6: [u8; 6],
        tx_checksum_off: bool,
    ) -> Result<Vxlan<K>, BackendError> {
        let vx = VxlanConfig::parse(&config.backend)?;
        let underlay = if vx.mtu == 0 { ext.mtu } else { vx.mtu };
        let spec = |name: String, local: IpAddr, overhead: u32, mac: [u8; 6]| VxlanSpec {
            name,
            vni: vx.vni,
            link: ext.index,
            local,
            port: vx.port,
            gbp: vx.gbp,
            learning: vx.learning,
            mtu: underlay.saturating_sub(overhead),
            mac,
        };
        let stack4 = config.v4.as_ref().map(|v4| {
            Stack::new(
                spec(vx.device_name(), ext.iface_addr.into(), OVERHEAD, mac),
                IpNetwork::V4(v4.network),
                v4.subnet_len,
            )
        });
        let stack6 = match &config.v6 {
            None => None,
            Some(r) => {
                let local = ext.iface_addr6.ok_or_else(|| {
                    BackendError::Config(format!(
                        "EnableIPv6 is set but interface {} has no global IPv6 address for {}",
                        ext.name,
                        vx.device_name_v6()
                    ))
                })?;
                if ext.public_ipv6.is_none() {
                    return Err(BackendError::Config(format!(
                        "EnableIPv6 is set but there is no PublicIPv6 (interface {})",
                        ext.name
                    )));
                }
                Some(Stack::new(
                    spec(vx.device_name_v6(), local.into(), OVERHEAD_V6, mac6),
                    IpNetwork::V6(r.network),
                    r.subnet_len,
                ))
            }
        };
        for st in stack4.iter().chain(&stack6) {
            check_spec(&st.spec)?;
        }
        let mut backend = Vxlan {
            kernel,
            ext,
            config: vx,
            v4: stack4,
            v6: stack6,
            v6_of: BTreeMap::new(),
            repairs: Repairs::default(),
        };
        let kernel = &mut backend.kernel;
        for s in backend.v4.iter_mut().chain(backend.v6.as_mut()) {
            s.tx_checksum_off = tx_checksum_off;
            s.ensure_device(kernel)?;
        }
        Ok(backend)
    }

    /// The devices, IPv4's first.
    fn stacks(&self) -> impl Iterator<Item = &Stack> {
        self.v4.iter().chain(&self.v6)
    }

    /// The first device's name (`flannel.<VNI>`, or `flannel-v6.<VNI>` when IPv4 is off).
    pub fn device_name(&self) -> &str {
        self.stacks().next().map_or("", Stack::name)
    }

    /// The VTEP MAC published in the lease (`BackendData`; `BackendV6Data`'s when IPv4 is
    /// off).
    pub fn mac(&self) -> [u8; 6] {
        self.stacks().next().map_or([0; 6], Stack::mac)
    }

    /// The IPv6 device's VTEP MAC (`BackendV6Data`), for a dual-stack network.
    pub fn mac6(&self) -> Option<[u8; 6]> {
        self.v6.as_ref().map(Stack::mac)
    }

    /// The in-memory kernel of the tests, or the real one.
    pub fn kernel(&mut self) -> &mut K {
        &mut self.kernel
    }

    fn is_direct(&mut self, public_ip: IpAddr) -> bool {
        self.config.direct_routing
            && match self.kernel.on_link(public_ip) {
                Ok(d) => d,
                Err(e) => {
                    warning!("route lookup of {public_ip} for DirectRouting: {e}");
                    false
                }
            }
    }

    /// One family's side of a peer's lease: its subnet, underlay address and the
    /// `field` (`BackendData` or `BackendV6Data`) holding its MAC on that family's device.
    fn peer(
        &mut self,
        lease: &Lease,
        subnet: IpNetwork,
        public_ip: IpAddr,
        field: &str,
        data: Option<&Value>,
        own_mac: [u8; 6],
    ) -> Result<Peer, String> {
        let mac = vtep_mac(
            data,
            field,
            self.config.vni,
            &own_mac,
            &lease.subnet.to_string(),
        )?;
        Ok(Peer {
            subnet,
            public_ip,
            mac,
            direct: self.is_direct(public_ip),
        })
    }

    fn peer4(&mut self, lease: &Lease) -> Result<Peer, String> {
        let own = self.v4.as_ref().map_or([0; 6], Stack::mac);
        let subnet = lease.subnet.v4.ok_or("no IPv4 subnet")?;
        self.peer(
            lease,
            IpNetwork::V4(subnet),
            IpAddr::V4(lease.attrs.public_ip),
            "BackendData",
            lease.attrs.backend_data.as_ref(),
            own,
        )
    }

    /// The IPv6 side of a peer's lease; `Ok(None)` for a peer without an IPv6 subnet (an
    /// IPv4-only node: reached over `flannel.<VNI>` only, as Go does).
    fn peer6(&mut self, lease: &Lease) -> Result<Option<Peer>, String> {
        let Some(subnet) = lease.subnet.v6 else {
            return Ok(None);
        };
        let public_ip = lease
            .attrs
            .public_ipv6
            .ok_or("an IPv6 subnet but no PublicIPv6")?;
        let own = self.v6.as_ref().map_or([0; 6], Stack::mac);
        self.peer(
            lease,
            IpNetwork::V6(subnet),
            IpAddr::V6(public_ip),
            "BackendV6Data",
            lease.attrs.backend_v6_data.as_ref(),
            own,
        )
        .map(Some)
    }

    fn reconcile_stacks(&mut self, entries: bool) {
        let mut repairs = self.repairs;
        let kernel = &mut self.kernel;
        for s in self.v4.iter_mut().chain(self.v6.as_mut()) {
            if let Err(e) = s.reconcile(kernel, &mut repairs, entries) {
                error!("reconcile: {e}");
            }
        }
        self.repairs = repairs;
    }

    /// A peer's lease added or changed. A side that is no longer usable takes what it had
    /// programmed with it: a lease that changed into one we cannot program does not leave
    /// the old entries behind (reconcile would keep restoring them).
    fn added(&mut self, lease: &Lease) {
        let Some(id) = lease.subnet.id() else {
            return;
        };
        if self.v4.is_some() {
            let peer = self.peer4(lease);
            let Some(s4) = &mut self.v4 else {
                return;
            };
            match peer {
                Ok(p) => s4.added(&mut self.kernel, p),
                Err(e) => {
                    error!("ignoring vxlan lease {}: {e}", lease.subnet);
                    if let Some(v4) = lease.subnet.v4 {
                        s4.removed(&mut self.kernel, IpNetwork::V4(v4));
                    }
                }
            }
        }
        if self.v6.is_none() {
            return;
        }
        let now = match self.peer6(lease) {
            Ok(p) => p,
            Err(e) => {
                error!(
                    "ignoring the IPv6 side of vxlan lease {}: {e}",
                    lease.subnet
                );
                None
            }
        };
        let before = match &now {
            Some(p) => self.v6_of.insert(id, p.subnet),
            None => self.v6_of.remove(&id),
        };
        let Some(s6) = &mut self.v6 else {
            return;
        };
        if let Some(old) = before
            && Some(old) != now.map(|p| p.subnet)
        {
            s6.removed(&mut self.kernel, old);
        }
        match now {
            Some(p) => s6.added(&mut self.kernel, p),
            None if lease.subnet.v6.is_none() => info!(
                "lease {} has no IPv6 subnet: reached over IPv4 only",
                lease.subnet
            ),
            None => {}
        }
    }

    fn removed(&mut self, lease: &Lease) {
        if let (Some(s4), Some(v4)) = (&mut self.v4, lease.subnet.v4) {
            s4.removed(&mut self.kernel, IpNetwork::V4(v4));
        }
        let programmed = lease.subnet.id().and_then(|id| self.v6_of.remove(&id));
        if let Some(s6) = &mut self.v6 {
            for sn6 in programmed
                .into_iter()
                .chain(lease.subnet.v6.map(IpNetwork::V6))
            {
                s6.removed(&mut self.kernel, sn6);
            }
        }
    }
}

impl<K: VxlanKernel> Backend for Vxlan<K> {
    fn backend_type(&self) -> &'static str {
        TYPE
    }

    fn lease_attrs(&self) -> LeaseAttrs {
        let data = |mac: [u8; 6]| json!({"VNI": self.config.vni, "VtepMAC": mac_string(&mac)});
        LeaseAttrs {
            public_ip: self.ext.public_ip,
            public_ipv6: self.v6.as_ref().and(self.ext.public_ipv6),
            backend_type: TYPE.to_owned(),
            backend_data: self.v4.as_ref().map(|s| data(s.mac())),
            backend_v6_data: self.v6.as_ref().map(|s| data(s.mac())),
        }
    }

    /// The IPv4 device's MTU, as Go writes `FLANNEL_MTU` (underlay − 50); the IPv6 one's
    /// when IPv4 is off.
    fn mtu(&self) -> u32 {
        self.stacks().next().map_or(0, |s| s.spec.mtu)
    }

    fn lease_acquired(&mut self, lease: &Lease) -> Result<(), BackendError> {
        if let Some(s4) = &mut self.v4 {
            let sn = lease.subnet.v4.ok_or_else(|| {
                BackendError::Config(format!(
                    "failed to configure interface {}: IPv4 is enabled but the lease {} has no IPv4 subnet",
                    s4.name(),
                    lease.subnet
                ))
            })?;
            s4.configure(&mut self.kernel, IpNetwork::V4(sn))?;
        }
        if let Some(s6) = &mut self.v6 {
            let sn6 = lease.subnet.v6.ok_or_else(|| {
                BackendError::Config(format!(
                    "failed to configure interface {}: IPv6 is enabled but the lease {} has no IPv6 subnet",
                    s6.name(),
                    lease.subnet
                ))
            })?;
            s6.configure(&mut self.kernel, IpNetwork::V6(sn6))?;
        }
        Ok(())
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
        self.reconcile_stacks(true);
    }

    fn reconcile_without_entries(&mut self) {
        // The devices' state, MTU and address: a few requests whatever the peers.
        self.reconcile_stacks(false);
    }

    fn settled(&self) -> bool {
        self.stacks().all(Stack::settled)
    }

    fn repairs(&self) -> Repairs {
        self.repairs
    }

    fn watched_links(&self) -> Vec<String> {
        let mut links: Vec<String> = self.stacks().map(|s| s.name().to_owned()).collect();
        links.push(self.ext.name.clone());
        links
    }

    fn programmed(&self) -> usize {
        // Peers are counted once, by their first family's side.
        self.stacks().next().map_or(0, Stack::peer_count)
    }

    fn watched_entries(&self) -> WatchedEntries {
        let devices: Vec<u32> = self.stacks().map(Stack::index).collect();
        let mut routes = devices.clone();
        if self.config.direct_routing {
            // Direct routes go through the external interface.
            routes.push(self.ext.index);
        }
        WatchedEntries {
            neighbours: devices,
            routes,
            networks: self.stacks().map(Stack::network).collect(),
        }
    }
}
