//! The watch of every lease under `<prefix>/subnets/` (Go's `WatchLeases`): a listing, then
//! a watch from the listing's revision; a compacted start revision, a broken watch or an
//! unreachable etcd lead to listing again (after a backoff of 100 ms doubling to 5 s, never a
//! hot loop), and the agent's cache diffs the new listing with what it holds. The node's own
//! key is watched too: deleted, or written with another node's value, it is reported lost;
//! rewritten for this node (an operator's put), its new expiry is reported.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::keys::Keys;
use super::store::{KeyValue, Store, Watch, WatchBatch, WatchEvent};
use crate::cache::Change;
use crate::lease::Lease;
use crate::log::{error, shown, warning};
use crate::manager::{LeaseUpdate, LeaseWatch};
use crate::metrics::{Metrics, WatchRestart};

/// Reconnection backoff, 100 ms doubling to 5 s (Go's watch backoff).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The watch's place between two updates.
struct State<S: Store> {
    store: S,
    keys: Keys,
    own: Lease,
    /// The etcd lease the node's own key is on as its manager last wrote it.
    own_lease: Rc<Cell<i64>>,
    metrics: Metrics,
    /// The revision seen last; `None`: list (again) before watching.
    revision: Option<i64>,
    watcher: Option<S::Watch>,
    backoff: Duration,
    /// When the next listing is due after a failure.
    relist_at: Option<Instant>,
    /// Updates found together, handed out one by one.
    pending: VecDeque<LeaseUpdate>,
}

/// Watches the leases under `keys`; `own` is the node's lease.
pub fn watch<S: Store + Clone + 'static>(
    store: &S,
    keys: &Keys,
    own: &Lease,
    own_lease: &Rc<Cell<i64>>,
    metrics: &Metrics,
) -> LeaseWatch {
    let state = State {
        store: store.clone(),
        keys: keys.clone(),
        own: own.clone(),
        own_lease: own_lease.clone(),
        metrics: metrics.clone(),
        revision: None,
        watcher: None,
        backoff: BACKOFF_MIN,
        relist_at: None,
        pending: VecDeque::new(),
    };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        let update = s.next().await;
        Some((update, s))
    }))
}

impl<S: Store> State<S> {
    /// Waits `backoff` before the next listing, and doubles it.
    fn back_off(&mut self) {
        self.revision = None;
        self.watcher = None;
        self.relist_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    async fn next(&mut self) -> LeaseUpdate {
        loop {
            if let Some(u) = self.pending.pop_front() {
                return u;
            }
            let Some(rev) = self.revision else {
                if let Some(t) = self.relist_at.take() {
                    sleep_until(t).await;
                }
                if let Some(u) = self.list().await {
                    return u;
                }
                continue;
            };
            let prefix = self.keys.subnets_prefix();
            let watcher = match &mut self.watcher {
                Some(w) => w,
                None => match self.store.watch(&prefix, rev + 1).await {
                    Ok(w) => self.watcher.insert(w),
                    Err(e) => {
                        warning!("watching {prefix}: {e}; retrying in {:?}", self.backoff);
                        self.metrics.watch_restart(WatchRestart::Broken);
                        self.back_off();
                        continue;
                    }
                },
            };
            match watcher.next().await {
                Ok(WatchBatch::Compacted { compact_revision }) => {
                    warning!(
                        "watch start revision was compacted (oldest kept {compact_revision}): re-listing leases"
                    );
                    self.metrics.watch_restart(WatchRestart::Compacted);
                    self.revision = None;
                    self.watcher = None;
                }
                Err(e) => {
                    warning!(
                        "watch of {prefix} failed: {e}; re-listing in {:?}",
                        self.backoff
                    );
                    self.metrics.watch_restart(WatchRestart::Broken);
                    self.back_off();
                }
                Ok(WatchBatch::Events { revision, events }) => {
                    self.backoff = BACKOFF_MIN;
                    self.revision = Some(revision);
                    self.events(events).await;
                }
            }
        }
    }

    /// Lists every lease: the snapshot, or the own lease lost; `None` after a failure (the
    /// next listing is due after the backoff).
    async fn list(&mut self) -> Option<LeaseUpdate> {
        self.watcher = None;
        match self.store.list(&self.keys.subnets_prefix()).await {
            Ok((kvs, rev)) => {
                let leases: Vec<Lease> = kvs
                    .iter()
                    .filter_map(|kv| self.keys.parse_lease(kv))
                    .collect();
                // Ours only while it still names this node: another node may hold the
                // subnet by now.
                let still_ours = leases.iter().any(|l| {
                    l.subnet == self.own.subnet && l.attrs.public_ip == self.own.attrs.public_ip
                });
                if !still_ours {
                    return Some(LeaseUpdate::OwnLost(format!(
                        "the node's lease {} was deleted (by an admin, or it expired after failed renewals)",
                        self.own.subnet
                    )));
                }
                self.revision = Some(rev);
                Some(LeaseUpdate::Snapshot(leases))
            }
            Err(e) => {
                warning!("listing leases: {e}; retrying in {:?}", self.backoff);
                self.back_off();
                None
            }
        }
    }

    /// One batch of watched events: the peers' changes, then what happened to the own key.
    async fn events(&mut self, events: Vec<WatchEvent>) {
        let own_key = self.keys.lease_key(&self.own.subnet);
        let mut changes = Vec::new();
        let mut lost = None;
        let mut rewritten = None;
        for ev in events {
            match ev {
                WatchEvent::Delete(key) if key == own_key => {
                    lost = Some(format!("the node's lease {own_key} was deleted"));
                }
                WatchEvent::Put(kv) if kv.key == own_key => {
                    // Our key written by someone else: still ours if it names our PublicIP,
                    // else the subnet is lost (never overwrite a peer).
                    let theirs = self
                        .keys
                        .parse_lease(&kv)
                        .is_none_or(|l| l.attrs.public_ip != self.own.attrs.public_ip);
                    if theirs {
                        error!(
                            "the node's lease {own_key} was overwritten with another node's value: acquiring another subnet"
                        );
                        lost = Some(format!("the node's lease {own_key} names another node now"));
                    } else {
                        lost = None;
                        // The manager's own renewals write it on the lease it keeps here.
                        if kv.lease != self.own_lease.get() {
                            rewritten = Some(kv);
                        }
                    }
                }
                WatchEvent::Put(kv) => match self.keys.parse_lease(&kv) {
                    Some(l) => changes.push(Change::Put(l)),
                    // A peer's key now holding junk: what it had goes.
                    None => changes.extend(
                        self.keys
                            .subnet_of(&kv.key)
                            .and_then(|sn| sn.id())
                            .map(Change::Invalid),
                    ),
                },
                WatchEvent::Delete(key) => match self.keys.subnet_of(&key).and_then(|sn| sn.id()) {
                    Some(id) => changes.push(Change::Delete(id)),
                    None => warning!("skipping deletion of {}: not a subnet key", shown(&key)),
                },
            }
        }
        if !changes.is_empty() {
            self.pending.push_back(LeaseUpdate::Changes(changes));
        }
        if let Some(why) = lost {
            self.pending.push_back(LeaseUpdate::OwnLost(why));
        } else if let Some(kv) = rewritten
            && let Some(own) = self.refresh_own(&kv).await
        {
            self.pending.push_back(LeaseUpdate::Own(own));
        }
    }

    /// Someone else wrote our key (an admin's `etcdctl put`): the lease with that etcd
    /// lease's expiry; `None` when its TTL cannot be read (the renewal keeps its schedule).
    async fn refresh_own(&mut self, kv: &KeyValue) -> Option<Lease> {
        self.own_lease.set(kv.lease);
        let expiration = match self.store.time_to_live(kv.lease).await {
            Ok(Some(ttl)) => Instant::now() + ttl,
            Ok(None) => Instant::now(),
            Err(e) => {
                warning!("reading the TTL of lease {:x}: {e}", kv.lease);
                return None;
            }
        };
        Some(Lease {
            lease_id: kv.lease,
            expiration: Some(expiration),
            ..self.own.clone()
        })
    }
}
