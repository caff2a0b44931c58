//! The host-local view of the config: range sets assembled and validated in the reference's
//! order, requested IPs merged from every source, paths checked before use.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cni_common::result::Route;
use cni_common::{NetConf, Version};
use ipnetwork::IpNetwork;
use serde::Deserialize;

use crate::error::HostLocalError;
use crate::range::{RangeSet, RangeSpec, canonical};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
const INDEX_DIR: &str = ".cni-rs-index";

/// A validated host-local configuration.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    /// The network name: the lease directory below `data_dir`.
    pub network: String,
    pub data_dir: PathBuf,
    pub range_sets: Vec<RangeSet>,
    /// Requested addresses, in merge order (CNI_ARGS, args.cni.ips, runtimeConfig.ips).
    pub requested: Vec<IpAddr>,
    pub routes: Vec<Route>,
    pub resolv_conf: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Wire {
    ipam: Option<WireIpam>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: WireRuntime,
    #[serde(default)]
    args: Option<WireArgs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireIpam {
    // The legacy single range's keys sit in `ipam` itself. Spelt out rather than flattened:
    // serde's flatten buffers the object and would match these keys exactly, not as Go does.
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    ranges: Vec<Vec<WireRange>>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    data_dir: Option<String>,
    #[serde(default)]
    resolv_conf: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct WireRange {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireRuntime {
    #[serde(default)]
    ip_ranges: Vec<Vec<WireRange>>,
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Deserialize)]
struct WireArgs {
    #[serde(default)]
    cni: Option<WireCniArgs>,
}

#[derive(Deserialize)]
struct WireCniArgs {
    #[serde(default)]
    ips: Vec<String>,
}

impl WireRange {
    fn spec(&self) -> Result<RangeSpec, String> {
        let subnet = self.subnet.as_deref().unwrap_or_default();
        let subnet: IpNetwork = if subnet.contains('/') {
            subnet.parse().ok()
        } else {
            None
        }
        .ok_or_else(|| format!("invalid CIDR address: {subnet}"))?;
        Ok(RangeSpec {
            subnet,
            start: self.range_start,
            end: self.range_end,
            gateway: self.gateway,
        })
    }
}

/// Parses `ip` or `ip/prefix` (the prefix is ignored, as in Go).
fn parse_requested(s: &str) -> Result<IpAddr, HostLocalError> {
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    addr.parse::<IpAddr>()
        .map(canonical)
        .map_err(|_| HostLocalError::Config(format!("cannot understand ip: {s}")))
}

fn checked_path(key: &str, raw: &str) -> Result<PathBuf, HostLocalError> {
    let path = Path::new(raw);
    if !path.is_absolute() || raw.contains('\0') {
        return Err(HostLocalError::Config(format!(
            "ipam.{key} must be an absolute path, not \"{}\"",
            raw.escape_debug()
        )));
    }
    Ok(path.to_owned())
}

impl IpamConfig {
    /// Loads the config for ADD, CHECK, STATUS and GC: every range must be valid.
    pub fn load(conf: &NetConf, cni_args: &str) -> Result<IpamConfig, HostLocalError> {
        let (mut cfg, sets) = Self::load_unchecked(conf, cni_args)?;
        cfg.range_sets = validate_sets(&sets, conf.version)?;
        Ok(cfg)
    }

    /// Loads what DEL needs (network, data dir) even when the ranges no longer validate:
    /// leases are released by owner, so a config edited since ADD must not strand them. Nor
    /// does a key DEL has no use for (requested IPs, runtime ranges, routes, CNI_ARGS) that
    /// cannot be read: only a missing `ipam` or an unusable `dataDir` stops a release.
    pub fn load_for_release(conf: &NetConf, cni_args: &str) -> Result<IpamConfig, HostLocalError> {
        match Self::load_unchecked(conf, cni_args) {
            Ok((mut cfg, sets)) => {
                cfg.range_sets = validate_sets(&sets, conf.version).unwrap_or_default();
                Ok(cfg)
            }
            Err(e) => {
                let data_dir = release_data_dir(conf).ok_or(e)?;
                Ok(IpamConfig {
                    network: conf.name.clone(),
                    data_dir: data_dir?,
                    range_sets: Vec::new(),
                    requested: Vec::new(),
                    routes: Vec::new(),
                    resolv_conf: None,
                })
            }
        }
    }

    fn load_unchecked(
        conf: &NetConf,
        cni_args: &str,
    ) -> Result<(IpamConfig, Vec<Vec<WireRange>>), HostLocalError> {
        let wire: Wire = conf
            .plugin_config()
            .map_err(|e| HostLocalError::Config(e.to_string()))?;
        let ipam = wire
            .ipam
            .ok_or_else(|| HostLocalError::Config("IPAM config missing 'ipam' key".into()))?;

        let mut requested = Vec::new();
        let env_args = cni_common::args::parse(cni_args, &["IP"])?;
        if let Some(ip) = env_args.get("IP") {
            requested.push(parse_requested(ip)?);
        }
        if let Some(cni) = wire.args.and_then(|a| a.cni) {
            for ip in &cni.ips {
                requested.push(parse_requested(ip)?);
            }
        }
        for ip in &wire.runtime_config.ips {
            requested.push(parse_requested(ip)?);
        }

        // The reference's order: runtime ranges, then the legacy single range, then `ranges`.
        let mut sets = wire.runtime_config.ip_ranges;
        if ipam.subnet.is_some() {
            sets.push(vec![WireRange {
                subnet: ipam.subnet,
                range_start: ipam.range_start,
                range_end: ipam.range_end,
                gateway: ipam.gateway,
            }]);
        }
        sets.extend(ipam.ranges);

        let data_dir = match ipam.data_dir.as_deref() {
            None | Some("") => PathBuf::from(DEFAULT_DATA_DIR),
            Some(raw) => checked_path("dataDir", raw)?,
        };
        let resolv_conf = match ipam.resolv_conf.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(checked_path("resolvConf", raw)?),
        };
        Ok((
            IpamConfig {
                network: conf.name.clone(),
                data_dir,
                range_sets: Vec::new(),
                requested,
                routes: ipam.routes,
                resolv_conf,
            },
            sets,
        ))
    }

    /// Requested addresses no range set takes (each set takes the first one it contains, as
    /// allocation does): known before any state is touched.
    pub fn unmatched_requests(&self) -> Vec<IpAddr> {
        let mut left = self.requested.clone();
        for set in &self.range_sets {
            if let Some(pos) = left.iter().position(|ip| set.contains(*ip)) {
                left.remove(pos);
            }
        }
        left
    }

    /// `<dataDir>/<network>`; the name was validated by the skeleton.
    pub fn network_dir(&self) -> PathBuf {
        self.data_dir.join(&self.network)
    }

    /// Where our owner index of the network lives. Network names start with a letter or
    /// digit, so this never collides with a network directory.
    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join(INDEX_DIR).join(&self.network)
    }
}

/// `ipam.dataDir` read on its own, for a DEL whose other keys are unreadable. `None`: no
/// `ipam` object at all.
fn release_data_dir(conf: &NetConf) -> Option<Result<PathBuf, HostLocalError>> {
    let ipam = cni_common::gojson::get(conf.object(), "ipam")?.as_object()?;
    Some(match cni_common::gojson::get(ipam, "dataDir") {
        None | Some(serde_json::Value::Null) => Ok(PathBuf::from(DEFAULT_DATA_DIR)),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(PathBuf::from(DEFAULT_DATA_DIR)),
        Some(serde_json::Value::String(s)) => checked_path("dataDir", s),
        Some(other) => Err(HostLocalError::Config(format!(
            "ipam.dataDir must be an absolute path, not {other}"
        ))),
    })
}

fn validate_sets(
    sets: &[Vec<WireRange>],
    version: Version,
) -> Result<Vec<RangeSet>, HostLocalError> {
    if sets.is_empty() {
        return Err(HostLocalError::Config("no IP ranges specified".into()));
    }
    let mut out: Vec<RangeSet> = Vec::with_capacity(sets.len());
    for (i, set) in sets.iter().enumerate() {
        let specs = set
            .iter()
            .map(WireRange::spec)
            .collect::<Result<Vec<_>, _>>()
            .and_then(|specs| RangeSet::from_specs(&specs))
            .map_err(|e| HostLocalError::Config(format!("invalid range set {i}: {e}")))?;
        out.push(specs);
    }
    let v4 = out.iter().filter(|s| s.is_ipv4()).count();
    if (v4 > 1 || out.len() - v4 > 1) && !version.allows_multiple_ips_per_family() {
        return Err(HostLocalError::Config(format!(
            "CNI version {version} does not support more than 1 address per family"
        )));
    }
    for (i, a) in out.iter().enumerate() {
        if let Some(j) = out[i + 1..].iter().position(|b| a.overlaps(b)) {
            return Err(HostLocalError::Config(format!(
                "range set {i} overlaps with {}",
                i + j + 1
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str, args: &str) -> Result<IpamConfig, HostLocalError> {
        IpamConfig::load(&NetConf::parse(json.as_bytes()).unwrap(), args)
    }

    fn msg(json: &str) -> String {
        load(json, "").unwrap_err().to_string()
    }

    #[test]
    fn assembly_order_and_requested_ips() {
        let c = load(
            r#"{"cniVersion":"1.0.0","name":"net",
               "ipam":{"type":"host-local","subnet":"10.2.0.0/24",
                       "ranges":[[{"subnet":"10.3.0.0/24"}]],
                       "routes":[{"dst":"0.0.0.0/0"}],"dataDir":"/tmp/x"},
               "runtimeConfig":{"ipRanges":[[{"subnet":"10.1.0.0/24"}]],"ips":["10.3.0.9/24"]},
               "args":{"cni":{"ips":["10.2.0.8"]}}}"#,
            "IgnoreUnknown=1;IP=10.1.0.7",
        )
        .unwrap();
        let firsts: Vec<String> = c
            .range_sets
            .iter()
            .map(|s| s.0[0].subnet.to_string())
            .collect();
        assert_eq!(firsts, ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"]);
        let req: Vec<String> = c.requested.iter().map(IpAddr::to_string).collect();
        assert_eq!(req, ["10.1.0.7", "10.2.0.8", "10.3.0.9"]);
        assert_eq!(c.network_dir(), PathBuf::from("/tmp/x/net"));
        assert_eq!(c.routes.len(), 1);
    }

    #[test]
    fn reference_messages() {
        assert_eq!(
            msg(r#"{"cniVersion":"1.0.0","name":"n"}"#),
            "IPAM config missing 'ipam' key"
        );
        assert_eq!(
            msg(r#"{"cniVersion":"1.0.0","name":"n","ipam":{}}"#),
            "no IP ranges specified"
        );
        assert_eq!(
            msg(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[]]}}"#),
            "invalid range set 0: empty range set"
        );
        assert_eq!(
            msg(
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.0/16"}]]}}"#
            ),
            "range set 0 overlaps with 1"
        );
        assert_eq!(
            msg(
                r#"{"cniVersion":"0.2.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.1.0.0/16"}]]}}"#
            ),
            "CNI version 0.2.0 does not support more than 1 address per family"
        );
        assert_eq!(
            msg(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0"}}"#),
            "invalid range set 0: invalid CIDR address: 10.0.0.0"
        );
        assert_eq!(
            msg(
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24","dataDir":"rel/dir"}}"#
            ),
            "ipam.dataDir must be an absolute path, not \"rel/dir\""
        );
        assert!(msg(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24","rangeStart":"x"}}"#)
            .starts_with("invalid network config"));
        assert_eq!(
            load(
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24"}}"#,
                "K=V"
            )
            .unwrap_err()
            .to_string(),
            "ARGS: unknown args [\"K=V\"]"
        );
        assert_eq!(
            msg(
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24"},"runtimeConfig":{"ips":["nope"]}}"#
            ),
            "cannot understand ip: nope"
        );
    }

    #[test]
    fn dual_stack_is_fine_at_0_2_0_and_release_ignores_bad_ranges() {
        assert!(load(
            r#"{"cniVersion":"0.2.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00::/64"}]]}}"#,
            ""
        )
        .is_ok());
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.1/24","dataDir":"/d"}}"#,
        )
        .unwrap();
        let c = IpamConfig::load_for_release(&conf, "").unwrap();
        assert!(c.range_sets.is_empty());
        assert_eq!(c.network_dir(), PathBuf::from("/d/n"));
    }

    #[test]
    fn keys_in_any_case_as_go_reads_them() {
        // containerd's ipRanges capability (go-cni's untagged struct) and a hand-written config.
        let c = load(
            r#"{"cniVersion":"1.0.0","name":"net","IPAM":{"Type":"host-local","DataDir":"/d",
                 "Ranges":[[{"Subnet":"10.3.0.0/24","RangeStart":"10.3.0.10","Gateway":"10.3.0.1"}]],
                 "Routes":[{"Dst":"0.0.0.0/0"}]},
               "RuntimeConfig":{"IPRanges":[[{"Subnet":"10.99.0.0/24","RangeStart":"10.99.0.5",
                 "RangeEnd":"10.99.0.9","Gateway":"10.99.0.1"}]],"IPs":["10.99.0.6"]},
               "Args":{"CNI":{"IPs":["10.3.0.11"]}}}"#,
            "",
        )
        .unwrap();
        let firsts: Vec<String> = c
            .range_sets
            .iter()
            .map(|s| s.0[0].subnet.to_string())
            .collect();
        assert_eq!(firsts, ["10.99.0.0/24", "10.3.0.0/24"]);
        assert_eq!(c.range_sets[0].0[0].start.to_string(), "10.99.0.5");
        let req: Vec<String> = c.requested.iter().map(IpAddr::to_string).collect();
        assert_eq!(req, ["10.3.0.11", "10.99.0.6"]);
        assert_eq!(c.network_dir(), PathBuf::from("/d/net"));
        assert_eq!(c.routes.len(), 1);
        let single = load(
            r#"{"cniVersion":"1.0.0","name":"n","ipam":{"SUBNET":"10.5.0.0/24","rangeEnd":"10.5.0.20"}}"#,
            "",
        )
        .unwrap();
        assert_eq!(single.range_sets[0].0[0].end.to_string(), "10.5.0.20");
    }

    #[test]
    fn release_gets_by_with_unreadable_keys() {
        let conf = |json: &str| {
            NetConf::parse_with(json.as_bytes(), cni_common::config::Strictness::ForDel).unwrap()
        };
        let c = IpamConfig::load_for_release(
            &conf(
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"dataDir":"/d","ranges":"x"},
                    "runtimeConfig":{"ips":5}}"#,
            ),
            "K=V",
        )
        .unwrap();
        assert_eq!(c.network_dir(), PathBuf::from("/d/n"));
        assert!(c.range_sets.is_empty() && c.requested.is_empty());
        // Without `ipam`, or with a relative dataDir, no ADD ever succeeded: still an error.
        assert!(
            IpamConfig::load_for_release(&conf(r#"{"cniVersion":"1.0.0","name":"n"}"#), "")
                .is_err()
        );
        assert!(
            IpamConfig::load_for_release(
                &conf(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"dataDir":"rel","ranges":5}}"#),
                ""
            )
            .is_err()
        );
    }
}
