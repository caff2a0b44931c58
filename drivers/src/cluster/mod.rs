//! A flannel cluster on one machine: an underlay LAN (a namespace with a bridge), one real
//! etcd on it holding the network config, node namespaces each running our `flanneld` with
//! the flags ansible-role-flanneld's unit gives it (mutual TLS, its etcd prefix, `--iface`,
//! `--public-ip`, `--ip-masq`, the subnet file in the node's temp dir), and pods made by our
//! CNI plugins through kube-flannel's conflist. A node can also be a "Go node": its lease
//! written with etcdctl in Go flanneld's exact format on a 24 h etcd lease, its kernel side
//! (vxlan device, neighbour, FDB and route entries, or host-gw routes) set up by hand as Go
//! flanneld sets it up, so Go and Rust nodes share the cluster.
//!
//! `tests/overlay.rs` runs the checks on it, the `cluster-demo` binary (`scripts/demo.sh`)
//! shows the same steps. Everything lives in the rig's namespaces and temp dirs and goes on
//! drop; processes are stopped by PID.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

pub mod kube;
pub mod wireguard;

pub use kube::KubeControl;

use crate::etcd::{Agent, Certs, Etcd, Lan};
use rig::chain::Chain;
use rig::flannel::conflist;
use rig::node::Node;
use rig::pod::Pod;
use rig::traffic::{Server, tcp_get, tcp_peer_server, tcp_server};

/// ansible-role-flanneld's `flannel_etcd_prefix`.
pub const PREFIX: &str = "/kubernetes-cluster/network";
/// The VNI of the vxlan config, and its device.
pub const VNI: u32 = 100;
/// The vxlan device flanneld creates for [`VNI`].
pub const VXLAN_DEV: &str = "flannel.100";
/// The "internet" host on the LAN: no route to the pods, so only masqueraded traffic returns.
pub const INTERNET_IP: &str = "192.168.50.254";
/// The hostPort the first pod of the first node maps to its port 80.
pub const HOST_PORT: u16 = 8080;
/// The subnet Go node `k` (1, 2, ...) holds: `10.99.0.0/20` (the config's SubnetMax), then
/// downwards; our agents pick among the first 100 free ones from SubnetMin, never these.
pub fn go_subnet(k: usize) -> String {
    format!("10.{}.0.0/20", 100 - k)
}

/// Go node `k`'s VTEP MAC (locally administered unicast, as Go's `pkg/mac` makes them).
pub fn go_vtep_mac(k: usize) -> String {
    format!("0a:47:6f:00:00:{k:02x}")
}

/// The backend the network config asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Routes to each peer's subnet via its PublicIP (all nodes on one link).
    HostGw,
    /// The vxlan overlay, VNI 100 on port 8472.
    Vxlan,
    /// WireGuard between the nodes (`flannel-wg`, port 51820).
    Wireguard,
}

impl Backend {
    /// `Backend.Type`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::HostGw => "host-gw",
            Backend::Vxlan => "vxlan",
            Backend::Wireguard => "wireguard",
        }
    }

    /// `host-gw` or `vxlan`.
    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "host-gw" => Some(Backend::HostGw),
            "vxlan" => Some(Backend::Vxlan),
            "wireguard" => Some(Backend::Wireguard),
            _ => None,
        }
    }

    /// The network config (`<prefix>/config`), as the seed puts it.
    pub fn network_config(self) -> String {
        let backend = match self {
            Backend::HostGw => r#"{"Type":"host-gw"}"#.to_owned(),
            Backend::Vxlan => format!(r#"{{"Type":"vxlan","VNI":{VNI},"Port":8472}}"#),
            Backend::Wireguard => r#"{"Type":"wireguard"}"#.to_owned(),
        };
        format!(
            r#"{{"Network":"10.0.0.0/8","SubnetLen":20,"SubnetMin":"10.10.0.0","SubnetMax":"10.99.0.0","Backend":{backend}}}"#
        )
    }

    /// `FLANNEL_MTU` on a 1500-byte underlay.
    pub fn mtu(self) -> u32 {
        match self {
            Backend::HostGw => 1500,
            Backend::Vxlan => 1450,
            Backend::Wireguard => 1420,
        }
    }
}

/// flanneld refused the config's backend; the log line saying so.
#[derive(Debug, Clone)]
pub struct Unsupported(pub String);

/// One lease under `<prefix>/subnets/`, as etcdctl shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseEntry {
    /// `10.10.16.0-20`.
    pub key: String,
    /// `10.10.16.0/20`.
    pub subnet: String,
    /// The value, as stored.
    pub value: String,
    /// Its `PublicIP`.
    pub public_ip: String,
    /// Its `BackendData.VtepMAC`, if any.
    pub vtep_mac: Option<String>,
    /// Its `BackendData.PublicKey` (wireguard), if any.
    pub public_key: Option<String>,
}

impl LeaseEntry {
    /// What identifies the peer to its backend besides its address: the VTEP MAC, or the
    /// WireGuard public key.
    fn identity(&self) -> Option<String> {
        self.vtep_mac.clone().or_else(|| self.public_key.clone())
    }
}

/// A node of the cluster.
#[derive(Debug)]
pub struct Member {
    /// `node1`, `node2`, ...
    pub name: String,
    /// Its LAN address (PublicIP).
    pub ip: String,
    /// Its subnet, `10.10.16.0/20`.
    pub subnet: String,
    /// Its VTEP MAC (vxlan).
    pub vtep_mac: Option<String>,
    /// A Go node: lease and kernel side written by hand, no agent of ours.
    pub go: bool,
    /// Its pods, in order of creation.
    pub pods: Vec<Pod>,
    /// Our flanneld (none for a Go node, or once stopped).
    pub agent: Option<Agent>,
    /// A Go node's WireGuard device (wireguard-go), with the wireguard backend.
    pub go_wg: Option<wireguard::GoDevice>,
    chain: Chain,
    /// What a Go node's hand-made kernel side holds: peer subnet → (PublicIP, VtepMAC or
    /// public key).
    go_peers: BTreeMap<String, (String, Option<String>)>,
    // Last: its namespaces and temp dir go after the pods and the agent.
    /// The node's namespace and temp dir.
    pub node: Node,
}

impl Member {
    /// `node1/pod2`.
    pub fn pod_label(&self, p: usize) -> String {
        format!("{}/pod{}", self.name, p + 1)
    }

    /// Its subnet.env.
    pub fn subnet_env(&self) -> String {
        fs::read_to_string(self.node.dir().join("subnet.env")).unwrap_or_default()
    }

    /// `ip -4 route` of the node.
    pub fn routes(&self) -> String {
        self.node.host().sh("ip", &["-4", "route"])
    }
}

/// Where the cluster keeps its leases: etcd, or the Kubernetes API.
#[derive(Debug)]
pub enum Control {
    /// etcd with mutual TLS, the network config under [`PREFIX`].
    Etcd {
        /// The etcd member on the LAN.
        etcd: Etcd,
        /// Its certificates.
        certs: Certs,
    },
    /// kube-apiserver; each node's lease is its Node's podCIDR and annotations.
    Kube(KubeControl),
}

/// The whole cluster; dropping it stops every process and removes every namespace and file.
#[derive(Debug)]
pub struct Cluster {
    /// The nodes, `members[0]` is `node1`.
    pub members: Vec<Member>,
    internet: Option<(Server, Node)>,
    /// The store of the leases.
    pub control: Control,
    /// The underlay.
    pub lan: Lan,
    /// The config's backend.
    pub backend: Backend,
}

/// The agent's stderr line refusing a backend, if it has one.
fn unsupported_line(log: &str) -> Option<String> {
    log.lines()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("backend")
                && (l.contains("not supported")
                    || l.contains("unsupported")
                    || l.contains("unknown"))
        })
        .map(|l| l.trim().to_owned())
}

/// `10.10.16.0/20` → `10.10.16.0` (vxlan's gateway for the subnet).
fn base(subnet: &str) -> &str {
    subnet.split('/').next().unwrap()
}

impl Cluster {
    /// The LAN, TLS certificates, etcd with the network config for `backend`; no nodes yet.
    pub fn start(backend: Backend) -> Cluster {
        let lan = Lan::new();
        let certs = Certs::make(&lan.dir().join("pki"));
        let etcd = Etcd::start(&lan, Some(&certs));
        etcd.ctl_ok(&[
            "put",
            &format!("{PREFIX}/config"),
            &backend.network_config(),
        ]);
        Cluster {
            members: Vec::new(),
            internet: None,
            control: Control::Etcd { etcd, certs },
            lan,
            backend,
        }
    }

    /// The etcd of an etcd cluster.
    pub fn etcd(&self) -> &Etcd {
        match &self.control {
            Control::Etcd { etcd, .. } => etcd,
            Control::Kube(_) => panic!("a kube cluster has no etcd of flannel's"),
        }
    }

    /// The flags of `flanneld` on a node, as ansible-role-flanneld's `flanneld.service`
    /// passes them (its `EnvironmentFile` values in place), with the node's paths; in a
    /// kube cluster, as kube-flannel's DaemonSet passes them.
    pub fn agent_args(&self, node: &Node, ip: &str) -> Vec<String> {
        let p = |p: &std::path::Path| p.display().to_string();
        let (etcd, certs) = match &self.control {
            Control::Etcd { etcd, certs } => (etcd, certs),
            Control::Kube(k) => return k.agent_args(node),
        };
        vec![
            format!("--etcd-cafile={}", p(&certs.ca)),
            format!("--etcd-certfile={}", p(&certs.client.0)),
            format!("--etcd-keyfile={}", p(&certs.client.1)),
            format!("--etcd-prefix={PREFIX}"),
            format!("--etcd-endpoints={}", etcd.endpoint()),
            "--iface=eth0".to_owned(),
            format!("--public-ip={ip}"),
            format!("--log_dir={}", p(&node.dir().join("log"))),
            format!("--subnet-file={}", p(&node.dir().join("subnet.env"))),
            "--ip-masq=true".to_owned(),
            "--healthz-ip=0.0.0.0".to_owned(),
            "--healthz-port=0".to_owned(),
        ]
    }

    /// A node on the LAN: ours are `node<n>` at 192.168.50.1<n>, Go nodes `go-node<n>` at
    /// 192.168.50.2<n>.
    fn new_member(&mut self, go: bool) -> (Node, String, String, usize) {
        let n = self.members.iter().filter(|m| m.go == go).count() + 1;
        let node = Node::new();
        let host = u8::try_from(if go { 20 + n } else { 10 + n }).unwrap();
        let ip = self.lan.attach(&node, host);
        let name = if go {
            format!("go-node{n}")
        } else {
            format!("node{n}")
        };
        (node, ip, name, n)
    }

    /// A new node running our flanneld; returns its index once it wrote subnet.env, or why
    /// flanneld refused the backend. In a kube cluster its Node is registered first (with
    /// the next podCIDR) and the agent reaches the API by kubeconfig.
    pub fn join(&mut self) -> Result<usize, Unsupported> {
        self.join_as(false)
    }

    /// [`Cluster::join`] with the agent in-cluster, as in kube-flannel's DaemonSet: the
    /// service account's files at /var/run/secrets/kubernetes.io/serviceaccount (a private
    /// mount namespace), `KUBERNETES_SERVICE_HOST`/`_PORT`, and `POD_NAME`/`POD_NAMESPACE` of
    /// a Pod bound to the node.
    pub fn join_in_cluster(&mut self) -> Result<usize, Unsupported> {
        self.join_as(true)
    }

    fn join_as(&mut self, in_cluster: bool) -> Result<usize, Unsupported> {
        let (node, ip, name, n) = self.new_member(false);
        fs::create_dir_all(node.dir().join("log")).unwrap();
        let args = self.agent_args(&node, &ip);
        let mut agent = match &self.control {
            // Its own /run: the userspace device's control socket and the key file.
            Control::Etcd { .. } if self.backend == Backend::Wireguard => {
                let mut cmd = wireguard::with_own_run(&node, crate::etcd::flanneld_path());
                cmd.args(&args);
                Agent::spawn(cmd, &node.dir().join("flanneld.log"))
            }
            Control::Etcd { .. } => Agent::start(&node, "flanneld.log", &args, &[]),
            Control::Kube(k) => k.start_agent(&node, &name, n, &args, in_cluster),
        };
        let env = node.dir().join("subnet.env");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !env.exists() {
            // A backend it refuses: logged and retried (the config may be fixed in etcd).
            if let Some(line) = unsupported_line(&agent.log()) {
                return Err(Unsupported(line));
            }
            if !agent.running() {
                panic!("flanneld on {name} exited:\n{}", agent.log());
            }
            assert!(
                Instant::now() < deadline,
                "flanneld on {name} wrote no subnet.env in 30 s:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = fs::read_to_string(&env).unwrap();
        let subnet = cni_common::subnet_env::parse(&text)
            .ok()
            .and_then(|e| e.subnet_v4)
            .unwrap_or_else(|| panic!("no FLANNEL_SUBNET in {text}"))
            .to_string();
        let vtep_mac = (self.backend == Backend::Vxlan).then(|| link_mac(&node, VXLAN_DEV));
        if self.backend == Backend::Wireguard {
            // The device and its control socket come with the backend, before subnet.env.
            assert!(
                wireguard::dump(&node).is_some(),
                "no `wg show {}` on {name}:\n{}",
                wireguard::WG_DEV,
                agent.log()
            );
        }
        let chain = Chain::new(conflist(&node, "0.3.1"));
        self.members.push(Member {
            name,
            ip,
            subnet,
            vtep_mac,
            go: false,
            pods: Vec::new(),
            agent: Some(agent),
            go_wg: None,
            chain,
            go_peers: BTreeMap::new(),
            node,
        });
        self.sync_go_nodes();
        Ok(self.members.len() - 1)
    }

    /// A Go node: its lease put with etcdctl in Go flanneld's exact format on a 24 h etcd
    /// lease, its kernel side and subnet.env made by hand as Go flanneld makes them; its
    /// peers are programmed by hand too ([`Cluster::sync_go_nodes`]).
    pub fn join_go_node(&mut self) -> usize {
        let (node, ip, name, k) = self.new_member(true);
        let subnet = go_subnet(k);
        let go_wg = (self.backend == Backend::Wireguard)
            .then(|| wireguard::GoDevice::start(&node, base(&subnet), "10.0.0.0/8"));
        // Its identity in the lease: the VTEP MAC, or the WireGuard public key.
        let mac = match &go_wg {
            Some(d) => d.public_key.clone(),
            None => go_vtep_mac(k),
        };
        let host = node.host();
        let value = self.go_lease_value(&ip, &mac);
        if self.backend == Backend::Vxlan {
            // Go's newVXLANDevice + configure: MAC chosen before creation, no learning, MTU
            // minus 50, the subnet's .0/32 on the device, up.
            host.sh(
                "ip",
                &[
                    "link",
                    "add",
                    VXLAN_DEV,
                    "address",
                    &mac,
                    "type",
                    "vxlan",
                    "id",
                    &VNI.to_string(),
                    "local",
                    &ip,
                    "dev",
                    "eth0",
                    "dstport",
                    "8472",
                    "nolearning",
                ],
            );
            host.sh("ip", &["link", "set", VXLAN_DEV, "mtu", "1450", "up"]);
            host.sh(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{}/32", base(&subnet)),
                    "dev",
                    VXLAN_DEV,
                ],
            );
        }
        match &self.control {
            Control::Etcd { etcd, .. } => {
                let granted = etcd.ctl_ok(&["lease", "grant", "86400"]);
                let id = granted.split_whitespace().nth(1).unwrap().to_owned();
                etcd.ctl_ok(&[
                    "put",
                    "--lease",
                    &id,
                    &format!("{PREFIX}/subnets/{}", subnet.replace('/', "-")),
                    &value,
                ]);
            }
            Control::Kube(k) => k.register_go_node(&name, &subnet, &ip, &mac, self.backend),
        }
        fs::write(
            node.dir().join("subnet.env"),
            format!(
                "FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET={}/20\nFLANNEL_MTU={}\nFLANNEL_IPMASQ=true\n",
                Ipv4Addr::from(u32::from(base(&subnet).parse::<Ipv4Addr>().unwrap()) + 1),
                self.backend.mtu()
            ),
        )
        .unwrap();
        let chain = Chain::new(conflist(&node, "0.3.1"));
        self.members.push(Member {
            name,
            ip,
            subnet,
            vtep_mac: (self.backend == Backend::Vxlan).then_some(mac),
            go: true,
            pods: Vec::new(),
            agent: None,
            go_wg,
            chain,
            go_peers: BTreeMap::new(),
            node,
        });
        self.sync_go_nodes();
        self.members.len() - 1
    }

    /// A Go node's lease value, byte for byte as Go flanneld writes it (`vtep_mac` is the
    /// WireGuard public key with that backend).
    pub fn go_lease_value(&self, ip: &str, vtep_mac: &str) -> String {
        match self.backend {
            Backend::HostGw => {
                format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#)
            }
            Backend::Vxlan => format!(
                r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":{VNI},"VtepMAC":"{vtep_mac}"}}}}"#
            ),
            Backend::Wireguard => format!(
                r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"wireguard","BackendData":{{"PublicKey":"{vtep_mac}","Port":{}}}}}"#,
                wireguard::WG_PORT
            ),
        }
    }

    /// What a Go node's flanneld does on lease events, by hand: every lease in etcd but its
    /// own gets its entries (vxlan: neighbour, FDB, onlink route, in Go's order; host-gw: a
    /// route via the PublicIP); entries of leases gone are deleted.
    pub fn sync_go_nodes(&mut self) {
        let leases = self.leases();
        let backend = self.backend;
        for m in self.members.iter_mut().filter(|m| m.go) {
            let want: BTreeMap<String, (String, Option<String>)> = leases
                .iter()
                .filter(|l| l.subnet != m.subnet)
                .map(|l| (l.subnet.clone(), (l.public_ip.clone(), l.identity())))
                .collect();
            let host = m.node.host();
            for (subnet, (ip, mac)) in &m.go_peers {
                if want.get(subnet) == Some(&(ip.clone(), mac.clone())) {
                    continue;
                }
                if backend == Backend::Wireguard {
                    if let Some(key) = mac {
                        wireguard::remove_go_peer(&m.node, key);
                    }
                    continue;
                }
                let _ = host.run("ip", &["route", "del", subnet]);
                if let Some(mac) = mac {
                    let _ = host.run("ip", &["neigh", "del", base(subnet), "dev", VXLAN_DEV]);
                    let _ = host.run(
                        "bridge",
                        &["fdb", "del", mac, "dev", VXLAN_DEV, "dst", ip, "self"],
                    );
                }
            }
            for (subnet, (ip, mac)) in &want {
                if m.go_peers.get(subnet) == Some(&(ip.clone(), mac.clone())) {
                    continue;
                }
                match (backend, mac) {
                    (Backend::Vxlan, Some(mac)) => {
                        let gw = base(subnet);
                        host.sh(
                            "ip",
                            &[
                                "neigh",
                                "replace",
                                gw,
                                "lladdr",
                                mac,
                                "dev",
                                VXLAN_DEV,
                                "nud",
                                "permanent",
                            ],
                        );
                        host.sh(
                            "bridge",
                            &[
                                "fdb",
                                "replace",
                                mac,
                                "dev",
                                VXLAN_DEV,
                                "dst",
                                ip,
                                "self",
                                "permanent",
                            ],
                        );
                        host.sh(
                            "ip",
                            &[
                                "route", "replace", subnet, "via", gw, "dev", VXLAN_DEV, "onlink",
                            ],
                        );
                    }
                    (Backend::Vxlan, None) | (Backend::Wireguard, None) => {}
                    (Backend::Wireguard, Some(key)) => {
                        let endpoint = format!("{ip}:{}", wireguard::WG_PORT);
                        wireguard::set_go_peer(&m.node, key, &endpoint, subnet);
                    }
                    (Backend::HostGw, _) => {
                        host.sh(
                            "ip",
                            &["route", "replace", subnet, "via", ip, "dev", "eth0"],
                        );
                    }
                }
            }
            m.go_peers = want;
        }
    }

    /// Every lease under `<prefix>/subnets/`, or every managed Node's.
    pub fn leases(&self) -> Vec<LeaseEntry> {
        let etcd = match &self.control {
            Control::Etcd { etcd, .. } => etcd,
            Control::Kube(k) => return k.leases(),
        };
        let out = etcd.ctl_ok(&["get", "--prefix", &format!("{PREFIX}/subnets/")]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| {
                let key = c[0].rsplit('/').next().unwrap().to_owned();
                let v: Value = serde_json::from_str(c[1]).unwrap_or(Value::Null);
                LeaseEntry {
                    subnet: key.replace('-', "/"),
                    key,
                    value: c[1].to_owned(),
                    public_ip: v["PublicIP"].as_str().unwrap_or_default().to_owned(),
                    vtep_mac: v["BackendData"]["VtepMAC"].as_str().map(str::to_owned),
                    public_key: v["BackendData"]["PublicKey"].as_str().map(str::to_owned),
                }
            })
            .collect()
    }

    /// `etcdctl get --prefix <prefix>` as it prints.
    pub fn etcd_listing(&self) -> String {
        self.etcd().ctl_ok(&["get", "--prefix", PREFIX])
    }

    /// The value our flanneld on `m` must have written: Go's format.
    pub fn expected_lease_value(&self, m: usize) -> String {
        let member = &self.members[m];
        match (self.backend, &member.vtep_mac) {
            (Backend::Wireguard, _) => {
                let key = wireguard::dump(&member.node)
                    .map(|(k, _)| k)
                    .unwrap_or_default();
                self.go_lease_value(&member.ip, &key)
            }
            (Backend::Vxlan, Some(mac)) => format!(
                r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":{VNI},"VtepMAC":"{mac}"}}}}"#,
                member.ip
            ),
            _ => format!(
                r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"{}"}}"#,
                member.ip,
                self.backend.name()
            ),
        }
    }

    /// Whether node `m`'s kernel holds what its backend programs for `peer`: host-gw
    /// `<subnet> via <PublicIP> dev eth0`; vxlan the route `<subnet> via <subnet>.0 dev
    /// flannel.100 onlink`, the neighbour `<subnet>.0 lladdr <VtepMAC>` and the FDB entry
    /// `<VtepMAC> dst <PublicIP>`.
    pub fn programmed(&self, m: usize, peer: &LeaseEntry) -> bool {
        let host = self.members[m].node.host();
        let routes = host.sh("ip", &["-4", "route"]);
        match self.backend {
            Backend::HostGw => routes.lines().any(|l| {
                l.starts_with(&format!("{} via {} dev eth0", peer.subnet, peer.public_ip))
            }),
            Backend::Wireguard => {
                let route = routes
                    .lines()
                    .any(|l| l.starts_with(&format!("10.0.0.0/8 dev {}", wireguard::WG_DEV)));
                let endpoint = format!("{}:{}", peer.public_ip, wireguard::WG_PORT);
                let peer_set = wireguard::dump(&self.members[m].node).is_some_and(|(_, peers)| {
                    peers.iter().any(|p| {
                        Some(&p.public_key) == peer.public_key.as_ref()
                            && p.endpoint == endpoint
                            && p.allowed_ips == peer.subnet
                    })
                });
                route && peer_set
            }
            Backend::Vxlan => {
                let Some(mac) = &peer.vtep_mac else {
                    return false;
                };
                let gw = base(&peer.subnet);
                let route = routes.lines().any(|l| {
                    l.starts_with(&format!("{} via {gw} dev {VXLAN_DEV}", peer.subnet))
                        && l.contains("onlink")
                });
                let neigh = host
                    .sh("ip", &["neigh", "show", "dev", VXLAN_DEV])
                    .lines()
                    .any(|l| {
                        l.starts_with(&format!("{gw} lladdr {mac}")) && l.contains("PERMANENT")
                    });
                let fdb = host
                    .sh("bridge", &["fdb", "show", "dev", VXLAN_DEV])
                    .lines()
                    .any(|l| l.starts_with(&format!("{mac} dst {}", peer.public_ip)));
                route && neigh && fdb
            }
        }
    }

    /// Whether node `m`'s kernel holds nothing any more for a peer's subnet and MAC.
    pub fn forgotten(&self, m: usize, subnet: &str, mac: Option<&str>) -> bool {
        let host = self.members[m].node.host();
        if self.backend == Backend::Wireguard {
            return wireguard::dump(&self.members[m].node)
                .is_some_and(|(_, peers)| !peers.iter().any(|p| p.allowed_ips == subnet));
        }
        let routes = host.sh("ip", &["-4", "route"]);
        if routes.lines().any(|l| l.starts_with(&format!("{subnet} "))) {
            return false;
        }
        match (self.backend, mac) {
            (Backend::Vxlan, Some(mac)) => {
                !host
                    .sh("ip", &["neigh", "show", "dev", VXLAN_DEV])
                    .contains(mac)
                    && !host
                        .sh("bridge", &["fdb", "show", "dev", VXLAN_DEV])
                        .contains(mac)
            }
            _ => true,
        }
    }

    /// Waits until every running agent has programmed every other lease in etcd; the time it
    /// took, or what is missing after `secs`.
    pub fn converge(&self, secs: u64) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            let leases = self.leases();
            let missing: Vec<String> = self
                .members
                .iter()
                .enumerate()
                .filter(|(_, m)| m.agent.is_some())
                .flat_map(|(i, m)| {
                    leases
                        .iter()
                        .filter(move |l| l.subnet != m.subnet)
                        .filter(move |l| !self.programmed(i, l))
                        .map(move |l| format!("{} lacks {} ({})", m.name, l.subnet, l.public_ip))
                })
                .collect();
            if missing.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(secs) {
                return Err(missing.join("; "));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A pod on node `m` through kube-flannel's conflist, with `portMappings` if given.
    pub fn add_pod(&mut self, m: usize, port_mappings: Option<Value>) -> usize {
        let member = &mut self.members[m];
        let chain = match port_mappings {
            Some(pm) => member
                .chain
                .clone()
                .with_capability_args(json!({ "portMappings": pm })),
            None => member.chain.clone(),
        };
        let pod = Pod::add(&member.node, &chain);
        member.pods.push(pod);
        member.pods.len() - 1
    }

    /// Every pod, as `(member, pod)`.
    pub fn pods(&self) -> Vec<(usize, usize)> {
        self.members
            .iter()
            .enumerate()
            .flat_map(|(m, member)| (0..member.pods.len()).map(move |p| (m, p)))
            .collect()
    }

    /// One ping from pod `from` to `ip`.
    pub fn ping(&self, from: (usize, usize), ip: &str) -> bool {
        self.members[from.0].pods[from.1]
            .ns
            .run("ping", &["-c1", "-W2", "-q", ip])
            .status
            .success()
    }

    /// Every pod pings every other pod (`only_to`: just those targets, and back).
    pub fn ping_matrix(&self, only: Option<&[(usize, usize)]>) -> PingMatrix {
        let pods = self.pods();
        let mut pairs = Vec::new();
        for &from in &pods {
            for &to in &pods {
                if from == to {
                    continue;
                }
                if let Some(only) = only
                    && !only.contains(&from)
                    && !only.contains(&to)
                {
                    continue;
                }
                let ip = self.members[to.0].pods[to.1].ip(true);
                pairs.push((from, to, self.ping(from, &ip)));
            }
        }
        let labels = pods
            .iter()
            .map(|&(m, p)| {
                let member = &self.members[m];
                (
                    (m, p),
                    format!("{} {}", member.pod_label(p), member.pods[p].ip(true)),
                )
            })
            .collect();
        PingMatrix { labels, pairs }
    }

    /// The first pod of node `m` serves `reply` on port 80 (mapped to [`HOST_PORT`] if it
    /// was added with that mapping) while `f` runs.
    pub fn serving<T>(&self, m: usize, reply: &str, f: impl FnOnce() -> T) -> T {
        let _server = tcp_server(&self.members[m].pods[0].ns, 80, reply);
        f()
    }

    /// What a TCP connection from node `from`'s own namespace to `ip:port` reads.
    pub fn get_from_node(&self, from: usize, ip: &str, port: u16) -> Option<String> {
        let to = SocketAddr::new(ip.parse().unwrap(), port);
        tcp_get(self.members[from].node.host(), to)
    }

    /// What a TCP connection from a pod to `ip:port` reads.
    pub fn get_from_pod(&self, pod: (usize, usize), ip: &str, port: u16) -> Option<String> {
        let to = SocketAddr::new(ip.parse().unwrap(), port);
        tcp_get(&self.members[pod.0].pods[pod.1].ns, to)
    }

    /// Whether node `m` has flanneld's masquerade table (an nftables table named like
    /// flannel's, not one of the CNI plugins' `cni_rs_*`).
    pub fn masquerade_table(&self, m: usize) -> Option<String> {
        let out = self.members[m].node.host().run("nft", &["list", "tables"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains("flannel"))
            .map(|l| l.trim().to_owned())
    }

    /// The "internet": a host on the LAN at [`INTERNET_IP`] answering TCP port 80 with the
    /// source address it saw; it has no route to the pods.
    pub fn internet(&mut self) {
        if self.internet.is_none() {
            let host = Node::new();
            self.lan.attach(&host, 254);
            let server = tcp_peer_server(host.host(), 80);
            self.internet = Some((server, host));
        }
    }

    /// Stops node `m`'s agent (SIGTERM, its exit code) and deletes its lease, as an admin
    /// removing a node does; the Go nodes follow.
    pub fn remove(&mut self, m: usize) -> Option<i32> {
        let code = self.members[m].agent.as_mut().and_then(Agent::terminate);
        self.members[m].agent = None;
        match &self.control {
            Control::Etcd { etcd, .. } => {
                let key = self.members[m].subnet.replace('/', "-");
                etcd.ctl_ok(&["del", &format!("{PREFIX}/subnets/{key}")]);
            }
            Control::Kube(k) => k.cp.delete_node(&self.members[m].name),
        }
        self.sync_go_nodes();
        code
    }

    /// Deletes every pod through the chain and checks each node holds no veth, lease, saved
    /// config or CNI firewall rule afterwards; one line per node, or the first problem.
    pub fn delete_pods(&mut self) -> Result<Vec<String>, String> {
        let mut lines = Vec::new();
        for member in &mut self.members {
            for pod in &member.pods {
                pod.del(&member.node, &member.chain);
            }
            member.pods.clear();
            let node = &member.node;
            let veths = node
                .host()
                .sh("ip", &["-o", "link", "show", "type", "veth"])
                .lines()
                .filter(|l| l.contains("veth"))
                .count();
            let leases = rig::flannel::leases(node).len();
            let saved = rig::flannel::names_in(node, "flannel").len();
            let rules = cni_rules(node);
            let line = format!(
                "{}: veths {veths}, leases {leases}, saved configs {saved}, CNI nft rules {rules}",
                member.name
            );
            if veths + leases + saved + rules != 0 {
                return Err(line);
            }
            lines.push(line);
        }
        Ok(lines)
    }

    /// Stops every process (agents first, each by PID, expecting exit 0; then etcd), drops
    /// every namespace and temp dir, and checks nothing is left: no process, no mount under
    /// the temp dirs, no temp dir.
    pub fn shut_down(mut self) -> Result<String, String> {
        let (mut pids, control): (Vec<u32>, _) = match &self.control {
            Control::Etcd { etcd, .. } => (vec![etcd.pid()], "etcd"),
            Control::Kube(k) => (k.pids(), "the control plane (kube-apiserver, its etcd)"),
        };
        let mut dirs: Vec<PathBuf> = vec![self.lan.dir().to_owned()];
        let mut codes = Vec::new();
        for m in &mut self.members {
            dirs.push(m.node.dir().to_owned());
            if let Some(a) = m.agent.as_mut() {
                pids.extend(a.pid());
                codes.push((m.name.clone(), a.terminate()));
            }
            if let Some(d) = m.go_wg.as_mut() {
                pids.extend(d.daemon.pid());
                d.daemon.terminate();
            }
        }
        if let Some((_, host)) = &self.internet {
            dirs.push(host.dir().to_owned());
        }
        drop(self);
        if let Some((name, code)) = codes.iter().find(|(_, c)| *c != Some(0)) {
            return Err(format!(
                "flanneld on {name} exited with {code:?} on SIGTERM"
            ));
        }
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| fs::metadata(format!("/proc/{p}")).is_ok())
            .collect();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mounts: Vec<&str> = mountinfo
            .lines()
            .filter(|l| dirs.iter().any(|d| l.contains(&*d.to_string_lossy())))
            .collect();
        let left: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
        if !alive.is_empty() || !mounts.is_empty() || !left.is_empty() {
            return Err(format!(
                "left behind: processes {alive:?}, mounts {mounts:?}, dirs {left:?}"
            ));
        }
        Ok(format!(
            "{} agents exited 0 on SIGTERM; {control} stopped; processes {pids:?} gone; no mount or \
             temp dir left of {} dirs",
            codes.len(),
            dirs.len()
        ))
    }
}

/// nftables rules of the CNI plugins' tables (`cni_rs_*`) that DNAT or masquerade.
fn cni_rules(node: &Node) -> usize {
    let out = node.host().run("nft", &["list", "ruleset"]);
    let mut in_cni = false;
    let mut n = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("table ") {
            in_cni = line.contains("cni_rs_");
        } else if in_cni && (line.contains("dnat") || line.contains("masquerade")) {
            n += 1;
        }
    }
    n
}

/// A link's MAC address inside a node.
fn link_mac(node: &Node, dev: &str) -> String {
    let out = node.host().sh("ip", &["-o", "link", "show", dev]);
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {out}"))
        .to_owned()
}

/// A pod of the cluster: `(member, pod)` indices.
pub type PodRef = (usize, usize);

/// Who pinged whom.
#[derive(Debug)]
pub struct PingMatrix {
    labels: Vec<(PodRef, String)>,
    /// `(from, to, answered)`.
    pub pairs: Vec<(PodRef, PodRef, bool)>,
}

impl PingMatrix {
    /// Pairs that answered.
    pub fn ok(&self) -> usize {
        self.pairs.iter().filter(|p| p.2).count()
    }

    /// The pairs that did not answer, labelled.
    pub fn failures(&self) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|p| !p.2)
            .map(|(f, t, _)| format!("{} → {}", self.label(*f), self.label(*t)))
            .collect()
    }

    fn label(&self, pod: PodRef) -> &str {
        self.labels
            .iter()
            .find(|(p, _)| *p == pod)
            .map_or("?", |(_, l)| l.as_str())
    }
}

impl fmt::Display for PingMatrix {
    /// A table: one row per source pod, one column per target (`ok`, `--` failed, blank not
    /// tried), then `answered: n of m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.labels.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
        write!(f, "{:w$}  ", "from \\ to")?;
        for (i, _) in self.labels.iter().enumerate() {
            write!(f, "{:>3}", i + 1)?;
        }
        writeln!(f)?;
        for (i, (from, label)) in self.labels.iter().enumerate() {
            write!(f, "{label:w$}  ")?;
            for (to, _) in &self.labels {
                let cell = if from == to {
                    " · "
                } else {
                    match self.pairs.iter().find(|p| p.0 == *from && p.1 == *to) {
                        Some((_, _, true)) => " ok",
                        Some((_, _, false)) => " --",
                        None => "   ",
                    }
                };
                write!(f, "{cell}")?;
            }
            writeln!(f, "   ({})", i + 1)?;
        }
        write!(f, "answered: {} of {}", self.ok(), self.pairs.len())
    }
}

/// The machine's own state the cluster must not touch: its network interfaces, `ip netns`
/// names, and the default state paths of flanneld and the plugins (existence and mtime).
pub fn machine_state() -> Vec<(String, Option<SystemTime>)> {
    let mut v = Vec::new();
    for path in [
        "/run/flannel",
        "/run/flannel/subnet.env",
        "/var/lib/cni",
        "/var/lib/cni/flannel",
        "/var/lib/cni/networks",
        "/run/cni-rs",
        "/etc/cni/net.d",
        "/run/netns",
    ] {
        v.push((
            path.to_owned(),
            fs::metadata(path).and_then(|m| m.modified()).ok(),
        ));
    }
    if let Ok(out) = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
    {
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let name = l.split(':').nth(1).unwrap_or_default().trim().to_owned();
            v.push((format!("link {name}"), None));
        }
    }
    v
}
