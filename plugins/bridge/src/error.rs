//! The bridge plugin's failures and their CNI codes. Kernel failures keep their source
//! (the errno, the namespace error) and name the object they were about.

use std::io;

use cni_common::CniError;
use cni_common::error::code;
use node_kernel::link::BridgePortState;
use node_kernel::{KernelError, NetnsError};

/// Everything that can make a bridge command fail.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The config cannot be used (7).
    #[error("{0}")]
    Config(String),
    /// From the shared library or a delegated plugin: the code is kept.
    #[error(transparent)]
    Cni(#[from] CniError),
    /// A kernel request failed (101), or the namespace it needed (100).
    #[error(transparent)]
    Netlink(#[from] KernelError),
    /// A namespace could not be opened or entered, or a sysctl written (100).
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The veth pair could not be created (101).
    #[error("failed to create veth pair {ifname}/{peer}: {source}")]
    Veth {
        /// The container end.
        ifname: String,
        /// The host end.
        peer: String,
        /// The kernel's refusal.
        #[source]
        source: io::Error,
    },
    /// The VLAN gateway veth could not be created (101).
    #[error("failed to create VLAN gateway {name}: {source}")]
    VlanGateway {
        /// `<bridge>.<vlan>`.
        name: String,
        /// The kernel's refusal.
        #[source]
        source: io::Error,
    },
    /// A link this call created or found was gone when read back (101).
    #[error("{role} {name} vanished")]
    Vanished {
        /// What the link is for: "bridge", "veth", "host veth"...
        role: &'static str,
        /// Its name.
        name: String,
    },
    /// The container interface has no Ethernet address for the spoof check (101).
    #[error("container interface has no Ethernet address to check: {mac:02x?}")]
    NoEthernetAddress {
        /// What it has instead.
        mac: Vec<u8>,
    },
    /// IPv6 duplicate address detection did not finish in time (101).
    #[error("IPv6 addresses still tentative after 5s of duplicate address detection")]
    DadTimeout {
        /// The container interface.
        ifname: String,
    },
    /// The host veth did not reach forwarding in time (101).
    #[error("bridge port in error state: {state:?}")]
    PortNotForwarding {
        /// The host veth.
        port: String,
        /// Its last STP state.
        state: Option<BridgePortState>,
    },
    /// Something of the same name or address is in the way (107).
    #[error("{0}")]
    Conflict(String),
    /// An nftables transaction failed (105).
    #[error(transparent)]
    Nft(#[from] cni_nft::NftError),
    /// CHECK found the attachment not as ADD left it (103).
    #[error("{0}")]
    Check(String),
    /// Several teardown steps failed (DEL): all are listed; the code is the first's.
    #[error("{}", list(.0))]
    Teardown(Vec<BridgeError>),
}

fn list(errors: &[BridgeError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl BridgeError {
    /// The failures of independent steps as one error: `None` when there was none, the
    /// failure itself when there was one, [`BridgeError::Teardown`] when there were more.
    pub fn all(errors: impl IntoIterator<Item = Result<(), BridgeError>>) -> Result<(), Self> {
        let mut failed: Vec<BridgeError> = errors.into_iter().filter_map(Result::err).collect();
        match failed.len() {
            0 => Ok(()),
            1 => Err(failed.remove(0)),
            _ => Err(BridgeError::Teardown(failed)),
        }
    }

    /// The CNI code this failure is reported with.
    pub fn code(&self) -> u32 {
        match self {
            BridgeError::Cni(inner) => inner.code(),
            BridgeError::Config(_) => code::INVALID_NETWORK_CONFIG,
            BridgeError::Netlink(KernelError::Netns(_)) | BridgeError::Netns(_) => code::NAMESPACE,
            BridgeError::Netlink(_)
            | BridgeError::Veth { .. }
            | BridgeError::VlanGateway { .. }
            | BridgeError::Vanished { .. }
            | BridgeError::NoEthernetAddress { .. }
            | BridgeError::DadTimeout { .. }
            | BridgeError::PortNotForwarding { .. } => code::NETLINK,
            BridgeError::Conflict(_) => code::CONFLICT,
            BridgeError::Nft(_) => code::FIREWALL,
            BridgeError::Check(_) => code::CHECK_FAILED,
            BridgeError::Teardown(all) => all.first().map_or(code::NETLINK, BridgeError::code),
        }
    }
}

impl From<BridgeError> for CniError {
    fn from(e: BridgeError) -> Self {
        match e {
            BridgeError::Cni(inner) => inner,
            BridgeError::Netlink(inner) => inner.into(),
            BridgeError::Netns(inner) => inner.into(),
            other => CniError::plugin(other.code(), other.to_string(), ""),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn kernel_failures_keep_errno_object_and_code() {
        let e = BridgeError::Veth {
            ifname: "eth0".into(),
            peer: "veth01234567".into(),
            source: io::Error::from_raw_os_error(nix::libc::EPERM),
        };
        assert!(
            e.to_string()
                .starts_with("failed to create veth pair eth0/veth01234567: ")
        );
        let source = e.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(
            source.and_then(io::Error::raw_os_error),
            Some(nix::libc::EPERM)
        );
        assert_eq!(CniError::from(e).code(), code::NETLINK);
    }

    #[test]
    fn teardown_lists_all_with_the_first_code() {
        assert!(BridgeError::all([Ok(()), Ok(())]).is_ok());
        let one = BridgeError::all([Ok(()), Err(BridgeError::Check("x".into()))]).unwrap_err();
        assert!(
            matches!(one, BridgeError::Check(_)),
            "one failure stays itself"
        );
        let e = BridgeError::all([
            Err(BridgeError::Nft(cni_nft::NftError {
                what: "nft".into(),
                command: None,
                source: std::io::Error::from_raw_os_error(nix::libc::EPERM),
            })),
            Ok(()),
            Err(BridgeError::Config("ipam".into())),
        ])
        .unwrap_err();
        let eperm = std::io::Error::from_raw_os_error(nix::libc::EPERM);
        assert_eq!(e.to_string(), format!("nft: {eperm}; ipam"));
        let cni = CniError::from(e);
        assert_eq!(
            (cni.code(), cni.to_string()),
            (code::FIREWALL, format!("nft: {eperm}; ipam"))
        );
    }
}
