//! The tests' Kubernetes control plane (`conformance/src/kube.rs`) on its own: kube-apiserver
//! 1.20.2 on its own etcd in a LAN namespace; kube-flannel's RBAC allowing exactly what Go
//! flanneld's kube subnet manager does (get, list and watch nodes, patch nodes/status: its
//! annotations and the NetworkUnavailable condition) and refusing the rest, with a token from
//! the TokenRequest API, sent by curl as Go's client sends it; the kubeconfig and the
//! service-account directory the rig writes, used from a node on the LAN; a watch resuming
//! from a resourceVersion older than an apiserver restart and an etcd compaction getting
//! "410 Gone"; the apiserver riding out an etcd restart.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::time::Instant;

use conformance::TestNetns;
use conformance::etcd::{LAN_IP, Lan};
use conformance::kube::{self, ControlPlane};
use conformance::skip;
use serde_json::{Value, json};

const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
const STRATEGIC_MERGE: &str = "application/strategic-merge-patch+json";

fn kube_or_skip(test: &str) -> bool {
    if !kube::available() {
        skip(test, &kube::missing());
        return false;
    }
    true
}

/// A started control plane, its start time and the apiserver's RSS printed (shown with
/// `--nocapture`).
fn start(lan: &Lan) -> ControlPlane {
    let t = Instant::now();
    let cp = ControlPlane::start(lan);
    let pid = cp.apiserver_pid().unwrap();
    let rss = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or_default()
        .to_owned();
    eprintln!(
        "control plane ready in {:?}; kube-apiserver {rss}",
        t.elapsed()
    );
    cp
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A watch response's events, one JSON object per line.
fn events(body: &str) -> Vec<Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse)
        .collect()
}

/// A refused request: 403 with a Status object saying Forbidden.
fn assert_forbidden(cp: &ControlPlane, token: &str, method: &str, path: &str, body: Option<&str>) {
    let (code, text) = cp.request(token, method, path, body.map(|b| (STRATEGIC_MERGE, b)));
    assert_eq!(code, 403, "{method} {path} must be refused: {text}");
    let status = parse(&text);
    assert_eq!(status["reason"], "Forbidden", "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("system:serviceaccount:kube-flannel:flannel"),
        "{status}"
    );
}

#[test]
fn flannel_role_allows_what_flanneld_does_and_nothing_more() {
    if !kube_or_skip("kube_control_plane::flannel_role_allows_what_flanneld_does_and_nothing_more")
    {
        return;
    }
    let lan = Lan::new();
    let cp = start(&lan);
    cp.install_flannel_rbac();
    cp.create_node("node-1", &["10.244.0.0/24"], &[]);
    cp.create_node(
        "node-2",
        &["10.244.1.0/24"],
        &[("flannel.alpha.coreos.com/kube-subnet-manager", "true")],
    );
    cp.create_node("node-3", &["10.244.2.0/24", "fd00:10:244:2::/64"], &[]);
    let n3 = cp.node_json("node-3");
    assert_eq!(n3["spec"]["podCIDR"], "10.244.2.0/24", "{n3}");
    assert_eq!(
        n3["spec"]["podCIDRs"],
        json!(["10.244.2.0/24", "fd00:10:244:2::/64"]),
        "{n3}"
    );
    assert_eq!(
        cp.node_json("node-2")["metadata"]["annotations"]["flannel.alpha.coreos.com/kube-subnet-manager"],
        "true"
    );

    let token = cp.flannel_token();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");

    // What flanneld does: get its node, list and watch all nodes.
    let (code, body) = cp.request(&token, "GET", "/api/v1/nodes/node-1", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(parse(&body)["metadata"]["name"], "node-1");
    let (code, body) = cp.request(&token, "GET", "/api/v1/nodes", None);
    assert_eq!(code, 200, "{body}");
    let list = parse(&body);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node-1", "node-2", "node-3"]);
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap();
    let (code, body) = cp.request(
        &token,
        "GET",
        "/api/v1/nodes?watch=1&resourceVersion=0&timeoutSeconds=1",
        None,
    );
    assert_eq!(code, 200, "{body}");
    let mut added: Vec<String> = events(&body)
        .iter()
        .filter(|e| e["type"] == "ADDED")
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    added.sort();
    assert_eq!(added, ["node-1", "node-2", "node-3"], "{body}");
    // A watch from the list's resourceVersion sees the next change.
    let watch_path = format!("/api/v1/nodes?watch=1&resourceVersion={rv}&timeoutSeconds=2");

    // Its annotations and its condition, patched on nodes/status as Go's client does.
    let (code, body) = cp.request(
        &token,
        "PATCH",
        "/api/v1/nodes/node-1/status",
        Some((
            STRATEGIC_MERGE,
            &json!({"metadata": {"annotations": {PUBLIC_IP: "192.168.50.2"}}}).to_string(),
        )),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        cp.node_json("node-1")["metadata"]["annotations"][PUBLIC_IP],
        "192.168.50.2"
    );
    let (code, body) = cp.request(&token, "GET", &watch_path, None);
    assert_eq!(code, 200, "{body}");
    let modified = events(&body);
    assert!(
        modified.iter().any(|e| e["type"] == "MODIFIED"
            && e["object"]["metadata"]["annotations"][PUBLIC_IP] == "192.168.50.2"),
        "{body}"
    );
    let condition = json!({"status": {"conditions": [{
        "type": "NetworkUnavailable",
        "status": "False",
        "reason": "FlannelIsUp",
        "message": "Flannel is running on this node",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "lastHeartbeatTime": "2026-01-01T00:00:00Z",
    }]}});
    let (code, body) = cp.request(
        &token,
        "PATCH",
        "/api/v1/nodes/node-1/status",
        Some((STRATEGIC_MERGE, &condition.to_string())),
    );
    assert_eq!(code, 200, "{body}");
    let n1 = cp.node_json("node-1");
    let conditions = n1["status"]["conditions"].as_array().unwrap();
    let c = conditions
        .iter()
        .find(|c| c["type"] == "NetworkUnavailable")
        .unwrap_or_else(|| panic!("no NetworkUnavailable condition: {n1}"));
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "FlannelIsUp");
    assert_eq!(c["message"], "Flannel is running on this node");
    // Its own pod may be read (there is none: 404, not 403).
    let (code, body) = cp.request(
        &token,
        "GET",
        "/api/v1/namespaces/kube-flannel/pods/kube-flannel-ds-x",
        None,
    );
    assert_eq!(code, 404, "{body}");

    // Nothing more.
    let patch = json!({"metadata": {"labels": {"x": "y"}}}).to_string();
    assert_forbidden(&cp, &token, "PATCH", "/api/v1/nodes/node-1", Some(&patch));
    assert_forbidden(&cp, &token, "DELETE", "/api/v1/nodes/node-2", None);
    assert_forbidden(&cp, &token, "GET", "/api/v1/pods", None);
    assert_forbidden(
        &cp,
        &token,
        "GET",
        "/api/v1/namespaces/kube-flannel/pods",
        None,
    );
    assert_forbidden(
        &cp,
        &token,
        "GET",
        "/api/v1/namespaces/kube-flannel/secrets",
        None,
    );
    assert_forbidden(
        &cp,
        &token,
        "GET",
        "/api/v1/namespaces/default/secrets/x",
        None,
    );
    assert_eq!(cp.node_json("node-2")["metadata"]["name"], "node-2");
    assert!(cp.node_json("node-1")["metadata"]["labels"]["x"].is_null());
    // A stranger's token: 401.
    let (code, body) = cp.request("not-a-token", "GET", "/api/v1/nodes", None);
    assert_eq!(code, 401, "{body}");

    // The kubeconfig the rig writes for the token: kubectl reads nodes, is refused pods.
    let kubeconfig = cp.dir().join("flannel.kubeconfig");
    cp.kubeconfig(&token, &kubeconfig);
    let out = cp
        .kubectl_command(&kubeconfig)
        .args(["get", "nodes", "-o", "name"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "node/node-1\nnode/node-2\nnode/node-3\n"
    );
    let out = cp
        .kubectl_command(&kubeconfig)
        .args(["get", "pods", "-A"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The service-account directory, from a node on the LAN (a namespace with a veth into
    // the LAN's bridge), as an in-cluster client reads it.
    let sa = cp.service_account_dir(&token);
    assert_eq!(
        fs::read_to_string(sa.join("namespace")).unwrap(),
        "kube-flannel"
    );
    assert_eq!(fs::read_to_string(sa.join("token")).unwrap(), token);
    assert_eq!(
        fs::read(sa.join("ca.crt")).unwrap(),
        fs::read(cp.ca_file()).unwrap()
    );
    let node = TestNetns::create(&cp.dir().join("node.netns"));
    node.sh(
        "ip",
        &[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "lan9",
            "netns",
            &lan.ns().path_str(),
        ],
    );
    lan.ns().sh("ip", &["link", "set", "lan9", "master", "br0"]);
    lan.ns().sh("ip", &["link", "set", "lan9", "up"]);
    node.sh("ip", &["addr", "add", "192.168.50.9/24", "dev", "eth0"]);
    node.sh("ip", &["link", "set", "eth0", "up"]);
    let sa_token = fs::read_to_string(sa.join("token")).unwrap();
    let out = node.sh(
        "curl",
        &[
            "-sS",
            "--fail",
            "--max-time",
            "30",
            "--cacert",
            &sa.join("ca.crt").display().to_string(),
            "-H",
            &format!("Authorization: Bearer {sa_token}"),
            &format!("https://{LAN_IP}:6443/api/v1/nodes/node-3"),
        ],
    );
    assert_eq!(parse(&out)["spec"]["podCIDRs"][1], "fd00:10:244:2::/64");
    assert_eq!(cp.server(), format!("https://{LAN_IP}:6443"));
}

#[test]
fn watch_from_before_a_restart_and_a_compaction_is_gone() {
    if !kube_or_skip("kube_control_plane::watch_from_before_a_restart_and_a_compaction_is_gone") {
        return;
    }
    let lan = Lan::new();
    let mut cp = start(&lan);
    let admin = cp.admin_token().to_owned();
    cp.create_node("node-1", &["10.244.0.0/24"], &[]);
    let list = parse(&cp.kubectl_ok(&["get", "--raw", "/api/v1/nodes"]));
    let old = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    cp.create_node("node-2", &["10.244.1.0/24"], &[]);
    let watch = format!("/api/v1/nodes?watch=1&resourceVersion={old}&timeoutSeconds=1");

    // Before: the watch from `old` replays what came after it.
    let (code, body) = cp.request(&admin, "GET", &watch, None);
    assert_eq!(code, 200, "{body}");
    let before = events(&body);
    assert!(
        before
            .iter()
            .any(|e| e["type"] == "ADDED" && e["object"]["metadata"]["name"] == "node-2"),
        "{body}"
    );

    cp.kill();
    let compacted = cp.compact();
    assert!(compacted > old.parse::<i64>().unwrap());
    cp.restart();

    // After: a 200 whose one event is an ERROR carrying the Status 410 Expired, and the end of
    // the stream (as the reflector of Go's client-go sees it: it relists).
    let (code, body) = cp.request(&admin, "GET", &watch, None);
    assert_eq!(code, 200, "{body}");
    let after = events(&body);
    assert_eq!(after.len(), 1, "{body}");
    assert_eq!(after[0]["type"], "ERROR", "{body}");
    let status = &after[0]["object"];
    assert_eq!(status["kind"], "Status", "{body}");
    assert_eq!(status["code"], 410, "{body}");
    assert_eq!(status["reason"], "Expired", "{body}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {old} (")),
        "{body}"
    );
    // kubectl's raw watch prints the same event.
    let raw = cp.kubectl_ok(&["get", "--raw", &watch]);
    assert_eq!(events(&raw)[0]["object"]["code"], 410, "{raw}");
    // The data survived; a list and a watch from its resourceVersion work.
    let list = parse(&cp.kubectl_ok(&["get", "--raw", "/api/v1/nodes"]));
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap();
    let (code, body) = cp.request(
        &admin,
        "GET",
        &format!("/api/v1/nodes?watch=1&resourceVersion={rv}&timeoutSeconds=1"),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert!(events(&body).iter().all(|e| e["type"] != "ERROR"), "{body}");

    // etcd killed and started again under a running apiserver: it reconnects.
    cp.kill_etcd();
    cp.restart_etcd();
    conformance::poll::secs(
        "the apiserver to serve again after etcd's restart",
        60,
        || cp.kubectl(&["get", "node", "node-2"]).status.success() && cp.ready(),
        || cp.log(),
    );
    cp.delete_node("node-2");
    assert!(!cp.kubectl(&["get", "node", "node-2"]).status.success());
}
