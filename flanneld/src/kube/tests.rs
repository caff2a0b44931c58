//! The kube subnet manager and the agent against the in-memory apiserver (`fake.rs`), on
//! tokio's paused clock: annotations and condition as Go writes them, peers from managed
//! Nodes only, podCIDRs waited for or refused with what to fix, 410 Gone and an apiserver
//! down without a hot loop, the own Node registered again, the stored VTEP MAC.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::json;
use test_corpus::bad_nodes::go_annotations;
use tokio::sync::watch;
use tokio::task::LocalSet;

use super::fake::FakeApi;
use super::node::Families;
use super::{KubeManager, KubeOptions};
use crate::agent::{self, AgentError};
use crate::lease::{Lease, LeaseAttrs};
use crate::manager::SubnetManager;
use crate::metrics::Metrics;
use crate::testkit::{self, Recorder, Rig, Setup, settle};

const NET: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const P: &str = "flannel.alpha.coreos.com/";
const OWN_MAC: &str = "02:aa:00:00:00:01";

fn vxlan_attrs() -> LeaseAttrs {
    LeaseAttrs {
        public_ip: Ipv4Addr::new(192, 168, 50, 2),
        public_ipv6: None,
        backend_type: "vxlan".into(),
        backend_data: Some(json!({"VNI": 1, "VtepMAC": OWN_MAC})),
        backend_v6_data: None,
    }
}

fn peer(api: &FakeApi, name: &str, cidr: &str, ip: &str, mac: &str) {
    let ann = go_annotations(ip, mac);
    let ann: Vec<(&str, &str)> = ann.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    api.put_node(name, &[cidr], &ann);
}

fn options(dir: &std::path::Path) -> KubeOptions {
    KubeOptions {
        node_name: "node-a".into(),
        net_config_path: dir.join("net-conf.json"),
        ..KubeOptions::default()
    }
}

fn start_with(api: &FakeApi, net: &str, opts: impl FnOnce(&mut KubeOptions)) -> Rig {
    start_as(api, net, vxlan_attrs(), opts)
}

fn start_as(
    api: &FakeApi,
    net: &str,
    attrs: LeaseAttrs,
    opts: impl FnOnce(&mut KubeOptions),
) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("net-conf.json"), net).unwrap();
    let mut o = options(dir.path());
    opts(&mut o);
    let setup = Setup {
        reconcile_every: Some(Duration::from_secs(5)),
        ..Setup::default()
    };
    let api = api.clone();
    testkit::start(
        dir,
        Recorder::with_attrs(attrs, 1450),
        setup,
        move |mut rx| async move {
            let families = Families {
                v4: true,
                v6: false,
            };
            let mut m = KubeManager::new(api, "node-a", &o, families, None).unwrap();
            let config = agent::wait_for_config(&m, &mut rx).await.unwrap();
            m.sync(&config, o.continue_when_cache_not_ready, &mut rx)
                .await
                .map_err(|e| AgentError::Lease(Box::new(e)))?;
            Ok((m, config))
        },
    )
}

fn start(api: &FakeApi) -> Rig {
    start_with(api, NET, |_| {})
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn the_node_is_annotated_as_go_annotates_it_then_marked_available() {
    LocalSet::new()
        .run_until(async {
            let api = FakeApi::default();
            api.put_node("node-a", &["10.244.1.0/24"], &[("other", "kept")]);
            let rig = start(&api);
            settle().await;
            assert!(rig.ready.get());
            assert_eq!(
                rig.subnet_env(),
                "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
            );
            let patches = api.patches();
            assert_eq!(patches.len(), 2, "{patches:?}");
            assert_eq!(
                patches[0].1,
                json!({"metadata": {"annotations": {
                    "flannel.alpha.coreos.com/backend-data": format!(r#"{{"VNI":1,"VtepMAC":"{OWN_MAC}"}}"#),
                    "flannel.alpha.coreos.com/backend-type": "vxlan",
                    "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                    "flannel.alpha.coreos.com/public-ip": "192.168.50.2",
                }}})
            );
            let cond = &patches[1].1["status"]["conditions"][0];
            assert_eq!(cond["type"], "NetworkUnavailable");
            assert_eq!(cond["status"], "False");
            assert_eq!(cond["reason"], "FlannelIsUp");
            assert_eq!(cond["message"], "Flannel is running on this node");
            let t = cond["lastTransitionTime"].as_str().unwrap();
            assert!(t.len() == 20 && t.ends_with('Z'), "RFC 3339 in seconds, as Go: {t}");
            assert_eq!(cond["lastHeartbeatTime"], cond["lastTransitionTime"]);
            assert_eq!(
                api.node_now("node-a").unwrap().metadata.annotations["other"],
                "kept"
            );
            assert_eq!(rig.take(), ["own 10.244.1.0-24"]);
            rig.stop.send(true).unwrap();
            settle().await;
            rig.task.await.unwrap().unwrap();

            // A restart finds the annotations right: only the condition is written again.
            let rig = start(&api);
            settle().await;
            assert!(rig.ready.get());
            let patches = api.patches();
            assert_eq!(patches.len(), 3, "{patches:?}");
            assert!(patches[2].1.get("metadata").is_none());
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn without_set_node_network_unavailable_no_condition_is_written() {
    LocalSet::new()
        .run_until(async {
            let api = FakeApi::default();
            api.put_node("node-a", &["10.244.1.0/24"], &[]);
            let rig = start_with(&api, NET, |o| o.set_node_network_unavailable = false);
            settle().await;
            assert!(rig.ready.get());
            assert_eq!(api.patches().len(), 1);
            assert!(api.conditions("node-a").is_empty());
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn peers_are_the_managed_nodes_and_follow_their_annotations() {
    LocalSet::new()
        .run_until(async {
            let api = FakeApi::default();
            api.put_node("node-a", &["10.244.1.0/24"], &[]);
            peer(
                &api,
                "node-b",
                "10.244.2.0/24",
                "192.168.50.3",
                "02:bb:00:00:00:01",
            );
            api.put_node("node-c", &["10.244.3.0/24"], &[("unrelated", "x")]);
            let rig = start(&api);
            settle().await;
            assert_eq!(
                rig.take(),
                ["own 10.244.1.0-24", "add 10.244.2.0-24 192.168.50.3"]
            );
            // The kubelet's status updates change nothing flannel reads: no event.
            for _ in 0..5 {
                api.touch("node-b");
                api.touch("node-c");
            }
            settle().await;
            assert!(rig.take().is_empty());
            // A new public IP: the peer is programmed again.
            api.annotate(
                "node-b",
                &[(&format!("{P}public-ip"), Some("192.168.50.13"))],
            );
            settle().await;
            assert_eq!(rig.take(), ["add 10.244.2.0-24 192.168.50.13"]);
            // node-c annotated by a Go flanneld: a peer.
            for (k, v) in go_annotations("192.168.50.4", "02:cc:00:00:00:01") {
                api.annotate("node-c", &[(&k, Some(&v))]);
            }
            settle().await;
            assert_eq!(rig.take(), ["add 10.244.3.0-24 192.168.50.4"]);
            // No longer managed: gone (Go keeps it).
            api.annotate("node-c", &[(&format!("{P}kube-subnet-manager"), None)]);
            settle().await;
            assert_eq!(rig.take(), ["del 10.244.3.0-24 192.168.50.4"]);
            // Deleted: gone.
            api.delete_node("node-b");
            settle().await;
            assert_eq!(rig.take(), ["del 10.244.2.0-24 192.168.50.13"]);
            // A managed node with an unusable annotation: skipped.
            peer(
                &api,
                "node-d",
                "10.244.4.0/24",
                "not-an-ip",
                "02:dd:00:00:00:01",
            );
            peer(
                &api,
                "node-e",
                "10.99.0.0/24",
                "192.168.50.6",
                "02:ee:00:00:00:01",
            );
            settle().await;
            assert!(rig.take().is_empty());
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_is_removed_under_the_key_it_was_handed() {
    // Before: a removal was keyed by the event's podCIDRs: a Node whose podCIDR changed
    // left its old peer programmed, and one whose podCIDR was cleared was never removed.
    LocalSet::new()
        .run_until(async {
            let api = FakeApi::default();
            api.put_node("node-a", &["10.244.1.0/24"], &[]);
            let (ip, mac) = ("192.168.50.3", "02:bb:00:00:00:01");
            peer(&api, "node-b", "10.244.2.0/24", ip, mac);
            let rig = start(&api);
            settle().await;
            assert_eq!(
                rig.take(),
                ["own 10.244.1.0-24", "add 10.244.2.0-24 192.168.50.3"]
            );
            // Registered again with another podCIDR (deleted and re-created while a watch
            // event was missed shows as one change).
            peer(&api, "node-b", "10.244.7.0/24", ip, mac);
            settle().await;
            assert_eq!(
                rig.take(),
                [
                    "del 10.244.2.0-24 192.168.50.3",
                    "add 10.244.7.0-24 192.168.50.3"
                ]
            );
            // Its podCIDR cleared: unusable, its peer goes.
            let ann = go_annotations(ip, mac);
            let ann: Vec<(&str, &str)> =
                ann.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            api.put_node("node-b", &[], &ann);
            settle().await;
            assert_eq!(rig.take(), ["del 10.244.7.0-24 192.168.50.3"]);
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_podcidr_assigned_later_is_waited_for() {
    LocalSet::new()
        .run_until(async {
            crate::log::capture::start();
            let api = FakeApi::default();
            api.put_node("node-a", &[], &[]);
            let rig = start(&api);
            tokio::time::sleep(Duration::from_secs(20)).await;
            assert!(!rig.ready.get() && !rig.task.is_finished());
            let lines = crate::log::capture::lines().concat();
            assert!(
                lines.contains("node node-a has no podCIDR assigned: kube-controller-manager assigns one with --allocate-node-cidrs=true and --cluster-cidr=10.244.0.0/16"),
                "{lines}"
            );
            api.put_node("node-a", &["10.244.7.0/24"], &[]);
            tokio::time::sleep(Duration::from_secs(6)).await;
            assert!(rig.ready.get());
            assert_eq!(rig.take(), ["own 10.244.7.0-24"]);
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_podcidr_outside_the_network_stops_the_agent_saying_what_to_fix() {
    LocalSet::new()
        .run_until(async {
            let api = FakeApi::default();
            api.put_node("node-a", &["10.99.1.0/24"], &[]);
            let rig = start(&api);
            settle().await;
            assert!(rig.task.is_finished());
            let e = rig.task.await.unwrap().unwrap_err().to_string();
            assert!(
                e.contains(
                    "node node-a's podCIDR 10.99.1.0/24 is outside the Network 10.244.0.0/16"
                ) && e.contains("--cluster-cidr"),
                "{e}"
            );
            assert!(api.patches().is_empty(), "nothing written");
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_watch_answered_gone_lists_again_and_diffs_without_a_hot_loop() {
    LocalSet::new()
        .run_until(async {
            let api = FakeApi::default();
            api.put_node("node-a", &["10.244.1.0/24"], &[]);
            peer(
                &api,
                "node-b",
                "10.244.2.0/24",
                "192.168.50.3",
                "02:bb:00:00:00:01",
            );
            let rig = start(&api);
            settle().await;
            rig.take();
            assert_eq!(api.calls("list"), 1);
            // Changes the watch never sees: the history is compacted before it reads them.
            api.delete_node("node-b");
            peer(
                &api,
                "node-d",
                "10.244.4.0/24",
                "192.168.50.5",
                "02:dd:00:00:00:01",
            );
            api.compact();
            settle().await;
            assert_eq!(
                sorted(rig.take()),
                [
                    "add 10.244.4.0-24 192.168.50.5",
                    "del 10.244.2.0-24 192.168.50.3"
                ]
            );
            assert_eq!(api.calls("list"), 2);
            // The apiserver ending watches (its timeout) resumes them: no listing.
            for _ in 0..3 {
                api.end_watches();
                settle().await;
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
            assert_eq!(api.calls("list"), 2);
            assert!(rig.take().is_empty());
            assert!(
                rig.metrics
                    .encode()
                    .contains("flanneld_watch_restarts_total{reason=\"compacted\"} 1")
            );
            // An apiserver that cannot watch even from its own listing's resourceVersion:
            // listed again with the backoff, not in a loop (before: listed at once, again
            // and again).
            api.expire_every_watch(true);
            tokio::time::sleep(Duration::from_secs(20)).await;
            let lists = api.calls("list") - 2;
            assert!((4..=10).contains(&lists), "{lists} listings in 20 s");
            api.expire_every_watch(false);
            tokio::time::sleep(Duration::from_secs(6)).await;
            let lists = api.calls("list");
            tokio::time::sleep(Duration::from_secs(60)).await;
            assert_eq!(api.calls("list"), lists, "watching again");
            assert!(rig.take().is_empty());
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn the_apiserver_down_keeps_the_node_running_and_it_catches_up() {
    LocalSet::new()
        .run_until(async {
            let api = FakeApi::default();
            api.put_node("node-a", &["10.244.1.0/24"], &[]);
            peer(
                &api,
                "node-b",
                "10.244.2.0/24",
                "192.168.50.3",
                "02:bb:00:00:00:01",
            );
            let rig = start(&api);
            settle().await;
            rig.take();
            crate::log::capture::start();
            api.set_down(true);
            let before = api.calls("watch") + api.calls("list");
            tokio::time::sleep(Duration::from_secs(60)).await;
            let tries = api.calls("watch") + api.calls("list") - before;
            // 100 ms doubling to 5 s: about 16 tries a minute, never a hot loop.
            assert!((5..=20).contains(&tries), "{tries} calls in a minute");
            // And the same failure is said once a minute, not once a try.
            let said = crate::log::capture::lines();
            assert!((1..=2).contains(&said.len()), "{said:#?}");
            assert!(rig.ready.get() && !rig.task.is_finished());
            let ticks = rig.metrics.encode();
            assert!(ticks.contains("flanneld_reconcile_runs_total"), "{ticks}");
            // Back, with a node added and one deleted meanwhile.
            api.set_down(false);
            api.delete_node("node-b");
            peer(
                &api,
                "node-c",
                "10.244.3.0/24",
                "192.168.50.4",
                "02:cc:00:00:00:01",
            );
            tokio::time::sleep(Duration::from_secs(6)).await;
            assert_eq!(
                sorted(rig.take()),
                [
                    "add 10.244.3.0-24 192.168.50.4",
                    "del 10.244.2.0-24 192.168.50.3"
                ]
            );
            let back = crate::log::capture::lines();
            assert!(
                back.iter()
                    .any(|l| l.contains("watching nodes again from resourceVersion")),
                "{back:#?}"
            );
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn the_own_node_registered_again_is_annotated_again() {
    LocalSet::new()
        .run_until(async {
            let api = FakeApi::default();
            api.put_node("node-a", &["10.244.1.0/24"], &[]);
            let rig = start(&api);
            settle().await;
            assert_eq!(api.patches().len(), 2);
            rig.take();
            // kubectl delete node; the kubelet registers it again, without annotations.
            api.delete_node("node-a");
            settle().await;
            assert!(!rig.task.is_finished());
            api.put_node("node-a", &["10.244.1.0/24"], &[]);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let n = api.node_now("node-a").unwrap();
            assert_eq!(
                n.metadata.annotations[&format!("{P}kube-subnet-manager")],
                "true"
            );
            assert_eq!(api.conditions("node-a").len(), 1);
            assert_eq!(api.patches().len(), 4);
            assert_eq!(rig.take(), ["own 10.244.1.0-24"]);
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn failed_patches_are_retried() {
    LocalSet::new()
        .run_until(async {
            let api = FakeApi::default();
            api.put_node("node-a", &["10.244.1.0/24"], &[]);
            api.fail("patch_status", 3);
            let rig = start(&api);
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert!(rig.ready.get());
            assert_eq!(api.conditions("node-a").len(), 1);
            assert_eq!(
                api.node_now("node-a").unwrap().metadata.annotations[&format!("{P}public-ip")],
                "192.168.50.2"
            );
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_small_event_queue_loses_nothing() {
    LocalSet::new()
        .run_until(async {
            let api = FakeApi::default();
            api.put_node("node-a", &["10.244.1.0/24"], &[]);
            let rig = start_with(&api, NET, |o| o.queue_depth = 1);
            settle().await;
            rig.take();
            for i in 10..60u8 {
                peer(
                    &api,
                    &format!("node-{i}"),
                    &format!("10.244.{i}.0/24"),
                    &format!("192.168.50.{i}"),
                    &format!("02:00:00:00:00:{i:02x}"),
                );
            }
            settle().await;
            assert_eq!(rig.take().len(), 50);
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn the_first_listing_is_waited_for_up_to_ten_minutes() {
    LocalSet::new()
        .run_until(async {
            let api = FakeApi::default();
            api.put_node("node-a", &["10.244.1.0/24"], &[]);
            api.forbid("list");
            let rig = start(&api);
            tokio::time::sleep(Duration::from_secs(9 * 60)).await;
            assert!(!rig.task.is_finished() && !rig.ready.get());
            tokio::time::sleep(Duration::from_secs(70)).await;
            let e = rig.task.await.unwrap().unwrap_err().to_string();
            assert!(e.contains("CONT_WHEN_CACHE_NOT_READY"), "{e}");

            // Told to go on anyway: it starts, and the peers come once listing works.
            let rig = start_with(&api, NET, |o| o.continue_when_cache_not_ready = true);
            tokio::time::sleep(Duration::from_secs(11 * 60)).await;
            assert!(rig.ready.get());
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test]
async fn the_stored_vtep_mac_and_public_ip_are_read_back() {
    let api = FakeApi::default();
    api.put_node(
        "node-a",
        &["10.244.1.0/24"],
        &[
            (
                &format!("{P}backend-data"),
                r#"{"VNI":1,"VtepMAC":"12:C6:65:89:B4:E3"}"#,
            ),
            (&format!("{P}backend-v6-data"), "null"),
            (&format!("{P}node-public-ip"), "192.168.50.9"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let o = options(dir.path());
    let families = Families {
        v4: true,
        v6: false,
    };
    let m = KubeManager::new(api.clone(), "node-a", &o, families, None).unwrap();
    let s = m.stored().await.unwrap();
    assert_eq!(s.vtep_mac, Some([0x12, 0xc6, 0x65, 0x89, 0xb4, 0xe3]));
    assert_eq!(s.vtep_mac_v6, None);
    assert_eq!(s.public_ip, Some(Ipv4Addr::new(192, 168, 50, 9)));
    // An unregistered node has nothing stored.
    let m = KubeManager::new(api, "node-z", &o, families, None).unwrap();
    assert_eq!(m.stored().await.unwrap(), crate::manager::Stored::default());
}

#[tokio::test]
async fn the_node_name_from_node_name_or_the_pods_spec() {
    let api = FakeApi::default();
    api.put_pod("kube-flannel", "kube-flannel-ds-x7k2p", "node-b");
    api.put_pod("kube-flannel", "unscheduled", "");
    let (_stop, mut rx) = watch::channel(false);
    let name = |node: &str, pod: &str, ns: &str| KubeOptions {
        node_name: node.into(),
        pod_name: pod.into(),
        pod_namespace: ns.into(),
        ..KubeOptions::default()
    };
    let get = super::connect::node_name;
    let o = name("node-a", "kube-flannel-ds-x7k2p", "kube-flannel");
    assert_eq!(get(&api, &o, &mut rx).await.unwrap().unwrap(), "node-a");
    assert_eq!(api.calls("get_pod"), 0, "NODE_NAME wins, as in Go");
    let o = name("", "kube-flannel-ds-x7k2p", "kube-flannel");
    assert_eq!(get(&api, &o, &mut rx).await.unwrap().unwrap(), "node-b");
    let e = get(&api, &name("", "x", ""), &mut rx)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("POD_NAME and POD_NAMESPACE must be set"), "{e}");
    let e = get(&api, &name("", "gone", "kube-flannel"), &mut rx)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("NotFound"), "{e}");
    let e = get(&api, &name("", "unscheduled", "kube-flannel"), &mut rx)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("node name not present in pod spec 'kube-flannel/unscheduled'"),
        "{e}"
    );
    // Before: any string went into the API paths (`../` and `/` name other objects).
    api.put_pod("kube-flannel", "bad-node", "node-b/status");
    for (o, what) in [
        (name("../pods/x", "", ""), "NODE_NAME"),
        (name("Node-A", "", ""), "NODE_NAME"),
        (name("", "a/b", "kube-flannel"), "POD_NAME"),
        (name("", "x", "kube.flannel"), "POD_NAMESPACE"),
        (name("", "bad-node", "kube-flannel"), "spec.nodeName"),
    ] {
        let e = get(&api, &o, &mut rx).await.unwrap_err().to_string();
        assert!(e.contains(what) && e.contains("not a"), "{e}");
    }
    assert_eq!(
        get(&api, &name("ip-10-0-0-1.ec2.internal", "", ""), &mut rx)
            .await
            .unwrap()
            .unwrap(),
        "ip-10-0-0-1.ec2.internal"
    );
}

fn host_gw_attrs(ip: &str, ip6: Option<&str>) -> LeaseAttrs {
    LeaseAttrs {
        public_ip: ip.parse().unwrap(),
        public_ipv6: ip6.map(|s| s.parse().unwrap()),
        backend_type: "host-gw".into(),
        backend_data: None,
        backend_v6_data: None,
    }
}

#[tokio::test(start_paused = true)]
async fn dual_stack_podcidrs_are_the_nodes_two_subnets() {
    LocalSet::new()
        .run_until(async {
            let net = r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}"#;
            let api = FakeApi::default();
            api.put_node("node-a", &["10.244.1.0/24", "fd00:10:244:1::/64"], &[]);
            api.put_node(
                "node-b",
                &["fd00:10:244:2::/64", "10.244.2.0/24"],
                &[
                    (&format!("{P}backend-data"), "null"),
                    (&format!("{P}backend-v6-data"), "null"),
                    (&format!("{P}backend-type"), "host-gw"),
                    (&format!("{P}kube-subnet-manager"), "true"),
                    (&format!("{P}public-ip"), "192.168.50.3"),
                    (&format!("{P}public-ipv6"), "fd00:50::3"),
                ],
            );
            let rig = start_as(&api, net, host_gw_attrs("192.168.50.2", Some("fd00:50::2")), |_| {});
            settle().await;
            assert!(rig.ready.get());
            assert_eq!(
                rig.subnet_env(),
                "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
            );
            assert_eq!(
                api.patches()[0].1,
                json!({"metadata": {"annotations": {
                    "flannel.alpha.coreos.com/backend-data": "null",
                    "flannel.alpha.coreos.com/backend-type": "host-gw",
                    "flannel.alpha.coreos.com/backend-v6-data": "null",
                    "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                    "flannel.alpha.coreos.com/public-ip": "192.168.50.2",
                    "flannel.alpha.coreos.com/public-ipv6": "fd00:50::2",
                }}})
            );
            assert_eq!(
                rig.take(),
                [
                    "own 10.244.1.0-24&fd00:10:244:1::-64",
                    "add 10.244.2.0-24&fd00:10:244:2::-64 192.168.50.3"
                ]
            );
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn ipv6_only_nodes_lease_and_peer_by_their_ipv6_podcidr() {
    LocalSet::new()
        .run_until(async {
            let net = r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}"#;
            let api = FakeApi::default();
            api.put_node("node-a", &["fd00:10:244:1::/64"], &[]);
            let go_peer = [
                (format!("{P}backend-data"), "null".to_owned()),
                (format!("{P}backend-v6-data"), "null".to_owned()),
                (format!("{P}backend-type"), "host-gw".to_owned()),
                (format!("{P}kube-subnet-manager"), "true".to_owned()),
                (format!("{P}public-ip"), "0.0.0.0".to_owned()),
                (format!("{P}public-ipv6"), "fd00:50::3".to_owned()),
            ];
            let ann: Vec<(&str, &str)> = go_peer.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            api.put_node("node-b", &["fd00:10:244:2::/64"], &ann);
            let rig = start_as(&api, net, host_gw_attrs("0.0.0.0", Some("fd00:50::2")), |_| {});
            settle().await;
            assert!(rig.ready.get());
            assert_eq!(
                rig.subnet_env(),
                "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
            );
            // Go writes the IPv4 pair of a host-gw node even then: null and 0.0.0.0.
            let ann = api.node_now("node-a").unwrap().metadata.annotations;
            assert_eq!(ann[&format!("{P}public-ip")], "0.0.0.0");
            assert_eq!(ann[&format!("{P}public-ipv6")], "fd00:50::2");
            assert_eq!(
                rig.take(),
                ["own fd00:10:244:1::-64", "add fd00:10:244:2::-64 fd00:50::3"]
            );
            api.delete_node("node-b");
            settle().await;
            assert_eq!(rig.take(), ["del fd00:10:244:2::-64 fd00:50::3"]);
            rig.stop.send(true).unwrap();
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn changes_of_nodes_that_give_no_lease_wake_no_one() {
    use futures_util::StreamExt;

    use super::annotations::{Annotations, DEFAULT_PREFIX};
    use super::watch::Watcher;
    use crate::cache::Change;
    use crate::manager::LeaseUpdate;

    let api = FakeApi::default();
    peer(&api, "node-a", "10.244.1.0/24", "192.168.50.2", OWN_MAC);
    api.put_node("plain", &["10.244.9.0/24"], &[("unrelated", "x")]);
    let own = Lease {
        subnet: crate::subnet::SubnetKey {
            v4: Some("10.244.1.0/24".parse().unwrap()),
            v6: None,
        },
        attrs: vxlan_attrs(),
        lease_id: 0,
        expiration: None,
    };
    let mut updates = Watcher {
        api: api.clone(),
        names: Annotations::new(DEFAULT_PREFIX).unwrap(),
        families: Families {
            v4: true,
            v6: false,
        },
        own_name: "node-a".into(),
        depth: 16,
        metrics: Metrics::new(),
        timeout: super::watch::WATCH_TIMEOUT,
    }
    .start(&own, None);
    async fn next(s: &mut crate::manager::LeaseWatch) -> Option<LeaseUpdate> {
        tokio::time::timeout(Duration::from_secs(1), s.next())
            .await
            .ok()
            .flatten()
    }
    // The listing: the own Node's lease only (the cache leaves it out).
    assert!(matches!(next(&mut updates).await, Some(LeaseUpdate::Snapshot(l)) if l.len() == 1));
    // The kubelet's status updates of a Node flannel does not manage: nothing.
    for _ in 0..5 {
        api.touch("plain");
    }
    assert_eq!(next(&mut updates).await, None);
    // Managed now: a lease; its own updates are handed on (the cache finds them equal).
    for (k, v) in go_annotations("192.168.50.9", "02:99:00:00:00:01") {
        api.annotate("plain", &[(&k, Some(&v))]);
    }
    let mut puts = 0;
    while let Some(u) = next(&mut updates).await {
        assert!(
            matches!(&u, LeaseUpdate::Changes(c) if matches!(c[..], [Change::Put(_)])),
            "{u:?}"
        );
        puts += 1;
    }
    assert!(puts >= 1);
    // No longer managed: it goes once, and nothing more after.
    api.annotate("plain", &[(&format!("{P}kube-subnet-manager"), None)]);
    assert!(matches!(
        next(&mut updates).await,
        Some(LeaseUpdate::Changes(c)) if matches!(c[..], [Change::Invalid(_)])
    ));
    api.touch("plain");
    api.delete_node("plain");
    assert_eq!(next(&mut updates).await, None);
}

#[tokio::test(start_paused = true)]
async fn thirty_hostile_nodes_each_skipped_with_one_line_good_peers_programmed() {
    let cases = test_corpus::bad_nodes::cases(&[
        ("OWN_CIDR", "10.244.1.0/24"),
        ("OWN_HALF", "10.244.1.128/25"),
        ("OWN_IP", "192.168.50.2"),
        ("OWN_MAC", OWN_MAC),
        ("OUTSIDE", "10.99.0.0/24"),
        ("NETWORK", "10.244.0.0/16"),
    ])
    .unwrap();
    LocalSet::new()
        .run_until(async {
            crate::log::capture::start();
            let api = FakeApi::default();
            api.put_node("node-a", &["10.244.1.0/24"], &[]);
            let put = |case: &test_corpus::bad_nodes::NodeCase| {
                api.put_node(&case.name, &case.cidrs(), &case.annotation_pairs());
            };
            // Half of them listed at start, half arriving through the watch.
            let bad = &cases.bad;
            for case in &cases.good {
                put(case);
            }
            for case in &bad[..15] {
                put(case);
            }
            let rig = start(&api);
            settle().await;
            for case in &bad[15..] {
                put(case);
            }
            settle().await;
            assert_eq!(
                sorted(rig.take()),
                [
                    "add 10.244.2.0-24 192.168.50.3",
                    "add 10.244.3.0-24 192.168.50.4",
                    "own 10.244.1.0-24"
                ],
                "only the good peers"
            );
            let lines = crate::log::capture::lines();
            for case in bad {
                let name = &case.name;
                let cidr = case.pod_cidrs[0].replace('/', "-");
                let about: Vec<&String> = lines
                    .iter()
                    .filter(|l| {
                        l.contains(&format!("skipping node \"{name}\""))
                            || (l.contains("skipping lease") && l.contains(&cidr))
                    })
                    .collect();
                assert_eq!(about.len(), 1, "{name}: {about:#?}\n{lines:#?}");
            }
            // The listing in the metrics: 18 Nodes, 12 giving a lease (the node's own, two
            // good, nine skipped later by the checks of the lease), 6 unusable.
            let m = rig.metrics.encode();
            for want in [
                "flanneld_node_listings_total{result=\"ok\"} 1\n",
                "flanneld_nodes{state=\"listed\"} 18\n",
                "flanneld_node_listing_seconds_count 1\n",
            ] {
                assert!(m.contains(want), "{want} in\n{m}");
            }
            // Changes of a skipped node that keep it bad say nothing more.
            api.touch("bad-ip-garbage");
            api.touch("bad-mac-zero");
            settle().await;
            let again = crate::log::capture::lines().len();
            assert_eq!(
                again,
                lines.len(),
                "{:#?}",
                &crate::log::capture::lines()[lines.len()..]
            );
            rig.stop.send(true).unwrap();
        })
        .await;
}
