use super::super::*;
use super::fake::FakeKernel;
use crate::backend::hostgw::tests::ext;

const MAC: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];
const MAC6: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x06];
/// A peer lease in Go flanneld's exact format (Documentation/reservations.md's value).
const GO_PEER: &str = r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;

fn config(backend: &str) -> NetworkConfig {
    NetworkConfig::parse(format!(r#"{{"Network":"10.5.0.0/16","Backend":{backend}}}"#).as_bytes())
        .unwrap()
}

use crate::testkit::lease;

fn peer(key: &str, ip: &str, mac: &str) -> Lease {
    lease(
        key,
        &format!(
            r#"{{"PublicIP":"{ip}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
        ),
    )
}

fn backend_with(kernel: FakeKernel, backend: &str) -> Vxlan<FakeKernel> {
    let mut b = Vxlan::new(
        kernel,
        ext([192, 168, 64, 2], [192, 168, 64, 2]),
        &config(backend),
        MAC,
        MAC6,
    )
    .unwrap();
    b.lease_acquired(&lease("10.5.1.0-24", r#"{"PublicIP":"192.168.64.2"}"#))
        .unwrap();
    b.kernel().log.clear();
    b
}

fn backend() -> Vxlan<FakeKernel> {
    backend_with(FakeKernel::new(), r#"{"Type":"vxlan"}"#)
}

fn rt(dst: &str, gw: impl Into<IpAddr>, oif: Option<u32>) -> PeerRoute {
    PeerRoute {
        dst: dst.parse().unwrap(),
        gw: gw.into(),
        oif,
        onlink: oif.is_some(),
    }
}

#[test]
fn config_is_read_as_go_reads_it() {
    let c = VxlanConfig::parse(&serde_json::json!({"Type":"vxlan"})).unwrap();
    assert_eq!(
        c,
        VxlanConfig {
            vni: 1,
            port: 0,
            gbp: false,
            learning: false,
            direct_routing: false,
            mtu: 0
        }
    );
    let c = VxlanConfig::parse(
        &serde_json::json!({"type":"vxlan","vni":100,"PORT":4789,"gbp":true,"directrouting":true,"Mtu":9000}),
    )
    .unwrap();
    assert_eq!(
        (c.vni, c.port, c.gbp, c.direct_routing, c.mtu),
        (100, 4789, true, true, 9000)
    );
    assert_eq!(c.device_name(), "flannel.100");
    for bad in [
        serde_json::json!({"VNI": -1}),
        serde_json::json!({"VNI": 16777216}),
        serde_json::json!({"VNI": "1"}),
        serde_json::json!({"Port": 70000}),
        serde_json::json!({"MTU": 40}),
    ] {
        assert!(VxlanConfig::parse(&bad).is_err(), "{bad}");
    }
}

#[test]
fn random_macs_are_local_unicast() {
    for _ in 0..50 {
        let m = random_mac();
        assert_eq!(m[0] & 0x03, 0x02, "{}", mac_string(&m));
    }
    assert_eq!(
        parse_mac("C6:D2:32:6F:8F:44".to_ascii_lowercase().as_str()),
        Some([0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44])
    );
    assert_eq!(parse_mac("c6:d2:32:6f:8f"), None);
    assert_eq!(parse_mac("c6:d2:32:6f:8f:44:00"), None);
}

#[test]
fn creates_the_device_and_publishes_its_mac() {
    let mut b = Vxlan::new(
        FakeKernel::new(),
        ext([192, 168, 64, 2], [192, 168, 64, 2]),
        &config(r#"{"Type":"vxlan","VNI":100}"#),
        MAC,
        MAC6,
    )
    .unwrap();
    assert_eq!(b.mtu(), 1450);
    assert_eq!(
        b.lease_attrs().to_json(),
        r#"{"PublicIP":"192.168.64.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":100,"VtepMAC":"02:aa:bb:cc:dd:01"}}"#
    );
    b.lease_acquired(&lease("10.5.1.0-24", r#"{"PublicIP":"192.168.64.2"}"#))
        .unwrap();
    assert_eq!(
        b.kernel().log,
        [
            "create flannel.100 mac 02:aa:bb:cc:dd:01",
            "accept_ra flannel.100 0",
            "addr add 10.5.1.0/32 dev 11",
            "up 11"
        ]
    );
    let dev = b.kernel().links["flannel.100"].clone();
    assert_eq!(dev.mtu, 1450);
    assert_eq!(
        dev.vxlan.unwrap().port,
        8472,
        "Port 0: the kernel's default"
    );
    // The Backend's MTU is the underlay's.
    let b = Vxlan::new(
        FakeKernel::new(),
        ext([192, 168, 64, 2], [192, 168, 64, 2]),
        &config(r#"{"Type":"vxlan","MTU":9000}"#),
        MAC,
        MAC6,
    )
    .unwrap();
    assert_eq!(b.mtu(), 8950);
}

fn existing(vni: u32, port: u16, mac: [u8; 6]) -> Device {
    Device {
        index: 5,
        mac,
        mtu: 1450,
        up: true,
        vxlan: Some(VxlanAttrs {
            vni,
            link: Some(7),
            local: Some([192, 168, 64, 2].into()),
            port,
            gbp: false,
            l2miss: false,
        }),
    }
}

fn spec(port: u16) -> VxlanSpec {
    VxlanSpec {
        name: "flannel.1".into(),
        vni: 1,
        link: 7,
        local: IpAddr::V4([192, 168, 64, 2].into()),
        port,
        gbp: false,
        learning: false,
        mtu: 1450,
        mac: MAC,
    }
}

#[test]
fn device_reuse_or_replace_as_go_decides() {
    let other_mac = [2, 0, 0, 0, 0, 9];
    assert_eq!(decide(None, &spec(0)), DeviceAction::Create);
    assert_eq!(
        decide(Some(&existing(1, 8472, other_mac)), &spec(0)),
        DeviceAction::Reuse
    );
    assert_eq!(
        decide(Some(&existing(1, 8472, other_mac)), &spec(8472)),
        DeviceAction::Reuse
    );
    assert_eq!(
        decide(Some(&existing(1, 4789, other_mac)), &spec(8472)),
        DeviceAction::Replace("port: 4789 vs 8472".into())
    );
    assert_eq!(
        decide(Some(&existing(2, 8472, other_mac)), &spec(0)),
        DeviceAction::Replace("vni: 2 vs 1".into())
    );
    let mut moved = existing(1, 8472, other_mac);
    moved.vxlan.as_mut().unwrap().local = Some([10, 0, 0, 1].into());
    assert!(
        matches!(decide(Some(&moved), &spec(0)), DeviceAction::Replace(w) if w.starts_with("vtep (external) IP"))
    );
    let mut dummy = existing(1, 8472, other_mac);
    dummy.vxlan = None;
    assert!(matches!(
        decide(Some(&dummy), &spec(0)),
        DeviceAction::Replace(_)
    ));
}

#[test]
fn a_compatible_device_is_reused_with_its_mac_an_incompatible_one_replaced() {
    let kept = [0x0e, 1, 2, 3, 4, 5];
    let mut k = FakeKernel::new();
    k.links.insert("flannel.1".into(), existing(1, 8472, kept));
    let mut b = Vxlan::new(
        k,
        ext([192, 168, 64, 2], [192, 168, 64, 2]),
        &config(r#"{"Type":"vxlan"}"#),
        MAC,
        MAC6,
    )
    .unwrap();
    assert_eq!(
        b.mac(),
        kept,
        "the lease's VtepMAC stays valid across restarts"
    );
    assert_eq!(b.kernel().log, ["accept_ra flannel.1 0"]);
    assert!(b.lease_attrs().to_json().contains("0e:01:02:03:04:05"));

    // Go: a Port of 0 in the config is no conflict with any port.
    let mut k = FakeKernel::new();
    k.links.insert("flannel.1".into(), existing(1, 4789, kept));
    let b = Vxlan::new(
        k,
        ext([192, 168, 64, 2], [192, 168, 64, 2]),
        &config(r#"{"Type":"vxlan"}"#),
        MAC,
        MAC6,
    )
    .unwrap();
    assert_eq!(b.mac(), kept);

    let mut k = FakeKernel::new();
    k.links.insert("flannel.1".into(), existing(2, 8472, kept));
    let mut b = Vxlan::new(
        k,
        ext([192, 168, 64, 2], [192, 168, 64, 2]),
        &config(r#"{"Type":"vxlan"}"#),
        MAC,
        MAC6,
    )
    .unwrap();
    assert_eq!(b.mac(), MAC);
    assert_eq!(
        b.kernel().log,
        [
            "delete link 5",
            "create flannel.1 mac 02:aa:bb:cc:dd:01",
            "accept_ra flannel.1 0"
        ]
    );
}

#[test]
fn a_peer_is_neighbour_then_fdb_then_route_and_goes_with_its_lease() {
    let mut b = backend();
    let go = lease("10.5.2.0-24", GO_PEER);
    b.handle(&[LeaseEvent::Added(go.clone())]);
    assert_eq!(
        b.kernel().log,
        [
            "neigh 10.5.2.0 lladdr c6:d2:32:6f:8f:44 dev 11",
            "fdb c6:d2:32:6f:8f:44 dst 192.168.64.3 dev 11",
            "route 10.5.2.0/24 via 10.5.2.0 dev 11 onlink"
        ]
    );
    b.kernel().log.clear();
    // Another backend's lease is ignored; a renewal-free re-add is idempotent.
    b.handle(&[LeaseEvent::Added(lease(
        "10.5.3.0-24",
        r#"{"PublicIP":"192.168.64.4","BackendType":"host-gw"}"#,
    ))]);
    assert!(b.kernel().log.is_empty());
    b.handle(&[LeaseEvent::Removed(go)]);
    assert_eq!(
        b.kernel().log,
        [
            "route del 10.5.2.0/24 via 10.5.2.0",
            "neigh del 10.5.2.0 dev 11",
            "fdb del c6:d2:32:6f:8f:44 dev 11"
        ]
    );
    let k = b.kernel();
    assert!(k.neigh.is_empty() && k.fdb.is_empty() && k.routes.is_empty());
}

#[test]
fn each_failed_step_rolls_back_the_steps_before_it() {
    for (fail, expect) in [
        ("neigh", vec![]),
        (
            "fdb",
            vec![
                "neigh 10.5.2.0 lladdr c6:d2:32:6f:8f:44 dev 11",
                "neigh del 10.5.2.0 dev 11",
            ],
        ),
        (
            "route",
            vec![
                "neigh 10.5.2.0 lladdr c6:d2:32:6f:8f:44 dev 11",
                "fdb c6:d2:32:6f:8f:44 dst 192.168.64.3 dev 11",
                "fdb del c6:d2:32:6f:8f:44 dev 11",
                "neigh del 10.5.2.0 dev 11",
            ],
        ),
    ] {
        let mut b = backend();
        b.kernel().fail = Some(fail);
        b.handle(&[LeaseEvent::Added(lease("10.5.2.0-24", GO_PEER))]);
        let k = b.kernel();
        assert_eq!(k.log, expect, "failing {fail}");
        assert!(
            k.neigh.is_empty() && k.fdb.is_empty() && k.routes.is_empty(),
            "{fail}"
        );
        // The peer is still wanted: the next reconcile programs it once the kernel agrees.
        k.fail = None;
        b.reconcile();
        assert_eq!(b.kernel().routes.len(), 1, "{fail}");
    }
}

#[test]
fn direct_routing_uses_the_public_ip_when_the_peer_is_on_link() {
    let mut k = FakeKernel::new();
    k.on_link.insert([192, 168, 64, 3].into());
    let mut b = backend_with(k, r#"{"Type":"vxlan","DirectRouting":true}"#);
    b.handle(&[
        LeaseEvent::Added(lease("10.5.2.0-24", GO_PEER)),
        LeaseEvent::Added(peer("10.5.3.0-24", "10.9.0.4", "0e:00:00:00:00:04")),
    ]);
    assert_eq!(
        b.kernel().log,
        [
            "route 10.5.2.0/24 via 192.168.64.3",
            "neigh 10.5.3.0 lladdr 0e:00:00:00:00:04 dev 11",
            "fdb 0e:00:00:00:00:04 dst 10.9.0.4 dev 11",
            "route 10.5.3.0/24 via 10.5.3.0 dev 11 onlink"
        ]
    );
    b.kernel().log.clear();
    b.reconcile();
    assert!(b.kernel().log.is_empty(), "{:?}", b.kernel().log);
}

#[test]
fn a_changed_mac_replaces_the_entries_and_drops_the_old_fdb() {
    let mut b = backend();
    b.handle(&[LeaseEvent::Added(peer(
        "10.5.2.0-24",
        "192.168.64.3",
        "0e:00:00:00:00:01",
    ))]);
    b.handle(&[LeaseEvent::Added(peer(
        "10.5.2.0-24",
        "192.168.64.3",
        "0e:00:00:00:00:02",
    ))]);
    let k = b.kernel();
    assert_eq!(k.fdb.len(), 1);
    assert_eq!(k.fdb.iter().next().unwrap().1.mac, [0x0e, 0, 0, 0, 0, 2]);
    assert_eq!(k.neigh.len(), 1);
    assert_eq!(k.routes.len(), 1);
}

fn two_peers() -> Vxlan<FakeKernel> {
    let mut b = backend();
    b.handle(&[
        LeaseEvent::Added(lease("10.5.2.0-24", GO_PEER)),
        LeaseEvent::Added(peer("10.5.3.0-24", "192.168.64.4", "0e:00:00:00:00:04")),
    ]);
    b.kernel().log.clear();
    b
}

#[test]
fn reconcile_restores_each_missing_kind_and_counts_it() {
    let mut b = two_peers();
    b.reconcile();
    assert!(
        b.kernel().log.is_empty(),
        "nothing to do: {:?}",
        b.kernel().log
    );
    assert_eq!(b.repairs(), Repairs::default());

    let k = b.kernel();
    let n = *k.neigh.iter().next().unwrap();
    k.neigh.remove(&n);
    let f = *k.fdb.iter().last().unwrap();
    k.fdb.remove(&f);
    let r = rt("10.5.2.0/24", [10, 5, 2, 0], Some(11));
    assert!(k.routes.remove(&r));
    k.addrs.clear();
    k.links.get_mut("flannel.1").unwrap().up = false;
    b.reconcile();
    assert_eq!(
        b.kernel().log,
        [
            "up 11",
            "addr add 10.5.1.0/32 dev 11",
            "neigh 10.5.2.0 lladdr c6:d2:32:6f:8f:44 dev 11",
            "fdb c6:d2:32:6f:8f:44 dst 192.168.64.3 dev 11",
            "route 10.5.2.0/24 via 10.5.2.0 dev 11 onlink"
        ]
    );
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
fn reconcile_removes_entries_of_vanished_peers_only() {
    let mut b = two_peers();
    let k = b.kernel();
    let stale_mac = [0x0e, 9, 9, 9, 9, 9];
    k.neigh.insert((
        11,
        Neighbour {
            ip: [10, 5, 9, 0].into(),
            mac: stale_mac,
        },
    ));
    k.fdb.insert((
        11,
        Fdb {
            mac: stale_mac,
            dst: [192, 168, 64, 9].into(),
        },
    ));
    k.routes.insert(rt("10.5.9.0/24", [10, 5, 9, 0], Some(11)));
    // Not ours: another network's route, the default route, a route of another device.
    k.routes
        .insert(rt("172.16.0.0/24", [192, 168, 64, 1], Some(7)));
    k.routes.insert(rt("0.0.0.0/0", [192, 168, 64, 1], Some(7)));
    k.routes
        .insert(rt("10.5.8.0/24", [192, 168, 64, 1], Some(7)));
    b.reconcile();
    assert_eq!(
        b.kernel().log,
        [
            "route del 10.5.9.0/24 via 10.5.9.0",
            "neigh del 10.5.9.0 dev 11",
            "fdb del 0e:09:09:09:09:09 dev 11"
        ]
    );
    let r = b.repairs();
    assert_eq!(
        (r.stale_route, r.stale_neighbour, r.stale_fdb, r.total()),
        (1, 1, 1, 3)
    );
    assert_eq!(b.kernel().routes.len(), 5);
}

#[test]
fn a_deleted_device_comes_back_with_its_mac_and_every_peer() {
    let mut b = two_peers();
    b.kernel().remove_link("flannel.1");
    assert!(
        b.kernel().routes.is_empty(),
        "the kernel drops the device's routes"
    );
    b.reconcile();
    assert_eq!(
        b.kernel().log,
        [
            "create flannel.1 mac 02:aa:bb:cc:dd:01",
            "accept_ra flannel.1 0",
            "addr add 10.5.1.0/32 dev 12",
            "up 12",
            "neigh 10.5.2.0 lladdr c6:d2:32:6f:8f:44 dev 12",
            "fdb c6:d2:32:6f:8f:44 dst 192.168.64.3 dev 12",
            "route 10.5.2.0/24 via 10.5.2.0 dev 12 onlink",
            "neigh 10.5.3.0 lladdr 0e:00:00:00:00:04 dev 12",
            "fdb 0e:00:00:00:00:04 dst 192.168.64.4 dev 12",
            "route 10.5.3.0/24 via 10.5.3.0 dev 12 onlink"
        ]
    );
    assert_eq!(b.repairs().device, 1);
    b.kernel().log.clear();
    b.reconcile();
    assert!(b.kernel().log.is_empty(), "{:?}", b.kernel().log);
    // Removing a peer afterwards uses the new index.
    b.handle(&[LeaseEvent::Removed(lease("10.5.2.0-24", GO_PEER))]);
    assert_eq!(b.kernel().routes.len(), 1);

    // A device whose MAC was changed by hand is recreated with the published one.
    let mut b = two_peers();
    b.kernel().links.get_mut("flannel.1").unwrap().mac = [2, 0, 0, 0, 0, 0x99];
    b.reconcile();
    assert_eq!(b.kernel().links["flannel.1"].mac, MAC);
    assert_eq!(b.kernel().routes.len(), 2);
}

#[test]
fn vtep_macs_that_are_no_peer_are_refused_before_any_entry() {
    // Before: the all-zero MAC became FDB entry 00:00:00:00:00:00 (the default destination
    // of every unknown MAC), a multicast one a neighbour's lladdr.
    let mut b = backend();
    for (i, mac) in [
        "00:00:00:00:00:00",
        "01:00:5e:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        &mac_string(&MAC),
        "zz:00:00:00:00:01",
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("10.5.{}.0-24", 20 + i);
        b.handle(&[LeaseEvent::Added(peer(&key, "192.168.64.9", mac))]);
    }
    assert!(b.kernel().log.is_empty(), "{:?}", b.kernel().log);
    b.handle(&[LeaseEvent::Added(peer(
        "10.5.30.0-24",
        "192.168.64.9",
        "c6:d2:32:6f:8f:44",
    ))]);
    assert_eq!(b.kernel().log.len(), 3, "{:?}", b.kernel().log);
}

#[test]
fn the_old_lease_of_a_re_keyed_node_takes_not_the_fdb_entry_its_new_lease_uses() {
    // A node that moved to another subnet keeps its device and MAC; its old lease expires
    // later. Before: that expiry deleted the FDB entry the new lease still needs.
    let mut b = backend();
    let old = peer("10.5.2.0-24", "192.168.64.3", "c6:d2:32:6f:8f:44");
    b.handle(&[
        LeaseEvent::Added(old.clone()),
        LeaseEvent::Added(peer("10.5.9.0-24", "192.168.64.3", "c6:d2:32:6f:8f:44")),
    ]);
    b.handle(&[LeaseEvent::Removed(old)]);
    let k = b.kernel();
    assert_eq!(k.fdb.len(), 1, "{:?}", k.fdb);
    assert_eq!(k.routes.len(), 1);
    assert_eq!(k.neigh.len(), 1);
    b.kernel().log.clear();
    b.reconcile();
    assert!(b.kernel().log.is_empty(), "{:?}", b.kernel().log);
}

#[test]
fn a_tick_without_entries_still_restores_the_device_and_a_failed_step_unsettles() {
    // Before: the quiet tick (no kernel notice of the entries) left a device set down, or
    // a failed programming, to the minute's whole reconcile.
    let mut b = backend();
    b.handle(&[LeaseEvent::Added(peer(
        "10.5.2.0-24",
        "192.168.64.3",
        "c6:d2:32:6f:8f:44",
    ))]);
    assert!(b.settled());
    b.kernel().links.get_mut("flannel.1").unwrap().up = false;
    b.kernel().neigh.clear();
    b.reconcile_without_entries();
    assert!(b.kernel().links["flannel.1"].up);
    assert_eq!(b.repairs().device, 1);
    assert!(
        b.kernel().neigh.is_empty(),
        "entries are the whole reconcile's"
    );
    b.reconcile();
    assert_eq!(b.kernel().neigh.len(), 1);
    // A step that fails leaves the backend unsettled until a whole reconcile works.
    b.kernel().fail = Some("fdb");
    b.handle(&[LeaseEvent::Added(peer(
        "10.5.3.0-24",
        "192.168.64.4",
        "c6:d2:32:6f:8f:45",
    ))]);
    assert!(!b.settled());
    b.reconcile();
    assert!(!b.settled(), "the repair failed again");
    b.kernel().fail = None;
    b.reconcile();
    assert!(b.settled());
    assert_eq!(b.kernel().fdb.len(), 2);
}

#[test]
fn tx_checksum_off_on_creation_reuse_and_recreation() {
    let off = "ethtool -K flannel.1 tx-checksum-ip-generic off";
    let mut b = Vxlan::with_options(
        FakeKernel::new(),
        ext([192, 168, 64, 2], [192, 168, 64, 2]),
        &config(r#"{"Type":"vxlan"}"#),
        MAC,
        MAC6,
        true,
    )
    .unwrap();
    assert!(
        b.kernel().log.iter().any(|l| l == off),
        "{:?}",
        b.kernel().log
    );
    b.lease_acquired(&lease("10.5.1.0-24", r#"{"PublicIP":"192.168.64.2"}"#))
        .unwrap();
    // The device deleted by hand: recreated by reconcile, and the feature off again.
    b.kernel().links.remove("flannel.1");
    b.kernel().log.clear();
    b.reconcile();
    assert!(b.kernel().links.contains_key("flannel.1"));
    assert!(
        b.kernel().log.iter().any(|l| l == off),
        "{:?}",
        b.kernel().log
    );
    // A kernel that refuses: the backend does not start without what was asked.
    let mut refusing = FakeKernel::new();
    refusing.fail = Some("tx_checksum");
    let e = Vxlan::with_options(
        refusing,
        ext([192, 168, 64, 2], [192, 168, 64, 2]),
        &config(r#"{"Type":"vxlan"}"#),
        MAC,
        MAC6,
        true,
    )
    .unwrap_err();
    assert!(e.to_string().contains("--vxlan-tx-checksum-off"), "{e}");
    // Off by default: the feature is not touched.
    let mut plain = Vxlan::new(
        FakeKernel::new(),
        ext([192, 168, 64, 2], [192, 168, 64, 2]),
        &config(r#"{"Type":"vxlan"}"#),
        MAC,
        MAC6,
    )
    .unwrap();
    assert!(!plain.kernel().log.iter().any(|l| l.starts_with("ethtool")));
}
