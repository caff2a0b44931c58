//! The agent's Prometheus metrics (`--metrics-port`, served at `/metrics` by [`crate::health`]),
//! kept behind one small handle: [`Metrics`] is cheap to clone, every clone counts into the
//! same registry, and the agent, the etcd store and the tests only call its methods (nothing
//! else knows the `prometheus-client` types). Every name starts with `flanneld_`; counters get
//! `_total` appended by the encoder, as OpenMetrics asks.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::backend::Repairs;
use crate::cache::LeaseEvent;

/// One label, as the families here use them (names and values are fixed strings).
type Label = [(&'static str, &'static str); 1];

/// The buckets of [`Metrics::event_programmed`], in seconds: fine between 0.1 ms and 100 ms,
/// where one event's netlink work and the agent's overhead land, then coarse to 5 s.
pub const LATENCY_BUCKETS: [f64; 22] = [
    0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01,
    0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Why the agent re-listed and watched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchRestart {
    /// The watch's start revision was compacted away.
    Compacted,
    /// The watch failed or could not be opened (etcd unreachable, stream ended).
    Broken,
}

/// The registry and every metric in it.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    peers: Family<Label, Gauge>,
    lease_expiry: Gauge,
    renewals: Family<Label, Counter>,
    etcd_failovers: Counter,
    etcd_reconnects: Counter,
    watch_restarts: Family<Label, Counter>,
    repairs: Family<Label, Counter>,
    reconciles: Counter,
    events: Family<Label, Counter>,
    latency: Histogram,
    listings: Family<Label, Counter>,
    listing_time: Histogram,
    nodes: Family<Label, Gauge>,
}

/// The buckets of [`Metrics::node_listing`], in seconds: a page of 500 Nodes takes tens of
/// milliseconds, a 5,000-Node cluster about a second.
pub const LISTING_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("flanneld");
        let mut m = Metrics {
            registry: Arc::default(),
            peers: Family::default(),
            lease_expiry: Gauge::default(),
            renewals: Family::default(),
            etcd_failovers: Counter::default(),
            etcd_reconnects: Counter::default(),
            watch_restarts: Family::default(),
            repairs: Family::default(),
            reconciles: Counter::default(),
            events: Family::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
            listings: Family::default(),
            listing_time: Histogram::new(LISTING_BUCKETS),
            nodes: Family::default(),
        };
        r.register(
            "peers_programmed",
            "Peers the backend holds: programmed in the kernel, or (a step failed, logged) retried by the next reconcile",
            m.peers.clone(),
        );
        r.register_with_unit(
            "lease_expiry",
            "When the node's own subnet lease expires (unix time)",
            Unit::Seconds,
            m.lease_expiry.clone(),
        );
        r.register(
            "lease_renewals",
            "Renewals of the node's lease, by result",
            m.renewals.clone(),
        );
        r.register(
            "etcd_endpoint_failovers",
            "Requests moved to another etcd endpoint because theirs was unreachable",
            m.etcd_failovers.clone(),
        );
        r.register(
            "etcd_reconnects",
            "Connections made again to an etcd endpoint after it was found unreachable",
            m.etcd_reconnects.clone(),
        );
        r.register(
            "watch_restarts",
            "Re-listings of the leases after the watch was compacted or broken",
            m.watch_restarts.clone(),
        );
        r.register(
            "reconcile_repairs",
            "Kernel state repaired by the periodic reconcile, by kind",
            m.repairs.clone(),
        );
        r.register(
            "reconcile_runs",
            "Reconciles of the backend with the kernel",
            m.reconciles.clone(),
        );
        r.register(
            "lease_events",
            "Peers' lease events handed to the backend, by kind",
            m.events.clone(),
        );
        r.register_with_unit(
            "event_programmed",
            "From the agent's loop taking a watch event up to the backend having handled it (programmed, or failed and logged)",
            Unit::Seconds,
            m.latency.clone(),
        );
        r.register(
            "node_listings",
            "Listings of the Nodes (kube mode: at start, after 410 Gone or a failed watch), by result",
            m.listings.clone(),
        );
        r.register_with_unit(
            "node_listing",
            "How long a whole listing of the Nodes took, every page (kube mode)",
            Unit::Seconds,
            m.listing_time.clone(),
        );
        r.register(
            "nodes",
            "Nodes in the last listing (kube mode): all of them, those giving a lease, and those whose annotations or podCIDRs are unusable (skipped)",
            m.nodes.clone(),
        );
        m.registry = Arc::new(r);
        m
    }

    /// A listing of the Nodes (kube mode) that took `took`: `Some((listed, managed,
    /// skipped))` when it worked, `None` when it failed.
    pub fn node_listing(&self, took: Duration, counts: Option<(usize, usize, usize)>) {
        let result = if counts.is_some() { "ok" } else { "failed" };
        self.listings.get_or_create(&[("result", result)]).inc();
        let Some((listed, managed, skipped)) = counts else {
            return;
        };
        self.listing_time.observe(took.as_secs_f64());
        for (state, n) in [
            ("listed", listed),
            ("managed", managed),
            ("unusable", skipped),
        ] {
            self.nodes
                .get_or_create(&[("state", state)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The number of peers `backend` holds programmed now.
    pub fn peers_programmed(&self, backend: &'static str, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.peers.get_or_create(&[("backend", backend)]).set(n);
    }

    /// The node's lease now expires at `at` (tokio's clock), exported as unix seconds.
    pub fn lease_expires(&self, at: tokio::time::Instant) {
        let left = at.saturating_duration_since(tokio::time::Instant::now());
        let unix = (SystemTime::now() + left)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.lease_expiry
            .set(i64::try_from(unix).unwrap_or(i64::MAX));
    }

    /// The node holds no lease (lost, being acquired again): the expiry reads 0.
    pub fn lease_lost(&self) {
        self.lease_expiry.set(0);
    }

    /// A renewal of the node's lease succeeded or failed.
    pub fn renewal(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.renewals.get_or_create(&[("result", result)]).inc();
    }

    /// A request moved to another etcd endpoint.
    pub fn etcd_failover(&self) {
        self.etcd_failovers.inc();
    }

    /// An etcd endpoint's connection was made again.
    pub fn etcd_reconnect(&self) {
        self.etcd_reconnects.inc();
    }

    /// The agent re-lists and watches again.
    pub fn watch_restart(&self, why: WatchRestart) {
        let reason = match why {
            WatchRestart::Compacted => "compacted",
            WatchRestart::Broken => "broken",
        };
        self.watch_restarts
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// One reconcile ran and repaired `repaired` (this run's counts, by kind).
    pub fn reconciled(&self, repaired: &Repairs) {
        self.reconciles.inc();
        for (kind, n) in repaired.by_kind() {
            if n > 0 {
                self.repairs.get_or_create(&[("kind", kind)]).inc_by(n);
            }
        }
    }

    /// Lease events handed to the backend.
    pub fn lease_events(&self, events: &[LeaseEvent]) {
        for e in events {
            let kind = match e {
                LeaseEvent::Added(_) => "added",
                LeaseEvent::Removed(_) => "removed",
            };
            self.events.get_or_create(&[("kind", kind)]).inc();
        }
    }

    /// One watch event was programmed `took` after it arrived.
    pub fn event_programmed(&self, took: Duration) {
        self.latency.observe(took.as_secs_f64());
    }

    /// The text exposition (OpenMetrics, which Prometheus reads), ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_labels_and_values() {
        let m = Metrics::new();
        m.peers_programmed("vxlan", 3);
        m.renewal(true);
        m.renewal(false);
        m.renewal(true);
        m.etcd_failover();
        m.etcd_reconnect();
        m.watch_restart(WatchRestart::Compacted);
        m.reconciled(&Repairs {
            route: 2,
            stale_fdb: 1,
            ..Repairs::default()
        });
        m.reconciled(&Repairs::default());
        m.event_programmed(Duration::from_micros(1500));
        let t = m.encode();
        for line in [
            "flanneld_peers_programmed{backend=\"vxlan\"} 3",
            "flanneld_lease_renewals_total{result=\"ok\"} 2",
            "flanneld_lease_renewals_total{result=\"error\"} 1",
            "flanneld_etcd_endpoint_failovers_total 1",
            "flanneld_etcd_reconnects_total 1",
            "flanneld_watch_restarts_total{reason=\"compacted\"} 1",
            "flanneld_reconcile_repairs_total{kind=\"route\"} 2",
            "flanneld_reconcile_repairs_total{kind=\"stale_fdb\"} 1",
            "flanneld_reconcile_runs_total 2",
            "flanneld_event_programmed_seconds_count 1",
            "flanneld_event_programmed_seconds_bucket{le=\"0.001\"} 0",
            "flanneld_event_programmed_seconds_bucket{le=\"0.0015\"} 1",
            "# TYPE flanneld_lease_expiry_seconds gauge",
        ] {
            assert!(t.lines().any(|l| l == line), "no line {line:?} in\n{t}");
        }
        assert!(!t.contains("kind=\"neighbour\""), "zero repairs not listed");
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn clones_share_the_registry_and_expiry_is_unix_time() {
        let m = Metrics::new();
        let c = m.clone();
        c.etcd_failover();
        assert!(
            m.encode()
                .contains("flanneld_etcd_endpoint_failovers_total 1\n")
        );
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        m.lease_expires(tokio::time::Instant::now() + Duration::from_secs(3600));
        let v: u64 = m
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix("flanneld_lease_expiry_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (now.as_secs() + 3590..=now.as_secs() + 3610).contains(&v),
            "{v}"
        );
    }
}
