//! Real etcd for the node agent's tests: Debian's `etcd-server` started on a temp data dir
//! inside a private "LAN" namespace (so its ports are free by construction and nothing
//! listens in the machine's own namespace), nodes attached to the LAN's bridge by veth pairs,
//! `etcdctl` run against it, certificates made with openssl, and `flanneld` started inside a
//! node. Every process is stopped by PID on drop (SIGTERM, then SIGKILL), every namespace
//! and file goes with its temp dir.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::pki::Ca;
use rig::netns::TestNetns;
use rig::node::Node;
use rig::plugin::plugin_dir;
use rig::poll;

/// The LAN's address (the bridge, where etcd listens).
pub const LAN_IP: &str = "192.168.50.1";

/// Whether etcd and etcdctl are installed; tests record a skip otherwise (setup.sh installs
/// them, so CI never skips).
pub fn available() -> bool {
    Path::new("/usr/bin/etcd").is_file() && Path::new("/usr/bin/etcdctl").is_file()
}

/// [`available`], or a recorded skip of `test` saying what to install.
pub fn available_or_skip(test: &str) -> bool {
    if !available() {
        rig::skip(
            test,
            "etcd-server/etcd-client not installed (scripts/setup.sh installs them)",
        );
        return false;
    }
    true
}

/// Stops a child by PID: SIGTERM, up to `grace` to exit, then SIGKILL. Returns its exit code
/// if it exited by itself after SIGTERM.
pub fn stop(child: &mut Child, grace: Duration) -> Option<i32> {
    if let Ok(Some(status)) = child.try_wait() {
        return status.code();
    }
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(pid, Signal::SIGKILL);
    let _ = child.wait();
    None
}

/// SIGKILL to the child in `slot`, if any, waited for (a crash, for the tests that need one).
pub fn kill_now(slot: &mut Option<Child>) {
    if let Some(mut c) = slot.take() {
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
        let _ = c.wait();
    }
}

/// The free space a tmpfs needs for the LAN's etcd data: etcd 3.4 pre-allocates 64 MB of WAL
/// per member (three in a cluster test), the compaction test writes 20 MB more, and parallel
/// tests each have their own LAN.
const TMPFS_ROOM: u64 = 1 << 30;

/// `/dev/shm` when it has [`TMPFS_ROOM`] free. On tmpfs etcd's fsyncs cost nothing (on a disk
/// shared with parallel tests and their 20 MB compaction runs they made agents wait seconds),
/// but a small one (Docker's default is 64 MiB) fails etcd's first WAL allocation: then the
/// default temp dir.
fn tmpfs_with_room() -> Option<&'static Path> {
    let shm = Path::new("/dev/shm");
    let st = nix::sys::statvfs::statvfs(shm).ok()?;
    let free = st.blocks_available().saturating_mul(st.fragment_size());
    (shm.is_dir() && free >= TMPFS_ROOM).then_some(shm)
}

/// A LAN: a namespace with bridge `br0` at [`LAN_IP`]/24; nodes join it as `eth0`.
#[derive(Debug)]
pub struct Lan {
    ns: TestNetns,
    next: u32,
    dir: tempfile::TempDir,
}

impl Lan {
    /// A new, empty LAN.
    pub fn new() -> Lan {
        rig::reaper::sweep_once();
        let prefix = rig::reaper::owned_prefix("lan");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        let dir = match tmpfs_with_room() {
            Some(shm) => builder.tempdir_in(shm),
            None => builder.tempdir(),
        }
        .unwrap();
        let ns = TestNetns::create(&dir.path().join("lan.netns"));
        ns.sh("ip", &["link", "set", "lo", "up"]);
        ns.sh("ip", &["link", "add", "br0", "type", "bridge"]);
        ns.sh(
            "ip",
            &["addr", "add", &format!("{LAN_IP}/24"), "dev", "br0"],
        );
        ns.sh("ip", &["link", "set", "br0", "up"]);
        Lan { ns, next: 0, dir }
    }

    /// The LAN's namespace (etcd runs here).
    pub fn ns(&self) -> &TestNetns {
        &self.ns
    }

    /// A directory that lives as long as the LAN.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Attaches `node` as `eth0` with address `192.168.50.<host>/24`; returns the address.
    pub fn attach(&mut self, node: &Node, host: u8) -> String {
        self.next += 1;
        let port = format!("lan{}", self.next);
        let lan = self.ns.path_str();
        node.host().sh(
            "ip",
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &lan,
            ],
        );
        self.ns.sh("ip", &["link", "set", &port, "master", "br0"]);
        self.ns.sh("ip", &["link", "set", &port, "up"]);
        let ip = format!("192.168.50.{host}");
        node.host()
            .sh("ip", &["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        node.host().sh("ip", &["link", "set", "eth0", "up"]);
        ip
    }

    /// Attaches `node` as [`Lan::attach`] does and gives `eth0` the IPv6 address
    /// `fd00:5::<host in hex>/64` too, without duplicate address detection (usable at once, and
    /// the test picks unique hosts); returns both addresses.
    pub fn attach_dual_stack(&mut self, node: &Node, host: u8) -> (String, String) {
        let ip = self.attach(node, host);
        let ip6 = format!("fd00:5::{host:x}");
        node.host().sh(
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{ip6}/64"),
                "dev",
                "eth0",
                "nodad",
            ],
        );
        (ip, ip6)
    }
}

impl Default for Lan {
    fn default() -> Self {
        Lan::new()
    }
}

/// Certificates for mutual TLS, made with openssl: a CA, a server certificate for
/// [`LAN_IP`], a client certificate.
#[derive(Debug, Clone)]
pub struct Certs {
    /// CA certificate.
    pub ca: PathBuf,
    /// Server certificate and key.
    pub server: (PathBuf, PathBuf),
    /// Client certificate and key.
    pub client: (PathBuf, PathBuf),
}

impl Certs {
    /// Makes the CA and both certificates in `dir`.
    pub fn make(dir: &Path) -> Certs {
        let ca = Ca::make(dir, "ca.pem", "cni-rs test CA");
        let server = ca.issue(
            dir,
            "server",
            "pem",
            "/CN=etcd",
            &format!(
                "subjectAltName=IP:{LAN_IP},IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
            ),
        );
        let client = ca.issue(
            dir,
            "client",
            "pem",
            "/CN=flanneld",
            "extendedKeyUsage=clientAuth\n",
        );
        Certs {
            ca: ca.cert,
            server: (server.cert, server.key),
            client: (client.cert, client.key),
        }
    }
}

/// One etcd member in the LAN namespace, listening on [`LAN_IP`] (port 2379 for a single
/// member, see [`Etcd::cluster`] for several).
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    tls: Option<Certs>,
    user: Option<String>,
    ns: PathBuf,
    name: String,
    client_port: u16,
    peer_port: u16,
    initial_cluster: String,
}

impl Etcd {
    /// Starts etcd (with mutual TLS when `tls` is given) and waits until it answers.
    pub fn start(lan: &Lan, tls: Option<&Certs>) -> Etcd {
        let peer = format!("http://{LAN_IP}:2380");
        let etcd = Etcd::spawn(lan, tls, "n1", 2379, 2380, format!("n1={peer}"));
        etcd.wait_healthy();
        etcd
    }

    /// Starts an etcd cluster of `n` members (plain HTTP) on [`LAN_IP`], member `i` (named
    /// `m<i>`) on client port `2379 + 10 i` and peer port `2380 + 10 i`, and waits until every
    /// member answers.
    pub fn cluster(lan: &Lan, n: u16) -> Vec<Etcd> {
        let initial = (0..n)
            .map(|i| format!("m{i}=http://{LAN_IP}:{}", 2380 + 10 * i))
            .collect::<Vec<_>>()
            .join(",");
        let members: Vec<Etcd> = (0..n)
            .map(|i| {
                Etcd::spawn(
                    lan,
                    None,
                    &format!("m{i}"),
                    2379 + 10 * i,
                    2380 + 10 * i,
                    initial.clone(),
                )
            })
            .collect();
        for m in &members {
            m.wait_healthy();
        }
        members
    }

    fn spawn(
        lan: &Lan,
        tls: Option<&Certs>,
        name: &str,
        client_port: u16,
        peer_port: u16,
        initial_cluster: String,
    ) -> Etcd {
        let dir = lan
            .dir()
            .join(format!("etcd-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut etcd = Etcd {
            child: None,
            dir,
            tls: tls.cloned(),
            user: None,
            ns: lan.ns().path().to_owned(),
            name: name.to_owned(),
            client_port,
            peer_port,
            initial_cluster,
        };
        etcd.child = Some(
            etcd.command()
                .spawn()
                .expect("etcd (apt-get install etcd-server)"),
        );
        etcd
    }

    /// The etcd command line of this member (its data dir kept across restarts).
    fn command(&self) -> Command {
        let client = self.endpoint();
        let peer = format!("http://{LAN_IP}:{}", self.peer_port);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let ns = TestNetns::existing(&self.ns);
        let mut cmd = ns.command("/usr/bin/etcd");
        cmd.args(["--name", &self.name, "--data-dir"])
            .arg(self.dir.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &self.initial_cluster,
                "--log-outputs",
                "stderr",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(c) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&c.server.0)
                .arg("--key-file")
                .arg(&c.server.1);
            cmd.arg("--trusted-ca-file")
                .arg(&c.ca)
                .arg("--client-cert-auth");
        }
        cmd
    }

    fn wait_healthy(&self) {
        poll::secs(
            &format!("etcd {} to come up", self.name),
            30,
            || self.ctl(&["endpoint", "health"]).status.success(),
            || self.log(),
        );
    }

    /// SIGKILL, waited for: the member is gone at once, its data dir stays.
    pub fn kill(&mut self) {
        kill_now(&mut self.child);
    }

    /// Starts the member again on the same data dir (after [`Etcd::kill`]) and waits until
    /// it answers.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(
            self.command()
                .spawn()
                .expect("etcd (apt-get install etcd-server)"),
        );
        self.wait_healthy();
    }

    /// Its process ID (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The client endpoint.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{LAN_IP}:{}", self.client_port)
    }

    /// etcd's own log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// Runs `etcdctl` (API v3) against this etcd, from the LAN namespace.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_command()
            .args(args)
            .output()
            .expect("etcdctl (apt-get install etcd-client)")
    }

    /// `etcdctl` (API v3) in the LAN namespace with this etcd's endpoint, TLS and user, the
    /// command's own arguments still to add.
    pub(crate) fn ctl_command(&self) -> Command {
        let ns = TestNetns::existing(&self.ns);
        let mut cmd = ns.command("/usr/bin/etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoint());
        if let Some(c) = &self.tls {
            cmd.arg("--cacert")
                .arg(&c.ca)
                .arg("--cert")
                .arg(&c.client.0)
                .arg("--key")
                .arg(&c.client.1);
        }
        if let Some(u) = &self.user {
            cmd.arg("--user").arg(u);
        }
        cmd
    }

    /// This member's directory (its data, log, and files of the tests' watches).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The LAN namespace it runs in.
    pub(crate) fn ns_path(&self) -> &Path {
        &self.ns
    }

    /// `etcdctl` that must succeed; its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Enables authentication with user `root` and `password`; later `etcdctl` calls log in.
    pub fn enable_auth(&mut self, password: &str) {
        self.ctl_ok(&["user", "add", &format!("root:{password}")]);
        self.ctl_ok(&["auth", "enable"]);
        self.user = Some(format!("root:{password}"));
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c, Duration::from_secs(5));
        }
    }
}

/// A `flanneld` process inside a node's host namespace, its stderr kept in a file.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

/// The agent binary (next to the plugins: `CNI_PLUGIN_DIR`, default `target/debug`).
pub fn flanneld_path() -> PathBuf {
    let p = plugin_dir().join("flanneld");
    assert!(
        p.is_file(),
        "{} missing: cargo build --workspace --bins",
        p.display()
    );
    p
}

impl Agent {
    /// Starts `flanneld args...` in `node` with `env`; its log goes to `<node dir>/<log>`.
    pub fn start(node: &Node, log: &str, args: &[String], env: &[(&str, &str)]) -> Agent {
        let mut cmd = node.host().command(flanneld_path());
        cmd.args(args).envs(env.iter().copied());
        Agent::spawn(cmd, &node.dir().join(log))
    }

    /// Starts `cmd` (which execs flanneld in the end, keeping its PID) with its output
    /// appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Agent {
        let log = log.to_owned();
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            log,
        }
    }

    /// Its process ID while it has not been stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `signal` (SIGKILL, SIGSTOP, SIGCONT...) to the running process; after SIGKILL
    /// the process is reaped and the agent counts as stopped.
    pub fn signal(&mut self, signal: Signal) {
        let Some(c) = self.child.as_mut() else { return };
        let _ = kill(Pid::from_raw(c.id() as i32), signal);
        if signal == Signal::SIGKILL {
            let _ = c.wait();
            self.child = None;
        }
    }

    /// SIGTERM and its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        stop(&mut c, Duration::from_secs(10))
    }

    /// Waits until `f` holds (checked every 50 ms) or `secs` pass; panics with the log.
    pub fn wait_for(&mut self, what: &str, secs: u64, f: impl FnMut() -> bool) {
        poll::secs(what, secs, f, || format!("flanneld log:\n{}", self.log()));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A stopped agent (SIGSTOP) must see the SIGTERM.
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT);
            stop(&mut c, Duration::from_secs(5));
        }
    }
}
