//! Conntrack entries through ctnetlink: deleting the UDP entries of given destination ports
//! (dump, then delete the matches), so that datagrams stop following a mapping to an address
//! that no longer serves it.

use std::io;

use netlink_packet_core::{DecodeError, Parseable, ParseableParametrized};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, ProtoTuple, Protocol, Tuple,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use crate::kinds::{NFNL_SUBSYS_CTNETLINK, nfnl};
use crate::socket::{Netfilter, Socket};
use crate::transport::Transport;

// include/uapi/linux/netfilter/nfnetlink_conntrack.h
const IPCTNL_MSG_CT_NEW: u8 = 0;
const IPCTNL_MSG_CT_GET: u8 = 1;
const IPCTNL_MSG_CT_DELETE: u8 = 2;

fn ct_kind(msg: u8) -> u16 {
    nfnl(NFNL_SUBSYS_CTNETLINK, u16::from(msg))
}

fn request(family: NetfilterProtoFamily, msg: ConntrackMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), msg)
}

/// The attributes of one conntrack entry of a dump.
struct Entry(Vec<ConntrackAttribute>);

impl Parseable<[u8]> for Entry {
    fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        // The nfgenmsg header comes first.
        let attrs = buf.get(4..).unwrap_or_default();
        match ConntrackMessage::parse_with_param(attrs, IPCTNL_MSG_CT_NEW)? {
            ConntrackMessage::New(a) => Ok(Entry(a)),
            _ => Ok(Entry(Vec::new())),
        }
    }
}

/// The original tuple when it is UDP to one of `ports`.
fn udp_to(attrs: &[ConntrackAttribute], ports: &[u16]) -> Option<Vec<Tuple>> {
    attrs.iter().find_map(|a| match a {
        ConntrackAttribute::CtaTupleOrig(tuple) => {
            let proto = tuple.iter().find_map(|t| match t {
                Tuple::Proto(p) => Some(p),
                _ => None,
            })?;
            let udp = proto.contains(&ProtoTuple::Protocol(Protocol::Udp));
            let port = proto.iter().find_map(|p| match p {
                ProtoTuple::DestinationPort(port) => Some(*port),
                _ => None,
            })?;
            (udp && ports.contains(&port)).then(|| tuple.clone())
        }
        _ => None,
    })
}

impl<T: Transport> Socket<Netfilter, T> {
    /// Deletes the UDP conntrack entries whose original destination port is one of `ports`.
    /// Returns how many were deleted.
    pub fn flush_udp_conntrack(&self, ports: &[u16]) -> io::Result<usize> {
        if ports.is_empty() {
            return Ok(0);
        }
        let nl = self;
        let mut deleted = 0;
        for family in [NetfilterProtoFamily::IPv4, NetfilterProtoFamily::IPv6] {
            let get = request(family, ConntrackMessage::Get(Vec::new()));
            let entries: Vec<Entry> =
                nl.dump(ct_kind(IPCTNL_MSG_CT_GET), ct_kind(IPCTNL_MSG_CT_NEW), &get)?;
            for Entry(entry) in entries {
                let Some(tuple) = udp_to(&entry, ports) else {
                    continue;
                };
                let delete =
                    ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple)]);
                match nl.ack(ct_kind(IPCTNL_MSG_CT_DELETE), 0, &request(family, delete)) {
                    // Gone meanwhile (it timed out): nothing to do.
                    Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {}
                    Err(e) => return Err(e),
                    Ok(()) => deleted += 1,
                }
            }
        }
        Ok(deleted)
    }
}
