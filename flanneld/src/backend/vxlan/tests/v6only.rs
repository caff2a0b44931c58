//! IPv6 only (`EnableIPv4: false`, a kube network): `flannel-v6.<VNI>` alone, peers keyed and
//! reached by their IPv6 side, against the fake kernel.

use super::super::*;
use super::fake::FakeKernel;
use crate::subnet::SubnetKey;

const MAC6: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x06];
const V6ONLY: &str = r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}"#;

fn ext6() -> ExternalInterface {
    let mut e = crate::backend::hostgw::tests::ext([0, 0, 0, 0], [0, 0, 0, 0]);
    e.iface_addr6 = Some("fd00:5::2".parse().unwrap());
    e.public_ipv6 = e.iface_addr6;
    e
}

fn lease(v6: &str, value: &str) -> Lease {
    crate::testkit::of(
        SubnetKey {
            v4: None,
            v6: Some(v6.parse().unwrap()),
        },
        value,
    )
}

fn peer(n: u8, mac6: &str) -> Lease {
    lease(
        &format!("fc00:0:0:{n}::/64"),
        &format!(
            r#"{{"PublicIP":"0.0.0.0","PublicIPv6":"fd00:5::{n}","BackendType":"vxlan","BackendV6Data":{{"VNI":1,"VtepMAC":"{mac6}"}}}}"#
        ),
    )
}

#[test]
fn only_the_ipv6_device_is_made_and_published() {
    let config = NetworkConfig::parse(V6ONLY.as_bytes()).unwrap();
    let mut b = Vxlan::new(FakeKernel::new(), ext6(), &config, [0; 6], MAC6).unwrap();
    assert_eq!(
        b.lease_attrs().to_json(),
        r#"{"PublicIP":"0.0.0.0","PublicIPv6":"fd00:5::2","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"02:aa:bb:cc:dd:06"}}"#,
        "Go's value: no BackendData without an IPv4 VTEP"
    );
    assert_eq!(b.device_name(), "flannel-v6.1");
    assert_eq!(b.mtu(), 1430, "FLANNEL_MTU is the IPv6 device's");
    assert_eq!(b.watched_links(), ["flannel-v6.1", "eth0"]);
    b.lease_acquired(&lease("fc00:0:0:1::/64", r#"{"PublicIP":"0.0.0.0"}"#))
        .unwrap();
    assert_eq!(
        b.kernel().log,
        [
            "create flannel-v6.1 mac 02:aa:bb:cc:dd:06",
            "accept_ra flannel-v6.1 0",
            "addr add fc00:0:0:1::/128 dev 11",
            "up 11"
        ]
    );
    b.kernel().log.clear();
    let p = peer(2, "c6:d2:32:6f:8f:46");
    b.handle(&[LeaseEvent::Added(p.clone())]);
    assert_eq!(
        b.kernel().log,
        [
            "neigh fc00:0:0:2:: lladdr c6:d2:32:6f:8f:46 dev 11",
            "fdb c6:d2:32:6f:8f:46 dst fd00:5::2 dev 11",
            "route fc00:0:0:2::/64 via fc00:0:0:2:: dev 11 onlink",
        ]
    );
    assert_eq!(b.programmed(), 1);
    b.kernel().log.clear();
    // The same peer with a new MAC: its entries follow.
    b.handle(&[LeaseEvent::Added(peer(2, "c6:d2:32:6f:8f:47"))]);
    assert!(
        b.kernel()
            .log
            .iter()
            .any(|l| l.contains("c6:d2:32:6f:8f:47")),
        "{:?}",
        b.kernel().log
    );
    b.kernel().log.clear();
    b.handle(&[LeaseEvent::Removed(peer(2, "c6:d2:32:6f:8f:47"))]);
    assert!(
        b.kernel()
            .log
            .iter()
            .any(|l| l.starts_with("route del fc00:0:0:2::/64")),
        "{:?}",
        b.kernel().log
    );
    assert_eq!(b.programmed(), 0);
}

#[test]
fn an_ipv6_only_network_needs_an_ipv6_address() {
    let config = NetworkConfig::parse(V6ONLY.as_bytes()).unwrap();
    let mut e = ext6();
    e.iface_addr6 = None;
    e.public_ipv6 = None;
    let err = Vxlan::new(FakeKernel::new(), e, &config, [0; 6], MAC6).unwrap_err();
    assert!(err.to_string().contains("no global IPv6 address"), "{err}");
}
