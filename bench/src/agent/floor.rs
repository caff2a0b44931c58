//! The floor of the agent's start: the same neighbour, FDB and route entries the vxlan backend
//! programs for `n` peers, written by one `ip -batch` (neighbours and routes) and one
//! `bridge -batch` (FDB entries) into a fresh node namespace holding the same `flannel.1`
//! device. Only the two batch runs are timed; the device is made before the clock starts.

use std::time::Instant;

use super::leases;
use rig::netns::TestNetns;

type Result<T> = std::result::Result<T, String>;

fn run(ns: &TestNetns, program: &str, args: &[&str]) -> Result<()> {
    let out = ns
        .command(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The batch files' text for peers `0..n`: `ip` (neighbour, route per peer) and `bridge` (FDB).
pub fn batches(n: u32) -> (String, String) {
    let (mut ip, mut bridge) = (String::new(), String::new());
    for i in 0..n {
        let (_, value) = leases::lease(i);
        let mac = value
            .split("\"VtepMAC\":\"")
            .nth(1)
            .and_then(|r| r.get(..17))
            .unwrap_or_default();
        let public = value
            .split("\"PublicIP\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default();
        let gw = leases::subnet(i);
        ip += &format!("neigh replace {gw} lladdr {mac} dev flannel.1 nud permanent\n");
        bridge += &format!("fdb replace {mac} dev flannel.1 dst {public} self permanent\n");
        ip += &format!("route replace {gw}/24 via {gw} dev flannel.1 onlink\n");
    }
    (ip, bridge)
}

/// Makes `flannel.1` in `ns` (whose `eth0` has `local`) as flanneld makes it, then times the
/// batches for `n` peers; microseconds.
pub fn measure(ns: &TestNetns, dir: &std::path::Path, local: &str, n: u32) -> Result<u64> {
    measure_batches(ns, dir, local, batches(n))
}

/// [`measure`] with the batch files' text given (`ip`, `bridge`).
pub fn measure_batches(
    ns: &TestNetns,
    dir: &std::path::Path,
    local: &str,
    (ip, bridge): (String, String),
) -> Result<u64> {
    run(
        ns,
        "ip",
        &[
            "link",
            "add",
            "flannel.1",
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            local,
            "dev",
            "eth0",
            "nolearning",
        ],
    )?;
    run(
        ns,
        "ip",
        &["addr", "add", "10.0.1.0/32", "dev", "flannel.1"],
    )?;
    run(ns, "ip", &["link", "set", "flannel.1", "up"])?;
    let (ip_file, bridge_file) = (dir.join("floor-ip.batch"), dir.join("floor-bridge.batch"));
    std::fs::write(&ip_file, ip).map_err(|e| e.to_string())?;
    std::fs::write(&bridge_file, bridge).map_err(|e| e.to_string())?;
    let (ip_file, bridge_file) = (
        ip_file.display().to_string(),
        bridge_file.display().to_string(),
    );
    let t = Instant::now();
    run(ns, "bridge", &["-batch", &bridge_file])?;
    run(ns, "ip", &["-batch", &ip_file])?;
    Ok(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_lines_per_peer() {
        let (ip, bridge) = batches(2);
        assert_eq!(
            ip,
            "neigh replace 10.3.232.0 lladdr 0e:42:00:00:00:00 dev flannel.1 nud permanent\n\
             route replace 10.3.232.0/24 via 10.3.232.0 dev flannel.1 onlink\n\
             neigh replace 10.3.233.0 lladdr 0e:42:00:00:00:01 dev flannel.1 nud permanent\n\
             route replace 10.3.233.0/24 via 10.3.233.0 dev flannel.1 onlink\n"
        );
        assert_eq!(
            bridge.lines().nth(1),
            Some("fdb replace 0e:42:00:00:00:01 dev flannel.1 dst 198.18.0.1 self permanent")
        );
    }
}
