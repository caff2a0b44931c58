//! DEL and GC: best-effort cleanup that needs neither the netns nor prevResult.

use cni_common::{Command, Invocation};
use cni_nft::{Tag, Teardown};

use crate::config::BridgeConf;
use crate::error::BridgeError;
use crate::firewall;
use crate::node::{Deps, Ipam, Links, Node};

/// Removes the container interface (if the namespace is still there), our firewall chains
/// (found by name, so also after a partial ADD or without the netns, unlike Go #810) and the
/// IPAM lease. Repeating it is harmless.
///
/// The interface goes in a thread of its own while the firewall and IPAM steps run: deleting
/// a veth waits out an RCU grace period in the kernel (most of a DEL), and the other two steps
/// do not depend on it. All three are attempted; every failure is reported (in that order,
/// the code being the first's).
pub fn del<N: Node, I: Ipam>(deps: &Deps<'_, N, I>, inv: &Invocation) -> Result<(), BridgeError> {
    let conf = BridgeConf::load_for_del(&inv.config, &inv.env.args);
    let node = deps.node;
    std::thread::scope(|s| {
        let interface = s.spawn(|| del_interface(node, inv));
        let firewall = if conf.ip_masq || conf.mac_spoof_check {
            let tag = Tag::of(&conf.network, inv);
            let batch = firewall::del_batch(&tag, conf.ip_masq, conf.mac_spoof_check);
            match deps.firewall.teardown(&batch) {
                Ok(Teardown::Done) => Ok(()),
                Ok(Teardown::NoNftables(detail)) => {
                    eprintln!("bridge: {detail}: no firewall rules to remove");
                    Ok(())
                }
                Err(e) => Err(BridgeError::from(e)),
            }
        } else {
            Ok(())
        };
        let ipam = match &conf.ipam_type {
            Some(ipam) => deps
                .ipam
                .exec(ipam, Command::Del, inv)
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
        BridgeError::all([interface, firewall, ipam])
    })
}

fn del_interface<N: Node>(node: &N, inv: &Invocation) -> Result<(), BridgeError> {
    let Some(path) = inv.netns() else {
        return Ok(());
    };
    match node.open(path) {
        Ok(ns) => {
            let cont = node.links_in(&ns)?;
            if let Some(l) = cont.by_name(inv.ifname())? {
                // Deleting one end of the veth removes the host end with it.
                cont.del_link(l.index)?;
            }
            Ok(())
        }
        Err(e) if e.is_gone() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes our firewall chains of this network whose attachment is not in
/// `cni.dev/valid-attachments`, then forwards GC to IPAM.
pub fn gc<N: Node, I: Ipam>(deps: &Deps<'_, N, I>, inv: &Invocation) -> Result<(), BridgeError> {
    let conf = BridgeConf::load(&inv.config, &inv.env.args)?;
    let valid = inv.config.valid_attachments()?.unwrap_or_default();
    let listed = firewall::list(deps.firewall)?;
    let mut stale: Vec<_> = cni_nft::stale_attachments(&listed, &conf.network, &valid)
        .into_iter()
        .flat_map(|a| a.chains)
        .collect();
    // By chain name (inet before bridge for the same name), as GC always deleted them.
    stale.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    if !stale.is_empty() {
        firewall::delete_chains(deps.firewall, &stale)?;
    }
    if let Some(ipam) = &conf.ipam_type {
        deps.ipam.exec(ipam, Command::Gc, inv)?;
    }
    Ok(())
}
