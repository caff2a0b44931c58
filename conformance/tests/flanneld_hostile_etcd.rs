//! The hostile etcd corpus (`testdata/bad-etcd/`, format in `testdata/README.md`) against
//! our real `flanneld` and a real etcd, in private namespaces: every config case is refused
//! by an agent of its own (all in parallel) that logs why and keeps retrying; every lease
//! case sits in one etcd next to good peers' leases, before the agents start (listing) and
//! written again while they run (watch), with a host-gw agent and a vxlan agent: the good
//! peers are programmed, no route, neighbour or FDB entry goes to a bad case's subnet,
//! MAC or PublicIP, each case's line is logged, nothing panics; the node's own key
//! overwritten by another node's value makes the agent take another subnet.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use conformance::etcd::{Agent, Etcd, Lan, available};
use conformance::lease::{self, host_gw_value, vxlan_value};
use conformance::{Node, poll, skip};
use serde_json::Value;

const OWN_IP_HG: &str = "192.168.50.2";
const OWN_IP_VX: &str = "192.168.50.3";
/// An otherwise valid peer address on the LAN (no node has it).
const PEER_IP: &str = "192.168.50.9";
const GOOD: [(&str, &str, &str); 2] = [
    ("10.5.240.0-24", "192.168.50.11", "c6:d2:32:6f:8f:11"),
    ("10.5.241.0-24", "192.168.50.12", "c6:d2:32:6f:8f:12"),
];

#[derive(Debug, Clone)]
struct Case {
    name: String,
    backend: String,
    config: Option<String>,
    leases: Vec<(String, String)>,
    expect: String,
    log: Option<String>,
}

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/bad-etcd");
    let mut out: Vec<Case> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
            let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
            Case {
                name: p.file_stem().unwrap().to_string_lossy().into_owned(),
                backend: s("backend").unwrap_or_else(|| "host-gw".into()),
                config: s("config"),
                leases: v
                    .get("leases")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|l| {
                                (
                                    l["key"].as_str().unwrap().to_owned(),
                                    l["value"].as_str().unwrap().to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                expect: s("expect").unwrap(),
                log: s("log"),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(out.len() >= 35);
    out
}

fn expand(s: &str, own_ip: &str) -> String {
    s.replace("@OWN_IP@", own_ip)
        .replace("@PEER_IP@", PEER_IP)
        .replace("@1MiB@", &"x".repeat(1 << 20))
        .replace(
            "@DEEP@",
            &format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        )
}

fn etcd_or_skip(test: &str) -> bool {
    if !available() {
        skip(test, "etcd-server/etcd-client not installed");
        return false;
    }
    true
}

/// Puts raw keys and values (NUL bytes, 1 MiB values: more than etcdctl's argv takes)
/// through etcd-client, on a 24 h lease as Go's.
fn put_raw(etcd: &Etcd, kvs: &[(String, String)]) {
    etcd.put_raw(kvs, Duration::from_secs(86_400));
}

fn start(node: &Node, etcd: &Etcd, name: &str, prefix: &str) -> Agent {
    Agent::start(
        node,
        &format!("{name}.log"),
        &[
            format!("--etcd-endpoints={}", etcd.endpoint()),
            format!("--etcd-prefix={prefix}"),
            format!(
                "--subnet-file={}",
                node.dir().join(format!("{name}.env")).display()
            ),
            "--iface=eth0".into(),
        ],
        &[],
    )
}

#[test]
fn every_config_case_is_refused_logged_and_retried_by_a_running_agent() {
    if !etcd_or_skip("flanneld_hostile_etcd::config_cases") {
        return;
    }
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    let node = Node::new();
    lan.attach(&node, 2);
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.config.is_some()).collect();
    let configs: Vec<(String, String)> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                format!("/cfg{i}/config"),
                expand(c.config.as_deref().unwrap(), OWN_IP_HG),
            )
        })
        .collect();
    put_raw(&etcd, &configs);
    let mut agents: Vec<Agent> = (0..cases.len())
        .map(|i| start(&node, &etcd, &format!("cfg{i}"), &format!("/cfg{i}")))
        .collect();
    // Each logs its refusal, and again a second later: retried, not given up.
    for (c, a) in cases.iter().zip(agents.iter()) {
        let want = expand(c.log.as_deref().unwrap(), OWN_IP_HG);
        poll::secs(
            &format!("{}: {want:?} logged twice", c.name),
            30,
            || a.log().matches(want.as_str()).count() >= 2,
            || a.log(),
        );
    }
    for (i, (c, a)) in cases.iter().zip(agents.iter_mut()).enumerate() {
        let log = a.log();
        assert!(a.running(), "{}: exited\n{log}", c.name);
        assert!(!log.contains("panicked"), "{}: {log}", c.name);
        assert!(
            log.lines().all(|l| l.len() < 2048),
            "{}: a long line",
            c.name
        );
        assert!(
            !node.dir().join(format!("cfg{i}.env")).exists(),
            "{}",
            c.name
        );
    }
}

/// Waits up to 20 s for the agent's log to contain `want`.
fn wait_log(a: &Agent, case: &str, want: &str) {
    poll::secs(
        &format!("{case}: {want:?} logged"),
        20,
        || a.log().contains(want),
        || a.log(),
    );
}

fn good_value(backend: &str, i: usize) -> String {
    let (_, ip, mac) = GOOD[i];
    if backend == "vxlan" {
        vxlan_value(ip, mac)
    } else {
        host_gw_value(ip)
    }
}

/// The case's lease keys and values under `prefix`, for a node with `own_ip`.
fn kvs(cases: &[&Case], prefix: &str, own_ip: &str) -> Vec<(String, String)> {
    cases
        .iter()
        .flat_map(|c| c.leases.iter())
        .map(|(k, v)| {
            (
                format!("{prefix}/subnets/{}", expand(k, own_ip)),
                expand(v, own_ip),
            )
        })
        .collect()
}

/// `10.5.1.0-24` → `10.5.1.0/24` when the key's IPv4 part looks like one.
fn dst(key: &str) -> Option<String> {
    let v4 = key.split('&').next()?;
    let (a, l) = v4.split_once('-')?;
    (a.parse::<std::net::Ipv4Addr>().is_ok() && l.parse::<u8>().is_ok_and(|l| l <= 32))
        .then(|| format!("{a}/{l}"))
}

fn route_line(node: &Node, dst: &str) -> Option<String> {
    let routes = node.host().sh("ip", &["-4", "route"]);
    routes
        .lines()
        .find(|l| {
            l.starts_with(&format!("{dst} ")) || (dst.ends_with("/0") && l.starts_with("default"))
        })
        .map(str::to_owned)
}

#[test]
fn every_lease_case_is_skipped_next_to_good_peers_host_gw_and_vxlan() {
    if !etcd_or_skip("flanneld_hostile_etcd::lease_cases") {
        return;
    }
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    let (hg, vx) = (Node::new(), Node::new());
    assert_eq!(lan.attach(&hg, 2), OWN_IP_HG);
    assert_eq!(lan.attach(&vx, 3), OWN_IP_VX);
    let all = cases();
    let setups = [
        (&hg, "host-gw", "/hg", OWN_IP_HG, "hg"),
        (&vx, "vxlan", "/vx", OWN_IP_VX, "vx"),
    ];
    // Listing: config, good peers and the cases in etcd before the agents start. A lease
    // naming the node's own PublicIP is, at start, its lease from before a restart (reused,
    // as Go does), so those come with the watch only.
    for (_, backend, prefix, own_ip, _) in setups {
        let mut put = vec![(
            format!("{prefix}/config"),
            format!(r#"{{"Network":"10.5.0.0/16","Backend":{{"Type":"{backend}"}}}}"#),
        )];
        for (i, (k, _, _)) in GOOD.iter().enumerate() {
            put.push((format!("{prefix}/subnets/{k}"), good_value(backend, i)));
        }
        let at_start: Vec<&Case> = all
            .iter()
            .filter(|c| c.config.is_none() && c.backend == backend && c.expect != "reacquire")
            .filter(|c| !c.leases.iter().any(|(_, v)| v.contains("@OWN_IP@")))
            .collect();
        put.extend(kvs(&at_start, prefix, own_ip));
        put_raw(&etcd, &put);
    }
    let mut agents: Vec<Agent> = setups
        .iter()
        .map(|(node, _, prefix, _, name)| start(node, &etcd, name, prefix))
        .collect();
    let peer_route = |node: &Node, backend: &str, key: &str, ip: &str| {
        let want = if backend == "vxlan" {
            let net = key.split('-').next().unwrap();
            format!("via {net} dev flannel.1")
        } else {
            format!("via {ip} dev eth0")
        };
        route_line(node, &dst(key).unwrap()).is_some_and(|l| l.contains(&want))
    };
    for ((node, backend, _, _, _), a) in setups.iter().zip(agents.iter_mut()) {
        for (k, ip, _) in GOOD {
            a.wait_for(&format!("{backend}: good peer {k}"), 20, || {
                peer_route(node, backend, k, ip)
            });
        }
    }
    // Watch: every case written again (and the own-PublicIP ones for the first time).
    for (_, backend, prefix, own_ip, _) in setups {
        let these: Vec<&Case> = all
            .iter()
            .filter(|c| c.config.is_none() && c.backend == backend && c.expect != "reacquire")
            .collect();
        put_raw(&etcd, &kvs(&these, prefix, own_ip));
    }
    for ((node, backend, _, own_ip, _), a) in setups.iter().zip(agents.iter_mut()) {
        let these: Vec<&Case> = all
            .iter()
            .filter(|c| c.config.is_none() && c.backend == *backend && c.expect != "reacquire")
            .collect();
        for c in &these {
            if let Some(want) = &c.log {
                let want = expand(want, own_ip);
                wait_log(a, &c.name, &want);
            }
            for (k, v) in &c.leases {
                let key = expand(k, own_ip);
                match c.expect.as_str() {
                    "accepted" => a.wait_for(&format!("{}: its route", c.name), 15, || {
                        peer_route(node, backend, &key, PEER_IP)
                    }),
                    "skipped" => {
                        if let Some(d) = dst(&key) {
                            assert_eq!(route_line(node, &d), None, "{}", c.name);
                        }
                        let value: Option<Value> = serde_json::from_str(&expand(v, own_ip)).ok();
                        let ip = value
                            .as_ref()
                            .and_then(|v| v.get("PublicIP"))
                            .and_then(Value::as_str)
                            .filter(|ip| *ip != PEER_IP && ip.len() < 40);
                        if let Some(ip) = ip {
                            let routes = node.host().sh("ip", &["-4", "route"]);
                            assert!(
                                !routes.contains(&format!("via {ip} ")),
                                "{}: {routes}",
                                c.name
                            );
                        }
                    }
                    other => panic!("{}: {other}", c.name),
                }
            }
        }
        if *backend == "vxlan" {
            let fdb = node
                .host()
                .sh("bridge", &["fdb", "show", "dev", "flannel.1"]);
            let neigh = node.host().sh("ip", &["neigh", "show", "dev", "flannel.1"]);
            for bad in [
                "00:00:00:00:00:00",
                "01:00:5e:00:00:05",
                "ff:ff:ff:ff:ff:ff",
            ] {
                assert!(!fdb.contains(&format!("{bad} dst")), "{fdb}");
            }
            assert!(!fdb.contains(&format!("dst {own_ip} ")), "{fdb}");
            for c in these.iter().filter(|c| c.expect == "skipped") {
                for (k, _) in &c.leases {
                    if let Some(d) = dst(&expand(k, own_ip)) {
                        let net = d.split('/').next().unwrap();
                        assert!(
                            !neigh.contains(&format!("{net} lladdr")),
                            "{}: {neigh}",
                            c.name
                        );
                    }
                }
            }
            // Good and accepted peers only.
            let accepted = these.iter().filter(|c| c.expect == "accepted").count();
            assert_eq!(neigh.lines().count(), GOOD.len() + accepted, "{neigh}");
        }
    }
    for ((_, backend, _, _, _), a) in setups.iter().zip(agents.iter_mut()) {
        let log = a.log();
        assert!(a.running(), "{backend}: exited\n{log}");
        assert!(!log.contains("panicked"), "{backend}: {log}");
        assert!(
            log.lines().all(|l| l.len() < 2048),
            "{backend}: a long line"
        );
    }

    // The node's own key overwritten with another node's value: lost, not routed; another
    // subnet acquired, the agent running.
    let own_key = |node: &Node, name: &str| lease::own_key(node, &format!("{name}.env"));
    for c in all.iter().filter(|c| c.expect == "reacquire") {
        let a = &mut agents[0];
        let old = own_key(&hg, "hg").unwrap();
        let put: Vec<(String, String)> = c
            .leases
            .iter()
            .map(|(k, v)| {
                (
                    format!("/hg/subnets/{}", k.replace("@OWN_KEY@", &old)),
                    expand(v, OWN_IP_HG),
                )
            })
            .collect();
        put_raw(&etcd, &put);
        let want = c.log.clone().unwrap();
        wait_log(a, &c.name, &want);
        a.wait_for(&format!("{}: another subnet", c.name), 15, || {
            own_key(&hg, "hg").is_some_and(|k| k != old)
        });
        assert!(a.running() && !a.log().contains("panicked"), "{}", a.log());
    }
}
