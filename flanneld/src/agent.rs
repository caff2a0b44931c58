//! The agent's life after start (Go's `main.go` from `RegisterNetwork` on): acquire the lease,
//! let the backend configure itself, write subnet.env, report ready, then one loop that
//! renews the lease before it runs out, watches every lease under `subnets/` from the
//! listing's revision (peers' changes to the backend; the node's own key deleted → acquired
//! again), recovers from compaction and lost connections by re-listing and diffing, and ends
//! on SIGTERM/SIGINT leaving everything in place. The backend reconciles every few seconds,
//! and promptly (a burst debounced) when the kernel notifies a change of one of its links.

use std::path::PathBuf;
use std::time::Duration;

use node_kernel::LinkChange;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, sleep_until};

use crate::backend::{Backend, BackendError};
use crate::cache::{Change, LeaseCache, LeaseEvent};
use crate::config::NetworkConfig;
use crate::health::{Readiness, sd_notify};
use crate::lease::Lease;
use crate::log::{error, info, warning};
use crate::manager::{LeaseError, LeaseManager};
use crate::metrics::{Metrics, WatchRestart};
use crate::store::{Store, StoreError, Watch, WatchBatch, WatchEvent};
use crate::subnet::SubnetKey;
use crate::subnet_env;

/// Go retries a failed renewal every minute.
pub const RENEW_RETRY: Duration = Duration::from_secs(60);
/// The longest wait between two attempts to acquire a lease while every subnet is leased.
pub const FULL_RETRY_MAX: Duration = Duration::from_secs(5);
/// The longest between two whole reconciles when the kernel notified no change of the
/// backend's entries (notifications are the fast path; this pass is the safety net).
pub const FULL_RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// What the agent says when it stops (SIGTERM/SIGINT).
const SHUTTING_DOWN: &str = "shutting down: the lease, subnet.env and routes stay in place";
/// Reconnection backoff, 100 ms doubling to 5 s (Go's watch backoff).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the loop needs besides the store and the backend.
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

/// How the agent hears of changes to the backend's kernel entries
/// ([`Backend::watched_entries`]); without that, every reconcile tick dumps them.
#[derive(Clone, Default)]
pub enum EntryNotices {
    /// Not at all.
    #[default]
    None,
    /// On the link channel, from the start.
    OnLinks,
    /// On the link channel once this has run, which the loop does after its first
    /// programming (a start with thousands of peers would be notified of each entry).
    Join(std::sync::Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>),
}

impl std::fmt::Debug for EntryNotices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EntryNotices::None => "None",
            EntryNotices::OnLinks => "OnLinks",
            EntryNotices::Join(_) => "Join",
        })
    }
}

/// The default of [`Settings::reconcile_every`].
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);

/// Link notifications as the agent receives them (a thread reading the kernel's forwards
/// them: see `crate::run`).
pub type LinkEvents = mpsc::Receiver<LinkChange>;

/// A burst of link notifications is one reconcile: due [`LINK_QUIET`] after the last one,
/// never later than [`LINK_LONGEST`] after the first.
pub const LINK_QUIET: Duration = Duration::from_millis(100);
/// See [`LINK_QUIET`].
pub const LINK_LONGEST: Duration = Duration::from_millis(500);

/// The debounce of link notifications (see [`LINK_QUIET`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Debounce {
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debounce {
    /// A notification arrived at `now`; true when it starts a burst.
    pub fn event(&mut self, now: Instant) -> bool {
        let starts = self.first.is_none();
        self.first.get_or_insert(now);
        self.last = Some(now);
        starts
    }

    /// When the reconcile is due; `None` without a pending notification.
    pub fn due(&self) -> Option<Instant> {
        Some((self.last? + LINK_QUIET).min(self.first? + LINK_LONGEST))
    }

    /// The reconcile ran: nothing is pending.
    pub fn fired(&mut self) {
        *self = Debounce::default();
    }
}

/// Whether a notification calls for a reconcile: it names one of `watched`, or
/// notifications were lost.
pub fn concerns(change: &LinkChange, watched: &[String]) -> bool {
    match change {
        LinkChange::Lost => true,
        _ => change
            .name()
            .is_some_and(|n| watched.iter().any(|w| w == n)),
    }
}

fn describe(change: &LinkChange) -> String {
    match change {
        LinkChange::Changed { name, index } => {
            format!("{} (index {index}) changed", name.as_deref().unwrap_or("?"))
        }
        LinkChange::Deleted { name, index } => {
            format!("{} (index {index}) deleted", name.as_deref().unwrap_or("?"))
        }
        LinkChange::Entry { kind, index, .. } => format!("a {kind:?} entry of link {index}"),
        LinkChange::Lost => "some lost".to_owned(),
    }
}

/// The next link notification; pending forever without a subscription.
async fn next_link(links: &mut Option<LinkEvents>) -> Option<LinkChange> {
    match links {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The watch's next batch; pending forever without a watch (listing again is due first).
async fn next_watch<W: Watch>(watcher: &mut Option<W>) -> Result<WatchBatch, StoreError> {
    match watcher {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`; forever when `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Acquiring the lease failed.
    #[error("failed to acquire lease: {0}")]
    Lease(#[from] LeaseError),
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

/// Waits until SIGTERM/SIGINT were received (the sender sent `true`).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        // The sender is gone: nobody can ask us to stop any more.
        std::future::pending::<()>().await;
    }
}

/// Sleeps `d` unless asked to stop first; true when asked to stop.
async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stopped(shutdown) => true,
        _ = sleep(d) => false,
    }
}

/// Runs the backend's reconcile now and exports what it did.
fn reconcile_now(backend: &mut dyn Backend, metrics: &Metrics) {
    let before = backend.repairs();
    backend.reconcile();
    let after = backend.repairs();
    metrics.reconciled(&after.since(before));
    metrics.peers_programmed(backend.backend_type(), backend.programmed());
    if after.total() != before.total() {
        info!("reconcile repaired the kernel state (totals so far: {after:?})");
    }
}

/// The reconcile tick kept while the loop waits on etcd, once the backend holds a lease:
/// an etcd that does not answer (partitioned, stopped) must not freeze the data path's
/// repairs, nor a stop request, for the seconds each call may take.
struct Upkeep<'a> {
    backend: &'a mut dyn Backend,
    settings: &'a Settings,
    /// When the next reconcile is due; `None` before the backend has a lease.
    reconcile_at: Option<&'a mut Instant>,
}

impl Upkeep<'_> {
    /// Awaits `fut`, reconciling when due meanwhile; `None` when asked to stop first.
    async fn wait<T>(
        &mut self,
        fut: impl std::future::Future<Output = T>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<T> {
        tokio::pin!(fut);
        loop {
            let due = self.reconcile_at.as_deref().copied();
            tokio::select! {
                r = &mut fut => return Some(r),
                _ = stopped(shutdown) => return None,
                _ = sleep_until_some(due) => {
                    reconcile_now(self.backend, &self.settings.metrics);
                    if let Some(at) = self.reconcile_at.as_deref_mut() {
                        *at = Instant::now() + self.settings.reconcile_every;
                    }
                }
            }
        }
    }
}

/// Acquires a lease, retrying what may pass (etcd unreachable, every subnet leased, every
/// pick lost to nodes starting at the same time: Go exits 1 and relies on a restart);
/// `None` when asked to stop first.
async fn acquire_until_stopped<S: Store>(
    manager: &mut LeaseManager<S>,
    config: &NetworkConfig,
    attrs: &crate::lease::LeaseAttrs,
    upkeep: &mut Upkeep<'_>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Lease>, AgentError> {
    let mut delay = Duration::from_secs(1);
    loop {
        let wait = match upkeep.wait(manager.acquire(config, attrs), shutdown).await {
            None => return Ok(None),
            Some(Ok(l)) => return Ok(Some(l)),
            Some(Err(LeaseError::Store(e))) => {
                error!("acquiring a lease: {e}; retrying in {delay:?}");
                delay
            }
            // A lease may be freed (a node removed, a lease expired): wait for one.
            Some(Err(e @ (LeaseError::OutOfSubnets { .. } | LeaseError::RaceLost(_)))) => {
                let wait = delay.min(FULL_RETRY_MAX);
                error!("failed to acquire lease: {e}; retrying in {wait:?}");
                wait
            }
            Some(Err(e)) => return Err(e.into()),
        };
        if upkeep.wait(sleep(wait), shutdown).await.is_none() {
            return Ok(None);
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Reads the network config, retrying every second as Go does (with a line naming the key
/// and how to create it); `None` when asked to stop first.
pub async fn wait_for_config<S: Store>(
    manager: &LeaseManager<S>,
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

enum Wake {
    Stop,
    Relist,
    Renew,
    Reconcile,
    Link(Option<LinkChange>),
    Watch(Result<WatchBatch, StoreError>),
}

/// The agent with its config and backend: runs until asked to stop (`Ok`) or a fatal error.
pub async fn run<S: Store>(
    manager: &mut LeaseManager<S>,
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
pub async fn run_with_links<S: Store>(
    manager: &mut LeaseManager<S>,
    config: &NetworkConfig,
    backend: &mut dyn Backend,
    settings: &Settings,
    ready: &Readiness,
    mut shutdown: watch::Receiver<bool>,
    mut links: Option<LinkEvents>,
) -> Result<(), AgentError> {
    let attrs = backend.lease_attrs();
    let acquired = {
        let mut upkeep = Upkeep {
            backend: &mut *backend,
            settings,
            reconcile_at: None,
        };
        acquire_until_stopped(manager, config, &attrs, &mut upkeep, &mut shutdown).await?
    };
    let Some(mut lease) = acquired else {
        return Ok(());
    };
    info!(
        "acquired lease {} ({})",
        lease.subnet,
        manager.lease_key(&lease.subnet)
    );
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

    let prefix = manager.subnets_prefix();
    let mut cache =
        LeaseCache::new(lease.subnet.v4).guarded(crate::peer::PeerCheck::new(config, &attrs));
    let mut renew_at = LeaseManager::<S>::renew_at(&lease, settings.renew_margin);
    let mut backoff = BACKOFF_MIN;
    let mut revision: Option<i64> = None; // None: list (again) before watching
    let mut watcher: Option<S::Watch> = None;
    // When the next listing is due after a failure; meanwhile the loop keeps reconciling,
    // renewing and answering signals (etcd down must not freeze the data path's repairs).
    let mut relist_at: Option<Instant> = None;
    let mut reconcile_at = Instant::now() + settings.reconcile_every;
    let mut debounce = Debounce::default();
    // What the pending burst of link notifications said, for the log.
    let mut burst: Vec<String> = Vec::new();
    // Whether the kernel may hold other entries than the last full reconcile left: a
    // notification about one of the backend's links, lost notifications, or no
    // notifications at all. When not, a tick skips the dumps (at 5,000 peers they were
    // nearly all the agent's idle CPU) until a full pass is due anyway.
    let mut entries_changed = true;
    let mut last_full = Instant::now();
    let mut entries_heard = matches!(settings.entry_notices, EntryNotices::OnLinks);
    // Awaits an etcd call with the reconcile tick kept and a stop request answered.
    macro_rules! waiting {
        ($fut:expr) => {{
            let mut upkeep = Upkeep {
                backend: &mut *backend,
                settings,
                reconcile_at: Some(&mut reconcile_at),
            };
            match upkeep.wait($fut, &mut shutdown).await {
                Some(r) => r,
                None => {
                    info!("{SHUTTING_DOWN}");
                    return Ok(());
                }
            }
        }};
    }
    loop {
        if revision.is_none() && relist_at.is_none_or(|t| t <= Instant::now()) {
            relist_at = None;
            watcher = None;
            match waiting!(manager.leases()) {
                Ok((leases, rev)) => {
                    // Ours only while it still names this node: another node may hold the
                    // subnet by now.
                    let still_ours = leases.iter().any(|l| {
                        l.subnet == lease.subnet && l.attrs.public_ip == lease.attrs.public_ip
                    });
                    if !still_ours {
                        metrics.lease_lost();
                        warning!(
                            "the node's lease {} was deleted (by an admin, or it expired after failed renewals): \
                             acquiring one again (Go flanneld exits 0 here, and is not restarted under Restart=on-failure)",
                            lease.subnet
                        );
                        let again = reacquire(
                            manager,
                            config,
                            backend,
                            settings,
                            &mut cache,
                            &lease,
                            &mut reconcile_at,
                            &mut shutdown,
                        )
                        .await?;
                        let Some(again) = again else {
                            info!("{SHUTTING_DOWN}");
                            return Ok(());
                        };
                        lease = again;
                        renew_at = LeaseManager::<S>::renew_at(&lease, settings.renew_margin);
                        export_expiry(metrics, &lease);
                        continue;
                    }
                    let events = cache.reset(leases);
                    hand(backend, metrics, &events);
                    revision = Some(rev);
                    if let (false, EntryNotices::Join(join)) =
                        (entries_heard, &settings.entry_notices)
                    {
                        // Changes before this are the first whole reconcile's to find
                        // (`entries_changed` is still set).
                        match join() {
                            Ok(()) => entries_heard = true,
                            Err(e) => warning!(
                                "subscribing to neighbour and route notifications: {e}; every reconcile compares the kernel"
                            ),
                        }
                    }
                }
                Err(e) => {
                    warning!("listing leases: {e}; retrying in {backoff:?}");
                    relist_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        if let (Some(rev), None) = (revision, &watcher) {
            match waiting!(manager.store().watch(&prefix, rev + 1)) {
                Ok(w) => watcher = Some(w),
                Err(e) => {
                    warning!("watching {prefix}: {e}; retrying in {backoff:?}");
                    metrics.watch_restart(WatchRestart::Broken);
                    revision = None;
                    relist_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        let wake = tokio::select! {
            _ = stopped(&mut shutdown) => Wake::Stop,
            _ = sleep_until(renew_at) => Wake::Renew,
            _ = sleep_until(reconcile_at) => Wake::Reconcile,
            _ = sleep_until_some(debounce.due()) => Wake::Reconcile,
            l = next_link(&mut links) => Wake::Link(l),
            _ = sleep_until_some(relist_at) => Wake::Relist,
            r = next_watch(&mut watcher) => Wake::Watch(r),
        };
        // A watch event's latency runs from here to the backend having programmed it.
        let woke = std::time::Instant::now();
        match wake {
            Wake::Relist => {}
            Wake::Link(None) => {
                warning!(
                    "link notifications ended: reconciling every {:?} only",
                    settings.reconcile_every
                );
                links = None;
            }
            Wake::Link(Some(LinkChange::Entry { kind, index, dst })) => {
                if backend.watched_entries().concern(kind, index, dst) {
                    entries_changed = true;
                }
            }
            Wake::Link(Some(change)) => {
                if concerns(&change, &backend.watched_links()) {
                    // The prompt reconcile compares everything, even if a tick comes first.
                    entries_changed = true;
                    debounce.event(Instant::now());
                    let what = describe(&change);
                    if !burst.contains(&what) {
                        burst.push(what);
                    }
                }
            }
            Wake::Reconcile => {
                let prompted = debounce.due().is_some_and(|t| t <= Instant::now());
                debounce.fired();
                if !burst.is_empty() {
                    info!("link notifications ({}): reconciling", burst.join(", "));
                    burst.clear();
                }
                let quiet = links.is_some()
                    && entries_heard
                    && !entries_changed
                    && backend.settled()
                    && !prompted
                    && last_full.elapsed() < FULL_RECONCILE_EVERY
                    && !backend.watched_entries().is_empty();
                if quiet {
                    backend.reconcile_without_entries();
                } else {
                    reconcile_now(backend, metrics);
                    entries_changed = false;
                    last_full = Instant::now();
                }
                reconcile_at = Instant::now() + settings.reconcile_every;
            }
            Wake::Stop => {
                info!("{SHUTTING_DOWN}");
                return Ok(());
            }
            Wake::Renew => match waiting!(manager.renew(&lease)) {
                Ok(l) => {
                    lease = l;
                    renew_at = LeaseManager::<S>::renew_at(&lease, settings.renew_margin);
                    metrics.renewal(true);
                    export_expiry(metrics, &lease);
                    info!("renewed lease {}", lease.subnet);
                }
                Err(e @ LeaseError::Taken { .. }) => {
                    // The re-listing finds the lease gone and acquires another.
                    metrics.renewal(false);
                    error!("{e}: acquiring another subnet");
                    revision = None;
                    relist_at = None;
                    watcher = None;
                    renew_at = Instant::now() + settings.renew_margin;
                }
                Err(e) => {
                    metrics.renewal(false);
                    // Within the margin (a short test TTL), else the lease runs out first.
                    let retry = RENEW_RETRY.min(settings.renew_margin / 2);
                    error!(
                        "renewing lease {}: {e}; retrying in {retry:?}",
                        lease.subnet
                    );
                    renew_at = Instant::now() + retry;
                }
            },
            Wake::Watch(Ok(WatchBatch::Compacted { compact_revision })) => {
                warning!(
                    "watch start revision was compacted (oldest kept {compact_revision}): re-listing leases"
                );
                metrics.watch_restart(WatchRestart::Compacted);
                revision = None;
            }
            Wake::Watch(Err(e)) => {
                warning!("watch of {prefix} failed: {e}; re-listing in {backoff:?}");
                metrics.watch_restart(WatchRestart::Broken);
                revision = None;
                watcher = None;
                relist_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Wake::Watch(Ok(WatchBatch::Events {
                revision: rev,
                events,
            })) => {
                backoff = BACKOFF_MIN;
                revision = Some(rev);
                let own_key = manager.lease_key(&lease.subnet);
                let mut changes = Vec::new();
                let mut own_deleted = false;
                for ev in events {
                    match ev {
                        WatchEvent::Delete(key) if key == own_key => own_deleted = true,
                        WatchEvent::Put(kv) if kv.key == own_key => {
                            // Our key written by someone else: still ours if it names our
                            // PublicIP, else the subnet is lost (never overwrite a peer).
                            let theirs = manager
                                .parse_lease(&kv)
                                .is_none_or(|l| l.attrs.public_ip != lease.attrs.public_ip);
                            if theirs {
                                error!(
                                    "the node's lease {own_key} was overwritten with another node's value: acquiring another subnet"
                                );
                                own_deleted = true;
                            } else {
                                own_deleted = false;
                                if kv.lease != lease.lease_id {
                                    waiting!(refresh_own(manager, &mut lease, &kv));
                                    renew_at =
                                        LeaseManager::<S>::renew_at(&lease, settings.renew_margin);
                                    export_expiry(metrics, &lease);
                                }
                            }
                        }
                        WatchEvent::Put(kv) => match manager.parse_lease(&kv) {
                            Some(l) => changes.push(Change::Put(l)),
                            // A peer's key now holding junk: what it had goes.
                            None => changes.extend(
                                manager.subnet_of(&kv.key).map(|sn| Change::Invalid(sn.v4)),
                            ),
                        },
                        WatchEvent::Delete(key) => match manager.subnet_of(&key) {
                            Some(sn) => changes.push(Change::Delete(sn.v4)),
                            None => warning!(
                                "skipping deletion of {}: not a subnet key",
                                crate::log::shown(&key)
                            ),
                        },
                    }
                }
                // One at a time, so that each event's latency is its own.
                for ev in cache.update(changes) {
                    hand(backend, metrics, std::slice::from_ref(&ev));
                    metrics.event_programmed(woke.elapsed());
                }
                if own_deleted {
                    // The re-listing at the top of the loop finds the lease gone and acquires
                    // one again (the old subnet may be a peer's by then, and changes made
                    // meanwhile were not watched).
                    revision = None;
                }
            }
        }
    }
}

/// Someone else wrote our key (an admin's `etcdctl put`): take its lease's expiry.
async fn refresh_own<S: Store>(
    manager: &LeaseManager<S>,
    lease: &mut Lease,
    kv: &crate::store::KeyValue,
) {
    lease.lease_id = kv.lease;
    lease.expiration = match manager.store().time_to_live(kv.lease).await {
        Ok(Some(ttl)) => Some(Instant::now() + ttl),
        Ok(None) => Some(Instant::now()),
        Err(e) => {
            warning!("reading the TTL of lease {:x}: {e}", kv.lease);
            lease.expiration
        }
    };
}

/// Acquires the node's lease again, preferring the subnet it had; retried until it works or
/// the agent is stopped (`None`), reconciling meanwhile. A different subnet rewrites
/// subnet.env (pods keep their old addresses until recreated: logged).
#[allow(clippy::too_many_arguments)] // the loop's state, lent for the wait
async fn reacquire<S: Store>(
    manager: &mut LeaseManager<S>,
    config: &NetworkConfig,
    backend: &mut dyn Backend,
    settings: &Settings,
    cache: &mut LeaseCache,
    old: &Lease,
    reconcile_at: &mut Instant,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Lease>, AgentError> {
    manager.prefer(&old.subnet);
    let acquired = {
        let mut upkeep = Upkeep {
            backend: &mut *backend,
            settings,
            reconcile_at: Some(reconcile_at),
        };
        acquire_until_stopped(manager, config, &old.attrs, &mut upkeep, shutdown).await?
    };
    let Some(new) = acquired else {
        return Ok(None);
    };
    info!("re-acquired lease {}", new.subnet);
    if new.subnet != old.subnet {
        warning!(
            "the node's subnet changed from {} to {}: pods started before keep addresses of the old subnet until recreated",
            old.subnet,
            new.subnet
        );
        let events = cache.set_own(new.subnet.v4);
        hand(backend, &settings.metrics, &events);
        write_subnet_file(settings, config, &new.subnet, backend.mtu())?;
    }
    backend.lease_acquired(&new)?;
    export_expiry(&settings.metrics, &new);
    Ok(Some(new))
}
