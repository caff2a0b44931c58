//! `bench kube` (scripts/bench-kube.sh): flanneld in kube mode against a real kube-apiserver
//! holding N Node objects. For each N, in private namespaces (a "lan" with the control plane,
//! a fresh node per run): N − 1 peers are created as Nodes annotated as Go flanneld annotates
//! them (vxlan, one `kubectl create` of a List), the node's own Node with its podCIDR, then
//! flanneld starts on the node with `--kube-subnet-mgr` and the runner measures the time from
//! its start to every peer programmed (its `/metrics` gauge, cross-checked by the routes in
//! the node's kernel) and its VmRSS and VmHWM after the next reconcile. The Node objects are
//! the full objects a cluster has (a `status` with images, conditions, addresses; managed
//! fields), so what the agent keeps of them shows.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::agent::probe;
use crate::etcd::{Lan, stop};
use crate::kube::ControlPlane;
use crate::node::Node;

type Result<T> = std::result::Result<T, String>;

/// Where the agent serves `/metrics` inside its node (loopback).
const METRICS_PORT: u16 = 9473;
const PEERS: &str = "flanneld_peers_programmed{backend=\"vxlan\"}";
const NET_CONF: &str = r#"{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}"#;

/// One count's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Node objects in the apiserver (the agent's own included).
    pub nodes: u32,
    /// Agent start → every peer programmed.
    pub start: Duration,
    /// The peers' routes in the node's kernel then.
    pub routes: usize,
    /// VmRSS after the next reconcile, KiB.
    pub rss_kib: u64,
    /// VmHWM then, KiB.
    pub hwm_kib: u64,
}

/// Peer `i`'s Node as a cluster has it: podCIDR, Go flanneld's annotations, and the status a
/// kubelet reports (addresses, conditions, a few images, node info).
fn peer_node(i: u32) -> Value {
    let (a, b) = (i / 250, i % 250);
    let ip = format!("172.16.{a}.{}", b + 1);
    let mac = format!("0a:58:00:00:{a:02x}:{b:02x}");
    let images: Vec<Value> = (0..12)
        .map(|k| {
            json!({
                "names": [format!("registry.example.com/team/app-{k}@sha256:{:064x}", k), format!("registry.example.com/team/app-{k}:v1.{k}")],
                "sizeBytes": 100_000_000 + k,
            })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": format!("peer-{i}"),
            "labels": {
                "kubernetes.io/hostname": format!("peer-{i}"),
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "m5.xlarge",
                "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
            },
            "annotations": {
                "flannel.alpha.coreos.com/backend-data": format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#),
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                "flannel.alpha.coreos.com/public-ip": ip,
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "podCIDR": format!("10.{}.{}.0/24", 100 + a, b),
            "podCIDRs": [format!("10.{}.{}.0/24", 100 + a, b)],
        },
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": format!("peer-{i}")}],
            "capacity": {"cpu": "4", "memory": "16303032Ki", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "16200632Ki", "pods": "110"},
            "images": images,
            "nodeInfo": {
                "machineID": format!("{i:032x}"), "systemUUID": format!("{i:032x}"), "bootID": format!("{i:032x}"),
                "kernelVersion": "6.1.0-18-amd64", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.6.20", "kubeletVersion": "v1.20.2",
                "kubeProxyVersion": "v1.20.2", "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    })
}

/// Creates Nodes `from..to` with one `kubectl create` of a List.
fn create_peers(cp: &ControlPlane, from: u32, to: u32) {
    if from >= to {
        return;
    }
    let list = json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": (from..to).map(peer_node).collect::<Vec<_>>(),
    });
    cp.kubectl_stdin(&["create", "-f", "-"], &list.to_string());
}

fn run_one(
    cp: &ControlPlane,
    lan: &mut Lan,
    flanneld: &PathBuf,
    nodes: u32,
    host: u8,
) -> Result<Row> {
    let node = Node::new();
    lan.attach(&node, host);
    let name = format!("bench-{nodes}");
    cp.create_node(&name, &["10.99.0.0/24"], &[]);
    std::fs::write(node.dir().join("net-conf.json"), NET_CONF).map_err(|e| e.to_string())?;
    let token = cp.flannel_token();
    let kubeconfig = node.dir().join("kubeconfig");
    cp.kubeconfig(&token, &kubeconfig);
    let log = node.dir().join("flanneld.log");
    let file = File::create(&log).map_err(|e| e.to_string())?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut child: Child = node
        .host()
        .command(flanneld)
        .arg("--kube-subnet-mgr")
        .arg(format!("--kubeconfig-file={}", kubeconfig.display()))
        .arg(format!(
            "--net-config-path={}",
            node.dir().join("net-conf.json").display()
        ))
        .arg(format!(
            "--subnet-file={}",
            node.dir().join("subnet.env").display()
        ))
        .args(["--iface=eth0", "--healthz-ip=127.0.0.1"])
        .arg(format!("--metrics-port={METRICS_PORT}"))
        .env("NODE_NAME", &name)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{}: {e}", flanneld.display()))?;
    let peers = nodes - 1;
    let ns = node.host().path().to_owned();
    let result = (|| {
        let limit = Duration::from_secs(120);
        loop {
            let done = probe::http_get(&ns, METRICS_PORT, "/metrics")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find_map(|l| l.strip_prefix(PEERS)?.trim().parse::<f64>().ok())
                })
                .is_some_and(|n| n >= f64::from(peers));
            if done {
                break;
            }
            if matches!(child.try_wait(), Ok(Some(_))) || started.elapsed() > limit {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("flanneld did not program {peers} peers:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let start = started.elapsed();
        let routes = node
            .host()
            .sh("ip", &["-4", "route", "show", "dev", "flannel.1"])
            .lines()
            .count();
        // After the next reconcile tick (5 s): the steady state.
        std::thread::sleep(Duration::from_secs(6));
        let (rss_kib, hwm_kib) = probe::memory_kib(child.id())?;
        Ok(Row {
            nodes,
            start,
            routes,
            rss_kib,
            hwm_kib,
        })
    })();
    stop(&mut child, Duration::from_secs(5));
    cp.delete_node(&name);
    result
}

/// Measures each count of Nodes in turn (the peers of the smaller counts stay, more are
/// added for the next).
pub fn run(counts: &[u32], flanneld: &PathBuf) -> Result<Vec<Row>> {
    let mut lan = Lan::new();
    let cp = ControlPlane::start(&lan);
    cp.install_flannel_rbac();
    let mut have = 0;
    let mut rows = Vec::new();
    for (k, &n) in counts.iter().enumerate() {
        let t = Instant::now();
        create_peers(&cp, have, n.saturating_sub(1));
        have = have.max(n.saturating_sub(1));
        eprintln!(
            "{} peer Nodes in the apiserver ({:.1} s to create)",
            have,
            t.elapsed().as_secs_f64()
        );
        let row = run_one(&cp, &mut lan, flanneld, n, 100 + k as u8)?;
        eprintln!("{row:?}");
        rows.push(row);
    }
    Ok(rows)
}

/// The markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| Node objects | start → all peers programmed | routes | VmRSS (MiB) | VmHWM (MiB) |\n|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {:.0} ms | {} | {:.1} | {:.1} |\n",
            r.nodes,
            r.start.as_secs_f64() * 1000.0,
            r.routes,
            r.rss_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0
        );
    }
    s
}
