//! One plugin call, exactly as a runtime makes it (libcni's `invoke`: the caller's environment
//! plus the `CNI_*` variables, the config on stdin, the result on stdout, stderr passed
//! through), timed from the spawn to the plugin's exit; and the peak RSS of one call.
//!
//! The peak RSS cannot come from the timed calls: std starts a child with `posix_spawn`,
//! which runs in the parent's memory until the exec, and at the exec the kernel records the
//! outgoing memory's high-water mark in the process's `ru_maxrss` (`exec_mmap`), so every
//! plugin would report the runner's own peak. [`Call::peak_rss`] therefore runs a fresh, small
//! process (the runner again, as `bench rss-probe`), which `fork`s, execs the plugin and
//! reads `wait4`'s `ru_maxrss`: its floor is the probe's few private pages, as GNU time's was.

// wait4() and a pre_exec hook are the two things here that need unsafe: neither std nor nix
// returns one child's resource usage, and only a hook makes std fork instead of spawn.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

use nix::libc;
use serde_json::Value;

use super::stats::rss_kib;

/// A plugin call being built: the plugin `plugin` of directory `dir` (also its `CNI_PATH`),
/// interface `eth0`.
#[derive(Debug, Clone)]
pub struct Call {
    binary: PathBuf,
    env: Vec<(&'static str, String)>,
}

/// How a call went: wall time from the spawn to the exit, exit status and stdout.
#[derive(Debug, Clone)]
pub struct Timed {
    pub us: u64,
    pub status: ExitStatus,
    pub stdout: String,
}

/// How a call measured by the probe went: exit status, stdout and peak RSS.
#[derive(Debug, Clone)]
pub struct Peak {
    pub status: ExitStatus,
    pub stdout: String,
    pub max_rss_kib: Option<u64>,
}

impl Timed {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The result the plugin printed, as JSON.
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.stdout)
            .map_err(|e| format!("the plugin's stdout is not JSON ({e}): {}", self.stdout))
    }
}

impl Call {
    pub fn new(dir: &Path, plugin: &str, command: &str) -> Call {
        Call {
            binary: dir.join(plugin),
            env: vec![
                ("CNI_COMMAND", command.into()),
                ("CNI_PATH", dir.display().to_string()),
                ("CNI_IFNAME", "eth0".into()),
            ],
        }
    }

    fn set(mut self, key: &'static str, value: &str) -> Call {
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// The container ID and the path of its network namespace.
    pub fn container(self, id: &str, netns: &str) -> Call {
        self.set("CNI_CONTAINERID", id).set("CNI_NETNS", netns)
    }

    pub fn args(self, args: &str) -> Call {
        self.set("CNI_ARGS", args)
    }

    /// Overrides `CNI_PATH` (the directory the plugin's delegates are looked up in).
    pub fn cni_path(self, path: &str) -> Call {
        self.set("CNI_PATH", path)
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        // Only the variables of this call: none the caller's environment may hold.
        for key in cni_common::env::VARS {
            cmd.env_remove(key);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd
    }

    /// Runs the plugin with `stdin` and waits for it; the clock runs from just before the
    /// spawn to the moment the plugin has been reaped.
    pub fn run(&self, stdin: &str) -> Result<Timed, String> {
        let mut cmd = self.command(&self.binary);
        let start = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot exec {}: {e}", self.binary.display()))?;
        let (status, stdout) = feed(child, stdin)
            .map_err(|e| format!("waiting for {}: {e}", self.binary.display()))?;
        let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        Ok(Timed { us, status, stdout })
    }

    /// Runs the plugin with `stdin` through the probe `probe` (this runner's binary, which
    /// must handle `rss-probe BINARY` with [`rss_probe`]) and returns its peak RSS. Untimed.
    pub fn peak_rss(&self, probe: &Path, stdin: &str) -> Result<Peak, String> {
        let mut cmd = self.command(probe);
        cmd.arg(RSS_PROBE).arg(&self.binary);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot exec {}: {e}", probe.display()))?;
        let (status, report) =
            feed(child, stdin).map_err(|e| format!("waiting for {}: {e}", probe.display()))?;
        let (raw, rss, stdout) = parse_probe_report(&report).ok_or_else(|| {
            format!(
                "{} {RSS_PROBE} failed ({status}): {report}",
                probe.display()
            )
        })?;
        Ok(Peak {
            status: ExitStatus::from_raw(raw),
            stdout: stdout.into(),
            max_rss_kib: rss_kib(rss),
        })
    }

    /// [`Call::run`], failing unless the plugin succeeded.
    pub fn ok(&self, stdin: &str) -> Result<Timed, String> {
        let t = self.run(stdin)?;
        if t.success() {
            Ok(t)
        } else {
            Err(format!(
                "{self} failed ({}): {}",
                t.status,
                t.stdout.trim_end()
            ))
        }
    }
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let get = |key| self.env.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
        write!(f, "{}", self.binary.display())?;
        for key in ["CNI_COMMAND", "CNI_CONTAINERID"] {
            if let Some(v) = get(key) {
                write!(f, " {v}")?;
            }
        }
        Ok(())
    }
}

/// Writes `stdin` to the child, reads its stdout to the end and reaps it.
fn feed(mut child: Child, stdin: &str) -> std::io::Result<(ExitStatus, String)> {
    if let Some(mut input) = child.stdin.take() {
        // A plugin may exit without reading its stdin.
        let _ = input.write_all(stdin.as_bytes());
    }
    let mut stdout = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut stdout);
    }
    let status = child.wait()?;
    Ok((status, String::from_utf8_lossy(&stdout).into_owned()))
}

/// The runner's subcommand that measures one call.
pub const RSS_PROBE: &str = "rss-probe";

/// The probe side of [`Call::peak_rss`]: forks (not spawns: the child's memory before the
/// exec is a copy of this small process's, not shared), execs `binary` with this process's
/// environment and stdin, and returns the report [`parse_probe_report`] reads: a first line
/// `<raw wait status> <ru_maxrss in KiB>`, then the plugin's stdout.
pub fn rss_probe(binary: &Path) -> Result<String, String> {
    let mut cmd = Command::new(binary);
    cmd.stdout(Stdio::piped());
    // SAFETY: the hook does nothing; its presence alone makes std fork and exec instead of
    // calling posix_spawn.
    unsafe {
        cmd.pre_exec(|| Ok(()));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot exec {}: {e}", binary.display()))?;
    let mut stdout = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut stdout);
    }
    let (status, max_rss) =
        wait4(child.id()).map_err(|e| format!("waiting for {}: {e}", binary.display()))?;
    Ok(format!(
        "{status} {max_rss}\n{}",
        String::from_utf8_lossy(&stdout)
    ))
}

/// Reads a probe's report: the raw wait status, `ru_maxrss` and the plugin's stdout; `None`
/// if the first line is not two integers.
pub fn parse_probe_report(report: &str) -> Option<(i32, i64, &str)> {
    let (first, stdout) = report.split_once('\n')?;
    let mut fields = first.split(' ');
    let status = fields.next()?.parse().ok()?;
    let rss = fields.next()?.parse().ok()?;
    fields.next().is_none().then_some((status, rss, stdout))
}

/// Reaps child `pid`: its raw wait status and its peak RSS (`ru_maxrss`, KiB).
fn wait4(pid: u32) -> std::io::Result<(i32, i64)> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is a plain C struct of integers, for which all zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers point to live, writable values of the types wait4 expects.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage.ru_maxrss as i64));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_are_parsed() {
        let (status, rss, out) =
            parse_probe_report("0 2208\n{\"cniVersion\":\"0.4.0\"}\n").unwrap();
        assert_eq!(
            (status, rss, out),
            (0, 2208, "{\"cniVersion\":\"0.4.0\"}\n")
        );
        assert!(ExitStatus::from_raw(status).success());
        // exit code 7: the raw status holds it in the second byte
        let (status, _, out) = parse_probe_report("1792 1560\n").unwrap();
        assert_eq!(ExitStatus::from_raw(status).code(), Some(7));
        assert_eq!(out, "");
        assert_eq!(
            parse_probe_report("0 12\nline\nline"),
            Some((0, 12, "line\nline"))
        );
        assert_eq!(parse_probe_report(""), None);
        assert_eq!(parse_probe_report("0 2208"), None); // no newline: no report
        assert_eq!(parse_probe_report("0\n"), None);
        assert_eq!(parse_probe_report("0 x\n"), None);
        assert_eq!(parse_probe_report("0 1 2\n"), None);
        assert_eq!(parse_probe_report("cannot exec\n"), None);
    }
}
