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

use std::time::Duration;

use conformance::cluster::{Backend, Cluster, go_subnet, machine_state};
use conformance::report::Report;
use conformance::{kube, poll, skip};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn kube_or_skip(test: &str) -> bool {
    if kube::available() {
        return true;
    }
    skip(test, &kube::missing());
    false
}

/// A control plane on a LAN with kube-flannel's RBAC and a kubeconfig of its service account,
/// for the tests that start agents one by one.
struct Plane {
    // The control plane goes before the LAN whose namespace it runs in.
    cp: kube::ControlPlane,
    kubeconfig: std::path::PathBuf,
    lan: conformance::etcd::Lan,
}

impl Plane {
    /// Up, with the RBAC installed (`role` then applied over kube-flannel's ClusterRole, if
    /// given) and the token taken.
    fn start(role: Option<&str>) -> Plane {
        let lan = conformance::etcd::Lan::new();
        let cp = kube::ControlPlane::start(&lan);
        cp.install_flannel_rbac();
        if let Some(role) = role {
            cp.apply(role);
        }
        let token = cp.flannel_token();
        let kubeconfig = cp.dir().join("flannel.kubeconfig");
        cp.kubeconfig(&token, &kubeconfig);
        Plane {
            cp,
            kubeconfig,
            lan,
        }
    }

    /// Starts flanneld in kube mode on `node` as Node `name`, by kubeconfig, with `net_conf`.
    fn agent(
        &self,
        node: &conformance::node::Node,
        name: &str,
        net_conf: &str,
    ) -> conformance::etcd::Agent {
        self.agent_env(node, name, net_conf, &[])
    }

    /// [`Plane::agent`] with more environment (`FLANNELD_TEST_WATCH_TIMEOUT`).
    fn agent_env(
        &self,
        node: &conformance::node::Node,
        name: &str,
        net_conf: &str,
        env: &[(&str, &str)],
    ) -> conformance::etcd::Agent {
        std::fs::write(node.dir().join("net-conf.json"), net_conf).unwrap();
        let p = |f: &str| node.dir().join(f).display().to_string();
        let args = vec![
            "--kube-subnet-mgr".to_owned(),
            format!("--kubeconfig-file={}", self.kubeconfig.display()),
            format!("--net-config-path={}", p("net-conf.json")),
            format!("--subnet-file={}", p("subnet.env")),
            "--iface=eth0".to_owned(),
        ];
        let mut all = vec![("NODE_NAME", name)];
        all.extend_from_slice(env);
        conformance::etcd::Agent::start(node, "flanneld.log", &args, &all)
    }
}

/// Waits until the agent on `node` wrote subnet.env.
fn ready(agent: &mut conformance::etcd::Agent, node: &conformance::node::Node) {
    let env = node.dir().join("subnet.env");
    agent.wait_for("subnet.env", 30, || env.exists());
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
    let mut r = Report::new();
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
    // A restarted apiserver refuses (403) until its RBAC cache is filled, which a loaded
    // machine makes take longer than a converge usually may.
    let t = c.converge(60).unwrap_or_else(|e| {
        panic!(
            "after the apiserver restart: not converged: {e}\n{}",
            logs(&c)
        )
    });
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
    // One re-list, no loop, no burst of lines.
    let relists = log
        .lines()
        .filter(|l| l.contains("lost its place") || l.contains("refused") && l.contains("410"))
        .count();
    assert!((1..=2).contains(&relists), "{relists} re-listings:\n{log}");
    r.line("history compacted under a frozen agent: 410 Gone, re-listed, the deleted node's routes gone, the new one's in");

    c.delete_pods().unwrap();
    let summary = c.shut_down().unwrap();
    r.line(summary);
    assert_eq!(machine_state(), before, "the machine's state changed");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(format!("kube-{}.txt", backend.name()));
    let _ = std::fs::write(out, r.text());
}

#[test]
fn kube_host_gw() {
    whole_system(Backend::HostGw);
}

#[test]
fn kube_vxlan() {
    whole_system(Backend::Vxlan);
}

/// Dual-stack and IPv6-only networks on the real apiserver: two nodes on a dual-stack LAN,
/// their Nodes with `podCIDRs` of the network's families, our agents in kube mode (the
/// apiserver keeps both podCIDRs only with the IPv6DualStack feature gate, as 1.20 needs),
/// a pod on each, pings over every family the network has.
fn families(backend: Backend, v4: bool) {
    use conformance::chain::Chain;
    use conformance::flannel::conflist;
    use conformance::node::Node;
    use conformance::pod::Pod;

    let what = if v4 { "dual_stack" } else { "ipv6_only" };
    let test = format!("flanneld_kube::{what}_{}", backend.name());
    if !kube_or_skip(&test) {
        return;
    }
    let before = machine_state();
    let mut plane = Plane::start(None);
    let net = format!(
        r#"{{{}"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{{"Type":"{}"}}}}"#,
        if v4 {
            r#""Network":"10.244.0.0/16","#
        } else {
            r#""EnableIPv4":false,"#
        },
        backend.name()
    );
    let nodes = [Node::new(), Node::new()];
    let mut agents = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let n = i + 1;
        plane.lan.attach_dual_stack(node, 10 + n as u8);
        let name = format!("node{n}");
        let v6 = format!("fd00:10:244:{n}::/64");
        let v4c = format!("10.244.{n}.0/24");
        let cidrs: Vec<&str> = if v4 { vec![&v4c, &v6] } else { vec![&v6] };
        plane.cp.create_node(&name, &cidrs, &[]);
        agents.push(plane.agent(node, &name, &net));
    }
    for (i, node) in nodes.iter().enumerate() {
        ready(&mut agents[i], node);
        let text = std::fs::read_to_string(node.dir().join("subnet.env")).unwrap();
        assert_eq!(text.contains("FLANNEL_SUBNET="), v4, "{text}");
        assert!(
            text.contains(&format!("FLANNEL_IPV6_SUBNET=fd00:10:244:{}::1/64", i + 1)),
            "{text}"
        );
    }
    let node1 = plane.cp.node_json("node1");
    let ann = conformance::cluster::kube::flannel_annotations(&node1);
    assert_eq!(ann["public-ipv6"], "fd00:5::b", "{ann:?}");
    assert_eq!(ann["kube-subnet-manager"], "true");
    match (backend, v4) {
        (Backend::Vxlan, true) => {
            assert!(ann.contains_key("backend-data") && ann.contains_key("backend-v6-data"))
        }
        (Backend::Vxlan, false) => {
            assert!(!ann.contains_key("backend-data") && !ann.contains_key("public-ip"))
        }
        (Backend::HostGw, _) => assert_eq!(ann["backend-v6-data"], "null"),
        (Backend::Wireguard, _) => unreachable!("families() runs vxlan and host-gw"),
    }
    let chains: Vec<Chain> = nodes
        .iter()
        .map(|n| Chain::new(conflist(n, "0.3.1")))
        .collect();
    let pods: Vec<Pod> = nodes
        .iter()
        .zip(&chains)
        .map(|(n, c)| Pod::add(n, c))
        .collect();
    let mut fams = vec![false];
    if v4 {
        fams.push(true);
    }
    for fam in fams {
        let to = pods[1].ip(fam);
        poll::secs(
            &format!("pod on node1 pings {to}"),
            20,
            || {
                pods[0]
                    .ns
                    .run("ping", &["-c1", "-W1", "-q", &to])
                    .status
                    .success()
            },
            || {
                agents
                    .iter()
                    .map(|a| a.log())
                    .collect::<Vec<_>>()
                    .join("\n==\n")
                    + &nodes[0].host().sh("ip", &["-6", "route"])
            },
        );
    }
    for ((p, n), c) in pods.iter().zip(&nodes).zip(&chains) {
        p.del(n, c);
    }
    for a in &mut agents {
        assert_eq!(a.terminate(), Some(0));
    }
    drop(agents);
    drop(pods);
    drop(nodes);
    drop(plane);
    assert_eq!(machine_state(), before, "the machine's state changed");
}

#[test]
fn kube_dual_stack_host_gw() {
    families(Backend::HostGw, true);
}

#[test]
fn kube_dual_stack_vxlan() {
    families(Backend::Vxlan, true);
}

#[test]
fn kube_ipv6_only_host_gw() {
    families(Backend::HostGw, false);
}

#[test]
fn kube_ipv6_only_vxlan() {
    families(Backend::Vxlan, false);
}

/// The control of the role check: kube-flannel's ClusterRole without `patch` on
/// nodes/status is not enough (the agent reports the apiserver's refusal and keeps retrying,
/// not ready), and with the whole role back it becomes ready. The whole-system tests above
/// run with exactly that role, so an agent needing any other verb fails them.
#[test]
fn kube_flannels_role_is_needed_whole() {
    use conformance::node::Node;

    if !kube_or_skip("flanneld_kube::kube_flannels_role_is_needed_whole") {
        return;
    }
    let before = machine_state();
    let full = include_str!("../../testdata/kube/flannel-rbac.yml");
    let start = full.find("kind: ClusterRole\n").unwrap();
    let end = start + full[start..].find("---").unwrap();
    let role = &full[start..end];
    let reduced = role.replace(
        "  - apiGroups: [\"\"]\n    resources: [nodes/status]\n    verbs: [patch]\n",
        "",
    );
    assert_ne!(reduced, role, "the rule is in the role");
    let mut plane = Plane::start(Some(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\n{reduced}"
    )));
    let node = Node::new();
    plane.lan.attach(&node, 11);
    plane.cp.create_node("node1", &["10.244.1.0/24"], &[]);
    let mut agent = plane.agent(
        &node,
        "node1",
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#,
    );
    let log = node.dir().join("flanneld.log");
    agent.wait_for("the refusal of the status patch", 20, || {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        log.contains("forbidden") && log.contains("nodes/status")
    });
    assert!(agent.running(), "it keeps retrying");
    assert!(
        !node.dir().join("subnet.env").exists(),
        "not ready without its role"
    );
    plane.cp.install_flannel_rbac();
    let env = node.dir().join("subnet.env");
    agent.wait_for("ready once the role is whole", 40, || env.exists());
    assert_eq!(agent.terminate(), Some(0));
    drop(agent);
    drop(node);
    drop(plane);
    assert_eq!(machine_state(), before, "the machine's state changed");
}

/// A rebooted vxlan node (its device gone, the agent started again) takes the VtepMAC of its
/// Node's `backend-data` annotation again, as Go does: the peers' FDB entries stay valid and
/// nothing is re-annotated. An operator's `public-ip-overwrite` is what the node publishes.
#[test]
fn kube_vxlan_keeps_its_mac_across_a_reboot() {
    use conformance::node::Node;

    if !kube_or_skip("flanneld_kube::kube_vxlan_keeps_its_mac_across_a_reboot") {
        return;
    }
    const NET: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
    let before = machine_state();
    let mut plane = Plane::start(None);
    let nodes = [Node::new(), Node::new()];
    let mut agents = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        plane.lan.attach(node, 11 + i as u8);
        let name = format!("node{}", i + 1);
        let ann: &[(&str, &str)] = if i == 0 {
            &[(
                "flannel.alpha.coreos.com/public-ip-overwrite",
                "203.0.113.7",
            )]
        } else {
            &[]
        };
        plane
            .cp
            .create_node(&name, &[&format!("10.244.{}.0/24", i + 1)], ann);
        let mut a = plane.agent(node, &name, NET);
        ready(&mut a, node);
        agents.push(a);
    }
    let annotations =
        |name: &str| conformance::cluster::kube::flannel_annotations(&plane.cp.node_json(name));
    let mac = |node: &Node| {
        let out = node.host().sh("ip", &["-o", "link", "show", "flannel.1"]);
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let mac1 = mac(&nodes[0]);
    let ann1 = annotations("node1");
    assert_eq!(
        ann1["backend-data"],
        format!(r#"{{"VNI":1,"VtepMAC":"{mac1}"}}"#)
    );
    assert_eq!(
        ann1["public-ip"], "203.0.113.7",
        "the operator's overwrite is published"
    );
    let fdb = || {
        nodes[1]
            .host()
            .sh("bridge", &["fdb", "show", "dev", "flannel.1"])
    };
    poll::secs(
        "node2 programs node1",
        20,
        || fdb().contains(&format!("{mac1} dst 203.0.113.7")),
        || agents[1].log(),
    );
    // The reboot: the agent stops (SIGTERM: nothing is torn down); the device and /run
    // (subnet.env) are gone.
    assert_eq!(agents[0].terminate(), Some(0));
    nodes[0].host().sh("ip", &["link", "del", "flannel.1"]);
    std::fs::remove_file(nodes[0].dir().join("subnet.env")).unwrap();
    let patches_before = annotations("node1");
    agents[0] = plane.agent(&nodes[0], "node1", NET);
    ready(&mut agents[0], &nodes[0]);
    assert_eq!(
        mac(&nodes[0]),
        mac1,
        "the device is made again with the annotation's MAC"
    );
    assert_eq!(
        annotations("node1"),
        patches_before,
        "nothing to write again"
    );
    assert!(
        fdb().contains(&format!("{mac1} dst 203.0.113.7")),
        "{}",
        fdb()
    );
    assert!(
        agents[0].log().contains("created vxlan device flannel.1"),
        "{}",
        agents[0].log()
    );
    for a in &mut agents {
        assert_eq!(a.terminate(), Some(0));
    }
    drop(agents);
    drop(nodes);
    drop(plane);
    assert_eq!(machine_state(), before, "the machine's state changed");
}

/// The 30 hostile Nodes of `testdata/bad-nodes/` on a real apiserver, next to two good ones,
/// and our flanneld (the binary, vxlan) on a node: each hostile Node the apiserver takes is
/// skipped with one line and leaves nothing in the kernel; the good ones are programmed.
#[test]
fn kube_hostile_nodes_are_skipped_good_ones_programmed() {
    if !kube_or_skip("flanneld_kube::kube_hostile_nodes_are_skipped_good_ones_programmed") {
        return;
    }
    const NET: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
    let mut plane = Plane::start(None);
    let node = conformance::node::Node::new();
    let ip = plane.lan.attach(&node, 2);
    plane.cp.create_node("node-a", &["10.244.1.0/24"], &[]);
    let mut agent = plane.agent(&node, "node-a", NET);
    ready(&mut agent, &node);
    let link = node.host().sh("ip", &["-o", "link", "show", "flannel.1"]);
    let mac = link
        .split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no MAC in {link}"))
        .to_owned();
    let cases = test_corpus::bad_nodes::cases(&[
        ("OWN_CIDR", "10.244.1.0/24"),
        ("OWN_HALF", "10.244.1.128/25"),
        ("OWN_IP", &ip),
        ("OWN_MAC", &mac),
        ("OUTSIDE", "10.99.0.0/24"),
        ("NETWORK", "10.244.0.0/16"),
    ])
    .unwrap();
    let mut refused = Vec::new();
    for case in cases.good.iter().chain(&cases.bad) {
        let name = &case.name;
        if let Err(e) = plane
            .cp
            .try_create_node(name, &case.cidrs(), &case.annotation_pairs())
        {
            assert!(name.starts_with("bad-"), "{name}: {e}");
            refused.push(format!("{name}: {e}"));
        }
    }
    let routes = || node.host().sh("ip", &["route", "show", "dev", "flannel.1"]);
    agent.wait_for("the good Nodes' routes", 20, || {
        let r = routes();
        r.contains("10.244.2.0/24 via 10.244.2.0") && r.contains("10.244.3.0/24 via 10.244.3.0")
    });
    // A moment for anything wrongly taken to show up too.
    std::thread::sleep(Duration::from_secs(1));
    let r = routes();
    assert_eq!(r.lines().count(), 2, "only the good Nodes' routes:\n{r}");
    let neigh = node.host().sh("ip", &["neigh", "show", "dev", "flannel.1"]);
    assert_eq!(neigh.lines().count(), 2, "{neigh}");
    let fdb = node
        .host()
        .sh("bridge", &["fdb", "show", "dev", "flannel.1"]);
    assert_eq!(
        fdb.lines().filter(|l| l.contains(" dst ")).count(),
        2,
        "{fdb}"
    );
    let log = agent.log();
    let mut skipped = 0;
    for case in &cases.bad {
        let name = &case.name;
        if refused.iter().any(|r| r.starts_with(&format!("{name}:"))) {
            continue;
        }
        let key = case.pod_cidrs[0].replace('/', "-");
        let lines = log
            .lines()
            .filter(|l| {
                l.contains(&format!("skipping node \"{name}\""))
                    || (l.contains("skipping lease") && l.contains(&format!(" {key}:")))
            })
            .count();
        assert_eq!(lines, 1, "{name}: one line\n{log}");
        skipped += 1;
    }
    assert!(
        skipped >= 25,
        "{skipped} skipped, refused by the apiserver: {refused:#?}"
    );
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kube-hostile.txt");
    let _ = std::fs::write(
        out,
        format!(
            "{skipped} hostile Nodes skipped by the agent with one line each, {} refused by the apiserver itself:\n{}\n",
            refused.len(),
            refused.join("\n")
        ),
    );
    assert_eq!(agent.terminate(), Some(0));
}

const HOST_GW_NET: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;

/// A Node as Go flanneld annotates a host-gw node.
fn go_host_gw_node(cp: &kube::ControlPlane, name: &str, cidr: &str, ip: &str) {
    const P: &str = "flannel.alpha.coreos.com/";
    let ann = [
        (format!("{P}backend-data"), "null".to_owned()),
        (format!("{P}backend-type"), "host-gw".to_owned()),
        (format!("{P}kube-subnet-manager"), "true".to_owned()),
        (format!("{P}public-ip"), ip.to_owned()),
    ];
    let ann: Vec<(&str, &str)> = ann.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    cp.create_node(name, &[cidr], &ann);
}

/// node-a with our agent (host-gw, watches of `watch_secs`), node-b annotated by "Go" and
/// routed by the agent.
fn faults_setup(watch_secs: &str) -> (Plane, conformance::node::Node, conformance::etcd::Agent) {
    let mut plane = Plane::start(None);
    let node = conformance::node::Node::new();
    plane.lan.attach(&node, 2);
    plane.cp.create_node("node-a", &["10.244.1.0/24"], &[]);
    go_host_gw_node(&plane.cp, "node-b", "10.244.2.0/24", "192.168.50.3");
    let mut agent = plane.agent_env(
        &node,
        "node-a",
        HOST_GW_NET,
        &[("FLANNELD_TEST_WATCH_TIMEOUT", watch_secs)],
    );
    ready(&mut agent, &node);
    agent.wait_for("node-b's route", 10, || {
        route_of(&node).contains("10.244.2.0/24 via 192.168.50.3")
    });
    (plane, node, agent)
}

fn route_of(node: &conformance::node::Node) -> String {
    node.host().sh("ip", &["-4", "route"])
}

/// SIGTERM answered at once: exit 0 within two seconds.
fn terminates_at_once(agent: &mut conformance::etcd::Agent) {
    let t = std::time::Instant::now();
    assert_eq!(agent.terminate(), Some(0), "{}", agent.log());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "SIGTERM took {:?}",
        t.elapsed()
    );
}

#[test]
fn kube_apiserver_down_at_start_then_up() {
    if !kube_or_skip("flanneld_kube::kube_apiserver_down_at_start_then_up") {
        return;
    }
    let mut plane = Plane::start(None);
    let (a, b) = (
        conformance::node::Node::new(),
        conformance::node::Node::new(),
    );
    plane.lan.attach(&a, 2);
    plane.lan.attach(&b, 3);
    plane.cp.create_node("node-a", &["10.244.1.0/24"], &[]);
    plane.cp.create_node("node-b", &["10.244.2.0/24"], &[]);
    plane.cp.kill();
    let mut agent = plane.agent(&a, "node-a", HOST_GW_NET);
    let mut other = plane.agent(&b, "node-b", HOST_GW_NET);
    std::thread::sleep(Duration::from_secs(4));
    assert!(agent.running() && !a.dir().join("subnet.env").exists());
    // Retried without a burst of lines, and SIGTERM answered while it waits.
    let failures = agent
        .log()
        .lines()
        .filter(|l| l.starts_with('W') || l.starts_with('E'))
        .count();
    assert!((1..=6).contains(&failures), "{}", agent.log());
    terminates_at_once(&mut other);
    plane.cp.restart();
    ready(&mut agent, &a);
    let env = std::fs::read_to_string(a.dir().join("subnet.env")).unwrap();
    assert!(env.contains("FLANNEL_SUBNET=10.244.1.1/24"), "{env}");
    terminates_at_once(&mut agent);
}

#[test]
fn kube_apiserver_frozen_past_the_watch_timeout() {
    if !kube_or_skip("flanneld_kube::kube_apiserver_frozen_past_the_watch_timeout") {
        return;
    }
    let (plane, node, mut agent) = faults_setup("3");
    let pid = Pid::from_raw(plane.cp.apiserver_pid().unwrap() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    // Past the 3 s watch and its grace: the agent's watch gives up and tries again, in vain.
    std::thread::sleep(Duration::from_secs(6));
    node.host().sh("ip", &["route", "del", "10.244.2.0/24"]);
    agent.wait_for(
        "the route deleted by hand, back with the apiserver frozen",
        10,
        || route_of(&node).contains("10.244.2.0/24 via 192.168.50.3"),
    );
    kill(pid, Signal::SIGCONT).unwrap();
    // Changes made as it comes back are caught up.
    plane.cp.delete_node("node-b");
    go_host_gw_node(&plane.cp, "node-c", "10.244.3.0/24", "192.168.50.4");
    agent.wait_for("node-b's route gone, node-c's in", 30, || {
        let r = route_of(&node);
        !r.contains("10.244.2.0/24") && r.contains("10.244.3.0/24 via 192.168.50.4")
    });
    // Frozen again: SIGTERM is answered at once all the same.
    kill(pid, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    terminates_at_once(&mut agent);
    kill(pid, Signal::SIGCONT).unwrap();
}

#[test]
fn kube_rbac_binding_removed_then_restored() {
    if !kube_or_skip("flanneld_kube::kube_rbac_binding_removed_then_restored") {
        return;
    }
    let (plane, node, mut agent) = faults_setup("3");
    plane
        .cp
        .kubectl_ok(&["delete", "clusterrolebinding", "flannel"]);
    agent.wait_for("the refusal said", 20, || {
        agent_log(&node).contains("forbidden")
    });
    std::thread::sleep(Duration::from_secs(10));
    let log = agent.log();
    let refusals = log.lines().filter(|l| l.contains("forbidden")).count();
    assert!(refusals <= 2, "said once, not once a try:\n{log}");
    // The data path stays, and is still repaired.
    node.host().sh("ip", &["route", "del", "10.244.2.0/24"]);
    agent.wait_for("the route back without permissions", 10, || {
        route_of(&node).contains("10.244.2.0/24 via 192.168.50.3")
    });
    plane.cp.install_flannel_rbac();
    go_host_gw_node(&plane.cp, "node-c", "10.244.3.0/24", "192.168.50.4");
    agent.wait_for("node-c routed once the binding is back", 30, || {
        route_of(&node).contains("10.244.3.0/24 via 192.168.50.4")
    });
    assert!(
        agent.log().contains("watching nodes again"),
        "{}",
        agent.log()
    );
    terminates_at_once(&mut agent);
}

fn agent_log(node: &conformance::node::Node) -> String {
    std::fs::read_to_string(node.dir().join("flanneld.log")).unwrap_or_default()
}

/// The own Node deleted, then registered again with another podCIDR: the routes and
/// subnet.env stay while it is gone; then the agent takes the new podCIDR (annotating the
/// Node again, subnet.env rewritten). Go keeps the old subnet until it is restarted.
#[test]
fn kube_own_node_recreated_with_another_podcidr() {
    if !kube_or_skip("flanneld_kube::kube_own_node_recreated_with_another_podcidr") {
        return;
    }
    let (plane, node, mut agent) = faults_setup("3");
    let env = || std::fs::read_to_string(node.dir().join("subnet.env")).unwrap_or_default();
    plane.cp.delete_node("node-a");
    agent.wait_for("the deletion said", 20, || {
        agent_log(&node).contains("was deleted")
    });
    assert!(env().contains("FLANNEL_SUBNET=10.244.1.1/24"), "{}", env());
    assert!(route_of(&node).contains("10.244.2.0/24 via 192.168.50.3"));
    plane.cp.create_node("node-a", &["10.244.9.0/24"], &[]);
    agent.wait_for("subnet.env of the new podCIDR", 30, || {
        env().contains("FLANNEL_SUBNET=10.244.9.1/24")
    });
    let n = plane.cp.node_json("node-a");
    assert_eq!(
        n["metadata"]["annotations"]["flannel.alpha.coreos.com/kube-subnet-manager"], "true",
        "{n}"
    );
    assert!(route_of(&node).contains("10.244.2.0/24 via 192.168.50.3"));
    assert!(agent.running(), "{}", agent.log());
    terminates_at_once(&mut agent);
}
