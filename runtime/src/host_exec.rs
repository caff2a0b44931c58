//! Plugins run where the caller runs, found on `CNI_PATH`: a runtime's fork and exec
//! (environment and stdin in, stdout out; stderr goes to the caller's).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use cni_common::Command;
use serde_json::Value;

use crate::exec::{Attachment, Exec, ExecError, Output};

/// Runs plugins from a `CNI_PATH` list in the caller's own network namespace.
#[derive(Debug, Clone)]
pub struct HostExec {
    cni_path: String,
    dirs: Vec<PathBuf>,
    args: String,
}

impl HostExec {
    /// `cni_path` is the `CNI_PATH` list (also handed to the plugins, for their delegates);
    /// `args` the `CNI_ARGS` every call gets.
    pub fn new(cni_path: &str, args: &str) -> HostExec {
        HostExec {
            cni_path: cni_path.into(),
            dirs: cni_common::env::split_path(cni_path),
            args: args.into(),
        }
    }

    /// The `CNI_PATH` list as given.
    pub fn cni_path(&self) -> &str {
        &self.cni_path
    }
}

impl Exec for HostExec {
    fn exec(
        &self,
        plugin: &str,
        command: Command,
        att: Option<&Attachment>,
        stdin: &Value,
    ) -> Result<Output, ExecError> {
        let binary = cni_common::delegate::find(plugin, &self.dirs).map_err(ExecError::NotFound)?;
        let mut cmd = Process::new(&binary);
        cmd.env("CNI_COMMAND", command.as_str())
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
        let spawn_error = |source| ExecError::Spawn {
            path: binary.clone(),
            source,
        };
        let mut child = cni_common::delegate::spawn_when_not_busy(&mut cmd).map_err(spawn_error)?;
        if let Some(mut input) = child.stdin.take() {
            // A plugin may exit without reading stdin; its exit status tells what happened.
            match input.write_all(stdin.to_string().as_bytes()) {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                    // Reap the child before reporting; its own status no longer matters.
                    drop(input);
                    let _ = child.wait();
                    return Err(spawn_error(e));
                }
                _ => {}
            }
        }
        let out = child.wait_with_output().map_err(spawn_error)?;
        Ok(Output {
            exit_code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use serde_json::json;

    use super::*;

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn runs_the_plugin_with_the_spec_environment_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "echo",
            r#"printf '{"cmd":"%s","id":"%s","netns":"%s","if":"%s","args":"%s","stdin":%s}' \
              "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$(cat)""#,
        );
        let path = format!("/nonexistent:{}", dir.path().display());
        let exec = HostExec::new(&path, "K8S_POD_NAME=a");
        let att = Attachment::new("c1", "/run/netns/p", "eth1");
        let out = exec
            .exec("echo", Command::Check, Some(&att), &json!({"a": 1}))
            .unwrap();
        assert!(out.success());
        let printed: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            printed,
            json!({"cmd": "CHECK", "id": "c1", "netns": "/run/netns/p", "if": "eth1",
                "args": "K8S_POD_NAME=a", "stdin": {"a": 1}})
        );
    }

    #[test]
    fn reports_exit_status_and_a_missing_plugin() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "fails", "cat >/dev/null; echo oops; exit 3");
        let exec = HostExec::new(&dir.path().display().to_string(), "");
        let out = exec.exec("fails", Command::Gc, None, &json!({})).unwrap();
        assert_eq!((out.exit_code, out.stdout.as_str()), (3, "oops\n"));
        let err = exec
            .exec("no-such-plugin", Command::Add, None, &json!({}))
            .unwrap_err();
        assert!(matches!(err, ExecError::NotFound(_)));
        assert!(
            err.to_string()
                .starts_with("failed to find plugin \"no-such-plugin\" in path"),
            "{err}"
        );
    }
}
