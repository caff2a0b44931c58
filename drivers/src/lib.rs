//! Real components the tests, the demo and the benchmarks start, each on temp dirs and private
//! sockets or ports inside namespaces of the rig, and stopped by PID: etcd ([`etcd`], with
//! the underlay LAN and flanneld processes), containerd with a CRI client ([`containerd`],
//! [`cri`]), podman ([`podman`]), a Kubernetes control plane ([`kube`]) and whole clusters
//! with kubelets ([`k8s`]), kube-flannel on them ([`kube_flannel`]), flanneld's leases as the
//! agent tests see them ([`lease`]), Go flanneld's iptables rules ([`go_iptables`]), async clients inside a namespace
//! ([`in_netns`]), test certificates ([`pki`]), and the
//! whole flannel system on one machine ([`cluster`]).

// Test code: a component that does not start should abort the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The shell function `over SRC DST SCRATCH` of the namespace holders' scripts (containerd's,
/// a kube node's): bind-mounts SRC on DST; a DST missing on the machine is made on an overlay
/// of its nearest existing parent (upper and work dirs under SCRATCH), so that nothing is
/// created outside the test.
macro_rules! over_fn {
    () => {
        r#"over() {
    if [ ! -d "$2" ]; then
        up=$(dirname "$2")
        while [ ! -d "$up" ]; do up=$(dirname "$up"); done
        [ "$up" != / ]
        mkdir -p "$3/upper" "$3/work"
        mount -n -t overlay cni-rs -o "lowerdir=$up,upperdir=$3/upper,workdir=$3/work" "$up"
        mkdir -p "$2"
    fi
    mount -n --bind "$1" "$2"
}
"#
    };
}

pub mod cluster;
pub mod containerd;
pub mod cri;
pub mod etcd;
pub mod go_iptables;
pub mod in_netns;
pub mod k8s;
pub mod kube;
pub mod kube_flannel;
pub mod lease;
pub mod pki;
pub mod podman;
