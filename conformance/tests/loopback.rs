//! The loopback binary, run as a runtime runs it, in private namespaces.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use conformance::OutcomeExt;
use conformance::chain::Attachment;
use conformance::normalize::redact;
use conformance::{Chain, Node, TestNetns};
use serde_json::json;

const VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

fn conf(version: &str) -> String {
    json!({"cniVersion": version, "name": "cni-loopback", "type": "loopback"}).to_string()
}

fn lo_is_up(ns: &TestNetns) -> bool {
    let out = ns.sh("ip", &["-o", "link", "show", "lo"]);
    out.contains(",UP") || out.contains("<UP")
}

#[test]
fn every_command_in_every_version() {
    let node = Node::new();
    for version in VERSIONS {
        let (id, ns) = node.container();
        let call = |command: &str| {
            node.plugin("loopback")
                .command(command)
                .container(&id, &ns.path_str())
                .env("CNI_IFNAME", "lo")
                .stdin(conf(version))
                .run()
        };
        assert!(!lo_is_up(&ns));

        let add = call("ADD");
        add.ok();
        assert!(lo_is_up(&ns), "{version}: lo not up after ADD");
        insta::assert_snapshot!(
            format!("add_{version}"),
            redact(&add.stdout, &[(&ns.path_str(), "[NETNS]")])
        );

        let check = call("CHECK");
        if version >= "0.4.0" {
            assert!(check.success(), "{version}: {check:?}");
        } else {
            let msg = check.err(1);
            assert_eq!(msg, "incompatible CNI versions");
        }

        for command in ["STATUS", "GC"] {
            let out = call(command);
            if version == "1.1.0" {
                assert!(out.success(), "{command}: {out:?}");
                assert!(out.stdout.is_empty());
            } else {
                out.err(1);
            }
        }

        let del = call("DEL");
        assert!(del.success(), "{version}: {del:?}");
        assert!(del.stdout.is_empty());
        assert!(!lo_is_up(&ns), "{version}: lo still up after DEL");
        assert!(call("DEL").success(), "{version}: second DEL failed");

        if version >= "0.4.0" {
            assert_eq!(call("CHECK").err(103), "loopback interface is down");
        }
    }
}

#[test]
fn version_and_about() {
    let node = Node::new();
    let out = node
        .plugin("loopback")
        .command("VERSION")
        .stdin("not json")
        .run();
    assert!(out.success());
    assert_eq!(
        out.stdout,
        "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
    );
    let about = node.plugin("loopback").run();
    assert!(about.success());
    assert!(about.stdout.is_empty());
    assert!(
        about.stderr.starts_with("CNI loopback plugin v"),
        "{about:?}"
    );
}

/// One invalid invocation and the error it must give.
struct BadCase {
    name: &'static str,
    set: Vec<(&'static str, &'static str)>,
    unset: Vec<&'static str>,
    stdin: String,
    code: u64,
    msg: &'static str,
}

fn bad(name: &'static str, stdin: &str, code: u64, msg: &'static str) -> BadCase {
    BadCase {
        name,
        set: vec![],
        unset: vec![],
        stdin: stdin.to_owned(),
        code,
        msg,
    }
}

impl BadCase {
    fn set(mut self, key: &'static str, value: &'static str) -> Self {
        self.set.push((key, value));
        self
    }
    fn unset(mut self, key: &'static str) -> Self {
        self.unset.push(key);
        self
    }
}

#[test]
fn bad_input_is_refused_before_anything_changes() {
    let node = Node::new();
    let (id, ns) = node.container();
    let good = conf("1.0.0");
    let decode = "error unmarshall network config";
    let cases = [
        bad("malformed json", "{\"name\":", 6, decode),
        bad("empty stdin", "", 6, decode),
        bad(
            "not an object",
            "[1,2]",
            6,
            "error unmarshall network config: not a JSON object",
        ),
        bad(
            "wrong type",
            r#"{"name":"n","cniVersion":"1.0.0","ipMasq":"yes"}"#,
            6,
            decode,
        ),
        bad(
            "missing name",
            r#"{"cniVersion":"1.0.0"}"#,
            7,
            "missing network name",
        ),
        bad(
            "bad name",
            r#"{"cniVersion":"1.0.0","name":"../etc"}"#,
            7,
            "invalid characters found in network name",
        ),
        bad(
            "unsupported version",
            r#"{"cniVersion":"2.0.0","name":"n"}"#,
            1,
            "incompatible CNI versions",
        ),
        bad(
            "garbage version",
            r#"{"cniVersion":"one","name":"n"}"#,
            6,
            "invalid version \"one\"",
        ),
        bad(
            "missing vars",
            &good,
            4,
            "required env variables [CNI_CONTAINERID,CNI_PATH] missing",
        )
        .unset("CNI_CONTAINERID")
        .unset("CNI_PATH"),
        bad(
            "empty netns on ADD",
            &good,
            4,
            "required env variables [CNI_NETNS] missing",
        )
        .set("CNI_NETNS", ""),
        bad(
            "traversal in container id",
            &good,
            4,
            "invalid characters in containerID",
        )
        .set("CNI_CONTAINERID", "../../x"),
        bad(
            "slash in ifname",
            &good,
            4,
            "interface name contains / or : or whitespace characters",
        )
        .set("CNI_IFNAME", "a/b"),
        bad("long ifname", &good, 4, "interface name is too long")
            .set("CNI_IFNAME", "abcdefghijklmnop"),
        bad("dot ifname", &good, 4, "interface name is . or ..").set("CNI_IFNAME", ".."),
        bad("unknown command", &good, 4, "unknown CNI_COMMAND: FROB").set("CNI_COMMAND", "FROB"),
        bad(
            "bad prevResult",
            r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"x"}]}}"#,
            6,
            "failed to parse prevResult",
        ),
        bad(
            "missing netns",
            &good,
            100,
            "network namespace /nonexistent/netns does not exist",
        )
        .set("CNI_NETNS", "/nonexistent/netns"),
    ];
    for case in cases {
        let mut call = node
            .plugin("loopback")
            .command("ADD")
            .container(&id, &ns.path_str())
            .stdin(case.stdin.clone());
        for (k, v) in &case.set {
            call = call.env(k, v);
        }
        for k in &case.unset {
            call = call.unset(k);
        }
        let out = call.run();
        let name = case.name;
        assert_eq!(out.exit_code, 1, "{name}: {out:?}");
        let got = out.err(case.code);
        assert!(
            got.starts_with(case.msg),
            "{name}: got {got:?}, want {:?}",
            case.msg
        );
        assert!(!out.stderr.contains("panicked"), "{name}: {out:?}");
        assert!(!lo_is_up(&ns), "{name}: state changed");
    }
}

#[test]
fn del_succeeds_without_a_namespace() {
    let node = Node::new();
    let (id, mut ns) = node.container();
    let netns = ns.path_str();
    let call = |netns: &str| {
        node.plugin("loopback")
            .command("DEL")
            .container(&id, netns)
            .stdin(conf("1.0.0"))
            .run()
    };
    node.plugin("loopback")
        .command("ADD")
        .container(&id, &netns)
        .stdin(conf("1.0.0"))
        .run()
        .ok();
    assert!(call("").success(), "empty CNI_NETNS");
    ns.delete();
    let out = call(&netns);
    assert!(out.success(), "deleted netns: {out:?}");
    // A leftover file that is no longer a namespace counts as gone too.
    std::fs::write(&netns, b"").unwrap();
    assert!(call(&netns).success(), "stale netns file");
    std::fs::remove_file(&netns).unwrap();
}

#[test]
fn refuses_to_act_on_its_own_namespace() {
    let node = Node::new();
    let host = node.host().path_str();
    assert!(lo_is_up(node.host()));
    let out = node
        .plugin("loopback")
        .command("DEL")
        .container("c1", &host)
        .stdin(conf("1.0.0"))
        .run();
    assert_eq!(
        out.err(4),
        "plugin's netns and netns from CNI_NETNS should not be the same"
    );
    assert!(lo_is_up(node.host()), "the host's lo was brought down");
}

#[test]
fn non_loopback_address_on_lo_is_an_error() {
    let node = Node::new();
    let (id, ns) = node.container();
    ns.sh("ip", &["addr", "add", "10.99.0.1/24", "dev", "lo"]);
    let out = node
        .plugin("loopback")
        .command("ADD")
        .container(&id, &ns.path_str())
        .stdin(conf("1.0.0"))
        .run();
    assert_eq!(
        out.err(107),
        "loopback interface found with non-loopback address \"10.99.0.1\""
    );
}

#[test]
fn as_a_chain_with_prev_result() {
    let node = Node::new();
    let (id, ns) = node.container();
    let att = Attachment::new(&id, &ns.path_str(), "lo");
    // containerd's loopback network, then a second loopback that must pass prevResult through.
    let chain = Chain::new(json!({
        "cniVersion": "1.0.0",
        "name": "cni-loopback",
        "plugins": [{"type": "loopback"}, {"type": "loopback", "capabilities": {"ips": true}}]
    }))
    .with_capability_args(json!({"ips": ["10.0.0.9/24"]}));
    let first = node
        .plugin("loopback")
        .command("ADD")
        .container(&id, &ns.path_str())
        .config(&chain.request_config(0, None))
        .run()
        .ok();
    let result = chain.add(&node, &att).unwrap();
    assert_eq!(result, first, "prevResult was not passed through unchanged");
    assert!(lo_is_up(&ns));
    chain.check(&node, &att, &result).unwrap();
    chain.del(&node, &att, Some(&result)).unwrap();
    assert!(!lo_is_up(&ns));
    chain.del(&node, &att, Some(&result)).unwrap();
    let err = chain.check(&node, &att, &result).unwrap_err();
    assert_eq!(err.index, 0);
    assert_eq!(err.outcome.err(103), "loopback interface is down");
}

#[test]
fn containerd_loopback_network_from_testdata() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/loopback.conflist");
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let chain = Chain::new(list);
    let node = Node::new();
    let (id, ns) = node.container();
    let att = Attachment::new(&id, &ns.path_str(), "lo");
    let result = chain.add(&node, &att).unwrap();
    assert_eq!(result["cniVersion"], "1.1.0");
    assert_eq!(result["interfaces"][0]["name"], "lo");
    chain.check(&node, &att, &result).unwrap();
    chain.del(&node, &att, Some(&result)).unwrap();
    assert!(!lo_is_up(&ns));
}
