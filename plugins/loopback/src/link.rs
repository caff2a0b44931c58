//! `lo` through rtnetlink, with a socket opened inside the container's namespace.

use std::path::Path;

use cni_common::CniError;
use cni_common::netlink::packet::address::{AddressAttribute, AddressMessage};
use cni_common::netlink::packet::link::{LinkAttribute, LinkFlags, LinkMessage};
use cni_common::netlink::{Context, Netlink, NetlinkError, kind};
use cni_common::netns::Netns;
use ipnetwork::IpNetwork;

use crate::LinkOpener;

/// What the plugin needs of the loopback device.
pub trait LoLink {
    fn set_up(&mut self, up: bool) -> Result<(), CniError>;
    fn is_up(&mut self) -> Result<bool, CniError>;
    /// Every address on `lo`, IPv4 first as the kernel lists them.
    fn addresses(&mut self) -> Result<Vec<IpNetwork>, CniError>;
}

#[derive(Debug)]
pub struct NetlinkOpener;

impl LinkOpener for NetlinkOpener {
    type Link = NetlinkLo;

    fn open(&self, netns: &Path) -> Result<Option<NetlinkLo>, CniError> {
        let ns = match Netns::open(netns) {
            Ok(ns) => ns,
            Err(e) if e.is_gone() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let nl = Netlink::in_netns(&ns)?;
        let index = lo_message(&nl)?.header.index;
        Ok(Some(NetlinkLo { nl, index }))
    }
}

#[derive(Debug)]
pub struct NetlinkLo {
    nl: Netlink,
    index: u32,
}

fn lo_message(nl: &Netlink) -> Result<LinkMessage, NetlinkError> {
    let mut query = LinkMessage::default();
    query.attributes.push(LinkAttribute::IfName("lo".into()));
    nl.get(kind::GET_LINK, kind::NEW_LINK, &query)
        .context("failed to look up lo")?
        .ok_or_else(|| NetlinkError::Socket(std::io::Error::other("no lo device")))
}

impl LoLink for NetlinkLo {
    fn set_up(&mut self, up: bool) -> Result<(), CniError> {
        let mut msg = LinkMessage::default();
        msg.header.index = self.index;
        msg.header.flags.set(LinkFlags::Up, up);
        msg.header.change_mask = LinkFlags::Up;
        let what = if up {
            "failed to set lo up"
        } else {
            "failed to set lo down"
        };
        self.nl.ack(kind::SET_LINK, 0, &msg).context(what)?;
        Ok(())
    }

    fn is_up(&mut self) -> Result<bool, CniError> {
        let msg = lo_message(&self.nl)?;
        Ok(msg.header.flags.contains(LinkFlags::Up))
    }

    fn addresses(&mut self) -> Result<Vec<IpNetwork>, CniError> {
        let mut query = AddressMessage::default();
        query.header.index = self.index;
        let messages: Vec<AddressMessage> = self
            .nl
            .dump(kind::GET_ADDR, kind::NEW_ADDR, &query)
            .context("failed to list addresses of lo")?;
        Ok(messages
            .iter()
            .filter(|m| m.header.index == self.index)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => IpNetwork::new(*ip, m.header.prefix_len).ok(),
                    _ => None,
                })
            })
            .collect())
    }
}
