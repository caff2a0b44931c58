//! A real Kubernetes control plane for the kube subnet manager's tests: kube-apiserver 1.20.2
//! (built once per machine from Debian's source by `scripts/kube-build.sh`) on its own etcd,
//! both inside a [`Lan`]'s namespace, the apiserver on [`LAN_IP`]:6443 where the LAN's nodes
//! reach it. Everything is TLS and authenticated as in a real cluster: an openssl CA, a
//! serving certificate, service-account signing keys, an admin token in `system:masters`,
//! RBAC. `kubectl` is the cached 1.20.2 one (never the machine's), run in the LAN namespace
//! with an admin kubeconfig the rig writes. Processes are stopped by PID on drop (SIGTERM,
//! then SIGKILL); their logs and every file live in the LAN's temp dir.
//!
//! One control plane per LAN (the apiserver's port and etcd's ports are fixed; each LAN is its
//! own namespace, so tests in parallel do not collide). Drop it before the LAN, which is what
//! declaring it after the LAN does.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::etcd::{LAN_IP, Lan, stop};
use crate::pki::{Ca, openssl};
use rig::netns::TestNetns;

/// The Kubernetes version `scripts/kube-build.sh` builds.
pub const VERSION: &str = "1.20.2";

/// Where `scripts/kube-build.sh` caches the binaries when `CNI_RS_KUBE_CACHE` is not set.
pub const DEFAULT_CACHE: &str = "/var/cache/cni-rs/kubernetes-1.20.2";

/// The apiserver's port on [`LAN_IP`].
pub const PORT: u16 = 6443;

/// The namespace and service account of kube-flannel (`testdata/kube/flannel-rbac.yml`).
pub const FLANNEL_NAMESPACE: &str = "kube-flannel";
/// See [`FLANNEL_NAMESPACE`].
pub const FLANNEL_ACCOUNT: &str = "flannel";

/// The apiserver's own etcd: on the LAN namespace's loopback, on ports of its own (a test may
/// run flanneld's etcd on [`LAN_IP`]:2379 in the same LAN).
const ETCD_CLIENT: &str = "http://127.0.0.1:2479";
const ETCD_PEER: &str = "http://127.0.0.1:2480";

/// How long the apiserver (or its etcd) may take to answer after a start.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The directory of the cached binaries: `CNI_RS_KUBE_BIN`, else `$CNI_RS_KUBE_CACHE/bin`,
/// else [`DEFAULT_CACHE`]`/bin`.
pub fn bin_dir() -> PathBuf {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = set("CNI_RS_KUBE_BIN") {
        return PathBuf::from(dir);
    }
    match set("CNI_RS_KUBE_CACHE") {
        Some(cache) => PathBuf::from(cache).join("bin"),
        None => Path::new(DEFAULT_CACHE).join("bin"),
    }
}

/// Whether kube-apiserver and kubectl are cached and etcd is installed; tests record a skip
/// otherwise (`scripts/test.sh` runs `scripts/kube-build.sh`, so CI never skips).
pub fn available() -> bool {
    let bin = bin_dir();
    bin.join("kube-apiserver").is_file()
        && bin.join("kubectl").is_file()
        && crate::etcd::available()
}

/// Why [`available`] is false, for the skip record.
pub fn missing() -> String {
    format!(
        "Kubernetes {VERSION} binaries not in {} (scripts/kube-build.sh builds them) or etcd \
         not installed (scripts/setup.sh)",
        bin_dir().display()
    )
}

/// A kube-apiserver on its own etcd in a LAN namespace.
#[derive(Debug)]
pub struct ControlPlane {
    apiserver: Option<Child>,
    etcd: Option<Child>,
    dir: PathBuf,
    ca: PathBuf,
    ns: PathBuf,
    admin_token: String,
    next: AtomicU32,
}

/// Random hex of `bytes` bytes, from the kernel.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `cmd` with `input` on its stdin (written from a thread, so a chatty child cannot
/// block on a full stdout while the rig still writes).
fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Opens `path` for appending (a process's log).
pub fn log_file(path: &Path) -> fs::File {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver in `lan`'s namespace and waits until the apiserver's
    /// `/readyz` answers `ok` (its RBAC bootstrap roles are in place then).
    pub fn start(lan: &Lan) -> ControlPlane {
        assert!(available(), "{}", missing());
        let dir = lan.dir().join(format!("kube-{}", std::process::id()));
        assert!(
            !dir.exists(),
            "{} exists: one control plane per LAN",
            dir.display()
        );
        fs::create_dir_all(dir.join("pki")).unwrap();
        fs::create_dir_all(dir.join("home")).unwrap();
        // Values first, processes after: a panic from here on stops what was started.
        let mut cp = ControlPlane {
            apiserver: None,
            etcd: None,
            ca: dir.join("pki").join("ca.crt"),
            dir,
            ns: lan.ns().path().to_owned(),
            admin_token: random_hex(16),
            next: AtomicU32::new(0),
        };
        cp.make_pki();
        fs::write(
            cp.dir.join("tokens.csv"),
            format!("{},admin,admin,\"system:masters\"\n", cp.admin_token),
        )
        .unwrap();
        cp.kubeconfig(&cp.admin_token, &cp.dir.join("admin.kubeconfig"));
        cp.restart_etcd();
        cp.restart();
        cp
    }

    /// The CA, the apiserver's serving certificate and the service-account key pair.
    fn make_pki(&self) {
        let pki = self.dir.join("pki");
        let ca = Ca::make(&pki, "ca.crt", "cni-rs test kubernetes CA");
        ca.issue(
            &pki,
            "apiserver",
            "crt",
            "/CN=kube-apiserver",
            &format!(
                "subjectAltName=IP:{LAN_IP},IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,\
                 DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=serverAuth\n"
            ),
        );
        openssl(
            &pki,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "sa.key",
            ],
        );
        openssl(
            &pki,
            &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        );
    }

    fn ns(&self) -> TestNetns {
        TestNetns::existing(&self.ns)
    }

    fn pki(&self, name: &str) -> PathBuf {
        self.dir.join("pki").join(name)
    }

    fn etcd_command(&self) -> Command {
        let log = log_file(&self.dir.join("etcd.log"));
        let mut cmd = self.ns().command("/usr/bin/etcd");
        cmd.args(["--name", "kube", "--data-dir"])
            .arg(self.dir.join("etcd"))
            .args(["--listen-client-urls", ETCD_CLIENT])
            .args(["--advertise-client-urls", ETCD_CLIENT])
            .args(["--listen-peer-urls", ETCD_PEER])
            .args(["--initial-advertise-peer-urls", ETCD_PEER])
            .args(["--initial-cluster", &format!("kube={ETCD_PEER}")])
            .args(["--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd
    }

    fn apiserver_command(&self) -> Command {
        let log = log_file(&self.dir.join("apiserver.log"));
        let path = |name: &str| self.pki(name).display().to_string();
        let mut cmd = self.ns().command(bin_dir().join("kube-apiserver"));
        cmd.arg(format!("--bind-address={LAN_IP}"))
            .arg(format!("--advertise-address={LAN_IP}"))
            .arg(format!("--secure-port={PORT}"))
            .arg(format!("--etcd-servers={ETCD_CLIENT}"))
            .arg(format!("--tls-cert-file={}", path("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", path("apiserver.key")))
            .arg(format!("--client-ca-file={}", path("ca.crt")))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", path("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                path("sa.key")
            ))
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .arg(format!(
                "--token-auth-file={}",
                self.dir.join("tokens.csv").display()
            ))
            .arg("--authorization-mode=Node,RBAC")
            .arg("--anonymous-auth=false")
            .arg("--kubelet-preferred-address-types=InternalIP")
            // Self-signed certificates would go to /var/run/kubernetes; none are made with
            // --tls-cert-file, but nothing of a test belongs outside its dir.
            .arg(format!("--cert-dir={}", self.dir.join("certs").display()))
            // Dual-stack is alpha in 1.20: without the gate the apiserver keeps only the first
            // of a Node's spec.podCIDRs (it drops the rest silently on create).
            .arg("--feature-gates=IPv6DualStack=true")
            // kube-flannel's DaemonSet and a kubelet's static pods may need it later.
            .arg("--allow-privileged=true")
            .env("HOME", self.dir.join("home"))
            .env("TMPDIR", self.dir.join("home"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd
    }

    /// SIGKILL to the apiserver, waited for; etcd and its data stay.
    pub fn kill(&mut self) {
        crate::etcd::kill_now(&mut self.apiserver);
    }

    /// Starts the apiserver (again, after [`ControlPlane::kill`]) on the same etcd and waits
    /// until it is ready.
    pub fn restart(&mut self) {
        self.kill();
        self.apiserver = Some(
            self.apiserver_command()
                .spawn()
                .unwrap_or_else(|e| panic!("kube-apiserver in {}: {e}", bin_dir().display())),
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.ready() {
                return;
            }
            if let Some(c) = self.apiserver.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "kube-apiserver exited ({status}) before it was ready; its log:\n{}",
                    tail(&self.log(), 60)
                );
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after {READY_TIMEOUT:?}; /readyz?verbose:\n{}\n\
                 its log:\n{}\netcd's log:\n{}",
                self.readyz_verbose(),
                tail(&self.log(), 60),
                tail(&self.etcd_log(), 20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether `/readyz` answers `ok` now.
    pub fn ready(&self) -> bool {
        let (code, body) = self.request_timeout(&self.admin_token, "GET", "/readyz", None, 2);
        code == 200 && body.trim() == "ok"
    }

    fn readyz_verbose(&self) -> String {
        let (code, body) =
            self.request_timeout(&self.admin_token, "GET", "/readyz?verbose", None, 5);
        format!("HTTP {code}\n{body}")
    }

    /// SIGKILL to etcd, waited for; its data dir stays.
    pub fn kill_etcd(&mut self) {
        crate::etcd::kill_now(&mut self.etcd);
    }

    /// Starts etcd (again, after [`ControlPlane::kill_etcd`]) on the same data and waits until
    /// it answers; a running apiserver reconnects by itself.
    pub fn restart_etcd(&mut self) {
        self.kill_etcd();
        self.etcd = Some(
            self.etcd_command()
                .spawn()
                .expect("etcd (apt-get install etcd-server)"),
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.etcdctl(&["endpoint", "health"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the apiserver's etcd did not come up; its log:\n{}",
                tail(&self.etcd_log(), 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `etcdctl` (API v3) against the apiserver's etcd, from the LAN namespace.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.ns()
            .command("/usr/bin/etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", ETCD_CLIENT])
            .args(args)
            .output()
            .expect("etcdctl (apt-get install etcd-client)")
    }

    fn etcdctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// etcd's current revision (the newest resourceVersion the apiserver can have given out).
    pub fn etcd_revision(&self) -> i64 {
        let status: Value =
            serde_json::from_str(&self.etcdctl_ok(&["endpoint", "status", "-w", "json"])).unwrap();
        status[0]["Status"]["header"]["revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("no revision in etcdctl endpoint status: {status}"))
    }

    /// Compacts the etcd history up to its current revision and returns that revision: every
    /// older resourceVersion is gone from etcd, so a watch resuming from one after an apiserver
    /// restart gets "too old resource version" (410 Gone). On the wire that is no HTTP 410: the
    /// watch answers 200 and streams one event, `{"type":"ERROR","object":{"kind":"Status",
    /// ...,"reason":"Expired","code":410}}`, then ends. (With the apiserver's watch cache, on
    /// by default, a restart alone already does it for any resourceVersion older than the
    /// cache's first list; the compaction makes it hold for reads that go to etcd too.)
    pub fn compact(&self) -> i64 {
        let rev = self.etcd_revision();
        self.etcdctl_ok(&["compact", &rev.to_string()]);
        rev
    }

    /// The PIDs of its processes that run (apiserver, etcd).
    pub fn pids(&self) -> Vec<u32> {
        self.apiserver
            .iter()
            .chain(&self.etcd)
            .map(Child::id)
            .collect()
    }

    /// The apiserver's PID while it runs.
    pub fn apiserver_pid(&self) -> Option<u32> {
        self.apiserver.as_ref().map(Child::id)
    }

    /// The apiserver's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default()
    }

    /// etcd's log so far.
    pub fn etcd_log(&self) -> String {
        fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// The CA that signed the apiserver's certificate (also its `--client-ca-file`).
    pub fn ca_file(&self) -> &Path {
        &self.ca
    }

    /// The CA's private key (it signs the client certificates of
    /// [`ControlPlane::client_cert_kubeconfig`]; a controller-manager's CSR signer may use it).
    pub fn ca_key_file(&self) -> PathBuf {
        self.pki("ca.key")
    }

    /// The service-account signing key (the apiserver's `--service-account-signing-key-file`,
    /// a controller-manager's `--service-account-private-key-file`).
    pub fn service_account_key_file(&self) -> PathBuf {
        self.pki("sa.key")
    }

    /// The service-account public key (the apiserver's `--service-account-key-file`).
    pub fn service_account_public_key_file(&self) -> PathBuf {
        self.pki("sa.pub")
    }

    /// Writes a kubeconfig at `path` whose user is a client certificate signed by the CA:
    /// common name `user`, one organization per entry of `groups` (what the apiserver takes
    /// as user and groups: `system:node:<name>` in `system:nodes` for a kubelet, which the
    /// Node authorizer then governs; `system:kube-controller-manager`, `system:kube-scheduler`
    /// for the bootstrap roles of those). The key and certificate lie next to `path`.
    pub fn client_cert_kubeconfig(&self, user: &str, groups: &[&str], path: &Path) {
        let dir = path.parent().unwrap();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let subject: String = std::iter::once(format!("/CN={user}"))
            .chain(groups.iter().map(|g| format!("/O={g}")))
            .collect();
        let ca = Ca {
            cert: self.ca.clone(),
            key: self.ca_key_file(),
        };
        let issued = ca.issue(
            dir,
            &stem,
            "crt",
            &subject,
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
        );
        let (crt, key) = (issued.cert, issued.key);
        let config = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: cni-rs-test\n\
             \x20 cluster:\n\
             \x20   server: {server}\n\
             \x20   certificate-authority: {ca}\n\
             users:\n\
             - name: {user}\n\
             \x20 user:\n\
             \x20   client-certificate: {crt}\n\
             \x20   client-key: {key}\n\
             contexts:\n\
             - name: cni-rs-test\n\
             \x20 context:\n\
             \x20   cluster: cni-rs-test\n\
             \x20   user: {user}\n\
             current-context: cni-rs-test\n",
            server = self.server(),
            ca = self.ca.display(),
            crt = crt.display(),
            key = key.display(),
        );
        fs::write(path, config).unwrap();
    }

    /// The admin's kubeconfig (bearer token, `system:masters`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// The apiserver's URL.
    pub fn server(&self) -> String {
        format!("https://{LAN_IP}:{PORT}")
    }

    /// The admin's bearer token (user `admin`, group `system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A directory that lives as long as the control plane (its files, logs, kubeconfigs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `kubectl` 1.20.2 (the cached one) with the kubeconfig file `kubeconfig`, run in the
    /// LAN namespace, its caches in the control plane's dir; the command's own arguments still
    /// to add.
    pub fn kubectl_command(&self, kubeconfig: &Path) -> Command {
        let mut cmd = self.ns().command(bin_dir().join("kubectl"));
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!(
                "--cache-dir={}",
                self.dir.join("kubectl-cache").display()
            ))
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.join("home"));
        cmd
    }

    /// `kubectl args...` as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(&self.dir.join("admin.kubeconfig"))
            .args(args)
            .output()
            .unwrap()
    }

    /// `kubectl args...` as the admin, which must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl args...` as the admin with `input` on stdin, which must succeed; its stdout.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> String {
        let mut cmd = self.kubectl_command(&self.dir.join("admin.kubeconfig"));
        cmd.args(args);
        let out = run_with_stdin(cmd, input.as_bytes());
        assert!(
            out.status.success(),
            "kubectl {args:?} with\n{input}\nfailed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl args...` as the admin with `input` on stdin, started and not waited for.
    pub fn kubectl_spawn_stdin(&self, args: &[&str], input: &str) -> Result<Child, String> {
        let mut cmd = self.kubectl_command(&self.dir.join("admin.kubeconfig"));
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| format!("kubectl: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|e| format!("kubectl's stdin: {e}"))?;
        }
        Ok(child)
    }

    /// `kubectl apply -f -` of `yaml` (or JSON) as the admin; its stdout.
    pub fn apply(&self, yaml: &str) -> String {
        self.kubectl_stdin(&["apply", "-f", "-"], yaml)
    }

    /// kube-flannel.yml's RBAC (`testdata/kube/flannel-rbac.yml`): namespace `kube-flannel`,
    /// service account `flannel`, cluster role and binding `flannel`.
    pub fn install_flannel_rbac(&self) {
        self.apply(include_str!("../../testdata/kube/flannel-rbac.yml"));
    }

    /// A token of kube-flannel's service account from the TokenRequest API, valid for a day.
    pub fn flannel_token(&self) -> String {
        let request = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": { "expirationSeconds": 86400 },
        });
        let file = self.dir.join("token-request.json");
        fs::write(&file, request.to_string()).unwrap();
        let uri = format!(
            "/api/v1/namespaces/{FLANNEL_NAMESPACE}/serviceaccounts/{FLANNEL_ACCOUNT}/token"
        );
        let file = file.display().to_string();
        let out = self.kubectl_ok(&["create", "--raw", &uri, "-f", &file]);
        let response: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("TokenRequest answered {out:?}: {e}"));
        response["status"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in the TokenRequest's answer: {response}"))
            .to_owned()
    }

    /// Writes a kubeconfig for `token` at `path`: this apiserver, its CA file
    /// (`certificate-authority`), the token as the user's credentials.
    pub fn kubeconfig(&self, token: &str, path: &Path) {
        let config = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: cni-rs-test\n\
             \x20 cluster:\n\
             \x20   server: {server}\n\
             \x20   certificate-authority: {ca}\n\
             users:\n\
             - name: test-user\n\
             \x20 user:\n\
             \x20   token: {token}\n\
             contexts:\n\
             - name: cni-rs-test\n\
             \x20 context:\n\
             \x20   cluster: cni-rs-test\n\
             \x20   user: test-user\n\
             current-context: cni-rs-test\n",
            server = self.server(),
            ca = self.ca.display(),
        );
        fs::write(path, config).unwrap();
    }

    /// A new directory with `token`, `ca.crt` and `namespace` (`kube-flannel`), the files
    /// Kubernetes mounts at `/var/run/secrets/kubernetes.io/serviceaccount` for a pod.
    pub fn service_account_dir(&self, token: &str) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!("serviceaccount-{n}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("token"), token).unwrap();
        fs::copy(&self.ca, dir.join("ca.crt")).unwrap();
        fs::write(dir.join("namespace"), FLANNEL_NAMESPACE).unwrap();
        dir
    }

    /// Creates Node `name` by hand (no kubelet), its `spec.podCIDR` the first of
    /// `pod_cidrs` and `spec.podCIDRs` all of them (none: no podCIDR yet), with `annotations`.
    pub fn create_node(&self, name: &str, pod_cidrs: &[&str], annotations: &[(&str, &str)]) {
        if let Err(e) = self.try_create_node(name, pod_cidrs, annotations) {
            panic!("creating Node {name}: {e}");
        }
    }

    /// [`ControlPlane::create_node`], or the apiserver's refusal.
    pub fn try_create_node(
        &self,
        name: &str,
        pod_cidrs: &[&str],
        annotations: &[(&str, &str)],
    ) -> Result<(), String> {
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        let mut node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": name, "annotations": annotations },
            "spec": {},
        });
        if let Some(first) = pod_cidrs.first() {
            node["spec"] = json!({ "podCIDR": first, "podCIDRs": pod_cidrs });
        }
        let mut cmd = self.kubectl_command(&self.dir.join("admin.kubeconfig"));
        cmd.args(["create", "-f", "-"]);
        let out = run_with_stdin(cmd, node.to_string().as_bytes());
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Deletes Node `name`.
    pub fn delete_node(&self, name: &str) {
        self.kubectl_ok(&["delete", "node", name]);
    }

    /// Node `name` as the admin sees it (`kubectl get node -o json`).
    pub fn node_json(&self, name: &str) -> Value {
        let out = self.kubectl_ok(&["get", "node", name, "-o", "json"]);
        serde_json::from_str(&out).unwrap()
    }

    /// An HTTPS request to the apiserver with `curl` from the LAN namespace, as the holder of
    /// bearer `token`: `method` on `path` (`/api/v1/nodes?...`), with `body` as
    /// `(content type, data)`. Returns the HTTP status and the body.
    pub fn request(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
    ) -> (u16, String) {
        self.request_timeout(token, method, path, body, 30)
    }

    fn request_timeout(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
        secs: u32,
    ) -> (u16, String) {
        let mut cmd = self.ns().command("curl");
        cmd.args(["-sS", "-X", method, "--max-time", &secs.to_string()])
            .arg("--cacert")
            .arg(&self.ca)
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["-w", "\n%{http_code}"]);
        if let Some((content_type, _)) = body {
            cmd.args(["-H", &format!("Content-Type: {content_type}")])
                .args(["--data-binary", "@-"]);
        }
        cmd.arg(format!("{}{path}", self.server()));
        let out = run_with_stdin(cmd, body.map_or("", |(_, data)| data).as_bytes());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (text, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        (code.trim().parse().unwrap_or(0), text.to_owned())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            stop(&mut c, Duration::from_secs(5));
        }
        if let Some(mut c) = self.etcd.take() {
            stop(&mut c, Duration::from_secs(5));
        }
    }
}
