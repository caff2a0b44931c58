//! Routes: the kernel's choice for one destination, the table's routes, adding and deleting.

use std::io;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{RouteAddress, RouteHeader, RouteProtocol, RouteType};
pub use netlink_packet_route::route::{RouteAttribute, RouteFlags, RouteMessage, RouteScope};

use crate::addr::family;
use crate::kinds::{DEL_ROUTE, GET_ROUTE, NEW_ROUTE};
use crate::socket::{Route, Socket};
use crate::transport::Transport;

/// A static unicast route of the main table to `dst/prefix`; callers add the output link
/// and gateway.
pub fn main_table(dst: IpAddr, prefix: u8) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Static;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.header.address_family = family(dst);
    m.header.destination_prefix_length = prefix;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    m
}

/// A blackhole route of the main table to `dst/prefix` (`ip route add blackhole`): the
/// kernel drops what matches nothing more specific.
pub fn blackhole(dst: IpAddr, prefix: u8) -> RouteMessage {
    let mut m = main_table(dst, prefix);
    m.header.kind = RouteType::BlackHole;
    m
}

/// Whether the route is a blackhole route.
pub fn is_blackhole(m: &RouteMessage) -> bool {
    m.header.kind == RouteType::BlackHole
}

/// Marks the route as made by the routing protocol numbered `protocol` (`proto N` in
/// `ip route`), so its owner can tell its routes from everyone else's.
pub fn with_protocol(mut route: RouteMessage, protocol: u8) -> RouteMessage {
    route.header.protocol = RouteProtocol::from(protocol);
    route
}

/// The route's protocol number.
pub fn protocol(m: &RouteMessage) -> u8 {
    u8::from(m.header.protocol)
}

/// Sends the route out of link `index`.
pub fn via_link(mut route: RouteMessage, index: u32) -> RouteMessage {
    route.attributes.push(RouteAttribute::Oif(index));
    route
}

/// Sets the route's gateway.
pub fn via_gateway(mut route: RouteMessage, gateway: IpAddr) -> RouteMessage {
    route
        .attributes
        .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
    route
}

/// Marks the gateway as on the link even without a route to it (`onlink`), as an overlay's
/// per-peer route through its device needs.
pub fn onlink(mut route: RouteMessage) -> RouteMessage {
    route.header.flags |= RouteFlags::Onlink;
    route
}

/// Whether the route carries the `onlink` flag.
pub fn is_onlink(m: &RouteMessage) -> bool {
    m.header.flags.contains(RouteFlags::Onlink)
}

/// Whether the route is in the main table.
pub fn in_main_table(m: &RouteMessage) -> bool {
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table));
    table == u32::from(RouteHeader::RT_TABLE_MAIN)
}

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

/// The route's destination (the default route's is `0.0.0.0/0` or `::/0`).
pub fn destination(m: &RouteMessage) -> Option<IpNetwork> {
    let dst = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(d) => ip(d),
            _ => None,
        })
        .or(match m.header.address_family {
            netlink_packet_route::AddressFamily::Inet => {
                Some(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
            }
            netlink_packet_route::AddressFamily::Inet6 => {
                Some(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
            }
            _ => None,
        })?;
    IpNetwork::new(dst, m.header.destination_prefix_length).ok()
}

/// The route's gateway.
pub fn gateway(m: &RouteMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => ip(g),
        _ => None,
    })
}

/// The route's preferred source address (`src` in `ip route get`).
pub fn preferred_source(m: &RouteMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::PrefSource(g) => ip(g),
        _ => None,
    })
}

/// The route's output link.
pub fn output_link(m: &RouteMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

impl<T: Transport> Socket<Route, T> {
    /// The route the kernel would take to `dst` (`ip route get`).
    pub fn route_to(&self, dst: IpAddr) -> io::Result<Option<RouteMessage>> {
        let mut query = RouteMessage::default();
        query.header.address_family = family(dst);
        query.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        query
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        self.get(GET_ROUTE, NEW_ROUTE, &query)
    }

    /// Every route of one family (`v4` or IPv6), in every table.
    pub fn routes(&self, v4: bool) -> io::Result<Vec<RouteMessage>> {
        let mut query = RouteMessage::default();
        query.header.address_family = if v4 {
            netlink_packet_route::AddressFamily::Inet
        } else {
            netlink_packet_route::AddressFamily::Inet6
        };
        self.dump(GET_ROUTE, NEW_ROUTE, &query)
    }

    /// Adds a route; the same one again is `EEXIST`.
    pub fn add_route(&self, route: &RouteMessage) -> io::Result<()> {
        self.ack(NEW_ROUTE, NLM_F_CREATE | NLM_F_EXCL, route)
    }

    /// Adds a route or replaces the one to the same destination.
    pub fn replace_route(&self, route: &RouteMessage) -> io::Result<()> {
        self.ack(NEW_ROUTE, NLM_F_CREATE | NLM_F_REPLACE, route)
    }

    /// Deletes a route; one that is gone already is no error.
    pub fn delete_route(&self, route: &RouteMessage) -> io::Result<()> {
        match self.ack(DEL_ROUTE, 0, route) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => Ok(()),
            other => other,
        }
    }
}
