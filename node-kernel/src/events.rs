//! Link notifications: a socket bound to the kernel's `RTNLGRP_LINK` multicast group (and,
//! on request, the neighbour and route groups), read with blocking calls (a caller that is
//! async runs it on a thread of its own and forwards what it reads).
//!
//! Every link message is a whole link: `RTM_NEWLINK` when one is created or changed (flags,
//! MTU, carrier, name), `RTM_DELLINK` when one is deleted. Neighbour (also FDB: `AF_BRIDGE`)
//! and route messages are reduced to the link they concern: enough to tell whether what a
//! caller programmed on its links may have changed. The socket lives in the namespace of
//! the thread that subscribed.

use std::io;
use std::sync::Arc;

use netlink_packet_core::Parseable;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_sys::{Socket as NlSocket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::KernelError;
use crate::kinds::{DEL_LINK, DEL_NEIGH, DEL_ROUTE, NEW_LINK, NEW_NEIGH, NEW_ROUTE};
use crate::link;
use crate::socket::{Route, Socket, decode, messages};

/// `RTMGRP_LINK`: the bit of group `RTNLGRP_LINK` (1) in a bind address.
const RTMGRP_LINK: u32 = 1;
/// The groups of neighbour (bridge/vxlan FDB entries too) and route notifications:
/// `RTNLGRP_NEIGH`, `RTNLGRP_IPV4_ROUTE`, `RTNLGRP_IPV6_ROUTE`.
const ENTRY_GROUPS: [u32; 3] = [3, 7, 11];

/// Which table an [`LinkChange::Entry`] notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A neighbour or an FDB entry.
    Neighbour,
    /// A route.
    Route,
}

/// One link notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    /// A link was created or changed.
    Changed {
        /// Its index.
        index: u32,
        /// Its name.
        name: Option<String>,
    },
    /// A link was deleted.
    Deleted {
        /// Its index (gone now).
        index: u32,
        /// Its name.
        name: Option<String>,
    },
    /// A neighbour, FDB entry or route of link `index` was added, changed or deleted (a
    /// route without an output link has index 0).
    Entry {
        /// What kind of entry.
        kind: EntryKind,
        /// Its link.
        index: u32,
        /// A route's destination (a route moved to another link names that link only).
        dst: Option<ipnetwork::IpNetwork>,
    },
    /// Notifications were lost (the socket's buffer overflowed): anything may have changed.
    Lost,
}

impl LinkChange {
    /// The link's name, when the notification carries one.
    pub fn name(&self) -> Option<&str> {
        match self {
            LinkChange::Changed { name, .. } | LinkChange::Deleted { name, .. } => name.as_deref(),
            LinkChange::Entry { .. } | LinkChange::Lost => None,
        }
    }
}

/// A subscription to link notifications (see the module).
#[derive(Debug)]
pub struct LinkEvents {
    socket: Arc<NlSocket>,
    /// One datagram's room, kept: a burst brings thousands of datagrams (a vxlan device's
    /// entries at start), and a fresh zeroed 64 KiB each was most of their cost.
    buf: Vec<u8>,
}

impl Socket<Route> {
    /// Subscribes to the link notifications of the calling thread's namespace (neighbour
    /// and route ones join later, through [`LinkEvents::entry_joiner`]).
    pub fn subscribe_links() -> Result<LinkEvents, KernelError> {
        let open = || -> io::Result<LinkEvents> {
            let mut socket = NlSocket::new(NETLINK_ROUTE)?;
            socket.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
            Ok(LinkEvents {
                socket: Arc::new(socket),
                buf: vec![0u8; 64 * 1024],
            })
        };
        open().map_err(KernelError::Socket)
    }
}

/// Adds the neighbour (FDB included) and route notifications to a [`LinkEvents`]
/// subscription, from another thread than the one reading it: a caller that programs
/// thousands of entries at start joins after that, instead of being notified of each.
#[derive(Debug, Clone)]
pub struct EntryJoiner(Arc<NlSocket>);

impl EntryJoiner {
    /// Joins the neighbour and route groups.
    pub fn join(&self) -> io::Result<()> {
        ENTRY_GROUPS
            .iter()
            .try_for_each(|g| self.0.add_membership(*g))
    }
}

impl LinkEvents {
    /// What joins the neighbour and route notifications to this subscription later.
    pub fn entry_joiner(&self) -> EntryJoiner {
        EntryJoiner(Arc::clone(&self.socket))
    }

    /// Blocks until the kernel sends notifications; returns those of one datagram. A
    /// buffer overflow (`ENOBUFS`) is [`LinkChange::Lost`], not an error.
    pub fn read(&mut self) -> io::Result<Vec<LinkChange>> {
        loop {
            let mut space = &mut self.buf[..];
            let n = match self.socket.recv(&mut space, nix::libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    return Ok(vec![LinkChange::Lost]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // A datagram that did not fit: its notifications are lost.
            let Some(datagram) = self.buf.get(..n) else {
                return Ok(vec![LinkChange::Lost]);
            };
            return parse(datagram);
        }
    }
}

/// The link notifications of one datagram (other message types skipped).
pub(crate) fn parse(datagram: &[u8]) -> io::Result<Vec<LinkChange>> {
    let mut out = Vec::new();
    for msg in messages(datagram) {
        let msg = msg.map_err(decode)?;
        let kind = msg.message_type();
        // An entry message this crate cannot read is a notice lost, not the end of all
        // notices (the link ones included).
        if kind == NEW_NEIGH || kind == DEL_NEIGH {
            out.push(match NeighbourMessage::parse(msg.payload()) {
                Ok(n) => LinkChange::Entry {
                    kind: EntryKind::Neighbour,
                    index: n.header.ifindex,
                    dst: None,
                },
                Err(_) => LinkChange::Lost,
            });
            continue;
        }
        if kind == NEW_ROUTE || kind == DEL_ROUTE {
            out.push(match RouteMessage::parse(msg.payload()) {
                Ok(r) => LinkChange::Entry {
                    kind: EntryKind::Route,
                    index: crate::route::output_link(&r).unwrap_or(0),
                    dst: crate::route::destination(&r),
                },
                Err(_) => LinkChange::Lost,
            });
            continue;
        }
        if kind != NEW_LINK && kind != DEL_LINK {
            continue;
        }
        let link = LinkMessage::parse(msg.payload()).map_err(decode)?;
        let index = link.header.index;
        let name = link::name(&link).map(str::to_owned);
        out.push(if kind == DEL_LINK {
            LinkChange::Deleted { index, name }
        } else {
            LinkChange::Changed { index, name }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Emitable;
    use netlink_packet_route::link::LinkAttribute;

    use super::*;
    use crate::fake::message;

    fn link_body(index: u32, name: &str) -> Vec<u8> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        let mut v = vec![0; m.buffer_len()];
        m.emit(&mut v);
        v
    }

    #[test]
    fn new_and_del_link_messages_become_changes_and_others_are_skipped() {
        let mut d = message(NEW_LINK, 0, 0, &link_body(7, "flannel.100"));
        d.extend(message(crate::kinds::NEW_ADDR, 0, 0, b"ignored!"));
        d.extend(message(DEL_LINK, 0, 0, &link_body(7, "flannel.100")));
        let got = parse(&d).unwrap();
        assert_eq!(
            got,
            [
                LinkChange::Changed {
                    index: 7,
                    name: Some("flannel.100".into())
                },
                LinkChange::Deleted {
                    index: 7,
                    name: Some("flannel.100".into())
                },
            ]
        );
        assert_eq!(got[1].name(), Some("flannel.100"));
    }

    #[test]
    fn neighbour_and_route_messages_name_their_link() {
        use netlink_packet_route::route::RouteAttribute;
        let mut n = NeighbourMessage::default();
        n.header.ifindex = 9;
        let mut nb = vec![0; n.buffer_len()];
        n.emit(&mut nb);
        let mut r = RouteMessage::default();
        r.header.address_family = netlink_packet_route::AddressFamily::Inet;
        r.header.destination_prefix_length = 24;
        r.attributes.push(RouteAttribute::Destination(
            netlink_packet_route::route::RouteAddress::Inet([10, 5, 2, 0].into()),
        ));
        r.attributes.push(RouteAttribute::Oif(11));
        let mut rb = vec![0; r.buffer_len()];
        r.emit(&mut rb);
        let bare = RouteMessage::default();
        let mut bb = vec![0; bare.buffer_len()];
        bare.emit(&mut bb);
        let mut d = message(DEL_NEIGH, 0, 0, &nb);
        d.extend(message(NEW_ROUTE, 0, 0, &rb));
        d.extend(message(DEL_ROUTE, 0, 0, &bb));
        d.extend(message(NEW_NEIGH, 0, 0, &[0xff; 3]));
        let entry = |kind, index, dst: Option<&str>| LinkChange::Entry {
            kind,
            index,
            dst: dst.map(|d| d.parse().unwrap()),
        };
        assert_eq!(
            parse(&d).unwrap(),
            [
                entry(EntryKind::Neighbour, 9, None),
                entry(EntryKind::Route, 11, Some("10.5.2.0/24")),
                entry(EntryKind::Route, 0, None),
                LinkChange::Lost,
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(&[0xff; 40]).is_err());
    }
}
