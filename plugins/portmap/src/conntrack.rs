//! Flushing stale UDP conntrack entries of the mapped host ports, so that datagrams stop
//! following a mapping to an address that no longer serves it (Go does this on ADD only,
//! #1190; we do it on ADD and DEL). Through ctnetlink: dump, then delete the matches.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, ProtoTuple, Protocol, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily as ProtoFamily,
};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

fn send(socket: &Socket, msg: ConntrackMessage, family: ProtoFamily, flags: u16) -> io::Result<()> {
    let mut nl = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, 0),
            msg,
        )),
    );
    nl.header.flags = flags;
    nl.finalize();
    let mut buf = vec![0; nl.buffer_len()];
    nl.serialize(&mut buf);
    socket.send(&buf, 0)?;
    Ok(())
}

/// Reads replies until the dump (or the ACK) is done; returns the conntrack entries seen.
fn receive(socket: &Socket) -> io::Result<Vec<Vec<ConntrackAttribute>>> {
    let mut entries = Vec::new();
    loop {
        let (buf, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < buf.len() {
            let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[offset..])
                .map_err(|e| io::Error::other(e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(entries),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                NetlinkPayload::Error(_) => return Ok(entries),
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
                    ..
                }) => entries.push(attrs),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// The original tuple when it is UDP to one of `ports`.
fn udp_to(attrs: &[ConntrackAttribute], ports: &[u16]) -> Option<Vec<Tuple>> {
    attrs.iter().find_map(|a| match a {
        ConntrackAttribute::CtaTupleOrig(tuple) => {
            let proto = tuple.iter().find_map(|t| match t {
                Tuple::Proto(p) => Some(p),
                _ => None,
            })?;
            let udp = proto.contains(&ProtoTuple::Protocol(Protocol::Udp));
            let port = proto.iter().find_map(|p| match p {
                ProtoTuple::DestinationPort(port) => Some(*port),
                _ => None,
            })?;
            (udp && ports.contains(&port)).then(|| tuple.clone())
        }
        _ => None,
    })
}

/// Deletes the UDP conntrack entries whose original destination port is one of `ports`, in
/// the calling thread's network namespace. Returns how many were deleted.
pub fn flush_udp(ports: &[u16]) -> io::Result<usize> {
    if ports.is_empty() {
        return Ok(0);
    }
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    let mut deleted = 0;
    for family in [ProtoFamily::IPv4, ProtoFamily::IPv6] {
        send(
            &socket,
            ConntrackMessage::Get(Vec::new()),
            family,
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        for entry in receive(&socket)? {
            let Some(tuple) = udp_to(&entry, ports) else {
                continue;
            };
            send(
                &socket,
                ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple)]),
                family,
                NLM_F_REQUEST | NLM_F_ACK,
            )?;
            match receive(&socket) {
                // Gone meanwhile (it timed out): nothing to do.
                Err(e) if e.raw_os_error() == Some(2) => {}
                Err(e) => return Err(e),
                Ok(_) => deleted += 1,
            }
        }
    }
    Ok(deleted)
}
