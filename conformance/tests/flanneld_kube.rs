//! flanneld with `--kube-subnet-mgr` against a real kube-apiserver (Kubernetes 1.20.2, built
//! by scripts/kube-build.sh), on an underlay of namespaces: three nodes whose Node objects
//! carry podCIDRs, node 1's agent in-cluster (service-account files, `POD_NAME`), the others
//! by kubeconfig, all as kube-flannel's service account with exactly kube-flannel's
//! ClusterRole; each Node annotated as Go flanneld annotates it and marked
//! `NetworkUnavailable=False`; kube-flannel's conflist and our plugins, pods pinging
//! across nodes; a node annotated by "Go flanneld" (the test) programmed by every agent and
//! then deleted; a Node without flannel's annotations ignored; the apiserver SIGKILLed (the
//! data path stays and is repaired, the agents catch up) and its history compacted under
//! agents frozen meanwhile; nothing left afterwards. Once with host-gw, once with vxlan.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use conformance::cluster::{Backend, Cluster, go_subnet, machine_state};
use conformance::{kube, poll, skip};
use nix::sys::signal::Signal;

/// Progress on stderr (shown with `--nocapture`) and in the report file.
struct Report {
    start: Instant,
    text: String,
}

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        let line = format!(
            "[{:5.1}s] {}",
            self.start.elapsed().as_secs_f64(),
            s.as_ref()
        );
        eprintln!("{line}");
        self.text.push_str(&line);
        self.text.push('\n');
    }
    fn block(&mut self, s: impl AsRef<str>) {
        for l in s.as_ref().lines() {
            let _ = writeln!(self.text, "    {l}");
            eprintln!("    {l}");
        }
    }
}

fn kube_or_skip(test: &str) -> bool {
    if kube::available() {
        return true;
    }
    skip(test, &kube::missing());
    false
}

/// Waits until every agent programmed every managed Node but its own.
fn converged(c: &Cluster, what: &str) -> Duration {
    c.converge(20)
        .unwrap_or_else(|e| panic!("{what}: not converged: {e}\n{}", logs(c)))
}

fn logs(c: &Cluster) -> String {
    c.members
        .iter()
        .filter_map(|m| Some(format!("== {}:\n{}", m.name, m.agent.as_ref()?.log())))
        .collect::<Vec<_>>()
        .join("\n")
}

fn whole_system(backend: Backend) {
    let test = format!("flanneld_kube::{}", backend.name());
    if !kube_or_skip(&test) {
        return;
    }
    let before = machine_state();
    let mut r = Report {
        start: Instant::now(),
        text: String::new(),
    };
    let mut c = Cluster::start_kube(backend);
    r.line(format!(
        "kube-apiserver {} up (TLS, Node,RBAC), kube-flannel's RBAC, net-conf {}",
        kube::VERSION,
        backend.network_config()
    ));

    // Three nodes: node1 in-cluster, node2 and node3 by kubeconfig.
    c.join_in_cluster().unwrap();
    c.join().unwrap();
    c.join().unwrap();
    r.line("3 agents ready (subnet.env written)");
    for (m, member) in c.members.iter().enumerate() {
        let node = c.kube().cp.node_json(&member.name);
        let cidr = node["spec"]["podCIDR"].as_str().unwrap();
        let first = cidr.replace(".0/24", ".1/24");
        assert_eq!(
            member.subnet_env(),
            format!(
                "FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET={first}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ=true\n",
                backend.mtu()
            ),
            "{}: the podCIDR is the subnet",
            member.name
        );
        assert_eq!(
            conformance::cluster::kube::flannel_annotations(&node),
            c.expected_annotations(m),
            "{}: Go's annotations",
            member.name
        );
        let conditions = node["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let net = conditions
            .iter()
            .find(|c| c["type"] == "NetworkUnavailable")
            .unwrap_or_else(|| panic!("{}: no NetworkUnavailable condition: {node}", member.name));
        assert_eq!(net["status"], "False");
        assert_eq!(net["reason"], "FlannelIsUp");
        assert_eq!(net["message"], "Flannel is running on this node");
    }
    let t = converged(&c, "3 nodes");
    r.line(format!(
        "Nodes annotated as Go flanneld annotates them, NetworkUnavailable=False FlannelIsUp; peers programmed within {t:?}"
    ));
    let n1 = c.kube().cp.node_json("node1");
    r.block(
        serde_json::to_string_pretty(&serde_json::json!({
            "annotations": n1["metadata"]["annotations"],
            "conditions": n1["status"]["conditions"],
        }))
        .unwrap(),
    );
    r.block(c.members[0].routes());
    assert!(
        c.members[0]
            .agent
            .as_ref()
            .unwrap()
            .log()
            .contains("Kubernetes API at https://192.168.50.1:6443"),
        "node1 found the API in-cluster"
    );

    // Two pods per node, every one pings every other.
    for m in 0..3 {
        c.add_pod(m, None);
        c.add_pod(m, None);
    }
    let matrix = c.ping_matrix(None);
    r.line("ping matrix, 3 nodes × 2 pods:");
    r.block(matrix.to_string());
    assert_eq!(matrix.ok(), 30, "{:?}", matrix.failures());

    // A node Go flanneld runs: its Node annotated by "Go" (the test), its kernel side by hand.
    let go = c.join_go_node();
    let t = converged(&c, "the Go node");
    c.add_pod(go, None);
    let matrix = c.ping_matrix(Some(&[(go, 0)]));
    assert_eq!(matrix.ok(), matrix.pairs.len(), "{:?}", matrix.failures());
    r.line(format!(
        "a Node annotated as Go flanneld annotates it ({}) programmed by every agent within {t:?}; its pod reaches all {}",
        go_subnet(1),
        matrix.ok()
    ));

    // A Node flannel does not manage: ignored.
    c.kube()
        .cp
        .create_node("plain", &["10.30.0.0/24"], &[("example.com/x", "y")]);
    std::thread::sleep(Duration::from_millis(500));
    for m in c.members.iter().filter(|m| !m.go) {
        assert!(
            !m.routes().contains("10.30.0.0/24"),
            "{}: {}",
            m.name,
            m.routes()
        );
    }
    r.line("a Node without flannel's annotations is ignored");

    // Every agent did all of that as kube-flannel's service account: nothing was refused.
    // (Later, an apiserver that just restarted refuses for a moment while its RBAC cache
    // fills; that is retried.)
    for m in c.members.iter().filter(|m| !m.go) {
        let log = m.agent.as_ref().unwrap().log();
        assert!(
            !log.to_lowercase().contains("forbidden"),
            "{}: {log}",
            m.name
        );
    }

    // The apiserver SIGKILLed: the data path stays and is repaired; then it is back and the
    // agents catch up.
    c.kube_mut().cp.kill();
    let dst = go_subnet(1);
    c.members[1].node.host().sh("ip", &["route", "del", &dst]);
    poll::secs(
        "node2 repairs the Go node's route with the apiserver down",
        15,
        || c.members[1].routes().contains(&dst),
        || logs(&c),
    );
    let matrix = c.ping_matrix(None);
    assert_eq!(matrix.ok(), matrix.pairs.len(), "{:?}", matrix.failures());
    r.line("apiserver SIGKILLed: routes stay, a route deleted by hand repaired, every pod still reaches every pod");
    c.kube_mut().cp.restart();
    let joined = c.join().unwrap();
    let t = converged(&c, "after the apiserver restart");
    r.line(format!(
        "apiserver restarted: node{} joined, every agent caught up within {t:?}",
        joined + 1
    ));

    // History compacted while node2's agent is frozen: it re-lists and diffs. Its watch
    // connection is cut first (an apiserver restart), so the changes reach it by no stream.
    c.members[1].agent.as_mut().unwrap().signal(Signal::SIGSTOP);
    c.kube_mut().cp.restart();
    let go_name = c.members[go].name.clone();
    c.kube().cp.delete_node(&go_name);
    let go2 = c.join_go_node();
    c.kube_mut().cp.kill();
    c.kube().cp.compact();
    c.kube_mut().cp.restart();
    c.members[1].agent.as_mut().unwrap().signal(Signal::SIGCONT);
    let dead_subnet = go_subnet(1);
    poll::secs(
        "node2 drops the deleted Go node and programs the new one",
        20,
        || {
            let routes = c.members[1].routes();
            !routes.contains(&format!("{dead_subnet} ")) && routes.contains(&c.members[go2].subnet)
        },
        || logs(&c),
    );
    let log = c.members[1].agent.as_ref().unwrap().log();
    assert!(log.contains("listing again"), "re-listed after 410: {log}");
    r.line("history compacted under a frozen agent: 410 Gone, re-listed, the deleted node's routes gone, the new one's in");

    c.delete_pods().unwrap();
    let summary = c.shut_down().unwrap();
    r.line(summary);
    assert_eq!(machine_state(), before, "the machine's state changed");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(format!("kube-{}.txt", backend.name()));
    let _ = std::fs::write(out, &r.text);
}

#[test]
fn kube_host_gw() {
    whole_system(Backend::HostGw);
}

#[test]
fn kube_vxlan() {
    whole_system(Backend::Vxlan);
}
