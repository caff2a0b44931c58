//! `bench wireguard` (scripts/bench-wireguard.sh): TCP throughput between two pods on two
//! nodes (iperf3 from Debian, one stream, pod to pod across the LAN), per path, in the same
//! run: host-gw (no tunnel, the floor), vxlan (kernel), WireGuard in our flanneld (userspace
//! boringtun: this kernel has no module) and the same WireGuard device as Go flannel's node
//! has it without the module (wireguard-go, set up by hand). Also the CPU the userspace
//! WireGuard processes spent (both nodes' flanneld, or both wireguard-go), per GiB moved.

use std::fs;
use std::time::Duration;

use serde_json::Value;

use drivers::cluster::{Backend, Cluster};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Seconds per iperf3 run.
    pub secs: u32,
    /// Runs per path (the median is reported).
    pub reps: u32,
}

/// One path's result.
#[derive(Debug, Clone)]
pub struct PathResult {
    /// What carried the traffic.
    pub name: &'static str,
    /// Each run's received bits per second.
    pub bps: Vec<f64>,
    /// CPU seconds of the userspace WireGuard processes over all runs, and bytes moved.
    pub wg_cpu: Option<(f64, f64)>,
}

impl PathResult {
    /// The median of the runs, Gbit/s.
    pub fn gbps(&self) -> f64 {
        let mut v = self.bps.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0) / 1e9
    }
}

#[derive(Debug, Clone, Copy)]
enum Setup {
    HostGw,
    Vxlan,
    OursWg,
    GoWg,
}

impl Setup {
    const ALL: [Setup; 4] = [Setup::HostGw, Setup::Vxlan, Setup::OursWg, Setup::GoWg];

    fn name(self) -> &'static str {
        match self {
            Setup::HostGw => "host-gw (no tunnel: the floor)",
            Setup::Vxlan => "vxlan (kernel), our flanneld",
            Setup::OursWg => "WireGuard, userspace in our flanneld (boringtun)",
            Setup::GoWg => "WireGuard, wireguard-go (Go flannel's device without the module)",
        }
    }

    /// Two nodes with a pod each.
    fn cluster(self) -> Result<Cluster, String> {
        let backend = match self {
            Setup::HostGw => Backend::HostGw,
            Setup::Vxlan => Backend::Vxlan,
            Setup::OursWg | Setup::GoWg => Backend::Wireguard,
        };
        let mut c = Cluster::start(backend);
        for _ in 0..2 {
            match self {
                Setup::GoWg => {
                    c.join_go_node();
                }
                _ => {
                    c.join().map_err(|u| format!("{}: {}", self.name(), u.0))?;
                }
            }
        }
        if !matches!(self, Setup::GoWg) {
            c.converge(30)?;
        }
        c.add_pod(0, None);
        c.add_pod(1, None);
        Ok(c)
    }
}

/// The PIDs doing userspace WireGuard in `c`.
fn wireguard_pids(c: &Cluster) -> Vec<u32> {
    c.members
        .iter()
        .filter_map(|m| match &m.go_wg {
            Some(d) => d.daemon.pid(),
            None => m.agent.as_ref().and_then(|a| a.pid()),
        })
        .collect()
}

/// utime + stime of a process, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// One iperf3 run from node1's pod to node2's; received bits per second and bytes.
fn iperf(c: &Cluster, secs: u32) -> Result<(f64, f64), String> {
    let server_ns = &c.members[1].pods[0].ns;
    let ip = c.members[1].pods[0].ip(true);
    let mut server = server_ns
        .command("iperf3")
        .args(["-s", "-1", "-B", &ip])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("iperf3: {e}"))?;
    // The server listens within a moment; the client tries again while it cannot connect
    // (iperf3 may report that in its JSON with exit status 0).
    let mut last = String::new();
    for _ in 0..50 {
        let o = c.members[0].pods[0]
            .ns
            .run("iperf3", &["-c", &ip, "-t", &secs.to_string(), "-J"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        let sum = &v["end"]["sum_received"];
        if let (true, Some(b), Some(n)) = (
            o.status.success(),
            sum["bits_per_second"].as_f64(),
            sum["bytes"].as_f64(),
        ) && b > 0.0
        {
            let _ = server.kill();
            let _ = server.wait();
            return Ok((b, n));
        }
        last = v.get("error").map_or_else(
            || String::from_utf8_lossy(&o.stderr).into_owned(),
            Value::to_string,
        );
        if !last.contains("connect") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    Err(format!("iperf3 moved nothing: {last}"))
}

/// Runs every path.
pub fn run(plan: &Plan) -> Result<Vec<PathResult>, String> {
    let mut results = Vec::new();
    for setup in Setup::ALL {
        eprintln!("bench wireguard: {}", setup.name());
        let c = setup.cluster()?;
        // Warm-up: the handshake and ARP before the clock.
        if !c.ping((0, 0), &c.members[1].pods[0].ip(true)) {
            return Err(format!(
                "{}: the pods do not reach each other",
                setup.name()
            ));
        }
        let pids = wireguard_pids(&c);
        let cpu_before: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
        let mut bps = Vec::new();
        let mut bytes = 0.0;
        for _ in 0..plan.reps {
            let (b, n) = iperf(&c, plan.secs)?;
            bps.push(b);
            bytes += n;
        }
        let cpu: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - cpu_before;
        let wg_cpu = matches!(setup, Setup::OursWg | Setup::GoWg).then_some((cpu, bytes));
        results.push(PathResult {
            name: setup.name(),
            bps,
            wg_cpu,
        });
        c.shut_down()?;
    }
    Ok(results)
}

/// The table of docs/bench-wireguard.md.
pub fn markdown(plan: &Plan, results: &[PathResult]) -> String {
    let vxlan = results
        .iter()
        .find(|r| r.name.starts_with("vxlan"))
        .map_or(0.0, PathResult::gbps);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = format!(
        "Pod-to-pod TCP throughput across two nodes (iperf3, one stream, median of {} × {} s; \
         {cores} cores shared by both nodes, the pods and iperf3; `scripts/bench-wireguard.sh`).\n\n\
         | path | Gbit/s | vs vxlan | WireGuard process CPU s per GiB |\n|---|---:|---:|---:|\n",
        plan.reps, plan.secs
    );
    for r in results {
        let cpu = r.wg_cpu.map_or("–".to_owned(), |(cpu, bytes)| {
            format!("{:.2}", cpu / (bytes / f64::from(1u32 << 30)).max(1e-9))
        });
        let ratio = if vxlan > 0.0 { r.gbps() / vxlan } else { 0.0 };
        md.push_str(&format!(
            "| {} | {:.2} | {:.2}× | {cpu} |\n",
            r.name,
            r.gbps(),
            ratio
        ));
    }
    md
}
