//! A "node": a private host network namespace with its own state directory, and the
//! containers created on it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::netns::TestNetns;
use crate::plugin::PluginCall;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

#[derive(Debug)]
pub struct Node {
    // Field order matters: namespaces are unmounted before their directory is removed.
    host: TestNetns,
    dir: tempfile::TempDir,
    plugins: PathBuf,
}

impl Node {
    pub fn new() -> Node {
        // What a run killed outright left goes before anything new is made.
        crate::reaper::sweep_once();
        // The plugins are checked when one is called: a node that runs only flanneld (the
        // agent benchmark) needs none.
        let plugins = crate::plugin::plugin_dir_unchecked();
        let dir = tempfile::Builder::new()
            .prefix(&crate::reaper::owned_prefix("node"))
            .tempdir()
            .unwrap();
        let host = TestNetns::create(&dir.path().join("host.netns"));
        // A fresh namespace has lo down; the host side of tests expects it up.
        host.sh("ip", &["link", "set", "lo", "up"]);
        Node { host, dir, plugins }
    }

    /// A node whose plugins (and `CNI_PATH`) are those in `dir`, e.g. [`GO_PLUGIN_DIR`] to run
    /// a chain on the Go reference plugins.
    pub fn with_plugin_dir(dir: &Path) -> Node {
        let mut node = Node::new();
        node.plugins = dir.to_owned();
        node
    }

    /// The host namespace, for inspecting what the plugins did.
    pub fn host(&self) -> &TestNetns {
        &self.host
    }

    /// A temporary directory for this node's state (dataDir, subnet files, ...).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The directory the plugin binaries are taken from (`CNI_PATH`).
    pub fn plugin_dir(&self) -> &Path {
        &self.plugins
    }

    /// A new container network namespace; its name doubles as a unique container ID.
    pub fn container(&self) -> (String, TestNetns) {
        let id = format!(
            "ctr{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let ns = TestNetns::create(&self.dir.path().join(format!("{id}.netns")));
        (id, ns)
    }

    /// An "external" machine: a namespace linked to the host by a veth pair, the host end
    /// `host_addr` (e.g. `198.51.100.1/24`), the far end `ext_addr`. It has no route to the
    /// pods, so pods reach it only through masquerade.
    pub fn external(&self, host_addr: &str, ext_addr: &str) -> TestNetns {
        let (_, ext) = self.container();
        let ext_path = ext.path_str();
        let host = &self.host;
        host.sh(
            "ip",
            &[
                "link", "add", "ext0", "type", "veth", "peer", "name", "ext1", "netns", &ext_path,
            ],
        );
        host.sh("ip", &["addr", "add", host_addr, "dev", "ext0"]);
        host.sh("ip", &["link", "set", "ext0", "up"]);
        ext.sh("ip", &["addr", "add", ext_addr, "dev", "ext1"]);
        ext.sh("ip", &["link", "set", "ext1", "up"]);
        ext.sh("ip", &["link", "set", "lo", "up"]);
        ext
    }

    /// [`Node::external`] on 198.51.100.0/24 and 2001:db8:ff::/64 (host `.1`/`::1`, external
    /// `.2`/`::2`), IPv6 without DAD so it is usable at once.
    pub fn external_dual_stack(&self) -> TestNetns {
        let ext = self.external("198.51.100.1/24", "198.51.100.2/24");
        let v6 = |ns: &TestNetns, addr: &str, dev: &str| {
            ns.sh("ip", &["-6", "addr", "add", addr, "dev", dev, "nodad"]);
        };
        v6(&self.host, "2001:db8:ff::1/64", "ext0");
        v6(&ext, "2001:db8:ff::2/64", "ext1");
        ext
    }

    /// A call of plugin `name`, run inside this node's host namespace.
    pub fn plugin(&self, name: &str) -> PluginCall<'_> {
        PluginCall::new(&self.host, &self.plugins, name)
    }

    /// A call of the Go reference plugin `name` (Debian's containernetworking-plugins).
    pub fn go_plugin(&self, name: &str) -> PluginCall<'_> {
        PluginCall::new(&self.host, &self.plugins, name).binary(go_plugin_path(name))
    }
}

/// Where Debian installs the Go reference plugins.
pub const GO_PLUGIN_DIR: &str = "/usr/lib/cni";

/// The Go reference plugin's path; fails the test clearly when it is not installed, so that
/// a comparison never passes by not running.
pub fn go_plugin_path(name: &str) -> PathBuf {
    let path = Path::new(GO_PLUGIN_DIR).join(name);
    assert!(
        path.is_file(),
        "the Go reference plugin {} is missing: apt-get install containernetworking-plugins \
         (scripts/setup.sh installs it)",
        path.display()
    );
    path
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}
