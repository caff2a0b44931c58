//! One plugin invocation, exactly as a runtime makes it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use cni_runtime::Attachment;

use crate::netns::TestNetns;

/// Where the built plugins are: `$CNI_PLUGIN_DIR`, else the workspace's `target/debug`.
pub fn plugin_dir() -> PathBuf {
    let dir = plugin_dir_unchecked();
    assert!(
        dir.join("loopback").is_file(),
        "no plugin binaries in {}: run `cargo build --workspace --bins` (or set CNI_PLUGIN_DIR)",
        dir.display()
    );
    dir
}

/// `CNI_PLUGIN_DIR`, default `target/debug`, whether or not the plugins are built there.
pub fn plugin_dir_unchecked() -> PathBuf {
    std::env::var_os("CNI_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("debug")
        })
}

/// What the plugin printed and how it exited: the runtime crate's own record of a call.
pub use cni_runtime::Output as Outcome;

/// The tests' questions about an [`Outcome`], each failing the test with the whole output.
pub trait OutcomeExt {
    /// stdout as JSON.
    fn json(&self) -> Value;
    /// Asserts success and returns the result JSON.
    fn ok(&self) -> Value;
    /// Asserts an error with `code` and returns its message.
    fn err(&self, code: u64) -> String;
}

impl OutcomeExt for Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    fn ok(&self) -> Value {
        assert!(self.success(), "plugin failed: {self:?}");
        self.json()
    }

    fn err(&self, code: u64) -> String {
        assert_ne!(self.exit_code, 0, "plugin succeeded: {self:?}");
        let v = self.json();
        assert_eq!(v["code"].as_u64(), Some(code), "wrong code: {self:?}");
        v["msg"].as_str().unwrap_or_default().to_owned()
    }
}

/// A plugin call being built: defaults are those of a runtime's ADD for one container.
#[derive(Debug)]
pub struct PluginCall<'a> {
    /// The namespace the plugin runs in (a node's host namespace).
    host: &'a TestNetns,
    binary: PathBuf,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
}

impl<'a> PluginCall<'a> {
    /// A call of plugin `name` from `dir` (also `CNI_PATH`), run inside `host`.
    pub fn new(host: &'a TestNetns, dir: &Path, name: &str) -> PluginCall<'a> {
        assert!(
            dir != plugin_dir_unchecked() || dir.join("loopback").is_file(),
            "no plugin binaries in {}: run `cargo build --workspace --bins` (or set CNI_PLUGIN_DIR)",
            dir.display()
        );
        PluginCall {
            host,
            binary: dir.join(name),
            env: vec![
                ("CNI_IFNAME".into(), "eth0".into()),
                ("CNI_PATH".into(), dir.display().to_string()),
                (
                    "CNI_ARGS".into(),
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=test".into(),
                ),
            ],
            stdin: Vec::new(),
        }
    }

    /// Runs another binary than the suite's (e.g. a Go reference plugin) with the same setup.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// Sets (or with an empty value, sets empty) one variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    /// Removes a variable entirely.
    pub fn unset(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    pub fn command(self, command: &str) -> Self {
        self.env("CNI_COMMAND", command)
    }

    pub fn container(self, id: &str, netns: &str) -> Self {
        self.env("CNI_CONTAINERID", id).env("CNI_NETNS", netns)
    }

    /// The attachment's container ID, netns and ifname; `None` (GC, STATUS) sends no ifname.
    pub fn attachment(self, att: Option<&Attachment>) -> Self {
        match att {
            Some(att) => self
                .container(&att.container_id, &att.netns)
                .env("CNI_IFNAME", &att.ifname),
            None => self.unset("CNI_IFNAME"),
        }
    }

    pub fn stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.stdin = stdin.into();
        self
    }

    pub fn config(self, config: &Value) -> Self {
        self.stdin(config.to_string())
    }

    /// Starts the plugin inside the node's host namespace with only the `CNI_*` environment
    /// (and `PATH`), as a runtime does, in a process group of its own (so that a test can
    /// kill it and every delegate it started), with stdin already written.
    pub fn spawn(self) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        let mut cmd = self.host.command(&self.binary);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot exec {}: {e}", self.binary.display()));
        if let Some(mut input) = child.stdin.take() {
            // A plugin may exit without reading stdin (VERSION, env errors).
            let _ = input.write_all(&self.stdin);
        }
        child
    }

    /// Execs the plugin and waits for it.
    pub fn run(self) -> Outcome {
        let child = self.spawn();
        let out = child.wait_with_output().unwrap();
        Outcome {
            exit_code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
