//! flannel's own keys, and the delegate config built from them and subnet.env exactly as the
//! reference builds it (so that its saved form is byte-identical).

use std::path::PathBuf;

use cni_common::NetConf;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::FlannelError;
use crate::subnet_env::SubnetEnv;

pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";

#[derive(Debug, Clone)]
pub struct FlannelConf {
    pub network: String,
    /// The config's `cniVersion` as written (empty: none).
    pub cni_version: String,
    pub subnet_file: PathBuf,
    pub data_dir: PathBuf,
    pub delegate: Map<String, Value>,
    pub ipam: Map<String, Value>,
    pub runtime_config: Option<Value>,
}

fn err(msg: impl Into<String>) -> FlannelError {
    FlannelError::Config(msg.into())
}

/// flannel's keys as the Go plugin's struct declares them; decoded as Go decodes it (a
/// `"SubnetFile"` is `subnetFile`). The values stay untyped here so that a wrong type gets
/// the reference's message below. `delegate` and `ipam` are maps in Go too: their own keys
/// are kept as written.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default)]
    cni_version: Option<Value>,
    #[serde(default)]
    subnet_file: Option<Value>,
    #[serde(default)]
    data_dir: Option<Value>,
    #[serde(default)]
    delegate: Option<Value>,
    #[serde(default)]
    ipam: Option<Value>,
    #[serde(default)]
    runtime_config: Option<Value>,
    #[serde(default)]
    hairpin_mode: Option<Value>,
    #[serde(default)]
    is_default_gateway: Option<Value>,
}

fn path_key(value: Option<&Value>, key: &str, default: &str) -> Result<PathBuf, FlannelError> {
    match value {
        None | Some(Value::Null) => Ok(PathBuf::from(default)),
        Some(Value::String(s)) if s.is_empty() => Ok(PathBuf::from(default)),
        Some(Value::String(s)) if s.starts_with('/') && !s.contains('\0') => Ok(PathBuf::from(s)),
        Some(other) => Err(err(format!("{key} must be an absolute path, not {other}"))),
    }
}

fn object(value: Option<Value>, key: &str) -> Result<Map<String, Value>, FlannelError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(err(format!("'{key}' must be a dictionary, not {other}"))),
    }
}

impl FlannelConf {
    pub fn load(conf: &NetConf) -> Result<FlannelConf, FlannelError> {
        let wire: Wire = conf.plugin_config()?;
        let mut delegate = object(wire.delegate, "delegate")?;
        for key in ["name", "ipam"] {
            if delegate.contains_key(key) {
                return Err(err(format!(
                    "'delegate' dictionary must not have '{key}' field, it'll be set by flannel"
                )));
            }
        }
        if let Some(t) = delegate.get("type")
            && !t.is_string()
        {
            return Err(err(
                "'delegate' dictionary must have a 'type' field of type string",
            ));
        }
        // Older configs put these next to `delegate`; the delegate's own value wins.
        for (key, value) in [
            ("hairpinMode", wire.hairpin_mode),
            ("isDefaultGateway", wire.is_default_gateway),
        ] {
            if let Some(v) = value
                && !delegate.contains_key(key)
            {
                delegate.insert(key.to_owned(), v);
            }
        }
        Ok(FlannelConf {
            network: conf.name.clone(),
            cni_version: wire
                .cni_version
                .as_ref()
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            subnet_file: path_key(wire.subnet_file.as_ref(), "subnetFile", DEFAULT_SUBNET_FILE)?,
            data_dir: path_key(wire.data_dir.as_ref(), "dataDir", DEFAULT_DATA_DIR)?,
            delegate,
            ipam: object(wire.ipam, "ipam")?,
            runtime_config: wire.runtime_config,
        })
    }

    /// The config for DEL, which must not get stuck on it: when flannel's keys no longer load,
    /// the saved delegate config is still found by container ID (in `dataDir` if that one
    /// key is usable, else the default) and DEL goes on with it.
    pub fn load_for_del(conf: &NetConf) -> FlannelConf {
        Self::load(conf).unwrap_or_else(|e| {
            cni_common::debug_log!("DEL with an unreadable config ({e}): saved config by ID");
            let key = |k: &str, default: &str| {
                path_key(cni_common::gojson::get(conf.object(), k), k, default)
                    .unwrap_or_else(|_| PathBuf::from(default))
            };
            FlannelConf {
                network: conf.name.clone(),
                cni_version: conf.version.to_string(),
                subnet_file: key("subnetFile", DEFAULT_SUBNET_FILE),
                data_dir: key("dataDir", DEFAULT_DATA_DIR),
                delegate: Map::new(),
                ipam: Map::new(),
                runtime_config: None,
            }
        })
    }

    /// The delegate config (the reference's doCmdAdd / getDelegateIPAM).
    pub fn delegate_config(&self, env: &SubnetEnv) -> Map<String, Value> {
        let mut d = self.delegate.clone();
        if let Some(rc) = &self.runtime_config {
            d.insert("runtimeConfig".into(), rc.clone());
        }
        d.insert("name".into(), json!(self.network));
        d.entry("type").or_insert_with(|| json!("bridge"));
        d.entry("ipMasq").or_insert_with(|| json!(!env.ip_masq));
        d.entry("mtu").or_insert_with(|| json!(env.mtu));
        if d.get("type") == Some(&json!("bridge")) {
            d.entry("isGateway").or_insert_with(|| json!(true));
        }
        if !self.cni_version.is_empty() {
            d.insert("cniVersion".into(), json!(self.cni_version));
        }
        let mut ipam = self.ipam.clone();
        ipam.entry("type").or_insert_with(|| json!("host-local"));
        let ranges: Vec<Value> = [env.subnet_v4, env.subnet_v6]
            .into_iter()
            .flatten()
            .map(|s| json!([{"subnet": s.to_string()}]))
            .collect();
        ipam.insert("ranges".into(), Value::Array(ranges));
        let mut routes: Vec<Value> = ipam
            .get("routes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        routes.extend(env.networks.iter().map(|n| json!({"dst": n.to_string()})));
        ipam.insert("routes".into(), Value::Array(routes));
        d.insert("ipam".into(), Value::Object(ipam));
        d
    }

    /// The delegate's plugin type.
    pub fn delegate_type(delegate: &Map<String, Value>) -> &str {
        delegate
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("bridge")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subnet_env;

    fn load(json: &str) -> Result<FlannelConf, FlannelError> {
        FlannelConf::load(&NetConf::parse(json.as_bytes()).unwrap())
    }

    #[test]
    fn delegate_is_built_and_saved_like_the_reference() {
        let c = load(
            r#"{"cniVersion":"0.3.1","name":"cbr0","type":"flannel",
                "delegate":{"hairpinMode":true,"isDefaultGateway":true,"bridge":"cnifl0"},
                "ipam":{"dataDir":"/tmp/x"}}"#,
        )
        .unwrap();
        let env = subnet_env::parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd44::/56\n\
             FLANNEL_IPV6_SUBNET=fd44:0:0:3::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .unwrap();
        let d = c.delegate_config(&env);
        // Byte for byte the reference's saved file for the same inputs.
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"bridge":"cnifl0","cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"dataDir":"/tmp/x","ranges":[[{"subnet":"10.244.3.0/24"}],[{"subnet":"fd44:0:0:3::/64"}]],"routes":[{"dst":"10.244.0.0/16"},{"dst":"fd44::/56"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}"#
        );
    }

    #[test]
    fn reference_errors() {
        let e = |d: &str| {
            load(&format!(
                r#"{{"cniVersion":"1.0.0","name":"n","delegate":{d}}}"#
            ))
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            e(r#"{"name":"x"}"#),
            "'delegate' dictionary must not have 'name' field, it'll be set by flannel"
        );
        assert_eq!(
            e(r#"{"ipam":{}}"#),
            "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel"
        );
        assert_eq!(
            e(r#"{"type":5}"#),
            "'delegate' dictionary must have a 'type' field of type string"
        );
        assert!(load(r#"{"cniVersion":"1.0.0","name":"n","dataDir":"rel"}"#).is_err());
    }

    #[test]
    fn top_level_hairpin_and_default_gateway_and_runtime_config() {
        let c = load(
            r#"{"cniVersion":"1.0.0","name":"n","hairpinMode":true,"isDefaultGateway":false,
                "delegate":{"isDefaultGateway":true},"runtimeConfig":{"portMappings":[]}}"#,
        )
        .unwrap();
        let env = subnet_env::parse("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n").unwrap();
        let d = c.delegate_config(&env);
        assert_eq!(d["hairpinMode"], json!(true));
        assert_eq!(d["isDefaultGateway"], json!(true));
        assert_eq!(d["ipMasq"], json!(true));
        assert_eq!(d["runtimeConfig"], json!({"portMappings": []}));
        assert_eq!(d["ipam"]["routes"], json!([{"dst": "10.1.0.0/16"}]));
    }

    #[test]
    fn the_delegates_own_keys_win_over_the_defaults() {
        let c = load(
            r#"{"name":"n","delegate":{"type":"ptp","mtu":1400,"ipMasq":true},
                "ipam":{"type":"static","routes":[{"dst":"192.168.0.0/16"}],
                        "ranges":[[{"subnet":"10.99.0.0/24"}]]}}"#,
        )
        .unwrap();
        let env = subnet_env::parse(
            "FLANNEL_IPV6_NETWORK=fd44::/56\nFLANNEL_IPV6_SUBNET=fd44:0:0:3::1/64\n\
             FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
        )
        .unwrap();
        let d = c.delegate_config(&env);
        assert_eq!(FlannelConf::delegate_type(&d), "ptp");
        assert_eq!((&d["mtu"], &d["ipMasq"]), (&json!(1400), &json!(true)));
        assert!(
            !d.contains_key("isGateway"),
            "isGateway is the bridge's key"
        );
        assert!(!d.contains_key("cniVersion"), "none in flannel's config");
        // ipam: its type kept, ranges replaced by flanneld's subnet, routes appended to.
        assert_eq!(
            Value::Object(d["ipam"].as_object().unwrap().clone()),
            json!({"type": "static", "ranges": [[{"subnet": "fd44:0:0:3::/64"}]],
                   "routes": [{"dst": "192.168.0.0/16"}, {"dst": "fd44::/56"}]})
        );
    }

    #[test]
    fn keys_in_any_case_as_go_reads_them() {
        let c = load(
            r#"{"cniVersion":"0.3.1","name":"cbr0","type":"flannel","SubnetFile":"/s/subnet.env",
                "DataDir":"/d","Delegate":{"hairpinMode":true},"IPAM":{"dataDir":"/i"},
                "RuntimeConfig":{"portMappings":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.subnet_file, PathBuf::from("/s/subnet.env"));
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(c.delegate["hairpinMode"], true);
        assert_eq!(c.ipam["dataDir"], "/i");
        assert!(c.runtime_config.is_some());
    }

    #[test]
    fn del_gets_by_with_an_unreadable_config() {
        let conf = NetConf::parse_with(
            br#"{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","dataDir":"/d",
                 "delegate":"nope","subnetFile":5}"#,
            cni_common::config::Strictness::ForDel,
        )
        .unwrap();
        assert!(FlannelConf::load(&conf).is_err());
        let c = FlannelConf::load_for_del(&conf);
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(c.subnet_file, PathBuf::from(DEFAULT_SUBNET_FILE));
    }
}
