//! The cluster's kube side: the network config in each node's `net-conf.json` (as
//! kube-flannel's ConfigMap mounts it), leases as Nodes (podCIDR + flannel's annotations) on
//! a real kube-apiserver, agents with kube-flannel's flags reaching the API as the `flannel`
//! service account (kube-flannel's ClusterRole and nothing more), by kubeconfig or in-cluster.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::{Backend, Cluster, Control, LeaseEntry, VNI};
use crate::etcd::{Agent, LAN_IP, Lan, flanneld_path};
use crate::kube::{ControlPlane, FLANNEL_ACCOUNT, FLANNEL_NAMESPACE, PORT};
use rig::node::Node;

/// flannel's annotation prefix (Go's default).
pub const ANNOTATION: &str = "flannel.alpha.coreos.com/";

/// A kube cluster's control plane and the agents' credentials.
#[derive(Debug)]
pub struct KubeControl {
    /// The apiserver and its etcd.
    pub cp: ControlPlane,
    /// A token of the `flannel` service account.
    token: String,
    /// A kubeconfig with that token.
    kubeconfig: PathBuf,
    /// `net-conf.json`.
    net_conf: String,
}

/// The podCIDR of our node `n` (1, 2, ...); Go nodes have `go_subnet(k)`.
pub fn pod_cidr(n: usize) -> String {
    format!("10.20.{n}.0/24")
}

impl KubeControl {
    fn start(lan: &Lan, backend: Backend) -> KubeControl {
        let cp = ControlPlane::start(lan);
        cp.install_flannel_rbac();
        let token = cp.flannel_token();
        let kubeconfig = cp.dir().join("flannel.kubeconfig");
        cp.kubeconfig(&token, &kubeconfig);
        KubeControl {
            cp,
            token,
            kubeconfig,
            net_conf: backend.network_config(),
        }
    }

    /// kube-flannel's container args (`--ip-masq --kube-subnet-mgr`, healthz on 8081), and
    /// the node's interface, net-conf.json and subnet file.
    pub fn agent_args(&self, node: &Node) -> Vec<String> {
        let p = |p: PathBuf| p.display().to_string();
        vec![
            "--ip-masq".to_owned(),
            "--kube-subnet-mgr".to_owned(),
            "--healthz-port=8081".to_owned(),
            "--iface=eth0".to_owned(),
            format!("--net-config-path={}", p(node.dir().join("net-conf.json"))),
            format!("--subnet-file={}", p(node.dir().join("subnet.env"))),
        ]
    }

    /// Registers Node `name` with its podCIDR and starts the agent on it: by kubeconfig
    /// with `NODE_NAME`, or in-cluster as kube-flannel's DaemonSet runs it.
    pub fn start_agent(
        &self,
        node: &Node,
        name: &str,
        n: usize,
        args: &[String],
        in_cluster: bool,
    ) -> Agent {
        fs::write(node.dir().join("net-conf.json"), &self.net_conf).unwrap();
        self.cp.create_node(name, &[&pod_cidr(n)], &[]);
        let log = node.dir().join("flanneld.log");
        if !in_cluster {
            // A /run of its own, as in-cluster: a wireguard agent keeps its key and control
            // socket there (the machine's /run is not touched).
            let mut cmd = super::wireguard::with_own_run(node, flanneld_path());
            cmd.args(args)
                .arg(format!("--kubeconfig-file={}", self.kubeconfig.display()))
                .env("NODE_NAME", name);
            return Agent::spawn(cmd, &log);
        }
        let pod = format!("kube-flannel-ds-{name}");
        self.cp.kubectl_stdin(
            &["create", "-f", "-"],
            &json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "name": pod, "namespace": FLANNEL_NAMESPACE },
                "spec": {
                    "nodeName": name,
                    "serviceAccountName": FLANNEL_ACCOUNT,
                    "automountServiceAccountToken": false,
                    "containers": [{ "name": "kube-flannel", "image": "cni-rs/flannel:test" }],
                },
            })
            .to_string(),
        );
        let sa = self.cp.service_account_dir(&self.token);
        // The service account's files where every in-cluster client looks, in a mount
        // namespace of the agent's own (the node's own /run over /run: nothing on the
        // machine's; `wg show` of the test reads the same one).
        let mut cmd = node.host().command("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "mount --bind \"$1\" /run && \
                 mkdir -p /run/secrets/kubernetes.io/serviceaccount && \
                 mount --bind \"$2\" /run/secrets/kubernetes.io/serviceaccount && \
                 shift 2 && exec \"$@\"",
            )
            .arg("sh")
            .arg(super::wireguard::run_dir(node))
            .arg(&sa)
            .arg(flanneld_path())
            .args(args)
            .envs([
                ("KUBERNETES_SERVICE_HOST", LAN_IP.to_owned()),
                ("KUBERNETES_SERVICE_PORT", PORT.to_string()),
                ("POD_NAME", pod),
                ("POD_NAMESPACE", FLANNEL_NAMESPACE.to_owned()),
            ]);
        Agent::spawn(cmd, &log)
    }

    /// A node that Go flanneld runs, as it registers itself: its Node with the podCIDR and
    /// Go's annotations, byte for byte.
    pub fn register_go_node(
        &self,
        name: &str,
        subnet: &str,
        ip: &str,
        mac: &str,
        backend: Backend,
    ) {
        let ann = go_annotations(backend, ip, mac);
        let ann: Vec<(&str, &str)> = ann.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.cp.create_node(name, &[subnet], &ann);
    }

    /// Every managed Node as a lease: name, podCIDR, flannel's annotations.
    pub fn leases(&self) -> Vec<LeaseEntry> {
        let list: Value =
            serde_json::from_str(&self.cp.kubectl_ok(&["get", "nodes", "-o", "json"])).unwrap();
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| {
                let ann = flannel_annotations(n);
                if ann.get("kube-subnet-manager").map(String::as_str) != Some("true") {
                    return None;
                }
                let data = ann
                    .get("backend-data")
                    .and_then(|d| serde_json::from_str::<Value>(d).ok())
                    .unwrap_or_default();
                let field = |f: &str| data[f].as_str().map(str::to_owned);
                Some(LeaseEntry {
                    key: n["metadata"]["name"].as_str()?.to_owned(),
                    subnet: n["spec"]["podCIDR"].as_str()?.to_owned(),
                    value: serde_json::to_string(&ann).unwrap(),
                    public_ip: ann.get("public-ip").cloned().unwrap_or_default(),
                    vtep_mac: field("VtepMAC"),
                    public_key: field("PublicKey"),
                })
            })
            .collect()
    }

    /// The PIDs of the control plane.
    pub fn pids(&self) -> Vec<u32> {
        self.cp.pids()
    }
}

/// A Node's annotations under [`ANNOTATION`], without the prefix.
pub fn flannel_annotations(node: &Value) -> BTreeMap<String, String> {
    node["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            Some((
                k.strip_prefix(ANNOTATION)?.to_owned(),
                v.as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The annotations Go flanneld writes on its Node (`pkg/subnet/kube/kube.go`), full names.
pub fn go_annotations(backend: Backend, ip: &str, mac: &str) -> Vec<(String, String)> {
    let data = match backend {
        Backend::HostGw => "null".to_owned(),
        Backend::Vxlan => format!(r#"{{"VNI":{VNI},"VtepMAC":"{mac}"}}"#),
        // `mac` is the node's WireGuard public key here.
        Backend::Wireguard => format!(
            r#"{{"PublicKey":"{mac}","Port":{}}}"#,
            super::wireguard::WG_PORT
        ),
    };
    [
        ("backend-data", data),
        ("backend-type", backend.name().to_owned()),
        ("kube-subnet-manager", "true".to_owned()),
        ("public-ip", ip.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{ANNOTATION}{k}"), v))
    .collect()
}

impl Cluster {
    /// A LAN with a Kubernetes control plane (kube-apiserver on its etcd, kube-flannel's
    /// RBAC, a token of its service account); no nodes yet. The agents run with
    /// `--kube-subnet-mgr` and the network config for `backend` in `net-conf.json`.
    pub fn start_kube(backend: Backend) -> Cluster {
        let lan = Lan::new();
        let control = Control::Kube(KubeControl::start(&lan, backend));
        Cluster {
            members: Vec::new(),
            internet: None,
            control,
            lan,
            backend,
        }
    }

    /// The control plane of a kube cluster.
    pub fn kube(&self) -> &KubeControl {
        match &self.control {
            Control::Kube(k) => k,
            Control::Etcd { .. } => panic!("an etcd cluster has no Kubernetes API"),
        }
    }

    /// The control plane of a kube cluster, to kill or restart it.
    pub fn kube_mut(&mut self) -> &mut KubeControl {
        match &mut self.control {
            Control::Kube(k) => k,
            Control::Etcd { .. } => panic!("an etcd cluster has no Kubernetes API"),
        }
    }

    /// The annotations flanneld on node `m` must have written, as Go flanneld writes them.
    pub fn expected_annotations(&self, m: usize) -> BTreeMap<String, String> {
        let member = &self.members[m];
        let identity = match self.backend {
            Backend::Wireguard => super::wireguard::dump(&member.node)
                .map(|(key, _)| key)
                .unwrap_or_default(),
            _ => member.vtep_mac.clone().unwrap_or_default(),
        };
        go_annotations(self.backend, &member.ip, &identity)
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches(ANNOTATION).to_owned(), v))
            .collect()
    }
}
