//! The hostile etcd corpus (`testdata/bad-etcd/`, format in `testdata/README.md`) through the
//! agent core on the in-memory store: every config case is refused with its line and
//! retried; every lease case reaches no backend (host-gw: a recording fake; vxlan: the real
//! backend over its fake kernel, which must hold no entry of a bad case), whether it is in
//! etcd before the agent starts (listing) or arrives while it runs (watch); the good peers
//! next to them are programmed; no log line is longer than 2 KiB.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::LocalSet;

use crate::agent;
use crate::backend::Backend;
use crate::backend::vxlan::Vxlan;
use crate::backend::vxlan::tests::fake::FakeKernel;
use crate::config::NetworkConfig;
use crate::etcd::store::mem::MemStore;
use crate::etcd::{DEFAULT_PREFIX, LeaseManager};
use crate::lease::LeaseAttrs;
use crate::log::capture;
use crate::testkit::{self, Recorder, Rig, Setup, etcd_manager};

const SUBNETS: &str = "/coreos.com/network/subnets/";
const OWN_IP: &str = "192.168.1.2";
const PEER_IP: &str = "192.168.1.9";
/// Good peers put next to the cases: each must be programmed.
const GOOD: [(&str, &str); 2] = [
    ("10.5.240.0-24", "192.168.1.11"),
    ("10.5.241.0-24", "192.168.1.12"),
];
const GOOD_MAC: [&str; 2] = ["c6:d2:32:6f:8f:11", "c6:d2:32:6f:8f:12"];

#[derive(Debug, Clone, Deserialize)]
struct LeaseCase {
    key: String,
    value: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Case {
    #[serde(skip)]
    name: String,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    config: Option<String>,
    #[serde(default)]
    leases: Vec<LeaseCase>,
    expect: String,
    #[serde(default)]
    log: Option<String>,
}

/// The placeholders of the corpus, for this rig.
fn expand(s: &str) -> String {
    s.replace("@OWN_IP@", OWN_IP)
        .replace("@PEER_IP@", PEER_IP)
        .replace("@1MiB@", &"x".repeat(1 << 20))
        .replace(
            "@DEEP@",
            &format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        )
}

fn cases() -> Vec<Case> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/bad-etcd");
    let mut out: Vec<Case> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let mut c: Case = serde_json::from_slice(&std::fs::read(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            c.name = p.file_stem().unwrap().to_string_lossy().into_owned();
            c
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(out.len() >= 35, "{} cases", out.len());
    out
}

fn backend_of(c: &Case) -> &str {
    c.backend.as_deref().unwrap_or("host-gw")
}

fn default_config(backend: &str) -> String {
    format!(r#"{{"Network":"10.5.0.0/16","Backend":{{"Type":"{backend}"}}}}"#)
}

fn good_value(backend: &str, i: usize) -> String {
    let ip = GOOD[i].1;
    if backend == "vxlan" {
        format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{}"}}}}"#,
            GOOD_MAC[i]
        )
    } else {
        format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#)
    }
}

fn assert_lines_bounded(what: &str) {
    for l in capture::lines() {
        assert!(l.len() < 2048, "{what}: a {}-byte log line", l.len());
    }
}

/// Every config case: `network_config` refuses it with the case's text, and the agent's
/// config wait logs it again every second without giving up.
#[tokio::test(start_paused = true)]
async fn every_config_case_is_refused_with_its_line_and_retried() {
    capture::start();
    let mut n = 0;
    for c in cases().into_iter().filter(|c| c.config.is_some()) {
        assert_eq!(c.expect, "refused", "{}", c.name);
        let want = expand(c.log.as_deref().unwrap());
        let store = MemStore::default();
        store.put_raw(
            "/coreos.com/network/config",
            &expand(c.config.as_deref().unwrap()),
        );
        let m = LeaseManager::new(store, DEFAULT_PREFIX, (None, None));
        let e = m.network_config().await.unwrap_err().to_string();
        assert!(e.contains(&want), "{}: {e:?} lacks {want:?}", c.name);
        assert!(e.len() < 1024, "{}: {} bytes", c.name, e.len());
        capture::start();
        let (stop, mut rx) = watch::channel(false);
        let wait = agent::wait_for_config(&m, &mut rx);
        let stopper = async {
            tokio::time::sleep(Duration::from_millis(3500)).await;
            stop.send(true).unwrap();
        };
        let (got, ()) = tokio::join!(wait, stopper);
        assert!(got.is_none(), "{}: taken", c.name);
        let tries = capture::lines()
            .iter()
            .filter(|l| l.contains(&want) && l.contains("retrying in 1 s"))
            .count();
        assert_eq!(tries, 4, "{}: {:?}", c.name, capture::lines());
        assert_lines_bounded(&c.name);
        n += 1;
    }
    assert!(n >= 20, "{n} config cases");
}

/// The backend of a case: the kit's recorder, over the real vxlan backend on its fake kernel
/// for vxlan (a host-gw-like fake otherwise).
#[derive(Clone)]
struct Subject {
    recorder: Recorder,
    vxlan: Option<Rc<RefCell<Vxlan<FakeKernel>>>>,
}

impl Subject {
    fn new(backend: &str) -> Subject {
        let vxlan = (backend == "vxlan").then(|| {
            let config = NetworkConfig::parse(default_config("vxlan").as_bytes()).unwrap();
            let ext = crate::backend::hostgw::tests::ext([192, 168, 1, 2], [192, 168, 1, 2]);
            let b = Vxlan::new(
                FakeKernel::new(),
                ext,
                &config,
                [2, 0xaa, 0, 0, 0, 1],
                [2, 0xaa, 0, 0, 0, 2],
            )
            .unwrap();
            Rc::new(RefCell::new(b))
        });
        let attrs = LeaseAttrs {
            public_ip: OWN_IP.parse().unwrap(),
            public_ipv6: None,
            backend_type: backend.into(),
            backend_data: None,
            backend_v6_data: None,
        };
        let mut recorder = Recorder::with_attrs(attrs, 1450);
        if let Some(v) = &vxlan {
            let inner: Rc<RefCell<dyn Backend>> = v.clone();
            recorder.inner = Some(inner);
        }
        Subject { recorder, vxlan }
    }

    fn added(&self) -> BTreeSet<String> {
        self.recorder
            .lines()
            .iter()
            .filter_map(|e| e.strip_prefix("add ").map(|s| s.to_owned()))
            .collect()
    }
}

fn start(store: MemStore, subject: &Subject) -> Rig {
    testkit::start(
        tempfile::tempdir().unwrap(),
        subject.recorder.clone(),
        Setup::default(),
        move |rx| etcd_manager(store, rx),
    )
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn put_cases(store: &MemStore, cases: &[Case]) {
    for c in cases {
        for l in &c.leases {
            store.put_raw(&format!("{SUBNETS}{}", expand(&l.key)), &expand(&l.value));
        }
    }
}

/// The subnets (key form) of the accepted cases of `backend`, and the good peers.
fn wanted(cases: &[Case]) -> BTreeSet<String> {
    let mut w: BTreeSet<String> = GOOD.iter().map(|(k, ip)| format!("{k} {ip}")).collect();
    for c in cases.iter().filter(|c| c.expect == "accepted") {
        for l in &c.leases {
            w.insert(format!("{} {PEER_IP}", expand(&l.key)));
        }
    }
    w
}

fn check_logs(cases: &[Case], when: &str) {
    let lines = capture::lines().concat();
    for c in cases {
        if let Some(want) = &c.log {
            let want = expand(want);
            assert!(
                lines.contains(&want),
                "{when}: {}: the log lacks {want:?}",
                c.name
            );
        }
    }
    assert_lines_bounded(when);
}

/// The vxlan kernel holds entries of the good and accepted peers only.
fn check_kernel(r: &Subject, cases: &[Case]) {
    let Some(v) = &r.vxlan else { return };
    let mut v = v.borrow_mut();
    let k = v.kernel();
    let accepted = cases.iter().filter(|c| c.expect == "accepted").count();
    assert_eq!(k.routes.len(), GOOD.len() + accepted, "{:?}", k.routes);
    assert_eq!(k.neigh.len(), GOOD.len() + accepted, "{:?}", k.neigh);
    assert_eq!(k.fdb.len(), GOOD.len() + accepted, "{:?}", k.fdb);
    for (_, f) in &k.fdb {
        assert!(f.mac != [0; 6] && f.mac[0] & 1 == 0, "{f:?}");
        assert!(f.dst != OWN_IP.parse::<Ipv4Addr>().unwrap(), "{f:?}");
    }
}

async fn lease_cases_of(backend: &str) {
    let all = cases();
    let cases: Vec<Case> = all
        .into_iter()
        .filter(|c| c.config.is_none() && backend_of(c) == backend && c.expect != "reacquire")
        .collect();
    assert!(!cases.is_empty());
    for c in &cases {
        assert!(
            matches!(c.expect.as_str(), "skipped" | "accepted"),
            "{}: {}",
            c.name,
            c.expect
        );
    }
    let want = wanted(&cases);

    // In etcd before the agent starts: the listing. A lease naming this node's PublicIP is,
    // at start, this node's own from before a restart: reused as Go reuses it, so those
    // cases are only checked on the watch below.
    let at_start: Vec<Case> = cases
        .iter()
        .filter(|c| !c.leases.iter().any(|l| l.value.contains("@OWN_IP@")))
        .cloned()
        .collect();
    capture::start();
    let store = MemStore::default();
    store.put_raw("/coreos.com/network/config", &default_config(backend));
    for (i, (k, _)) in GOOD.iter().enumerate() {
        store.put_raw(&format!("{SUBNETS}{k}"), &good_value(backend, i));
    }
    put_cases(&store, &at_start);
    let subject = Subject::new(backend);
    let run = start(store, &subject);
    settle().await;
    assert_eq!(subject.added(), want, "listing ({backend})");
    check_logs(&at_start, &format!("listing ({backend})"));
    check_kernel(&subject, &cases);
    assert!(!run.task.is_finished());
    run.stop.send(true).unwrap();

    // Arriving while it runs: the watch. The good peers first.
    capture::start();
    let store = MemStore::default();
    store.put_raw("/coreos.com/network/config", &default_config(backend));
    for (i, (k, _)) in GOOD.iter().enumerate() {
        store.put_raw(&format!("{SUBNETS}{k}"), &good_value(backend, i));
    }
    let subject = Subject::new(backend);
    let run = start(store.clone(), &subject);
    settle().await;
    put_cases(&store, &cases);
    settle().await;
    assert_eq!(subject.added(), want, "watch ({backend})");
    let lines = subject.recorder.lines();
    assert!(!lines.iter().any(|e| e.starts_with("del ")), "{lines:?}");
    check_logs(&cases, &format!("watch ({backend})"));
    check_kernel(&subject, &cases);

    // A good peer's key overwritten with each bad value in turn: what it had goes (or, for a
    // value that is only bad under its own key, the peer moves to that value's PublicIP);
    // never an entry to anything else.
    let (k, good_ip) = GOOD[0];
    for c in cases.iter().filter(|c| c.expect == "skipped") {
        for l in &c.leases {
            store.put_raw(&format!("{SUBNETS}{k}"), &good_value(backend, 0));
            settle().await;
            subject.recorder.take();
            store.put_raw(&format!("{SUBNETS}{k}"), &expand(&l.value));
            settle().await;
            let ev = subject.recorder.lines();
            let gone = [format!("del {k} {good_ip}")];
            // Moved to another peer: only ever to an address a peer can have.
            let moved = ev.len() == 1
                && ev[0].strip_prefix(&format!("add {k} ")).is_some_and(|ip| {
                    let ip: Ipv4Addr = ip.parse().unwrap();
                    !(ip.is_unspecified()
                        || ip.is_loopback()
                        || ip.is_multicast()
                        || ip.is_broadcast()
                        || ip.to_string() == OWN_IP
                        || ip.octets()[..2] == [10, 5])
                });
            assert!(ev == gone || moved, "{}: {ev:?}", c.name);
        }
    }
    store.put_raw(&format!("{SUBNETS}{k}"), &good_value(backend, 0));
    settle().await;
    check_kernel(&subject, &cases);
    assert!(!run.task.is_finished());
    run.stop.send(true).unwrap();
    settle().await;
    run.task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn every_host_gw_lease_case_is_skipped_and_good_peers_programmed() {
    LocalSet::new().run_until(lease_cases_of("host-gw")).await;
}

#[tokio::test(start_paused = true)]
async fn every_vxlan_lease_case_is_skipped_and_no_kernel_entry_made() {
    LocalSet::new().run_until(lease_cases_of("vxlan")).await;
}

/// The node's own key overwritten with another node's value: the agent never hands the
/// backend its own subnet as a peer's while it holds it; it logs, acquires another subnet
/// and only then treats the old one as the other node's.
#[tokio::test(start_paused = true)]
async fn own_key_overwritten_is_lost_not_routed_then_reacquired() {
    LocalSet::new()
        .run_until(async {
            let cases: Vec<Case> = cases()
                .into_iter()
                .filter(|c| c.expect == "reacquire")
                .collect();
            assert!(!cases.is_empty());
            for c in cases {
                capture::start();
                let store = MemStore::default();
                store.put_raw("/coreos.com/network/config", &default_config("host-gw"));
                let subject = Subject::new("host-gw");
                let run = start(store.clone(), &subject);
                settle().await;
                let old = run.own_key().unwrap();
                for l in &c.leases {
                    let key = l.key.replace("@OWN_KEY@", &old);
                    store.put_raw(&format!("{SUBNETS}{}", expand(&key)), &expand(&l.value));
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                let new = run.own_key().unwrap();
                assert_ne!(new, old, "{}", c.name);
                let ev = subject.recorder.lines();
                let own_new = ev
                    .iter()
                    .position(|e| *e == format!("own {new}"))
                    .unwrap_or_else(|| panic!("{}: {ev:?}", c.name));
                let routed_old = ev
                    .iter()
                    .position(|e| e.starts_with(&format!("add {old} ")));
                assert!(
                    routed_old.is_none_or(|i| i > own_new),
                    "{}: the node's own subnet routed to a peer while it held it: {ev:?}",
                    c.name
                );
                check_logs(std::slice::from_ref(&c), &c.name);
                assert!(!run.task.is_finished());
                run.stop.send(true).unwrap();
            }
        })
        .await;
}
