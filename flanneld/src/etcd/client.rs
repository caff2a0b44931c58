//! [`Store`] on a real etcd v3 cluster through the `etcd-client` crate: the same requests Go
//! flanneld's `pkg/subnet/etcd/registry.go` makes (range, grant + create transaction on
//! version 0, grant + put, delete, lease time-to-live, prefix watch from a revision).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions, WatchStream,
};

use super::store::{Expect, Granted, KeyValue, Store, StoreError, Watch, WatchBatch, WatchEvent};
use crate::log::warning;
use crate::metrics::Metrics;
use tonic::Code;

/// How long a single request may take before the agent treats etcd as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How the agent reaches etcd (flags `--etcd-*`). Its `Debug` leaves the password out.
#[derive(Clone, Default)]
pub struct EtcdOptions {
    /// Endpoints, e.g. `https://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// `--etcd-cafile`.
    pub ca_file: String,
    /// `--etcd-certfile`.
    pub cert_file: String,
    /// `--etcd-keyfile`.
    pub key_file: String,
    /// `--etcd-username`.
    pub username: String,
    /// `--etcd-password`.
    pub password: String,
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "(redacted)"
                },
            )
            .finish()
    }
}

/// etcd through its endpoints, one client each, failing over in order: a request that
/// finds its endpoint unreachable is retried on the next one, and the endpoint that answered
/// is used first from then on. (etcd-client's own balancing over several endpoints keeps
/// sending some requests to a dead endpoint, each failing: measured in
/// `conformance/tests/flanneld.rs`, `dead_endpoint_next_to_a_live_one`.)
#[derive(Clone)]
pub struct EtcdStore {
    endpoints: Vec<String>,
    options: ConnectOptions,
    clients: Rc<RefCell<Vec<Option<Client>>>>,
    /// Endpoints connected at least once: a connection made again counts as a reconnect.
    connected: Rc<RefCell<Vec<bool>>>,
    current: Rc<Cell<usize>>,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

fn read(path: &str) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|source| StoreError::File {
        path: path.to_owned(),
        source,
    })
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r.map_err(StoreError::from),
        Err(_) => Err(StoreError::Timeout(REQUEST_TIMEOUT)),
    }
}

impl EtcdStore {
    /// Connects to every endpoint (requests are balanced over the reachable ones).
    ///
    /// TLS as in Go flanneld: a client certificate is presented when both `--etcd-certfile`
    /// and `--etcd-keyfile` are given, the server is verified against `--etcd-cafile`.
    /// With TLS configured every endpoint is spoken to over TLS (an `http://` endpoint is
    /// used as `https://`, with a warning); without, `https://` endpoints still use TLS
    /// with the CA file.
    pub async fn connect(opts: &EtcdOptions) -> Result<EtcdStore, StoreError> {
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let client_cert = !opts.cert_file.is_empty() && !opts.key_file.is_empty();
        if !client_cert && (!opts.cert_file.is_empty() || !opts.key_file.is_empty()) {
            warning!(
                "--etcd-certfile and --etcd-keyfile must both be given for a client certificate; none is used"
            );
        }
        let https = opts.endpoints.iter().any(|e| e.starts_with("https://"));
        let tls = client_cert || https;
        if tls {
            let mut t = TlsOptions::new();
            if !opts.ca_file.is_empty() {
                t = t.ca_certificate(Certificate::from_pem(read(&opts.ca_file)?));
            }
            if client_cert {
                t = t.identity(Identity::from_pem(
                    read(&opts.cert_file)?,
                    read(&opts.key_file)?,
                ));
            }
            connect = connect.with_tls(t);
        } else if !opts.ca_file.is_empty() {
            warning!(
                "--etcd-cafile without a client certificate and with http endpoints: speaking plain HTTP, as Go flanneld does"
            );
        }
        let endpoints: Vec<String> = opts
            .endpoints
            .iter()
            .map(|e| match e.strip_prefix("http://") {
                Some(rest) if tls => {
                    warning!("TLS is configured: endpoint {e} is used as https://{rest}");
                    format!("https://{rest}")
                }
                _ => e.clone(),
            })
            .collect();
        if !opts.username.is_empty() {
            connect = connect.with_user(opts.username.clone(), opts.password.clone());
        }
        if endpoints.is_empty() {
            return Err(StoreError::Etcd(etcd_client::Error::InvalidArgs(
                "no --etcd-endpoints".into(),
            )));
        }
        let store = EtcdStore {
            clients: Rc::new(RefCell::new(vec![None; endpoints.len()])),
            connected: Rc::new(RefCell::new(vec![false; endpoints.len()])),
            metrics: None,
            endpoints,
            options: connect,
            current: Rc::new(Cell::new(0)),
        };
        Ok(store)
    }

    /// Counts failovers and reconnects into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> EtcdStore {
        self.metrics = Some(metrics);
        self
    }

    /// The client of endpoint `idx`, connected on first use.
    async fn client(&self, idx: usize) -> Result<Client, StoreError> {
        let existing = self.clients.borrow().get(idx).cloned().flatten();
        if let Some(c) = existing {
            return Ok(c);
        }
        let ep = self.endpoints.get(idx).cloned().unwrap_or_default();
        let c = timed(Client::connect([ep], Some(self.options.clone()))).await?;
        if let Some(slot) = self.clients.borrow_mut().get_mut(idx) {
            *slot = Some(c.clone());
        }
        if let Some(seen) = self.connected.borrow_mut().get_mut(idx) {
            if *seen && let Some(m) = &self.metrics {
                m.etcd_reconnect();
            }
            *seen = true;
        }
        Ok(c)
    }

    /// Runs `op` on the current endpoint, failing over to the others on unreachability.
    async fn call<T, Fut>(&self, op: impl Fn(Client) -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.endpoints.len();
        let start = self.current.get();
        let mut last = StoreError::Timeout(REQUEST_TIMEOUT);
        for i in 0..n {
            let idx = (start + i) % n;
            let result = match self.client(idx).await {
                Ok(c) => timed(op(c)).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => {
                    if idx != start {
                        warning!(
                            "etcd endpoint {} unreachable: using {}",
                            self.endpoints[start % n],
                            self.endpoints[idx]
                        );
                        self.current.set(idx);
                        if let Some(m) = &self.metrics {
                            m.etcd_failover();
                        }
                    }
                    return Ok(v);
                }
                Err(e) if unreachable(&e) => {
                    if let Some(slot) = self.clients.borrow_mut().get_mut(idx) {
                        *slot = None;
                    }
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

/// Whether an error means "this endpoint cannot be reached now" (try another).
fn unreachable(e: &StoreError) -> bool {
    match e {
        StoreError::Timeout(_) => true,
        StoreError::Etcd(etcd_client::Error::TransportError(_)) => true,
        StoreError::Etcd(etcd_client::Error::GRpcStatus(s)) => {
            matches!(
                s.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Unknown
            ) && !s.message().contains("etcdserver:")
        }
        _ => false,
    }
}

fn to_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: kv.key_str().map_err(|_| StoreError::NotUtf8)?.to_owned(),
        value: kv.value().to_vec(),
        lease: kv.lease(),
    })
}

/// A prefix watch on etcd.
pub struct EtcdWatch {
    stream: WatchStream,
}

impl std::fmt::Debug for EtcdWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EtcdWatch")
    }
}

impl Watch for EtcdWatch {
    async fn next(&mut self) -> Result<WatchBatch, StoreError> {
        loop {
            let Some(resp) = self.stream.message().await? else {
                return Err(StoreError::WatchEnded("stream closed by the server".into()));
            };
            if resp.compact_revision() > 0 {
                return Ok(WatchBatch::Compacted {
                    compact_revision: resp.compact_revision(),
                });
            }
            if resp.canceled() {
                return Err(StoreError::WatchEnded(format!(
                    "cancelled: {}",
                    resp.cancel_reason()
                )));
            }
            let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            let mut events = Vec::new();
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                match ev.event_type() {
                    EventType::Put => match to_kv(kv) {
                        Ok(kv) => events.push(WatchEvent::Put(kv)),
                        Err(_) => warning!("skipping a watch event whose key is not UTF-8"),
                    },
                    EventType::Delete => match kv.key_str() {
                        Ok(k) => events.push(WatchEvent::Delete(k.to_owned())),
                        Err(_) => warning!("skipping a watch event whose key is not UTF-8"),
                    },
                }
            }
            // Creation confirmations and progress notices carry no events.
            if !events.is_empty() {
                return Ok(WatchBatch::Events { revision, events });
            }
        }
    }
}

impl Store for EtcdStore {
    type Watch = EtcdWatch;

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self
            .call(|mut c| async move { c.get(key, None).await })
            .await?;
        resp.kvs().first().map(to_kv).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), StoreError> {
        let resp = self
            .call(|mut c| async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await })
            .await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut kvs = Vec::new();
        for kv in resp.kvs() {
            match to_kv(kv) {
                Ok(kv) => kvs.push(kv),
                Err(_) => warning!("skipping a key under {prefix} that is not UTF-8"),
            }
        }
        Ok((kvs, rev))
    }

    async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        expect: Expect<'_>,
    ) -> Result<Option<Granted>, StoreError> {
        let secs = ttl.as_secs() as i64;
        let grant = self
            .call(|mut c| async move { c.lease_grant(secs, None).await })
            .await?;
        let id = grant.id();
        let outcome = self
            .call(|mut c| async move {
                let compare = match expect {
                    Expect::Absent => Compare::version(key, CompareOp::Equal, 0),
                    Expect::Value(v) => Compare::value(key, CompareOp::Equal, v),
                };
                let txn = Txn::new().when([compare]).and_then([TxnOp::put(
                    key,
                    value,
                    Some(PutOptions::new().with_lease(id)),
                )]);
                c.txn(txn).await
            })
            .await;
        match outcome {
            Ok(resp) if resp.succeeded() => Ok(Some(Granted {
                id,
                ttl: Duration::from_secs(grant.ttl().max(0) as u64),
            })),
            Ok(_) => {
                // The compare failed: the granted lease must not linger.
                if let Err(e) = self
                    .call(|mut c| async move { c.lease_revoke(id).await })
                    .await
                {
                    warning!("revoking unused lease {id:x}: {e}");
                }
                Ok(None)
            }
            // No answer (a timeout, a dropped connection): the write may have committed, and
            // revoking would then delete the key; the lease runs out by itself if unused.
            Err(e) => Err(e),
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Granted, StoreError> {
        let secs = ttl.as_secs() as i64;
        let grant = self
            .call(|mut c| async move { c.lease_grant(secs, None).await })
            .await?;
        let id = grant.id();
        self.call(|mut c| async move {
            c.put(key, value, Some(PutOptions::new().with_lease(id)))
                .await
        })
        .await?;
        Ok(Granted {
            id,
            ttl: Duration::from_secs(grant.ttl().max(0) as u64),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.call(|mut c| async move { c.delete(key, None).await })
            .await?;
        Ok(())
    }

    async fn time_to_live(&self, id: i64) -> Result<Option<Duration>, StoreError> {
        if id == 0 {
            return Ok(None);
        }
        let resp = self
            .call(|mut c| async move { c.lease_time_to_live(id, None).await })
            .await?;
        Ok((resp.ttl() > 0).then(|| Duration::from_secs(resp.ttl() as u64)))
    }

    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<EtcdWatch, StoreError> {
        let stream = self
            .call(|mut c| async move {
                let opts = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(start_revision);
                c.watch(prefix, Some(opts)).await
            })
            .await?;
        Ok(EtcdWatch { stream })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_leaves_the_password_out() {
        let o = EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            username: "root".into(),
            password: "s3cret".into(),
            ..Default::default()
        };
        let text = format!("{o:?}");
        assert!(
            !text.contains("s3cret") && text.contains("(redacted)"),
            "{text}"
        );
    }
}
