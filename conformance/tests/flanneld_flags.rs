//! flanneld's flags in the kernel, against real etcd inside private namespaces: Go's
//! iptables-mode rules (written with Debian's iptables, nft-based and legacy, exactly as Go
//! writes them) removed at start with one masquerade rule set left and pods still reaching
//! the outside; `--ip-blackhole-route`, `--iptables-forward-rules`,
//! `--ip-masq-fully-random-disable` and `--iptables-resync` in the kernel; host-gw's stale
//! routes of ours removed, others kept; `--iface` falling through to `--iface-regex` and
//! `--iface-can-reach`; `--vxlan-tx-checksum-off` read back through ethtool; `-v`.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::net::SocketAddr;
use std::time::Duration;

use conformance::etcd::{Agent, Etcd, LAN_IP, Lan, available};
use conformance::flannel::conflist;
use conformance::go_iptables::{have, saved};
use conformance::{Chain, Node, Pod, skip};

const HOST_GW: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#;
const VXLAN: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const PREFIX: &str = "/coreos.com/network";

/// A LAN with etcd holding `config`, or `None` (a recorded skip) without etcd.
fn lan_with(test: &str, config: &str) -> Option<(Lan, Etcd)> {
    if !available() {
        skip(
            test,
            "etcd-server/etcd-client not installed (scripts/setup.sh installs them)",
        );
        return None;
    }
    let lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    etcd.ctl_ok(&["put", &format!("{PREFIX}/config"), config]);
    Some((lan, etcd))
}

/// Starts an agent with its own log file and waits until it wrote subnet.env.
fn started(node: &Node, etcd: &Etcd, log: &str, extra: &[&str]) -> Agent {
    let mut args = vec![
        format!("--etcd-endpoints={}", etcd.endpoint()),
        format!("--subnet-file={}", node.dir().join("subnet.env").display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let _ = fs::remove_file(node.dir().join("subnet.env"));
    let mut a = Agent::start(node, log, &args, &[]);
    let path = node.dir().join(log);
    a.wait_for("subnet.env written", 20, || {
        fs::read_to_string(&path)
            .unwrap_or_default()
            .contains("wrote subnet file")
    });
    a
}

fn own_key(node: &Node) -> String {
    conformance::lease::own_key(node, "subnet.env").unwrap()
}

#[test]
fn go_iptables_rules_go_at_start_one_rule_set_remains_and_pods_reach_out() {
    let test =
        "flanneld_flags::go_iptables_rules_go_at_start_one_rule_set_remains_and_pods_reach_out";
    if !have("iptables-nft") || !have("iptables-legacy") {
        skip(
            test,
            "Debian's iptables not installed (scripts/setup.sh installs it)",
        );
        return;
    }
    let Some((mut lan, etcd)) = lan_with(test, HOST_GW) else {
        return;
    };
    let node = Node::new();
    let node_ip = lan.attach(&node, 2);
    // The node ran Go flanneld before: its rules in both iptables variants.
    for tool in ["iptables-nft", "iptables-legacy"] {
        conformance::go_iptables::write(node.host(), tool, "10.5.0.0/16", "10.5.99.0/24");
        let before = saved(node.host(), tool);
        assert!(
            before.contains("-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG")
                && before.contains("-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully")
                && before.contains("-A FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT"),
            "{tool}:\n{before}"
        );
        eprintln!("$ {tool}-save (Go's rules)\n{before}");
    }
    // A dual-stack Go node's IPv6 chains too (written by Go only with EnableIPv6).
    for tool in ["ip6tables-nft", "ip6tables-legacy"] {
        let sh = |args: &[&str]| node.host().sh(tool, args);
        sh(&["-t", "nat", "-N", "FLANNEL-POSTRTG"]);
        sh(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-m",
            "comment",
            "--comment",
            "flanneld masq",
            "-j",
            "FLANNEL-POSTRTG",
        ]);
        sh(&[
            "-t",
            "nat",
            "-A",
            "FLANNEL-POSTRTG",
            "-s",
            "fc00:5::/48",
            "!",
            "-d",
            "ff00::/8",
            "-m",
            "comment",
            "--comment",
            "flanneld masq",
            "-j",
            "MASQUERADE",
        ]);
    }
    // And Go's nftables mode (EnableNFTables) before that: its tables have our names.
    let go_nft = "table ip flannel-ipv4 {
  chain postrtg { type nat hook postrouting priority srcnat; policy accept;
    meta mark 0x4000 return
    ip saddr 10.5.99.0/24 ip daddr 10.5.0.0/16 return
    ip saddr 10.5.0.0/16 ip daddr 10.5.99.0/24 return
    ip saddr != 10.5.99.0/24 ip daddr 10.5.0.0/16 return
    ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
    ip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade fully-random
  }
  chain forward { type filter hook forward priority filter; policy accept;
    ip saddr 10.5.0.0/16 accept
    ip daddr 10.5.0.0/16 accept
  }
}
";
    let file = node.dir().join("go-nft.conf");
    std::fs::write(&file, go_nft).unwrap();
    node.host().sh("nft", &["-f", &file.to_string_lossy()]);
    let mut agent = started(&node, &etcd, "flanneld.log", &["--iface=eth0", "--ip-masq"]);
    for tool in [
        "iptables-nft",
        "iptables-legacy",
        "ip6tables-nft",
        "ip6tables-legacy",
    ] {
        let after = saved(node.host(), tool);
        eprintln!("$ {tool}-save (after ours started)\n{after}");
        assert!(!after.contains("FLANNEL-"), "{tool}:\n{after}");
        assert!(
            tool.starts_with("ip6") || after.contains("-A POSTROUTING -j KUBE-POSTROUTING"),
            "not Go's: kept\n{after}"
        );
    }
    let log = agent.log();
    assert!(
        log.contains("removed Go flanneld's iptables rules")
            && log.contains("iptables-legacy: nat chain FLANNEL-POSTRTG")
            && log.contains("iptables-nft: filter chain FLANNEL-FWD")
            && log.contains("ip6tables-legacy: nat chain FLANNEL-POSTRTG"),
        "{log}"
    );
    // One masquerade rule set: ours, in nftables; Go's nftables-mode rules of the old subnet
    // (and its exact-mark rule) replaced.
    let ruleset = node
        .host()
        .sh("nft", &["list", "table", "ip", "flannel-ipv4"]);
    assert_eq!(
        ruleset.matches("masquerade fully-random").count(),
        2,
        "{ruleset}"
    );
    assert_eq!(ruleset.matches("flanneld masq").count(), 6, "{ruleset}");
    assert_eq!(ruleset.matches("flanneld forward").count(), 2, "{ruleset}");
    assert!(
        !ruleset.contains("10.5.99.0") && !ruleset.contains("meta mark 0x00004000 return"),
        "{ruleset}"
    );

    // A pod reaches a host outside the network, masqueraded to the node's address.
    let server = conformance::traffic::tcp_peer_server(lan.ns(), 8089);
    let chain = Chain::new(conflist(&node, "1.0.0"));
    let pod = Pod::add(&node, &chain);
    let outside: SocketAddr = format!("{LAN_IP}:8089").parse().unwrap();
    let seen = conformance::traffic::tcp_get_timeout(&pod.ns, outside, Duration::from_secs(3));
    assert_eq!(
        seen.as_deref(),
        Some(node_ip.as_str()),
        "the pod {} reached out",
        pod.ip(true)
    );
    pod.del(&node, &chain);
    drop(server);
    assert_eq!(agent.terminate(), Some(0));
}

#[test]
fn blackhole_forward_fully_random_and_resync_flags_in_the_kernel() {
    let test = "flanneld_flags::blackhole_forward_fully_random_and_resync_flags_in_the_kernel";
    let Some((mut lan, etcd)) = lan_with(test, HOST_GW) else {
        return;
    };
    let node = Node::new();
    lan.attach(&node, 2);
    let mut a = started(
        &node,
        &etcd,
        "flanneld-0.log",
        &[
            "--iface=eth0",
            "--ip-masq",
            "--ip-masq-fully-random-disable",
            "--ip-blackhole-route",
            "--iptables-resync=1",
        ],
    );
    let subnet = own_key(&node).replace('-', "/");
    let blackholes = || {
        node.host()
            .sh("ip", &["route", "show", "type", "blackhole"])
    };
    let want = format!("blackhole {subnet} proto 102");
    assert!(blackholes().contains(&want), "{}", blackholes());
    let ruleset = || {
        node.host()
            .sh("nft", &["list", "table", "ip", "flannel-ipv4"])
    };
    let r = ruleset();
    assert!(
        r.contains("masquerade comment \"flanneld masq\"") && !r.contains("fully-random"),
        "{r}"
    );
    assert!(r.contains("ip saddr 10.5.0.0/16 accept"), "{r}");
    let log = a.log();
    assert!(
        log.contains("firewall rules: nftables (tables flannel-ipv4/flannel-ipv6), whether EnableNFTables is false or not"),
        "{log}"
    );
    // br_netfilter: one plain line when it is missing or off in this namespace.
    let nf = node
        .host()
        .run("cat", &["/proc/sys/net/bridge/bridge-nf-call-iptables"]);
    let on = nf.status.success() && String::from_utf8_lossy(&nf.stdout).trim() == "1";
    assert_eq!(
        log.matches("kube-proxy Services between pods of this node do not work")
            .count(),
        usize::from(!on),
        "{log}"
    );

    // Deleted by hand: the blackhole route comes back on the kernel's notice; the flushed
    // masquerade chain within the 1 s resync period.
    node.host()
        .sh("ip", &["route", "del", "blackhole", &subnet]);
    a.wait_for("the blackhole route restored", 10, || {
        blackholes().contains(&want)
    });
    node.host()
        .sh("nft", &["flush", "chain", "ip", "flannel-ipv4", "postrtg"]);
    let flushed = std::time::Instant::now();
    a.wait_for("the masquerade rules restored", 10, || {
        ruleset().matches("flanneld masq").count() == 6
    });
    assert!(
        flushed.elapsed() < Duration::from_secs(4),
        "{:?}",
        flushed.elapsed()
    );
    assert_eq!(a.terminate(), Some(0));

    // Restarted without the blackhole flag and with --iptables-forward-rules=false: the
    // blackhole route and the forward chain of the earlier run go; the masquerade stays,
    // fully random again.
    let mut b = started(
        &node,
        &etcd,
        "flanneld-1.log",
        &[
            "--iface=eth0",
            "--ip-masq",
            "--iptables-forward-rules=false",
        ],
    );
    assert_eq!(blackholes(), "");
    let r = ruleset();
    assert!(
        !r.contains("chain forward") && r.contains("masquerade fully-random"),
        "{r}"
    );
    assert_eq!(b.terminate(), Some(0));

    // Neither masquerade nor forward rules: no chain of ours at all.
    let mut c = started(
        &node,
        &etcd,
        "flanneld-2.log",
        &["--iface=eth0", "--iptables-forward-rules=false"],
    );
    let r = ruleset();
    assert!(!r.contains("chain"), "{r}");
    assert_eq!(c.terminate(), Some(0));
}

#[test]
fn host_gw_removes_stale_routes_of_its_own_and_leaves_the_rest() {
    let test = "flanneld_flags::host_gw_removes_stale_routes_of_its_own_and_leaves_the_rest";
    let Some((mut lan, etcd)) = lan_with(test, HOST_GW) else {
        return;
    };
    let (a_node, b_node) = (Node::new(), Node::new());
    lan.attach(&a_node, 2);
    let b_ip = lan.attach(&b_node, 3);
    let mut b = started(&b_node, &etcd, "flanneld.log", &["--iface=eth0"]);
    let kb = own_key(&b_node).replace('-', "/");
    // Left on A: a route of ours to a node deleted while A's agent was down, and the
    // operator's own route.
    let sh = |args: &[&str]| a_node.host().sh("ip", args);
    sh(&[
        "route",
        "add",
        "10.5.222.0/24",
        "via",
        "192.168.50.9",
        "dev",
        "eth0",
        "proto",
        "102",
    ]);
    sh(&[
        "route",
        "add",
        "10.5.223.0/24",
        "via",
        "192.168.50.9",
        "dev",
        "eth0",
    ]);
    let mut a = started(&a_node, &etcd, "flanneld.log", &["--iface=eth0"]);
    let routes = || sh(&["-4", "route"]);
    a.wait_for("the route to B", 10, || {
        routes().contains(&format!("{kb} via {b_ip} dev eth0 proto 102"))
    });
    a.wait_for("the stale route gone", 10, || {
        !routes().contains("10.5.222.0/24")
    });
    // The operator's (iproute2's default protocol, boot, not shown): untouched.
    assert!(
        routes().contains("10.5.223.0/24 via 192.168.50.9 dev eth0 \n"),
        "{}",
        routes()
    );
    assert!(
        a.log()
            .contains("deleted stale route 10.5.222.0/24 via 192.168.50.9 dev eth0")
    );
    // Later: one of ours that no lease names, added by hand, goes at the next reconcile.
    sh(&[
        "route",
        "add",
        "10.5.224.0/24",
        "via",
        "192.168.50.9",
        "dev",
        "eth0",
        "proto",
        "102",
    ]);
    a.wait_for("the new stale route gone", 15, || {
        !routes().contains("10.5.224.0/24")
    });
    assert!(routes().contains("10.5.223.0/24"), "{}", routes());
    assert!(routes().contains(&kb), "{}", routes());
    assert_eq!(a.terminate(), Some(0));
    assert_eq!(b.terminate(), Some(0));
}

#[test]
fn iface_falls_through_to_the_regex_and_can_reach() {
    let test = "flanneld_flags::iface_falls_through_to_the_regex_and_can_reach";
    let Some((mut lan, etcd)) = lan_with(test, HOST_GW) else {
        return;
    };
    let node = Node::new();
    lan.attach(&node, 2);
    // A second link, so that choosing eth0 is a choice.
    let sh = |args: &[&str]| node.host().sh("ip", args);
    sh(&[
        "link", "add", "side0", "type", "veth", "peer", "name", "side1",
    ]);
    sh(&["addr", "add", "10.77.0.2/24", "dev", "side0"]);
    sh(&["link", "set", "side0", "up"]);
    sh(&["link", "set", "side1", "up"]);
    for (n, flags) in [
        (0, &["--iface=nope", "--iface-regex=^eth"][..]),
        (
            1,
            &[
                "--iface=nope",
                "--iface-regex=^zz",
                &format!("--iface-can-reach={LAN_IP}"),
            ][..],
        ),
        (2, &["--iface-can-reach=10.77.0.9"][..]),
    ] {
        let mut a = started(&node, &etcd, &format!("flanneld-{n}.log"), flags);
        let want = if n == 2 {
            "using interface side0"
        } else {
            "using interface eth0"
        };
        assert!(a.log().contains(want), "{flags:?}: {}", a.log());
        assert_eq!(a.terminate(), Some(0));
    }
    // Nothing matches: exit 1 with what was tried.
    let mut args = vec![
        format!("--etcd-endpoints={}", etcd.endpoint()),
        format!("--subnet-file={}", node.dir().join("subnet.env").display()),
        "--iface=nope".to_owned(),
        "--iface-can-reach=10.99.0.1".to_owned(),
    ];
    sh(&["link", "del", "side0"]);
    let mut a = Agent::start(&node, "flanneld-3.log", &args, &[]);
    let t = std::time::Instant::now();
    while a.running() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!a.running(), "{}", a.log());
    assert_eq!(a.terminate(), Some(1));
    assert!(
        a.log()
            .contains("nothing matches --iface nope, then --iface-can-reach 10.99.0.1"),
        "{}",
        a.log()
    );
    args.clear();
}

#[test]
fn vxlan_tx_checksum_off_and_verbosity() {
    let test = "flanneld_flags::vxlan_tx_checksum_off_and_verbosity";
    if !have("ethtool") {
        skip(test, "ethtool not installed (scripts/setup.sh installs it)");
        return;
    }
    let Some((mut lan, etcd)) = lan_with(test, VXLAN) else {
        return;
    };
    let (a_node, b_node) = (Node::new(), Node::new());
    lan.attach(&a_node, 2);
    lan.attach(&b_node, 3);
    let feature = |node: &Node| {
        node.host()
            .sh("ethtool", &["-k", "flannel.1"])
            .lines()
            .find(|l| l.trim_start().starts_with("tx-checksum-ip-generic:"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let mut a = started(
        &a_node,
        &etcd,
        "flanneld.log",
        &["--iface=eth0", "--vxlan-tx-checksum-off"],
    );
    let mut b = started(&b_node, &etcd, "flanneld.log", &["--iface=eth0", "-v=2"]);
    assert_eq!(feature(&a_node), "tx-checksum-ip-generic: off");
    assert_eq!(
        feature(&b_node),
        "tx-checksum-ip-generic: on",
        "not asked: untouched"
    );
    // Recreated after a deletion by hand: off again.
    a_node.host().sh("ip", &["link", "del", "flannel.1"]);
    let log_of =
        |node: &Node| fs::read_to_string(node.dir().join("flanneld.log")).unwrap_or_default();
    a.wait_for("flannel.1 recreated", 15, || {
        a_node
            .host()
            .run("ip", &["link", "show", "flannel.1"])
            .status
            .success()
            && log_of(&a_node)
                .matches("tx-checksum-ip-generic off")
                .count()
                >= 2
    });
    assert_eq!(feature(&a_node), "tx-checksum-ip-generic: off");
    // -v: the per-peer lines Go logs at V(2) are in B's log (-v=2), not in A's.
    let kb = own_key(&b_node);
    b.wait_for("B programmed A", 10, || {
        log_of(&b_node).contains("programmed:")
    });
    let subnet_b = kb.replace('-', "/");
    a.wait_for("A's route to B", 10, || {
        a_node.host().sh("ip", &["route"]).contains(&subnet_b)
    });
    assert!(!a.log().contains("programmed:"), "{}", a.log());
    assert_eq!(a.terminate(), Some(0));
    assert_eq!(b.terminate(), Some(0));
}
