//! Teardown that needs no unwinding and no `Drop`: everything the rig, the demo and the
//! benchmarks create lives under a directory named for its owner process
//! (`cni-rs-<kind>-<pid>-<random>` in `/tmp`, `/dev/shm` or `/var/tmp`): the network
//! namespaces are pinned there, and every process started reads its state, config or log
//! there, or runs inside one of those namespaces. [`reap`] removes all of it for one owner,
//! in the reverse order of creation: processes (SIGTERM to each, and to its process group
//! when that is not the caller's, SIGKILL after a grace period), then mounts (namespace pins
//! and anything mounted under the directories, deepest first), then the directories. It reads
//! only `/proc` and the file system, so it works the same from a signal watchdog, a panic
//! hook (also under `panic = "abort"`), the normal end of a run, and from a later run for an
//! owner that was killed outright ([`sweep_dead`]). The Kubernetes rig's node cgroups
//! (`cni-rs-k8s-cg-<pid>-<n>` in each hierarchy) are the owner's too: the processes in them
//! are stopped and the cgroups removed.

// Installing a signal handler is the one unsafe call (see `guard_process`).
#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgrp};

/// What every owned directory's name starts with.
pub const PREFIX: &str = "cni-rs-";

/// The directories owned directories are made in.
pub fn roots() -> Vec<PathBuf> {
    let mut v = vec![
        std::env::temp_dir(),
        PathBuf::from("/dev/shm"),
        PathBuf::from("/var/tmp"),
    ];
    v.dedup();
    v
}

/// The name prefix of a directory of `kind` owned by this process, for
/// `tempfile::Builder::prefix` (which appends the random part).
pub fn owned_prefix(kind: &str) -> String {
    format!("{PREFIX}{kind}-{}-", std::process::id())
}

/// The owner process of an owned directory's name: `cni-rs-<kind>-<pid>-<random>`.
pub fn owner_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let mut parts = rest.split('-');
    let _kind = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next()?; // the random part
    Some(pid)
}

/// What a teardown removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Processes stopped: `pid command`.
    pub processes: Vec<String>,
    /// Processes that did not stop even after SIGKILL.
    pub survivors: Vec<String>,
    /// Mount points unmounted.
    pub mounts: Vec<PathBuf>,
    /// Directories removed.
    pub dirs: Vec<PathBuf>,
    /// What could not be removed, with why.
    pub failures: Vec<String>,
}

impl Removed {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.survivors.is_empty()
            && self.mounts.is_empty()
            && self.dirs.is_empty()
            && self.failures.is_empty()
    }

    /// One line per kind, saying exactly what was removed (and what was not).
    pub fn summary(&self) -> String {
        let mut out = Vec::new();
        if !self.processes.is_empty() {
            out.push(format!(
                "stopped {} process(es): {}",
                self.processes.len(),
                self.processes.join(", ")
            ));
        }
        if !self.mounts.is_empty() {
            out.push(format!(
                "unmounted {} mount(s) (namespace pins)",
                self.mounts.len()
            ));
        }
        if !self.dirs.is_empty() {
            let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
            out.push(format!("removed {}", dirs.join(", ")));
        }
        if !self.survivors.is_empty() {
            out.push(format!("STILL RUNNING: {}", self.survivors.join(", ")));
        }
        for f in &self.failures {
            out.push(format!("NOT REMOVED: {f}"));
        }
        if out.is_empty() {
            out.push("nothing was left to remove".into());
        }
        out.join("\n")
    }

    fn extend(&mut self, other: Removed) {
        self.processes.extend(other.processes);
        self.survivors.extend(other.survivors);
        self.mounts.extend(other.mounts);
        self.dirs.extend(other.dirs);
        self.failures.extend(other.failures);
    }
}

/// The owned directories of `owner` in [`roots`].
pub fn dirs_of(owner: u32) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in roots() {
        let Ok(entries) = fs::read_dir(&root) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner_of(&name) == Some(owner) {
                out.push(e.path());
            }
        }
    }
    out
}

/// Whether process `pid` runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// (parent, process group) of a process.
fn parent_and_group(pid: u32) -> Option<(u32, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut f = rest.split_whitespace();
    let _state = f.next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Mount points (from this process's mount table) under any of `dirs`, deepest first.
fn mounts_under(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| dirs.iter().any(|d| p.starts_with(d)))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// The network namespace inodes pinned under `dirs` (nsfs mounts).
fn pinned_netns(mounts: &[PathBuf]) -> BTreeSet<u64> {
    mounts
        .iter()
        .filter_map(|m| fs::metadata(m).ok())
        .map(|m| m.ino())
        .collect()
}

/// Whether process `pid` is in a cgroup of `owner`'s run (the Kubernetes rig's nodes:
/// `cni-rs-k8s-cg-<owner>-<n>`; pod containers run there, in namespaces of their own).
fn in_owned_cgroup(pid: u32, owner: u32) -> bool {
    let tag = format!("-{owner}-");
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|c| c.lines().any(|l| l.contains(PREFIX) && l.contains(&tag)))
}

/// The cgroups of `owner`'s run in every hierarchy, deepest first.
fn cgroups_of(owner: u32) -> Vec<PathBuf> {
    let tag = format!("-{owner}-");
    let root = PathBuf::from("/sys/fs/cgroup");
    let mut hierarchies = vec![root.clone()];
    if let Ok(entries) = fs::read_dir(&root) {
        hierarchies.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    let mut out = Vec::new();
    for h in hierarchies {
        let Ok(entries) = fs::read_dir(&h) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && name.contains(&tag) && e.path().is_dir() {
                collect_dirs(&e.path(), &mut out);
            }
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

fn collect_dirs(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

fn netns_inode(pid: u32) -> Option<u64> {
    fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// The processes that belong to `owner`'s run: its descendants (when `owner` is this
/// process), those that name one of `dirs` on their command line, and those inside a
/// namespace pinned under them. Never this process or its ancestors.
fn processes_of(owner: u32, dirs: &[PathBuf], netns: &BTreeSet<u64>) -> Vec<u32> {
    let me = std::process::id();
    let mut ancestors = BTreeSet::new();
    let mut p = me;
    while let Some((pp, _)) = parent_and_group(p) {
        ancestors.insert(p);
        if pp == 0 || pp == p {
            break;
        }
        p = pp;
    }
    let all = pids();
    let parent: std::collections::BTreeMap<u32, u32> = all
        .iter()
        .filter_map(|p| Some((*p, parent_and_group(*p)?.0)))
        .collect();
    let descends = |mut p: u32| {
        for _ in 0..64 {
            match parent.get(&p) {
                Some(&pp) if pp == owner => return true,
                Some(&pp) if pp > 1 => p = pp,
                _ => return false,
            }
        }
        false
    };
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    all.into_iter()
        .filter(|p| !ancestors.contains(p) && *p != me && alive(*p))
        .filter(|p| {
            (owner == me && descends(*p))
                || netns_inode(*p).is_some_and(|i| netns.contains(&i))
                || in_owned_cgroup(*p, owner)
                || {
                    let c = cmdline(*p);
                    names.iter().any(|n| c.contains(n.as_str()))
                }
        })
        .collect()
}

/// Reaps our own children that exited (so they stop counting as running).
fn reap_zombies() {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
}

/// Stops `pids`: SIGTERM (also to their process groups, except the caller's), then after
/// `grace` SIGKILL; returns (stopped, survivors).
fn stop(pids: &[u32], grace: Duration) -> (Vec<String>, Vec<String>) {
    let own_group = getpgrp().as_raw() as u32;
    let named: Vec<(u32, String)> = pids.iter().map(|p| (*p, cmdline(*p))).collect();
    for (p, _) in &named {
        let _ = kill(Pid::from_raw(*p as i32), Signal::SIGCONT);
        let _ = kill(Pid::from_raw(*p as i32), Signal::SIGTERM);
        if let Some((_, g)) = parent_and_group(*p)
            && g != own_group
            && g == *p
        {
            let _ = killpg(Pid::from_raw(g as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && named.iter().any(|(p, _)| alive(*p)) {
        reap_zombies();
        std::thread::sleep(Duration::from_millis(20));
    }
    for (p, _) in named.iter().filter(|(p, _)| alive(*p)) {
        let _ = kill(Pid::from_raw(*p as i32), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && named.iter().any(|(p, _)| alive(*p)) {
        reap_zombies();
        std::thread::sleep(Duration::from_millis(20));
    }
    reap_zombies();
    let show = |(p, c): &(u32, String)| {
        let short: String = c.chars().take(60).collect();
        format!("{p} {short}")
    };
    let survivors = named.iter().filter(|(p, _)| alive(*p)).map(show).collect();
    let stopped = named.iter().filter(|(p, _)| !alive(*p)).map(show).collect();
    (stopped, survivors)
}

/// Removes everything `owner`'s run left: its processes, then its mounts, then its
/// directories. Safe to call for a dead owner, for this process, and more than once.
pub fn reap(owner: u32) -> Removed {
    let dirs = dirs_of(owner);
    let mut removed = Removed::default();
    let mounts = mounts_under(&dirs);
    let netns = pinned_netns(&mounts);
    // Again while something is found: a process being started while the first pass ran
    // (the rig stops creating once a teardown began: `gate`).
    for _ in 0..3 {
        let pids = processes_of(owner, &dirs, &netns);
        if pids.is_empty() {
            break;
        }
        let (stopped, survivors) = stop(&pids, Duration::from_secs(5));
        removed.processes.extend(stopped);
        removed.survivors = survivors;
    }
    // Mounts again: a process that was stopping may have added or removed some.
    for m in mounts_under(&dirs) {
        match umount2(&m, MntFlags::MNT_DETACH) {
            Ok(()) => removed.mounts.push(m),
            Err(e) => removed
                .failures
                .push(format!("unmounting {}: {e}", m.display())),
        }
    }
    // The cgroups, now empty of processes (a cgroup directory goes with rmdir, not with
    // the removal of its files).
    for cg in cgroups_of(owner) {
        match fs::remove_dir(&cg) {
            Ok(()) => removed.dirs.push(cg),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => removed
                .failures
                .push(format!("cgroup {}: {e}", cg.display())),
        }
    }
    for d in dirs {
        match fs::remove_dir_all(&d) {
            Ok(()) => removed.dirs.push(d),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => removed.failures.push(format!("{}: {e}", d.display())),
        }
    }
    removed
}

/// [`reap`] for every owner whose process is gone (a run killed outright, a power loss):
/// what a new run does first.
pub fn sweep_dead() -> Removed {
    let mut owners = BTreeSet::new();
    for root in roots() {
        let Ok(entries) = fs::read_dir(&root) else {
            continue;
        };
        for e in entries.flatten() {
            if let Some(pid) = owner_of(&e.file_name().to_string_lossy())
                && !alive(pid)
            {
                owners.insert(pid);
            }
        }
    }
    let mut all = Removed::default();
    for owner in owners {
        all.extend(reap(owner));
    }
    all
}

static SWEPT: std::sync::Once = std::sync::Once::new();

/// [`sweep_dead`] once per process, reporting on stderr what it removed: the rig calls it
/// before it creates anything.
pub fn sweep_once() {
    SWEPT.call_once(|| {
        let r = sweep_dead();
        if !r.is_empty() {
            eprintln!(
                "cni-rs: removed what runs that were killed outright left:\n{}",
                r.summary()
            );
        }
    });
}

static TEARING_DOWN: AtomicBool = AtomicBool::new(false);

/// This process's teardown, run exactly once whoever asks first (the signal watchdog, the
/// panic hook, the normal end): [`reap`] of this process, with its summary on stderr. A
/// second caller waits for the first, which ends the process.
pub fn teardown_once(why: &str) -> Option<Removed> {
    if TEARING_DOWN.swap(true, Ordering::SeqCst) {
        return None;
    }
    let r = reap(std::process::id());
    eprintln!("{why}: {}", r.summary().replace('\n', "\n  "));
    Some(r)
}

/// Whether [`teardown_once`] has started.
pub fn tearing_down() -> bool {
    TEARING_DOWN.load(Ordering::SeqCst)
}

/// Called by the rig before it creates a namespace or starts a process: once this process's
/// teardown began, the calling thread stops here for good (the teardown ends the process),
/// so nothing new appears behind the teardown's back.
pub fn gate() {
    while tearing_down() {
        std::thread::park_timeout(Duration::from_secs(1));
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether SIGINT, SIGTERM or SIGHUP arrived (after [`guard_process`]).
pub fn interrupted() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Ends the process after this process's teardown (exit `code`); a second caller waits for
/// the first's exit.
pub fn teardown_and_exit(why: &str, code: i32) -> ! {
    if teardown_once(why).is_some() {
        std::process::exit(code);
    }
    loop {
        std::thread::park();
    }
}

/// Makes a binary (the demo, the benchmarks) leave nothing behind however it ends, without
/// unwinding (release builds abort on panic): SIGINT, SIGTERM and SIGHUP are caught (a
/// handler, not a blocked mask, which children would inherit) and a watchdog thread then
/// runs the teardown and exits 130; a panic runs it from the panic hook, after the panic's
/// message, and exits 1. `name` starts the lines it prints.
pub fn guard_process(name: &'static str) {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if let Err(e) = unsafe { sigaction(s, &action) } {
            eprintln!("{name}: cannot catch {s}: {e}");
        }
    }
    let spawned = std::thread::Builder::new()
        .name("teardown-watchdog".into())
        .spawn(move || {
            loop {
                if interrupted() {
                    eprintln!("\n{name}: interrupted: removing everything it created");
                    teardown_and_exit(&format!("{name}: interrupted"), 130);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    if let Err(e) = spawned {
        eprintln!("{name}: no watchdog thread ({e}): a signal ends it without its teardown");
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if interrupted() || tearing_down() {
            // A step failing because the teardown stopped its processes: no news.
            teardown_and_exit(&format!("{name}: interrupted"), 130);
        }
        default_hook(info);
        teardown_and_exit(
            &format!("{name}: failed, removing everything it created"),
            1,
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_from_the_name() {
        assert_eq!(owner_of("cni-rs-lan-4242-AbC123"), Some(4242));
        assert_eq!(owner_of("cni-rs-node-17-x"), Some(17));
        assert_eq!(owner_of("cni-rs-test-AbC123"), None, "old names: no owner");
        assert_eq!(owner_of("cni-rs-lan-4242"), None);
        assert_eq!(owner_of("other-lan-4242-x"), None);
        assert!(owned_prefix("lan").starts_with("cni-rs-lan-"));
        assert_eq!(
            owner_of(&format!("{}zz", owned_prefix("lan"))),
            Some(std::process::id())
        );
    }

    #[test]
    fn a_dead_owners_directory_is_swept_a_live_ones_is_not() {
        // A child that exits: its pid is dead (and reaped) when the sweep runs.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let gone = std::env::temp_dir().join(format!("{PREFIX}unit-{dead}-x"));
        let mine = tempfile::Builder::new()
            .prefix(&owned_prefix("unit"))
            .tempdir()
            .unwrap();
        fs::create_dir_all(gone.join("sub")).unwrap();
        let r = sweep_dead();
        assert!(!gone.exists(), "{}", r.summary());
        assert!(mine.path().exists(), "a live owner's directory stays");
    }
}
