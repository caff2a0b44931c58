//! The `loopback` plugin: `lo` up on ADD (reported with its addresses), down on DEL, and
//! CHECK that it is up. `CNI_IFNAME` is ignored: the loopback device is always `lo`.

mod link;

use std::path::Path;

use cni_common::error::code;
use cni_common::result::{Interface, IpConfig};
use cni_common::{CniError, CniResult, Invocation, Plugin};
use ipnetwork::IpNetwork;

pub use link::{LoLink, NetlinkLo};

#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("loopback interface found with non-loopback address \"{0}\"")]
    NonLoopbackAddress(std::net::IpAddr),
    #[error("loopback interface is down")]
    Down,
}

impl From<LoopbackError> for CniError {
    fn from(e: LoopbackError) -> Self {
        let code = match e {
            LoopbackError::NonLoopbackAddress(_) => code::CONFLICT,
            LoopbackError::Down => code::CHECK_FAILED,
        };
        CniError::plugin(code, e.to_string(), "")
    }
}

/// Opens the `lo` of a namespace; a seam so the plugin's logic is tested without a kernel.
pub trait LinkOpener {
    type Link: LoLink;
    /// `Ok(None)` when the namespace no longer exists.
    fn open(&self, netns: &Path) -> Result<Option<Self::Link>, CniError>;
}

#[derive(Debug)]
pub struct Loopback<O> {
    opener: O,
}

impl Loopback<link::NetlinkOpener> {
    pub fn netlink() -> Self {
        Loopback {
            opener: link::NetlinkOpener,
        }
    }
}

impl<O: LinkOpener> Loopback<O> {
    pub fn with_opener(opener: O) -> Self {
        Loopback { opener }
    }

    fn open_required(&self, netns: &Path) -> Result<O::Link, CniError> {
        self.opener.open(netns)?.ok_or_else(|| {
            CniError::plugin(
                code::NAMESPACE,
                format!("network namespace {} does not exist", netns.display()),
                "",
            )
        })
    }
}

impl<O: LinkOpener> Plugin for Loopback<O> {
    fn name(&self) -> &'static str {
        "loopback"
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError> {
        // A broken prevResult is reported before anything is changed.
        let prev = inv.config.prev_result()?;
        let netns = inv.required_netns()?;
        let mut lo = self.open_required(netns)?;
        lo.set_up(true)?;
        let addresses = lo.addresses()?;
        if let Some(bad) = addresses.iter().find(|a| !a.ip().is_loopback()) {
            return Err(LoopbackError::NonLoopbackAddress(bad.ip()).into());
        }
        if let Some(prev) = prev {
            return Ok(prev);
        }
        let first = |v4: bool| addresses.iter().find(|a| a.is_ipv4() == v4).copied();
        Ok(CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                mac: "00:00:00:00:00:00".into(),
                sandbox: netns.display().to_string(),
                ..Interface::default()
            }],
            ips: [first(true), first(false)]
                .into_iter()
                .flatten()
                .map(|address: IpNetwork| IpConfig {
                    address,
                    gateway: None,
                    interface: Some(0),
                })
                .collect(),
            ..CniResult::default()
        })
    }

    fn del(&self, inv: &Invocation) -> Result<(), CniError> {
        // DEL is best-effort: no namespace, or one already gone, leaves nothing to undo.
        let Some(netns) = inv.netns() else {
            return Ok(());
        };
        match self.opener.open(netns)? {
            Some(mut lo) => lo.set_up(false),
            None => Ok(()),
        }
    }

    fn check(&self, inv: &Invocation) -> Result<(), CniError> {
        let mut lo = self.open_required(inv.required_netns()?)?;
        if lo.is_up()? {
            Ok(())
        } else {
            Err(LoopbackError::Down.into())
        }
    }
}

#[cfg(test)]
mod tests;
