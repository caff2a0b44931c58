//! The parallel part of `scripts/bench.sh`: ADDs a network list for many pods at once, then
//! DELs them all at once, the way a runtime does (one thread per pod, each plugin forked and
//! exec'd, `prevResult` passed along in process), and prints the wall time of each phase.
//! A bash job per pod would charge several bash forks per pod to the plugins' wall time.
//!
//!   bench-parallel <cni-path> <conflist> <work-dir> <id-prefix> <pods> <first-host-port>
//!
//! Pod `i` is container `<id-prefix>-<i>` in the namespace pinned at
//! `<work-dir>/<id-prefix>-<i>.netns` (made by the caller) and maps host port
//! `<first-host-port> + i` to TCP 80. Prints, in microseconds, the wall time of the
//! ADD phase and of the DEL phase, the plugins' CPU time (user + system) in each, then the
//! number of addresses given out twice and the number of failed calls:
//! `add_wall del_wall add_cpu del_cpu duplicate_ips failures`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Instant;

use cni_runtime::{Attachment, Chain, HostExec, NetworkConfigList};
use nix::sys::resource::{UsageWho, getrusage};
use serde_json::{Map, Value, json};

const USAGE: &str =
    "usage: bench-parallel <cni-path> <conflist> <work-dir> <id-prefix> <pods> <first-host-port>";

struct Pod {
    chain: Chain,
    att: Attachment,
}

fn pods(args: &[String]) -> Result<(HostExec, Vec<Pod>), String> {
    let [cni_path, conflist, work, prefix, count, port] = args else {
        return Err(USAGE.into());
    };
    let text = std::fs::read_to_string(conflist).map_err(|e| format!("{conflist}: {e}"))?;
    let list: Value = serde_json::from_str(&text).map_err(|e| format!("{conflist}: {e}"))?;
    let list = NetworkConfigList::from_value(list).map_err(|e| format!("{conflist}: {e}"))?;
    let count: u16 = count.parse().map_err(|_| USAGE.to_owned())?;
    let port: u16 = port.parse().map_err(|_| USAGE.to_owned())?;
    let pods = (0..count)
        .map(|i| Pod {
            chain: Chain::new(list.clone()).with_capability_args(Map::from_iter([(
                "portMappings".to_owned(),
                json!([{"hostPort": port.saturating_add(i), "containerPort": 80, "protocol": "tcp"}]),
            )])),
            att: Attachment::new(
                &format!("{prefix}-{i}"),
                &format!("{work}/{prefix}-{i}.netns"),
                "eth0",
            ),
        })
        .collect();
    let exec = HostExec::new(cni_path, "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench");
    Ok((exec, pods))
}

/// CPU time (user + system) of the plugins that have exited so far, in microseconds.
fn children_cpu_us() -> i64 {
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() * 1_000_000 + t.tv_usec();
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0, |u| us(u.user_time()) + us(u.system_time()))
}

/// What one phase cost: wall time and the plugins' CPU time, in microseconds.
struct Cost {
    wall_us: u128,
    cpu_us: i64,
}

/// Runs `step` for every pod on its own thread; returns what that cost and each pod's
/// outcome (`None` if its thread died).
fn all_at_once<T: Send>(
    pods: &[Pod],
    step: impl Fn(usize, &Pod) -> T + Sync,
) -> (Cost, Vec<Option<T>>) {
    let cpu = children_cpu_us();
    let start = Instant::now();
    let out = std::thread::scope(|s| {
        let step = &step;
        let handles: Vec<_> = (pods.iter().enumerate())
            .map(|(i, p)| s.spawn(move || step(i, p)))
            .collect();
        handles.into_iter().map(|h| h.join().ok()).collect()
    });
    let wall_us = start.elapsed().as_micros();
    let cpu_us = children_cpu_us() - cpu;
    (Cost { wall_us, cpu_us }, out)
}

fn addresses(result: &Value) -> impl Iterator<Item = &str> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
}

/// Prints each failed call of `phase` and returns how many there were.
fn failures<T>(
    phase: &str,
    pods: &[Pod],
    outcomes: &[Option<Result<T, cni_runtime::Error>>],
) -> usize {
    let mut failed = 0;
    for (pod, outcome) in pods.iter().zip(outcomes) {
        match outcome {
            Some(Ok(_)) => continue,
            Some(Err(e)) => eprintln!("{phase} {}: {e}", pod.att.container_id),
            None => eprintln!("{phase} {}: the thread died", pod.att.container_id),
        }
        failed += 1;
    }
    failed
}

fn run(args: &[String]) -> Result<bool, String> {
    let (exec, pods) = pods(args)?;
    let (add, added) = all_at_once(&pods, |_, p| p.chain.add(&exec, &p.att));
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for result in added.iter().flatten().flatten() {
        addresses(result).for_each(|a| *seen.entry(a).or_default() += 1);
    }
    let duplicates = seen.values().filter(|&&n| n > 1).count();
    let cached = |i: usize| added.get(i).and_then(|r| r.as_ref()?.as_ref().ok());
    let (del, deleted) = all_at_once(&pods, |i, p| p.chain.del(&exec, &p.att, cached(i)));
    let failed = failures("ADD", &pods, &added) + failures("DEL", &pods, &deleted);
    println!(
        "{} {} {} {} {duplicates} {failed}",
        add.wall_us, del.wall_us, add.cpu_us, del.cpu_us
    );
    Ok(failed == 0 && duplicates == 0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench-parallel: {e}");
            ExitCode::from(2)
        }
    }
}
