//! portmap's config: the port mappings from `runtimeConfig`, the reference's keys, and
//! nftables-style conditions turned into rule statements.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cni_common::NetConf;
use cni_nft::{Dir, Match, Op};
use ipnetwork::IpNetwork;
use serde::Deserialize;

use crate::error::PortmapError;

/// Where DEL markers live: one empty file per attachment that has rules, so that a DEL
/// without `portMappings` still finds them and a DEL of a pod without any costs no `nft`.
pub const DEFAULT_STATE_DIR: &str = "/run/cni-rs/portmap";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// `None`: every local address.
    pub host_ip: Option<IpAddr>,
}

#[derive(Debug, Clone)]
pub struct PortmapConf {
    pub network: String,
    pub mappings: Vec<Mapping>,
    pub snat: bool,
    pub masq_all: bool,
    pub conditions_v4: Vec<Match>,
    pub conditions_v6: Vec<Match>,
    pub state_dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default)]
    snat: Option<bool>,
    #[serde(default)]
    masq_all: bool,
    #[serde(default)]
    mark_masq_bit: Option<i64>,
    #[serde(default)]
    external_set_mark_chain: Option<String>,
    #[serde(default)]
    conditions_v4: Option<Vec<String>>,
    #[serde(default)]
    conditions_v6: Option<Vec<String>>,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    state_dir: Option<String>,
    #[serde(default)]
    runtime_config: Option<WireRuntime>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRuntime {
    #[serde(default)]
    port_mappings: Vec<WireMapping>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMapping {
    // Missing is 0 in Go, which the range check below then refuses with Go's message.
    #[serde(default)]
    host_port: i64,
    #[serde(default)]
    container_port: i64,
    #[serde(default)]
    protocol: String,
    #[serde(default, rename = "hostIP")]
    host_ip: Option<String>,
}

fn err(msg: impl Into<String>) -> PortmapError {
    PortmapError::Config(msg.into())
}

fn port(v: i64, what: &str) -> Result<u16, PortmapError> {
    u16::try_from(v)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| err(format!("Invalid {what} port number: {v}")))
}

impl WireMapping {
    fn validate(&self) -> Result<Mapping, PortmapError> {
        let protocol = match self.protocol.to_ascii_lowercase().as_str() {
            "" | "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            other => {
                return Err(err(format!(
                    "Invalid protocol \"{}\": must be tcp, udp or sctp",
                    other.escape_debug()
                )));
            }
        };
        let host_ip = match self.host_ip.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|_| err(format!("Invalid host IP \"{}\"", s.escape_debug())))?;
                (!ip.is_unspecified()).then_some(ip)
            }
        };
        Ok(Mapping {
            host_port: port(self.host_port, "host")?,
            container_port: port(self.container_port, "container")?,
            protocol,
            host_ip,
        })
    }
}

/// Parses nftables-style condition tokens (`["ip", "saddr", "!=", "10.0.0.0/8"]`) into
/// matches. Supported selectors: `ip`/`ip6` `saddr`/`daddr`, `iifname`, `oifname`,
/// `meta mark`; operators `==` (default) and `!=`.
pub fn parse_conditions(tokens: &[String], v4: bool) -> Result<Vec<Match>, PortmapError> {
    if tokens
        .first()
        .is_some_and(|t| t.starts_with('-') || t.starts_with('!'))
    {
        return Err(err(format!(
            "iptables-style conditions {tokens:?} are not supported: this portmap uses nftables; \
             write nftables matches such as [\"ip\", \"saddr\", \"10.0.0.0/8\"]"
        )));
    }
    let family = if v4 { "ip" } else { "ip6" };
    let mut out = Vec::new();
    let mut i = 0;
    let next = |i: &mut usize| -> Option<&str> {
        let t = tokens.get(*i).map(String::as_str);
        *i += 1;
        t
    };
    while i < tokens.len() {
        let first = next(&mut i).unwrap_or_default();
        let selector = match first {
            "ip" | "ip6" => {
                if first != family {
                    return Err(err(format!(
                        "condition selector {first} in conditions{} does not match the family",
                        if v4 { "V4" } else { "V6" }
                    )));
                }
                match next(&mut i) {
                    Some("saddr") => Selector::Addr(Dir::Source),
                    Some("daddr") => Selector::Addr(Dir::Destination),
                    other => return Err(unsupported(first, other)),
                }
            }
            "iifname" => Selector::Ifname(Dir::Source),
            "oifname" => Selector::Ifname(Dir::Destination),
            "meta" => match next(&mut i) {
                Some("mark") => Selector::Mark,
                other => return Err(unsupported(first, other)),
            },
            other => return Err(unsupported(other, None)),
        };
        let mut op = Op::Eq;
        let mut value =
            next(&mut i).ok_or_else(|| err(format!("condition {first} has no value")))?;
        if value == "!=" || value == "==" {
            op = if value == "!=" { Op::Neq } else { Op::Eq };
            value = next(&mut i).ok_or_else(|| err(format!("condition {first} has no value")))?;
        }
        out.push(match selector {
            Selector::Addr(dir) => {
                let net: IpNetwork = value
                    .parse()
                    .map_err(|_| err(format!("invalid address in condition: {value}")))?;
                if net.is_ipv4() != v4 {
                    return Err(err(format!(
                        "condition address {value} is of the other family"
                    )));
                }
                Match::Addr { dir, op, net }
            }
            Selector::Mark => Match::Mark {
                op,
                value: value
                    .strip_prefix("0x")
                    .map_or_else(|| value.parse().ok(), |h| u32::from_str_radix(h, 16).ok())
                    .ok_or_else(|| err(format!("invalid number in condition: {value}")))?,
            },
            Selector::Ifname(dir) => {
                let name = value.trim_matches('"');
                if !cni_nft::rule::valid_ifname(name) {
                    return Err(err(format!("invalid interface name in condition: {value}")));
                }
                Match::Ifname {
                    dir,
                    op,
                    name: name.to_owned(),
                }
            }
        });
    }
    Ok(out)
}

enum Selector {
    Addr(Dir),
    Ifname(Dir),
    Mark,
}

fn unsupported(first: &str, second: Option<&str>) -> PortmapError {
    err(format!(
        "unsupported nftables condition \"{first}{}\": supported are ip/ip6 saddr/daddr, \
         iifname, oifname and meta mark",
        second.map(|s| format!(" {s}")).unwrap_or_default()
    ))
}

impl PortmapConf {
    pub fn load(conf: &NetConf) -> Result<PortmapConf, PortmapError> {
        let wire: Wire = conf
            .plugin_config()
            .map_err(|e| err(format!("failed to parse config: {e}")))?;
        match wire.backend.as_deref() {
            None | Some("") | Some("nftables") | Some("iptables") => {}
            Some(other) => return Err(err(format!("unrecognized backend \"{other}\""))),
        }
        if let Some(bit) = wire.mark_masq_bit {
            if !(0..=31).contains(&bit) {
                return Err(err("MasqMarkBit must be between 0 and 31"));
            }
            if wire.external_set_mark_chain.is_some() {
                return Err(err("Cannot specify externalSetMarkChain and markMasqBit"));
            }
        }
        let mappings = wire
            .runtime_config
            .map(|r| r.port_mappings)
            .unwrap_or_default()
            .iter()
            .map(WireMapping::validate)
            .collect::<Result<Vec<_>, _>>()?;
        let state_dir = match wire.state_dir.as_deref() {
            None | Some("") => PathBuf::from(DEFAULT_STATE_DIR),
            Some(s) if Path::new(s).is_absolute() && !s.contains('\0') => PathBuf::from(s),
            Some(s) => {
                return Err(err(format!(
                    "stateDir must be an absolute path, not \"{}\"",
                    s.escape_debug()
                )));
            }
        };
        Ok(PortmapConf {
            network: conf.name.clone(),
            mappings,
            snat: wire.snat.unwrap_or(true),
            masq_all: wire.masq_all,
            conditions_v4: parse_conditions(&wire.conditions_v4.unwrap_or_default(), true)?,
            conditions_v6: parse_conditions(&wire.conditions_v6.unwrap_or_default(), false)?,
            state_dir,
        })
    }
}

impl PortmapConf {
    /// The config for DEL, which must not get stuck on it: when it no longer loads (a runtime
    /// sent mappings we cannot read, a key of the wrong type), the network (checked by the
    /// skeleton) and the state dir still say which chains and marker are the attachment's.
    /// The second value is false then: the mappings are unknown.
    pub fn load_for_del(conf: &NetConf) -> (PortmapConf, bool) {
        match Self::load(conf) {
            Ok(c) => (c, true),
            Err(e) => {
                cni_common::debug_log!("DEL with an unreadable config ({e}): removing by name");
                let state_dir = cni_common::gojson::get(conf.object(), "stateDir")
                    .and_then(serde_json::Value::as_str)
                    .filter(|s| Path::new(s).is_absolute() && !s.contains('\0'))
                    .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), PathBuf::from);
                let fallback = PortmapConf {
                    network: conf.name.clone(),
                    mappings: Vec::new(),
                    snat: true,
                    masq_all: false,
                    conditions_v4: Vec::new(),
                    conditions_v6: Vec::new(),
                    state_dir,
                };
                (fallback, false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(extra: &str) -> Result<PortmapConf, PortmapError> {
        let json = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"portmap"{extra}}}"#);
        PortmapConf::load(&NetConf::parse(json.as_bytes()).unwrap())
    }

    fn msg(extra: &str) -> String {
        load(extra).unwrap_err().to_string()
    }

    #[test]
    fn mappings_and_defaults() {
        let c = load(
            r#","runtimeConfig":{"portMappings":[
                {"hostPort":8080,"containerPort":80,"protocol":"tcp"},
                {"hostPort":5353,"containerPort":53,"protocol":"UDP","hostIP":"127.0.0.1"},
                {"hostPort":9,"containerPort":9,"protocol":"sctp","hostIP":"0.0.0.0"}]}"#,
        )
        .unwrap();
        assert!(c.snat && !c.masq_all);
        assert_eq!(c.mappings.len(), 3);
        assert_eq!(c.mappings[1].protocol, Protocol::Udp);
        assert_eq!(c.mappings[1].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(c.mappings[2].host_ip, None, "0.0.0.0 means every address");
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert!(load("").unwrap().mappings.is_empty());
    }

    #[test]
    fn reference_errors() {
        let m = |hp: i64, cp: i64| {
            format!(
                r#","runtimeConfig":{{"portMappings":[{{"hostPort":{hp},"containerPort":{cp},"protocol":"tcp"}}]}}"#
            )
        };
        assert_eq!(msg(&m(0, 80)), "Invalid host port number: 0");
        assert_eq!(msg(&m(80, -1)), "Invalid container port number: -1");
        assert_eq!(msg(&m(70000, 80)), "Invalid host port number: 70000");
        assert_eq!(
            msg(r#","markMasqBit":40"#),
            "MasqMarkBit must be between 0 and 31"
        );
        assert_eq!(
            msg(r#","markMasqBit":13,"externalSetMarkChain":"KUBE-MARK-MASQ""#),
            "Cannot specify externalSetMarkChain and markMasqBit"
        );
        assert_eq!(msg(r#","backend":"pf""#), "unrecognized backend \"pf\"");
        assert!(
            msg(r#","conditionsV4":["-s","1.2.3.4"]"#).starts_with("iptables-style conditions")
        );
        assert!(msg(r#","runtimeConfig":{"portMappings":[{"hostPort":1,"containerPort":1,"protocol":"icmp"}]}"#)
            .starts_with("Invalid protocol \"icmp\""));
    }

    #[test]
    fn nftables_conditions() {
        let toks = |s: &[&str]| s.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let c = parse_conditions(
            &toks(&["ip", "saddr", "!=", "10.0.0.0/8", "iifname", "\"eth0\""]),
            true,
        )
        .unwrap();
        let text: Vec<String> = c.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["ip saddr != 10.0.0.0/8", "iifname \"eth0\""]);
        assert!(parse_conditions(&toks(&["iifname", "a-name-too-long-for-linux"]), true).is_err());
        assert!(parse_conditions(&toks(&["ip6", "daddr", "fd00::1"]), false).is_ok());
        assert!(parse_conditions(&toks(&["ip", "daddr", "fd00::1"]), true).is_err());
        assert!(
            parse_conditions(&toks(&["ct", "state", "new"]), true)
                .unwrap_err()
                .to_string()
                .starts_with("unsupported nftables condition \"ct\"")
        );
        assert!(parse_conditions(&toks(&["meta", "mark", "0x4000"]), true).is_ok());
    }

    #[test]
    fn containerd_spelling_of_port_mappings() {
        // What containerd's CRI sends (go-cni's untagged struct), and kubelet's upper case.
        let c = load(
            r#","RuntimeConfig":{"portMappings":[
                {"HostPort":8080,"ContainerPort":80,"Protocol":"tcp","HostIP":""},
                {"HostPort":5353,"ContainerPort":53,"Protocol":"UDP","HostIP":"127.0.0.1"}]},
               "StateDir":"/tmp/pm","SNAT":false"#,
        )
        .unwrap();
        assert_eq!(
            c.mappings[0],
            Mapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            }
        );
        assert_eq!(c.mappings[1].protocol, Protocol::Udp);
        assert_eq!(c.mappings[1].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/pm"));
        assert!(!c.snat);
        // A missing port is 0 in Go, refused with Go's message.
        assert_eq!(
            msg(r#","runtimeConfig":{"portMappings":[{"ContainerPort":80}]}"#),
            "Invalid host port number: 0"
        );
    }

    #[test]
    fn del_gets_by_with_an_unreadable_config() {
        let conf = |extra: &str| {
            let json = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"portmap"{extra}}}"#);
            NetConf::parse_with(json.as_bytes(), cni_common::config::Strictness::ForDel).unwrap()
        };
        let (c, known) = PortmapConf::load_for_del(&conf(
            r#","stateDir":"/s","runtimeConfig":{"portMappings":[{"hostPort":"x"}]}"#,
        ));
        assert!(!known);
        assert_eq!(c.state_dir, PathBuf::from("/s"));
        assert_eq!(c.network, "n");
        let (c, known) = PortmapConf::load_for_del(&conf(r#","stateDir":7,"masqAll":"yes""#));
        assert!(!known);
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        let (c, known) = PortmapConf::load_for_del(&conf(
            r#","runtimeConfig":{"portMappings":[{"HostPort":1,"ContainerPort":2}]}"#,
        ));
        assert!(known);
        assert_eq!(c.mappings.len(), 1);
        // runtimeConfig that is not even an object: the skeleton lets DEL through too.
        let (_, known) = PortmapConf::load_for_del(&conf(r#","runtimeConfig":[1]"#));
        assert!(!known);
    }
}
