//! Link notifications: a socket bound to the kernel's `RTNLGRP_LINK` multicast group, read
//! with blocking calls (a caller that is async runs it on a thread of its own and forwards
//! what it reads).
//!
//! Every message is a whole link: `RTM_NEWLINK` when one is created or changed (flags,
//! MTU, carrier, name), `RTM_DELLINK` when one is deleted. The socket lives in the namespace
//! of the thread that subscribed.

use std::io;

use netlink_packet_core::Parseable;
use netlink_packet_route::link::LinkMessage;
use netlink_sys::{Socket as NlSocket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::KernelError;
use crate::kinds::{DEL_LINK, NEW_LINK};
use crate::link;
use crate::socket::{Route, Socket, decode, messages};

/// `RTMGRP_LINK`: the bit of group `RTNLGRP_LINK` (1) in a bind address.
const RTMGRP_LINK: u32 = 1;

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
    /// Notifications were lost (the socket's buffer overflowed): anything may have changed.
    Lost,
}

impl LinkChange {
    /// The link's name, when the notification carries one.
    pub fn name(&self) -> Option<&str> {
        match self {
            LinkChange::Changed { name, .. } | LinkChange::Deleted { name, .. } => name.as_deref(),
            LinkChange::Lost => None,
        }
    }
}

/// A subscription to link notifications (see the module).
#[derive(Debug)]
pub struct LinkEvents(NlSocket);

impl Socket<Route> {
    /// Subscribes to the link notifications of the calling thread's namespace.
    pub fn subscribe_links() -> Result<LinkEvents, KernelError> {
        let open = || -> io::Result<LinkEvents> {
            let mut socket = NlSocket::new(NETLINK_ROUTE)?;
            socket.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
            Ok(LinkEvents(socket))
        };
        open().map_err(KernelError::Socket)
    }
}

impl LinkEvents {
    /// Blocks until the kernel sends notifications; returns those of one datagram. A
    /// buffer overflow (`ENOBUFS`) is [`LinkChange::Lost`], not an error.
    pub fn next(&self) -> io::Result<Vec<LinkChange>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut space = &mut buf[..];
            let n = match self.0.recv(&mut space, nix::libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    return Ok(vec![LinkChange::Lost]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // A datagram that did not fit: its notifications are lost.
            let Some(datagram) = buf.get(..n) else {
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
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(&[0xff; 40]).is_err());
    }
}
