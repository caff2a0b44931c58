//! host-local's failures and the CNI codes they map to.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use cni_common::CniError;
use cni_common::error::code;

#[derive(Debug, thiserror::Error)]
pub enum HostLocalError {
    /// The config cannot be used (code 7).
    #[error("{0}")]
    Config(String),
    /// A spec error from the shared library (CNI_ARGS, config parsing), code kept.
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error("failed to allocate for range {set}: no IP addresses available in range set: {ranges}")]
    Exhausted { set: usize, ranges: String },
    #[error(
        "failed to allocate for range {set}: {ip} has been allocated to {id}, duplicate allocation is not allowed"
    )]
    Duplicate { set: usize, ip: IpAddr, id: String },
    #[error(
        "failed to allocate for range {set}: requested IP address {ip} is not available in range set {ranges}"
    )]
    RequestedTaken {
        set: usize,
        ip: IpAddr,
        ranges: String,
    },
    #[error("failed to allocate for range {set}: requested ip {ip} is subnet's gateway")]
    RequestedGateway { set: usize, ip: IpAddr },
    #[error("failed to allocate all requested IPs: {}", join(.0))]
    RequestedUnmatched(Vec<IpAddr>),
    #[error("host-local: Failed to find address added by container {0}")]
    NotFound(String),
    /// The lease store could not be read or written.
    #[error("{what} {}: {source}", .path.display())]
    Store {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("failed to read resolvConf {}: {source}", .path.display())]
    ResolvConf { path: PathBuf, source: io::Error },
    /// STATUS: ADD cannot succeed now.
    #[error("{0}")]
    NotAvailable(String),
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

impl HostLocalError {
    pub fn store(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Store {
            what,
            path: path.into(),
            source,
        }
    }

    fn code(&self) -> u32 {
        match self {
            Self::Cni(inner) => inner.code(),
            Self::Config(_) | Self::RequestedUnmatched(_) | Self::ResolvConf { .. } => {
                code::INVALID_NETWORK_CONFIG
            }
            Self::Exhausted { .. } => code::EXHAUSTED,
            Self::Duplicate { .. }
            | Self::RequestedTaken { .. }
            | Self::RequestedGateway { .. } => code::CONFLICT,
            Self::NotFound(_) => code::CHECK_FAILED,
            Self::Store { .. } => code::STATE,
            Self::NotAvailable(_) => code::PLUGIN_NOT_AVAILABLE,
        }
    }
}

impl From<HostLocalError> for CniError {
    fn from(e: HostLocalError) -> Self {
        match e {
            HostLocalError::Cni(inner) => inner,
            other => CniError::plugin(other.code(), other.to_string(), ""),
        }
    }
}
