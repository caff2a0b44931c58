//! The runtime's result cache, as libcni keeps it: `<dir>/results/<network>-<containerID>-<ifname>`,
//! holding the final ADD result that CHECK and DEL need as prevResult.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::chain::Attachment;

fn file(dir: &Path, network: &str, att: &Attachment) -> PathBuf {
    dir.join("results")
        .join(format!("{network}-{}-{}", att.container_id, att.ifname))
}

pub fn save(
    dir: &Path,
    network: &str,
    att: &Attachment,
    capability_args: &Value,
    result: &Value,
) -> Result<(), String> {
    let path = file(dir, network, att);
    let entry = json!({
        "kind": "cniCacheV1",
        "containerId": att.container_id,
        "ifName": att.ifname,
        "networkName": network,
        "netns": att.netns,
        "capabilityArgs": capability_args,
        "result": result,
    });
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(&path, entry.to_string())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn load(dir: &Path, network: &str, att: &Attachment) -> Option<Value> {
    let text = std::fs::read_to_string(file(dir, network, att)).ok()?;
    let entry: Value = serde_json::from_str(&text).ok()?;
    Some(entry["result"].clone())
}

pub fn remove(dir: &Path, network: &str, att: &Attachment) {
    let _ = std::fs::remove_file(file(dir, network, att));
}

/// The attachments cached for `network`.
pub fn attachments(dir: &Path, network: &str) -> Vec<Attachment> {
    let Ok(entries) = std::fs::read_dir(dir.join("results")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
        .filter(|v| v["networkName"].as_str() == Some(network))
        .filter_map(|v| {
            Some(Attachment::new(
                v["containerId"].as_str()?,
                v["netns"].as_str().unwrap_or_default(),
                v["ifName"].as_str()?,
            ))
        })
        .collect()
}
