//! `/healthz` (200 while the agent runs) and `/readyz` (200 once subnet.env is written, 503
//! before) on `--healthz-ip:--healthz-port`, as Go flanneld serves them, and systemd's
//! `sd_notify(READY=1)`; with `--metrics-port`, the same small server answers `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::log::warning;
use crate::metrics::{self, Metrics};

/// Whether subnet.env has been written.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the agent ready.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether it is.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The status line and body for a request line's path.
pub fn respond(path: &str, ready: bool) -> (&'static str, &'static str) {
    match path.split('?').next().unwrap_or("") {
        "/healthz" => ("200 OK", "flanneld is running\n"),
        "/readyz" if ready => ("200 OK", "ok\n"),
        "/readyz" => ("503 Service Unavailable", "subnet.env not written yet\n"),
        _ => ("404 Not Found", "404 page not found\n"),
    }
}

async fn serve_one(mut conn: TcpStream, ready: Readiness, metrics: Option<Metrics>) {
    let deadline = tokio::time::Instant::now() + CLIENT_DEADLINE;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // Read the request head (bounded in size and in time, whatever the client's pace),
    // answer from its first line, close.
    let read_head = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
            match conn.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
    };
    if tokio::time::timeout_at(deadline, read_head).await.is_err() {
        return;
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    let (status, kind, body) = match (&metrics, path.split('?').next()) {
        (Some(m), Some("/metrics")) => ("200 OK", metrics::CONTENT_TYPE, m.encode()),
        _ => {
            let (status, body) = respond(path, ready.get());
            (status, "text/plain; charset=utf-8", body.to_owned())
        }
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A client that does not read its answer is dropped at the deadline.
    let _ = tokio::time::timeout_at(deadline, async {
        let _ = conn.write_all(reply.as_bytes()).await;
        let _ = conn.shutdown().await;
    })
    .await;
}

/// How long one client may take, request and answer together: probes answer in
/// microseconds.
const CLIENT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Clients served at once; more are closed at once (a scraper and two probes need three).
const MAX_CLIENTS: usize = 32;

/// Binds the health server (errors are the caller's: Go exits when it cannot listen).
pub async fn bind(ip: &str, port: u16) -> std::io::Result<TcpListener> {
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    TcpListener::bind(format!("{host}:{port}")).await
}

/// Serves requests until the task is dropped; `/metrics` too when `metrics` is given.
pub async fn serve(listener: TcpListener, ready: Readiness, metrics: Option<Metrics>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue; // dropped: closed
                };
                let (ready, metrics) = (ready.clone(), metrics.clone());
                tokio::spawn(async move {
                    serve_one(conn, ready, metrics).await;
                    drop(slot);
                });
            }
            Err(e) => {
                warning!("healthz accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Sends `state` to systemd when `NOTIFY_SOCKET` is set (a path, or `@name` for an abstract
/// socket); false when not under systemd.
pub fn sd_notify(notify_socket: Option<&str>, state: &str) -> std::io::Result<bool> {
    use std::os::unix::net::UnixDatagram;
    let Some(path) = notify_socket.filter(|p| !p.is_empty()) else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), path)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(respond("/healthz", false).0, "200 OK");
        assert_eq!(respond("/readyz", false).0, "503 Service Unavailable");
        assert_eq!(respond("/readyz?verbose", true).0, "200 OK");
        assert_eq!(respond("/", true).0, "404 Not Found");
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn metrics_served_only_where_given() {
        let m = Metrics::new();
        m.etcd_failover();
        let with = bind("127.0.0.1", 0).await.unwrap();
        let without = bind("127.0.0.1", 0).await.unwrap();
        let (a, b) = (with.local_addr().unwrap(), without.local_addr().unwrap());
        tokio::spawn(serve(with, Readiness::default(), Some(m)));
        tokio::spawn(serve(without, Readiness::default(), None));
        let got = get(a, "/metrics").await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(
            got.contains("Content-Type: application/openmetrics-text"),
            "{got}"
        );
        assert!(
            got.contains("\nflanneld_etcd_endpoint_failovers_total 1\n"),
            "{got}"
        );
        assert!(got.ends_with("# EOF\n"), "{got}");
        assert!(get(a, "/healthz").await.starts_with("HTTP/1.1 200 OK"));
        assert!(get(b, "/metrics").await.starts_with("HTTP/1.1 404"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_trickles_its_request_is_closed_at_the_deadline() {
        // Before: each read had 5 s, so a byte every 4 s held the connection (and its task)
        // for as long as the client liked.
        use tokio::io::AsyncWriteExt;
        let l = bind("127.0.0.1", 0).await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(serve(l, Readiness::default(), None));
        let mut c = TcpStream::connect(a).await.unwrap();
        let start = tokio::time::Instant::now();
        let mut closed_after = None;
        for b in b"GET /healthz HTTP/1.1" {
            if c.write_all(&[*b]).await.is_err() {
                closed_after = Some(start.elapsed());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        }
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest).await;
        let closed_after = closed_after.unwrap_or(start.elapsed());
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
        assert!(
            closed_after <= std::time::Duration::from_secs(13),
            "{closed_after:?}"
        );
    }

    #[test]
    fn notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        assert!(sd_notify(Some(path.to_str().unwrap()), "READY=1").unwrap());
        let mut buf = [0u8; 32];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(!sd_notify(None, "READY=1").unwrap());
    }
}
