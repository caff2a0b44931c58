//! The kernel requests the plugin makes, each with what it was doing when it fails: thin
//! wrappers over `node_kernel`'s typed requests.

use std::os::fd::RawFd;

use cni_common::result::Route;
use ipnetwork::IpNetwork;
use node_kernel::addr::{self, AddressMessage};
use node_kernel::link::{self as klink, BridgeVlanInfoFlags, LinkFlags, LinkId, LinkMessage};
use node_kernel::route::{self, RouteAttribute, RouteScope};
use node_kernel::{Context, KernelError, RouteSocket};

pub use node_kernel::link::{controller, is_promisc, is_up, kind, mac, name, port_state};

type Nl<T> = Result<T, KernelError>;

/// The link called `name`, or `None` when there is none.
pub fn by_name(nl: &RouteSocket, name: &str) -> Nl<Option<LinkMessage>> {
    nl.link(LinkId::Name(name))
        .context(format!("failed to look up {name}"))
}

pub fn by_index(nl: &RouteSocket, index: u32) -> Nl<Option<LinkMessage>> {
    nl.link(LinkId::Index(index))
        .context(format!("failed to look up link {index}"))
}

/// Creates a bridge, down, so that its sysctls can be set before the kernel configures
/// IPv6 on it; "already exists" is the caller's business (concurrent first ADDs).
pub fn add_bridge(nl: &RouteSocket, name: &str, mtu: Option<u32>, vlan_filtering: bool) -> Nl<()> {
    nl.create_link(&klink::bridge(name, mtu, vlan_filtering))
        .context(format!("failed to create bridge \"{name}\""))
}

pub fn set_up(nl: &RouteSocket, index: u32, up: bool) -> Nl<()> {
    nl.set_link_flag(index, LinkFlags::Up, up).context(format!(
        "failed to set link {index} {}",
        if up { "up" } else { "down" }
    ))
}

pub fn set_promisc(nl: &RouteSocket, index: u32) -> Nl<()> {
    nl.set_link_flag(index, LinkFlags::Promisc, true)
        .context("failed to set promiscuous mode")
}

pub fn set_mac(nl: &RouteSocket, index: u32, mac: Vec<u8>) -> Nl<()> {
    nl.set_link(&klink::with_mac(index, mac))
        .context("could not set bridge's mac")
}

/// Creates the veth pair from the container's namespace: `ifname` stays there, `peer` is
/// created directly in the namespace `host_ns` refers to.
pub fn add_veth(
    nl: &RouteSocket,
    ifname: &str,
    peer: &str,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
    host_ns: RawFd,
) -> std::io::Result<()> {
    nl.create_link(&klink::veth(ifname, peer, host_ns, mtu, mac))
}

pub fn del_link(nl: &RouteSocket, index: u32) -> Nl<()> {
    nl.delete_link(index)
        .context(format!("failed to delete link {index}"))
}

/// Enslaves the port to the bridge and sets its bridge-port flags.
pub fn attach_port(
    nl: &RouteSocket,
    port: u32,
    bridge: u32,
    hairpin: bool,
    isolated: bool,
) -> Nl<()> {
    nl.set_link(&klink::controller_of(port, bridge))
        .context(format!("failed to connect link {port} to bridge {bridge}"))?;
    nl.modify_link(&klink::bridge_port_flags(port, hairpin, isolated))
        .context("failed to set bridge port flags")
}

/// The port's VLANs: unless `preserve_default`, the default VLAN 1 goes first; `access`
/// becomes the untagged PVID; `trunk` VLANs are tagged; a trunk without an access VLAN keeps
/// VLAN 1 as untagged PVID (the reference's layout).
pub fn set_port_vlans(
    nl: &RouteSocket,
    port: u32,
    access: u16,
    trunk: &[u16],
    preserve_default: bool,
) -> Nl<()> {
    let untagged_pvid = BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged;
    if !preserve_default {
        // VLAN 1 may be absent already (a bridge created without default PVID): either way
        // it is not on the port afterwards, which is all this step wants.
        let _ = nl.delete_port_vlan(port, 1);
    }
    let mut entries: Vec<(u16, BridgeVlanInfoFlags)> = Vec::new();
    if access != 0 {
        entries.push((access, untagged_pvid));
    } else if !trunk.is_empty() {
        entries.push((1, untagged_pvid));
    }
    entries.extend(trunk.iter().map(|v| (*v, BridgeVlanInfoFlags::empty())));
    for (vid, vflags) in entries {
        nl.add_port_vlan(port, vid, vflags)
            .context(format!("failed to add VLAN {vid} to port {port}"))?;
    }
    Ok(())
}

/// The addresses on a link, with the messages to delete them by.
pub fn addresses(nl: &RouteSocket, index: u32) -> Nl<Vec<(IpNetwork, AddressMessage)>> {
    nl.addresses(index).context("failed to list addresses")
}

/// Adds an address; IPv6 addresses skip duplicate address detection unless `dad`.
pub fn add_address(nl: &RouteSocket, index: u32, net: IpNetwork, dad: bool) -> Nl<()> {
    nl.add_address(&addr::address(index, net, dad))
        .context(format!("failed to add IP addr {net}"))
}

pub fn del_address(nl: &RouteSocket, msg: &AddressMessage) -> Nl<()> {
    nl.delete_address(msg).context("failed to delete address")
}

/// Adds a route through `index`, via `gw` when given.
pub fn add_route(nl: &RouteSocket, index: u32, r: &Route, gw: Option<std::net::IpAddr>) -> Nl<()> {
    let what = || format!("failed to add route {} via {gw:?}", r.dst);
    let mut m = route::via_link(route::main_table(r.dst.network(), r.dst.prefix()), index);
    if let Some(gw) = gw {
        if addr::family(gw) != m.header.address_family {
            return Err(KernelError::Request {
                what: what(),
                source: std::io::Error::other("gateway and destination differ in family"),
            });
        }
        m = route::via_gateway(m, gw);
    } else {
        m.header.scope = RouteScope::Link;
    }
    if let Some(p) = r.priority {
        m.attributes.push(RouteAttribute::Priority(p));
    }
    if let Some(t) = r.table {
        match u8::try_from(t) {
            Ok(small) => m.header.table = small,
            Err(_) => m.attributes.push(RouteAttribute::Table(t)),
        }
    }
    if let Some(s) = r.scope.and_then(|s| u8::try_from(s).ok()) {
        m.header.scope = RouteScope::from(s);
    }
    nl.add_route(&m).context(what())
}
