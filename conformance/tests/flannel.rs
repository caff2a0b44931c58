//! kube-flannel's conflist (flannel → portmap) with the suite's plugins, as a runtime runs it.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use conformance::OutcomeExt;
use std::fs;
use std::net::SocketAddr;

use conformance::chain::Attachment;
use conformance::traffic::{tcp_get, tcp_server};
use conformance::{Chain, Node, Pod, TestNetns};
use serde_json::{Value, json};

use conformance::flannel::{conflist, leases, testdata, write_subnet_env};

fn names_in(dir: std::path::PathBuf) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn chain(node: &Node, version: &str, mappings: Value) -> Chain {
    Chain::new(conflist(node, version)).with_capability_args(json!({"portMappings": mappings}))
}

fn pings(ns: &TestNetns, to: &str) -> bool {
    let fam = if to.contains(':') { "-6" } else { "-4" };
    ns.run("ping", &[fam, "-c1", "-W1", "-q", to])
        .status
        .success()
}

#[test]
fn kube_flannel_conflist_end_to_end() {
    let node = Node::new();
    let ext = node.external("198.51.100.1/24", "198.51.100.2/24");
    write_subnet_env(&node, &testdata("subnet.env"));
    let c = chain(
        &node,
        "0.3.1",
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
    );
    let a = Pod::add(&node, &c);
    let plain = chain(&node, "0.3.1", json!([]));
    let b = Pod::add(&node, &plain);

    // The bridge and the pods as flanneld's subnet says.
    let cni0 = node.host().sh("ip", &["-4", "addr", "show", "cni0"]);
    assert!(
        cni0.contains("inet 10.1.17.1/24") && cni0.contains("mtu 1472"),
        "{cni0}"
    );
    for pod in [&a, &b] {
        assert!(
            pod.address(true).starts_with("10.1.17."),
            "{}",
            pod.address(true)
        );
        let routes = pod.ns.sh("ip", &["-4", "route"]);
        assert!(routes.contains("default via 10.1.17.1"), "{routes}");
        assert!(routes.contains("10.1.0.0/16 via 10.1.17.1"), "{routes}");
        assert!(
            pod.ns
                .sh("ip", &["link", "show", "eth0"])
                .contains("mtu 1472")
        );
    }
    assert!(pings(&a.ns, b.address(true).split('/').next().unwrap()));
    assert!(pings(&b.ns, "10.1.17.1"));
    let _srv = tcp_server(&a.ns, 80, "pod a");
    let to: SocketAddr = "198.51.100.1:8080".parse().unwrap();
    assert_eq!(
        tcp_get(&ext, to),
        Some("pod a".to_owned()),
        "hostPort through flannel"
    );

    // The saved delegate config is, byte for byte, what the Go plugin writes.
    let saved = fs::read_to_string(node.dir().join("flannel").join(&a.att.container_id)).unwrap();
    let golden = testdata("saved-by-go.json")
        .replace("@IPAM_DIR@", &node.dir().join("ipam").display().to_string());
    assert_eq!(saved, golden.trim_end_matches('\n'));

    a.del(&node, &c);
    b.del(&node, &plain);
    assert!(
        names_in(node.dir().join("flannel")).is_empty(),
        "saved config left"
    );
    assert!(leases(&node).is_empty(), "lease left: {:?}", leases(&node));
    assert!(
        !node.host().sh("ip", &["link"]).contains("veth"),
        "veth left"
    );
}

#[test]
fn dual_stack_and_ipv6_only_subnets() {
    for (env, v4, v6) in [
        (
            "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_IPV6_NETWORK=fd44::/56\n\
             FLANNEL_IPV6_SUBNET=fd44:0:0:17::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
            true,
            true,
        ),
        (
            "FLANNEL_IPV6_NETWORK=fd44::/56\nFLANNEL_IPV6_SUBNET=fd44:0:0:17::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
            false,
            true,
        ),
    ] {
        let node = Node::new();
        write_subnet_env(&node, env);
        let c = chain(&node, "1.0.0", json!([]));
        let a = Pod::add(&node, &c);
        let b = Pod::add(&node, &c);
        if v4 {
            assert!(pings(&a.ns, b.address(true).split('/').next().unwrap()));
        }
        if v6 {
            let b6 = b.address(false);
            assert!(b6.starts_with("fd44:0:0:17::"), "{b6}");
            assert!(pings(&a.ns, b6.split('/').next().unwrap()));
            let routes = a.ns.sh("ip", &["-6", "route"]);
            assert!(routes.contains("fd44::/56 via fd44:0:0:17::1"), "{routes}");
        }
        assert_eq!(
            a.result["ips"].as_array().unwrap().len(),
            usize::from(v4) + usize::from(v6)
        );
        a.del(&node, &c);
        b.del(&node, &c);
        assert!(leases(&node).is_empty());
    }
}

#[test]
fn subnet_env_and_config_errors() {
    let node = Node::new();
    let (id, ns) = node.container();
    let att = Attachment::new(&id, &ns.path_str(), "eth0");
    let c = chain(&node, "1.0.0", json!([]));
    // Not written yet: try again later, and say why.
    let err = c.add(&node, &att).unwrap_err();
    let msg = err.outcome.err(11);
    assert!(
        msg.contains("subnet.env does not exist: flanneld has not written it yet"),
        "{msg}"
    );
    write_subnet_env(
        &node,
        "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.300/24\n",
    );
    let msg = c.add(&node, &att).unwrap_err().outcome.err(7);
    assert!(
        msg.contains("line 2: FLANNEL_SUBNET=10.1.17.300/24 is not a CIDR"),
        "{msg}"
    );
    assert!(
        msg.starts_with("failed to load flannel 'subnet.env' file:"),
        "{msg}"
    );
    write_subnet_env(
        &node,
        "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\n",
    );
    let msg = c.add(&node, &att).unwrap_err().outcome.err(7);
    assert!(
        msg.contains("is missing FLANNEL_MTU, FLANNEL_IPMASQ"),
        "{msg}"
    );
    let mut list = conflist(&node, "1.0.0");
    list["plugins"][0]["delegate"]["name"] = json!("x");
    let msg = Chain::new(list)
        .add(&node, &att)
        .unwrap_err()
        .outcome
        .err(7);
    assert_eq!(
        msg,
        "'delegate' dictionary must not have 'name' field, it'll be set by flannel"
    );
    assert!(
        names_in(node.dir().join("flannel")).is_empty(),
        "state written by a failed ADD"
    );
}

#[test]
fn a_failed_delegate_add_leaves_nothing() {
    let node = Node::new();
    // A /30: one address for pods besides the gateway.
    write_subnet_env(
        &node,
        "FLANNEL_NETWORK=10.9.0.0/16\nFLANNEL_SUBNET=10.9.0.1/30\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n",
    );
    let c = chain(&node, "1.0.0", json!([]));
    let first = Pod::add(&node, &c);
    let (id, ns) = node.container();
    let att = Attachment::new(&id, &ns.path_str(), "eth0");
    let err = c.add(&node, &att).unwrap_err();
    let msg = err.outcome.err(106);
    assert!(
        msg.starts_with("failed to delegate add: failed to allocate for range 0"),
        "{msg}"
    );
    assert_eq!(
        names_in(node.dir().join("flannel")),
        [first.att.container_id.as_str()]
    );
    assert_eq!(leases(&node).len(), 1);
    assert!(!ns.sh("ip", &["link"]).contains("eth0"));
    // The runtime's DEL after the failed ADD finds nothing to undo and succeeds.
    c.del(&node, &att, None).unwrap();
    first.del(&node, &c);
}

#[test]
fn a_pod_added_by_the_go_plugin_is_deleted_by_ours() {
    let node = Node::new();
    write_subnet_env(&node, &testdata("subnet.env"));
    let (id, ns) = node.container();
    let golden = testdata("saved-by-go.json")
        .replace("@IPAM_DIR@", &node.dir().join("ipam").display().to_string());
    // What the Go flannel plugin did at ADD: save the config, run the bridge with it.
    fs::create_dir_all(node.dir().join("flannel")).unwrap();
    fs::write(node.dir().join("flannel").join(&id), golden.trim_end()).unwrap();
    let out = node
        .plugin("bridge")
        .command("ADD")
        .container(&id, &ns.path_str())
        .stdin(golden.trim_end())
        .run();
    out.ok();
    assert_eq!(leases(&node).len(), 1);
    let c = chain(&node, "0.3.1", json!([]));
    c.del(&node, &Attachment::new(&id, &ns.path_str(), "eth0"), None)
        .unwrap();
    assert!(leases(&node).is_empty(), "lease left");
    assert!(
        !ns.sh("ip", &["link"]).contains("eth0"),
        "container interface left"
    );
    assert!(
        names_in(node.dir().join("flannel")).is_empty(),
        "saved config left"
    );
}

#[test]
fn del_keeps_the_saved_config_until_the_delegate_succeeds() {
    let node = Node::new();
    write_subnet_env(&node, &testdata("subnet.env"));
    let c = chain(&node, "1.0.0", json!([]));
    let pod = Pod::add(&node, &c);
    // A CNI_PATH without host-local: the bridge's IPAM DEL fails, so flannel's DEL fails.
    let partial = node.dir().join("partial-bin");
    fs::create_dir_all(&partial).unwrap();
    for p in ["flannel", "bridge", "portmap"] {
        std::os::unix::fs::symlink(node.plugin_dir().join(p), partial.join(p)).unwrap();
    }
    let conf = c.request_config(0, None);
    let out = node
        .plugin("flannel")
        .command("DEL")
        .attachment(Some(&pod.att))
        .env("CNI_PATH", &partial.display().to_string())
        .config(&conf)
        .run();
    assert!(
        out.err(102).starts_with("failed to delegate del"),
        "{out:?}"
    );
    assert_eq!(
        names_in(node.dir().join("flannel")),
        [pod.att.container_id.as_str()]
    );
    // Retried with the full CNI_PATH: the lease is released and only then the file goes.
    pod.del(&node, &c);
    assert!(leases(&node).is_empty());
    assert!(names_in(node.dir().join("flannel")).is_empty());
}

#[test]
fn check_status_and_gc() {
    let node = Node::new();
    let c = chain(&node, "1.1.0", json!([]));
    let status = || {
        node.plugin("flannel")
            .command("STATUS")
            .config(&c.request_config(0, None))
            .run()
    };
    let msg = status().err(50);
    assert!(msg.contains("flanneld has not written it yet"), "{msg}");
    write_subnet_env(&node, &testdata("subnet.env"));
    assert!(status().success());

    let keep = Pod::add(&node, &c);
    let stale = Pod::add(&node, &c);
    c.check(&node, &keep.att, &keep.result).unwrap();
    let v4 = keep.address(true);
    keep.ns.sh("ip", &["addr", "del", &v4, "dev", "eth0"]);
    let err = c.check(&node, &keep.att, &keep.result).unwrap_err();
    assert_eq!(err.plugin, "flannel");
    assert!(err.outcome.err(103).contains(&v4));

    let mut gc = c.request_config(0, None);
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": keep.att.container_id, "ifname": "eth0"}]);
    let out = node
        .plugin("flannel")
        .command("GC")
        .unset("CNI_IFNAME")
        .config(&gc)
        .run();
    assert!(out.success(), "{out:?}");
    assert_eq!(
        names_in(node.dir().join("flannel")),
        [keep.att.container_id.as_str()]
    );
    assert_eq!(
        leases(&node),
        [keep.address(true).split('/').next().unwrap().to_owned()]
    );
    keep.del(&node, &c);
    stale.del(&node, &c);
}

#[test]
fn every_spec_version_through_the_chain() {
    for version in [
        "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
    ] {
        let node = Node::new();
        write_subnet_env(&node, &testdata("subnet.env"));
        let c = chain(
            &node,
            version,
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        let pod = Pod::add(&node, &c);
        assert_eq!(pod.result["cniVersion"], version);
        if version < "0.3.0" {
            assert!(
                pod.result["ip4"]["ip"]
                    .as_str()
                    .unwrap()
                    .starts_with("10.1.17."),
                "{version}"
            );
        } else {
            assert_eq!(pod.result["ips"][0]["interface"], 2, "{version}");
        }
        if version >= "0.4.0" {
            c.check(&node, &pod.att, &pod.result).unwrap();
        }
        pod.del(&node, &c);
        pod.del(&node, &c);
        assert!(leases(&node).is_empty(), "{version}");
        assert!(names_in(node.dir().join("flannel")).is_empty(), "{version}");
    }
}

#[test]
fn debug_log_records_every_invocation_of_the_chain() {
    let node = Node::new();
    write_subnet_env(&node, &testdata("subnet.env"));
    let log = node.dir().join("debug.log");
    let c = chain(&node, "1.0.0", json!([]));
    let (id, ns) = node.container();
    let conf = c.request_config(0, None);
    let out = node
        .plugin("flannel")
        .command("ADD")
        .container(&id, &ns.path_str())
        .env("CNI_RS_DEBUG_LOG", &log.display().to_string())
        .config(&conf)
        .run();
    let result = out.ok();
    let text = fs::read_to_string(&log).unwrap();
    let add_line = format!("container={id}: ADD network=cbr0");
    for needle in [
        "flannel[",
        add_line.as_str(),
        "bridge[",
        "host-local[",
        "allocated 10.1.17.",
        "config saved at",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} missing from the log:\n{text}"
        );
    }
    assert!(!out.stdout.contains("network=cbr0"), "log lines on stdout");
    // Off by default: a DEL without the variable writes nothing more.
    let before = text.len();
    let mut del = conf.clone();
    del["prevResult"] = result;
    let out = node
        .plugin("flannel")
        .command("DEL")
        .container(&id, &ns.path_str())
        .config(&del)
        .run();
    assert!(out.success());
    assert_eq!(fs::read_to_string(&log).unwrap().len(), before);
}
