//! The watch of every Node as the peers' leases (Go's node informer, without its cache of
//! whole objects): a listing in pages, then a watch from the listing's resourceVersion; a
//! watch the apiserver ends is resumed from the last resourceVersion seen (events or
//! bookmarks), one answered "410 Gone" (history compacted, apiserver restarted) leads to a
//! listing again, which the agent's cache diffs with what it holds; errors back off from
//! 100 ms to 5 s, never a hot loop. Each Node becomes a lease on the spot (`node.rs`): only
//! managed nodes count, a node deleted or no longer managed removes its peer.
//!
//! The reading runs in a task of its own and hands updates over a queue of
//! `EVENT_QUEUE_DEPTH` (Go's event channel): while the backend is busy, the reader keeps up
//! with the apiserver until the queue is full, then waits.
//!
//! The node's own Node is watched too: registered again without flannel's annotations (a
//! `kubectl delete node` and the kubelet's re-registration), or given other podCIDRs, the
//! node's lease is reported lost, and the agent acquires (annotates) it again.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use ipnetwork::IpNetwork;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout_at};

use super::annotations::Annotations;
use super::api::{ApiError, NodeApi, NodeEvent};
use super::node::{Families, NodeLite, pod_cidrs, to_lease};
use crate::cache::Change;
use crate::lease::Lease;
use crate::log::{info, warning};
use crate::manager::{LeaseUpdate, LeaseWatch};
use crate::metrics::{Metrics, WatchRestart};
use crate::subnet::SubnetKey;

/// Nodes asked for per page of a listing.
pub const PAGE: u32 = 500;
/// How long the apiserver keeps one watch request open (client-go picks 5 to 10 minutes).
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(300);
/// How much longer than [`WATCH_TIMEOUT`] a silent watch is given before it counts as
/// broken (an apiserver frozen or cut off never ends it).
pub const WATCH_GRACE: Duration = Duration::from_secs(30);
/// A watch ending sooner than this without an event waits for the backoff before the next.
const SHORT_WATCH: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A listing of every Node as leases.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    /// The managed nodes' leases (the own node's too: the cache leaves it out).
    pub leases: Vec<Lease>,
    /// The listing's resourceVersion.
    pub resource_version: String,
    /// The own Node as listed; `None` when it is not there.
    pub own: Option<NodeLite>,
    /// How many Nodes were listed.
    pub nodes: usize,
    /// The Nodes whose lease is in `leases`, each with its lease's cache key.
    pub managed: BTreeMap<String, IpNetwork>,
    /// How long the listing took, every page.
    pub took: Duration,
    /// The Nodes skipped as unusable.
    pub skipped: usize,
}

/// What the watch needs to know.
#[derive(Debug, Clone)]
pub struct Watcher<A> {
    /// The calls.
    pub api: A,
    /// The annotation names.
    pub names: Annotations,
    /// The families the network enables.
    pub families: Families,
    /// The node's own name.
    pub own_name: String,
    /// `EVENT_QUEUE_DEPTH`.
    pub depth: usize,
    /// Where restarts are counted.
    pub metrics: Metrics,
    /// How long one watch lasts ([`WATCH_TIMEOUT`] unless a test shortens it).
    pub timeout: Duration,
}

/// Nodes whose lease is unusable, with the reason last logged (so a node whose status
/// changes every few seconds is not logged each time).
#[derive(Debug, Default)]
struct Skipped(BTreeMap<String, String>);

impl Skipped {
    fn skip(&mut self, node: &str, why: String) {
        if self.0.get(node) != Some(&why) {
            warning!("skipping node {}: {why}", crate::log::shown(node));
            self.0.insert(node.to_owned(), why);
        }
    }

    fn clear(&mut self, node: &str) {
        self.0.remove(node);
    }

    /// Forgets the nodes not in `listed` (deleted while no watch ran).
    fn keep_only(&mut self, listed: &BTreeSet<String>) {
        self.0.retain(|node, _| listed.contains(node));
    }
}

/// Another Node that was handed `id` already, if any.
fn holder_of<'a>(
    managed: &'a BTreeMap<String, IpNetwork>,
    id: IpNetwork,
    name: &str,
) -> Option<&'a str> {
    managed
        .iter()
        .find(|(other, sn)| **sn == id && other.as_str() != name)
        .map(|(other, _)| other.as_str())
}

fn claimed(id: IpNetwork, holder: &str) -> String {
    format!(
        "its podCIDR {id} is already Node {}'s",
        crate::log::shown(holder)
    )
}

/// Every Node, page by page, as leases.
pub async fn list_all<A: NodeApi>(
    api: &A,
    names: &Annotations,
    families: Families,
    own_name: &str,
) -> Result<Listing, ApiError> {
    let mut skipped = Skipped::default();
    list_pages(api, names, families, own_name, &mut skipped).await
}

async fn list_pages<A: NodeApi>(
    api: &A,
    names: &Annotations,
    families: Families,
    own_name: &str,
    skipped: &mut Skipped,
) -> Result<Listing, ApiError> {
    let started = Instant::now();
    let mut listing = Listing {
        leases: Vec::new(),
        resource_version: String::new(),
        own: None,
        nodes: 0,
        managed: BTreeMap::new(),
        took: Duration::ZERO,
        skipped: 0,
    };
    let mut listed = BTreeSet::new();
    // Which Node holds each subnet so far.
    let mut holders: BTreeMap<IpNetwork, String> = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = api.list(PAGE, &token).await?;
        listing.nodes += page.items.len();
        for node in page.items {
            match to_lease(&node, names, families) {
                Ok(Some(l)) => {
                    let Some(id) = l.subnet.id() else { continue };
                    let own = node.metadata.name == own_name;
                    // By subnet: a scan of `managed` per Node made a 5,000-Node listing
                    // compare 12.5 million pairs.
                    match holders.get(&id) {
                        Some(holder) if !own && holder != &node.metadata.name => {
                            skipped.skip(&node.metadata.name, claimed(id, holder));
                            continue;
                        }
                        _ => {}
                    }
                    holders.insert(id, node.metadata.name.clone());
                    skipped.clear(&node.metadata.name);
                    listing.managed.insert(node.metadata.name.clone(), id);
                    listing.leases.push(l);
                }
                Ok(None) => {}
                Err(why) => skipped.skip(&node.metadata.name, why),
            }
            listed.insert(node.metadata.name.clone());
            if node.metadata.name == own_name {
                listing.own = Some(node);
            }
        }
        // The resourceVersion of a paged listing is its first page's.
        if listing.resource_version.is_empty() {
            listing.resource_version = page.metadata.resource_version;
        }
        if page.metadata.continue_token.is_empty() {
            skipped.keep_only(&listed);
            listing.took = started.elapsed();
            listing.skipped = skipped.0.len();
            return Ok(listing);
        }
        token = page.metadata.continue_token;
    }
}

impl<A: NodeApi> Watcher<A> {
    /// Starts the watch for the node holding `own`, beginning with `initial` when given
    /// (the listing made at start).
    pub fn start(self, own: &Lease, initial: Option<Listing>) -> LeaseWatch {
        let (tx, rx) = mpsc::channel(self.depth.max(1));
        let own = own.subnet;
        let task = tokio::spawn(async move {
            let mut run = Run {
                w: self,
                own,
                tx,
                resource_version: None,
                backoff: BACKOFF_MIN,
                skipped: Skipped::default(),
                own_deleted: false,
                just_listed: false,
                managed: BTreeMap::new(),
                failures: crate::log::Repeats::default(),
            };
            run.run(initial).await;
        });
        Box::pin(Queued {
            rx,
            task: task.abort_handle(),
        })
    }
}

/// The updates of a watch task; dropping it ends the task.
struct Queued {
    rx: mpsc::Receiver<LeaseUpdate>,
    task: tokio::task::AbortHandle,
}

impl Stream for Queued {
    type Item = LeaseUpdate;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LeaseUpdate>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The watch task's state.
struct Run<A> {
    w: Watcher<A>,
    own: SubnetKey,
    tx: mpsc::Sender<LeaseUpdate>,
    /// Where the next watch starts; `None`: list first.
    resource_version: Option<String>,
    backoff: Duration,
    skipped: Skipped,
    /// The own Node was deleted: waiting for it to be registered again.
    own_deleted: bool,
    /// Nothing was watched since the last listing: a 410 now means the apiserver cannot
    /// watch from its own listings, and listing again at once would loop.
    just_listed: bool,
    /// The Nodes whose lease the agent was given, each with the lease's cache key: a change
    /// of any other Node (the kubelets' status updates of unmanaged ones) does not wake the
    /// agent, and a Node's peer is removed by the key it was handed under.
    managed: BTreeMap<String, IpNetwork>,
    /// The last failure logged, and when.
    failures: crate::log::Repeats,
}

/// Whether the watch task goes on.
enum Next {
    Go,
    End,
}

impl<A: NodeApi> Run<A> {
    async fn run(&mut self, initial: Option<Listing>) {
        if let Some(l) = initial {
            self.record(&l);
            // Made before the node's annotations were written: its own Node is not judged.
            self.resource_version = Some(l.resource_version);
            self.managed = l.managed;
            if self.send(LeaseUpdate::Snapshot(l.leases)).await.is_err() {
                return;
            }
        }
        loop {
            let next = match self.resource_version.clone() {
                None => self.relist().await,
                Some(rv) => self.watch(&rv).await,
            };
            if let Next::End = next {
                return;
            }
        }
    }

    /// Says why the watch or the listing failed; the same failure again (an apiserver down,
    /// a revoked permission: every few seconds for as long as it lasts) is said again once a
    /// minute only.
    fn failed(&mut self, why: &str, then: &str) {
        if self.failures.due(why) {
            warning!(
                "{why}; {then} in {:?} (retried every few seconds; the same error is logged again once a minute)",
                self.backoff
            );
        }
    }

    async fn send(&self, u: LeaseUpdate) -> Result<(), ()> {
        self.tx.send(u).await.map_err(drop)
    }

    async fn back_off(&mut self) {
        sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn record(&self, l: &Listing) {
        let counts = (l.nodes, l.managed.len(), l.skipped);
        self.w.metrics.node_listing(l.took, Some(counts));
    }

    async fn relist(&mut self) -> Next {
        let w = &self.w;
        let started = Instant::now();
        match list_pages(&w.api, &w.names, w.families, &w.own_name, &mut self.skipped).await {
            Ok(listing) => {
                self.record(&listing);
                self.just_listed = true;
                self.resource_version = Some(listing.resource_version);
                self.managed = listing.managed;
                match &listing.own {
                    None => self.own_gone(),
                    Some(n) => {
                        if let Some(why) = self.own_changed(n) {
                            let _ = self.send(LeaseUpdate::OwnLost(why)).await;
                            return Next::End;
                        }
                    }
                }
                match self.send(LeaseUpdate::Snapshot(listing.leases)).await {
                    Ok(()) => Next::Go,
                    Err(()) => Next::End,
                }
            }
            Err(e) => {
                self.failed(&e.to_string(), "listing again");
                self.w.metrics.node_listing(started.elapsed(), None);
                self.w.metrics.watch_restart(WatchRestart::Broken);
                self.back_off().await;
                Next::Go
            }
        }
    }

    async fn watch(&mut self, rv: &str) -> Next {
        let started = Instant::now();
        let limit = self.w.timeout;
        // A silent watch gets a grace past its timeout: a tenth of it, at most 30 s.
        let grace = (limit / 10).min(WATCH_GRACE);
        let mut events = match self.w.api.watch(rv, limit).await {
            Ok(ev) => ev,
            Err(e) if e.code() == Some(410) => {
                self.expired(&e.to_string()).await;
                return Next::Go;
            }
            Err(e) => {
                self.failed(&e.to_string(), "watching again");
                self.w.metrics.watch_restart(WatchRestart::Broken);
                self.back_off().await;
                return Next::Go;
            }
        };
        let deadline = started + limit + grace;
        let mut seen = false;
        loop {
            let ev = match timeout_at(deadline, events.next()).await {
                Err(_) => {
                    warning!(
                        "the watch of nodes did not end {grace:?} past its {limit:?} timeout: watching again"
                    );
                    self.w.metrics.watch_restart(WatchRestart::Broken);
                    return Next::Go;
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    self.failed(&e.to_string(), "watching again");
                    self.w.metrics.watch_restart(WatchRestart::Broken);
                    self.back_off().await;
                    return Next::Go;
                }
                Ok(Some(Ok(ev))) => ev,
            };
            // Said once the watch works again after failures (which said why).
            if !seen && self.failures.clear() {
                info!(
                    "watching nodes again from resourceVersion {}",
                    crate::log::shown(rv)
                );
            }
            seen = true;
            if !matches!(ev, NodeEvent::Gone(_)) {
                self.just_listed = false;
                self.backoff = BACKOFF_MIN;
            }
            let update = match ev {
                NodeEvent::Bookmark(rv) => {
                    self.resource_version = Some(rv);
                    None
                }
                NodeEvent::Gone(why) => {
                    self.expired(&why).await;
                    return Next::Go;
                }
                NodeEvent::Error(e) => {
                    self.failed(&e.to_string(), "watching again");
                    self.w.metrics.watch_restart(WatchRestart::Broken);
                    self.back_off().await;
                    return Next::Go;
                }
                NodeEvent::Added(n) | NodeEvent::Modified(n) => {
                    self.resource_version = Some(n.metadata.resource_version.clone());
                    if n.metadata.name == self.w.own_name {
                        self.own_deleted = false;
                        self.own_event(&n).await
                    } else {
                        self.put(&n)
                    }
                }
                NodeEvent::Deleted(n) => {
                    self.resource_version = Some(n.metadata.resource_version.clone());
                    if n.metadata.name == self.w.own_name {
                        self.own_gone();
                        None
                    } else {
                        self.skipped.clear(&n.metadata.name);
                        self.gone(&n)
                    }
                }
            };
            if let Some(u) = update {
                let lost = matches!(u, LeaseUpdate::OwnLost(_));
                if self.send(u).await.is_err() || lost {
                    return Next::End;
                }
            }
        }
        // The apiserver ended the watch (its timeout): resume where it left off.
        if !seen && started.elapsed() < SHORT_WATCH {
            self.back_off().await;
        } else if started.elapsed() >= SHORT_WATCH {
            self.backoff = BACKOFF_MIN;
        }
        Next::Go
    }

    /// A watch answered 410 Gone: its start is no longer in the apiserver's history. Right
    /// after a listing, the next one waits for the backoff.
    async fn expired(&mut self, why: &str) {
        let why = crate::log::bounded(why);
        self.w.metrics.watch_restart(WatchRestart::Compacted);
        self.resource_version = None;
        if self.just_listed {
            warning!(
                "the watch of nodes from a fresh listing was refused ({why}): listing again in {:?}",
                self.backoff
            );
            self.back_off().await;
        } else {
            warning!("the watch of nodes lost its place ({why}): listing again");
        }
    }

    /// A Node other than ours added or changed.
    fn put(&mut self, n: &NodeLite) -> Option<LeaseUpdate> {
        let name = &n.metadata.name;
        match to_lease(n, &self.w.names, self.w.families) {
            Ok(Some(l)) => {
                let id = l.subnet.id()?;
                // Two Nodes with one podCIDR: the first keeps it (its route must not go when
                // the second is deleted); the second is skipped.
                if let Some(holder) = holder_of(&self.managed, id, name) {
                    let why = claimed(id, holder);
                    self.skipped.skip(name, why);
                    return self.gone(n);
                }
                self.skipped.clear(name);
                let mut changes = Vec::with_capacity(2);
                // Handed under another key before (its podCIDRs changed): that peer goes.
                if let Some(old) = self.managed.insert(name.clone(), id)
                    && old != id
                {
                    changes.push(Change::Invalid(old));
                }
                changes.push(Change::Put(l));
                Some(LeaseUpdate::Changes(changes))
            }
            // Not (or no longer) managed: a peer it was goes (Go keeps it).
            Ok(None) => self.gone(n),
            Err(why) => {
                self.skipped.skip(name, why);
                self.gone(n)
            }
        }
    }

    /// An event of the own Node: the lease is lost when the Node as it is now (not as the
    /// event, which may predate the node's own annotating, shows it) lacks it.
    async fn own_event(&mut self, n: &NodeLite) -> Option<LeaseUpdate> {
        self.own_changed(n)?;
        match self.w.api.node(&self.w.own_name).await {
            Ok(Some(now)) => self.own_changed(&now).map(LeaseUpdate::OwnLost),
            Ok(None) => {
                self.own_gone();
                None
            }
            // Judged again at the next event or listing.
            Err(e) => {
                warning!("{e}: this node's Node is checked again at its next change");
                None
            }
        }
    }

    /// The change a Node that no longer gives a lease makes: none unless it gave one, then
    /// the removal of the peer under the key it was handed (not the event's podCIDRs, which
    /// a Node's last state may lack).
    fn gone(&mut self, n: &NodeLite) -> Option<LeaseUpdate> {
        let id = self.managed.remove(&n.metadata.name)?;
        Some(LeaseUpdate::Changes(vec![Change::Invalid(id)]))
    }

    fn own_gone(&mut self) {
        if !self.own_deleted {
            warning!(
                "this node's Node {} was deleted: its lease, subnet.env and routes stay; it is annotated again once registered again",
                self.w.own_name
            );
            self.own_deleted = true;
        }
    }

    /// Why the own Node no longer carries the node's lease, if it does not.
    fn own_changed(&self, n: &NodeLite) -> Option<String> {
        let managed = n
            .metadata
            .annotations
            .get(&self.w.names.subnet_kube_managed)
            .map(String::as_str)
            == Some("true");
        if !managed {
            return Some(format!(
                "this node's Node {} lacks flannel's annotations (registered again?)",
                self.w.own_name
            ));
        }
        let f = self.w.families;
        match pod_cidrs(&n.spec) {
            Ok((v4, v6)) if (v4 == self.own.v4 || !f.v4) && (v6 == self.own.v6 || !f.v6) => None,
            Ok((v4, v6)) => Some(format!(
                "this node's podCIDRs changed to {}{}",
                v4.map(|n| n.to_string()).unwrap_or_default(),
                v6.map(|n| format!(" {n}")).unwrap_or_default()
            )),
            Err(e) => {
                info!("this node's Node: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::fake::FakeApi;

    #[tokio::test(start_paused = true)]
    async fn a_listing_forgets_the_skipped_nodes_no_longer_there() {
        // Before: a skipped node's entry outlived the node: with nodes coming and going
        // (autoscaled pools), the map only grew.
        let api = FakeApi::default();
        let names = Annotations::new("flannel.alpha.coreos.com").unwrap();
        let p = "flannel.alpha.coreos.com/";
        let (managed, bad_ip) = (format!("{p}kube-subnet-manager"), format!("{p}public-ip"));
        let ann = [(managed.as_str(), "true"), (bad_ip.as_str(), "not-an-ip")];
        api.put_node("node-x", &["10.244.9.0/24"], &ann);
        let families = Families {
            v4: true,
            v6: false,
        };
        let mut skipped = Skipped::default();
        let l = list_pages(&api, &names, families, "node-a", &mut skipped)
            .await
            .unwrap();
        assert!(l.leases.is_empty() && skipped.0.contains_key("node-x"));
        api.delete_node("node-x");
        list_pages(&api, &names, families, "node-a", &mut skipped)
            .await
            .unwrap();
        assert!(skipped.0.is_empty(), "{skipped:?}");
    }
}
