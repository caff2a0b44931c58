//! portmap's failures and their CNI codes.

use cni_common::CniError;
use cni_common::error::code;
use node_kernel::{KernelError, NetnsError};

#[derive(Debug, thiserror::Error)]
pub enum PortmapError {
    /// The config cannot be used (7).
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Cni(#[from] CniError),
    /// An nftables transaction failed (105).
    #[error(transparent)]
    Nft(#[from] cni_nft::NftError),
    /// A kernel request failed (101).
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A sysctl could not be written (100, with the key and errno).
    #[error(transparent)]
    Sysctl(#[from] NetnsError),
    /// CHECK found our rules not as ADD left them (103).
    #[error("{0}")]
    Check(String),
    /// The DEL marker could not be written or removed (104).
    #[error("{0}")]
    State(String),
}

impl From<PortmapError> for CniError {
    fn from(e: PortmapError) -> Self {
        let code = match &e {
            PortmapError::Config(_) => code::INVALID_NETWORK_CONFIG,
            PortmapError::Check(_) => code::CHECK_FAILED,
            PortmapError::State(_) => code::STATE,
            PortmapError::Cni(_)
            | PortmapError::Nft(_)
            | PortmapError::Kernel(_)
            | PortmapError::Sysctl(_) => 0,
        };
        match e {
            PortmapError::Cni(inner) => inner,
            PortmapError::Nft(inner) => inner.into(),
            PortmapError::Kernel(inner) => inner.into(),
            PortmapError::Sysctl(inner) => inner.into(),
            other => CniError::plugin(code, other.to_string(), ""),
        }
    }
}
