//! rtnetlink requests the plugin makes, one function each, all targeted (by name or index)
//! rather than dumps where the kernel allows it.

use std::net::IpAddr;
use std::os::fd::RawFd;

use cni_common::netlink::packet::AddressFamily;
use cni_common::netlink::packet::address::{AddressAttribute, AddressFlags, AddressMessage};
use cni_common::netlink::packet::link::{
    AfSpecBridge, BridgePortState, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoBridgePort,
    InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use cni_common::netlink::packet::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use cni_common::netlink::{self, Context, Netlink, NetlinkError, flags, kind};
use ipnetwork::IpNetwork;

type Nl<T> = Result<T, NetlinkError>;

const EEXIST: i32 = nix::libc::EEXIST;

/// Whether the error is a kernel "already exists".
pub fn is_exists(e: &NetlinkError) -> bool {
    e.errno() == Some(EEXIST)
}

pub fn name(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

pub fn mac(msg: &LinkMessage) -> Vec<u8> {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

pub fn controller(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

fn infos(msg: &LinkMessage) -> impl Iterator<Item = &LinkInfo> {
    msg.attributes
        .iter()
        .filter_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos.iter()),
            _ => None,
        })
        .flatten()
}

pub fn kind(msg: &LinkMessage) -> Option<&InfoKind> {
    infos(msg).find_map(|i| match i {
        LinkInfo::Kind(k) => Some(k),
        _ => None,
    })
}

pub fn port_state(msg: &LinkMessage) -> Option<BridgePortState> {
    infos(msg).find_map(|i| match i {
        LinkInfo::PortData(InfoPortData::BridgePort(port)) => port.iter().find_map(|p| match p {
            InfoBridgePort::State(s) => Some(*s),
            _ => None,
        }),
        _ => None,
    })
}

pub fn is_up(msg: &LinkMessage) -> bool {
    msg.header.flags.contains(LinkFlags::Up)
}

pub fn is_promisc(msg: &LinkMessage) -> bool {
    msg.header.flags.contains(LinkFlags::Promisc)
}

/// The link called `name`, or `None` when there is none.
pub fn by_name(nl: &Netlink, name: &str) -> Nl<Option<LinkMessage>> {
    netlink::link_by_name(nl, name).context(format!("failed to look up {name}"))
}

pub fn by_index(nl: &Netlink, index: u32) -> Nl<Option<LinkMessage>> {
    netlink::link_by_index(nl, index).context(format!("failed to look up link {index}"))
}

/// Creates a bridge, down, so that its sysctls can be set before the kernel configures
/// IPv6 on it; "already exists" is the caller's business (concurrent first ADDs).
pub fn add_bridge(nl: &Netlink, name: &str, mtu: Option<u32>, vlan_filtering: bool) -> Nl<()> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    let mut info = vec![LinkInfo::Kind(InfoKind::Bridge)];
    if vlan_filtering {
        info.push(LinkInfo::Data(InfoData::Bridge(vec![
            InfoBridge::VlanFiltering(true),
        ])));
    }
    m.attributes.push(LinkAttribute::LinkInfo(info));
    nl.ack(kind::NEW_LINK, flags::CREATE | flags::EXCL, &m)
        .context(format!("failed to create bridge \"{name}\""))
}

pub fn set_up(nl: &Netlink, index: u32, up: bool) -> Nl<()> {
    netlink::set_link_flag(nl, index, LinkFlags::Up, up).context(format!(
        "failed to set link {index} {}",
        if up { "up" } else { "down" }
    ))
}

pub fn set_promisc(nl: &Netlink, index: u32) -> Nl<()> {
    netlink::set_link_flag(nl, index, LinkFlags::Promisc, true)
        .context("failed to set promiscuous mode")
}

pub fn set_mac(nl: &Netlink, index: u32, mac: Vec<u8>) -> Nl<()> {
    let mut m = netlink::link_with_index(index);
    m.attributes.push(LinkAttribute::Address(mac));
    nl.ack(kind::SET_LINK, 0, &m)
        .context("could not set bridge's mac")
}

/// Creates the veth pair from the container's namespace: `ifname` stays there, `peer` is
/// created directly in the namespace `host_ns` refers to, so no name ever clashes with the
/// host's own interfaces.
pub fn add_veth(
    nl: &Netlink,
    ifname: &str,
    peer: &str,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
    host_ns: RawFd,
) -> std::io::Result<()> {
    let mut peer_msg = LinkMessage::default();
    peer_msg
        .attributes
        .push(LinkAttribute::IfName(peer.to_owned()));
    peer_msg.attributes.push(LinkAttribute::NetNsFd(host_ns));
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(ifname.to_owned()));
    // One queue each way, as the kernel ends up with anyway: asked for explicitly, the kernel
    // allocates one instead of one per CPU and then shrinking to one, which waits for an RCU
    // grace period while holding the RTNL lock (every other pod's ADD waits with it).
    for msg in [&mut m, &mut peer_msg] {
        msg.attributes.push(LinkAttribute::NumTxQueues(1));
        msg.attributes.push(LinkAttribute::NumRxQueues(1));
    }
    if let Some(mtu) = mtu {
        peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = mac {
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
    ]));
    nl.ack(kind::NEW_LINK, flags::CREATE | flags::EXCL, &m)
}

pub fn del_link(nl: &Netlink, index: u32) -> Nl<()> {
    match nl.ack(kind::DEL_LINK, 0, &netlink::link_with_index(index)) {
        Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(()),
        other => other.context(format!("failed to delete link {index}")),
    }
}

/// Enslaves the port to the bridge and sets its bridge-port flags.
pub fn attach_port(nl: &Netlink, port: u32, bridge: u32, hairpin: bool, isolated: bool) -> Nl<()> {
    let mut m = netlink::link_with_index(port);
    m.attributes.push(LinkAttribute::Controller(bridge));
    nl.ack(kind::SET_LINK, 0, &m)
        .context(format!("failed to connect link {port} to bridge {bridge}"))?;
    let mut m = netlink::link_with_index(port);
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![
            InfoBridgePort::HairpinMode(hairpin),
            InfoBridgePort::Isolated(isolated),
        ])),
    ]));
    nl.ack(kind::NEW_LINK, 0, &m)
        .context("failed to set bridge port flags")
}

fn vlan_message(port: u32, vid: u16, flags: BridgeVlanInfoFlags) -> LinkMessage {
    let mut m = netlink::link_with_index(port);
    m.header.interface_family = AddressFamily::Bridge;
    m.attributes
        .push(LinkAttribute::AfSpecBridge(vec![AfSpecBridge::VlanInfo(
            BridgeVlanInfo { vid, flags },
        )]));
    m
}

/// The port's VLANs: unless `preserve_default`, the default VLAN 1 goes first; `access`
/// becomes the untagged PVID; `trunk` VLANs are tagged; a trunk without an access VLAN keeps
/// VLAN 1 as untagged PVID (the reference's layout).
pub fn set_port_vlans(
    nl: &Netlink,
    port: u32,
    access: u16,
    trunk: &[u16],
    preserve_default: bool,
) -> Nl<()> {
    let untagged_pvid = BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged;
    if !preserve_default {
        // Absent already is fine.
        let _ = nl.ack(
            kind::DEL_LINK,
            0,
            &vlan_message(port, 1, BridgeVlanInfoFlags::empty()),
        );
    }
    let mut entries: Vec<(u16, BridgeVlanInfoFlags)> = Vec::new();
    if access != 0 {
        entries.push((access, untagged_pvid));
    } else if !trunk.is_empty() {
        entries.push((1, untagged_pvid));
    }
    entries.extend(trunk.iter().map(|v| (*v, BridgeVlanInfoFlags::empty())));
    for (vid, vflags) in entries {
        nl.ack(
            kind::SET_LINK,
            flags::CREATE | flags::EXCL,
            &vlan_message(port, vid, vflags),
        )
        .context(format!("failed to add VLAN {vid} to port {port}"))?;
    }
    Ok(())
}

/// The addresses on a link, with the messages to delete them by.
pub fn addresses(nl: &Netlink, index: u32) -> Nl<Vec<(IpNetwork, AddressMessage)>> {
    netlink::addresses(nl, index).context("failed to list addresses")
}

/// Adds an address; IPv6 addresses skip duplicate address detection unless `dad`.
pub fn add_address(nl: &Netlink, index: u32, net: IpNetwork, dad: bool) -> Nl<()> {
    let mut m = AddressMessage::default();
    m.header.index = index;
    m.header.prefix_len = net.prefix();
    m.header.family = netlink::family(net.ip());
    m.attributes.push(AddressAttribute::Address(net.ip()));
    m.attributes.push(AddressAttribute::Local(net.ip()));
    if let IpNetwork::V4(v4) = net
        && v4.prefix() < 31
    {
        m.attributes
            .push(AddressAttribute::Broadcast(v4.broadcast()));
    }
    if net.is_ipv6() && !dad {
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    nl.ack(kind::NEW_ADDR, flags::CREATE | flags::EXCL, &m)
        .context(format!("failed to add IP addr {net}"))
}

pub fn del_address(nl: &Netlink, msg: AddressMessage) -> Nl<()> {
    nl.ack(kind::DEL_ADDR, 0, &msg)
        .context("failed to delete address")
}

/// A route message for the main table, static, with `dst` as its destination.
pub fn route_to(dst: IpAddr, prefix: u8) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Static;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.header.address_family = netlink::family(dst);
    m.header.destination_prefix_length = prefix;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    m
}

/// Adds a route through `index`, via `gw` when given.
pub fn add_route(
    nl: &Netlink,
    index: u32,
    route: &cni_common::result::Route,
    gw: Option<IpAddr>,
) -> Nl<()> {
    let what = || format!("failed to add route {} via {gw:?}", route.dst);
    let mut m = route_to(route.dst.network(), route.dst.prefix());
    m.attributes.push(RouteAttribute::Oif(index));
    if let Some(gw) = gw {
        if netlink::family(gw) != m.header.address_family {
            return Err(NetlinkError::Request {
                what: what(),
                source: std::io::Error::other("gateway and destination differ in family"),
            });
        }
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    } else {
        m.header.scope = RouteScope::Link;
    }
    if let Some(p) = route.priority {
        m.attributes.push(RouteAttribute::Priority(p));
    }
    if let Some(t) = route.table {
        match u8::try_from(t) {
            Ok(small) => m.header.table = small,
            Err(_) => m.attributes.push(RouteAttribute::Table(t)),
        }
    }
    if let Some(s) = route.scope.and_then(|s| u8::try_from(s).ok()) {
        m.header.scope = RouteScope::from(s);
    }
    nl.ack(kind::NEW_ROUTE, flags::CREATE | flags::EXCL, &m)
        .context(what())
}
