//! `lo` through rtnetlink, with a socket opened inside the container's namespace.

use std::path::Path;

use cni_common::CniError;
use cni_common::netlink::{Context, Netlink, NetlinkError};
use cni_common::netns::Netns;
use futures_util::TryStreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::LinkUnspec;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkFlags, LinkMessage};

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
        let index = nl.block_on(lo_message(&nl))?.header.index;
        Ok(Some(NetlinkLo { nl, index }))
    }
}

#[derive(Debug)]
pub struct NetlinkLo {
    nl: Netlink,
    index: u32,
}

async fn lo_message(nl: &Netlink) -> Result<LinkMessage, NetlinkError> {
    nl.handle()
        .link()
        .get()
        .match_name("lo")
        .execute()
        .try_next()
        .await
        .context("failed to look up lo")?
        .ok_or_else(|| NetlinkError::Socket(std::io::Error::other("no lo device")))
}

impl LoLink for NetlinkLo {
    fn set_up(&mut self, up: bool) -> Result<(), CniError> {
        let builder = LinkUnspec::new_with_index(self.index);
        let msg = if up { builder.up() } else { builder.down() }.build();
        let what = if up {
            "failed to set lo up"
        } else {
            "failed to set lo down"
        };
        self.nl
            .block_on(self.nl.handle().link().set(msg).execute())
            .context(what)?;
        Ok(())
    }

    fn is_up(&mut self) -> Result<bool, CniError> {
        let msg = self.nl.block_on(lo_message(&self.nl))?;
        Ok(msg.header.flags.contains(LinkFlags::Up))
    }

    fn addresses(&mut self) -> Result<Vec<IpNetwork>, CniError> {
        let nl = &self.nl;
        let messages: Vec<_> = nl
            .block_on(
                nl.handle()
                    .address()
                    .get()
                    .set_link_index_filter(self.index)
                    .execute()
                    .try_collect(),
            )
            .context("failed to list addresses of lo")?;
        Ok(messages
            .iter()
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => IpNetwork::new(*ip, m.header.prefix_len).ok(),
                    _ => None,
                })
            })
            .collect())
    }
}
