//! portmap chained after bridge + host-local, run as a runtime runs them, with real traffic
//! between namespaces the test creates.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use conformance::chain::Attachment;
use conformance::traffic::{tcp_get, tcp_server, udp_get, udp_server};
use conformance::{Chain, Node, TestNetns};
use serde_json::{Value, json};

const HOST_V4: &str = "198.51.100.1";
const EXT_V4: &str = "198.51.100.2";
const HOST_V6: &str = "2001:db8:ff::1";
const EXT_V6: &str = "2001:db8:ff::2";

/// A node with an "external" machine on 198.51.100.0/24 and 2001:db8:ff::/64.
fn node_with_external() -> (Node, TestNetns) {
    let node = Node::new();
    let ext = node.external(&format!("{HOST_V4}/24"), &format!("{EXT_V4}/24"));
    node.host().sh(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &format!("{HOST_V6}/64"),
            "dev",
            "ext0",
            "nodad",
        ],
    );
    ext.sh(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &format!("{EXT_V6}/64"),
            "dev",
            "ext1",
            "nodad",
        ],
    );
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

struct Pod {
    att: Attachment,
    ns: TestNetns,
    result: Value,
}

fn add_pod(node: &Node, chain: &Chain) -> Pod {
    let (id, ns) = node.container();
    let att = Attachment::new(&id, &ns.path_str(), "eth0");
    let result = chain
        .add(node, &att)
        .unwrap_or_else(|e| panic!("ADD failed at {}: {:?}", e.plugin, e.outcome));
    Pod { att, ns, result }
}

fn del_pod(node: &Node, chain: &Chain, pod: &Pod) {
    chain
        .del(node, &pod.att, Some(&pod.result))
        .unwrap_or_else(|e| panic!("DEL failed at {}: {:?}", e.plugin, e.outcome));
}

fn ip(pod: &Pod, v4: bool) -> String {
    pod.result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .find(|a| a.contains('.') == v4)
        .unwrap()
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
    let a = add_pod(&node, &c);
    // The other pod maps nothing: two pods cannot share a host port.
    let plain = chain(&node, "1.0.0", json!({}), json!([]));
    let b = add_pod(&node, &plain);
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
    del_pod(&node, &c, &a);
    del_pod(&node, &plain, &b);
    assert_eq!(
        tcp_get(&ext, at(HOST_V4, 8080)),
        None,
        "still mapped after DEL"
    );
}
