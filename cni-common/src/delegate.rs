//! Running another plugin (an IPAM plugin, or flannel's bridge) the way a runtime would:
//! found in `CNI_PATH`, same environment but another `CNI_COMMAND`, same stdin.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::thread::sleep;
use std::time::Duration;

use serde::Deserialize;

use crate::env::{Command, Environment};
use crate::error::{CniError, code};
use crate::result::CniResult;
use crate::version::Version;

/// Waits before retrying an exec that failed with "text file busy" (the binary is being
/// replaced by an installer). Five retries, about two seconds in all.
const TEXT_BUSY_BACKOFF_MS: [u64; 5] = [50, 150, 300, 600, 1000];

/// Finds `name` in the `CNI_PATH` directories: the first regular file of that name.
pub fn find(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    if name.is_empty() {
        return Err(CniError::invalid_config("no plugin name provided", ""));
    }
    if name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(CniError::invalid_config(
            format!("invalid plugin name \"{}\"", name.escape_debug()),
            "a plugin type is a file name in CNI_PATH, not a path",
        ));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.metadata().map(|m| m.is_file()).unwrap_or(false))
        .ok_or_else(|| {
            let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            CniError::plugin(
                code::DELEGATE,
                format!(
                    "failed to find plugin \"{name}\" in path [{}]",
                    list.join(" ")
                ),
                "install the plugin into one of the CNI_PATH directories",
            )
        })
}

/// Runs plugin `name` with `command`, handing it `stdin` and `env` (with `CNI_COMMAND`
/// replaced). Returns its stdout on success, or its own error (code kept) on failure.
pub fn exec(
    name: &str,
    command: Command,
    env: &Environment,
    stdin: &[u8],
) -> Result<Vec<u8>, CniError> {
    let path = find(name, &env.path)?;
    let output = spawn(&path, command, env, stdin).map_err(|e| {
        CniError::plugin(
            code::DELEGATE,
            format!("failed to run plugin {}: {e}", path.display()),
            "",
        )
    })?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(delegate_error(name, &output))
}

/// Delegates ADD and returns the delegate's result.
pub fn add(
    name: &str,
    env: &Environment,
    stdin: &[u8],
    version: Version,
) -> Result<CniResult, CniError> {
    let out = exec(name, Command::Add, env, stdin)?;
    CniResult::decode_bytes(&out, version).map_err(|e| e.context(&format!("plugin {name}")))
}

/// Spawns `cmd`, retrying while the kernel says "text file busy" (its binary is being
/// replaced by an installer, or another thread of this process holds it open for writing at
/// the moment of a fork), as libcni does.
pub fn spawn_when_not_busy(cmd: &mut Process) -> io::Result<std::process::Child> {
    let mut backoff = TEXT_BUSY_BACKOFF_MS.iter();
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => match backoff.next() {
                Some(ms) => sleep(Duration::from_millis(*ms)),
                None => return Err(e),
            },
            other => return other,
        }
    }
}

fn spawn(
    path: &Path,
    command: Command,
    env: &Environment,
    stdin: &[u8],
) -> io::Result<std::process::Output> {
    let joined_path = std::env::join_paths(&env.path).map_err(io::Error::other)?;
    let mut cmd = Process::new(path);
    cmd.env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", &env.container_id)
        .env(
            "CNI_NETNS",
            env.netns.as_deref().unwrap_or_else(|| Path::new("")),
        )
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_ARGS", &env.args)
        .env("CNI_PATH", joined_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = spawn_when_not_busy(&mut cmd)?;
    if let Some(mut input) = child.stdin.take() {
        // A delegate that exits without reading stdin closes the pipe; its exit status and
        // output still tell what happened, so a broken pipe here is not the error to report.
        match input.write_all(stdin) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e),
            _ => {}
        }
    }
    child.wait_with_output()
}

#[derive(Deserialize)]
struct WireError {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

fn delegate_error(name: &str, output: &std::process::Output) -> CniError {
    match crate::gojson::from_slice::<WireError>(&output.stdout) {
        Ok(e) => CniError::Delegated {
            code: e.code,
            msg: e.msg,
            details: e.details,
        },
        Err(_) if output.stdout.is_empty() => CniError::plugin(
            code::DELEGATE,
            format!(
                "plugin {name} failed with no error message: {}",
                output.status
            ),
            "",
        ),
        Err(_) => CniError::plugin(
            code::DELEGATE,
            format!("plugin {name} failed: {}", output.status),
            String::from_utf8_lossy(&output.stdout)
                .chars()
                .take(512)
                .collect::<String>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn env(dir: &Path) -> Environment {
        Environment {
            command: Command::Add,
            container_id: "c1".into(),
            netns: None,
            ifname: "eth0".into(),
            args: "IgnoreUnknown=1".into(),
            path: vec![PathBuf::from("/nonexistent"), dir.to_owned()],
            netns_override: false,
        }
    }

    #[test]
    fn find_rejects_paths_and_reports_dirs() {
        let e = find("../x", &[]).unwrap_err();
        assert_eq!(e.code(), 7);
        let e = find("", &[]).unwrap_err();
        assert_eq!(e.to_string(), "no plugin name provided");
        let e = find("nope", &[PathBuf::from("/a"), PathBuf::from("/b")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to find plugin \"nope\" in path [/a /b]"
        );
    }

    #[test]
    fn passes_env_and_stdin_and_returns_result() {
        let dir = tempfile::tempdir().unwrap();
        // Echo what the delegate saw back as a 1.0.0 result's DNS domain.
        script(
            dir.path(),
            "echo-ipam",
            r#"in=$(cat); printf '{"cniVersion":"1.0.0","dns":{"domain":"%s %s %s %s"}}' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_IFNAME" "$in""#,
        );
        let r = add("echo-ipam", &env(dir.path()), b"x", Version::V1_0_0).unwrap();
        assert_eq!(r.dns.domain, "ADD c1 eth0 x");
    }

    #[test]
    fn delegate_error_keeps_its_code() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "fail",
            r#"echo '{"code": 11, "msg": "busy", "details": "later"}'; exit 1"#,
        );
        script(dir.path(), "mute", "exit 3");
        let e = exec("fail", Command::Del, &env(dir.path()), b"{}").unwrap_err();
        assert_eq!(
            (e.code(), e.to_string(), e.details()),
            (11, "busy".into(), "later")
        );
        let e = exec("mute", Command::Del, &env(dir.path()), b"{}").unwrap_err();
        assert_eq!(e.code(), code::DELEGATE);
        assert!(
            e.to_string().contains("failed with no error message"),
            "{e}"
        );
    }
}
