//! cnitool as a user runs it: config discovery, caching, chains, and its error messages.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::process::Output;

use conformance::{Node, TestNetns};
use serde_json::{Value, json};

fn cnitool(node: &Node, netconf: &Path, args: &[&str], ns: Option<&TestNetns>) -> Output {
    let mut cmd = node
        .host()
        .command(conformance::plugin_dir().join("cnitool"));
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("NETCONFPATH", netconf)
        .env("CNI_PATH", node.plugin_dir())
        .env("CNI_CACHE_DIR", node.dir().join("cache"))
        .args(args);
    if let Some(ns) = ns {
        cmd.arg(ns.path());
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, v: &Value) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), v.to_string()).unwrap();
}

fn bridge_net(node: &Node, name: &str, version: &str) -> Value {
    json!({"cniVersion": version, "name": name, "plugins": [{"type": "bridge",
        "bridge": "ctbr0", "isGateway": true,
        "ipam": {"type": "host-local", "subnet": "10.44.0.0/24", "dataDir": node.dir().join("ipam")}}]})
}

#[test]
fn add_check_del_with_the_cache_and_a_single_conf_file() {
    let node = Node::new();
    let netconf = node.dir().join("net.d");
    write(
        &netconf,
        "20-bridge.conflist",
        &bridge_net(&node, "brnet", "1.0.0"),
    );
    // A plain .conf file is a one-plugin network.
    write(
        &netconf,
        "10-lo.conf",
        &json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}),
    );
    let (_, ns) = node.container();
    let add = cnitool(&node, &netconf, &["add", "brnet"], Some(&ns));
    assert!(add.status.success(), "{}", stderr(&add));
    let result: Value = serde_json::from_slice(&add.stdout).unwrap();
    assert_eq!(result["ips"][0]["address"], "10.44.0.2/24");
    assert_eq!(
        fs::read_dir(node.dir().join("cache").join("results"))
            .unwrap()
            .count(),
        1
    );
    let check = cnitool(&node, &netconf, &["check", "brnet"], Some(&ns));
    assert!(check.status.success(), "{}", stderr(&check));
    let lo = cnitool(&node, &netconf, &["add", "lo"], Some(&ns));
    assert!(lo.status.success(), "{}", stderr(&lo));
    for net in ["brnet", "lo"] {
        let del = cnitool(&node, &netconf, &["del", net], Some(&ns));
        assert!(del.status.success(), "{}", stderr(&del));
    }
    assert_eq!(
        fs::read_dir(node.dir().join("cache").join("results"))
            .unwrap()
            .count(),
        0
    );
    let check = cnitool(&node, &netconf, &["check", "brnet"], Some(&ns));
    assert!(
        stderr(&check).contains("no cached result"),
        "{}",
        stderr(&check)
    );
}

#[test]
fn disable_check_and_gc_are_honoured() {
    let node = Node::new();
    let netconf = node.dir().join("net.d");
    let mut net = bridge_net(&node, "brnet", "1.1.0");
    net["disableCheck"] = json!("true");
    net["disableGC"] = json!(true);
    write(&netconf, "10.conflist", &net);
    let (_, ns) = node.container();
    assert!(
        cnitool(&node, &netconf, &["add", "brnet"], Some(&ns))
            .status
            .success()
    );
    // CHECK would fail after the address is gone, but it is disabled.
    ns.sh("ip", &["addr", "flush", "dev", "eth0"]);
    assert!(
        cnitool(&node, &netconf, &["check", "brnet"], Some(&ns))
            .status
            .success()
    );
    // GC would release the lease of this uncached pod, but it is disabled.
    fs::remove_dir_all(node.dir().join("cache")).unwrap();
    assert!(
        cnitool(&node, &netconf, &["gc", "brnet"], None)
            .status
            .success()
    );
    assert!(
        node.dir()
            .join("ipam")
            .join("brnet")
            .join("10.44.0.2")
            .exists()
    );
}

#[test]
fn clear_errors() {
    let node = Node::new();
    let netconf = node.dir().join("net.d");
    write(
        &netconf,
        "10.conflist",
        &bridge_net(&node, "brnet", "1.0.0"),
    );
    let (_, ns) = node.container();
    let missing = cnitool(&node, &netconf, &["add", "nope"], Some(&ns));
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no net configuration with name \"nope\""),
        "{}",
        stderr(&missing)
    );
    write(
        &netconf,
        "20.conflist",
        &json!({"cniVersion": "1.0.0", "name": "ghost", "plugins": [{"type": "no-such-plugin"}]}),
    );
    let ghost = cnitool(&node, &netconf, &["add", "ghost"], Some(&ns));
    assert!(
        stderr(&ghost).contains("failed to find plugin \"no-such-plugin\""),
        "{}",
        stderr(&ghost)
    );
    fs::write(netconf.join("30.conflist"), "{ not json").unwrap();
    let broken = cnitool(&node, &netconf, &["add", "other"], Some(&ns));
    assert!(
        stderr(&broken).contains("error parsing configuration"),
        "{}",
        stderr(&broken)
    );
    assert!(
        stderr(&broken).contains("30.conflist"),
        "{}",
        stderr(&broken)
    );
    let usage = cnitool(&node, &netconf, &["frob", "brnet"], None);
    assert!(
        stderr(&usage).contains("usage: cnitool"),
        "{}",
        stderr(&usage)
    );
}
