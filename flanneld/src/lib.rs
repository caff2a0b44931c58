//! flanneld, the flannel node agent: leases the node's pod subnet from etcd in Go flanneld's
//! data model (the same keys, values and lease TTLs, so Go and Rust agents share one etcd),
//! or takes it from its Node's podCIDR in the Kubernetes API (`--kube-subnet-mgr`, Go's
//! annotations), writes `/run/flannel/subnet.env` for the flannel CNI plugin, and hands the
//! other nodes' leases to a backend (`vxlan` or `host-gw`), with `--ip-masq`'s nftables
//! rules, and reconciles the kernel with the leases every few seconds.
//!
//! `main.rs` only calls [`main_with`]; everything is in this library and testable without
//! exec: the agent core ([`agent`], [`cache`]) runs against the [`manager::SubnetManager`]
//! trait, implemented by the etcd wing ([`etcd`], over its `Store` trait) and the kube wing
//! ([`kube`], over its `NodeApi` trait), each with an in-memory fake in unit tests and the
//! real thing in `conformance/`.

pub mod agent;
pub mod backend;
pub mod cache;
pub mod config;
pub mod etcd;
pub mod files;
pub mod flags;
pub mod health;
pub mod iface;
pub mod kube;
pub mod lease;
pub mod log;
pub mod manager;
pub mod metrics;
pub mod peer;
pub mod subnet;
pub mod subnet_env;
pub mod vtep;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use crate::etcd::LeaseManager;
use crate::etcd::{EtcdOptions, EtcdStore};
use crate::flags::{Command, FlagError, Options};
use crate::health::Readiness;
use crate::log::{error, info, warning};

/// The version `--version` prints.
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"), " (cni-rs flanneld)");

/// Why the process exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The async runtime or a signal handler could not be set up.
    #[error("runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// `--healthz-port` could not be bound.
    #[error("healthz server on {addr}: {source}")]
    Healthz {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// `--metrics-port` could not be bound.
    #[error("metrics server on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// No usable external interface.
    #[error(transparent)]
    Iface(#[from] iface::IfaceError),
    /// The backend could not start.
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    /// The agent failed.
    #[error(transparent)]
    Agent(#[from] agent::AgentError),
    /// The kube subnet manager cannot start.
    #[error(transparent)]
    Kube(#[from] kube::KubeError),
}

/// The whole program: parses `args` (without the program name) and the environment, runs
/// the agent, returns the exit code (0 after SIGTERM/SIGINT, 1 on failure, 2 for a command
/// line Go's flag package refuses).
pub fn main_with(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> i32 {
    let opts = match flags::parse(args, env) {
        Ok(Command::Run(o)) => {
            log::configure(o.log.clone());
            o
        }
        Ok(Command::Version) => {
            eprintln!("{VERSION}");
            return 0;
        }
        Ok(Command::Help) => {
            eprint!("{}", flags::usage());
            return 0;
        }
        Err(e @ (FlagError::Unsupported(_) | FlagError::Invalid { .. })) if !matches!(&e, FlagError::Invalid { reason, .. } if reason == "parse error" || reason == "bad flag syntax") =>
        {
            error!("{e}");
            return 1;
        }
        Err(e) => {
            eprintln!("{e}\n{}", flags::usage());
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!("{}", Error::Runtime(e));
            return 1;
        }
    };
    match runtime.block_on(run(&opts, env("NOTIFY_SOCKET"))) {
        Ok(()) => 0,
        Err(e) => {
            error!("{e}");
            1
        }
    }
}

/// Connects to etcd, retrying every second (with a log line) until it works or the agent
/// is stopped.
async fn connect(opts: &EtcdOptions, shutdown: &mut watch::Receiver<bool>) -> Option<EtcdStore> {
    loop {
        match EtcdStore::connect(opts).await {
            Ok(s) => return Some(s),
            Err(e) => error!(
                "connecting to etcd {}: {e}; retrying in 1 s",
                opts.endpoints.join(",")
            ),
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The agent on etcd (or the Kubernetes API with `--kube-subnet-mgr`) and the kernel, with
/// the given options.
pub async fn run(opts: &Options, notify_socket: Option<String>) -> Result<(), Error> {
    info!("flanneld {VERSION} starting");
    let (stop_tx, shutdown) = watch::channel(false);
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(Error::Runtime)?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Runtime)?;
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            info!("received {name}: stopping");
            let _ = stop_tx.send(true);
        });
    }
    let ready = Readiness::default();
    let metrics = metrics::Metrics::new();
    // One port for both: the health paths and /metrics on one listener.
    let shared = opts.metrics_port != 0 && opts.metrics_port == opts.healthz_port;
    if opts.metrics_port != 0 {
        let addr = format!("{}:{}", opts.healthz_ip, opts.metrics_port);
        let listener = health::bind(&opts.healthz_ip, opts.metrics_port)
            .await
            .map_err(|source| Error::Metrics {
                addr: addr.clone(),
                source,
            })?;
        info!("serving /metrics on {addr}");
        tokio::spawn(health::serve(
            listener,
            ready.clone(),
            Some(metrics.clone()),
        ));
    }
    if opts.healthz_port != 0 && !shared {
        let addr = format!("{}:{}", opts.healthz_ip, opts.healthz_port);
        let listener = health::bind(&opts.healthz_ip, opts.healthz_port)
            .await
            .map_err(|source| Error::Healthz {
                addr: addr.clone(),
                source,
            })?;
        info!("serving /healthz and /readyz on {addr}");
        tokio::spawn(health::serve(listener, ready.clone(), None));
    }
    let subnet_file = PathBuf::from(&opts.subnet_file);
    let mut node = Node {
        opts,
        shutdown,
        ready,
        metrics,
        notify_socket,
        subnet_file,
    };
    if opts.kube_subnet_mgr {
        let Some(mut manager) = kube::connect(&opts.kube, &mut node.shutdown).await? else {
            return Ok(());
        };
        let Some(config) = agent::wait_for_config(&manager, &mut node.shutdown).await else {
            return Ok(());
        };
        let cont = opts.kube.continue_when_cache_not_ready;
        if !manager.sync(&config, cont, &mut node.shutdown).await? {
            return Ok(());
        }
        // The config the listing was made for (the families of its leases).
        return node.serve(manager, Some(config)).await;
    }
    let previous = subnet_env::previous(&node.subnet_file);
    let etcd = EtcdOptions {
        endpoints: opts.etcd_endpoints.clone(),
        ca_file: opts.etcd_cafile.clone(),
        cert_file: opts.etcd_certfile.clone(),
        key_file: opts.etcd_keyfile.clone(),
        username: opts.etcd_username.clone(),
        password: opts.etcd_password.0.clone(),
    };
    let Some(store) = connect(&etcd, &mut node.shutdown).await else {
        return Ok(());
    };
    let store = store.with_metrics(node.metrics.clone());
    let mut manager = LeaseManager::new(store, &opts.etcd_prefix, previous);
    if let Some(ttl) = opts.test_lease_ttl {
        manager = manager.with_ttl(ttl);
    }
    node.serve(manager, None).await
}

/// What the agent needs besides its subnet manager, set up by [`run`].
struct Node<'a> {
    opts: &'a Options,
    shutdown: watch::Receiver<bool>,
    ready: Readiness,
    metrics: metrics::Metrics,
    notify_socket: Option<String>,
    subnet_file: PathBuf,
}

impl Node<'_> {
    /// What the store holds for this node from before, retried while the store cannot be
    /// reached; `None` when asked to stop first.
    async fn stored<M: manager::SubnetManager>(&mut self, manager: &M) -> Option<manager::Stored> {
        let mut delay = Duration::from_secs(1);
        loop {
            match manager.stored().await {
                Ok(s) => return Some(s),
                Err(e) => {
                    error!("reading what the store holds for this node: {e}; retrying in {delay:?}")
                }
            }
            tokio::select! {
                r = self.shutdown.wait_for(|s| *s) => if r.is_ok() { return None },
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// The agent with `manager`: the network config (`config` when it was read already),
    /// the external interface, the backend, then the agent's loop until asked to stop.
    async fn serve<M: manager::SubnetManager>(
        mut self,
        mut manager: M,
        config: Option<config::NetworkConfig>,
    ) -> Result<(), Error> {
        let opts = self.opts;
        let config = match config {
            Some(c) => c,
            None => match agent::wait_for_config(&manager, &mut self.shutdown).await {
                Some(c) => c,
                None => return Ok(()),
            },
        };
        info!(
            "network config: {}{} backend {}",
            config
                .v4
                .as_ref()
                .map(|r| r.network.to_string())
                .unwrap_or_default(),
            config
                .v6
                .as_ref()
                .map(|r| format!(" and {}", r.network))
                .unwrap_or_default(),
            config.backend_type
        );
        let Some(stored) = self.stored(&manager).await else {
            return Ok(());
        };
        let ext = external_interface(opts, &config, &stored)?;
        let macs = backend::StoredMacs {
            v4: stored.vtep_mac,
            v6: stored.vtep_mac_v6,
        };
        let mut backend = node_backend(opts, &config, &ext, macs)?;
        let subscribed = if backend.watched_links().is_empty() {
            None
        } else {
            subscribe_links()
        };
        let (links, entry_notices) = match subscribed {
            Some((rx, joiner)) if !backend.watched_entries().is_empty() => (
                Some(rx),
                agent::EntryNotices::Join(std::sync::Arc::new(move || joiner.join())),
            ),
            Some((rx, _)) => (Some(rx), agent::EntryNotices::None),
            None => (None, agent::EntryNotices::None),
        };
        let settings = agent::Settings {
            entry_notices,
            subnet_file: self.subnet_file,
            ip_masq: opts.ip_masq,
            renew_margin: manager.renew_margin(Duration::from_secs(
                u64::from(opts.renew_margin_minutes) * 60,
            )),
            notify_socket: self.notify_socket,
            // A firewall check more often than the kernel's reconcile brings the tick forward.
            reconcile_every: agent::RECONCILE_EVERY.min(opts.rules_resync),
            metrics: self.metrics,
        };
        let ran = agent::run_with_links(
            &mut manager,
            &config,
            backend.as_mut(),
            &settings,
            &self.ready,
            self.shutdown,
            links,
        )
        .await;
        backend.stop();
        ran?;
        Ok(())
    }
}

/// The external interface for the flags and what the store holds for the node (an address
/// the node's operator stored for it wins over the flags, as in Go), logged.
fn external_interface(
    opts: &Options,
    config: &config::NetworkConfig,
    stored: &manager::Stored,
) -> Result<iface::ExternalInterface, Error> {
    let public_ip = stored.public_ip.or(opts.public_ip);
    let public_ipv6 = stored.public_ipv6.or(opts.public_ipv6);
    let reach = opts.iface_can_reach.map(iface::reach).transpose()?;
    let pins = iface::Pins {
        ifaces: &opts.iface,
        regexes: &opts.iface_regex,
        reach: reach.as_ref(),
    };
    let ext = iface::lookup(pins, public_ip, public_ipv6, config.v4.is_some())?;
    info!(
        "using interface {} (index {}), address {}, PublicIP {}, MTU {}",
        ext.name, ext.index, ext.iface_addr, ext.public_ip, ext.mtu
    );
    if let Some(a6) = ext.iface_addr6 {
        info!("interface {} has the global IPv6 address {a6}", ext.name);
    }
    if public_ipv6.is_some() && config.v6.is_none() {
        warning!("--public-ipv6 is ignored: the network config does not set EnableIPv6");
    }
    Ok(ext)
}

/// The backend of the config, with the node's blackhole routes and firewall rules around
/// it; Go's iptables-mode chains removed first.
fn node_backend(
    opts: &Options,
    config: &config::NetworkConfig,
    ext: &iface::ExternalInterface,
    macs: backend::StoredMacs,
) -> Result<Box<dyn backend::Backend>, Error> {
    let backend_opts = backend::Options {
        vtep_macs: macs,
        vxlan_tx_checksum_off: opts.vxlan_tx_checksum_off,
        wireguard_key_file: opts.wireguard_key_file.clone(),
        wireguard_userspace: opts.wireguard_userspace,
    };
    let inner = backend::create(config, ext, &backend_opts)?;
    info!(
        "firewall rules: nftables (tables flannel-ipv4/flannel-ipv6), whether EnableNFTables is {} or not{}",
        config.enable_nftables,
        if config.enable_nftables {
            ""
        } else {
            " (Go would use iptables; its chains are removed at start)"
        }
    );
    backend::go_iptables::remove_go_chains(&mut backend::go_iptables::Binaries::from_path());
    warn_without_br_netfilter(config.v4.is_some(), config.v6.is_some());
    let set = backend::masq::RuleSet {
        masq: opts.ip_masq,
        fully_random: opts.masq_fully_random,
        forward: opts.forward_rules,
    };
    let routes = backend::blackhole::KernelBlackholes::current()
        .map_err(|e| Error::Backend(backend::BackendError::from(e)))?;
    let holed = backend::blackhole::Blackholed::new(inner, routes, opts.blackhole_route);
    Ok(Box::new(backend::masq::Firewalled::new(
        holed,
        cni_nft::Nftables,
        config.clone(),
        set,
        opts.rules_resync,
    )))
}

/// Says once, at start, that bridged pod traffic bypasses the host firewall when
/// `br_netfilter` is not loaded or is off: kube-proxy's Service rules then miss pod-to-pod
/// traffic on the same bridge. Not a refusal (Go exits in iptables mode): nftables-only and
/// rootless nodes run without it.
fn warn_without_br_netfilter(v4: bool, v6: bool) {
    let mut keys = Vec::new();
    if v4 {
        keys.push("bridge-nf-call-iptables");
    }
    if v6 {
        keys.push("bridge-nf-call-ip6tables");
    }
    for key in keys {
        let path = format!("/proc/sys/net/bridge/{key}");
        let why = match std::fs::read_to_string(&path) {
            Ok(v) if v.trim() == "1" => continue,
            Ok(v) => format!("is {}", v.trim()),
            Err(_) => "is missing (the br_netfilter module is not loaded)".to_owned(),
        };
        warning!(
            "{path} {why}: traffic between pods on one bridge skips the host's iptables/nftables, so kube-proxy Services between pods of this node do not work (modprobe br_netfilter; sysctl net.bridge.{key}=1)"
        );
    }
}

/// Notifications queued for the agent's loop before the reading thread waits.
const LINK_QUEUE: usize = 1024;

/// The namespace's link notifications, read by a thread of their own (the socket's reads
/// block) and forwarded to the agent, and what adds the neighbour and route ones to them;
/// `None` (ticks only) when the kernel refuses.
fn subscribe_links() -> Option<(agent::LinkEvents, node_kernel::EntryJoiner)> {
    let mut events = match node_kernel::RouteSocket::subscribe_links() {
        Ok(e) => e,
        Err(e) => {
            warning!(
                "subscribing to link notifications: {e}; reconciling every {:?} only",
                agent::RECONCILE_EVERY
            );
            return None;
        }
    };
    let joiner = events.entry_joiner();
    // Bounded: while the loop does not read (waiting on etcd), the thread blocks, the
    // kernel's socket buffer overflows, and the loop then gets one `Lost` instead of a
    // queue that grows with every neighbour and route change of the namespace.
    let (tx, rx) = tokio::sync::mpsc::channel(LINK_QUEUE);
    let reader = move || {
        loop {
            match events.read() {
                Ok(changes) => {
                    for c in changes {
                        if tx.blocking_send(c).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    error!("reading link notifications: {e}");
                    return;
                }
            }
        }
    };
    match std::thread::Builder::new()
        .name("link-events".into())
        .spawn(reader)
    {
        Ok(_) => Some((rx, joiner)),
        Err(e) => {
            warning!("starting the link notification thread: {e}");
            None
        }
    }
}
