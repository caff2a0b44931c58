//! Addresses: listing a link's, adding, deleting.

use std::io;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::AddressAttribute;
pub use netlink_packet_route::address::{AddressFlags, AddressMessage};

use crate::kinds::{DEL_ADDR, GET_ADDR, NEW_ADDR};
use crate::socket::{Route, Socket};
use crate::transport::Transport;

/// The rtnetlink family of an address.
pub fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// `net` on link `index`; IPv4 with its broadcast address, IPv6 without duplicate address
/// detection unless `dad`.
pub fn address(index: u32, net: IpNetwork, dad: bool) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.index = index;
    m.header.prefix_len = net.prefix();
    m.header.family = family(net.ip());
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
    m
}

/// The address's flags (tentative, DAD failed...).
pub fn flags(m: &AddressMessage) -> Option<AddressFlags> {
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Flags(f) => Some(*f),
        _ => None,
    })
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

impl<T: Transport> Socket<Route, T> {
    /// The addresses on link `index`, with the messages to delete them by.
    pub fn addresses(&self, index: u32) -> io::Result<Vec<(IpNetwork, AddressMessage)>> {
        let mut query = AddressMessage::default();
        query.header.index = index;
        let msgs: Vec<AddressMessage> = self.dump(GET_ADDR, NEW_ADDR, &query)?;
        // Without strict checking the kernel dumps every link's addresses.
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| address_of(&m).map(|a| (a, m)))
            .collect())
    }

    /// Adds an address ([`address`] builds one); the same one again is `EEXIST`.
    pub fn add_address(&self, address: &AddressMessage) -> io::Result<()> {
        self.ack(NEW_ADDR, NLM_F_CREATE | NLM_F_EXCL, address)
    }

    /// Deletes an address, as listed by [`Socket::addresses`].
    pub fn delete_address(&self, address: &AddressMessage) -> io::Result<()> {
        self.ack(DEL_ADDR, 0, address)
    }
}
