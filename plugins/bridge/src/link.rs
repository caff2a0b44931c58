//! rtnetlink requests the plugin makes, one function each, all targeted (by name or index)
//! rather than dumps where the kernel allows it.

use std::net::IpAddr;
use std::os::fd::RawFd;

use cni_common::netlink::{Context, Handle, NetlinkError};
use futures_util::TryStreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    BridgePortState, BridgeVlanInfoFlags, InfoBridgePort, InfoData, InfoKind, InfoPortData,
    InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{
    LinkBridge, LinkBridgePort, LinkBridgeVlan, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

type Nl<T> = Result<T, NetlinkError>;

const ENODEV: i32 = nix::libc::ENODEV;
const EEXIST: i32 = nix::libc::EEXIST;

/// The errno of a kernel refusal, if that is what the error is.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// Whether the error is a kernel "already exists".
pub fn is_exists(e: &NetlinkError) -> bool {
    matches!(e, NetlinkError::Request { source, .. } if errno(source) == Some(EEXIST))
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
pub async fn by_name(h: &Handle, name: &str) -> Nl<Option<LinkMessage>> {
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(msg) => Ok(msg),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(e).context(format!("failed to look up {name}")),
    }
}

pub async fn by_index(h: &Handle, index: u32) -> Nl<Option<LinkMessage>> {
    match h.link().get().match_index(index).execute().try_next().await {
        Ok(msg) => Ok(msg),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(e).context(format!("failed to look up link {index}")),
    }
}

/// Creates a bridge, down, so that its sysctls can be set before the kernel configures
/// IPv6 on it; "already exists" is the caller's business (concurrent first ADDs).
pub async fn add_bridge(h: &Handle, name: &str, mtu: Option<u32>, vlan_filtering: bool) -> Nl<()> {
    let mut b = LinkMessageBuilder::<LinkBridge>::new(name);
    if let Some(m) = mtu {
        b = b.mtu(m);
    }
    if vlan_filtering {
        b = b.vlan_filtering(true);
    }
    h.link()
        .add(b.build())
        .execute()
        .await
        .context(format!("failed to create bridge \"{name}\""))
}

pub async fn set_up(h: &Handle, index: u32, up: bool) -> Nl<()> {
    let b = LinkUnspec::new_with_index(index);
    let msg = if up { b.up() } else { b.down() }.build();
    h.link().set(msg).execute().await.context(format!(
        "failed to set link {index} {}",
        if up { "up" } else { "down" }
    ))
}

pub async fn set_promisc(h: &Handle, index: u32) -> Nl<()> {
    let msg = LinkUnspec::new_with_index(index).promiscuous(true).build();
    h.link()
        .set(msg)
        .execute()
        .await
        .context("failed to set promiscuous mode")
}

pub async fn set_mac(h: &Handle, index: u32, mac: Vec<u8>) -> Nl<()> {
    let msg = LinkUnspec::new_with_index(index).address(mac).build();
    h.link()
        .set(msg)
        .execute()
        .await
        .context("could not set bridge's mac")
}

/// Creates the veth pair from the container's namespace: `ifname` stays there, `peer` is
/// created directly in the namespace `host_ns` refers to, so no name ever clashes with the
/// host's own interfaces.
pub async fn add_veth(
    h: &Handle,
    ifname: &str,
    peer: &str,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
    host_ns: RawFd,
) -> Result<(), rtnetlink::Error> {
    let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_owned())
        .append_extra_attribute(LinkAttribute::NetNsFd(host_ns));
    let mut b = LinkVeth::new(ifname, peer);
    if let Some(m) = mtu {
        peer_msg = peer_msg.mtu(m);
        b = b.mtu(m);
    }
    if let Some(mac) = mac {
        b = b.address(mac.to_vec());
    }
    let msg = b
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())))
        .build();
    h.link().add(msg).execute().await
}

pub async fn del_link(h: &Handle, index: u32) -> Nl<()> {
    match h.link().del(index).execute().await {
        Err(e) if errno(&e) == Some(ENODEV) => Ok(()),
        other => other.context(format!("failed to delete link {index}")),
    }
}

/// Enslaves the port to the bridge and sets its bridge-port flags.
pub async fn attach_port(
    h: &Handle,
    port: u32,
    bridge: u32,
    hairpin: bool,
    isolated: bool,
) -> Nl<()> {
    let msg = LinkUnspec::new_with_index(port).controller(bridge).build();
    h.link()
        .set(msg)
        .execute()
        .await
        .context(format!("failed to connect link {port} to bridge {bridge}"))?;
    let flags = LinkBridgePort::new(port)
        .hairpin(hairpin)
        .isolated(isolated)
        .build();
    h.link()
        .set_port(flags)
        .execute()
        .await
        .context("failed to set bridge port flags")
}

/// The port's VLANs: unless `preserve_default`, the default VLAN 1 goes first; `access`
/// becomes the untagged PVID; `trunk` VLANs are tagged; a trunk without an access VLAN keeps
/// VLAN 1 as untagged PVID (the reference's layout).
pub async fn set_port_vlans(
    h: &Handle,
    port: u32,
    access: u16,
    trunk: &[u16],
    preserve_default: bool,
) -> Nl<()> {
    let untagged_pvid = BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged;
    if !preserve_default {
        let del = LinkBridgeVlan::new(port)
            .vlan(1, BridgeVlanInfoFlags::empty())
            .build();
        // Absent already is fine.
        let _ = h.link().del_with_message(del).execute().await;
    }
    let mut entries: Vec<(u16, BridgeVlanInfoFlags)> = Vec::new();
    if access != 0 {
        entries.push((access, untagged_pvid));
    } else if !trunk.is_empty() {
        entries.push((1, untagged_pvid));
    }
    entries.extend(trunk.iter().map(|v| (*v, BridgeVlanInfoFlags::empty())));
    for (vid, flags) in entries {
        let msg = LinkBridgeVlan::new(port).vlan(vid, flags).build();
        h.link()
            .set(msg)
            .execute()
            .await
            .context(format!("failed to add VLAN {vid} to port {port}"))?;
    }
    Ok(())
}

fn address_of(m: &AddressMessage) -> Option<IpNetwork> {
    // IFA_ADDRESS is the peer on point-to-point links; IFA_LOCAL is ours when present.
    let pick = |local: bool| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if local => Some(*ip),
            AddressAttribute::Address(ip) if !local => Some(*ip),
            _ => None,
        })
    };
    let ip = pick(true).or_else(|| pick(false))?;
    IpNetwork::new(ip, m.header.prefix_len).ok()
}

/// The addresses on a link, with the messages to delete them by.
pub async fn addresses(h: &Handle, index: u32) -> Nl<Vec<(IpNetwork, AddressMessage)>> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .context("failed to list addresses")?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.index == index)
        .filter_map(|m| address_of(&m).map(|a| (a, m)))
        .collect())
}

/// Adds an address; IPv6 addresses skip duplicate address detection unless `dad`.
pub async fn add_address(h: &Handle, index: u32, net: IpNetwork, dad: bool) -> Nl<()> {
    let mut req = h.address().add(index, net.ip(), net.prefix());
    if net.is_ipv6() && !dad {
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    req.execute()
        .await
        .context(format!("failed to add IP addr {net}"))
}

pub async fn del_address(h: &Handle, msg: AddressMessage) -> Nl<()> {
    h.address()
        .del(msg)
        .execute()
        .await
        .context("failed to delete address")
}

/// Adds a route through `index`, via `gw` when given.
pub async fn add_route(
    h: &Handle,
    index: u32,
    route: &cni_common::result::Route,
    gw: Option<IpAddr>,
) -> Nl<()> {
    let what = || format!("failed to add route {} via {gw:?}", route.dst);
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.network(), route.dst.prefix())
        .map_err(|e| NetlinkError::Socket(std::io::Error::other(format!("{}: {e}", what()))))?
        .output_interface(index);
    if let Some(gw) = gw {
        b = b
            .gateway(gw)
            .map_err(|e| NetlinkError::Socket(std::io::Error::other(format!("{}: {e}", what()))))?;
    } else {
        b = b.scope(RouteScope::Link);
    }
    if let Some(p) = route.priority {
        b = b.priority(p);
    }
    if let Some(t) = route.table {
        b = b.table_id(t);
    }
    if let Some(s) = route.scope.and_then(|s| u8::try_from(s).ok()) {
        b = b.scope(RouteScope::from(s));
    }
    h.route().add(b.build()).execute().await.context(what())
}
