//! CHECK: the attachment is still as ADD left it, per prevResult.

use std::net::IpAddr;

use cni_common::{CniResult, Command, Invocation, delegate};
use ipnetwork::IpNetwork;
use node_kernel::link::InfoKind;
use node_kernel::{Context, Netns, RouteSocket as Netlink};

use cni_nft::Family;

use crate::add::tag;
use crate::config::{BridgeConf, format_mac};
use crate::error::BridgeError;
use crate::firewall;
use crate::link;

fn fail(msg: impl Into<String>) -> BridgeError {
    BridgeError::Check(msg.into())
}

pub fn check(inv: &Invocation) -> Result<(), BridgeError> {
    let conf = BridgeConf::load(&inv.config, &inv.env.args)?;
    let prev = inv
        .config
        .prev_result()?
        .ok_or_else(|| fail("Required prevResult missing"))?;
    // IPAM is checked only when there is one: an L2-only network has nothing to ask.
    if let Some(ipam) = &conf.ipam_type {
        delegate::exec(ipam, Command::Check, &inv.env, inv.config.raw())?;
    }
    let netns = inv.required_netns()?;
    let ns = Netns::open(netns)?;
    let host = Netlink::current()?;
    let cont = Netlink::in_netns(&ns)?;

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
    let cif = link::by_name(&cont, ifname)?.ok_or_else(|| {
        fail(format!(
            "CNI created interface in container {ifname} not found"
        ))
    })?;
    if link::kind(&cif) != Some(&InfoKind::Veth) {
        return Err(fail(format!("{ifname} in the container is not a veth")));
    }
    if !rec.mac.is_empty() && !rec.mac.eq_ignore_ascii_case(&format_mac(&link::mac(&cif))) {
        return Err(fail(format!("{ifname} MAC changed from {}", rec.mac)));
    }

    let bridge = link::by_name(&host, &conf.bridge)?.ok_or_else(|| {
        fail(format!(
            "CNI created bridge {} in host namespace was not found",
            conf.bridge
        ))
    })?;
    if link::kind(&bridge) != Some(&InfoKind::Bridge) {
        return Err(fail(format!("{} is not a bridge", conf.bridge)));
    }
    if link::is_promisc(&bridge) != conf.promisc {
        return Err(fail(format!(
            "promiscuous mode of {} is not {}",
            conf.bridge, conf.promisc
        )));
    }
    let recorded = |name: &str| prev.interfaces.iter().find(|i| i.name == name);
    // The bridge's MAC is pinned only when it is the gateway; otherwise it follows its ports.
    if let Some(rec) = recorded(&conf.bridge).filter(|r| conf.is_gateway && !r.mac.is_empty()) {
        let mac = format_mac(&link::mac(&bridge));
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
            matches!(link::by_name(&host, &i.name),
                Ok(Some(l)) if link::kind(&l) == Some(&InfoKind::Veth)
                    && link::controller(&l) == Some(bridge.header.index))
        });
    if !veth_ok {
        return Err(fail(format!(
            "CNI veth created for bridge {} was not found",
            conf.bridge
        )));
    }

    check_addresses_and_routes(&cont, cif.header.index, &prev)?;
    if conf.ip_masq || conf.mac_spoof_check {
        check_firewall(&conf, inv, &prev)?;
    }
    Ok(())
}

fn check_addresses_and_routes(
    cont: &Netlink,
    index: u32,
    prev: &CniResult,
) -> Result<(), BridgeError> {
    let present: Vec<IpNetwork> = link::addresses(cont, index)?
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    for ip in &prev.ips {
        if !present.contains(&ip.address) {
            return Err(fail(format!(
                "address {} is missing from the container interface",
                ip.address
            )));
        }
    }
    let mut routes = route_table(cont, true)?;
    routes.extend(route_table(cont, false)?);
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

fn route_table(cont: &Netlink, v4: bool) -> Result<Vec<(IpNetwork, Option<IpAddr>)>, BridgeError> {
    let msgs = cont.routes(v4).context("failed to list routes")?;
    Ok(msgs
        .iter()
        .filter_map(|m| {
            node_kernel::route::destination(m).map(|d| (d, node_kernel::route::gateway(m)))
        })
        .collect())
}

/// Our chain for this attachment holds a masquerade rule per address (and the spoof rule).
fn check_firewall(
    conf: &BridgeConf,
    inv: &Invocation,
    prev: &CniResult,
) -> Result<(), BridgeError> {
    let t = tag(conf, inv);
    let chain = firewall::masq_chain(&t).name;
    let rules: Vec<_> = firewall::list()?
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
