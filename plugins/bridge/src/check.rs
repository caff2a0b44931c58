//! CHECK: the attachment is still as ADD left it, per prevResult.

use cni_common::{CniResult, Command, Invocation};
use cni_nft::{Family, Firewall, Tag};
use ipnetwork::IpNetwork;

use crate::config::{BridgeConf, format_mac};
use crate::error::BridgeError;
use crate::firewall;
use crate::node::{Deps, Ipam, LinkKind, Links, Node};

fn fail(msg: impl Into<String>) -> BridgeError {
    BridgeError::Check(msg.into())
}

/// CHECK: the container interface, the bridge and its port, the addresses and routes of
/// prevResult, and our firewall rules are all still there.
pub fn check<N: Node, I: Ipam>(deps: &Deps<'_, N, I>, inv: &Invocation) -> Result<(), BridgeError> {
    let conf = BridgeConf::load(&inv.config, &inv.env.args)?;
    let prev = inv
        .config
        .prev_result()?
        .ok_or_else(|| fail("Required prevResult missing"))?;
    // IPAM is checked only when there is one: an L2-only network has nothing to ask.
    if let Some(ipam) = &conf.ipam_type {
        deps.ipam.exec(ipam, Command::Check, inv)?;
    }
    let netns = inv.required_netns()?;
    let ns = deps.node.open(netns)?;
    let host = deps.node.host_links()?;
    let cont = deps.node.links_in(&ns)?;

    let ifname = inv.ifname();
    let rec = prev
        .interfaces
        .iter()
        .find(|i| i.name == ifname && !i.sandbox.is_empty())
        .ok_or_else(|| {
            fail(format!(
                "CNI created interface in container {ifname} not found"
            ))
        })?;
    if rec.sandbox != netns.display().to_string() {
        return Err(fail(format!(
            "Sandbox in prevResult {} doesn't match configured netns: {}",
            rec.sandbox,
            netns.display()
        )));
    }
    let cif = cont.by_name(ifname)?.ok_or_else(|| {
        fail(format!(
            "CNI created interface in container {ifname} not found"
        ))
    })?;
    if cif.kind != LinkKind::Veth {
        return Err(fail(format!("{ifname} in the container is not a veth")));
    }
    if !rec.mac.is_empty() && !rec.mac.eq_ignore_ascii_case(&format_mac(&cif.mac)) {
        return Err(fail(format!("{ifname} MAC changed from {}", rec.mac)));
    }

    let bridge = host.by_name(&conf.bridge)?.ok_or_else(|| {
        fail(format!(
            "CNI created bridge {} in host namespace was not found",
            conf.bridge
        ))
    })?;
    if bridge.kind != LinkKind::Bridge {
        return Err(fail(format!("{} is not a bridge", conf.bridge)));
    }
    if bridge.promisc != conf.promisc {
        return Err(fail(format!(
            "promiscuous mode of {} is not {}",
            conf.bridge, conf.promisc
        )));
    }
    let recorded = |name: &str| prev.interfaces.iter().find(|i| i.name == name);
    // The bridge's MAC is pinned only when it is the gateway; otherwise it follows its ports.
    if let Some(rec) = recorded(&conf.bridge).filter(|r| conf.is_gateway && !r.mac.is_empty()) {
        let mac = format_mac(&bridge.mac);
        if !rec.mac.eq_ignore_ascii_case(&mac) {
            return Err(fail(format!(
                "bridge {} has MAC {mac}, not {}",
                conf.bridge, rec.mac
            )));
        }
    }

    // The host end: a veth in prevResult, present and still a port of the bridge.
    let veth_ok = prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_empty() && i.name != conf.bridge)
        .any(|i| {
            matches!(host.by_name(&i.name),
                Ok(Some(l)) if l.kind == LinkKind::Veth && l.controller == Some(bridge.index))
        });
    if !veth_ok {
        return Err(fail(format!(
            "CNI veth created for bridge {} was not found",
            conf.bridge
        )));
    }

    check_addresses_and_routes(&cont, cif.index, &prev)?;
    if conf.ip_masq || conf.mac_spoof_check {
        check_firewall(deps.firewall, &conf, inv, &prev)?;
    }
    Ok(())
}

fn check_addresses_and_routes(
    cont: &impl Links,
    index: u32,
    prev: &CniResult,
) -> Result<(), BridgeError> {
    let present: Vec<IpNetwork> = cont.addresses(index)?.into_iter().map(|a| a.net).collect();
    for ip in &prev.ips {
        if !present.contains(&ip.address) {
            return Err(fail(format!(
                "address {} is missing from the container interface",
                ip.address
            )));
        }
    }
    let mut routes = cont.routes(true)?;
    routes.extend(cont.routes(false)?);
    for r in &prev.routes {
        let found = routes.iter().any(|(dst, gw)| {
            dst.network() == r.dst.network()
                && dst.prefix() == r.dst.prefix()
                && (r.gw.is_none() || *gw == r.gw)
        });
        if !found {
            return Err(fail(format!(
                "route {} via {} is missing in the container",
                r.dst,
                r.gw.map_or("-".to_owned(), |g| g.to_string())
            )));
        }
    }
    Ok(())
}

/// Our chain for this attachment holds a masquerade rule per address (and the spoof rule).
fn check_firewall(
    fw: &dyn Firewall,
    conf: &BridgeConf,
    inv: &Invocation,
    prev: &CniResult,
) -> Result<(), BridgeError> {
    let chain = firewall::masq_chain(&Tag::of(&conf.network, inv)).name;
    let rules: Vec<_> = firewall::list(fw)?
        .into_iter()
        .filter(|r| r.chain == chain)
        .collect();
    if conf.ip_masq {
        for ip in &prev.ips {
            let needle = cni_nft::octets(ip.address.ip());
            let found = rules
                .iter()
                .any(|r| r.family == Family::Inet && r.values.contains(&needle));
            if !found {
                return Err(fail(format!(
                    "masquerade rule for {} is missing from table {}",
                    ip.address.ip(),
                    firewall::MASQ_TABLE
                )));
            }
        }
    }
    if conf.mac_spoof_check && !rules.iter().any(|r| r.family == Family::Bridge) {
        return Err(fail(format!(
            "MAC spoof-check rule is missing from table {}",
            firewall::SPOOF_TABLE
        )));
    }
    Ok(())
}
