//! The benchmark runner behind `scripts/bench.sh` and `scripts/bench-*.sh` (the `bench`
//! binary): the scripts build, install packages and enter a private network namespace; this
//! runs the plugins, times them and prints the tables of docs/performance.md.
//!
//! Only the plugin calls are timed, from the spawn to the exit ([`exec::Call`]); configs are
//! built, namespaces made and results parsed outside the clock. Every pod gets a namespace of
//! its own, pinned in the work directory, and the runner refuses to run in the machine's own
//! network namespace ([`ensure_private_netns`]).

pub mod agent;
pub mod exec;
pub mod floor;
pub mod kube;
pub mod parallel;
pub mod plugins;
pub mod stats;
pub mod suite;
pub mod wireguard;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use rig::netns::TestNetns;

pub use exec::{Call, Timed};
pub use stats::Samples;

/// The three builds the side-by-side benchmark compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// `cargo build --release`: dynamically linked.
    Ours,
    /// The glibc static-pie build `scripts/install.sh` puts on nodes.
    Static,
    /// Debian's Go reference plugins in `/usr/lib/cni`.
    Go,
}

impl Impl {
    /// In the order the tables print them (and the first round runs them).
    pub const ALL: [Impl; 3] = [Impl::Ours, Impl::Static, Impl::Go];

    pub fn name(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::Static => "static",
            Impl::Go => "go",
        }
    }

    /// Where this implementation's values sit in arrays ordered as [`Impl::ALL`].
    pub fn index(self) -> usize {
        match self {
            Impl::Ours => 0,
            Impl::Static => 1,
            Impl::Go => 2,
        }
    }

    /// The first of this implementation's block of `stride` host ports after `base` (ours
    /// first, then Go, then static, as the shell benchmark numbered them).
    pub fn port(self, base: u32, stride: u32) -> Result<u16, String> {
        let block = match self {
            Impl::Ours => 0,
            Impl::Go => 1,
            Impl::Static => 2,
        };
        let port = base.saturating_add(block * stride);
        u16::try_from(port).map_err(|_| format!("host port {port} out of range: too many pods"))
    }

    /// Each implementation has a bridge and a /16 of its own.
    fn bridge_and_net(self) -> (&'static str, &'static str) {
        match self {
            Impl::Ours => ("cni0", "10.10"),
            Impl::Go => ("cni1", "10.11"),
            Impl::Static => ("cni2", "10.14"),
        }
    }
}

/// Where each implementation's plugin binaries are.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub ours: PathBuf,
    /// Only the side-by-side benchmark needs the static build.
    pub static_build: Option<PathBuf>,
    pub go: PathBuf,
}

/// One benchmark run: the plugin directories and the work directory holding configs,
/// plugin state and every pod's pinned namespace.
#[derive(Debug)]
pub struct Bench {
    pub dirs: Dirs,
    pub work: PathBuf,
}

impl Bench {
    pub fn dir(&self, imp: Impl) -> Result<&Path, String> {
        match imp {
            Impl::Ours => Ok(&self.dirs.ours),
            Impl::Go => Ok(&self.dirs.go),
            Impl::Static => self
                .dirs
                .static_build
                .as_deref()
                .ok_or_else(|| "no static build given (--static DIR)".into()),
        }
    }

    /// The path pod `id`'s namespace is pinned at.
    pub fn netns_path(&self, id: &str) -> String {
        self.work.join(format!("{id}.netns")).display().to_string()
    }

    /// A new namespace for pod `id`, removed when the value is dropped.
    pub fn netns(&self, id: &str) -> TestNetns {
        TestNetns::create(Path::new(&self.netns_path(id)))
    }

    /// A path in the work directory, as a string for a config.
    pub fn path(&self, name: &str) -> String {
        self.work.join(name).display().to_string()
    }

    /// The bridge (+ host-local) config of the side-by-side benchmark for `imp`.
    pub fn bridge_conf(&self, imp: Impl) -> Value {
        let (bridge, net) = imp.bridge_and_net();
        json!({
            "cniVersion": "0.4.0", "name": "bench", "type": "bridge", "bridge": bridge,
            "isGateway": true, "isDefaultGateway": true, "hairpinMode": true, "mtu": 1450,
            "ipam": {
                "type": "host-local", "subnet": format!("{net}.0.0/16"),
                "dataDir": self.path(&format!("ipam-{}", imp.name())),
            },
        })
    }
}

/// A portmap config with one TCP mapping of `port` to 80 and the previous plugin's result.
pub fn portmap_conf(version: &str, name: &str, state_dir: &str, port: u16, prev: Value) -> Value {
    json!({
        "cniVersion": version, "name": name, "type": "portmap",
        "capabilities": {"portMappings": true}, "stateDir": state_dir,
        "runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]},
        "prevResult": prev,
    })
}

/// `CNI_ARGS` as a Kubernetes runtime sends them for pod `id`.
pub fn k8s_args(namespace: &str, id: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={id}")
}

/// The variable the scripts set to the inode of the network namespace they started in (the
/// machine's own) before entering a private one.
pub const HOST_NETNS_ENV: &str = "CNI_BENCH_HOST_NETNS";

/// Fails unless this process runs in a network namespace other than the machine's own: the
/// benchmark creates bridges, veths and firewall rules. The machine's namespace is that of
/// PID 1 where this process may read it, and the one named by [`HOST_NETNS_ENV`]; with
/// neither known, it refuses too.
pub fn ensure_private_netns() -> Result<(), String> {
    let own = std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .map_err(|e| format!("/proc/self/ns/net: {e}"))?;
    let init = std::fs::metadata("/proc/1/ns/net").ok().map(|m| m.ino());
    let env = std::env::var(HOST_NETNS_ENV).ok();
    check_private(own, init, env.as_deref())
}

fn check_private(own: u64, init: Option<u64>, env: Option<&str>) -> Result<(), String> {
    let named = match env.map(str::trim) {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| format!("{HOST_NETNS_ENV}={v:?} is not a namespace inode"))?,
        ),
    };
    if init.is_none() && named.is_none() {
        return Err(format!(
            "cannot tell the machine's own network namespace (PID 1's is unreadable): run \
             scripts/bench*.sh, or set {HOST_NETNS_ENV} to its inode \
             (stat -L -c %i /proc/self/ns/net) before `unshare --net`"
        ));
    }
    if init == Some(own) || named == Some(own) {
        return Err(
            "refusing to run in the machine's own network namespace: run it through \
                    scripts/bench*.sh, or inside `unshare --net`"
                .into(),
        );
    }
    Ok(())
}

/// Waits for the kernel: a deleted namespace is torn down by a kernel worker holding the
/// RTNL lock, which should not land on the next timed call.
pub fn settle(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// The Debian version of the Go plugins, e.g. "1.1.1+ds1-3+b5" ("unknown" without dpkg).
pub fn go_version() -> String {
    std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "containernetworking-plugins"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The upstream part of a Debian version: "1.1.1+ds1-3+b5" → "1.1.1".
pub fn upstream_version(debian: &str) -> &str {
    debian.split(['+', '-', '~']).next().unwrap_or(debian)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_numbered_ours_go_static() {
        assert_eq!(Impl::Ours.port(20_000, 1), Ok(20_000));
        assert_eq!(Impl::Go.port(20_000, 1), Ok(20_001));
        assert_eq!(Impl::Static.port(50_300, 100), Ok(50_500));
        assert!(Impl::Static.port(65_535, 1).is_err());
    }

    #[test]
    fn the_machines_namespace_is_refused() {
        assert!(check_private(7, Some(7), None).is_err());
        assert!(check_private(7, None, Some("7")).is_err());
        assert!(check_private(7, Some(9), Some("7")).is_err());
        assert!(check_private(7, None, None).is_err());
        assert!(check_private(7, None, Some("")).is_err());
        assert!(check_private(7, None, Some("net:[7]")).is_err());
        assert_eq!(check_private(7, Some(9), None), Ok(()));
        assert_eq!(check_private(7, None, Some("9\n")), Ok(()));
    }

    #[test]
    fn upstream_version_drops_the_debian_suffix() {
        assert_eq!(upstream_version("1.1.1+ds1-3+b5"), "1.1.1");
        assert_eq!(upstream_version("1.2.0-1"), "1.2.0");
        assert_eq!(upstream_version("unknown"), "unknown");
    }
}
