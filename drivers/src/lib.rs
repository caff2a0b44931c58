//! Real components the tests, the demo and the benchmarks start, each on temp dirs and private
//! sockets or ports inside namespaces of the rig, and stopped by PID: etcd ([`etcd`], with
//! the underlay LAN and flanneld processes), containerd with a CRI client ([`containerd`],
//! [`cri`]), podman ([`podman`]), a Kubernetes control plane ([`kube`]) and whole clusters
//! with kubelets ([`k8s`]), kube-flannel on them ([`kube_flannel`]), flanneld's leases as the
//! agent tests see them ([`lease`]), Go flanneld's iptables rules ([`go_iptables`]), async clients inside a namespace
//! ([`in_netns`]), and the
//! whole flannel system on one machine ([`cluster`]).

// Test code: a component that does not start should abort the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
pub mod podman;
