//! The real-cluster rig (`conformance::k8s`): Kubernetes 1.20.2 (apiserver, etcd,
//! controller-manager, scheduler) and three nodes, each its own containerd 1.6 and kubelet in
//! a private network + mount namespace. The Nodes register and get distinct podCIDRs from the
//! controller-manager; they stay NotReady ("cni plugin not initialized") until a conflist of
//! our bridge + host-local is in each node's conf dir, then become Ready; a Deployment of
//! three busybox replicas spreads over the nodes, each pod Running with an address of its
//! node's podCIDR; `kubectl exec` into one pod pings a pod on the same node; a hostNetwork pod
//! with kube-flannel's hostPath volumes sees the node's own `/run/flannel`, `/etc/cni/net.d`,
//! `/opt/cni/bin` and `/run/xtables.lock` (the paths resolve in the node's mount namespace);
//! the Deployment's deletion releases the addresses; a node removed while the others run
//! leaves nothing; the teardown leaves no process, mount, directory, cgroup, `/run/netns`
//! entry or kernel tunable changed.
//!
//! Run: `cargo build --workspace --bins && cargo test -p conformance --test k8s_cluster --
//! --nocapture` (as root; `scripts/kube-build.sh` first).

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use conformance::k8s::{self, K8sCluster, MachineState, POD_NETWORK, leftovers};
use conformance::kube_flannel::deployment;
use conformance::report::Report;
use conformance::skip;
use ipnetwork::Ipv4Network;
use serde_json::{Value, json};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// One cluster at a time: two on two CPUs slow each other past the waits.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The conflist the test installs on a node: our bridge with host-local on its podCIDR.
fn conflist(pod_cidr: &str) -> Value {
    json!({
        "cniVersion": "0.3.1",
        "name": "test",
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": pod_cidr }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
            },
        }],
    })
}

/// A pod pinned to `node`: a plain one, or with kube-flannel's host network and hostPath
/// volumes (mounted under `/host`).
fn pod(name: &str, node: &str, image: &str, host: bool) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default", "labels": { "app": name } },
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "busybox",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo $HOSTNAME up; exec sleep 3600"],
            }],
        },
    });
    if host {
        let volumes = [
            ("run", "/run/flannel", "DirectoryOrCreate"),
            ("cni-plugin", "/opt/cni/bin", "DirectoryOrCreate"),
            ("cni", "/etc/cni/net.d", "DirectoryOrCreate"),
            ("xtables-lock", "/run/xtables.lock", "FileOrCreate"),
        ];
        pod["spec"]["hostNetwork"] = json!(true);
        pod["spec"]["volumes"] = volumes
            .iter()
            .map(|(n, p, t)| json!({ "name": n, "hostPath": { "path": p, "type": t } }))
            .collect();
        pod["spec"]["containers"][0]["volumeMounts"] = volumes
            .iter()
            .map(|(n, _, _)| json!({ "name": n, "mountPath": format!("/host/{n}") }))
            .collect();
    }
    pod
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .unwrap_or_default()
}

/// `kubectl exec` that must succeed; its stdout.
fn exec_ok(c: &K8sCluster, pod: &str, cmd: &[&str]) -> String {
    let out = c.exec("default", pod, cmd);
    assert!(
        out.status.success(),
        "kubectl exec {pod} -- {cmd:?}: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.diagnostics()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn three_nodes_deployment_and_teardown() {
    let test = "k8s_cluster::three_nodes_deployment_and_teardown";
    if let Some(why) = k8s::missing() {
        skip(test, &why);
        return;
    }
    let _serial = serial();
    let before = MachineState::now();
    let mut r = Report::new();
    let t = Instant::now();
    let mut c = K8sCluster::start(POD_NETWORK);
    r.line(format!(
        "control plane up in {:.1} s: kube-apiserver, etcd, kube-controller-manager \
         (--cluster-cidr={POD_NETWORK}), kube-scheduler",
        t.elapsed().as_secs_f64()
    ));

    let t = Instant::now();
    let joined = c.join_all(&NODES);
    r.line(format!(
        "3 nodes joined in {:.1} s (kubelets registered, podCIDRs allocated, service \
         account default has its token)",
        t.elapsed().as_secs_f64()
    ));
    for (i, name) in joined.into_iter().zip(NODES) {
        let n = c.node(i);
        assert_eq!(n.name(), name);
        r.line(format!(
            "{name}: {}, podCIDR {}",
            n.ip(),
            c.pod_cidr(name).unwrap()
        ));
    }

    // Distinct podCIDRs, all /24s of the pod network.
    let network: Ipv4Network = POD_NETWORK.parse().unwrap();
    let mut cidrs: Vec<Ipv4Network> = NODES
        .iter()
        .map(|n| c.pod_cidr(n).unwrap().parse().unwrap())
        .collect();
    for cidr in &cidrs {
        assert_eq!(cidr.prefix(), 24, "{cidr}");
        assert!(network.contains(cidr.network()), "{cidr} in {network}");
    }
    cidrs.sort();
    cidrs.dedup();
    assert_eq!(cidrs.len(), 3, "distinct podCIDRs");

    // NotReady until a conflist is there, for the reason kube-flannel's install-cni ends.
    let not_ready_reason = |c: &K8sCluster| {
        c.node_objects().iter().all(|n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|cond| {
                    cond["type"] == "Ready"
                        && cond["status"] == "False"
                        && str_of(cond, &["message"]).contains("cni plugin not initialized")
                })
        })
    };
    conformance::poll::secs(
        "every Node NotReady: cni plugin not initialized",
        60,
        || not_ready_reason(&c),
        || c.diagnostics(),
    );
    r.line("every Node NotReady (\"cni plugin not initialized\"), conf dirs empty");
    r.block(c.nodes_wide());

    let t = Instant::now();
    for n in c.nodes() {
        n.write_conflist(
            "10-test.conflist",
            &conflist(&c.pod_cidr(n.name()).unwrap()),
        );
    }
    c.wait_nodes_ready(3, 90);
    r.line(format!(
        "bridge + host-local conflists written: 3 Nodes Ready in {:.1} s",
        t.elapsed().as_secs_f64()
    ));

    let t = Instant::now();
    c.apply(&deployment(c.busybox_image(), 3).to_string());
    let pods = c.wait_pods_running("default", "app=busybox", 3, 120);
    r.line(format!(
        "Deployment of 3 busybox replicas Running in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    r.block(c.pods_wide());
    let mut on_nodes: Vec<&str> = Vec::new();
    for p in &pods {
        let node = str_of(p, &["spec", "nodeName"]);
        let ip: Ipv4Addr = str_of(p, &["status", "podIP"]).parse().unwrap();
        let cidr: Ipv4Network = c.pod_cidr(node).unwrap().parse().unwrap();
        assert!(
            cidr.contains(ip),
            "{} on {node}: {ip} not in {cidr}",
            str_of(p, &["metadata", "name"])
        );
        on_nodes.push(node);
    }
    on_nodes.sort_unstable();
    assert_eq!(on_nodes, NODES, "one replica per node");

    // A second pod on the first replica's node, pinged from that replica.
    let first = &pods[0];
    let first_name = str_of(first, &["metadata", "name"]).to_owned();
    let node = str_of(first, &["spec", "nodeName"]).to_owned();
    c.apply(&pod("buddy", &node, c.busybox_image(), false).to_string());
    let buddy = c.wait_pods_running("default", "app=buddy", 1, 60);
    let buddy_ip = str_of(&buddy[0], &["status", "podIP"]).to_owned();
    let out = exec_ok(&c, &first_name, &["ping", "-c1", "-W5", &buddy_ip]);
    assert!(out.contains("1 packets received"), "{out}");
    r.line(format!(
        "kubectl exec {first_name} -- ping -c1 {buddy_ip} (buddy, same node {node}): 1 packets received"
    ));
    let k = c.node_named(&node);
    let gw = k.netns().run("ping", &["-c1", "-W5", &buddy_ip]);
    assert!(gw.status.success(), "{node} to its pod {buddy_ip}");

    // kube-flannel's hostPath volumes resolve in the node's mount namespace.
    c.apply(&pod("probe", "node1", c.busybox_image(), true).to_string());
    c.wait_pods_running("default", "app=probe", 1, 60);
    let n1 = c.node_named("node1");
    let conf = exec_ok(&c, "probe", &["cat", "/host/cni/10-test.conflist"]);
    assert_eq!(
        serde_json::from_str::<Value>(&conf).unwrap(),
        conflist(&c.pod_cidr("node1").unwrap()),
        "/etc/cni/net.d is node1's conf dir"
    );
    let bins = exec_ok(&c, "probe", &["ls", "/host/cni-plugin"]);
    for p in k8s::NODE_PLUGINS {
        assert!(bins.lines().any(|l| l == *p), "{p} in /opt/cni/bin: {bins}");
    }
    exec_ok(
        &c,
        "probe",
        &["sh", "-c", "echo from-probe > /host/run/probe"],
    );
    assert_eq!(
        std::fs::read_to_string(n1.run_flannel_dir().join("probe")).unwrap(),
        "from-probe\n",
        "/run/flannel is node1's run_flannel_dir"
    );
    let lock = n1.sh("test -f /run/xtables.lock");
    assert!(lock.status.success(), "/run/xtables.lock in node1's /run");
    let addr = exec_ok(&c, "probe", &["ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains(n1.ip()), "host network is node1's: {addr}");
    let logs = c.kubectl(&["logs", "probe"]);
    assert_eq!(
        logs, "node1 up\n",
        "kubectl logs (the host network's hostname is the node's)"
    );
    r.line(
        "hostNetwork pod with /run/flannel, /opt/cni/bin, /etc/cni/net.d, /run/xtables.lock: \
         node1's own dirs and eth0",
    );

    let rss = c.rss_kib();
    r.block(
        rss.iter()
            .map(|(n, kib)| format!("RSS {n}: {:.1} MiB", *kib as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join("\n"),
    );

    let t = Instant::now();
    c.kubectl(&["delete", "deployment", "busybox"]);
    c.kubectl(&["delete", "pod", "buddy", "probe", "--wait=false"]);
    // Every pod's sandbox stopped (its CNI DEL done) and every address released: only
    // host-local's lock and last_reserved_ip files remain. The pods' objects go later (up to
    // a minute: see K8sCluster::wait_pods_gone), the teardown does not wait for them.
    c.wait_tasks_stopped(60);
    for n in c.nodes() {
        let leases = n.var_lib_dir().join("cni/networks/test");
        conformance::poll::secs(
            &format!("{}'s leases released", n.name()),
            30,
            || {
                std::fs::read_dir(&leases)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .all(|e| e.file_name().to_string_lossy().parse::<Ipv4Addr>().is_err())
            },
            || format!("{}", leases.display()),
        );
    }
    r.line(format!(
        "Deployment and pods deleted: every pod stopped, every lease released in {:.1} s",
        t.elapsed().as_secs_f64()
    ));

    // One node removed while the others run: its processes, cgroup, namespaces (its LAN
    // port goes with its network namespace), directory and Node object go.
    let t = Instant::now();
    let pids3 = c.node_named("node3").processes();
    let dir3 = c.node_named("node3").dir().to_owned();
    let cgroup3 = c.node_named("node3").cgroup().to_owned();
    let left = c.remove("node3");
    assert!(left.is_empty(), "node3's removal left: {left:#?}");
    let left = leftovers(&pids3, &[dir3], &[cgroup3]);
    assert!(left.is_empty(), "node3 left: {left:#?}");
    conformance::poll::secs(
        "node3's LAN port gone with its network namespace",
        10,
        || !c.lan().ns().sh("ip", &["-o", "link"]).contains("lan3@"),
        || c.lan().ns().sh("ip", &["-o", "link"]),
    );
    assert_eq!(
        c.readiness().keys().cloned().collect::<Vec<_>>(),
        ["node1", "node2"],
        "Node node3 deleted"
    );
    r.line(format!(
        "node3 removed in {:.1} s: its processes, cgroup, namespaces, directory and Node gone",
        t.elapsed().as_secs_f64()
    ));

    let t = Instant::now();
    c.tear_down_checked(&before);
    r.line(format!(
        "teardown in {:.1} s: no process, mount, directory or cgroup left; /run/netns, \
         default paths and kernel tunables as before",
        t.elapsed().as_secs_f64()
    ));
}

/// A test that fails half-way (here a panic with pods running) still leaves nothing: the
/// cluster's drop stops every process, removes every cgroup, namespace and directory.
#[test]
fn a_failure_half_way_leaves_nothing() {
    let test = "k8s_cluster::a_failure_half_way_leaves_nothing";
    if let Some(why) = k8s::missing() {
        skip(test, &why);
        return;
    }
    let _serial = serial();
    let before = MachineState::now();
    let seen = Mutex::new((Vec::new(), Vec::new(), Vec::new()));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut c = K8sCluster::start(POD_NETWORK);
        c.join("solo");
        let n = c.node(0);
        n.write_conflist("10-test.conflist", &conflist(&c.pod_cidr("solo").unwrap()));
        c.wait_nodes_ready(1, 90);
        c.apply(&deployment(c.busybox_image(), 2).to_string());
        c.wait_pods_running("default", "app=busybox", 2, 120);
        *seen.lock().unwrap() = (c.pids(), c.dirs(), c.cgroups());
        panic!("deliberate: a test failing with two pods running (the teardown is checked)");
    }));
    assert!(outcome.is_err(), "the closure panics");
    let (pids, dirs, cgroups) = seen.into_inner().unwrap();
    assert!(!pids.is_empty() && !dirs.is_empty() && !cgroups.is_empty());
    let left = leftovers(&pids, &dirs, &cgroups);
    assert!(left.is_empty(), "left on the machine: {left:#?}");
    assert_eq!(MachineState::now(), before, "the machine's state changed");
}
