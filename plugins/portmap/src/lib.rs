//! The `portmap` plugin: hostPort → container DNAT, hairpin and localhost masquerade, in
//! nftables only, one transaction per call. A chained plugin: it passes prevResult through.

pub mod config;
pub mod error;
pub mod host;
pub mod rules;

use std::fs;
use std::path::PathBuf;

use cni_common::skel::TypedPlugin;
use cni_common::{CniResult, Invocation};
use cni_nft::Tag;
use cni_nft::{Firewall, Nftables};
use ipnetwork::IpNetwork;

use crate::config::{PortmapConf, Protocol};
use crate::error::PortmapError;
use crate::host::{Host, KernelHost};

#[derive(Debug, Clone, Copy, Default)]
pub struct Portmap;

fn tag<'a>(conf: &'a PortmapConf, inv: &'a Invocation) -> Tag<'a> {
    Tag::of(&conf.network, inv)
}

/// The DEL marker of an attachment: its chains' hash.
fn marker(conf: &PortmapConf, tag: &Tag<'_>) -> PathBuf {
    conf.state_dir.join(tag.chain("rules"))
}

/// The first IPv4 and first IPv6 address of the container interface in prevResult.
fn container_addresses(prev: &CniResult, ifname: &str) -> Vec<IpNetwork> {
    let on_container = |idx: Option<usize>| {
        idx.is_none_or(|i| {
            prev.interfaces
                .get(i)
                .is_some_and(|itf| itf.name == ifname && !itf.sandbox.is_empty())
        })
    };
    [true, false]
        .into_iter()
        .filter_map(|v4| {
            prev.ips
                .iter()
                .find(|ip| ip.address.is_ipv4() == v4 && on_container(ip.interface))
                .map(|ip| ip.address)
        })
        .collect()
}

fn udp_ports(conf: &PortmapConf) -> Vec<u16> {
    let mut ports: Vec<u16> = conf
        .mappings
        .iter()
        .filter(|m| m.protocol == Protocol::Udp)
        .map(|m| m.host_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn flush_conntrack(host: &dyn Host, conf: &PortmapConf) {
    // Failing to flush only delays UDP clients until their entries time out.
    match host.flush_udp_conntrack(&udp_ports(conf)) {
        Ok(n) if n > 0 => cni_common::debug_log!("flushed {n} UDP conntrack entries"),
        Ok(_) => {}
        Err(e) => eprintln!("portmap: could not flush UDP conntrack entries: {e}"),
    }
}

fn add(inv: &Invocation, fw: &dyn Firewall, host: &dyn Host) -> Result<CniResult, PortmapError> {
    let conf = PortmapConf::load(&inv.config)?;
    let prev = inv
        .config
        .prev_result()?
        .ok_or_else(|| PortmapError::Config("must be called as chained plugin".into()))?;
    // Nothing to map: not a single nft call.
    if conf.mappings.is_empty() {
        cni_common::debug_log!("no port mappings: nothing to do");
        return Ok(prev);
    }
    let containers = container_addresses(&prev, inv.ifname());
    if containers.is_empty() {
        return Ok(prev);
    }
    let t = tag(&conf, inv);
    // The marker first: a DEL after a crash here still removes whatever was installed.
    let mark = marker(&conf, &t);
    fs::create_dir_all(&conf.state_dir)
        .and_then(|()| fs::write(&mark, b""))
        .map_err(|e| PortmapError::State(format!("cannot write {}: {e}", mark.display())))?;
    fw.apply(
        &rules::add_batch(&conf, &t, &containers),
        "failed to add port mappings",
    )?;
    cni_common::debug_log!(
        "{} mappings to {containers:?} in table {}",
        conf.mappings.len(),
        rules::TABLE
    );
    if conf.snat
        && let Some(v4) = containers.iter().find(|c| c.is_ipv4())
    {
        host.enable_route_localnet(v4.ip())?;
    }
    flush_conntrack(host, &conf);
    Ok(prev)
}

fn del(inv: &Invocation, fw: &dyn Firewall, host: &dyn Host) -> Result<(), PortmapError> {
    let (conf, known) = PortmapConf::load_for_del(&inv.config);
    let t = tag(&conf, inv);
    let mark = marker(&conf, &t);
    // Rules exist only where ADD left a marker or the runtime re-sent the mappings; with a
    // config we cannot read, we cannot tell, so the chains go by name either way.
    if !known || mark.exists() || !conf.mappings.is_empty() {
        if let cni_nft::Teardown::NoNftables(detail) = fw.teardown(&rules::del_batch(&t))? {
            cni_common::debug_log!("{detail}: no port mapping rules to remove");
        }
        match fs::remove_file(&mark) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(PortmapError::State(format!(
                    "cannot remove {}: {e}",
                    mark.display()
                )));
            }
            _ => {}
        }
    }
    flush_conntrack(host, &conf);
    Ok(())
}

fn check(inv: &Invocation, fw: &dyn Firewall) -> Result<(), PortmapError> {
    let conf = PortmapConf::load(&inv.config)?;
    let prev = inv
        .config
        .prev_result()?
        .ok_or_else(|| PortmapError::Check("Required prevResult missing".into()))?;
    if conf.mappings.is_empty() {
        return Ok(());
    }
    let containers = container_addresses(&prev, inv.ifname());
    let t = tag(&conf, inv);
    let [pre, out, masq] = rules::chains(&t);
    let listed = fw.list(cni_nft::Family::Inet, rules::TABLE)?;
    let count = |chain: &str| listed.iter().filter(|r| r.chain == chain).count();
    let want_dnat: usize = containers
        .iter()
        .map(|c| {
            conf.mappings
                .iter()
                .filter(|m| rules::dnat_rule(&conf, m, c.ip()).is_some())
                .count()
        })
        .sum();
    for chain in [&pre, &out] {
        if count(&chain.name) != want_dnat {
            return Err(PortmapError::Check(format!(
                "port mapping rules of container {} are missing from chain {} of table {}: {} of {want_dnat}",
                inv.container_id(),
                chain.name,
                rules::TABLE,
                count(&chain.name)
            )));
        }
    }
    let want_masq: usize = if conf.snat {
        containers
            .iter()
            .map(|c| rules::masquerade_rules(&conf, *c).len())
            .sum()
    } else {
        0
    };
    if count(&masq.name) != want_masq {
        return Err(PortmapError::Check(format!(
            "masquerade rules of container {} are missing from chain {}: {} of {want_masq}",
            inv.container_id(),
            masq.name,
            count(&masq.name)
        )));
    }
    Ok(())
}

/// Removes the chains (and markers) of this network's attachments not in the valid list.
fn gc(inv: &Invocation, fw: &dyn Firewall) -> Result<(), PortmapError> {
    let conf = PortmapConf::load(&inv.config)?;
    let valid = inv.config.valid_attachments()?.unwrap_or_default();
    let listed = fw.list(cni_nft::Family::Inet, rules::TABLE)?;
    let stale = cni_nft::stale_attachments(&listed, &conf.network, &valid);
    let mut batch = cni_nft::Batch::new();
    for s in &stale {
        let t = Tag {
            network: &conf.network,
            container_id: &s.container_id,
            ifname: &s.ifname,
        };
        for chain in rules::chains(&t) {
            chain.remove(&mut batch);
        }
        // A missing marker only means that attachment had none left to remove.
        let _ = fs::remove_file(marker(&conf, &t));
    }
    fw.apply(&batch, "failed to remove stale port mappings")?;
    Ok(())
}

impl TypedPlugin for Portmap {
    type Error = PortmapError;

    fn name(&self) -> &'static str {
        "portmap"
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, PortmapError> {
        add(inv, &Nftables, &KernelHost)
    }

    fn del(&self, inv: &Invocation) -> Result<(), PortmapError> {
        del(inv, &Nftables, &KernelHost)
    }

    fn check(&self, inv: &Invocation) -> Result<(), PortmapError> {
        check(inv, &Nftables)
    }

    fn gc(&self, inv: &Invocation) -> Result<(), PortmapError> {
        gc(inv, &Nftables)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod address_tests {
    use super::*;

    #[test]
    fn picks_the_container_interfaces_first_address_per_family() {
        let prev: CniResult = serde_json::from_str(
            r#"{"interfaces":[{"name":"cni0"},{"name":"veth1"},{"name":"eth0","sandbox":"/ns"}],
                "ips":[{"address":"10.0.0.9/24","interface":0},
                       {"address":"10.1.0.5/24","interface":2},
                       {"address":"10.1.0.6/24","interface":2},
                       {"address":"fd00::5/64"}]}"#,
        )
        .unwrap();
        let got: Vec<String> = container_addresses(&prev, "eth0")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.1.0.5/24", "fd00::5/64"]);
    }
}
