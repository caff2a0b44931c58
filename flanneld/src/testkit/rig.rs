//! The agent started on a [`Recorder`] in a task of the test's `LocalSet`, over whichever
//! subnet manager the test makes: the settings, the state directory, readiness, the stop
//! channel and (when asked) a link-notification channel, in one place.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::Recorder;
use crate::agent::{self, AgentError, EntryNotices, Settings};
use crate::config::NetworkConfig;
use crate::etcd::LeaseManager;
use crate::etcd::store::mem::MemStore;
use crate::health::Readiness;
use crate::manager::SubnetManager;
use crate::metrics::Metrics;

/// How the agent is run.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// The renew margin (default an hour).
    pub renew_margin: Option<Duration>,
    /// The reconcile tick (default an hour: none within a test).
    pub reconcile_every: Option<Duration>,
    /// How entry notices reach the loop.
    pub entry_notices: EntryNotices,
    /// Hand the loop a link-notification channel ([`Rig::links`]).
    pub links: bool,
}

/// A running agent.
#[derive(Debug)]
pub struct Rig {
    /// The backend (clones share its records).
    pub backend: Recorder,
    /// Its readiness.
    pub ready: Readiness,
    /// Sends the stop.
    pub stop: watch::Sender<bool>,
    /// Its state directory (subnet.env).
    pub dir: tempfile::TempDir,
    /// The agent's task.
    pub task: tokio::task::JoinHandle<Result<(), AgentError>>,
    /// Its metrics.
    pub metrics: Metrics,
    /// Link notifications to the loop, with [`Setup::links`].
    pub links: Option<mpsc::Sender<node_kernel::LinkChange>>,
}

impl Rig {
    /// The backend's lines so far, taken.
    pub fn take(&self) -> Vec<String> {
        self.backend.take()
    }

    /// subnet.env as written (empty before).
    pub fn subnet_env(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("subnet.env")).unwrap_or_default()
    }

    /// The node's IPv4 subnet as a lease key, `10.5.23.0-24`, from subnet.env.
    pub fn own_key(&self) -> Option<String> {
        let (v4, _) = cni_common::subnet_env::previous_subnets(&self.subnet_env());
        v4.map(|sn| format!("{}-{}", sn.network(), sn.prefix()))
    }
}

/// Lets the agent run until it waits again (virtual time: no real delay).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// The etcd manager on `store` and the network config it holds: `start`'s `make` for etcd
/// mode, `|rx| etcd_manager(store, rx)`.
pub async fn etcd_manager(
    store: MemStore,
    mut rx: watch::Receiver<bool>,
) -> Result<(LeaseManager<MemStore>, NetworkConfig), AgentError> {
    let m = LeaseManager::new(store, crate::etcd::DEFAULT_PREFIX, (None, None));
    let config = agent::wait_for_config(&m, &mut rx).await.unwrap();
    Ok((m, config))
}

/// Starts the agent on `backend` in `dir` with the manager and network config `make`
/// returns (given the stop channel), in a task of the current `LocalSet`.
pub fn start<M, F, Fut>(dir: tempfile::TempDir, backend: Recorder, setup: Setup, make: F) -> Rig
where
    M: SubnetManager + 'static,
    F: FnOnce(watch::Receiver<bool>) -> Fut + 'static,
    Fut: Future<Output = Result<(M, NetworkConfig), AgentError>> + 'static,
{
    let metrics = Metrics::new();
    let ready = Readiness::default();
    let (stop, rx) = watch::channel(false);
    let (links, links_rx) = if setup.links {
        let (tx, rx) = mpsc::channel(64);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let settings = Settings {
        subnet_file: dir.path().join("subnet.env"),
        ip_masq: false,
        renew_margin: setup.renew_margin.unwrap_or(Duration::from_secs(3600)),
        notify_socket: None,
        reconcile_every: setup.reconcile_every.unwrap_or(Duration::from_secs(3600)),
        metrics: metrics.clone(),
        entry_notices: setup.entry_notices,
    };
    let (mut b, r) = (backend.clone(), ready.clone());
    let task = tokio::task::spawn_local(async move {
        let (mut m, config) = make(rx.clone()).await?;
        agent::run_with_links(&mut m, &config, &mut b, &settings, &r, rx, links_rx).await
    });
    Rig {
        backend,
        ready,
        stop,
        dir,
        task,
        metrics,
        links,
    }
}
