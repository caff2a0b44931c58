//! The agent's life after start (Go's `main.go` from `RegisterNetwork` on): acquire the lease
//! from the subnet manager, let the backend configure itself, write subnet.env, report ready,
//! then one loop that renews the lease before it runs out, hands the peers' lease changes to
//! the backend (the watch re-lists after a break and the cache diffs), acquires the lease
//! again when it is lost, and ends on SIGTERM/SIGINT leaving everything in place. The backend
//! reconciles every few seconds, and promptly (a burst debounced) when the kernel notifies a
//! change of one of its links.
//!
//! The agent knows leases and lease updates only ([`crate::manager`]): where they are stored
//! is the subnet manager's business.

mod churn;
mod links;
mod upkeep;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use node_kernel::LinkChange;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use churn::Churn;
use links::next_link;
pub use links::{Debounce, EntryNotices, LINK_LONGEST, LINK_QUIET, LinkEvents, concerns, describe};
use upkeep::{Upkeep, pause, reconcile_now, sleep_until_some, stopped};

use crate::backend::{Backend, BackendError};
use crate::cache::{LeaseCache, LeaseEvent};
use crate::config::NetworkConfig;
use crate::health::{Readiness, sd_notify};
use crate::lease::{Lease, LeaseAttrs};
use crate::log::{error, info, warning};
use crate::manager::{Failure, LeaseUpdate, LeaseWatch, ManagerError, SubnetManager};
use crate::metrics::Metrics;
use crate::subnet::SubnetKey;
use crate::subnet_env;

/// Go retries a failed renewal every minute.
pub const RENEW_RETRY: Duration = Duration::from_secs(60);
/// The longest wait between two attempts to acquire a lease while every subnet is leased.
pub const FULL_RETRY_MAX: Duration = Duration::from_secs(5);
/// The longest between two whole reconciles when the kernel notified no change of the
/// backend's entries (notifications are the fast path; this pass is the safety net).
pub const FULL_RECONCILE_EVERY: Duration = Duration::from_secs(60);
/// The default of [`Settings::reconcile_every`].
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// How soon a failed [`SubnetManager::complete`] is tried again.
pub const COMPLETE_RETRY: Duration = Duration::from_secs(5);

/// What the agent says when it stops (SIGTERM/SIGINT).
const SHUTTING_DOWN: &str = "shutting down: the lease, subnet.env and routes stay in place";

/// What the loop needs besides the subnet manager and the backend.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--subnet-file`.
    pub subnet_file: PathBuf,
    /// `--ip-masq`, written as `FLANNEL_IPMASQ`.
    pub ip_masq: bool,
    /// `--subnet-lease-renew-margin`.
    pub renew_margin: Duration,
    /// `NOTIFY_SOCKET`.
    pub notify_socket: Option<String>,
    /// How often the backend compares the kernel with the peers and repairs it.
    pub reconcile_every: Duration,
    /// Where the loop counts what it does (`--metrics-port` serves it).
    pub metrics: Metrics,
    /// How the loop hears of changes to the backend's neighbours, FDB entries and routes.
    pub entry_notices: EntryNotices,
}

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Acquiring the lease failed in a way retrying cannot mend.
    #[error("failed to acquire lease: {0}")]
    Lease(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// subnet.env could not be written.
    #[error("failed to write subnet file {path}: {source}")]
    SubnetFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The lease's expiry, as a metric.
fn export_expiry(metrics: &Metrics, lease: &Lease) {
    if let Some(at) = lease.expiration {
        metrics.lease_expires(at);
    }
}

/// Hands `events` to the backend and exports what it holds now.
fn hand(backend: &mut dyn Backend, metrics: &Metrics, events: &[LeaseEvent]) {
    if events.is_empty() {
        return;
    }
    metrics.lease_events(events);
    backend.handle(events);
    metrics.peers_programmed(backend.backend_type(), backend.programmed());
}

/// When `lease` is renewed: `margin` before it expires (now if that has passed); never for
/// a lease that does not expire.
fn renew_at(lease: &Lease, margin: Duration) -> Option<Instant> {
    let now = Instant::now();
    let at = lease.expiration?;
    Some(at.checked_sub(margin).map_or(now, |t| t.max(now)))
}

/// Acquires a lease (again, when `old` was lost), retrying what may pass (the store
/// unreachable, every subnet leased, every pick lost to nodes starting at the same time, no
/// podCIDR yet: Go exits 1 and relies on a restart); `None` when asked to stop first.
async fn acquire_until_stopped<M: SubnetManager>(
    manager: &mut M,
    config: &NetworkConfig,
    attrs: &LeaseAttrs,
    old: Option<&Lease>,
    upkeep: &mut Upkeep<'_>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Lease>, AgentError> {
    let mut delay = Duration::from_secs(1);
    loop {
        let attempt = async {
            match old {
                Some(old) => manager.reacquire(config, old).await,
                None => manager.acquire(config, attrs).await,
            }
        };
        let wait = match upkeep.wait(attempt, shutdown).await {
            None => return Ok(None),
            Some(Ok(l)) => return Ok(Some(l)),
            Some(Err(e)) => match e.failure() {
                Failure::Transient | Failure::Lost => {
                    error!("acquiring a lease: {e}; retrying in {delay:?}");
                    delay
                }
                Failure::Wait => {
                    let wait = delay.min(FULL_RETRY_MAX);
                    error!("failed to acquire lease: {e}; retrying in {wait:?}");
                    wait
                }
                Failure::Fatal => return Err(AgentError::Lease(Box::new(e))),
            },
        };
        if upkeep.wait(sleep(wait), shutdown).await.is_none() {
            return Ok(None);
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Reads the network config, retrying every second as Go does (with a line naming what is
/// missing and how to create it); `None` when asked to stop first.
pub async fn wait_for_config<M: SubnetManager>(
    manager: &M,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<NetworkConfig> {
    loop {
        match manager.network_config().await {
            Ok(c) => return Some(c),
            Err(e) => error!("couldn't fetch network config: {e}; retrying in 1 s"),
        }
        if pause(Duration::from_secs(1), shutdown).await {
            return None;
        }
    }
}

fn write_subnet_file(
    settings: &Settings,
    config: &NetworkConfig,
    sn: &SubnetKey,
    mtu: u32,
) -> Result<(), AgentError> {
    let text = subnet_env::render(config, settings.ip_masq, sn, mtu);
    subnet_env::write_atomic(&settings.subnet_file, text.as_bytes()).map_err(|source| {
        AgentError::SubnetFile {
            path: settings.subnet_file.clone(),
            source,
        }
    })?;
    info!("wrote subnet file {}", settings.subnet_file.display());
    Ok(())
}

/// The agent with its config and backend: runs until asked to stop (`Ok`) or a fatal error.
pub async fn run<M: SubnetManager>(
    manager: &mut M,
    config: &NetworkConfig,
    backend: &mut dyn Backend,
    settings: &Settings,
    ready: &Readiness,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    run_with_links(manager, config, backend, settings, ready, shutdown, None).await
}

/// [`run`], also reconciling promptly on the link notifications of `links` that concern
/// [`Backend::watched_links`].
pub async fn run_with_links<M: SubnetManager>(
    manager: &mut M,
    config: &NetworkConfig,
    backend: &mut dyn Backend,
    settings: &Settings,
    ready: &Readiness,
    mut shutdown: watch::Receiver<bool>,
    links: Option<LinkEvents>,
) -> Result<(), AgentError> {
    let attrs = backend.lease_attrs();
    let acquired = {
        let mut upkeep = Upkeep {
            backend: &mut *backend,
            settings,
            reconcile_at: None,
        };
        acquire_until_stopped(manager, config, &attrs, None, &mut upkeep, &mut shutdown).await?
    };
    let Some(lease) = acquired else {
        return Ok(());
    };
    info!("acquired lease {}", manager.describe(&lease));
    backend.lease_acquired(&lease)?;
    let metrics = &settings.metrics;
    export_expiry(metrics, &lease);
    metrics.peers_programmed(backend.backend_type(), backend.programmed());
    write_subnet_file(settings, config, &lease.subnet, backend.mtu())?;
    ready.set();
    match sd_notify(settings.notify_socket.as_deref(), "READY=1") {
        Ok(true) => info!("notified systemd: READY=1"),
        Ok(false) => {}
        Err(e) => warning!("sd_notify: {e}"),
    }
    let cache = LeaseCache::new(lease.subnet.id()).guarded(manager.peer_check(config, &attrs));
    let agent = Agent {
        watch: manager.watch(&lease, metrics),
        renew_at: renew_at(&lease, settings.renew_margin),
        complete_at: Some(Instant::now()),
        complete_failures: crate::log::Repeats::default(),
        manager,
        config,
        backend,
        settings,
        lease,
        cache,
        shutdown,
        links,
        ticks: Ticks::new(settings),
        churn: Churn::default(),
    };
    agent.run().await
}

/// When the backend reconciles, and how much of the kernel it compares.
struct Ticks {
    /// The next reconcile tick.
    reconcile_at: Instant,
    /// The pending burst of link notifications.
    debounce: Debounce,
    /// What the pending burst said, for the log.
    burst: Vec<String>,
    /// Whether the kernel may hold other entries than the last full reconcile left: a
    /// notification about one of the backend's links, lost notifications, or no
    /// notifications at all. When not, a tick skips the dumps (at 5,000 peers they were
    /// nearly all the agent's idle CPU) until a full pass is due anyway.
    entries_changed: bool,
    /// When the last full reconcile ran.
    last_full: Instant,
    /// Whether the kernel notifies the agent of the backend's entries (neighbours, routes).
    entries_heard: bool,
}

impl Ticks {
    fn new(settings: &Settings) -> Ticks {
        Ticks {
            reconcile_at: Instant::now() + settings.reconcile_every,
            debounce: Debounce::default(),
            burst: Vec::new(),
            entries_changed: true,
            last_full: Instant::now(),
            entries_heard: matches!(settings.entry_notices, EntryNotices::OnLinks),
        }
    }
}

/// The running agent: its lease, its view of the peers, the lease watch and the timers.
struct Agent<'a, M: SubnetManager> {
    manager: &'a mut M,
    config: &'a NetworkConfig,
    backend: &'a mut dyn Backend,
    settings: &'a Settings,
    lease: Lease,
    cache: LeaseCache,
    watch: LeaseWatch,
    /// When the lease is renewed; `None` for a lease that does not expire (kube).
    renew_at: Option<Instant>,
    /// When [`SubnetManager::complete`] is (re)tried; `None` once it worked.
    complete_at: Option<Instant>,
    /// Its failures, said once a minute while the same.
    complete_failures: crate::log::Repeats,
    shutdown: watch::Receiver<bool>,
    links: Option<LinkEvents>,
    ticks: Ticks,
    /// How often the lease was lost lately.
    churn: Churn,
}

enum Wake {
    Stop,
    Renew,
    Complete,
    Reconcile,
    Link(Option<LinkChange>),
    Lease(Option<LeaseUpdate>),
}

/// Whether the loop goes on.
enum Flow {
    Continue,
    Stop,
}

/// Awaits a subnet manager call with the reconcile tick kept and a stop request answered:
/// `None` when asked to stop.
macro_rules! waiting {
    ($self:ident, $fut:expr) => {{
        let mut upkeep = Upkeep {
            backend: &mut *$self.backend,
            settings: $self.settings,
            reconcile_at: Some(&mut $self.ticks.reconcile_at),
        };
        upkeep.wait($fut, &mut $self.shutdown).await
    }};
}

impl<M: SubnetManager> Agent<'_, M> {
    async fn run(mut self) -> Result<(), AgentError> {
        loop {
            let wake = tokio::select! {
                _ = stopped(&mut self.shutdown) => Wake::Stop,
                _ = sleep_until_some(self.renew_at) => Wake::Renew,
                _ = sleep_until_some(self.complete_at) => Wake::Complete,
                _ = sleep_until(self.ticks.reconcile_at) => Wake::Reconcile,
                _ = sleep_until_some(self.ticks.debounce.due()) => Wake::Reconcile,
                l = next_link(&mut self.links) => Wake::Link(l),
                u = self.watch.next() => Wake::Lease(u),
            };
            // A lease event's latency runs from here to the backend having programmed it.
            let woke = std::time::Instant::now();
            let flow = match wake {
                Wake::Stop => Flow::Stop,
                Wake::Renew => self.renew().await?,
                Wake::Complete => self.complete().await,
                Wake::Reconcile => {
                    self.tick();
                    Flow::Continue
                }
                Wake::Link(change) => {
                    self.link_notice(change);
                    Flow::Continue
                }
                Wake::Lease(Some(update)) => self.lease_update(update, woke).await?,
                Wake::Lease(None) => {
                    // A watch never ends by itself; should one, a new one lists again.
                    warning!("the lease watch ended: watching again");
                    self.watch = self.manager.watch(&self.lease, &self.settings.metrics);
                    Flow::Continue
                }
            };
            if let Flow::Stop = flow {
                info!("{SHUTTING_DOWN}");
                return Ok(());
            }
        }
    }

    /// What the lease watch reported.
    async fn lease_update(
        &mut self,
        update: LeaseUpdate,
        woke: std::time::Instant,
    ) -> Result<Flow, AgentError> {
        let settings = self.settings;
        let metrics = &settings.metrics;
        match update {
            LeaseUpdate::Snapshot(leases) => {
                let events = self.cache.reset(leases);
                hand(self.backend, metrics, &events);
                self.backend.listed();
                self.join_entry_notices();
            }
            LeaseUpdate::Changes(changes) => {
                // One at a time, so that each event's latency is its own.
                for ev in self.cache.update(changes) {
                    hand(self.backend, metrics, std::slice::from_ref(&ev));
                    metrics.event_programmed(woke.elapsed());
                }
            }
            LeaseUpdate::Own(lease) => {
                self.lease = lease;
                self.renew_at = renew_at(&self.lease, self.settings.renew_margin);
                export_expiry(metrics, &self.lease);
            }
            LeaseUpdate::OwnLost(why) => return self.reacquire(&why).await,
        }
        Ok(Flow::Continue)
    }

    /// After the first listing was programmed, the kernel's notices of the backend's
    /// entries are joined (changes before this are the first whole reconcile's to find:
    /// `entries_changed` is still set).
    fn join_entry_notices(&mut self) {
        if let (false, EntryNotices::Join(join)) =
            (self.ticks.entries_heard, &self.settings.entry_notices)
        {
            match join() {
                Ok(()) => self.ticks.entries_heard = true,
                Err(e) => warning!(
                    "subscribing to neighbour and route notifications: {e}; every reconcile compares the kernel"
                ),
            }
        }
    }

    /// The renewal is due.
    async fn renew(&mut self) -> Result<Flow, AgentError> {
        let settings = self.settings;
        let metrics = &settings.metrics;
        let Some(result) = waiting!(self, self.manager.renew(&self.lease)) else {
            return Ok(Flow::Stop);
        };
        match result {
            Ok(l) => {
                self.lease = l;
                self.renew_at = renew_at(&self.lease, self.settings.renew_margin);
                metrics.renewal(true);
                export_expiry(metrics, &self.lease);
                info!("renewed lease {}", self.lease.subnet);
            }
            Err(e) if e.failure() == Failure::Lost => {
                metrics.renewal(false);
                error!("{e}: acquiring another subnet");
                return self
                    .reacquire(&format!("the node's lease {} was taken", self.lease.subnet))
                    .await;
            }
            Err(e) => {
                metrics.renewal(false);
                // Within the margin (a short test TTL), else the lease runs out first.
                let retry = RENEW_RETRY.min(self.settings.renew_margin / 2);
                error!(
                    "renewing lease {}: {e}; retrying in {retry:?}",
                    self.lease.subnet
                );
                self.renew_at = Some(Instant::now() + retry);
            }
        }
        Ok(Flow::Continue)
    }

    /// Tells the subnet manager the lease is in use; retried until it worked.
    async fn complete(&mut self) -> Flow {
        let Some(result) = waiting!(self, self.manager.complete(&self.lease)) else {
            return Flow::Stop;
        };
        self.complete_at = match result {
            Ok(()) => {
                if self.complete_failures.clear() {
                    info!("marked the node's network ready");
                }
                None
            }
            Err(e) => {
                if self.complete_failures.due(&e.to_string()) {
                    warning!(
                        "marking the node's network ready: {e}; retrying every {COMPLETE_RETRY:?} (the same error is logged again once a minute)"
                    );
                }
                Some(Instant::now() + COMPLETE_RETRY)
            }
        };
        Flow::Continue
    }

    /// Acquires the node's lease again, preferring the subnet it had; retried until it
    /// works or the agent is stopped, reconciling meanwhile. A different subnet rewrites
    /// subnet.env (pods keep their old addresses until recreated: logged). The watch starts
    /// over from a listing (changes made meanwhile were not watched).
    async fn reacquire(&mut self, why: &str) -> Result<Flow, AgentError> {
        let settings = self.settings;
        let metrics = &settings.metrics;
        metrics.lease_lost();
        warning!(
            "{why}: acquiring one again (Go flanneld exits in etcd mode, and does not notice in kube mode)"
        );
        if let Some(pause) = self.churn.pause_before(Instant::now()) {
            warning!(
                "the lease was lost again within {:?} of the last reacquisition (another agent claiming it?): waiting {pause:?} first",
                churn::CHURN_WINDOW
            );
            if waiting!(self, sleep(pause)).is_none() {
                return Ok(Flow::Stop);
            }
        }
        let old = self.lease.clone();
        let acquired = {
            let mut upkeep = Upkeep {
                backend: &mut *self.backend,
                settings: self.settings,
                reconcile_at: Some(&mut self.ticks.reconcile_at),
            };
            acquire_until_stopped(
                self.manager,
                self.config,
                &old.attrs,
                Some(&old),
                &mut upkeep,
                &mut self.shutdown,
            )
            .await?
        };
        let Some(new) = acquired else {
            return Ok(Flow::Stop);
        };
        info!("re-acquired lease {}", new.subnet);
        self.churn.reacquired(Instant::now());
        if new.subnet != old.subnet {
            warning!(
                "the node's subnet changed from {} to {}: pods started before keep addresses of the old subnet until recreated",
                old.subnet,
                new.subnet
            );
            let events = self.cache.set_own(new.subnet.id());
            hand(self.backend, metrics, &events);
            write_subnet_file(self.settings, self.config, &new.subnet, self.backend.mtu())?;
        }
        self.backend.lease_acquired(&new)?;
        export_expiry(metrics, &new);
        self.renew_at = renew_at(&new, self.settings.renew_margin);
        self.watch = self.manager.watch(&new, metrics);
        self.complete_at = Some(Instant::now());
        self.lease = new;
        Ok(Flow::Continue)
    }

    /// A link notification arrived (or the notifications ended).
    fn link_notice(&mut self, change: Option<LinkChange>) {
        let ticks = &mut self.ticks;
        match change {
            None => {
                warning!(
                    "link notifications ended: reconciling every {:?} only",
                    self.settings.reconcile_every
                );
                self.links = None;
            }
            Some(LinkChange::Entry { kind, index, dst }) => {
                if self.backend.watched_entries().concern(kind, index, dst) {
                    ticks.entries_changed = true;
                }
            }
            Some(change) => {
                if concerns(&change, &self.backend.watched_links()) {
                    // The prompt reconcile compares everything, even if a tick comes first.
                    ticks.entries_changed = true;
                    ticks.debounce.event(Instant::now());
                    let what = describe(&change);
                    if !ticks.burst.contains(&what) {
                        ticks.burst.push(what);
                    }
                }
            }
        }
    }

    /// A reconcile is due: the tick, or the end of a burst of link notifications.
    fn tick(&mut self) {
        let ticks = &mut self.ticks;
        let prompted = ticks.debounce.due().is_some_and(|t| t <= Instant::now());
        ticks.debounce.fired();
        if !ticks.burst.is_empty() {
            info!(
                "link notifications ({}): reconciling",
                ticks.burst.join(", ")
            );
            ticks.burst.clear();
        }
        let quiet = self.links.is_some()
            && ticks.entries_heard
            && !ticks.entries_changed
            && self.backend.settled()
            && !prompted
            && ticks.last_full.elapsed() < FULL_RECONCILE_EVERY
            && !self.backend.watched_entries().is_empty();
        if quiet {
            self.backend.reconcile_without_entries();
        } else {
            reconcile_now(self.backend, self.settings);
            ticks.entries_changed = false;
            ticks.last_full = Instant::now();
        }
        ticks.reconcile_at = Instant::now() + self.settings.reconcile_every;
    }
}
