//! The Kubernetes API calls the kube subnet manager makes, as a small trait ([`NodeApi`]):
//! exactly what kube-flannel's ClusterRole allows (pods get; nodes get, list, watch;
//! nodes/status patch) and nothing else. [`KubeApi`] is the real one, through kube-rs; unit
//! tests use an in-memory fake (`fake.rs`).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use kube::core::params::{GetParams, ListParams, Patch, PatchParams, WatchParams};
use kube::core::{Request, WatchEvent};
use serde_json::Value;

use super::node::{NodeList, NodeLite, PodLite};

/// How long one request (not a watch) may take before the store counts as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The apiserver answered with an error status.
    #[error("{what}: {message} ({code} {reason})")]
    Status {
        /// The call.
        what: String,
        /// The HTTP code (403 forbidden, 404 not found, 410 gone...).
        code: u16,
        /// The apiserver's reason (`Forbidden`, `NotFound`, `Expired`...).
        reason: String,
        /// The apiserver's message.
        message: String,
    },
    /// The apiserver could not be reached or the connection broke.
    #[error("{what}: {source}")]
    Unreachable {
        /// The call.
        what: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No answer in time.
    #[error("{what}: no answer within {after:?}")]
    Timeout {
        /// The call.
        what: String,
        /// How long it waited.
        after: Duration,
    },
}

impl ApiError {
    /// The HTTP code of an error status.
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A change of a Node, as a watch reports it.
#[derive(Debug)]
pub enum NodeEvent {
    /// Created (or first seen).
    Added(NodeLite),
    /// Changed.
    Modified(NodeLite),
    /// Deleted: its last state.
    Deleted(NodeLite),
    /// Nothing changed up to this resourceVersion.
    Bookmark(String),
    /// The resourceVersion the watch started from is too old (410 Gone): list again.
    Gone(String),
    /// Another error the apiserver sent in the stream.
    Error(ApiError),
}

/// The events of one watch request.
pub type NodeEvents = Pin<Box<dyn Stream<Item = Result<NodeEvent, ApiError>> + Send>>;

/// The calls, each needing one verb of kube-flannel's ClusterRole.
pub trait NodeApi: Clone + Send + Sync + 'static {
    /// `get nodes/<name>`; `None` when there is no such Node.
    fn node(&self, name: &str) -> impl Future<Output = Result<Option<NodeLite>, ApiError>> + Send;
    /// `get pods/<name>` in `namespace`: the Pod's `spec.nodeName`.
    fn pod_node_name(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<String, ApiError>> + Send;
    /// `list nodes`, one page of at most `limit`, from `continue_token` (empty: the first).
    fn list(
        &self,
        limit: u32,
        continue_token: &str,
    ) -> impl Future<Output = Result<NodeList, ApiError>> + Send;
    /// `watch nodes` from `resource_version`, ended by the apiserver after `timeout`.
    fn watch(
        &self,
        resource_version: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<NodeEvents, ApiError>> + Send;
    /// `patch nodes/<name>/status` with a strategic-merge patch.
    fn patch_status(
        &self,
        name: &str,
        patch: &Value,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// [`NodeApi`] on a real apiserver.
#[derive(Clone)]
pub struct KubeApi {
    client: kube::Client,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeApi")
    }
}

impl KubeApi {
    /// Calls through `client`.
    pub fn new(client: kube::Client) -> KubeApi {
        KubeApi { client }
    }
}

/// A kube-rs error as an [`ApiError`] of the call `what`.
fn api_error(what: &str, e: kube::Error) -> ApiError {
    match e {
        kube::Error::Api(s) => ApiError::Status {
            what: what.to_owned(),
            code: s.code,
            reason: s.reason.clone(),
            message: s.message.clone(),
        },
        other => ApiError::Unreachable {
            what: what.to_owned(),
            source: Box::new(other),
        },
    }
}

/// A request that could not be built (a name no URL can hold).
fn build_error(what: &str, e: kube::core::request::Error) -> ApiError {
    ApiError::Unreachable {
        what: what.to_owned(),
        source: Box::new(e),
    }
}

/// `fut`, or a timeout error after [`REQUEST_TIMEOUT`].
async fn timed<T>(
    what: &str,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| api_error(what, e)),
        Err(_) => Err(ApiError::Timeout {
            what: what.to_owned(),
            after: REQUEST_TIMEOUT,
        }),
    }
}

const NODES: &str = "/api/v1/nodes";

impl NodeApi for KubeApi {
    async fn node(&self, name: &str) -> Result<Option<NodeLite>, ApiError> {
        let what = format!("getting node {name}");
        let req = Request::new(NODES)
            .get(name, &GetParams::default())
            .map_err(|e| build_error(&what, e))?;
        match timed(&what, self.client.request::<NodeLite>(req)).await {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn pod_node_name(&self, namespace: &str, name: &str) -> Result<String, ApiError> {
        let what = format!("getting pod {namespace}/{name}");
        let req = Request::new(format!("/api/v1/namespaces/{namespace}/pods"))
            .get(name, &GetParams::default())
            .map_err(|e| build_error(&what, e))?;
        let pod = timed(&what, self.client.request::<PodLite>(req)).await?;
        Ok(pod.spec.node_name)
    }

    async fn list(&self, limit: u32, continue_token: &str) -> Result<NodeList, ApiError> {
        let what = "listing nodes";
        let mut lp = ListParams::default().limit(limit);
        if !continue_token.is_empty() {
            lp = lp.continue_token(continue_token);
        }
        let req = Request::new(NODES)
            .list(&lp)
            .map_err(|e| build_error(what, e))?;
        timed(what, self.client.request::<NodeList>(req)).await
    }

    async fn watch(
        &self,
        resource_version: &str,
        timeout: Duration,
    ) -> Result<NodeEvents, ApiError> {
        let what = "watching nodes";
        let secs = u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX);
        let wp = WatchParams::default().timeout(secs);
        let req = Request::new(NODES)
            .watch(&wp, resource_version)
            .map_err(|e| build_error(what, e))?;
        let events = timed(what, self.client.request_events::<NodeLite>(req)).await?;
        Ok(Box::pin(events.map(
            |r: Result<WatchEvent<NodeLite>, kube::Error>| {
                r.map_err(|e| api_error("watching nodes", e))
                    .map(|ev| match ev {
                        WatchEvent::Added(n) => NodeEvent::Added(n),
                        WatchEvent::Modified(n) => NodeEvent::Modified(n),
                        WatchEvent::Deleted(n) => NodeEvent::Deleted(n),
                        WatchEvent::Bookmark(b) => NodeEvent::Bookmark(b.metadata.resource_version),
                        WatchEvent::Error(s) if s.code == 410 => NodeEvent::Gone(s.message.clone()),
                        WatchEvent::Error(s) => NodeEvent::Error(ApiError::Status {
                            what: "watching nodes".into(),
                            code: s.code,
                            reason: s.reason.clone(),
                            message: s.message.clone(),
                        }),
                    })
            },
        )))
    }

    async fn patch_status(&self, name: &str, patch: &Value) -> Result<(), ApiError> {
        let what = format!("patching nodes/{name}/status");
        let req = Request::new(NODES)
            .patch_subresource(
                "status",
                name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .map_err(|e| build_error(&what, e))?;
        // The answer is the whole Node: read as the few fields kept, then dropped.
        timed(&what, self.client.request::<NodeLite>(req))
            .await
            .map(drop)
    }
}
