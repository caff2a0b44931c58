//! An in-memory apiserver for the kube subnet manager's unit tests: Nodes with
//! resourceVersions, a history watches replay from (compactable: a watch from before it is
//! answered 410 Gone), strategic-merge patches of annotations and conditions through
//! nodes/status (recorded), Pods, and scripted failures (the apiserver down, one call
//! failing, a verb forbidden).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use super::api::{ApiError, NodeApi, NodeEvent, NodeEvents};
use super::node::{ListMeta, NodeList, NodeLite, NodeMeta, NodeSpec};

#[derive(Debug, Clone)]
enum Kind {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    nodes: BTreeMap<String, NodeLite>,
    history: Vec<(u64, Kind, NodeLite)>,
    /// A watch from a resourceVersion below this is answered 410.
    oldest: u64,
    pods: BTreeMap<(String, String), String>,
    patches: Vec<(String, Value)>,
    conditions: BTreeMap<String, Vec<Value>>,
    down: bool,
    fail_once: BTreeMap<&'static str, usize>,
    forbidden: BTreeSet<&'static str>,
    calls: BTreeMap<&'static str, usize>,
    /// Bumped to end every open watch (the apiserver's timeout or restart).
    generation: u64,
    /// Every watch is answered 410, even from a fresh listing's resourceVersion (an
    /// apiserver whose watch cache lags its listings).
    always_expired: bool,
}

/// The in-memory apiserver; clones share it.
#[derive(Debug, Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for FakeApi {
    fn default() -> Self {
        FakeApi {
            state: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

fn unreachable(what: &str) -> ApiError {
    ApiError::Unreachable {
        what: what.to_owned(),
        source: "connection refused (fake)".into(),
    }
}

fn status(what: &str, code: u16, reason: &str) -> ApiError {
    ApiError::Status {
        what: what.to_owned(),
        code,
        reason: reason.to_owned(),
        message: format!("{reason} (fake)"),
    }
}

impl FakeApi {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|g| *g += 1);
    }

    /// Counts a call and fails it as scripted.
    fn call(&self, op: &'static str) -> Result<(), ApiError> {
        let mut s = self.lock();
        *s.calls.entry(op).or_default() += 1;
        if s.down {
            return Err(unreachable(op));
        }
        if s.forbidden.contains(op) {
            return Err(status(op, 403, "Forbidden"));
        }
        if let Some(n) = s.fail_once.get_mut(op)
            && *n > 0
        {
            *n -= 1;
            return Err(unreachable(op));
        }
        Ok(())
    }

    fn record(s: &mut State, kind: Kind, mut node: NodeLite) -> NodeLite {
        s.rv += 1;
        node.metadata.resource_version = s.rv.to_string();
        let rv = s.rv;
        s.history.push((rv, kind, node.clone()));
        node
    }

    /// Creates or replaces a Node.
    pub fn put_node(&self, name: &str, pod_cidrs: &[&str], annotations: &[(&str, &str)]) {
        {
            let mut s = self.lock();
            let kind = if s.nodes.contains_key(name) {
                Kind::Modified
            } else {
                Kind::Added
            };
            let node = NodeLite {
                metadata: NodeMeta {
                    name: name.to_owned(),
                    resource_version: String::new(),
                    annotations: annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                },
                spec: NodeSpec {
                    pod_cidr: pod_cidrs.first().map(|s| s.to_string()).unwrap_or_default(),
                    pod_cidrs: pod_cidrs.iter().map(|s| s.to_string()).collect(),
                },
            };
            let node = Self::record(&mut s, kind, node);
            s.nodes.insert(name.to_owned(), node);
        }
        self.notify();
    }

    /// Changes a Node's annotations (`None` removes one).
    pub fn annotate(&self, name: &str, changes: &[(&str, Option<&str>)]) {
        {
            let mut s = self.lock();
            let Some(mut node) = s.nodes.get(name).cloned() else {
                return;
            };
            for (k, v) in changes {
                match v {
                    Some(v) => node
                        .metadata
                        .annotations
                        .insert(k.to_string(), v.to_string()),
                    None => node.metadata.annotations.remove(*k),
                };
            }
            let node = Self::record(&mut s, Kind::Modified, node);
            s.nodes.insert(name.to_owned(), node);
        }
        self.notify();
    }

    /// A change of a Node that flannel does not read (the kubelet's status updates).
    pub fn touch(&self, name: &str) {
        self.annotate(name, &[]);
    }

    /// Deletes a Node.
    pub fn delete_node(&self, name: &str) {
        {
            let mut s = self.lock();
            let Some(node) = s.nodes.remove(name) else {
                return;
            };
            Self::record(&mut s, Kind::Deleted, node);
        }
        self.notify();
    }

    /// A Pod on a node.
    pub fn put_pod(&self, namespace: &str, name: &str, node: &str) {
        self.lock()
            .pods
            .insert((namespace.to_owned(), name.to_owned()), node.to_owned());
    }

    /// A Node as stored.
    pub fn node_now(&self, name: &str) -> Option<NodeLite> {
        self.lock().nodes.get(name).cloned()
    }

    /// Every patch sent, in order (node, body).
    pub fn patches(&self) -> Vec<(String, Value)> {
        self.lock().patches.clone()
    }

    /// A node's conditions as patched.
    pub fn conditions(&self, name: &str) -> Vec<Value> {
        self.lock()
            .conditions
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets the history up to now: watches from before are answered 410 Gone.
    pub fn compact(&self) {
        {
            let mut s = self.lock();
            s.oldest = s.rv + 1;
            s.history.clear();
        }
        self.end_watches();
    }

    /// Ends every open watch (as the apiserver's timeout or a restart does).
    pub fn end_watches(&self) {
        self.lock().generation += 1;
        self.notify();
    }

    /// Every watch answered 410 Gone (`true`) or as usual again.
    pub fn expire_every_watch(&self, on: bool) {
        self.lock().always_expired = on;
        self.end_watches();
    }

    /// The apiserver unreachable (every call fails, open watches end) or back.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
        self.end_watches();
    }

    /// The next `n` calls of `op` fail.
    pub fn fail(&self, op: &'static str, n: usize) {
        self.lock().fail_once.insert(op, n);
    }

    /// Every call of `op` is refused with 403.
    pub fn forbid(&self, op: &'static str) {
        self.lock().forbidden.insert(op);
    }

    /// How often `op` was called.
    pub fn calls(&self, op: &'static str) -> usize {
        self.lock().calls.get(op).copied().unwrap_or(0)
    }
}

/// A strategic merge of `patch` into `node`'s annotations (a null value removes), and of
/// its conditions by type.
fn merge(s: &mut State, name: &str, patch: &Value) -> Option<NodeLite> {
    let mut node = s.nodes.get(name).cloned()?;
    if let Some(ann) = patch
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for (k, v) in ann {
            match v.as_str() {
                Some(v) => {
                    node.metadata.annotations.insert(k.clone(), v.to_owned());
                }
                None => {
                    node.metadata.annotations.remove(k);
                }
            }
        }
    }
    if let Some(conds) = patch
        .pointer("/status/conditions")
        .and_then(Value::as_array)
    {
        let have = s.conditions.entry(name.to_owned()).or_default();
        for c in conds {
            have.retain(|h| h.get("type") != c.get("type"));
            have.push(c.clone());
        }
    }
    Some(FakeApi::record(s, Kind::Modified, node))
}

impl NodeApi for FakeApi {
    async fn node(&self, name: &str) -> Result<Option<NodeLite>, ApiError> {
        self.call("get")?;
        Ok(self.lock().nodes.get(name).cloned())
    }

    async fn pod_node_name(&self, namespace: &str, name: &str) -> Result<String, ApiError> {
        self.call("get_pod")?;
        self.lock()
            .pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| status("get_pod", 404, "NotFound"))
    }

    async fn list(&self, limit: u32, continue_token: &str) -> Result<NodeList, ApiError> {
        self.call("list")?;
        let s = self.lock();
        let start: usize = continue_token.parse().unwrap_or(0);
        let items: Vec<NodeLite> = s
            .nodes
            .values()
            .skip(start)
            .take(limit as usize)
            .cloned()
            .collect();
        let next = start + items.len();
        Ok(NodeList {
            metadata: ListMeta {
                resource_version: s.rv.to_string(),
                continue_token: if next < s.nodes.len() {
                    next.to_string()
                } else {
                    String::new()
                },
            },
            items,
        })
    }

    async fn watch(
        &self,
        resource_version: &str,
        _timeout: Duration,
    ) -> Result<NodeEvents, ApiError> {
        self.call("watch")?;
        let from: u64 = resource_version.parse().unwrap_or(0);
        let generation = {
            let s = self.lock();
            if from + 1 < s.oldest || s.always_expired {
                return Err(status("watch", 410, "Expired"));
            }
            s.generation
        };
        let rx = self.changed.subscribe();
        let api = self.clone();
        let state = (api, from, rx, VecDeque::<NodeEvent>::new());
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            move |(api, mut from, mut rx, mut queue)| async move {
                loop {
                    if let Some(ev) = queue.pop_front() {
                        return Some((Ok(ev), (api, from, rx, queue)));
                    }
                    {
                        let s = api.lock();
                        if s.generation != generation || s.down {
                            return None;
                        }
                        let start = from;
                        for (rv, kind, node) in s.history.iter().filter(|(rv, ..)| *rv > start) {
                            from = *rv;
                            queue.push_back(match kind {
                                Kind::Added => NodeEvent::Added(node.clone()),
                                Kind::Modified => NodeEvent::Modified(node.clone()),
                                Kind::Deleted => NodeEvent::Deleted(node.clone()),
                            });
                        }
                    }
                    if queue.is_empty() && rx.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )))
    }

    async fn patch_status(&self, name: &str, patch: &Value) -> Result<(), ApiError> {
        self.call("patch_status")?;
        {
            let mut s = self.lock();
            s.patches.push((name.to_owned(), patch.clone()));
            let node = merge(&mut s, name, patch)
                .ok_or_else(|| status("patch_status", 404, "NotFound"))?;
            s.nodes.insert(name.to_owned(), node);
        }
        self.notify();
        Ok(())
    }
}
