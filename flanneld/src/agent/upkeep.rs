//! Waiting on the subnet manager without neglecting the node: while a call to etcd or the
//! Kubernetes API is pending (an unreachable store may take seconds per call), the backend
//! keeps its reconcile ticks and a stop request is answered at once.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use super::Settings;
use crate::backend::Backend;
use crate::log::info;

/// Waits until SIGTERM/SIGINT were received (the sender sent `true`).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        // The sender is gone: nobody can ask us to stop any more.
        std::future::pending::<()>().await;
    }
}

/// Sleeps `d` unless asked to stop first; true when asked to stop.
pub async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stopped(shutdown) => true,
        _ = sleep(d) => false,
    }
}

/// Sleeps until `at`; forever when `None`.
pub async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Runs the backend's reconcile now and exports what it did.
pub fn reconcile_now(backend: &mut dyn Backend, settings: &Settings) {
    let metrics = &settings.metrics;
    let before = backend.repairs();
    backend.reconcile();
    let after = backend.repairs();
    metrics.reconciled(&after.since(before));
    metrics.peers_programmed(backend.backend_type(), backend.programmed());
    if after.total() != before.total() {
        info!("reconcile repaired the kernel state (totals so far: {after:?})");
    }
}

/// The reconcile tick kept while the loop waits on the store, once the backend holds a
/// lease: a store that does not answer (partitioned, stopped) must not freeze the data
/// path's repairs, nor a stop request, for the seconds each call may take.
pub struct Upkeep<'a> {
    /// The backend to reconcile.
    pub backend: &'a mut dyn Backend,
    /// The agent's settings.
    pub settings: &'a Settings,
    /// When the next reconcile is due; `None` before the backend has a lease.
    pub reconcile_at: Option<&'a mut Instant>,
}

impl Upkeep<'_> {
    /// Awaits `fut`, reconciling when due meanwhile; `None` when asked to stop first.
    pub async fn wait<T>(
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
                    reconcile_now(self.backend, self.settings);
                    if let Some(at) = self.reconcile_at.as_deref_mut() {
                        *at = Instant::now() + self.settings.reconcile_every;
                    }
                }
            }
        }
    }
}
