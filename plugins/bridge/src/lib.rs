//! The `bridge` plugin: a veth pair per container, its host end on a Linux bridge, addresses
//! from the IPAM plugin, the bridge as gateway, and masquerade / MAC spoof-check rules in
//! nftables tables of our own.

mod add;
mod check;
pub mod config;
pub mod error;
#[cfg(test)]
mod fake;
pub mod firewall;
pub mod gateway;
mod link;
pub mod node;
mod status;
pub mod sysctl;
mod teardown;
#[cfg(test)]
mod tests;

use cni_common::skel::TypedPlugin;
use cni_common::{CniResult, Invocation};

use crate::error::BridgeError;
use crate::node::Deps;

/// The plugin, on the node's kernel, nf_tables and IPAM binaries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bridge;

impl TypedPlugin for Bridge {
    type Error = BridgeError;

    fn name(&self) -> &'static str {
        "bridge"
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, BridgeError> {
        add::add(&Deps::kernel(), inv)
    }

    fn del(&self, inv: &Invocation) -> Result<(), BridgeError> {
        teardown::del(&Deps::kernel(), inv)
    }

    fn check(&self, inv: &Invocation) -> Result<(), BridgeError> {
        check::check(&Deps::kernel(), inv)
    }

    fn status(&self, inv: &Invocation) -> Result<(), BridgeError> {
        status::status(&Deps::kernel(), inv)
    }

    fn gc(&self, inv: &Invocation) -> Result<(), BridgeError> {
        teardown::gc(&Deps::kernel(), inv)
    }
}
