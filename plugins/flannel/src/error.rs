//! flannel's failures and their CNI codes. A failed file operation keeps its `io::Error` and
//! the path; a failed delegate keeps its `CniError` (code, message and details).

use std::io;
use std::path::{Path, PathBuf};

use cni_common::error::code;
use cni_common::{CniError, Command};

#[derive(Debug, thiserror::Error)]
pub enum FlannelError {
    /// flannel's keys cannot be used (7).
    #[error("{0}")]
    Config(String),
    /// flanneld has not written subnet.env yet: try again later (11); STATUS reports 50.
    #[error(
        "{} does not exist: flanneld has not written it yet; check that the flannel pod on this \
         node is running",
        .path.display()
    )]
    SubnetEnvMissing {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// subnet.env exists but cannot be read: try again later (11).
    #[error("cannot read {}: {source}", .path.display())]
    SubnetEnvUnreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// subnet.env does not say what flannel needs (7); `reason` names the line or the keys.
    #[error(
        "failed to load flannel 'subnet.env' file: {}. Check the flannel pod log for this node.",
        subnet_env_reason(.path, .reason)
    )]
    SubnetEnvInvalid { path: PathBuf, reason: String },
    /// From the library (config decoding, finding the delegate): the code is kept.
    #[error(transparent)]
    Cni(#[from] CniError),
    /// The delegate plugin failed; its code and details are kept. ADD's and DEL's messages say
    /// so in front, as the Go plugin's do; CHECK, STATUS and GC pass the delegate's on as is.
    #[error("{}", delegate_message(*.command, .source))]
    Delegate {
        command: Command,
        #[source]
        source: CniError,
    },
    /// A saved delegate config (or its directory) could not be written, read or removed (104).
    #[error("{what} {}: {source}", .path.display())]
    State {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// CHECK: the saved delegate config is not JSON (104).
    #[error("saved delegate config is not JSON: {source}")]
    SavedNotJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// CHECK: no saved delegate config for the container (103).
    #[error("no saved delegate config for container {id} in {}", .dir.display())]
    NotSaved { id: String, dir: PathBuf },
    /// The delegate config could not be encoded as JSON (7). serde_json does not fail on a
    /// map of JSON values; this keeps an empty config from ever reaching the delegate.
    #[error("cannot encode the delegate config: {0}")]
    Encode(#[source] serde_json::Error),
    /// STATUS: ADD could not succeed now (50), for the reason inside.
    #[error("{0}")]
    NotAvailable(#[source] Box<FlannelError>),
}

fn subnet_env_reason(path: &Path, reason: &str) -> String {
    if reason.starts_with("is missing") {
        format!("{} {reason}", path.display())
    } else {
        format!("{}: {reason}", path.display())
    }
}

/// The prefix of a delegate's message, for the commands that have one.
fn delegate_prefix(command: Command) -> Option<&'static str> {
    match command {
        Command::Add => Some("failed to delegate add"),
        Command::Del => Some("failed to delegate del"),
        _ => None,
    }
}

fn delegate_message(command: Command, source: &CniError) -> String {
    match delegate_prefix(command) {
        Some(prefix) => format!("{prefix}: {source}"),
        None => source.to_string(),
    }
}

impl FlannelError {
    pub fn state(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::State {
            what,
            path: path.into(),
            source,
        }
    }

    pub fn delegate(command: Command, source: CniError) -> Self {
        Self::Delegate { command, source }
    }

    /// The CNI code this error is reported with.
    pub fn code(&self) -> u32 {
        match self {
            Self::Config(_) | Self::SubnetEnvInvalid { .. } | Self::Encode(_) => {
                code::INVALID_NETWORK_CONFIG
            }
            Self::SubnetEnvMissing { .. } | Self::SubnetEnvUnreadable { .. } => {
                code::TRY_AGAIN_LATER
            }
            Self::Cni(inner) | Self::Delegate { source: inner, .. } => inner.code(),
            Self::State { .. } | Self::SavedNotJson { .. } => code::STATE,
            Self::NotSaved { .. } => code::CHECK_FAILED,
            Self::NotAvailable(_) => code::PLUGIN_NOT_AVAILABLE,
        }
    }
}

impl From<FlannelError> for CniError {
    fn from(e: FlannelError) -> Self {
        match e {
            FlannelError::Cni(inner) => inner,
            FlannelError::Delegate { command, source } => match delegate_prefix(command) {
                Some(prefix) => source.context(prefix),
                None => source,
            },
            e @ (FlannelError::Config(_)
            | FlannelError::SubnetEnvInvalid { .. }
            | FlannelError::Encode(_)) => CniError::invalid_config(e.to_string(), ""),
            e @ (FlannelError::SubnetEnvMissing { .. }
            | FlannelError::SubnetEnvUnreadable { .. }) => CniError::TryAgainLater {
                msg: e.to_string(),
                details: String::new(),
            },
            FlannelError::NotAvailable(inner) => CniError::not_available(inner.to_string(), ""),
            other => CniError::plugin(other.code(), other.to_string(), ""),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn codes_and_sources_are_kept() {
        let io = || io::Error::from(io::ErrorKind::PermissionDenied);
        let e = FlannelError::state("cannot write", "/d/.c1.tmp", io());
        assert!(e.source().is_some());
        let c = CniError::from(e);
        assert_eq!(c.code(), 104);
        assert_eq!(c.to_string(), "cannot write /d/.c1.tmp: permission denied");

        let e = FlannelError::SubnetEnvMissing {
            path: "/run/flannel/subnet.env".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(e.source().is_some());
        let status = FlannelError::NotAvailable(Box::new(e));
        assert_eq!(status.code(), 50);
        let c = CniError::from(status);
        assert_eq!(c.code(), 50);
        assert!(c.to_string().contains("flanneld has not written it yet"));

        let delegated = || CniError::Delegated {
            code: 106,
            msg: "exhausted".into(),
            details: "d".into(),
        };
        let add = FlannelError::delegate(Command::Add, delegated());
        assert_eq!(add.to_string(), "failed to delegate add: exhausted");
        assert!(add.source().is_some());
        let c = CniError::from(add);
        assert_eq!(
            (c.code(), c.to_string(), c.details()),
            (106, "failed to delegate add: exhausted".into(), "d")
        );
        let c = CniError::from(FlannelError::delegate(Command::Check, delegated()));
        assert_eq!((c.code(), c.to_string()), (106, "exhausted".into()));
    }
}
