//! Many pods at once, the way a runtime runs them: ADDs a network list for every pod at once
//! (a thread per pod, each plugin forked and exec'd, `prevResult` passed along in process),
//! then DELs them all at once, and reports the wall time of each phase and the plugins' CPU
//! time. A bash job per pod would charge several bash forks per pod to the plugins' wall time.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use cni_runtime::{Attachment, Chain, HostExec, NetworkConfigList};
use nix::sys::resource::{UsageWho, getrusage};
use serde_json::{Map, Value, json};

/// What one round cost, in microseconds, and what went wrong in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    pub add_wall_us: u64,
    pub del_wall_us: u64,
    /// The plugins' CPU time (user + system) in the phase.
    pub add_cpu_us: u64,
    pub del_cpu_us: u64,
    /// Addresses given out to more than one pod.
    pub duplicate_ips: usize,
    pub failures: usize,
}

impl Round {
    pub fn clean(&self) -> bool {
        self.duplicate_ips == 0 && self.failures == 0
    }
}

/// The line `bench parallel` prints: `add_wall del_wall add_cpu del_cpu duplicate_ips failures`.
impl std::fmt::Display for Round {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.add_wall_us,
            self.del_wall_us,
            self.add_cpu_us,
            self.del_cpu_us,
            self.duplicate_ips,
            self.failures
        )
    }
}

#[derive(Debug)]
struct Pod {
    chain: Chain,
    att: Attachment,
}

/// CPU time (user + system) of the plugins that have exited so far, in microseconds.
fn children_cpu_us() -> i64 {
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() * 1_000_000 + t.tv_usec();
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0, |u| us(u.user_time()) + us(u.system_time()))
}

/// Runs `step` for every pod on its own thread; returns the wall and CPU time that took and
/// each pod's outcome (`None` if its thread died).
fn all_at_once<T: Send>(
    pods: &[Pod],
    step: impl Fn(usize, &Pod) -> T + Sync,
) -> (u64, u64, Vec<Option<T>>) {
    let cpu = children_cpu_us();
    let start = Instant::now();
    let out = std::thread::scope(|s| {
        let step = &step;
        let handles: Vec<_> = (pods.iter().enumerate())
            .map(|(i, p)| s.spawn(move || step(i, p)))
            .collect();
        handles.into_iter().map(|h| h.join().ok()).collect()
    });
    let wall = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    let cpu = u64::try_from(children_cpu_us() - cpu).unwrap_or(0);
    (wall, cpu, out)
}

fn addresses(result: &Value) -> impl Iterator<Item = &str> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
}

/// Prints each failed call of `phase` to stderr and returns how many there were.
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

/// ADDs then DELs the network list `list` (a conflist document) for `pods` pods with the
/// plugins of `cni_path`. Pod `i` is container `<prefix>-<i>` in the namespace pinned at
/// `<work>/<prefix>-<i>.netns` (made by the caller) and maps host port `first_port + i` to
/// TCP 80 through the `portMappings` capability.
pub fn run(
    cni_path: &str,
    list: &Value,
    work: &Path,
    prefix: &str,
    pods: u16,
    first_port: u16,
) -> Result<Round, String> {
    let list = NetworkConfigList::from_value(list.clone()).map_err(|e| e.to_string())?;
    let pods: Vec<Pod> = (0..pods)
        .map(|i| Pod {
            chain: Chain::new(list.clone()).with_capability_args(Map::from_iter([(
                "portMappings".to_owned(),
                json!([{"hostPort": first_port.saturating_add(i), "containerPort": 80, "protocol": "tcp"}]),
            )])),
            att: Attachment::new(
                &format!("{prefix}-{i}"),
                &work.join(format!("{prefix}-{i}.netns")).display().to_string(),
                "eth0",
            ),
        })
        .collect();
    let exec = HostExec::new(cni_path, "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench");
    let (add_wall_us, add_cpu_us, added) = all_at_once(&pods, |_, p| p.chain.add(&exec, &p.att));
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for result in added.iter().flatten().flatten() {
        addresses(result).for_each(|a| *seen.entry(a).or_default() += 1);
    }
    let duplicate_ips = seen.values().filter(|&&n| n > 1).count();
    let cached = |i: usize| added.get(i).and_then(|r| r.as_ref()?.as_ref().ok());
    let (del_wall_us, del_cpu_us, deleted) =
        all_at_once(&pods, |i, p| p.chain.del(&exec, &p.att, cached(i)));
    let failures = failures("ADD", &pods, &added) + failures("DEL", &pods, &deleted);
    Ok(Round {
        add_wall_us,
        del_wall_us,
        add_cpu_us,
        del_cpu_us,
        duplicate_ips,
        failures,
    })
}
