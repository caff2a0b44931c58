//! containerd 1.6 on a test node, as kubelet runs it (the CRI) and as `ctr run --cni` does,
//! with the plugins of a given directory and a conflist of the test's.
//!
//! Everything lives in the node: containerd runs in the node's network namespace and in a
//! private mount namespace, held by a `sleep` process started first, so that it survives a
//! restart of containerd as a node's mount namespace does. In it, a tmpfs covers `/run`
//! (containerd 1.6 pins pod network namespaces in `/var/run/netns` and puts its shims'
//! sockets in `/run/containerd/s`, whatever its config says), and the node's conf and bin
//! directories are bound over `/etc/cni/net.d` and `/opt/cni/bin` (which `ctr` reads).
//! containerd's root, state, config and socket are in the node's temp dir. Dropping the value
//! stops containerd by PID (SIGTERM, then SIGKILL) and kills every process left in that mount
//! namespace and below it (shims, pods), so that nothing remains, also after a failure.
//!
//! There is no registry: [`build_image`] makes one image (two tags, `pause` and `busybox`)
//! from the machine's static busybox, imported with `ctr images import`; the CRI plugin's
//! `sandbox_image` is the pause tag.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::cri::{
    CriClient, LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatusResponse, PortMapping, Protocol,
};
use rig::netns::TestNetns;
use rig::node::Node;

pub const PAUSE_IMAGE: &str = "localhost/cni-rs/pause:test";
pub const BUSYBOX_IMAGE: &str = "localhost/cni-rs/busybox:test";
/// The containerd namespace of the CRI plugin.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// The busybox applets the image links to (`/bin/busybox` is static).
const APPLETS: &[&str] = &[
    "sh", "sleep", "cat", "echo", "ip", "ping", "nc", "httpd", "wget", "hostname", "ls", "true",
];

/// The PATH containerd, ctr and a kube node's daemons run with (as under an init system).
pub(crate) const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why containerd cannot run here (a tool is missing), or `None`.
pub fn missing_tools() -> Option<String> {
    let missing: Vec<&str> = ["containerd", "ctr", "runc", "containerd-shim-runc-v2"]
        .into_iter()
        .filter(|t| which(t).is_none())
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "{} not installed (scripts/setup.sh installs containerd and runc)",
            missing.join(", ")
        ));
    }
    if static_busybox().is_none() {
        return Some("no static busybox (apt-get install busybox-static)".into());
    }
    None
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The machine's busybox, if it is statically linked (it is all the image holds).
fn static_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            fs::read(p)
                .map(|bytes| {
                    // A dynamic executable names its loader (PT_INTERP).
                    !bytes
                        .windows(8)
                        .any(|w| w == b"/lib64/l" || w == b"/lib/ld-")
                })
                .unwrap_or(false)
        })
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes `dir/image.tar`, a docker-archive image of a static busybox tagged [`PAUSE_IMAGE`]
/// and [`BUSYBOX_IMAGE`]. Its entrypoint sleeps and ends on SIGTERM (a pause container).
pub fn build_image(dir: &Path) -> PathBuf {
    let work = dir.join("image");
    let root = work.join("rootfs");
    for sub in ["bin", "dev", "proc", "sys", "tmp", "etc", "www"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    let busybox = static_busybox().expect("a static busybox (busybox-static)");
    fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    run_ok(Command::new("tar").args([
        "-C",
        &root.display().to_string(),
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--mtime=@0",
        "--sort=name",
        "-cf",
        &work.join("layer.tar").display().to_string(),
        ".",
    ]));
    let sum = run_ok(Command::new("sha256sum").arg(work.join("layer.tar")));
    let digest = sum.split_whitespace().next().unwrap().to_owned();
    let config = json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            "Entrypoint": ["/bin/sh", "-c", "trap 'exit 0' TERM INT; sleep 2147483647 & wait"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]},
        "history": [{"created_by": "cni-rs conformance rig"}],
    });
    fs::write(work.join("config.json"), config.to_string()).unwrap();
    let manifest = json!([{
        "Config": "config.json",
        "RepoTags": [PAUSE_IMAGE, BUSYBOX_IMAGE],
        "Layers": ["layer.tar"],
    }]);
    fs::write(work.join("manifest.json"), manifest.to_string()).unwrap();
    let tarball = dir.join("image.tar");
    run_ok(Command::new("tar").args([
        "-C",
        &work.display().to_string(),
        "--owner=0",
        "--group=0",
        "--mtime=@0",
        "-cf",
        &tarball.display().to_string(),
        "config.json",
        "manifest.json",
        "layer.tar",
    ]));
    tarball
}

/// `nsenter --target=<pid> <namespaces> --`, with only the system PATH and ctr's snapshotter
/// in its environment: the start of a command inside a namespace holder (containerd's, a
/// kube node's).
pub(crate) fn enter_holder(pid: u32, namespaces: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.env_clear()
        .env("PATH", SYSTEM_PATH)
        // ctr's default for --snapshotter.
        .env("CONTAINERD_SNAPSHOTTER", snapshotter())
        .arg(format!("--target={pid}"))
        .args(namespaces)
        .arg("--");
    cmd
}

/// `ctr --address=<socket> --namespace=<ns> args…`, run through `enter` (a holder's
/// [`enter_holder`] command).
pub(crate) fn ctr(mut enter: Command, socket: &Path, ns: &str, args: &[&str]) -> Output {
    enter
        .arg("ctr")
        .arg(format!("--address={}", socket.display()))
        .arg(format!("--namespace={ns}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ctr: {e}"))
}

/// Makes the private mount namespace and then sleeps, holding it. `$1` the conf dir, `$2`
/// the bin dir, `$3` a scratch dir. A directory that does not exist on the machine is made
/// on an overlay of its nearest existing parent, so that nothing is created outside.
///
/// `mount -n`: without it, mount(8) creates `/run/mount` (its utab) on the machine's /run
/// before the tmpfs covers it. `/var/lib` gets a tmpfs too: go-cni caches results in
/// `/var/lib/cni` and containerd 1.6 has no setting to move it.
const HOLDER: &str = concat!(
    r#"set -e
mount -n -t tmpfs -o mode=755 cni-rs-run /run
mount -n -t tmpfs -o mode=755 cni-rs-varlib /var/lib
mkdir -p /run/netns
"#,
    over_fn!(),
    r#"over "$1" /etc/cni/net.d "$3/etc"
over "$2" /opt/cni/bin "$3/opt"
echo ready
exec sleep 2147483647
"#
);

/// The logging shim put in place of each plugin: records the call's `CNI_*` environment,
/// stdin, stdout and exit code in `@LOG@`, then runs the real plugin from `@REAL@`.
const SHIM: &str = r#"#!/bin/sh
# cni-rs conformance rig: records one CNI call and runs the real plugin.
n=${0##*/}
f="@LOG@/$(date +%s%N)-$$-$n-${CNI_COMMAND:-none}"
env | grep '^CNI_' > "$f.env"
cat > "$f.stdin"
"@REAL@/$n" < "$f.stdin" > "$f.stdout"
rc=$?
echo "$rc" > "$f.rc"
cat "$f.stdout"
exit "$rc"
"#;

/// One recorded plugin call (with [`Options::log_calls`]).
#[derive(Debug, Clone)]
pub struct Call {
    pub plugin: String,
    pub command: String,
    pub env: BTreeMap<String, String>,
    /// The `CNI_*` variables as the runtime set them, one `KEY=value` a line, in its order.
    pub env_text: String,
    pub stdin: String,
    pub stdout: String,
    pub exit_code: Option<i32>,
}

impl Call {
    pub fn stdin_json(&self) -> Value {
        serde_json::from_str(&self.stdin).unwrap_or(Value::Null)
    }

    pub fn env(&self, key: &str) -> &str {
        self.env.get(key).map(String::as_str).unwrap_or_default()
    }
}

/// A pod sandbox made through the CRI.
#[derive(Debug)]
pub struct Sandbox {
    pub id: String,
    /// `PodSandboxStatus.network.ip`
    pub ip: String,
    /// The pause process.
    pub pid: i32,
    /// The pod's network namespace (`/proc/PID/ns/net` of the pause process).
    pub netns: TestNetns,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The plugins containerd runs (`bin_dir`, and what is bound over `/opt/cni/bin`).
    pub plugin_dir: PathBuf,
    /// The network configuration (written as the conf dir's only file).
    pub conflist: Value,
    /// Put a logging shim in front of every plugin ([`Containerd::calls`]).
    pub log_calls: bool,
}

#[derive(Debug)]
pub struct Containerd<'n> {
    node: &'n Node,
    dir: PathBuf,
    holder: Child,
    daemon: Option<Child>,
    mntns: String,
    /// Processes that may have become children of the test process (a subreaper): the
    /// shims and pods left when containerd stopped; reaped on drop.
    adopted: Vec<i32>,
    cri: CriClient,
    /// Unique per instance: the cgroup parent of CRI pods and the ctr namespace.
    tag: String,
    /// One containerd at a time in a test process: several starting and stopping pods at
    /// once on two loaded CPUs made runc fail now and then. Released after `drop` has ended
    /// every process of this one.
    _serial: MutexGuard<'static, ()>,
}

static SERIAL: Mutex<()> = Mutex::new(());

impl<'n> Containerd<'n> {
    /// Starts containerd on `node`, waits for its socket and imports the images.
    pub fn start(node: &'n Node, opts: &Options) -> Containerd<'n> {
        // A test that failed while holding it poisoned nothing this one relies on.
        let serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = node.dir().join("containerd");
        for sub in ["root", "state", "net.d", "calls", "scratch", "bin", "pods"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        fs::write(
            dir.join("net.d/10-test.conflist"),
            serde_json::to_string_pretty(&opts.conflist).unwrap(),
        )
        .unwrap();
        let bin_dir = if opts.log_calls {
            install_shims(&opts.plugin_dir, &dir.join("bin"), &dir.join("calls"));
            dir.join("bin")
        } else {
            opts.plugin_dir.clone()
        };
        // Shims outlive a stopped containerd (their parent): the test process adopts them
        // and reaps them, instead of leaving zombies to an init that may reap late.
        let _ = nix::sys::prctl::set_child_subreaper(true);
        let tag = format!(
            "cni-rs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        fs::write(
            dir.join("config.toml"),
            config_toml(&dir, &bin_dir, &dir.join("net.d")),
        )
        .unwrap();
        let image = build_image(&dir);

        let holder_log = fs::File::create(dir.join("holder.log")).unwrap();
        let mut holder = node
            .host()
            .command("unshare")
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(HOLDER)
            .arg("cni-rs-holder")
            .arg(dir.join("net.d"))
            .arg(&bin_dir)
            .arg(dir.join("scratch"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(holder_log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run unshare: {e}"));
        let mut line = String::new();
        let _ = BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = holder.kill();
            let _ = holder.wait();
            panic!(
                "cannot make containerd's mount namespace: {}",
                fs::read_to_string(dir.join("holder.log")).unwrap_or_default()
            );
        }
        let mntns = fs::read_link(format!("/proc/{}/ns/mnt", holder.id()))
            .unwrap()
            .display()
            .to_string();
        let mut cd = Containerd {
            node,
            cri: CriClient::new(&dir.join("containerd.sock")),
            dir,
            holder,
            daemon: None,
            mntns,
            adopted: Vec::new(),
            tag,
            _serial: serial,
        };
        cd.spawn_daemon();
        for ns in [CRI_NAMESPACE, &cd.tag.clone()] {
            let out = cd.ctr_in(ns, &["images", "import", &image.display().to_string()]);
            assert!(
                out.status.success(),
                "image import failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cd
    }

    pub fn node(&self) -> &Node {
        self.node
    }

    /// containerd's directory (root, state, config.toml, containerd.log, net.d, calls).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    pub fn cri(&self) -> &CriClient {
        &self.cri
    }

    /// The containerd namespace for `ctr` (also the pods' cgroup parent).
    pub fn ctr_namespace(&self) -> &str {
        &self.tag
    }

    /// The end of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("msg=\"loading plugin"))
            .collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn spawn_daemon(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let socket = self.socket();
        let _ = fs::remove_file(&socket);
        let mut child = self
            .enter()
            .args(["containerd", "--config"])
            .arg(self.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run containerd: {e}"));
        self.cri = CriClient::new(&socket);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("containerd exited ({status}):\n{}", self.log_tail());
            }
            if socket.exists() && self.cri.version().is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("containerd did not answer in 30 s:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.daemon = Some(child);
    }

    /// Stops containerd by its PID: SIGTERM, SIGKILL after 10 s. Its shims (and so the pods)
    /// go on running, as on a node.
    pub fn stop_daemon(&mut self) {
        let procs = self.processes();
        self.adopted.extend(procs);
        if let Some(mut child) = self.daemon.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts containerd (same root, state and mount namespace); pods keep running.
    pub fn restart(&mut self) {
        self.stop_daemon();
        self.spawn_daemon();
    }

    /// A command run in containerd's network and mount namespaces, with a clean
    /// environment (the plugins get containerd's and ctr's).
    pub fn enter(&self) -> Command {
        enter_holder(self.holder.id(), &["--mount", "--net"])
    }

    /// Runs `ctr` against this containerd in namespace `ns`, where `ctr run --cni` sees the
    /// node's conflist and plugins.
    pub fn ctr_in(&self, ns: &str, args: &[&str]) -> Output {
        ctr(self.enter(), &self.socket(), ns, args)
    }

    /// `ctr` in [`Containerd::ctr_namespace`].
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in(&self.tag.clone(), args)
    }

    /// RunPodSandbox with `ports` (host port, container port; TCP) mapped; panics with the
    /// error and containerd's log if it fails.
    pub fn run_pod(&self, name: &str, ports: &[(u16, u16)]) -> Sandbox {
        // kubelet retries a sandbox whose runtime (runc) failed to create or start it
        // ("OCI runtime create failed", "OCI runtime start failed", both seen under load);
        // containerd has torn the pod's network down again by then (its DEL), so a retry
        // starts clean. A CNI failure is never retried: that is what the tests are about.
        let mut attempt = 0;
        let id = loop {
            match self.try_run_pod(name, ports) {
                Err(e) if e.message().contains("OCI runtime") && attempt < 2 => {
                    eprintln!(
                        "RunPodSandbox {name}: runc failed, retrying: {}",
                        e.message()
                    );
                    attempt += 1;
                }
                Err(e) => panic!("RunPodSandbox {name}: {}\n{}", e.message(), self.log_tail()),
                Ok(id) => break id,
            }
        };
        self.sandbox(&id)
    }

    pub fn try_run_pod(&self, name: &str, ports: &[(u16, u16)]) -> Result<String, tonic::Status> {
        let log_dir = self.dir.join("pods").join(name);
        fs::create_dir_all(&log_dir).unwrap();
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("{name}-uid"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_dir.display().to_string(),
            port_mappings: ports
                .iter()
                .map(|&(host, container)| PortMapping {
                    protocol: Protocol::Tcp as i32,
                    container_port: container.into(),
                    host_port: host.into(),
                    host_ip: String::new(),
                })
                .collect(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}", self.tag),
            }),
            ..Default::default()
        };
        self.cri.run_pod_sandbox(config)
    }

    /// PodSandboxStatus, verbose.
    pub fn status(&self, id: &str) -> PodSandboxStatusResponse {
        self.cri
            .pod_sandbox_status(id, true)
            .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {}", e.message()))
    }

    /// The sandbox `id` as the CRI reports it now.
    pub fn sandbox(&self, id: &str) -> Sandbox {
        let resp = self.status(id);
        let ip = resp
            .status
            .as_ref()
            .and_then(|s| s.network.as_ref())
            .map(|n| n.ip.clone())
            .unwrap_or_default();
        let info: Value = resp
            .info
            .get("info")
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or(Value::Null);
        let pid = info["pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_else(|| panic!("no pid in the sandbox's info: {info}"));
        Sandbox {
            id: id.into(),
            ip,
            pid,
            netns: TestNetns::existing(Path::new(&format!("/proc/{pid}/ns/net"))),
        }
    }

    /// StopPodSandbox then RemovePodSandbox.
    pub fn remove_pod(&self, id: &str) {
        self.cri
            .stop_pod_sandbox(id)
            .unwrap_or_else(|e| panic!("StopPodSandbox: {}\n{}", e.message(), self.log_tail()));
        self.cri
            .remove_pod_sandbox(id)
            .unwrap_or_else(|e| panic!("RemovePodSandbox: {}\n{}", e.message(), self.log_tail()));
    }

    /// The plugin calls recorded so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        let calls = self.dir.join("calls");
        let mut bases: Vec<String> = fs::read_dir(&calls)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".env").map(str::to_owned))
            .collect();
        bases.sort();
        bases
            .into_iter()
            .map(|base| {
                let read = |ext: &str| {
                    fs::read_to_string(calls.join(format!("{base}.{ext}"))).unwrap_or_default()
                };
                let env_text = read("env");
                let env: BTreeMap<String, String> = env_text
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                let mut parts = base
                    .splitn(3, '-')
                    .nth(2)
                    .unwrap_or_default()
                    .rsplitn(2, '-');
                let command = parts.next().unwrap_or_default().to_owned();
                let plugin = parts.next().unwrap_or_default().to_owned();
                Call {
                    plugin,
                    command,
                    env,
                    env_text,
                    stdin: read("stdin"),
                    stdout: read("stdout"),
                    exit_code: read("rc").trim().parse().ok(),
                }
            })
            .collect()
    }

    /// Processes in containerd's mount namespace (the holder, containerd, its shims) and
    /// all their descendants (the pods' processes).
    pub fn processes(&self) -> Vec<i32> {
        let mut procs: Vec<(i32, i32, bool)> = Vec::new();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let ours = fs::read_link(format!("/proc/{pid}/ns/mnt"))
                .map(|l| l.display().to_string() == self.mntns)
                .unwrap_or(false);
            let ppid = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // pid (comm) state ppid ...: comm may hold spaces and parentheses.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse().ok()
                })
                .unwrap_or(0);
            procs.push((pid, ppid, ours));
        }
        let mut set: Vec<i32> = procs.iter().filter(|p| p.2).map(|p| p.0).collect();
        loop {
            let more: Vec<i32> = procs
                .iter()
                .filter(|p| !set.contains(&p.0) && set.contains(&p.1))
                .map(|p| p.0)
                .collect();
            if more.is_empty() {
                break;
            }
            set.extend(more);
        }
        set.retain(|&p| p != i32::try_from(std::process::id()).unwrap_or(0));
        set
    }
}

fn install_shims(real: &Path, bin: &Path, log: &Path) {
    let real_dir = fs::canonicalize(real).unwrap();
    for entry in fs::read_dir(&real_dir).unwrap().flatten() {
        let path = entry.path();
        let is_exe = fs::metadata(&path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if !is_exe {
            continue;
        }
        let shim = bin.join(entry.file_name());
        fs::write(
            &shim,
            SHIM.replace("@LOG@", &log.display().to_string())
                .replace("@REAL@", &real_dir.display().to_string()),
        )
        .unwrap();
        fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// containerd's config with its root, state and sockets under `dir`, the CRI plugin with the
/// local pause image, and CNI from `bin_dir` and `conf_dir`.
pub fn config_toml(dir: &Path, bin_dir: &Path, conf_dir: &Path) -> String {
    let q = |p: PathBuf| serde_json::to_string(&p.display().to_string()).unwrap();
    format!(
        r#"version = 2
root = {root}
state = {state}
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This machine's root lacks CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "{snapshotter}"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = {bin}
  conf_dir = {conf}
  max_conf_num = 1
"#,
        root = q(dir.join("root")),
        state = q(dir.join("state")),
        sock = q(dir.join("containerd.sock")),
        ttrpc = q(dir.join("containerd.sock.ttrpc")),
        bin = q(bin_dir.to_owned()),
        conf = q(conf_dir.to_owned()),
        snapshotter = snapshotter(),
    )
}

/// overlayfs where the kernel has it, else the copying `native` snapshotter.
pub fn snapshotter() -> &'static str {
    let overlay = fs::read_to_string("/proc/filesystems")
        .map(|f| f.lines().any(|l| l.trim_end().ends_with("\toverlay")))
        .unwrap_or(false);
    if overlay { "overlayfs" } else { "native" }
}

/// Removes the cgroup `name` (and what is below it) from every hierarchy.
fn remove_cgroups(name: &str) {
    fn rmdir_tree(dir: &Path) -> bool {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                rmdir_tree(&entry.path());
            }
        }
        fs::remove_dir(dir).is_ok()
    }
    let base = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![base.join(name)];
    for entry in fs::read_dir(base).into_iter().flatten().flatten() {
        dirs.push(entry.path().join(name));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for dir in dirs.into_iter().filter(|d| d.is_dir()) {
        while !rmdir_tree(&dir) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Containerd<'_> {
    fn drop(&mut self) {
        self.stop_daemon();
        // Shims do not end with containerd: kill them, the pods below them and the holder,
        // until none is left.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = self.processes();
            if procs.is_empty() || Instant::now() > deadline {
                break;
            }
            self.adopted.extend(&procs);
            for pid in procs {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = self.holder.try_wait();
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        // Reap what was adopted (only those PIDs: other tests' children are theirs).
        for &pid in &self.adopted {
            let pid = Pid::from_raw(pid);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(
                waitpid(pid, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive)
            ) && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        remove_cgroups(&self.tag);
    }
}
