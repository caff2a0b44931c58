//! portmap chained after bridge + host-local, run as a runtime runs them, with real traffic
//! between namespaces the test creates.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use conformance::OutcomeExt;
use std::net::SocketAddr;

use conformance::chain::Attachment;
use conformance::traffic::{tcp_get, tcp_server, udp_get, udp_server};
use conformance::{Chain, Node, Pod, TestNetns};
use serde_json::{Value, json};

const HOST_V4: &str = "198.51.100.1";
const EXT_V4: &str = "198.51.100.2";
const HOST_V6: &str = "2001:db8:ff::1";

/// A node with an "external" machine on 198.51.100.0/24 and 2001:db8:ff::/64.
fn node_with_external() -> (Node, TestNetns) {
    let node = Node::new();
    let ext = node.external_dual_stack();
    (node, ext)
}

/// bridge (+ host-local, dual stack) then portmap, as the flannel conflist chains them.
fn chain(node: &Node, version: &str, portmap: Value, mappings: Value) -> Chain {
    let mut pm = portmap;
    pm["type"] = json!("portmap");
    pm["capabilities"] = json!({"portMappings": true});
    if pm.get("stateDir").is_none() {
        pm["stateDir"] = json!(node.dir().join("portmap"));
    }
    Chain::new(json!({
        "cniVersion": version,
        "name": "pmnet",
        "plugins": [
            {"type": "bridge", "isGateway": true, "isDefaultGateway": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "dataDir": node.dir().join("ipam"),
                      "ranges": [[{"subnet": "10.66.0.0/24"}], [{"subnet": "fd66::/64"}]]}},
            pm
        ]
    }))
    .with_capability_args(json!({"portMappings": mappings}))
}

fn at(addr: &str, port: u16) -> SocketAddr {
    if addr.contains(':') {
        format!("[{addr}]:{port}").parse().unwrap()
    } else {
        format!("{addr}:{port}").parse().unwrap()
    }
}

fn http_mappings() -> Value {
    json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
           {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}])
}

fn our_rules(node: &Node) -> String {
    node.host().sh("nft", &["list", "ruleset"])
}

#[test]
fn host_port_answers_from_everywhere_it_should() {
    let (node, ext) = node_with_external();
    let c = chain(&node, "1.0.0", json!({}), http_mappings());
    let a = Pod::add(&node, &c);
    // The other pod maps nothing: two pods cannot share a host port.
    let plain = chain(&node, "1.0.0", json!({}), json!([]));
    let b = Pod::add(&node, &plain);
    let _http = tcp_server(&a.ns, 80, "hello from a");
    let _dns = udp_server(&a.ns, 53, "udp from a");
    let want = Some("hello from a".to_owned());
    let host = node.host();
    assert_eq!(
        tcp_get(host, at("127.0.0.1", 8080)),
        want,
        "node via 127.0.0.1"
    );
    assert_eq!(
        tcp_get(host, at("10.66.0.1", 8080)),
        want,
        "node via the bridge address"
    );
    assert_eq!(
        tcp_get(host, at(HOST_V4, 8080)),
        want,
        "node via its external address"
    );
    assert_eq!(tcp_get(&ext, at(HOST_V4, 8080)), want, "external client");
    assert_eq!(
        tcp_get(&b.ns, at(HOST_V4, 8080)),
        want,
        "another pod on the bridge"
    );
    assert_eq!(
        tcp_get(&a.ns, at(HOST_V4, 8080)),
        want,
        "the pod itself (hairpin)"
    );
    assert_eq!(
        tcp_get(&ext, at(HOST_V6, 8080)),
        want,
        "external client over IPv6"
    );
    assert_eq!(
        tcp_get(&b.ns, at(HOST_V6, 8080)),
        want,
        "another pod over IPv6"
    );
    assert_eq!(
        udp_get(&ext, at(EXT_V4, 0), at(HOST_V4, 5353)),
        Some("udp from a".to_owned()),
        "UDP mapping"
    );
    a.del(&node, &c);
    b.del(&node, &plain);
    assert_eq!(
        tcp_get(&ext, at(HOST_V4, 8080)),
        None,
        "still mapped after DEL"
    );
}

#[test]
fn host_ip_restricts_the_mapping_to_that_address() {
    let (node, ext) = node_with_external();
    let c = chain(
        &node,
        "1.0.0",
        json!({}),
        json!([{"hostPort": 8081, "containerPort": 80, "protocol": "tcp", "hostIP": HOST_V4},
               {"hostPort": 8082, "containerPort": 80, "protocol": "tcp", "hostIP": HOST_V6}]),
    );
    let pod = Pod::add(&node, &c);
    let _srv = tcp_server(&pod.ns, 80, "restricted");
    let want = Some("restricted".to_owned());
    assert_eq!(tcp_get(&ext, at(HOST_V4, 8081)), want);
    assert_eq!(
        tcp_get(node.host(), at("10.66.0.1", 8081)),
        None,
        "hostIP not honoured"
    );
    assert_eq!(
        tcp_get(&ext, at(HOST_V6, 8082)),
        want,
        "IPv6 hostIP mapping"
    );
    assert_eq!(
        tcp_get(&ext, at(HOST_V4, 8082)),
        None,
        "IPv6 mapping answered on IPv4"
    );
    pod.del(&node, &c);
}

/// `nft list ruleset` without our (then empty) table, which stays like the Go plugin's.
fn ruleset_without_our_empty_table(node: &Node) -> String {
    our_rules(node).replace("table inet cni_rs_hostport {\n}\n", "")
}

#[test]
fn del_leaves_the_ruleset_as_before_in_every_variant() {
    let (node, _ext) = node_with_external();
    let c = chain(&node, "1.0.0", json!({}), http_mappings());
    let before = ruleset_without_our_empty_table(&node);
    // DEL, then DEL again.
    let pod = Pod::add(&node, &c);
    assert!(our_rules(&node).contains("dnat ip to"));
    pod.del(&node, &c);
    pod.del(&node, &c);
    assert_eq!(
        ruleset_without_our_empty_table(&node),
        before,
        "after DEL twice"
    );
    // The namespace is gone before DEL.
    let mut pod = Pod::add(&node, &c);
    pod.ns.delete();
    c.del(&node, &pod.att, None).unwrap();
    assert_eq!(
        ruleset_without_our_empty_table(&node),
        before,
        "after DEL without the netns"
    );
    // The runtime does not send the mappings again on DEL.
    let pod = Pod::add(&node, &c);
    let forgetful = chain(&node, "1.0.0", json!({}), json!([]));
    forgetful.del(&node, &pod.att, Some(&pod.result)).unwrap();
    assert_eq!(
        ruleset_without_our_empty_table(&node),
        before,
        "after DEL without portMappings"
    );
    let markers = std::fs::read_dir(node.dir().join("portmap"))
        .unwrap()
        .count();
    assert_eq!(markers, 0, "a DEL marker was left behind");
}

#[test]
fn check_follows_our_rules_also_for_ipv4_only_pods() {
    let node = Node::new();
    let mut c = chain(&node, "1.0.0", json!({}), http_mappings());
    // An IPv4-only network (Go's portmap 1.1.1 CHECK fails here, #819).
    let mut list = c.list().clone();
    list["plugins"][0]["ipam"]["ranges"] = json!([[{"subnet": "10.67.0.0/24"}]]);
    c = Chain::new(list).with_capability_args(json!({"portMappings": http_mappings()}));
    let pod = Pod::add(&node, &c);
    c.check(&node, &pod.att, &pod.result).unwrap();
    let chain_name = our_rules(&node)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("chain pre-")
                .map(|n| format!("pre-{}", n.trim_end_matches(" {")))
        })
        .unwrap();
    node.host().sh(
        "nft",
        &["flush", "chain", "inet", "cni_rs_hostport", &chain_name],
    );
    let err = c.check(&node, &pod.att, &pod.result).unwrap_err();
    assert_eq!(err.plugin, "portmap");
    let msg = err.outcome.err(103);
    assert!(msg.starts_with("port mapping rules of container"), "{msg}");
    pod.del(&node, &c);
}

#[test]
fn without_mappings_nothing_runs_and_prev_result_passes_through() {
    let node = Node::new();
    let c = chain(&node, "0.4.0", json!({}), json!([]));
    let (id, ns) = node.container();
    let att = Attachment::new(&id, &ns.path_str(), "eth0");
    let bridge_only = Chain::new(json!({"cniVersion": "0.4.0", "name": "pmnet",
        "plugins": [c.list()["plugins"][0].clone()]}));
    let prev = bridge_only.add(&node, &att).unwrap();
    let mut conf = c.request_config(1, Some(&prev));
    conf["runtimeConfig"] = json!({"portMappings": []});
    // No nft on PATH: any attempt to run it would fail the call.
    let out = node
        .plugin("portmap")
        .command("ADD")
        .container(&id, &ns.path_str())
        .env("PATH", "/nonexistent")
        .config(&conf)
        .run();
    assert_eq!(out.ok(), prev);
    let out = node
        .plugin("portmap")
        .command("DEL")
        .container(&id, &ns.path_str())
        .env("PATH", "/nonexistent")
        .config(&conf)
        .run();
    assert!(out.success(), "{out:?}");
    bridge_only.del(&node, &att, Some(&prev)).unwrap();
}

#[test]
fn errors_are_clear() {
    let node = Node::new();
    let (id, ns) = node.container();
    let call = |conf: Value| {
        node.plugin("portmap")
            .command("ADD")
            .container(&id, &ns.path_str())
            .config(&conf)
            .run()
    };
    let base = json!({"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap",
        "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "tcp"}]}});
    assert_eq!(
        call(base.clone()).err(7),
        "must be called as chained plugin"
    );
    let mut bad = base.clone();
    bad["runtimeConfig"]["portMappings"][0]["hostPort"] = json!(0);
    assert_eq!(call(bad).err(7), "Invalid host port number: 0");
    let mut bad = base.clone();
    bad["conditionsV4"] = json!(["-s", "10.0.0.0/8"]);
    assert!(call(bad).err(7).starts_with("iptables-style conditions"));
    let mut bad = base;
    bad["backend"] = json!("pf");
    assert_eq!(call(bad).err(7), "unrecognized backend \"pf\"");
}

#[test]
fn stale_udp_conntrack_entries_are_flushed_on_add_and_del() {
    let (node, ext) = node_with_external();
    let udp = json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]);
    let c = chain(&node, "1.0.0", json!({}), udp);
    // Conntrack is active once a NAT table exists; a first pod makes sure of that.
    let first = Pod::add(&node, &c);
    first.del(&node, &c);
    // A client talks to the port while nothing serves it: conntrack remembers that flow.
    let client = at(EXT_V4, 40000);
    assert_eq!(udp_get(&ext, client, at(HOST_V4, 5353)), None);
    let pod = Pod::add(&node, &c);
    let _srv = udp_server(&pod.ns, 53, "fresh");
    // Same 5-tuple again: only a flushed entry lets the new DNAT apply (Go #123).
    assert_eq!(
        udp_get(&ext, client, at(HOST_V4, 5353)),
        Some("fresh".to_owned())
    );
    // DEL flushes too (Go #1190): no entry of the mapped port survives the pod.
    let entries = |node: &Node| {
        node.host()
            .sh("conntrack", &["-L", "-p", "udp", "--dport", "5353"])
            .lines()
            .count()
    };
    assert!(
        entries(&node) > 0,
        "no conntrack entry to flush: the test proves nothing"
    );
    pod.del(&node, &c);
    assert_eq!(
        entries(&node),
        0,
        "DEL left UDP conntrack entries of the mapped port"
    );
    let next = Pod::add(&node, &c);
    let _srv2 = udp_server(&next.ns, 53, "next");
    assert_eq!(
        udp_get(&ext, client, at(HOST_V4, 5353)),
        Some("next".to_owned())
    );
    next.del(&node, &c);
}

#[test]
fn gc_removes_mappings_of_stale_attachments() {
    let (node, ext) = node_with_external();
    let keep_c = chain(
        &node,
        "1.1.0",
        json!({}),
        json!([{"hostPort": 8090, "containerPort": 80, "protocol": "tcp"}]),
    );
    let stale_c = chain(
        &node,
        "1.1.0",
        json!({}),
        json!([{"hostPort": 8091, "containerPort": 80, "protocol": "tcp"}]),
    );
    let keep = Pod::add(&node, &keep_c);
    let stale = Pod::add(&node, &stale_c);
    let _a = tcp_server(&keep.ns, 80, "keep");
    let _b = tcp_server(&stale.ns, 80, "stale");
    let mut gc = keep_c.request_config(1, None);
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": keep.att.container_id, "ifname": "eth0"}]);
    let out = node
        .plugin("portmap")
        .command("GC")
        .unset("CNI_IFNAME")
        .config(&gc)
        .run();
    assert!(out.success(), "{out:?}");
    assert_eq!(tcp_get(&ext, at(HOST_V4, 8090)), Some("keep".to_owned()));
    assert_eq!(
        tcp_get(&ext, at(HOST_V4, 8091)),
        None,
        "GC left the stale mapping"
    );
    keep.del(&node, &keep_c);
    stale.del(&node, &stale_c);
    assert!(!keep.ip(true).is_empty());
}

#[test]
fn rules_of_the_go_portmap_on_the_same_node_do_not_break_ours() {
    let (node, ext) = node_with_external();
    let ours = chain(
        &node,
        "0.4.0",
        json!({}),
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
    );
    let a = Pod::add(&node, &ours);
    let _srv_a = tcp_server(&a.ns, 80, "ours");
    // Debian's Go portmap (iptables-nft `nat` table) for another pod on the same node.
    let theirs_list = json!({"cniVersion": "0.4.0", "name": "pmnet", "plugins": [ours.list()["plugins"][0].clone()]});
    let bridge = Chain::new(theirs_list);
    let (id, ns) = node.container();
    let att = Attachment::new(&id, &ns.path_str(), "eth0");
    let prev = bridge.add(&node, &att).unwrap();
    let go_conf = json!({"cniVersion": "0.4.0", "name": "pmnet", "type": "portmap",
        "capabilities": {"portMappings": true}, "prevResult": prev,
        "runtimeConfig": {"portMappings": [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]}});
    let go = |cmd: &str| {
        node.go_plugin("portmap")
            .command(cmd)
            .container(&id, &ns.path_str())
            .config(&go_conf)
            .run()
    };
    let out = go("ADD");
    assert!(out.success(), "Go portmap ADD failed: {out:?}");
    let _srv_b = tcp_server(&ns, 80, "theirs");
    assert_eq!(tcp_get(&ext, at(HOST_V4, 8080)), Some("ours".to_owned()));
    assert_eq!(tcp_get(&ext, at(HOST_V4, 8081)), Some("theirs".to_owned()));
    assert!(go("DEL").success());
    bridge.del(&node, &att, Some(&prev)).unwrap();
    assert_eq!(tcp_get(&ext, at(HOST_V4, 8080)), Some("ours".to_owned()));
    a.del(&node, &ours);
}
