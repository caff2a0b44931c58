//! podman 4 (Debian bookworm's 4.3) with `network_backend = "cni"`, unchanged, on our plugins:
//! `podman run -p 8080:80` on kube-flannel's conflist (flannel → portmap), the published port
//! answers, `podman rm -f` leaves nothing. The same run on Debian's Go plugins (bridge →
//! portmap; Debian has no Go flannel) is the control, and our bridge → portmap the same form.
//!
//! podman runs in the node's network namespace and a private mount namespace with all its
//! state in temp dirs (`conformance::podman`). A logging shim in the CNI bin dir records what
//! podman sends; `CNI_RS_RECORD_PODMAN=1` saves it, redacted, to
//! `testdata/runtime-inputs/podman/`.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use conformance::flannel::{conflist, leases, names_in, testdata, write_subnet_env};
use conformance::node::GO_PLUGIN_DIR;
use conformance::podman::{self, PAGE, Podman, http_get};
use conformance::{Node, TestNetns, plugin_dir, skip};
use serde_json::{Value, json};

const NODE_IP: &str = "198.51.100.1";

/// What `-p 8080:80 -p 127.0.0.1:8081:80 -p 5353:53/udp` reaches portmap as (the same on ADD
/// and DEL, in an order that varies): the spec's lower-case keys, `hostIP` only when given.
fn expected_mappings() -> Vec<String> {
    sorted(&json!([
        {"hostPort": 8081, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"},
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}
    ]))
}

fn sorted(mappings: &Value) -> Vec<String> {
    let mut v: Vec<String> = mappings
        .as_array()
        .unwrap_or_else(|| panic!("portMappings: {mappings}"))
        .iter()
        .map(Value::to_string)
        .collect();
    v.sort();
    v
}

fn at(port: u16) -> SocketAddr {
    format!("{NODE_IP}:{port}").parse().unwrap()
}

fn localhost(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// The bridge → portmap form flannel delegates to, on flannel's subnet.env range.
fn bridge_conflist(node: &Node, version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "cbr0",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
             "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.17.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": node.dir().join("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

fn links(ns: &TestNetns) -> String {
    ns.sh("ip", &["-o", "link"])
}

/// Polls `f` for up to 3 s (httpd starts after `podman run -d` returns).
fn eventually(mut f: impl FnMut() -> Option<String>) -> Option<String> {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let got = f();
        if got.is_some() || Instant::now() > until {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Case {
    test: &'static str,
    /// Directory under testdata/runtime-inputs/podman/ for `CNI_RS_RECORD_PODMAN=1`.
    record_as: &'static str,
    plugin_src: PathBuf,
    /// The conflist's plugin types, each logged by the shim.
    logged: &'static [&'static str],
    flannel: bool,
    conflist: fn(&Node) -> Value,
}

fn run(case: Case) {
    if let Some(why) = podman::missing() {
        skip(case.test, &why);
        return;
    }
    let t0 = Instant::now();
    let root_links_before = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap()
        .stdout;
    let node = Node::new();
    let ext = node.external(&format!("{NODE_IP}/24"), "198.51.100.2/24");
    write_subnet_env(&node, &testdata("subnet.env"));
    let list = (case.conflist)(&node);
    let all = ["flannel", "bridge", "host-local", "portmap", "loopback"];
    let plugins: Vec<&str> = all
        .into_iter()
        .filter(|p| case.plugin_src.join(p).is_file())
        .collect();
    let mut pm = Podman::new(&node, &list, &case.plugin_src, &plugins, case.logged);
    pm.import_busybox();
    let ruleset_before = node.host().sh("nft", &["list", "ruleset"]);

    // The run, as a user types it (plus the rig's cgroup parent).
    let id = pm.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--cgroup-parent",
        &pm.cgroup_parent(),
        "--network",
        "cbr0",
        "-p",
        "8080:80",
        "-p",
        "127.0.0.1:8081:80",
        "-p",
        "5353:53/udp",
        podman::IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let id = id.trim().to_owned();
    let host = node.host();
    let page = Some(PAGE.to_owned());

    // The published port answers: from another machine, from the node itself, on localhost.
    assert_eq!(
        eventually(|| http_get(&ext, at(8080))),
        page,
        "from outside"
    );
    assert_eq!(http_get(host, at(8080)), page, "from the node");
    assert_eq!(http_get(host, localhost(8080)), page, "node's localhost");
    assert_eq!(http_get(host, localhost(8081)), page, "hostIP 127.0.0.1");
    assert_eq!(
        http_get(&ext, at(8081)),
        None,
        "hostIP 127.0.0.1 from outside"
    );

    // While it runs: a lease, a veth, the rules (and flannel's saved config).
    let calls = pm.calls();
    let add = |plugin: &str| {
        calls
            .iter()
            .find(|c| c.plugin == plugin && c.command == "ADD")
            .unwrap_or_else(|| panic!("podman sent no ADD to {plugin}: {calls:#?}"))
    };
    let pm_add = add("portmap");
    assert_eq!(pm_add.var("CNI_CONTAINERID"), Some(id.as_str()));
    let pod_ip = pm_add.stdin_json()["prevResult"]["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(pod_ip.starts_with("10.1.17."), "{pod_ip}");
    let netns = pm_add.var("CNI_NETNS").unwrap().to_owned();
    let veth: Vec<String> = pm_add.stdin_json()["prevResult"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .filter(|n| n.starts_with("veth"))
        .map(str::to_owned)
        .collect();
    assert_eq!(veth.len(), 1, "{}", pm_add.stdin);
    assert_eq!(leases(&node), vec![pod_ip.clone()]);
    assert!(links(host).contains(&veth[0]));
    let rules = host.sh("nft", &["list", "ruleset"]);
    assert!(rules.contains("8080") && rules.contains(&pod_ip), "{rules}");
    if case.flannel {
        assert_eq!(names_in(&node, "flannel"), vec![id.clone()]);
    }

    // podman rm -f: one DEL, and nothing left.
    pm.ok(&["rm", "-f", "-t", "0", "web"]);
    assert_eq!(pm.ok(&["ps", "-a", "-q"]).trim(), "", "a container left");
    assert_eq!(leases(&node), Vec::<String>::new(), "lease left");
    let after = links(host);
    assert!(!after.contains("veth"), "veth left: {after}");
    assert_eq!(
        names_in(&node, "flannel"),
        Vec::<String>::new(),
        "saved flannel file left"
    );
    let rules = host.sh("nft", &["list", "ruleset"]);
    assert!(
        !rules.contains("8080") && !rules.contains("8081") && !rules.contains(&pod_ip),
        "port mapping or masquerade rules left:\n{rules}\nbefore the run:\n{ruleset_before}"
    );
    assert_eq!(http_get(&ext, at(8080)), None, "port still answers");

    // What podman sent: every call succeeded, one ADD and one DEL for each plugin of the
    // list, portMappings in the spec's spelling on both.
    let calls = pm.calls();
    for c in &calls {
        assert_eq!(c.exit, 0, "{} {} failed: {}", c.plugin, c.command, c.stdout);
    }
    for &plugin in case.logged {
        for cmd in ["ADD", "DEL"] {
            let n = calls
                .iter()
                .filter(|c| c.plugin == plugin && c.command == cmd)
                .count();
            assert_eq!(n, 1, "{plugin} {cmd} calls: {calls:#?}");
        }
    }
    for c in calls
        .iter()
        .filter(|c| c.plugin == "portmap" && c.command != "VERSION")
    {
        assert_eq!(
            sorted(&c.stdin_json()["runtimeConfig"]["portMappings"]),
            expected_mappings(),
            "portmap {}",
            c.command
        );
    }
    if std::env::var_os("CNI_RS_RECORD_PODMAN").is_some() {
        let dest = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/runtime-inputs/podman")
            .join(case.record_as);
        pm.record(&dest, &node);
    }

    // The rig leaves nothing either: processes, mounts, cgroups, netns pins, root links.
    let problems = pm.teardown();
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        !Path::new(&netns).exists(),
        "{netns} in the real /run/netns"
    );
    let root_links_after = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap()
        .stdout;
    let root_after = String::from_utf8_lossy(&root_links_after);
    assert!(!root_after.contains(&veth[0]), "veth in the root netns");
    if !String::from_utf8_lossy(&root_links_before).contains("cni0") {
        assert!(!root_after.contains("cni0:"), "cni0 in the root netns");
    }
    eprintln!("{}: {:?}", case.test, t0.elapsed());
}

#[test]
fn podman_on_our_flannel_portmap_cni_1_0_0() {
    run(Case {
        test: "podman_on_our_flannel_portmap_cni_1_0_0",
        record_as: "flannel-portmap-1.0.0",
        plugin_src: plugin_dir(),
        logged: &["flannel", "portmap"],
        flannel: true,
        conflist: |node| conflist(node, "1.0.0"),
    });
}

#[test]
fn podman_on_our_flannel_portmap_cni_0_4_0() {
    run(Case {
        test: "podman_on_our_flannel_portmap_cni_0_4_0",
        record_as: "flannel-portmap-0.4.0",
        plugin_src: plugin_dir(),
        logged: &["flannel", "portmap"],
        flannel: true,
        conflist: |node| conflist(node, "0.4.0"),
    });
}

#[test]
fn podman_on_our_bridge_portmap() {
    run(Case {
        test: "podman_on_our_bridge_portmap",
        record_as: "bridge-portmap-1.0.0",
        plugin_src: plugin_dir(),
        logged: &["bridge", "portmap"],
        flannel: false,
        conflist: |node| bridge_conflist(node, "1.0.0"),
    });
}

/// kube-flannel's conflist exactly as shipped (cniVersion 0.3.1: no prevResult on DEL).
#[test]
fn podman_on_our_flannel_portmap_cni_0_3_1() {
    run(Case {
        test: "podman_on_our_flannel_portmap_cni_0_3_1",
        record_as: "flannel-portmap-0.3.1",
        plugin_src: plugin_dir(),
        logged: &["flannel", "portmap"],
        flannel: true,
        conflist: |node| conflist(node, "0.3.1"),
    });
}

/// The control: the same run on Debian's Go plugins.
#[test]
fn podman_on_go_bridge_portmap_control() {
    run(Case {
        test: "podman_on_go_bridge_portmap_control",
        record_as: "go-bridge-portmap-1.0.0",
        plugin_src: PathBuf::from(GO_PLUGIN_DIR),
        logged: &["bridge", "portmap"],
        flannel: false,
        conflist: |node| bridge_conflist(node, "1.0.0"),
    });
}
