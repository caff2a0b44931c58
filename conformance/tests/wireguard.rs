//! The wireguard backend on a real underlay: three nodes on etcd with `{"Type":"wireguard"}`,
//! two running our flanneld (userspace WireGuard: this kernel has no module) and one set up
//! as Go flanneld sets up its device (wireguard-go and `wg`, a Go-format lease). Every node
//! reaches every other node's subnet, pods ping across, the underlay carries only WireGuard's
//! UDP, a restart keeps the key, a deleted lease takes its peer away. Each node runs with its
//! own `/run`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use conformance::cluster::wireguard::{self, WG_DEV};
use conformance::cluster::{Backend, Cluster};
use conformance::etcd::Agent;

/// Waits until `f` holds (up to `secs`); whether it did.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// `<subnet>.0`, the device address of the node holding `subnet`.
fn device_address(subnet: &str) -> String {
    subnet.split('/').next().unwrap().to_owned()
}

#[test]
fn wireguard_nodes_of_ours_and_a_go_node_reach_each_other_encrypted() {
    let mut c = Cluster::start(Backend::Wireguard);
    let n1 = c.join().expect("node1 runs the wireguard backend");
    let n2 = c.join().expect("node2 runs the wireguard backend");
    let go = c.join_go_node();
    c.converge(30)
        .unwrap_or_else(|e| panic!("not converged: {e}"));

    // The log says which WireGuard runs.
    let log = c.members[n1].agent.as_ref().unwrap().log();
    assert!(
        log.contains("userspace WireGuard") || log.contains("kernel WireGuard"),
        "{log}"
    );
    // Our lease values are Go's, byte for byte, next to the Go node's.
    for m in [n1, n2] {
        let want = c.expected_lease_value(m);
        let lease = c
            .leases()
            .into_iter()
            .find(|l| l.subnet == c.members[m].subnet)
            .unwrap();
        assert_eq!(lease.value, want);
    }
    let go_lease = c
        .leases()
        .into_iter()
        .find(|l| l.subnet == c.members[go].subnet)
        .unwrap();
    println!(
        "leases:\n  ours: {}\n  Go's: {}",
        c.expected_lease_value(n1),
        go_lease.value
    );
    // The key file is private.
    let key_file = c.members[n1].node.dir().join("run/flannel/wgkey");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key_file.display());

    // Every node reaches every other node's device address.
    for from in [n1, n2, go] {
        for to in [n1, n2, go] {
            if from == to {
                continue;
            }
            let addr = device_address(&c.members[to].subnet);
            let ok = eventually(10, || {
                c.members[from]
                    .node
                    .host()
                    .run("ping", &["-c1", "-W1", "-q", &addr])
                    .status
                    .success()
            });
            assert!(ok, "{} cannot reach {addr}", c.members[from].name);
        }
    }

    // Pods on every node ping each other; the underlay carries only WireGuard's UDP.
    for m in [n1, n2, go] {
        c.add_pod(m, None);
    }
    wireguard::count_underlay(&c.lan);
    let matrix = c.ping_matrix(None);
    println!("{matrix}");
    assert_eq!(matrix.ok(), matrix.pairs.len(), "{:?}", matrix.failures());
    let u = wireguard::underlay(&c.lan);
    println!("underlay: {u:?}");
    assert_eq!(
        u.plain_pod_packets, 0,
        "pod traffic crossed the LAN in the clear"
    );
    assert!(u.wireguard_packets >= 12, "{u:?}");

    // The Go-style node holds our nodes as peers, handshakes done.
    let shown = wireguard::wg(&c.members[go].node, &["show", WG_DEV]);
    println!("go-node1 $ wg show {WG_DEV}\n{shown}");
    let (_, peers) = wireguard::dump(&c.members[go].node).unwrap();
    assert_eq!(peers.len(), 2, "{shown}");
    assert!(peers.iter().all(|p| p.latest_handshake > 0), "{shown}");

    // A restart keeps the public key (and the peers take the node back).
    let before = c.expected_lease_value(n1);
    let args = c.agent_args(&c.members[n1].node, &c.members[n1].ip.clone());
    assert_eq!(c.members[n1].agent.as_mut().unwrap().terminate(), Some(0));
    let socket = c.members[n1]
        .node
        .dir()
        .join(format!("run/wireguard/{WG_DEV}.sock"));
    assert!(!socket.exists(), "the control socket outlived the agent");
    let mut cmd = wireguard::with_own_run(&c.members[n1].node, conformance::etcd::flanneld_path());
    cmd.args(&args);
    c.members[n1].agent = Some(Agent::spawn(
        cmd,
        &c.members[n1].node.dir().join("flanneld.log"),
    ));
    c.converge(30)
        .unwrap_or_else(|e| panic!("not converged after the restart: {e}"));
    assert_eq!(c.expected_lease_value(n1), before);
    let pod_go = c.members[go].pods[0].ip(true);
    assert!(eventually(10, || c.ping((n1, 0), &pod_go)));

    // The device deleted by hand: recreated with its key, address, route and peers.
    c.members[n1].node.host().sh("ip", &["link", "del", WG_DEV]);
    c.converge(30)
        .unwrap_or_else(|e| panic!("not converged after the device was deleted: {e}"));
    assert!(eventually(10, || c.ping((n1, 0), &pod_go)));

    // A deleted lease removes its peer on every node.
    let gone = c.members[n2].subnet.clone();
    assert_eq!(c.remove(n2), Some(0));
    assert!(
        eventually(10, || c.forgotten(n1, &gone, None)),
        "node1 kept {gone}"
    );
    assert!(c.forgotten(go, &gone, None));

    println!("{}", c.shut_down().unwrap());
}

/// Kube mode: our agents (one in-cluster, one by kubeconfig) and a Go node annotated as Go
/// annotates it; our Nodes carry Go's annotations byte for byte (`backend-data` is
/// `{"PublicKey":"…","Port":51820}`), and the pods reach each other.
#[test]
fn kube_wireguard_nodes_carry_gos_annotations() {
    if !conformance::kube::available() {
        conformance::skip("wireguard::kube", &conformance::kube::missing());
        return;
    }
    let before = conformance::cluster::machine_state();
    let mut c = Cluster::start_kube(Backend::Wireguard);
    c.join_in_cluster().unwrap();
    c.join().unwrap();
    let go = c.join_go_node();
    c.converge(30)
        .unwrap_or_else(|e| panic!("not converged: {e}"));
    for m in 0..2 {
        let node = c.kube().cp.node_json(&c.members[m].name);
        let ann = conformance::cluster::kube::flannel_annotations(&node);
        assert_eq!(ann, c.expected_annotations(m), "{}", c.members[m].name);
        if m == 0 {
            println!("node1's annotations: {ann:#?}");
        }
    }
    for m in [0, 1, go] {
        c.add_pod(m, None);
    }
    let matrix = c.ping_matrix(None);
    println!("{matrix}");
    assert_eq!(matrix.ok(), matrix.pairs.len(), "{:?}", matrix.failures());
    println!("{}", c.shut_down().unwrap());
    assert_eq!(conformance::cluster::machine_state(), before);
}
