//! Results in every spec version, held as one version-independent value.
//!
//! [`CniResult`] is the 1.x result: its fields are declared in alphabetical order so that it
//! serialises exactly as the Go library prints 1.x results (keys sorted at every level). The
//! older shapes live in [`legacy`] (0.1.0/0.2.0) and [`v040`] (0.3.x/0.4.0); [`CniResult::encode`]
//! and [`CniResult::decode`] convert by the reference rules.

mod cidr;
pub mod legacy;
pub mod v040;

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CniError;
use crate::version::{ResultShape, Version};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    pub name: String,
    #[serde(rename = "pciID", default, skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub socket_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    #[serde(with = "cidr")]
    pub address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`; absent in IPAM results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(with = "cidr")]
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Route {
        Route {
            advmss: None,
            dst,
            gw,
            mtu: None,
            priority: None,
            scope: None,
            table: None,
        }
    }
}

/// The 1.x DNS object (keys sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.domain.is_empty()
            && self.nameservers.is_empty()
            && self.options.is_empty()
            && self.search.is_empty()
    }
}

/// The 1.x wire form: `cniVersion` first, then the result's sorted keys.
#[derive(Serialize)]
struct Wire100<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'static str,
    #[serde(flatten)]
    result: &'a CniResult,
}

impl CniResult {
    /// Prints the result in `version`'s shape, pretty like the Go library.
    pub fn encode(&self, version: Version) -> Result<String, CniError> {
        Ok(match version.result_shape() {
            ResultShape::V100 => crate::json::pretty(&Wire100 {
                cni_version: version.as_str(),
                result: self,
            }),
            ResultShape::V040 => crate::json::pretty(&v040::Result040::from_result(self, version)),
            ResultShape::Legacy => {
                crate::json::pretty(&legacy::Result020::from_result(self, version)?)
            }
        })
    }

    /// Parses a result printed in any version. The result's own `cniVersion` decides its shape;
    /// `fallback` is used when it has none (as libcni does).
    pub fn decode(value: &Value, fallback: Version) -> Result<CniResult, CniError> {
        let version = match value
            .as_object()
            .and_then(|o| crate::gojson::get(o, "cniVersion"))
        {
            None | Some(Value::Null) => fallback,
            Some(Value::String(s)) => Version::parse(s)?,
            Some(other) => {
                return Err(CniError::decode(
                    "cniVersion of result must be a string",
                    other.to_string(),
                ));
            }
        };
        let bad = |e: serde_json::Error| {
            CniError::decode(format!("cannot parse {version} result"), e.to_string())
        };
        match version.result_shape() {
            ResultShape::V100 => crate::gojson::from_value::<CniResult>(value).map_err(bad),
            ResultShape::V040 => crate::gojson::from_value::<v040::Result040>(value)
                .map(v040::Result040::into_result)
                .map_err(bad),
            // The Go loopback labels 1.x-shaped results with an old version; runtimes read
            // them leniently, and so do we.
            ResultShape::Legacy if !has_key(value, "ip4") && !has_key(value, "ip6") => {
                crate::gojson::from_value::<CniResult>(value).map_err(bad)
            }
            ResultShape::Legacy => crate::gojson::from_value::<legacy::Result020>(value)
                .map(legacy::Result020::into_result)
                .map_err(bad),
        }
    }

    /// Parses result bytes (a delegate's stdout).
    pub fn decode_bytes(bytes: &[u8], fallback: Version) -> Result<CniResult, CniError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decode("cannot parse result JSON", e.to_string()))?;
        Self::decode(&value, fallback)
    }
}

fn has_key(value: &Value, key: &str) -> bool {
    value
        .as_object()
        .and_then(|o| crate::gojson::get(o, key))
        .is_some()
}

#[cfg(test)]
mod tests;
