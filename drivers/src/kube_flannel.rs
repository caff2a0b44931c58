//! kube-flannel, ours, on the real cluster (`crate::k8s`): what the test
//! (`tests/kube_flannel.rs`) and the demo (`scripts/demo.sh --cluster`) both do: our image,
//! deploy/kube-flannel.yml with the API's address given to the agents, a busybox Deployment
//! spread over the nodes, and every node and every pod pinging every pod.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::k8s::K8sCluster;
use rig::poll;

/// The image scripts/image.sh saves (`CNI_RS_FLANNEL_IMAGE` overrides).
pub fn image_archive() -> PathBuf {
    std::env::var_os("CNI_RS_FLANNEL_IMAGE").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/image/cni-rs-flannel.tar"),
        PathBuf::from,
    )
}

/// deploy/kube-flannel.yml for `backend`, with the API's address given to the agents as
/// kubeasz gives it (there is no kube-proxy to route the `kubernetes` Service here).
pub fn manifest(c: &K8sCluster, backend: &str) -> String {
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

/// A busybox Deployment (label `app=busybox`) of `replicas` pods spread one per node.
pub fn deployment(image: &str, replicas: u32) -> Value {
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

pub fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .unwrap_or_default()
}

/// (name, node, IP) of the busybox pods.
pub fn busyboxes(c: &K8sCluster, n: usize) -> Vec<(String, String, String)> {
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

/// Every node pings every pod, every pod pings every other pod: the table (a line per source,
/// `<ip> ok` or `<ip> --` per target) and the failures.
pub fn ping_all(c: &K8sCluster, pods: &[(String, String, String)]) -> (String, Vec<String>) {
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
    (lines.join("\n"), failed)
}

/// (name, node, IP) of the pods of `selector` Running now (not being deleted), on any node
/// but `except`.
pub fn running(c: &K8sCluster, selector: &str, except: &str) -> Vec<(String, String, String)> {
    c.pods("default", selector)
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
        .filter(|(_, node, _)| node != except)
        .collect()
}

/// The flannel pods Running and Ready, one per Node.
pub fn flannel_ready(c: &K8sCluster, nodes: usize) -> Vec<Value> {
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
