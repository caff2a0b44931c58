//! The corpus of what real runtimes send (`testdata/runtime-inputs/`), each case run through
//! its chain as the runtime runs it — with the runtime's spelling of every key, its CNI_ARGS
//! and its second DEL without a netns — on our plugins and on the Go reference plugins, with
//! the same outcome required of both.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cni_common::Command;
use conformance::chain::{Attachment, Exec, ExecError, Output};
use conformance::flannel::{SUBNET_ENV, write_subnet_env};
use conformance::node::GO_PLUGIN_DIR;
use conformance::traffic::{tcp_get, tcp_server};
use conformance::{Chain, Node};
use serde_json::{Value, json};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/runtime-inputs");

/// Every case file: `<runtime>/<case>.json` (the runtime folders also keep raw logs in
/// sub-folders, which are the sources of these cases).
fn cases() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for runtime in fs::read_dir(CORPUS).unwrap().map(|e| e.unwrap().path()) {
        if !runtime.is_dir() {
            continue;
        }
        for file in fs::read_dir(&runtime).unwrap().map(|e| e.unwrap().path()) {
            if file.extension().is_some_and(|e| e == "json") {
                let name = file.strip_prefix(CORPUS).unwrap().display().to_string();
                let case = serde_json::from_str(&fs::read_to_string(&file).unwrap())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                out.push((name, case));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Runs plugins with the case's CNI_ARGS, as the runtime sent them.
struct WithArgs<'a> {
    node: &'a Node,
    args: String,
}

impl Exec for WithArgs<'_> {
    fn exec(
        &self,
        plugin: &str,
        command: Command,
        att: Option<&Attachment>,
        stdin: &Value,
    ) -> Result<Output, ExecError> {
        Ok(self
            .node
            .plugin(plugin)
            .command(command.as_str())
            .config(stdin)
            .attachment(att)
            .env("CNI_ARGS", &self.args)
            .run())
    }
}

/// What a runtime and its operator can see of one pod's life.
#[derive(Debug, PartialEq)]
struct Observed {
    add: Result<(), String>,
    addresses: Vec<String>,
    mac: Option<String>,
    host_port_answers: Option<bool>,
    del: Result<(), String>,
    del_without_netns: Option<Result<(), String>>,
    leases_left: usize,
    host_veths_left: usize,
    host_port_answers_after_del: Option<bool>,
}

fn step(r: Result<Value, conformance::chain::ChainError>) -> (Result<(), String>, Value) {
    match r {
        Ok(v) => (Ok(()), v),
        Err(e) => (
            Err(format!("{} failed: {}", e.plugin, e.outcome.stdout)),
            Value::Null,
        ),
    }
}

fn del_step(r: Result<(), conformance::chain::ChainError>) -> Result<(), String> {
    r.map_err(|e| format!("{} failed: {}", e.plugin, e.outcome.stdout))
}

fn localized(case: &Value, node: &Node, key: &str) -> Value {
    let text = case[key]
        .to_string()
        .replace("@DIR@", &node.dir().display().to_string());
    serde_json::from_str(&text).unwrap()
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}

/// Lease files (addresses) in every network directory of the case's IPAM dataDir.
fn leases(node: &Node) -> usize {
    let Ok(nets) = fs::read_dir(node.dir().join("ipam")) else {
        return 0;
    };
    nets.map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|net| {
            fs::read_dir(net)
                .unwrap()
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_string_lossy().parse::<std::net::IpAddr>().is_ok()
                })
                .count()
        })
        .sum()
}

fn host_veths(node: &Node) -> usize {
    node.host()
        .sh("ip", &["-o", "link", "show", "type", "veth"])
        .lines()
        .count()
}

/// Runs one case's pod on `node` with `list` and observes it.
fn observe(case: &Value, node: &Node, list: Value) -> Observed {
    write_subnet_env(node, SUBNET_ENV);
    let (id, ns) = node.container();
    let ifname = case["ifname"].as_str().unwrap_or("eth0");
    let att = Attachment::new(&id, &ns.path_str(), ifname);
    let exec = WithArgs {
        node,
        args: case["cniArgs"].as_str().unwrap_or("").replace("@ID@", &id),
    };
    let chain = Chain::new(list).with_capability_args(case["capabilityArgs"].clone());
    let (add, result) = step(chain.add(&exec, &att));
    let addresses: Vec<String> = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str().map(str::to_owned))
        .collect();
    // From the kernel of the pod's namespace (this process's /sys shows another one).
    let mac = case.get("expectMac").map(|_| {
        let link = ns.sh("ip", &["-o", "link", "show", "dev", ifname]);
        let after = link.split("link/ether ").nth(1).unwrap_or_default();
        after
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    let host_port = case["hostPort"].as_array().map(|p| {
        (
            u16::try_from(p[0].as_u64().unwrap()).unwrap(),
            u16::try_from(p[1].as_u64().unwrap()).unwrap(),
        )
    });
    let gateway = result["ips"][0]["gateway"].as_str().unwrap_or("10.244.1.1");
    let answers = |host_port: u16| {
        let to: SocketAddr = format!("{gateway}:{host_port}").parse().unwrap();
        tcp_get(node.host(), to).as_deref() == Some("from the pod")
    };
    let host_port_answers = host_port.map(|(hp, cp)| {
        let _server = tcp_server(&ns, cp, "from the pod");
        answers(hp)
    });
    let del = del_step(chain.del(&exec, &att, Some(&result)));
    let del_without_netns = case["delWithoutNetns"].as_bool().unwrap_or(false).then(|| {
        // containerd's RemovePodSandbox: the sandbox's netns is gone, CNI_NETNS is empty.
        let gone = Attachment::new(&id, "", ifname);
        del_step(chain.del(&exec, &gone, Some(&result)))
    });
    let host_port_answers_after_del = host_port.map(|(hp, cp)| {
        let _server = tcp_server(&ns, cp, "from the pod");
        answers(hp)
    });
    Observed {
        add,
        addresses,
        mac,
        host_port_answers,
        del,
        del_without_netns,
        leases_left: leases(node),
        host_veths_left: host_veths(node),
        host_port_answers_after_del,
    }
}

/// The chain the Go plugins can run: Debian has no Go flannel, so a flannel entry becomes
/// the bridge config flannel would delegate to (what ours saves, byte for byte, is Go's).
fn go_form(list: &Value) -> Value {
    let mut list = list.clone();
    for plugin in list["plugins"].as_array_mut().unwrap() {
        if plugin["type"] != "flannel" {
            continue;
        }
        let obj = plugin.as_object().unwrap();
        let get = |k: &str| cni_common::gojson::get(obj, k).cloned();
        let mut bridge = get("delegate").unwrap_or(json!({}));
        let mut ipam = get("ipam").unwrap_or(json!({}));
        ipam["type"] = json!("host-local");
        ipam["ranges"] = json!([[{"subnet": "10.244.1.0/24"}]]);
        ipam["routes"] = json!([{"dst": "10.244.0.0/16"}]);
        bridge["type"] = json!("bridge");
        bridge["ipMasq"] = json!(false);
        bridge["mtu"] = json!(1450);
        bridge["isGateway"] = json!(true);
        bridge["ipam"] = ipam;
        if let Some(caps) = get("capabilities") {
            bridge["capabilities"] = caps;
        }
        *plugin = bridge;
    }
    list
}

/// What is wrong with one observed run, if anything.
fn problems(case: &Value, seen: &Observed) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut want = |ok: bool, what: &'static str| {
        if !ok {
            out.push(what);
        }
    };
    want(seen.add.is_ok(), "ADD failed");
    want(
        !seen.addresses.is_empty() || case["ifname"] == "lo",
        "no address",
    );
    if let Some(addr) = case["expectAddress"].as_str() {
        want(
            seen.addresses.first().map(String::as_str) == Some(addr),
            "wrong address",
        );
    }
    if let Some(mac) = case["expectMac"].as_str() {
        want(seen.mac.as_deref() == Some(mac), "wrong MAC");
    }
    if seen.host_port_answers.is_some() {
        want(
            seen.host_port_answers == Some(true),
            "hostPort does not answer",
        );
        want(
            seen.host_port_answers_after_del == Some(false),
            "hostPort answers after DEL",
        );
    }
    want(seen.del.is_ok(), "DEL failed");
    want(
        seen.del_without_netns.as_ref().is_none_or(Result::is_ok),
        "DEL without netns failed",
    );
    want(seen.leases_left == 0, "leases left");
    want(seen.host_veths_left == 0, "veths left");
    out
}

#[test]
fn every_runtime_input_works_on_ours_as_on_the_go_plugins() {
    let cases = cases();
    assert!(cases.len() >= 12, "corpus too small: {}", cases.len());
    // Every case runs, so that a failure lists every input that behaves differently.
    let mut failures = Vec::new();
    for (name, case) in &cases {
        let ours_node = Node::new();
        let ours = observe(case, &ours_node, localized(case, &ours_node, "conflist"));
        let mut wrong = problems(case, &ours);
        if count_files(&ours_node.dir().join("flannel")) != 0 {
            wrong.push("saved flannel config left");
        }
        if !wrong.is_empty() {
            failures.push(format!("{name}: {wrong:?}\n    {ours:?}"));
        }
        let go_node = Node::with_plugin_dir(&PathBuf::from(GO_PLUGIN_DIR));
        let go = observe(
            case,
            &go_node,
            go_form(&localized(case, &go_node, "conflist")),
        );
        let wrong = problems(case, &go);
        if !wrong.is_empty() {
            failures.push(format!("{name} (Go): {wrong:?}\n    {go:?}"));
        }
        if ours != go {
            failures.push(format!("{name}: ours and Go's differ"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A DEL must not get stuck on a config it cannot read: the runtime retries a failed DEL
/// forever and skips every plugin after the failing one.
#[test]
fn del_with_unreadable_keys_still_removes_everything() {
    let node = Node::new();
    write_subnet_env(&node, SUBNET_ENV);
    let case = json!({"conflist": {"name": "cbr0", "cniVersion": "1.0.0", "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": true}, "subnetFile": "@DIR@/subnet.env",
         "dataDir": "@DIR@/flannel", "ipam": {"dataDir": "@DIR@/ipam"}},
        {"type": "portmap", "capabilities": {"portMappings": true}, "stateDir": "@DIR@/portmap"}]}});
    let list = localized(&case, &node, "conflist");
    let good = Chain::new(list.clone()).with_capability_args(
        json!({"portMappings": [{"HostPort": 8090, "ContainerPort": 80, "Protocol": "tcp"}]}),
    );
    // Broken in every way a DEL can meet: mappings of the wrong shape, plugin keys of the
    // wrong type, a common key of the wrong type.
    let mut broken_list = list;
    broken_list["plugins"][0]["delegate"] = json!(5);
    broken_list["plugins"][0]["ipMasq"] = json!("yes");
    broken_list["plugins"][1]["snat"] = json!("yes");
    broken_list["plugins"][1]["conditionsV4"] = json!({"not": "a list"});
    let broken = Chain::new(broken_list)
        .with_capability_args(json!({"portMappings": [{"HostPort": "8090"}]}));
    let exec = WithArgs {
        node: &node,
        args: "IgnoreUnknown=1;K8S_POD_NAME=a".into(),
    };
    for netns_gone in [false, true] {
        let (id, mut ns) = node.container();
        let att = Attachment::new(&id, &ns.path_str(), "eth0");
        let result = good.add(&exec, &att).unwrap();
        assert_eq!(leases(&node), 1);
        assert!(
            node.host()
                .sh("nft", &["list", "ruleset"])
                .contains("dport 8090")
        );
        let att = if netns_gone {
            ns.delete();
            Attachment::new(&id, "", "eth0")
        } else {
            att
        };
        del_step(broken.del(&exec, &att, Some(&result)))
            .unwrap_or_else(|e| panic!("DEL (netns gone: {netns_gone}): {e}"));
        assert_eq!(leases(&node), 0, "lease left");
        // A deleted namespace takes its veth end along, but in the kernel's own time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while host_veths(&node) != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(host_veths(&node), 0, "veth left");
        assert_eq!(
            count_files(&node.dir().join("flannel")),
            0,
            "saved config left"
        );
        assert_eq!(
            count_files(&node.dir().join("portmap")),
            0,
            "DEL marker left"
        );
        assert!(
            !node.host().sh("nft", &["list", "ruleset"]).contains("8090"),
            "hostPort rule left"
        );
        // And again, as a runtime retries.
        del_step(broken.del(&exec, &att, Some(&result))).unwrap();
    }
}
