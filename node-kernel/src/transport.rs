//! Where datagrams go: the kernel, or (in tests) a recording fake.
//!
//! The seam sits at the datagram, below the typed requests: everything above it (sequence
//! numbers, message layout, reply parsing, dump draining) is the code that runs against the
//! kernel, exercised unchanged by unit tests.

use std::io;

use netlink_sys::{Socket, SocketAddr};

/// Sends and receives whole netlink datagrams.
pub trait Transport {
    /// Sends one datagram.
    fn send(&self, datagram: &[u8]) -> io::Result<()>;
    /// Receives one datagram into `buf`; returns its real length (`MSG_TRUNC` semantics: more
    /// than `buf.len()` means it did not fit). `nonblocking`: `WouldBlock` when none waits.
    fn recv(&self, buf: &mut [u8], nonblocking: bool) -> io::Result<usize>;
}

/// A netlink socket of one protocol, in the namespace it was created in.
#[derive(Debug)]
pub struct KernelTransport(Socket);

impl KernelTransport {
    /// A socket of `protocol` (`NETLINK_ROUTE`, `NETLINK_NETFILTER`) in the calling thread's
    /// namespace, connected to the kernel.
    pub fn open(protocol: isize) -> io::Result<KernelTransport> {
        let socket = Socket::new(protocol)?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(KernelTransport(socket))
    }
}

impl Transport for KernelTransport {
    fn send(&self, datagram: &[u8]) -> io::Result<()> {
        self.0.send(datagram, 0).map(drop)
    }

    fn recv(&self, mut buf: &mut [u8], nonblocking: bool) -> io::Result<usize> {
        let mut flags = nix::libc::MSG_TRUNC;
        if nonblocking {
            flags |= nix::libc::MSG_DONTWAIT;
        }
        self.0.recv(&mut buf, flags)
    }
}
