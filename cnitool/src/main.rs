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

use cni_common::{CniError, CniResult, Command, validate};
use cni_runtime::{Attachment, Cache, Chain, HostExec, conflist};
use serde_json::{Map, Value};

const USAGE: &str =
    "usage: cnitool add|check|del <network> <netns-path>\n       cnitool gc|status <network>";

/// Why cnitool stopped.
#[derive(Debug, thiserror::Error)]
enum ToolError {
    #[error("{USAGE}")]
    Usage,
    #[error("CAP_ARGS is not JSON: {0}")]
    CapArgs(#[source] serde_json::Error),
    #[error("CNI_PATH is not set: point it at the plugin directory (e.g. /opt/cni/bin)")]
    NoCniPath,
    #[error("{arg}: {source}")]
    Netns {
        arg: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot derive a container ID from {}: set CNI_CONTAINERID", .0.display())]
    ContainerId(PathBuf),
    #[error("no cached result for {container_id} on {network}: run add first")]
    NotCached {
        container_id: String,
        network: String,
    },
    #[error("cannot print the result: {0}")]
    Print(#[source] CniError),
    #[error(transparent)]
    Runtime(#[from] cni_runtime::Error),
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn command(arg: &str) -> Option<Command> {
    Some(match arg {
        "add" => Command::Add,
        "check" => Command::Check,
        "del" => Command::Del,
        "gc" => Command::Gc,
        "status" => Command::Status,
        _ => return None,
    })
}

/// `CAP_ARGS`: a JSON object (any other JSON value means none, as before).
fn capability_args() -> Result<Map<String, Value>, ToolError> {
    match std::env::var("CAP_ARGS").ok().filter(|v| !v.is_empty()) {
        Some(text) => match serde_json::from_str(&text).map_err(ToolError::CapArgs)? {
            Value::Object(args) => Ok(args),
            _ => Ok(Map::new()),
        },
        None => Ok(Map::new()),
    }
}

fn container_id(netns: &Path) -> Result<String, ToolError> {
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
        Err(ToolError::ContainerId(netns.to_owned()))
    }
}

fn attachment(netns_arg: Option<&String>) -> Result<Attachment, ToolError> {
    let netns_arg = netns_arg.ok_or(ToolError::Usage)?;
    let netns = std::path::absolute(netns_arg).map_err(|source| ToolError::Netns {
        arg: netns_arg.clone(),
        source,
    })?;
    Ok(Attachment::new(
        &container_id(&netns)?,
        &netns.display().to_string(),
        &env_or("CNI_IFNAME", "eth0"),
    ))
}

/// ADD, then the result cached and printed in the network's version and shape, as libcni's
/// `result.Print` does.
fn add(chain: &Chain, exec: &HostExec, cache: &Cache, att: &Attachment) -> Result<(), ToolError> {
    let network = chain.list().name();
    let result = chain.add(exec, att)?;
    cache.save(network, att, chain.capability_args(), &result)?;
    let version = chain.list().version();
    let printed = CniResult::decode(&result, version)
        .and_then(|r| r.encode(version))
        .map_err(ToolError::Print)?;
    println!("{printed}");
    Ok(())
}

fn run(args: &[String]) -> Result<(), ToolError> {
    let [command_arg, network, rest @ ..] = args else {
        return Err(ToolError::Usage);
    };
    let command = command(command_arg).ok_or(ToolError::Usage)?;
    let conf_dir = PathBuf::from(env_or("NETCONFPATH", "/etc/cni/net.d"));
    let cache = Cache::new(env_or("CNI_CACHE_DIR", "/var/lib/cni"));
    let capability_args = capability_args()?;
    let exec = HostExec::new(&env_or("CNI_PATH", ""), &env_or("CNI_ARGS", ""));
    if exec.cni_path().is_empty() {
        return Err(ToolError::NoCniPath);
    }
    let chain =
        Chain::new(conflist::load(&conf_dir, network)?).with_capability_args(capability_args);
    match command {
        Command::Gc => return Ok(chain.gc(&exec, &cache.attachments(network)?)?),
        Command::Status => return Ok(chain.status(&exec)?),
        _ => {}
    }
    let att = attachment(rest.first())?;
    match command {
        Command::Add => add(&chain, &exec, &cache, &att),
        Command::Check => {
            chain.ensure_check_supported()?;
            let cached = cache
                .load(network, &att)?
                .ok_or_else(|| ToolError::NotCached {
                    container_id: att.container_id.clone(),
                    network: network.clone(),
                })?;
            Ok(chain.check(&exec, &att, &cached)?)
        }
        _ => {
            // A DEL is never blocked by the cache: an unreadable entry means no prevResult.
            let cached = cache.load(network, &att).ok().flatten();
            chain.del(&exec, &att, cached.as_ref())?;
            Ok(cache.remove(network, &att)?)
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
