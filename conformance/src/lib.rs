//! The binary-level tests (`tests/`): the built plugins and flanneld run as runtimes and nodes
//! run them. The rig, the real components and the benchmark runner are crates of their own
//! (`rig`, `drivers`, `bench`); their modules are named here as the tests name them.

pub use ::bench;
pub use drivers::{
    cluster, containerd, cri, etcd, go_iptables, in_netns, k8s, kube, kube_flannel, lease, podman,
};
pub use rig::{
    Chain, Node, Outcome, OutcomeExt, PluginCall, Pod, SKIP_LOG, TestNetns, chain, flannel, netns,
    node, normalize, plugin, plugin_dir, pod, poll, reaper, report, skip, traffic,
};
