//! The kernel side of the wireguard backend behind one small trait ([`WgKernel`]): the
//! device (a kernel WireGuard link, or a TUN device driven by userspace WireGuard inside the
//! agent), its address and route, its keys and peers. [`NodeWg`] does it in the agent's
//! namespace; the unit tests use an in-memory one (`tests/fake.rs`).

use std::collections::BTreeMap;
use std::io;

use ipnetwork::IpNetwork;
use node_kernel::link::{InfoKind, LinkFlags, LinkId};
use node_kernel::route::{self, RouteScope};
use node_kernel::wireguard::{DeviceSettings, PeerChange, WgDevice};
use node_kernel::{KernelError, RouteSocket, WireguardSocket, link};

use super::userspace::Userspace;
use crate::log::{info, warning};

/// Which WireGuard drives a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The kernel's module (a link of kind `wireguard`).
    Kernel,
    /// boringtun in the agent, on a TUN device.
    Userspace,
}

impl Flavor {
    /// For the log.
    pub fn describe(self) -> &'static str {
        match self {
            Flavor::Kernel => "kernel WireGuard",
            Flavor::Userspace => "userspace WireGuard (boringtun in flanneld, on a TUN device)",
        }
    }
}

/// A link as the backend sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Its index.
    pub index: u32,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// A WireGuard device this agent drives (a kernel one, or its own userspace one), not
    /// some other link of the name.
    pub ours: bool,
}

/// What the wireguard backend asks of the kernel.
pub trait WgKernel {
    /// The link called `name`, if any.
    fn link(&mut self, name: &str) -> io::Result<Option<Link>>;
    /// Creates a WireGuard device (kernel if the kernel has WireGuard, else userspace) of
    /// this MTU, down; which one it made.
    fn create(&mut self, name: &str, mtu: u32) -> io::Result<Flavor>;
    /// Deletes a link (gone already is no error), and the userspace device on it.
    fn delete(&mut self, name: &str, index: u32) -> io::Result<()>;
    /// Sets a link's MTU.
    fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()>;
    /// Brings a link up.
    fn set_up(&mut self, index: u32) -> io::Result<()>;
    /// The link's addresses.
    fn addresses(&mut self, index: u32) -> io::Result<Vec<IpNetwork>>;
    /// Adds an address (IPv6 without duplicate address detection).
    fn add_address(&mut self, index: u32, addr: IpNetwork) -> io::Result<()>;
    /// Removes an address from the link.
    fn delete_address(&mut self, index: u32, addr: IpNetwork) -> io::Result<()>;
    /// The destinations of the main table's scope-link routes through the link (one family).
    fn routes(&mut self, index: u32, v4: bool) -> io::Result<Vec<IpNetwork>>;
    /// Adds (or replaces) `dst dev <index> scope link`.
    fn replace_route(&mut self, index: u32, dst: IpNetwork) -> io::Result<()>;
    /// Changes the device's settings and peers.
    fn configure(
        &mut self,
        name: &str,
        settings: &DeviceSettings,
        peers: &[PeerChange],
    ) -> io::Result<()>;
    /// The device's key, port and peers.
    fn read(&mut self, name: &str) -> io::Result<WgDevice>;
    /// Ends what lives only as long as the agent (userspace devices, their control sockets).
    fn stop(&mut self) {}
}

/// [`WgKernel`] in the agent's namespace: rtnetlink for links, addresses and routes; the
/// WireGuard generic netlink family for kernel devices; boringtun for userspace ones.
#[derive(Debug)]
pub struct NodeWg {
    routes: RouteSocket,
    /// The kernel's WireGuard family, once a kernel device was made.
    genl: Option<WireguardSocket>,
    /// Set once the kernel refused a `wireguard` link: every device is userspace after.
    no_kernel_module: bool,
    userspace: BTreeMap<String, Userspace>,
    /// Refuses the kernel module (tests of the userspace path on a kernel with the module).
    force_userspace: bool,
}

impl NodeWg {
    /// Sockets in the current namespace; `force_userspace`: never the kernel module.
    pub fn current(force_userspace: bool) -> Result<NodeWg, KernelError> {
        Ok(NodeWg {
            routes: RouteSocket::current()?,
            genl: None,
            no_kernel_module: false,
            userspace: BTreeMap::new(),
            force_userspace,
        })
    }

    fn genl(&mut self) -> io::Result<&WireguardSocket> {
        if self.genl.is_none() {
            let s = WireguardSocket::current().map_err(|e| io::Error::other(e.to_string()))?;
            self.genl = Some(s);
        }
        self.genl
            .as_ref()
            .ok_or_else(|| io::Error::other("no WireGuard netlink socket"))
    }

    fn create_userspace(&mut self, name: &str, mtu: u32) -> io::Result<Flavor> {
        // A device deleted under it: its threads and control socket end before the new one.
        if let Some(mut old) = self.userspace.remove(name) {
            old.stop();
        }
        let dev = Userspace::start(name)?;
        self.userspace.insert(name.to_owned(), dev);
        match self.routes.link(LinkId::Name(name))? {
            Some(m) => self.routes.set_link(&link::with_mtu(m.header.index, mtu))?,
            None => return Err(io::Error::other(format!("TUN device {name} vanished"))),
        }
        Ok(Flavor::Userspace)
    }
}

impl WgKernel for NodeWg {
    fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let Some(m) = self.routes.link(LinkId::Name(name))? else {
            return Ok(None);
        };
        let ours = match link::kind(&m) {
            Some(InfoKind::Wireguard) => true,
            Some(InfoKind::Tun) => self.userspace.contains_key(name),
            _ => false,
        };
        Ok(Some(Link {
            index: m.header.index,
            mtu: link::mtu(&m).unwrap_or_default(),
            up: link::is_up(&m),
            ours,
        }))
    }

    fn create(&mut self, name: &str, mtu: u32) -> io::Result<Flavor> {
        if self.no_kernel_module || self.force_userspace {
            return self.create_userspace(name, mtu);
        }
        match self.routes.create_link(&link::wireguard(name, mtu)) {
            Ok(()) => Ok(Flavor::Kernel),
            Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => {
                warning!(
                    "the kernel has no WireGuard (creating a wireguard link: {e}): running {} for {name}",
                    Flavor::Userspace.describe()
                );
                self.no_kernel_module = true;
                self.create_userspace(name, mtu)
            }
            Err(e) => Err(e),
        }
    }

    fn delete(&mut self, name: &str, index: u32) -> io::Result<()> {
        if let Some(mut dev) = self.userspace.remove(name) {
            dev.stop();
        }
        match self.routes.delete_link(index) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(()),
            other => other,
        }
    }

    fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        self.routes.set_link(&link::with_mtu(index, mtu))
    }

    fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.routes.set_link_flag(index, LinkFlags::Up, true)
    }

    fn addresses(&mut self, index: u32) -> io::Result<Vec<IpNetwork>> {
        Ok(self
            .routes
            .addresses(index)?
            .into_iter()
            .map(|(a, _)| a)
            .collect())
    }

    fn add_address(&mut self, index: u32, addr: IpNetwork) -> io::Result<()> {
        self.routes
            .add_address(&node_kernel::addr::address(index, addr, false))
    }

    fn delete_address(&mut self, index: u32, addr: IpNetwork) -> io::Result<()> {
        for (a, m) in self.routes.addresses(index)? {
            if a == addr {
                return self.routes.delete_address(&m);
            }
        }
        Ok(())
    }

    fn routes(&mut self, index: u32, v4: bool) -> io::Result<Vec<IpNetwork>> {
        Ok(self
            .routes
            .routes(v4)?
            .iter()
            .filter(|m| route::in_main_table(m) && route::output_link(m) == Some(index))
            .filter(|m| route::gateway(m).is_none())
            .filter_map(route::destination)
            .collect())
    }

    fn replace_route(&mut self, index: u32, dst: IpNetwork) -> io::Result<()> {
        let mut m = route::via_link(route::main_table(dst.network(), dst.prefix()), index);
        m.header.scope = RouteScope::Link;
        self.routes
            .replace_route(&route::with_protocol(m, super::super::ROUTE_PROTOCOL))
    }

    fn configure(
        &mut self,
        name: &str,
        settings: &DeviceSettings,
        peers: &[PeerChange],
    ) -> io::Result<()> {
        if let Some(dev) = self.userspace.get(name) {
            return dev.configure(settings, peers);
        }
        self.genl()?.set_device(name, settings, peers)
    }

    fn read(&mut self, name: &str) -> io::Result<WgDevice> {
        if let Some(dev) = self.userspace.get(name) {
            return dev.read();
        }
        self.genl()?.device(name)
    }

    fn stop(&mut self) {
        for (name, mut dev) in std::mem::take(&mut self.userspace) {
            dev.stop();
            info!("stopped the userspace WireGuard of {name} (its TUN device goes with it)");
        }
    }
}
