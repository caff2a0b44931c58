//! The `host-local` IPAM plugin: addresses from range sets, leases in files that the Go
//! plugin reads and writes too.

pub mod allocator;
pub mod config;
pub mod dns;
pub mod error;
mod fsutil;
pub mod index;
pub mod range;
pub mod store;

use std::collections::HashSet;

use cni_common::{CniResult, Invocation, TypedPlugin};

use crate::allocator::{Owner, allocate};
use crate::config::IpamConfig;
use crate::error::HostLocalError;
use crate::store::{DiskStore, LeaseOwner};

#[derive(Debug, Clone, Copy, Default)]
pub struct HostLocal;

fn owner(inv: &Invocation) -> Owner<'_> {
    Owner {
        id: inv.container_id(),
        ifname: inv.ifname(),
    }
}

impl TypedPlugin for HostLocal {
    type Error = HostLocalError;

    fn name(&self) -> &'static str {
        "host-local"
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, HostLocalError> {
        let cfg = IpamConfig::load(&inv.config, &inv.env.args)?;
        // Everything that can fail without touching state comes first.
        let dns = cfg.resolv_conf.as_deref().map(dns::read).transpose()?;
        let unmatched = cfg.unmatched_requests();
        if !unmatched.is_empty() {
            return Err(HostLocalError::RequestedUnmatched(unmatched));
        }
        let mut store =
            DiskStore::open(&cfg.network_dir(), &cfg.index_dir(), cfg.range_sets.len())?;
        let ips = allocate(&cfg, &mut store, owner(inv))?;
        store.commit();
        cni_common::debug_log!(
            "allocated {} in {}",
            ips.iter()
                .map(|ip| ip.address.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            cfg.network_dir().display()
        );
        Ok(CniResult {
            dns: dns.unwrap_or_default(),
            interfaces: Vec::new(),
            ips,
            routes: cfg.routes,
        })
    }

    fn del(&self, inv: &Invocation) -> Result<(), HostLocalError> {
        let cfg = IpamConfig::load_for_release(&inv.config, &inv.env.args)?;
        if let Some(mut store) =
            DiskStore::open_existing(&cfg.network_dir(), &cfg.index_dir(), cfg.range_sets.len())?
        {
            let released = store.release(owner(inv))?;
            store.commit();
            cni_common::debug_log!("released {released:?}");
        }
        Ok(())
    }

    fn check(&self, inv: &Invocation) -> Result<(), HostLocalError> {
        let cfg = IpamConfig::load(&inv.config, &inv.env.args)?;
        let not_found = || HostLocalError::NotFound(inv.container_id().to_owned());
        let mut store =
            DiskStore::open_existing(&cfg.network_dir(), &cfg.index_dir(), cfg.range_sets.len())?
                .ok_or_else(not_found)?;
        let owned = allocator::Leases::owned(&mut store, owner(inv))?;
        store.commit();
        if owned.is_empty() {
            return Err(not_found());
        }
        Ok(())
    }

    fn gc(&self, inv: &Invocation) -> Result<(), HostLocalError> {
        let cfg = IpamConfig::load_for_release(&inv.config, &inv.env.args)?;
        // No list at all (cnitool's plain `gc`) means no attachment is valid, as libcni
        // treats it: it has already DELeted every attachment it knew of.
        let valid = inv.config.valid_attachments()?.unwrap_or_default();
        let attachments: HashSet<(&str, &str)> = valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        let containers: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
        if let Some(mut store) =
            DiskStore::open_existing(&cfg.network_dir(), &cfg.index_dir(), cfg.range_sets.len())?
        {
            let released = store.retain(|lease| match lease {
                LeaseOwner::Attachment { id, ifname } => {
                    attachments.contains(&(id.as_str(), ifname.as_str()))
                }
                LeaseOwner::Legacy { id } => containers.contains(id.as_str()),
                LeaseOwner::Empty | LeaseOwner::Unknown => false,
            })?;
            store.commit();
            for ip in released {
                eprintln!("host-local: GC released {ip} in network {}", cfg.network);
            }
        }
        Ok(())
    }

    fn status(&self, inv: &Invocation) -> Result<(), HostLocalError> {
        let cfg = IpamConfig::load(&inv.config, &inv.env.args)?;
        let dir = cfg.network_dir();
        let unusable = |e: HostLocalError| {
            HostLocalError::NotAvailable(format!("host-local cannot use its data directory: {e}"))
        };
        let mut store =
            DiskStore::open(&dir, &cfg.index_dir(), cfg.range_sets.len()).map_err(unusable)?;
        let leases = store.scan().map_err(unusable)?;
        store.commit();
        for (index, set) in cfg.range_sets.iter().enumerate() {
            let used = leases
                .iter()
                .filter(|(ip, _)| {
                    set.contains(*ip) && set.range_for(*ip).is_some_and(|r| r.gateway != *ip)
                })
                .count() as u128;
            if used >= set.capacity() {
                return Err(HostLocalError::NotAvailable(format!(
                    "no IP addresses available in range set {index}: {set} ({used} of {} in use)",
                    set.capacity()
                )));
            }
        }
        Ok(())
    }
}
