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

use conformance::k8s::{self, K8sCluster, MachineState, POD_NETWORK, leftovers};
use conformance::report::Report;
use conformance::{poll, skip};
use serde_json::{Value, json};

/// The image scripts/image.sh saves (`CNI_RS_FLANNEL_IMAGE` overrides).
pub fn image_archive() -> PathBuf {
    std::env::var_os("CNI_RS_FLANNEL_IMAGE").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/image/cni-rs-flannel.tar"),
        PathBuf::from,
    )
}

/// deploy/kube-flannel.yml for `backend`, with the API's address given to the agents as
/// kubeasz gives it (there is no kube-proxy to route the `kubernetes` Service here).
fn manifest(c: &K8sCluster, backend: &str) -> String {
    let yaml = include_str!("../../deploy/kube-flannel.yml");
    let (host, port) = c.apiserver_host_port();
    let yaml = yaml.replace(
        "        \"Type\": \"vxlan\"",
        &format!("        \"Type\": \"{backend}\""),
    );
    let env = format!(
        "        env:\n        - name: KUBERNETES_SERVICE_HOST\n          value: \"{host}\"\n        - name: KUBERNETES_SERVICE_PORT\n          value: \"{port}\"\n"
    );
    assert!(yaml.contains("        env:\n"), "the DaemonSet's env");
    yaml.replacen("        env:\n", &env, 1)
}

fn deployment(image: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "busybox", "namespace": "default" },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": "busybox" } },
            "template": {
                "metadata": { "labels": { "app": "busybox" } },
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": { "matchLabels": { "app": "busybox" } },
                    }],
                    "containers": [{
                        "name": "busybox",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "3600"],
                    }],
                },
            },
        },
    })
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .unwrap_or_default()
}

/// (name, node, IP) of the busybox pods.
fn busyboxes(c: &K8sCluster, n: usize) -> Vec<(String, String, String)> {
    c.wait_pods_running("default", "app=busybox", n, 180)
        .iter()
        .map(|p| {
            (
                str_of(p, &["metadata", "name"]).to_owned(),
                str_of(p, &["spec", "nodeName"]).to_owned(),
                str_of(p, &["status", "podIP"]).to_owned(),
            )
        })
        .collect()
}

/// Every node pings every pod, every pod pings every other pod; the failures.
fn ping_all(c: &K8sCluster, pods: &[(String, String, String)], r: &mut Report) -> Vec<String> {
    let mut failed = Vec::new();
    let mut lines = Vec::new();
    for n in c.nodes() {
        let mut line = format!("{:<6}", n.name());
        for (_, _, ip) in pods {
            let ok = n
                .netns()
                .run("ping", &["-c1", "-W2", "-q", ip])
                .status
                .success();
            line += &format!(" {ip} {}", if ok { "ok" } else { "--" });
            if !ok {
                failed.push(format!("{} → {ip}", n.name()));
            }
        }
        lines.push(line);
    }
    for (from, node, _) in pods {
        let mut line = format!("{from} ({node})");
        for (to, _, ip) in pods {
            if to == from {
                continue;
            }
            let out = c.exec("default", from, &["ping", "-c1", "-W2", ip]);
            let ok = out.status.success();
            line += &format!(" {ip} {}", if ok { "ok" } else { "--" });
            if !ok {
                failed.push(format!("{from} → {ip}"));
            }
        }
        lines.push(line);
    }
    r.block(lines.join("\n"));
    failed
}

/// The flannel pods Running and Ready, one per Node.
fn flannel_ready(c: &K8sCluster, nodes: usize) -> Vec<Value> {
    let ready = |p: &Value| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|cond| cond["type"] == "Ready" && cond["status"] == "True")
    };
    let mut pods = Vec::new();
    poll::secs(
        &format!("{nodes} flannel pods Running and Ready"),
        180,
        || {
            pods = c.pods("kube-flannel", "app=flannel");
            pods.len() == nodes && pods.iter().all(ready)
        },
        || c.diagnostics(),
    );
    pods
}

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
    let failed = ping_all(&c, &pods, &mut r);
    assert!(
        failed.is_empty(),
        "pings failed: {failed:?}\n{}",
        c.diagnostics()
    );
    r.line("every node pings every pod, every pod pings every pod");

    // A fourth node joins: the DaemonSet runs there, every node routes it.
    let t = Instant::now();
    c.join_all(&["node4"]);
    // (The image is imported before its kubelet starts: the cluster keeps the archives.)
    flannel_ready(&c, 4);
    c.wait_nodes_ready(4, 120);
    c.kubectl(&["scale", "deployment", "busybox", "--replicas=4"]);
    let pods = busyboxes(&c, 4);
    let failed = ping_all(&c, &pods, &mut r);
    assert!(
        failed.is_empty(),
        "pings failed: {failed:?}\n{}",
        c.diagnostics()
    );
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
    let pods: Vec<(String, String, String)> = c
        .pods("default", "app=busybox")
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| {
            (
                str_of(p, &["metadata", "name"]).to_owned(),
                str_of(p, &["spec", "nodeName"]).to_owned(),
                str_of(p, &["status", "podIP"]).to_owned(),
            )
        })
        .filter(|(_, node, _)| node != "node3")
        .collect();
    assert!(pods.len() >= 3, "{pods:?}");
    let failed = ping_all(&c, &pods, &mut r);
    assert!(
        failed.is_empty(),
        "after the DaemonSet's deletion: {failed:?}"
    );
    r.line("DaemonSet deleted: flannel pods gone, every pod still reaches every pod");

    c.kubectl(&["delete", "deployment", "busybox"]);
    c.wait_pods_gone("default", "app=busybox", 120);
    let pids = c.pids();
    let dirs = c.dirs();
    let cgroups = c.cgroups();
    let left = c.shut_down();
    drop(c);
    assert!(left.is_empty(), "teardown left: {left:#?}");
    let left = leftovers(&pids, &dirs, &cgroups);
    assert!(left.is_empty(), "left on the machine: {left:#?}");
    assert_eq!(MachineState::now(), before, "the machine's state changed");
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
