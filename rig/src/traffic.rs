//! Tiny TCP and UDP servers and clients whose sockets live in a test namespace: a socket
//! belongs to the namespace it was created in, so each is created inside `Netns::run` and
//! then used from an ordinary thread. No external tools, no traffic outside our namespaces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use node_kernel::Netns;

use crate::netns::TestNetns;

const TIMEOUT: Duration = Duration::from_secs(2);

fn inside<T>(ns: &TestNetns, f: impl FnOnce() -> T) -> T {
    Netns::open(ns.path()).unwrap().run(f).unwrap()
}

/// A server answering every TCP connection (or UDP datagram) with `reply` until dropped.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Listens on `[::]:port` (IPv4 and IPv6) inside `ns`.
pub fn tcp_server(ns: &TestNetns, port: u16, reply: &str) -> Server {
    let listener = inside(ns, || TcpListener::bind(("::", port))).unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, reply) = (stop.clone(), reply.to_owned());
    let handle = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.write_all(reply.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    Server {
        stop,
        handle: Some(handle),
    }
}

/// Listens on `[::]:port` inside `ns` and answers every TCP connection with the address it
/// came from (IPv4 without the `::ffff:` prefix): an "internet" host showing whether traffic
/// reached it masqueraded.
pub fn tcp_peer_server(ns: &TestNetns, port: u16) -> Server {
    let listener = inside(ns, || TcpListener::bind(("::", port))).unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, from)) => {
                    let ip = match from.ip() {
                        std::net::IpAddr::V6(v6) => v6
                            .to_ipv4_mapped()
                            .map_or(v6.to_string(), |v4| v4.to_string()),
                        v4 => v4.to_string(),
                    };
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.write_all(ip.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    Server {
        stop,
        handle: Some(handle),
    }
}

/// Answers every datagram on `[::]:port` inside `ns` with `reply`.
pub fn udp_server(ns: &TestNetns, port: u16, reply: &str) -> Server {
    let socket = inside(ns, || UdpSocket::bind(("::", port))).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, reply) = (stop.clone(), reply.to_owned());
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !flag.load(Ordering::Relaxed) {
            if let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(reply.as_bytes(), from);
            }
        }
    });
    Server {
        stop,
        handle: Some(handle),
    }
}

/// Connects from inside `ns` and returns what the server said, or `None`.
pub fn tcp_get(ns: &TestNetns, to: SocketAddr) -> Option<String> {
    tcp_get_timeout(ns, to, TIMEOUT)
}

pub fn tcp_get_timeout(ns: &TestNetns, to: SocketAddr, timeout: Duration) -> Option<String> {
    let mut conn = inside(ns, || TcpStream::connect_timeout(&to, timeout)).ok()?;
    conn.set_read_timeout(Some(timeout)).ok()?;
    let mut out = String::new();
    conn.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Sends one datagram from `from` (a local address, port 0 for any) inside `ns` and returns
/// the reply, or `None`.
pub fn udp_get(ns: &TestNetns, from: SocketAddr, to: SocketAddr) -> Option<String> {
    let socket = inside(ns, || UdpSocket::bind(from)).ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    socket.send_to(b"ping", to).ok()?;
    let mut buf = [0u8; 512];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}
