//! The bridge binary chained with host-local, as a runtime runs them, in private namespaces.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use conformance::OutcomeExt;
use std::collections::HashSet;

use conformance::chain::Attachment;
use conformance::normalize::redact;
use conformance::{Chain, Node, Pod, TestNetns};
use serde_json::{Value, json};

fn host_local(node: &Node, ranges: Value) -> Value {
    json!({"type": "host-local", "ranges": ranges, "dataDir": node.dir().join("ipam")})
}

const V4: &str = r#"[[{"subnet": "10.77.0.0/24"}]]"#;
const V6: &str = r#"[[{"subnet": "fd77::/64"}]]"#;
const DUAL: &str = r#"[[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd77::/64"}]]"#;

fn ranges(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

/// A one-plugin list: `bridge` with the given keys.
fn chain(version: &str, bridge: Value) -> Chain {
    let mut plugin = bridge;
    plugin["type"] = json!("bridge");
    Chain::new(json!({"cniVersion": version, "name": "brnet", "plugins": [plugin]}))
}

/// One echo reply within 3 s, asking every 0.2 s: a first IPv6 packet can wait on neighbour
/// discovery, longer on a loaded machine.
fn pings(ns: &TestNetns, addr: &str) -> bool {
    let family = if addr.contains(':') { "-6" } else { "-4" };
    ns.run("ping", &[family, "-c1", "-i0.2", "-w3", "-q", addr])
        .status
        .success()
}

/// What a test compares before and after: links, addresses, routes and the nft ruleset of
/// the host namespace, with the values that tick on their own (bridge timers) masked.
fn host_state(node: &Node) -> String {
    let h = node.host();
    let mut out = String::new();
    for args in [
        vec!["-d", "link", "show"],
        vec!["addr", "show"],
        vec!["route", "show"],
        vec!["-6", "route", "show"],
    ] {
        out.push_str(&h.sh("ip", &args));
    }
    out.push_str(&h.sh("nft", &["list", "ruleset"]));
    // Timer values tick by themselves; mask the value after every `*_timer` word.
    out.lines()
        .map(|line| {
            let mut words: Vec<&str> = line.split_whitespace().collect();
            for i in 1..words.len() {
                if words[i - 1].ends_with("_timer") {
                    words[i] = "X";
                }
            }
            words.join(" ").replace(" tentative", "")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The kernel tears a deleted namespace down asynchronously, and its veth pairs with it.
fn wait_for_veths_to_go(node: &Node) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while node.host().sh("ip", &["link"]).contains("veth") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn sysctl(ns: &TestNetns, key: &str) -> String {
    ns.sh("cat", &[&format!("/proc/sys/{key}")])
        .trim()
        .to_owned()
}

fn mtu(ns: &TestNetns, dev: &str) -> String {
    let out = ns.sh("ip", &["-o", "link", "show", dev]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "mtu").unwrap();
    words[i + 1].to_owned()
}

#[test]
fn pods_ping_each_other_and_the_gateway_v4_v6_dual() {
    for (family, r) in [("v4", V4), ("v6", V6), ("dual", DUAL)] {
        let node = Node::new();
        let c = chain(
            "1.0.0",
            json!({"isGateway": true, "mtu": 1400, "ipam": host_local(&node, ranges(r))}),
        );
        let a = Pod::add(&node, &c);
        let b = Pod::add(&node, &c);
        for v4 in [true, false] {
            if (v4 && family == "v6") || (!v4 && family == "v4") {
                continue;
            }
            let gw = if v4 { "10.77.0.1" } else { "fd77::1" };
            assert!(pings(&a.ns, &b.ip(v4)), "{family}: a cannot reach b");
            assert!(pings(&b.ns, &a.ip(v4)), "{family}: b cannot reach a");
            assert!(pings(&a.ns, gw), "{family}: a cannot reach the gateway");
        }
        // MTU on the bridge and on both ends of the veth.
        let veth = a.result["interfaces"][1]["name"].as_str().unwrap();
        assert_eq!(mtu(node.host(), "cni0"), "1400");
        assert_eq!(mtu(node.host(), veth), "1400");
        assert_eq!(mtu(&a.ns, "eth0"), "1400");
        if family != "v6" {
            assert_eq!(sysctl(node.host(), "net/ipv4/ip_forward"), "1");
        }
        if family != "v4" {
            assert_eq!(sysctl(node.host(), "net/ipv6/conf/all/forwarding"), "1");
            assert_eq!(sysctl(&a.ns, "net/ipv6/conf/eth0/accept_dad"), "0");
        }
        a.del(&node, &c);
        b.del(&node, &c);
        assert!(
            !node.host().sh("ip", &["link"]).contains("veth"),
            "{family}: veth left"
        );
    }
}

#[test]
fn masquerade_lets_pods_reach_an_external_network() {
    let node = Node::new();
    let ext = node.external_dual_stack();
    let masq = chain(
        "1.0.0",
        json!({"isDefaultGateway": true, "ipMasq": true,
               "ipam": host_local(&node, ranges(DUAL))}),
    );
    let pod = Pod::add(&node, &masq);
    assert!(
        pings(&pod.ns, "198.51.100.2"),
        "masqueraded pod cannot reach the external host"
    );
    assert!(
        pings(&pod.ns, "2001:db8:ff::2"),
        "masqueraded pod cannot reach it over IPv6"
    );
    let rules = node
        .host()
        .sh("nft", &["list", "table", "inet", "cni_rs_masquerade"]);
    assert!(
        rules.contains(&format!("ip saddr {}", pod.ip(true))),
        "{rules}"
    );
    assert!(
        rules.contains(&format!("ip6 saddr {}", pod.ip(false))),
        "{rules}"
    );
    assert!(
        rules.contains(&format!("id: {}", pod.att.container_id)),
        "{rules}"
    );
    pod.del(&node, &masq);
    let rules = node
        .host()
        .sh("nft", &["list", "table", "inet", "cni_rs_masquerade"]);
    assert!(!rules.contains("saddr"), "{rules}");

    // Without masquerade the external host has no way back: proof the rule did the work.
    let plain = chain(
        "1.0.0",
        json!({"bridge": "cni1", "isDefaultGateway": true,
               "ipam": host_local(&node, ranges(r#"[[{"subnet": "10.78.0.0/24"}]]"#))}),
    );
    let pod = Pod::add(&node, &plain);
    assert!(!pings(&pod.ns, "198.51.100.2"));
    pod.del(&node, &plain);
    drop(ext);
}

#[test]
fn mac_spoof_check_drops_frames_from_another_mac() {
    let node = Node::new();
    let c = chain(
        "1.0.0",
        json!({"isGateway": true, "macspoofchk": true, "ipam": host_local(&node, ranges(V4))}),
    );
    let pod = Pod::add(&node, &c);
    assert!(pings(&pod.ns, "10.77.0.1"));
    let mac = pod.result["interfaces"][2]["mac"]
        .as_str()
        .unwrap()
        .to_owned();
    let set_mac = |m: &str| {
        pod.ns.sh("ip", &["link", "set", "eth0", "down"]);
        pod.ns.sh("ip", &["link", "set", "eth0", "address", m]);
        pod.ns.sh("ip", &["link", "set", "eth0", "up"]);
        pod.ns
            .sh("ip", &["route", "replace", "default", "via", "10.77.0.1"]);
    };
    set_mac("02:00:00:00:00:99");
    node.host().sh("ip", &["neigh", "flush", "dev", "cni0"]);
    assert!(!pings(&pod.ns, "10.77.0.1"), "a spoofed MAC got through");
    set_mac(&mac);
    assert!(pings(&pod.ns, "10.77.0.1"), "the real MAC is blocked");
    pod.del(&node, &c);
    let rules = node
        .host()
        .sh("nft", &["list", "table", "bridge", "cni_rs_macspoofchk"]);
    assert!(!rules.contains("drop"), "{rules}");
}

#[test]
fn custom_bridge_static_mac_hairpin_and_isolation() {
    let node = Node::new();
    let list = json!({"cniVersion": "1.1.0", "name": "brnet", "plugins": [{
        "type": "bridge", "bridge": "br-test", "hairpinMode": true, "portIsolation": true,
        "capabilities": {"mac": true}, "ipam": host_local(&node, ranges(V4))}]});
    let c = Chain::new(list).with_capability_args(json!({"mac": "02:42:ac:11:00:09"}));
    let pod = Pod::add(&node, &c);
    assert_eq!(pod.result["interfaces"][0]["name"], "br-test");
    assert_eq!(pod.result["interfaces"][2]["mac"], "02:42:ac:11:00:09");
    assert!(
        pod.ns
            .sh("ip", &["link", "show", "eth0"])
            .contains("02:42:ac:11:00:09")
    );
    let veth = pod.result["interfaces"][1]["name"].as_str().unwrap();
    assert!(veth.starts_with("veth") && veth.len() == 12, "{veth}");
    let port = node.host().sh("ip", &["-d", "link", "show", veth]);
    assert!(port.contains("master br-test"), "{port}");
    assert!(port.contains("hairpin on"), "{port}");
    assert!(port.contains("isolated on"), "{port}");
    // One queue each way on both ends, asked for at creation (no shrink under the RTNL lock).
    let pod_end = pod.ns.sh("ip", &["-d", "link", "show", "eth0"]);
    for end in [&port, &pod_end] {
        assert!(end.contains("numtxqueues 1 numrxqueues 1"), "{end}");
    }
    pod.del(&node, &c);
}

#[test]
fn del_leaves_the_host_as_it_was_in_every_variant() {
    let node = Node::new();
    let c = chain(
        "1.0.0",
        json!({"isDefaultGateway": true, "ipMasq": true, "macspoofchk": true,
               "ipam": host_local(&node, ranges(DUAL))}),
    );
    // A first pod creates the bridge, its addresses and our (then empty) tables.
    let warm = Pod::add(&node, &c);
    warm.del(&node, &c);
    let before = host_state(&node);

    // Plain DEL, and DEL twice.
    let pod = Pod::add(&node, &c);
    pod.del(&node, &c);
    pod.del(&node, &c);
    assert_eq!(host_state(&node), before, "after DEL twice");

    // DEL with no prevResult and an empty CNI_NETNS (nerdctl/ctr), then the runtime removes
    // the namespace: rules and lease must be gone anyway (Go #810).
    let mut pod = Pod::add(&node, &c);
    let empty = Attachment::new(&pod.att.container_id, "", "eth0");
    c.del(&node, &empty, None).unwrap();
    pod.ns.delete();
    wait_for_veths_to_go(&node);
    assert_eq!(host_state(&node), before, "after DEL with empty CNI_NETNS");

    // The namespace is gone before DEL.
    let mut pod = Pod::add(&node, &c);
    pod.ns.delete();
    c.del(&node, &pod.att, None).unwrap();
    wait_for_veths_to_go(&node);
    assert_eq!(host_state(&node), before, "after DEL with the netns gone");
    let leases: Vec<_> = std::fs::read_dir(node.dir().join("ipam").join("brnet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains('.') && !n.starts_with("last"))
        .collect();
    assert!(leases.is_empty(), "leases left: {leases:?}");
}

#[test]
fn a_failed_add_undoes_everything() {
    let node = Node::new();
    // A /30 has one address besides the gateway.
    let c = chain(
        "1.0.0",
        json!({"isGateway": true, "ipMasq": true, "macspoofchk": true,
               "ipam": host_local(&node, ranges(r#"[[{"subnet": "10.90.0.0/30"}]]"#))}),
    );
    let first = Pod::add(&node, &c);
    let before = host_state(&node);
    let (id, ns) = node.container();
    let err = c
        .add(&node, &Attachment::new(&id, &ns.path_str(), "eth0"))
        .unwrap_err();
    assert_eq!(
        err.outcome.err(106),
        "failed to allocate for range 0: no IP addresses available in range set: 10.90.0.1-10.90.0.2"
    );
    assert_eq!(
        host_state(&node),
        before,
        "the failed ADD left something on the host"
    );
    assert!(
        !ns.sh("ip", &["link"]).contains("eth0"),
        "the container interface was left"
    );
    // The runtime's DEL after the failed ADD is fine too.
    c.del(&node, &Attachment::new(&id, &ns.path_str(), "eth0"), None)
        .unwrap();
    first.del(&node, &c);
}

#[test]
fn parallel_adds_onto_a_bridge_that_does_not_exist_yet() {
    let node = Node::new();
    let c = chain(
        "1.0.0",
        json!({"isGateway": true, "ipMasq": true, "ipam": host_local(&node, ranges(DUAL))}),
    );
    let pods: Vec<Pod> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20).map(|_| s.spawn(|| Pod::add(&node, &c))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: HashSet<String> = pods.iter().map(|p| p.ip(true)).collect();
    assert_eq!(ips.len(), 20, "an address was given twice");
    assert!(pings(&pods[0].ns, &pods[19].ip(true)));
    std::thread::scope(|s| {
        for pod in &pods {
            let (node, c) = (&node, &c);
            s.spawn(move || pod.del(node, c));
        }
    });
    let links = node.host().sh("ip", &["link"]);
    assert!(!links.contains("veth"), "{links}");
    let rules = node.host().sh("nft", &["list", "ruleset"]);
    assert!(!rules.contains("saddr"), "{rules}");
}

#[test]
fn check_follows_what_add_did() {
    let node = Node::new();
    let c = chain(
        "1.0.0",
        json!({"isDefaultGateway": true, "ipMasq": true, "ipam": host_local(&node, ranges(DUAL))}),
    );
    let pod = Pod::add(&node, &c);
    c.check(&node, &pod.att, &pod.result).unwrap();
    let v4 = pod.result["ips"][0]["address"].as_str().unwrap().to_owned();
    pod.ns.sh("ip", &["addr", "del", &v4, "dev", "eth0"]);
    let err = c.check(&node, &pod.att, &pod.result).unwrap_err();
    assert_eq!(
        err.outcome.err(103),
        format!("address {v4} is missing from the container interface")
    );
    pod.del(&node, &c);

    // L2 only: no IPAM to ask, and CHECK still verifies the interfaces (Go always fails here).
    let l2 = chain("1.0.0", json!({"bridge": "l2br"}));
    let pod = Pod::add(&node, &l2);
    assert!(pod.result.get("ips").is_none());
    l2.check(&node, &pod.att, &pod.result).unwrap();
    pod.ns.sh("ip", &["link", "del", "eth0"]);
    let err = l2.check(&node, &pod.att, &pod.result).unwrap_err();
    assert_eq!(
        err.outcome.err(103),
        "CNI created interface in container eth0 not found"
    );
    pod.del(&node, &l2);
}

#[test]
fn a_bridge_with_another_address_is_explained_and_force_address_replaces_it() {
    let node = Node::new();
    let old = chain(
        "1.0.0",
        json!({"isGateway": true, "ipam": host_local(&node, ranges(V4))}),
    );
    let pod = Pod::add(&node, &old);
    pod.del(&node, &old);
    let new_ranges = ranges(r#"[[{"subnet": "10.88.0.0/24"}]]"#);
    let new = chain(
        "1.0.0",
        json!({"isGateway": true, "ipam": host_local(&node, new_ranges.clone())}),
    );
    let (id, ns) = node.container();
    let err = new
        .add(&node, &Attachment::new(&id, &ns.path_str(), "eth0"))
        .unwrap_err();
    let msg = err.outcome.err(107);
    assert!(
        msg.starts_with("failed to set bridge addr: \"cni0\" already has an IP address different from 10.88.0.1/24"),
        "{msg}"
    );
    assert!(
        msg.contains("forceAddress") && msg.contains("ip addr del 10.77.0.1/24 dev cni0"),
        "{msg}"
    );
    assert!(
        !ns.sh("ip", &["link"]).contains("eth0"),
        "veth left after the failed ADD"
    );
    let forced = chain(
        "1.0.0",
        json!({"isGateway": true, "forceAddress": true, "ipam": host_local(&node, new_ranges)}),
    );
    let pod = Pod::add(&node, &forced);
    let addrs = node.host().sh("ip", &["-4", "addr", "show", "cni0"]);
    assert!(
        addrs.contains("10.88.0.1/24") && !addrs.contains("10.77.0.1"),
        "{addrs}"
    );
    pod.del(&node, &forced);
}

#[test]
fn gc_removes_the_rules_and_leases_of_stale_attachments() {
    let node = Node::new();
    let c = chain(
        "1.1.0",
        json!({"ipMasq": true, "isGateway": true, "ipam": host_local(&node, ranges(V4))}),
    );
    let keep = Pod::add(&node, &c);
    let stale = Pod::add(&node, &c);
    let mut gc = c.request_config(0, None);
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": keep.att.container_id, "ifname": "eth0"}]);
    let out = node
        .plugin("bridge")
        .command("GC")
        .unset("CNI_IFNAME")
        .config(&gc)
        .run();
    assert!(out.success(), "{out:?}");
    let rules = node
        .host()
        .sh("nft", &["list", "table", "inet", "cni_rs_masquerade"]);
    assert!(
        rules.contains(&format!("id: {},", keep.att.container_id)),
        "{rules}"
    );
    assert!(
        !rules.contains(&format!("id: {},", stale.att.container_id)),
        "{rules}"
    );
    let lease = node.dir().join("ipam").join("brnet").join(stale.ip(true));
    assert!(!lease.exists(), "GC was not forwarded to IPAM");
    keep.del(&node, &c);
    stale.del(&node, &c);
}

#[test]
fn results_in_every_version() {
    for version in ["0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let node = Node::new();
        let c = chain(
            version,
            json!({"isDefaultGateway": true, "ipam": host_local(&node, ranges(DUAL))}),
        );
        let pod = Pod::add(&node, &c);
        let veth = pod.result["interfaces"][1]["name"]
            .as_str()
            .unwrap_or("-")
            .to_owned();
        let text = serde_json::to_string_pretty(&pod.result).unwrap();
        insta::assert_snapshot!(
            format!("add_{version}"),
            redact(&text, &[(&pod.ns.path_str(), "[NETNS]"), (&veth, "[VETH]")])
        );
        pod.del(&node, &c);
    }
}

#[test]
fn bad_configs_are_refused_before_anything_is_created() {
    let node = Node::new();
    let before = host_state(&node);
    for (keys, msg) in [
        (
            json!({"vlan": 5000}),
            "invalid VLAN ID 5000 (must be between 0 and 4094)",
        ),
        (
            json!({"hairpinMode": true, "promiscMode": true}),
            "cannot set hairpin mode and promiscuous mode at the same time",
        ),
        (
            json!({"disableContainerInterface": true, "ipam": {"type": "host-local"}}),
            "cannot use IPAM when DisableContainerInterface flag is set",
        ),
        (
            json!({"bridge": "this-name-is-too-long"}),
            "invalid bridge name",
        ),
    ] {
        let (id, ns) = node.container();
        let err = chain("1.0.0", keys).add(&node, &Attachment::new(&id, &ns.path_str(), "eth0"));
        let got = err.unwrap_err().outcome.err(7);
        assert!(got.starts_with(msg), "{got}");
    }
    assert_eq!(host_state(&node), before);
}

/// Whether this kernel can filter VLANs on a bridge (not every build can).
fn kernel_has_vlan_filtering(node: &Node) -> bool {
    let probe = node.host().run(
        "ip",
        &[
            "link",
            "add",
            "vprobe",
            "type",
            "bridge",
            "vlan_filtering",
            "1",
        ],
    );
    if probe.status.success() {
        node.host().sh("ip", &["link", "del", "vprobe"]);
    }
    probe.status.success()
}

#[test]
fn vlan_access_and_trunk_ports() {
    let node = Node::new();
    let c = chain(
        "1.0.0",
        json!({"bridge": "vbr0", "vlan": 100, "vlanTrunk": [{"id": 200}, {"minID": 300, "maxID": 301}],
               "isGateway": true, "ipam": host_local(&node, ranges(V4))}),
    );
    if !kernel_has_vlan_filtering(&node) {
        // Say so loudly instead of passing quietly; and the plugin must fail cleanly.
        conformance::skip(
            "vlan_access_and_trunk_ports",
            "this kernel cannot create a vlan_filtering bridge; checked that ADD fails cleanly",
        );
        let (id, ns) = node.container();
        let err = c
            .add(&node, &Attachment::new(&id, &ns.path_str(), "eth0"))
            .unwrap_err();
        let msg = err.outcome.err(101);
        assert!(msg.starts_with("failed to create bridge \"vbr0\""), "{msg}");
        return;
    }
    let pod = Pod::add(&node, &c);
    let veth = pod.result["interfaces"][1]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let vlans = node.host().sh("bridge", &["vlan", "show", "dev", &veth]);
    assert!(vlans.contains("100 PVID Egress Untagged"), "{vlans}");
    assert!(
        vlans.contains("200") && vlans.contains("300") && vlans.contains("301"),
        "{vlans}"
    );
    assert_eq!(pod.result["interfaces"][3]["name"], "vbr0.100");
    pod.del(&node, &c);
}

#[test]
fn promisc_dad_l2_only_and_dns_keys() {
    let node = Node::new();
    // promiscMode puts the bridge in promiscuous mode.
    let promisc = chain("1.0.0", json!({"bridge": "pbr", "promiscMode": true}));
    let pod = Pod::add(&node, &promisc);
    assert!(
        node.host()
            .sh("ip", &["-d", "link", "show", "pbr"])
            .contains("promiscuity 1")
    );
    pod.del(&node, &promisc);

    // enabledad: ADD waits for DAD to finish instead of turning it off.
    let dad = chain(
        "1.0.0",
        json!({"bridge": "dbr", "isGateway": true, "enabledad": true,
               "ipam": host_local(&node, ranges(r#"[[{"subnet": "fd99::/64"}]]"#))}),
    );
    let pod = Pod::add(&node, &dad);
    assert_eq!(sysctl(&pod.ns, "net/ipv6/conf/eth0/accept_dad"), "1");
    let addrs = pod
        .ns
        .sh("ip", &["-6", "addr", "show", "eth0", "scope", "global"]);
    assert!(!addrs.contains("tentative"), "{addrs}");
    pod.del(&node, &dad);

    // disableContainerInterface leaves the container end down.
    let down = chain(
        "1.0.0",
        json!({"bridge": "nbr", "disableContainerInterface": true}),
    );
    let pod = Pod::add(&node, &down);
    assert!(
        pod.ns
            .sh("ip", &["link", "show", "eth0"])
            .contains("state DOWN")
    );
    pod.del(&node, &down);

    // The config's own dns replaces what IPAM returned.
    let dns = chain(
        "1.0.0",
        json!({"bridge": "sbr", "dns": {"nameservers": ["10.96.0.10"], "search": ["svc"]},
               "ipam": host_local(&node, ranges(V4))}),
    );
    let pod = Pod::add(&node, &dns);
    assert_eq!(
        pod.result["dns"],
        json!({"nameservers": ["10.96.0.10"], "search": ["svc"]})
    );
    pod.del(&node, &dns);
}

#[test]
fn status_is_forwarded_to_ipam() {
    let node = Node::new();
    let c = chain(
        "1.1.0",
        json!({"isGateway": true, "ipam": host_local(&node, ranges(r#"[[{"subnet": "10.91.0.0/30"}]]"#))}),
    );
    let status = || {
        node.plugin("bridge")
            .command("STATUS")
            .config(&c.request_config(0, None))
            .run()
    };
    assert!(status().success());
    let pod = Pod::add(&node, &c);
    assert_eq!(
        status().err(50),
        "no IP addresses available in range set 0: 10.91.0.1-10.91.0.2 (1 of 1 in use)"
    );
    pod.del(&node, &c);
    let l2 = chain("1.1.0", json!({"bridge": "l2"}));
    let out = node
        .plugin("bridge")
        .command("STATUS")
        .config(&l2.request_config(0, None))
        .run();
    assert!(out.success(), "{out:?}");
}

#[test]
fn first_forwarded_ipv6_packet_to_a_new_pod_is_not_delayed() {
    // Regression: the bridge was created up, so its link-local address went through DAD, and
    // while it was tentative the kernel sent no neighbour solicitation for forwarded IPv6
    // packets: the first connections to new pods stalled for about two seconds.
    let node = Node::new();
    let ext = node.external_dual_stack();
    ext.sh(
        "ip",
        &["-6", "route", "add", "fd77::/64", "via", "2001:db8:ff::1"],
    );
    let c = chain(
        "1.0.0",
        json!({"isDefaultGateway": true, "ipam": host_local(&node, ranges(V6))}),
    );
    let pod = Pod::add(&node, &c);
    let addr = pod.ip(false);
    let started = std::time::Instant::now();
    assert!(
        pings(&ext, &addr),
        "the pod is unreachable from outside over IPv6"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_millis(900),
        "first forwarded IPv6 packet took {:?}",
        started.elapsed()
    );
    pod.del(&node, &c);
}
