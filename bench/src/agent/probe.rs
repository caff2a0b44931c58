//! What the agent benchmark reads while flanneld runs: its `/metrics` (fetched from inside the
//! node's namespace, where it listens on loopback), the node's routes through netlink, and the
//! process's memory and CPU from `/proc`. Nothing here runs in the caller's own namespace:
//! each read enters the node's on a thread of its own, or uses a socket created there.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::Duration;

use node_kernel::{Netns, RouteSocket, route};

type Result<T> = std::result::Result<T, String>;

/// `GET path` from `127.0.0.1:port` inside the namespace at `ns`: the body of a 200 answer.
pub fn http_get(ns: &Path, port: u16, path: &str) -> Result<String> {
    drivers::in_netns::run(ns, || -> Result<String> {
        let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut reply = String::new();
        c.read_to_string(&mut reply).map_err(|e| e.to_string())?;
        let (head, body) = reply.split_once("\r\n\r\n").ok_or("no HTTP head")?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("GET {path}: {}", head.lines().next().unwrap_or("")));
        }
        Ok(body.to_owned())
    })?
}

/// A sample's value in a Prometheus text exposition: the line starting with `series` (name
/// and labels exactly as printed) followed by a space.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A histogram's cumulative buckets `(upper bound, count)` in order, `+Inf` last.
pub fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The `q` quantile of the observations counted between two readings of the same cumulative
/// buckets (`before` may be empty), interpolated linearly inside its bucket as Prometheus'
/// `histogram_quantile` does; `None` without observations.
pub fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, n)| {
            let old = before
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, c)| *c);
            (le, n - old)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, n) in &delta {
        if n >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let width = n - prev.1;
            let frac = if width > 0.0 {
                (rank - prev.1) / width
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, n);
    }
    None
}

/// The node's routes into `10.0.0.0/8` with a gateway (the peers' routes), counted through a
/// netlink dump inside the namespace at `ns`.
pub fn peer_routes(ns: &Path) -> Result<usize> {
    let sock = route_socket(ns)?;
    let routes = sock.routes(true).map_err(|e| e.to_string())?;
    Ok(routes
        .iter()
        .filter(|m| route::in_main_table(m) && route::gateway(m).is_some())
        .filter(|m| {
            route::destination(m)
                .is_some_and(|n| matches!(n.ip(), IpAddr::V4(a) if a.octets()[0] == 10))
        })
        .count())
}

/// A route socket living in the namespace at `ns`.
pub fn route_socket(ns: &Path) -> Result<RouteSocket> {
    let ns = Netns::open(ns).map_err(|e| e.to_string())?;
    RouteSocket::in_netns(&ns).map_err(|e| e.to_string())
}

/// Whether the kernel routes `dst` through a gateway (a peer's route is in place).
pub fn routed(sock: &RouteSocket, dst: Ipv4Addr) -> bool {
    matches!(sock.route_to(IpAddr::V4(dst)), Ok(Some(m)) if route::gateway(&m).is_some())
}

/// `VmRSS` and `VmHWM` of process `pid`, in KiB.
pub fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The CPU time process `pid` has used (user + system), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("bad stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| -> Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("bad /proc/{pid}/stat"))
    };
    Ok(n(11)? + n(12)?)
}

/// Clock ticks per second (`getconf CLK_TCK`; Linux's 100 if that fails).
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE x histogram\n\
        flanneld_peers_programmed{backend=\"vxlan\"} 5000\n\
        h_bucket{le=\"0.001\"} 10\n\
        h_bucket{le=\"0.002\"} 90\n\
        h_bucket{le=\"0.005\"} 100\n\
        h_bucket{le=\"+Inf\"} 100\n";

    #[test]
    fn reads_samples_and_quantiles() {
        assert_eq!(
            metric(TEXT, "flanneld_peers_programmed{backend=\"vxlan\"}"),
            Some(5000.0)
        );
        assert_eq!(metric(TEXT, "flanneld_peers_programmed"), None);
        let b = buckets(TEXT, "h");
        assert_eq!(b.len(), 4);
        // 50th of 100: the 40th of the 80 in (1 ms, 2 ms].
        let p50 = quantile(&[], &b, 0.5).unwrap();
        assert!((p50 - 0.0015).abs() < 1e-9, "{p50}");
        let p99 = quantile(&[], &b, 0.99).unwrap();
        assert!((p99 - 0.0047).abs() < 1e-9, "{p99}");
        // Only what was observed between two readings counts.
        let before = vec![
            (0.001, 10.0),
            (0.002, 10.0),
            (0.005, 10.0),
            (f64::INFINITY, 10.0),
        ];
        let p = quantile(&before, &b, 0.5).unwrap();
        assert!(p > 0.001 && p < 0.002, "{p}");
        assert_eq!(quantile(&b, &b, 0.5), None);
    }

    #[test]
    fn reads_this_process() {
        let (rss, hwm) = memory_kib(std::process::id()).unwrap();
        assert!(rss > 0 && hwm >= rss);
        assert!(cpu_ticks(std::process::id()).is_ok());
        assert!(ticks_per_second() > 0);
    }
}
