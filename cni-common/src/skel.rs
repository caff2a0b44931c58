//! The dispatcher every plugin binary runs: environment and stdin in, result or error out.
//!
//! [`run`] is pure input → output so that it is tested without exec; [`main`] binds it to the
//! process. All validation happens here, before a plugin method sees the request.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::config::{MAX_CONFIG_BYTES, NetConf, Strictness};
use crate::env::{Command, Environment};
use crate::error::CniError;
use crate::result::CniResult;
use crate::version;

/// One validated request: the environment and the parsed config.
#[derive(Debug)]
pub struct Invocation {
    pub env: Environment,
    pub config: NetConf,
}

impl Invocation {
    pub fn container_id(&self) -> &str {
        &self.env.container_id
    }

    pub fn ifname(&self) -> &str {
        &self.env.ifname
    }

    pub fn netns(&self) -> Option<&Path> {
        self.env.netns.as_deref()
    }

    /// `CNI_NETNS`, which ADD and CHECK always have (the skeleton checked).
    pub fn required_netns(&self) -> Result<&Path, CniError> {
        self.netns()
            .ok_or_else(|| CniError::MissingEnv(vec!["CNI_NETNS"]))
    }
}

/// A plugin: one method per command. GC and STATUS succeed unless a plugin has state to
/// report on.
pub trait Plugin {
    /// The plugin's CNI `type`, for the about text.
    fn name(&self) -> &'static str;

    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError>;

    fn del(&self, inv: &Invocation) -> Result<(), CniError>;

    fn check(&self, inv: &Invocation) -> Result<(), CniError>;

    fn status(&self, _inv: &Invocation) -> Result<(), CniError> {
        Ok(())
    }

    fn gc(&self, _inv: &Invocation) -> Result<(), CniError> {
        Ok(())
    }
}

/// A [`Plugin`] whose methods return the plugin's own error type. Every `TypedPlugin` is a
/// `Plugin` (the impl below converts its errors into [`CniError`], code and all), so a plugin
/// with a `thiserror` enum implements this instead of forwarding each method by hand.
pub trait TypedPlugin {
    /// The plugin's errors; the conversion decides each one's CNI code.
    type Error: Into<CniError>;

    /// The plugin's CNI `type`, for the about text.
    fn name(&self) -> &'static str;

    fn add(&self, inv: &Invocation) -> Result<CniResult, Self::Error>;

    fn del(&self, inv: &Invocation) -> Result<(), Self::Error>;

    fn check(&self, inv: &Invocation) -> Result<(), Self::Error>;

    fn status(&self, _inv: &Invocation) -> Result<(), Self::Error> {
        Ok(())
    }

    fn gc(&self, _inv: &Invocation) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl<T: TypedPlugin> Plugin for T {
    fn name(&self) -> &'static str {
        TypedPlugin::name(self)
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError> {
        TypedPlugin::add(self, inv).map_err(Into::into)
    }

    fn del(&self, inv: &Invocation) -> Result<(), CniError> {
        TypedPlugin::del(self, inv).map_err(Into::into)
    }

    fn check(&self, inv: &Invocation) -> Result<(), CniError> {
        TypedPlugin::check(self, inv).map_err(Into::into)
    }

    fn status(&self, inv: &Invocation) -> Result<(), CniError> {
        TypedPlugin::status(self, inv).map_err(Into::into)
    }

    fn gc(&self, inv: &Invocation) -> Result<(), CniError> {
        TypedPlugin::gc(self, inv).map_err(Into::into)
    }
}

/// What the process prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

impl Outcome {
    fn ok(stdout: String) -> Outcome {
        Outcome {
            stdout,
            stderr: String::new(),
            exit_code: 0,
        }
    }

    fn error(e: &CniError) -> Outcome {
        Outcome {
            stdout: e.to_json(),
            stderr: String::new(),
            exit_code: 1,
        }
    }
}

/// Runs one invocation of `plugin`.
pub fn run(
    plugin: &dyn Plugin,
    lookup: impl Fn(&str) -> Option<OsString>,
    stdin: impl Read,
) -> Outcome {
    let env = match Environment::from_lookup(lookup) {
        Ok(Some(env)) => env,
        Ok(None) => {
            return Outcome {
                stdout: String::new(),
                stderr: version::about(plugin.name()),
                exit_code: 0,
            };
        }
        Err(e) => return Outcome::error(&e),
    };
    if env.command == Command::Version {
        return Outcome::ok(version::version_info_json());
    }
    match dispatch(plugin, env, stdin) {
        Ok(out) => Outcome::ok(out),
        Err(e) => Outcome::error(&e),
    }
}

fn dispatch(plugin: &dyn Plugin, env: Environment, stdin: impl Read) -> Result<String, CniError> {
    let raw = read_stdin(stdin)?;
    let strictness = if env.command == Command::Del {
        Strictness::ForDel
    } else {
        Strictness::Strict
    };
    let config = NetConf::parse_with(&raw, strictness)?;
    let log_path = std::env::var_os(crate::log::ENV)
        .map(std::path::PathBuf::from)
        .or_else(|| {
            crate::gojson::get(config.object(), "debugLog")
                .and_then(|v| v.as_str())
                .map(std::path::PathBuf::from)
        });
    crate::log::init(plugin.name(), &env.container_id, log_path.as_deref());
    crate::debug_log!(
        "{} network={} netns={} ifname={} cniVersion={}",
        env.command.as_str(),
        config.name,
        env.netns
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        env.ifname,
        config.version
    );
    let outcome = dispatch_parsed(plugin, env, config);
    match &outcome {
        Ok(_) => crate::debug_log!("ok"),
        Err(e) => crate::debug_log!("error {}: {e} {}", e.code(), e.details()),
    }
    outcome
}

fn dispatch_parsed(
    plugin: &dyn Plugin,
    env: Environment,
    config: NetConf,
) -> Result<String, CniError> {
    let version = config.version;
    let gate = |allowed: bool, what: &str| {
        if allowed {
            Ok(())
        } else {
            Err(CniError::IncompatibleVersion {
                details: format!("config version {version} does not allow {what}"),
            })
        }
    };
    match env.command {
        Command::Check => gate(version.allows_check(), "CHECK")?,
        Command::Gc => gate(version.allows_gc_and_status(), "GC")?,
        Command::Status => gate(version.allows_gc_and_status(), "STATUS")?,
        _ => {}
    }
    if env.command.has_attachment() && !env.netns_override {
        refuse_own_netns(env.netns.as_deref())?;
    }
    let inv = Invocation { env, config };
    match inv.env.command {
        Command::Add => plugin.add(&inv)?.encode(version),
        Command::Del => plugin.del(&inv).map(|()| String::new()),
        Command::Check => plugin.check(&inv).map(|()| String::new()),
        Command::Gc => plugin.gc(&inv).map(|()| String::new()),
        Command::Status => plugin.status(&inv).map(|()| String::new()),
        Command::Version => Ok(version::version_info_json()),
    }
}

/// Configuring the plugin's own namespace as if it were a container's would reconfigure the
/// host. The Go skeleton notices only after acting; we refuse before.
fn refuse_own_netns(netns: Option<&Path>) -> Result<(), CniError> {
    use std::os::unix::fs::MetadataExt;
    let Some(path) = netns else { return Ok(()) };
    // The same namespace is the same nsfs inode on the same device, whatever path names it.
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    match (id(path), id(Path::new("/proc/self/ns/net"))) {
        (Some(given), Some(own)) if given == own => Err(CniError::invalid_env(
            "plugin's netns and netns from CNI_NETNS should not be the same",
            path.display().to_string(),
        )),
        // Missing or unusable namespaces are each command's business (DEL succeeds, ADD fails
        // with the namespace error).
        _ => Ok(()),
    }
}

fn read_stdin(stdin: impl Read) -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::with_capacity(4096);
    stdin
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CniError::io("error reading from stdin", &e))?;
    Ok(buf)
}

/// The whole of a plugin binary's `main`: never returns.
pub fn main(plugin: &dyn Plugin) -> ! {
    let outcome = run(plugin, |k| std::env::var_os(k), io::stdin().lock());
    // Nothing useful can be done if the caller closed our stdout or stderr.
    let _ = io::stderr().write_all(outcome.stderr.as_bytes());
    let mut stdout = io::stdout().lock();
    let _ = stdout.write_all(outcome.stdout.as_bytes());
    let _ = stdout.flush();
    std::process::exit(outcome.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Records the commands it got; ADD returns a fixed result.
    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<&'static str>>,
    }

    impl Plugin for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn add(&self, _: &Invocation) -> Result<CniResult, CniError> {
            self.calls.borrow_mut().push("add");
            Ok(serde_json::from_str(r#"{"ips":[{"address":"10.0.0.2/24"}]}"#).unwrap())
        }
        fn del(&self, _: &Invocation) -> Result<(), CniError> {
            self.calls.borrow_mut().push("del");
            Ok(())
        }
        fn check(&self, _: &Invocation) -> Result<(), CniError> {
            self.calls.borrow_mut().push("check");
            Err(CniError::plugin(103, "not there", ""))
        }
        fn gc(&self, _: &Invocation) -> Result<(), CniError> {
            self.calls.borrow_mut().push("gc");
            Ok(())
        }
    }

    fn go(p: &Recorder, command: &str, stdin: &str) -> Outcome {
        let mut vars: HashMap<&str, &str> = HashMap::from([
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/nonexistent/ns"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]);
        if !command.is_empty() {
            vars.insert("CNI_COMMAND", command);
        }
        run(p, |k| vars.get(k).map(OsString::from), stdin.as_bytes())
    }

    #[test]
    fn about_without_command() {
        let o = go(&Recorder::default(), "", "");
        assert_eq!(o.exit_code, 0);
        assert!(o.stdout.is_empty());
        assert!(
            o.stderr.starts_with("CNI recorder plugin v"),
            "{}",
            o.stderr
        );
        assert!(
            o.stderr
                .contains("0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0")
        );
    }

    #[test]
    fn version_ignores_stdin() {
        let o = go(&Recorder::default(), "VERSION", "garbage");
        assert_eq!(o.exit_code, 0);
        assert!(o.stdout.starts_with("{\"cniVersion\":\"1.1.0\""));
    }

    #[test]
    fn add_prints_in_config_version() {
        let p = Recorder::default();
        let o = go(&p, "ADD", r#"{"cniVersion":"0.2.0","name":"n","type":"t"}"#);
        assert_eq!(o.exit_code, 0);
        assert_eq!(
            o.stdout,
            "{\n    \"cniVersion\": \"0.2.0\",\n    \"ip4\": {\n        \"ip\": \"10.0.0.2/24\"\n    },\n    \"dns\": {}\n}"
        );
        assert_eq!(*p.calls.borrow(), ["add"]);
    }

    #[test]
    fn gates_by_version_before_calling_the_plugin() {
        let p = Recorder::default();
        let o = go(&p, "CHECK", r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(o.exit_code, 1);
        assert!(o.stdout.contains("\"code\": 1"));
        assert!(o.stdout.contains("does not allow CHECK"));
        let o = go(&p, "GC", r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert!(o.stdout.contains("does not allow GC"));
        assert!(p.calls.borrow().is_empty());
        let o = go(&p, "GC", r#"{"cniVersion":"1.1.0","name":"n"}"#);
        assert_eq!(o.exit_code, 0);
        assert_eq!(*p.calls.borrow(), ["gc"]);
    }

    #[test]
    fn plugin_errors_print_their_code() {
        let p = Recorder::default();
        let o = go(&p, "CHECK", r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(o.exit_code, 1);
        assert_eq!(
            o.stdout,
            "{\n    \"code\": 103,\n    \"msg\": \"not there\"\n}"
        );
    }

    #[test]
    fn bad_stdin_never_reaches_the_plugin() {
        let p = Recorder::default();
        for (stdin, code) in [
            ("", 6),
            ("{", 6),
            ("{}", 7),
            (r#"{"name":"a b"}"#, 7),
            (r#"{"name":"n","cniVersion":"3.0.0"}"#, 1),
        ] {
            let o = go(&p, "ADD", stdin);
            assert_eq!(o.exit_code, 1, "{stdin}");
            assert!(
                o.stdout.contains(&format!("\"code\": {code},")),
                "{stdin}: {}",
                o.stdout
            );
        }
        assert!(p.calls.borrow().is_empty());
    }

    /// A plugin with its own error type: its code reaches the output, its defaults apply.
    struct Typed;

    #[derive(Debug)]
    struct TypedError;

    impl From<TypedError> for CniError {
        fn from(_: TypedError) -> Self {
            CniError::plugin(104, "typed failure", "why")
        }
    }

    impl TypedPlugin for Typed {
        type Error = TypedError;
        fn name(&self) -> &'static str {
            "typed"
        }
        fn add(&self, _: &Invocation) -> Result<CniResult, TypedError> {
            Err(TypedError)
        }
        fn del(&self, _: &Invocation) -> Result<(), TypedError> {
            Ok(())
        }
        fn check(&self, _: &Invocation) -> Result<(), TypedError> {
            Err(TypedError)
        }
    }

    #[test]
    fn typed_plugin_errors_convert_with_their_code() {
        let run_typed = |command: &str| {
            let vars: HashMap<&str, &str> = HashMap::from([
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/nonexistent/ns"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/opt/cni/bin"),
            ]);
            run(
                &Typed,
                |k| vars.get(k).map(OsString::from),
                r#"{"cniVersion":"1.1.0","name":"n"}"#.as_bytes(),
            )
        };
        let o = run_typed("ADD");
        assert_eq!(o.exit_code, 1);
        assert_eq!(
            o.stdout,
            "{\n    \"code\": 104,\n    \"msg\": \"typed failure\",\n    \"details\": \"why\"\n}"
        );
        assert_eq!(run_typed("DEL").exit_code, 0);
        assert_eq!(run_typed("CHECK").exit_code, 1);
        assert_eq!(run_typed("GC").exit_code, 0, "the default GC");
        assert_eq!(run_typed("STATUS").exit_code, 0, "the default STATUS");
        assert_eq!(Plugin::name(&Typed), "typed");
    }

    #[test]
    fn own_netns_is_refused() {
        let p = Recorder::default();
        let vars: HashMap<&str, &str> = HashMap::from([
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/proc/thread-self/ns/net"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]);
        let o = run(
            &p,
            |k| vars.get(k).map(OsString::from),
            r#"{"cniVersion":"1.0.0","name":"n"}"#.as_bytes(),
        );
        assert_eq!(o.exit_code, 1);
        assert!(o.stdout.contains("should not be the same"), "{}", o.stdout);
        assert!(p.calls.borrow().is_empty());
    }
}
