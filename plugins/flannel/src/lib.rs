//! The `flannel` meta plugin: turns flanneld's subnet.env into a bridge + host-local delegate
//! config, saves it per container for DEL (in the Go plugin's format, so a node can switch
//! plugins either way), and delegates every command to it.
//!
//! The logic ([`Flannel`]'s commands) runs against three seams: the delegate plugin
//! ([`delegate::Delegate`]), the saved configs ([`saved::SavedConfigs`]) and subnet.env
//! ([`subnet_env::SubnetEnvSource`]). The binary uses the real ones; the unit tests use fakes.

pub mod config;
pub mod delegate;
pub mod error;
pub mod saved;
pub mod subnet_env;

use std::collections::HashSet;
use std::path::Path;

use cni_common::config::VALID_ATTACHMENTS;
use cni_common::{CniResult, Command, Invocation, TypedPlugin, Version};
use serde_json::{Map, Value};

use crate::config::FlannelConf;
use crate::delegate::{Delegate, ExecDelegate};
use crate::error::FlannelError;
use crate::saved::{DiskConfigs, SavedConfigs};
use crate::subnet_env::{SubnetEnvFile, SubnetEnvSource};

/// The plugin: its logic over a delegate, a saved-config store and a subnet.env source.
/// [`Flannel::new`] is the real plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flannel<D = ExecDelegate, S = DiskConfigs, E = SubnetEnvFile> {
    pub delegate: D,
    pub saved: S,
    pub subnet_env: E,
}

impl Flannel {
    /// The plugin as the binary runs it: delegates from `CNI_PATH`, configs on disk, the
    /// subnet.env file.
    pub const fn new() -> Self {
        Flannel {
            delegate: ExecDelegate,
            saved: DiskConfigs,
            subnet_env: SubnetEnvFile,
        }
    }
}

/// Compact with sorted keys (serde_json's map is ordered by key), like the Go plugin.
fn to_bytes(map: &Map<String, Value>) -> Result<Vec<u8>, FlannelError> {
    serde_json::to_vec(map).map_err(FlannelError::Encode)
}

fn delegate_version(map: &Map<String, Value>) -> Version {
    cni_common::gojson::get(map, "cniVersion")
        .and_then(Value::as_str)
        .and_then(|v| Version::parse(v).ok())
        .unwrap_or(Version::DEFAULT)
}

impl<D: Delegate, S: SavedConfigs, E: SubnetEnvSource> Flannel<D, S, E> {
    /// The delegate config built from the config and subnet.env.
    fn delegate_config(&self, conf: &FlannelConf) -> Result<Map<String, Value>, FlannelError> {
        let env = subnet_env::load(&self.subnet_env, &conf.subnet_file)?;
        Ok(conf.delegate_config(&env))
    }

    /// Removes a temp file a killed ADD left for `id`. The file is never read (its name is
    /// no container ID), so failing to remove it must not fail the DEL or GC that did its
    /// work: it is reported on stderr and left.
    fn remove_temp(&self, data_dir: &Path, id: &str) {
        if let Err(e) = self.saved.remove_temp(data_dir, id) {
            eprintln!("flannel: {e}");
        }
    }

    /// Removes `id`'s saved config and any temp file of a killed ADD.
    fn forget(&self, data_dir: &Path, id: &str) -> Result<(), FlannelError> {
        self.remove_temp(data_dir, id);
        self.saved.remove(data_dir, id)
    }

    /// DEL without a saved config: ADD never got that far, or the file was lost. If
    /// flanneld's subnet is known, the delegate can still release what it may hold (DEL is
    /// idempotent there); if not, there is nothing to go on and DEL succeeds.
    fn del_unsaved(&self, inv: &Invocation, conf: &FlannelConf) -> Result<(), FlannelError> {
        let id = inv.container_id();
        // A temp file of an ADD killed before it saved.
        self.remove_temp(&conf.data_dir, id);
        cni_common::debug_log!(
            "no saved config for {id}: DEL through a config rebuilt from subnet.env"
        );
        // No usable subnet.env: no delegate config to rebuild, nothing to go on.
        let Ok(delegate) = self.delegate_config(conf) else {
            return Ok(());
        };
        let kind = FlannelConf::delegate_type(&delegate);
        // Best effort: the attachment may never have reached the delegate, so its failure
        // here is no reason to fail the DEL (the runtime would retry it forever).
        if let Err(e) = self
            .delegate
            .exec(kind, Command::Del, &inv.env, &to_bytes(&delegate)?)
        {
            eprintln!("flannel: DEL without a saved config: {e}");
        }
        Ok(())
    }
}

impl<D: Delegate, S: SavedConfigs, E: SubnetEnvSource> TypedPlugin for Flannel<D, S, E> {
    type Error = FlannelError;

    fn name(&self) -> &'static str {
        "flannel"
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, FlannelError> {
        let conf = FlannelConf::load(&inv.config)?;
        let delegate = self.delegate_config(&conf)?;
        let kind = FlannelConf::delegate_type(&delegate);
        let bytes = to_bytes(&delegate)?;
        // A bad or missing delegate is found before anything is saved.
        self.delegate.find(kind, &inv.env)?;
        let id = inv.container_id();
        let path = self.saved.save(&conf.data_dir, id, &bytes)?;
        cni_common::debug_log!("delegate {kind} config saved at {}", path.display());
        match self
            .delegate
            .add(kind, &inv.env, &bytes, delegate_version(&delegate))
        {
            Ok(result) => Ok(result),
            Err(e) => {
                // Undo what the delegate may have half done, and drop the saved config (Go
                // #426 leaks it). The delegate's ADD error is the one reported: a DEL
                // failing here is logged, and a saved config left behind is used and removed
                // by the DEL the runtime sends after a failed ADD.
                if let Err(del) = self.delegate.exec(kind, Command::Del, &inv.env, &bytes) {
                    eprintln!("flannel: DEL after the failed ADD: {del}");
                }
                if let Err(rm) = self.forget(&conf.data_dir, id) {
                    eprintln!("flannel: after the failed ADD: {rm}");
                }
                Err(FlannelError::delegate(Command::Add, e))
            }
        }
    }

    fn del(&self, inv: &Invocation) -> Result<(), FlannelError> {
        let conf = FlannelConf::load_for_del(&inv.config);
        let id = inv.container_id();
        let Some(bytes) = self.saved.read(&conf.data_dir, id)? else {
            return self.del_unsaved(inv, &conf);
        };
        let kind = match serde_json::from_slice::<Map<String, Value>>(&bytes) {
            Ok(map) => FlannelConf::delegate_type(&map).to_owned(),
            Err(e) => {
                eprintln!(
                    "flannel: saved config {} is not JSON ({e}); removing it",
                    saved::path(&conf.data_dir, id).display()
                );
                return self.forget(&conf.data_dir, id);
            }
        };
        // Keep the file unless the delegate succeeded, so a retried DEL retries the delegate
        // (the Go plugin removes it anyway and leaks).
        self.delegate
            .exec(&kind, Command::Del, &inv.env, &bytes)
            .map_err(|e| FlannelError::delegate(Command::Del, e))?;
        self.forget(&conf.data_dir, id)
    }

    fn check(&self, inv: &Invocation) -> Result<(), FlannelError> {
        let conf = FlannelConf::load(&inv.config)?;
        let id = inv.container_id();
        let bytes = self
            .saved
            .read(&conf.data_dir, id)?
            .ok_or_else(|| FlannelError::NotSaved {
                id: id.to_owned(),
                dir: conf.data_dir.clone(),
            })?;
        let mut delegate: Map<String, Value> =
            serde_json::from_slice(&bytes).map_err(|source| FlannelError::SavedNotJson {
                path: saved::path(&conf.data_dir, id),
                source,
            })?;
        if let Some(prev) = &inv.config.prev_result {
            delegate.insert("prevResult".into(), prev.clone());
        }
        let kind = FlannelConf::delegate_type(&delegate);
        self.delegate
            .exec(kind, Command::Check, &inv.env, &to_bytes(&delegate)?)
            .map_err(|e| FlannelError::delegate(Command::Check, e))
    }

    fn status(&self, inv: &Invocation) -> Result<(), FlannelError> {
        let conf = FlannelConf::load(&inv.config)?;
        // Report "not ready" instead of letting pods fail (flannel #1646).
        let delegate = self
            .delegate_config(&conf)
            .map_err(|e| FlannelError::NotAvailable(Box::new(e)))?;
        let kind = FlannelConf::delegate_type(&delegate);
        self.delegate
            .exec(kind, Command::Status, &inv.env, &to_bytes(&delegate)?)
            .map_err(|e| FlannelError::delegate(Command::Status, e))
    }

    /// Forwards GC to the delegate, then drops the saved configs of containers that have no
    /// valid attachment (their resources were just collected by the delegate).
    fn gc(&self, inv: &Invocation) -> Result<(), FlannelError> {
        let conf = FlannelConf::load(&inv.config)?;
        let valid_list = inv.config.valid_attachments()?.unwrap_or_default();
        let valid: HashSet<&str> = valid_list.iter().map(|a| a.container_id.as_str()).collect();
        let saved_configs = match self.saved.list(&conf.data_dir, &conf.network) {
            Ok(list) => list,
            Err(e) => {
                // The delegate's GC (leases, rules) does not depend on them: it still runs,
                // and the saved configs are collected by a later GC.
                eprintln!("flannel: GC keeps the saved configs: {e}");
                Vec::new()
            }
        };
        // Without subnet.env (flanneld not up, or broken), any saved config of this network
        // names the delegate and its IPAM as well.
        let mut delegate = match self.delegate_config(&conf) {
            Ok(d) => Some(d),
            Err(_) => saved_configs.first().map(|(_, map)| map.clone()),
        };
        if let Some(d) = delegate.as_mut() {
            // Under the current name even if the request used the old one: a delegate GC
            // without the list would take every attachment for stale.
            if let Some(list) = inv.config.valid_attachments_value() {
                d.insert(VALID_ATTACHMENTS.into(), list.clone());
            }
            d.insert(
                "cniVersion".into(),
                Value::String(inv.config.version.to_string()),
            );
            let kind = FlannelConf::delegate_type(d);
            self.delegate
                .exec(kind, Command::Gc, &inv.env, &to_bytes(d)?)
                .map_err(|e| FlannelError::delegate(Command::Gc, e))?;
        }
        for (id, _) in saved_configs
            .iter()
            .filter(|(id, _)| !valid.contains(id.as_str()))
        {
            self.forget(&conf.data_dir, id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
