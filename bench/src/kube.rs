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

use super::agent::{floor, probe};
use drivers::etcd::{Lan, stop};
use drivers::kube::ControlPlane;
use rig::node::Node;

type Result<T> = std::result::Result<T, String>;

/// Where the agent serves `/metrics` inside its node (loopback).
const METRICS_PORT: u16 = 9473;
const PEERS: &str = "flanneld_peers_programmed{backend=\"vxlan\"}";
const LATENCY: &str = "flanneld_event_programmed_seconds";
const NET_CONF: &str = r#"{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}"#;

/// One count's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Node objects in the apiserver (the agent's own included).
    pub nodes: u32,
    /// Agent start → every peer programmed (median of the plan's runs).
    pub start: Duration,
    /// The same entries by `ip -batch` + `bridge -batch` (median), none for no peers.
    pub floor: Option<Duration>,
    /// Of the start: the agent's first listing of every Node, every page (its
    /// `flanneld_node_listing_seconds`, the last run's).
    pub listing: Option<Duration>,
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

/// Peer `i`'s entries as the floor writes them: (subnet's network address, VtepMAC, PublicIP).
fn peer_entry(i: u32) -> (String, String, String) {
    let (a, b) = (i / 250, i % 250);
    (
        format!("10.{}.{}.0", 100 + a, b),
        format!("0a:58:00:00:{a:02x}:{b:02x}"),
        format!("172.16.{a}.{}", b + 1),
    )
}

/// The floor's batch files for peers `0..n` (`ip`, `bridge`): the entries the vxlan backend
/// programs for them.
pub fn floor_batches(n: u32) -> (String, String) {
    let (mut ip, mut bridge) = (String::new(), String::new());
    for i in 0..n {
        let (gw, mac, public) = peer_entry(i);
        ip += &format!("neigh replace {gw} lladdr {mac} dev flannel.1 nud permanent\n");
        bridge += &format!("fdb replace {mac} dev flannel.1 dst {public} self permanent\n");
        ip += &format!("route replace {gw}/24 via {gw} dev flannel.1 onlink\n");
    }
    (ip, bridge)
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Node counts (the agent's own included); 1 is a cluster of one.
    pub counts: Vec<u32>,
    /// New Nodes created one by one at the largest count, for the event latency.
    pub events: u32,
    /// How long the agent is watched idle at the largest count.
    pub idle: Duration,
    /// Starts per count (medians reported), each next to a floor run.
    pub reps: u32,
}

/// A running agent on its node.
struct Agent {
    child: Child,
    node: Node,
    name: String,
    log: PathBuf,
}

impl Agent {
    fn metrics(&self) -> Result<String> {
        probe::http_get(self.node.host().path(), METRICS_PORT, "/metrics")
    }

    fn stop(mut self, cp: &ControlPlane) {
        stop(&mut self.child, Duration::from_secs(5));
        cp.delete_node(&self.name);
    }
}

/// The agent started on a fresh node as Node `name`; returns when every one of `peers` is
/// programmed, with the time that took.
fn start_agent(
    cp: &ControlPlane,
    lan: &mut Lan,
    flanneld: &PathBuf,
    name: &str,
    peers: u32,
) -> Result<(Agent, Duration)> {
    let node = Node::new();
    lan.attach(&node, 2);
    cp.create_node(name, &["10.99.0.0/24"], &[]);
    std::fs::write(node.dir().join("net-conf.json"), NET_CONF).map_err(|e| e.to_string())?;
    let token = cp.flannel_token();
    let kubeconfig = node.dir().join("kubeconfig");
    cp.kubeconfig(&token, &kubeconfig);
    let log = node.dir().join("flanneld.log");
    let file = File::create(&log).map_err(|e| e.to_string())?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let child: Child = node
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
        .env("NODE_NAME", name)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{}: {e}", flanneld.display()))?;
    let mut agent = Agent {
        child,
        node,
        name: name.to_owned(),
        log,
    };
    let limit = Duration::from_secs(300);
    loop {
        let done = agent
            .metrics()
            .ok()
            .and_then(|m| probe::metric(&m, PEERS))
            .is_some_and(|n| n >= f64::from(peers));
        if done {
            return Ok((agent, started.elapsed()));
        }
        if matches!(agent.child.try_wait(), Ok(Some(_))) || started.elapsed() > limit {
            let text = std::fs::read_to_string(&agent.log).unwrap_or_default();
            agent.stop(cp);
            return Err(format!("flanneld did not program {peers} peers:\n{text}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The floor for `peers` in a fresh node namespace on the LAN; microseconds.
fn floor_once(lan: &mut Lan, peers: u32) -> Result<u64> {
    let node = Node::new();
    let local = lan.attach(&node, 3);
    floor::measure_batches(node.host(), node.dir(), &local, floor_batches(peers))
}

/// The event latency at the largest count: `n` new Nodes created one by one, each timed from
/// its creation's answer to its route in the node's kernel, and the agent's own histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct Events {
    /// Node objects when the stream ran.
    pub nodes: u32,
    /// Creation sent (kubectl started) → route in the kernel, per event, microseconds.
    pub kernel_us: Vec<u64>,
    /// Creation sent → kubectl's exit (its request answered), per event, microseconds: how
    /// much of `kernel_us` the client's own start and round trip are.
    pub create_us: Vec<u64>,
    /// The agent's histogram over those events: p50 and p99, seconds.
    pub agent_p50: Option<f64>,
    /// See `agent_p50`.
    pub agent_p99: Option<f64>,
}

/// The apiserver's side of the agent: requests for Nodes and the bytes answered, by verb,
/// from the agent's start to the end of a minute of it idle.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApiCost {
    /// `LIST` requests for nodes.
    pub lists: f64,
    /// `WATCH` requests for nodes.
    pub watches: f64,
    /// Bytes of the `LIST` answers.
    pub list_bytes: f64,
    /// Bytes of one whole listing of every Node (`kubectl get nodes -o json`): what a full
    /// informer (Go flanneld) fetches at its start and keeps.
    pub full_list_bytes: usize,
    /// Seconds covered.
    pub secs: f64,
}

/// The whole measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Per count.
    pub rows: Vec<Row>,
    /// At the largest count.
    pub events: Events,
    /// Idle CPU at the largest count: percent of one core over `idle_secs`.
    pub idle_cpu_percent: f64,
    /// See `idle_cpu_percent`.
    pub idle_secs: f64,
    /// At the largest count.
    pub api: ApiCost,
}

/// Sums of `apiserver_request_total` and `apiserver_response_sizes_sum` for nodes by verb.
fn api_counters(cp: &ControlPlane) -> (f64, f64, f64) {
    let text = cp.kubectl_ok(&["get", "--raw", "/metrics"]);
    let (mut lists, mut watches, mut bytes) = (0.0, 0.0, 0.0);
    for l in text
        .lines()
        .filter(|l| l.contains("resource=\"nodes\"") && !l.contains("subresource=\"status\""))
    {
        let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        if l.starts_with("apiserver_request_total{") {
            if l.contains("verb=\"LIST\"") {
                lists += v;
            } else if l.contains("verb=\"WATCH\"") {
                watches += v;
            }
        } else if l.starts_with("apiserver_response_sizes_sum{") && l.contains("verb=\"LIST\"") {
            bytes += v;
        }
    }
    (lists, watches, bytes)
}

fn median(v: &[u64]) -> u64 {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get(s.len() / 2).copied().unwrap_or(0)
}

/// Measures each count of Nodes in turn (the peers of the smaller counts stay, more are
/// added for the next); at the largest, the events, the idle CPU and the apiserver's cost.
pub fn run(plan: &Plan, flanneld: &PathBuf) -> Result<Report> {
    let mut lan = Lan::new();
    let cp = ControlPlane::start(&lan);
    cp.install_flannel_rbac();
    let largest = plan.counts.iter().copied().max().unwrap_or(1);
    let mut have = 0;
    let mut rows = Vec::new();
    let mut tail = None;
    for &n in &plan.counts {
        let t = Instant::now();
        let peers = n.saturating_sub(1);
        create_peers(&cp, have, peers);
        have = have.max(peers);
        eprintln!(
            "{have} peer Nodes in the apiserver ({:.1} s to create)",
            t.elapsed().as_secs_f64()
        );
        let (mut starts, mut floors) = (Vec::new(), Vec::new());
        let reps = plan.reps.max(1);
        for rep in 0..reps {
            if peers > 0 {
                floors.push(floor_once(&mut lan, peers)?);
            }
            let before = (n == largest && rep + 1 == reps).then(|| api_counters(&cp));
            let cost_from = Instant::now();
            let (agent, took) =
                start_agent(&cp, &mut lan, flanneld, &format!("bench-{n}-{rep}"), peers)?;
            starts.push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
            if rep + 1 < reps {
                agent.stop(&cp);
                continue;
            }
            let routes = probe::peer_routes(agent.node.host().path())?;
            let listing = agent
                .metrics()
                .ok()
                .and_then(|m| probe::metric(&m, "flanneld_node_listing_seconds_sum"))
                .map(Duration::from_secs_f64);
            // The steady state: after the next reconcile tick (5 s).
            std::thread::sleep(Duration::from_secs(6));
            let (rss_kib, hwm_kib) = probe::memory_kib(agent.child.id())?;
            rows.push(Row {
                nodes: n,
                start: Duration::from_micros(median(&starts)),
                floor: (!floors.is_empty()).then(|| Duration::from_micros(median(&floors))),
                listing,
                routes,
                rss_kib,
                hwm_kib,
            });
            eprintln!("{:?}", rows.last());
            match before {
                Some(before) => tail = Some((agent, before, cost_from)),
                None => agent.stop(&cp),
            }
        }
    }
    let (agent, before, cost_from) = tail.ok_or("no run at the largest count")?;
    let result = finish(plan, &cp, &agent, have, before, cost_from, rows);
    agent.stop(&cp);
    result
}

/// The largest count's events, idle CPU and apiserver cost, with `agent` running.
fn finish(
    plan: &Plan,
    cp: &ControlPlane,
    agent: &Agent,
    have: u32,
    before: (f64, f64, f64),
    cost_from: Instant,
    rows: Vec<Row>,
) -> Result<Report> {
    // Idle first (and the apiserver's cost over it).
    let pid = agent.child.id();
    let (c0, t) = (probe::cpu_ticks(pid)?, Instant::now());
    std::thread::sleep(plan.idle);
    let secs = t.elapsed().as_secs_f64();
    let cpu = probe::cpu_ticks(pid)?.saturating_sub(c0) as f64 / probe::ticks_per_second() as f64;
    let after = api_counters(cp);
    // The same request a full informer makes, compact as the apiserver sends it.
    let full_list_bytes = cp.kubectl_ok(&["get", "--raw", "/api/v1/nodes"]).len();
    let api = ApiCost {
        lists: after.0 - before.0,
        watches: after.1 - before.1,
        list_bytes: after.2 - before.2,
        full_list_bytes,
        secs: cost_from.elapsed().as_secs_f64(),
    };
    // Then the stream of new Nodes.
    let sock = probe::route_socket(agent.node.host().path())?;
    let hist_before = probe::buckets(&agent.metrics()?, LATENCY);
    let (mut kernel_us, mut create_us) = (Vec::new(), Vec::new());
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    for i in have..have + plan.events {
        let dst: std::net::Ipv4Addr = peer_entry(i).0.parse().map_err(|e| format!("{e}"))?;
        // The clock starts as the creation is sent (kubectl's start included: an upper
        // bound); the route is watched for while kubectl still runs.
        let t = Instant::now();
        let mut create =
            cp.kubectl_spawn_stdin(&["create", "-f", "-"], &peer_node(i).to_string())?;
        while !probe::routed(&sock, dst) {
            if t.elapsed() > Duration::from_secs(10) {
                let _ = create.kill();
                return Err(format!("peer-{i} not routed within 10 s"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        kernel_us.push(us(t.elapsed()));
        let status = create.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("creating peer-{i}: {status}"));
        }
        create_us.push(us(t.elapsed()));
    }
    let hist_after = probe::buckets(&agent.metrics()?, LATENCY);
    Ok(Report {
        rows,
        events: Events {
            nodes: have + 1,
            kernel_us,
            create_us,
            agent_p50: probe::quantile(&hist_before, &hist_after, 0.5),
            agent_p99: probe::quantile(&hist_before, &hist_after, 0.99),
        },
        idle_cpu_percent: 100.0 * cpu / secs,
        idle_secs: secs,
        api,
    })
}

/// The value at quantile `q` of `v` (microseconds), if any.
fn percentile(v: &[u64], q: f64) -> Option<u64> {
    let mut s = v.to_vec();
    s.sort_unstable();
    let i = ((s.len() as f64 - 1.0) * q).round() as usize;
    s.get(i).copied()
}

/// The markdown tables.
pub fn markdown(r: &Report) -> String {
    let mut s = String::from(
        "| Node objects | start → all peers programmed | of which the Node listing | floor (`ip -batch` + `bridge -batch`) | ratio | routes | VmRSS (MiB) | VmHWM (MiB) |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in &r.rows {
        let floor = row
            .floor
            .map(|f| format!("{:.0} ms", f.as_secs_f64() * 1000.0));
        let ratio = row
            .floor
            .filter(|f| !f.is_zero())
            .map(|f| format!("{:.2}×", row.start.as_secs_f64() / f.as_secs_f64()));
        let listing = row.listing.map_or("—".into(), |l| {
            format!("{:.0} ms", l.as_secs_f64() * 1000.0)
        });
        s += &format!(
            "| {} | {:.0} ms | {listing} | {} | {} | {} | {:.1} | {:.1} |\n",
            row.nodes,
            row.start.as_secs_f64() * 1000.0,
            floor.unwrap_or_else(|| "—".into()),
            ratio.unwrap_or_else(|| "—".into()),
            row.routes,
            row.rss_kib as f64 / 1024.0,
            row.hwm_kib as f64 / 1024.0
        );
    }
    let ms = |us: Option<u64>| us.map_or("—".into(), |u| format!("{:.1} ms", u as f64 / 1000.0));
    let sec = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.2} ms", v * 1000.0));
    let e = &r.events;
    s += &format!(
        "\nEvents at {} Nodes ({} new Nodes, one by one): creation sent (`kubectl create` started) → route in the kernel p50 {}, p99 {} (the `kubectl create` itself, start to exit: p50 {}); the agent's own histogram (event taken → programmed) p50 {}, p99 {}.\n",
        e.nodes,
        e.kernel_us.len(),
        ms(percentile(&e.kernel_us, 0.5)),
        ms(percentile(&e.kernel_us, 0.99)),
        ms(percentile(&e.create_us, 0.5)),
        sec(e.agent_p50),
        sec(e.agent_p99),
    );
    s += &format!(
        "\nIdle at {} Nodes: {:.2} % of one core over {:.0} s.\n",
        e.nodes, r.idle_cpu_percent, r.idle_secs
    );
    let a = &r.api;
    s += &format!(
        "\nThe apiserver's side, the agent's start plus {:.0} s idle: {:.0} LIST and {:.0} WATCH requests for nodes, {:.1} MiB of LIST answers; one whole listing of the Nodes is {:.1} MiB (a full informer fetches that too at its start, then keeps every object).\n",
        a.secs,
        a.lists,
        a.watches,
        a.list_bytes / 1_048_576.0,
        a.full_list_bytes as f64 / 1_048_576.0,
    );
    s
}
