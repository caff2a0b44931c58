//! A transport that records what is sent and answers from a script, for unit tests of code
//! built on the typed requests (compiled for this crate's tests, and for other crates with
//! the `fake` feature).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;

use netlink_packet_core::{NLM_F_MULTIPART, NLMSG_DONE, NLMSG_ERROR};

use crate::socket::messages;
use crate::transport::Transport;

/// One scripted answer to the next request.
#[derive(Debug, Clone)]
pub enum FakeReply {
    /// The ACK (an error message with code 0).
    Ack,
    /// A refusal with this errno.
    Errno(i32),
    /// One message of type `kind` with `payload` (a targeted query's answer).
    Message {
        /// The reply's message type.
        kind: u16,
        /// Its body.
        payload: Vec<u8>,
    },
    /// A dump: one multipart message per payload, then DONE.
    Dump {
        /// The parts' message type.
        kind: u16,
        /// Their bodies.
        payloads: Vec<Vec<u8>>,
    },
}

/// One message that was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Its message type.
    pub kind: u16,
    /// Its flags.
    pub flags: u16,
    /// Its body.
    pub payload: Vec<u8>,
}

/// Records every datagram sent and answers each request with the next scripted reply (an
/// unscripted one fails the request, so a test sees an unexpected call).
#[derive(Debug, Default)]
pub struct FakeTransport {
    sent: RefCell<Vec<Sent>>,
    last_seq: RefCell<u32>,
    script: RefCell<VecDeque<FakeReply>>,
}

impl FakeTransport {
    /// A transport with no scripted replies.
    pub fn new() -> FakeTransport {
        FakeTransport::default()
    }

    /// Queues the answer to the next request.
    pub fn reply(&self, reply: FakeReply) -> &Self {
        self.script.borrow_mut().push_back(reply);
        self
    }

    /// Every message sent so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.sent.borrow().clone()
    }
}

impl FakeReply {
    /// nlctrl's answer to `CTRL_CMD_GETFAMILY` for `name`: the family `id` (a u16, padded, as
    /// the kernel sends it), with an attribute a parser may not know (newer kernels add some).
    pub fn generic_family(name: &str, id: u16) -> FakeReply {
        use netlink_packet_core::{DefaultNla, Emitable};
        use netlink_packet_generic::constants::{
            CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME, GENL_ID_CTRL,
        };
        let mut name = name.as_bytes().to_vec();
        name.push(0);
        let attrs = [
            DefaultNla::new(CTRL_ATTR_FAMILY_NAME, name),
            DefaultNla::new(99, vec![8, 0, 1, 0, 7, 0, 0, 0]),
            DefaultNla::new(CTRL_ATTR_FAMILY_ID, id.to_ne_bytes().to_vec()),
        ];
        let mut payload = vec![1, 2, 0, 0];
        let start = payload.len();
        payload.resize(start + attrs.as_slice().buffer_len(), 0);
        attrs.as_slice().emit(&mut payload[start..]);
        FakeReply::Message {
            kind: GENL_ID_CTRL,
            payload,
        }
    }
}

/// One netlink message (header and body, padded to four bytes) as the kernel would send it.
pub(crate) fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut v = Vec::with_capacity(len.div_ceil(4) * 4);
    v.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(payload);
    v.resize(len.div_ceil(4) * 4, 0);
    v
}

fn error_message(seq: u32, errno: i32) -> Vec<u8> {
    // The error code, then the request's header (left zero: nothing reads it).
    let mut payload = errno.saturating_neg().to_ne_bytes().to_vec();
    payload.extend_from_slice(&[0; 16]);
    message(NLMSG_ERROR, 0, seq, &payload)
}

impl Transport for FakeTransport {
    fn send(&self, datagram: &[u8]) -> io::Result<()> {
        for msg in messages(datagram) {
            let msg = msg.map_err(|e| io::Error::other(e.to_string()))?;
            *self.last_seq.borrow_mut() = msg.sequence_number();
            self.sent.borrow_mut().push(Sent {
                kind: msg.message_type(),
                flags: msg.flags(),
                payload: msg.payload().to_vec(),
            });
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8], nonblocking: bool) -> io::Result<usize> {
        let seq = *self.last_seq.borrow();
        let Some(reply) = self.script.borrow_mut().pop_front() else {
            return Err(if nonblocking {
                io::ErrorKind::WouldBlock.into()
            } else {
                io::Error::other("fake transport: no reply scripted for this request")
            });
        };
        let datagram = match reply {
            FakeReply::Ack => error_message(seq, 0),
            FakeReply::Errno(errno) => error_message(seq, errno),
            FakeReply::Message { kind, payload } => message(kind, 0, seq, &payload),
            FakeReply::Dump { kind, payloads } => {
                let mut d: Vec<u8> = payloads
                    .iter()
                    .flat_map(|p| message(kind, NLM_F_MULTIPART, seq, p))
                    .collect();
                d.extend(message(
                    NLMSG_DONE,
                    NLM_F_MULTIPART,
                    seq,
                    &0i32.to_ne_bytes(),
                ));
                d
            }
        };
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(datagram.len())
    }
}
