//! `ctr run --cni` (containerd 1.6's own client, go-cni without the CRI) with kube-flannel's
//! conflist and our plugins, and the same with Debian's Go plugins (bridge → portmap) as the
//! control. ctr reads only `/etc/cni/net.d` and `/opt/cni/bin`: the rig binds the node's
//! conf and bin directories over those inside containerd's private mount namespace, where
//! ctr runs too.
//!
//! ctr 1.6 runs CNI DEL only when an attached `ctr run` ends (`--rm` or not). For a detached
//! container (`ctr run -d`), `ctr task kill` + `ctr task rm` + `ctr container rm` run no DEL
//! at all: the container's lease (and flannel's saved config) stay behind. That is a ctr
//! limitation, not the plugins': the test checks it so that a change shows.
//!
//! Run: `cargo build --workspace --bins && cargo test -p conformance --test ctr` (as root).

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use conformance::containerd::{self, BUSYBOX_IMAGE, Containerd, Options};
use conformance::flannel::{SUBNET_ENV, conflist, go_conflist, leases, names_in, write_subnet_env};
use conformance::node::GO_PLUGIN_DIR;
use conformance::{Node, TestNetns, plugin_dir, skip};
use serde_json::Value;

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The PID of a running task, from `ctr task ls`.
fn task_pid(cd: &Containerd, id: &str) -> i32 {
    let list = ok(cd.ctr(&["task", "ls"]), "ctr task ls");
    list.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == id).then(|| f.next()?.parse().ok())?
        })
        .next()
        .unwrap_or_else(|| panic!("no task {id}: {list}"))
}

/// The IPv4 address of eth0 in a network namespace.
fn ipv4(ns: &TestNetns) -> String {
    let out = ns.sh("ip", &["-4", "-o", "addr", "show", "dev", "eth0"]);
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no IPv4 address on eth0: {out}"))
        .to_owned()
}

fn veths(node: &Node) -> usize {
    node.host()
        .sh("ip", &["-o", "link"])
        .lines()
        .filter(|l| l.contains("veth"))
        .count()
}

/// Kills and removes a detached container the way ctr offers (no DEL runs).
fn kill_and_rm(cd: &Containerd, id: &str) {
    ok(
        cd.ctr(&["task", "kill", "-s", "SIGKILL", id]),
        "ctr task kill",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cd.ctr(&["task", "rm", id]).status.success() {
        assert!(Instant::now() < deadline, "task {id} did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(cd.ctr(&["container", "rm", id]), "ctr container rm");
}

fn scenario(test: &str, plugins: &Path, list: Value, node: &Node) {
    let cd = Containerd::start(
        node,
        &Options {
            plugin_dir: plugins.to_owned(),
            conflist: list,
            log_calls: true,
        },
    );
    // Two detached containers on the network.
    for id in ["c1", "c2"] {
        ok(
            cd.ctr(&["run", "-d", "--cni", BUSYBOX_IMAGE, id]),
            "ctr run -d --cni",
        );
    }
    let ns1 = TestNetns::existing(Path::new(&format!("/proc/{}/ns/net", task_pid(&cd, "c1"))));
    let ns2 = TestNetns::existing(Path::new(&format!("/proc/{}/ns/net", task_pid(&cd, "c2"))));
    let (ip1, ip2) = (ipv4(&ns1), ipv4(&ns2));
    for ip in [&ip1, &ip2] {
        assert!(
            ip.starts_with("10.244.1."),
            "{test}: {ip} not in the subnet"
        );
    }
    assert_ne!(ip1, ip2);
    // c1 → c2 from inside the container (busybox ping), c2 → c1 from its namespace.
    ok(
        cd.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "ping1",
            "c1",
            "ping",
            "-c1",
            "-W2",
            &ip2,
        ]),
        "ping from c1 to c2",
    );
    let back = ns2.run("ping", &["-c1", "-W2", "-q", &ip1]);
    assert!(back.status.success(), "{test}: c2 cannot ping c1");
    assert_eq!(leases(node).len(), 2);

    // An attached `ctr run --rm`: its DEL runs when it ends and leaves nothing.
    let out = ok(
        cd.ctr(&[
            "run",
            "--rm",
            "--cni",
            BUSYBOX_IMAGE,
            "c3",
            "sh",
            "-c",
            "ip -4 -o addr show eth0",
        ]),
        "ctr run --rm --cni",
    );
    assert!(out.contains("inet 10.244.1."), "{test}: c3 had {out}");
    assert_eq!(leases(node).len(), 2, "{test}: c3's lease left");
    assert_eq!(veths(node), 2, "{test}: c3's veth left");
    let full_id = format!("{}-c3", cd.ctr_namespace());
    let calls = cd.calls();
    for c in &calls {
        eprintln!(
            "{test}: {} {} id={} netns={:?} args={:?} rc={:?}",
            c.plugin,
            c.command,
            c.env("CNI_CONTAINERID"),
            c.env("CNI_NETNS"),
            c.env("CNI_ARGS"),
            c.exit_code
        );
    }
    assert!(
        calls
            .iter()
            .any(|c| c.command == "DEL" && c.env("CNI_CONTAINERID") == full_id),
        "{test}: no DEL for c3"
    );
    assert!(
        !names_in(node, "flannel").contains(&full_id),
        "{test}: c3's saved flannel config left"
    );
    for call in &calls {
        assert_eq!(
            call.exit_code,
            Some(0),
            "{test}: {} {} failed: {}",
            call.plugin,
            call.command,
            call.stdout
        );
    }

    // Detached containers: kill + rm runs no DEL (ctr 1.6), so their leases stay.
    kill_and_rm(&cd, "c1");
    kill_and_rm(&cd, "c2");
    let dels = cd
        .calls()
        .iter()
        .filter(|c| c.command == "DEL" && !c.env("CNI_CONTAINERID").ends_with("-c3"))
        .count();
    assert_eq!(dels, 0, "{test}: ctr now runs DEL for a detached container");
    assert_eq!(
        leases(node).len(),
        2,
        "{test}: the detached containers' leases (no DEL ran)"
    );
    // Their namespaces died with their tasks, and the veths with them (the kernel cleans a
    // namespace up asynchronously).
    let deadline = Instant::now() + Duration::from_secs(5);
    while veths(node) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(veths(node), 0, "{test}: veth left");
    drop(cd);
}

#[test]
fn ctr_run_cni_kube_flannel_conflist() {
    let test = "ctr_run_cni_kube_flannel_conflist";
    if let Some(why) = containerd::missing_tools() {
        skip(test, &why);
        return;
    }
    let node = Node::new();
    write_subnet_env(&node, SUBNET_ENV);
    let list = conflist(&node, "0.3.1");
    scenario(test, &plugin_dir(), list, &node);
}

#[test]
fn ctr_run_cni_go_bridge_portmap_control() {
    let test = "ctr_run_cni_go_bridge_portmap_control";
    if let Some(why) = containerd::missing_tools() {
        skip(test, &why);
        return;
    }
    let node = Node::new();
    let list = go_conflist(&node, "1.0.0");
    scenario(test, &PathBuf::from(GO_PLUGIN_DIR), list, &node);
}
