//! `lo` through rtnetlink, with a socket opened inside the container's namespace.

use std::path::Path;

use cni_common::CniError;
use cni_common::netlink::packet::link::{LinkFlags, LinkMessage};
use cni_common::netlink::{self, Context, Netlink, NetlinkError};
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
    netlink::link_by_name(nl, "lo")
        .context("failed to look up lo")?
        .ok_or_else(|| NetlinkError::Socket(std::io::Error::other("no lo device")))
}

impl LoLink for NetlinkLo {
    fn set_up(&mut self, up: bool) -> Result<(), CniError> {
        let what = if up {
            "failed to set lo up"
        } else {
            "failed to set lo down"
        };
        netlink::set_link_flag(&self.nl, self.index, LinkFlags::Up, up).context(what)?;
        Ok(())
    }

    fn is_up(&mut self) -> Result<bool, CniError> {
        let msg = lo_message(&self.nl)?;
        Ok(msg.header.flags.contains(LinkFlags::Up))
    }

    fn addresses(&mut self) -> Result<Vec<IpNetwork>, CniError> {
        let listed =
            netlink::addresses(&self.nl, self.index).context("failed to list addresses of lo")?;
        Ok(listed.into_iter().map(|(address, _)| address).collect())
    }
}
