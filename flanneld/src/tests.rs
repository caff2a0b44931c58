//! The agent loop against the in-memory store, on tokio's paused clock: lease, subnet.env,
//! readiness, peers' changes to the backend, the node's own key deleted, compaction, renewal,
//! shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::LocalSet;

use crate::agent;
use crate::config::NetworkConfig;
use crate::etcd::store::mem::MemStore;
use crate::metrics::Metrics;
use crate::testkit::{self, Recorder, Rig, Setup, etcd_manager, settle};

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#;
const SUBNETS: &str = "/coreos.com/network/subnets/";

fn peer(ip: &str) -> String {
    format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#)
}

fn start(store: MemStore, margin: Duration) -> Rig {
    let setup = Setup {
        renew_margin: Some(margin),
        ..Setup::default()
    };
    testkit::start(
        tempfile::tempdir().unwrap(),
        Recorder::host_gw(),
        setup,
        move |rx| etcd_manager(store, rx),
    )
}

/// The node's own lease key, from subnet.env.
fn own_lease_key(rig: &Rig) -> String {
    format!("{SUBNETS}{}", rig.own_key().unwrap())
}

#[tokio::test(start_paused = true)]
async fn lease_subnet_env_peers_and_shutdown() {
    LocalSet::new()
        .run_until(async {
            let store = MemStore::default();
            store.put_raw(&format!("{SUBNETS}10.5.9.0-24"), &peer("192.168.1.9"));
            let rig = start(store.clone(), Duration::from_secs(3600));
            settle().await;
            assert!(!rig.ready.get(), "no config yet: not ready");
            assert_eq!(rig.subnet_env(), "");
            // The config arrives; the agent retries every second.
            store.put_raw("/coreos.com/network/config", CONFIG);
            tokio::time::sleep(Duration::from_millis(1100)).await;
            assert!(rig.ready.get());
            let env = rig.subnet_env();
            assert!(
                env.starts_with("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5."),
                "{env}"
            );
            assert!(
                env.ends_with(".1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"),
                "{env}"
            );
            let own = own_lease_key(&rig);
            assert_eq!(store.value(&own).unwrap(), peer("192.168.1.2"));
            let log = rig.take();
            assert_eq!(log.len(), 2, "{log:?}");
            assert!(
                log[0].starts_with("own 10.5.") && log[1] == "add 10.5.9.0-24 192.168.1.9",
                "{log:?}"
            );

            // A peer comes, renews (same value: nothing), goes: the removal carries its IP.
            // Its subnet is past the first 100 free ones, so it can never be the agent's own.
            store.put_raw(&format!("{SUBNETS}10.5.250.0-24"), &peer("192.168.1.7"));
            store.put_raw(&format!("{SUBNETS}10.5.250.0-24"), &peer("192.168.1.7"));
            store.put_raw(&format!("{SUBNETS}bogus"), &peer("192.168.1.8"));
            store.put_raw(&format!("{SUBNETS}10.5.251.0-24"), "{not json");
            settle().await;
            store.delete_raw(&format!("{SUBNETS}10.5.250.0-24"));
            settle().await;
            assert_eq!(
                rig.take(),
                [
                    "add 10.5.250.0-24 192.168.1.7",
                    "del 10.5.250.0-24 192.168.1.7"
                ]
            );

            rig.stop.send(true).unwrap();
            settle().await;
            assert!(rig.task.is_finished());
            // Nothing is torn down: the lease and subnet.env stay.
            assert!(store.value(&own).is_some());
            assert!(!rig.subnet_env().is_empty());
            rig.task.await.unwrap().unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn own_key_deleted_is_reacquired() {
    LocalSet::new()
        .run_until(async {
            let store = MemStore::default();
            store.put_raw("/coreos.com/network/config", CONFIG);
            let rig = start(store.clone(), Duration::from_secs(3600));
            settle().await;
            let own = own_lease_key(&rig);
            let env = rig.subnet_env();
            rig.take();
            store.delete_raw(&own);
            settle().await;
            assert_eq!(
                store.value(&own).unwrap(),
                peer("192.168.1.2"),
                "the same subnet again"
            );
            assert_eq!(rig.subnet_env(), env);
            assert_eq!(rig.take().len(), 1, "backend told of the re-acquired lease");
            assert!(!rig.task.is_finished(), "still running (Go exits 0 here)");

            // Taken by another node in between: another subnet, subnet.env rewritten.
            store.fail_once("create");
            let sn = own.strip_prefix(SUBNETS).unwrap().to_owned();
            store.delete_raw(&own);
            store.put_raw(&own, &peer("192.168.1.66"));
            // Lost again within the minute: a 1 s pause, then the failed create's 1 s retry.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let new_own = own_lease_key(&rig);
            assert_ne!(new_own, own);
            assert_eq!(store.value(&new_own).unwrap(), peer("192.168.1.2"));
            let log = rig.take();
            assert!(log.contains(&format!("add {sn} 192.168.1.66")), "{log:?}");
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_lease_lost_again_and_again_is_acquired_again_ever_more_slowly() {
    // Before: each loss was answered at once: two agents fighting over a key rewrote it
    // in a tight loop.
    LocalSet::new()
        .run_until(async {
            let store = MemStore::default();
            store.put_raw("/coreos.com/network/config", CONFIG);
            let rig = start(store.clone(), Duration::from_secs(3600));
            settle().await;
            let own = own_lease_key(&rig);
            let mine = peer("192.168.1.2");
            // The first loss: acquired again at once.
            store.delete_raw(&own);
            settle().await;
            assert_eq!(store.value(&own).as_deref(), Some(mine.as_str()));
            // Lost again within the minute: 1 s, then 2 s before acquiring again.
            for pause in [1, 2] {
                store.delete_raw(&own);
                tokio::time::sleep(Duration::from_millis(pause * 1000 - 100)).await;
                assert_eq!(store.value(&own), None, "acquired again before {pause} s");
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert_eq!(store.value(&own).as_deref(), Some(mine.as_str()));
            }
            // A quiet minute: at once again.
            tokio::time::sleep(Duration::from_secs(61)).await;
            store.delete_raw(&own);
            settle().await;
            assert_eq!(store.value(&own).as_deref(), Some(mine.as_str()));
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn compaction_relists_and_diffs_without_spinning() {
    LocalSet::new()
        .run_until(async {
            let store = MemStore::default();
            store.put_raw("/coreos.com/network/config", CONFIG);
            store.put_raw(&format!("{SUBNETS}10.5.9.0-24"), &peer("192.168.1.9"));
            // The watch errors once: re-list, no event twice.
            store.fail_once("watch");
            let rig = start(store.clone(), Duration::from_secs(3600));
            settle().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let log = rig.take();
            assert_eq!(
                log.iter().filter(|l| l.starts_with("add")).count(),
                1,
                "{log:?}"
            );

            // Changes the watch never sees: compacted away before it reads them.
            let stop_watch = store.clone();
            stop_watch.fail_once("watch");
            store.delete_raw(&format!("{SUBNETS}10.5.9.0-24"));
            // Past the first 100 free subnets: never the agent's own.
            store.put_raw(&format!("{SUBNETS}10.5.240.0-24"), &peer("192.168.1.4"));
            store.compact();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut log = rig.take();
            log.sort();
            assert_eq!(
                log,
                [
                    "add 10.5.240.0-24 192.168.1.4",
                    "del 10.5.9.0-24 192.168.1.9"
                ]
            );
            assert!(!rig.task.is_finished());
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn renewed_before_expiry() {
    LocalSet::new()
        .run_until(async {
            let store = MemStore::default();
            store.put_raw("/coreos.com/network/config", CONFIG);
            let rig = start(store.clone(), Duration::from_secs(3600));
            settle().await;
            let own = own_lease_key(&rig);
            // 23 h later the lease is renewed (a fresh 24 h lease); 48 h later it is still there.
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(23 * 3600 + 60)).await;
                store.expire();
                assert!(store.value(&own).is_some());
            }
            // A renewal that fails is retried a minute later.
            store.fail_once("put_if");
            tokio::time::sleep(Duration::from_secs(23 * 3600)).await;
            store.expire();
            assert!(store.value(&own).is_some());
            assert!(rig.ready.get() && !rig.task.is_finished());
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn the_agents_own_renewal_is_not_taken_for_an_operators_rewrite() {
    // Before: the watch knew only the etcd lease the key was on when it started, so every
    // renewal (a new etcd lease) looked like an operator's `etcdctl put`: a TTL read per
    // renewal, and when that read failed the stale expiry made the agent renew again at once.
    LocalSet::new()
        .run_until(async {
            let store = MemStore::default();
            store.put_raw("/coreos.com/network/config", CONFIG);
            let rig = start(store.clone(), Duration::from_secs(3600));
            settle().await;
            store.fail_once("ttl");
            tokio::time::sleep(Duration::from_secs(23 * 3600 + 60)).await;
            let m = &rig.metrics;
            assert_eq!(
                metric(m, "flanneld_lease_renewals_total{result=\"ok\"}"),
                1.0
            );
            // The scripted TTL failure is still pending: nobody read a TTL.
            assert!(
                crate::etcd::store::Store::time_to_live(&store, 1)
                    .await
                    .is_err(),
                "the renewal's own write was read as someone else's"
            );
            rig.stop.send(true).unwrap();
        })
        .await;
}

/// The value of the metric line starting with `name` (name and labels), 0 when absent.
fn metric(m: &Metrics, name: &str) -> f64 {
    m.encode()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(start_paused = true)]
async fn metrics_move_with_the_agent() {
    LocalSet::new()
        .run_until(async {
            let store = MemStore::default();
            store.put_raw("/coreos.com/network/config", CONFIG);
            store.put_raw(&format!("{SUBNETS}10.5.9.0-24"), &peer("192.168.1.9"));
            store.fail_once("watch");
            let rig = start(store.clone(), Duration::from_secs(3600));
            settle().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let m = &rig.metrics;
            assert_eq!(
                metric(m, "flanneld_peers_programmed{backend=\"host-gw\"}"),
                1.0
            );
            assert_eq!(
                metric(m, "flanneld_lease_events_total{kind=\"added\"}"),
                1.0
            );
            assert_eq!(
                metric(m, "flanneld_watch_restarts_total{reason=\"broken\"}"),
                1.0
            );
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let expiry = metric(m, "flanneld_lease_expiry_seconds");
            assert!(expiry > now + 23.0 * 3600.0, "{expiry} vs {now}");

            // Watch events: each one's latency observed.
            store.put_raw(&format!("{SUBNETS}10.5.250.0-24"), &peer("192.168.1.7"));
            settle().await;
            store.delete_raw(&format!("{SUBNETS}10.5.250.0-24"));
            settle().await;
            assert_eq!(
                metric(m, "flanneld_lease_events_total{kind=\"added\"}"),
                2.0
            );
            assert_eq!(
                metric(m, "flanneld_lease_events_total{kind=\"removed\"}"),
                1.0
            );
            assert_eq!(metric(m, "flanneld_event_programmed_seconds_count"), 2.0);
            assert_eq!(
                metric(m, "flanneld_event_programmed_seconds_bucket{le=\"+Inf\"}"),
                2.0
            );
            assert_eq!(
                metric(m, "flanneld_peers_programmed{backend=\"host-gw\"}"),
                1.0
            );

            // Compaction, then a renewal (and the hourly reconciles meanwhile).
            store.put_raw(&format!("{SUBNETS}10.5.240.0-24"), &peer("192.168.1.4"));
            store.compact();
            settle().await;
            assert_eq!(
                metric(m, "flanneld_watch_restarts_total{reason=\"compacted\"}"),
                1.0
            );
            assert_eq!(
                metric(m, "flanneld_peers_programmed{backend=\"host-gw\"}"),
                2.0
            );
            assert_eq!(
                metric(m, "flanneld_lease_renewals_total{result=\"ok\"}"),
                0.0
            );
            tokio::time::sleep(Duration::from_secs(23 * 3600 + 60)).await;
            assert_eq!(
                metric(m, "flanneld_lease_renewals_total{result=\"ok\"}"),
                1.0
            );
            assert!(metric(m, "flanneld_reconcile_runs_total") >= 22.0);
            assert!(metric(m, "flanneld_lease_expiry_seconds") > now + 23.0 * 3600.0);
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[test]
fn config_golden_fixture() {
    // The config the issue's conformance runs use, read as Go reads it.
    let c = NetworkConfig::parse(CONFIG.as_bytes()).unwrap();
    assert_eq!(c.backend_type, "host-gw");
}

#[test]
fn a_burst_of_link_notifications_is_one_reconcile_due_after_the_quiet_time_or_the_longest() {
    use agent::{Debounce, LINK_LONGEST, LINK_QUIET};
    let t0 = tokio::time::Instant::now();
    let mut d = Debounce::default();
    assert_eq!(d.due(), None);
    assert!(d.event(t0), "the first notification starts a burst");
    assert_eq!(d.due(), Some(t0 + LINK_QUIET));
    let t1 = t0 + Duration::from_millis(60);
    assert!(!d.event(t1));
    assert_eq!(d.due(), Some(t1 + LINK_QUIET));
    // Notifications every 60 ms forever: still reconciled LINK_LONGEST after the first.
    let late = t0 + Duration::from_millis(480);
    d.event(late);
    assert_eq!(d.due(), Some(t0 + LINK_LONGEST));
    d.fired();
    assert_eq!(d.due(), None);
    assert!(d.event(late), "after a reconcile a new burst starts");
}

#[test]
fn only_notifications_of_watched_links_or_lost_ones_call_for_a_reconcile() {
    use node_kernel::LinkChange;
    let watched = ["flannel.100".to_owned(), "eth0".to_owned()];
    let del = |n: &str| LinkChange::Deleted {
        index: 9,
        name: Some(n.into()),
    };
    assert!(agent::concerns(&del("flannel.100"), &watched));
    assert!(agent::concerns(
        &LinkChange::Changed {
            index: 2,
            name: Some("eth0".into())
        },
        &watched
    ));
    assert!(!agent::concerns(&del("veth1234"), &watched));
    assert!(!agent::concerns(
        &LinkChange::Changed {
            index: 3,
            name: None
        },
        &watched
    ));
    assert!(agent::concerns(&LinkChange::Lost, &watched));
}

/// A backend watching `flannel.100`.
fn watching() -> Recorder {
    let mut r = Recorder::host_gw();
    r.links = vec!["flannel.100".into()];
    r
}

/// The agent on `backend` with one peer, told of link notifications sent on `rig.links`,
/// reconciling every 5 s.
fn start_with_links(backend: Recorder, entry_notices: agent::EntryNotices) -> Rig {
    let store = MemStore::default();
    store.put_raw("/coreos.com/network/config", CONFIG);
    // One peer, so the first listing hands the backend something.
    store.put_raw(&format!("{SUBNETS}10.5.9.0-24"), &peer("192.168.1.9"));
    let setup = Setup {
        reconcile_every: Some(Duration::from_secs(5)),
        entry_notices,
        links: true,
        ..Setup::default()
    };
    testkit::start(tempfile::tempdir().unwrap(), backend, setup, move |rx| {
        etcd_manager(store, rx)
    })
}

#[tokio::test(start_paused = true)]
async fn link_notifications_of_a_watched_link_reconcile_promptly_a_burst_once() {
    use node_kernel::LinkChange;
    LocalSet::new()
        .run_until(async {
            let mut rig = start_with_links(watching(), agent::EntryNotices::None);
            let tx = rig.links.take().unwrap();
            let reconciles = || rig.backend.reconciles();
            settle().await;
            let t0 = tokio::time::Instant::now();
            // Another link: nothing.
            tx.try_send(LinkChange::Deleted {
                index: 5,
                name: Some("veth1".into()),
            })
            .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(reconciles().is_empty());
            // A burst about the device (deleted, then recreated by someone): one reconcile,
            // LINK_QUIET after the last notification, long before the 5 s tick.
            let burst = tokio::time::Instant::now();
            for (i, deleted) in [true, false, false].into_iter().enumerate() {
                let name = Some("flannel.100".to_owned());
                tx.try_send(if deleted {
                    LinkChange::Deleted { index: 7, name }
                } else {
                    LinkChange::Changed { index: 8, name }
                })
                .unwrap();
                if i < 2 {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let got: Vec<Duration> = reconciles().iter().map(|t| *t - burst).collect();
            assert_eq!(
                got,
                [Duration::from_millis(60) + agent::LINK_QUIET],
                "one reconcile after the burst"
            );
            // The tick still comes 5 s after the last reconcile.
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(reconciles().len(), 2);
            assert!(reconciles()[1] - t0 > Duration::from_secs(5));
            // Lost notifications: a reconcile too. The sender gone: ticks only, no error.
            tx.try_send(LinkChange::Lost).unwrap();
            drop(tx);
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(reconciles().len(), 3);
            rig.stop.send(true).unwrap();
            settle().await;
            assert!(rig.task.await.unwrap().is_ok());
        })
        .await;
}

/// Every subnet leased: the agent waits (not ready, still running) and takes the first one
/// freed. (It exited with "failed to acquire lease: out of subnets" before.)
#[tokio::test(start_paused = true)]
async fn out_of_subnets_waits_for_a_freed_subnet() {
    LocalSet::new()
        .run_until(async {
            let store = MemStore::default();
            store.put_raw(
                "/coreos.com/network/config",
                r#"{"Network":"10.5.0.0/28","Backend":{"Type":"host-gw"}}"#,
            );
            for (i, sn) in ["10.5.0.4-30", "10.5.0.8-30", "10.5.0.12-30"]
                .iter()
                .enumerate()
            {
                store.put_raw(
                    &format!("{SUBNETS}{sn}"),
                    &peer(&format!("192.168.1.{}", 9 + i)),
                );
            }
            let rig = start(store.clone(), Duration::from_secs(3600));
            tokio::time::sleep(Duration::from_secs(20)).await;
            assert!(!rig.ready.get());
            assert!(!rig.task.is_finished(), "the agent gave up");
            store.delete_raw(&format!("{SUBNETS}10.5.0.8-30"));
            tokio::time::sleep(Duration::from_secs(6)).await;
            assert!(rig.ready.get());
            assert_eq!(own_lease_key(&rig), format!("{SUBNETS}10.5.0.8-30"));
            rig.stop.send(true).unwrap();
            rig.task.await.unwrap().unwrap();
        })
        .await;
}

fn reconcile_runs(m: &Metrics) -> u64 {
    metric(m, "flanneld_reconcile_runs_total") as u64
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_waiting_for_a_free_subnet_ends_the_agent() {
    // Before: re-acquiring returned the old lease when asked to stop, the loop re-listed,
    // found it still not ours and re-acquired again: a loop that never ended.
    LocalSet::new()
        .run_until(async {
            let store = MemStore::default();
            let one = r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0","SubnetMax":"10.5.1.0","Backend":{"Type":"host-gw"}}"#;
            store.put_raw("/coreos.com/network/config", one);
            let mut rig = start(store.clone(), Duration::from_secs(3600));
            settle().await;
            let own = own_lease_key(&rig);
            // Another node takes the only subnet: the agent waits for a free one.
            store.put_raw(&own, &peer("192.168.1.9"));
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert!(!rig.task.is_finished());
            rig.stop.send(true).unwrap();
            let lists = store.lists();
            // Yields, not virtual time: a loop that never sleeps would keep the clock still.
            for _ in 0..1000 {
                tokio::task::yield_now().await;
            }
            assert!(store.lists() <= lists + 1, "{} listings", store.lists() - lists);
            assert!(rig.task.is_finished());
            assert!(matches!((&mut rig.task).await, Ok(Ok(()))));
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn an_etcd_that_does_not_answer_neither_stops_reconciling_nor_a_shutdown() {
    // Before: the renewal (and listings, watches) were awaited inline: while etcd hung,
    // nothing was reconciled and SIGTERM waited for the call to give up.
    LocalSet::new()
        .run_until(async {
            let store = MemStore::default();
            store.put_raw("/coreos.com/network/config", CONFIG);
            let mut rig = start(store.clone(), Duration::from_secs(3600));
            settle().await;
            let runs = reconcile_runs(&rig.metrics);
            store.stall(true);
            // Renewal due at 23 h: it hangs; the hourly reconcile goes on.
            tokio::time::sleep(Duration::from_secs(26 * 3600)).await;
            assert!(
                reconcile_runs(&rig.metrics) >= runs + 25,
                "{} reconciles",
                reconcile_runs(&rig.metrics) - runs
            );
            rig.stop.send(true).unwrap();
            let ended = tokio::time::timeout(Duration::from_secs(1), &mut rig.task).await;
            assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
        })
        .await;
}

/// A backend that reports its entries' links (`flannel.100`, index 7; routes of index 2 and
/// of the Network too).
fn entry_watching() -> Recorder {
    let mut r = watching();
    r.entries = crate::backend::WatchedEntries {
        neighbours: vec![7],
        routes: vec![7, 2],
        networks: vec!["10.5.0.0/16".parse().unwrap()],
    };
    r
}

#[tokio::test(start_paused = true)]
async fn a_tick_dumps_the_kernel_only_after_a_notification_about_its_entries_or_once_a_minute() {
    // Before: every 5 s tick dumped neighbours, FDB and routes (at 5,000 peers nearly all
    // of the idle agent's CPU), whether or not the kernel had said anything changed.
    use node_kernel::{EntryKind, LinkChange};
    LocalSet::new()
        .run_until(async {
            let mut rig = start_with_links(entry_watching(), agent::EntryNotices::OnLinks);
            let tx = rig.links.take().unwrap();
            let backend = rig.backend.clone();
            let take = || {
                let mut got = backend.take_calls();
                got.retain(|w| *w != "handle");
                got
            };
            let entry = |kind, index, dst: Option<&str>| LinkChange::Entry {
                kind,
                index,
                dst: dst.map(|d| d.parse().unwrap()),
            };
            settle().await;
            // The first tick is whole (nothing is known yet), the next ones are not.
            tokio::time::sleep(Duration::from_secs(16)).await;
            assert_eq!(take(), ["full", "rules", "rules"]);
            // Entries of other links (eth0's ARP, a pod's route): still quiet.
            tx.try_send(entry(EntryKind::Neighbour, 2, None)).unwrap();
            tx.try_send(entry(EntryKind::Route, 9, Some("192.168.7.0/24")))
                .unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(take(), ["rules"]);
            // A route of the device deleted by hand: the next tick compares.
            tx.try_send(entry(EntryKind::Route, 7, None)).unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(take(), ["full"]);
            // A peer's route moved to another link by hand (named by its destination).
            tx.try_send(entry(EntryKind::Route, 9, Some("10.5.3.0/24")))
                .unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(take(), ["full"]);
            // A notice of the device just before a tick: that tick compares everything
            // (before: it cleared the pending prompt reconcile and skipped the dumps).
            // (Ticks fall on whole multiples of 5 s from the start; this is 50 ms before one.)
            tokio::time::sleep(Duration::from_millis(3940)).await;
            tx.try_send(LinkChange::Changed {
                index: 7,
                name: Some("flannel.100".into()),
            })
            .unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(take(), ["full"]);
            // A failed kernel step: whole ticks until the backend is settled again.
            backend.unsettled.set(true);
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert_eq!(take(), ["full", "full"]);
            backend.unsettled.set(false);
            // Lost notifications: anything may have changed.
            tx.try_send(LinkChange::Lost).unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(take(), ["full"], "lost notifications reconcile at once");
            // Quiet for a minute: a whole pass anyway, on the 12th tick.
            tokio::time::sleep(Duration::from_secs(60)).await;
            let mut want = vec!["rules"; 11];
            want.push("full");
            assert_eq!(take(), want);
            // Without notifications (the sender gone), every tick is whole.
            drop(tx);
            tokio::time::sleep(Duration::from_secs(11)).await;
            assert_eq!(take(), ["full", "full"]);
            rig.stop.send(true).unwrap();
            settle().await;
            assert!(rig.task.await.unwrap().is_ok());
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn entry_notices_are_joined_once_after_the_first_programming() {
    LocalSet::new()
        .run_until(async {
            let backend = entry_watching();
            let log = backend.calls();
            let rig = start_with_links(
                backend.clone(),
                agent::EntryNotices::Join(Arc::new(move || {
                    log.lock().unwrap().push("join");
                    Ok(())
                })),
            );
            settle().await;
            // The listing's peers handed over first, then the join (a start with thousands
            // of peers is not notified of its own entries).
            assert_eq!(backend.take_calls(), ["handle", "join"]);
            tokio::time::sleep(Duration::from_secs(11)).await;
            assert_eq!(backend.take_calls(), ["full", "rules"], "joined once");
            rig.stop.send(true).unwrap();
            settle().await;
            assert!(rig.task.await.unwrap().is_ok());
        })
        .await;
}
