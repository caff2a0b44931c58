//! Nothing left behind on any exit: the demo (`cluster-demo`, the binary `scripts/demo.sh`
//! runs) interrupted with SIGINT to its process group (Ctrl-C) and with SIGTERM to it alone,
//! at several points of its run, a step made to fail, and a run killed outright (SIGKILL),
//! whose leftovers the next run finds and removes; the agent benchmark interrupted. After
//! each: no process, namespace pin, mount, `/dev/shm` entry or temp dir of that run remains;
//! then a whole demo run succeeds. The binaries are the release ones when `CNI_PLUGIN_DIR`
//! holds them (CI: built with `panic = "abort"`, where no destructor runs), else this
//! profile's.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use conformance::etcd::available_or_skip;
use conformance::plugin::plugin_dir_unchecked;
use conformance::reaper::{dirs_of, roots};
use conformance::skip;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// The release binary next to the plugins, else the one cargo built for this test.
fn binary(name: &str) -> PathBuf {
    let built = plugin_dir_unchecked().join(name);
    assert!(
        built.is_file(),
        "{} missing: cargo build --workspace --bins (the bench and demo crates build it)",
        built.display()
    );
    built
}

/// A run of a binary: its stdout and stderr lines as they come.
struct Run {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Run {
    fn start(mut cmd: Command) -> Run {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        // Its own process group, as a shell gives a foreground job: Ctrl-C reaches the group.
        cmd.process_group(0);
        let mut child = cmd.spawn().unwrap();
        let (tx, lines) = channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        return;
                    }
                }
            });
        }
        Run {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line containing `text`.
    fn wait_line(&mut self, text: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let hit = l.contains(text);
                self.seen.push(l);
                if hit {
                    return;
                }
            }
        }
        panic!(
            "no line with {text:?} in {secs} s:\n{}",
            self.seen.join("\n")
        );
    }

    /// Waits for the exit; its code and every line.
    fn finish(mut self, secs: u64) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("still running after {secs} s:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The readers end with the pipes.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(l);
        }
        (status.code(), self.seen.join("\n"))
    }
}

/// What run `pid` left: its directories, processes naming them or descending from it, and
/// mounts under the roots naming it.
fn leftovers(pid: u32) -> Vec<String> {
    let mut out: Vec<String> = dirs_of(pid)
        .into_iter()
        .map(|d| format!("dir {}", d.display()))
        .collect();
    let tag = format!("-{pid}-");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for l in mountinfo.lines() {
        if let Some(m) = l.split(' ').nth(4)
            && m.contains(&tag)
            && roots().iter().any(|r| m.starts_with(&*r.to_string_lossy()))
        {
            out.push(format!("mount {m}"));
        }
    }
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let parent = std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u32>()
                    .ok()
            });
        let ours = (cmd.contains("cni-rs-") && cmd.contains(&tag)) || parent == Some(pid);
        if ours && conformance::reaper::alive(p) {
            out.push(format!("process {p} {cmd}"));
        }
    }
    out
}

fn demo(extra_env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(binary("cluster-demo"));
    cmd.args(["--backend", "host-gw"])
        .env("CNI_PLUGIN_DIR", conformance::plugin::plugin_dir())
        .envs(extra_env.iter().copied());
    Run::start(cmd)
}

/// (how, the demo's line to wait for, milliseconds after it). The host-gw demo runs in a
/// few seconds: each point is inside a different step.
const INTERRUPTS: [(Signal, &str, u64); 5] = [
    // Right after the first step's line: etcd starting.
    (Signal::SIGINT, "== etcd on the underlay", 0),
    // About a second after it (the case of the issue): the nodes' agents starting.
    (Signal::SIGINT, "== etcd on the underlay", 1000),
    (Signal::SIGTERM, "== three nodes", 0),
    (Signal::SIGINT, "== two pods per node", 0),
    (Signal::SIGTERM, "== every pod pings", 0),
];

#[test]
fn demo_interrupted_failed_and_killed_leaves_nothing_and_runs_again() {
    if !available_or_skip(
        "interrupts::demo_interrupted_failed_and_killed_leaves_nothing_and_runs_again",
    ) {
        return;
    }
    let mut report = Vec::new();
    for (signal, line, delay) in INTERRUPTS {
        let mut run = demo(&[]);
        run.wait_line(line, 120);
        std::thread::sleep(Duration::from_millis(delay));
        let pid = run.pid();
        let before = leftovers(pid).len();
        if signal == Signal::SIGINT {
            killpg(Pid::from_raw(pid as i32), signal).unwrap();
        } else {
            kill(Pid::from_raw(pid as i32), signal).unwrap();
        }
        let (code, out) = run.finish(60);
        let left = leftovers(pid);
        assert_eq!(code, Some(130), "{signal} after {line:?}:\n{out}");
        assert!(out.contains("demo: interrupted"), "{out}");
        assert!(
            left.is_empty(),
            "{signal} after {line:?} left {left:#?}\n{out}"
        );
        assert!(
            !out.contains("Aborted") && !out.contains("panicked"),
            "{out}"
        );
        report.push(format!(
            "{signal} {delay} ms after {line:?}: exit 130, {before} things of the run before, none after"
        ));
    }

    // A step made to fail: its message, then the teardown; exit 1.
    let run = demo(&[("CLUSTER_DEMO_FAIL_AT", "4")]);
    let pid = run.pid();
    let (code, out) = run.finish(120);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("step 4 made to fail") && out.contains("demo: failed, removing everything"),
        "{out}"
    );
    assert!(leftovers(pid).is_empty(), "{:#?}\n{out}", leftovers(pid));
    report.push("step 4 failing: exit 1, nothing left".into());

    // Killed outright: what it left is found and removed by the next run, which succeeds.
    let mut killed = demo(&[]);
    killed.wait_line("== their leases in etcd", 120);
    let kpid = killed.pid();
    killpg(Pid::from_raw(kpid as i32), Signal::SIGKILL).unwrap();
    let (code, _) = killed.finish(30);
    assert_eq!(code, None, "killed by a signal");
    let left = leftovers(kpid);
    assert!(
        left.iter().any(|l| l.starts_with("dir ")),
        "a killed run leaves its directories: {left:#?}"
    );
    let next = demo(&[]);
    let (code, out) = next.finish(300);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("removed what runs that were killed outright left"),
        "{out}"
    );
    assert!(leftovers(kpid).is_empty(), "{:#?}", leftovers(kpid));
    report.push(format!(
        "SIGKILL: {} things left, removed by the next run, which succeeded",
        left.len()
    ));
    eprintln!("{}", report.join("\n"));
}

#[test]
fn agent_benchmark_interrupted_leaves_nothing() {
    if !available_or_skip("interrupts::agent_benchmark_interrupted_leaves_nothing") {
        return;
    }
    let ours = plugin_dir_unchecked();
    if !ours.join("flanneld").is_file() {
        skip(
            "interrupts::agent_benchmark_interrupted_leaves_nothing",
            "flanneld not built next to the plugins",
        );
        return;
    }
    let host = std::fs::metadata("/proc/self/ns/net").unwrap();
    // flanneld alone, no CNI plugin (a release-only build of flanneld): the agent benchmark
    // needs nothing else. Before, its node panicked for want of plugin binaries.
    let only = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(ours.join("flanneld"), only.path().join("flanneld")).unwrap();
    let only_dir = only.path().to_string_lossy().into_owned();
    let mut cmd = Command::new("unshare");
    cmd.arg("--net")
        .arg(binary("bench"))
        .args(["--ours", &only_dir, "agent", "200", "20", "2"])
        .env("CNI_PLUGIN_DIR", &only_dir)
        .env(
            "CNI_BENCH_HOST_NETNS",
            std::os::unix::fs::MetadataExt::ino(&host).to_string(),
        );
    let run = Run::start(cmd);
    let pid = run.pid();
    // It prints nothing before its report: interrupted once flanneld runs on its node (made
    // without any plugin binary).
    let t = Instant::now();
    while !leftovers(pid).iter().any(|l| l.contains("/flanneld ")) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the benchmark never started flanneld"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    killpg(Pid::from_raw(pid as i32), Signal::SIGINT).unwrap();
    let (code, out) = run.finish(60);
    assert_eq!(code, Some(130), "{out}");
    assert!(
        !out.contains("no plugin binaries") && !out.contains("panicked"),
        "{out}"
    );
    assert!(leftovers(pid).is_empty(), "{:#?}\n{out}", leftovers(pid));

    // Without flanneld where it is told to look: a clear error, no panic.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new("unshare")
        .arg("--net")
        .arg(binary("bench"))
        .args(["--ours", &empty.path().to_string_lossy(), "agent", "200"])
        .env(
            "CNI_BENCH_HOST_NETNS",
            std::os::unix::fs::MetadataExt::ino(&host).to_string(),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("flanneld missing") && !err.contains("panicked"),
        "{err}"
    );
}
