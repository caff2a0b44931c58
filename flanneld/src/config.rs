//! The network config at `<prefix>/config`, decoded and checked as Go flanneld decodes and
//! checks it (`pkg/subnet/config.go`: `ParseConfig`, `CheckNetworkConfig`): keys matched as
//! Go's `encoding/json` matches them (case-insensitively, through [`cni_common::gojson`]),
//! the same defaults, the same validation messages.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::Deserialize;
use serde_json::Value;

use crate::log::shown;
use crate::subnet::v6_add;

/// Why a config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, or a field of the wrong type.
    #[error("invalid JSON: {}", crate::log::bounded(&.0.to_string()))]
    Json(#[from] serde_json::Error),
    /// A field that Go would refuse (Go's message), or that this agent refuses as dangerous
    /// or unusable.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// The JSON as written, every field optional (Go's zero values apply when absent).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    #[serde(rename = "EnableIPv4")]
    enable_ipv4: Option<bool>,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "Network")]
    network: Option<String>,
    #[serde(rename = "IPv6Network")]
    ipv6_network: Option<String>,
    #[serde(rename = "SubnetMin")]
    subnet_min: Option<String>,
    #[serde(rename = "SubnetMax")]
    subnet_max: Option<String>,
    #[serde(rename = "IPv6SubnetMin")]
    ipv6_subnet_min: Option<String>,
    #[serde(rename = "IPv6SubnetMax")]
    ipv6_subnet_max: Option<String>,
    #[serde(rename = "SubnetLen")]
    subnet_len: u32,
    #[serde(rename = "IPv6SubnetLen")]
    ipv6_subnet_len: u32,
    #[serde(rename = "EnableNFTables")]
    enable_nftables: bool,
    #[serde(rename = "Backend")]
    backend: Option<Value>,
}

/// The IPv4 side of the network, defaults applied and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V4Range {
    /// The cluster network (`Network`), masked.
    pub network: Ipv4Network,
    /// The prefix length of a node's subnet (`SubnetLen`, default 24 or network + 2).
    pub subnet_len: u8,
    /// The first subnet handed out (`SubnetMin`, default the network's second subnet).
    pub subnet_min: Ipv4Addr,
    /// The last subnet handed out (`SubnetMax`, default the network's last subnet).
    pub subnet_max: Ipv4Addr,
}

/// The IPv6 side of the network, defaults applied and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V6Range {
    /// `IPv6Network`, masked.
    pub network: Ipv6Network,
    /// `IPv6SubnetLen` (default 64 or network + 2).
    pub subnet_len: u8,
    /// `IPv6SubnetMin`.
    pub subnet_min: Ipv6Addr,
    /// `IPv6SubnetMax`.
    pub subnet_max: Ipv6Addr,
}

/// A checked network config.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// IPv4 (`EnableIPv4`, default true) with its range.
    pub v4: Option<V4Range>,
    /// IPv6 (`EnableIPv6`, default false) with its range.
    pub v6: Option<V6Range>,
    /// `EnableNFTables` (read for the next issue's masquerade rules).
    pub enable_nftables: bool,
    /// `Backend.Type`; `udp` when `Backend` is absent, as in Go.
    pub backend_type: String,
    /// The `Backend` object as written (`null` when absent), for the backend's own keys.
    pub backend: Value,
}

/// Whether a JSON text is an array (serde would decode it into a struct, Go refuses it).
pub(crate) fn is_array(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .is_some_and(|b| *b == b'[')
}

fn parse_v4(field: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(format!("{field}: {} is not an IPv4 address", shown(s))))
}

fn parse_v6(field: &str, s: &str) -> Result<Ipv6Addr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(format!("{field}: {} is not an IPv6 address", shown(s))))
}

/// What the subnets of a config are checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ranges {
    /// etcd: the node leases a subnet of `SubnetLen` between `SubnetMin` and `SubnetMax`,
    /// all checked as Go's `CheckNetworkConfig` checks them.
    Leased,
    /// kube: the node's subnet is its podCIDR; `SubnetLen`/`Min`/`Max` are not used and not
    /// checked (Go does not check them there either).
    PodCidr,
}

impl NetworkConfig {
    /// Decodes and checks the config's bytes (etcd's `<prefix>/config`).
    pub fn parse(bytes: &[u8]) -> Result<NetworkConfig, ConfigError> {
        Self::parse_for(bytes, Ranges::Leased)
    }

    /// Decodes and checks kube mode's `net-conf.json`: the networks as [`NetworkConfig::parse`]
    /// checks them, the subnet ranges not at all (the podCIDRs are the subnets). The ranges
    /// hold the networks' own bounds and prefix length.
    pub fn parse_kube(bytes: &[u8]) -> Result<NetworkConfig, ConfigError> {
        Self::parse_for(bytes, Ranges::PodCidr)
    }

    fn parse_for(bytes: &[u8], ranges: Ranges) -> Result<NetworkConfig, ConfigError> {
        if is_array(bytes) {
            // serde fills a struct from an array, field by field; Go refuses it.
            return Err(invalid(
                "invalid JSON: the config is an array, not an object",
            ));
        }
        let raw: Raw = cni_common::gojson::from_slice(bytes)?;
        let backend_type = match &raw.backend {
            None | Some(Value::Null) => "udp".to_owned(),
            Some(Value::Object(o)) => match cni_common::gojson::get(o, "Type") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(invalid(format!(
                        "error decoding Backend property of config: Type is {other}, not a string"
                    )));
                }
            },
            Some(other) => {
                return Err(invalid(format!(
                    "error decoding Backend property of config: {other} is not an object"
                )));
            }
        };
        let v4 = if raw.enable_ipv4.unwrap_or(true) {
            Some(check_v4(&raw, ranges)?)
        } else {
            None
        };
        let v6 = if raw.enable_ipv6 {
            Some(check_v6(&raw, ranges)?)
        } else {
            None
        };
        if v4.is_none() && v6.is_none() {
            // Go: "none of IPv4 or IPv6 enabled", once the stack is chosen.
            return Err(invalid(
                "EnableIPv4 and EnableIPv6 are both false: there is no network to lease from",
            ));
        }
        Ok(NetworkConfig {
            v4,
            v6,
            enable_nftables: raw.enable_nftables,
            backend_type,
            backend: raw.backend.unwrap_or(Value::Null),
        })
    }
}

fn check_v4(raw: &Raw, ranges: Ranges) -> Result<V4Range, ConfigError> {
    let network: Ipv4Network = match raw.network.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<Ipv4Network>()
                .ok()
                .filter(|_| s.contains('/'))
                .ok_or_else(|| invalid(format!("Network: {} is not an IPv4 CIDR", shown(s))))?,
        ),
    }
    .ok_or_else(|| invalid("please define a correct Network parameter in the flannel config"))?;
    let network = Ipv4Network::new(network.network(), network.prefix())
        .map_err(|e| invalid(e.to_string()))?;
    // Go takes any network; one overlapping these would route "this network", loopback or
    // multicast/broadcast addresses to peers (0.0.0.0/0 would replace the default route).
    for (reserved, what) in [
        ("0.0.0.0/8", "\"this network\""),
        ("127.0.0.0/8", "loopback"),
        ("224.0.0.0/3", "multicast/reserved/broadcast"),
    ] {
        let r: Ipv4Network = reserved.parse().map_err(|_| invalid(reserved))?;
        if r.contains(network.network()) || network.contains(r.network()) {
            return Err(invalid(format!(
                "Network {network} overlaps {reserved} ({what} addresses): refusing to route it"
            )));
        }
    }
    if ranges == Ranges::PodCidr {
        return Ok(V4Range {
            network,
            subnet_len: network.prefix(),
            subnet_min: network.network(),
            subnet_max: network.broadcast(),
        });
    }
    let plen = u32::from(network.prefix());
    let subnet_len = if raw.subnet_len > 0 {
        if raw.subnet_len > 30 {
            return Err(invalid("SubnetLen must be less than /31"));
        }
        if raw.subnet_len < plen + 2 {
            return Err(invalid(
                "network must be able to accommodate at least four subnets",
            ));
        }
        raw.subnet_len
    } else if plen > 28 {
        return Err(invalid(
            "network is too small. Minimum useful network prefix is /28",
        ));
    } else if plen <= 22 {
        24
    } else {
        plen + 2
    };
    let size = 1u32 << (32 - subnet_len);
    let net_u = u32::from(network.network());
    let subnet_min = match raw.subnet_min.as_deref() {
        None | Some("") => Ipv4Addr::from(net_u.wrapping_add(size)),
        Some(s) => {
            let ip = parse_v4("SubnetMin", s)?;
            if ip.is_unspecified() {
                Ipv4Addr::from(net_u.wrapping_add(size))
            } else if !network.contains(ip) {
                return Err(invalid("SubnetMin is not in the range of the Network"));
            } else {
                ip
            }
        }
    };
    let next = u64::from(net_u) + (1u64 << (32 - plen));
    let default_max = Ipv4Addr::from((next - u64::from(size)) as u32);
    let subnet_max = match raw.subnet_max.as_deref() {
        None | Some("") => default_max,
        Some(s) => {
            let ip = parse_v4("SubnetMax", s)?;
            if ip.is_unspecified() {
                default_max
            } else if !network.contains(ip) {
                return Err(invalid("SubnetMax is not in the range of the Network"));
            } else {
                ip
            }
        }
    };
    let mask = u32::MAX << (32 - subnet_len);
    if u32::from(subnet_min) & mask != u32::from(subnet_min) {
        return Err(invalid(format!(
            "SubnetMin is not on a SubnetLen boundary: {subnet_min}"
        )));
    }
    if u32::from(subnet_max) & mask != u32::from(subnet_max) {
        return Err(invalid(format!(
            "SubnetMax is not on a SubnetLen boundary: {subnet_max}"
        )));
    }
    if subnet_min > subnet_max {
        // Go accepts it and then fails every allocation ("out of subnets").
        return Err(invalid(format!(
            "SubnetMin {subnet_min} is above SubnetMax {subnet_max}: no subnet to lease"
        )));
    }
    Ok(V4Range {
        network,
        subnet_len: subnet_len as u8,
        subnet_min,
        subnet_max,
    })
}

fn check_v6(raw: &Raw, ranges: Ranges) -> Result<V6Range, ConfigError> {
    let network: Ipv6Network = match raw.ipv6_network.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<Ipv6Network>()
                .ok()
                .filter(|_| s.contains('/'))
                .ok_or_else(|| invalid(format!("IPv6Network: {} is not an IPv6 CIDR", shown(s))))?,
        ),
    }
    .ok_or_else(|| {
        invalid("please define a correct IPv6Network parameter in the flannel config")
    })?;
    let network = Ipv6Network::new(network.network(), network.prefix())
        .map_err(|e| invalid(e.to_string()))?;
    let multicast: Ipv6Network = "ff00::/8".parse().map_err(|_| invalid("ff00::/8"))?;
    if network.contains(Ipv6Addr::LOCALHOST)
        || multicast.contains(network.network())
        || network.contains(multicast.network())
    {
        return Err(invalid(format!(
            "IPv6Network {network} overlaps ::1 (loopback) or ff00::/8 (multicast): refusing to route it"
        )));
    }
    if ranges == Ranges::PodCidr {
        return Ok(V6Range {
            network,
            subnet_len: network.prefix(),
            subnet_min: network.network(),
            subnet_max: network.broadcast(),
        });
    }
    let plen = u32::from(network.prefix());
    let subnet_len = if raw.ipv6_subnet_len > 0 {
        if raw.ipv6_subnet_len > 126 {
            return Err(invalid("SubnetLen must be less than /127"));
        }
        if raw.ipv6_subnet_len < plen + 2 {
            return Err(invalid(
                "network must be able to accommodate at least four subnets",
            ));
        }
        raw.ipv6_subnet_len
    } else if plen > 124 {
        return Err(invalid(
            "IPv6Network is too small. Minimum useful network prefix is /124",
        ));
    } else if plen <= 62 {
        64
    } else {
        plen + 2
    };
    let size = 1u128 << (128 - subnet_len);
    let net_u = u128::from(network.network());
    let default_min = v6_add(network.network(), size);
    let default_max = Ipv6Addr::from(
        net_u
            .wrapping_add(if plen == 0 { 0 } else { 1u128 << (128 - plen) })
            .wrapping_sub(size),
    );
    let pick = |field: &str, value: &Option<String>, default: Ipv6Addr| match value.as_deref() {
        None | Some("") => Ok(default),
        Some(s) => {
            let ip = parse_v6(field, s)?;
            if ip.is_unspecified() {
                Ok(default)
            } else if !network.contains(ip) {
                Err(invalid(format!(
                    "{field} is not in the range of the IPv6Network"
                )))
            } else {
                Ok(ip)
            }
        }
    };
    let subnet_min = pick("IPv6SubnetMin", &raw.ipv6_subnet_min, default_min)?;
    let subnet_max = pick("IPv6SubnetMax", &raw.ipv6_subnet_max, default_max)?;
    let mask = u128::MAX << (128 - subnet_len);
    if u128::from(subnet_min) & mask != u128::from(subnet_min) {
        return Err(invalid(format!(
            "IPv6SubnetMin is not on a SubnetLen boundary: {subnet_min}"
        )));
    }
    if u128::from(subnet_max) & mask != u128::from(subnet_max) {
        return Err(invalid(format!(
            "IPv6SubnetMax is not on a SubnetLen boundary: {subnet_max}"
        )));
    }
    if subnet_min > subnet_max {
        return Err(invalid(format!(
            "IPv6SubnetMin {subnet_min} is above IPv6SubnetMax {subnet_max}: no subnet to lease"
        )));
    }
    Ok(V6Range {
        network,
        subnet_len: subnet_len as u8,
        subnet_min,
        subnet_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetworkConfig, ConfigError> {
        NetworkConfig::parse(s.as_bytes())
    }

    fn err(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn running_md_example_with_go_defaults() {
        let c = parse(r#"{ "Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}"#).unwrap();
        let v4 = c.v4.unwrap();
        assert_eq!(v4.network.to_string(), "10.5.0.0/16");
        assert_eq!(v4.subnet_len, 24);
        assert_eq!(v4.subnet_min, Ipv4Addr::new(10, 5, 1, 0));
        assert_eq!(v4.subnet_max, Ipv4Addr::new(10, 5, 255, 0));
        assert!(c.v6.is_none());
        assert_eq!(c.backend_type, "vxlan");
        assert!(!c.enable_nftables);
    }

    #[test]
    fn keys_case_insensitive_and_backend_default_udp() {
        let c = parse(r#"{"network":"10.1.0.0/24","subnetlen":26,"BACKEND":{"type":"host-gw"}}"#)
            .unwrap();
        let v4 = c.v4.unwrap();
        assert_eq!(
            (v4.network.to_string(), v4.subnet_len),
            ("10.1.0.0/24".into(), 26)
        );
        assert_eq!(v4.subnet_min, Ipv4Addr::new(10, 1, 0, 64));
        assert_eq!(v4.subnet_max, Ipv4Addr::new(10, 1, 0, 192));
        assert_eq!(c.backend_type, "host-gw");
        assert_eq!(
            parse(r#"{"Network":"10.1.0.0/16"}"#).unwrap().backend_type,
            "udp"
        );
    }

    #[test]
    fn default_subnet_len_follows_network_size() {
        let len = |n: &str| {
            parse(&format!(r#"{{"Network":"{n}"}}"#))
                .unwrap()
                .v4
                .unwrap()
                .subnet_len
        };
        assert_eq!(len("10.0.0.0/8"), 24);
        assert_eq!(len("10.0.0.0/22"), 24);
        assert_eq!(len("10.0.0.0/23"), 25);
        assert_eq!(len("10.0.0.0/28"), 30);
        // An unmasked network is masked, as Go's ParseCIDR does.
        let c = parse(r#"{"Network":"10.5.7.9/16"}"#).unwrap();
        assert_eq!(c.v4.unwrap().network.to_string(), "10.5.0.0/16");
    }

    #[test]
    fn go_validation_messages() {
        assert_eq!(
            err(r#"{"Backend":{"Type":"vxlan"}}"#),
            "please define a correct Network parameter in the flannel config"
        );
        assert_eq!(
            err(r#"{"Network":"10.0.0.0/29"}"#),
            "network is too small. Minimum useful network prefix is /28"
        );
        assert_eq!(
            err(r#"{"Network":"10.0.0.0/16","SubnetLen":31}"#),
            "SubnetLen must be less than /31"
        );
        assert_eq!(
            err(r#"{"Network":"10.0.0.0/16","SubnetLen":17}"#),
            "network must be able to accommodate at least four subnets"
        );
        assert_eq!(
            err(r#"{"Network":"10.0.0.0/16","SubnetMin":"10.1.0.0"}"#),
            "SubnetMin is not in the range of the Network"
        );
        assert_eq!(
            err(r#"{"Network":"10.0.0.0/16","SubnetMax":"10.0.3.1"}"#),
            "SubnetMax is not on a SubnetLen boundary: 10.0.3.1"
        );
        assert!(err(r#"{"Network":"10.0.0.0/16","SubnetLen":"24"}"#).starts_with("invalid JSON"));
        assert!(err(r#"{"Network":"nonsense"}"#).contains("not an IPv4 CIDR"));
        assert!(err(r#"{"Network":"10.0.0.0/16","Backend":"vxlan"}"#).contains("Backend"));
        assert!(err("not json").starts_with("invalid JSON"));
    }

    #[test]
    fn an_array_is_no_config() {
        // Before: serde filled the fields in order, so this was a config (Go refuses it).
        assert!(
            err(r#" [true, false, "10.5.0.0/16"]"#).contains("an array, not an object"),
            "{}",
            err(r#"[true, false, "10.5.0.0/16"]"#)
        );
    }

    #[test]
    fn unusable_or_dangerous_ranges_refused_though_go_takes_them() {
        // Before: accepted, then every allocation failed ("out of subnets", exit 1).
        assert_eq!(
            err(r#"{"Network":"10.0.0.0/16","SubnetMin":"10.0.20.0","SubnetMax":"10.0.10.0"}"#),
            "SubnetMin 10.0.20.0 is above SubnetMax 10.0.10.0: no subnet to lease"
        );
        // Before: accepted; a peer's lease 0.0.0.0-24.. or 127.0.0.0-24 became a route.
        for n in [
            "0.0.0.0/0",
            "0.0.0.0/8",
            "127.0.0.0/16",
            "224.0.0.0/4",
            "240.0.0.0/8",
        ] {
            assert!(
                err(&format!(r#"{{"Network":"{n}"}}"#)).contains("refusing to route it"),
                "{n}"
            );
        }
        assert!(parse(r#"{"Network":"100.64.0.0/10"}"#).is_ok());
        for n in ["::/0", "ff00::/16", "::/64"] {
            let c = format!(r#"{{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"{n}"}}"#);
            assert!(err(&c).contains("refusing to route it"), "{n}");
        }
        assert!(
            err(r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc00:0:0:9::","IPv6SubnetMax":"fc00:0:0:2::"}"#)
                .contains("above IPv6SubnetMax")
        );
        // A huge value is not echoed whole.
        let huge = format!(r#"{{"Network":"{}"}}"#, "9".repeat(1 << 20));
        assert!(err(&huge).len() < 300);
        let huge = format!(
            r#"{{"Network":"10.5.0.0/16","SubnetLen":"{}"}}"#,
            "9".repeat(1 << 20)
        );
        assert!(err(&huge).len() < 500, "{}", err(&huge).len());
    }

    #[test]
    fn min_max_given() {
        let c =
            parse(r#"{"Network":"10.0.0.0/16","SubnetMin":"10.0.10.0","SubnetMax":"10.0.20.0"}"#)
                .unwrap()
                .v4
                .unwrap();
        assert_eq!(
            (c.subnet_min, c.subnet_max),
            (Ipv4Addr::new(10, 0, 10, 0), Ipv4Addr::new(10, 0, 20, 0))
        );
    }

    #[test]
    fn dual_stack_defaults() {
        let c = parse(
            r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"host-gw"}}"#,
        )
        .unwrap();
        let v6 = c.v6.unwrap();
        assert_eq!(v6.subnet_len, 64);
        assert_eq!(v6.subnet_min, "fc00:0:0:1::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            v6.subnet_max,
            "fc00:0:0:ffff::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","EnableIPv6":true}"#),
            "please define a correct IPv6Network parameter in the flannel config"
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/125"}"#),
            "IPv6Network is too small. Minimum useful network prefix is /124"
        );
        // kube's net-conf.json: the ranges are not checked (the podCIDRs are the subnets).
        let k = NetworkConfig::parse_kube(
            br#"{"Network":"10.5.0.0/29","SubnetLen":99,"SubnetMin":"1.2.3.4","EnableIPv6":true,"IPv6Network":"fc00::/126"}"#,
        )
        .unwrap();
        assert_eq!(k.v4.unwrap().network.to_string(), "10.5.0.0/29");
        assert!(NetworkConfig::parse_kube(br#"{"Network":"127.0.0.0/8"}"#).is_err());
        assert!(NetworkConfig::parse_kube(br#"{"Backend":{"Type":"vxlan"}}"#).is_err());
        // IPv6 only: a config (kube mode takes it; etcd refuses it, see etcd::manager).
        let c =
            parse(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}"#).unwrap();
        assert!(c.v4.is_none() && c.v6.is_some());
        assert!(err(r#"{"EnableIPv4":false,"Network":"10.5.0.0/16"}"#).contains("both false"));
    }
}
