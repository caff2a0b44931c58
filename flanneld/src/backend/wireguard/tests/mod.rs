//! The wireguard backend on an in-memory node ([`fake::FakeWg`]).

mod fake;

use fake::FakeWg;
use serde_json::json;

use super::*;
use crate::backend::hostgw::tests::ext;
use crate::testkit::lease;

const V4: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard"}}"#;

fn config(s: &str) -> NetworkConfig {
    NetworkConfig::parse(s.as_bytes()).unwrap()
}

/// Node `n`'s key: `[n; 32]` as a private key.
fn key(n: u8) -> Key {
    Key([n; 32])
}

fn backend(json: &str) -> Wireguard<FakeWg> {
    backend_on(FakeWg::default(), json)
}

fn backend_on(kernel: FakeWg, json: &str) -> Wireguard<FakeWg> {
    let mut wg = Wireguard::new(
        kernel,
        ext([192, 168, 1, 2], [192, 168, 1, 2]),
        &config(json),
        key(1),
    )
    .unwrap();
    wg.lease_acquired(&lease("10.5.1.0-24", r#"{"PublicIP":"192.168.1.2"}"#))
        .unwrap();
    wg
}

/// Peer `n`'s lease as Go writes it (at 192.168.1.n with key `[n; 32]`).
fn peer(n: u8, port: Option<u16>) -> Lease {
    let data = match port {
        Some(p) => json!({"PublicKey": key(n).public().to_base64(), "Port": p}),
        None => json!({"PublicKey": key(n).public().to_base64()}),
    };
    lease(
        &format!("10.5.{n}.0-24"),
        &format!(
            r#"{{"PublicIP":"192.168.1.{n}","PublicIPv6":null,"BackendType":"wireguard","BackendData":{data}}}"#
        ),
    )
}

fn peers_of(wg: &Wireguard<FakeWg>, dev: &str) -> Vec<String> {
    let mut v: Vec<String> = wg.kernel().links[dev]
        .wg
        .peers
        .iter()
        .map(|p| {
            format!(
                "{} {:?}",
                p.endpoint.unwrap(),
                p.allowed_ips
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_lease_value_is_gos_byte_for_byte() {
    let wg = backend(V4);
    let pk = key(1).public().to_base64();
    assert_eq!(
        wg.lease_attrs().to_json(),
        format!(
            r#"{{"PublicIP":"192.168.1.2","PublicIPv6":null,"BackendType":"wireguard","BackendData":{{"PublicKey":"{pk}","Port":51820}}}}"#
        )
    );
    assert_eq!(wg.mtu(), 1420);
    // Go's kube annotation text too.
    assert_eq!(
        crate::lease::backend_data_json(wg.lease_attrs().backend_data.as_ref()),
        format!(r#"{{"PublicKey":"{pk}","Port":51820}}"#)
    );
}

#[test]
fn the_device_gets_key_port_mtu_address_and_the_network_route() {
    let wg = backend(V4);
    let l = &wg.kernel().links[DEVICE];
    assert_eq!(l.link.mtu, 1420);
    assert!(l.link.up);
    assert_eq!(l.private, Some(key(1).0));
    assert_eq!(l.wg.listen_port, 51820);
    assert_eq!(l.addresses, ["10.5.1.0/32".parse::<IpNetwork>().unwrap()]);
    assert_eq!(l.routes, ["10.5.0.0/16".parse::<IpNetwork>().unwrap()]);
    assert_eq!(wg.flavor(), Flavor::Kernel);
}

#[test]
fn peers_come_and_go_with_their_leases() {
    let mut wg = backend(V4);
    wg.handle(&[
        LeaseEvent::Added(peer(3, Some(51820))),
        LeaseEvent::Added(peer(4, None)),
    ]);
    assert_eq!(
        peers_of(&wg, DEVICE),
        [
            r#"192.168.1.3:51820 ["10.5.3.0/24"]"#,
            r#"192.168.1.4:51820 ["10.5.4.0/24"]"#
        ]
    );
    assert_eq!(wg.programmed(), 2);
    wg.handle(&[LeaseEvent::Removed(peer(3, Some(51820)))]);
    assert_eq!(
        peers_of(&wg, DEVICE),
        [r#"192.168.1.4:51820 ["10.5.4.0/24"]"#]
    );
    // Our own lease is no peer.
    wg.handle(&[LeaseEvent::Added(peer(1, Some(51820)))]);
    assert_eq!(wg.programmed(), 1);
}

#[test]
fn a_psk_and_keepalive_apply_to_every_peer() {
    let psk = Key([9; 32]).to_base64();
    let mut wg = backend(&format!(
        r#"{{"Network":"10.5.0.0/16","Backend":{{"Type":"wireguard","psk":"{psk}","PersistentKeepaliveInterval":25}}}}"#
    ));
    wg.handle(&[LeaseEvent::Added(peer(3, Some(51820)))]);
    let p = &wg.kernel().links[DEVICE].wg.peers[0];
    assert_eq!(p.preshared_key, Some([9; 32]));
    assert_eq!(p.keepalive, 25);
}

#[test]
fn a_peer_with_a_new_key_replaces_its_old_one() {
    let mut wg = backend(V4);
    wg.handle(&[LeaseEvent::Added(peer(3, Some(51820)))]);
    let mut moved = peer(5, Some(51820));
    moved.subnet = peer(3, None).subnet;
    wg.handle(&[LeaseEvent::Added(moved)]);
    let keys: Vec<u8> = wg.kernel().links[DEVICE]
        .wg
        .peers
        .iter()
        .map(|p| p.public_key[0])
        .collect();
    assert_eq!(keys, [key(5).public().0[0]]);
}

#[test]
fn reconcile_restores_a_deleted_device_with_every_peer_and_removes_strangers() {
    let mut wg = backend(V4);
    wg.handle(&[LeaseEvent::Added(peer(3, Some(51820)))]);
    wg.listed();
    wg.kernel.links.remove(DEVICE);
    wg.reconcile();
    assert_eq!(wg.repairs().device, 1);
    assert_eq!(
        peers_of(&wg, DEVICE),
        [r#"192.168.1.3:51820 ["10.5.3.0/24"]"#]
    );
    assert_eq!(wg.kernel().links[DEVICE].addresses.len(), 1);
    // A peer added by hand, and a changed endpoint.
    let l = wg.kernel.link_mut(DEVICE);
    l.wg.peers[0].endpoint = Some("192.168.1.99:1".parse().unwrap());
    l.wg.peers.push(WgPeer::new([7; 32], None, vec![]));
    l.routes.clear();
    wg.reconcile();
    let r = wg.repairs();
    assert_eq!((r.peer, r.stale_peer, r.route), (1, 1, 1));
    assert_eq!(
        peers_of(&wg, DEVICE),
        [r#"192.168.1.3:51820 ["10.5.3.0/24"]"#]
    );
    let writes = wg.kernel().log.len();
    wg.reconcile();
    assert_eq!(wg.repairs().total(), r.total(), "nothing more to repair");
    assert_eq!(
        wg.kernel().log[writes..],
        [] as [String; 0],
        "a quiet reconcile only reads"
    );
    assert!(wg.settled());
}

#[test]
fn peers_of_an_earlier_run_stay_until_the_listing_says_they_are_stale() {
    let mut kernel = FakeWg::default();
    let mut first = backend_on(std::mem::take(&mut kernel), V4);
    first.handle(&[
        LeaseEvent::Added(peer(3, Some(51820))),
        LeaseEvent::Added(peer(4, Some(51820))),
    ]);
    let mut kernel = std::mem::take(&mut first.kernel);
    kernel.log.clear();
    // The restart takes the kernel device over: no delete, no create.
    let mut wg = backend_on(kernel, V4);
    assert!(
        !wg.kernel()
            .log
            .iter()
            .any(|l| l.starts_with("delete") || l.starts_with("create"))
    );
    assert_eq!(peers_of(&wg, DEVICE).len(), 2);
    wg.handle(&[LeaseEvent::Added(peer(3, Some(51820)))]);
    wg.listed();
    assert_eq!(
        peers_of(&wg, DEVICE),
        [r#"192.168.1.3:51820 ["10.5.3.0/24"]"#]
    );
}

#[test]
fn a_foreign_link_of_the_name_is_replaced_as_go_does() {
    let mut kernel = FakeWg::default();
    kernel.foreign(DEVICE);
    let wg = backend_on(kernel, V4);
    assert_eq!(
        wg.kernel().log[..2],
        ["delete flannel-wg", "create flannel-wg mtu 1420 Kernel"]
    );
}

#[test]
fn userspace_caps_the_mtu_it_can_read() {
    let kernel = FakeWg {
        no_module: true,
        ..FakeWg::default()
    };
    let mut e = ext([192, 168, 1, 2], [192, 168, 1, 2]);
    e.mtu = 9000;
    let wg = Wireguard::new(kernel, e, &config(V4), key(1)).unwrap();
    assert_eq!(wg.flavor(), Flavor::Userspace);
    assert_eq!(wg.mtu(), USERSPACE_MAX_MTU);
    assert_eq!(wg.kernel().links[DEVICE].link.mtu, USERSPACE_MAX_MTU);
}

#[test]
fn a_failed_peer_change_is_retried_by_reconcile() {
    let mut wg = backend(V4);
    wg.kernel.fail_peers = true;
    wg.handle(&[LeaseEvent::Added(peer(3, Some(51820)))]);
    assert!(!wg.settled());
    wg.kernel.fail_peers = false;
    wg.reconcile();
    assert!(wg.settled());
    assert_eq!(peers_of(&wg, DEVICE).len(), 1);
}

#[test]
fn a_new_lease_moves_the_address() {
    let mut wg = backend(V4);
    wg.lease_acquired(&lease("10.5.9.0-24", r#"{"PublicIP":"192.168.1.2"}"#))
        .unwrap();
    assert_eq!(
        wg.kernel().links[DEVICE].addresses,
        ["10.5.9.0/32".parse::<IpNetwork>().unwrap()]
    );
}

#[test]
fn dual_stack_separate_mode_has_two_devices_with_their_own_ports_and_data() {
    let mut e = ext([192, 168, 1, 2], [192, 168, 1, 2]);
    e.public_ipv6 = Some("fd00::2".parse().unwrap());
    let cfg = config(
        r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"wireguard"}}"#,
    );
    let mut wg = Wireguard::new(FakeWg::default(), e, &cfg, key(1)).unwrap();
    wg.lease_acquired(&lease(
        "10.5.1.0-24&fc00:0:0:1::-64",
        r#"{"PublicIP":"192.168.1.2"}"#,
    ))
    .unwrap();
    let pk = key(1).public().to_base64();
    assert_eq!(
        wg.lease_attrs().to_json(),
        format!(
            r#"{{"PublicIP":"192.168.1.2","PublicIPv6":"fd00::2","BackendType":"wireguard","BackendData":{{"PublicKey":"{pk}","Port":51820}},"BackendV6Data":{{"PublicKey":"{pk}","Port":51821}}}}"#
        )
    );
    assert_eq!(wg.kernel().links[DEVICE_V6].wg.listen_port, 51821);
    assert_eq!(
        wg.kernel().links[DEVICE_V6].addresses,
        ["fc00:0:0:1::/128".parse::<IpNetwork>().unwrap()]
    );
    let data = |p| json!({"PublicKey": key(3).public().to_base64(), "Port": p});
    let l = lease(
        "10.5.3.0-24&fc00:0:0:3::-64",
        &format!(
            r#"{{"PublicIP":"192.168.1.3","PublicIPv6":"fd00::3","BackendType":"wireguard","BackendData":{},"BackendV6Data":{}}}"#,
            data(51820),
            data(51821)
        ),
    );
    wg.handle(&[LeaseEvent::Added(l)]);
    assert_eq!(
        peers_of(&wg, DEVICE),
        [r#"192.168.1.3:51820 ["10.5.3.0/24"]"#]
    );
    assert_eq!(
        peers_of(&wg, DEVICE_V6),
        [r#"[fd00::3]:51821 ["fc00:0:0:3::/64"]"#]
    );
}

#[test]
fn single_device_modes_pick_the_endpoint_family() {
    let mut e = ext([192, 168, 1, 2], [192, 168, 1, 2]);
    e.public_ipv6 = Some("2001:db8::2".parse().unwrap());
    let data = json!({"PublicKey": key(3).public().to_base64(), "Port": 51820});
    let l = |ip4: &str| {
        lease(
            "10.5.3.0-24&fc00:0:0:3::-64",
            &format!(
                r#"{{"PublicIP":"{ip4}","PublicIPv6":"2001:db8::3","BackendType":"wireguard","BackendData":{data},"BackendV6Data":{data}}}"#
            ),
        )
    };
    for (mode, ip4, want) in [
        ("ipv4", "192.168.1.3", "192.168.1.3:51820"),
        ("ipv6", "192.168.1.3", "[2001:db8::3]:51820"),
        // auto: a private IPv4 address and public IPv6 ones on both ends: IPv6.
        ("auto", "192.168.1.3", "[2001:db8::3]:51820"),
        // auto: a public IPv4 address: IPv4.
        ("auto", "203.0.113.3", "203.0.113.3:51820"),
    ] {
        let cfg = config(&format!(
            r#"{{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{{"Type":"wireguard","Mode":"{mode}"}}}}"#
        ));
        let mut wg = Wireguard::new(FakeWg::default(), e.clone(), &cfg, key(1)).unwrap();
        wg.lease_acquired(&lease(
            "10.5.1.0-24&fc00:0:0:1::-64",
            r#"{"PublicIP":"192.168.1.2"}"#,
        ))
        .unwrap();
        assert!(!wg.kernel().links.contains_key(DEVICE_V6));
        wg.handle(&[LeaseEvent::Added(l(ip4))]);
        assert_eq!(
            peers_of(&wg, DEVICE),
            [format!(r#"{want} ["10.5.3.0/24", "fc00:0:0:3::/64"]"#)],
            "{mode} {ip4}"
        );
        // The one device listens on ListenPort for both families, and says so.
        assert_eq!(wg.lease_attrs().backend_v6_data.unwrap()["Port"], 51820);
        assert_eq!(wg.kernel().links[DEVICE].routes.len(), 2);
    }
}

#[test]
fn the_config_is_read_as_go_reads_it_and_bad_values_are_refused() {
    let parse = |b: serde_json::Value| WireguardConfig::parse(&b);
    let d = parse(json!({"Type":"wireguard"})).unwrap();
    assert_eq!(
        (d.listen_port, d.listen_port_v6, d.mtu, d.keepalive, d.mode),
        (51820, 51821, 0, 0, Mode::Separate)
    );
    let c = parse(json!({"listenport": 4000, "MTU": 1400, "mode": "auto"})).unwrap();
    assert_eq!((c.listen_port, c.mtu, c.mode), (4000, 1400, Mode::Auto));
    for (bad, why) in [
        (json!({"Mode": "Auto"}), "no valid Mode"),
        (json!({"ListenPort": 0}), "ListenPort 0"),
        (json!({"ListenPortV6": 70000}), "ListenPortV6 70000"),
        (json!({"MTU": 100}), "MTU 100"),
        (json!({"PSK": "c2VjcmV0"}), "PSK: 6 bytes"),
        (
            json!({"PersistentKeepaliveInterval": -1}),
            "PersistentKeepaliveInterval -1",
        ),
    ] {
        let e = parse(bad).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
        assert!(!e.contains("c2VjcmV0"), "the PSK is not shown: {e}");
    }
    assert!(crate::backend::check(&config(V4)).is_ok());
}

#[test]
fn a_lease_without_a_key_is_skipped_not_fatal() {
    let mut wg = backend(V4);
    let bad = lease(
        "10.5.3.0-24",
        r#"{"PublicIP":"192.168.1.3","BackendType":"wireguard","BackendData":{"PublicKey":"nope"}}"#,
    );
    wg.handle(&[
        LeaseEvent::Added(bad),
        LeaseEvent::Added(peer(4, Some(51820))),
    ]);
    assert_eq!(peers_of(&wg, DEVICE).len(), 1);
}

#[test]
fn stop_ends_the_devices_of_the_agents_life() {
    let mut wg = backend(V4);
    Backend::stop(&mut wg);
    assert!(wg.kernel().stopped);
}
