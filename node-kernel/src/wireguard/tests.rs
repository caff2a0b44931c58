use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NlasIterator};
use netlink_packet_generic::constants::GENL_ID_CTRL;
use nix::libc::ENOENT;

use super::*;
use crate::fake::{FakeReply, FakeTransport};

const FAMILY: u16 = 33;
const KEY_A: Key = [0xaa; 32];
const KEY_B: Key = [0xbb; 32];

fn bytes(m: &impl Emitable) -> Vec<u8> {
    let mut v = vec![0; m.buffer_len()];
    m.emit(&mut v);
    v
}

fn socket() -> Socket<Wireguard, FakeTransport> {
    Socket::with_transport(FakeTransport::new())
}

fn family_reply() -> FakeReply {
    FakeReply::generic_family("wireguard", FAMILY)
}

fn peer() -> WgPeer {
    WgPeer {
        preshared_key: Some(KEY_B),
        keepalive: 25,
        ..WgPeer::new(
            KEY_A,
            Some("192.168.50.12:51820".parse().unwrap()),
            vec!["10.10.16.0/20".parse().unwrap()],
        )
    }
}

/// (kind without flags, nested, value) of each attribute.
fn attrs(buf: &[u8]) -> Vec<(u16, bool, Vec<u8>)> {
    NlasIterator::new(buf)
        .map(|n| {
            let n = n.unwrap();
            (n.kind(), n.nested_flag(), n.value().to_vec())
        })
        .collect()
}

/// The layout of include/uapi/linux/wireguard.h, attribute by attribute, as `wg set` writes
/// it: device (IFNAME 2, PRIVATE_KEY 3, LISTEN_PORT 6, FLAGS 5, PEERS 8 nested), peer
/// (PUBLIC_KEY 1, FLAGS 3, PRESHARED_KEY 2, KEEPALIVE 5, ENDPOINT 4 a sockaddr_in,
/// ALLOWEDIPS 9 nested), allowed IP (FAMILY 1, IPADDR 2, CIDR_MASK 3).
#[test]
fn the_set_message_has_the_kernels_layout() {
    let settings = DeviceSettings {
        private_key: Some(KEY_B),
        listen_port: Some(51820),
        replace_peers: true,
    };
    let msg = GenlMessage::from_payload(set_message(
        "flannel-wg",
        &settings,
        &[PeerChange::Set(peer())],
    ));
    let buf = bytes(&msg);
    // genl header: WG_CMD_SET_DEVICE 1, version 1.
    assert_eq!(&buf[..4], &[1, 1, 0, 0]);
    let dev = attrs(&buf[4..]);
    assert_eq!(dev[0], (2, false, b"flannel-wg\0".to_vec()));
    assert_eq!(dev[1], (3, false, KEY_B.to_vec()));
    assert_eq!(dev[2], (6, false, 51820u16.to_ne_bytes().to_vec()));
    assert_eq!(dev[3], (5, false, 1u32.to_ne_bytes().to_vec()));
    assert_eq!((dev[4].0, dev[4].1), (8, true));
    let peers = attrs(&dev[4].2);
    assert_eq!(peers.len(), 1);
    let p = attrs(&peers[0].2);
    let kinds: Vec<u16> = p.iter().map(|a| a.0).collect();
    assert_eq!(kinds, [1, 3, 2, 5, 4, 9]);
    assert_eq!(p[0].2, KEY_A.to_vec());
    // WGPEER_F_REPLACE_ALLOWEDIPS.
    assert_eq!(p[1].2, 2u32.to_ne_bytes().to_vec());
    assert_eq!(p[2].2, KEY_B.to_vec());
    assert_eq!(p[3].2, 25u16.to_ne_bytes().to_vec());
    // struct sockaddr_in: AF_INET, port in network order, address, zero padding.
    assert_eq!(
        p[4].2,
        [2, 0, 0xca, 0x6c, 192, 168, 50, 12, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    let ips = attrs(&p[5].2);
    let ip = attrs(&ips[0].2);
    assert_eq!(ip[0], (1, false, 2u16.to_ne_bytes().to_vec()));
    assert_eq!(ip[1], (2, false, vec![10, 10, 16, 0]));
    assert_eq!(ip[2], (3, false, vec![20]));
}

#[test]
fn a_removal_names_the_key_and_remove_me() {
    let msg = set_message(
        "flannel-wg",
        &DeviceSettings::default(),
        &[PeerChange::Remove(KEY_A)],
    );
    let buf = bytes(&msg);
    let dev = attrs(&buf);
    assert_eq!(dev.len(), 2, "the name and the peer, nothing else: {dev:?}");
    let p = attrs(&attrs(&dev[1].2)[0].2);
    assert_eq!(
        p,
        [
            (1, false, KEY_A.to_vec()),
            (3, false, 1u32.to_ne_bytes().to_vec())
        ]
    );
}

#[test]
fn set_device_resolves_the_family_once_and_sends_one_message_per_peer() {
    let s = socket();
    s.transport()
        .reply(family_reply())
        .reply(FakeReply::Ack)
        .reply(FakeReply::Ack)
        .reply(FakeReply::Ack);
    let settings = DeviceSettings {
        listen_port: Some(51820),
        ..DeviceSettings::default()
    };
    s.set_device(
        "flannel-wg",
        &settings,
        &[PeerChange::Set(peer()), PeerChange::Remove(KEY_B)],
    )
    .unwrap();
    let sent = s.transport().sent();
    assert_eq!(sent.len(), 4);
    assert_eq!(sent[0].kind, GENL_ID_CTRL);
    for m in &sent[1..] {
        assert_eq!(m.kind, FAMILY);
        assert_eq!(m.flags, NLM_F_REQUEST | NLM_F_ACK);
    }
    assert_eq!(
        sent[3].payload[4..],
        bytes(&set_message(
            "flannel-wg",
            &DeviceSettings::default(),
            &[PeerChange::Remove(KEY_B)]
        ))
    );
}

#[test]
fn a_kernel_without_the_module_answers_enoent() {
    let s = socket();
    s.transport().reply(FakeReply::Errno(ENOENT));
    let err = s.device("flannel-wg").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(ENOENT));
}

#[test]
fn a_device_read_back_merges_a_peer_split_over_two_messages() {
    let mut first = set_message(
        "flannel-wg",
        &DeviceSettings {
            listen_port: Some(51820),
            ..DeviceSettings::default()
        },
        &[PeerChange::Set(peer())],
    );
    first.cmd = WireguardCmd::GetDevice;
    first.attributes.push(WireguardAttribute::PublicKey(KEY_B));
    // The kernel's continuation: the same key, then the allowed IPs that did not fit.
    let more = WgPeer::new(KEY_A, None, vec!["fd00:10::/64".parse().unwrap()]);
    let WireguardPeer(attrs) = peer_attributes(&PeerChange::Set(more));
    let continued = attrs
        .into_iter()
        .filter(|a| {
            matches!(
                a,
                WireguardPeerAttribute::PublicKey(_) | WireguardPeerAttribute::AllowedIps(_)
            )
        })
        .collect();
    let second = WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::Peers(vec![WireguardPeer(continued)])],
    };
    let s = socket();
    s.transport().reply(family_reply()).reply(FakeReply::Dump {
        kind: FAMILY,
        payloads: vec![
            bytes(&GenlMessage::from_payload(first)),
            bytes(&GenlMessage::from_payload(second)),
        ],
    });
    let dev = s.device("flannel-wg").unwrap();
    assert_eq!(dev.listen_port, 51820);
    assert_eq!(dev.public_key, Some(KEY_B));
    assert_eq!(dev.peers.len(), 1);
    let want = WgPeer {
        allowed_ips: vec![
            "10.10.16.0/20".parse().unwrap(),
            "fd00:10::/64".parse().unwrap(),
        ],
        ..peer()
    };
    assert!(want.is_met_by(&dev.peers[0]), "{:?}", dev.peers[0]);
    assert!(!peer().is_met_by(&dev.peers[0]));
    assert_eq!(s.transport().sent()[1].flags, NLM_F_REQUEST | NLM_F_DUMP);
}
