//! `bench agent` (scripts/bench-agent.sh): flanneld at scale. In private namespaces — a "lan"
//! with real etcd, and a fresh node namespace per run — etcd is given N peers' leases in Go's
//! format (vxlan), then flanneld starts on the node and the runner measures:
//!
//! - the time from the agent's start to every peer programmed (its `/metrics` gauge
//!   `flanneld_peers_programmed` reaching N, cross-checked by counting the node's routes), side
//!   by side with the floor: the same entries written by `ip -batch` and `bridge -batch` in an
//!   identical fresh namespace ([`floor`]);
//! - the agent's VmRSS and VmHWM after its first reconcile, at 0 peers and each N;
//! - at the largest N: the latency of single lease puts (as another node joining) to the route
//!   being in the node's kernel, polled through netlink, and the agent's own
//!   `flanneld_event_programmed_seconds` histogram over the same events;
//! - at the largest N: the CPU the agent uses while idle (utime + stime over a period that
//!   includes the periodic reconciles).
//!
//! [`report`] renders the markdown table and the SVG plot for docs/performance.md.

pub mod floor;
pub mod leases;
pub mod probe;
pub mod report;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use drivers::etcd::{Etcd, Lan, stop};
use rig::node::Node;

type Result<T> = std::result::Result<T, String>;

/// Where the agent serves `/metrics` inside its node (loopback).
pub const METRICS_PORT: u16 = 9472;
const PEERS: &str = "flanneld_peers_programmed{backend=\"vxlan\"}";
const LATENCY: &str = "flanneld_event_programmed_seconds";
const RECONCILES: &str = "flanneld_reconcile_runs_total";

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The peer counts (a run at 0 peers comes first, for the memory baseline).
    pub counts: Vec<u32>,
    /// Lease puts timed one by one at the largest count.
    pub events: u32,
    /// How long the idle CPU is measured at the largest count.
    pub idle: Duration,
    /// The flanneld binary.
    pub flanneld: PathBuf,
    /// Starts (and floors) per count; the table shows their medians.
    pub reps: u32,
}

/// One peer count's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Peers in etcd.
    pub peers: u32,
    /// Agent start → every peer programmed, µs (median).
    pub start_us: u64,
    /// The `ip -batch` + `bridge -batch` floor, µs (median; `None` at 0 peers).
    pub floor_us: Option<u64>,
    /// The peers' routes found in the node's kernel once the agent reported all programmed.
    pub routes: usize,
    /// VmRSS after the first reconcile, KiB.
    pub rss_kib: u64,
    /// VmHWM then, KiB.
    pub hwm_kib: u64,
}

/// The event latency figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Events {
    /// Peers in etcd while they were measured.
    pub peers: u32,
    /// Put → route in the kernel, µs, one per event (polled by the runner).
    pub kernel_us: Vec<u64>,
    /// Observations the agent's histogram gained meanwhile.
    pub agent_count: f64,
    /// The agent histogram's median, seconds.
    pub agent_p50: Option<f64>,
    /// Its 99th percentile, seconds.
    pub agent_p99: Option<f64>,
}

/// The idle figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Idle {
    /// Peers held.
    pub peers: u32,
    /// How long, seconds.
    pub secs: f64,
    /// utime + stime over that time, as a percentage of one core.
    pub cpu_percent: f64,
    /// Reconciles the agent ran meanwhile.
    pub reconciles: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Starts and floors per count (medians shown).
    pub reps: u32,
    /// Per peer count, 0 first.
    pub rows: Vec<Row>,
    /// At the largest count.
    pub events: Events,
    /// At the largest count.
    pub idle: Idle,
}

/// The agent on a node: its process, log, namespace path.
struct Running {
    child: Child,
    log: PathBuf,
    ns: PathBuf,
}

impl Running {
    fn start(plan: &Plan, node: &Node, etcd: &Etcd) -> Result<Running> {
        let log = node.dir().join("flanneld.log");
        let file = File::create(&log).map_err(|e| e.to_string())?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let child = node
            .host()
            .command(&plan.flanneld)
            .arg(format!("--etcd-endpoints={}", etcd.endpoint()))
            .arg(format!(
                "--subnet-file={}",
                node.dir().join("subnet.env").display()
            ))
            .args(["--iface=eth0", "--healthz-ip=127.0.0.1"])
            .arg(format!("--metrics-port={METRICS_PORT}"))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", plan.flanneld.display()))?;
        Ok(Running {
            child,
            log,
            ns: node.host().path().to_owned(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn metrics(&self) -> Result<String> {
        probe::http_get(&self.ns, METRICS_PORT, "/metrics")
    }

    fn failed(&mut self, what: &str) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{what}; flanneld log ends:\n{}", tail.join("\n"))
    }

    /// Polls `/metrics` every `every` until `f` holds; fails after `limit` or if the agent
    /// exits.
    fn wait(
        &mut self,
        what: &str,
        limit: Duration,
        every: Duration,
        f: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let t = Instant::now();
        loop {
            if let Ok(text) = self.metrics()
                && f(&text)
            {
                return Ok(text);
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return Err(self.failed(&format!("flanneld exited waiting for {what}")));
            }
            if t.elapsed() > limit {
                return Err(self.failed(&format!("no {what} within {limit:?}")));
            }
            std::thread::sleep(every);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(5));
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Runs the plan; `plugins` is the node's plugin directory (unused by the agent, needed by
/// the rig's nodes).
pub fn run(plan: &Plan, plugins: &Path) -> Result<Report> {
    let mut lan = Lan::new();
    let etcd = Etcd::start(&lan, None);
    let lan_ns = lan.ns().path().to_owned();
    etcd.ctl_ok(&["put", "/coreos.com/network/config", leases::CONFIG]);
    let largest = plan.counts.iter().copied().max().unwrap_or(0);
    let mut rows = Vec::new();
    let (mut events, mut idle) = (None, None);
    let mut counts = vec![0];
    counts.extend(plan.counts.iter().copied().filter(|&n| n > 0));
    for (k, &n) in counts.iter().enumerate() {
        let (mut starts, mut floors) = (Vec::new(), Vec::new());
        // Alternating with the floor; every start but the last only timed.
        for _ in 1..plan.reps.max(1) {
            if n > 0 {
                floors.push(floor_once(&mut lan, plugins, n)?);
            }
            starts.push(start_once(plan, &mut lan, &etcd, plugins, n)?.2);
        }
        if n > 0 {
            floors.push(floor_once(&mut lan, plugins, n)?);
        }
        let (mut agent, node, us) = start_once(plan, &mut lan, &etcd, plugins, n)?;
        starts.push(us);
        let routes = probe::peer_routes(node.host().path())?;
        // Memory once the first reconcile has run (5 s in, or on the device's link
        // notifications): its dumps count in the peak.
        agent.wait(
            "a reconcile",
            Duration::from_secs(30),
            Duration::from_millis(200),
            |m| probe::metric(m, RECONCILES).is_some_and(|r| r >= 1.0),
        )?;
        let (rss_kib, hwm_kib) = probe::memory_kib(agent.pid())?;
        if n == largest && k + 1 == counts.len() {
            events = Some(measure_events(plan, &mut agent, &lan_ns, &etcd, n)?);
            idle = Some(measure_idle(plan, &mut agent, n)?);
        }
        drop(agent);
        drop(node);
        rows.push(Row {
            peers: n,
            start_us: median(&starts),
            floor_us: (!floors.is_empty()).then(|| median(&floors)),
            routes,
            rss_kib,
            hwm_kib,
        });
    }
    Ok(Report {
        reps: plan.reps.max(1),
        rows,
        events: events.ok_or("no run at the largest count")?,
        idle: idle.ok_or("no run at the largest count")?,
    })
}

/// The middle value (the upper of the two middle ones for an even count); 0 when empty.
fn median(v: &[u64]) -> u64 {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get(s.len() / 2).copied().unwrap_or(0)
}

/// etcd given peers `0..n` afresh, a fresh node, flanneld started on it and timed until it
/// reports every peer programmed (dropped: the agent stopped, then the node removed).
fn start_once(
    plan: &Plan,
    lan: &mut Lan,
    etcd: &Etcd,
    plugins: &Path,
    n: u32,
) -> Result<(Running, Node, u64)> {
    etcd.ctl_ok(&["del", "--prefix", leases::SUBNETS]);
    leases::write(lan.ns().path(), &etcd.endpoint(), 0..n)?;
    let node = Node::with_plugin_dir(plugins);
    lan.attach(&node, 2);
    let t = Instant::now();
    let mut agent = Running::start(plan, &node, etcd)?;
    let want = f64::from(n);
    agent.wait(
        &format!("{n} peers programmed"),
        Duration::from_secs(300),
        Duration::from_millis(2),
        |m| probe::metric(m, PEERS) == Some(want),
    )?;
    let us = micros(t.elapsed());
    Ok((agent, node, us))
}

/// The floor for `n` peers in a fresh node namespace on the LAN.
fn floor_once(lan: &mut Lan, plugins: &Path, n: u32) -> Result<u64> {
    let node = Node::with_plugin_dir(plugins);
    let local = lan.attach(&node, 3);
    floor::measure(node.host(), node.dir(), &local, n)
}

fn measure_events(
    plan: &Plan,
    agent: &mut Running,
    lan: &Path,
    etcd: &Etcd,
    n: u32,
) -> Result<Events> {
    let before = probe::buckets(&agent.metrics()?, LATENCY);
    let kernel_us = leases::timed_puts(
        lan,
        &etcd.endpoint(),
        &agent.ns,
        n..n + plan.events,
        Duration::from_millis(20),
    )
    .map_err(|e| {
        let peers = agent
            .metrics()
            .map(|m| format!("{:?}", probe::metric(&m, PEERS)))
            .unwrap_or_else(|e| e);
        agent.failed(&format!("{e} (peers programmed: {peers})"))
    })?;
    let want = f64::from(n + plan.events);
    let text = agent.wait(
        "the events counted",
        Duration::from_secs(10),
        Duration::from_millis(20),
        |m| probe::metric(m, PEERS) == Some(want),
    )?;
    let after = probe::buckets(&text, LATENCY);
    let count = |b: &[(f64, f64)]| b.last().map_or(0.0, |(_, c)| *c);
    Ok(Events {
        peers: n,
        kernel_us,
        agent_count: count(&after) - count(&before),
        agent_p50: probe::quantile(&before, &after, 0.5),
        agent_p99: probe::quantile(&before, &after, 0.99),
    })
}

fn measure_idle(plan: &Plan, agent: &mut Running, n: u32) -> Result<Idle> {
    let runs = |a: &Running| -> Result<f64> {
        Ok(probe::metric(&a.metrics()?, RECONCILES).unwrap_or(0.0))
    };
    let (r0, c0, t) = (runs(agent)?, probe::cpu_ticks(agent.pid())?, Instant::now());
    std::thread::sleep(plan.idle);
    let c1 = probe::cpu_ticks(agent.pid())?;
    let secs = t.elapsed().as_secs_f64();
    let r1 = runs(agent)?;
    let cpu = (c1.saturating_sub(c0)) as f64 / probe::ticks_per_second() as f64;
    Ok(Idle {
        peers: n + plan.events,
        secs,
        cpu_percent: 100.0 * cpu / secs,
        reconciles: r1 - r0,
    })
}
