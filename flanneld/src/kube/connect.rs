//! Reaching the Kubernetes API as Go flanneld does (`kube.NewSubnetManager`): the client
//! from `--kubeconfig-file` (its server replaced by `--kube-api-url` when both are given),
//! or `--kube-api-url` alone, or else the in-cluster config (`KUBERNETES_SERVICE_HOST`/
//! `_PORT` and the service account's token and CA); the node's name from `NODE_NAME`, else
//! the `spec.nodeName` of the Pod `POD_NAMESPACE/POD_NAME`; then the first listing of the
//! Nodes, waited for up to 10 minutes (`CONT_WHEN_CACHE_NOT_READY=true` starts anyway).

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep};

use super::api::{KubeApi, NodeApi};
use super::node::Families;
use super::watch::list_all;
use super::{KubeError, KubeManager, families};
use crate::config::NetworkConfig;
use crate::log::{info, shown, warning};

/// How long the first listing of the Nodes may take (Go's `nodeControllerSyncTimeout`).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(600);
/// Go's default `EVENT_QUEUE_DEPTH`.
pub const DEFAULT_QUEUE_DEPTH: usize = 5000;
/// The default `--net-config-path`.
pub const DEFAULT_NET_CONFIG_PATH: &str = "/etc/kube-flannel/net-conf.json";

/// The kube subnet manager's flags and environment.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeOptions {
    /// `--kube-api-url`.
    pub api_url: String,
    /// `--kubeconfig-file`.
    pub kubeconfig: String,
    /// `--kube-annotation-prefix`.
    pub annotation_prefix: String,
    /// `--net-config-path`.
    pub net_config_path: PathBuf,
    /// `--set-node-network-unavailable` (default true): write `NetworkUnavailable=False`.
    pub set_node_network_unavailable: bool,
    /// `NODE_NAME`.
    pub node_name: String,
    /// `POD_NAME`.
    pub pod_name: String,
    /// `POD_NAMESPACE`.
    pub pod_namespace: String,
    /// `EVENT_QUEUE_DEPTH` (default 5000).
    pub queue_depth: usize,
    /// `CONT_WHEN_CACHE_NOT_READY=true`.
    pub continue_when_cache_not_ready: bool,
    /// How long one watch of the Nodes lasts before it is made again (Go's informer: 5
    /// minutes); [`crate::flags::TEST_WATCH_TIMEOUT_ENV`] shortens it for tests.
    pub watch_timeout: std::time::Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            api_url: String::new(),
            kubeconfig: String::new(),
            annotation_prefix: super::annotations::DEFAULT_PREFIX.to_owned(),
            net_config_path: PathBuf::from(DEFAULT_NET_CONFIG_PATH),
            set_node_network_unavailable: true,
            node_name: String::new(),
            pod_name: String::new(),
            pod_namespace: String::new(),
            queue_depth: DEFAULT_QUEUE_DEPTH,
            continue_when_cache_not_ready: false,
            watch_timeout: super::watch::WATCH_TIMEOUT,
        }
    }
}

fn client_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> KubeError {
    KubeError::Client {
        what: what.to_owned(),
        source: Box::new(e),
    }
}

/// The client's configuration, as Go's `clientcmd.BuildConfigFromFlags` picks it.
async fn client_config(opts: &KubeOptions) -> Result<kube::Config, KubeError> {
    let bad_url = |e| client_error(&format!("--kube-api-url {}", shown(&opts.api_url)), e);
    if !opts.kubeconfig.is_empty() {
        let what = format!("--kubeconfig-file {}", opts.kubeconfig);
        let kc = kube::config::Kubeconfig::read_from(&opts.kubeconfig)
            .map_err(|e| client_error(&what, e))?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| client_error(&what, e))?;
        if !opts.api_url.is_empty() {
            config.cluster_url = opts.api_url.parse().map_err(bad_url)?;
        }
        return Ok(config);
    }
    if !opts.api_url.is_empty() {
        // Go's client then has the server's address and nothing else: no credentials.
        warning!("--kube-api-url without --kubeconfig-file: the API is called without credentials");
        return Ok(kube::Config::new(opts.api_url.parse().map_err(bad_url)?));
    }
    kube::Config::incluster().map_err(|e| {
        client_error(
            "neither --kubeconfig-file nor --kube-api-url is set, and the in-cluster config \
             (KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT, /var/run/secrets/kubernetes.io/serviceaccount) \
             cannot be read",
            e,
        )
    })
}

/// Returns once asked to stop; never when nobody can ask any more.
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits `d` unless asked to stop first; true when asked to stop.
async fn stopped_during(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stop_requested(shutdown) => true,
        _ = sleep(d) => false,
    }
}

/// `name` when it is a Kubernetes object name (a DNS subdomain of at most `max`
/// characters: lowercase letters, digits, `-` and `.`, starting and ending with a letter or
/// digit): it goes into API paths, where a `/` or `..` would name another object.
fn checked_name(what: &str, name: &str, max: usize) -> Result<String, KubeError> {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = name.len() <= max
        && edge(name.chars().next())
        && edge(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !name.contains("..");
    if ok {
        Ok(name.to_owned())
    } else {
        Err(KubeError::NodeName(format!(
            "{what} {} is not a Kubernetes name (lowercase letters, digits, '-' and '.', at most {max})",
            shown(name)
        )))
    }
}

/// The node's name: `NODE_NAME`, else the Pod's `spec.nodeName`; `None` when asked to stop
/// while the apiserver cannot be reached.
pub(crate) async fn node_name<A: NodeApi>(
    api: &A,
    opts: &KubeOptions,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<String>, KubeError> {
    if !opts.node_name.is_empty() {
        return checked_name("NODE_NAME", &opts.node_name, 253).map(Some);
    }
    if opts.pod_name.is_empty() || opts.pod_namespace.is_empty() {
        return Err(KubeError::NodeName(
            "env variables POD_NAME and POD_NAMESPACE must be set (or NODE_NAME)".into(),
        ));
    }
    checked_name("POD_NAME", &opts.pod_name, 253)?;
    // A namespace is a DNS label: no dots.
    if opts.pod_namespace.contains('.') {
        return Err(KubeError::NodeName(format!(
            "POD_NAMESPACE {} is not a namespace name (a DNS label: no dots)",
            shown(&opts.pod_namespace)
        )));
    }
    checked_name("POD_NAMESPACE", &opts.pod_namespace, 63)?;
    let mut delay = Duration::from_secs(1);
    loop {
        match api.pod_node_name(&opts.pod_namespace, &opts.pod_name).await {
            Ok(n) if n.is_empty() => {
                return Err(KubeError::NodeName(format!(
                    "node name not present in pod spec '{}/{}'",
                    opts.pod_namespace, opts.pod_name
                )));
            }
            Ok(n) => return checked_name("the Pod's spec.nodeName", &n, 253).map(Some),
            // A 403 may be an apiserver that just started and has not loaded its roles yet.
            Err(e) if e.code() == Some(404) => return Err(e.into()),
            Err(e) => warning!("{e}; retrying in {delay:?}"),
        }
        if stopped_during(delay, shutdown).await {
            return Ok(None);
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// A kube subnet manager on the API `opts` name; `None` when asked to stop first.
pub async fn connect(
    opts: &KubeOptions,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<KubeManager<KubeApi>>, KubeError> {
    // Checked first: a bad prefix must not wait for an apiserver.
    super::Annotations::new(&opts.annotation_prefix).map_err(KubeError::AnnotationPrefix)?;
    let config = client_config(opts).await?;
    info!("Kubernetes API at {}", config.cluster_url);
    let client = kube::Client::try_from(config)
        .map_err(|e| client_error("creating the Kubernetes client", e))?;
    let api = KubeApi::new(client);
    let Some(name) = node_name(&api, opts, shutdown).await? else {
        return Ok(None);
    };
    info!("this node is Node {}", shown(&name));
    let families = Families {
        v4: true,
        v6: false,
    };
    KubeManager::new(api, &name, opts, families, None).map(Some)
}

impl<A: NodeApi> KubeManager<A> {
    /// Lists every Node once before the agent starts (Go waits for its node informer's
    /// sync), for the network of `config`: retried until [`SYNC_TIMEOUT`], after which the
    /// agent stops unless `CONT_WHEN_CACHE_NOT_READY` is `true`. False when asked to stop.
    pub async fn sync(
        &mut self,
        config: &NetworkConfig,
        continue_when_not_ready: bool,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, KubeError> {
        self.families = families(config);
        let deadline = Instant::now() + SYNC_TIMEOUT;
        let mut delay = Duration::from_millis(500);
        loop {
            let listing = tokio::select! {
                _ = stop_requested(shutdown) => return Ok(false),
                r = list_all(&self.api, &self.names, self.families, &self.node_name) => r,
            };
            match listing {
                Ok(l) => {
                    info!(
                        "listed {} Nodes, {} of them with flannel's annotations",
                        l.nodes,
                        l.leases.len()
                    );
                    self.initial = Some(l);
                    return Ok(true);
                }
                Err(e) => warning!("{e}; listing again in {delay:?}"),
            }
            if Instant::now() + delay >= deadline {
                if continue_when_not_ready {
                    warning!(
                        "the Nodes could not be listed within {SYNC_TIMEOUT:?}: starting anyway (CONT_WHEN_CACHE_NOT_READY=true)"
                    );
                    return Ok(true);
                }
                return Err(KubeError::NotSynced(SYNC_TIMEOUT));
            }
            if stopped_during(delay, shutdown).await {
                return Ok(false);
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}
