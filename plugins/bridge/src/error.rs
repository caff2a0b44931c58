//! The bridge plugin's failures and their CNI codes.

use cni_common::CniError;
use cni_common::error::code;
use node_kernel::{KernelError as NetlinkError, NetnsError};

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The config cannot be used (7).
    #[error("{0}")]
    Config(String),
    /// From the shared library or a delegated plugin: the code is kept.
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A kernel operation failed, with what was being done.
    #[error("{0}")]
    Kernel(String),
    /// Something of the same name or address is in the way (107).
    #[error("{0}")]
    Conflict(String),
    /// An nftables transaction failed (105).
    #[error(transparent)]
    Nft(#[from] cni_nft::NftError),
    /// CHECK found the attachment not as ADD left it (103).
    #[error("{0}")]
    Check(String),
}

impl From<BridgeError> for CniError {
    fn from(e: BridgeError) -> Self {
        let code = match &e {
            BridgeError::Cni(_) => 0,
            BridgeError::Config(_) => code::INVALID_NETWORK_CONFIG,
            BridgeError::Netlink(_) | BridgeError::Kernel(_) => code::NETLINK,
            BridgeError::Netns(_) => code::NAMESPACE,
            BridgeError::Conflict(_) => code::CONFLICT,
            BridgeError::Nft(_) => code::FIREWALL,
            BridgeError::Check(_) => code::CHECK_FAILED,
        };
        match e {
            BridgeError::Cni(inner) => inner,
            BridgeError::Netlink(inner) => inner.into(),
            BridgeError::Netns(inner) => inner.into(),
            other => CniError::plugin(code, other.to_string(), ""),
        }
    }
}
