//! cnitool: runs a network from the CNI config directory against a network namespace, the
//! way a container runtime does (command-line compatible with containernetworking/cni's).
//!
//!   cnitool add|check|del <network> <netns-path>
//!   cnitool gc|status <network>
//!
//! Environment: NETCONFPATH (default /etc/cni/net.d), CNI_PATH, CNI_IFNAME (default eth0),
//! CNI_ARGS, CAP_ARGS (JSON object of capability arguments, e.g. {"portMappings": [...]}),
//! CNI_CONTAINERID (default `cnitool-<netns file name>`), CNI_CACHE_DIR (default /var/lib/cni).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cni_common::validate;
use conformance::chain::{Attachment, Chain, ChainError};
use conformance::host_exec::HostExec;
use conformance::{cache, netconf};
use serde_json::Value;

const USAGE: &str =
    "usage: cnitool add|check|del <network> <netns-path>\n       cnitool gc|status <network>";

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn plugin_error(e: &ChainError) -> String {
    let msg = serde_json::from_str::<Value>(&e.outcome.stdout)
        .ok()
        .and_then(|v| {
            let msg = v["msg"].as_str()?.to_owned();
            Some(match v["details"].as_str() {
                Some(d) if !d.is_empty() => format!("{msg}: {d}"),
                _ => msg,
            })
        })
        .unwrap_or_else(|| {
            format!(
                "exit status {}: {}",
                e.outcome.exit_code,
                e.outcome.stdout.trim()
            )
        });
    format!("plugin type=\"{}\" failed: {msg}", e.plugin)
}

fn container_id(netns: &Path) -> Result<String, String> {
    if let Some(id) = std::env::var("CNI_CONTAINERID")
        .ok()
        .filter(|v| !v.is_empty())
    {
        return Ok(id);
    }
    let base = netns
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let id = format!("cnitool-{base}");
    if validate::is_valid_identifier(&id) {
        Ok(id)
    } else {
        Err(format!(
            "cannot derive a container ID from {}: set CNI_CONTAINERID",
            netns.display()
        ))
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let (command, network) = match args {
        [c, n, ..] => (c.as_str(), n.as_str()),
        _ => return Err(USAGE.to_owned()),
    };
    let conf_dir = PathBuf::from(env_or("NETCONFPATH", "/etc/cni/net.d"));
    let cache_dir = PathBuf::from(env_or("CNI_CACHE_DIR", "/var/lib/cni"));
    let cap_args: Value = match std::env::var("CAP_ARGS").ok().filter(|v| !v.is_empty()) {
        Some(text) => {
            serde_json::from_str(&text).map_err(|e| format!("CAP_ARGS is not JSON: {e}"))?
        }
        None => Value::Object(Default::default()),
    };
    let exec = HostExec::new(&env_or("CNI_PATH", ""), &env_or("CNI_ARGS", ""));
    if exec.cni_path().is_empty() {
        return Err(
            "CNI_PATH is not set: point it at the plugin directory (e.g. /opt/cni/bin)".into(),
        );
    }
    let list = netconf::load(&conf_dir, network)?;
    let chain = Chain::new(list).with_capability_args(cap_args.clone());
    match command {
        "gc" => {
            let valid = cache::attachments(&cache_dir, network);
            return chain.gc(&exec, &valid).map_err(|e| plugin_error(&e));
        }
        "status" => return chain.status(&exec).map_err(|e| plugin_error(&e)),
        "add" | "check" | "del" => {}
        _ => return Err(USAGE.to_owned()),
    }
    let netns_arg = args.get(2).ok_or_else(|| USAGE.to_owned())?;
    let netns = std::path::absolute(netns_arg).map_err(|e| format!("{netns_arg}: {e}"))?;
    let att = Attachment::new(
        &container_id(&netns)?,
        &netns.display().to_string(),
        &env_or("CNI_IFNAME", "eth0"),
    );
    match command {
        "add" => {
            let result = chain.add(&exec, &att).map_err(|e| plugin_error(&e))?;
            cache::save(&cache_dir, network, &att, &cap_args, &result)?;
            // Printed in the network's version and shape, as libcni's result.Print does.
            let version = cni_common::Version::parse(chain.version()).map_err(|e| e.to_string())?;
            let printed = cni_common::CniResult::decode(&result, version)
                .and_then(|r| r.encode(version))
                .map_err(|e| format!("cannot print the result: {e}"))?;
            println!("{printed}");
            Ok(())
        }
        "check" if !cni_common::Version::parse(chain.version()).is_ok_and(|v| v.allows_check()) => {
            Err(format!(
                "configuration version \"{}\" does not support the CHECK command",
                chain.version()
            ))
        }
        "check" => {
            let cached = cache::load(&cache_dir, network, &att).ok_or_else(|| {
                format!(
                    "no cached result for {} on {network}: run add first",
                    att.container_id
                )
            })?;
            chain
                .check(&exec, &att, &cached)
                .map_err(|e| plugin_error(&e))
        }
        _ => {
            let cached = cache::load(&cache_dir, network, &att);
            chain
                .del(&exec, &att, cached.as_ref())
                .map_err(|e| plugin_error(&e))?;
            cache::remove(&cache_dir, network, &att);
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cnitool: {e}");
            ExitCode::FAILURE
        }
    }
}
