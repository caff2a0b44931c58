//! containerd 1.6's CRI plugin (the path kubelet takes) running the plugins: kube-flannel's
//! conflist with ours, and as the control the same scenario with Debian's Go plugins in the
//! bridge → portmap form (Debian ships no Go flannel). Pod A maps hostPort 8080 to its port
//! 80, pod B maps nothing; containerd is restarted between the checks; after Stop + Remove
//! nothing of the pods may remain.
//!
//! A logging shim in front of every plugin records what containerd sends. With
//! `CNI_RS_RECORD_CONTAINERD=1` the flannel tests save pod A's calls of flannel, portmap and
//! loopback to `testdata/runtime-inputs/containerd/cri-flannel-portmap-VERSION/`.
//!
//! Run: `cargo build --workspace --bins && cargo test -p conformance --test containerd_cri`
//! (as root; `CNI_PLUGIN_DIR` picks the plugins, as for the other tests).

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;

use conformance::containerd::{self, Call, Containerd, Options, Sandbox};
use conformance::cri::SANDBOX_READY;
use conformance::flannel::{SUBNET_ENV, conflist, go_conflist, leases, names_in, write_subnet_env};
use conformance::node::GO_PLUGIN_DIR;
use conformance::traffic::{tcp_get, tcp_server};
use conformance::{Node, TestNetns, plugin_dir, skip};
use serde_json::Value;

/// The node's own address (on its link to an "external" namespace).
const NODE_IP: &str = "198.51.100.1";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Plugins {
    /// Ours, with kube-flannel's conflist (flannel → bridge + host-local, then portmap).
    Ours,
    /// Debian's Go plugins: bridge + host-local, then portmap.
    Go,
}

fn at(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

fn check_traffic(node: &Node, ext: &TestNetns, a: &Sandbox, b: &Sandbox, when: &str) {
    let want = Some("pod a".to_owned());
    assert_eq!(
        tcp_get(&b.netns, at(&a.ip, 80)),
        want,
        "B to A's address, {when}"
    );
    assert_eq!(
        tcp_get(node.host(), at(NODE_IP, 8080)),
        want,
        "hostPort from the node, {when}"
    );
    assert_eq!(
        tcp_get(ext, at(NODE_IP, 8080)),
        want,
        "hostPort from outside the node, {when}"
    );
    assert_eq!(
        tcp_get(&b.netns, at(NODE_IP, 8080)),
        want,
        "hostPort from pod B, {when}"
    );
}

fn scenario(test: &str, version: &str, plugins: Plugins) {
    if let Some(why) = containerd::missing_tools() {
        skip(test, &why);
        return;
    }
    let node = Node::new();
    let ext = node.external(&format!("{NODE_IP}/24"), "198.51.100.2/24");
    let (dir, list) = match plugins {
        Plugins::Ours => {
            write_subnet_env(&node, SUBNET_ENV);
            (plugin_dir(), conflist(&node, version))
        }
        Plugins::Go => (PathBuf::from(GO_PLUGIN_DIR), go_conflist(&node, version)),
    };
    let mut cd = Containerd::start(
        &node,
        &Options {
            plugin_dir: dir,
            conflist: list,
            log_calls: true,
        },
    );

    let a = cd.run_pod("a", &[(8080, 80)]);
    let b = cd.run_pod("b", &[]);
    for pod in [&a, &b] {
        assert!(
            pod.ip.starts_with("10.244.1."),
            "pod address {} not in the node's subnet",
            pod.ip
        );
    }
    assert_ne!(a.ip, b.ip);
    let _server = tcp_server(&a.netns, 80, "pod a");
    check_traffic(&node, &ext, &a, &b, "before containerd's restart");

    cd.restart();
    for pod in [&a, &b] {
        let now = cd.sandbox(&pod.id);
        let state = cd.status(&pod.id).status.unwrap().state;
        assert_eq!(state, SANDBOX_READY, "pod not ready after the restart");
        assert_eq!(now.ip, pod.ip, "address changed over the restart");
        assert_eq!(now.pid, pod.pid, "sandbox restarted");
    }
    check_traffic(&node, &ext, &a, &b, "after containerd's restart");

    cd.remove_pod(&b.id);
    cd.remove_pod(&a.id);

    let calls = cd.calls();
    for c in &calls {
        eprintln!(
            "{test}: {} {} netns={:?} ifname={} rc={:?}",
            c.plugin,
            c.command,
            c.env("CNI_NETNS"),
            c.env("CNI_IFNAME"),
            c.exit_code
        );
    }
    check_calls(&calls, &a.id, plugins);
    if std::env::var_os("CNI_RS_RECORD_CONTAINERD").is_some() && plugins == Plugins::Ours {
        record(&cd, &calls, &a.id, version);
    }

    // Nothing of the pods remains.
    assert!(leases(&node).is_empty(), "leases left: {:?}", leases(&node));
    assert!(
        names_in(&node, "flannel").is_empty(),
        "saved flannel configs left: {:?}",
        names_in(&node, "flannel")
    );
    let links = node.host().sh("ip", &["-o", "link"]);
    assert!(!links.contains("veth"), "veth left: {links}");
    let rules = node.host().sh("nft", &["list", "ruleset"]);
    for needle in ["8080", a.ip.as_str(), "CNI-DN-"] {
        assert!(
            !rules.contains(needle),
            "portmap rule left ({needle}): {rules}"
        );
    }
    drop(cd);
}

/// What containerd sent: every call succeeded, and pod A got a DEL with its netns
/// (StopPodSandbox) and one without (RemovePodSandbox), both with its port mappings.
fn check_calls(calls: &[Call], a: &str, plugins: Plugins) {
    assert!(!calls.is_empty(), "no plugin call was recorded");
    for call in calls {
        assert_eq!(
            call.exit_code,
            Some(0),
            "{} {} failed: {}",
            call.plugin,
            call.command,
            call.stdout
        );
    }
    let first = match plugins {
        Plugins::Ours => "flannel",
        Plugins::Go => "bridge",
    };
    let of_a = |plugin: &str, command: &str| -> Vec<&Call> {
        calls
            .iter()
            .filter(|c| {
                c.plugin == plugin
                    && c.command == command
                    && c.env("CNI_CONTAINERID") == a
                    && c.env("CNI_IFNAME") == "eth0"
            })
            .collect()
    };
    assert_eq!(of_a(first, "ADD").len(), 1, "{first} ADD of pod A");
    let dels = of_a("portmap", "DEL");
    assert!(
        dels.iter().any(|c| !c.env("CNI_NETNS").is_empty())
            && dels.iter().any(|c| c.env("CNI_NETNS").is_empty()),
        "pod A's DELs (with and without netns): {dels:?}"
    );
    for del in dels {
        let maps = &del.stdin_json()["runtimeConfig"]["portMappings"];
        assert!(
            maps.as_array().is_some_and(|m| m.len() == 1),
            "DEL without the port mappings: {}",
            del.stdin
        );
    }
}

/// Saves pod A's calls of flannel, portmap and loopback (the plugins containerd runs) as a
/// corpus of real runtime input, in the layout of `testdata/runtime-inputs/podman`: one
/// directory per network, `NN-PLUGIN-COMMAND.env|.stdin|.stdout`, with stable strings for
/// what changes from run to run.
fn record(cd: &Containerd, calls: &[Call], a: &str, version: &str) {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/runtime-inputs/containerd")
        .join(format!("cri-flannel-portmap-{version}"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let mine: Vec<&Call> = calls
        .iter()
        .filter(|c| {
            ["flannel", "portmap", "loopback"].contains(&c.plugin.as_str())
                && c.env("CNI_CONTAINERID") == a
        })
        .collect();
    // What varies between runs, in order of appearance.
    let mut subst: Vec<(String, String)> = vec![
        (
            cd.dir().join("bin").display().to_string(),
            "@CNI_BIN_DIR@".into(),
        ),
        (cd.node().dir().display().to_string(), "@NODE_DIR@".into()),
        (a.to_owned(), format!("{:0>64x}", 0xc0ffee)),
    ];
    let mut netns: Vec<String> = Vec::new();
    let mut veths: Vec<String> = Vec::new();
    let mut macs: Vec<String> = Vec::new();
    for call in &mine {
        let ns = call.env("CNI_NETNS");
        if !ns.is_empty() && !netns.contains(&ns.to_owned()) {
            netns.push(ns.to_owned());
        }
        for text in [&call.stdin, &call.stdout] {
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            for result in [&v, &v["prevResult"]] {
                for i in result["interfaces"].as_array().into_iter().flatten() {
                    if let Some(mac) = i["mac"].as_str().filter(|m| !macs.iter().any(|x| x == m)) {
                        macs.push(mac.to_owned());
                    }
                    if let Some(name) = i["name"]
                        .as_str()
                        .filter(|n| n.starts_with("veth") && !veths.iter().any(|x| x == n))
                    {
                        veths.push(name.to_owned());
                    }
                }
            }
        }
    }
    for (n, ns) in netns.iter().enumerate() {
        subst.push((
            ns.clone(),
            format!("/var/run/netns/cni-00000000-0000-0000-0000-{:012}", n + 1),
        ));
    }
    for (n, veth) in veths.iter().enumerate() {
        subst.push((veth.clone(), format!("veth{:08x}", n + 1)));
    }
    for (n, mac) in macs.iter().enumerate() {
        subst.push((mac.clone(), format!("02:00:00:00:00:{:02x}", n + 1)));
    }
    let redact = |text: &str| {
        subst
            .iter()
            .fold(text.to_owned(), |t, (from, to)| t.replace(from, to))
    };
    for (n, call) in mine.iter().enumerate() {
        let base = out.join(format!("{:02}-{}-{}", n + 1, call.plugin, call.command));
        let env = format!(
            "{}# exit code {}\n",
            call.env_text,
            call.exit_code.unwrap_or(-1)
        );
        std::fs::write(base.with_extension("env"), redact(&env)).unwrap();
        std::fs::write(base.with_extension("stdin"), redact(&call.stdin)).unwrap();
        std::fs::write(base.with_extension("stdout"), redact(&call.stdout)).unwrap();
    }
}

#[test]
fn cri_kube_flannel_conflist_0_3_1() {
    scenario("cri_kube_flannel_conflist_0_3_1", "0.3.1", Plugins::Ours);
}

#[test]
fn cri_kube_flannel_conflist_1_0_0() {
    scenario("cri_kube_flannel_conflist_1_0_0", "1.0.0", Plugins::Ours);
}

#[test]
fn cri_go_bridge_portmap_control_0_3_1() {
    scenario("cri_go_bridge_portmap_control_0_3_1", "0.3.1", Plugins::Go);
}

#[test]
fn cri_go_bridge_portmap_control_1_0_0() {
    scenario("cri_go_bridge_portmap_control_1_0_0", "1.0.0", Plugins::Go);
}

/// What a failing test leaves when it panics with pods running and containerd restarted
/// (its shims then orphans): dropping the rig must end every process of it.
#[test]
fn cri_rig_leaves_nothing_behind_on_failure() {
    let test = "cri_rig_leaves_nothing_behind_on_failure";
    if let Some(why) = containerd::missing_tools() {
        skip(test, &why);
        return;
    }
    let node = Node::new();
    let mut cd = Containerd::start(
        &node,
        &Options {
            plugin_dir: PathBuf::from(GO_PLUGIN_DIR),
            conflist: go_conflist(&node, "1.0.0"),
            log_calls: false,
        },
    );
    let a = cd.run_pod("a", &[(8080, 80)]);
    cd.restart();
    let procs = cd.processes();
    assert!(
        procs.contains(&a.pid),
        "pause {} not found in {procs:?}",
        a.pid
    );
    assert!(
        procs.len() >= 4,
        "holder, containerd, shim, pause: {procs:?}"
    );
    drop(cd);
    let left: Vec<i32> = procs
        .into_iter()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
}

/// The README's claim, measured: containerd 1.6 (libcni 1.1.2) cannot read a cniVersion 1.1.0
/// result, so with kube-flannel's conflist at 1.1.0 every RunPodSandbox fails on the runtime
/// side (GC and STATUS need containerd 2.x). containerd then DELs what the ADD made: nothing of
/// the pod may stay.
#[test]
fn cri_containerd_1_6_refuses_a_1_1_0_result_and_cleans_up() {
    let test = "cri_containerd_1_6_refuses_a_1_1_0_result_and_cleans_up";
    if let Some(why) = containerd::missing_tools() {
        skip(test, &why);
        return;
    }
    let node = Node::new();
    write_subnet_env(&node, SUBNET_ENV);
    let cd = Containerd::start(
        &node,
        &Options {
            plugin_dir: plugin_dir(),
            conflist: conflist(&node, "1.1.0"),
            log_calls: false,
        },
    );
    let err = cd
        .try_run_pod("a", &[(8080, 80)])
        .expect_err("containerd 1.6 took a 1.1.0 result");
    assert!(
        err.message()
            .contains("unsupported CNI result version \"1.1.0\""),
        "{}",
        err.message()
    );
    assert!(leases(&node).is_empty(), "leases left: {:?}", leases(&node));
    assert!(
        names_in(&node, "flannel").is_empty(),
        "saved flannel configs left"
    );
    let links = node.host().sh("ip", &["-o", "link"]);
    assert!(!links.contains("veth"), "veth left: {links}");
}
