//! One VXLAN device and the peers programmed through it, for one address family:
//! `flannel.<VNI>` (IPv4) or `flannel-v6.<VNI>` (IPv6), Go's `dev` and `v6Dev`. The device
//! is made to exist (created, reused with its MAC, or replaced), given the node's address,
//! and each peer gets neighbour → FDB entry → onlink route with rollback; reconcile compares
//! the kernel with the peers and repairs what differs.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use node_kernel::link::VxlanSpec;

use super::kernel::{Fdb, Neighbour, PeerRoute, VxlanKernel};
use super::{DeviceAction, decide, mac_string};
use crate::backend::{BackendError, Repairs};
use crate::log::{detail, error, info, warning};

/// A peer as programmed: its subnet, PublicIP, VTEP MAC, and whether it is routed directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Peer {
    pub(super) subnet: IpNetwork,
    pub(super) public_ip: IpAddr,
    pub(super) mac: [u8; 6],
    pub(super) direct: bool,
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

fn step(what: impl Into<String>) -> impl FnOnce(io::Error) -> BackendError {
    let what = what.into();
    move |source| BackendError::Step { what, source }
}

/// The device's own address for the node's subnet: the subnet's first address as a host
/// address (`/32`, or `/128`), so no broadcast or subnet route comes with it.
fn host_address(own: IpNetwork) -> Result<IpNetwork, BackendError> {
    let ip = own.network();
    IpNetwork::new(ip, if ip.is_ipv4() { 32 } else { 128 })
        .map_err(|e| BackendError::Config(e.to_string()))
}

fn link_local(a: &IpNetwork) -> bool {
    matches!(a, IpNetwork::V6(n) if n.ip().is_unicast_link_local())
}

/// One family's device and peers.
#[derive(Debug)]
pub struct Stack {
    v6: bool,
    pub(super) spec: VxlanSpec,
    network: IpNetwork,
    subnet_len: u8,
    index: u32,
    own: Option<IpNetwork>,
    peers: BTreeMap<IpNetwork, Peer>,
    /// A kernel step failed since the last whole reconcile (programming, a repair): the
    /// next tick must compare the kernel again, notified or not.
    failed: bool,
    /// `--vxlan-tx-checksum-off`: the device's `tx-checksum-ip-generic` turned off.
    pub(super) tx_checksum_off: bool,
}

impl Stack {
    /// A stack for `spec` in the flannel network `network` of subnets of `subnet_len`; the
    /// device is made by [`Stack::ensure_device`].
    pub(super) fn new(spec: VxlanSpec, network: IpNetwork, subnet_len: u8) -> Stack {
        Stack {
            v6: network.is_ipv6(),
            spec,
            network,
            subnet_len,
            index: 0,
            own: None,
            peers: BTreeMap::new(),
            failed: false,
            tx_checksum_off: false,
        }
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The flannel network of this family.
    pub fn network(&self) -> IpNetwork {
        self.network
    }

    /// The device's interface index (0 before it exists).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many peers this stack holds (programmed, or waiting for a reconcile to retry).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The device's MAC (the published VtepMAC).
    pub fn mac(&self) -> [u8; 6] {
        self.spec.mac
    }

    /// Whether this is the IPv6 device.
    pub fn is_v6(&self) -> bool {
        self.v6
    }

    /// Makes the device exist as configured; on reuse, adopts its MAC. Returns whether it
    /// was (re)created.
    pub(super) fn ensure_device<K: VxlanKernel>(
        &mut self,
        k: &mut K,
    ) -> Result<bool, BackendError> {
        let name = self.spec.name.clone();
        let existing = k
            .device(&name)
            .map_err(step(format!("looking up {name}")))?;
        let created = match (decide(existing.as_ref(), &self.spec), &existing) {
            (DeviceAction::Reuse, Some(dev)) => {
                info!("reusing vxlan device {name} (MAC {})", mac_string(&dev.mac));
                self.spec.mac = dev.mac;
                self.index = dev.index;
                if dev.mtu != self.spec.mtu {
                    k.set_mtu(dev.index, self.spec.mtu).map_err(step(format!(
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
                    k.delete_device(dev.index)
                        .map_err(step(format!("deleting {name}")))?;
                }
                k.create_device(&self.spec)
                    .map_err(step(format!("creating vxlan device {name}")))?;
                let dev = k
                    .device(&name)
                    .map_err(step(format!("looking up {name}")))?
                    .ok_or_else(|| {
                        BackendError::Config(format!("created {name} but it is not there"))
                    })?;
                info!(
                    "created vxlan device {name} (VNI {}, local {}, MAC {}, MTU {})",
                    self.spec.vni,
                    self.spec.local,
                    mac_string(&self.spec.mac),
                    self.spec.mtu
                );
                self.index = dev.index;
                true
            }
        };
        if let Err(e) = k.disable_accept_ra(&name) {
            warning!("setting accept_ra=0 on {name}: {e}");
        }
        if self.tx_checksum_off {
            // The workaround for the kernel bug behind flannel #1279/#2152 (packets with bad
            // UDP checksums on some kernels and NICs), which operators otherwise apply by hand
            // and lose when the device is recreated.
            k.set_tx_checksum(&name, false).map_err(step(format!(
                "turning tx-checksum-ip-generic off on {name} (--vxlan-tx-checksum-off)"
            )))?;
            if created {
                info!("{name}: tx-checksum-ip-generic off (--vxlan-tx-checksum-off)");
            }
        }
        Ok(created)
    }

    /// The device's address and state for the node's subnet: `<subnet>.0/32` (or the IPv6
    /// subnet's first address `/128`; other addresses of the family removed, IPv6
    /// link-local ones kept), up, MAC unchanged.
    pub(super) fn configure<K: VxlanKernel>(
        &mut self,
        k: &mut K,
        own: IpNetwork,
    ) -> Result<(), BackendError> {
        self.own = Some(own);
        let name = self.spec.name.clone();
        let want = host_address(own)?;
        let have = k
            .addresses(self.index)
            .map_err(step(format!("listing the addresses of {name}")))?;
        let v6 = self.v6;
        let mine = |a: &&IpNetwork| a.is_ipv6() == v6 && !link_local(a);
        for a in have.iter().filter(mine).filter(|a| **a != want) {
            warning!("removing address {a} from {name}");
            k.delete_address(self.index, *a)
                .map_err(step(format!("removing {a} from {name}")))?;
        }
        if !have.contains(&want) {
            k.add_address(self.index, want)
                .map_err(step(format!("adding {want} to {name}")))?;
        }
        k.set_up(self.index)
            .map_err(step(format!("bringing {name} up")))?;
        let dev = k
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

    /// Neighbour, FDB entry, route, in that order; on a failure the steps already made are
    /// undone (in reverse) and the error names the failed step.
    fn program<K: VxlanKernel>(&self, k: &mut K, p: &Peer) -> Result<(), BackendError> {
        let (i, name) = (self.index, &self.spec.name);
        let route = p.route(i);
        if p.direct {
            return k.replace_route(&route).map_err(step(format!(
                "adding route {} via {}",
                p.subnet, p.public_ip
            )));
        }
        let (n, f) = (p.neighbour(), p.fdb());
        k.replace_neighbour(i, n).map_err(step(format!(
            "adding neighbour {} lladdr {} dev {name}",
            n.ip,
            mac_string(&n.mac)
        )))?;
        if let Err(e) = k.replace_fdb(i, f) {
            self.undo_neighbour(k, n);
            return Err(step(format!(
                "adding fdb {} dst {} dev {name}",
                mac_string(&f.mac),
                f.dst
            ))(e));
        }
        if let Err(e) = k.replace_route(&route) {
            self.undo_fdb(k, f);
            self.undo_neighbour(k, n);
            return Err(step(format!(
                "adding route {} via {} dev {name} onlink",
                route.dst, route.gw
            ))(e));
        }
        Ok(())
    }

    fn undo_neighbour<K: VxlanKernel>(&self, k: &mut K, n: Neighbour) {
        if let Err(e) = k.delete_neighbour(self.index, n) {
            error!("rolling back neighbour {}: {e}", n.ip);
        }
    }

    fn undo_fdb<K: VxlanKernel>(&self, k: &mut K, f: Fdb) {
        if let Err(e) = k.delete_fdb(self.index, f) {
            error!("rolling back fdb entry {}: {e}", mac_string(&f.mac));
        }
    }

    /// Route, neighbour, FDB entry removed (each failure logged, the rest still done); what
    /// `keep` (the peer's new state) still uses stays.
    fn unprogram<K: VxlanKernel>(&self, k: &mut K, p: &Peer, keep: Option<&Peer>) {
        let i = self.index;
        let keep_route = keep.is_some_and(|kp| kp.subnet == p.subnet);
        if !keep_route && let Err(e) = k.delete_route(&p.route(i)) {
            error!("deleting route {}: {e}", p.subnet);
        }
        if p.direct {
            return;
        }
        let kept = keep.filter(|kp| !kp.direct);
        if kept.is_none_or(|kp| kp.neighbour().ip != p.neighbour().ip) {
            self.undo_neighbour(k, p.neighbour());
        }
        // An FDB entry is per MAC: a node that re-keyed its lease (same device, same MAC)
        // has its old and new lease share it until the old one expires.
        let shared = self.peers.values().any(|q| !q.direct && q.mac == p.mac);
        if kept.is_none_or(|kp| kp.mac != p.mac) && !shared {
            self.undo_fdb(k, p.fdb());
        }
    }

    /// A peer's lease added or changed: programmed (a failure is logged; the peer stays
    /// wanted, so the next reconcile retries), then what its previous state used and the
    /// new one does not is removed.
    pub(super) fn added<K: VxlanKernel>(&mut self, k: &mut K, peer: Peer) {
        let old = self.peers.insert(peer.subnet, peer);
        match self.program(k, &peer) {
            // Go logs a peer's entries at V(2) ("adding subnet").
            Ok(()) => detail!(
                2,
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
            Err(e) => {
                error!("{e} (retried by the next reconcile)");
                self.failed = true;
            }
        }
        if let Some(old) = old
            && old != peer
        {
            self.unprogram(k, &old, Some(&peer));
        }
    }

    /// A peer's lease gone: its entries removed.
    pub(super) fn removed<K: VxlanKernel>(&mut self, k: &mut K, subnet: IpNetwork) {
        if let Some(p) = self.peers.remove(&subnet) {
            self.unprogram(k, &p, None);
            detail!(2, "peer {} removed", p.subnet);
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

    /// Whether every kernel step since the last whole reconcile worked.
    pub fn settled(&self) -> bool {
        !self.failed
    }

    /// Compares the kernel with what this stack programmed and repairs the difference: the
    /// device (state, MTU, address) always, the peers' entries when `entries` (they are
    /// the dumps; the agent skips them while the kernel notified no change).
    pub(super) fn reconcile<K: VxlanKernel>(
        &mut self,
        k: &mut K,
        repairs: &mut Repairs,
        entries: bool,
    ) -> Result<(), BackendError> {
        if entries {
            self.failed = false;
        }
        let done = self.reconcile_device(k, repairs, entries);
        if done.is_err() {
            self.failed = true;
        }
        done
    }

    fn reconcile_device<K: VxlanKernel>(
        &mut self,
        k: &mut K,
        repairs: &mut Repairs,
        entries: bool,
    ) -> Result<(), BackendError> {
        let name = self.spec.name.clone();
        let dev = k
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
            // Deleted and made again by someone else: its entries went with the old one.
            (Some(d), _) if d.index != self.index => {
                Some(format!("index {} (was {})", d.index, self.index))
            }
            _ => None,
        };
        if let Some(why) = broken {
            warning!(
                "reconcile: device {name} {why}: recreating it with MAC {} and every peer",
                mac_string(&self.spec.mac)
            );
            if let Some(d) = &dev {
                k.delete_device(d.index)
                    .map_err(step(format!("deleting {name}")))?;
            }
            self.ensure_device(k)?;
            repairs.device += 1;
            if let Some(own) = self.own {
                self.configure(k, own)?;
            }
            for p in self.peers.values() {
                if let Err(e) = self.program(k, p) {
                    error!("reconcile: {e}");
                    self.failed = true;
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
                k.set_mtu(self.index, self.spec.mtu)
                    .map_err(step(format!("setting the MTU of {name}")))?;
            }
            k.set_up(self.index)
                .map_err(step(format!("bringing {name} up")))?;
            repairs.device += 1;
        }
        if let Some(own) = self.own {
            let want = host_address(own)?;
            let have = k
                .addresses(self.index)
                .map_err(step(format!("listing the addresses of {name}")))?;
            if !have.contains(&want) {
                warning!("reconcile: address {want} missing on {name}: restoring");
                k.add_address(self.index, want)
                    .map_err(step(format!("adding {want} to {name}")))?;
                repairs.address += 1;
            }
        }
        if !entries {
            return Ok(());
        }
        if self.reconcile_peers(k, repairs)? {
            self.failed = true;
        }
        Ok(())
    }

    /// The peers' entries compared and repaired; whether a repair failed.
    fn reconcile_peers<K: VxlanKernel>(
        &self,
        k: &mut K,
        repairs: &mut Repairs,
    ) -> Result<bool, BackendError> {
        let mut failed = false;
        let (i, name, v6) = (self.index, &self.spec.name, self.v6);
        let neighbours: BTreeSet<Neighbour> = k
            .neighbours(i, v6)
            .map_err(step(format!("listing the neighbours of {name}")))?
            .into_iter()
            .collect();
        let fdb: BTreeSet<Fdb> = k
            .fdb(i)
            .map_err(step(format!("listing the fdb of {name}")))?
            .into_iter()
            .filter(|f| f.dst.is_ipv6() == v6)
            .collect();
        let routes: BTreeSet<PeerRoute> = k
            .routes(v6)
            .map_err(step("listing routes"))?
            .into_iter()
            .collect();
        let overlay: Vec<Peer> = self.peers.values().filter(|p| !p.direct).copied().collect();
        let want_n: BTreeSet<Neighbour> = overlay.iter().map(Peer::neighbour).collect();
        let want_f: BTreeSet<Fdb> = overlay.iter().map(Peer::fdb).collect();
        let want_r: BTreeSet<PeerRoute> = self.peers.values().map(|p| p.route(i)).collect();

        // Stale routes first: nothing should route into entries about to go.
        // A wrong route to a peer's subnet is replaced below, not deleted.
        // Sets, not scans: at 5,000 peers a scan of the wanted routes per kernel route was
        // 25 million comparisons every reconcile (docs/performance.md, "flanneld at scale").
        let want_dst: BTreeSet<IpNetwork> = want_r.iter().map(|r| r.dst).collect();
        let mut by_dst: BTreeMap<IpNetwork, Vec<&PeerRoute>> = BTreeMap::new();
        for r in &routes {
            by_dst.entry(r.dst).or_default().push(r);
        }
        for r in routes
            .iter()
            .filter(|r| !want_dst.contains(&r.dst) && self.ours(r))
        {
            warning!("reconcile: removing stale route {} via {}", r.dst, r.gw);
            match k.delete_route(r) {
                Ok(()) => repairs.stale_route += 1,
                Err(e) => {
                    error!("reconcile: deleting route {}: {e}", r.dst);
                    failed = true;
                }
            }
        }
        for n in want_n.difference(&neighbours) {
            warning!(
                "reconcile: restoring neighbour {} lladdr {} dev {name}",
                n.ip,
                mac_string(&n.mac)
            );
            match k.replace_neighbour(i, *n) {
                Ok(()) => repairs.neighbour += 1,
                Err(e) => {
                    error!("reconcile: neighbour {}: {e}", n.ip);
                    failed = true;
                }
            }
        }
        for f in want_f.difference(&fdb) {
            warning!(
                "reconcile: restoring fdb {} dst {} dev {name}",
                mac_string(&f.mac),
                f.dst
            );
            match k.replace_fdb(i, *f) {
                Ok(()) => repairs.fdb += 1,
                Err(e) => {
                    error!("reconcile: fdb {}: {e}", mac_string(&f.mac));
                    failed = true;
                }
            }
        }
        for r in want_r.iter().filter(|w| {
            !by_dst
                .get(&w.dst)
                .is_some_and(|have| have.iter().any(|h| w.is_met_by(h)))
        }) {
            warning!("reconcile: restoring route {} via {}", r.dst, r.gw);
            match k.replace_route(r) {
                Ok(()) => repairs.route += 1,
                Err(e) => {
                    error!("reconcile: route {}: {e}", r.dst);
                    failed = true;
                }
            }
        }
        let want_ips: BTreeSet<IpAddr> = want_n.iter().map(|n| n.ip).collect();
        for n in neighbours.iter().filter(|n| !want_ips.contains(&n.ip)) {
            warning!("reconcile: removing stale neighbour {} dev {name}", n.ip);
            match k.delete_neighbour(i, *n) {
                Ok(()) => repairs.stale_neighbour += 1,
                Err(e) => {
                    error!("reconcile: deleting neighbour {}: {e}", n.ip);
                    failed = true;
                }
            }
        }
        let want_macs: BTreeSet<[u8; 6]> = want_f.iter().map(|f| f.mac).collect();
        for f in fdb.iter().filter(|f| !want_macs.contains(&f.mac)) {
            warning!(
                "reconcile: removing stale fdb {} dst {} dev {name}",
                mac_string(&f.mac),
                f.dst
            );
            match k.delete_fdb(i, *f) {
                Ok(()) => repairs.stale_fdb += 1,
                Err(e) => {
                    error!("reconcile: deleting fdb {}: {e}", mac_string(&f.mac));
                    failed = true;
                }
            }
        }
        Ok(failed)
    }
}
