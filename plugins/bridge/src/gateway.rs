//! Gateways and default routes derived from the IPAM result (the reference's calcGateways).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cni_common::CniResult;
use cni_common::result::Route;
use ipnetwork::IpNetwork;

use crate::config::BridgeConf;

/// The index of the container interface in the result.
pub const CONTAINER_IF: usize = 2;

/// `0.0.0.0/0` or `::/0`.
fn default_route(v4: bool) -> IpNetwork {
    let any: IpAddr = if v4 {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    IpNetwork::new(any, 0).unwrap_or_else(|_| IpNetwork::from(any))
}

fn first_host(net: IpNetwork) -> Option<IpAddr> {
    match net {
        IpNetwork::V4(n) => Some(IpAddr::V4(u32::from(n.network()).checked_add(1)?.into())),
        IpNetwork::V6(n) => Some(IpAddr::V6(u128::from(n.network()).checked_add(1)?.into())),
    }
}

/// Points every address at the container interface, fills missing gateways when the bridge is
/// the gateway, adds default routes for `isDefaultGateway`, and returns the gateway addresses
/// (with their subnet's prefix) to put on the bridge.
///
/// Unlike the Go plugin, a default route the IPAM already returned for a family counts even
/// when it has no `gw` (it goes via the gateway anyway), so the same route is never requested
/// twice (which made the Go ADD fail with "file exists").
pub fn apply(result: &mut CniResult, conf: &BridgeConf) -> Vec<IpNetwork> {
    let mut bridge_addrs: Vec<IpNetwork> = Vec::new();
    for v4 in [true, false] {
        let mut default_found = result
            .routes
            .iter()
            .any(|r| r.dst.is_ipv4() == v4 && r.dst.prefix() == 0);
        for ip in result
            .ips
            .iter_mut()
            .filter(|ip| ip.address.is_ipv4() == v4)
        {
            ip.interface = Some(CONTAINER_IF);
            if ip.gateway.is_none() && conf.is_gateway {
                ip.gateway = first_host(ip.address);
            }
            let Some(gw) = ip.gateway else { continue };
            if conf.is_default_gateway && !default_found {
                result.routes.push(Route::new(default_route(v4), Some(gw)));
                default_found = true;
            }
            if conf.is_gateway
                && let Ok(addr) = IpNetwork::new(gw, ip.address.prefix())
                && !bridge_addrs.contains(&addr)
            {
                bridge_addrs.push(addr);
            }
        }
    }
    bridge_addrs
}

#[cfg(test)]
mod tests {
    use cni_common::NetConf;

    use super::*;

    fn conf(extra: &str) -> BridgeConf {
        let json =
            format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"type":"host-local"}}{extra}}}"#);
        BridgeConf::load(&NetConf::parse(json.as_bytes()).unwrap(), "").unwrap()
    }

    fn result(json: &str) -> CniResult {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn default_gateway_dual_stack() {
        let mut r = result(
            r#"{"ips":[{"address":"10.77.0.2/24"},{"address":"fd77::2/64","gateway":"fd77::1"}]}"#,
        );
        let addrs = apply(&mut r, &conf(r#","isDefaultGateway":true"#));
        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["10.77.0.1/24", "fd77::1/64"]);
        assert_eq!(r.ips[0].gateway, Some("10.77.0.1".parse().unwrap()));
        assert!(r.ips.iter().all(|ip| ip.interface == Some(2)));
        let routes: Vec<String> = r
            .routes
            .iter()
            .map(|r| format!("{} {:?}", r.dst, r.gw))
            .collect();
        assert_eq!(routes, ["0.0.0.0/0 Some(10.77.0.1)", "::/0 Some(fd77::1)"]);
    }

    #[test]
    fn an_ipam_default_route_without_gw_is_not_duplicated() {
        let mut r =
            result(r#"{"ips":[{"address":"10.1.17.5/24"}],"routes":[{"dst":"0.0.0.0/0"}]}"#);
        apply(&mut r, &conf(r#","isDefaultGateway":true"#));
        assert_eq!(r.routes.len(), 1);
    }

    #[test]
    fn no_gateway_mode_leaves_gateways_alone() {
        let mut r = result(r#"{"ips":[{"address":"10.1.17.5/24"}]}"#);
        assert!(apply(&mut r, &conf("")).is_empty());
        assert_eq!(r.ips[0].gateway, None);
        assert!(r.routes.is_empty());
    }
}
