//! Go flanneld's command line (`main.go` `init()`): the same flag names and defaults, Go's
//! `flag` syntax (`-x`, `--x`, `-x=v`, `-x v`; booleans only as `-x` or `-x=v`), then the
//! `FLANNELD_*` environment for every flag not given on the command line (coreos
//! `flagutil.SetFlagsFromEnv`: upper case, `-` and `.` as `_`; a bad value is logged and
//! ignored).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::log::{error, warning};

/// Go's default endpoints.
pub const DEFAULT_ENDPOINTS: &str = "http://127.0.0.1:4001,http://127.0.0.1:2379";
/// Go's default subnet file.
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";

/// A credential: its `Debug` says only whether there is one, so no derived `Debug` of the
/// options (a log line, a panic message, a test failure) prints it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "(redacted)"
        })
    }
}

/// The options the agent runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `--etcd-endpoints`, split on commas.
    pub etcd_endpoints: Vec<String>,
    /// `--etcd-prefix`.
    pub etcd_prefix: String,
    /// `--etcd-keyfile`.
    pub etcd_keyfile: String,
    /// `--etcd-certfile`.
    pub etcd_certfile: String,
    /// `--etcd-cafile`.
    pub etcd_cafile: String,
    /// `--etcd-username`.
    pub etcd_username: String,
    /// `--etcd-password`.
    pub etcd_password: Secret,
    /// `--iface` (repeatable).
    pub iface: Vec<String>,
    /// `--iface-regex` (repeatable).
    pub iface_regex: Vec<String>,
    /// `--public-ip`.
    pub public_ip: Option<Ipv4Addr>,
    /// `--public-ipv6` (a dual-stack vxlan network's `PublicIPv6`).
    pub public_ipv6: Option<Ipv6Addr>,
    /// `--subnet-file`.
    pub subnet_file: String,
    /// `--subnet-lease-renew-margin`, minutes (1..1439).
    pub renew_margin_minutes: u32,
    /// [`TEST_LEASE_TTL_ENV`] (tests only; no flag): the subnet lease TTL instead of 24 h.
    pub test_lease_ttl: Option<Duration>,
    /// `--ip-masq`: the masquerade rules (and `FLANNEL_IPMASQ` in subnet.env).
    pub ip_masq: bool,
    /// Not `--ip-masq-fully-random-disable`: masquerade with `fully-random`.
    pub masq_fully_random: bool,
    /// `--iptables-forward-rules` (default true): accept forwarding from and to the
    /// network, with or without `--ip-masq`.
    pub forward_rules: bool,
    /// `--iptables-resync` (seconds, default 5): how often the firewall rules are checked
    /// against the kernel and rewritten when they differ.
    pub rules_resync: Duration,
    /// `--ip-blackhole-route`: a blackhole route for the node's own subnet(s).
    pub blackhole_route: bool,
    /// `--iface-can-reach`: the interface the kernel would route this address through.
    pub iface_can_reach: Option<std::net::IpAddr>,
    /// `--vxlan-tx-checksum-off` (not a Go flag): `tx-checksum-ip-generic` off on the vxlan
    /// devices, the workaround for the kernel bug behind flannel #1279/#2152.
    pub vxlan_tx_checksum_off: bool,
    /// `-v`, `-vmodule`, `-stderrthreshold`, `-skip_headers`: what the log prints.
    pub log: crate::log::LogConfig,
    /// The wireguard backend's private key file: `WIREGUARD_KEY_FILE`, else
    /// `/run/flannel/wgkey` (Go reads the same variable).
    pub wireguard_key_file: std::path::PathBuf,
    /// `FLANNELD_WIREGUARD_USERSPACE` set (not in Go): userspace WireGuard even where the
    /// kernel has the module.
    pub wireguard_userspace: bool,
    /// `--healthz-ip`.
    pub healthz_ip: String,
    /// `--healthz-port` (0: off).
    pub healthz_port: u16,
    /// `--metrics-port` (0: off): Prometheus metrics at `/metrics` on `--healthz-ip` (not a
    /// Go flanneld flag).
    pub metrics_port: u16,
    /// `--kube-subnet-mgr`: the node's subnet from the Kubernetes API, not etcd.
    pub kube_subnet_mgr: bool,
    /// The kube subnet manager's flags and environment (read only with
    /// `--kube-subnet-mgr`).
    pub kube: crate::kube::KubeOptions,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the agent.
    Run(Box<Options>),
    /// `--version`.
    Version,
    /// `-h`/`--help`.
    Help,
}

/// A command line Go's `flag` package would refuse too (exit 2), or a value flanneld refuses
/// (exit 1).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FlagError {
    /// Unknown flag.
    #[error("flag provided but not defined: -{0}")]
    Unknown(String),
    /// A non-boolean flag at the end of the line.
    #[error("flag needs an argument: -{0}")]
    NeedsArgument(String),
    /// A value of the wrong type.
    #[error("invalid value {value:?} for flag -{flag}: {reason}")]
    Invalid {
        /// The flag.
        flag: String,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A flag this etcd-only agent cannot honour.
    #[error("{0}")]
    Unsupported(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Str,
    List,
    Int,
    Bool,
}

/// Every flag Go flanneld defines (and klog's), with its kind. Flags of features this agent
/// does not have are accepted so that existing units run; the ones that change behaviour are
/// checked in [`parse`].
const FLAGS: &[(&str, Kind)] = &[
    ("etcd-endpoints", Kind::Str),
    ("etcd-prefix", Kind::Str),
    ("etcd-keyfile", Kind::Str),
    ("etcd-certfile", Kind::Str),
    ("etcd-cafile", Kind::Str),
    ("etcd-username", Kind::Str),
    ("etcd-password", Kind::Str),
    ("help", Kind::Bool),
    ("h", Kind::Bool),
    ("version", Kind::Bool),
    ("kube-subnet-mgr", Kind::Bool),
    ("kube-api-url", Kind::Str),
    ("kube-annotation-prefix", Kind::Str),
    ("kubeconfig-file", Kind::Str),
    ("iface", Kind::List),
    ("iface-regex", Kind::List),
    ("iface-can-reach", Kind::Str),
    ("subnet-file", Kind::Str),
    ("public-ip", Kind::Str),
    ("public-ipv6", Kind::Str),
    ("subnet-lease-renew-margin", Kind::Int),
    ("healthz-ip", Kind::Str),
    ("healthz-port", Kind::Int),
    ("metrics-port", Kind::Int),
    ("iptables-resync", Kind::Int),
    ("iptables-forward-rules", Kind::Bool),
    ("net-config-path", Kind::Str),
    ("set-node-network-unavailable", Kind::Bool),
    ("ip-masq", Kind::Bool),
    ("ip-masq-fully-random-disable", Kind::Bool),
    ("ip-blackhole-route", Kind::Bool),
    ("use-multi-cluster-cidr", Kind::Bool),
    ("vxlan-tx-checksum-off", Kind::Bool),
    // klog's flags. Go flanneld forces `logtostderr`, which makes the file flags no-ops;
    // they are accepted for the units of older releases that still pass them.
    ("v", Kind::Int),
    ("vmodule", Kind::Str),
    ("log_backtrace_at", Kind::Str),
    ("log_dir", Kind::Str),
    ("log_file", Kind::Str),
    ("log_file_max_size", Kind::Int),
    ("logtostderr", Kind::Bool),
    ("alsologtostderr", Kind::Bool),
    ("stderrthreshold", Kind::Str),
    ("skip_headers", Kind::Bool),
    ("skip_log_headers", Kind::Bool),
    ("add_dir_header", Kind::Bool),
    ("one_output", Kind::Bool),
];

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(v, 0, 64)` (decimal, `0x`, `0o`/leading `0`, `0b`, optional sign,
/// `_` separators after a prefix are rare enough to refuse).
fn parse_int(v: &str) -> Option<i64> {
    let (neg, digits) = match v.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let n = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(b) = digits
        .strip_prefix("0b")
        .or_else(|| digits.strip_prefix("0B"))
    {
        i64::from_str_radix(b, 2).ok()?
    } else if let Some(o) = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
    {
        i64::from_str_radix(o, 8).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if neg { -n } else { n })
}

fn check(name: &str, kind: Kind, value: &str) -> Result<(), FlagError> {
    let bad = |reason: &str| FlagError::Invalid {
        flag: name.into(),
        value: value.into(),
        reason: reason.into(),
    };
    match kind {
        Kind::Bool if parse_bool(value).is_none() => Err(bad("parse error")),
        Kind::Int if parse_int(value).is_none() => Err(bad("parse error")),
        _ => Ok(()),
    }
}

/// Parses the arguments (without the program name) and the environment.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Command, FlagError> {
    let mut set = command_line(args)?;
    fill_from_env(&mut set, env);
    options(&set, env)
}

/// The flags given and their values (a list flag's every value), as Go's `flag` reads a
/// command line.
fn command_line(args: &[String]) -> Result<BTreeMap<&'static str, Vec<String>>, FlagError> {
    let mut set: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            break;
        }
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            break; // Go stops at the first non-flag argument.
        };
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            // The error is printed: a mistyped `---etcd-password=...` must not print it.
            let shown = |s: &str| match s.split_once('=') {
                Some((n, _)) if n.contains("password") => format!("{n}=(redacted)"),
                _ => s.to_owned(),
            };
            return Err(FlagError::Invalid {
                flag: shown(body),
                value: shown(arg),
                reason: "bad flag syntax".into(),
            });
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        let Some(&(canon, kind)) = FLAGS.iter().find(|(n, _)| *n == name) else {
            return Err(FlagError::Unknown(name.into()));
        };
        let value = match (inline, kind) {
            (Some(v), _) => v,
            (None, Kind::Bool) => "true".to_owned(),
            (None, _) => {
                let v = args
                    .get(i)
                    .cloned()
                    .ok_or_else(|| FlagError::NeedsArgument(name.into()))?;
                i += 1;
                v
            }
        };
        check(canon, kind, &value)?;
        let slot = set.entry(canon).or_default();
        if kind == Kind::List {
            slot.push(value);
        } else {
            *slot = vec![value];
        }
    }
    Ok(set)
}

/// The environment fills what the command line left unset; a bad value is logged and
/// ignored, as coreos' `flagutil.SetFlagsFromEnv` does.
fn fill_from_env(
    set: &mut BTreeMap<&'static str, Vec<String>>,
    env: &dyn Fn(&str) -> Option<String>,
) {
    for &(name, kind) in FLAGS {
        if set.contains_key(name) {
            continue;
        }
        let var = format!("FLANNELD_{}", name.to_uppercase().replace(['-', '.'], "_"));
        if let Some(v) = env(&var) {
            match check(name, kind, &v) {
                Ok(()) => {
                    set.insert(name, vec![v]);
                }
                Err(e) => error!("{var}: {e} (ignored)"),
            }
        }
    }
}

/// The command the flags ask for, with their values checked.
fn options(
    set: &BTreeMap<&'static str, Vec<String>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, FlagError> {
    let last = |n: &str| set.get(n).and_then(|v| v.last()).cloned();
    let flag = |n: &str| last(n).and_then(|v| parse_bool(&v)).unwrap_or(false);
    let int = |n: &str, d: i64| last(n).and_then(|v| parse_int(&v)).unwrap_or(d);
    let string = |n: &str, d: &str| last(n).unwrap_or_else(|| d.to_owned());
    if flag("help") || flag("h") {
        return Ok(Command::Help);
    }
    if flag("version") {
        return Ok(Command::Version);
    }
    let kube_subnet_mgr = flag("kube-subnet-mgr");
    let kube = if kube_subnet_mgr {
        kube_options(&last, env)?
    } else {
        crate::kube::KubeOptions::default()
    };
    let iface_can_reach = address::<std::net::IpAddr>(&last, "iface-can-reach", "an IP address")?;
    refuse_unsupported(&last, &flag)?;
    let resync = int("iptables-resync", 5);
    if !(1..=86_400).contains(&resync) {
        return Err(FlagError::Invalid {
            flag: "iptables-resync".into(),
            value: resync.to_string(),
            reason: "the firewall check period must be 1..86400 seconds".into(),
        });
    }
    let log = log_config(&last)?;
    let margin = int("subnet-lease-renew-margin", 60);
    if !(1..=1439).contains(&margin) {
        return Err(FlagError::Invalid {
            flag: "subnet-lease-renew-margin".into(),
            value: margin.to_string(),
            reason: "out of the acceptable range 1..1439 (minutes)".into(),
        });
    }
    let test_lease_ttl = test_lease_ttl(env)?;
    let public_ip = address::<Ipv4Addr>(&last, "public-ip", "an IPv4 address")?;
    let public_ipv6 = address::<Ipv6Addr>(&last, "public-ipv6", "an IPv6 address")?;
    let healthz_port = port("healthz-port", int("healthz-port", 0))?;
    let metrics_port = port("metrics-port", int("metrics-port", 0))?;
    let list = |n: &str| -> Vec<String> {
        set.get(n)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !v.is_empty())
            .collect()
    };
    Ok(Command::Run(Box::new(Options {
        etcd_endpoints: string("etcd-endpoints", DEFAULT_ENDPOINTS)
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        etcd_prefix: string("etcd-prefix", crate::etcd::DEFAULT_PREFIX),
        etcd_keyfile: string("etcd-keyfile", ""),
        etcd_certfile: string("etcd-certfile", ""),
        etcd_cafile: string("etcd-cafile", ""),
        etcd_username: string("etcd-username", ""),
        etcd_password: Secret(string("etcd-password", "")),
        iface: list("iface"),
        iface_regex: list("iface-regex"),
        public_ip,
        public_ipv6,
        subnet_file: string("subnet-file", DEFAULT_SUBNET_FILE),
        renew_margin_minutes: margin as u32,
        test_lease_ttl,
        ip_masq: flag("ip-masq"),
        masq_fully_random: !flag("ip-masq-fully-random-disable"),
        forward_rules: last("iptables-forward-rules")
            .and_then(|v| parse_bool(&v))
            .unwrap_or(true),
        rules_resync: Duration::from_secs(resync as u64),
        blackhole_route: flag("ip-blackhole-route"),
        iface_can_reach,
        vxlan_tx_checksum_off: flag("vxlan-tx-checksum-off"),
        log,
        wireguard_key_file: env(WIREGUARD_KEY_FILE_ENV)
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| crate::backend::wireguard::DEFAULT_KEY_FILE.to_owned())
            .into(),
        wireguard_userspace: env(WIREGUARD_USERSPACE_ENV).is_some_and(|v| !v.is_empty()),
        healthz_ip: string("healthz-ip", "0.0.0.0"),
        healthz_port,
        metrics_port,
        kube_subnet_mgr,
        kube,
    })))
}

/// Flag `name`'s address, if given and not empty; refused when it is not `what`.
fn address<T: std::str::FromStr>(
    last: &dyn Fn(&str) -> Option<String>,
    name: &str,
    what: &str,
) -> Result<Option<T>, FlagError> {
    match last(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse::<T>().map(Some).map_err(|_| FlagError::Invalid {
            flag: name.into(),
            value: v.clone(),
            reason: format!("not {what}"),
        }),
    }
}

/// Flag `name`'s value as a port.
fn port(name: &str, value: i64) -> Result<u16, FlagError> {
    u16::try_from(value).map_err(|_| FlagError::Invalid {
        flag: name.into(),
        value: value.to_string(),
        reason: "not a port".into(),
    })
}

/// Flags Go accepts that this agent refuses when they ask for something, with the reason.
fn refuse_unsupported(
    last: &dyn Fn(&str) -> Option<String>,
    flag: &dyn Fn(&str) -> bool,
) -> Result<(), FlagError> {
    if flag("use-multi-cluster-cidr") {
        return Err(FlagError::Unsupported(
            "--use-multi-cluster-cidr: the MultiClusterCIDR API left Kubernetes (1.31) and Go flannel (v0.26); the node's podCIDRs are used".into(),
        ));
    }
    if last("logtostderr").and_then(|v| parse_bool(&v)) == Some(false) {
        return Err(FlagError::Unsupported(
            "--logtostderr=false: log files are not written (Go flanneld forces logtostderr too); the log goes to stderr (journald, kubectl logs)".into(),
        ));
    }
    if last("log_backtrace_at").is_some_and(|v| !v.is_empty()) {
        return Err(FlagError::Unsupported(
            "--log_backtrace_at names a line of Go's source files, which this agent does not have"
                .into(),
        ));
    }
    if flag("add_dir_header") {
        return Err(FlagError::Unsupported(
            "--add_dir_header: the log header names no source file here (only \"flanneld]\")"
                .into(),
        ));
    }
    Ok(())
}

/// `-v`, `-vmodule`, `-stderrthreshold` and `-skip_headers`, as klog reads them.
fn log_config(last: &dyn Fn(&str) -> Option<String>) -> Result<crate::log::LogConfig, FlagError> {
    let bad = |flag: &str, value: &str, reason: &str| FlagError::Invalid {
        flag: flag.into(),
        value: value.into(),
        reason: reason.into(),
    };
    let verbosity = match last("v").filter(|v| !v.is_empty()) {
        None => 0,
        // klog takes any 32-bit level; below 0 nothing beyond V(0) prints, as at 0.
        Some(v) => parse_int(&v)
            .filter(|n| i32::try_from(*n).is_ok())
            .map(|n| u32::try_from(n).unwrap_or(0))
            .ok_or_else(|| bad("v", &v, "not a verbosity level (a 32-bit number)"))?,
    };
    let vmodule = match last("vmodule").filter(|v| !v.is_empty()) {
        None => Vec::new(),
        Some(v) => crate::log::parse_vmodule(&v).map_err(|reason| bad("vmodule", &v, &reason))?,
    };
    let threshold = match last("stderrthreshold").filter(|v| !v.is_empty()) {
        None => crate::log::Severity::Info,
        Some(v) => crate::log::Severity::parse(&v).ok_or_else(|| {
            bad(
                "stderrthreshold",
                &v,
                "not INFO, WARNING, ERROR or FATAL (or 0..3)",
            )
        })?,
    };
    let skip_headers = last("skip_headers")
        .and_then(|v| parse_bool(&v))
        .unwrap_or(false);
    Ok(crate::log::LogConfig {
        verbosity,
        vmodule,
        threshold,
        skip_headers,
    })
}

/// The largest `EVENT_QUEUE_DEPTH` taken: a thousand times Go's default, many times any
/// cluster's Node count (and far below where tokio's channel would refuse, or panic).
const MAX_QUEUE_DEPTH: i64 = 5_000_000;

/// The kube subnet manager's flags, and the environment Go's reads (`NODE_NAME`,
/// `POD_NAME`, `POD_NAMESPACE`, `EVENT_QUEUE_DEPTH`, `CONT_WHEN_CACHE_NOT_READY`).
fn kube_options(
    last: &dyn Fn(&str) -> Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<crate::kube::KubeOptions, FlagError> {
    let d = crate::kube::KubeOptions::default();
    let var = |n: &str| env(n).unwrap_or_default();
    let queue_depth = match env("EVENT_QUEUE_DEPTH").filter(|v| !v.is_empty()) {
        None => d.queue_depth,
        // Go's strconv.Atoi: decimal only.
        Some(v) => match v.parse::<i64>().ok() {
            // Go: a number up to 0 keeps the default.
            Some(n) if n > MAX_QUEUE_DEPTH => {
                return Err(FlagError::Invalid {
                    flag: "EVENT_QUEUE_DEPTH".into(),
                    value: v,
                    reason: format!(
                        "more than {MAX_QUEUE_DEPTH} queued events: Go allocates the queue up front (gigabytes at this size)"
                    ),
                });
            }
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            Some(_) => d.queue_depth,
            None => {
                return Err(FlagError::Invalid {
                    flag: "EVENT_QUEUE_DEPTH".into(),
                    value: v,
                    reason: "format error: not a number".into(),
                });
            }
        },
    };
    Ok(crate::kube::KubeOptions {
        api_url: last("kube-api-url").unwrap_or_default(),
        kubeconfig: last("kubeconfig-file").unwrap_or_default(),
        annotation_prefix: last("kube-annotation-prefix").unwrap_or(d.annotation_prefix),
        net_config_path: last("net-config-path")
            .map(std::path::PathBuf::from)
            .unwrap_or(d.net_config_path),
        set_node_network_unavailable: last("set-node-network-unavailable")
            .and_then(|v| parse_bool(&v))
            .unwrap_or(true),
        node_name: var("NODE_NAME"),
        pod_name: var("POD_NAME"),
        pod_namespace: var("POD_NAMESPACE"),
        queue_depth,
        continue_when_cache_not_ready: var("CONT_WHEN_CACHE_NOT_READY") == "true",
        watch_timeout: test_watch_timeout(env)?.unwrap_or(d.watch_timeout),
    })
}

/// The wireguard backend's key file, as Go names the variable.
pub const WIREGUARD_KEY_FILE_ENV: &str = "WIREGUARD_KEY_FILE";

/// Set (to anything but the empty string): the wireguard backend runs userspace WireGuard even where the kernel
/// has the module (its tests, or an operator who wants the agent's device). Not in Go.
pub const WIREGUARD_USERSPACE_ENV: &str = "FLANNELD_WIREGUARD_USERSPACE";

/// The test-only environment variable that replaces the 5-minute timeout of a watch of the
/// Nodes (seconds, 2..=300), so that tests see watches end and start again within seconds
/// (an apiserver frozen past it, a revoked permission noticed). Not a flag, not in Go.
pub const TEST_WATCH_TIMEOUT_ENV: &str = "FLANNELD_TEST_WATCH_TIMEOUT";

fn test_watch_timeout(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Duration>, FlagError> {
    test_seconds(
        env,
        TEST_WATCH_TIMEOUT_ENV,
        2..=300,
        ("watches of the Nodes last", "5 minutes", "watch timeout"),
    )
}

/// A test-only number of seconds from `var` in `range` (unset or empty: `None`), logged as
/// "<what> N s instead of <instead>"; refused naming the `name` it is.
fn test_seconds(
    env: &dyn Fn(&str) -> Option<String>,
    var: &str,
    range: std::ops::RangeInclusive<u64>,
    (what, instead, name): (&str, &str, &str),
) -> Result<Option<Duration>, FlagError> {
    let Some(v) = env(var).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    match v.trim().parse::<u64>() {
        Ok(secs) if range.contains(&secs) => {
            warning!("{var}={secs}: {what} {secs} s instead of {instead} (for tests only)");
            Ok(Some(Duration::from_secs(secs)))
        }
        _ => Err(FlagError::Invalid {
            flag: var.into(),
            value: v,
            reason: format!(
                "the test-only {name} must be whole seconds in {}..={}",
                range.start(),
                range.end()
            ),
        }),
    }
}

/// The test-only environment variable that replaces the 24 h subnet lease TTL (seconds,
/// [`TEST_LEASE_TTL_RANGE`]), so that tests see leases expire and renew within seconds. Not a
/// flag and not in Go flanneld: production nodes leave it unset.
pub const TEST_LEASE_TTL_ENV: &str = "FLANNELD_TEST_LEASE_TTL";
/// The seconds [`TEST_LEASE_TTL_ENV`] accepts: from etcd's minimum lease TTL (5 s, with a
/// margin for its election ticks) up to Go's 24 h.
pub const TEST_LEASE_TTL_RANGE: std::ops::RangeInclusive<u64> = 5..=86_400;

/// [`TEST_LEASE_TTL_ENV`], validated (unset or empty: `None`).
fn test_lease_ttl(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Duration>, FlagError> {
    test_seconds(
        env,
        TEST_LEASE_TTL_ENV,
        TEST_LEASE_TTL_RANGE,
        ("subnet leases last", "24 h", "lease TTL"),
    )
}

/// The usage text (`-h`).
pub fn usage() -> String {
    let mut s = String::from("Usage of flanneld:\n");
    for (name, kind) in FLAGS {
        let t = match kind {
            Kind::Str | Kind::List => " string",
            Kind::Int => " int",
            Kind::Bool => "",
        };
        s += &format!("  -{name}{t}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn run(v: &[&str], env: &[(&str, &str)]) -> Result<Options, FlagError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match parse(&args(v), &|k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })? {
            Command::Run(o) => Ok(*o),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wireguard_userspace_is_read_from_its_variable() {
        let userspace = |env: &[(&str, &str)]| run(&[], env).unwrap().wireguard_userspace;
        assert!(!userspace(&[]));
        assert!(!userspace(&[(WIREGUARD_USERSPACE_ENV, "")]));
        assert!(userspace(&[(WIREGUARD_USERSPACE_ENV, "1")]));
    }

    #[test]
    fn test_lease_ttl_is_validated() {
        assert_eq!(run(&[], &[]).unwrap().test_lease_ttl, None);
        assert_eq!(
            run(&[], &[(TEST_LEASE_TTL_ENV, "")])
                .unwrap()
                .test_lease_ttl,
            None
        );
        assert_eq!(
            run(&[], &[(TEST_LEASE_TTL_ENV, "6")])
                .unwrap()
                .test_lease_ttl,
            Some(Duration::from_secs(6))
        );
        for bad in ["4", "86401", "-1", "6s", "x"] {
            let e = run(&[], &[(TEST_LEASE_TTL_ENV, bad)]).unwrap_err();
            assert!(
                e.to_string()
                    .contains("test-only lease TTL must be whole seconds in 5..=86400"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn defaults_are_gos() {
        let o = run(&[], &[]).unwrap();
        assert_eq!(
            o.etcd_endpoints,
            ["http://127.0.0.1:4001", "http://127.0.0.1:2379"]
        );
        assert_eq!(o.etcd_prefix, "/coreos.com/network");
        assert_eq!(o.subnet_file, "/run/flannel/subnet.env");
        assert_eq!(o.renew_margin_minutes, 60);
        assert_eq!(
            (o.ip_masq, o.healthz_ip.as_str(), o.healthz_port),
            (false, "0.0.0.0", 0)
        );
    }

    #[test]
    fn firewall_route_and_log_flags_as_go_reads_them() {
        let o = run(&[], &[]).unwrap();
        assert!(o.forward_rules && o.masq_fully_random && !o.blackhole_route);
        assert_eq!(o.rules_resync, Duration::from_secs(5));
        assert_eq!(o.log, crate::log::LogConfig::default());
        assert_eq!(o.iface_can_reach, None);
        let o = run(
            &[
                "--ip-masq-fully-random-disable",
                "--iptables-forward-rules=false",
                "--iptables-resync=30",
                "--ip-blackhole-route",
                "--iface-can-reach=fd00::1",
                "-v=4",
                "-vmodule=stack=6,hostgw=1",
                "-stderrthreshold=WARNING",
                "-skip_headers",
                "--vxlan-tx-checksum-off",
                "--log_dir=/var/log/flannel",
                "--logtostderr",
            ],
            &[],
        )
        .unwrap();
        assert!(!o.forward_rules && !o.masq_fully_random && o.blackhole_route);
        assert!(o.vxlan_tx_checksum_off);
        assert_eq!(o.rules_resync, Duration::from_secs(30));
        assert_eq!(o.iface_can_reach, Some("fd00::1".parse().unwrap()));
        assert_eq!(o.log.verbosity, 4);
        assert_eq!(
            o.log.vmodule,
            [("stack".to_owned(), 6), ("hostgw".to_owned(), 1)]
        );
        assert_eq!(o.log.threshold, crate::log::Severity::Warning);
        assert!(o.log.skip_headers);
        assert_eq!(
            run(&["-v=-1"], &[]).unwrap().log.verbosity,
            0,
            "klog takes it"
        );
        // The environment, as for every flag.
        let o = run(
            &[],
            &[
                ("FLANNELD_IPTABLES_FORWARD_RULES", "false"),
                ("FLANNELD_IP_BLACKHOLE_ROUTE", "true"),
            ],
        )
        .unwrap();
        assert!(!o.forward_rules && o.blackhole_route);
        // Bad values and flags that ask for what this agent does not do: refused, with why.
        for (bad, why) in [
            (&["--iface-can-reach=eth0"][..], "not an IP address"),
            (&["--iptables-resync=0"], "1..86400"),
            (&["-v=4294967296"], "verbosity"),
            (&["-vmodule=stack"], "pattern=N"),
            (&["-stderrthreshold=LOUD"], "INFO, WARNING"),
            (&["--use-multi-cluster-cidr"], "MultiClusterCIDR"),
            (&["--logtostderr=false"], "log files are not written"),
            (&["--log_backtrace_at=main.go:120"], "Go's source files"),
            (&["--add_dir_header"], "no source file"),
        ] {
            let e = run(bad, &[]).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        // Through the whole program: exit 1 for a refused value, 2 for an unknown flag.
        let no_env = |_: &str| None;
        assert_eq!(
            crate::main_with(&args(&["--use-multi-cluster-cidr"]), &no_env),
            1
        );
        assert_eq!(
            crate::main_with(&args(&["--iface-can-reach=x"]), &no_env),
            1
        );
        assert_eq!(crate::main_with(&args(&["--no-such-flag"]), &no_env), 2);
        assert_eq!(
            crate::main_with(&args(&["--iptables-resync=x"]), &no_env),
            2
        );
    }

    #[test]
    fn test_watch_timeout_is_validated() {
        let kube = |v: &str| {
            run(
                &["--kube-subnet-mgr"],
                &[(TEST_WATCH_TIMEOUT_ENV, v), ("NODE_NAME", "n1")],
            )
        };
        assert_eq!(
            kube("4").unwrap().kube.watch_timeout,
            Duration::from_secs(4)
        );
        assert_eq!(
            kube("").unwrap().kube.watch_timeout,
            Duration::from_secs(300)
        );
        for bad in ["1", "301", "x"] {
            assert!(
                kube(bad).unwrap_err().to_string().contains("2..=300"),
                "{bad}"
            );
        }
    }

    /// The unit ansible-role-flanneld renders from its `flannel_settings`.
    #[test]
    fn ansible_role_unit_runs_unchanged() {
        let o = run(
            &[
                "--etcd-cafile=/var/lib/kubernetes/ca-etcd.pem",
                "--etcd-certfile=/var/lib/kubernetes/cert-etcd.pem",
                "--etcd-keyfile=/var/lib/kubernetes/cert-etcd-key.pem",
                "--etcd-prefix=/kubernetes-cluster/network",
                "--etcd-endpoints=https://10.8.0.101:2379,https://10.8.0.102:2379",
                "--iface=tap0",
                "--public-ip=10.8.0.111",
                "--log_dir=/var/log/flannel",
                "--subnet-file=/run/flannel/subnet.env",
                "--ip-masq=true",
                "--healthz-ip=0.0.0.0",
                "--healthz-port=0",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(o.etcd_endpoints.len(), 2);
        assert_eq!(o.etcd_prefix, "/kubernetes-cluster/network");
        assert_eq!(o.iface, ["tap0"]);
        assert_eq!(o.public_ip, Some(Ipv4Addr::new(10, 8, 0, 111)));
        assert!(o.ip_masq);
        assert_eq!(o.etcd_keyfile, "/var/lib/kubernetes/cert-etcd-key.pem");
    }

    #[test]
    fn go_flag_syntax() {
        let o = run(
            &[
                "-iface",
                "eth0",
                "--iface=10.0.0.2",
                "-ip-masq",
                "-healthz-port",
                "0x1f90",
                "-subnet-lease-renew-margin=1",
                "rest",
                "-bogus",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(o.iface, ["eth0", "10.0.0.2"]);
        assert!(o.ip_masq);
        assert_eq!(o.healthz_port, 8080);
        assert_eq!(o.renew_margin_minutes, 1);
        assert!(!run(&["--ip-masq=false"], &[]).unwrap().ip_masq);
        assert_eq!(
            run(&["--bogus"], &[]).unwrap_err(),
            FlagError::Unknown("bogus".into())
        );
        assert_eq!(
            run(&["--iface"], &[]).unwrap_err(),
            FlagError::NeedsArgument("iface".into())
        );
        assert!(run(&["--ip-masq=yes"], &[]).is_err());
        assert!(run(&["--subnet-lease-renew-margin=1440"], &[]).is_err());
        assert!(run(&["--subnet-lease-renew-margin=0"], &[]).is_err());
        assert!(run(&["--public-ip=fc00::1"], &[]).is_err());
        assert!(run(&["--public-ipv6=10.0.0.1"], &[]).is_err());
        assert_eq!(
            run(&["--public-ipv6=fd00:5::2"], &[]).unwrap().public_ipv6,
            Some("fd00:5::2".parse().unwrap())
        );
        assert!(run(&["--kube-subnet-mgr"], &[("EVENT_QUEUE_DEPTH", "5k")]).is_err());
        // Before: a depth above tokio's channel limit was taken, and the watch panicked.
        for huge in ["5000001", "9223372036854775807"] {
            let e = run(&["--kube-subnet-mgr"], &[("EVENT_QUEUE_DEPTH", huge)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("more than 5000000 queued events"), "{e}");
        }
        assert_eq!(
            parse(&args(&["--version"]), &|_| None).unwrap(),
            Command::Version
        );
        assert_eq!(parse(&args(&["-h"]), &|_| None).unwrap(), Command::Help);
    }

    #[test]
    fn kube_flannel_daemonset_args_and_env() {
        // kube-flannel.yml's container: args and env as the DaemonSet sets them.
        let env = [
            ("POD_NAME", "kube-flannel-ds-x7k2p"),
            ("POD_NAMESPACE", "kube-flannel"),
            ("EVENT_QUEUE_DEPTH", "5000"),
            ("CONT_WHEN_CACHE_NOT_READY", "false"),
        ];
        let o = run(
            &["--ip-masq", "--kube-subnet-mgr", "--healthz-port=8081"],
            &env,
        )
        .unwrap();
        assert!(o.kube_subnet_mgr && o.ip_masq);
        assert_eq!(o.healthz_port, 8081);
        let k = &o.kube;
        assert_eq!(
            (k.pod_name.as_str(), k.pod_namespace.as_str()),
            ("kube-flannel-ds-x7k2p", "kube-flannel")
        );
        assert_eq!(
            k.net_config_path,
            std::path::Path::new("/etc/kube-flannel/net-conf.json")
        );
        assert_eq!(k.annotation_prefix, "flannel.alpha.coreos.com");
        assert!(k.set_node_network_unavailable && !k.continue_when_cache_not_ready);
        assert_eq!(k.queue_depth, 5000);
        // The other flags and variables, as a systemd unit with a kubeconfig sets them.
        let o = run(
            &[
                "-kube-subnet-mgr",
                "-kubeconfig-file=/etc/flannel/kubeconfig",
                "-kube-api-url",
                "https://10.0.0.1:6443",
                "-kube-annotation-prefix=example.com/net",
                "-net-config-path=/etc/flannel/net-conf.json",
                "-set-node-network-unavailable=false",
            ],
            &[
                ("NODE_NAME", "node-1"),
                ("EVENT_QUEUE_DEPTH", "0"),
                ("CONT_WHEN_CACHE_NOT_READY", "true"),
            ],
        )
        .unwrap();
        let k = &o.kube;
        assert_eq!(k.kubeconfig, "/etc/flannel/kubeconfig");
        assert_eq!(k.api_url, "https://10.0.0.1:6443");
        assert_eq!(k.annotation_prefix, "example.com/net");
        assert_eq!(
            k.net_config_path,
            std::path::Path::new("/etc/flannel/net-conf.json")
        );
        assert!(!k.set_node_network_unavailable && k.continue_when_cache_not_ready);
        assert_eq!((k.node_name.as_str(), k.queue_depth), ("node-1", 5000));
        assert_eq!(
            run(&["--kube-subnet-mgr"], &[("EVENT_QUEUE_DEPTH", "64")])
                .unwrap()
                .kube
                .queue_depth,
            64
        );
    }

    #[test]
    fn environment_fallbacks() {
        let env = [
            ("FLANNELD_ETCD_ENDPOINTS", "http://10.0.0.1:2379"),
            ("FLANNELD_IFACE", "eth1"),
            ("FLANNELD_IP_MASQ", "true"),
            ("FLANNELD_ETCD_PREFIX", "/env/net"),
            ("FLANNELD_HEALTHZ_PORT", "nonsense"),
        ];
        let o = run(&["--etcd-prefix=/cli/net"], &env).unwrap();
        assert_eq!(o.etcd_endpoints, ["http://10.0.0.1:2379"]);
        assert_eq!(o.iface, ["eth1"]);
        assert!(o.ip_masq);
        assert_eq!(o.etcd_prefix, "/cli/net", "the command line wins");
        assert_eq!(o.healthz_port, 0, "a bad value is ignored");
    }

    #[test]
    fn a_mistyped_password_flag_is_not_printed() {
        // Before: "invalid value \"---etcd-password=s3cret\" for flag --etcd-password=s3cret".
        let e = parse(&["---etcd-password=s3cret".to_owned()], &|_| None).unwrap_err();
        let text = e.to_string();
        assert!(
            !text.contains("s3cret") && text.contains("bad flag syntax"),
            "{text}"
        );
        assert!(text.contains("---etcd-password=(redacted)"), "{text}");
    }

    #[test]
    fn the_options_debug_output_leaves_the_password_out() {
        // Before: a derived Debug of Options printed `etcd_password: "s3cret"`.
        let o = run(&["--etcd-password=s3cret"], &[]).unwrap();
        assert_eq!(o.etcd_password.0, "s3cret");
        let text = format!("{o:?}");
        assert!(
            !text.contains("s3cret") && text.contains("(redacted)"),
            "{text}"
        );
    }

    #[test]
    fn metrics_port_flag_and_environment() {
        assert_eq!(run(&[], &[]).unwrap().metrics_port, 0, "off by default");
        assert_eq!(
            run(&["--metrics-port=9472"], &[]).unwrap().metrics_port,
            9472
        );
        let env = [("FLANNELD_METRICS_PORT", "9100")];
        assert_eq!(run(&[], &env).unwrap().metrics_port, 9100);
        assert_eq!(
            run(&["-metrics-port", "9200"], &env).unwrap().metrics_port,
            9200
        );
        assert!(run(&["--metrics-port=70000"], &[]).is_err());
    }
}
