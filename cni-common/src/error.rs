//! The spec's error object and the codes every failure maps to.
//!
//! Every plugin has its own `thiserror` enum; each converts into [`CniError`], which knows its
//! code. Nothing in the suite reports the Go library's catch-all 999: a caller can always tell
//! a bad config (7) from bad environment (4) from a kernel refusal (100+).

use serde::Serialize;

/// Well-known codes of the spec (§"Error"), plus the plugin-specific range used by this suite.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// Entering a network namespace failed.
    pub const NAMESPACE: u32 = 100;
    /// The kernel refused a netlink request.
    pub const NETLINK: u32 = 101;
    /// A delegated plugin could not be found or run.
    pub const DELEGATE: u32 = 102;
    /// The interface or address state is not what the plugin set up (CHECK).
    pub const CHECK_FAILED: u32 = 103;
    /// Plugin state on disk could not be read or written.
    pub const STATE: u32 = 104;
    /// A firewall (nftables) transaction failed.
    pub const FIREWALL: u32 = 105;
    /// No address is left to allocate.
    pub const EXHAUSTED: u32 = 106;
    /// The requested resource is already in use.
    pub const CONFLICT: u32 = 107;
}

/// Every failure the suite reports, with the code the spec gives it.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("incompatible CNI versions")]
    IncompatibleVersion { details: String },

    #[error("{msg}")]
    UnsupportedField { msg: String, details: String },

    #[error("{msg}")]
    UnknownContainer { msg: String, details: String },

    #[error("required env variables [{}] missing", .0.join(","))]
    MissingEnv(Vec<&'static str>),

    #[error("{msg}")]
    InvalidEnv { msg: String, details: String },

    #[error("{msg}")]
    Io { msg: String, details: String },

    #[error("{msg}")]
    Decode { msg: String, details: String },

    #[error("{msg}")]
    InvalidConfig { msg: String, details: String },

    #[error("{msg}")]
    TryAgainLater { msg: String, details: String },

    #[error("{msg}")]
    NotAvailable { msg: String, details: String },

    #[error("{msg}")]
    LimitedConnectivity { msg: String, details: String },

    /// A failure specific to one plugin (codes 100 and above), or a spec error that was
    /// given context on its way out.
    #[error("{msg}")]
    Plugin {
        code: u32,
        msg: String,
        details: String,
    },

    /// An error printed by a delegated plugin, passed on with its own code.
    #[error("{msg}")]
    Delegated {
        code: u32,
        msg: String,
        details: String,
    },
}

/// A namespace that cannot be opened or entered (100).
#[cfg(feature = "kernel")]
impl From<node_kernel::NetnsError> for CniError {
    fn from(e: node_kernel::NetnsError) -> Self {
        CniError::plugin(code::NAMESPACE, e.to_string(), "")
    }
}

/// A kernel request that failed (101), or the namespace it needed (100).
#[cfg(feature = "kernel")]
impl From<node_kernel::KernelError> for CniError {
    fn from(e: node_kernel::KernelError) -> Self {
        match e {
            node_kernel::KernelError::Netns(inner) => inner.into(),
            other => CniError::plugin(code::NETLINK, other.to_string(), ""),
        }
    }
}

impl CniError {
    pub fn code(&self) -> u32 {
        match self {
            Self::IncompatibleVersion { .. } => code::INCOMPATIBLE_VERSION,
            Self::UnsupportedField { .. } => code::UNSUPPORTED_FIELD,
            Self::UnknownContainer { .. } => code::UNKNOWN_CONTAINER,
            Self::MissingEnv(_) | Self::InvalidEnv { .. } => code::INVALID_ENVIRONMENT,
            Self::Io { .. } => code::IO_FAILURE,
            Self::Decode { .. } => code::DECODING_FAILURE,
            Self::InvalidConfig { .. } => code::INVALID_NETWORK_CONFIG,
            Self::TryAgainLater { .. } => code::TRY_AGAIN_LATER,
            Self::NotAvailable { .. } => code::PLUGIN_NOT_AVAILABLE,
            Self::LimitedConnectivity { .. } => code::LIMITED_CONNECTIVITY,
            Self::Plugin { code, .. } | Self::Delegated { code, .. } => *code,
        }
    }

    pub fn details(&self) -> &str {
        match self {
            Self::MissingEnv(_) => "",
            Self::IncompatibleVersion { details }
            | Self::UnsupportedField { details, .. }
            | Self::UnknownContainer { details, .. }
            | Self::InvalidEnv { details, .. }
            | Self::Io { details, .. }
            | Self::Decode { details, .. }
            | Self::InvalidConfig { details, .. }
            | Self::TryAgainLater { details, .. }
            | Self::NotAvailable { details, .. }
            | Self::LimitedConnectivity { details, .. }
            | Self::Plugin { details, .. }
            | Self::Delegated { details, .. } => details,
        }
    }

    pub fn invalid_env(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::InvalidEnv {
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn invalid_config(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::InvalidConfig {
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn decode(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::Decode {
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn io(msg: impl Into<String>, err: &std::io::Error) -> Self {
        Self::Io {
            msg: msg.into(),
            details: err.to_string(),
        }
    }

    pub fn plugin(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::Plugin {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn not_available(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::NotAvailable {
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Adds context in front of the message, keeping the code and details.
    pub fn context(self, prefix: &str) -> Self {
        let msg = format!("{prefix}: {self}");
        match self {
            Self::IncompatibleVersion { details } => Self::Plugin {
                code: code::INCOMPATIBLE_VERSION,
                msg,
                details,
            },
            Self::MissingEnv(_) => Self::InvalidEnv {
                msg,
                details: String::new(),
            },
            Self::UnsupportedField { details, .. } => Self::UnsupportedField { msg, details },
            Self::UnknownContainer { details, .. } => Self::UnknownContainer { msg, details },
            Self::InvalidEnv { details, .. } => Self::InvalidEnv { msg, details },
            Self::Io { details, .. } => Self::Io { msg, details },
            Self::Decode { details, .. } => Self::Decode { msg, details },
            Self::InvalidConfig { details, .. } => Self::InvalidConfig { msg, details },
            Self::TryAgainLater { details, .. } => Self::TryAgainLater { msg, details },
            Self::NotAvailable { details, .. } => Self::NotAvailable { msg, details },
            Self::LimitedConnectivity { details, .. } => Self::LimitedConnectivity { msg, details },
            Self::Plugin { code, details, .. } => Self::Plugin { code, msg, details },
            Self::Delegated { code, details, .. } => Self::Delegated { code, msg, details },
        }
    }

    /// The spec's error object, pretty-printed like the Go library (4 spaces, no newline).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            code: u32,
            msg: String,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        crate::json::pretty(&Wire {
            code: self.code(),
            msg: self.to_string(),
            details: self.details(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_env_lists_names_comma_joined() {
        let e = CniError::MissingEnv(vec!["CNI_CONTAINERID", "CNI_NETNS"]);
        assert_eq!(e.code(), 4);
        assert_eq!(
            e.to_json(),
            "{\n    \"code\": 4,\n    \"msg\": \"required env variables [CNI_CONTAINERID,CNI_NETNS] missing\"\n}"
        );
    }

    #[test]
    fn details_are_printed_when_present() {
        let e = CniError::invalid_config("missing network name", "x");
        assert_eq!(
            e.to_json(),
            "{\n    \"code\": 7,\n    \"msg\": \"missing network name\",\n    \"details\": \"x\"\n}"
        );
    }

    #[test]
    fn context_keeps_code_and_details() {
        let e = CniError::plugin(code::NETLINK, "set lo up", "EPERM").context("loopback");
        assert_eq!(e.code(), 101);
        assert_eq!(e.to_string(), "loopback: set lo up");
        assert_eq!(e.details(), "EPERM");
        let d = CniError::Delegated {
            code: 7,
            msg: "bad".into(),
            details: String::new(),
        }
        .context("host-local");
        assert_eq!(d.code(), 7);
        assert_eq!(d.to_string(), "host-local: bad");
        let v = CniError::IncompatibleVersion {
            details: "d".into(),
        }
        .context("delegate");
        assert_eq!(v.code(), 1);
        assert_eq!(v.to_string(), "delegate: incompatible CNI versions");
    }
}
