//! 0.1.0 and 0.2.0 results: one `ip4` and one `ip6`, each with its own routes.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use super::v040::{Dns040, Route040};
use super::{CniResult, IpConfig, Route, cidr};
use crate::error::CniError;
use crate::version::Version;

#[derive(Debug, Serialize, Deserialize)]
pub struct Result020 {
    #[serde(rename = "cniVersion", default, skip_deserializing)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip4: Option<IpConfig020>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<IpConfig020>,
    #[serde(default)]
    pub dns: Dns040,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IpConfig020 {
    #[serde(with = "cidr")]
    pub ip: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route040>,
}

impl Result020 {
    /// Keeps the first IPv4 and the first IPv6 address; each route goes with the address of
    /// its destination's family and is dropped when there is none.
    pub fn from_result(r: &CniResult, version: Version) -> Result<Result020, CniError> {
        let pick = |v4: bool| {
            r.ips
                .iter()
                .find(|ip| ip.address.is_ipv4() == v4)
                .map(|ip| IpConfig020 {
                    ip: ip.address,
                    gateway: ip.gateway,
                    routes: r
                        .routes
                        .iter()
                        .filter(|route| route.dst.is_ipv4() == v4)
                        .map(Route040::from)
                        .collect(),
                })
        };
        let (ip4, ip6) = (pick(true), pick(false));
        if ip4.is_none() && ip6.is_none() {
            return Err(CniError::IncompatibleVersion {
                details: format!(
                    "cannot convert: no valid IP addresses for a {version} result, which \
                     must hold an ip4 or ip6 address"
                ),
            });
        }
        Ok(Result020 {
            cni_version: version.as_str().to_owned(),
            ip4,
            ip6,
            dns: Dns040::from(&r.dns),
        })
    }

    pub fn into_result(self) -> CniResult {
        let mut ips = Vec::new();
        let mut routes = Vec::new();
        for cfg in [self.ip4, self.ip6].into_iter().flatten() {
            ips.push(IpConfig {
                address: cfg.ip,
                gateway: cfg.gateway,
                interface: None,
            });
            routes.extend(cfg.routes.into_iter().map(Route::from));
        }
        CniResult {
            dns: self.dns.into(),
            interfaces: Vec::new(),
            ips,
            routes,
        }
    }
}
