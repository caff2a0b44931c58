//! The link and address requests more than one plugin makes. They return the kernel's
//! answer as `io::Result`; the caller says what it was doing (`Context`).

use std::io;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

use super::{Netlink, kind};

/// The rtnetlink family of an address.
pub fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// A link message addressing the link with this index.
pub fn link_with_index(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

fn lookup(nl: &Netlink, query: &LinkMessage) -> io::Result<Option<LinkMessage>> {
    match nl.get(kind::GET_LINK, kind::NEW_LINK, query) {
        Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(None),
        other => other,
    }
}

/// The link called `name`, or `None` when there is none.
pub fn link_by_name(nl: &Netlink, name: &str) -> io::Result<Option<LinkMessage>> {
    let mut query = LinkMessage::default();
    query
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    lookup(nl, &query)
}

/// The link with this index, or `None` when there is none.
pub fn link_by_index(nl: &Netlink, index: u32) -> io::Result<Option<LinkMessage>> {
    lookup(nl, &link_with_index(index))
}

/// Sets or clears one `IFF_*` flag, leaving the others as they are.
pub fn set_link_flag(nl: &Netlink, index: u32, flag: LinkFlags, on: bool) -> io::Result<()> {
    let mut m = link_with_index(index);
    m.header.flags.set(flag, on);
    m.header.change_mask = flag;
    nl.ack(kind::SET_LINK, 0, &m)
}

/// The addresses on a link, with the messages to delete them by.
pub fn addresses(nl: &Netlink, index: u32) -> io::Result<Vec<(IpNetwork, AddressMessage)>> {
    let mut query = AddressMessage::default();
    query.header.index = index;
    let msgs: Vec<AddressMessage> = nl.dump(kind::GET_ADDR, kind::NEW_ADDR, &query)?;
    // Without strict checking the kernel dumps every link's addresses.
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.index == index)
        .filter_map(|m| address_of(&m).map(|a| (a, m)))
        .collect())
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
