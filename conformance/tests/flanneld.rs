//! flanneld against real etcd (Debian's etcd-server 3.4), inside private namespaces: the
//! lease in Go's format with its 24 h etcd lease, subnet.env read by our flannel plugin
//! through kube-flannel's chain, readiness and sd_notify, restarts keeping the subnet, peers'
//! leases as host-gw routes, two agents on one etcd, mutual TLS, username/password, a dead
//! endpoint next to a live one.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use conformance::etcd::{Agent, Certs, Etcd, LAN_IP, Lan, available_or_skip};
use conformance::flannel::conflist;
use conformance::{Chain, Node, Pod};

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#;
const PREFIX: &str = "/coreos.com/network";

fn args(node: &Node, endpoints: &str, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        format!("--etcd-endpoints={endpoints}"),
        format!("--subnet-file={}", node.dir().join("subnet.env").display()),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn subnet_env(node: &Node) -> Option<String> {
    fs::read_to_string(node.dir().join("subnet.env")).ok()
}

/// The node's lease key name (`10.5.23.0-24`) from its subnet.env.
fn own_key(node: &Node) -> String {
    conformance::lease::own_key(node, "subnet.env").unwrap()
}

/// Starts an agent (its own log file) and waits until it wrote subnet.env this time.
fn started(node: &Node, etcd: &Etcd, extra: &[&str]) -> Agent {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut a = Agent::start(
        node,
        &format!("flanneld-{n}.log"),
        &args(node, &etcd.endpoint(), extra),
        &[],
    );
    a.wait_for("subnet.env written", 20, || a_log_has_written(node, n));
    a
}

fn a_log_has_written(node: &Node, n: usize) -> bool {
    fs::read_to_string(node.dir().join(format!("flanneld-{n}.log")))
        .unwrap_or_default()
        .contains("wrote subnet file")
}

fn http_code(node: &Node, path: &str) -> String {
    let out = node.host().run(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:8471{path}"),
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lease_in_go_format_subnet_env_through_the_chain() {
    if !available_or_skip("flanneld::lease_in_go_format_subnet_env_through_the_chain") {
        return;
    }
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    let node = Node::new();
    let ip = lan.attach(&node, 2);
    let notify = node.dir().join("notify.sock");
    let sd = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    sd.set_nonblocking(true).unwrap();
    let mut agent = Agent::start(
        &node,
        "flanneld.log",
        &args(
            &node,
            &etcd.endpoint(),
            &[
                "--iface=eth0",
                "--healthz-ip=127.0.0.1",
                "--healthz-port=8471",
                "--metrics-port=9472",
            ],
        ),
        &[("NOTIFY_SOCKET", notify.to_str().unwrap())],
    );
    // No config yet: a clear line, retried every second; alive but not ready.
    agent.wait_for("the missing-config line", 10, || {
        agent_log_has(&node, "etcdctl put /coreos.com/network/config")
    });
    assert_eq!(http_code(&node, "/healthz"), "200");
    assert_eq!(http_code(&node, "/readyz"), "503");
    assert!(subnet_env(&node).is_none());

    etcd.ctl_ok(&["put", &format!("{PREFIX}/config"), CONFIG]);
    agent.wait_for("subnet.env", 20, || subnet_env(&node).is_some());
    let key = own_key(&node);
    let third: u8 = key.split('.').nth(2).unwrap().parse().unwrap();
    assert_eq!(
        subnet_env(&node).unwrap(),
        format!(
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.{third}.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"
        )
    );
    let mode = fs::metadata(node.dir().join("subnet.env"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    assert_eq!(http_code(&node, "/readyz"), "200");
    let mut buf = [0u8; 64];
    let n = sd.recv(&mut buf).expect("READY=1 on NOTIFY_SOCKET");
    assert_eq!(&buf[..n], b"READY=1");

    // Prometheus metrics inside the node: no peer yet, the lease's expiry about 24 h ahead.
    let out = node
        .host()
        .run("curl", &["-s", "http://127.0.0.1:9472/metrics"]);
    let metrics = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        metrics.contains("\nflanneld_peers_programmed{backend=\"host-gw\"} 0\n")
            && metrics.ends_with("# EOF\n"),
        "{metrics}"
    );
    let expiry: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flanneld_lease_expiry_seconds "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no lease expiry in {metrics}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 23 * 3600..=now + 24 * 3600 + 60).contains(&expiry),
        "{expiry} vs {now}"
    );

    // etcd holds Go's key and value, on a 24 h lease.
    let listing = etcd.ctl_ok(&["get", "--prefix", PREFIX]);
    let value = conformance::lease::host_gw_value(&ip);
    assert_eq!(
        listing,
        format!("{PREFIX}/config\n{CONFIG}\n{PREFIX}/subnets/{key}\n{value}\n")
    );
    let lease = etcd.lease_id(&format!("{PREFIX}/subnets/{key}")).unwrap();
    let ttl = etcd.ctl_ok(&["lease", "timetolive", &format!("{lease:x}"), "--keys"]);
    assert!(
        ttl.contains("granted with TTL(86400s)")
            && ttl.contains(&format!("{PREFIX}/subnets/{key}")),
        "{ttl}"
    );
    let _ = fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../target"));
    let _ = fs::write(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/flanneld-etcdctl.txt"
        ),
        format!(
            "$ etcdctl get --prefix {PREFIX}\n{listing}$ etcdctl lease timetolive {lease:x} --keys\n{ttl}"
        ),
    );

    // Our flannel plugin reads it: kube-flannel's chain puts a pod in the leased subnet.
    let chain = Chain::new(conflist(&node, "1.0.0"));
    let pod = Pod::add(&node, &chain);
    assert!(
        pod.address(true).starts_with(&format!("10.5.{third}.")),
        "{}",
        pod.address(true)
    );
    let cni0 = node.host().sh("ip", &["-4", "addr", "show", "cni0"]);
    assert!(
        cni0.contains(&format!("inet 10.5.{third}.1/24")) && cni0.contains("mtu 1500"),
        "{cni0}"
    );
    pod.del(&node, &chain);

    // SIGTERM: exit 0, nothing torn down.
    assert_eq!(agent.terminate(), Some(0));
    assert!(
        etcd.ctl_ok(&["get", &format!("{PREFIX}/subnets/{key}")])
            .contains(&value)
    );
    assert!(subnet_env(&node).is_some());
}

fn agent_log_has(node: &Node, text: &str) -> bool {
    fs::read_to_string(node.dir().join("flanneld.log"))
        .unwrap_or_default()
        .contains(text)
}

#[test]
fn restart_keeps_the_subnet() {
    if !available_or_skip("flanneld::restart_keeps_the_subnet") {
        return;
    }
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    etcd.ctl_ok(&["put", &format!("{PREFIX}/config"), CONFIG]);
    let node = Node::new();
    lan.attach(&node, 2);
    let mut a = started(&node, &etcd, &["--iface=eth0"]);
    let key = own_key(&node);
    assert_eq!(a.terminate(), Some(0));
    // Restart: the lease of the same PublicIP is reused.
    let mut a = started(&node, &etcd, &["--iface=eth0"]);
    assert_eq!(own_key(&node), key);
    assert_eq!(a.terminate(), Some(0));
    // The key gone (expired while down): the subnet from subnet.env is taken again.
    etcd.ctl_ok(&["del", &format!("{PREFIX}/subnets/{key}")]);
    let mut a = started(&node, &etcd, &["--iface=eth0"]);
    a.wait_for("the lease", 10, || {
        etcd.ctl_ok(&[
            "get",
            "--prefix",
            "--keys-only",
            &format!("{PREFIX}/subnets/"),
        ])
        .contains(&key)
    });
    assert_eq!(own_key(&node), key);
    assert!(a.log().contains("using the previous subnet"), "{}", a.log());
    // Deleted while running: acquired again, the agent keeps running (Go exits 0).
    etcd.ctl_ok(&["del", &format!("{PREFIX}/subnets/{key}")]);
    a.wait_for("the re-acquired lease", 10, || {
        etcd.ctl_ok(&[
            "get",
            "--prefix",
            "--keys-only",
            &format!("{PREFIX}/subnets/"),
        ])
        .contains(&key)
    });
    assert!(a.running());
    assert!(a.log().contains("was deleted"), "{}", a.log());
}

#[test]
fn peers_become_host_gw_routes_two_agents_one_etcd() {
    if !available_or_skip("flanneld::peers_become_host_gw_routes_two_agents_one_etcd") {
        return;
    }
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    etcd.ctl_ok(&["put", &format!("{PREFIX}/config"), CONFIG]);
    let (a_node, b_node) = (Node::new(), Node::new());
    let a_ip = lan.attach(&a_node, 2);
    let b_ip = lan.attach(&b_node, 3);
    // B finds its interface by the default route.
    b_node
        .host()
        .sh("ip", &["route", "add", "default", "via", LAN_IP]);
    let mut a = started(&a_node, &etcd, &["--iface=eth0"]);
    let mut b = started(&b_node, &etcd, &[]);
    let (ka, kb) = (own_key(&a_node), own_key(&b_node));
    assert_ne!(ka, kb, "distinct subnets");
    let route = |node: &Node, key: &str, via: &str| {
        let dst = key.replace('-', "/");
        let routes = node.host().sh("ip", &["-4", "route"]);
        routes.contains(&format!("{dst} via {via} dev eth0"))
    };
    a.wait_for("A's route to B", 10, || route(&a_node, &kb, &b_ip));
    b.wait_for("B's route to A", 10, || route(&b_node, &ka, &a_ip));
    // Traffic between the two subnets takes those routes.
    let (fa, fb) = (ka.replace(".0-24", ".1"), kb.replace(".0-24", ".1"));
    a_node
        .host()
        .sh("ip", &["addr", "add", &format!("{fa}/32"), "dev", "lo"]);
    b_node
        .host()
        .sh("ip", &["addr", "add", &format!("{fb}/32"), "dev", "lo"]);
    a_node.host().sh("ping", &["-c1", "-W2", "-I", &fa, &fb]);
    // Deleted by hand: the agent's reconcile puts it back (Go: every 10 s).
    a_node
        .host()
        .sh("ip", &["route", "del", &kb.replace('-', "/")]);
    a.wait_for("A's route to B restored", 15, || route(&a_node, &kb, &b_ip));

    // A peer lease written and deleted with etcdctl, in Go's format; junk is skipped.
    let peer = format!("{PREFIX}/subnets/10.5.200.0-24");
    etcd.ctl_ok(&["put", &format!("{PREFIX}/subnets/junk"), "{}"]);
    etcd.ctl_ok(&[
        "put",
        &format!("{PREFIX}/subnets/10.5.201.0-24"),
        "not json",
    ]);
    etcd.ctl_ok(&[
        "put",
        &peer,
        r#"{"PublicIP":"192.168.50.9","PublicIPv6":null,"BackendType":"host-gw","Extra":true}"#,
    ]);
    a.wait_for("the peer's route", 10, || {
        route(&a_node, "10.5.200.0-24", "192.168.50.9")
    });
    etcd.ctl_ok(&["del", &peer]);
    a.wait_for("the peer's route removed", 10, || {
        !a_node
            .host()
            .sh("ip", &["-4", "route"])
            .contains("10.5.200.0/24")
    });
    assert!(a.running() && b.running());
    // B stops: its lease stays (zero-downtime restart), so A keeps the route.
    assert_eq!(b.terminate(), Some(0));
    assert!(route(&a_node, &kb, &b_ip));
}

#[test]
fn mutual_tls() {
    if !available_or_skip("flanneld::mutual_tls") {
        return;
    }
    let mut lan = Lan::new();
    let certs = Certs::make(&lan.dir().join("pki"));
    let etcd = Etcd::start(&lan, Some(&certs));
    etcd.ctl_ok(&["put", &format!("{PREFIX}/config"), CONFIG]);
    let node = Node::new();
    lan.attach(&node, 2);
    let s = |p: &std::path::Path| p.display().to_string();
    let a = started(
        &node,
        &etcd,
        &[
            "--iface=eth0",
            &format!("--etcd-cafile={}", s(&certs.ca)),
            &format!("--etcd-certfile={}", s(&certs.client.0)),
            &format!("--etcd-keyfile={}", s(&certs.client.1)),
        ],
    );
    drop(a);
    let key = own_key(&node);
    assert!(
        etcd.ctl_ok(&["get", &format!("{PREFIX}/subnets/{key}")])
            .contains("192.168.50.2")
    );
    // Without the client certificate etcd refuses it: never ready.
    let other = Node::new();
    lan.attach(&other, 3);
    let mut b = Agent::start(
        &other,
        "flanneld.log",
        &args(
            &other,
            &etcd.endpoint(),
            &["--iface=eth0", &format!("--etcd-cafile={}", s(&certs.ca))],
        ),
        &[],
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(subnet_env(&other).is_none() && b.running(), "{}", b.log());
}

#[test]
fn username_password() {
    if !available_or_skip("flanneld::username_password") {
        return;
    }
    let mut lan = Lan::new();
    let mut etcd = Etcd::start(&lan, None);
    etcd.enable_auth("s3cret");
    etcd.ctl_ok(&["put", &format!("{PREFIX}/config"), CONFIG]);
    let node = Node::new();
    lan.attach(&node, 2);
    // The password from the environment, as a unit's EnvironmentFile gives it.
    let mut a = Agent::start(
        &node,
        "flanneld.log",
        &args(
            &node,
            &etcd.endpoint(),
            &["--iface=eth0", "--etcd-username=root"],
        ),
        &[("FLANNELD_ETCD_PASSWORD", "s3cret")],
    );
    a.wait_for("subnet.env", 20, || subnet_env(&node).is_some());
    let key = own_key(&node);
    assert!(
        etcd.ctl_ok(&["get", &format!("{PREFIX}/subnets/{key}")])
            .contains("192.168.50.2")
    );
    assert_eq!(a.terminate(), Some(0));
}

#[test]
fn dead_endpoint_next_to_a_live_one() {
    if !available_or_skip("flanneld::dead_endpoint_next_to_a_live_one") {
        return;
    }
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    etcd.ctl_ok(&["put", &format!("{PREFIX}/config"), CONFIG]);
    let node = Node::new();
    lan.attach(&node, 2);
    let endpoints = format!("http://{LAN_IP}:2999,{}", etcd.endpoint());
    let mut a = Agent::start(
        &node,
        "flanneld.log",
        &args(&node, &endpoints, &["-iface", "eth0"]),
        &[],
    );
    a.wait_for("subnet.env", 30, || subnet_env(&node).is_some());
    // And it keeps working through the live one: a peer's route appears.
    etcd.ctl_ok(&[
        "put",
        &format!("{PREFIX}/subnets/10.5.200.0-24"),
        r#"{"PublicIP":"192.168.50.9","BackendType":"host-gw"}"#,
    ]);
    a.wait_for("the peer's route", 10, || {
        node.host()
            .sh("ip", &["-4", "route"])
            .contains("10.5.200.0/24 via 192.168.50.9")
    });
    assert_eq!(a.terminate(), Some(0));
}

/// flanneld's etcd store itself against the server: a watch from a compacted revision is
/// reported as compaction (what the agent re-lists on, #2470), puts and deletes arrive (a
/// delete with only its key), create-if-absent refuses an existing key and grants the TTL.
#[test]
fn etcd_store_on_real_etcd() {
    use flanneld::etcd::store::{Expect, Store, Watch, WatchBatch, WatchEvent};
    use flanneld::etcd::{EtcdOptions, EtcdStore};
    use std::time::Duration;

    if !available_or_skip("flanneld::etcd_store_on_real_etcd") {
        return;
    }
    let lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    etcd.ctl_ok(&["put", "/t/a", "1"]);
    etcd.ctl_ok(&["put", "/t/a", "2"]);
    conformance::in_netns::block_on(lan.ns().path(), || async {
        let opts = EtcdOptions {
            endpoints: vec![etcd.endpoint()],
            ..Default::default()
        };
        let store = EtcdStore::connect(&opts).await.unwrap();
        let (kvs, rev) = store.list("/t/").await.unwrap();
        assert_eq!((kvs.len(), kvs[0].value.as_slice()), (1, &b"2"[..]));
        etcd.ctl_ok(&["compaction", &rev.to_string()]);
        let mut w = store.watch("/t/", 1).await.unwrap();
        match w.next().await.unwrap() {
            WatchBatch::Compacted { compact_revision } => assert_eq!(compact_revision, rev),
            other => panic!("{other:?}"),
        }
        let mut w = store.watch("/t/", rev + 1).await.unwrap();
        etcd.ctl_ok(&["put", "/t/b", "x"]);
        etcd.ctl_ok(&["del", "/t/a"]);
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(5), w.next())
                .await
                .unwrap()
                .unwrap()
            {
                WatchBatch::Events { events, .. } => seen.extend(events),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(&seen[0], WatchEvent::Put(kv) if kv.key == "/t/b" && kv.value == b"x"));
        assert_eq!(seen[1], WatchEvent::Delete("/t/a".into()));
        assert!(
            store
                .create("/t/b", b"y", Duration::from_secs(60))
                .await
                .unwrap()
                .is_none()
        );
        let g = store
            .create("/t/c", b"z", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.ttl, Duration::from_secs(60));
        let left = store.time_to_live(g.id).await.unwrap().unwrap();
        assert!(left <= Duration::from_secs(60) && left >= Duration::from_secs(55));
        assert_eq!(store.get("/t/c").await.unwrap().unwrap().lease, g.id);
        // A renewal's conditional write: only over the value expected.
        let ttl = Duration::from_secs(60);
        assert!(
            store
                .put_if("/t/c", b"w", ttl, Expect::Value(b"not z"))
                .await
                .unwrap()
                .is_none()
        );
        let g2 = store
            .put_if("/t/c", b"w", ttl, Expect::Value(b"z"))
            .await
            .unwrap()
            .unwrap();
        let now = store.get("/t/c").await.unwrap().unwrap();
        assert_eq!((now.value.as_slice(), now.lease), (&b"w"[..], g2.id));
    })
    .unwrap();
    // The losing writes revoked their leases: /t/c's first and second remain.
    let leases = etcd.ctl_ok(&["lease", "list"]);
    assert!(leases.starts_with("found 2 leases"), "{leases}");
}

#[test]
fn vxlan_two_agents_one_etcd_with_ip_masq_and_reconcile() {
    if !available_or_skip("flanneld::vxlan_two_agents_one_etcd_with_ip_masq_and_reconcile") {
        return;
    }
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    etcd.ctl_ok(&[
        "put",
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#,
    ]);
    let (a_node, b_node) = (Node::new(), Node::new());
    let _a_ip = lan.attach(&a_node, 2);
    let b_ip = lan.attach(&b_node, 3);
    let mut a = started(&a_node, &etcd, &["--iface=eth0", "--ip-masq"]);
    let mut b = started(&b_node, &etcd, &["--iface=eth0"]);
    let (ka, kb) = (own_key(&a_node), own_key(&b_node));
    assert!(subnet_env(&a_node).unwrap().contains("FLANNEL_MTU=1450\n"));

    // A's lease publishes its device's MAC, in Go's format.
    let link_a = a_node.host().sh("ip", &["-d", "link", "show", "flannel.1"]);
    let mac_a = link_a
        .split("link/ether ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let value = etcd.ctl_ok(&[
        "get",
        "--print-value-only",
        &format!("{PREFIX}/subnets/{ka}"),
    ]);
    assert_eq!(
        value.trim(),
        format!(
            r#"{{"PublicIP":"192.168.50.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac_a}"}}}}"#
        )
    );

    let b_gw = kb.replace("-24", "");
    let route = |node: &Node, key: &str| {
        let dst = key.replace('-', "/");
        let gw = key.replace("-24", "");
        node.host()
            .sh("ip", &["-4", "route"])
            .contains(&format!("{dst} via {gw} dev flannel.1 proto static onlink"))
    };
    a.wait_for("A's route to B", 10, || route(&a_node, &kb));
    b.wait_for("B's route to A", 10, || route(&b_node, &ka));
    a_node.host().sh("ping", &["-c1", "-W2", &b_gw]);
    assert!(
        a_node
            .host()
            .sh("bridge", &["fdb", "show", "dev", "flannel.1"])
            .contains(&format!("dst {b_ip} self permanent"))
    );

    // --ip-masq: A has the masquerade rules, B (without it) none.
    let ruleset = a_node.host().sh("nft", &["list", "ruleset"]);
    assert!(ruleset.contains("table ip flannel-ipv4"), "{ruleset}");
    assert!(
        ruleset.contains(&format!(
            "ip saddr {} ip daddr 10.5.0.0/16 return",
            ka.replace('-', "/")
        )),
        "{ruleset}"
    );
    // B: Go's default --iptables-forward-rules, without masquerade.
    let ruleset = b_node.host().sh("nft", &["list", "ruleset"]);
    assert!(
        ruleset.contains("chain forward") && !ruleset.contains("chain postrtg"),
        "{ruleset}"
    );

    // The device deleted by hand on A: the agent recreates it, with its MAC and B's entries.
    a_node.host().sh("ip", &["link", "del", "flannel.1"]);
    a.wait_for("flannel.1 recreated with the route to B", 15, || {
        route(&a_node, &kb)
    });
    assert!(
        a_node
            .host()
            .sh("ip", &["link", "show", "flannel.1"])
            .contains(&mac_a)
    );
    a_node.host().sh("ping", &["-c1", "-W2", &b_gw]);
    assert!(
        a.log().contains("reconcile: device flannel.1 missing"),
        "{}",
        a.log()
    );

    // A peer lease in Go's exact format, written with etcdctl, then deleted.
    let peer = format!("{PREFIX}/subnets/10.5.200.0-24");
    etcd.ctl_ok(&[
        "put",
        &peer,
        r#"{"PublicIP":"192.168.50.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
    ]);
    a.wait_for("the Go peer's neighbour", 10, || {
        a_node
            .host()
            .sh("ip", &["neigh", "show", "dev", "flannel.1"])
            .contains("10.5.200.0 lladdr c6:d2:32:6f:8f:44 PERMANENT")
    });
    assert!(route(&a_node, "10.5.200.0-24"));
    etcd.ctl_ok(&["del", &peer]);
    a.wait_for("the Go peer's route removed", 10, || {
        !route(&a_node, "10.5.200.0-24")
    });
    assert!(a.running() && b.running());
}

#[test]
fn a_deleted_vxlan_device_is_recreated_with_its_peers_on_the_link_notification() {
    if !available_or_skip(
        "flanneld::a_deleted_vxlan_device_is_recreated_with_its_peers_on_the_link_notification",
    ) {
        return;
    }
    use std::time::{Duration, Instant};
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    etcd.ctl_ok(&[
        "put",
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":100}}"#,
    ]);
    let (a_node, b_node) = (Node::new(), Node::new());
    let _a_ip = lan.attach(&a_node, 2);
    let _b_ip = lan.attach(&b_node, 3);
    let mut a = started(&a_node, &etcd, &["--iface=eth0"]);
    let mut b = started(&b_node, &etcd, &["--iface=eth0"]);
    let kb = own_key(&b_node);
    let b_gw = kb.replace("-24", "");
    let route_to_b = || {
        a_node.host().sh("ip", &["-4", "route"]).contains(&format!(
            "{} via {b_gw} dev flannel.100 proto static onlink",
            kb.replace('-', "/")
        ))
    };
    a.wait_for("A's route to B", 10, route_to_b);
    b.wait_for("B's route to A", 10, || {
        b_node
            .host()
            .sh("ip", &["-4", "route"])
            .contains("dev flannel.100")
    });

    // Deleted by hand, twice (the second time right after a repair, so never just before a
    // 5 s tick): each time back with B's route well within a second.
    for round in 0..2 {
        let deleted = Instant::now();
        a_node.host().sh("ip", &["link", "del", "flannel.100"]);
        a.wait_for("flannel.100 recreated with the route to B", 1, route_to_b);
        let took = deleted.elapsed();
        eprintln!("round {round}: flannel.100 with B's route back after {took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    a_node.host().sh("ping", &["-c1", "-W2", &b_gw]);
    let log = a.log();
    assert!(
        log.lines().any(|l| l.contains("link notifications (")
            && l.contains("flannel.100 (index ")
            && l.contains(") deleted")),
        "{log}"
    );
    assert!(
        log.contains("reconcile: device flannel.100 missing"),
        "{log}"
    );
    assert!(a.running() && b.running());
}

/// The node's IPv6 subnet (`fc00:0:0:17::/64`) and its first address (the IPv6 device's),
/// from subnet.env's `FLANNEL_IPV6_SUBNET` (`fc00:0:0:17::1/64`).
fn own_v6(node: &Node) -> (String, String) {
    let env = subnet_env(node).unwrap();
    let (_, v6) = cni_common::subnet_env::previous_subnets(&env);
    let sn = v6.unwrap_or_else(|| panic!("no FLANNEL_IPV6_SUBNET in {env}"));
    (sn.to_string(), sn.network().to_string())
}

fn mac_of(node: &Node, dev: &str) -> String {
    let link = node.host().sh("ip", &["-d", "link", "show", dev]);
    link.split("link/ether ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn vxlan_dual_stack_three_agents_one_etcd() {
    if !available_or_skip("flanneld::vxlan_dual_stack_three_agents_one_etcd") {
        return;
    }
    const V6: &str = "flannel-v6.7";
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    etcd.ctl_ok(&[
        "put",
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan","VNI":7}}"#,
    ]);
    let nodes = [Node::new(), Node::new(), Node::new()];
    let lan_ips: Vec<(String, String)> = nodes
        .iter()
        .zip(2u8..)
        .map(|(n, h)| lan.attach_dual_stack(n, h))
        .collect();
    let mut agents: Vec<Agent> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let masq: &[&str] = if i == 0 {
                &["--iface=eth0", "--ip-masq"]
            } else {
                &["--iface=eth0"]
            };
            started(n, &etcd, masq)
        })
        .collect();
    let v6: Vec<(String, String)> = nodes.iter().map(own_v6).collect();
    let (a_node, b_node) = (&nodes[0], &nodes[1]);
    let a = a_node.host();

    // subnet.env: Go's keys and order, the MTU of the IPv4 device.
    let env = subnet_env(a_node).unwrap();
    let third: u8 = own_key(a_node).split('.').nth(2).unwrap().parse().unwrap();
    assert_eq!(
        env,
        format!(
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.{third}.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET={}1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
            v6[0].1
        )
    );

    // The lease: dual-stack key, Go's value with both devices' MACs.
    let (mac_a, mac6_a) = (mac_of(a_node, "flannel.7"), mac_of(a_node, V6));
    assert_ne!(mac_a, mac6_a);
    let key_a = format!("{}&{}", own_key(a_node), v6[0].0.replace('/', "-"));
    let value = etcd.ctl_ok(&[
        "get",
        "--print-value-only",
        &format!("{PREFIX}/subnets/{key_a}"),
    ]);
    assert_eq!(
        value.trim(),
        format!(
            r#"{{"PublicIP":"192.168.50.2","PublicIPv6":"fd00:5::2","BackendType":"vxlan","BackendData":{{"VNI":7,"VtepMAC":"{mac_a}"}},"BackendV6Data":{{"VNI":7,"VtepMAC":"{mac6_a}"}}}}"#
        )
    );

    // The IPv6 device: local = eth0's IPv6 address, learning off, underlay − 70, /128.
    let link = a.sh("ip", &["-d", "link", "show", V6]);
    for want in [
        "mtu 1430",
        "vxlan id 7",
        "local fd00:5::2",
        "dev eth0",
        "dstport 8472",
        "nolearning",
        "UP",
    ] {
        assert!(link.contains(want), "{want}: {link}");
    }
    let addr = a.sh("ip", &["-6", "addr", "show", V6]);
    assert!(addr.contains(&format!("inet6 {}/128", v6[0].1)), "{addr}");

    // A's entries for B and C: neighbour, FDB entry, onlink route.
    let route6 = |node: &Node, (net, gw): &(String, String)| {
        node.host().sh("ip", &["-6", "route"]).lines().any(|l| {
            l.starts_with(&format!("{net} via {gw} dev {V6} proto static")) && l.contains("onlink")
        })
    };
    for (i, peer) in v6.iter().enumerate().skip(1) {
        agents[0].wait_for("A's IPv6 route to a peer", 10, || route6(a_node, peer));
        agents[i].wait_for("the peer's IPv6 route to A", 10, || {
            route6(&nodes[i], &v6[0])
        });
    }
    let neigh = a.sh("ip", &["-6", "neigh", "show", "dev", V6]);
    let fdb = a.sh("bridge", &["fdb", "show", "dev", V6]);
    for (i, node) in nodes.iter().enumerate().skip(1) {
        let mac6 = mac_of(node, V6);
        assert!(
            neigh.contains(&format!("{} lladdr {mac6} PERMANENT", v6[i].1)),
            "{neigh}"
        );
        assert!(
            fdb.contains(&format!("{mac6} dst {} self permanent", lan_ips[i].1)),
            "{fdb}"
        );
    }

    // Across the overlay: the peers' IPv6 device addresses and a cni0-like address of each
    // node's IPv6 subnet (FLANNEL_IPV6_SUBNET), and IPv4 still.
    for (i, node) in nodes.iter().enumerate() {
        let h = node.host();
        // A veth pair: an address on a link with carrier, as on a bridge with pods.
        h.sh(
            "ip",
            &[
                "link", "add", "cni0", "type", "veth", "peer", "name", "cni0p",
            ],
        );
        h.sh("ip", &["link", "set", "cni0p", "up"]);
        h.sh(
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{}1/64", v6[i].1),
                "dev",
                "cni0",
                "nodad",
            ],
        );
        h.sh("ip", &["link", "set", "cni0", "up"]);
    }
    let mut pings = String::new();
    for (i, _) in nodes.iter().enumerate().skip(1) {
        for dst in [v6[i].1.clone(), format!("{}1", v6[i].1)] {
            let out = a.run("ping", &["-6", "-c", "2", "-W", "2", &dst]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "ping -6 {dst}: {text}");
            pings.push_str(&format!("$ ping -6 -c 2 {dst}\n{text}"));
        }
    }
    a.sh("ping", &["-c1", "-W2", &own_key(b_node).replace("-24", "")]);
    eprintln!(
        "node A ({}, {}; own IPv6 subnet {}):\n$ ip -6 route\n{}$ ip -6 neigh\n{}$ bridge fdb show dev {V6}\n{}{pings}",
        lan_ips[0].0,
        lan_ips[0].1,
        v6[0].0,
        a.sh("ip", &["-6", "route"]),
        a.sh("ip", &["-6", "neigh"]),
        fdb
    );

    // --ip-masq: the ip6 table too.
    let ruleset = a.sh("nft", &["list", "ruleset"]);
    assert!(ruleset.contains("table ip6 flannel-ipv6"), "{ruleset}");
    assert!(
        ruleset.contains(&format!("ip6 saddr {} ip6 daddr fc00::/48 return", v6[0].0)),
        "{ruleset}"
    );

    // The IPv6 device deleted by hand: back with its MAC and the peers' entries.
    a.sh("ip", &["link", "del", V6]);
    agents[0].wait_for("flannel-v6.7 recreated with the route to B", 10, || {
        route6(a_node, &v6[1])
    });
    assert_eq!(mac_of(a_node, V6), mac6_a);
    a.sh("ping", &["-6", "-c1", "-W2", &v6[1].1]);
    // A neighbour deleted by hand: restored by reconcile.
    a.sh("ip", &["-6", "neigh", "del", &v6[2].1, "dev", V6]);
    agents[0].wait_for("C's IPv6 neighbour restored", 15, || {
        a.sh("ip", &["-6", "neigh", "show", "dev", V6])
            .contains(&format!("{} lladdr", v6[2].1))
    });

    // A dual-stack peer lease in Go's format, then deleted: its IPv6 entries come and go.
    let peer = format!("{PREFIX}/subnets/10.5.200.0-24&fc00:0:0:c8::-64");
    etcd.ctl_ok(&[
        "put",
        &peer,
        r#"{"PublicIP":"192.168.50.9","PublicIPv6":"fd00:5::9","BackendType":"vxlan","BackendData":{"VNI":7,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":7,"VtepMAC":"c6:d2:32:6f:8f:46"}}"#,
    ]);
    let go_peer = ("fc00:0:0:c8::/64".to_owned(), "fc00:0:0:c8::".to_owned());
    agents[0].wait_for("the Go peer's IPv6 route", 10, || route6(a_node, &go_peer));
    assert!(
        a.sh("bridge", &["fdb", "show", "dev", V6])
            .contains("c6:d2:32:6f:8f:46 dst fd00:5::9 self permanent")
    );
    etcd.ctl_ok(&["del", &peer]);
    // The agent removes the route, then the neighbour, then the FDB entry.
    agents[0].wait_for("the Go peer's IPv6 route and neighbour removed", 10, || {
        !route6(a_node, &go_peer)
            && !a
                .sh("ip", &["-6", "neigh", "show", "dev", V6])
                .contains("fc00:0:0:c8::")
    });
    assert!(agents.iter_mut().all(Agent::running));
}

/// `flanneld_reconcile_runs_total` of the agent on `node` (`--metrics-port=9473`).
fn reconcile_runs(node: &Node) -> u64 {
    let out = node
        .host()
        .run("curl", &["-s", "http://127.0.0.1:9473/metrics"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("flanneld_reconcile_runs_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The kernel tells the agent when one of its entries changes: a quiet node compares the
/// kernel only when told (or once a minute), and what is deleted by hand still comes back
/// at the next tick, what is added by hand goes.
#[test]
fn vxlan_entries_changed_by_hand_are_repaired_on_the_kernels_notice() {
    if !available_or_skip(
        "flanneld::vxlan_entries_changed_by_hand_are_repaired_on_the_kernels_notice",
    ) {
        return;
    }
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    etcd.ctl_ok(&[
        "put",
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#,
    ]);
    let (a_node, b_node) = (Node::new(), Node::new());
    lan.attach(&a_node, 2);
    lan.attach(&b_node, 3);
    let mut a = started(
        &a_node,
        &etcd,
        &[
            "--iface=eth0",
            "--healthz-ip=127.0.0.1",
            "--metrics-port=9473",
        ],
    );
    let _b = started(&b_node, &etcd, &["--iface=eth0"]);
    let kb = own_key(&b_node);
    let (dst, gw) = (kb.replace('-', "/"), kb.replace("-24", ""));
    let host = a_node.host();
    let has = |what: &[&str], needle: &str| host.sh(what[0], &what[1..]).contains(needle);
    let route = ["ip", "-4", "route", "show", "dev", "flannel.1"];
    let neigh = ["ip", "neigh", "show", "dev", "flannel.1"];
    a.wait_for("A's route to B", 10, || has(&route, &dst));
    // The first tick compares (nothing was known); the quiet ones after it do not.
    a.wait_for("a first whole reconcile", 15, || {
        reconcile_runs(&a_node) >= 1
    });
    let before = reconcile_runs(&a_node);
    std::thread::sleep(std::time::Duration::from_secs(11));
    let quiet = reconcile_runs(&a_node) - before;
    assert!(quiet <= 1, "{quiet} whole reconciles in 11 s of quiet");
    // By hand: B's route and neighbour deleted, a stale neighbour added.
    host.sh("ip", &["route", "del", &dst, "dev", "flannel.1"]);
    host.sh("ip", &["neigh", "del", &gw, "dev", "flannel.1"]);
    host.sh(
        "ip",
        &[
            "neigh",
            "add",
            "10.5.250.0",
            "lladdr",
            "02:00:00:00:00:09",
            "dev",
            "flannel.1",
            "nud",
            "permanent",
        ],
    );
    a.wait_for(
        "B's route and neighbour back, the stale neighbour gone",
        15,
        || has(&route, &dst) && has(&neigh, &gw) && !has(&neigh, "10.5.250.0"),
    );
    assert!(a.running());
}
