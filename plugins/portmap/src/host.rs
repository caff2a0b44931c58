//! The two things portmap asks of the node's kernel besides its firewall: `route_localnet`
//! on the interface that leads to a container (so 127.0.0.1 can be DNATed to it), and the
//! removal of stale UDP conntrack entries of the mapped ports.

use std::io;
use std::net::IpAddr;

use node_kernel::{Context, KernelError, NetfilterSocket, RouteSocket, write_sysctl};

use crate::error::PortmapError;

/// The node's kernel, as portmap uses it.
pub trait Host {
    /// Lets the kernel route a loopback source out of the interface towards `container`.
    fn enable_route_localnet(&self, container: IpAddr) -> Result<(), PortmapError>;
    /// Deletes the UDP conntrack entries to `ports`; returns how many there were.
    fn flush_udp_conntrack(&self, ports: &[u16]) -> io::Result<usize>;
}

/// The kernel of the calling thread's namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelHost;

impl Host for KernelHost {
    fn enable_route_localnet(&self, container: IpAddr) -> Result<(), PortmapError> {
        let nl = RouteSocket::current()?;
        let route = nl
            .route_to(container)
            .context(format!("failed to look up the route to {container}"))?;
        let Some(index) = route.as_ref().and_then(node_kernel::route::output_link) else {
            return Ok(());
        };
        // The name through the kernel's ioctl: parsing a full link message would link every
        // link kind's decoder into portmap for one string.
        let name = match nix::net::if_::if_indextoname(index) {
            Ok(name) => name.to_string_lossy().into_owned(),
            // The interface went away meanwhile: nothing to set.
            Err(nix::errno::Errno::ENXIO | nix::errno::Errno::ENODEV) => return Ok(()),
            Err(e) => {
                return Err(KernelError::Request {
                    what: "failed to look up the interface to the container".into(),
                    source: e.into(),
                }
                .into());
            }
        };
        write_sysctl(&format!("net/ipv4/conf/{name}/route_localnet"), "1")?;
        Ok(())
    }

    fn flush_udp_conntrack(&self, ports: &[u16]) -> io::Result<usize> {
        if ports.is_empty() {
            return Ok(0);
        }
        NetfilterSocket::current()
            .map_err(io::Error::other)?
            .flush_udp_conntrack(ports)
    }
}
