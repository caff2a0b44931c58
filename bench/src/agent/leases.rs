//! Peers' leases as other nodes write them: Go flanneld's key and value format with vxlan
//! backend data, attached to an etcd lease, written straight to etcd through etcd-client from a
//! thread inside the LAN namespace (where etcd listens) — in transactions of 100 puts for the
//! thousands a scale run needs, or one put at a time, timed until the node's kernel routes the
//! new subnet.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions, Txn, TxnOp};

use super::probe;

type Result<T> = std::result::Result<T, String>;

/// The network config of the runs: room for 65,000 /24 subnets.
pub const CONFIG: &str =
    r#"{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1}}"#;
/// Where Go flanneld keeps the leases.
pub const SUBNETS: &str = "/coreos.com/network/subnets/";

/// Puts per transaction (etcd refuses more than 128 by default).
const BATCH: usize = 100;

/// Peer `i`'s subnet: `10.x.y.0/24` from the 1,000th subnet on, far from the first 100 free
/// ones where the agent takes its own.
pub fn subnet(i: u32) -> Ipv4Addr {
    Ipv4Addr::from((10u32 << 24) | ((i + 1000) << 8))
}

/// Peer `i`'s key and Go-format value: PublicIP in 198.18.0.0/15 (the benchmarking range; no
/// packet is ever sent to it), a locally administered VTEP MAC.
pub fn lease(i: u32) -> (String, String) {
    let sn = subnet(i);
    let ip = Ipv4Addr::from((198u32 << 24) | (18 << 16) | (i & 0x1_ffff));
    let [_, a, b, c] = i.to_be_bytes();
    let value = format!(
        r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"0e:42:00:{a:02x}:{b:02x}:{c:02x}"}}}}"#
    );
    (format!("{SUBNETS}{sn}-24"), value)
}

/// Runs `f` with a client of the etcd at `endpoint`, on a current-thread runtime, in a thread
/// inside the LAN namespace at `lan`.
fn with_client<T: Send>(
    lan: &Path,
    endpoint: &str,
    f: impl AsyncFnOnce(&mut Client) -> Result<T> + Send,
) -> Result<T> {
    drivers::in_netns::block_on(lan, || async {
        let mut c = Client::connect([endpoint], None)
            .await
            .map_err(|e| format!("etcd {endpoint}: {e}"))?;
        f(&mut c).await
    })?
}

async fn granted(c: &mut Client) -> Result<i64> {
    Ok(c.lease_grant(24 * 3600, None)
        .await
        .map_err(|e| format!("lease grant: {e}"))?
        .id())
}

/// Writes peers `range` (their leases on one etcd lease of 24 h, as Go's TTL).
pub fn write(lan: &Path, endpoint: &str, range: std::ops::Range<u32>) -> Result<()> {
    with_client(lan, endpoint, async move |c: &mut Client| -> Result<()> {
        let id = granted(c).await?;
        let all: Vec<u32> = range.collect();
        for chunk in all.chunks(BATCH) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|&i| {
                    let (k, v) = lease(i);
                    TxnOp::put(k, v, Some(PutOptions::new().with_lease(id)))
                })
                .collect();
            c.txn(Txn::new().and_then(ops))
                .await
                .map_err(|e| format!("txn: {e}"))?;
        }
        Ok(())
    })
}

/// Puts peers `range` one at a time, as the nodes joining would, each once the previous one
/// is routed, with `gap` between; returns, per put, the microseconds from sending it to the
/// node's kernel routing the subnet (polled through netlink in the node's namespace at
/// `node`). A route not there within 10 s is an error.
pub fn timed_puts(
    lan: &Path,
    endpoint: &str,
    node: &Path,
    range: std::ops::Range<u32>,
    gap: Duration,
) -> Result<Vec<u64>> {
    let sock_ns = node.to_owned();
    with_client(
        lan,
        endpoint,
        async move |c: &mut Client| -> Result<Vec<u64>> {
            let id = granted(c).await?;
            let sock = probe::route_socket(&sock_ns)?;
            let mut out = Vec::new();
            for i in range {
                let (k, v) = lease(i);
                let dst = subnet(i);
                let probe_ip = Ipv4Addr::from(u32::from(dst) + 1);
                let t = Instant::now();
                c.put(k, v, Some(PutOptions::new().with_lease(id)))
                    .await
                    .map_err(|e| format!("put: {e}"))?;
                while !probe::routed(&sock, probe_ip) {
                    if t.elapsed() > Duration::from_secs(10) {
                        return Err(format!("{dst}/24 not routed 10 s after its lease was put"));
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                out.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                std::thread::sleep(gap);
            }
            Ok(out)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_gos_format_and_distinct() {
        let (k, v) = lease(0);
        assert_eq!(k, "/coreos.com/network/subnets/10.3.232.0-24");
        assert_eq!(
            v,
            r#"{"PublicIP":"198.18.0.0","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:42:00:00:00:00"}}"#
        );
        let (k2, v2) = lease(5_299);
        assert_eq!(k2, "/coreos.com/network/subnets/10.24.155.0-24");
        assert!(v2.contains(r#""PublicIP":"198.18.20.179""#), "{v2}");
        assert!(v2.contains(r#""VtepMAC":"0e:42:00:00:14:b3""#), "{v2}");
    }
}
