//! 0.3.0, 0.3.1 and 0.4.0 results: `ips[].version`, struct key order, `"dns": {}` always.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::{CniResult, Dns, Interface, IpConfig, Route, cidr};
use crate::version::Version;

#[derive(Debug, Serialize, Deserialize)]
pub struct Result040 {
    #[serde(rename = "cniVersion", default, skip_deserializing)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface040>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig040>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route040>,
    #[serde(default)]
    pub dns: Dns040,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Interface040 {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IpConfig040 {
    /// "4" or "6"; derived from the address when absent or wrong.
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    #[serde(with = "cidr")]
    pub address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// Routes of the old shapes carry only `dst` and `gw`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Route040 {
    #[serde(with = "cidr")]
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS in Go's struct order.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Dns040 {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl From<&Dns> for Dns040 {
    fn from(d: &Dns) -> Self {
        Dns040 {
            nameservers: d.nameservers.clone(),
            domain: d.domain.clone(),
            search: d.search.clone(),
            options: d.options.clone(),
        }
    }
}

impl From<Dns040> for Dns {
    fn from(d: Dns040) -> Self {
        Dns {
            domain: d.domain,
            nameservers: d.nameservers,
            options: d.options,
            search: d.search,
        }
    }
}

impl From<&Route> for Route040 {
    fn from(r: &Route) -> Self {
        Route040 {
            dst: r.dst,
            gw: r.gw,
        }
    }
}

impl From<Route040> for Route {
    fn from(r: Route040) -> Self {
        Route::new(r.dst, r.gw)
    }
}

pub(super) fn family(net: &IpNetwork) -> &'static str {
    if net.is_ipv4() { "4" } else { "6" }
}

impl Result040 {
    pub fn from_result(r: &CniResult, version: Version) -> Result040 {
        Result040 {
            cni_version: version.as_str().to_owned(),
            interfaces: r
                .interfaces
                .iter()
                .map(|i| Interface040 {
                    name: i.name.clone(),
                    mac: i.mac.clone(),
                    sandbox: i.sandbox.clone(),
                })
                .collect(),
            ips: r
                .ips
                .iter()
                .map(|ip| IpConfig040 {
                    version: family(&ip.address).to_owned(),
                    interface: ip.interface,
                    address: ip.address,
                    gateway: ip.gateway,
                })
                .collect(),
            routes: r.routes.iter().map(Route040::from).collect(),
            dns: Dns040::from(&r.dns),
        }
    }

    pub fn into_result(self) -> CniResult {
        CniResult {
            dns: self.dns.into(),
            interfaces: self
                .interfaces
                .into_iter()
                .map(|i| Interface {
                    name: i.name,
                    mac: i.mac,
                    sandbox: i.sandbox,
                    ..Interface::default()
                })
                .collect(),
            ips: self
                .ips
                .into_iter()
                .map(|ip| IpConfig {
                    address: ip.address,
                    gateway: ip.gateway,
                    interface: ip.interface,
                })
                .collect(),
            routes: self.routes.into_iter().map(Route::from).collect(),
        }
    }
}
