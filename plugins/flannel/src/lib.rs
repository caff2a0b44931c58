//! The `flannel` meta plugin: turns flanneld's subnet.env into a bridge + host-local delegate
//! config, saves it per container for DEL (in the Go plugin's format, so a node can switch
//! plugins either way), and delegates every command to it.

pub mod config;
pub mod error;
mod saved;
pub mod subnet_env;

use std::collections::HashSet;

use cni_common::{CniResult, Command, Invocation, Plugin, Version, delegate};
use serde_json::{Map, Value};

use crate::config::FlannelConf;
use crate::error::FlannelError;

#[derive(Debug, Clone, Copy, Default)]
pub struct Flannel;

fn to_bytes(map: &Map<String, Value>) -> Vec<u8> {
    // Compact with sorted keys (serde_json's map is ordered by key), like the Go plugin.
    serde_json::to_vec(map).unwrap_or_default()
}

fn delegate_version(map: &Map<String, Value>) -> Version {
    cni_common::gojson::get(map, "cniVersion")
        .and_then(Value::as_str)
        .and_then(|v| Version::parse(v).ok())
        .unwrap_or(Version::DEFAULT)
}

fn add(inv: &Invocation) -> Result<CniResult, FlannelError> {
    let conf = FlannelConf::load(&inv.config)?;
    let env = subnet_env::load(&conf.subnet_file)?;
    let delegate = conf.delegate_config(&env);
    let kind = FlannelConf::delegate_type(&delegate).to_owned();
    let bytes = to_bytes(&delegate);
    // A bad or missing delegate is found before anything is saved.
    delegate::find(&kind, &inv.env.path)?;
    let path = saved::save(&conf.data_dir, inv.container_id(), &bytes)?;
    cni_common::debug_log!("delegate {kind} config saved at {}", path.display());
    match delegate::add(&kind, &inv.env, &bytes, delegate_version(&delegate)) {
        Ok(result) => Ok(result),
        Err(e) => {
            // Undo what the delegate may have half done, and drop the saved config (Go #426
            // leaks it).
            if let Err(del) = delegate::exec(&kind, Command::Del, &inv.env, &bytes) {
                eprintln!("flannel: DEL after the failed ADD: {del}");
            }
            let _ = std::fs::remove_file(&path);
            Err(FlannelError::Cni(e.context("failed to delegate add")))
        }
    }
}

fn del(inv: &Invocation) -> Result<(), FlannelError> {
    let conf = FlannelConf::load_for_del(&inv.config);
    let id = inv.container_id();
    let Some(bytes) = saved::read(&conf.data_dir, id)? else {
        // A temp file of an ADD killed before it saved.
        saved::remove(&conf.data_dir, id)?;
        cni_common::debug_log!(
            "no saved config for {id}: DEL through a config rebuilt from subnet.env"
        );
        // Nothing saved: ADD never got that far, or the file was lost. If flanneld's subnet is
        // known, the delegate can still release what it may hold (DEL is idempotent there).
        if let Ok(env) = subnet_env::load(&conf.subnet_file) {
            let delegate = conf.delegate_config(&env);
            let kind = FlannelConf::delegate_type(&delegate).to_owned();
            if let Err(e) = delegate::exec(&kind, Command::Del, &inv.env, &to_bytes(&delegate)) {
                eprintln!("flannel: DEL without a saved config: {e}");
            }
        }
        return Ok(());
    };
    let kind = match serde_json::from_slice::<Map<String, Value>>(&bytes) {
        Ok(map) => FlannelConf::delegate_type(&map).to_owned(),
        Err(e) => {
            eprintln!(
                "flannel: saved config {} is not JSON ({e}); removing it",
                saved::path(&conf.data_dir, id).display()
            );
            saved::remove(&conf.data_dir, id)?;
            return Ok(());
        }
    };
    // Keep the file unless the delegate succeeded, so a retried DEL retries the delegate
    // (the Go plugin removes it anyway and leaks).
    delegate::exec(&kind, Command::Del, &inv.env, &bytes)
        .map_err(|e| FlannelError::Cni(e.context("failed to delegate del")))?;
    saved::remove(&conf.data_dir, id)
}

fn check(inv: &Invocation) -> Result<(), FlannelError> {
    let conf = FlannelConf::load(&inv.config)?;
    let bytes = saved::read(&conf.data_dir, inv.container_id())?.ok_or_else(|| {
        FlannelError::Cni(cni_common::CniError::plugin(
            cni_common::error::code::CHECK_FAILED,
            format!(
                "no saved delegate config for container {} in {}",
                inv.container_id(),
                conf.data_dir.display()
            ),
            "",
        ))
    })?;
    let mut delegate: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|e| FlannelError::State(format!("saved delegate config is not JSON: {e}")))?;
    if let Some(prev) = &inv.config.prev_result {
        delegate.insert("prevResult".into(), prev.clone());
    }
    let kind = FlannelConf::delegate_type(&delegate).to_owned();
    delegate::exec(&kind, Command::Check, &inv.env, &to_bytes(&delegate))?;
    Ok(())
}

fn status(inv: &Invocation) -> Result<(), FlannelError> {
    let conf = FlannelConf::load(&inv.config)?;
    // Report "not ready" instead of letting pods fail (flannel #1646).
    let env = subnet_env::load(&conf.subnet_file)
        .map_err(|e| FlannelError::Cni(cni_common::CniError::not_available(e.to_string(), "")))?;
    let delegate = conf.delegate_config(&env);
    let kind = FlannelConf::delegate_type(&delegate).to_owned();
    delegate::exec(&kind, Command::Status, &inv.env, &to_bytes(&delegate))?;
    Ok(())
}

/// Forwards GC to the delegate, then drops the saved configs of containers that have no
/// valid attachment (their resources were just collected by the delegate).
fn gc(inv: &Invocation) -> Result<(), FlannelError> {
    let conf = FlannelConf::load(&inv.config)?;
    let valid_list = inv.config.valid_attachments()?.unwrap_or_default();
    let valid: HashSet<&str> = valid_list.iter().map(|a| a.container_id.as_str()).collect();
    let saved_configs = saved::list(&conf.data_dir, &conf.network);
    let mut delegate = match subnet_env::load(&conf.subnet_file) {
        Ok(env) => Some(conf.delegate_config(&env)),
        Err(_) => saved_configs.first().map(|(_, map)| map.clone()),
    };
    if let Some(d) = delegate.as_mut() {
        if let Some(list) =
            cni_common::gojson::get(inv.config.object(), "cni.dev/valid-attachments")
        {
            d.insert("cni.dev/valid-attachments".into(), list.clone());
        }
        d.insert(
            "cniVersion".into(),
            Value::String(inv.config.version.to_string()),
        );
        let kind = FlannelConf::delegate_type(d).to_owned();
        delegate::exec(&kind, Command::Gc, &inv.env, &to_bytes(d))?;
    }
    for (id, _) in saved_configs
        .iter()
        .filter(|(id, _)| !valid.contains(id.as_str()))
    {
        saved::remove(&conf.data_dir, id)?;
    }
    Ok(())
}

impl Plugin for Flannel {
    fn name(&self) -> &'static str {
        "flannel"
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, cni_common::CniError> {
        Ok(add(inv)?)
    }

    fn del(&self, inv: &Invocation) -> Result<(), cni_common::CniError> {
        Ok(del(inv)?)
    }

    fn check(&self, inv: &Invocation) -> Result<(), cni_common::CniError> {
        Ok(check(inv)?)
    }

    fn status(&self, inv: &Invocation) -> Result<(), cni_common::CniError> {
        Ok(status(inv)?)
    }

    fn gc(&self, inv: &Invocation) -> Result<(), cni_common::CniError> {
        Ok(gc(inv)?)
    }
}
