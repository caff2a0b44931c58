//! kube-flannel, ours, on a real Kubernetes 1.20.2 cluster (`conformance::k8s`: apiserver,
//! controller-manager allocating podCIDRs, scheduler, and per node a kubelet on its own
//! containerd), installed as an operator installs flannel: the nodes join with no CNI config,
//! our image (scripts/image.sh) is imported on each, `kubectl apply -f
//! deploy/kube-flannel.yml`; the flannel pod on every node Running and Ready, the nodes Ready;
//! then seed 000's check (kubeasz): a Deployment of three busybox replicas, one per node,
//! each in its node's podCIDR; each node's routes (host-gw: `<podCIDR> via <node IP> dev
//! eth0`); every node pings every pod, every pod pings every pod. A fourth node joins and is
//! routed; a node is deleted and its routes leave the others; the DaemonSet is deleted and
//! the pods keep their network; the teardown leaves nothing. With vxlan (kube-flannel's
//! default) and host-gw (seed 000's).

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use conformance::k8s::{self, K8sCluster, MachineState, POD_NETWORK};
use conformance::kube_flannel::{
    busyboxes, deployment, flannel_ready, image_archive, manifest, ping_all, running, str_of,
};
use conformance::report::Report;
use conformance::{poll, skip};

fn whole_cluster(backend: &str) {
    let test = format!("kube_flannel::{backend}");
    if let Some(why) = k8s::missing() {
        skip(&test, &why);
        return;
    }
    let image = image_archive();
    if !image.is_file() {
        skip(
            &test,
            &format!(
                "{} missing (scripts/image.sh builds it; scripts/test.sh does)",
                image.display()
            ),
        );
        return;
    }
    let before = MachineState::now();
    let mut r = Report::new();
    let mut c = K8sCluster::start(POD_NETWORK);
    r.line(format!(
        "control plane up: kube-apiserver, etcd, kube-controller-manager (--allocate-node-cidrs, --cluster-cidr={POD_NETWORK}), kube-scheduler"
    ));
    c.join_all(&["node1", "node2", "node3"]);
    c.import_image(&image);
    // node1 ran Go's kube-flannel before (iptables mode): its chains, legacy and nft.
    let go_node = c.nodes().next().unwrap().netns();
    for tool in ["iptables-nft", "iptables-legacy"] {
        conformance::go_iptables::write(go_node, tool, POD_NETWORK, "10.244.99.0/24");
    }
    r.line(format!(
        "3 nodes joined (kubelet + containerd each, no CNI config: NotReady); {} imported on each",
        image.display()
    ));

    let t = Instant::now();
    c.apply(&manifest(&c, backend));
    let pods = flannel_ready(&c, 3);
    c.wait_nodes_ready(3, 120);
    r.line(format!(
        "kubectl apply -f deploy/kube-flannel.yml ({backend}): 3 flannel pods Running and Ready, 3 Nodes Ready in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    r.block(c.kubectl(&["get", "pods", "-n", "kube-flannel", "-o", "wide"]));
    // Moved from Go: node1's Go chains were removed by our flanneld (the image's iptables).
    let node1 = c.nodes().next().unwrap();
    for tool in ["iptables-nft", "iptables-legacy"] {
        let after = conformance::go_iptables::saved(node1.netns(), tool);
        assert!(!after.contains("FLANNEL-"), "{tool} on node1:\n{after}");
        assert!(
            after.contains("-A POSTROUTING -j KUBE-POSTROUTING"),
            "{after}"
        );
    }
    let on_node1 = pods
        .iter()
        .find(|p| str_of(p, &["spec", "nodeName"]) == node1.name())
        .map(|p| str_of(p, &["metadata", "name"]).to_owned())
        .unwrap();
    let log = c.kubectl(&[
        "logs",
        "-n",
        "kube-flannel",
        &on_node1,
        "-c",
        "kube-flannel",
    ]);
    assert!(
        log.contains("removed Go flanneld's iptables rules"),
        "{log}"
    );
    r.line("node1 had Go flanneld's iptables chains (iptables-nft and iptables-legacy): our flanneld removed them at start, KUBE-POSTROUTING kept");
    for p in &pods {
        let init: Vec<&str> = p["status"]["initContainerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| str_of(s, &["state", "terminated", "reason"]))
            .collect();
        assert_eq!(init, ["Completed", "Completed"], "init containers: {p}");
    }
    for n in c.nodes() {
        let conf = std::fs::read_to_string(n.conf_dir().join("10-flannel.conflist")).unwrap();
        assert!(conf.contains("\"type\": \"flannel\""), "{conf}");
        for p in ["flannel", "bridge", "host-local", "portmap", "loopback"] {
            let out = n.sh(&format!("/opt/cni/bin/{p} </dev/null 2>&1 || true"));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.starts_with(&format!("CNI {p} plugin v")),
                "{p} on {}: {text}",
                n.name()
            );
        }
    }
    r.line("install-cni-plugin and install-cni completed: our five plugins in /opt/cni/bin, 10-flannel.conflist in /etc/cni/net.d");

    // Seed 000's check.
    c.apply(&deployment(c.busybox_image(), 3).to_string());
    let pods = busyboxes(&c, 3);
    r.line("$ kubectl get pod -o wide");
    r.block(c.kubectl(&["get", "pod", "-o", "wide"]));
    let mut nodes: Vec<&str> = pods.iter().map(|(_, n, _)| n.as_str()).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["node1", "node2", "node3"], "one pod per node");
    for (name, node, ip) in &pods {
        let cidr: ipnetwork::Ipv4Network = c.pod_cidr(node).unwrap().parse().unwrap();
        assert!(
            cidr.contains(ip.parse().unwrap()),
            "{name} on {node}: {ip} outside {cidr}"
        );
    }
    for n in c.nodes() {
        let routes = n.netns().sh("ip", &["route"]);
        r.line(format!("{}$ ip route", n.name()));
        r.block(&routes);
        for m in c.nodes().filter(|m| m.name() != n.name()) {
            let cidr = c.pod_cidr(m.name()).unwrap();
            let want = match backend {
                "host-gw" => format!("{cidr} via {} dev eth0", m.ip()),
                _ => format!("{cidr} via {} dev flannel.1", cidr.trim_end_matches("/24")),
            };
            let onlink = backend != "host-gw";
            assert!(
                routes
                    .lines()
                    .any(|l| l.starts_with(&want) && (!onlink || l.contains("onlink"))),
                "{}: {want} in\n{routes}",
                n.name()
            );
        }
    }
    pings_all_ok(&c, &pods, &mut r);
    r.line("every node pings every pod, every pod pings every pod");

    // A fourth node joins: the DaemonSet runs there, every node routes it.
    let t = Instant::now();
    c.join_all(&["node4"]);
    // (The image is imported before its kubelet starts: the cluster keeps the archives.)
    flannel_ready(&c, 4);
    c.wait_nodes_ready(4, 120);
    c.kubectl(&["scale", "deployment", "busybox", "--replicas=4"]);
    let pods = busyboxes(&c, 4);
    pings_all_ok(&c, &pods, &mut r);
    r.line(format!(
        "node4 joined, its flannel pod Ready and its pod reached by all in {:.1} s",
        t.elapsed().as_secs_f64()
    ));

    // node3 deleted: its routes leave the others.
    let cidr3 = c.pod_cidr("node3").unwrap();
    let left = c.remove("node3");
    assert!(left.is_empty(), "node3's removal left: {left:#?}");
    poll::secs(
        "node3's podCIDR gone from every node's routes",
        30,
        || {
            c.nodes()
                .all(|n| !n.netns().sh("ip", &["route"]).contains(&cidr3))
        },
        || c.diagnostics(),
    );
    r.line(format!(
        "node3 deleted: {cidr3} gone from every other node's routes"
    ));

    // The DaemonSet deleted: flanneld stops, the pods keep their network.
    c.kubectl(&[
        "delete",
        "daemonset",
        "-n",
        "kube-flannel",
        "kube-flannel-ds",
    ]);
    c.wait_pods_gone("kube-flannel", "app=flannel", 120);
    std::thread::sleep(Duration::from_secs(1));
    // The pods running now on the nodes left (node3's may still be being replaced).
    let pods = running(&c, "app=busybox", "node3");
    assert!(pods.len() >= 3, "{pods:?}");
    let (table, failed) = ping_all(&c, &pods);
    r.block(table);
    assert!(
        failed.is_empty(),
        "after the DaemonSet's deletion: {failed:?}"
    );
    r.line("DaemonSet deleted: flannel pods gone, every pod still reaches every pod");

    c.kubectl(&["delete", "deployment", "busybox"]);
    c.wait_pods_gone("default", "app=busybox", 120);
    c.tear_down_checked(&before);
    r.line("torn down: nothing left (processes, mounts, directories, cgroups, namespaces)");
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(format!("cluster-{backend}.txt"));
    let _ = std::fs::write(out, r.text());
}

#[test]
fn kube_flannel_vxlan() {
    whole_cluster("vxlan");
}

#[test]
fn kube_flannel_host_gw() {
    whole_cluster("host-gw");
}

/// Every node and every pod pings every pod; the table goes to the report.
fn pings_all_ok(c: &K8sCluster, pods: &[(String, String, String)], r: &mut Report) {
    let (table, failed) = ping_all(c, pods);
    r.block(table);
    assert!(
        failed.is_empty(),
        "pings failed: {failed:?}\n{}",
        c.diagnostics()
    );
}
