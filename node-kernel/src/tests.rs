//! The typed requests against the recording transport: what each sends, how each reads the
//! kernel's answer.

use netlink_packet_core::{
    Emitable, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::RouteMessage;

use crate::fake::{FakeReply, FakeTransport};
use crate::kinds;
use crate::link::LinkId;
use crate::socket::{Netfilter, Route, Socket};

fn route_socket() -> Socket<Route, FakeTransport> {
    Socket::with_transport(FakeTransport::new())
}

fn bytes(m: &impl Emitable) -> Vec<u8> {
    let mut v = vec![0; m.buffer_len()];
    m.emit(&mut v);
    v
}

fn named(name: &str, index: u32) -> Vec<u8> {
    let mut m = crate::link::bridge(name, Some(1400), false);
    m.header.index = index;
    bytes(&m)
}

#[test]
fn creating_a_link_asks_for_an_ack_and_refuses_to_replace() {
    let s = route_socket();
    s.transport().reply(FakeReply::Ack);
    s.create_link(&crate::link::bridge("cni0", None, false))
        .unwrap();
    let sent = s.transport().sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, kinds::NEW_LINK);
    assert_eq!(
        sent[0].flags,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    );
    s.transport().reply(FakeReply::Errno(nix::libc::EEXIST));
    let e = s
        .create_link(&crate::link::bridge("cni0", None, false))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::EEXIST));
}

#[test]
fn a_lookup_reads_the_link_and_no_such_device_is_none() {
    let s = route_socket();
    s.transport().reply(FakeReply::Message {
        kind: kinds::NEW_LINK,
        payload: named("cni0", 7),
    });
    let found = s.link(LinkId::Name("cni0")).unwrap().unwrap();
    assert_eq!(found.header.index, 7);
    assert_eq!(crate::link::name(&found), Some("cni0"));
    assert_eq!(crate::link::mtu(&found), Some(1400));
    assert_eq!(s.transport().sent()[0].kind, kinds::GET_LINK);
    assert_eq!(s.transport().sent()[0].flags, NLM_F_REQUEST);
    s.transport().reply(FakeReply::Errno(nix::libc::ENODEV));
    assert!(s.link(LinkId::Index(9)).unwrap().is_none());
    s.transport().reply(FakeReply::Errno(nix::libc::EPERM));
    assert!(s.link(LinkId::Index(9)).is_err());
}

#[test]
fn deleting_what_is_gone_is_no_error() {
    let s = route_socket();
    s.transport().reply(FakeReply::Errno(nix::libc::ENODEV));
    s.delete_link(3).unwrap();
    s.transport().reply(FakeReply::Errno(nix::libc::ESRCH));
    s.delete_route(&crate::route::main_table("10.1.0.0".parse().unwrap(), 16))
        .unwrap();
    s.transport().reply(FakeReply::Errno(nix::libc::ENOENT));
    s.delete_neighbour(&crate::neigh::permanent(
        3,
        "10.1.2.0".parse().unwrap(),
        [2, 0, 0, 0, 0, 1],
    ))
    .unwrap();
    let kinds_sent: Vec<u16> = s.transport().sent().iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds_sent,
        [kinds::DEL_LINK, kinds::DEL_ROUTE, kinds::DEL_NEIGH]
    );
}

#[test]
fn an_address_dump_keeps_only_the_asked_link() {
    let s = route_socket();
    let on =
        |index: u32, net: &str| bytes(&crate::addr::address(index, net.parse().unwrap(), true));
    s.transport().reply(FakeReply::Dump {
        kind: kinds::NEW_ADDR,
        payloads: vec![
            on(2, "10.0.0.1/24"),
            on(5, "10.9.0.1/24"),
            on(2, "fd00::1/64"),
        ],
    });
    let got: Vec<String> = s
        .addresses(2)
        .unwrap()
        .into_iter()
        .map(|(net, _)| net.to_string())
        .collect();
    assert_eq!(got, ["10.0.0.1/24", "fd00::1/64"]);
    let sent = &s.transport().sent()[0];
    assert_eq!(sent.kind, kinds::GET_ADDR);
    assert_eq!(sent.flags, NLM_F_REQUEST | NLM_F_DUMP);
    let _: AddressMessage = crate::addr::address(1, "fd00::2/64".parse().unwrap(), false);
}

#[test]
fn ipv6_addresses_skip_dad_unless_asked() {
    let nodad = crate::addr::address(1, "fd00::2/64".parse().unwrap(), false);
    assert!(crate::addr::flags(&nodad).is_some());
    let dad = crate::addr::address(1, "fd00::2/64".parse().unwrap(), true);
    assert!(crate::addr::flags(&dad).is_none());
}

#[test]
fn a_route_lookup_names_the_output_link() {
    let s = route_socket();
    let reply = crate::route::via_link(
        crate::route::main_table("10.1.0.5".parse().unwrap(), 32),
        12,
    );
    s.transport().reply(FakeReply::Message {
        kind: kinds::NEW_ROUTE,
        payload: bytes(&reply),
    });
    let found: RouteMessage = s.route_to("10.1.0.5".parse().unwrap()).unwrap().unwrap();
    assert_eq!(crate::route::output_link(&found), Some(12));
    assert_eq!(
        crate::route::destination(&found).map(|d| d.to_string()),
        Some("10.1.0.5/32".to_owned())
    );
}

#[test]
fn a_default_route_has_the_unspecified_destination() {
    let mut m = RouteMessage::default();
    m.header.address_family = netlink_packet_route::AddressFamily::Inet6;
    let m = crate::route::via_gateway(m, "fd00::1".parse().unwrap());
    assert_eq!(
        crate::route::destination(&m).map(|d| d.to_string()),
        Some("::/0".to_owned())
    );
    assert_eq!(crate::route::gateway(&m), Some("fd00::1".parse().unwrap()));
}

#[test]
fn neighbours_and_fdb_entries_replace() {
    let s = route_socket();
    s.transport().reply(FakeReply::Ack).reply(FakeReply::Ack);
    let mac = [2, 0, 0, 0, 0, 9];
    s.replace_neighbour(&crate::neigh::permanent(
        4,
        "10.5.1.0".parse().unwrap(),
        mac,
    ))
    .unwrap();
    s.replace_neighbour(&crate::neigh::fdb(4, mac, "192.168.1.3".parse().unwrap()))
        .unwrap();
    for sent in s.transport().sent() {
        assert_eq!(sent.kind, kinds::NEW_NEIGH);
        assert_eq!(
            sent.flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        );
    }
    let entry = crate::neigh::fdb(4, mac, "192.168.1.3".parse().unwrap());
    assert_eq!(crate::neigh::mac(&entry), Some(&mac[..]));
    assert_eq!(
        crate::neigh::destination(&entry),
        Some("192.168.1.3".parse().unwrap())
    );
}

#[test]
fn a_refused_transaction_names_the_refused_command() {
    let s: Socket<Netfilter, FakeTransport> = Socket::with_transport(FakeTransport::new());
    let msg = crate::nft::tests_support::table("t");
    // Nothing queued: the kernel took the whole batch.
    assert!(
        s.nft_transaction(&[(crate::nft::NftOp::NewTable, NLM_F_CREATE, &msg)])
            .unwrap()
            .is_ok()
    );
    let sent = s.transport().sent();
    assert_eq!(sent.len(), 3, "begin, the command, end");
    assert_eq!(sent[0].kind, kinds::NFNL_MSG_BATCH_BEGIN);
    assert_eq!(sent[2].kind, kinds::NFNL_MSG_BATCH_END);
    // The refusal answers the last message sent (the fake's rule), here the batch end: an
    // index past the commands, which callers report as the whole transaction.
    s.transport().reply(FakeReply::Errno(nix::libc::ENOENT));
    let refused = s
        .nft_transaction(&[(crate::nft::NftOp::NewTable, NLM_F_CREATE, &msg)])
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.1.raw_os_error(), Some(nix::libc::ENOENT));
    assert_eq!(refused.0, 1);
}

#[test]
fn flushing_no_ports_sends_nothing() {
    let s: Socket<Netfilter, FakeTransport> = Socket::with_transport(FakeTransport::new());
    assert_eq!(s.flush_udp_conntrack(&[]).unwrap(), 0);
    assert!(s.transport().sent().is_empty());
}

#[test]
fn an_unscripted_request_fails_instead_of_hanging() {
    let s = route_socket();
    assert!(s.link(LinkId::Name("x")).is_err());
    let _ = LinkMessage::default();
}

/// What the dual-stack vxlan backend sends: an `AF_INET6` neighbour, an FDB entry with an
/// IPv6 remote (read back from its bytes, where `AF_BRIDGE` leaves the address untyped), an
/// IPv6 onlink route, a VXLAN device with `IFLA_VXLAN_LOCAL6`.
#[test]
fn ipv6_neighbours_fdb_remotes_onlink_routes_and_a_vxlan_local6() {
    use netlink_packet_core::Parseable;
    use netlink_packet_route::AddressFamily;
    use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo};
    use netlink_packet_route::neighbour::NeighbourMessage;

    let mac = [2, 0, 0, 0, 0, 6];
    let n = crate::neigh::permanent(4, "fc00:0:0:2::".parse().unwrap(), mac);
    assert_eq!(n.header.family, AddressFamily::Inet6);
    assert_eq!(
        crate::neigh::destination(&n),
        Some("fc00:0:0:2::".parse().unwrap())
    );

    let f = crate::neigh::fdb(4, mac, "fd00:5::3".parse().unwrap());
    let wire = bytes(&f);
    let back = NeighbourMessage::parse(&wire[..]).unwrap();
    assert_eq!(back.header.family, AddressFamily::Bridge);
    assert_eq!(
        crate::neigh::destination(&back),
        Some("fd00:5::3".parse().unwrap())
    );
    assert_eq!(crate::neigh::mac(&back), Some(&mac[..]));

    let r = crate::route::onlink(crate::route::via_gateway(
        crate::route::via_link(
            crate::route::main_table("fc00:0:0:2::".parse().unwrap(), 64),
            9,
        ),
        "fc00:0:0:2::".parse().unwrap(),
    ));
    assert_eq!(r.header.address_family, AddressFamily::Inet6);
    assert!(crate::route::is_onlink(&r));
    assert_eq!(
        crate::route::destination(&r),
        Some("fc00:0:0:2::/64".parse().unwrap())
    );
    assert_eq!(crate::route::output_link(&r), Some(9));

    let link = crate::link::vxlan(&crate::link::VxlanSpec {
        name: "flannel-v6.1".into(),
        vni: 1,
        link: 2,
        local: "fd00:5::2".parse().unwrap(),
        port: 0,
        gbp: false,
        learning: false,
        mtu: 1430,
        mac,
    });
    let data = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Data(InfoData::Vxlan(d)) => Some(d.clone()),
                _ => None,
            }),
            _ => None,
        })
        .unwrap();
    assert!(data.contains(&InfoVxlan::Local6("fd00:5::2".parse().unwrap())));
    assert!(!data.iter().any(|d| matches!(d, InfoVxlan::Local(_))));
}
