//! The `CNI_*` environment: which variables each command needs, parsed and validated.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::error::CniError;
use crate::validate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "GC" => Self::Gc,
            "STATUS" => Self::Status,
            "VERSION" => Self::Version,
            other => {
                return Err(CniError::invalid_env(
                    format!("unknown CNI_COMMAND: {}", other.escape_debug()),
                    "",
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Gc => "GC",
            Self::Status => "STATUS",
            Self::Version => "VERSION",
        }
    }

    /// Whether the command concerns one attachment (container ID + interface).
    pub fn has_attachment(self) -> bool {
        matches!(self, Self::Add | Self::Del | Self::Check)
    }
}

/// The variables in the spec's order, which is also the order of the "missing" message.
pub const VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

fn required(command: Command, var: &str) -> bool {
    match var {
        "CNI_COMMAND" => true,
        "CNI_CONTAINERID" | "CNI_IFNAME" => command.has_attachment(),
        "CNI_NETNS" => matches!(command, Command::Add | Command::Check),
        // The spec makes CNI_PATH optional for STATUS; the Go skeleton wrongly demands it.
        "CNI_PATH" => matches!(
            command,
            Command::Add | Command::Del | Command::Check | Command::Gc
        ),
        _ => false,
    }
}

/// The parsed environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub command: Command,
    /// Validated; empty for GC, STATUS and VERSION.
    pub container_id: String,
    /// `None` when unset or empty (allowed for DEL).
    pub netns: Option<PathBuf>,
    /// Validated; empty for GC, STATUS and VERSION.
    pub ifname: String,
    /// Raw `CNI_ARGS`; each plugin parses the keys it knows with [`crate::args`].
    pub args: String,
    pub path: Vec<PathBuf>,
    /// `CNI_NETNS_OVERRIDE`: skip the "container netns is the plugin's own" safety check.
    pub netns_override: bool,
}

impl Environment {
    /// Reads and validates the environment. `Ok(None)` means `CNI_COMMAND` is unset: the
    /// caller prints the about text.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Option<Environment>, CniError> {
        let get = |name: &'static str| -> Result<String, CniError> {
            match lookup(name) {
                None => Ok(String::new()),
                Some(v) => v.into_string().map_err(|v| {
                    CniError::invalid_env(
                        format!("{name} is not valid UTF-8"),
                        v.to_string_lossy().escape_debug().to_string(),
                    )
                }),
            }
        };
        if lookup("CNI_COMMAND").is_none() {
            return Ok(None);
        }
        let command = Command::parse(&get("CNI_COMMAND")?)?;
        let mut values = Vec::with_capacity(VARS.len());
        for var in VARS {
            values.push(get(var)?);
        }
        let missing: Vec<&'static str> = VARS
            .iter()
            .zip(&values)
            .filter(|(var, value)| value.is_empty() && required(command, var))
            .map(|(var, _)| *var)
            .collect();
        if !missing.is_empty() {
            return Err(CniError::MissingEnv(missing));
        }
        let [_, container_id, netns, ifname, args, path] =
            <[String; 6]>::try_from(values).map_err(|_| CniError::invalid_env("env", ""))?;
        if command.has_attachment() {
            validate::container_id(&container_id)?;
            validate::interface_name(&ifname)?;
        }
        let netns_override = matches!(
            get("CNI_NETNS_OVERRIDE")?.as_str(),
            "1" | "true" | "TRUE" | "True"
        );
        Ok(Some(Environment {
            command,
            container_id: if command.has_attachment() {
                container_id
            } else {
                String::new()
            },
            netns: (!netns.is_empty()).then(|| PathBuf::from(netns)),
            ifname: if command.has_attachment() {
                ifname
            } else {
                String::new()
            },
            args,
            path: split_path(&path),
            netns_override,
        }))
    }
}

/// Splits `CNI_PATH` on `:`, dropping empty entries.
pub fn split_path(raw: &str) -> Vec<PathBuf> {
    raw.split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<Environment>, CniError> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Environment::from_lookup(|k| map.get(k).cloned())
    }

    fn err(pairs: &[(&str, &str)]) -> (u32, String) {
        let e = env(pairs).err().unwrap();
        (e.code(), e.to_string())
    }

    const FULL: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
    ];

    #[test]
    fn no_command_means_about() {
        assert_eq!(env(&[]).unwrap(), None);
    }

    #[test]
    fn full_add() {
        let e = env(&FULL).unwrap().unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.netns, Some(PathBuf::from("/var/run/netns/x")));
        assert_eq!(
            e.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
    }

    #[test]
    fn missing_vars_in_spec_order() {
        assert_eq!(
            err(&[("CNI_COMMAND", "ADD")]),
            (
                4,
                "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"
                    .into()
            )
        );
        assert_eq!(
            err(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c")]),
            (
                4,
                "required env variables [CNI_IFNAME,CNI_PATH] missing".into()
            )
        );
        assert_eq!(
            err(&[("CNI_COMMAND", "GC")]),
            (4, "required env variables [CNI_PATH] missing".into())
        );
        // Empty counts as missing.
        let mut add = FULL.to_vec();
        add[2].1 = "";
        assert_eq!(
            err(&add),
            (4, "required env variables [CNI_NETNS] missing".into())
        );
    }

    #[test]
    fn del_without_netns_and_status_without_path() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
            ("CNI_NETNS", ""),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(e.netns, None);
        assert!(env(&[("CNI_COMMAND", "STATUS")]).unwrap().is_some());
        assert!(env(&[("CNI_COMMAND", "VERSION")]).unwrap().is_some());
    }

    #[test]
    fn unknown_command_and_bad_names() {
        assert_eq!(
            err(&[("CNI_COMMAND", "FOO")]),
            (4, "unknown CNI_COMMAND: FOO".into())
        );
        assert_eq!(err(&[("CNI_COMMAND", "add")]).0, 4);
        let mut add = FULL.to_vec();
        add[1].1 = "../../etc";
        assert_eq!(err(&add), (4, "invalid characters in containerID".into()));
        let mut add = FULL.to_vec();
        add[3].1 = "eth/0";
        assert_eq!(
            err(&add),
            (
                4,
                "interface name contains / or : or whitespace characters".into()
            )
        );
    }

    #[test]
    fn non_utf8_is_rejected() {
        use std::os::unix::ffi::OsStringExt;
        let e = Environment::from_lookup(|k| match k {
            "CNI_COMMAND" => Some("DEL".into()),
            "CNI_CONTAINERID" => Some(OsString::from_vec(vec![0xff, 0x61])),
            _ => Some("x".into()),
        });
        assert_eq!(e.err().map(|e| e.code()), Some(4));
    }
}
