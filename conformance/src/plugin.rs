//! One plugin invocation, exactly as a runtime makes it.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;

use crate::chain::Attachment;
use crate::node::Node;

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

/// What the plugin printed and how it exited.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Outcome> for cni_runtime::Output {
    fn from(o: Outcome) -> Self {
        cni_runtime::Output {
            exit_code: o.exit_code,
            stdout: o.stdout,
            stderr: o.stderr,
        }
    }
}

impl From<cni_runtime::Output> for Outcome {
    fn from(o: cni_runtime::Output) -> Self {
        Outcome {
            exit_code: o.exit_code,
            stdout: o.stdout,
            stderr: o.stderr,
        }
    }
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// stdout as JSON; panics with the whole output if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts success and returns the result JSON.
    pub fn ok(&self) -> Value {
        assert!(self.success(), "plugin failed: {self:?}");
        self.json()
    }

    /// Asserts an error with `code` and returns its message.
    pub fn err(&self, code: u64) -> String {
        assert_ne!(self.exit_code, 0, "plugin succeeded: {self:?}");
        let v = self.json();
        assert_eq!(v["code"].as_u64(), Some(code), "wrong code: {self:?}");
        v["msg"].as_str().unwrap_or_default().to_owned()
    }
}

/// A plugin call being built: defaults are those of a runtime's ADD for one container.
#[derive(Debug)]
pub struct PluginCall<'a> {
    node: &'a Node,
    binary: PathBuf,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
}

impl<'a> PluginCall<'a> {
    pub fn new(node: &'a Node, name: &str) -> PluginCall<'a> {
        let dir = node.plugin_dir();
        assert!(
            dir != plugin_dir_unchecked() || dir.join("loopback").is_file(),
            "no plugin binaries in {}: run `cargo build --workspace --bins` (or set CNI_PLUGIN_DIR)",
            dir.display()
        );
        PluginCall {
            node,
            binary: node.plugin_dir().join(name),
            env: vec![
                ("CNI_IFNAME".into(), "eth0".into()),
                ("CNI_PATH".into(), node.plugin_dir().display().to_string()),
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
        let mut cmd = self.node.host().command(&self.binary);
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
