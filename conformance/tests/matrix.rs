//! The conformance matrix: every plugin × every spec version × ADD, CHECK, DEL, DEL again
//! (and GC/STATUS at 1.1.0), through cnitool as a runtime would call them, compared with
//! snapshots of normalised output. With `CNI_MATRIX_OTHER=<plugin dir>` the same cases also
//! run against another implementation (e.g. Debian's Go plugins in /usr/lib/cni), and every
//! difference is written to `target/matrix-diff.txt` (`scripts/matrix.sh` prints it).

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;

use conformance::Node;
use conformance::normalize::redact;
use serde_json::{Value, json};

const VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];
const CASES: [&str; 5] = ["loopback", "host-local", "bridge", "portmap", "flannel"];

/// The network of one case, with its state paths under `dir`.
fn network(case: &str, version: &str, dir: &Path) -> Value {
    let ipam = json!({"type": "host-local", "dataDir": dir.join("ipam"),
                      "ranges": [[{"subnet": "10.33.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]});
    let bridge = json!({"type": "bridge", "bridge": "mxbr0", "isGateway": true, "ipam": ipam});
    let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true},
                         "stateDir": dir.join("portmap")});
    let plugins = match case {
        "loopback" => json!([{"type": "loopback"}]),
        "host-local" => json!([{"type": "host-local", "ipam": ipam}]),
        "bridge" => json!([bridge]),
        "portmap" => json!([bridge, portmap]),
        _ => json!([{"type": "flannel", "delegate": {"bridge": "mxbr0", "hairpinMode": true},
                     "subnetFile": dir.join("subnet.env"), "dataDir": dir.join("flannel"),
                     "ipam": {"dataDir": dir.join("ipam")}}, portmap]),
    };
    json!({"cniVersion": version, "name": "mxnet", "plugins": plugins})
}

/// Runs every step of one case in one version and returns the normalised transcript.
fn transcript(node: &Node, plugin_dir: &Path, case: &str, version: &str) -> String {
    let dir = node.dir().join(format!("{case}-{version}"));
    fs::create_dir_all(dir.join("net.d")).unwrap();
    fs::write(
        dir.join("subnet.env"),
        "FLANNEL_NETWORK=10.33.0.0/16\nFLANNEL_SUBNET=10.33.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    )
    .unwrap();
    fs::write(
        dir.join("net.d").join("10-mx.conflist"),
        network(case, version, &dir).to_string(),
    )
    .unwrap();
    let (id, ns) = node.container();
    let ifname = if case == "loopback" { "lo" } else { "eth0" };
    let cnitool = conformance::plugin_dir().join("cnitool");
    let run = |command: &str, with_netns: bool| {
        let mut cmd = node.host().command(&cnitool);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NETCONFPATH", dir.join("net.d"))
            .env("CNI_PATH", plugin_dir)
            .env("CNI_CACHE_DIR", dir.join("cache"))
            .env("CNI_CONTAINERID", &id)
            .env("CNI_IFNAME", ifname)
            .env(
                "CAP_ARGS",
                r#"{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}"#,
            )
            .arg(command)
            .arg("mxnet");
        if with_netns {
            cmd.arg(ns.path());
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let err = stderr
            .lines()
            .find(|l| l.starts_with("cnitool:"))
            .unwrap_or_default()
            .to_owned();
        let status = if out.status.success() {
            "ok".to_owned()
        } else {
            format!("error: {err}")
        };
        let body = if stdout.is_empty() {
            String::new()
        } else {
            format!("\n{stdout}")
        };
        format!("{command}: {status}{body}\n")
    };
    let mut t = String::new();
    t.push_str(&run("add", true));
    t.push_str(&run("check", true));
    if version == "1.1.0" {
        t.push_str(&run("status", false));
    }
    t.push_str(&run("del", true));
    t.push_str(&run("del", true));
    if version == "1.1.0" {
        t.push_str(&run("gc", false));
    }
    let veths: Vec<String> = t
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() == 12 && w.starts_with("veth"))
        .map(str::to_owned)
        .collect();
    let mut replacements: Vec<(String, &str)> = vec![
        (dir.display().to_string(), "[DIR]"),
        (ns.path_str(), "[NETNS]"),
        (id.clone(), "[ID]"),
        (plugin_dir.display().to_string(), "[PLUGINS]"),
    ];
    replacements.extend(veths.into_iter().map(|v| (v, "[VETH]")));
    let pairs: Vec<(&str, &str)> = replacements.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    redact(&t, &pairs)
}

fn report(plugin_dir: &Path, case: &str) -> String {
    let node = Node::new();
    let mut out = String::new();
    for version in VERSIONS {
        out.push_str(&format!("### {case} {version}\n"));
        if !plugin_dir.join(case).is_file() {
            out.push_str("plugin missing\n");
            continue;
        }
        out.push_str(&transcript(&node, plugin_dir, case, version));
    }
    out
}

#[test]
fn matrix() {
    let ours = conformance::plugin_dir();
    let other = std::env::var_os("CNI_MATRIX_OTHER").map(std::path::PathBuf::from);
    let mut diff = String::new();
    for case in CASES {
        let mine = report(&ours, case);
        insta::assert_snapshot!(format!("matrix_{case}"), mine);
        if let Some(other) = &other {
            let theirs = report(other, case);
            for (a, b) in mine.split("### ").zip(theirs.split("### ")) {
                if a != b {
                    diff.push_str(&format!(
                        "=== {}\n--- ours\n{a}--- {}\n{b}\n",
                        a.lines().next().unwrap_or_default(),
                        other.display()
                    ));
                }
            }
        }
    }
    if other.is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/matrix-diff.txt");
        fs::write(path, &diff).unwrap();
    }
}
