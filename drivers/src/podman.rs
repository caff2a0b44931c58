//! podman 4 with `network_backend = "cni"` on a test node, entirely in temp dirs.
//!
//! podman runs inside the node's network namespace and inside a private mount namespace, kept
//! by a helper process, in which `/run` (podman's `/run/netns` pins, `/run/libpod`, runc's
//! state), `/var/lib` (libcni's result cache `/var/lib/cni`) and `/dev/shm` (podman's locks)
//! are private tmpfs: nothing podman creates appears in the machine's own mounts, `/run/netns`
//! or network namespace. Its storage, config and events live in the node's temp dir, its
//! containers in a cgroup parent of their own, removed afterwards.
//!
//! The CNI bin dir is a temp dir of symlinks to the plugins under test; the plugins named as
//! "logged" are replaced by a shell shim that records each call's environment, stdin, stdout
//! and exit code before handing stdin to the real binary (`NAME.real`).

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use node_kernel::Netns;
use serde_json::Value;

use rig::netns::TestNetns;
use rig::node::Node;

/// The image [`Podman::import_busybox`] builds: busybox-static and a web root.
pub const IMAGE: &str = "localhost/cni-rs-busybox:latest";
/// What the image's `httpd -h /www` serves at `/`.
pub const PAGE: &str = "hello from podman\n";
/// Where busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The variables the CNI spec defines; the shim logs the whole environment (which also holds
/// podman's own), [`Podman::calls`] keeps these.
pub const SPEC_VARS: [&str; 6] = cni_common::env::VARS;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why podman cannot run here (a tool missing), or `None`.
pub fn missing() -> Option<String> {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
    };
    let mut lacking: Vec<&str> = ["podman", "runc", "nsenter", "unshare", "tar"]
        .into_iter()
        .filter(|t| !on_path(t))
        .collect();
    if !Path::new(BUSYBOX).is_file() {
        lacking.push(BUSYBOX);
    }
    (!lacking.is_empty()).then(|| {
        format!(
            "{} not installed (scripts/setup.sh installs podman, runc and busybox-static)",
            lacking.join(", ")
        )
    })
}

/// One plugin call recorded by the shim.
#[derive(Debug, Clone)]
pub struct Call {
    pub plugin: String,
    pub command: String,
    /// The [`SPEC_VARS`] set, in the order `env` printed them.
    pub env: Vec<(String, String)>,
    pub stdin: String,
    pub stdout: String,
    pub exit: i32,
}

impl Call {
    pub fn var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn stdin_json(&self) -> Value {
        serde_json::from_str(&self.stdin).unwrap_or_else(|e| {
            panic!(
                "{} {} stdin: {e}: {}",
                self.plugin, self.command, self.stdin
            )
        })
    }
}

/// A podman "installation" on a node: config, storage, CNI bin dir and the helper holding its
/// private mount namespace.
#[derive(Debug)]
pub struct Podman {
    dir: PathBuf,
    netns: PathBuf,
    helper: Option<(Child, ChildStdin)>,
    helper_mnt: String,
    cgroup_parent: String,
}

impl Podman {
    /// Sets podman up on `node` with the network `conflist` (its `name` is the network name)
    /// and, as its CNI bin dir, symlinks to `plugins` in `plugin_src`; those also in `logged`
    /// go through the logging shim.
    pub fn new(
        node: &Node,
        conflist: &Value,
        plugin_src: &Path,
        plugins: &[&str],
        logged: &[&str],
    ) -> Podman {
        let dir = node.dir().join("podman");
        for sub in [
            "bin",
            "net",
            "log",
            "root",
            "runroot",
            "tmp",
            "image/bin",
            "image/www",
        ] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let bin = dir.join("bin");
        for &name in plugins {
            let real = plugin_src.join(name);
            assert!(real.is_file(), "plugin {} is missing", real.display());
            if logged.contains(&name) {
                symlink(&real, bin.join(format!("{name}.real"))).unwrap();
                let shim = bin.join(name);
                fs::write(&shim, shim_script(name, &bin, &dir.join("log"))).unwrap();
                fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).unwrap();
            } else {
                symlink(&real, bin.join(name)).unwrap();
            }
        }
        let network = conflist["name"].as_str().unwrap();
        fs::write(
            dir.join("net").join(format!("{network}.conflist")),
            serde_json::to_string_pretty(conflist).unwrap(),
        )
        .unwrap();
        fs::write(dir.join("containers.conf"), containers_conf(&dir, network)).unwrap();

        // The private mount namespace: the helper mounts the tmpfs, says "ready" and waits
        // for its stdin to close (also when this process dies).
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "set -e; mount -t tmpfs -o mode=755 tmpfs /run; mkdir -m 755 /run/netns; \
                 mount -t tmpfs -o mode=755 tmpfs /var/lib; \
                 mount -t tmpfs -o mode=1777 tmpfs /dev/shm; echo ready; read -r _ || true",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run unshare: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the mount namespace helper failed");
        let helper_mnt = mnt_ns(child.id()).unwrap();
        assert_ne!(
            Some(&helper_mnt),
            mnt_ns(std::process::id()).as_ref(),
            "the helper shares our mount namespace"
        );
        let stdin = child.stdin.take().unwrap();
        Podman {
            dir,
            netns: node.host().path().to_owned(),
            helper: Some((child, stdin)),
            helper_mnt,
            cgroup_parent: format!(
                "cni_rs_podman_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    /// podman's state dir (config, storage, bin dir, shim log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CNI bin dir podman is configured with.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// The cgroup parent to pass as `--cgroup-parent`; teardown removes it.
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.cgroup_parent)
    }

    /// `podman ARGS` in the node's network namespace and the private mount namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let (helper, _) = self.helper.as_ref().expect("podman was torn down");
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(helper.id().to_string())
            .arg("-m")
            .arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg("podman")
            .env("CONTAINERS_CONF", d("containers.conf"))
            .env("TMPDIR", d("tmp"))
            .env_remove("CONTAINERS_STORAGE_CONF")
            .env_remove("CONTAINER_HOST")
            .args(["--root", &d("root"), "--runroot", &d("runroot")])
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `podman ARGS`, panics with its stderr if it fails, returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Builds [`IMAGE`] locally: a rootfs of busybox-static, `sh`/`httpd` links and a web
    /// root holding [`PAGE`], imported as a tarball (no registry).
    pub fn import_busybox(&self) {
        let root = self.dir.join("image");
        fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "httpd", "sleep"] {
            symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        fs::write(root.join("www/index.html"), PAGE).unwrap();
        let tar = self.dir.join("image.tar");
        let out = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.ok(&["import", "--quiet", &tar.display().to_string(), IMAGE]);
    }

    /// The calls the shim recorded, in order.
    pub fn calls(&self) -> Vec<Call> {
        let mut names: Vec<String> = fs::read_dir(self.dir.join("log"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let d = self.dir.join("log").join(&name);
                let (_, rest) = name.split_once('-').unwrap();
                let (plugin, command) = rest.rsplit_once('-').unwrap();
                let read = |f: &str| fs::read_to_string(d.join(f)).unwrap_or_default();
                Call {
                    plugin: plugin.to_owned(),
                    command: command.to_owned(),
                    env: read("env")
                        .lines()
                        .filter_map(|l| l.split_once('='))
                        .filter(|(k, _)| SPEC_VARS.contains(k))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    stdin: read("stdin"),
                    stdout: read("stdout"),
                    exit: read("rc").trim().parse().unwrap_or(-1),
                }
            })
            .collect()
    }

    /// Writes the recorded calls to `dest` (emptied first) as `NN-PLUGIN-COMMAND.env`,
    /// `.stdin` and `.stdout`, with temp paths, container IDs, netns names, veth names and
    /// MAC addresses replaced by stable strings.
    pub fn record(&self, dest: &Path, node: &Node) {
        let calls = self.calls();
        let mut subst: Vec<(String, String)> = vec![
            (self.bin_dir().display().to_string(), "@CNI_BIN_DIR@".into()),
            (node.dir().display().to_string(), "@NODE_DIR@".into()),
        ];
        // Numbered in order of first appearance, so a new recording differs only where
        // podman's behaviour does.
        let (mut ids, mut netns, mut veths, mut macs) = (vec![], vec![], vec![], vec![]);
        let add = |v: &mut Vec<String>, s: &str| {
            if !v.iter().any(|x| x == s) {
                v.push(s.to_owned());
            }
        };
        for call in &calls {
            if let Some(id) = call.var("CNI_CONTAINERID").filter(|v| !v.is_empty()) {
                add(&mut ids, id);
            }
            if let Some(ns) = call.var("CNI_NETNS").filter(|v| v.starts_with('/')) {
                add(&mut netns, ns);
            }
            for text in [&call.stdin, &call.stdout] {
                let Ok(v) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                for result in [&v, &v["prevResult"]] {
                    for i in result["interfaces"].as_array().into_iter().flatten() {
                        if let Some(mac) = i["mac"].as_str() {
                            add(&mut macs, mac);
                        }
                        if let Some(veth) = i["name"].as_str().filter(|n| n.starts_with("veth")) {
                            add(&mut veths, veth);
                        }
                    }
                }
            }
        }
        for (n, id) in ids.iter().enumerate() {
            subst.push((id.clone(), format!("{:0>64x}", 0xc0ffee + n)));
        }
        for (n, ns) in netns.iter().enumerate() {
            subst.push((
                ns.clone(),
                format!("/run/netns/netns-00000000-0000-0000-0000-{:012}", n + 1),
            ));
        }
        for (n, veth) in veths.iter().enumerate() {
            subst.push((veth.clone(), format!("veth{:08x}", n + 1)));
        }
        for (n, mac) in macs.iter().enumerate() {
            subst.push((mac.clone(), format!("02:00:00:00:00:{:02x}", n + 1)));
        }
        let redact = |s: &str| {
            subst.iter().fold(s.to_owned(), |acc, (from, to)| {
                acc.replace(from.as_str(), to)
            })
        };
        let _ = fs::remove_dir_all(dest);
        fs::create_dir_all(dest).unwrap();
        for (n, call) in calls.iter().enumerate() {
            let base = format!("{:02}-{}-{}", n + 1, call.plugin, call.command);
            let mut env: String = call.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            env.push_str(&format!("# exit code {}\n", call.exit));
            fs::write(dest.join(format!("{base}.env")), redact(&env)).unwrap();
            fs::write(dest.join(format!("{base}.stdin")), redact(&call.stdin)).unwrap();
            fs::write(dest.join(format!("{base}.stdout")), redact(&call.stdout)).unwrap();
        }
    }

    /// Processes that belong to this podman: in its mount namespace (podman, conmon, the
    /// helper) or in its cgroup parent (the containers), zombies excepted.
    fn processes(&self) -> Vec<(i32, String)> {
        let mut found = Vec::new();
        let me = std::process::id();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat
                .rsplit_once(") ")
                .is_some_and(|(_, s)| s.starts_with('Z'))
                || stat.is_empty()
            {
                continue;
            }
            let in_ns = mnt_ns(pid).as_ref() == Some(&self.helper_mnt);
            let in_cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .unwrap_or_default()
                .contains(&self.cgroup_parent);
            if in_ns || in_cgroup {
                let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                found.push((pid as i32, cmd));
            }
        }
        found
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut hierarchies: BTreeSet<PathBuf> = BTreeSet::new();
        hierarchies.insert(PathBuf::from("/sys/fs/cgroup"));
        for e in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(p) = fs::canonicalize(e.path())
                && p.is_dir()
            {
                hierarchies.insert(p);
            }
        }
        hierarchies
            .into_iter()
            .map(|h| h.join(&self.cgroup_parent))
            .filter(|p| p.is_dir())
            .collect()
    }

    /// Removes every container, kills whatever is left of podman, conmon and the containers
    /// (by PID), ends the mount namespace and removes the cgroup parent. Returns what could
    /// not be cleaned (leftover processes, mounts, cgroups); empty when all is gone.
    pub fn teardown(&mut self) -> Vec<String> {
        if self.helper.is_none() {
            return Vec::new();
        }
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        let (mut helper, stdin) = self.helper.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            for (pid, _) in self.processes() {
                if pid != helper.id() as i32 {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            // The helper last: it keeps the mount namespace (and the cni-… pins) alive.
            if self
                .processes()
                .iter()
                .all(|(p, _)| *p == helper.id() as i32)
            {
                drop(stdin);
                let _ = kill(Pid::from_raw(helper.id() as i32), Signal::SIGKILL);
                let _ = helper.wait();
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut problems = Vec::new();
        loop {
            for dir in self.cgroup_dirs() {
                remove_cgroup(&dir);
            }
            let procs = self.processes();
            let cgroups = self.cgroup_dirs();
            if (procs.is_empty() && cgroups.is_empty()) || Instant::now() > deadline {
                problems.extend(procs.iter().map(|(p, c)| format!("process {p} left: {c}")));
                problems.extend(
                    cgroups
                        .iter()
                        .map(|c| format!("cgroup left: {}", c.display())),
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let dir = self.dir.display().to_string();
        for line in fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&dir))
        {
            problems.push(format!("mount left: {line}"));
        }
        problems
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for p in self.teardown() {
            eprintln!("podman teardown: {p}");
        }
    }
}

fn remove_cgroup(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&e.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

fn mnt_ns(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.display().to_string())
}

/// containers.conf for `dir`: the CNI backend on `network`, runc (crun refuses cgroup v1/v2
/// hybrid hosts), every state path in `dir`.
fn containers_conf(dir: &Path, network: &str) -> String {
    let d = |sub: &str| dir.join(sub).display().to_string();
    format!(
        r#"[containers]
# Root without CAP_SYS_RESOURCE (as here) cannot raise RLIMIT_NOFILE/NPROC to the
# 1048576 podman asks for by default.
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
cgroups = "no-conmon"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{bin}"]
network_config_dir = "{net}"
default_network = "{network}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
tmp_dir = "{tmp}"
runtime = "runc"
"#,
        bin = d("bin"),
        net = d("net"),
        events = d("events.log"),
        tmp = d("libpod-tmp"),
    )
}

/// The logging shim for plugin `name`: records env, stdin, stdout and exit code under `log`,
/// one directory per call named `NANOSECONDS-NAME-COMMAND`, and runs `NAME.real`.
fn shim_script(name: &str, bin: &Path, log: &Path) -> String {
    format!(
        r#"#!/bin/sh
d="{log}/$(date +%s%N)-{name}-${{CNI_COMMAND:-none}}"
mkdir -p "$d"
env > "$d/env"
cat > "$d/stdin"
"{real}" "$@" < "$d/stdin" > "$d/stdout"
rc=$?
echo "$rc" > "$d/rc"
cat "$d/stdout"
exit "$rc"
"#,
        log = log.display(),
        real = bin.join(format!("{name}.real")).display(),
    )
}

/// `GET /` over HTTP/1.0 from inside `ns`; the response body, or `None` when nothing answers.
pub fn http_get(ns: &TestNetns, to: SocketAddr) -> Option<String> {
    let timeout = Duration::from_secs(2);
    let mut conn = Netns::open(ns.path())
        .unwrap()
        .run(|| TcpStream::connect_timeout(&to, timeout))
        .unwrap()
        .ok()?;
    conn.set_read_timeout(Some(timeout)).ok()?;
    conn.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    conn.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}
