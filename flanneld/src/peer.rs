//! What a peer's lease must be before any backend sees it. Anyone who can write to etcd can
//! write a lease, and a backend turns a lease into routes, neighbours and FDB entries; so a
//! lease whose subnet is not one the network config hands out (`0.0.0.0-0` would replace the
//! default route), or whose PublicIP cannot be a peer (unspecified, loopback, multicast,
//! this node's own, inside the pod network) is skipped with a line naming it and why. Go
//! flanneld programs such leases; see `docs/differences.md`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

use crate::config::NetworkConfig;
use crate::lease::{Lease, LeaseAttrs};

/// The checks of one agent: its network config and its own lease value.
#[derive(Debug, Clone)]
pub struct PeerCheck {
    network: Option<Ipv4Network>,
    /// The subnets' prefix length; `None`: any inside the network (kube's podCIDRs are
    /// the controller-manager's, whatever `SubnetLen` says).
    subnet_len: Option<u8>,
    v6: Option<(Ipv6Network, Option<u8>)>,
    own_ip: Ipv4Addr,
    own_ip6: Option<Ipv6Addr>,
    backend_type: String,
    own_mac: Option<String>,
    own_mac6: Option<String>,
}

/// The largest `BackendData` (or `BackendV6Data`) a peer's lease may carry, serialized.
const MAX_BACKEND_DATA: usize = 4096;

/// Whether an address can be a peer's underlay address.
fn unicast(ip: IpAddr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast())
        && match ip {
            IpAddr::V4(a) => !(a.is_broadcast() || a.octets()[0] == 0),
            IpAddr::V6(_) => true,
        }
}

impl PeerCheck {
    /// The checks for a node with `config` publishing `own` (its PublicIP, BackendType and,
    /// for vxlan, its VtepMAC).
    pub fn new(config: &NetworkConfig, own: &LeaseAttrs) -> PeerCheck {
        let mac = |data: &Option<serde_json::Value>| {
            data.as_ref()
                .and_then(|d| cni_common::gojson::get(d.as_object()?, "VtepMAC"))
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        };
        PeerCheck {
            network: config.v4.as_ref().map(|r| r.network),
            subnet_len: Some(config.v4.as_ref().map_or(0, |r| r.subnet_len)),
            v6: config.v6.as_ref().map(|r| (r.network, Some(r.subnet_len))),
            own_ip: own.public_ip,
            own_ip6: own.public_ipv6,
            backend_type: own.backend_type.clone(),
            own_mac: mac(&own.backend_data),
            own_mac6: mac(&own.backend_v6_data),
        }
    }

    /// The same checks, taking subnets of any prefix length inside the networks (kube mode).
    pub fn any_subnet_len(mut self) -> PeerCheck {
        self.subnet_len = None;
        if let Some((_, len)) = &mut self.v6 {
            *len = None;
        }
        self
    }

    /// Whether `lease` publishes this node's own address (it is this node's lease).
    pub fn names_this_node(&self, lease: &Lease) -> bool {
        let v4 = self.network.is_some() && lease.attrs.public_ip == self.own_ip;
        let v6 = self.own_ip6.is_some() && lease.attrs.public_ipv6 == self.own_ip6;
        v4 || v6
    }

    /// Why `lease` must not be programmed; `None` when it may. A lease inside the Network
    /// but outside SubnetMin..SubnetMax is taken: an admin narrowing the range must not cut
    /// the nodes that hold older leases. An IPv6-only network's leases are checked on their
    /// IPv6 side alone.
    pub fn problem(&self, lease: &Lease) -> Option<String> {
        let first = match self.network {
            Some(network) => self.v4_problem(lease, network),
            None if lease.subnet.v6.is_none() => Some("it has no IPv6 subnet".into()),
            None if lease.attrs.public_ipv6.is_none() => Some("it has no PublicIPv6".into()),
            None => None,
        };
        first
            .or_else(|| self.v6_problem(lease))
            .or_else(|| self.data_problem(lease))
    }

    fn v4_problem(&self, lease: &Lease, network: Ipv4Network) -> Option<String> {
        let Some(sn) = lease.subnet.v4 else {
            return Some("it has no IPv4 subnet".into());
        };
        let problem = Some;
        if let Some(len) = self.subnet_len
            && sn.prefix() != len
        {
            return problem(format!(
                "its subnet {sn} is not of the config's SubnetLen /{len}"
            ));
        }
        if !network.contains(sn.network()) || sn.prefix() < network.prefix() {
            return problem(format!("its subnet {sn} is outside the Network {network}"));
        }
        let ip = lease.attrs.public_ip;
        if !unicast(ip.into()) {
            return problem(format!(
                "PublicIP {ip} is not a unicast address a peer can have"
            ));
        }
        if ip == self.own_ip {
            return problem(format!(
                "PublicIP {ip} is this node's own (only this node's lease may name it)"
            ));
        }
        if network.contains(ip) {
            return problem(format!(
                "PublicIP {ip} lies inside the flannel Network {network}"
            ));
        }
        if sn.contains(self.own_ip) {
            return problem(format!(
                "its subnet {sn} contains this node's PublicIP {}",
                self.own_ip
            ));
        }
        None
    }

    fn v6_problem(&self, lease: &Lease) -> Option<String> {
        if let (Some((net6, len6)), Some(sn6)) = (self.v6, lease.subnet.v6)
            && (len6.is_some_and(|l| sn6.prefix() != l)
                || !net6.contains(sn6.network())
                || sn6.prefix() < net6.prefix())
        {
            let len = len6
                .map(|l| format!("/{l}"))
                .unwrap_or_else(|| "subnet".into());
            return Some(format!(
                "its IPv6 subnet {sn6} is not a {len} of the IPv6Network {net6}"
            ));
        }
        let ip6 = lease.attrs.public_ipv6?;
        if !unicast(ip6.into()) {
            return Some(format!(
                "PublicIPv6 {ip6} is not a unicast address a peer can have"
            ));
        }
        if Some(ip6) == self.own_ip6 {
            return Some(format!(
                "PublicIPv6 {ip6} is this node's own (only this node's lease may name it)"
            ));
        }
        if let Some((net6, _)) = self.v6
            && net6.contains(ip6)
        {
            return Some(format!(
                "PublicIPv6 {ip6} lies inside the flannel IPv6Network {net6}"
            ));
        }
        // Its route would capture the traffic to this node's own underlay address.
        if let (Some(sn6), Some(own6)) = (lease.subnet.v6, self.own_ip6)
            && sn6.contains(own6)
        {
            return Some(format!(
                "its IPv6 subnet {sn6} contains this node's PublicIPv6 {own6}"
            ));
        }
        None
    }

    fn data_problem(&self, lease: &Lease) -> Option<String> {
        for (field, data) in [
            ("BackendData", &lease.attrs.backend_data),
            ("BackendV6Data", &lease.attrs.backend_v6_data),
        ] {
            let size = data.as_ref().map_or(0, |d| d.to_string().len());
            if size > MAX_BACKEND_DATA {
                // Kept in the cache for as long as the lease lives: 5,000 such leases would
                // hold gigabytes. Go keeps them.
                return Some(format!(
                    "its {field} is {size} bytes (more than {MAX_BACKEND_DATA}; vxlan's is about 50)"
                ));
            }
        }
        if lease.attrs.backend_type != self.backend_type {
            // Go's backends ignore these too ("ignoring non-vxlan subnet").
            return Some(format!(
                "its BackendType {} is not this node's {}",
                crate::log::shown(&lease.attrs.backend_type),
                self.backend_type
            ));
        }
        if self.backend_type == crate::vtep::VXLAN {
            // The IPv4 VTEP where IPv4 is on (a dual-stack peer's unusable IPv6 side still
            // leaves its IPv4 side: the backend skips that half); else the IPv6 one.
            let (field, data, own) = match self.network {
                Some(_) => ("BackendData", &lease.attrs.backend_data, &self.own_mac),
                None => (
                    "BackendV6Data",
                    &lease.attrs.backend_v6_data,
                    &self.own_mac6,
                ),
            };
            return crate::vtep::check_peer_data(data.as_ref(), field, own.as_deref()).err();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseAttrs;
    use crate::subnet::SubnetKey;

    fn check(config: &str) -> PeerCheck {
        let own = LeaseAttrs::from_json(br#"{"PublicIP":"192.168.1.2"}"#).unwrap();
        PeerCheck::new(&NetworkConfig::parse(config.as_bytes()).unwrap(), &own)
    }

    fn problem(c: &PeerCheck, key: &str, value: &str) -> Option<String> {
        c.problem(&Lease {
            subnet: SubnetKey::parse(key).unwrap(),
            attrs: LeaseAttrs::from_json(value.as_bytes()).unwrap(),
            lease_id: 0,
            expiration: None,
        })
    }

    #[test]
    fn subnets_and_addresses_a_peer_cannot_have() {
        let c = check(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0"}"#);
        let ok = r#"{"PublicIP":"192.168.1.3"}"#;
        assert_eq!(
            problem(&c, "10.5.2.0-24", ok),
            None,
            "below SubnetMin: taken"
        );
        for (key, value, why) in [
            ("0.0.0.0-0", ok, "not of the config's SubnetLen"),
            ("10.5.2.0-25", ok, "not of the config's SubnetLen"),
            ("10.6.2.0-24", ok, "outside the Network"),
            ("10.5.2.0-24", r#"{"PublicIP":"0.0.0.0"}"#, "not a unicast"),
            (
                "10.5.2.0-24",
                r#"{"PublicIP":"127.0.0.1"}"#,
                "not a unicast",
            ),
            (
                "10.5.2.0-24",
                r#"{"PublicIP":"224.0.0.1"}"#,
                "not a unicast",
            ),
            (
                "10.5.2.0-24",
                r#"{"PublicIP":"255.255.255.255"}"#,
                "not a unicast",
            ),
            (
                "10.5.2.0-24",
                r#"{"PublicIP":"192.168.1.2"}"#,
                "this node's own",
            ),
            (
                "10.5.2.0-24",
                r#"{"PublicIP":"10.5.3.1"}"#,
                "inside the flannel Network",
            ),
            (
                "10.5.2.0-24",
                r#"{"PublicIP":"192.168.1.3","PublicIPv6":"ff02::1"}"#,
                "PublicIPv6",
            ),
        ] {
            let got = problem(&c, key, value).unwrap_or_default();
            assert!(got.contains(why), "{key} {value}: {got}");
        }
        let c = check(r#"{"Network":"192.168.0.0/16"}"#);
        assert!(
            problem(&c, "192.168.1.0-24", r#"{"PublicIP":"10.0.0.3"}"#)
                .unwrap()
                .contains("contains this node's PublicIP")
        );
        let c = check(r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}"#);
        assert!(problem(&c, "10.5.2.0-24&fc01::-64", ok).is_some());
        assert_eq!(problem(&c, "10.5.2.0-24&fc00:0:0:2::-64", ok), None);
        assert_eq!(problem(&c, "10.5.2.0-24", ok), None, "a v4-only peer");
        // Before: a BackendData of any size was kept in the cache for the lease's life.
        let big = format!(
            r#"{{"PublicIP":"192.168.1.3","BackendData":{{"VtepMAC":"{}"}}}}"#,
            "x".repeat(5000)
        );
        assert!(
            problem(&c, "10.5.2.0-24", &big)
                .unwrap_or_default()
                .contains("its BackendData is 5014 bytes")
        );
        // Before: an IPv6 underlay address inside the overlay, or this node's own, passed.
        let own6 =
            LeaseAttrs::from_json(br#"{"PublicIP":"192.168.1.2","PublicIPv6":"fd00::2"}"#).unwrap();
        let c6 = PeerCheck::new(
            &NetworkConfig::parse(
                br#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}"#,
            )
            .unwrap(),
            &own6,
        );
        for (ip6, why) in [
            ("fd00::2", "this node's own"),
            ("fc00:0:0:9::1", "inside the flannel IPv6Network"),
        ] {
            let v = format!(r#"{{"PublicIP":"192.168.1.3","PublicIPv6":"{ip6}"}}"#);
            let got = problem(&c6, "10.5.2.0-24&fc00:0:0:2::-64", &v).unwrap_or_default();
            assert!(got.contains(why), "{ip6}: {got}");
        }
        // Before: an IPv6 subnet holding this node's own PublicIPv6 passed (its route
        // would capture the traffic to the node's underlay address).
        let own6 =
            LeaseAttrs::from_json(br#"{"PublicIP":"192.168.1.2","PublicIPv6":"fc00:0:0:2::5"}"#)
                .unwrap();
        let c6 = PeerCheck::new(
            &NetworkConfig::parse(
                br#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}"#,
            )
            .unwrap(),
            &own6,
        );
        let v = r#"{"PublicIP":"192.168.1.3","PublicIPv6":"fd00::3"}"#;
        assert!(
            problem(&c6, "10.5.2.0-24&fc00:0:0:2::-64", v)
                .unwrap_or_default()
                .contains("contains this node's PublicIPv6 fc00:0:0:2::5")
        );
        assert_eq!(problem(&c6, "10.5.3.0-24&fc00:0:0:3::-64", v), None);
        let c = check(r#"{"Network":"10.5.0.0/16"}"#);
        let vx = r#"{"PublicIP":"192.168.1.3","BackendType":"vxlan"}"#;
        assert!(
            problem(&c, "10.5.2.0-24", vx)
                .unwrap()
                .contains("BackendType")
        );
    }

    #[test]
    fn vxlan_peers_need_a_unicast_vtep_mac_not_ours() {
        let own = LeaseAttrs::from_json(
            br#"{"PublicIP":"192.168.1.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:aa:00:00:00:01"}}"#,
        )
        .unwrap();
        let c = PeerCheck::new(
            &NetworkConfig::parse(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#)
                .unwrap(),
            &own,
        );
        let v = |data: &str| format!(r#"{{"PublicIP":"192.168.1.3","BackendType":"vxlan"{data}}}"#);
        for (data, why) in [
            ("", "no BackendData"),
            (r#","BackendData":[1,"c6:d2:32:6f:8f:44"]"#, "not an object"),
            (
                r#","BackendData":{"VtepMAC":"02:AA:00:00:00:01"}"#,
                "this node's own",
            ),
            (
                r#","BackendData":{"VtepMAC":"00:00:00:00:00:00"}"#,
                "all-zero",
            ),
            (
                r#","BackendData":{"VtepMAC":"33:33:00:00:00:01"}"#,
                "multicast",
            ),
            (
                r#","BackendData":{"VtepMAC":7}"#,
                "BackendData: invalid type",
            ),
        ] {
            let got = problem(&c, "10.5.2.0-24", &v(data)).unwrap_or_default();
            assert!(got.contains(why), "{data}: {got}");
        }
        let go = r#","BackendData":{"VNI":1,"vtepmac":"C6:D2:32:6F:8F:44","X":null}"#;
        assert_eq!(problem(&c, "10.5.2.0-24", &v(go)), None);
    }
}
