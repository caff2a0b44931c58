//! A real Kubernetes 1.20.2 cluster on one machine, for running kube-flannel as operators run
//! it: the [`ControlPlane`] (kube-apiserver on its etcd) plus kube-controller-manager (podCIDR
//! allocation, service-account tokens, Deployments...) and kube-scheduler, all in a [`Lan`]'s
//! namespace; and nodes that each run their own containerd 1.6 (CRI) and kubelet.
//!
//! A node is a network namespace on the LAN (`eth0`, `192.168.50.1x`, the default route via
//! the LAN's address, where nothing is forwarded) plus private mount and UTS namespaces, held
//! by a `sleep` process, in which containerd, its shims, runc and kubelet run, so that the
//! paths a pod's `hostPath` volumes name resolve there:
//!
//! - `/run` a tmpfs (containerd pins pod network namespaces in `/var/run/netns`, its shims put
//!   their sockets in `/run/containerd/s`, iptables locks `/run/xtables.lock`), with the
//!   node's [`K8sNode::run_flannel_dir`] bound on `/run/flannel`;
//! - `/var/lib` and `/var/log` the node's own directories (kubelet's root dir is the usual
//!   `/var/lib/kubelet`, host-local's leases land in `/var/lib/cni`, pod logs in
//!   `/var/log/pods`);
//! - [`K8sNode::bin_dir`] bound on `/opt/cni/bin` (our `bridge`, `host-local`, `portmap` and
//!   `loopback`, copied at join, as a distribution's CNI package puts them) and
//!   [`K8sNode::conf_dir`] on `/etc/cni/net.d` (empty: the node stays `NotReady`, "cni plugin
//!   not initialized", until a test or kube-flannel's install-cni writes a conflist);
//! - a fresh sysfs (this network namespace's interfaces) and, as each cgroup hierarchy's root,
//!   the node's own cgroup of that hierarchy (made at join, removed at teardown): the cgroups
//!   runc makes for the pods (`/k8s.io/<container>`) land below it, not at the machine's root;
//! - the six kernel tunables kubelet insists on (`vm.overcommit_memory=1`, `kernel.panic=10`,
//!   `kernel.panic_on_oops=1`...) shown to it as files with the values it wants, so that it
//!   does not set them on the machine (they are not per namespace);
//! - its own hostname (the node's name, a UTS namespace that hostNetwork pods share);
//! - copies of every namespace pin (the LAN's, other nodes', other tests') unmounted, so that
//!   a removed node's network namespace really goes.
//!
//! kubelet runs with the flags that work on a cgroup v1 machine without systemd
//! (`--cgroup-driver=cgroupfs --cgroups-per-qos=false --enforce-node-allocatable=`, no swap
//! check, no eviction, no image GC, no read-only port). Its credentials are a client
//! certificate `CN=system:node:<name>, O=system:nodes`, so the Node authorizer governs it as
//! in a kubeadm cluster. The controller-manager and the scheduler have client certificates of
//! their bootstrap users (`system:kube-controller-manager`, `system:kube-scheduler`); the
//! controllers run with service-account credentials of their own.
//!
//! There is no registry: images are archives imported with `ctr -n k8s.io images import` on
//! every node (the local busybox/pause image at join, any other with
//! [`K8sCluster::import_image`]); pods use `imagePullPolicy: Never`. There is no kube-proxy
//! either: Services have no data path, so an in-cluster client must be given
//! `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` ([`K8sCluster::apiserver_host_port`]).
//!
//! Teardown (drop, also after a failure; [`K8sCluster::remove`] for one node): kubelets
//! stopped first, every task killed and deleted through `ctr -n k8s.io`, containerd stopped,
//! then every process left in the node's mount namespace and below it (shims, pods) killed
//! and reaped (the test process is their subreaper), the node's cgroups removed, its
//! namespaces and directories deleted; then the scheduler, the controller-manager, the
//! apiserver and etcd, and the LAN.
//! [`MachineState`] records what must look the same afterwards.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::Value;

use crate::containerd::{
    BUSYBOX_IMAGE, CRI_NAMESPACE, PAUSE_IMAGE, SYSTEM_PATH, build_image, enter_holder,
};
use crate::etcd::{LAN_IP, Lan, stop};
use crate::kube::log_file;
use crate::kube::{self, ControlPlane, PORT};
use rig::netns::TestNetns;
use rig::node::Node;
use rig::plugin::plugin_dir;
use rig::poll;

/// The pod network kube-flannel's manifest uses.
pub const POD_NETWORK: &str = "10.244.0.0/16";

/// The plugins a node's `/opt/cni/bin` holds from the start (ours), as a distribution's CNI
/// package (kubeadm's `kubernetes-cni`) puts them there; flannel's own plugin is installed
/// by kube-flannel's `install-cni-plugin` init container.
pub const NODE_PLUGINS: &[&str] = &["bridge", "host-local", "portmap", "loopback"];

/// kubelet's kernel tunables (`pkg/kubelet/cm/container_manager_linux.go`) and the values it
/// sets when they differ: shown to it with those values (see the module's documentation).
const KUBELET_SYSCTLS: &[(&str, &str)] = &[
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// How long a daemon may take to answer after a start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why the cluster cannot run here, or `None`: the Kubernetes binaries (all five), etcd,
/// containerd, runc, a static busybox.
pub fn missing() -> Option<String> {
    if !kube::available()
        || !["kube-controller-manager", "kube-scheduler", "kubelet"]
            .iter()
            .all(|b| kube::bin_dir().join(b).is_file())
    {
        return Some(kube::missing());
    }
    crate::containerd::missing_tools()
}

/// The node's mount and UTS namespaces, made by `unshare --mount --uts --propagation private`
/// in the node's network namespace, then held by `sleep`. `$1` the node's directory (see
/// [`K8sNode`] for what is in it), `$2` the node's cgroup, `$3` the node's name (its hostname,
/// which hostNetwork pods share).
///
/// The node's cgroup directory in each hierarchy is what the node sees as that hierarchy's
/// root (`/sys/fs/cgroup/<controller>`), so that the cgroups runc makes for the pods
/// (`/k8s.io/<container>`: kubelet gives no cgroup parent with `--cgroups-per-qos=false`)
/// land below it. The machine's /sys is detached, not covered: runc takes a container's
/// cgroup mounts from the first cgroup mount of each controller in the mount table, and a
/// covered one still counts. `mount -n`: mount(8) would otherwise create `/run/mount` (its
/// utab) on the machine's /run before the tmpfs covers it. A directory that does not exist
/// on the machine (`/opt/cni/bin`) is made on an overlay of its nearest existing parent, so
/// nothing is created outside.
const HOLDER: &str = concat!(
    r#"set -e
d=$1
# Copies of other namespaces' pins would keep those namespaces alive.
for m in $(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "nsfs") print $5; break } }' /proc/self/mountinfo); do
    umount -n -l "$m" 2>/dev/null || true
done
cg=$2
echo "$3" > /proc/sys/kernel/hostname
# Each hierarchy's root is the node's cgroup; then a sysfs of this network namespace.
mkdir -p "$d/mnt/cgroup"
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
    mount -n --bind "/sys/fs/cgroup/$cg" "$d/mnt/cgroup"
else
    mount -n -t tmpfs -o mode=755 cni-rs-cgroup "$d/mnt/cgroup"
    for h in /sys/fs/cgroup/*; do
        n=$(basename "$h")
        if [ -L "$h" ]; then
            ln -s "$(readlink "$h")" "$d/mnt/cgroup/$n"
        elif [ -d "$h/$cg" ]; then
            mkdir "$d/mnt/cgroup/$n"
            mount -n --bind "$h/$cg" "$d/mnt/cgroup/$n"
        fi
    done
fi
umount -n -l /sys
mount -n -t sysfs cni-rs-sysfs /sys
mount -n --move "$d/mnt/cgroup" /sys/fs/cgroup
# The node's own /run, /run/flannel, /var/lib, /var/log, CNI dirs.
mount -n -t tmpfs -o mode=755 cni-rs-run /run
mkdir -p /run/netns /run/flannel
mount -n --bind "$d/run-flannel" /run/flannel
mount -n --bind "$d/var-lib" /var/lib
mount -n --bind "$d/var-log" /var/log
"#,
    over_fn!(),
    r#"over "$d/cni-conf" /etc/cni/net.d "$d/scratch/etc"
over "$d/cni-bin" /opt/cni/bin "$d/scratch/opt"
# kubelet reads its kernel tunables with the values it wants and leaves the machine's alone.
for f in "$d"/sysctl/*; do
    mount -n --bind "$f" "/proc/sys/$(basename "$f" | tr . /)"
done
echo ready
exec sleep 2147483647
"#
);

/// A name unique on the machine: the test process's PID and a counter.
fn unique(what: &str) -> String {
    format!(
        "cni-rs-k8s-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The last `lines` lines of the file at `path`.
fn tail_file(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `VmRSS` of a process in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Every process: (pid, parent pid).
fn all_processes() -> Vec<(i32, i32)> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces and parentheses.
            let ppid = stat[stat.rfind(')')? + 1..]
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// `roots` and every process below them, from one scan.
fn with_descendants(roots: &[i32]) -> Vec<i32> {
    let procs = all_processes();
    let mut set: Vec<i32> = procs
        .iter()
        .map(|p| p.0)
        .filter(|p| roots.contains(p))
        .collect();
    loop {
        let more: Vec<i32> = procs
            .iter()
            .filter(|p| !set.contains(&p.0) && set.contains(&p.1))
            .map(|p| p.0)
            .collect();
        if more.is_empty() {
            return set;
        }
        set.extend(more);
    }
}

/// Reaps the containerd shims that ended as zombie children of the test process (its
/// subreaper: a shim's parent, containerd, double-forks it away). Shims of pods deleted while
/// the cluster runs end without anyone waiting for them; the rig holds no `Child` of a shim,
/// so reaping them takes nothing from anyone.
fn reap_shims() {
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    for (pid, ppid) in all_processes() {
        if ppid != me {
            continue;
        }
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie_shim = stat.contains("(containerd-shim)")
            && stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if zombie_shim {
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// Removes the cgroup `name` (and what is below it) from every hierarchy; whether none is
/// left.
fn remove_cgroups(name: &str) -> bool {
    fn rmdir_tree(dir: &Path) -> bool {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                rmdir_tree(&entry.path());
            }
        }
        fs::remove_dir(dir).is_ok()
    }
    let dirs = cgroup_dirs(name);
    let deadline = Instant::now() + Duration::from_secs(10);
    for dir in &dirs {
        while dir.exists() && !rmdir_tree(dir) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    dirs.iter().all(|d| !d.exists())
}

/// The cgroup `name` in every hierarchy of the machine (cgroup v1 mounts under
/// `/sys/fs/cgroup/<controller>`, the v2 tree at `/sys/fs/cgroup` or `.../unified`).
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![base.join(name)];
    for entry in fs::read_dir(base).into_iter().flatten().flatten() {
        dirs.push(entry.path().join(name));
    }
    dirs
}

/// Makes the cgroup `name` in every hierarchy (the v2 tree, or each v1 controller's), its
/// cpuset (v1) holding every CPU and memory node as its parent does: a new v1 cpuset has
/// none, and runc fills a container's from its parent only up to the mount's root, which in
/// a node is this cgroup.
fn make_cgroup(name: &str) {
    let base = Path::new("/sys/fs/cgroup");
    let roots: Vec<PathBuf> = if base.join("cgroup.procs").exists() {
        vec![base.to_owned()]
    } else {
        fs::read_dir(base)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .filter(|p| p.join("cgroup.procs").exists())
            .collect()
    };
    for root in roots {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(value) = fs::read_to_string(root.join(file))
                && dir.join(file).exists()
            {
                fs::write(dir.join(file), value.trim())
                    .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()));
            }
        }
    }
}

/// One node: its namespaces, its directory, containerd and kubelet. Paths named `*_dir` are
/// the machine's paths of directories bound into the node's mount namespace.
#[derive(Debug)]
pub struct K8sNode {
    name: String,
    ip: String,
    kubelet: Option<Child>,
    containerd: Option<Child>,
    holder: Option<Child>,
    /// `/proc/<holder>/ns/mnt`'s link text, `mnt:[...]`.
    mntns: String,
    /// The node's cgroup, in every hierarchy (the root the node sees).
    cgroup: String,
    /// PIDs that may have become children of the test process (the subreaper): reaped after
    /// they are killed.
    adopted: Vec<i32>,
    // Last: the namespace and the temp dir go after every process.
    node: Node,
}

impl K8sNode {
    /// The Node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its LAN address (`eth0`, the Node's InternalIP).
    pub fn ip(&self) -> &str {
        &self.ip
    }

    /// The node's network namespace and temp dir (`node().host()` runs commands in the
    /// network namespace only, with the machine's mounts: use [`K8sNode::enter`] for the
    /// node's files).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The node's network namespace.
    pub fn netns(&self) -> &TestNetns {
        self.node.host()
    }

    /// The node's temp dir (everything of the node: its bound dirs, containerd's root and
    /// state, logs).
    pub fn dir(&self) -> &Path {
        self.node.dir()
    }

    /// What the node sees as `/etc/cni/net.d` (containerd's CNI `conf_dir`).
    pub fn conf_dir(&self) -> PathBuf {
        self.dir().join("cni-conf")
    }

    /// What the node sees as `/opt/cni/bin` (containerd's CNI `bin_dir`).
    pub fn bin_dir(&self) -> PathBuf {
        self.dir().join("cni-bin")
    }

    /// What the node sees as `/run/flannel` (`subnet.env`).
    pub fn run_flannel_dir(&self) -> PathBuf {
        self.dir().join("run-flannel")
    }

    /// What the node sees as `/var/lib` (`/var/lib/kubelet`, `/var/lib/cni`).
    pub fn var_lib_dir(&self) -> PathBuf {
        self.dir().join("var-lib")
    }

    /// containerd's socket (a machine path; CRI clients can dial it from anywhere).
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir().join("containerd").join("containerd.sock")
    }

    /// kubelet's log.
    pub fn kubelet_log(&self) -> PathBuf {
        self.dir().join("kubelet.log")
    }

    /// containerd's log.
    pub fn containerd_log(&self) -> PathBuf {
        self.dir().join("containerd").join("containerd.log")
    }

    /// The node's cgroup name: in every hierarchy, what the node sees as the root (the pods'
    /// cgroups are below it).
    pub fn cgroup(&self) -> &str {
        &self.cgroup
    }

    /// Writes `conflist` as `<conf_dir>/<file>`; containerd picks it up at once, kubelet
    /// reports the node Ready at its next status update.
    pub fn write_conflist(&self, file: &str, conflist: &Value) {
        fs::write(
            self.conf_dir().join(file),
            serde_json::to_string_pretty(conflist).unwrap(),
        )
        .unwrap();
    }

    /// A command run in the node's network, mount and UTS namespaces (as its daemons run),
    /// with a clean environment.
    pub fn enter(&self) -> Command {
        enter_holder(self.holder_pid(), &["--mount", "--uts", "--net"])
    }

    /// `sh -c script` in the node (see [`K8sNode::enter`]).
    pub fn sh(&self, script: &str) -> Output {
        self.enter().args(["sh", "-c", script]).output().unwrap()
    }

    /// `ctr --namespace <ns> args...` against the node's containerd, in the node.
    pub fn ctr_in(&self, ns: &str, args: &[&str]) -> Output {
        crate::containerd::ctr(self.enter(), &self.containerd_socket(), ns, args)
    }

    /// `ctr -n k8s.io args...` (the CRI's namespace: what kubelet sees).
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in(CRI_NAMESPACE, args)
    }

    /// Imports an image archive (docker-archive as `podman save` writes it, or OCI) into the
    /// CRI's namespace.
    pub fn import_image(&self, tar: &Path) {
        let out = self.ctr(&["images", "import", &tar.display().to_string()]);
        assert!(
            out.status.success(),
            "{}: ctr images import {}: {}",
            self.name,
            tar.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The holder's PID (the process whose namespaces are the node's).
    fn holder_pid(&self) -> u32 {
        self.holder.as_ref().map_or(0, Child::id)
    }

    /// kubelet's PID while it runs.
    pub fn kubelet_pid(&self) -> Option<u32> {
        self.kubelet.as_ref().map(Child::id)
    }

    /// containerd's PID while it runs.
    pub fn containerd_pid(&self) -> Option<u32> {
        self.containerd.as_ref().map(Child::id)
    }

    /// Every process of the node: those in its mount namespace (holder, containerd, kubelet,
    /// shims) and everything below them (pods).
    pub fn processes(&self) -> Vec<i32> {
        if self.mntns.is_empty() {
            return Vec::new();
        }
        let roots: Vec<i32> = all_processes()
            .into_iter()
            .map(|p| p.0)
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/ns/mnt"))
                    .map(|l| l.display().to_string() == self.mntns)
                    .unwrap_or(false)
            })
            .collect();
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        let mut set = with_descendants(&roots);
        set.retain(|&p| p != me);
        set
    }

    /// The RSS of the node's processes in KiB: kubelet, containerd, and the rest (shims and
    /// pods).
    pub fn rss_kib(&self) -> (u64, u64, u64) {
        let kubelet = self.kubelet_pid().map_or(0, rss_kib);
        let containerd = self.containerd_pid().map_or(0, rss_kib);
        let skip = [
            self.kubelet_pid(),
            self.containerd_pid(),
            self.holder.as_ref().map(Child::id),
        ];
        let rest = self
            .processes()
            .into_iter()
            .filter_map(|p| u32::try_from(p).ok())
            .filter(|p| !skip.contains(&Some(*p)))
            .map(rss_kib)
            .sum();
        (kubelet, containerd, rest)
    }

    /// The end of kubelet's and containerd's logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "== {} kubelet:\n{}\n== {} containerd:\n{}",
            self.name,
            tail_file(&self.kubelet_log(), 25),
            self.name,
            tail_file(&self.containerd_log(), 10),
        )
    }

    /// Stops kubelet by PID (SIGTERM, SIGKILL after 10 s); pods go on running.
    pub fn stop_kubelet(&mut self) {
        if let Some(mut c) = self.kubelet.take() {
            stop(&mut c, Duration::from_secs(10));
        }
    }

    /// The IDs of the tasks running in the CRI's namespace (pods' sandboxes and containers).
    pub fn running_tasks(&self) -> Vec<String> {
        self.tasks()
            .into_iter()
            .filter(|(_, status)| status == "RUNNING")
            .map(|(id, _)| id)
            .collect()
    }

    /// Every task of the CRI's namespace: (ID, status).
    fn tasks(&self) -> Vec<(String, String)> {
        let out = self.ctr(&["tasks", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let id = f.next()?.to_owned();
                let status = f.nth(1).unwrap_or_default().to_owned();
                Some((id, status))
            })
            .collect()
    }

    /// Kills and deletes every task of the CRI's namespace through `ctr` (runc removes their
    /// cgroups; their shims end).
    fn kill_tasks(&self) {
        if self.containerd.is_none() {
            return;
        }
        for (id, _) in self.tasks() {
            let _ = self.ctr(&["tasks", "kill", "--all", "--signal", "SIGKILL", &id]);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let tasks = self.tasks();
            if tasks.is_empty() || Instant::now() > deadline {
                break;
            }
            for (id, status) in tasks {
                if status == "STOPPED" {
                    let _ = self.ctr(&["tasks", "delete", &id]);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops containerd by PID (SIGTERM, SIGKILL after 10 s).
    fn stop_containerd(&mut self) {
        let procs = self.processes();
        self.adopted.extend(procs);
        if let Some(mut c) = self.containerd.take() {
            stop(&mut c, Duration::from_secs(10));
        }
    }

    /// Stops everything of the node (kubelet if still running, every task, containerd, the
    /// shims and pods, the holder), reaps it and removes the node's cgroups; what is left, as
    /// a list of complaints (empty: nothing).
    fn shut_down(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        let procs = self.processes();
        self.adopted.extend(procs);
        self.stop_kubelet();
        self.kill_tasks();
        self.stop_containerd();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = self.processes();
            if procs.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                left.push(format!("{}: processes left: {procs:?}", self.name));
                break;
            }
            self.adopted.extend(&procs);
            for pid in procs {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            if let Some(h) = self.holder.as_mut() {
                let _ = h.try_wait();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(mut h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
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
        reap_shims();
        if !remove_cgroups(&self.cgroup) {
            left.push(format!(
                "{}: cgroup {} not removable",
                self.name, self.cgroup
            ));
        }
        // Done: a later call (drop after remove) must find nothing, not a mount namespace
        // that reuses the inode number.
        self.mntns.clear();
        self.adopted.clear();
        left
    }
}

impl Drop for K8sNode {
    fn drop(&mut self) {
        let left = self.shut_down();
        if !left.is_empty() {
            eprintln!("k8s node teardown: {}", left.join("; "));
        }
    }
}

/// The cluster. Dropping it tears everything down (see the module's documentation).
#[derive(Debug)]
pub struct K8sCluster {
    nodes: Vec<Option<K8sNode>>,
    /// (name, process): kube-controller-manager, kube-scheduler.
    controllers: Vec<(&'static str, Child)>,
    /// Image archives every node imports at join.
    images: Vec<PathBuf>,
    dir: PathBuf,
    pod_network: String,
    /// The control plane goes before the LAN whose namespace it runs in.
    cp: ControlPlane,
    lan: Lan,
}

impl K8sCluster {
    /// A LAN, the apiserver on its etcd, kube-controller-manager allocating /24 podCIDRs from
    /// `pod_network` (IPv4, e.g. [`POD_NETWORK`]) and kube-scheduler; no nodes yet. Returns
    /// once the apiserver is ready and the controllers are started, not waiting for them: the
    /// 1.20 controller-manager waits 10 s before its podCIDR allocator runs (its first poll
    /// of the Node list), which [`K8sCluster::join_all`] overlaps with the nodes' start.
    pub fn start(pod_network: &str) -> K8sCluster {
        if let Some(why) = missing() {
            panic!("{why}");
        }
        // Shims outlive a stopped containerd (their parent): the test process adopts them
        // and reaps them, instead of leaving zombies to an init that may reap late.
        let _ = nix::sys::prctl::set_child_subreaper(true);
        let lan = Lan::new();
        let cp = ControlPlane::start(&lan);
        let dir = cp.dir().join("k8s");
        fs::create_dir_all(dir.join("images")).unwrap();
        let mut cluster = K8sCluster {
            nodes: Vec::new(),
            controllers: Vec::new(),
            images: Vec::new(),
            dir,
            pod_network: pod_network.to_owned(),
            cp,
            lan,
        };
        cluster
            .images
            .push(build_image(&cluster.dir.join("images")));
        cluster.start_controller_manager();
        cluster.start_scheduler();
        cluster
    }

    fn start_controller_manager(&mut self) {
        let dir = self.dir.join("controller-manager");
        fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        self.cp
            .client_cert_kubeconfig("system:kube-controller-manager", &[], &kubeconfig);
        let p = |p: &Path| p.display().to_string();
        let mut cmd = self
            .lan
            .ns()
            .command(kube::bin_dir().join("kube-controller-manager"));
        cmd.arg(format!("--kubeconfig={}", p(&kubeconfig)))
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg("--port=0")
            .arg(format!("--cert-dir={}", p(&dir.join("certs"))))
            .arg("--controllers=*")
            .arg("--allocate-node-cidrs=true")
            .arg(format!("--cluster-cidr={}", self.pod_network))
            .arg("--node-cidr-mask-size=24")
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .arg(format!(
                "--service-account-private-key-file={}",
                p(&self.cp.service_account_key_file())
            ))
            .arg(format!("--root-ca-file={}", p(self.cp.ca_file())))
            .arg("--use-service-account-credentials=true")
            // Its default, /usr/libexec/kubernetes/..., is created on the machine.
            .arg(format!(
                "--flex-volume-plugin-dir={}",
                p(&dir.join("volume-plugins"))
            ))
            .arg(format!(
                "--cluster-signing-cert-file={}",
                p(self.cp.ca_file())
            ))
            .arg(format!(
                "--cluster-signing-key-file={}",
                p(&self.cp.ca_key_file())
            ));
        self.spawn_controller("kube-controller-manager", cmd, &dir);
    }

    fn start_scheduler(&mut self) {
        let dir = self.dir.join("scheduler");
        fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        self.cp
            .client_cert_kubeconfig("system:kube-scheduler", &[], &kubeconfig);
        let mut cmd = self
            .lan
            .ns()
            .command(kube::bin_dir().join("kube-scheduler"));
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg("--port=0")
            .arg(format!("--cert-dir={}", dir.join("certs").display()));
        self.spawn_controller("kube-scheduler", cmd, &dir);
    }

    fn spawn_controller(&mut self, name: &'static str, mut cmd: Command, dir: &Path) {
        let log = log_file(&dir.join(format!("{name}.log")));
        let child = cmd
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        self.controllers.push((name, child));
    }

    /// The log of `kube-controller-manager` or `kube-scheduler`.
    pub fn controller_log(&self, name: &str) -> String {
        let sub = name.trim_start_matches("kube-");
        fs::read_to_string(self.dir.join(sub).join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Panics if the controller-manager or the scheduler has exited.
    fn check_controllers(&mut self) {
        let mut dead = Vec::new();
        for (name, child) in &mut self.controllers {
            if let Ok(Some(status)) = child.try_wait() {
                dead.push(format!("{name} exited ({status})"));
            }
        }
        if !dead.is_empty() {
            let logs: Vec<String> = self
                .controllers
                .iter()
                .map(|(n, _)| {
                    let log = self.controller_log(n);
                    let lines: Vec<&str> = log.lines().collect();
                    format!(
                        "== {n}:\n{}",
                        lines[lines.len().saturating_sub(30)..].join("\n")
                    )
                })
                .collect();
            panic!("{}\n{}", dead.join(", "), logs.join("\n"));
        }
    }

    /// The control plane (kubectl as admin, the CA, the apiserver's URL).
    pub fn cp(&self) -> &ControlPlane {
        &self.cp
    }

    /// The LAN (its namespace is where the control plane runs).
    pub fn lan(&self) -> &Lan {
        &self.lan
    }

    /// The pod network the controller-manager allocates from.
    pub fn pod_network(&self) -> &str {
        &self.pod_network
    }

    /// Where an in-cluster client reaches the apiserver (no kube-proxy, so not through the
    /// `kubernetes` Service): `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`.
    pub fn apiserver_host_port(&self) -> (&'static str, u16) {
        (LAN_IP, PORT)
    }

    /// `kubectl args...` as the admin, which must succeed; its stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.cp.kubectl_ok(args)
    }

    /// `kubectl apply -f -` of `yaml` (or JSON) as the admin.
    pub fn apply(&self, yaml: &str) -> String {
        self.cp.apply(yaml)
    }

    /// Adds node `name`: its namespaces on the LAN (`192.168.50.<11 + index>`), containerd
    /// with the images imported, kubelet registering Node `name`. Returns its index once the
    /// Node exists and has its podCIDR (it is `NotReady` until a conflist is in its conf dir).
    pub fn join(&mut self, name: &str) -> usize {
        self.join_all(&[name])[0]
    }

    /// [`K8sCluster::join`] for several nodes at once: each is set up and its kubelet
    /// started, then all are waited for together (a kubelet takes about 6 s to register, 5 of
    /// them cadvisor's retries of a Docker socket that no node has). Also waits until the
    /// service account `default` of `default` has its token, so that pods can be created.
    pub fn join_all(&mut self, names: &[&str]) -> Vec<usize> {
        let indexes: Vec<usize> = names.iter().map(|n| self.add_node(n)).collect();
        for name in names {
            self.wait_pod_cidr(name, 90);
        }
        // Pods can be created from now on.
        self.wait_default_service_account("default", 60);
        indexes
    }

    /// Sets node `name` up and starts its kubelet; its index.
    fn add_node(&mut self, name: &str) -> usize {
        let index = self.nodes.len();
        let host = u8::try_from(11 + index).expect("at most 244 nodes");
        let node = Node::new();
        let ip = self.lan.attach(&node, host);
        // A default route, as a real node has: flanneld picks the interface (and address) of
        // the default route when no --iface is given, as in kube-flannel.yml.
        node.host().sh(
            "ip",
            &["route", "add", "default", "via", LAN_IP, "dev", "eth0"],
        );
        let mut k = K8sNode {
            name: name.to_owned(),
            ip,
            kubelet: None,
            containerd: None,
            holder: None,
            mntns: String::new(),
            cgroup: unique("cg"),
            adopted: Vec::new(),
            node,
        };
        // In the vector first: a panic from here on tears the node down with the cluster.
        self.nodes.push(None);
        let d = k.dir().to_owned();
        for sub in [
            "cni-conf",
            "cni-bin",
            "run-flannel",
            "var-lib",
            "var-log",
            "sysctl",
            "scratch",
            "home",
            "containerd/root",
            "containerd/state",
        ] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let plugins = plugin_dir();
        for p in NODE_PLUGINS {
            fs::copy(plugins.join(p), k.bin_dir().join(p))
                .unwrap_or_else(|e| panic!("{}/{p}: {e}", plugins.display()));
            fs::set_permissions(k.bin_dir().join(p), fs::Permissions::from_mode(0o755)).unwrap();
        }
        for (key, value) in KUBELET_SYSCTLS {
            fs::write(
                d.join("sysctl").join(key.replace('/', ".")),
                format!("{value}\n"),
            )
            .unwrap();
        }
        make_cgroup(&k.cgroup);
        let holder_log = fs::File::create(d.join("holder.log")).unwrap();
        let mut holder = k
            .netns()
            .command("unshare")
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .args([
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
            ])
            .arg(HOLDER)
            .arg("cni-rs-k8s-node")
            .arg(&d)
            .arg(&k.cgroup)
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(holder_log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run unshare: {e}"));
        let mut line = String::new();
        let _ = BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line);
        k.mntns = fs::read_link(format!("/proc/{}/ns/mnt", holder.id()))
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        k.holder = Some(holder);
        self.nodes[index] = Some(k);
        let k = self.nodes[index].as_mut().unwrap();
        assert!(
            line.trim() == "ready",
            "{name}: cannot make the node's mount namespace: {}",
            fs::read_to_string(d.join("holder.log")).unwrap_or_default()
        );
        start_containerd(k);
        for image in &self.images {
            k.import_image(image);
        }
        let kubeconfig = d.join("kubelet.kubeconfig");
        self.cp.client_cert_kubeconfig(
            &format!("system:node:{name}"),
            &["system:nodes"],
            &kubeconfig,
        );
        start_kubelet(k, &kubeconfig);
        index
    }

    /// Node `i` (in order of joining); panics if it was removed.
    pub fn node(&self, i: usize) -> &K8sNode {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} was removed"))
    }

    /// Node `i`, to stop or start its kubelet.
    pub fn node_mut(&mut self, i: usize) -> &mut K8sNode {
        self.nodes[i]
            .as_mut()
            .unwrap_or_else(|| panic!("node {i} was removed"))
    }

    /// The node named `name`.
    pub fn node_named(&self, name: &str) -> &K8sNode {
        self.nodes()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The nodes still in the cluster.
    pub fn nodes(&self) -> impl Iterator<Item = &K8sNode> {
        self.nodes.iter().flatten()
    }

    /// Removes node `name`: kubelet, every task, containerd and everything under them stopped,
    /// its cgroups, namespaces and directory deleted, then its Node object. Returns what was
    /// left (empty: nothing).
    pub fn remove(&mut self, name: &str) -> Vec<String> {
        let slot = self
            .nodes
            .iter_mut()
            .find(|n| n.as_ref().is_some_and(|n| n.name == name))
            .unwrap_or_else(|| panic!("no node {name}"));
        let mut node = slot.take().unwrap();
        let mut left = node.shut_down();
        let dir = node.dir().to_owned();
        drop(node);
        if dir.exists() {
            left.push(format!("{name}: {} not removed", dir.display()));
        }
        let out = self
            .cp
            .kubectl(&["delete", "node", name, "--ignore-not-found"]);
        if !out.status.success() {
            left.push(format!(
                "kubectl delete node {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        left
    }

    /// Imports an image archive (`podman save`'s docker-archive, or OCI) into every node's
    /// containerd (`ctr -n k8s.io images import`), and into nodes that join later.
    pub fn import_image(&mut self, tar: &Path) {
        for n in self.nodes() {
            n.import_image(tar);
        }
        self.images.push(tar.to_owned());
    }

    /// The local busybox image (also the pause image): `imagePullPolicy: Never`.
    pub fn busybox_image(&self) -> &'static str {
        BUSYBOX_IMAGE
    }

    /// `kubectl get pods -A -o wide`.
    pub fn pods_wide(&self) -> String {
        self.kubectl(&["get", "pods", "-A", "-o", "wide"])
    }

    /// `kubectl get nodes -o wide`.
    pub fn nodes_wide(&self) -> String {
        self.kubectl(&["get", "nodes", "-o", "wide"])
    }

    /// Every Node object (`kubectl get nodes -o json`'s items).
    pub fn node_objects(&self) -> Vec<Value> {
        let list: Value =
            serde_json::from_str(&self.kubectl(&["get", "nodes", "-o", "json"])).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Node `name`'s podCIDR, if it has one.
    pub fn pod_cidr(&self, name: &str) -> Option<String> {
        let out = self
            .cp
            .kubectl(&["get", "node", name, "-o", "jsonpath={.spec.podCIDR}"]);
        let cidr = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !cidr.is_empty()).then_some(cidr)
    }

    /// Each Node's name and whether its `Ready` condition is `True`.
    pub fn readiness(&self) -> BTreeMap<String, bool> {
        self.node_objects()
            .iter()
            .filter_map(|n| {
                let name = n["metadata"]["name"].as_str()?.to_owned();
                let ready = n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                Some((name, ready))
            })
            .collect()
    }

    /// Everything the cluster knows for a failure message: nodes, pods, the ends of the
    /// kubelets' and containerds' logs.
    pub fn diagnostics(&self) -> String {
        let nodes = self.cp.kubectl(&["get", "nodes", "-o", "wide"]);
        let pods = self.cp.kubectl(&["get", "pods", "-A", "-o", "wide"]);
        let mut s = format!(
            "{}{}\n{}{}\n",
            String::from_utf8_lossy(&nodes.stdout),
            String::from_utf8_lossy(&nodes.stderr),
            String::from_utf8_lossy(&pods.stdout),
            String::from_utf8_lossy(&pods.stderr),
        );
        for n in self.nodes() {
            s.push_str(&n.logs());
            s.push('\n');
        }
        s
    }

    /// Waits until Node `name` exists with a podCIDR; returns it.
    pub fn wait_pod_cidr(&mut self, name: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(cidr) = self.pod_cidr(name) {
                return cidr;
            }
            self.check_controllers();
            self.check_kubelet(name);
            assert!(
                Instant::now() < deadline,
                "Node {name} has no podCIDR after {secs} s\n{}\ncontroller-manager:\n{}",
                self.diagnostics(),
                self.controller_log("kube-controller-manager")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Panics if node `name`'s kubelet has exited.
    fn check_kubelet(&mut self, name: &str) {
        let Some(n) = self.nodes.iter_mut().flatten().find(|n| n.name == name) else {
            return;
        };
        if let Some(c) = n.kubelet.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("{name}'s kubelet exited ({status}):\n{}", n.logs());
        }
    }

    /// Waits until `n` Nodes are `Ready`.
    pub fn wait_nodes_ready(&self, n: usize, secs: u64) {
        poll::until(
            &format!("{n} Nodes Ready"),
            Duration::from_secs(secs),
            || self.readiness().values().filter(|r| **r).count() >= n,
            || self.diagnostics(),
        );
    }

    /// Waits until the service account `default` of namespace `ns` has its token Secret (the
    /// ServiceAccount admission of 1.20 refuses pods before).
    pub fn wait_default_service_account(&mut self, ns: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let out = self.cp.kubectl(&[
                "get",
                "serviceaccount",
                "default",
                "-n",
                ns,
                "-o",
                "jsonpath={.secrets[0].name}",
            ]);
            if out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return;
            }
            self.check_controllers();
            assert!(
                Instant::now() < deadline,
                "no token for service account default in {ns} after {secs} s; \
                 controller-manager:\n{}",
                self.controller_log("kube-controller-manager")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The pods of namespace `ns` matching label `selector` (`kubectl get pods -l`).
    pub fn pods(&self, ns: &str, selector: &str) -> Vec<Value> {
        let out = self.kubectl(&["get", "pods", "-n", ns, "-l", selector, "-o", "json"]);
        let list: Value = serde_json::from_str(&out).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until exactly `n` pods of `ns` match `selector` and all of them are Running and
    /// Ready; returns them.
    pub fn wait_pods_running(&self, ns: &str, selector: &str, n: usize, secs: u64) -> Vec<Value> {
        let running = |p: &Value| {
            p["status"]["phase"] == "Running"
                && p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
        };
        let mut pods = Vec::new();
        poll::until(
            &format!("{n} pods {selector} in {ns} Running"),
            Duration::from_secs(secs),
            || {
                pods = self.pods(ns, selector);
                pods.len() == n && pods.iter().all(running)
            },
            || self.diagnostics(),
        );
        pods
    }

    /// Waits until no pod of `ns` matches `selector`. A deleted pod's object goes in 10 to 16 s
    /// (the kubelet deletes it at a status sync once its sandbox is removed and its volumes
    /// unmounted), but in about half the deletions up to a minute later: 1.20's kubelet races
    /// with itself (its container deletor removes the exited container while its pod killer
    /// still looks it up: "Failed killing the pod ... KillContainer ... not found"); the pod
    /// killer's next round (2 s later) stops the sandbox, network included (the CNI DEL), but
    /// the stopped sandbox is removed only by the kubelet's container GC, once a minute. To
    /// wait for the network to be torn down, wait for the node's tasks instead
    /// ([`K8sCluster::wait_tasks_stopped`]).
    pub fn wait_pods_gone(&self, ns: &str, selector: &str, secs: u64) {
        poll::until(
            &format!("no pod {selector} in {ns}"),
            Duration::from_secs(secs),
            || self.pods(ns, selector).is_empty(),
            || self.diagnostics(),
        );
    }

    /// Waits until no task runs in any node's containerd (every pod's sandbox stopped: its
    /// CNI DEL done), which comes well before the deleted pods' objects go (see
    /// [`K8sCluster::wait_pods_gone`]).
    pub fn wait_tasks_stopped(&self, secs: u64) {
        poll::until(
            "no task running on any node",
            Duration::from_secs(secs),
            || self.nodes().all(|n| n.running_tasks().is_empty()),
            || {
                let tasks: Vec<String> = self
                    .nodes()
                    .map(|n| format!("{}: {:?}", n.name, n.running_tasks()))
                    .collect();
                format!("{}\n{}", tasks.join("\n"), self.diagnostics())
            },
        );
    }

    /// `kubectl exec -n ns pod -- cmd...` as the admin (through the apiserver and the node's
    /// kubelet); its output, success or not.
    pub fn exec(&self, ns: &str, pod: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", "-n", ns, pod, "--"];
        args.extend_from_slice(cmd);
        self.cp.kubectl(&args)
    }

    /// RSS in KiB of every process of the cluster, by component: `kube-apiserver`, `etcd`,
    /// the controllers, and per node `<name> kubelet`, `<name> containerd`, `<name> shims+pods`.
    pub fn rss_kib(&self) -> Vec<(String, u64)> {
        let mut v = Vec::new();
        let cp = self.cp.pids();
        if let Some(&a) = cp.first() {
            v.push(("kube-apiserver".to_owned(), rss_kib(a)));
        }
        if let Some(&e) = cp.get(1) {
            v.push(("etcd".to_owned(), rss_kib(e)));
        }
        for (name, c) in &self.controllers {
            v.push(((*name).to_owned(), rss_kib(c.id())));
        }
        for n in self.nodes() {
            let (k, c, rest) = n.rss_kib();
            v.push((format!("{} kubelet", n.name), k));
            v.push((format!("{} containerd", n.name), c));
            v.push((format!("{} shims+pods", n.name), rest));
        }
        v
    }

    /// Every PID the cluster runs now (control plane, controllers, every node's processes).
    pub fn pids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .cp
            .pids()
            .into_iter()
            .chain(self.controllers.iter().map(|(_, c)| c.id()))
            .filter_map(|p| i32::try_from(p).ok())
            .collect();
        for n in self.nodes() {
            v.extend(n.processes());
        }
        v
    }

    /// The directories of the cluster on the machine (the LAN's, with the control plane's,
    /// and every node's); none exists after teardown.
    pub fn dirs(&self) -> Vec<PathBuf> {
        std::iter::once(self.lan.dir().to_owned())
            .chain(self.nodes().map(|n| n.dir().to_owned()))
            .collect()
    }

    /// Every cgroup name of the cluster (one per node).
    pub fn cgroups(&self) -> Vec<String> {
        self.nodes().map(|n| n.cgroup.clone()).collect()
    }

    /// Tears the cluster down in the order that leaves nothing: every kubelet, then each
    /// node's tasks, containerd and what is under it, then the scheduler, the
    /// controller-manager (the apiserver, etcd and the LAN go when the value is dropped).
    /// Returns what was left (empty: nothing).
    pub fn shut_down(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        for n in self.nodes.iter_mut().flatten() {
            n.stop_kubelet();
        }
        for slot in &mut self.nodes {
            if let Some(mut n) = slot.take() {
                left.extend(n.shut_down());
                let dir = n.dir().to_owned();
                drop(n);
                if dir.exists() {
                    left.push(format!("{} not removed", dir.display()));
                }
            }
        }
        while let Some((_, mut c)) = self.controllers.pop() {
            stop(&mut c, Duration::from_secs(5));
        }
        reap_shims();
        left
    }

    /// Tears the cluster down and checks that nothing is left of it: no process, mount,
    /// directory or cgroup, and the machine's state as `before`. Panics naming what is left.
    pub fn tear_down_checked(mut self, before: &MachineState) {
        let (pids, dirs, cgroups) = (self.pids(), self.dirs(), self.cgroups());
        let left = self.shut_down();
        drop(self);
        assert!(left.is_empty(), "teardown left: {left:#?}");
        let left = leftovers(&pids, &dirs, &cgroups);
        assert!(left.is_empty(), "left on the machine: {left:#?}");
        assert_eq!(&MachineState::now(), before, "the machine's state changed");
    }
}

impl Drop for K8sCluster {
    fn drop(&mut self) {
        let left = self.shut_down();
        if !left.is_empty() {
            eprintln!("k8s cluster teardown: {}", left.join("; "));
        }
    }
}

/// containerd's config for node `k`: its own root, state and socket, CNI at the node's
/// usual paths (bound from its dirs).
fn containerd_toml(k: &K8sNode) -> String {
    crate::containerd::config_toml(
        &k.dir().join("containerd"),
        Path::new("/opt/cni/bin"),
        Path::new("/etc/cni/net.d"),
    )
}

fn start_containerd(k: &mut K8sNode) {
    let d = k.dir().join("containerd");
    fs::write(d.join("config.toml"), containerd_toml(k)).unwrap();
    let log = log_file(&k.containerd_log());
    let socket = k.containerd_socket();
    let child = k
        .enter()
        .args(["containerd", "--config"])
        .arg(d.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run containerd: {e}"));
    k.containerd = Some(child);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(c) = k.containerd.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!(
                "{}: containerd exited ({status}):\n{}",
                k.name,
                tail_file(&k.containerd_log(), 30)
            );
        }
        if socket.exists() && k.ctr(&["version"]).status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: containerd did not answer:\n{}",
            k.name,
            tail_file(&k.containerd_log(), 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_kubelet(k: &mut K8sNode, kubeconfig: &Path) {
    let log = log_file(&k.kubelet_log());
    let p = |p: &Path| p.display().to_string();
    let mut cmd = k.enter();
    cmd.arg(kube::bin_dir().join("kubelet"))
        .arg(format!("--kubeconfig={}", p(kubeconfig)))
        .arg("--container-runtime=remote")
        .arg(format!(
            "--container-runtime-endpoint=unix://{}",
            p(&k.containerd_socket())
        ))
        .arg("--root-dir=/var/lib/kubelet")
        .arg("--volume-plugin-dir=/var/lib/kubelet/volume-plugins")
        .arg(format!("--hostname-override={}", k.name))
        .arg(format!("--node-ip={}", k.ip))
        .arg("--cgroup-driver=cgroupfs")
        .arg("--cgroups-per-qos=false")
        .arg("--enforce-node-allocatable=")
        .arg("--fail-swap-on=false")
        .arg(format!("--pod-infra-container-image={PAUSE_IMAGE}"))
        .arg("--eviction-hard=")
        .arg("--image-gc-high-threshold=100")
        .arg("--read-only-port=0")
        .arg("--node-status-update-frequency=4s")
        .arg("--v=1")
        .env("HOME", k.dir().join("home"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    k.kubelet = Some(cmd.spawn().unwrap_or_else(|e| panic!("kubelet: {e}")));
}

/// What a cluster could change on the machine outside its own directories, recorded before
/// and compared after: `/run/netns`, the paths kubelet, containerd and kube-flannel use by
/// default, kubelet's kernel tunables, cgroups named as kubelet or containerd name theirs by
/// default. [`leftovers`] checks the cluster's own processes, mounts, directories and cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineState {
    /// `/run/netns`'s entries.
    pub run_netns: Vec<String>,
    /// Whether each default path exists.
    pub paths: Vec<(String, bool)>,
    /// The kernel tunables kubelet would set.
    pub sysctls: Vec<(String, String)>,
    /// Top-level cgroups named like kubelet's or containerd's defaults.
    pub default_cgroups: Vec<String>,
}

/// Paths a kubelet or containerd writes by default, which the rig moves into each node.
const DEFAULT_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/lib/cni",
    "/var/log/pods",
    "/var/log/containers",
    "/run/containerd",
    "/run/flannel",
    "/opt/cni",
    "/usr/libexec/kubernetes",
    "/etc/kubernetes",
    "/etc/cni/net.d/10-test.conflist",
    "/etc/cni/net.d/10-flannel.conflist",
];

impl MachineState {
    /// Now.
    pub fn now() -> MachineState {
        let mut run_netns: Vec<String> = fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        run_netns.sort();
        let paths = DEFAULT_PATHS
            .iter()
            .map(|p| ((*p).to_owned(), Path::new(p).exists()))
            .collect();
        let sysctls = KUBELET_SYSCTLS
            .iter()
            .map(|(k, _)| {
                let v = fs::read_to_string(format!("/proc/sys/{k}")).unwrap_or_default();
                ((*k).to_owned(), v.trim().to_owned())
            })
            .collect();
        let mut default_cgroups: Vec<String> = ["kubepods", "k8s.io", "kubelet", "system.slice"]
            .iter()
            .flat_map(|n| cgroup_dirs(n))
            .filter(|d| d.exists())
            .map(|d| d.display().to_string())
            .collect();
        default_cgroups.sort();
        MachineState {
            run_netns,
            paths,
            sysctls,
            default_cgroups,
        }
    }
}

/// What of a torn-down cluster is still on the machine: processes among `pids` (zombies
/// included: the rig reaps what it adopted), mounts under `dirs` (in the test process's mount
/// namespace), `dirs` themselves, cgroups named `cgroups` in any hierarchy. Empty: nothing.
/// Take `pids`, `dirs` and `cgroups` from [`K8sCluster::pids`], [`K8sCluster::dirs`] and
/// [`K8sCluster::cgroups`] before the teardown.
pub fn leftovers(pids: &[i32], dirs: &[PathBuf], cgroups: &[String]) -> Vec<String> {
    let mut left = Vec::new();
    for &pid in pids {
        if let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) {
            let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            left.push(format!("process {pid} ({cmd}) {}", state.trim()));
        }
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for dir in dirs {
        let d = dir.display().to_string();
        for line in mounts.lines().filter(|l| l.contains(&d)) {
            left.push(format!("mount {line}"));
        }
        if dir.exists() {
            left.push(format!("directory {d}"));
        }
    }
    for cg in cgroups {
        for d in cgroup_dirs(cg).into_iter().filter(|d| d.exists()) {
            left.push(format!("cgroup {}", d.display()));
        }
    }
    left
}
