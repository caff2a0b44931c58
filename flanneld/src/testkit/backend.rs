//! [`Recorder`]: the agent tests' one fake backend.

use std::cell::{Cell, RefCell};
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, BackendError, WatchedEntries};
use crate::cache::LeaseEvent;
use crate::lease::{Lease, LeaseAttrs};

/// Records what the agent tells it, as lines (`own 10.5.1.0-24`, `add 10.5.9.0-24
/// 192.168.1.9`, `del …`; a lease's IPv6 address where it has no IPv4 subnet), the calls of
/// the reconcile family (`handle`, `full`, `rules`; written from the entry-notice thread too)
/// and the instants it reconciled. What it reports is set by the test: its lease attributes
/// and MTU, watched links and entries, a failed kernel step (`unsettled`); a real backend
/// given as `inner` gets every call too. Clones share the records.
#[derive(Clone)]
pub struct Recorder {
    log: Rc<RefCell<Vec<String>>>,
    calls: Arc<Mutex<Vec<&'static str>>>,
    reconciles: Rc<RefCell<Vec<tokio::time::Instant>>>,
    held: Rc<Cell<usize>>,
    /// Its lease's attributes.
    pub attrs: LeaseAttrs,
    /// The MTU it reports.
    pub mtu: u32,
    /// Set: it reports a failed kernel step.
    pub unsettled: Rc<Cell<bool>>,
    /// [`Backend::watched_links`].
    pub links: Vec<String>,
    /// [`Backend::watched_entries`].
    pub entries: WatchedEntries,
    /// A backend that gets every call after it is recorded.
    pub inner: Option<Rc<RefCell<dyn Backend>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("log", &self.log)
            .field("attrs", &self.attrs)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A host-gw node at 192.168.1.2, MTU 1500.
    pub fn host_gw() -> Recorder {
        Recorder::with_attrs(
            LeaseAttrs {
                public_ip: Ipv4Addr::new(192, 168, 1, 2),
                public_ipv6: None,
                backend_type: "host-gw".into(),
                backend_data: None,
                backend_v6_data: None,
            },
            1500,
        )
    }

    /// A node publishing `attrs`, with MTU `mtu`.
    pub fn with_attrs(attrs: LeaseAttrs, mtu: u32) -> Recorder {
        Recorder {
            log: Rc::default(),
            calls: Arc::default(),
            reconciles: Rc::default(),
            held: Rc::default(),
            attrs,
            mtu,
            unsettled: Rc::default(),
            links: Vec::new(),
            entries: WatchedEntries::default(),
            inner: None,
        }
    }

    /// The lines so far, taken.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.borrow_mut())
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    /// The reconcile family's calls so far, taken.
    pub fn take_calls(&self) -> Vec<&'static str> {
        self.calls
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }

    /// Adds a call to the record (the entry-notice joiner of a test writes `join`).
    pub fn push(&self, what: &'static str) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(what);
        }
    }

    /// The record of calls itself, for a closure on another thread (a `Join` of entry
    /// notices).
    pub fn calls(&self) -> Arc<Mutex<Vec<&'static str>>> {
        Arc::clone(&self.calls)
    }

    /// When it reconciled.
    pub fn reconciles(&self) -> Vec<tokio::time::Instant> {
        self.reconciles.borrow().clone()
    }
}

/// A lease's address as the lines show it: its PublicIP, or PublicIPv6 in an IPv6-only one.
fn public(l: &Lease) -> String {
    match (l.subnet.v4, l.attrs.public_ipv6) {
        (None, Some(ip6)) => ip6.to_string(),
        _ => l.attrs.public_ip.to_string(),
    }
}

impl Backend for Recorder {
    fn backend_type(&self) -> &'static str {
        match self.attrs.backend_type.as_str() {
            "vxlan" => "vxlan",
            "wireguard" => "wireguard",
            _ => "host-gw",
        }
    }
    fn lease_attrs(&self) -> LeaseAttrs {
        match &self.inner {
            Some(b) => b.borrow().lease_attrs(),
            None => self.attrs.clone(),
        }
    }
    fn mtu(&self) -> u32 {
        self.mtu
    }
    fn lease_acquired(&mut self, lease: &Lease) -> Result<(), BackendError> {
        self.log.borrow_mut().push(format!("own {}", lease.subnet));
        match &self.inner {
            Some(b) => b.borrow_mut().lease_acquired(lease),
            None => Ok(()),
        }
    }
    fn handle(&mut self, events: &[LeaseEvent]) {
        self.push("handle");
        for e in events {
            let line = match e {
                LeaseEvent::Added(l) => {
                    self.held.set(self.held.get() + 1);
                    format!("add {} {}", l.subnet, public(l))
                }
                LeaseEvent::Removed(l) => {
                    self.held.set(self.held.get().saturating_sub(1));
                    format!("del {} {}", l.subnet, public(l))
                }
            };
            self.log.borrow_mut().push(line);
        }
        if let Some(b) = &self.inner {
            b.borrow_mut().handle(events);
        }
    }
    fn reconcile(&mut self) {
        self.push("full");
        self.reconciles
            .borrow_mut()
            .push(tokio::time::Instant::now());
    }
    fn reconcile_without_entries(&mut self) {
        self.push("rules");
    }
    fn settled(&self) -> bool {
        !self.unsettled.get()
    }
    fn watched_links(&self) -> Vec<String> {
        self.links.clone()
    }
    fn watched_entries(&self) -> WatchedEntries {
        self.entries.clone()
    }
    fn programmed(&self) -> usize {
        self.held.get()
    }
}
