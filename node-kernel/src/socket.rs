//! Netlink sockets typed by family and bound to a network namespace, and the datagram rules
//! every request follows.
//!
//! A netlink socket belongs to the namespace it was created in, so a socket for a container
//! is created inside the container's namespace and then used from the caller's, as netavark
//! does: the thread spends microseconds in the container's namespace, never the whole
//! operation. Requests are written and read with blocking calls: no async runtime, no
//! background task (docs/dependencies.md has the measurements).
//!
//! The family is the socket's type ([`Route`], [`Netfilter`], [`Ethtool`]): a route request
//! cannot be sent on a netfilter socket. The request primitives here are the crate's own; what
//! other crates see are the typed requests of [`crate::link`], [`crate::addr`],
//! [`crate::route`], [`crate::neigh`], [`crate::nft`], [`crate::conntrack`] and
//! [`crate::ethtool`].

use std::cell::Cell;
use std::io;
use std::marker::PhantomData;

use netlink_packet_core::{
    DecodeError, Emitable, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_DUMP, NLM_F_MULTIPART, NLM_F_REQUEST,
    NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader, NlasIterator, Parseable, parse_u16,
};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::constants::{CTRL_ATTR_FAMILY_ID, GENL_HDRLEN, GENL_ID_CTRL};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_sys::protocols::{NETLINK_GENERIC, NETLINK_NETFILTER, NETLINK_ROUTE};

use crate::error::KernelError;
use crate::netns::Netns;
use crate::transport::{KernelTransport, Transport};

/// A netlink protocol family: what a socket of it carries.
pub trait Family {
    /// The `NETLINK_*` protocol number.
    const PROTOCOL: isize;
}

/// rtnetlink: links, addresses, routes, neighbours, FDB entries.
#[derive(Debug, Clone, Copy)]
pub struct Route;

impl Family for Route {
    const PROTOCOL: isize = NETLINK_ROUTE;
}

/// nfnetlink: nf_tables transactions and listings, conntrack.
#[derive(Debug, Clone, Copy)]
pub struct Netfilter;

impl Family for Netfilter {
    const PROTOCOL: isize = NETLINK_NETFILTER;
}

/// A generic netlink family: its messages carry an id the kernel assigned when the family
/// registered, asked of the controller (nlctrl) by name.
pub trait GenericFamily: Family {
    /// The name the family registered (`CTRL_ATTR_FAMILY_NAME`).
    const NAME: &'static str;
}

/// Declares a generic netlink family: its type and the name it registers under.
macro_rules! generic_family {
    ($(#[$doc:meta])* $ty:ident, $name:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;

        impl Family for $ty {
            const PROTOCOL: isize = NETLINK_GENERIC;
        }

        impl GenericFamily for $ty {
            const NAME: &'static str = $name;
        }
    };
}

generic_family!(
    /// The ethtool generic netlink family: device features (offloads) and settings.
    Ethtool,
    "ethtool"
);
generic_family!(
    /// The WireGuard generic netlink family: kernel WireGuard devices' keys and peers.
    Wireguard,
    "wireguard"
);

/// A socket of family `F` over transport `T` (the kernel, or a fake in tests).
#[derive(Debug)]
pub struct Socket<F: Family, T: Transport = KernelTransport> {
    transport: T,
    sequence: Cell<u32>,
    /// A generic netlink family's id once resolved (unused by the other families).
    generic_id: Cell<Option<u16>>,
    family: PhantomData<F>,
}

/// An rtnetlink socket to the kernel.
pub type RouteSocket = Socket<Route>;
/// An nfnetlink socket to the kernel.
pub type NetfilterSocket = Socket<Netfilter>;
/// A generic netlink socket for the ethtool family, to the kernel.
pub type EthtoolSocket = Socket<Ethtool>;
/// A generic netlink socket for the WireGuard family, to the kernel.
pub type WireguardSocket = Socket<Wireguard>;

impl<F: Family> Socket<F, KernelTransport> {
    /// A socket in the calling thread's namespace.
    pub fn current() -> Result<Self, KernelError> {
        KernelTransport::open(F::PROTOCOL)
            .map(Self::with_transport)
            .map_err(KernelError::Socket)
    }

    /// A socket that lives in `ns`.
    pub fn in_netns(ns: &Netns) -> Result<Self, KernelError> {
        ns.run(Self::current)?
    }
}

impl<F: Family, T: Transport> Socket<F, T> {
    /// A socket over `transport` (a fake one in tests).
    pub fn with_transport(transport: T) -> Self {
        Socket {
            transport,
            sequence: Cell::new(0),
            generic_id: Cell::new(None),
            family: PhantomData,
        }
    }

    /// The transport, for a test to read what was sent.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Sends `messages` (type, flags, body) in one datagram, as an nfnetlink batch must
    /// travel; returns their sequence numbers. The kernel handles the whole datagram before
    /// the call returns, so its answers are then waiting: see [`Socket::queued_errors`].
    pub(crate) fn send_batch(
        &self,
        messages: &[(u16, u16, &dyn Emitable)],
    ) -> io::Result<Vec<u32>> {
        let mut buf = Vec::new();
        let mut seqs = Vec::with_capacity(messages.len());
        for (kind, flags, body) in messages {
            seqs.push(self.write(&mut buf, *kind, *flags, *body)?);
        }
        self.transport.send(&buf)?;
        Ok(seqs)
    }

    /// The error replies waiting on the socket, by sequence number, read without blocking.
    /// For requests whose success is silent (no ACK asked) and that the kernel handled
    /// while they were sent.
    pub(crate) fn queued_errors(&self) -> io::Result<Vec<(u32, io::Error)>> {
        let mut buf = vec![0; RECV_BUFFER];
        let mut errors = Vec::new();
        loop {
            let n = match self.transport.recv(&mut buf, true) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(errors),
                Err(e) => return Err(e),
            };
            for msg in messages(fitted(&buf, n)?) {
                let msg = msg.map_err(decode)?;
                if msg.message_type() == NLMSG_ERROR
                    && let Err(e) = kernel_answer(msg.payload())
                {
                    errors.push((msg.sequence_number(), e));
                }
            }
        }
    }

    /// Sends a request that changes something and waits for the kernel's answer.
    pub(crate) fn ack(&self, kind: u16, extra_flags: u16, body: &impl Emitable) -> io::Result<()> {
        let seq = self.send(kind, NLM_F_REQUEST | NLM_F_ACK | extra_flags, body)?;
        self.receive(seq, |_, _| Ok(()))
    }

    /// A targeted query answered by one message of type `reply` (or an error).
    pub(crate) fn get<R>(
        &self,
        kind: u16,
        reply: u16,
        body: &impl Emitable,
    ) -> io::Result<Option<R>>
    where
        R: Parseable<[u8]>,
    {
        let seq = self.send(kind, NLM_F_REQUEST, body)?;
        let mut found = None;
        self.receive(seq, |t, payload| {
            if t == reply && found.is_none() {
                found = Some(R::parse(payload).map_err(decode)?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// A dump: every message of type `reply` the kernel sends back.
    pub(crate) fn dump<R>(&self, kind: u16, reply: u16, body: &impl Emitable) -> io::Result<Vec<R>>
    where
        R: Parseable<[u8]>,
    {
        let seq = self.send(kind, NLM_F_REQUEST | NLM_F_DUMP, body)?;
        let mut all = Vec::new();
        self.receive(seq, |t, payload| {
            if t == reply {
                all.push(R::parse(payload).map_err(decode)?);
            }
            Ok(())
        })?;
        Ok(all)
    }

    fn send(&self, kind: u16, flags: u16, body: &impl Emitable) -> io::Result<u32> {
        let mut buf = Vec::new();
        let seq = self.write(&mut buf, kind, flags, body)?;
        self.transport.send(&buf)?;
        Ok(seq)
    }

    /// Appends one message (padded to four bytes) to `buf`; returns its sequence number.
    fn write(
        &self,
        buf: &mut Vec<u8>,
        kind: u16,
        flags: u16,
        body: &(impl Emitable + ?Sized),
    ) -> io::Result<u32> {
        let seq = self.sequence.get().wrapping_add(1);
        self.sequence.set(seq);
        let mut header = NetlinkHeader::default();
        let header_len = header.buffer_len();
        let len = header_len + body.buffer_len();
        header.length = u32::try_from(len).map_err(io::Error::other)?;
        header.message_type = kind;
        header.flags = flags;
        header.sequence_number = seq;
        let start = buf.len();
        buf.resize(start + len.div_ceil(4) * 4, 0);
        header.emit(&mut buf[start..start + header_len]);
        body.emit(&mut buf[start + header_len..start + len]);
        Ok(seq)
    }

    /// Reads replies to request `seq` until it is answered: an error message ends it (an
    /// error with no code is the ACK), so does DONE, so does the one reply of a non-dump.
    /// A reply that cannot be used is remembered and reading goes on to the end, so a dump
    /// is never left half-read on the socket (the next dump would get EBUSY).
    fn receive(
        &self,
        seq: u32,
        mut each: impl FnMut(u16, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut buf = vec![0; RECV_BUFFER];
        let mut failed = None;
        loop {
            let n = self.transport.recv(&mut buf, false)?;
            let datagram = match fitted(&buf, n) {
                Ok(d) => d,
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            };
            if let Some(end) = read_datagram(datagram, seq, &mut each, &mut failed) {
                return match failed {
                    Some(e) => Err(e),
                    None => end,
                };
            }
        }
    }
}

impl<F: GenericFamily, T: Transport> Socket<F, T> {
    /// The message type of the family's requests: asked of nlctrl (`CTRL_CMD_GETFAMILY`) on
    /// first use, then kept for the socket's life. A kernel without the family answers
    /// `ENOENT`.
    pub(crate) fn family_id(&self) -> io::Result<u16> {
        if let Some(id) = self.generic_id.get() {
            return Ok(id);
        }
        let query = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(F::NAME.to_owned())],
        });
        let FamilyId(id) = self
            .get(GENL_ID_CTRL, GENL_ID_CTRL, &query)?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("nlctrl sent no answer for family {:?}", F::NAME),
                )
            })?;
        self.generic_id.set(Some(id));
        Ok(id)
    }
}

/// The id in nlctrl's answer to `CTRL_CMD_GETFAMILY`. Read here rather than through
/// `GenlCtrl`'s parser, which refuses the whole answer at an attribute it does not know (one
/// a newer kernel adds).
struct FamilyId(u16);

impl Parseable<[u8]> for FamilyId {
    fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let attrs = buf
            .get(GENL_HDRLEN..)
            .ok_or_else(|| DecodeError::buffer_too_small(buf.len(), GENL_HDRLEN))?;
        for nla in NlasIterator::new(attrs) {
            let nla = nla?;
            if nla.kind() & NLA_TYPE_MASK == CTRL_ATTR_FAMILY_ID {
                return parse_u16(nla.value()).map(FamilyId);
            }
        }
        Err(DecodeError::from(
            "nlctrl answer without CTRL_ATTR_FAMILY_ID",
        ))
    }
}

/// Walks the messages of one datagram; `Some` once request `seq` is answered.
fn read_datagram(
    datagram: &[u8],
    seq: u32,
    each: &mut impl FnMut(u16, &[u8]) -> io::Result<()>,
    failed: &mut Option<io::Error>,
) -> Option<io::Result<()>> {
    for msg in messages(datagram) {
        let msg = match msg {
            Ok(msg) => msg,
            // The rest of the datagram cannot be split into messages.
            Err(e) => return Some(Err(decode(e))),
        };
        let (kind, multipart) = (msg.message_type(), msg.flags() & NLM_F_MULTIPART != 0);
        if msg.sequence_number() == seq {
            match kind {
                NLMSG_DONE => return Some(dump_end(msg.payload())),
                NLMSG_ERROR => return Some(kernel_answer(msg.payload())),
                _ => {
                    if let Err(e) = each(kind, msg.payload()) {
                        failed.get_or_insert(e);
                    }
                    if !multipart {
                        return Some(Ok(()));
                    }
                }
            }
        }
    }
    None
}

/// The messages of one datagram, in order; an error (then nothing) where the rest cannot be
/// split into messages.
pub(crate) fn messages(
    mut rest: &[u8],
) -> impl Iterator<Item = Result<NetlinkBuffer<&[u8]>, DecodeError>> {
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match NetlinkBuffer::new_checked(rest) {
            Ok(msg) => {
                // Messages are padded to four bytes; a bad length must not loop forever.
                let next = (msg.length() as usize).div_ceil(4) * 4;
                rest = rest.get(next.max(1)..).unwrap_or_default();
                Some(Ok(msg))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

/// The datagram `recv` with MSG_TRUNC reported as `n` bytes (its real length): one that did
/// not fit the buffer is an error, never a silently cut message.
fn fitted(buf: &[u8], n: usize) -> io::Result<&[u8]> {
    buf.get(..n).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "netlink reply of {n} bytes exceeds the {}-byte buffer",
                buf.len()
            ),
        )
    })
}

/// The kernel sends dumps in parts of at most 32 KiB; a targeted reply (one link with every
/// attribute) is a few KiB.
const RECV_BUFFER: usize = 32 * 1024;

/// The errno both NLMSG_ERROR and NLMSG_DONE begin with, as a negative `i32`.
fn leading_errno(payload: &[u8]) -> Option<i32> {
    let bytes = payload.get(..4)?.try_into().ok()?;
    Some(i32::from_ne_bytes(bytes))
}

fn refusal(status: i32) -> io::Result<()> {
    if status < 0 {
        Err(io::Error::from_raw_os_error(status.saturating_neg()))
    } else {
        Ok(())
    }
}

/// An NLMSG_ERROR payload: code 0 is the ACK, anything else the errno of a refusal.
fn kernel_answer(payload: &[u8]) -> io::Result<()> {
    let status = leading_errno(payload).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "netlink error message too short",
        )
    })?;
    refusal(status)
}

/// NLMSG_DONE carries the dump's status: a negative errno when the kernel gave up part way.
fn dump_end(payload: &[u8]) -> io::Result<()> {
    refusal(leading_errno(payload).unwrap_or(0))
}

pub(crate) fn decode(e: DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack_bytes(seq: u32, code: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&36u32.to_ne_bytes());
        v.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&code.to_ne_bytes());
        v.extend_from_slice(&[0; 16]);
        v
    }

    #[test]
    fn an_error_code_of_zero_is_the_ack_and_others_are_errnos() {
        let ok = ack_bytes(1, 0);
        assert!(kernel_answer(&ok[16..]).is_ok());
        let refused = ack_bytes(1, -nix::libc::EEXIST);
        let err = kernel_answer(&refused[16..]).err();
        assert_eq!(err.and_then(|e| e.raw_os_error()), Some(nix::libc::EEXIST));
    }

    use crate::fake::message;

    #[test]
    fn a_dump_reads_every_part_skips_other_requests_and_ends_at_done() {
        let mut datagram = message(16, NLM_F_MULTIPART, 7, b"one");
        datagram.extend(message(16, NLM_F_MULTIPART, 6, b"stale"));
        datagram.extend(message(16, NLM_F_MULTIPART, 7, b"two"));
        let mut seen = Vec::new();
        let mut failed = None;
        let mut each = |_: u16, p: &[u8]| {
            seen.push(p.to_vec());
            Ok(())
        };
        assert!(read_datagram(&datagram, 7, &mut each, &mut failed).is_none());
        let done = message(NLMSG_DONE, NLM_F_MULTIPART, 7, &0i32.to_ne_bytes());
        let end = read_datagram(&done, 7, &mut each, &mut failed);
        assert!(matches!(end, Some(Ok(()))));
        assert_eq!(seen, [b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn a_dump_the_kernel_abandons_is_an_error_not_a_short_list() {
        let done = message(
            NLMSG_DONE,
            NLM_F_MULTIPART,
            1,
            &(-nix::libc::EINTR).to_ne_bytes(),
        );
        let end = read_datagram(&done, 1, &mut |_, _| Ok(()), &mut None);
        assert_eq!(
            end.and_then(|r| r.err()).and_then(|e| e.raw_os_error()),
            Some(nix::libc::EINTR)
        );
    }

    #[test]
    fn a_part_that_cannot_be_used_is_reported_after_the_dump_is_read_to_its_end() {
        let mut datagram = message(16, NLM_F_MULTIPART, 1, b"bad");
        datagram.extend(message(16, NLM_F_MULTIPART, 1, b"good"));
        datagram.extend(message(NLMSG_DONE, NLM_F_MULTIPART, 1, &0i32.to_ne_bytes()));
        let mut calls = 0;
        let mut failed = None;
        let mut each = |_: u16, p: &[u8]| {
            calls += 1;
            if p.starts_with(b"bad") {
                Err(io::Error::other("bad part"))
            } else {
                Ok(())
            }
        };
        let end = read_datagram(&datagram, 1, &mut each, &mut failed);
        assert!(matches!(end, Some(Ok(()))));
        assert_eq!(calls, 2);
        assert_eq!(failed.map(|e| e.to_string()), Some("bad part".to_owned()));
    }

    #[test]
    fn garbage_in_a_datagram_is_an_error_not_a_panic_or_a_loop() {
        for junk in [&[0u8; 3][..], &[0xff; 40][..], &[0; 16][..]] {
            let end = read_datagram(junk, 1, &mut |_, _| Ok(()), &mut None);
            assert!(!matches!(end, Some(Ok(()))), "{junk:?}");
        }
    }

    #[test]
    fn a_truncated_error_payload_is_a_decode_error_not_a_panic() {
        let err = kernel_answer(&[1, 2, 3]).err();
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::InvalidData));
    }
}
