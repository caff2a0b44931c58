//! flanneld's vxlan backend and `--ip-masq` rules on the real kernel, in private namespaces:
//! two "nodes" (a test node's host namespace and an external namespace on a veth link),
//! each with its own `flannel.100`, programmed from leases (one in Go flanneld's exact
//! format), checked with `ip -d link`, `ip neigh`, `bridge fdb`, `ip route` and a ping across
//! the overlay; entries deleted by hand and the device itself restored by reconcile; the
//! device reused across restarts with its MAC, replaced when incompatible; the nftables
//! ruleset `nft list ruleset` shows.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use conformance::Node;
use conformance::netns::TestNetns;
use flanneld::backend::Backend;
use flanneld::backend::masq::{Firewalled, RuleSet};
use flanneld::backend::vxlan::{KernelVxlan, Vxlan, mac_string};
use flanneld::cache::LeaseEvent;
use flanneld::config::NetworkConfig;
use flanneld::iface;
use flanneld::lease::{Lease, LeaseAttrs};
use flanneld::subnet::SubnetKey;
use node_kernel::Netns;

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":100}}"#;
/// Node A's peer lease as Go flanneld writes it (the VtepMAC is node B's device's).
const GO_B: &str = r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":100,"VtepMAC":"0e:00:00:00:00:0b"}}"#;
const MAC_A: [u8; 6] = [0x0e, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x0e, 0, 0, 0, 0, 0x0b];

fn in_ns<T>(ns: &TestNetns, f: impl FnOnce() -> T) -> T {
    Netns::open(ns.path()).unwrap().run(f).unwrap()
}

fn lease(key: &str, value: &str) -> Lease {
    Lease {
        subnet: SubnetKey::parse(key).unwrap(),
        attrs: LeaseAttrs::from_json(value.as_bytes()).unwrap(),
        lease_id: 0,
        expiration: None,
    }
}

fn peer(key: &str, ip: &str, mac: [u8; 6]) -> Lease {
    lease(
        key,
        &format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":100,"VtepMAC":"{}"}}}}"#,
            mac_string(&mac)
        ),
    )
}

fn config(s: &str) -> NetworkConfig {
    NetworkConfig::parse(s.as_bytes()).unwrap()
}

/// A vxlan backend in `ns` on `iface`, its lease `own` acquired.
fn start(
    ns: &TestNetns,
    iface_name: &str,
    cfg: &str,
    mac: [u8; 6],
    own: &str,
) -> Vxlan<KernelVxlan> {
    in_ns(ns, || {
        let ext = iface::lookup(
            iface::Pins {
                ifaces: &[iface_name.to_owned()],
                ..iface::Pins::default()
            },
            None,
            None,
            true,
        )
        .unwrap();
        let mac6 = [0x0e, 6, 0, 0, 0, mac[5]];
        let mut b = Vxlan::new(
            KernelVxlan::current().unwrap(),
            ext,
            &config(cfg),
            mac,
            mac6,
        )
        .unwrap();
        let attrs = b.lease_attrs().to_json();
        b.lease_acquired(&lease(own, &attrs)).unwrap();
        b
    })
}

fn two_nodes() -> (Node, TestNetns) {
    let node = Node::new();
    let b = node.external("192.168.64.2/24", "192.168.64.3/24");
    (node, b)
}

#[test]
fn peers_programmed_checked_with_ip_and_bridge_and_pinged_across_the_overlay() {
    let (node, ns_b) = two_nodes();
    let a = node.host();
    let mut va = start(a, "ext0", CONFIG, MAC_A, "10.5.1.0-24");
    let mut vb = start(&ns_b, "ext1", CONFIG, MAC_B, "10.5.2.0-24");
    assert_eq!(
        va.lease_attrs().to_json(),
        r#"{"PublicIP":"192.168.64.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":100,"VtepMAC":"0e:00:00:00:00:0a"}}"#
    );
    in_ns(a, || {
        va.handle(&[LeaseEvent::Added(lease("10.5.2.0-24", GO_B))])
    });
    in_ns(&ns_b, || {
        vb.handle(&[LeaseEvent::Added(lease(
            "10.5.1.0-24",
            &va.lease_attrs().to_json(),
        ))])
    });

    let link = a.sh("ip", &["-d", "link", "show", "flannel.100"]);
    eprintln!("$ ip -d link show flannel.100\n{link}");
    for want in [
        "mtu 1450",
        "link/ether 0e:00:00:00:00:0a",
        "vxlan id 100",
        "local 192.168.64.2",
        "dev ext0",
        "dstport 8472",
        "nolearning",
        "UP",
    ] {
        assert!(link.contains(want), "{want}: {link}");
    }
    let addr = a.sh("ip", &["-4", "addr", "show", "flannel.100"]);
    assert!(addr.contains("inet 10.5.1.0/32"), "{addr}");
    assert_eq!(
        a.sh("cat", &["/proc/sys/net/ipv6/conf/flannel.100/accept_ra"])
            .trim(),
        "0"
    );
    let neigh = a.sh("ip", &["neigh", "show", "dev", "flannel.100"]);
    let fdb = a.sh("bridge", &["fdb", "show", "dev", "flannel.100"]);
    let route = a.sh("ip", &["route"]);
    eprintln!(
        "$ ip neigh show dev flannel.100\n{neigh}$ bridge fdb show dev flannel.100\n{fdb}$ ip route\n{route}"
    );
    assert!(
        neigh.contains("10.5.2.0 lladdr 0e:00:00:00:00:0b PERMANENT"),
        "{neigh}"
    );
    assert!(
        fdb.contains("0e:00:00:00:00:0b dst 192.168.64.3 self permanent"),
        "{fdb}"
    );
    assert!(
        route.contains("10.5.2.0/24 via 10.5.2.0 dev flannel.100 proto static onlink"),
        "{route}"
    );

    // Across the overlay: A's flannel address to B's, in VXLAN over the veth.
    let ping = a.run("ping", &["-c", "1", "-W", "2", "10.5.2.0"]);
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // The peer's lease deleted: its entries go.
    in_ns(a, || {
        va.handle(&[LeaseEvent::Removed(lease("10.5.2.0-24", GO_B))])
    });
    assert!(!a.sh("ip", &["route"]).contains("10.5.2.0/24"));
    assert!(
        !a.sh("ip", &["neigh", "show", "dev", "flannel.100"])
            .contains("10.5.2.0")
    );
    assert!(
        !a.sh("bridge", &["fdb", "show", "dev", "flannel.100"])
            .contains("0e:00:00:00:00:0b")
    );
}

#[test]
fn reconcile_restores_entries_deleted_by_hand_removes_stale_ones_and_recreates_the_device() {
    let (node, _b) = two_nodes();
    let a = node.host();
    let mut va = start(a, "ext0", CONFIG, MAC_A, "10.5.1.0-24");
    in_ns(a, || {
        va.handle(&[
            LeaseEvent::Added(lease("10.5.2.0-24", GO_B)),
            LeaseEvent::Added(peer(
                "10.5.3.0-24",
                "192.168.64.4",
                [0x0e, 0, 0, 0, 0, 0x0c],
            )),
        ])
    });
    // Sorted: the kernel lists entries in the order they were added, and the order peers
    // are restored in is not part of the contract.
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    let snapshot = |ns: &TestNetns| {
        (
            sorted(ns.sh("ip", &["neigh", "show", "dev", "flannel.100"])),
            sorted(ns.sh("bridge", &["fdb", "show", "dev", "flannel.100"])),
            sorted(ns.sh("ip", &["route"])),
        )
    };
    let before = snapshot(a);

    // By hand: one entry of each kind deleted, one stale entry of each kind added.
    a.sh("ip", &["neigh", "del", "10.5.2.0", "dev", "flannel.100"]);
    a.sh(
        "bridge",
        &[
            "fdb",
            "del",
            "0e:00:00:00:00:0c",
            "dev",
            "flannel.100",
            "dst",
            "192.168.64.4",
        ],
    );
    a.sh("ip", &["route", "del", "10.5.3.0/24"]);
    a.sh(
        "ip",
        &[
            "route",
            "add",
            "10.5.9.0/24",
            "via",
            "10.5.9.0",
            "dev",
            "flannel.100",
            "onlink",
        ],
    );
    a.sh(
        "ip",
        &[
            "neigh",
            "add",
            "10.5.9.0",
            "lladdr",
            "0e:00:00:00:00:99",
            "dev",
            "flannel.100",
            "nud",
            "permanent",
        ],
    );
    a.sh(
        "bridge",
        &[
            "fdb",
            "append",
            "0e:00:00:00:00:99",
            "dev",
            "flannel.100",
            "dst",
            "192.168.64.9",
        ],
    );
    in_ns(a, || va.reconcile());
    let r = va.repairs();
    assert_eq!(
        (
            r.neighbour,
            r.fdb,
            r.route,
            r.stale_neighbour,
            r.stale_fdb,
            r.stale_route
        ),
        (1, 1, 1, 1, 1, 1),
        "{r:?}"
    );
    assert_eq!(snapshot(a), before);

    // The device deleted by hand: back with the same MAC, its address and every peer.
    a.sh("ip", &["link", "del", "flannel.100"]);
    in_ns(a, || va.reconcile());
    assert_eq!(va.repairs().device, 1);
    let link = a.sh("ip", &["-d", "link", "show", "flannel.100"]);
    assert!(
        link.contains("link/ether 0e:00:00:00:00:0a") && link.contains("UP"),
        "{link}"
    );
    assert!(
        a.sh("ip", &["-4", "addr", "show", "flannel.100"])
            .contains("10.5.1.0/32")
    );
    assert_eq!(snapshot(a), before);
    let total = va.repairs().total();
    in_ns(a, || va.reconcile());
    assert_eq!(va.repairs().total(), total, "nothing left to repair");
}

#[test]
fn a_restart_reuses_the_device_and_its_mac_an_incompatible_device_is_replaced() {
    let (node, _b) = two_nodes();
    let a = node.host();
    let va = start(a, "ext0", CONFIG, MAC_A, "10.5.1.0-24");
    drop(va);
    let ifindex = |ns: &TestNetns| {
        let out = ns.sh("ip", &["-o", "link", "show", "flannel.100"]);
        out.split(':').next().unwrap().to_owned()
    };
    let index = ifindex(a);
    let again = start(a, "ext0", CONFIG, [0x0e, 1, 1, 1, 1, 1], "10.5.1.0-24");
    assert_eq!(again.mac(), MAC_A, "the lease's VtepMAC stays valid");
    assert_eq!(ifindex(a), index);

    let other_port =
        r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":100,"Port":4789}}"#;
    let replaced = start(a, "ext0", other_port, [0x0e, 2, 2, 2, 2, 2], "10.5.1.0-24");
    assert_eq!(replaced.mac(), [0x0e, 2, 2, 2, 2, 2]);
    let link = a.sh("ip", &["-d", "link", "show", "flannel.100"]);
    assert!(
        link.contains("dstport 4789") && link.contains("0e:02:02:02:02:02"),
        "{link}"
    );
}

#[test]
fn ip_masq_rules_in_one_transaction_replaced_on_a_new_subnet_and_restored() {
    let (node, _b) = two_nodes();
    let a = node.host();
    let va = start(a, "ext0", CONFIG, MAC_A, "10.5.1.0-24");
    let all = RuleSet {
        masq: true,
        fully_random: true,
        forward: true,
    };
    let mut m = Firewalled::new(
        va,
        cni_nft::Nftables,
        config(CONFIG),
        all,
        std::time::Duration::ZERO,
    );
    in_ns(a, || m.lease_acquired(&lease("10.5.1.0-24", GO_B))).unwrap();
    let ruleset = a.sh("nft", &["list", "ruleset"]);
    eprintln!("$ nft list ruleset\n{ruleset}");
    for want in [
        "table ip flannel-ipv4 {",
        "chain postrtg {",
        "type nat hook postrouting priority srcnat; policy accept;",
        "meta mark & 0x00004000 == 0x00004000 return comment \"flanneld masq\"",
        "ip saddr 10.5.1.0/24 ip daddr 10.5.0.0/16 return",
        "ip saddr 10.5.0.0/16 ip daddr 10.5.1.0/24 return",
        "ip saddr != 10.5.0.0/16 ip daddr 10.5.1.0/24 return",
        "ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
        "ip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade fully-random",
        "type filter hook forward priority filter; policy accept;",
        "ip saddr 10.5.0.0/16 accept",
        "ip daddr 10.5.0.0/16 accept",
    ] {
        assert!(ruleset.contains(want), "{want}: {ruleset}");
    }

    // A new subnet: the chains rewritten, nothing of the old subnet left.
    in_ns(a, || m.lease_acquired(&lease("10.5.4.0-24", GO_B))).unwrap();
    let ruleset = a.sh("nft", &["list", "ruleset"]);
    assert!(
        !ruleset.contains("10.5.1.0/24") && ruleset.contains("10.5.4.0/24"),
        "{ruleset}"
    );
    assert_eq!(ruleset.matches("flanneld masq").count(), 6, "{ruleset}");

    // Flushed by hand: reconcile writes them again.
    a.sh("nft", &["flush", "chain", "ip", "flannel-ipv4", "postrtg"]);
    in_ns(a, || m.reconcile());
    assert_eq!(m.repairs().rules, 1);
    assert_eq!(
        a.sh("nft", &["list", "ruleset"])
            .matches("flanneld masq")
            .count(),
        6
    );
}
