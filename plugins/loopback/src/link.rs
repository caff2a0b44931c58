//! `lo` through rtnetlink, with a socket opened inside the container's namespace.

use std::path::Path;

use cni_common::CniError;
use ipnetwork::IpNetwork;
use node_kernel::link::{LinkFlags, LinkId, LinkMessage};
use node_kernel::{Context, KernelError, Netns, RouteSocket as Netlink};

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

fn lo_message(nl: &Netlink) -> Result<LinkMessage, KernelError> {
    nl.link(LinkId::Name("lo"))
        .context("failed to look up lo")?
        .ok_or_else(|| KernelError::Request {
            what: "failed to look up lo".into(),
            source: std::io::Error::from_raw_os_error(nix::libc::ENODEV),
        })
}

impl LoLink for NetlinkLo {
    fn set_up(&mut self, up: bool) -> Result<(), CniError> {
        let what = if up {
            "failed to set lo up"
        } else {
            "failed to set lo down"
        };
        self.nl
            .set_link_flag(self.index, LinkFlags::Up, up)
            .context(what)?;
        Ok(())
    }

    fn is_up(&mut self) -> Result<bool, CniError> {
        let msg = lo_message(&self.nl)?;
        Ok(msg.header.flags.contains(LinkFlags::Up))
    }

    fn addresses(&mut self) -> Result<Vec<IpNetwork>, CniError> {
        let listed = self
            .nl
            .addresses(self.index)
            .context("failed to list addresses of lo")?;
        Ok(listed.into_iter().map(|(address, _)| address).collect())
    }
}
