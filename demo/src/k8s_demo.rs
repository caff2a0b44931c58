//! `scripts/demo.sh --cluster`: kube-flannel, ours, installed on a real Kubernetes 1.20.2
//! cluster built on this machine, and checked as seed 000 (kubeasz) checks a flannel install:
//! the control plane (kube-apiserver, etcd, kube-controller-manager allocating each node's
//! podCIDR, kube-scheduler), three nodes each with its own containerd and kubelet joining
//! with no CNI config, our image imported, `kubectl apply -f deploy/kube-flannel.yml`, the
//! flannel pods and the nodes Ready, a busybox Deployment with one pod per node in its
//! podCIDR, node1's routes, every node and every pod pinging every pod, and the teardown.

use std::time::Instant;

use drivers::k8s::{self, K8sCluster, MachineState, POD_NETWORK};
use drivers::kube;
use drivers::kube_flannel::{
    busyboxes, deployment, flannel_ready, image_archive, manifest, ping_all,
};

use super::{indent, say, step};

/// The demo with `backend` (`vxlan`, kube-flannel's default, or `host-gw`, seed 000's).
pub fn run(backend: &str) {
    let start = Instant::now();
    if let Some(why) = k8s::missing() {
        panic!("{why} (scripts/demo.sh --cluster installs and builds what it needs first)");
    }
    let image = image_archive();
    assert!(
        image.is_file(),
        "{} missing: scripts/image.sh builds it",
        image.display()
    );
    let before = MachineState::now();
    step(&format!(
        "Kubernetes {}: kube-apiserver on its etcd, kube-controller-manager (allocates the nodes' podCIDRs in {POD_NETWORK}), kube-scheduler, in a private LAN namespace",
        kube::VERSION
    ));
    let mut c = K8sCluster::start(POD_NETWORK);
    println!(
        "built once from Debian's kubernetes source package with Go 1.15: {}",
        kube::bin_dir().display()
    );

    step(
        "three nodes join: each its own network and mount namespace, containerd 1.6 and kubelet; no CNI config yet",
    );
    c.join_all(&["node1", "node2", "node3"]);
    println!("$ kubectl get nodes -o wide");
    indent(&c.kubectl(&["get", "nodes", "-o", "wide"]));

    step(
        "our image (scripts/image.sh: static flanneld, the five CNI plugins, install-conf; FROM scratch) imported on every node",
    );
    c.import_image(&image);
    println!(
        "{} ({} bytes)",
        image.display(),
        std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0)
    );

    step(&format!(
        "$ kubectl apply -f deploy/kube-flannel.yml   (Backend {backend})"
    ));
    let t = Instant::now();
    indent(&c.apply(&manifest(&c, backend)));
    flannel_ready(&c, 3);
    c.wait_nodes_ready(3, 120);
    println!(
        "flannel pods Running and Ready, nodes Ready, in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!("$ kubectl -n kube-flannel get pods -o wide");
    indent(&c.kubectl(&["-n", "kube-flannel", "get", "pods", "-o", "wide"]));
    println!("$ kubectl get nodes");
    indent(&c.kubectl(&["get", "nodes"]));

    step("a busybox Deployment, three replicas spread over the nodes");
    c.apply(&deployment(c.busybox_image(), 3).to_string());
    let pods = busyboxes(&c, 3);
    println!("$ kubectl get pod -o wide");
    indent(&c.kubectl(&["get", "pod", "-o", "wide"]));

    step("node1's routes: one per other node's podCIDR");
    println!("node1$ ip route");
    indent(&c.node_named("node1").netns().sh("ip", &["route"]));

    step("every node pings every pod, every pod pings every other pod");
    let (table, failed) = ping_all(&c, &pods);
    indent(&table);
    assert!(failed.is_empty(), "no answer: {failed:?}");
    println!("answered: all");

    step("teardown: the cluster stopped (kubelets, pods, containerd, control plane), nothing left");
    c.kubectl(&["delete", "deployment", "busybox"]);
    c.tear_down_checked(&before);
    println!("no process, mount, directory, cgroup or namespace left");
    say(&format!("done in {:.1} s", start.elapsed().as_secs_f64()));
}
