//! A lease's value (`pkg/lease/lease.go` `LeaseAttrs`), written byte for byte as Go's
//! `json.Marshal` writes it and read as tolerantly as Go reads it, and the lease itself.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use crate::log::{bounded, shown};
use crate::subnet::SubnetKey;

/// The value of `<prefix>/subnets/<key>`. Field order and omissions are Go's: `PublicIP`,
/// `PublicIPv6` (a pointer without `omitempty`: `null` when unset), then `BackendType`,
/// `BackendData`, `BackendV6Data`, each left out when empty.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseAttrs {
    /// The node's public IPv4 address (`PublicIP`).
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    /// The node's public IPv6 address (`PublicIPv6`).
    #[serde(rename = "PublicIPv6")]
    pub public_ipv6: Option<Ipv6Addr>,
    /// `host-gw`, `vxlan`, ... (`BackendType`).
    #[serde(rename = "BackendType", skip_serializing_if = "String::is_empty")]
    pub backend_type: String,
    /// Backend-specific data, e.g. vxlan's `{"VNI":1,"VtepMAC":"..."}` (`BackendData`).
    #[serde(
        rename = "BackendData",
        skip_serializing_if = "Option::is_none",
        serialize_with = "in_go_order"
    )]
    pub backend_data: Option<Value>,
    /// The IPv6 twin of `BackendData` (`BackendV6Data`).
    #[serde(
        rename = "BackendV6Data",
        skip_serializing_if = "Option::is_none",
        serialize_with = "in_go_order"
    )]
    pub backend_v6_data: Option<Value>,
}

/// The fields of Go's backend data structs in their declaration order, which is the order
/// `json.Marshal` writes them: vxlan's `VNI`, `VtepMAC`; wireguard's `PublicKey`, `Port`
/// (a JSON object here keeps its keys sorted, which would put `Port` first).
const GO_FIELD_ORDER: &[&str] = &["VNI", "VtepMAC", "PublicKey", "Port"];

/// A backend data value as Go writes it: an object's keys in [`GO_FIELD_ORDER`], any other
/// key after them by name.
struct GoOrdered<'a>(&'a Value);

impl Serialize for GoOrdered<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(m) = self.0 else {
            return self.0.serialize(s);
        };
        let rank = |k: &str| {
            GO_FIELD_ORDER
                .iter()
                .position(|f| *f == k)
                .unwrap_or(usize::MAX)
        };
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort_by_key(|k| rank(k));
        let mut map = s.serialize_map(Some(m.len()))?;
        for k in keys {
            map.serialize_entry(k, &m[k.as_str()])?;
        }
        map.end()
    }
}

fn in_go_order<S: serde::Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => GoOrdered(v).serialize(s),
        None => s.serialize_none(),
    }
}

/// A backend data value's JSON text as Go writes it (`null` when absent): the kube
/// annotations' `backend-data`.
pub fn backend_data_json(v: Option<&Value>) -> String {
    v.map_or_else(
        || "null".to_owned(),
        |v| serde_json::to_string(&GoOrdered(v)).unwrap_or_default(),
    )
}

/// The value as read: every field optional, keys matched as Go matches them, unknown keys
/// ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAttrs {
    #[serde(rename = "PublicIP")]
    public_ip: Option<String>,
    #[serde(rename = "PublicIPv6")]
    public_ipv6: Option<String>,
    #[serde(rename = "BackendType")]
    backend_type: Option<String>,
    #[serde(rename = "BackendData")]
    backend_data: Option<Value>,
    #[serde(rename = "BackendV6Data")]
    backend_v6_data: Option<Value>,
}

impl LeaseAttrs {
    /// The JSON Go writes for these attributes.
    pub fn to_json(&self) -> String {
        // A struct of strings, addresses and JSON values always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a value written by Go flanneld (or us): extra fields, missing optional fields and
    /// `null` are accepted; a missing or unparsable `PublicIP` is not (no route can be made
    /// from it).
    pub fn from_json(bytes: &[u8]) -> Result<LeaseAttrs, String> {
        if crate::config::is_array(bytes) {
            return Err("not a lease value: an array, not an object".to_owned());
        }
        let raw: RawAttrs = cni_common::gojson::from_slice(bytes)
            .map_err(|e| format!("not a lease value: {}", bounded(&e.to_string())))?;
        let public_ip = match raw.public_ip.as_deref() {
            Some(s) => s
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("PublicIP {} is not an IPv4 address", shown(s)))?,
            None => return Err("no PublicIP".to_owned()),
        };
        let public_ipv6 = match raw.public_ipv6.as_deref() {
            None | Some("") => None,
            Some(s) => Some(
                s.parse::<Ipv6Addr>()
                    .map_err(|_| format!("PublicIPv6 {} is not an IPv6 address", shown(s)))?,
            ),
        };
        let data = |v: Option<Value>| v.filter(|v| !v.is_null());
        Ok(LeaseAttrs {
            public_ip,
            public_ipv6,
            backend_type: raw.backend_type.unwrap_or_default(),
            backend_data: data(raw.backend_data),
            backend_v6_data: data(raw.backend_v6_data),
        })
    }
}

/// A subnet lease: its subnets, its value, and (for our own) the etcd lease and expiry.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The subnets (the key).
    pub subnet: SubnetKey,
    /// The value.
    pub attrs: LeaseAttrs,
    /// The etcd lease the key is attached to (0: none, a reservation).
    pub lease_id: i64,
    /// When the etcd lease runs out, if known.
    pub expiration: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Documentation/reservations.md's value, byte for byte.
    const GO_VXLAN: &str = r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;

    #[test]
    fn golden_go_values_round_trip() {
        let a = LeaseAttrs::from_json(GO_VXLAN.as_bytes()).unwrap();
        assert_eq!(a.public_ip, Ipv4Addr::new(192, 168, 64, 3));
        assert_eq!(a.backend_type, "vxlan");
        assert_eq!(a.to_json(), GO_VXLAN);
        let hostgw = LeaseAttrs {
            public_ip: Ipv4Addr::new(10, 0, 0, 2),
            public_ipv6: None,
            backend_type: "host-gw".into(),
            backend_data: None,
            backend_v6_data: None,
        };
        assert_eq!(
            hostgw.to_json(),
            r#"{"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"host-gw"}"#
        );
        let dual = LeaseAttrs {
            public_ipv6: Some("2001:db8::2".parse().unwrap()),
            backend_data: Some(serde_json::json!({"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"})),
            backend_v6_data: Some(serde_json::json!({"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"})),
            backend_type: "vxlan".into(),
            ..hostgw
        };
        assert_eq!(
            dual.to_json(),
            r#"{"PublicIP":"10.0.0.2","PublicIPv6":"2001:db8::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}}"#
        );
        assert_eq!(
            LeaseAttrs::from_json(dual.to_json().as_bytes()).unwrap(),
            dual
        );
    }

    #[test]
    fn tolerant_reading() {
        // Extra fields, missing fields, nulls, other key case: all read as Go reads them.
        let a =
            LeaseAttrs::from_json(br#"{"publicip":"10.0.0.9","Extra":[1,2],"BackendData":null}"#)
                .unwrap();
        assert_eq!(a.public_ip, Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(
            (a.backend_type.as_str(), a.backend_data, a.public_ipv6),
            ("", None, None)
        );
        let a = LeaseAttrs::from_json(br#"{"PublicIP":"10.0.0.9","PublicIPv6":null,"BackendType":"host-gw","BackendV6Data":null}"#).unwrap();
        assert_eq!(a.backend_type, "host-gw");
    }

    #[test]
    fn unusable_values_refused() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"PublicIP":"fc00::1"}"#,
            br#"{"PublicIP":7}"#,
            br#"{"PublicIP":"10.0.0.1","PublicIPv6":"10.0.0.1"}"#,
            br#"{"PublicIP":"10.0.0.1","BackendType":3}"#,
            // Before: accepted (serde fills a struct from an array); Go refuses it.
            br#"["10.0.0.1"]"#,
        ] {
            assert!(
                LeaseAttrs::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
