//! flanneld under faults, races, lease lifetimes and restarts, against real etcd in private
//! namespaces: etcd down at start, killed mid-run and restarted (data path kept, changes made
//! meanwhile caught up), restarted with a compacted history (re-list, bounded log), a member of
//! a 3-member cluster gone (failover, renewals and watch kept); agents started at once on a
//! nearly full and an overfull subnet range; short lease TTLs (`FLANNELD_TEST_LEASE_TTL`):
//! renewals, a silent peer expiring, the own lease deleted; SIGKILL restarts (same subnet and
//! MAC, no flap on a peer) and a simulated reboot (new MAC published to the peers).
//!
//! Short by default (CI); `scripts/reliability.sh` runs the long forms with
//! `FLANNELD_FAULTS_SCALE` (race sizes ×N) and `FLANNELD_FAULTS_ITERATIONS` (etcd kills and
//! agent restarts per test).

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use conformance::Node;
use conformance::etcd::{Agent, Etcd, LAN_IP, Lan, available_or_skip};
use conformance::lease::{self, KeyEvent, KeyHistory};
use conformance::poll;
use nix::sys::signal::Signal;

const PREFIX: &str = "/coreos.com/network";
const HOSTGW: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#;
const VXLAN: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(default)
}

/// Race sizes are multiplied by this (long form: `FLANNELD_FAULTS_SCALE=3`).
fn scale() -> usize {
    env_number("FLANNELD_FAULTS_SCALE", 1)
}

/// etcd kills / agent restarts per test (long form: `FLANNELD_FAULTS_ITERATIONS=10`).
fn iterations() -> usize {
    env_number("FLANNELD_FAULTS_ITERATIONS", 1)
}

/// Starts flanneld on `node` (log `<node>/<log>`), `--iface=eth0`, subnet.env in the node dir.
fn agent(node: &Node, log: &str, endpoints: &str, extra: &[&str], env: &[(&str, &str)]) -> Agent {
    let mut args = vec![
        format!("--etcd-endpoints={endpoints}"),
        format!("--subnet-file={}", node.dir().join("subnet.env").display()),
        "--iface=eth0".to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Agent::start(node, log, &args, env)
}

/// Starts flanneld and waits until this run wrote subnet.env.
fn started(node: &Node, log: &str, endpoints: &str, env: &[(&str, &str)]) -> Agent {
    let mut a = agent(node, log, endpoints, &[], env);
    let path = node.dir().join(log);
    a.wait_for("subnet.env written", 40, || {
        fs::read_to_string(&path)
            .unwrap_or_default()
            .contains("wrote subnet file")
    });
    a
}

fn subnet_env(node: &Node) -> Option<String> {
    fs::read_to_string(node.dir().join("subnet.env")).ok()
}

/// The node's lease key name (`10.5.23.0-24`) from its subnet.env.
fn own_key(node: &Node) -> String {
    lease::own_key(node, "subnet.env").unwrap()
}

/// The lease keys under `<prefix>/subnets/` (names only).
fn lease_keys(etcd: &Etcd, prefix: &str) -> Vec<String> {
    let sub = format!("{prefix}/subnets/");
    etcd.ctl_ok(&["get", "--prefix", "--keys-only", &sub])
        .lines()
        .filter_map(|l| l.strip_prefix(&sub).map(str::to_owned))
        .collect()
}

fn routes(node: &Node) -> String {
    node.host().sh("ip", &["-4", "route"])
}

/// host-gw: `<subnet> via <ip> dev eth0`.
fn has_route(node: &Node, key: &str, via: &str) -> bool {
    routes(node).contains(&format!("{} via {via} dev eth0", key.replace('-', "/")))
}

fn put_peer(etcd: &Etcd, key: &str, ip: &str) {
    etcd.ctl_ok(&[
        "put",
        &format!("{PREFIX}/subnets/{key}"),
        &lease::host_gw_value(ip),
    ]);
}

/// The lines of `log` after its first `from` bytes.
fn lines_after(log: &str, from: usize) -> Vec<String> {
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The short lease TTL of the lifetime tests (`FLANNELD_TEST_LEASE_TTL`, 5..=86400 s): the
/// agent renews a third of it before the end, so 4 s of slack, which a loaded machine's stall
/// does not use up; short enough for several renewals and an expiry within a test.
const TTL_SECS: u64 = 12;
const TTL_ENV: [(&str, &str); 1] = [("FLANNELD_TEST_LEASE_TTL", "12")];

/// The own lease renewed in place while `history` recorded it and the agent logged `log`:
/// at least `min` writes, each on a new etcd lease (a renewal is a new lease; `before` is the
/// one it had), the key never deleted (expired), and no loss or re-acquisition logged. (A
/// lease that expires is acquired again with the same free subnet: the key being there at the
/// end proves nothing.)
fn assert_renewed_in_place(history: &KeyHistory, before: i64, min: usize, log: &[String]) {
    // etcdctl prints each event as it arrives: it may trail the agent's log line a little.
    poll::secs(
        &format!("{min} renewals in the key's history"),
        15,
        || {
            history
                .events()
                .iter()
                .filter(|e| matches!(e, KeyEvent::Put { .. }))
                .count()
                >= min
        },
        || history.text(),
    );
    let events = history.events();
    assert!(
        !events.contains(&KeyEvent::Delete),
        "the own key went away: {events:?}\n{}",
        log.join("\n")
    );
    let mut leases = vec![before];
    for e in &events {
        if let KeyEvent::Put { lease } = *e {
            assert!(
                !leases.contains(&lease) && lease != 0,
                "a write without a new lease ({lease:x}): {events:?}"
            );
            leases.push(lease);
        }
    }
    let lost: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("was deleted") || l.contains("re-acquired"))
        .collect();
    assert!(lost.is_empty(), "the lease was lost: {lost:?}");
}

/// (a) etcd is down when the agent starts: it logs and waits (alive, no subnet.env), then
/// works as soon as etcd comes up.
#[test]
fn etcd_down_at_start_then_up() {
    if !available_or_skip("flanneld_faults::etcd_down_at_start_then_up") {
        return;
    }
    let mut lan = Lan::new();
    let node = Node::new();
    lan.attach(&node, 2);
    let mut a = agent(&node, "a.log", &format!("http://{LAN_IP}:2379"), &[], &[]);
    poll::secs(
        "two failed attempts logged",
        20,
        || a.log().matches("retrying in").count() >= 2,
        || a.log(),
    );
    assert!(a.running());
    assert!(subnet_env(&node).is_none());
    let waiting = a.log();
    eprintln!("while etcd is down:\n{waiting}");

    let etcd = Etcd::start(&lan, None);
    let up = Instant::now();
    etcd.ctl_ok(&["put", &format!("{PREFIX}/config"), HOSTGW]);
    put_peer(&etcd, "10.5.200.0-24", "192.168.50.9");
    a.wait_for("subnet.env and the peer's route", 30, || {
        subnet_env(&node).is_some() && has_route(&node, "10.5.200.0-24", "192.168.50.9")
    });
    eprintln!(
        "etcd up → lease, subnet.env, peer route: {:?}",
        up.elapsed()
    );
    let key = own_key(&node);
    let mut keys = lease_keys(&etcd, PREFIX);
    keys.sort();
    let mut want = vec!["10.5.200.0-24".to_owned(), key];
    want.sort();
    assert_eq!(keys, want);
    assert!(a.running());
}

/// (b) etcd SIGKILLed mid-run: routes stay and the agent keeps running while it is gone; once
/// it is back (same data dir), changes made right after the restart (one peer added, one
/// deleted) reach the kernel.
#[test]
fn etcd_killed_mid_run_data_path_stays_and_catches_up() {
    if !available_or_skip("flanneld_faults::etcd_killed_mid_run_data_path_stays_and_catches_up") {
        return;
    }
    let mut lan = Lan::new();
    let mut etcd = Etcd::start(&lan, None);
    etcd.ctl_ok(&["put", &format!("{PREFIX}/config"), HOSTGW]);
    let node = Node::new();
    lan.attach(&node, 2);
    put_peer(&etcd, "10.5.200.0-24", "192.168.50.9");
    let mut a = started(&node, "a.log", &etcd.endpoint(), &[]);
    a.wait_for("the first peer's route", 10, || {
        has_route(&node, "10.5.200.0-24", "192.168.50.9")
    });
    // Each round: kill, wait out a few reconnect attempts, restart, change two peers.
    let mut present = ("10.5.200.0-24".to_owned(), "192.168.50.9".to_owned());
    for round in 0..iterations() {
        let before = routes(&node);
        etcd.kill();
        let killed_at = a.log().len();
        // Until the backoff reached its 5 s ceiling: etcd is back, and changed, well before
        // the agent's next attempt.
        poll::secs(
            "failed reconnects up to a 5 s backoff",
            30,
            || {
                lines_after(&a.log(), killed_at)
                    .iter()
                    .any(|l| l.contains("retrying in 5s") || l.contains("re-listing in 5s"))
            },
            || a.log(),
        );
        let attempts = lines_after(&a.log(), killed_at).len();
        // The data path is still looked after: a route deleted by hand comes back.
        node.host()
            .sh("ip", &["route", "del", &present.0.replace('-', "/")]);
        a.wait_for("the deleted route restored while etcd is down", 15, || {
            has_route(&node, &present.0, &present.1)
        });
        assert!(a.running(), "{}", a.log());
        assert_eq!(
            routes(&node),
            before,
            "the data path changed while etcd was down"
        );
        etcd.restart();
        let back = Instant::now();
        let added = (
            format!("10.5.{}.0-24", 210 + round),
            format!("192.168.50.{}", 20 + round),
        );
        put_peer(&etcd, &added.0, &added.1);
        etcd.ctl_ok(&["del", &format!("{PREFIX}/subnets/{}", present.0)]);
        a.wait_for(
            "the added peer's route and the deleted one's gone",
            30,
            || has_route(&node, &added.0, &added.1) && !has_route(&node, &present.0, &present.1),
        );
        eprintln!(
            "round {round}: {attempts} log lines while etcd was down; caught up {:?} after \
             etcd was back",
            back.elapsed()
        );
        present = added;
    }
    assert!(a.running());
    let own = own_key(&node);
    assert!(lease_keys(&etcd, PREFIX).contains(&own));
}

/// (b') etcd frozen (SIGSTOP: connections stay open, nothing answers, as behind a partition):
/// each call waits out its timeout, and meanwhile the agent still repairs the data path and
/// answers SIGTERM at once.
#[test]
fn etcd_not_answering_neither_stops_repairs_nor_a_shutdown() {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    if !available_or_skip(
        "flanneld_faults::etcd_not_answering_neither_stops_repairs_nor_a_shutdown",
    ) {
        return;
    }
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    etcd.ctl_ok(&["put", &format!("{PREFIX}/config"), HOSTGW]);
    let node = Node::new();
    lan.attach(&node, 2);
    put_peer(&etcd, "10.5.200.0-24", "192.168.50.9");
    // Renewals every few seconds, so one is waiting on etcd while the route goes.
    let mut a = started(&node, "a.log", &etcd.endpoint(), &TTL_ENV);
    a.wait_for("the peer's route", 10, || {
        has_route(&node, "10.5.200.0-24", "192.168.50.9")
    });
    let pid = Pid::from_raw(etcd.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let frozen = a.log().len();
    // Wait for a call to be stuck: the renewal is due within two thirds of the TTL.
    std::thread::sleep(Duration::from_secs(TTL_SECS * 2 / 3 + 1));
    node.host().sh("ip", &["route", "del", "10.5.200.0/24"]);
    let deleted = Instant::now();
    a.wait_for(
        "the deleted route restored while etcd does not answer",
        20,
        || has_route(&node, "10.5.200.0-24", "192.168.50.9"),
    );
    let restored = deleted.elapsed();
    let asked = Instant::now();
    let code = a.terminate();
    let stopped = asked.elapsed();
    kill(pid, Signal::SIGCONT).unwrap();
    eprintln!(
        "etcd frozen: route restored after {restored:?}, SIGTERM answered in {stopped:?}; \
         log meanwhile:\n{}",
        lines_after(&a.log(), frozen).join("\n")
    );
    assert_eq!(code, Some(0), "{}", a.log());
    // Bounds for a loaded machine: the reconcile tick is 5 s. (Against etcd-client, a
    // stuck call ends at its HTTP/2 keepalive, about 5 s: an agent waiting inline passes
    // here too, measured; the unit test `an_etcd_that_does_not_answer_...` on a store that
    // never answers is the one that tells them apart.)
    assert!(
        restored < Duration::from_secs(10),
        "the route came back after {restored:?} (the reconcile tick is 5 s)"
    );
    assert!(
        stopped < Duration::from_secs(3),
        "SIGTERM took {stopped:?} (an etcd call's timeout is 10 s)"
    );
}

/// (c) The agent frozen while etcd restarts and its history is rewritten and compacted past
/// the agent's watch revision: on waking it re-lists (the changes are applied), with no hot
/// loop and a bounded number of log lines.
#[test]
fn compacted_history_relists_without_a_hot_loop() {
    if !available_or_skip("flanneld_faults::compacted_history_relists_without_a_hot_loop") {
        return;
    }
    let mut lan = Lan::new();
    let mut etcd = Etcd::start(&lan, None);
    etcd.ctl_ok(&["put", &format!("{PREFIX}/config"), HOSTGW]);
    let node = Node::new();
    lan.attach(&node, 2);
    put_peer(&etcd, "10.5.200.0-24", "192.168.50.9");
    let mut a = started(&node, "a.log", &etcd.endpoint(), &[]);
    a.wait_for("the peer's route", 10, || {
        has_route(&node, "10.5.200.0-24", "192.168.50.9")
    });
    a.signal(Signal::SIGSTOP);
    etcd.kill();
    etcd.restart();
    // Many revisions (a peer rewritten 150 times), then the peer replaced, then compaction.
    let key = format!("{PREFIX}/subnets/10.5.201.0-24");
    let script = format!(
        "for i in $(seq 150); do ETCDCTL_API=3 etcdctl --endpoints {} put {key} \
         '{{\"PublicIP\":\"192.168.50.10\",\"PublicIPv6\":null,\"BackendType\":\"host-gw\",\"N\":'$i'}}' \
         >/dev/null || exit 1; done",
        etcd.endpoint()
    );
    lan.ns().sh("sh", &["-c", &script]);
    etcd.ctl_ok(&["del", &format!("{PREFIX}/subnets/10.5.200.0-24")]);
    put_peer(&etcd, "10.5.202.0-24", "192.168.50.11");
    let rev = etcd.revision();
    etcd.ctl_ok(&["compaction", &rev.to_string(), "--physical"]);
    let from = a.log().len();
    let woke = Instant::now();
    a.signal(Signal::SIGCONT);
    a.wait_for("the changes made while frozen", 30, || {
        has_route(&node, "10.5.202.0-24", "192.168.50.11")
            && has_route(&node, "10.5.201.0-24", "192.168.50.10")
            && !has_route(&node, "10.5.200.0-24", "192.168.50.9")
    });
    let caught_up = woke.elapsed();
    // A 10 s window from the wake-up: a hot loop would log hundreds of lines.
    while woke.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let lines = lines_after(&a.log(), from);
    eprintln!(
        "caught up {caught_up:?} after waking; {} log lines in 10 s:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(lines.len() <= 25, "{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("re-listing") || l.contains("compacted")),
        "{}",
        lines.join("\n")
    );
    assert!(a.running());

    // etcd alive this time: the frozen agent's watch falls behind (20 MB of writes fill the
    // stream's buffers, etcd parks it), the history is compacted past it, and the watch
    // reports the compaction when the agent reads on.
    a.signal(Signal::SIGSTOP);
    write_padded(&etcd, "10.5.203.0-24", 300, 64 * 1024);
    etcd.ctl_ok(&["del", &format!("{PREFIX}/subnets/10.5.201.0-24")]);
    put_peer(&etcd, "10.5.204.0-24", "192.168.50.12");
    let rev = etcd.revision();
    etcd.ctl_ok(&["compaction", &rev.to_string(), "--physical"]);
    let from = a.log().len();
    let woke = Instant::now();
    a.signal(Signal::SIGCONT);
    a.wait_for("the changes made while frozen (live etcd)", 60, || {
        has_route(&node, "10.5.204.0-24", "192.168.50.12")
            && !has_route(&node, "10.5.201.0-24", "192.168.50.10")
    });
    let caught_up = woke.elapsed();
    while woke.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let lines = lines_after(&a.log(), from);
    eprintln!(
        "live etcd: caught up {caught_up:?} after waking; {} log lines in 10 s:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(lines.len() <= 25, "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l.contains("compacted")),
        "{}",
        lines.join("\n")
    );
    assert!(a.running());
}

/// `count` puts of peer `key`'s lease padded to `size` bytes (one revision each), over one
/// etcd-client connection (etcdctl would take a process each).
fn write_padded(etcd: &Etcd, key: &str, count: usize, size: usize) {
    let key = format!("{PREFIX}/subnets/{key}");
    let kvs: Vec<(String, String)> = (0..count)
        .map(|i| {
            let value = format!(
                r#"{{"PublicIP":"192.168.50.13","PublicIPv6":null,"BackendType":"host-gw","N":{i},"Pad":"{}"}}"#,
                "x".repeat(size)
            );
            (key.clone(), value)
        })
        .collect();
    etcd.put_raw(&kvs, Duration::from_secs(3600));
}

/// (d) Three etcd members, the agent's first endpoint SIGKILLed: it fails over, keeps
/// renewing its (short) lease and its watch programs a peer put after the failure.
#[test]
fn cluster_member_gone_failover_keeps_renewals_and_watch() {
    if !available_or_skip("flanneld_faults::cluster_member_gone_failover_keeps_renewals_and_watch")
    {
        return;
    }
    let mut lan = Lan::new();
    let mut members = Etcd::cluster(&lan, 3);
    let endpoints = members
        .iter()
        .map(Etcd::endpoint)
        .collect::<Vec<_>>()
        .join(",");
    members[0].ctl_ok(&["put", &format!("{PREFIX}/config"), HOSTGW]);
    let node = Node::new();
    lan.attach(&node, 2);
    let mut a = started(&node, "a.log", &endpoints, &TTL_ENV);
    let own = format!("{PREFIX}/subnets/{}", own_key(&node));
    for round in 0..iterations() {
        // Round 0 kills the first endpoint; later rounds kill whichever serves the agent.
        let victim = round % 3;
        let survivor = (victim + 1) % 3;
        let from = a.log().len();
        // The own key's every change from now on, as the surviving member sees it.
        let before = members[survivor].lease_id(&own).unwrap();
        let history = members[survivor].watch_key(&own, members[survivor].revision() + 1);
        members[victim].kill();
        let gone = Instant::now();
        let key = format!("10.5.{}.0-24", 200 + round);
        let ip = format!("192.168.50.{}", 100 + round % 100);
        // etcd may be electing a leader: retried until accepted.
        poll::secs(
            "the new peer lease written",
            30,
            || {
                members[survivor]
                    .ctl(&[
                        "put",
                        &format!("{PREFIX}/subnets/{key}"),
                        &lease::host_gw_value(&ip),
                    ])
                    .status
                    .success()
            },
            || members[survivor].log(),
        );
        let written = Instant::now();
        let elected = gone.elapsed();
        a.wait_for("the new peer's route after the failover", 30, || {
            has_route(&node, &key, &ip)
        });
        let programmed = written.elapsed();
        poll::secs(
            "two renewals after the failure",
            60,
            || {
                lines_after(&a.log(), from)
                    .iter()
                    .filter(|l| l.contains("renewed lease"))
                    .count()
                    >= 2
            },
            || a.log(),
        );
        // Renewed through the surviving members, never lost and acquired again.
        let log = lines_after(&a.log(), from);
        assert_renewed_in_place(&history, before, 2, &log);
        let lease = members[survivor].lease_id(&own).unwrap();
        let ttl = members[survivor].ctl_ok(&["lease", "timetolive", &format!("{lease:x}")]);
        assert!(
            ttl.contains(&format!("granted with TTL({TTL_SECS}s)")),
            "{ttl}"
        );
        eprintln!(
            "round {round}: member m{victim} killed; the cluster took a write after \
             {elected:?}, the agent programmed it {programmed:?} later; failover lines: {:?}",
            log.iter()
                .filter(|l| l.contains("unreachable"))
                .collect::<Vec<_>>()
        );
        members[victim].restart();
    }
    assert!(a.log().contains("unreachable: using"), "{}", a.log());
    assert!(a.running());
}

/// `n` nodes on the LAN (hosts `.2`..), each running an agent on `prefix`, started at once.
fn start_many(
    lan: &mut Lan,
    nodes: &mut Vec<Node>,
    n: usize,
    etcd: &Etcd,
    prefix: &str,
    log: &str,
) -> Vec<Agent> {
    while nodes.len() < n {
        let node = Node::new();
        lan.attach(&node, u8::try_from(nodes.len() + 2).unwrap());
        nodes.push(node);
    }
    let ep = etcd.endpoint();
    let extra = [format!("--etcd-prefix={prefix}")];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    nodes
        .iter()
        .take(n)
        .map(|node| {
            let _ = fs::remove_file(node.dir().join("subnet.env"));
            agent(node, log, &ep, &extra, &[])
        })
        .collect()
}

fn wrote(node: &Node, log: &str) -> bool {
    fs::read_to_string(node.dir().join(log))
        .unwrap_or_default()
        .contains("wrote subnet file")
}

fn config_with(network: &str, free: usize) -> String {
    format!(
        r#"{{"Network":"{network}.0.0/16","SubnetLen":24,"SubnetMin":"{network}.1.0","SubnetMax":"{network}.{free}.0","Backend":{{"Type":"host-gw"}}}}"#
    )
}

/// Agents started at once: 20 against 24 free subnets get 20 distinct ones; 30 against 24:
/// 24 get one, 6 say "out of subnets" and keep waiting, and one of them takes a subnet freed
/// later. (×`FLANNELD_FAULTS_SCALE` in the long form.)
#[test]
fn agents_started_at_once_race_for_subnets() {
    if !available_or_skip("flanneld_faults::agents_started_at_once_race_for_subnets") {
        return;
    }
    let k = scale();
    let (free, fit, over) = (24 * k, 20 * k, 30 * k);
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    let mut nodes = Vec::new();

    // 20 for 24.
    etcd.ctl_ok(&["put", "/fit/network/config", &config_with("10.5", free)]);
    let t = Instant::now();
    let mut agents = start_many(&mut lan, &mut nodes, fit, &etcd, "/fit/network", "fit.log");
    poll::secs(
        "every agent's subnet.env",
        90,
        || nodes.iter().take(fit).all(|n| wrote(n, "fit.log")),
        || lease_keys(&etcd, "/fit/network").join(" "),
    );
    eprintln!(
        "{fit} agents for {free} subnets: all leased in {:?}",
        t.elapsed()
    );
    let keys = lease_keys(&etcd, "/fit/network");
    let mut own: Vec<String> = nodes.iter().take(fit).map(own_key).collect();
    own.sort();
    own.dedup();
    assert_eq!(own.len(), fit, "duplicate subnets in subnet.env: {own:?}");
    assert_eq!(keys.len(), fit, "{keys:?}");
    for key in &own {
        assert!(keys.contains(key), "{key} not in etcd: {keys:?}");
    }
    let lost: usize = agents
        .iter()
        .map(|a| a.log().matches("lost the race").count())
        .sum();
    eprintln!("lost create races, all agents: {lost}");
    for a in &mut agents {
        assert!(a.running(), "{}", a.log());
    }
    for mut a in agents {
        assert_eq!(a.terminate(), Some(0));
    }

    // 30 for 24.
    etcd.ctl_ok(&["put", "/over/network/config", &config_with("10.6", free)]);
    let t = Instant::now();
    let mut agents = start_many(
        &mut lan,
        &mut nodes,
        over,
        &etcd,
        "/over/network",
        "over.log",
    );
    let waiting = |agents: &[Agent]| -> Vec<usize> {
        (0..over)
            .filter(|&i| {
                !wrote(&nodes[i], "over.log") && agents[i].log().contains("out of subnets")
            })
            .collect()
    };
    poll::secs(
        "24 leased and 6 out of subnets",
        90,
        || {
            nodes
                .iter()
                .take(over)
                .filter(|n| wrote(n, "over.log"))
                .count()
                == free
                && waiting(&agents).len() == over - free
        },
        || lease_keys(&etcd, "/over/network").join(" "),
    );
    eprintln!(
        "{over} agents for {free} subnets: {free} leased, {} waiting, in {:?}",
        over - free,
        t.elapsed()
    );
    let line = agents[waiting(&agents)[0]]
        .log()
        .lines()
        .find(|l| l.contains("out of subnets"))
        .unwrap()
        .to_owned();
    eprintln!("the waiting agents say: {line}");
    assert!(
        line.contains(&format!(
            "failed to acquire lease: out of subnets: every subnet of 10.6.1.0..10.6.{free}.0 /24 is leased; retrying in"
        )),
        "{line}"
    );
    assert_eq!(lease_keys(&etcd, "/over/network").len(), free);
    for a in &mut agents {
        assert!(a.running(), "{}", a.log());
    }
    // One leaseholder leaves for good: its lease deleted, a waiting agent takes the subnet.
    let before = waiting(&agents);
    let leaver = (0..over).find(|i| !before.contains(i)).unwrap();
    let freed = own_key(&nodes[leaver]);
    assert_eq!(agents[leaver].terminate(), Some(0));
    etcd.ctl_ok(&["del", &format!("/over/network/subnets/{freed}")]);
    let t = Instant::now();
    poll::secs(
        "a waiting agent taking the freed subnet",
        30,
        || waiting(&agents).len() == before.len() - 1,
        || lease_keys(&etcd, "/over/network").join(" "),
    );
    eprintln!("the freed subnet {freed} was taken after {:?}", t.elapsed());
    let taker = *before
        .iter()
        .find(|i| !waiting(&agents).contains(i))
        .unwrap();
    assert_eq!(own_key(&nodes[taker]), freed);
    assert_eq!(lease_keys(&etcd, "/over/network").len(), free);
    for (i, a) in agents.iter_mut().enumerate() {
        if i != leaver {
            assert!(a.running(), "{}", a.log());
        }
    }
}

/// A 12 s lease TTL (`FLANNELD_TEST_LEASE_TTL`): renewals keep the lease over two TTLs, each
/// a new etcd lease, the key never gone (without a renewal loop); a peer that stops renewing
/// (SIGSTOP) expires and leaves every other node's routes, and comes back when it resumes; the
/// own lease deleted by an operator is acquired again with the same subnet.
#[test]
fn short_ttl_renewal_expiry_and_deleted_own_lease() {
    if !available_or_skip("flanneld_faults::short_ttl_renewal_expiry_and_deleted_own_lease") {
        return;
    }
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    etcd.ctl_ok(&["put", &format!("{PREFIX}/config"), HOSTGW]);
    let (a_node, b_node) = (Node::new(), Node::new());
    let a_ip = lan.attach(&a_node, 2);
    let b_ip = lan.attach(&b_node, 3);
    let mut a = started(&a_node, "a.log", &etcd.endpoint(), &TTL_ENV);
    let mut b = started(&b_node, "b.log", &etcd.endpoint(), &TTL_ENV);
    let (ka, kb) = (own_key(&a_node), own_key(&b_node));
    a.wait_for("A's route to B", 15, || has_route(&a_node, &kb, &b_ip));
    b.wait_for("B's route to A", 15, || has_route(&b_node, &ka, &a_ip));
    assert!(
        a.log()
            .contains(&format!("FLANNELD_TEST_LEASE_TTL={TTL_SECS}")),
        "{}",
        a.log()
    );

    // Renewals over two TTLs: every change of both keys recorded from here on.
    let (key_a, key_b) = (
        format!("{PREFIX}/subnets/{ka}"),
        format!("{PREFIX}/subnets/{kb}"),
    );
    let (before_a, before_b) = (
        etcd.lease_id(&key_a).unwrap(),
        etcd.lease_id(&key_b).unwrap(),
    );
    let rev = etcd.revision();
    let (history_a, history_b) = (
        etcd.watch_key(&key_a, rev + 1),
        etcd.watch_key(&key_b, rev + 1),
    );
    let (from_a, from_b) = (a.log().len(), b.log().len());
    let window = Duration::from_secs(2 * TTL_SECS);
    let t = Instant::now();
    while t.elapsed() < window {
        let keys = lease_keys(&etcd, PREFIX);
        assert!(keys.contains(&ka) && keys.contains(&kb), "{keys:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (log_a, log_b) = (lines_after(&a.log(), from_a), lines_after(&b.log(), from_b));
    let renewals = log_a.iter().filter(|l| l.contains("renewed lease")).count();
    eprintln!(
        "A renewed {renewals} times in {window:?} (TTL {TTL_SECS} s, renewal {} s after each \
         grant); A's key: {:?}",
        TTL_SECS * 2 / 3,
        history_a.events()
    );
    // Every 8 s: 3 in 24 s (2 when the first one fell just before the window); more is a loop.
    assert!((2..=5).contains(&renewals), "{}", a.log());
    assert_renewed_in_place(&history_a, before_a, 2, &log_a);
    assert_renewed_in_place(&history_b, before_b, 2, &log_b);
    let id = etcd.lease_id(&key_a).unwrap();
    let ttl_out = etcd.ctl_ok(&["lease", "timetolive", &format!("{id:x}")]);
    assert!(
        ttl_out.contains(&format!("granted with TTL({TTL_SECS}s)")),
        "{ttl_out}"
    );
    drop((history_a, history_b));

    // B stops renewing: its lease expires, A drops its route.
    b.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    // Up to a TTL after its last renewal, and etcd checks expiries every 500 ms.
    a.wait_for("B's route removed after B's lease expired", 60, || {
        !routes(&a_node).contains(&kb.replace('-', "/"))
    });
    eprintln!(
        "B's route gone from A {:?} after B froze",
        stopped.elapsed()
    );
    assert!(!lease_keys(&etcd, PREFIX).contains(&kb));
    // B resumes: it renews at once, the same subnet, and A routes to it again.
    b.signal(Signal::SIGCONT);
    a.wait_for("B's route back", 60, || has_route(&a_node, &kb, &b_ip));
    assert_eq!(own_key(&b_node), kb);

    // An operator deletes A's lease: A takes the same subnet again and says so.
    etcd.ctl_ok(&["del", &format!("{PREFIX}/subnets/{ka}")]);
    poll::secs(
        "A's lease re-acquired",
        30,
        || a.log().contains("re-acquired lease") && lease_keys(&etcd, PREFIX).contains(&ka),
        || a.log(),
    );
    assert!(a.log().contains("was deleted"), "{}", a.log());
    assert_eq!(own_key(&a_node), ka);
    assert!(a.running() && b.running());
}

/// `ip monitor route neigh` in a namespace, into a file.
struct Monitor {
    child: Child,
    out: std::path::PathBuf,
}

impl Monitor {
    fn start(node: &Node) -> Monitor {
        let out = node.dir().join("monitor.txt");
        let file = fs::File::create(&out).unwrap();
        // Line-buffered: `ip` writes to a file through stdio.
        let child = node
            .host()
            .command("stdbuf")
            .args(["-oL", "ip", "monitor", "route", "neigh"])
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = Monitor { child, out };
        // Listening once it reports a route of our own making (added until it does).
        poll::secs(
            "ip monitor listening",
            10,
            || {
                // Added and deleted each time: both are notifications once it listens.
                node.host()
                    .sh("ip", &["route", "add", "198.18.0.0/24", "dev", "eth0"]);
                node.host().sh("ip", &["route", "del", "198.18.0.0/24"]);
                std::thread::sleep(Duration::from_millis(50));
                m.text().contains("198.18.0.0/24")
            },
            || m.text(),
        );
        m
    }

    fn text(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        conformance::etcd::stop(&mut self.child, Duration::from_secs(2));
    }
}

/// A lan address no node has, and a VTEP MAC no node has, for a dummy vxlan peer.
const DUMMY_IP: &str = "192.168.50.9";
const DUMMY_MAC: &str = "c6:d2:32:6f:8f:99";

/// Whether `line` names one of `what` as a whole word (`10.5.2.0` is not in `10.5.25.0/24`).
fn mentions(line: &str, what: &[&str]) -> bool {
    line.split_whitespace().any(|w| what.contains(&w))
}

/// Whether `ip monitor` output has a route, neighbour... line naming one of `what`, added
/// (`deleted` false) or deleted.
fn monitor_has(text: &str, what: &[&str], deleted: bool) -> bool {
    text.lines()
        .any(|l| l.starts_with("Deleted ") == deleted && mentions(l, what))
}

fn mac_of(node: &Node, dev: &str) -> String {
    let link = node.host().sh("ip", &["link", "show", dev]);
    link.split("link/ether ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned()
}

fn vxlan_route(node: &Node, key: &str) -> bool {
    routes(node).contains(&format!(
        "{} via {} dev flannel.1 ",
        key.replace('-', "/"),
        key.replace("-24", "")
    ))
}

/// SIGKILL and restart (×`FLANNELD_FAULTS_ITERATIONS`): same subnet, same VtepMAC, nothing
/// of A's deleted or re-added on peer B (`ip monitor` there, read once a dummy peer put and
/// deleted after the restart has come and gone on B: B has handled A's lease by then). Then a simulated reboot (the
/// device gone, subnet.env kept): the same subnet, a new MAC, and B's neighbour and FDB
/// entries follow it.
#[test]
fn sigkill_restart_and_reboot_vxlan() {
    if !available_or_skip("flanneld_faults::sigkill_restart_and_reboot_vxlan") {
        return;
    }
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    etcd.ctl_ok(&["put", &format!("{PREFIX}/config"), VXLAN]);
    let (a_node, b_node) = (Node::new(), Node::new());
    let a_ip = lan.attach(&a_node, 2);
    let _b_ip = lan.attach(&b_node, 3);
    let mut a = started(&a_node, "a0.log", &etcd.endpoint(), &[]);
    let mut b = started(&b_node, "b.log", &etcd.endpoint(), &[]);
    let (ka, kb) = (own_key(&a_node), own_key(&b_node));
    a.wait_for("A's route to B", 15, || vxlan_route(&a_node, &kb));
    b.wait_for("B's route to A", 15, || vxlan_route(&b_node, &ka));
    let mac = mac_of(&a_node, "flannel.1");
    let a_gw = ka.replace("-24", "");
    let b_view = |b_node: &Node| {
        (
            b_node
                .host()
                .sh("ip", &["neigh", "show", "dev", "flannel.1"]),
            b_node
                .host()
                .sh("bridge", &["fdb", "show", "dev", "flannel.1"]),
            routes(b_node),
        )
    };
    let before = b_view(&b_node);
    assert!(
        before.0.contains(&format!("{a_gw} lladdr {mac} PERMANENT")),
        "{before:?}"
    );

    // A peer that comes and goes after each restart: B handles watch events in order, so once
    // its put and delete reached B's kernel, so did whatever A's lease written again at the
    // restart made B do.
    let dummy = ["10.5.250.0-24", "10.5.251.0-24", "10.5.252.0-24"]
        .into_iter()
        .find(|k| *k != ka && *k != kb)
        .unwrap();
    let dummy_key = format!("{PREFIX}/subnets/{dummy}");
    let dummy_net = dummy.replace('-', "/");
    let a_net = ka.replace('-', "/");
    for round in 1..=iterations() {
        let monitor = Monitor::start(&b_node);
        a.signal(Signal::SIGKILL);
        let log = format!("a{round}.log");
        a = started(&a_node, &log, &etcd.endpoint(), &[]);
        assert_eq!(own_key(&a_node), ka, "round {round}");
        assert_eq!(mac_of(&a_node, "flannel.1"), mac, "round {round}");
        assert!(a.log().contains("reusing it"), "{}", a.log());
        a.wait_for("A's route to B", 15, || vxlan_route(&a_node, &kb));
        let value = etcd.ctl_ok(&[
            "get",
            "--print-value-only",
            &format!("{PREFIX}/subnets/{ka}"),
        ]);
        assert!(value.contains(&mac), "{value}");
        // After A's restart wrote its lease: the dummy peer's put, then its delete, each seen
        // by B's `ip monitor` (whose notifications come in the kernel's order).
        etcd.ctl_ok(&["put", &dummy_key, &lease::vxlan_value(DUMMY_IP, DUMMY_MAC)]);
        poll::secs(
            "B programming the dummy peer put after A's restart",
            30,
            || monitor_has(&monitor.text(), &[&dummy_net], false),
            || format!("{}\n{}", monitor.text(), b.log()),
        );
        etcd.ctl_ok(&["del", &dummy_key]);
        poll::secs(
            "B removing the dummy peer",
            30,
            || monitor_has(&monitor.text(), &[&dummy_net], true),
            || format!("{}\n{}", monitor.text(), b.log()),
        );
        let seen = monitor.text();
        eprintln!("round {round}: B's ip monitor during A's restart:\n{seen}");
        let flaps: Vec<&str> = seen
            .lines()
            .filter(|l| mentions(l, &[&a_gw, &a_net, &mac]))
            .collect();
        assert!(flaps.is_empty(), "A's entries changed on B: {flaps:?}");
        // The dummy's neighbour and FDB entries go with its route, in the same batch.
        poll::secs(
            "B's view as before the restart",
            15,
            || b_view(&b_node) == before,
            || format!("{:?}\nwas {before:?}", b_view(&b_node)),
        );
    }

    // Reboot: the device is gone (a fresh kernel), subnet.env stays.
    a.signal(Signal::SIGKILL);
    a_node.host().sh("ip", &["link", "del", "flannel.1"]);
    a = started(&a_node, "reboot.log", &etcd.endpoint(), &[]);
    assert_eq!(own_key(&a_node), ka);
    let new_mac = mac_of(&a_node, "flannel.1");
    assert_ne!(new_mac, mac);
    let t = Instant::now();
    b.wait_for("B's neighbour and FDB entry with A's new MAC", 20, || {
        let (neigh, fdb, _) = b_view(&b_node);
        neigh.contains(&format!("{a_gw} lladdr {new_mac} PERMANENT"))
            && fdb.contains(&format!("{new_mac} dst {a_ip} self permanent"))
            && !fdb.contains(&mac)
    });
    eprintln!(
        "B follows A's new MAC {new_mac} (was {mac}) after {:?}",
        t.elapsed()
    );
    assert!(vxlan_route(&b_node, &ka));
    b_node.host().sh("ping", &["-c1", "-W5", &a_gw]);
    assert!(a.running() && b.running());
}
