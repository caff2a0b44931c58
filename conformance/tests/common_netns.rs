//! The namespace, sysctl and netlink code of node-kernel and cni-common's delegation against
//! a real kernel, in namespaces the rig creates.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;

use conformance::Node;
use node_kernel::link::{LinkId, name};
use node_kernel::{Netns, RouteSocket, read_sysctl, write_sysctl};

#[test]
fn sysctl_written_inside_a_namespace_stays_there() {
    let node = Node::new();
    let (_, a) = node.container();
    let (_, b) = node.container();
    let ns = Netns::open(a.path()).unwrap();
    let before = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    ns.run(|| write_sysctl("net/ipv4/ip_forward", "1"))
        .unwrap()
        .unwrap();
    assert_eq!(
        ns.run(|| read_sysctl("net/ipv4/ip_forward"))
            .unwrap()
            .unwrap(),
        "1"
    );
    assert_eq!(a.sh("cat", &["/proc/sys/net/ipv4/ip_forward"]).trim(), "1");
    assert_eq!(b.sh("cat", &["/proc/sys/net/ipv4/ip_forward"]).trim(), "0");
    // The calling thread is back where it was, and its namespace was not changed.
    assert!(!ns.is_current());
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        before
    );
}

#[test]
fn netlink_socket_is_bound_to_the_namespace_it_was_opened_in() {
    let node = Node::new();
    let (_, ns) = node.container();
    ns.sh(
        "ip",
        &[
            "link", "add", "probe0", "type", "veth", "peer", "name", "probe1",
        ],
    );
    let nl = RouteSocket::in_netns(&Netns::open(ns.path()).unwrap()).unwrap();
    let mut names: Vec<String> = nl
        .links()
        .unwrap()
        .iter()
        .filter_map(|m| name(m).map(str::to_owned))
        .collect();
    names.sort();
    assert_eq!(names, ["lo", "probe0", "probe1"]);
    // A targeted query: the link when it exists, nothing (the kernel's ENODEV) when not.
    let probe = nl.link(LinkId::Name("probe1")).unwrap();
    assert!(probe.is_some_and(|l| l.header.index > 1));
    assert!(nl.link(LinkId::Name("absent0")).unwrap().is_none());
}

#[test]
fn delegation_runs_a_built_plugin_with_another_command() {
    let node = Node::new();
    let (id, ns) = node.container();
    let env = cni_common::env::Environment {
        command: cni_common::Command::Add,
        container_id: id,
        netns: Some(ns.path().to_owned()),
        ifname: "lo".into(),
        args: String::new(),
        path: vec![node.plugin_dir().to_owned()],
        netns_override: false,
    };
    let stdin = br#"{"cniVersion":"0.4.0","name":"n","type":"loopback"}"#;
    // Delegates inherit the namespace of the thread that forks them: run from the node's
    // private host namespace, never from the machine's.
    let host = Netns::open(node.host().path()).unwrap();
    host.run(|| {
        let result =
            cni_common::delegate::add("loopback", &env, stdin, cni_common::Version::V0_4_0)
                .unwrap();
        assert_eq!(result.interfaces[0].name, "lo");
        assert!(ns.sh("ip", &["-o", "link", "show", "lo"]).contains("UP"));
        let err = cni_common::delegate::exec(
            "loopback",
            cni_common::Command::Check,
            &env,
            br#"{"cniVersion":"0.3.1","name":"n"}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.code(),
            1,
            "the delegate's own error code is kept: {err}"
        );
        cni_common::delegate::exec("loopback", cni_common::Command::Del, &env, stdin).unwrap();
    })
    .unwrap();
}
