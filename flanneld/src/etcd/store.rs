//! The key-value store the agent needs from etcd, as a small trait: ranges, create-if-absent,
//! put with a fresh TTL lease, delete, lease time-to-live, and a prefix watch that reports
//! compaction. [`crate::etcd::EtcdStore`] is the real one; [`mem::MemStore`] (tests) the
//! in-memory fake the agent core is unit-tested against.

use std::time::Duration;

/// A key and its value as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The etcd lease the key is attached to (0: none).
    pub lease: i64,
}

/// One change seen by a watch. A delete carries only the key, as etcd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed.
    Put(KeyValue),
    /// The key was deleted (or its lease expired).
    Delete(String),
}

/// What one wait on a watch returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchBatch {
    /// Changes, and the store revision they bring the watcher to.
    Events {
        /// The revision of the response.
        revision: i64,
        /// The changes, in order.
        events: Vec<WatchEvent>,
    },
    /// The start revision was compacted away: the watcher must re-list and diff.
    Compacted {
        /// The oldest revision still kept.
        compact_revision: i64,
    },
}

/// A created or updated key's etcd lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// The lease ID.
    pub id: i64,
    /// Its TTL as granted.
    pub ttl: Duration,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The etcd client reported an error (connection, gRPC status, auth...).
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A certificate or key file could not be read.
    #[error("reading {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// An operation took longer than the agent waits.
    #[error("etcd: no answer within {0:?}")]
    Timeout(Duration),
    /// The watch stream ended or was cancelled by the server.
    #[error("etcd watch ended: {0}")]
    WatchEnded(String),
    /// A key or value that is not UTF-8 where a string is needed.
    #[error("etcd returned a key that is not UTF-8")]
    NotUtf8,
    /// The in-memory fake's scripted failure.
    #[error("{0}")]
    Fake(String),
}

/// A watch of a prefix, from a start revision on.
#[allow(async_fn_in_trait)] // used through generics on one runtime; no Send bound needed
pub trait Watch {
    /// The next batch of changes (or compaction); an error ends the watch.
    async fn next(&mut self) -> Result<WatchBatch, StoreError>;
}

/// What a conditional write ([`Store::put_if`]) expects of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect<'a> {
    /// The key does not exist.
    Absent,
    /// The key holds exactly these bytes.
    Value(&'a [u8]),
}

/// The store operations the lease manager uses.
#[allow(async_fn_in_trait)] // used through generics on one runtime; no Send bound needed
pub trait Store {
    /// The watch type.
    type Watch: Watch;
    /// One key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Every key under `prefix`, and the store revision of the listing.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), StoreError>;
    /// Writes `key` attached to a new lease of `ttl` if the key is as `expect` says (one
    /// transaction); `None` when it is not (the new lease is revoked).
    async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        expect: Expect<'_>,
    ) -> Result<Option<Granted>, StoreError>;
    /// Creates `key` attached to a new lease of `ttl` if the key does not exist; `None`
    /// when it exists.
    async fn create(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<Option<Granted>, StoreError> {
        self.put_if(key, value, ttl, Expect::Absent).await
    }
    /// Writes `key` attached to a new lease of `ttl` (renewal, or update of our own lease).
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Granted, StoreError>;
    /// Deletes `key`.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// The time left on lease `id`; `None` when it does not exist (expired, revoked, or 0).
    async fn time_to_live(&self, id: i64) -> Result<Option<Duration>, StoreError>;
    /// Watches `prefix` from `start_revision` on.
    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Self::Watch, StoreError>;
}

#[cfg(test)]
pub mod mem {
    //! The in-memory store: etcd's semantics for what the agent uses (revisions, leases with
    //! TTLs on tokio's clock, compaction), plus scripted races and failures.

    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;
    use std::time::Duration;

    use tokio::sync::watch;
    use tokio::time::Instant;

    use super::*;

    #[derive(Debug, Default)]
    struct Inner {
        kv: BTreeMap<String, (Vec<u8>, i64)>,
        leases: BTreeMap<i64, Instant>,
        next_lease: i64,
        revision: i64,
        compacted: i64,
        history: Vec<(i64, WatchEvent)>,
        /// Keys another node writes just before our next create of the same key.
        racers: Vec<(String, Vec<u8>)>,
        /// Operations that fail once when named.
        fail: Vec<&'static str>,
        creates: usize,
        lists: usize,
    }

    /// The fake store; clones share the data.
    #[derive(Debug, Clone)]
    pub struct MemStore {
        inner: Rc<RefCell<Inner>>,
        rev_tx: Rc<watch::Sender<i64>>,
        /// Every call waits while `true`: an etcd that does not answer (partitioned, stopped).
        stalled: Rc<watch::Sender<bool>>,
    }

    impl Default for MemStore {
        fn default() -> Self {
            MemStore {
                inner: Rc::default(),
                rev_tx: Rc::new(watch::channel(0).0),
                stalled: Rc::new(watch::channel(false).0),
            }
        }
    }

    impl MemStore {
        fn record(&self, inner: &mut Inner, ev: WatchEvent) {
            inner.revision += 1;
            inner.history.push((inner.revision, ev));
            self.rev_tx.send_replace(inner.revision);
        }

        /// Writes a key without a lease (as `etcdctl put` does).
        pub fn put_raw(&self, key: &str, value: &str) {
            let mut i = self.inner.borrow_mut();
            i.kv.insert(key.into(), (value.as_bytes().to_vec(), 0));
            let kv = KeyValue {
                key: key.into(),
                value: value.as_bytes().to_vec(),
                lease: 0,
            };
            self.record(&mut i, WatchEvent::Put(kv));
        }

        /// Deletes a key (as `etcdctl del` does).
        pub fn delete_raw(&self, key: &str) {
            let mut i = self.inner.borrow_mut();
            if i.kv.remove(key).is_some() {
                self.record(&mut i, WatchEvent::Delete(key.into()));
            }
        }

        /// The value of a key.
        pub fn value(&self, key: &str) -> Option<String> {
            self.inner
                .borrow()
                .kv
                .get(key)
                .map(|(v, _)| String::from_utf8_lossy(v).into_owned())
        }

        /// The keys under a prefix.
        pub fn keys(&self, prefix: &str) -> Vec<String> {
            self.inner
                .borrow()
                .kv
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect()
        }

        /// Forgets history up to the current revision (`etcdctl compact`).
        pub fn compact(&self) {
            let mut i = self.inner.borrow_mut();
            i.compacted = i.revision;
            let c = i.compacted;
            i.history.retain(|(r, _)| *r > c);
        }

        /// Makes another node win the race for `key`: it is written just before our create.
        pub fn race(&self, key: &str, value: &str) {
            self.inner
                .borrow_mut()
                .racers
                .push((key.into(), value.as_bytes().to_vec()));
        }

        /// Makes the next call of operation `op` fail.
        pub fn fail_once(&self, op: &'static str) {
            self.inner.borrow_mut().fail.push(op);
        }

        /// Makes every call wait (`true`) until released (`false`), as an etcd that does not
        /// answer.
        pub fn stall(&self, stalled: bool) {
            self.stalled.send_replace(stalled);
        }

        /// How many listings were asked for.
        pub fn lists(&self) -> usize {
            self.inner.borrow().lists
        }

        /// How many create transactions were attempted.
        pub fn creates(&self) -> usize {
            self.inner.borrow().creates
        }

        /// Expires leases whose time ran out (call after advancing tokio's clock).
        pub fn expire(&self) {
            let now = Instant::now();
            let mut i = self.inner.borrow_mut();
            let dead: Vec<i64> = i
                .leases
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in dead {
                i.leases.remove(&id);
                let keys: Vec<String> =
                    i.kv.iter()
                        .filter(|(_, (_, l))| *l == id)
                        .map(|(k, _)| k.clone())
                        .collect();
                for k in keys {
                    i.kv.remove(&k);
                    self.record(&mut i, WatchEvent::Delete(k));
                }
            }
        }

        /// Waits while the store is stalled.
        async fn gate(&self) {
            // A real store call always yields; so must the fake's, or a loop of calls that
            // never waits would hold the test's thread and hide as a hang.
            tokio::task::yield_now().await;
            // The sender lives in `self`: waiting cannot fail.
            let _ = self.stalled.subscribe().wait_for(|s| !*s).await;
        }

        fn check(&self, op: &'static str) -> Result<(), StoreError> {
            let mut i = self.inner.borrow_mut();
            if let Some(pos) = i.fail.iter().position(|f| *f == op) {
                i.fail.remove(pos);
                return Err(StoreError::Fake(format!("scripted failure of {op}")));
            }
            Ok(())
        }

        fn grant(i: &mut Inner, ttl: Duration) -> Granted {
            i.next_lease += 1;
            let id = i.next_lease;
            i.leases.insert(id, Instant::now() + ttl);
            Granted { id, ttl }
        }
    }

    /// A watch on the fake.
    #[derive(Debug)]
    pub struct MemWatch {
        store: MemStore,
        prefix: String,
        next_rev: i64,
        rx: watch::Receiver<i64>,
    }

    impl Watch for MemWatch {
        async fn next(&mut self) -> Result<WatchBatch, StoreError> {
            loop {
                {
                    let i = self.store.inner.borrow();
                    if self.next_rev <= i.compacted {
                        return Ok(WatchBatch::Compacted {
                            compact_revision: i.compacted,
                        });
                    }
                    let events: Vec<WatchEvent> = i
                        .history
                        .iter()
                        .filter(|(r, e)| {
                            *r >= self.next_rev
                                && match e {
                                    WatchEvent::Put(kv) => kv.key.starts_with(&self.prefix),
                                    WatchEvent::Delete(k) => k.starts_with(&self.prefix),
                                }
                        })
                        .map(|(_, e)| e.clone())
                        .collect();
                    let revision = i.revision;
                    self.next_rev = revision + 1;
                    if !events.is_empty() {
                        return Ok(WatchBatch::Events { revision, events });
                    }
                }
                self.store.check("watch")?;
                self.rx
                    .changed()
                    .await
                    .map_err(|_| StoreError::WatchEnded("closed".into()))?;
            }
        }
    }

    impl Store for MemStore {
        type Watch = MemWatch;

        async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
            self.gate().await;
            self.check("get")?;
            Ok(self.inner.borrow().kv.get(key).map(|(v, l)| KeyValue {
                key: key.into(),
                value: v.clone(),
                lease: *l,
            }))
        }

        async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), StoreError> {
            self.gate().await;
            self.check("list")?;
            self.inner.borrow_mut().lists += 1;
            let i = self.inner.borrow();
            let kvs =
                i.kv.iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(k, (v, l))| KeyValue {
                        key: k.clone(),
                        value: v.clone(),
                        lease: *l,
                    })
                    .collect();
            Ok((kvs, i.revision))
        }

        async fn put_if(
            &self,
            key: &str,
            value: &[u8],
            ttl: Duration,
            expect: Expect<'_>,
        ) -> Result<Option<Granted>, StoreError> {
            self.gate().await;
            self.check(if expect == Expect::Absent {
                "create"
            } else {
                "put_if"
            })?;
            let mut i = self.inner.borrow_mut();
            if expect == Expect::Absent {
                i.creates += 1;
            }
            if let Some(pos) = i.racers.iter().position(|(k, _)| k == key) {
                let (k, v) = i.racers.remove(pos);
                let g = Self::grant(&mut i, ttl);
                i.kv.insert(k.clone(), (v.clone(), g.id));
                self.record(
                    &mut i,
                    WatchEvent::Put(KeyValue {
                        key: k,
                        value: v,
                        lease: g.id,
                    }),
                );
            }
            let met = match (expect, i.kv.get(key)) {
                (Expect::Absent, have) => have.is_none(),
                (Expect::Value(want), Some((have, _))) => have.as_slice() == want,
                (Expect::Value(_), None) => false,
            };
            if !met {
                return Ok(None);
            }
            let g = Self::grant(&mut i, ttl);
            i.kv.insert(key.into(), (value.to_vec(), g.id));
            self.record(
                &mut i,
                WatchEvent::Put(KeyValue {
                    key: key.into(),
                    value: value.to_vec(),
                    lease: g.id,
                }),
            );
            Ok(Some(g))
        }

        async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Granted, StoreError> {
            self.gate().await;
            self.check("put")?;
            let mut i = self.inner.borrow_mut();
            let g = Self::grant(&mut i, ttl);
            i.kv.insert(key.into(), (value.to_vec(), g.id));
            self.record(
                &mut i,
                WatchEvent::Put(KeyValue {
                    key: key.into(),
                    value: value.to_vec(),
                    lease: g.id,
                }),
            );
            Ok(g)
        }

        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.gate().await;
            self.check("delete")?;
            self.delete_raw(key);
            Ok(())
        }

        async fn time_to_live(&self, id: i64) -> Result<Option<Duration>, StoreError> {
            self.gate().await;
            self.check("ttl")?;
            let now = Instant::now();
            Ok(self
                .inner
                .borrow()
                .leases
                .get(&id)
                .and_then(|t| t.checked_duration_since(now)))
        }

        async fn watch(&self, prefix: &str, start_revision: i64) -> Result<MemWatch, StoreError> {
            self.gate().await;
            self.check("watch")?;
            Ok(MemWatch {
                store: self.clone(),
                prefix: prefix.into(),
                next_rev: start_revision,
                rx: self.rev_tx.subscribe(),
            })
        }
    }
}
