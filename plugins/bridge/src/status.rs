//! STATUS: the bridge has no state of its own to report on; IPAM is asked.

use cni_common::{Command, Invocation};

use crate::config::BridgeConf;
use crate::error::BridgeError;
use crate::node::{Deps, Ipam};

/// STATUS: the config loads and the IPAM plugin (if any) is ready.
pub fn status<N, I: Ipam>(deps: &Deps<'_, N, I>, inv: &Invocation) -> Result<(), BridgeError> {
    let conf = BridgeConf::load(&inv.config, &inv.env.args)?;
    if let Some(ipam) = &conf.ipam_type {
        deps.ipam.exec(ipam, Command::Status, inv)?;
    }
    Ok(())
}
