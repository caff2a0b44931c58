//! The seams between the bridge's logic (ADD, DEL, CHECK, GC, STATUS) and the node: the
//! links, addresses and routes of one namespace ([`Links`]), its sysctls ([`Sysctls`]), the
//! namespaces themselves ([`Node`], [`Namespace`]), the firewall ([`cni_nft::Firewall`]) and
//! the IPAM plugin ([`Ipam`]).
//!
//! The kernel implementations ([`KernelNode`], `RouteSocket` in `link.rs`, [`Delegate`],
//! [`cni_nft::Nftables`]) make exactly the requests the plugin made before the seams existed;
//! the logic reaches them by static dispatch (the firewall by one vtable call per
//! transaction). The unit tests run the same logic against in-memory fakes (`fake.rs`).

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::Path;

use cni_common::result::Route;
use cni_common::{CniError, CniResult, Command, Invocation, delegate};
use cni_nft::Firewall;
use ipnetwork::IpNetwork;
use node_kernel::addr::AddressMessage;
use node_kernel::link::{BridgePortState, InfoKind, LinkMessage};
use node_kernel::{KernelError, Netns, NetnsError, RouteSocket};

use crate::sysctl::Sysctl;

/// What kind of link a [`Link`] is, as far as the bridge cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A Linux bridge.
    Bridge,
    /// One end of a veth pair.
    Veth,
    /// Anything else (or a link without a kind).
    Other,
}

/// A link as the bridge's logic reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The interface index.
    pub index: u32,
    /// The interface name, if the kernel reported one.
    pub name: Option<String>,
    /// Bridge, veth or other.
    pub kind: LinkKind,
    /// The hardware address (empty when it has none).
    pub mac: Vec<u8>,
    /// Administratively up.
    pub up: bool,
    /// In promiscuous mode.
    pub promisc: bool,
    /// The index of the bridge the link is a port of.
    pub controller: Option<u32>,
    /// The STP state of a bridge port.
    pub port_state: Option<BridgePortState>,
}

impl Link {
    /// Reads what the bridge needs from a kernel link message.
    pub fn from_message(msg: &LinkMessage) -> Link {
        use node_kernel::link as k;
        Link {
            index: msg.header.index,
            name: k::name(msg).map(str::to_owned),
            kind: match k::kind(msg) {
                Some(InfoKind::Bridge) => LinkKind::Bridge,
                Some(InfoKind::Veth) => LinkKind::Veth,
                _ => LinkKind::Other,
            },
            mac: k::mac(msg),
            up: k::is_up(msg),
            promisc: k::is_promisc(msg),
            controller: k::controller(msg),
            port_state: k::port_state(msg),
        }
    }
}

/// An address on a link, with the kernel's message to delete it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The address and its prefix.
    pub net: IpNetwork,
    /// IPv6 duplicate address detection still runs on it.
    pub tentative: bool,
    /// IPv6 duplicate address detection found it in use.
    pub dad_failed: bool,
    /// The listed message, which deleting it sends back.
    pub message: AddressMessage,
}

impl Address {
    /// Reads an address as the kernel listed it.
    pub fn from_message(net: IpNetwork, message: AddressMessage) -> Address {
        use node_kernel::addr::AddressFlags;
        let flags = node_kernel::addr::flags(&message);
        let has = |f: AddressFlags| flags.is_some_and(|flags| flags.contains(f));
        Address {
            net,
            tentative: has(AddressFlags::Tentative),
            dad_failed: has(AddressFlags::Dadfailed),
            message,
        }
    }
}

/// The links, addresses and routes of one network namespace: one method per request the
/// bridge makes, each failing with what it was doing and the kernel's errno.
pub trait Links {
    /// The link called `name`, or `None` when there is none.
    fn by_name(&self, name: &str) -> Result<Option<Link>, KernelError>;
    /// The link with index `index`, or `None` when there is none.
    fn by_index(&self, index: u32) -> Result<Option<Link>, KernelError>;
    /// Creates a bridge, down; "already exists" is the caller's business.
    fn add_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
        vlan_filtering: bool,
    ) -> Result<(), KernelError>;
    /// Creates a veth pair from this namespace: `ifname` here, `peer` in the namespace
    /// `peer_ns` refers to. The error is the kernel's own (the caller retries on `EEXIST`).
    fn add_veth(
        &self,
        ifname: &str,
        peer: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        peer_ns: RawFd,
    ) -> io::Result<()>;
    /// Deletes a link (a veth takes its peer with it).
    fn del_link(&self, index: u32) -> Result<(), KernelError>;
    /// Sets a link up.
    fn set_up(&self, index: u32) -> Result<(), KernelError>;
    /// Sets a link promiscuous.
    fn set_promisc(&self, index: u32) -> Result<(), KernelError>;
    /// Sets a link's hardware address.
    fn set_mac(&self, index: u32, mac: Vec<u8>) -> Result<(), KernelError>;
    /// Enslaves `port` to `bridge` and sets its hairpin and isolation flags.
    fn attach_port(
        &self,
        port: u32,
        bridge: u32,
        hairpin: bool,
        isolated: bool,
    ) -> Result<(), KernelError>;
    /// The port's VLANs: `access` untagged PVID, `trunk` tagged, VLAN 1 removed first
    /// unless `preserve_default`.
    fn set_port_vlans(
        &self,
        port: u32,
        access: u16,
        trunk: &[u16],
        preserve_default: bool,
    ) -> Result<(), KernelError>;
    /// The addresses on link `index`.
    fn addresses(&self, index: u32) -> Result<Vec<Address>, KernelError>;
    /// Adds an address; IPv6 ones skip duplicate address detection unless `dad`.
    fn add_address(&self, index: u32, net: IpNetwork, dad: bool) -> Result<(), KernelError>;
    /// Deletes an address as [`Links::addresses`] listed it.
    fn del_address(&self, address: &Address) -> Result<(), KernelError>;
    /// Adds a route through link `index`, via `gw` when given.
    fn add_route(&self, index: u32, route: &Route, gw: Option<IpAddr>) -> Result<(), KernelError>;
    /// The main-table routes of one family, as (destination, gateway).
    fn routes(&self, v4: bool) -> Result<Vec<(IpNetwork, Option<IpAddr>)>, KernelError>;
}

/// The sysctls of one network namespace.
pub trait Sysctls {
    /// Reads a sysctl, without its trailing newline.
    fn read(&self, key: Sysctl<'_>) -> Result<String, NetnsError>;
    /// Writes a sysctl.
    fn write(&self, key: Sysctl<'_>, value: &str) -> Result<(), NetnsError>;
}

/// Writes a sysctl that may be missing: a knob this kernel lacks (no IPv6, an older kernel,
/// an interface IPv6 is disabled on) changes nothing the attachment needs, so its failure is
/// deliberately not an error (as in the reference plugin).
pub fn write_optional(sysctls: &(impl Sysctls + ?Sized), key: Sysctl<'_>, value: &str) {
    // Ignored on purpose: see above.
    let _ = sysctls.write(key, value);
}

/// A network namespace the plugin holds open.
pub trait Namespace {
    /// The path it was opened by.
    fn path(&self) -> &Path;
    /// Its file descriptor, for requests that name a namespace (a veth peer).
    fn fd(&self) -> RawFd;
    /// Runs `f` with the namespace's sysctls (entering it once for all of them).
    fn with_sysctls<T>(&self, f: impl FnOnce(&dyn Sysctls) -> T) -> Result<T, NetnsError>;
}

/// The node as the bridge sees it: its own namespace ("host": links and sysctls) and the
/// containers' namespaces. `Sync` because DEL removes the interface in a thread of its own.
pub trait Node: Sysctls + Sync {
    /// An open namespace.
    type Ns: Namespace;
    /// The links of one namespace.
    type Links: Links;
    /// Opens the namespace at `path` (a container's); [`NetnsError::is_gone`] when it is
    /// not there (any more).
    fn open(&self, path: &Path) -> Result<Self::Ns, NetnsError>;
    /// The plugin's own namespace, where host veths are created.
    fn current(&self) -> Result<Self::Ns, NetnsError>;
    /// The links of the plugin's own namespace.
    fn host_links(&self) -> Result<Self::Links, KernelError>;
    /// The links of namespace `ns`.
    fn links_in(&self, ns: &Self::Ns) -> Result<Self::Links, KernelError>;
}

/// The IPAM plugin, run the way a runtime runs a plugin (found in `CNI_PATH`, same stdin
/// and environment, another `CNI_COMMAND`).
pub trait Ipam {
    /// Fails unless plugin `name` is in `CNI_PATH`.
    fn find(&self, name: &str, inv: &Invocation) -> Result<(), CniError>;
    /// IPAM ADD: the addresses, routes and DNS it gives.
    fn add(&self, name: &str, inv: &Invocation) -> Result<CniResult, CniError>;
    /// DEL, CHECK, GC or STATUS.
    fn exec(&self, name: &str, command: Command, inv: &Invocation) -> Result<(), CniError>;
}

/// What the bridge's logic runs against.
pub struct Deps<'a, N, I> {
    /// Links, addresses, routes, sysctls, namespaces.
    pub node: &'a N,
    /// The nf_tables rules.
    pub firewall: &'a dyn Firewall,
    /// The IPAM plugin.
    pub ipam: &'a I,
}

impl<N: std::fmt::Debug, I: std::fmt::Debug> std::fmt::Debug for Deps<'_, N, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("node", self.node)
            .field("ipam", self.ipam)
            .finish_non_exhaustive()
    }
}

impl Deps<'static, KernelNode, Delegate> {
    /// The real node: the kernel, nf_tables and IPAM binaries.
    pub fn kernel() -> Self {
        Deps {
            node: &KernelNode,
            firewall: &cni_nft::Nftables,
            ipam: &Delegate,
        }
    }
}

/// The kernel: namespaces by path, rtnetlink sockets, `/proc/sys`.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelNode;

/// The sysctls of the calling thread's namespace (`/proc/sys`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSys;

impl Sysctls for ProcSys {
    fn read(&self, key: Sysctl<'_>) -> Result<String, NetnsError> {
        node_kernel::read_sysctl(&key.key())
    }

    fn write(&self, key: Sysctl<'_>, value: &str) -> Result<(), NetnsError> {
        node_kernel::write_sysctl(&key.key(), value)
    }
}

impl Sysctls for KernelNode {
    fn read(&self, key: Sysctl<'_>) -> Result<String, NetnsError> {
        ProcSys.read(key)
    }

    fn write(&self, key: Sysctl<'_>, value: &str) -> Result<(), NetnsError> {
        ProcSys.write(key, value)
    }
}

impl Namespace for Netns {
    fn path(&self) -> &Path {
        Netns::path(self)
    }

    fn fd(&self) -> RawFd {
        Netns::fd(self)
    }

    fn with_sysctls<T>(&self, f: impl FnOnce(&dyn Sysctls) -> T) -> Result<T, NetnsError> {
        self.run(|| f(&ProcSys))
    }
}

impl Node for KernelNode {
    type Ns = Netns;
    type Links = RouteSocket;

    fn open(&self, path: &Path) -> Result<Netns, NetnsError> {
        Netns::open(path)
    }

    fn current(&self) -> Result<Netns, NetnsError> {
        Netns::current()
    }

    fn host_links(&self) -> Result<RouteSocket, KernelError> {
        RouteSocket::current()
    }

    fn links_in(&self, ns: &Netns) -> Result<RouteSocket, KernelError> {
        RouteSocket::in_netns(ns)
    }
}

/// IPAM plugins as binaries ([`cni_common::delegate`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Delegate;

impl Ipam for Delegate {
    fn find(&self, name: &str, inv: &Invocation) -> Result<(), CniError> {
        delegate::find(name, &inv.env.path).map(drop)
    }

    fn add(&self, name: &str, inv: &Invocation) -> Result<CniResult, CniError> {
        delegate::add(name, &inv.env, inv.config.raw(), inv.config.version)
    }

    fn exec(&self, name: &str, command: Command, inv: &Invocation) -> Result<(), CniError> {
        delegate::exec(name, command, &inv.env, inv.config.raw()).map(drop)
    }
}
