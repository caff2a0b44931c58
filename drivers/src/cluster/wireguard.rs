//! The wireguard side of the cluster rig: each node's processes run with a `/run` of their
//! own (`<node dir>/run` bound over it in a private mount namespace), since WireGuard's
//! userspace control sockets live at `/var/run/wireguard/<device>.sock` and every node's
//! device is `flannel-wg`; a "Go node" set up as Go flannel sets up its device (wireguard-go
//! from Debian, configured with `wg` from wireguard-tools); the peers a device holds as `wg
//! show dump` prints them; and counters on the LAN's bridge of what crosses the underlay.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::etcd::{Agent, Lan};
use rig::node::Node;

/// The device of the config's `{"Type":"wireguard"}` (IPv4, `separate` mode).
pub const WG_DEV: &str = "flannel-wg";
/// Its port (`ListenPort`'s default).
pub const WG_PORT: u16 = 51820;

/// The node's own `/run`, bound over `/run` for its processes.
pub fn run_dir(node: &Node) -> PathBuf {
    let dir = node.dir().join("run");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `program` in the node's network namespace with the node's own `/run`.
pub fn with_own_run(node: &Node, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = node.host().command("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg("mount --bind \"$1\" /run && shift && exec \"$@\"")
        .arg("sh")
        .arg(run_dir(node))
        .arg(program);
    cmd
}

/// Runs `wg args...` on the node; its stdout, or a panic with its stderr.
pub fn wg(node: &Node, args: &[&str]) -> String {
    let out = with_own_run(node, "wg").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "wg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One peer line of `wg show <dev> dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeerLine {
    /// Base64 public key.
    pub public_key: String,
    /// `ip:port`, or `(none)`.
    pub endpoint: String,
    /// Comma-separated networks.
    pub allowed_ips: String,
    /// Seconds since the epoch of the last handshake; 0 for none.
    pub latest_handshake: u64,
}

/// The device's public key and peers, as `wg show dump` lists them; `None` when the device
/// has no control socket or kernel device (yet).
pub fn dump(node: &Node) -> Option<(String, Vec<WgPeerLine>)> {
    let out = with_own_run(node, "wg")
        .args(["show", WG_DEV, "dump"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let own = lines.next()?.split('\t').nth(1)?.to_owned();
    let peers = lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some(WgPeerLine {
                public_key: f.first()?.to_string(),
                endpoint: f.get(2)?.to_string(),
                allowed_ips: f.get(3)?.to_string(),
                latest_handshake: f.get(4)?.parse().ok()?,
            })
        })
        .collect();
    Some((own, peers))
}

/// A Go node's WireGuard device: wireguard-go running `flannel-wg`, set up with `wg` and
/// `ip` the way Go flanneld sets up its kernel device (key, port 51820, MTU 1500 − 80, the
/// subnet's `.0/32`, the Network routed through the device with scope link).
#[derive(Debug)]
pub struct GoDevice {
    /// wireguard-go, in the foreground.
    pub daemon: Agent,
    /// The device's public key, base64.
    pub public_key: String,
}

impl GoDevice {
    /// Starts and configures the device on `node` for `subnet` (`10.99.0.0/20`) in `network`.
    pub fn start(node: &Node, subnet_base: &str, network: &str) -> GoDevice {
        let key = wg(node, &["genkey"]);
        let key_file = node.dir().join("go-wgkey");
        fs::write(&key_file, &key).unwrap();
        let public_key = {
            use std::io::Write;
            let mut c = with_own_run(node, "wg")
                .arg("pubkey")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(key.as_bytes()).unwrap();
            let out = c.wait_with_output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let mut cmd = with_own_run(node, "wireguard-go");
        cmd.args(["-f", WG_DEV]);
        let daemon = Agent::spawn(cmd, &node.dir().join("wireguard-go.log"));
        let socket = node.dir().join(format!("run/wireguard/{WG_DEV}.sock"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "wireguard-go made no control socket in 10 s:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        wg(
            node,
            &[
                "set",
                WG_DEV,
                "private-key",
                &key_file.display().to_string(),
                "listen-port",
                &WG_PORT.to_string(),
            ],
        );
        let host = node.host();
        host.sh("ip", &["link", "set", WG_DEV, "mtu", "1420", "up"]);
        host.sh(
            "ip",
            &["addr", "add", &format!("{subnet_base}/32"), "dev", WG_DEV],
        );
        host.sh(
            "ip",
            &["route", "replace", network, "dev", WG_DEV, "scope", "link"],
        );
        GoDevice { daemon, public_key }
    }
}

/// What Go flanneld does with a peer lease: the peer set with its endpoint and subnet.
pub fn set_go_peer(node: &Node, public_key: &str, endpoint: &str, subnet: &str) {
    wg(
        node,
        &[
            "set",
            WG_DEV,
            "peer",
            public_key,
            "endpoint",
            endpoint,
            "allowed-ips",
            subnet,
        ],
    );
}

/// ... and with a lease gone.
pub fn remove_go_peer(node: &Node, public_key: &str) {
    wg(node, &["set", WG_DEV, "peer", public_key, "remove"]);
}

/// Counters on the LAN's bridge: packets between pod addresses sent in the clear, and UDP
/// packets to the WireGuard port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Underlay {
    /// IPv4 packets with a pod address (10.0.0.0/8) as source or destination.
    pub plain_pod_packets: u64,
    /// UDP packets to port 51820.
    pub wireguard_packets: u64,
}

const COUNTER_TABLE: &str = "cni_rs_underlay";

/// Starts counting on the LAN's bridge (the table is the LAN namespace's: it goes with it).
pub fn count_underlay(lan: &Lan) {
    let rules = format!(
        "table bridge {COUNTER_TABLE} {{\n chain forward {{\n  type filter hook forward priority 0;\n  \
         ip saddr 10.0.0.0/8 counter comment \"plain\"\n  ip daddr 10.0.0.0/8 counter comment \"plain\"\n  \
         udp dport {WG_PORT} counter comment \"wireguard\"\n }}\n}}\n"
    );
    let file = lan.dir().join("underlay.nft");
    fs::write(&file, rules).unwrap();
    lan.ns().sh("nft", &["-f", &file.display().to_string()]);
}

/// The counters so far.
pub fn underlay(lan: &Lan) -> Underlay {
    let text = lan
        .ns()
        .sh("nft", &["list", "table", "bridge", COUNTER_TABLE]);
    let mut u = Underlay {
        plain_pod_packets: 0,
        wireguard_packets: 0,
    };
    for l in text.lines() {
        let packets = l
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if l.contains("\"plain\"") {
            u.plain_pod_packets += packets;
        } else if l.contains("\"wireguard\"") {
            u.wireguard_packets += packets;
        }
    }
    u
}
