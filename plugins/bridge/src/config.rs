//! The bridge plugin's config: every key of the reference, validated before anything is
//! touched.

use std::collections::BTreeSet;

use cni_common::result::Dns;
use cni_common::{NetConf, validate};
use serde::Deserialize;

use crate::error::BridgeError;

pub const DEFAULT_BRIDGE: &str = "cni0";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConf {
    pub network: String,
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub force_address: bool,
    pub ip_masq: bool,
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub promisc: bool,
    /// Access VLAN (0 = none).
    pub vlan: u16,
    /// Tagged VLANs, sorted and deduplicated.
    pub vlan_trunk: Vec<u16>,
    pub preserve_default_vlan: bool,
    pub enable_dad: bool,
    pub mac_spoof_check: bool,
    pub disable_container_interface: bool,
    pub port_isolation: bool,
    /// `ipam.type`; `None` is L2-only mode.
    pub ipam_type: Option<String>,
    /// The config's own `dns`, which replaces IPAM's when it has any field.
    pub dns: Option<Dns>,
    /// The container interface's MAC, from CNI_ARGS `MAC`, `args.cni.mac` or
    /// `runtimeConfig.mac` (later wins).
    pub mac: Option<[u8; 6]>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    force_address: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    ip_masq_backend: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    vlan: Option<i64>,
    #[serde(default)]
    vlan_trunk: Vec<Trunk>,
    /// The Go plugin defaults this to true.
    #[serde(default = "default_true")]
    preserve_default_vlan: bool,
    #[serde(default, rename = "enabledad")]
    enable_dad: bool,
    #[serde(default, rename = "macspoofchk")]
    mac_spoof_check: bool,
    #[serde(default)]
    disable_container_interface: bool,
    #[serde(default)]
    port_isolation: bool,
    #[serde(default)]
    args: Option<WireArgs>,
    #[serde(default)]
    runtime_config: Option<WireRuntime>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Trunk {
    #[serde(default)]
    id: Option<i64>,
    #[serde(default, rename = "minID")]
    min_id: Option<i64>,
    #[serde(default, rename = "maxID")]
    max_id: Option<i64>,
}

#[derive(Deserialize)]
struct WireArgs {
    #[serde(default)]
    cni: Option<WireMac>,
}

#[derive(Deserialize)]
struct WireMac {
    #[serde(default)]
    mac: Option<String>,
}

#[derive(Deserialize)]
struct WireRuntime {
    #[serde(default)]
    mac: Option<String>,
}

fn default_true() -> bool {
    true
}

fn config_err(msg: impl Into<String>) -> BridgeError {
    BridgeError::Config(msg.into())
}

pub fn parse_mac(s: &str) -> Result<[u8; 6], BridgeError> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    let valid = parts.len() == 6
        && parts
            .iter()
            .zip(mac.iter_mut())
            .all(|(p, b)| p.len() == 2 && u8::from_str_radix(p, 16).map(|v| *b = v).is_ok());
    if !valid {
        return Err(config_err(format!(
            "invalid MAC address \"{}\"",
            s.escape_debug()
        )));
    }
    if mac[0] & 1 == 1 {
        return Err(config_err(format!(
            "MAC address {s} is a multicast address"
        )));
    }
    Ok(mac)
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn vlan_id(v: i64, what: &str) -> Result<u16, BridgeError> {
    u16::try_from(v)
        .ok()
        .filter(|v| (1..=4094).contains(v))
        .ok_or_else(|| config_err(format!("incorrect trunk {what} parameter")))
}

fn trunk_ids(trunks: &[Trunk]) -> Result<Vec<u16>, BridgeError> {
    let mut ids = BTreeSet::new();
    for t in trunks {
        match (t.min_id, t.max_id) {
            (Some(min), Some(max)) => {
                let (min, max) = (vlan_id(min, "minID")?, vlan_id(max, "maxID")?);
                if min > max {
                    return Err(config_err("minID is greater than maxID in trunk parameter"));
                }
                ids.extend(min..=max);
            }
            (None, None) => {}
            (None, Some(_)) => {
                return Err(config_err(
                    "minID and maxID should be configured simultaneously, minID is missing",
                ));
            }
            (Some(_), None) => {
                return Err(config_err(
                    "minID and maxID should be configured simultaneously, maxID is missing",
                ));
            }
        }
        if let Some(id) = t.id {
            ids.insert(vlan_id(id, "id")?);
        }
    }
    Ok(ids.into_iter().collect())
}

impl BridgeConf {
    pub fn load(conf: &NetConf, cni_args: &str) -> Result<BridgeConf, BridgeError> {
        let wire: Wire = conf.plugin_config()?;
        let bridge = wire.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_owned());
        validate::interface_name(&bridge).map_err(|e| {
            config_err(format!(
                "invalid bridge name \"{}\": {e}",
                bridge.escape_debug()
            ))
        })?;
        match wire.ip_masq_backend.as_deref() {
            None | Some("") | Some("nftables") | Some("iptables") => {}
            Some(other) => {
                return Err(config_err(format!("unknown ipmasq backend \"{other}\"")));
            }
        }
        let vlan = match wire.vlan.unwrap_or(0) {
            v @ 0..=4094 => u16::try_from(v).unwrap_or(0),
            v => {
                return Err(config_err(format!(
                    "invalid VLAN ID {v} (must be between 0 and 4094)"
                )));
            }
        };
        if wire.hairpin_mode && wire.promisc_mode {
            return Err(config_err(
                "cannot set hairpin mode and promiscuous mode at the same time",
            ));
        }
        let ipam_type = conf.ipam_type.clone().filter(|t| !t.is_empty());
        if wire.disable_container_interface && ipam_type.is_some() {
            return Err(config_err(
                "cannot use IPAM when DisableContainerInterface flag is set",
            ));
        }
        if wire.mtu.is_some_and(|m| !(68..=65535).contains(&m)) {
            return Err(config_err(format!(
                "invalid MTU {}: must be between 68 and 65535",
                wire.mtu.unwrap_or_default()
            )));
        }
        let env_mac = cni_common::args::parse(cni_args, &["MAC"])?.remove("MAC");
        let mac_text = wire
            .runtime_config
            .and_then(|r| r.mac)
            .or_else(|| wire.args.and_then(|a| a.cni).and_then(|c| c.mac))
            .or(env_mac)
            .filter(|m| !m.is_empty());
        let mac = mac_text.as_deref().map(parse_mac).transpose()?;
        Ok(BridgeConf {
            network: conf.name.clone(),
            bridge,
            is_gateway: wire.is_gateway || wire.is_default_gateway,
            is_default_gateway: wire.is_default_gateway,
            force_address: wire.force_address,
            ip_masq: wire.ip_masq,
            mtu: wire.mtu.filter(|m| *m != 0),
            hairpin: wire.hairpin_mode,
            promisc: wire.promisc_mode,
            vlan,
            vlan_trunk: trunk_ids(&wire.vlan_trunk)?,
            preserve_default_vlan: wire.preserve_default_vlan,
            enable_dad: wire.enable_dad,
            mac_spoof_check: wire.mac_spoof_check,
            disable_container_interface: wire.disable_container_interface,
            port_isolation: wire.port_isolation,
            ipam_type,
            dns: conf.dns.clone().filter(|d| !d.is_empty()),
            mac,
        })
    }

    /// The config for DEL, which must not get stuck on it: when the bridge keys no longer
    /// load (a MAC or VLAN a runtime sent that we cannot read, a key of the wrong type), DEL
    /// still removes what the attachment has. Our firewall chains are found by name, so both
    /// kinds are removed whether or not the ADD made them; IPAM is still asked to release.
    pub fn load_for_del(conf: &NetConf, cni_args: &str) -> BridgeConf {
        Self::load(conf, cni_args).unwrap_or_else(|e| {
            cni_common::debug_log!("DEL with an unreadable config ({e}): removing by name");
            BridgeConf {
                network: conf.name.clone(),
                bridge: DEFAULT_BRIDGE.to_owned(),
                is_gateway: false,
                is_default_gateway: false,
                force_address: false,
                ip_masq: true,
                mtu: None,
                hairpin: false,
                promisc: false,
                vlan: 0,
                vlan_trunk: Vec::new(),
                preserve_default_vlan: true,
                enable_dad: false,
                mac_spoof_check: true,
                disable_container_interface: false,
                port_isolation: false,
                ipam_type: conf.ipam_type.clone().filter(|t| !t.is_empty()),
                dns: None,
                mac: None,
            }
        })
    }

    pub fn uses_vlans(&self) -> bool {
        self.vlan != 0 || !self.vlan_trunk.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str, args: &str) -> Result<BridgeConf, BridgeError> {
        BridgeConf::load(&NetConf::parse(json.as_bytes()).unwrap(), args)
    }

    fn err(json: &str) -> String {
        load(json, "").unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let c = load(r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#, "").unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && !c.ip_masq && c.ipam_type.is_none() && c.mtu.is_none());
        assert!(c.preserve_default_vlan, "the Go plugin's default is true");
        let c = load(
            r#"{"cniVersion":"1.0.0","name":"n","isDefaultGateway":true,"mtu":1450,
                "ipam":{"type":"host-local"}}"#,
            "",
        )
        .unwrap();
        assert!(c.is_gateway, "isDefaultGateway implies isGateway");
        assert_eq!(c.mtu, Some(1450));
        assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
    }

    #[test]
    fn mac_sources_later_wins() {
        let base = r#""cniVersion":"1.0.0","name":"n""#;
        let c = load(
            &format!("{{{base}}}"),
            "IgnoreUnknown=1;MAC=02:00:00:00:00:01",
        )
        .unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 1]));
        let c = load(
            &format!(r#"{{{base},"args":{{"cni":{{"mac":"02:00:00:00:00:02"}}}}}}"#),
            "MAC=02:00:00:00:00:01",
        )
        .unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 2]));
        let c = load(
            &format!(
                r#"{{{base},"args":{{"cni":{{"mac":"02:00:00:00:00:02"}}}},"runtimeConfig":{{"mac":"02:00:00:00:00:03"}}}}"#
            ),
            "",
        )
        .unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 3]));
        assert_eq!(
            err(&format!(r#"{{{base},"runtimeConfig":{{"mac":"zz"}}}}"#)),
            "invalid MAC address \"zz\""
        );
        assert_eq!(
            err(&format!(
                r#"{{{base},"runtimeConfig":{{"mac":"01:00:00:00:00:01"}}}}"#
            )),
            "MAC address 01:00:00:00:00:01 is a multicast address"
        );
    }

    #[test]
    fn reference_errors() {
        let e = |extra: &str| err(&format!(r#"{{"cniVersion":"1.0.0","name":"n",{extra}}}"#));
        assert_eq!(
            e(r#""vlan":5000"#),
            "invalid VLAN ID 5000 (must be between 0 and 4094)"
        );
        assert_eq!(
            e(r#""hairpinMode":true,"promiscMode":true"#),
            "cannot set hairpin mode and promiscuous mode at the same time"
        );
        assert_eq!(
            e(r#""disableContainerInterface":true,"ipam":{"type":"host-local"}"#),
            "cannot use IPAM when DisableContainerInterface flag is set"
        );
        assert_eq!(
            e(r#""ipMasqBackend":"pf""#),
            "unknown ipmasq backend \"pf\""
        );
        assert_eq!(
            e(r#""vlanTrunk":[{"id":0}]"#),
            "incorrect trunk id parameter"
        );
        assert_eq!(
            e(r#""vlanTrunk":[{"minID":20,"maxID":10}]"#),
            "minID is greater than maxID in trunk parameter"
        );
        assert_eq!(
            e(r#""vlanTrunk":[{"maxID":10}]"#),
            "minID and maxID should be configured simultaneously, minID is missing"
        );
        assert!(e(r#""bridge":"a/b""#).starts_with("invalid bridge name"));
        assert!(e(r#""mtu":10"#).starts_with("invalid MTU 10"));
    }

    #[test]
    fn trunks_are_sorted_and_deduplicated() {
        let c = load(
            r#"{"cniVersion":"1.0.0","name":"n","vlanTrunk":[{"id":30},{"minID":10,"maxID":12},{"id":11}]}"#,
            "",
        )
        .unwrap();
        assert_eq!(c.vlan_trunk, [10, 11, 12, 30]);
        assert!(c.uses_vlans());
    }

    #[test]
    fn keys_in_any_case_as_go_reads_them() {
        let c = load(
            r#"{"cniVersion":"1.0.0","name":"n","type":"bridge","Bridge":"br9","IsGateway":true,
                "IPMasq":true,"MTU":1400,"HairpinMode":true,"IPAM":{"Type":"host-local"},
                "RuntimeConfig":{"Mac":"0a:00:00:00:00:01"}}"#,
            "",
        )
        .unwrap();
        assert_eq!(c.bridge, "br9");
        assert!(c.is_gateway && c.ip_masq && c.hairpin);
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
        assert_eq!(c.mac, Some([10, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn del_gets_by_with_an_unreadable_config() {
        let conf = NetConf::parse_with(
            br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"host-local"},
                 "runtimeConfig":{"mac":7},"vlan":"x"}"#,
            cni_common::config::Strictness::ForDel,
        )
        .unwrap();
        assert!(BridgeConf::load(&conf, "").is_err());
        let c = BridgeConf::load_for_del(&conf, "");
        assert_eq!(c.network, "n");
        assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
        assert!(
            c.ip_masq && c.mac_spoof_check,
            "both kinds of chains are removed by name"
        );
        let good = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#).unwrap();
        assert!(!BridgeConf::load_for_del(&good, "").ip_masq);
    }
}
