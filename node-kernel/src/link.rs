//! Links: lookups, creation (bridge, veth), changes, deletion, bridge-port VLANs; and the few
//! attributes read from a link message, in one place.

use std::io;
use std::os::fd::RawFd;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::AddressFamily;
pub use netlink_packet_route::link::InfoVxlan;
use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfo, InfoBridge, InfoBridgePort, InfoData, InfoPortData, InfoPortKind,
    InfoVeth, LinkAttribute, LinkInfo,
};
pub use netlink_packet_route::link::{
    BridgePortState, BridgeVlanInfoFlags, InfoKind, LinkFlags, LinkMessage,
};

use crate::kinds::{DEL_LINK, GET_LINK, NEW_LINK, SET_LINK};
use crate::socket::{Route, Socket};
use crate::transport::Transport;

/// How a request names a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkId<'a> {
    /// By interface name.
    Name(&'a str),
    /// By interface index.
    Index(u32),
}

/// A link message addressing the link with this index.
pub fn with_index(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

/// A new bridge called `name`, down, so that its sysctls can be set before the kernel
/// configures IPv6 on it.
pub fn bridge(name: &str, mtu: Option<u32>, vlan_filtering: bool) -> LinkMessage {
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
    m
}

/// A new veth pair: `name` where the request is made, `peer` in the namespace `peer_ns`
/// refers to (so no name ever clashes with the other namespace's interfaces).
pub fn veth(
    name: &str,
    peer: &str,
    peer_ns: RawFd,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
) -> LinkMessage {
    let mut peer_msg = LinkMessage::default();
    peer_msg
        .attributes
        .push(LinkAttribute::IfName(peer.to_owned()));
    peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_ns));
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
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
    m
}

/// The settings of a new VXLAN device (`ip link add NAME type vxlan id VNI dev LINK local
/// LOCAL [dstport PORT] [gbp] nolearning`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// The device name.
    pub name: String,
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The underlay link the tunnel's packets leave by.
    pub link: u32,
    /// The local tunnel endpoint address.
    pub local: std::net::IpAddr,
    /// The UDP destination port; 0 leaves the attribute out (the kernel's default, 8472).
    pub port: u16,
    /// Group-based policy extension.
    pub gbp: bool,
    /// Source-address learning.
    pub learning: bool,
    /// The device MTU.
    pub mtu: u32,
    /// The device's hardware address, chosen by the caller.
    pub mac: [u8; 6],
}

/// A new VXLAN device with the attributes Go's netlink sends for flannel (TTL/TOS 0, no
/// proxy, RSC, L2/L3 miss), down.
pub fn vxlan(spec: &VxlanSpec) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(spec.name.clone()));
    m.attributes.push(LinkAttribute::Mtu(spec.mtu));
    m.attributes.push(LinkAttribute::Address(spec.mac.to_vec()));
    let mut data = vec![InfoVxlan::Id(spec.vni), InfoVxlan::Link(spec.link)];
    data.push(match spec.local {
        std::net::IpAddr::V4(a) => InfoVxlan::Local(a),
        std::net::IpAddr::V6(a) => InfoVxlan::Local6(a),
    });
    data.extend([
        InfoVxlan::Ttl(0),
        InfoVxlan::Tos(0),
        InfoVxlan::Learning(spec.learning),
        InfoVxlan::Proxy(false),
        InfoVxlan::Rsc(false),
        InfoVxlan::L2Miss(false),
        InfoVxlan::L3Miss(false),
    ]);
    if spec.port != 0 {
        data.push(InfoVxlan::Port(spec.port));
    }
    if spec.gbp {
        data.push(InfoVxlan::Gbp);
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(data)),
    ]));
    m
}

/// A new WireGuard device (`ip link add NAME mtu MTU type wireguard`), down; its keys and
/// peers are set through [`crate::wireguard`].
pub fn wireguard(name: &str, mtu: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Wireguard,
        )]));
    m
}

/// A new MTU for the link.
pub fn with_mtu(index: u32, mtu: u32) -> LinkMessage {
    let mut m = with_index(index);
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m
}

/// Enslaves `port` to `bridge`.
pub fn controller_of(port: u32, bridge: u32) -> LinkMessage {
    let mut m = with_index(port);
    m.attributes.push(LinkAttribute::Controller(bridge));
    m
}

/// A bridge port's hairpin and isolation flags.
pub fn bridge_port_flags(port: u32, hairpin: bool, isolated: bool) -> LinkMessage {
    let mut m = with_index(port);
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![
            InfoBridgePort::HairpinMode(hairpin),
            InfoBridgePort::Isolated(isolated),
        ])),
    ]));
    m
}

/// A new hardware address for the link.
pub fn with_mac(index: u32, mac: Vec<u8>) -> LinkMessage {
    let mut m = with_index(index);
    m.attributes.push(LinkAttribute::Address(mac));
    m
}

fn vlan_message(port: u32, vid: u16, flags: BridgeVlanInfoFlags) -> LinkMessage {
    let mut m = with_index(port);
    m.header.interface_family = AddressFamily::Bridge;
    m.attributes
        .push(LinkAttribute::AfSpecBridge(vec![AfSpecBridge::VlanInfo(
            BridgeVlanInfo { vid, flags },
        )]));
    m
}

impl<T: Transport> Socket<Route, T> {
    /// The link `id` names, or `None` when there is none.
    pub fn link(&self, id: LinkId<'_>) -> io::Result<Option<LinkMessage>> {
        let query = match id {
            LinkId::Index(index) => with_index(index),
            LinkId::Name(name) => {
                let mut q = LinkMessage::default();
                q.attributes.push(LinkAttribute::IfName(name.to_owned()));
                q
            }
        };
        match self.get(GET_LINK, NEW_LINK, &query) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(None),
            other => other,
        }
    }

    /// Every link of the namespace.
    pub fn links(&self) -> io::Result<Vec<LinkMessage>> {
        self.dump(GET_LINK, NEW_LINK, &LinkMessage::default())
    }

    /// Creates a link; one of the same name is `EEXIST`.
    pub fn create_link(&self, link: &LinkMessage) -> io::Result<()> {
        self.ack(NEW_LINK, NLM_F_CREATE | NLM_F_EXCL, link)
    }

    /// Changes attributes of an existing link that only `RTM_NEWLINK` carries (bridge-port
    /// data).
    pub fn modify_link(&self, link: &LinkMessage) -> io::Result<()> {
        self.ack(NEW_LINK, 0, link)
    }

    /// Changes an existing link (controller, address, flags).
    pub fn set_link(&self, link: &LinkMessage) -> io::Result<()> {
        self.ack(SET_LINK, 0, link)
    }

    /// Sets or clears one `IFF_*` flag, leaving the others as they are.
    pub fn set_link_flag(&self, index: u32, flag: LinkFlags, on: bool) -> io::Result<()> {
        let mut m = with_index(index);
        m.header.flags.set(flag, on);
        m.header.change_mask = flag;
        self.set_link(&m)
    }

    /// Deletes a link; one that is gone already is no error.
    pub fn delete_link(&self, index: u32) -> io::Result<()> {
        match self.ack(DEL_LINK, 0, &with_index(index)) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(()),
            other => other,
        }
    }

    /// Adds VLAN `vid` to a bridge port.
    pub fn add_port_vlan(&self, port: u32, vid: u16, flags: BridgeVlanInfoFlags) -> io::Result<()> {
        self.ack(
            SET_LINK,
            NLM_F_CREATE | NLM_F_EXCL,
            &vlan_message(port, vid, flags),
        )
    }

    /// Removes VLAN `vid` from a bridge port.
    pub fn delete_port_vlan(&self, port: u32, vid: u16) -> io::Result<()> {
        self.ack(
            DEL_LINK,
            0,
            &vlan_message(port, vid, BridgeVlanInfoFlags::empty()),
        )
    }
}

/// The link's name.
pub fn name(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// The link's hardware address (empty when it has none).
pub fn mac(msg: &LinkMessage) -> Vec<u8> {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The index of the bridge the link is a port of.
pub fn controller(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

/// The link's MTU.
pub fn mtu(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
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

/// The link's kind (bridge, veth, vxlan...).
pub fn kind(msg: &LinkMessage) -> Option<&InfoKind> {
    infos(msg).find_map(|i| match i {
        LinkInfo::Kind(k) => Some(k),
        _ => None,
    })
}

/// A VXLAN device's attributes (empty for other kinds).
pub fn vxlan_info(msg: &LinkMessage) -> &[InfoVxlan] {
    infos(msg)
        .find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.as_slice()),
            _ => None,
        })
        .unwrap_or_default()
}

/// A bridge port's STP state.
pub fn port_state(msg: &LinkMessage) -> Option<BridgePortState> {
    infos(msg).find_map(|i| match i {
        LinkInfo::PortData(InfoPortData::BridgePort(port)) => port.iter().find_map(|p| match p {
            InfoBridgePort::State(s) => Some(*s),
            _ => None,
        }),
        _ => None,
    })
}

/// Whether the link is administratively up.
pub fn is_up(msg: &LinkMessage) -> bool {
    msg.header.flags.contains(LinkFlags::Up)
}

/// Whether the link is in promiscuous mode.
pub fn is_promisc(msg: &LinkMessage) -> bool {
    msg.header.flags.contains(LinkFlags::Promisc)
}
