//! The host-local binary, run as a runtime (or an upper plugin) runs it, with its state in a
//! temporary dataDir.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use conformance::OutcomeExt;
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use conformance::chain::Attachment;
use conformance::plugin::Outcome;
use conformance::{Chain, Node};
use serde_json::{Value, json};

const VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// A host-local config as an upper plugin hands it over: the whole network config.
fn conf(node: &Node, version: &str, name: &str, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    if ipam.get("dataDir").is_none() {
        ipam["dataDir"] = json!(node.dir().join("networks"));
    }
    json!({"cniVersion": version, "name": name, "type": "bridge", "ipam": ipam})
}

fn call(node: &Node, command: &str, id: &str, config: &Value) -> Outcome {
    node.plugin("host-local")
        .command(command)
        .container(id, "/var/run/netns/unused")
        .config(config)
        .run()
}

fn add_ip(node: &Node, id: &str, config: &Value) -> String {
    let out = call(node, "ADD", id, config).ok();
    out["ips"][0]["address"].as_str().unwrap().to_owned()
}

/// File names in the network's lease directory, sorted.
fn lease_dir(node: &Node, network: &str) -> Vec<String> {
    let dir = node.dir().join("networks").join(network);
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn dual_stack() -> Value {
    json!({
        "ranges": [[{"subnet": "10.1.2.0/29"}], [{"subnet": "fd00:1::/125"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:1::1"}],
    })
}

#[test]
fn results_in_every_version() {
    let node = Node::new();
    let resolv = node.dir().join("resolv.conf");
    fs::write(
        &resolv,
        "nameserver 10.1.0.10\nsearch svc.cluster.local\noptions ndots:5\n",
    )
    .unwrap();
    for version in VERSIONS {
        let mut ipam = dual_stack();
        ipam["resolvConf"] = json!(resolv);
        let name = format!("net-{}", version.replace('.', "-"));
        let out = call(&node, "ADD", "ctr1", &conf(&node, version, &name, ipam));
        out.ok();
        insta::assert_snapshot!(format!("add_{version}"), out.stdout);
    }
}

#[test]
fn lease_files_are_what_the_go_plugin_writes() {
    let node = Node::new();
    let c = conf(&node, "1.0.0", "net", dual_stack());
    call(&node, "ADD", "c-1.1.0", &c).ok();
    let dir = node.dir().join("networks").join("net");
    assert_eq!(fs::read(dir.join("10.1.2.2")).unwrap(), b"c-1.1.0\r\neth0");
    assert_eq!(fs::read(dir.join("fd00:1::2")).unwrap(), b"c-1.1.0\r\neth0");
    let mode = fs::metadata(dir.join("10.1.2.2"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        fs::read(dir.join("last_reserved_ip.0")).unwrap(),
        b"10.1.2.2"
    );
    assert_eq!(
        fs::read(dir.join("last_reserved_ip.1")).unwrap(),
        b"fd00:1::2"
    );
    assert_eq!(
        lease_dir(&node, "net"),
        [
            "10.1.2.2",
            "fd00:1::2",
            "last_reserved_ip.0",
            "last_reserved_ip.1",
            "lock"
        ]
    );
}

#[test]
fn ipv6_range_end_exhaustion_release_and_reuse() {
    let node = Node::new();
    let c = conf(
        &node,
        "1.0.0",
        "v6",
        json!({"ranges": [[{"subnet": "fd00:9::/125"}]]}),
    );
    let got: Vec<String> = (2..=7)
        .map(|i| add_ip(&node, &format!("c{i}"), &c))
        .collect();
    // ::1 is the gateway; the last address (::7) is allocatable for IPv6.
    assert_eq!(got.last().unwrap(), "fd00:9::7/125");
    assert_eq!(
        call(&node, "ADD", "c8", &c).err(106),
        "failed to allocate for range 0: no IP addresses available in range set: fd00:9::1-fd00:9::7"
    );
    assert!(call(&node, "DEL", "c4", &c).success());
    assert_eq!(add_ip(&node, "c9", &c), "fd00:9::4/125");
}

#[test]
fn del_is_idempotent_and_check_follows_the_lease() {
    let node = Node::new();
    let c = conf(&node, "1.0.0", "net", dual_stack());
    call(&node, "ADD", "a", &c).ok();
    assert!(call(&node, "CHECK", "a", &c).success());
    assert!(call(&node, "DEL", "a", &c).success());
    assert!(call(&node, "DEL", "a", &c).success());
    assert_eq!(
        call(&node, "CHECK", "a", &c).err(103),
        "host-local: Failed to find address added by container a"
    );
    // Empty CNI_NETNS, and a dataDir that was never created.
    let del = node
        .plugin("host-local")
        .command("DEL")
        .container("a", "")
        .config(&c)
        .run();
    assert!(del.success(), "{del:?}");
    let mut missing = dual_stack();
    missing["dataDir"] = json!(node.dir().join("never"));
    assert!(call(&node, "DEL", "a", &conf(&node, "1.0.0", "net", missing)).success());
    assert!(!node.dir().join("never").exists(), "DEL created state");
    assert_eq!(
        lease_dir(&node, "net"),
        ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    );
}

#[test]
fn del_releases_even_when_the_config_changed_since_add() {
    let node = Node::new();
    let c = conf(&node, "1.0.0", "net", dual_stack());
    call(&node, "ADD", "a", &c).ok();
    let broken = conf(&node, "1.0.0", "net", json!({"subnet": "10.1.2.1/29"}));
    assert!(call(&node, "DEL", "a", &broken).success());
    assert_eq!(
        lease_dir(&node, "net"),
        ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    );
}

#[test]
fn duplicate_add_is_refused() {
    let node = Node::new();
    let c = conf(&node, "1.0.0", "net", dual_stack());
    call(&node, "ADD", "a", &c).ok();
    assert_eq!(
        call(&node, "ADD", "a", &c).err(107),
        "failed to allocate for range 0: 10.1.2.2 has been allocated to a, duplicate allocation is not allowed"
    );
    // The same container on another interface is another attachment.
    let other = node
        .plugin("host-local")
        .command("ADD")
        .container("a", "/var/run/netns/unused")
        .env("CNI_IFNAME", "net1")
        .config(&c)
        .run();
    assert_eq!(other.ok()["ips"][0]["address"], "10.1.2.3/29");
}

#[test]
fn requested_ips_from_every_source() {
    let node = Node::new();
    let c = conf(&node, "1.0.0", "net", dual_stack());
    let by_args = node
        .plugin("host-local")
        .command("ADD")
        .container("a", "/x")
        .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.1.2.5")
        .config(&c)
        .run()
        .ok();
    assert_eq!(by_args["ips"][0]["address"], "10.1.2.5/29");
    let mut with_args = c.clone();
    with_args["args"] = json!({"cni": {"ips": ["fd00:1::6"]}});
    assert_eq!(
        call(&node, "ADD", "b", &with_args).ok()["ips"][1]["address"],
        "fd00:1::6/125"
    );
    // runtimeConfig.ips through the `ips` capability, as a runtime sends it.
    let list = json!({"cniVersion": "1.0.0", "name": "net", "plugins": [{
        "type": "host-local", "capabilities": {"ips": true},
        "ipam": c["ipam"].clone()}]});
    let chain = Chain::new(list.clone()).with_capability_args(json!({"ips": ["10.1.2.4/29"]}));
    let r = chain
        .add(&node, &Attachment::new("c", "/x", "eth0"))
        .unwrap();
    assert_eq!(r["ips"][0]["address"], "10.1.2.4/29");
    let taken = Chain::new(list).with_capability_args(json!({"ips": ["10.1.2.4"]}));
    let err = taken
        .add(&node, &Attachment::new("d", "/x", "eth0"))
        .unwrap_err();
    assert_eq!(
        err.outcome.err(107),
        "failed to allocate for range 0: requested IP address 10.1.2.4 is not available in range set 10.1.2.1-10.1.2.6"
    );
    let mut outside = c.clone();
    outside["runtimeConfig"] = json!({"ips": ["10.9.9.9"]});
    assert_eq!(
        call(&node, "ADD", "e", &outside).err(7),
        "failed to allocate all requested IPs: 10.9.9.9"
    );
    // Nothing of the failed requests is held.
    assert!(
        call(&node, "CHECK", "d", &c)
            .err(103)
            .contains("container d")
    );
    assert!(
        call(&node, "CHECK", "e", &c)
            .err(103)
            .contains("container e")
    );
}

#[test]
fn config_errors_have_clear_messages() {
    let node = Node::new();
    let cases = [
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"}),
            7,
            "IPAM config missing 'ipam' key",
        ),
        (
            conf(&node, "1.0.0", "n", json!({})),
            7,
            "no IP ranges specified",
        ),
        (
            conf(&node, "1.0.0", "n", json!({"subnet": "10.7.0.1/24"})),
            7,
            "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.7.0.0",
        ),
        (
            conf(&node, "1.0.0", "n", json!({"subnet": "10.7.0.0/31"})),
            7,
            "invalid range set 0: Network 10.7.0.0/31 too small to allocate from",
        ),
        (
            conf(
                &node,
                "1.0.0",
                "n",
                json!({"ranges": [[{"subnet": "10.7.0.0/24"}, {"subnet": "fd00::/64"}]]}),
            ),
            7,
            "invalid range set 0: mixed address families",
        ),
        (
            conf(
                &node,
                "1.0.0",
                "n",
                json!({"ranges": [[{"subnet": "10.7.0.0/24"}, {"subnet": "10.7.0.0/25"}]]}),
            ),
            7,
            "invalid range set 0: subnets 10.7.0.1-10.7.0.254 and 10.7.0.1-10.7.0.126 overlap",
        ),
        (
            conf(
                &node,
                "1.0.0",
                "n",
                json!({"ranges": [[{"subnet": "10.7.0.0/24"}], [{"subnet": "10.7.0.128/25"}]]}),
            ),
            7,
            "range set 0 overlaps with 1",
        ),
        (
            conf(
                &node,
                "1.0.0",
                "n",
                json!({"subnet": "10.9.0.0/24", "rangeStart": "10.10.0.1"}),
            ),
            7,
            "invalid range set 0: RangeStart 10.10.0.1 not in network 10.9.0.0/24",
        ),
        (
            conf(
                &node,
                "1.0.0",
                "n",
                json!({"subnet": "10.9.0.0/24", "rangeEnd": "10.9.1.1"}),
            ),
            7,
            "invalid range set 0: RangeEnd 10.9.1.1 not in network 10.9.0.0/24",
        ),
        (
            conf(
                &node,
                "0.2.0",
                "n",
                json!({"ranges": [[{"subnet": "10.7.0.0/24"}], [{"subnet": "10.8.0.0/24"}]]}),
            ),
            7,
            "CNI version 0.2.0 does not support more than 1 address per family",
        ),
        (
            conf(
                &node,
                "1.0.0",
                "n",
                json!({"subnet": "10.9.0.0/24", "dataDir": "../escape"}),
            ),
            7,
            "ipam.dataDir must be an absolute path, not \"../escape\"",
        ),
        (
            conf(&node, "1.0.0", "n", json!({"subnet": "nonsense"})),
            7,
            "invalid range set 0: invalid CIDR address: nonsense",
        ),
    ];
    for (config, code, msg) in cases {
        let out = call(&node, "ADD", "a", &config);
        assert_eq!(out.err(code), msg, "{config}");
    }
    assert!(
        !node.dir().join("networks").join("n").exists(),
        "a failed ADD left state"
    );
}

#[test]
fn parallel_adds_get_distinct_addresses_and_dels_leave_nothing() {
    let node = Node::new();
    let c = conf(&node, "1.0.0", "par", json!({"subnet": "10.50.0.0/24"}));
    let ids: Vec<String> = (0..50).map(|i| format!("p{i}")).collect();
    let ips: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .map(|id| s.spawn(|| add_ip(&node, id, &c)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: HashSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), 50, "an address was given twice: {ips:?}");
    std::thread::scope(|s| {
        for id in &ids {
            let c = &c;
            let node = &node;
            s.spawn(move || assert!(call(node, "DEL", id, c).success()));
        }
    });
    assert_eq!(lease_dir(&node, "par"), ["last_reserved_ip.0", "lock"]);
}

#[test]
fn gc_keeps_exactly_the_valid_attachments() {
    let node = Node::new();
    let c = conf(&node, "1.1.0", "gcnet", json!({"subnet": "10.60.0.0/24"}));
    for id in ["a", "b", "c", "d"] {
        call(&node, "ADD", id, &c).ok();
    }
    // A lease from before ifnames were recorded, kept because its container is valid.
    let dir = node.dir().join("networks").join("gcnet");
    fs::write(dir.join("10.60.0.200"), "b").unwrap();
    let gc = |valid: Value| {
        let mut g = c.clone();
        g["cni.dev/valid-attachments"] = valid;
        node.plugin("host-local")
            .command("GC")
            .unset("CNI_IFNAME")
            .config(&g)
            .run()
    };
    let out =
        gc(json!([{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "eth0"}]));
    assert!(out.success(), "{out:?}");
    let mut leases: Vec<String> = lease_dir(&node, "gcnet")
        .into_iter()
        .filter(|n| n.starts_with("10."))
        .map(|n| String::from_utf8(fs::read(dir.join(&n)).unwrap()).unwrap())
        .collect();
    leases.sort();
    assert_eq!(leases, ["a\r\neth0", "b", "b\r\neth0"]);
    assert!(call(&node, "CHECK", "a", &c).success());
    assert!(gc(json!([])).success());
    assert_eq!(lease_dir(&node, "gcnet"), ["last_reserved_ip.0", "lock"]);
    let old = conf(&node, "1.0.0", "gcnet", json!({"subnet": "10.60.0.0/24"}));
    assert_eq!(
        node.plugin("host-local")
            .command("GC")
            .config(&old)
            .run()
            .err(1),
        "incompatible CNI versions"
    );
}

#[test]
fn status_reports_exhaustion_and_an_unusable_data_dir() {
    let node = Node::new();
    let status = |c: &Value| node.plugin("host-local").command("STATUS").config(c).run();
    let c = conf(&node, "1.1.0", "st", json!({"subnet": "10.70.0.0/30"}));
    assert!(status(&c).success());
    call(&node, "ADD", "a", &c).ok();
    let msg = status(&c).err(50);
    assert_eq!(
        msg,
        "no IP addresses available in range set 0: 10.70.0.1-10.70.0.2 (1 of 1 in use)"
    );
    let file = node.dir().join("a-file");
    fs::write(&file, "").unwrap();
    let mut bad = json!({"subnet": "10.70.0.0/30"});
    bad["dataDir"] = json!(file);
    let msg = status(&conf(&node, "1.1.0", "st", bad)).err(50);
    assert!(
        msg.starts_with("host-local cannot use its data directory"),
        "{msg}"
    );
}

/// Runs ours or Go's host-local.
fn either(node: &Node, go: bool, command: &str, id: &str, config: &Value) -> Outcome {
    let call = if go {
        node.go_plugin("host-local")
    } else {
        node.plugin("host-local")
    };
    call.command(command)
        .container(id, "/x")
        .config(config)
        .run()
}

#[test]
fn interchangeable_with_the_go_plugin_on_one_data_dir() {
    let node = Node::new();
    // Debian's Go host-local (1.1.1) speaks up to 1.0.0.
    let c = conf(&node, "1.0.0", "mixed", json!({"subnet": "10.80.0.0/24"}));
    let ip = |o: Outcome| o.ok()["ips"][0]["address"].as_str().unwrap().to_owned();
    // Interleaved, one at a time: each sees the other's leases.
    let a = ip(either(&node, true, "ADD", "a", &c));
    let b = ip(either(&node, false, "ADD", "b", &c));
    let cc = ip(either(&node, true, "ADD", "c", &c));
    let d = ip(either(&node, false, "ADD", "d", &c));
    let all: HashSet<&String> = [&a, &b, &cc, &d].into_iter().collect();
    assert_eq!(all.len(), 4, "{a} {b} {cc} {d}");
    assert_eq!(
        either(&node, false, "ADD", "a", &c).err(107),
        format!(
            "failed to allocate for range 0: {} has been allocated to a, duplicate allocation is not allowed",
            a.trim_end_matches("/24")
        )
    );
    assert!(
        either(&node, true, "CHECK", "b", &c).success(),
        "Go does not see our lease"
    );
    assert!(
        either(&node, false, "CHECK", "c", &c).success(),
        "we do not see Go's lease"
    );
    // Each DELs the other's lease.
    assert!(either(&node, false, "DEL", "a", &c).success());
    assert!(either(&node, true, "DEL", "b", &c).success());
    assert!(either(&node, false, "DEL", "c", &c).success());
    assert!(either(&node, true, "DEL", "d", &c).success());
    assert_eq!(lease_dir(&node, "mixed"), ["last_reserved_ip.0", "lock"]);

    // In parallel: 40 ADDs, alternating plugins, then DELs by the other plugin.
    let ids: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    let ips: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let (node, c) = (&node, &c);
                s.spawn(move || ip(either(node, i % 2 == 0, "ADD", id, c)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: HashSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), 40, "an address was given twice: {ips:?}");
    std::thread::scope(|s| {
        for (i, id) in ids.iter().enumerate() {
            let (node, c) = (&node, &c);
            s.spawn(move || assert!(either(node, i % 2 == 1, "DEL", id, c).success()));
        }
    });
    assert_eq!(lease_dir(&node, "mixed"), ["last_reserved_ip.0", "lock"]);
}

#[test]
fn legacy_and_garbage_lease_files() {
    let node = Node::new();
    let c = conf(&node, "1.0.0", "old", json!({"subnet": "10.90.0.0/29"}));
    let dir = node.dir().join("networks").join("old");
    fs::create_dir_all(&dir).unwrap();
    // A lease from before ifnames, and an empty one left by a crashed write (Go #498).
    fs::write(dir.join("10.90.0.2"), "legacy").unwrap();
    fs::write(dir.join("10.90.0.3"), "").unwrap();
    fs::write(dir.join("not-an-ip"), "junk").unwrap();
    assert!(call(&node, "CHECK", "legacy", &c).success());
    assert_eq!(
        add_ip(&node, "new", &c),
        "10.90.0.3/29",
        "the empty lease was not reclaimed"
    );
    assert!(call(&node, "DEL", "legacy", &c).success());
    assert!(!dir.join("10.90.0.2").exists());
    assert!(
        dir.join("not-an-ip").exists(),
        "a file that is not ours was removed"
    );
}

#[test]
fn runtime_ip_ranges_come_first() {
    let node = Node::new();
    let ipam = json!({"type": "host-local", "subnet": "10.2.0.0/24",
        "dataDir": node.dir().join("networks")});
    let list = json!({"cniVersion": "1.0.0", "name": "rr", "plugins": [{
        "type": "host-local", "capabilities": {"ipRanges": true}, "ipam": ipam}]});
    let chain = Chain::new(list).with_capability_args(
        json!({"ipRanges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.100"}]]}),
    );
    let r = chain
        .add(&node, &Attachment::new("a", "/x", "eth0"))
        .unwrap();
    let addrs: Vec<&str> = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["address"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["10.1.0.100/24", "10.2.0.2/24"]);
    chain
        .del(&node, &Attachment::new("a", "/x", "eth0"), Some(&r))
        .unwrap();
    assert_eq!(
        lease_dir(&node, "rr"),
        ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    );
}
