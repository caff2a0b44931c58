//! Backends: what a node does with its own lease and its peers' leases (Go's
//! `pkg/backend`). Each sits behind [`Backend`]; [`create`] picks one by the config's
//! `Backend.Type`. `host-gw` is here; `vxlan` (device, neighbours, FDB) comes next and slots
//! into [`create`] the same way.

pub mod hostgw;

use crate::cache::LeaseEvent;
use crate::config::NetworkConfig;
use crate::iface::ExternalInterface;
use crate::lease::{Lease, LeaseAttrs};

/// Why a backend cannot start or act.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The config names a backend this agent does not have (yet).
    #[error("backend type {0:?} is not supported by this flanneld (supported: host-gw)")]
    Unsupported(String),
    /// host-gw needs the PublicIP to be the interface's own address.
    #[error(
        "the host-gw backend needs PublicIP {public_ip} to be an address of interface {iface} ({iface_addr}): is the node behind NAT?"
    )]
    Nat {
        /// `--public-ip`.
        public_ip: std::net::Ipv4Addr,
        /// The external interface.
        iface: String,
        /// Its address.
        iface_addr: std::net::Ipv4Addr,
    },
    /// The kernel refused something.
    #[error(transparent)]
    Kernel(#[from] node_kernel::KernelError),
}

/// A backend, registered once the external interface is known.
pub trait Backend {
    /// The `BackendType` published in the lease.
    fn backend_type(&self) -> &'static str;
    /// The lease value to publish (PublicIP, BackendType, BackendData).
    fn lease_attrs(&self) -> LeaseAttrs;
    /// The MTU written to subnet.env.
    fn mtu(&self) -> u32;
    /// The node's lease was acquired (or re-acquired): configure what depends on it.
    fn lease_acquired(&mut self, lease: &Lease) -> Result<(), BackendError>;
    /// Peers' leases changed. Failures are logged per lease, never fatal (as in Go).
    fn handle(&mut self, events: &[LeaseEvent]);
}

/// The backend the config asks for, on the external interface.
pub fn create(
    config: &NetworkConfig,
    ext: &ExternalInterface,
) -> Result<Box<dyn Backend>, BackendError> {
    match config.backend_type.as_str() {
        hostgw::TYPE => {
            let routes = hostgw::KernelRoutes::current()?;
            Ok(Box::new(hostgw::HostGw::new(ext.clone(), routes)?))
        }
        // The next issue adds "vxlan" here (device, ARP/FDB entries, onlink routes).
        other => Err(BackendError::Unsupported(other.to_owned())),
    }
}
