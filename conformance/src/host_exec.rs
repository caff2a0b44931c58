//! Plugins run where the caller runs, found on `CNI_PATH`: how `cnitool` and the parallel
//! benchmark call them (a runtime's fork and exec, environment and stdin in, stdout out).

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::chain::{Attachment, Exec};
use crate::plugin::Outcome;

/// Runs plugins from `cni_path` in the caller's own network namespace.
#[derive(Debug)]
pub struct HostExec {
    cni_path: String,
    args: String,
}

impl HostExec {
    /// `cni_path` is the `CNI_PATH` list; `args` the `CNI_ARGS` every call gets.
    pub fn new(cni_path: &str, args: &str) -> HostExec {
        HostExec {
            cni_path: cni_path.into(),
            args: args.into(),
        }
    }

    pub fn cni_path(&self) -> &str {
        &self.cni_path
    }
}

impl Exec for HostExec {
    fn exec(
        &self,
        plugin: &str,
        command: &str,
        att: Option<&Attachment>,
        stdin: &Value,
    ) -> Outcome {
        let dirs = cni_common::env::split_path(&self.cni_path);
        let failed = |msg: String| Outcome {
            exit_code: 1,
            stdout: serde_json::json!({"code": 102, "msg": msg}).to_string(),
            stderr: String::new(),
        };
        let binary = match cni_common::delegate::find(plugin, &dirs) {
            Ok(b) => b,
            Err(e) => return failed(e.to_string()),
        };
        let mut cmd = Command::new(&binary);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_PATH", &self.cni_path)
            .env("CNI_ARGS", &self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(att) = att {
            cmd.env("CNI_CONTAINERID", &att.container_id)
                .env("CNI_NETNS", &att.netns)
                .env("CNI_IFNAME", &att.ifname);
        }
        let child = cmd.spawn().and_then(|mut child| {
            if let Some(mut input) = child.stdin.take() {
                let _ = input.write_all(stdin.to_string().as_bytes());
            }
            child.wait_with_output()
        });
        match child {
            Ok(out) => Outcome {
                exit_code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::new(),
            },
            Err(e) => failed(format!("failed to run {}: {e}", binary.display())),
        }
    }
}
