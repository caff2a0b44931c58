//! The benchmark runner behind `scripts/bench.sh` and `scripts/bench-*.sh`, which build the
//! plugins, install what is missing and run this inside a private network namespace
//! (`unshare --net`). It refuses to run in the machine's own namespace.
//!
//!   bench [--ours DIR] [--static DIR] [--go DIR] [--work DIR] COMMAND [COUNTS]
//!
//! Commands: `all` (scripts/bench.sh), `bridge`, `portmap`, `host-local`, `flannel`, `agent`,
//! `kube`, `wireguard` (the `scripts/bench-*.sh` of the same name) and `parallel`; `bench --help` lists their
//! counts.
//! Options: `--ours DIR` (default: this binary's directory), `--static DIR` (the static
//! build; `all` needs it), `--go DIR` (default /usr/lib/cni), `--work DIR` (configs, plugin
//! state and pinned namespaces; default a new directory in /tmp, removed at the end).
//!
//! `parallel` runs one round of the parallel section by hand: it ADDs the network list for
//! every pod at once, then DELs them all at once, pod `i` being container `<id-prefix>-<i>`
//! in the namespace pinned at `<work-dir>/<id-prefix>-<i>.netns` (made by the caller), and
//! prints `add_wall del_wall add_cpu del_cpu duplicate_ips failures` (microseconds).

use std::path::PathBuf;
use std::process::ExitCode;

use bench::{Bench, Dirs};

const USAGE: &str = "\
usage: bench [--ours DIR] [--static DIR] [--go DIR] [--work DIR] COMMAND [COUNTS]
  all [pods=50]                             ours, static and Go side by side (scripts/bench.sh)
  bridge [iterations=100]                   bridge + host-local, ours vs Go
  portmap [iterations=100]                  portmap, ours vs Go
  host-local [leases=5000] [iterations=200] host-local on a full and an empty network
  flannel [iterations=100]                  our kube-flannel chain
  agent [peers=1000,5000] [events=200] [idle-secs=20] [out-dir]
                                            flanneld at scale (scripts/bench-agent.sh); writes
                                            bench-agent.md and bench-agent.svg to out-dir
  kube [nodes=1,1000,5000] [events=200] [idle-secs=20] [reps=3] [out-dir]
                                            flanneld --kube-subnet-mgr on a real kube-apiserver
                                            holding that many Nodes: start next to the floor,
                                            memory, event latency, idle CPU, the apiserver's
                                            cost (scripts/bench-kube.sh); writes bench-kube.md
  wireguard [secs=5] [reps=3] [out-dir]   pod-to-pod throughput over host-gw, vxlan, our userspace
                                            WireGuard and wireguard-go (scripts/bench-wireguard.sh);
                                            writes bench-wireguard.md
  parallel <cni-path> <conflist> <work-dir> <id-prefix> <pods> <first-host-port>
Runs only in a private network namespace (scripts/bench*.sh make one).";

#[derive(Debug, Default)]
struct Args {
    ours: Option<PathBuf>,
    static_build: Option<PathBuf>,
    go: Option<PathBuf>,
    work: Option<PathBuf>,
    help: bool,
    positional: Vec<String>,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args::default();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--ours" => &mut out.ours,
            "--static" => &mut out.static_build,
            "--go" => &mut out.go,
            "--work" => &mut out.work,
            "-h" | "--help" => {
                out.help = true;
                continue;
            }
            a if a.starts_with("--") => return Err(format!("unknown option {a}\n{USAGE}")),
            _ => {
                out.positional.push(arg);
                continue;
            }
        };
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        *slot = Some(PathBuf::from(value));
    }
    Ok(out)
}

/// The `n`th count argument, `default` if absent.
fn count(args: &[String], n: usize, default: u32) -> Result<u32, String> {
    args.get(n).map_or(Ok(default), |a| {
        a.parse()
            .map_err(|_| format!("not a count: {a:?}\n{USAGE}"))
    })
}

fn parallel(args: &[String]) -> Result<bool, String> {
    let [cni_path, conflist, work, prefix, pods, port] = args else {
        return Err(USAGE.into());
    };
    let text = std::fs::read_to_string(conflist).map_err(|e| format!("{conflist}: {e}"))?;
    let list = serde_json::from_str(&text).map_err(|e| format!("{conflist}: {e}"))?;
    let pods = pods.parse().map_err(|_| USAGE.to_owned())?;
    let port = port.parse().map_err(|_| USAGE.to_owned())?;
    let round = bench::parallel::run(cni_path, &list, work.as_ref(), prefix, pods, port)?;
    println!("{round}");
    Ok(round.clean())
}

/// The first argument as a comma-separated list of counts, `default` if absent.
fn counts(rest: &[String], default: &[u32]) -> Result<Vec<u32>, String> {
    match rest.first() {
        None => Ok(default.to_vec()),
        Some(list) => list
            .split(',')
            .map(|c| {
                c.parse()
                    .map_err(|_| format!("not a count: {c:?}\n{USAGE}"))
            })
            .collect(),
    }
}

/// `bench kube [nodes=1,1000,5000] [events=200] [idle-secs=20] [reps=3] [out-dir]`: the
/// tables printed (and written to `out-dir/bench-kube.md`).
fn kube(b: &Bench, rest: &[String]) -> Result<(), String> {
    let flanneld = b.dirs.ours.join("flanneld");
    if !flanneld.is_file() {
        return Err(format!(
            "{} missing: build it (cargo build --release -p flanneld) or pass --ours DIR",
            flanneld.display()
        ));
    }
    let plan = bench::kube::Plan {
        counts: counts(rest, &[1, 1000, 5000])?,
        events: count(rest, 1, 200)?,
        idle: std::time::Duration::from_secs(u64::from(count(rest, 2, 20)?)),
        reps: count(rest, 3, 3)?,
    };
    let r = bench::kube::run(&plan, &flanneld)?;
    publish(&bench::kube::markdown(&r), rest.get(4), "bench-kube.md")
}

/// Prints a runner's table and writes it as `file` in `out`, when given.
fn publish(md: &str, out: Option<&String>, file: &str) -> Result<(), String> {
    println!("{md}");
    if let Some(out) = out {
        let path = std::path::Path::new(out).join(file);
        std::fs::write(&path, md).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `bench wireguard`: runs every path, prints the table, writes it to the out dir if given.
fn wireguard(rest: &[String]) -> Result<(), String> {
    let plan = bench::wireguard::Plan {
        secs: count(rest, 0, 5)?,
        reps: count(rest, 1, 3)?.max(1),
    };
    let results = bench::wireguard::run(&plan)?;
    publish(
        &bench::wireguard::markdown(&plan, &results),
        rest.get(2),
        "bench-wireguard.md",
    )
}

/// `bench agent`: runs the plan, prints the table, writes the table and the plot.
fn agent(b: &Bench, rest: &[String]) -> Result<(), String> {
    use bench::agent::{Plan, report};
    let counts = counts(rest, &[1000, 5000])?;
    let flanneld = b.dirs.ours.join("flanneld");
    if !flanneld.is_file() {
        return Err(format!(
            "{} missing: build it (cargo build --release -p flanneld) or pass --ours DIR",
            flanneld.display()
        ));
    }
    let plan = Plan {
        counts,
        events: count(rest, 1, 200)?,
        idle: std::time::Duration::from_secs(u64::from(count(rest, 2, 20)?)),
        flanneld,
        reps: 3,
    };
    let r = bench::agent::run(&plan, &b.dirs.ours)?;
    let md = report::markdown(&r);
    println!("{md}");
    if let Some(out) = rest.get(3) {
        let out = std::path::Path::new(out);
        for (name, text) in [("bench-agent.md", md), ("bench-agent.svg", report::svg(&r))] {
            let path = out.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn run(args: Args) -> Result<bool, String> {
    if args.help {
        println!("{USAGE}");
        return Ok(true);
    }
    let Some((command, rest)) = args.positional.split_first() else {
        return Err(USAGE.into());
    };
    if command == bench::exec::RSS_PROBE {
        // Started by this runner's RSS section (Call::peak_rss), not by hand.
        let [binary] = rest else {
            return Err(format!("usage: bench {command} BINARY"));
        };
        print!("{}", bench::exec::rss_probe(binary.as_ref())?);
        return Ok(true);
    }
    bench::ensure_private_netns()?;
    if command == "parallel" {
        return parallel(rest);
    }
    let ours = match args.ours {
        Some(d) => d,
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(PathBuf::from))
            .ok_or("cannot tell where this binary is: pass --ours")?,
    };
    // A work directory of our own when none is given, removed when the run ends.
    let own = match args.work {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix(&rig::reaper::owned_prefix("bench"))
                .tempdir()
                .map_err(|e| format!("cannot make a work directory: {e}"))?,
        ),
    };
    let work = args
        .work
        .or_else(|| own.as_ref().map(|d| d.path().to_owned()))
        .ok_or("no work directory")?;
    let b = Bench {
        dirs: Dirs {
            ours,
            static_build: args.static_build,
            go: args.go.unwrap_or_else(|| "/usr/lib/cni".into()),
        },
        work,
    };
    match command.as_str() {
        "all" => bench::suite::all(&b, count(rest, 0, 50)?)?,
        "bridge" => bench::plugins::bridge(&b, count(rest, 0, 100)?)?,
        "portmap" => bench::plugins::portmap(&b, count(rest, 0, 100)?)?,
        "host-local" => {
            bench::plugins::host_local(&b, count(rest, 0, 5000)?, count(rest, 1, 200)?)?
        }
        "flannel" => bench::plugins::flannel(&b, count(rest, 0, 100)?)?,
        "agent" => agent(&b, rest)?,
        "kube" => kube(&b, rest)?,
        "wireguard" => wireguard(rest)?,
        other => return Err(format!("unknown command {other:?}\n{USAGE}")),
    }
    Ok(true)
}

fn main() -> ExitCode {
    // Nothing left behind on Ctrl-C, SIGTERM or a panic (release builds abort: no unwinding).
    rig::reaper::guard_process("bench");
    let result = parse(std::env::args().skip(1)).and_then(run);
    // An error caused by the signal (Ctrl-C reaches etcd and the agents too) is the
    // interruption, not a failure of its own.
    if rig::reaper::interrupted() {
        rig::reaper::teardown_and_exit("bench: interrupted", 130);
    }
    let left = rig::reaper::reap(std::process::id());
    if !left.is_empty() {
        eprintln!("bench: left behind, removed now:\n{}", left.summary());
    }
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::from(2)
        }
    }
}
