//! Neighbour entries and bridge forwarding-database (FDB) entries: what an overlay's node
//! agent programs per peer (`<peer>.0 → VtepMAC`, `VtepMAC → PublicIP`).

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
pub use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourMessage, NeighbourState};

use crate::addr::family;
use crate::kinds::{DEL_NEIGH, GET_NEIGH, NEW_NEIGH};
use crate::socket::{Route, Socket};
use crate::transport::Transport;

/// A permanent neighbour entry on link `index`: `ip` is at `mac`.
pub fn permanent(index: u32, ip: IpAddr, mac: [u8; 6]) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family(ip);
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(ip)));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m
}

/// A permanent FDB entry on (vxlan) link `index`: frames for `mac` go to `remote`.
pub fn fdb(index: u32, mac: [u8; 6], remote: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(
            remote,
        )));
    m
}

/// The entry's IP address (a neighbour's) or remote (an FDB entry's: the message family is
/// `AF_BRIDGE` there, so the address is told by its length).
pub fn destination(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => Some(IpAddr::V4(*v)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => Some(IpAddr::V6(*v)),
        NeighbourAttribute::Destination(NeighbourAddress::Other(v)) => {
            if let Ok(b) = <[u8; 4]>::try_from(v.as_slice()) {
                Some(IpAddr::from(b))
            } else {
                <[u8; 16]>::try_from(v.as_slice()).ok().map(IpAddr::from)
            }
        }
        _ => None,
    })
}

/// The entry's hardware address.
pub fn mac(m: &NeighbourMessage) -> Option<&[u8]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(v) => Some(v.as_slice()),
        _ => None,
    })
}

impl<T: Transport> Socket<Route, T> {
    /// Adds a neighbour or FDB entry, or replaces the one for the same address.
    pub fn replace_neighbour(&self, entry: &NeighbourMessage) -> io::Result<()> {
        self.ack(NEW_NEIGH, NLM_F_CREATE | NLM_F_REPLACE, entry)
    }

    /// Deletes a neighbour or FDB entry; one that is gone already is no error.
    pub fn delete_neighbour(&self, entry: &NeighbourMessage) -> io::Result<()> {
        match self.ack(DEL_NEIGH, 0, entry) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => Ok(()),
            other => other,
        }
    }

    /// The neighbour entries of one family (`AddressFamily::Bridge`: the FDB) on link
    /// `index`.
    pub fn neighbours(
        &self,
        family: AddressFamily,
        index: u32,
    ) -> io::Result<Vec<NeighbourMessage>> {
        let mut query = NeighbourMessage::default();
        query.header.family = family;
        let all: Vec<NeighbourMessage> = self.dump(GET_NEIGH, NEW_NEIGH, &query)?;
        Ok(all
            .into_iter()
            .filter(|m| m.header.ifindex == index)
            .collect())
    }
}
