//! `scripts/demo.sh`: the whole flannel system on one machine, shown step by step — etcd
//! with the network config, three nodes running our flanneld (ansible-role-flanneld's
//! flags), their leases and subnet.env, what the backend programmed (flannel.100's routes,
//! neighbours and FDB entries with vxlan; routes with host-gw), pods made by our CNI plugins
//! pinging across nodes, a hostPort answering from another node, and the teardown.
//!
//! `cluster-demo [--backend vxlan|host-gw]`; default vxlan, falling back to host-gw (with a
//! line saying so) while flanneld does not support vxlan. Plugins and flanneld come from
//! `CNI_PLUGIN_DIR`. Runs as root; everything lives in private namespaces and temp dirs
//! (`drivers::cluster`) and is removed at the end, also on Ctrl-C.

// A demo: a failed step aborts it loudly; the teardown then removes everything (without
// unwinding: `rig::reaper`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use drivers::cluster::{Backend, Cluster, HOST_PORT, INTERNET_IP, PREFIX, Unsupported, VXLAN_DEV};
use rig::reaper;
use serde_json::json;

mod k8s_demo;
mod kube_demo;

/// The test hook of `conformance/tests/interrupts.rs`: the step of this number (from 1)
/// fails, as a broken step would.
const FAIL_AT_ENV: &str = "CLUSTER_DEMO_FAIL_AT";
static STEPS: AtomicU32 = AtomicU32::new(0);

pub(crate) fn say(s: &str) {
    println!("\n\x1b[1m== {s}\x1b[0m");
}

pub(crate) fn indent(s: &str) {
    for l in s.lines() {
        println!("  {l}");
    }
}

/// The next step. Ctrl-C or SIGTERM end the demo through the teardown watchdog
/// (`reaper::guard_process`), wherever the demo is; here it only stops starting new steps.
pub(crate) fn step(s: &str) {
    if reaper::interrupted() {
        reaper::teardown_and_exit("demo: interrupted", 130);
    }
    let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    if std::env::var(FAIL_AT_ENV).is_ok_and(|v| v == n.to_string()) {
        panic!("step {n} made to fail ({FAIL_AT_ENV}={n})");
    }
    say(s);
}

fn main() {
    reaper::guard_process("demo");
    run_demo();
    // A signal during the last step (the watchdog may not have seen it yet) still ends the
    // run as an interruption.
    if reaper::interrupted() {
        reaper::teardown_and_exit("demo: interrupted", 130);
    }
    // The demo's own teardown removed everything; this says so, or removes what it missed.
    let left = reaper::reap(std::process::id());
    if !left.is_empty() {
        eprintln!("demo: left behind, removed now:\n{}", left.summary());
        std::process::exit(1);
    }
}

fn run_demo() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let kube = args.first().is_some_and(|a| a == "--kube");
    let cluster = args.first().is_some_and(|a| a == "--cluster");
    if kube || cluster {
        args.remove(0);
    }
    let asked = match args.as_slice() {
        [] => None,
        [flag, b] if flag == "--backend" => Some(Backend::parse(b).unwrap_or_else(|| {
            eprintln!("cluster-demo: --backend vxlan|host-gw|wireguard");
            std::process::exit(2)
        })),
        _ => {
            eprintln!(
                "usage: cluster-demo [--kube | --cluster] [--backend vxlan|host-gw|wireguard]"
            );
            std::process::exit(2)
        }
    };
    if cluster {
        // kube-flannel's default backend.
        k8s_demo::run(asked.unwrap_or(Backend::Vxlan).name());
        return;
    }
    if kube {
        // Seed 000 (kubeasz) checks its install with host-gw.
        kube_demo::run(asked.unwrap_or(Backend::HostGw));
        return;
    }
    etcd_demo(asked);
}

/// The demo on etcd: the cluster, what flanneld wrote and programmed, pods and their traffic,
/// the teardown.
fn etcd_demo(asked: Option<Backend>) {
    let start = Instant::now();
    let (mut c, backend) = start_cluster(asked);
    show_agents(&c, backend);
    pods_and_traffic(&mut c);
    masquerade(&mut c);
    teardown(c, "etcd", start);
}

/// etcd and three nodes running flanneld (vxlan unless asked otherwise; host-gw when this
/// flanneld refuses vxlan and none was asked).
fn start_cluster(asked: Option<Backend>) -> (Cluster, Backend) {
    let mut backend = asked.unwrap_or(Backend::Vxlan);
    let c = loop {
        step(&format!(
            "etcd on the underlay (a private LAN namespace, 192.168.50.0/24), {} network config",
            backend.name()
        ));
        let mut c = Cluster::start(backend);
        println!(
            "etcd-server listening on {} (mutual TLS)\n$ etcdctl put {PREFIX}/config '{}'",
            c.etcd().endpoint(),
            backend.network_config()
        );
        step("three nodes, each running our flanneld");
        let mut refused = None;
        for _ in 0..3 {
            if let Err(Unsupported(line)) = c.join() {
                refused = Some(line);
                break;
            }
        }
        match refused {
            None => break c,
            Some(line) if asked.is_none() && backend == Backend::Vxlan => {
                println!(
                    "\x1b[33mthis flanneld does not support vxlan yet:\x1b[0m {line}\n\
                     → the same demo with host-gw (all nodes share one link)"
                );
                drop(c);
                backend = Backend::HostGw;
            }
            Some(line) => panic!("flanneld refused {}: {line}", backend.name()),
        }
    };
    (c, backend)
}

/// The agents, their leases, subnet.env and what the backend programmed on node1.
fn show_agents(c: &Cluster, backend: Backend) {
    for m in &c.members {
        println!("{} at {}: flanneld running, {}", m.name, m.ip, m.subnet);
    }
    println!("node1's command line (ansible-role-flanneld's unit, paths in the node's temp dir):");
    let args = c.agent_args(&c.members[0].node, &c.members[0].ip);
    println!("  flanneld {}", args.join(" \\\n           "));

    step("their leases in etcd (Go flanneld's keys and values, 24 h etcd leases)");
    println!("$ etcdctl get --prefix {PREFIX}");
    indent(&c.etcd_listing());

    step("subnet.env, as each flanneld wrote it for the flannel CNI plugin");
    for m in &c.members {
        println!("{}:", m.name);
        indent(&m.subnet_env());
    }
    c.converge(10).unwrap();

    match backend {
        Backend::Vxlan => {
            step(&format!(
                "node1's {VXLAN_DEV}: the device and one entry set per peer"
            ));
            let host = c.members[0].node.host();
            println!("$ ip -d link show {VXLAN_DEV}");
            indent(&host.sh("ip", &["-d", "link", "show", VXLAN_DEV]));
            println!("$ ip route show dev {VXLAN_DEV}");
            indent(&host.sh("ip", &["route", "show", "dev", VXLAN_DEV]));
            println!("$ ip neigh show dev {VXLAN_DEV}");
            indent(&host.sh("ip", &["neigh", "show", "dev", VXLAN_DEV]));
            println!("$ bridge fdb show dev {VXLAN_DEV}");
            indent(&host.sh("bridge", &["fdb", "show", "dev", VXLAN_DEV]));
        }
        Backend::HostGw => {
            step("node1's routes: one per peer, via the peer's address");
            println!("$ ip route");
            indent(&c.members[0].routes());
        }
        Backend::Wireguard => {
            use drivers::cluster::wireguard::{WG_DEV, wg};
            step(&format!(
                "node1's {WG_DEV}: one WireGuard peer per node, the Network routed through it"
            ));
            println!("$ wg show {WG_DEV}");
            indent(&wg(&c.members[0].node, &["show", WG_DEV]));
            println!("$ ip route");
            indent(&c.members[0].routes());
        }
    }
}

/// Two pods per node, the ping matrix, a hostPort across nodes.
fn pods_and_traffic(c: &mut Cluster) {
    step("two pods per node (our flannel → bridge → host-local, then portmap)");
    for m in 0..3 {
        let pm = (m == 0)
            .then(|| json!([{"hostPort": HOST_PORT, "containerPort": 80, "protocol": "tcp"}]));
        let mapped = pm.is_some();
        let p = c.add_pod(m, pm);
        let q = c.add_pod(m, None);
        let member = &c.members[m];
        println!(
            "{}: {}{}, {}: {}",
            member.pod_label(p),
            member.pods[p].address(true),
            if mapped {
                format!(" (hostPort {}:{HOST_PORT} → 80)", member.ip)
            } else {
                String::new()
            },
            member.pod_label(q),
            member.pods[q].address(true)
        );
    }
    println!("node1's cni0:");
    indent(
        &c.members[0]
            .node
            .host()
            .sh("ip", &["-br", "addr", "show", "cni0"]),
    );

    step("every pod pings every other pod");
    let matrix = c.ping_matrix(None);
    indent(&matrix.to_string());
    assert!(matrix.failures().is_empty(), "{:?}", matrix.failures());

    step("a hostPort across nodes: node3 → node1:8080 → node1/pod1:80");
    let node1 = c.members[0].ip.clone();
    let (from_node, from_pod) = c.serving(0, "hello from node1/pod1", || {
        (
            c.get_from_node(2, &node1, HOST_PORT),
            c.get_from_pod((2, 0), &node1, HOST_PORT),
        )
    });
    let shown = |a: &Option<String>| a.clone().unwrap_or_else(|| "(no answer)".into());
    println!("node3      → {node1}:{HOST_PORT}: {}", shown(&from_node));
    println!("node3/pod1 → {node1}:{HOST_PORT}: {}", shown(&from_pod));
    assert_eq!(from_node.as_deref(), Some("hello from node1/pod1"));
    assert_eq!(from_pod.as_deref(), Some("hello from node1/pod1"));
}

/// Pods reaching the "internet", masqueraded by flanneld, when its rules are there.
fn masquerade(c: &mut Cluster) {
    let masquerade = c.masquerade_table(0);
    if masquerade.is_none() {
        println!(
            "\n(pods → the outside: flanneld --ip-masq=true installed no masquerade table yet, \
             so that step is left out)"
        );
    }
    if let Some(table) = masquerade {
        step("pods → the internet, masqueraded by flanneld with the node's address");
        c.internet();
        // "table ip flannel-ipv4 {": the listing of that table, as nft prints it.
        let name: Vec<&str> = table.trim_end_matches('{').split_whitespace().collect();
        println!("$ nft list {}", name.join(" "));
        let mut args = vec!["list"];
        args.extend(name.iter().copied());
        let listing = c.members[0].node.host().run("nft", &args);
        for l in String::from_utf8_lossy(&listing.stdout).lines() {
            println!("  {l}");
        }
        for m in 0..3 {
            let seen = c.get_from_pod((m, 0), INTERNET_IP, 80);
            println!(
                "{} → {INTERNET_IP}: seen from {}",
                c.members[m].pod_label(0),
                seen.as_deref().unwrap_or("(no answer)")
            );
        }
    }
}

/// The last step: every pod deleted, every process stopped (`control` names the store's),
/// nothing left, and the time since `start`.
pub(crate) fn teardown(mut c: Cluster, control: &str, start: Instant) {
    step(&format!(
        "teardown: every pod deleted (CNI DEL), agents stopped, {control} stopped"
    ));
    match c.delete_pods() {
        Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
        Err(e) => panic!("after DEL: {e}"),
    }
    match c.shut_down() {
        Ok(report) => println!("{report}"),
        Err(e) => panic!("{e}"),
    }
    say(&format!(
        "done in {:.1} s: nothing of the demo is left (namespaces, processes, files)",
        start.elapsed().as_secs_f64()
    ));
}
