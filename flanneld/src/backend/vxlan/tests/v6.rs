//! Dual-stack: `flannel-v6.<VNI>` next to `flannel.<VNI>`, against the fake kernel (the
//! IPv4 twins of these tests are in `tests.rs`).

use std::net::IpAddr;

use super::super::*;
use super::fake::FakeKernel;

const MAC: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];
const MAC6: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x06];
const DUAL: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}"#;
/// A dual-stack peer lease in Go flanneld's format (field order of `lease.LeaseAttrs`).
const GO_PEER: &str = r#"{"PublicIP":"192.168.64.3","PublicIPv6":"fd00:5::3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"}}"#;
const GO_KEY: &str = "10.5.2.0-24&fc00:0:0:2::-64";
/// The IPv4 side's log lines of [`GO_PEER`] on device 11.
const V4_ADDED: [&str; 3] = [
    "neigh 10.5.2.0 lladdr c6:d2:32:6f:8f:44 dev 11",
    "fdb c6:d2:32:6f:8f:44 dst 192.168.64.3 dev 11",
    "route 10.5.2.0/24 via 10.5.2.0 dev 11 onlink",
];
/// The IPv6 side's, on device 12.
const V6_ADDED: [&str; 3] = [
    "neigh fc00:0:0:2:: lladdr c6:d2:32:6f:8f:46 dev 12",
    "fdb c6:d2:32:6f:8f:46 dst fd00:5::3 dev 12",
    "route fc00:0:0:2::/64 via fc00:0:0:2:: dev 12 onlink",
];

fn ext6() -> ExternalInterface {
    let mut e = crate::backend::hostgw::tests::ext([192, 168, 64, 2], [192, 168, 64, 2]);
    e.iface_addr6 = Some("fd00:5::2".parse().unwrap());
    e.public_ipv6 = e.iface_addr6;
    e
}

fn config(s: &str) -> NetworkConfig {
    NetworkConfig::parse(s.as_bytes()).unwrap()
}

use crate::testkit::lease;

fn peer(n: u8, mac4: &str, mac6: &str) -> Lease {
    lease(
        &format!("10.5.{n}.0-24&fc00:0:0:{n}::-64"),
        &format!(
            r#"{{"PublicIP":"192.168.64.{n}","PublicIPv6":"fd00:5::{n}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac4}"}},"BackendV6Data":{{"VNI":1,"VtepMAC":"{mac6}"}}}}"#
        ),
    )
}

fn own() -> Lease {
    lease(
        "10.5.1.0-24&fc00:0:0:1::-64",
        r#"{"PublicIP":"192.168.64.2"}"#,
    )
}

fn dual_with(kernel: FakeKernel, cfg: &str) -> Vxlan<FakeKernel> {
    let mut b = Vxlan::new(kernel, ext6(), &config(cfg), MAC, MAC6).unwrap();
    b.lease_acquired(&own()).unwrap();
    b.kernel().log.clear();
    b
}

fn dual() -> Vxlan<FakeKernel> {
    dual_with(FakeKernel::new(), DUAL)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rt(dst: &str, gw: &str, oif: Option<u32>) -> PeerRoute {
    PeerRoute {
        dst: dst.parse().unwrap(),
        gw: ip(gw),
        oif,
        onlink: oif.is_some(),
    }
}

#[test]
fn both_devices_created_and_published_in_go_format() {
    let mut b = Vxlan::new(FakeKernel::new(), ext6(), &config(DUAL), MAC, MAC6).unwrap();
    assert_eq!(
        b.lease_attrs().to_json(),
        r#"{"PublicIP":"192.168.64.2","PublicIPv6":"fd00:5::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:aa:bb:cc:dd:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:aa:bb:cc:dd:06"}}"#
    );
    assert_eq!(b.mtu(), 1450, "FLANNEL_MTU is the IPv4 device's, as Go");
    assert_eq!(
        b.watched_links(),
        ["flannel.1", "flannel-v6.1", "eth0"],
        "a deleted IPv6 device is noticed at once too"
    );
    b.lease_acquired(&own()).unwrap();
    assert_eq!(
        b.kernel().log,
        [
            "create flannel.1 mac 02:aa:bb:cc:dd:01",
            "accept_ra flannel.1 0",
            "create flannel-v6.1 mac 02:aa:bb:cc:dd:06",
            "accept_ra flannel-v6.1 0",
            "addr add 10.5.1.0/32 dev 11",
            "up 11",
            "addr add fc00:0:0:1::/128 dev 12",
            "up 12"
        ]
    );
    let dev = b.kernel().links["flannel-v6.1"].clone();
    assert_eq!(dev.mtu, 1430, "underlay − 70 over IPv6");
    let v = dev.vxlan.unwrap();
    assert_eq!(
        (v.vni, v.link, v.local),
        (1, Some(7), Some(ip("fd00:5::2")))
    );
    assert_eq!(b.mac6(), Some(MAC6));

    // --public-ipv6 is what is published; the device stays on the interface's address.
    let mut e = ext6();
    e.public_ipv6 = Some("2001:db8::9".parse().unwrap());
    let b = Vxlan::new(FakeKernel::new(), e, &config(DUAL), MAC, MAC6).unwrap();
    assert!(
        b.lease_attrs()
            .to_json()
            .contains(r#""PublicIPv6":"2001:db8::9""#)
    );
}

#[test]
fn ipv4_only_publishes_no_ipv6_even_on_a_dual_stack_interface() {
    let b = Vxlan::new(
        FakeKernel::new(),
        ext6(),
        &config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#),
        MAC,
        MAC6,
    )
    .unwrap();
    assert_eq!(
        b.lease_attrs().to_json(),
        r#"{"PublicIP":"192.168.64.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:aa:bb:cc:dd:01"}}"#
    );
    assert_eq!(b.mac6(), None);
}

#[test]
fn dual_stack_needs_an_ipv6_address_and_a_dual_stack_lease() {
    let mut no_v6 = ext6();
    no_v6.iface_addr6 = None;
    no_v6.public_ipv6 = None;
    let e = Vxlan::new(FakeKernel::new(), no_v6, &config(DUAL), MAC, MAC6).unwrap_err();
    assert!(
        e.to_string()
            .contains("interface eth0 has no global IPv6 address"),
        "{e}"
    );
    let mut b = Vxlan::new(FakeKernel::new(), ext6(), &config(DUAL), MAC, MAC6).unwrap();
    let e = b
        .lease_acquired(&lease("10.5.1.0-24", r#"{"PublicIP":"192.168.64.2"}"#))
        .unwrap_err();
    assert!(e.to_string().contains("has no IPv6 subnet"), "{e}");
}

#[test]
fn a_peer_gets_both_families_in_order_and_loses_them_with_its_lease() {
    let mut b = dual();
    let go = lease(GO_KEY, GO_PEER);
    b.handle(&[LeaseEvent::Added(go.clone())]);
    let want: Vec<&str> = V4_ADDED.iter().chain(&V6_ADDED).copied().collect();
    assert_eq!(b.kernel().log, want);
    b.kernel().log.clear();
    b.handle(&[LeaseEvent::Removed(go)]);
    assert_eq!(
        b.kernel().log,
        [
            "route del 10.5.2.0/24 via 10.5.2.0",
            "neigh del 10.5.2.0 dev 11",
            "fdb del c6:d2:32:6f:8f:44 dev 11",
            "route del fc00:0:0:2::/64 via fc00:0:0:2::",
            "neigh del fc00:0:0:2:: dev 12",
            "fdb del c6:d2:32:6f:8f:46 dev 12",
        ]
    );
    let k = b.kernel();
    assert!(k.neigh.is_empty() && k.fdb.is_empty() && k.routes.is_empty());
}

#[test]
fn an_ipv4_only_peer_or_a_bad_ipv6_side_leaves_the_ipv6_device_alone() {
    let mut b = dual();
    b.handle(&[LeaseEvent::Added(lease(
        "10.5.2.0-24",
        r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
    ))]);
    assert_eq!(b.kernel().log, V4_ADDED);
    for bad in [
        // No PublicIPv6, no BackendV6Data, a MAC that is none.
        r#"{"PublicIP":"192.168.64.4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:04"},"BackendV6Data":{"VNI":1,"VtepMAC":"0e:00:00:00:00:05"}}"#,
        r#"{"PublicIP":"192.168.64.4","PublicIPv6":"fd00:5::4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:04"}}"#,
        r#"{"PublicIP":"192.168.64.4","PublicIPv6":"fd00:5::4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:04"},"BackendV6Data":{"VNI":1,"VtepMAC":"nope"}}"#,
    ] {
        b.kernel().log.clear();
        b.handle(&[LeaseEvent::Added(lease("10.5.4.0-24&fc00:0:0:4::-64", bad))]);
        assert!(
            b.kernel()
                .log
                .iter()
                .all(|l| l.ends_with("dev 11") || l.starts_with("route 10.5.4.0/24")),
            "{bad}: {:?}",
            b.kernel().log
        );
        assert_eq!(b.kernel().log.len(), 3, "{bad}");
    }
}

#[test]
fn each_failed_ipv6_step_rolls_back_the_steps_before_it() {
    // The fake fails an operation of either family: each device rolls back its own steps.
    for (fail, v6) in [
        ("neigh", vec![]),
        (
            "fdb",
            vec![
                "neigh fc00:0:0:2:: lladdr c6:d2:32:6f:8f:46 dev 12",
                "neigh del fc00:0:0:2:: dev 12",
            ],
        ),
        (
            "route",
            vec![
                "neigh fc00:0:0:2:: lladdr c6:d2:32:6f:8f:46 dev 12",
                "fdb c6:d2:32:6f:8f:46 dst fd00:5::3 dev 12",
                "fdb del c6:d2:32:6f:8f:46 dev 12",
                "neigh del fc00:0:0:2:: dev 12",
            ],
        ),
    ] {
        let mut b = dual();
        b.kernel().fail = Some(fail);
        b.handle(&[LeaseEvent::Added(lease(GO_KEY, GO_PEER))]);
        let k = b.kernel();
        let v6_log: Vec<&str> = k
            .log
            .iter()
            .filter(|l| l.ends_with("dev 12"))
            .map(String::as_str)
            .collect();
        assert_eq!(v6_log, v6, "failing {fail}");
        assert!(
            k.neigh.is_empty() && k.fdb.is_empty() && k.routes.is_empty(),
            "{fail}"
        );
        k.fail = None;
        b.reconcile();
        let routes: Vec<String> = b
            .kernel()
            .routes
            .iter()
            .map(|r| r.dst.to_string())
            .collect();
        assert_eq!(routes, ["10.5.2.0/24", "fc00:0:0:2::/64"], "{fail}");
    }
}

#[test]
fn ipv6_direct_routing_uses_the_public_ipv6_when_on_link() {
    let mut k = FakeKernel::new();
    k.on_link.insert(ip("fd00:5::3"));
    let mut b = dual_with(
        k,
        r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan","DirectRouting":true}}"#,
    );
    b.handle(&[LeaseEvent::Added(lease(GO_KEY, GO_PEER))]);
    let mut want: Vec<&str> = V4_ADDED.to_vec();
    want.push("route fc00:0:0:2::/64 via fd00:5::3");
    assert_eq!(b.kernel().log, want);
    b.kernel().log.clear();
    b.reconcile();
    assert!(b.kernel().log.is_empty(), "{:?}", b.kernel().log);
}

#[test]
fn a_changed_ipv6_mac_replaces_the_entries_and_drops_the_old_fdb() {
    let mut b = dual();
    b.handle(&[LeaseEvent::Added(peer(
        2,
        "0e:00:00:00:00:01",
        "0e:00:00:00:06:01",
    ))]);
    b.handle(&[LeaseEvent::Added(peer(
        2,
        "0e:00:00:00:00:01",
        "0e:00:00:00:06:02",
    ))]);
    let k = b.kernel();
    let v6_fdb: Vec<Fdb> = k
        .fdb
        .iter()
        .filter(|(i, _)| *i == 12)
        .map(|(_, f)| *f)
        .collect();
    assert_eq!(
        v6_fdb,
        [Fdb {
            mac: [0x0e, 0, 0, 0, 6, 2],
            dst: ip("fd00:5::2")
        }]
    );
    assert_eq!((k.neigh.len(), k.fdb.len(), k.routes.len()), (2, 2, 2));
}

fn two_peers() -> Vxlan<FakeKernel> {
    let mut b = dual();
    b.handle(&[
        LeaseEvent::Added(lease(GO_KEY, GO_PEER)),
        LeaseEvent::Added(peer(4, "0e:00:00:00:00:04", "0e:00:00:00:06:04")),
    ]);
    b.kernel().log.clear();
    b
}

#[test]
fn reconcile_restores_each_missing_ipv6_kind_and_counts_it() {
    let mut b = two_peers();
    b.reconcile();
    assert!(b.kernel().log.is_empty(), "{:?}", b.kernel().log);

    let k = b.kernel();
    k.neigh
        .retain(|(i, n)| !(*i == 12 && n.ip == ip("fc00:0:0:2::")));
    k.fdb
        .retain(|(i, f)| !(*i == 12 && f.dst == ip("fd00:5::3")));
    assert!(
        k.routes
            .remove(&rt("fc00:0:0:2::/64", "fc00:0:0:2::", Some(12)))
    );
    k.addrs.remove(&12);
    k.links.get_mut("flannel-v6.1").unwrap().up = false;
    b.reconcile();
    let mut want = vec!["up 12", "addr add fc00:0:0:1::/128 dev 12"];
    want.extend(V6_ADDED);
    assert_eq!(b.kernel().log, want);
    assert_eq!(
        b.repairs(),
        Repairs {
            device: 1,
            address: 1,
            neighbour: 1,
            fdb: 1,
            route: 1,
            ..Repairs::default()
        }
    );
    b.kernel().log.clear();
    b.reconcile();
    assert!(b.kernel().log.is_empty());
}

#[test]
fn reconcile_removes_ipv6_entries_of_vanished_peers_only() {
    let mut b = two_peers();
    let k = b.kernel();
    let stale = [0x0e, 9, 9, 9, 9, 9];
    k.neigh.insert((
        12,
        Neighbour {
            ip: ip("fc00:0:0:9::"),
            mac: stale,
        },
    ));
    k.fdb.insert((
        12,
        Fdb {
            mac: stale,
            dst: ip("fd00:5::9"),
        },
    ));
    k.routes
        .insert(rt("fc00:0:0:9::/64", "fc00:0:0:9::", Some(12)));
    // Not ours: outside the IPv6 network, the default route, another prefix length.
    k.routes.insert(rt("2001:db8::/64", "fd00:5::1", Some(7)));
    k.routes.insert(rt("::/0", "fd00:5::1", Some(7)));
    k.routes.insert(rt("fc00:0:0:8::/64", "fd00:5::1", Some(7)));
    k.routes
        .insert(rt("fc00:0:0:7::/80", "fc00:0:0:7::", Some(12)));
    b.reconcile();
    assert_eq!(
        b.kernel().log,
        [
            "route del fc00:0:0:9::/64 via fc00:0:0:9::",
            "neigh del fc00:0:0:9:: dev 12",
            "fdb del 0e:09:09:09:09:09 dev 12"
        ]
    );
    let r = b.repairs();
    assert_eq!(
        (r.stale_route, r.stale_neighbour, r.stale_fdb, r.total()),
        (1, 1, 1, 3)
    );
}

#[test]
fn a_deleted_ipv6_device_comes_back_with_its_mac_and_every_peer() {
    let mut b = two_peers();
    b.kernel().remove_link("flannel-v6.1");
    b.reconcile();
    assert_eq!(
        b.kernel().log,
        [
            "create flannel-v6.1 mac 02:aa:bb:cc:dd:06",
            "accept_ra flannel-v6.1 0",
            "addr add fc00:0:0:1::/128 dev 13",
            "up 13",
            "neigh fc00:0:0:2:: lladdr c6:d2:32:6f:8f:46 dev 13",
            "fdb c6:d2:32:6f:8f:46 dst fd00:5::3 dev 13",
            "route fc00:0:0:2::/64 via fc00:0:0:2:: dev 13 onlink",
            "neigh fc00:0:0:4:: lladdr 0e:00:00:00:06:04 dev 13",
            "fdb 0e:00:00:00:06:04 dst fd00:5::4 dev 13",
            "route fc00:0:0:4::/64 via fc00:0:0:4:: dev 13 onlink"
        ]
    );
    assert_eq!(b.repairs().device, 1);
    b.kernel().log.clear();
    b.reconcile();
    assert!(b.kernel().log.is_empty(), "{:?}", b.kernel().log);
    b.handle(&[LeaseEvent::Removed(lease(GO_KEY, GO_PEER))]);
    assert_eq!(b.kernel().routes.len(), 2, "one peer left, both families");
}

#[test]
fn a_restart_reuses_the_ipv6_device_with_its_mac() {
    let mut first = Vxlan::new(FakeKernel::new(), ext6(), &config(DUAL), MAC, MAC6).unwrap();
    first.lease_acquired(&own()).unwrap();
    let mut kernel = std::mem::take(first.kernel());
    kernel.log.clear();
    let mut again = Vxlan::new(
        kernel,
        ext6(),
        &config(DUAL),
        [2, 1, 1, 1, 1, 1],
        [2, 6, 6, 6, 6, 6],
    )
    .unwrap();
    assert_eq!((again.mac(), again.mac6()), (MAC, Some(MAC6)));
    assert_eq!(
        again.kernel().log.last().map(String::as_str),
        Some("accept_ra flannel-v6.1 0")
    );
    assert!(
        !again.kernel().log.iter().any(|l| l.starts_with("create")),
        "{:?}",
        again.kernel().log
    );

    // Moved to another IPv6 address: replaced (Go's vtep IP check), with the new MAC.
    let mut kernel = std::mem::take(again.kernel());
    kernel.log.clear();
    let mut e = ext6();
    e.iface_addr6 = Some("fd00:5::22".parse().unwrap());
    let mut moved = Vxlan::new(kernel, e, &config(DUAL), MAC, [2, 6, 6, 6, 6, 6]).unwrap();
    assert_eq!(moved.mac6(), Some([2, 6, 6, 6, 6, 6]));
    assert_eq!(moved.mac(), MAC);
    assert!(
        moved
            .kernel()
            .log
            .iter()
            .any(|l| l == "create flannel-v6.1 mac 02:06:06:06:06:06")
    );
}

#[test]
fn a_peer_whose_ipv6_side_changes_or_goes_under_the_same_ipv4_subnet_leaves_no_old_entries() {
    // Before: the lease cache keys peers by IPv4 subnet, so a re-keyed lease arrives as
    // one Added; the IPv6 stack kept the old subnet's entries (and reconcile restored them).
    let mut b = dual();
    b.handle(&[LeaseEvent::Added(lease(GO_KEY, GO_PEER))]);
    let moved = GO_PEER.replace("fd00:5::3", "fd00:5::7");
    b.handle(&[LeaseEvent::Added(lease(
        "10.5.2.0-24&fc00:0:0:7::-64",
        &moved,
    ))]);
    let routes6 = |b: &mut Vxlan<FakeKernel>| -> Vec<String> {
        b.kernel()
            .routes
            .iter()
            .filter(|r| r.dst.is_ipv6())
            .map(|r| r.dst.to_string())
            .collect()
    };
    assert_eq!(routes6(&mut b), ["fc00:0:0:7::/64"]);
    assert_eq!(
        b.kernel().fdb.iter().filter(|f| f.1.dst.is_ipv6()).count(),
        1
    );
    // A bad IPv6 side, then none at all: the IPv6 entries go, the IPv4 ones stay.
    let bad = moved.replace("c6:d2:32:6f:8f:46", "nope");
    b.handle(&[LeaseEvent::Added(lease(
        "10.5.2.0-24&fc00:0:0:7::-64",
        &bad,
    ))]);
    assert!(routes6(&mut b).is_empty());
    b.handle(&[LeaseEvent::Added(lease(GO_KEY, GO_PEER))]);
    b.handle(&[LeaseEvent::Added(lease(
        "10.5.2.0-24",
        r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
    ))]);
    assert!(routes6(&mut b).is_empty());
    b.reconcile();
    assert!(routes6(&mut b).is_empty());
    assert_eq!(b.kernel().routes.len(), 1);
    // Removed by its key alone (a delete carries only the key): nothing left.
    b.handle(&[LeaseEvent::Removed(lease("10.5.2.0-24", GO_PEER))]);
    let k = b.kernel();
    assert!(k.neigh.is_empty() && k.fdb.is_empty() && k.routes.is_empty());
}

#[test]
fn devices_the_kernel_would_refuse_are_refused_with_the_reason() {
    // Before: EINVAL from the kernel for the name, an IPv6 device without IPv6 for the MTU.
    let long = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan","VNI":10000}}"#;
    let e = Vxlan::new(FakeKernel::new(), ext6(), &config(long), MAC, MAC6).unwrap_err();
    assert!(
        e.to_string()
            .contains("VNI 10000 makes the device name flannel-v6.10000 longer than 15"),
        "{e}"
    );
    let mut small = ext6();
    small.mtu = 1340;
    let e = Vxlan::new(FakeKernel::new(), small, &config(DUAL), MAC, MAC6).unwrap_err();
    assert!(
        e.to_string()
            .contains("flannel-v6.1 would get MTU 1270, under IPv6's minimum of 1280"),
        "{e}"
    );
    let four = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":9999999}}"#;
    assert!(Vxlan::new(FakeKernel::new(), ext6(), &config(four), MAC, MAC6).is_ok());
}
