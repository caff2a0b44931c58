//! DEL, GC and STATUS: best-effort cleanup that needs neither the netns nor prevResult.

use std::collections::HashSet;

use cni_common::{Command, Invocation, delegate};
use node_kernel::{Netns, RouteSocket as Netlink};

use crate::add::tag;
use crate::config::BridgeConf;
use crate::error::BridgeError;
use crate::firewall;
use crate::link;

/// Removes the container interface (if the namespace is still there), our firewall chains
/// (found by name, so also after a partial ADD or without the netns, unlike Go #810) and the
/// IPAM lease. Repeating it is harmless.
///
/// The interface goes in a thread of its own while the firewall and IPAM steps run: deleting
/// a veth waits out an RCU grace period in the kernel (most of a DEL), and the other two steps
/// do not depend on it. All three are attempted; the first error in that order is reported.
pub fn del(inv: &Invocation) -> Result<(), BridgeError> {
    let conf = BridgeConf::load_for_del(&inv.config, &inv.env.args);
    std::thread::scope(|s| {
        let interface = s.spawn(|| del_interface(inv));
        let firewall = if conf.ip_masq || conf.mac_spoof_check {
            let batch = firewall::del_batch(&tag(&conf, inv), conf.ip_masq, conf.mac_spoof_check);
            cni_nft::apply_teardown(&batch, "bridge").map_err(BridgeError::from)
        } else {
            Ok(())
        };
        let ipam = match &conf.ipam_type {
            Some(ipam) => delegate::exec(ipam, Command::Del, &inv.env, inv.config.raw())
                .map(drop)
                .map_err(BridgeError::from),
            None => Ok(()),
        };
        let interface = interface.join().unwrap_or_else(|_| {
            Err(BridgeError::from(cni_common::CniError::plugin(
                cni_common::error::code::NETLINK,
                "interface removal failed",
                "",
            )))
        });
        interface.and(firewall).and(ipam)
    })
}

fn del_interface(inv: &Invocation) -> Result<(), BridgeError> {
    let Some(path) = inv.netns() else {
        return Ok(());
    };
    match Netns::open(path) {
        Ok(ns) => {
            let cont = Netlink::in_netns(&ns)?;
            if let Some(l) = link::by_name(&cont, inv.ifname())? {
                // Deleting one end of the veth removes the host end with it.
                link::del_link(&cont, l.header.index)?;
            }
            Ok(())
        }
        Err(e) if e.is_gone() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes our firewall chains of this network whose attachment is not in
/// `cni.dev/valid-attachments`, then forwards GC to IPAM.
pub fn gc(inv: &Invocation) -> Result<(), BridgeError> {
    let conf = BridgeConf::load(&inv.config, &inv.env.args)?;
    let valid = inv.config.valid_attachments()?.unwrap_or_default();
    let valid: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let mut stale: Vec<_> = firewall::list()?
        .into_iter()
        .filter(|r| {
            cni_nft::parse_comment(&r.comment).is_some_and(|(net, id, ifname)| {
                net == conf.network && !valid.contains(&(id, ifname))
            })
        })
        .map(|r| (r.family, r.chain))
        .collect();
    stale.sort_by(|a, b| a.1.cmp(&b.1));
    stale.dedup();
    if !stale.is_empty() {
        firewall::delete_chains(&stale)?;
    }
    if let Some(ipam) = &conf.ipam_type {
        delegate::exec(ipam, Command::Gc, &inv.env, inv.config.raw())?;
    }
    Ok(())
}

pub fn status(inv: &Invocation) -> Result<(), BridgeError> {
    let conf = BridgeConf::load(&inv.config, &inv.env.args)?;
    if let Some(ipam) = &conf.ipam_type {
        delegate::exec(ipam, Command::Status, &inv.env, inv.config.raw())?;
    }
    Ok(())
}
