//! The `bridge` plugin: a veth pair per container, its host end on a Linux bridge, addresses
//! from the IPAM plugin, the bridge as gateway, and masquerade / MAC spoof-check rules in
//! nftables tables of our own.

mod add;
mod check;
pub mod config;
pub mod error;
pub mod firewall;
pub mod gateway;
mod link;
mod teardown;

use cni_common::{CniError, CniResult, Invocation, Plugin};

#[derive(Debug, Clone, Copy, Default)]
pub struct Bridge;

impl Plugin for Bridge {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError> {
        Ok(add::add(inv)?)
    }

    fn del(&self, inv: &Invocation) -> Result<(), CniError> {
        Ok(teardown::del(inv)?)
    }

    fn check(&self, inv: &Invocation) -> Result<(), CniError> {
        Ok(check::check(inv)?)
    }

    fn status(&self, inv: &Invocation) -> Result<(), CniError> {
        Ok(teardown::status(inv)?)
    }

    fn gc(&self, inv: &Invocation) -> Result<(), CniError> {
        Ok(teardown::gc(inv)?)
    }
}
