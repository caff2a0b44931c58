//! `scripts/demo.sh --kube`: seed 000's check of a flannel install, on the kube path. A real
//! Kubernetes 1.20.2 control plane (kube-apiserver on its etcd, TLS, RBAC with kube-flannel's
//! role), three nodes registered with podCIDRs and running our flanneld with
//! `--kube-subnet-mgr` (node1 in-cluster as kube-flannel's DaemonSet runs it, the others by
//! kubeconfig), `kubectl get nodes` with the podCIDRs and flannel's annotations, each node's
//! routes, pods on every node pinged from every node and every pod, and the teardown.

use std::time::Instant;

use drivers::cluster::{Backend, Cluster};
use drivers::kube;

use super::{indent, step, teardown};

/// The kubectl columns seed 000 looks at, and flannel's annotations.
const COLUMNS: &str = "custom-columns=NAME:.metadata.name,\
PODCIDR:.spec.podCIDR,\
PUBLIC-IP:.metadata.annotations.flannel\\.alpha\\.coreos\\.com/public-ip,\
BACKEND:.metadata.annotations.flannel\\.alpha\\.coreos\\.com/backend-type,\
MANAGED:.metadata.annotations.flannel\\.alpha\\.coreos\\.com/kube-subnet-manager,\
NETWORK-UNAVAILABLE:.status.conditions[?(@.type==\"NetworkUnavailable\")].status";

/// The demo with `backend`.
pub fn run(backend: Backend) {
    let start = Instant::now();
    if !kube::available() {
        panic!(
            "{} (scripts/demo.sh --kube builds it first)",
            kube::missing()
        );
    }
    step(&format!(
        "Kubernetes {}: kube-apiserver on its etcd in a private LAN namespace (192.168.50.1:6443, TLS, Node,RBAC), kube-flannel's RBAC",
        kube::VERSION
    ));
    let mut c = Cluster::start_kube(backend);
    println!(
        "built from Debian's kubernetes source package with Go 1.15 ({}), the role: pods get; nodes get, list, watch; nodes/status patch",
        kube::bin_dir().display()
    );

    step(&format!(
        "three nodes: each Node registered with a podCIDR, flanneld --kube-subnet-mgr with {}",
        backend.name()
    ));
    c.join_in_cluster().unwrap();
    c.join().unwrap();
    c.join().unwrap();
    for m in &c.members {
        println!(
            "{} at {}: flanneld running, subnet {}",
            m.name, m.ip, m.subnet
        );
    }
    println!(
        "node1 runs as kube-flannel's DaemonSet runs it (in-cluster: service account files, POD_NAME):"
    );
    let args = c.agent_args(&c.members[0].node, &c.members[0].ip);
    println!("  flanneld {}", args.join(" \\\n           "));
    c.converge(20).unwrap();

    step("$ kubectl get nodes");
    let k = &c.kube().cp;
    indent(&k.kubectl_ok(&["get", "nodes", "-o", "wide"]));
    println!(
        "(status Unknown: no kubelet runs here; the Nodes are registered by hand with their \
         podCIDRs, which is all flannel needs)"
    );
    println!("$ kubectl get nodes -o custom-columns=...");
    indent(&k.kubectl_ok(&["get", "nodes", "-o", COLUMNS]));
    println!("$ kubectl get node node1 -o yaml   (its annotations and conditions)");
    indent(&yaml_blocks(
        &k.kubectl_ok(&["get", "node", "node1", "-o", "yaml"]),
        &["  annotations:", "  conditions:"],
    ));

    step("each node's routes: <podCIDR> via <node IP> dev eth0 for every other node");
    for m in &c.members {
        println!("{}$ ip route", m.name);
        indent(&m.routes());
    }

    step("two pods per node (our flannel → bridge → host-local, kube-flannel's conflist)");
    for m in 0..3 {
        let p = c.add_pod(m, None);
        let q = c.add_pod(m, None);
        let member = &c.members[m];
        println!(
            "{}: {}, {}: {}",
            member.pod_label(p),
            member.pods[p].address(true),
            member.pod_label(q),
            member.pods[q].address(true)
        );
    }

    step("every node pings every pod");
    let mut answered = 0;
    let mut tried = 0;
    for from in &c.members {
        let mut line = format!("{:<6}", from.name);
        for to in &c.members {
            for pod in &to.pods {
                let ok = from
                    .node
                    .host()
                    .run("ping", &["-c1", "-W2", "-q", &pod.ip(true)])
                    .status
                    .success();
                tried += 1;
                answered += usize::from(ok);
                line += &format!(" {} {}", pod.ip(true), if ok { "ok" } else { "--" });
            }
        }
        println!("{line}");
    }
    println!("answered: {answered} of {tried}");
    assert_eq!(answered, tried, "a node could not reach a pod");

    step("every pod pings every other pod");
    let matrix = c.ping_matrix(None);
    indent(&matrix.to_string());
    assert!(matrix.failures().is_empty(), "{:?}", matrix.failures());

    teardown(c, "the control plane", start);
}

/// The blocks of a YAML text that start with one of `heads` (a key line), each up to the next
/// line indented as little as its head.
fn yaml_blocks(yaml: &str, heads: &[&str]) -> String {
    let mut out = Vec::new();
    let mut inside: Option<usize> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(depth) = inside {
            if indent > depth || line.trim_start().starts_with("- ") && indent == depth {
                out.push(line);
                continue;
            }
            inside = None;
        }
        if heads.contains(&line) {
            inside = Some(indent);
            out.push(line);
        }
    }
    out.join("\n")
}
