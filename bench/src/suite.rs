//! The side-by-side benchmark (`bench all`, `scripts/bench.sh`): our plugins, our static
//! build and Debian's Go plugins on the same workload, alternating pod by pod. Per pod:
//! bridge (+ host-local) then portmap with one TCP mapping, the chain a flannel node runs
//! below flannel (Debian has no Go flannel; our flannel chain is reported beside it).
//! Sections: sequential, parallel, host-local at 5,000 leases, peak RSS and sizes, and the
//! floor (the same kernel work done by `ip -batch`).

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use super::stats::{Samples, kib, ms, ratio};
use super::{Bench, Call, Impl, floor, k8s_args, parallel, plugins, portmap_conf, settle};

type Result<T> = std::result::Result<T, String>;

/// Per call kind, the samples of each implementation, indexed as [`Impl::ALL`].
type PerImpl = [Samples; 3];

/// A chain's timings: the whole chain, its bridge call and its portmap call.
#[derive(Debug, Default)]
struct ChainSamples {
    total: PerImpl,
    bridge: PerImpl,
    portmap: PerImpl,
}

impl ChainSamples {
    fn push(&mut self, imp: Impl, bridge_us: u64, portmap_us: u64) {
        let i = imp.index();
        let put = |set: &mut PerImpl, v| {
            if let Some(s) = set.get_mut(i) {
                s.push(v);
            }
        };
        put(&mut self.total, bridge_us + portmap_us);
        put(&mut self.bridge, bridge_us);
        put(&mut self.portmap, portmap_us);
    }
}

/// What the sequential section measured (the floor compares against it).
#[derive(Debug, Default)]
struct Sequential {
    add: ChainSamples,
    del: ChainSamples,
    flannel_add: Samples,
    flannel_del: Samples,
}

/// Runs every section for `pods` sequential pods (and fixed parallel and host-local sizes).
pub fn all(b: &Bench, pods: u32) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "# Benchmark: ours vs Go {}, {cpus} CPUs, kernel {}\n",
        super::go_version(),
        kernel.trim()
    );
    let seq = sequential(b, pods)?;
    print_sequential(&seq, pods);
    parallel_section(b)?;
    println!("## host-local on a network holding 5,000 leases\n");
    plugins::host_local_table(b, 5000, 100)?;
    println!();
    rss_section(b)?;
    floor_section(b, pods, &seq)
}

struct ChainRun<'a> {
    b: &'a Bench,
    imp: Impl,
    dir: &'a Path,
    id: String,
    bridge: String,
}

impl ChainRun<'_> {
    fn call(&self, plugin: &str, command: &str) -> Call {
        Call::new(self.dir, plugin, command)
            .container(&self.id, &self.b.netns_path(&self.id))
            .args(&k8s_args("bench", &self.id))
    }

    /// bridge ADD then portmap ADD; returns both times and the portmap config (for DEL).
    fn add(&self, port: u16) -> Result<(u64, u64, String)> {
        let br = self.call("bridge", "ADD").ok(&self.bridge)?;
        let pm = portmap_conf("0.4.0", "bench", &self.b.path("pm"), port, br.json()?);
        let pm = pm.to_string();
        let p = self.call("portmap", "ADD").ok(&pm)?;
        Ok((br.us, p.us, pm))
    }

    /// portmap DEL then bridge DEL; returns the bridge and the portmap time.
    fn del(&self, pm: &str) -> Result<(u64, u64)> {
        let p = self.call("portmap", "DEL").ok(pm)?;
        let br = self.call("bridge", "DEL").ok(&self.bridge)?;
        Ok((br.us, p.us))
    }
}

/// Each round starts with its namespaces made and the previous round's torn down and
/// settled, and rotates the order of the implementations so that none always follows
/// another's DEL; our flannel chain runs after the three.
fn sequential(b: &Bench, pods: u32) -> Result<Sequential> {
    let mut seq = Sequential::default();
    let flannel = flannel_conf(b)?;
    for i in 0..pods {
        let k = (i % 3) as usize;
        let order: Vec<Impl> = Impl::ALL[k..]
            .iter()
            .chain(&Impl::ALL[..k])
            .copied()
            .collect();
        let runs = Impl::ALL
            .iter()
            .map(|&imp| {
                Ok(ChainRun {
                    b,
                    imp,
                    dir: b.dir(imp)?,
                    id: format!("s-{}-{i}", imp.name()),
                    bridge: b.bridge_conf(imp).to_string(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let fl_id = format!("s-fl-{i}");
        let _ns: Vec<_> = (runs.iter().map(|r| r.id.as_str()))
            .chain([fl_id.as_str()])
            .map(|id| b.netns(id))
            .collect();
        settle(200);
        let mut pms = Vec::new();
        for imp in &order {
            let run = &runs[imp.index()];
            let (br, pm, conf) = run.add(imp.port(20_000 + i * 3, 1)?)?;
            seq.add.push(run.imp, br, pm);
            pms.push(conf);
        }
        for (imp, pm) in order.iter().zip(&pms) {
            let run = &runs[imp.index()];
            let (br, p) = run.del(pm)?;
            seq.del.push(run.imp, br, p);
        }
        let (add, del) = flannel_chain(b, &fl_id, &flannel, 40_000 + i)?;
        seq.flannel_add.push(add);
        seq.flannel_del.push(del);
    }
    Ok(seq)
}

fn flannel_conf(b: &Bench) -> Result<String> {
    let env = "FLANNEL_NETWORK=10.12.0.0/16\nFLANNEL_SUBNET=10.12.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";
    std::fs::write(b.work.join("subnet.env"), env).map_err(|e| format!("subnet.env: {e}"))?;
    Ok(json!({
        "cniVersion": "0.4.0", "name": "cbr0", "type": "flannel",
        "delegate": {"hairpinMode": true, "isDefaultGateway": true, "bridge": "cni3"},
        "subnetFile": b.path("subnet.env"), "dataDir": b.path("flannel"),
        "ipam": {"dataDir": b.path("ipam-fl")},
    })
    .to_string())
}

/// Our flannel chain for one pod (flannel → bridge → host-local, then portmap): ADD and DEL
/// time.
fn flannel_chain(b: &Bench, id: &str, flannel: &str, port: u32) -> Result<(u64, u64)> {
    let port = u16::try_from(port).map_err(|_| "too many pods for the port range")?;
    let dir = b.dir(Impl::Ours)?;
    let netns = b.netns_path(id);
    let args = k8s_args("bench", id);
    let call = |plugin, cmd| {
        Call::new(dir, plugin, cmd)
            .container(id, &netns)
            .args(&args)
    };
    let fl = call("flannel", "ADD").ok(flannel)?;
    let pm = portmap_conf("0.4.0", "cbr0", &b.path("pm"), port, fl.json()?).to_string();
    let pa = call("portmap", "ADD").ok(&pm)?;
    let pd = call("portmap", "DEL").ok(&pm)?;
    let fd = call("flannel", "DEL").ok(flannel)?;
    Ok((fl.us + pa.us, pd.us + fd.us))
}

fn stat(set: &PerImpl, imp: Impl, f: fn(&Samples) -> Option<f64>) -> Option<f64> {
    set.get(imp.index()).and_then(f)
}

fn print_sequential(seq: &Sequential, pods: u32) {
    println!("## Sequential, {pods} pods each (median / p95)\n");
    println!(
        "ours: `cargo build --release` (dynamically linked); static: the glibc static-pie build"
    );
    println!("scripts/install.sh puts on nodes (the Go plugins are static too).\n");
    println!(
        "| what (sequential, {pods} pods each, median / p95) | ours | static | Go | Go/ours | Go/static |"
    );
    println!("|---|---|---|---|---|---|");
    let row = |label: &str, set: &PerImpl| {
        let cell = |imp| {
            let (m, p) = (
                stat(set, imp, Samples::median),
                stat(set, imp, Samples::p95),
            );
            format!("{} / {} ms", ms(m), ms(p))
        };
        let med = |imp| stat(set, imp, Samples::median);
        println!(
            "| {label} | {} | {} | {} | {} | {} |",
            cell(Impl::Ours),
            cell(Impl::Static),
            cell(Impl::Go),
            ratio(med(Impl::Go), med(Impl::Ours), 1),
            ratio(med(Impl::Go), med(Impl::Static), 1)
        );
    };
    row("chain ADD (bridge+host-local, portmap)", &seq.add.total);
    row("chain DEL", &seq.del.total);
    row("bridge (+host-local) ADD", &seq.add.bridge);
    row("bridge (+host-local) DEL", &seq.del.bridge);
    row("portmap ADD", &seq.add.portmap);
    row("portmap DEL", &seq.del.portmap);
    println!(
        "| our flannel chain ADD / DEL | {} / {} ms | — | — | — | — |\n",
        ms(seq.flannel_add.median()),
        ms(seq.flannel_del.median())
    );
}

/// The bridge + portmap network list of `imp`, for the parallel runner (which passes the
/// mapping as the `portMappings` capability, as a runtime does).
fn conflist(b: &Bench, imp: Impl) -> Value {
    let mut bridge = b.bridge_conf(imp);
    if let Some(o) = bridge.as_object_mut() {
        o.remove("cniVersion");
        o.remove("name");
    }
    json!({
        "cniVersion": "0.4.0", "name": "bench",
        "plugins": [bridge, {"type": "portmap", "capabilities": {"portMappings": true}, "stateDir": b.path("pm")}],
    })
}

/// Rounds alternate the implementations; the table holds each one's median round.
fn parallel_section(b: &Bench) -> Result<()> {
    println!(
        "## Parallel ADD, then parallel DEL (wall time, median of the rounds; plugin CPU time per pod)\n"
    );
    println!("| pods | rounds | | ours | static | Go | Go/ours | Go/static |");
    println!("|---|---|---|---|---|---|---|---|");
    for (n, rounds) in [(20u16, 5u32), (100, 3)] {
        let mut results: [Vec<parallel::Round>; 3] = Default::default();
        let mut checks = String::new();
        for k in 0..rounds {
            for imp in Impl::ALL {
                let id = format!("p{n}-{k}-{}", imp.name());
                let _ns: Vec<_> = (0..n).map(|i| b.netns(&format!("{id}-{i}"))).collect();
                // The previous round's namespaces are torn down by a kernel worker.
                settle(u64::from(n / 20) * 1000);
                let dir = b.dir(imp)?.display().to_string();
                let port = imp.port(50_000 + k * 300, 100)?;
                match parallel::run(&dir, &conflist(b, imp), &b.work, &id, n, port) {
                    Ok(round) => {
                        if !round.clean() {
                            checks += &format!(" {} round {k}: FAILED ({round})", imp.name());
                        }
                        if let Some(r) = results.get_mut(imp.index()) {
                            r.push(round);
                        }
                    }
                    Err(e) => checks += &format!(" {} round {k}: FAILED ({e})", imp.name()),
                }
            }
        }
        settle(1000);
        let all = || results.iter().flatten();
        let dups: usize = all().map(|r| r.duplicate_ips).sum();
        let fails: usize = all().map(|r| r.failures).sum();
        let prow = |label: &str, col: fn(&parallel::Round) -> u64, per: u16| {
            let med = |imp: Impl| {
                let s: Samples = results
                    .get(imp.index())
                    .into_iter()
                    .flatten()
                    .map(col)
                    .collect();
                s.median().map(|m| m / f64::from(per))
            };
            let (o, s, g) = (med(Impl::Ours), med(Impl::Static), med(Impl::Go));
            println!(
                "| {n} | {rounds} | {label} | {} ms | {} ms | {} ms | {} | {} |",
                ms(o),
                ms(s),
                ms(g),
                ratio(g, o, 1),
                ratio(g, s, 1)
            );
        };
        prow("ADD wall", |r| r.add_wall_us, 1);
        prow("DEL wall", |r| r.del_wall_us, 1);
        prow("ADD CPU per pod", |r| r.add_cpu_us, n);
        prow("DEL CPU per pod", |r| r.del_cpu_us, n);
        println!(
            "| {n} | | checks | duplicate IPs {dups}, failed calls {fails}, veths left {}, leases left {}{checks} | | | | |",
            veths_left(),
            leases_left(&b.work)
        );
    }
    println!();
    Ok(())
}

/// The veths in this (the benchmark's) namespace; `?` if `ip` cannot tell.
fn veths_left() -> String {
    Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("?".into(), |o| {
            o.stdout
                .split(|&c| c == b'\n')
                .filter(|l| !l.is_empty())
                .count()
                .to_string()
        })
}

/// The leases (files named after an address) left in the work directory's `ipam-*` stores.
fn leases_left(work: &Path) -> usize {
    fn count(dir: &Path) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => count(&e.path()),
                Ok(t) if t.is_file() => {
                    usize::from(e.file_name().to_string_lossy().starts_with("10."))
                }
                _ => 0,
            })
            .sum()
    }
    std::fs::read_dir(work)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ipam-"))
        .map(|e| count(&e.path()))
        .sum()
}

/// The peak RSS of one ADD of each plugin, and the binaries' sizes.
fn rss_section(b: &Bench) -> Result<()> {
    println!("## Peak RSS of one ADD, and binary size\n");
    println!(
        "ours: `cargo build --release` (dynamically linked); static: the glibc static-pie build"
    );
    println!("scripts/install.sh puts on nodes.\n");
    println!("| plugin | ours RSS | static RSS | Go RSS | ours size | static size | Go size |");
    println!("|---|---|---|---|---|---|---|");
    const PLUGINS: [&str; 4] = ["loopback", "host-local", "bridge", "portmap"];
    let mut rss = [[None; 3]; 4];
    // A fresh process measures each call (see bench::exec): this runner is the probe.
    let probe = std::env::current_exe().map_err(|e| format!("cannot find the runner: {e}"))?;
    for imp in Impl::ALL {
        let dir = b.dir(imp)?;
        let ids = ["lo", "hl", "br"].map(|p| format!("r-{}-{p}", imp.name()));
        let _ns: Vec<_> = ids.iter().map(|id| b.netns(id)).collect();
        let add = |plugin: &str, id: &str, conf: &Value| -> Result<super::exec::Peak> {
            let t = Call::new(dir, plugin, "ADD")
                .container(id, &b.netns_path(id))
                .peak_rss(&probe, &conf.to_string())?;
            if !t.status.success() {
                eprintln!(
                    "bench: {} {plugin} ADD failed: {}",
                    imp.name(),
                    t.stdout.trim_end()
                );
            }
            Ok(t)
        };
        let lo = add(
            "loopback",
            &ids[0],
            &json!({"cniVersion": "0.4.0", "name": "lo", "type": "loopback"}),
        )?;
        let mut hl_conf = b.bridge_conf(imp);
        hl_conf["name"] = json!("rss");
        let hl = add("host-local", &ids[1], &hl_conf)?;
        let br = add("bridge", &ids[2], &b.bridge_conf(imp))?;
        let prev = serde_json::from_str(&br.stdout).unwrap_or(Value::Null);
        let pm_conf = portmap_conf("0.4.0", "bench", &b.path("pm"), imp.port(60_000, 1)?, prev);
        let pm = add("portmap", &ids[2], &pm_conf)?;
        for (p, t) in [lo, hl, br, pm].iter().enumerate() {
            if let Some(cell) = rss.get_mut(p).and_then(|r| r.get_mut(imp.index())) {
                *cell = t.max_rss_kib;
            }
        }
    }
    let size = |imp: Impl, plugin: &str| -> String {
        b.dir(imp)
            .ok()
            .and_then(|d| std::fs::metadata(d.join(plugin)).ok())
            .map_or("—".into(), |m| m.len().to_string())
    };
    for (plugin, r) in PLUGINS.iter().zip(rss) {
        println!(
            "| {plugin} | {} | {} | {} | {} | {} | {} |",
            kib(r[0]),
            kib(r[1]),
            kib(r[2]),
            size(Impl::Ours, plugin),
            size(Impl::Static, plugin),
            size(Impl::Go, plugin)
        );
    }
    println!(
        "| flannel | — | — | — | {} | {} | — |\n",
        size(Impl::Ours, "flannel"),
        size(Impl::Static, "flannel")
    );
    Ok(())
}

/// The floor against our chains: the kernel work of a chain ADD done by `ip -batch`
/// ([`floor::measure`]).
fn floor_section(b: &Bench, pods: u32, seq: &Sequential) -> Result<()> {
    let (add, del) = floor::measure(b, pods)?;
    let med = |set: &PerImpl, imp| stat(set, imp, Samples::median);
    let (oa, sa) = (
        med(&seq.add.total, Impl::Ours),
        med(&seq.add.total, Impl::Static),
    );
    let (od, sd) = (
        med(&seq.del.total, Impl::Ours),
        med(&seq.del.total, Impl::Static),
    );
    let (fa, fd) = (add.median(), del.median());
    println!(
        "## The floor (`ip -batch` on the host and in the pod: veth pair, bridge port, address, route; `ip link del`)\n"
    );
    println!(
        "| the floor (`ip -batch` on the host and in the pod; `ip link del`) | floor | our chain | static chain | ours/floor | static/floor |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| ADD: veth pair, bridge port, address, link up, default route | {} ms | {} ms | {} ms | {} | {} |",
        ms(fa),
        ms(oa),
        ms(sa),
        ratio(oa, fa, 1),
        ratio(sa, fa, 1)
    );
    println!(
        "| DEL: the veth | {} ms | {} ms | {} ms | {} | {} |",
        ms(fd),
        ms(od),
        ms(sd),
        ratio(od, fd, 1),
        ratio(sd, fd, 1)
    );
    Ok(())
}
