//! The single-plugin benchmarks (`scripts/bench-{bridge,portmap,host-local,flannel}.sh`):
//! ours against Debian's Go plugins where Debian has one, calls alternating between the two
//! so that machine noise hits both alike.

use std::path::Path;

use serde_json::json;

use super::stats::{Samples, ms, ratio, thousands};
use super::{Bench, Call, Impl, k8s_args, portmap_conf, upstream_version};

type Result<T> = std::result::Result<T, String>;

/// bridge + host-local ADD and DEL, ours vs Go, for fresh containers, each implementation on
/// its own bridge and subnet; as flannel's delegate (no masquerade: flanneld masquerades) and
/// with `ipMasq` (nftables for us, iptables for Go).
pub fn bridge(b: &Bench, iterations: u32) -> Result<()> {
    let go = super::go_version();
    println!(
        "bridge + host-local, median of {iterations} fresh containers each, ours vs Go {} in one run",
        upstream_version(&go)
    );
    println!("| config | cmd | ours | Go | Go/ours |");
    println!("|--------|-----|------|----|---------|");
    let impls = [Impl::Ours, Impl::Go];
    for masq in [false, true] {
        let conf = |imp: Impl| {
            let (bridge, net) = if imp == Impl::Go {
                ("cni1", "10.11")
            } else {
                ("cni0", "10.10")
            };
            json!({
                "cniVersion": "0.4.0", "name": "bench", "type": "bridge", "bridge": bridge,
                "isGateway": true, "isDefaultGateway": true, "hairpinMode": true, "mtu": 1450,
                "ipMasq": masq,
                "ipam": {"type": "host-local", "subnet": format!("{net}.0.0/16"),
                         "dataDir": b.path(&format!("ipam-{}", imp.name()))},
            })
            .to_string()
        };
        let confs = impls.map(conf);
        let (mut add, mut del) = (
            [Samples::new(), Samples::new()],
            [Samples::new(), Samples::new()],
        );
        for i in 0..iterations {
            let ids = impls.map(|imp| format!("{}-{masq}-{i}", imp.name()));
            let mut ns = Vec::new();
            for (k, imp) in impls.iter().enumerate() {
                ns.push(b.netns(&ids[k]));
                let call = Call::new(b.dir(*imp)?, "bridge", "ADD")
                    .container(&ids[k], &b.netns_path(&ids[k]));
                add[k].push(call.ok(&confs[k])?.us);
            }
            for (k, imp) in impls.iter().enumerate() {
                let call = Call::new(b.dir(*imp)?, "bridge", "DEL")
                    .container(&ids[k], &b.netns_path(&ids[k]));
                del[k].push(call.ok(&confs[k])?.us);
            }
        }
        let label = if masq { "+ ipMasq" } else { "flannel delegate" };
        for (cmd, s) in [("ADD", &add), ("DEL", &del)] {
            let (o, g) = (s[0].median(), s[1].median());
            println!(
                "| {label:<16} | {cmd} | {:>6} ms | {:>6} ms | {:>5} |",
                ms(o),
                ms(g),
                ratio(g, o, 1)
            );
        }
    }
    Ok(())
}

/// portmap ADD and DEL with one TCP mapping, ours (nftables) vs Go (iptables), alternating,
/// on pods set up by our bridge (untimed).
pub fn portmap(b: &Bench, iterations: u32) -> Result<()> {
    let bridge = json!({
        "cniVersion": "0.4.0", "name": "bench", "type": "bridge", "isGateway": true,
        "isDefaultGateway": true, "hairpinMode": true,
        "ipam": {"type": "host-local", "subnet": "10.12.0.0/16", "dataDir": b.path("ipam")},
    })
    .to_string();
    let ours = b.dir(Impl::Ours)?;
    let (mut add, mut del) = (
        [Samples::new(), Samples::new()],
        [Samples::new(), Samples::new()],
    );
    for i in 0..iterations {
        for (k, imp) in [Impl::Ours, Impl::Go].into_iter().enumerate() {
            let id = format!("{}-{i}", imp.name());
            let netns = b.netns_path(&id);
            let _ns = b.netns(&id);
            let br = Call::new(ours, "bridge", "ADD")
                .container(&id, &netns)
                .ok(&bridge)?;
            let port = imp.port(i.saturating_mul(2).saturating_add(20_000), 1)?;
            let pm = portmap_conf("0.4.0", "bench", &b.path("pm"), port, br.json()?).to_string();
            let call = |cmd| {
                Call::new(b.dir(imp)?, "portmap", cmd)
                    .container(&id, &netns)
                    .ok(&pm)
            };
            add[k].push(call("ADD")?.us);
            del[k].push(call("DEL")?.us);
            Call::new(ours, "bridge", "DEL")
                .container(&id, &netns)
                .ok(&bridge)?;
        }
    }
    println!(
        "portmap, one TCP mapping, median of {iterations} calls each, ours (nftables) vs Go {} (iptables) in one run",
        upstream_version(&super::go_version())
    );
    println!("| cmd | ours | Go | Go/ours |");
    println!("|-----|------|----|---------|");
    for (cmd, s) in [("ADD", &add), ("DEL", &del)] {
        let (o, g) = (s[0].median(), s[1].median());
        println!(
            "| {cmd} | {:>6} ms | {:>6} ms | {:>5} |",
            ms(o),
            ms(g),
            ratio(g, o, 1)
        );
    }
    Ok(())
}

/// host-local ADD and DEL, ours vs Go, on a network already holding `leases` leases and on an
/// empty one. Each setup has its own dataDir on disk (like /var/lib/cni/networks), pre-filled
/// in the shared on-disk format.
pub fn host_local(b: &Bench, leases: u32, iterations: u32) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix(&rig::reaper::owned_prefix("bench"))
        .tempdir_in("/var/tmp")
        .map_err(|e| format!("/var/tmp: {e}"))?;
    println!(
        "host-local: median of {iterations} calls each, dataDir on {}, {leases} leases in the full network",
        fs_type(dir.path())
    );
    host_local_in(b, dir.path(), leases, iterations)
}

/// The host-local table alone, as the side-by-side benchmark prints it.
pub fn host_local_table(b: &Bench, leases: u32, iterations: u32) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix(&rig::reaper::owned_prefix("bench"))
        .tempdir_in("/var/tmp")
        .map_err(|e| format!("/var/tmp: {e}"))?;
    host_local_in(b, dir.path(), leases, iterations)
}

fn fs_type(dir: &Path) -> String {
    std::process::Command::new("df")
        .arg("--output=fstype")
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

/// Writes `count` leases of other containers into `data_dir`'s network "bench".
fn prefill(data_dir: &Path, count: u32) -> Result<()> {
    let net = data_dir.join("bench");
    let err = |e: std::io::Error| format!("{}: {e}", net.display());
    std::fs::create_dir_all(&net).map_err(err)?;
    let addr = |i: u32| format!("10.200.{}.{}", 2 + i / 250, 1 + i % 250);
    for i in 0..count {
        std::fs::write(net.join(addr(i)), format!("pre-{i}\r\neth0")).map_err(err)?;
    }
    if let Some(last) = count.checked_sub(1) {
        std::fs::write(net.join("last_reserved_ip.0"), addr(last)).map_err(err)?;
    }
    Ok(())
}

fn host_local_in(b: &Bench, data: &Path, leases: u32, iterations: u32) -> Result<()> {
    if leases > 250 * 250 {
        return Err(format!("{leases} leases do not fit in 10.200.0.0/16"));
    }
    // ours-0, ours-N, go-0, go-N
    let setups = [
        (Impl::Ours, 0),
        (Impl::Ours, leases),
        (Impl::Go, 0),
        (Impl::Go, leases),
    ];
    let mut confs = Vec::new();
    for (k, (imp, n)) in setups.iter().enumerate() {
        let dir = data.join(format!("{}-{k}", imp.name()));
        prefill(&dir, *n)?;
        confs.push(
            json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                   "ipam": {"type": "host-local", "subnet": "10.200.0.0/16", "dataDir": dir.display().to_string()}})
            .to_string(),
        );
    }
    let call = |k: usize, cmd: &str, id: &str| -> Result<u64> {
        let (imp, _) = setups[k];
        let go = b.dir(Impl::Go)?.display().to_string();
        let c = Call::new(b.dir(imp)?, "host-local", cmd)
            .container(id, "/var/run/netns/bench")
            .cni_path(&go);
        Ok(c.ok(&confs[k])?.us)
    };
    // Warm-up: our first call indexes the leases "another plugin" wrote.
    for k in 0..setups.len() {
        call(k, "ADD", "warm")?;
        call(k, "DEL", "warm")?;
    }
    // One iteration = ADD then DEL of a fresh container in each setup, in a random order, so
    // that the I/O one of them causes (Go reads every lease on each call) does not always
    // land on the same neighbour.
    let mut add: [Samples; 4] = Default::default();
    let mut del: [Samples; 4] = Default::default();
    let mut rng = Rng::seeded();
    for i in 0..iterations {
        let mut order = [0, 1, 2, 3];
        rng.shuffle(&mut order);
        for k in order {
            let id = format!("c{i}");
            add[k].push(call(k, "ADD", &id)?);
            del[k].push(call(k, "DEL", &id)?);
        }
    }
    println!(
        "| host-local, {} leases held | ours, empty | ours, full | Go, empty | Go, full | Go/ours (full) | ours full/empty |",
        thousands(u64::from(leases))
    );
    println!("|---|---|---|---|---|---|---|");
    for (cmd, s) in [("ADD", &add), ("DEL", &del)] {
        let m = s.each_ref().map(Samples::median);
        println!(
            "| {cmd} | {} ms | {} ms | {} ms | {} ms | {} | {} |",
            ms(m[0]),
            ms(m[1]),
            ms(m[2]),
            ms(m[3]),
            ratio(m[3], m[1], 1),
            ratio(m[1], m[0], 2)
        );
    }
    Ok(())
}

/// The kube-flannel chain (flannel → bridge → host-local, then portmap with one mapping): ADD
/// and DEL of the whole chain per pod, each pod in its own namespace. Debian ships no Go
/// flannel, so there is nothing to compare it with here.
pub fn flannel(b: &Bench, iterations: u32) -> Result<()> {
    let env = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";
    std::fs::write(b.work.join("subnet.env"), env).map_err(|e| format!("subnet.env: {e}"))?;
    let flannel = json!({
        "cniVersion": "0.3.1", "name": "cbr0", "type": "flannel",
        "delegate": {"hairpinMode": true, "isDefaultGateway": true},
        "subnetFile": b.path("subnet.env"), "dataDir": b.path("flannel"),
        "ipam": {"dataDir": b.path("ipam")},
    })
    .to_string();
    let dir = b.dir(Impl::Ours)?;
    let (mut add, mut del) = (Samples::new(), Samples::new());
    for i in 0..iterations {
        let id = format!("pod{i}");
        let netns = b.netns_path(&id);
        let _ns = b.netns(&id);
        let args = k8s_args("default", &id);
        let call = |plugin, cmd| {
            Call::new(dir, plugin, cmd)
                .container(&id, &netns)
                .args(&args)
        };
        let port =
            u16::try_from(30_000 + u64::from(i)).map_err(|_| "too many pods for the port range")?;
        let fl = call("flannel", "ADD").ok(&flannel)?;
        let pm = portmap_conf("0.3.1", "cbr0", &b.path("pm"), port, fl.json()?).to_string();
        let pa = call("portmap", "ADD").ok(&pm)?;
        let pd = call("portmap", "DEL").ok(&pm)?;
        let fd = call("flannel", "DEL").ok(&flannel)?;
        add.push(fl.us + pa.us);
        del.push(pd.us + fd.us);
    }
    println!(
        "kube-flannel chain (flannel → bridge → host-local, portmap with one mapping), {iterations} pods"
    );
    println!("| cmd | median | p95 |");
    println!("|-----|--------|-----|");
    for (cmd, s) in [("ADD", &add), ("DEL", &del)] {
        println!(
            "| {cmd} | {:>6} ms | {:>6} ms |",
            ms(s.median()),
            ms(s.p95())
        );
    }
    Ok(())
}

/// A small xorshift generator for the host-local order (no cryptographic or statistical
/// claims: it only has to differ from round to round).
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((nanos ^ u64::from(std::process::id())) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Fisher–Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_permutes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut v = [0, 1, 2, 3];
            rng.shuffle(&mut v);
            let mut sorted = v;
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3]);
            seen.insert(v);
        }
        assert!(
            seen.len() > 12,
            "only {} orders in 200 shuffles",
            seen.len()
        );
    }

    #[test]
    fn prefill_writes_leases_in_the_shared_format() {
        let dir = tempfile::tempdir().unwrap();
        prefill(dir.path(), 251).unwrap();
        let net = dir.path().join("bench");
        let first = std::fs::read_to_string(net.join("10.200.2.1")).unwrap();
        assert_eq!(first, "pre-0\r\neth0");
        assert!(net.join("10.200.3.1").is_file()); // lease 250
        let last = std::fs::read_to_string(net.join("last_reserved_ip.0")).unwrap();
        assert_eq!(last, "10.200.3.1");
        prefill(&dir.path().join("empty"), 0).unwrap();
        assert!(!dir.path().join("empty/bench/last_reserved_ip.0").exists());
    }
}
