//! The network configuration a plugin reads on stdin.
//!
//! The common keys are typed; every other key stays in the parsed object for the plugin's own
//! config type ([`NetConf::plugin_config`]), and the raw bytes are kept so that a plugin hands a
//! delegate exactly what it received.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::CniError;
use crate::gojson;
use crate::result::{CniResult, Dns};
use crate::validate;
use crate::version::Version;

/// Larger stdin is refused before parsing: real configs are a few KiB.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// The GC request's key listing the attachments still in use (spec 1.1.0).
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

/// [`VALID_ATTACHMENTS`]'s name before the spec renamed it; still read.
pub const OLD_VALID_ATTACHMENTS: &str = "cni.dev/attachments";

#[derive(Debug, Clone)]
pub struct NetConf {
    pub version: Version,
    pub name: String,
    pub plugin_type: String,
    /// `ipam.type`, when an `ipam` object is present.
    pub ipam_type: Option<String>,
    pub dns: Option<Dns>,
    pub prev_result: Option<Value>,
    object: Map<String, Value>,
    raw: Vec<u8>,
}

/// How strictly the common keys are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Every common key must have its type, as the Go library requires (ADD, CHECK, ...).
    Strict,
    /// Only `cniVersion`, `name` and `type` must: a DEL whose other keys are broken still runs,
    /// because a runtime retries a failed DEL forever and skips the plugins after it.
    ForDel,
}

/// The common keys, matched as Go matches them ([`gojson`]). Beyond the three the suite
/// cannot do without, each is typed on its own in [`NetConf::parse_with`], so that a DEL can
/// ignore one that is broken.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Common {
    #[serde(default)]
    cni_version: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type", default)]
    plugin_type: Option<String>,
    #[serde(default)]
    cni_versions: Option<Value>,
    #[serde(default)]
    ip_masq: Option<Value>,
    #[serde(default)]
    ipam: Option<Value>,
    #[serde(default)]
    dns: Option<Value>,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    runtime_config: Option<Value>,
    #[serde(default)]
    capabilities: Option<Value>,
    #[serde(default)]
    prev_result: Option<Value>,
}

#[derive(Deserialize)]
struct IpamType {
    #[serde(rename = "type", default)]
    ipam_type: Option<String>,
}

/// Types one common key: an error when strict, `None` (and a debug line) for a DEL.
fn typed<T: DeserializeOwned>(
    key: &str,
    value: Option<Value>,
    strictness: Strictness,
) -> Result<Option<T>, CniError> {
    let Some(value) = value else { return Ok(None) };
    match gojson::from_value::<T>(&value) {
        Ok(v) => Ok(Some(v)),
        Err(e) if strictness == Strictness::ForDel => {
            crate::debug_log!("DEL ignores the unreadable key {key}: {e}");
            Ok(None)
        }
        Err(e) => Err(CniError::decode(
            format!("error unmarshall network config: {key}: {e}"),
            "",
        )),
    }
}

/// Walks a JSON document and fails on the first object with a repeated key: two `name` or
/// `dataDir` keys would leave it to the parser which one counts, so none is accepted.
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!(
                    "duplicate key \"{}\"",
                    key.escape_debug()
                )));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
}

/// One attachment named in a GC request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl NetConf {
    /// Parses and validates stdin: JSON object (code 6), typed common keys (code 6), a valid
    /// network name (code 7) and a supported `cniVersion` (code 1).
    pub fn parse(raw: &[u8]) -> Result<NetConf, CniError> {
        Self::parse_with(raw, Strictness::Strict)
    }

    /// [`NetConf::parse`], with the common keys beyond `cniVersion`, `name` and `type` read as
    /// `strictness` says.
    pub fn parse_with(raw: &[u8], strictness: Strictness) -> Result<NetConf, CniError> {
        if raw.len() > MAX_CONFIG_BYTES {
            return Err(CniError::decode(
                "error unmarshall network config: config is too large",
                format!("{} bytes, at most {MAX_CONFIG_BYTES}", raw.len()),
            ));
        }
        let value: Value = serde_json::from_slice(raw)
            .map_err(|e| CniError::decode(format!("error unmarshall network config: {e}"), ""))?;
        serde_json::from_slice::<NoDuplicateKeys>(raw)
            .map_err(|e| CniError::decode(format!("error unmarshall network config: {e}"), ""))?;
        let Value::Object(object) = value else {
            return Err(CniError::decode(
                "error unmarshall network config: not a JSON object",
                "",
            ));
        };
        let common = gojson::from_slice::<Common>(raw)
            .map_err(|e| CniError::decode(format!("error unmarshall network config: {e}"), ""))?;
        let name = common.name.unwrap_or_default();
        validate::network_name(&name)?;
        let version = Version::parse(common.cni_version.as_deref().unwrap_or(""))?;
        // Typed only to refuse what the Go library refuses; no plugin reads them from here.
        typed::<Vec<String>>("cniVersions", common.cni_versions, strictness)?;
        typed::<bool>("ipMasq", common.ip_masq, strictness)?;
        typed::<Value>("args", common.args, strictness)?;
        typed::<Map<String, Value>>("runtimeConfig", common.runtime_config, strictness)?;
        typed::<Map<String, Value>>("capabilities", common.capabilities, strictness)?;
        let ipam = typed::<IpamType>("ipam", common.ipam, strictness)?;
        Ok(NetConf {
            version,
            name,
            plugin_type: common.plugin_type.unwrap_or_default(),
            ipam_type: ipam.map(|i| i.ipam_type.unwrap_or_default()),
            dns: typed("dns", common.dns, strictness)?,
            prev_result: typed::<Map<String, Value>>("prevResult", common.prev_result, strictness)?
                .map(Value::Object),
            object,
            raw: raw.to_vec(),
        })
    }

    /// The bytes received on stdin, for a delegate.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The whole config as a JSON object, with every key the plugin received.
    pub fn object(&self) -> &Map<String, Value> {
        &self.object
    }

    /// The plugin's own view of the config (all keys, typed by the plugin), decoded as Go
    /// decodes it ([`gojson`]).
    pub fn plugin_config<T: DeserializeOwned>(&self) -> Result<T, CniError> {
        gojson::from_slice::<T>(&self.raw)
            .map_err(|e| CniError::invalid_config(format!("invalid network config: {e}"), ""))
    }

    /// `prevResult`, converted from whatever version it was printed in.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        self.prev_result
            .as_ref()
            .map(|v| {
                CniResult::decode(v, self.version)
                    .map_err(|e| e.context("failed to parse prevResult"))
            })
            .transpose()
    }

    /// The GC request's valid attachments (`cni.dev/valid-attachments`, or the pre-rename
    /// `cni.dev/attachments`). `None` when the request names none.
    pub fn valid_attachments(&self) -> Result<Option<Vec<Attachment>>, CniError> {
        let gc: GcKeys = self.plugin_config().map_err(|e| {
            CniError::invalid_config(
                format!(
                    "invalid cni.dev/valid-attachments: {}",
                    e.to_string().trim_start_matches("invalid network config: ")
                ),
                "",
            )
        })?;
        Ok(gc.valid.or(gc.old))
    }

    /// The valid-attachments list as the request wrote it (under either name, chosen as
    /// [`Self::valid_attachments`] chooses), for a plugin that passes it on to a delegate.
    pub fn valid_attachments_value(&self) -> Option<&Value> {
        [VALID_ATTACHMENTS, OLD_VALID_ATTACHMENTS]
            .into_iter()
            .find_map(|key| gojson::get(&self.object, key).filter(|v| !v.is_null()))
    }
}

/// The keys of a GC request.
#[derive(Deserialize)]
struct GcKeys {
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid: Option<Vec<Attachment>>,
    #[serde(default, rename = "cni.dev/attachments")]
    old: Option<Vec<Attachment>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf, CniError> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn common_fields_and_unknown_keys() {
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"net1","type":"bridge","ipMasq":true,
                "ipam":{"type":"host-local","subnet":"10.0.0.0/24"},
                "capabilities":{"portMappings":true},"extra":{"x":1},
                "runtimeConfig":{"mac":"aa:bb:cc:dd:ee:ff"}}"#,
        )
        .unwrap();
        assert_eq!(c.version, Version::V1_0_0);
        assert_eq!(c.name, "net1");
        assert_eq!(c.plugin_type, "bridge");
        assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
        assert_eq!(c.object()["capabilities"]["portMappings"], true);
        assert_eq!(c.object()["extra"]["x"], 1);
        assert!(c.raw().starts_with(b"{\"cniVersion\""));
    }

    #[test]
    fn no_version_means_0_1_0() {
        assert_eq!(parse(r#"{"name":"n"}"#).unwrap().version, Version::V0_1_0);
    }

    #[test]
    fn errors_carry_spec_codes() {
        let code = |s: &str| parse(s).err().map(|e| e.code());
        assert_eq!(code("{"), Some(6));
        assert_eq!(code("[]"), Some(6));
        assert_eq!(code(r#"{"name":"n","ipMasq":"yes"}"#), Some(6));
        assert_eq!(code(r#"{"name":"n","cniVersion":7}"#), Some(6));
        assert_eq!(code(r#"{"cniVersion":"1.0.0"}"#), Some(7));
        assert_eq!(code(r#"{"name":"../x","cniVersion":"1.0.0"}"#), Some(7));
        assert_eq!(code(r#"{"name":"n","cniVersion":"0.9.0"}"#), Some(1));
        let huge = format!(r#"{{"name":"n","pad":"{}"}}"#, "x".repeat(MAX_CONFIG_BYTES));
        assert_eq!(code(&huge), Some(6));
        let dup =
            parse(r#"{"name":"a","ipam":{"dataDir":"/x","dataDir":"/y"},"cniVersion":"1.0.0"}"#);
        let e = dup.unwrap_err();
        assert_eq!(e.code(), 6);
        assert!(e.to_string().contains("duplicate key \"dataDir\""), "{e}");
        assert_eq!(code(&"[".repeat(100_000)), Some(6));
    }

    #[test]
    fn prev_result_is_converted_from_its_own_version() {
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"cniVersion":"0.4.0",
                "ips":[{"version":"4","address":"10.0.0.2/24"}],"dns":{}}}"#,
        )
        .unwrap();
        let r = c.prev_result().unwrap().unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.0.0.2/24");
        let bad = parse(r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":5}}"#).unwrap();
        let e = bad.prev_result().unwrap_err();
        assert_eq!(e.code(), 6);
        assert!(e.to_string().starts_with("failed to parse prevResult"));
    }

    #[test]
    fn gc_attachments() {
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":
                [{"containerID":"a","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.valid_attachments().unwrap(),
            Some(vec![Attachment {
                container_id: "a".into(),
                ifname: "eth0".into()
            }])
        );
        let old = parse(r#"{"cniVersion":"1.1.0","name":"n","cni.dev/attachments":[]}"#).unwrap();
        assert_eq!(old.valid_attachments().unwrap(), Some(vec![]));
        let none = parse(r#"{"cniVersion":"1.1.0","name":"n"}"#).unwrap();
        assert_eq!(none.valid_attachments().unwrap(), None);
    }

    #[test]
    fn gc_attachments_as_written() {
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"n","cni.dev/attachments":[],
                "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.valid_attachments_value(),
            Some(&serde_json::json!([{"containerID": "a", "ifname": "eth0"}]))
        );
        let old = parse(
            r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":null,
                "cni.dev/attachments":[]}"#,
        )
        .unwrap();
        assert_eq!(old.valid_attachments().unwrap(), Some(vec![]));
        assert_eq!(old.valid_attachments_value(), Some(&serde_json::json!([])));
        let none = parse(r#"{"cniVersion":"1.1.0","name":"n"}"#).unwrap();
        assert_eq!(none.valid_attachments_value(), None);
    }

    #[test]
    fn common_keys_in_any_case() {
        let c = parse(
            r#"{"CNIVersion":"1.0.0","Name":"net1","Type":"bridge","IPAM":{"Type":"host-local"},
                "DNS":{"Nameservers":["10.0.0.10"]},"PrevResult":{"cniVersion":"1.0.0","ips":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.version, Version::V1_0_0);
        assert_eq!(c.name, "net1");
        assert_eq!(c.plugin_type, "bridge");
        assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
        assert_eq!(c.dns.unwrap().nameservers, ["10.0.0.10"]);
        assert!(c.prev_result.is_some());
    }

    #[test]
    fn del_reads_past_broken_common_keys() {
        let broken = br#"{"cniVersion":"1.0.0","name":"n","ipMasq":"yes","runtimeConfig":[1],
            "capabilities":3,"dns":"x","ipam":{"type":5},"prevResult":7}"#;
        assert_eq!(
            parse(std::str::from_utf8(broken).unwrap())
                .unwrap_err()
                .code(),
            6
        );
        let c = NetConf::parse_with(broken, Strictness::ForDel).unwrap();
        assert_eq!(c.name, "n");
        assert_eq!((c.ipam_type, c.dns, c.prev_result), (None, None, None));
        // The three keys every plugin needs stay strict.
        let code = |s: &[u8]| {
            NetConf::parse_with(s, Strictness::ForDel)
                .unwrap_err()
                .code()
        };
        assert_eq!(code(br#"{"cniVersion":"1.0.0","name":7}"#), 6);
        assert_eq!(code(br#"{"cniVersion":"1.0.0"}"#), 7);
        assert_eq!(code(br#"{"cniVersion":"1.0.0","name":"n","name":"m"}"#), 6);
    }
}
