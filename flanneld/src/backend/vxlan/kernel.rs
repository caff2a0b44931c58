//! The kernel side of the vxlan backend behind one small trait ([`VxlanKernel`]): the device,
//! its address, neighbour and FDB entries, routes, of either family (`flannel.<VNI>` is
//! IPv4, `flannel-v6.<VNI>` IPv6; the types carry `IpAddr`s and the listings take the
//! family). [`KernelVxlan`] speaks netlink in the agent's namespace; the unit tests use an
//! in-memory kernel (`fake.rs`).

use std::io;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use node_kernel::link::{InfoKind, InfoVxlan, LinkFlags, LinkId, VxlanSpec};
use node_kernel::route_packet::AddressFamily;
use node_kernel::route_packet::route::RouteProtocol;
use node_kernel::{KernelError, RouteSocket, link, neigh, route};

/// The VXLAN attributes that decide whether an existing device can be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanAttrs {
    /// The VNI.
    pub vni: u32,
    /// The underlay link, if the device has one.
    pub link: Option<u32>,
    /// The local tunnel address (IPv4 or IPv6), if set.
    pub local: Option<IpAddr>,
    /// The UDP destination port (the kernel reports 8472 when none was asked for).
    pub port: u16,
    /// Group-based policy.
    pub gbp: bool,
    /// L2 miss notifications.
    pub l2miss: bool,
}

/// A link as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its index.
    pub index: u32,
    /// Its hardware address.
    pub mac: [u8; 6],
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Its VXLAN attributes; `None` for a link of another kind.
    pub vxlan: Option<VxlanAttrs>,
}

/// A permanent neighbour entry: `ip lladdr mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neighbour {
    /// The peer's gateway address (`<peer subnet>.0`, or the IPv6 subnet's first address).
    pub ip: IpAddr,
    /// The peer's VTEP MAC.
    pub mac: [u8; 6],
}

/// A permanent FDB entry: `mac dst remote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fdb {
    /// The peer's VTEP MAC.
    pub mac: [u8; 6],
    /// The peer's PublicIP (or PublicIPv6).
    pub dst: IpAddr,
}

/// A main-table route with a gateway: a peer's route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerRoute {
    /// The peer's subnet.
    pub dst: IpNetwork,
    /// `<peer subnet>.0` (through the device), or the peer's PublicIP (direct routing).
    pub gw: IpAddr,
    /// The device (vxlan routes); `None` lets the kernel pick (direct routes).
    pub oif: Option<u32>,
    /// The `onlink` flag (vxlan routes).
    pub onlink: bool,
}

impl PeerRoute {
    /// Whether the kernel's route `have` is this wanted one: a route without a device
    /// (direct routing) comes back from the kernel with the device it picked.
    pub fn is_met_by(&self, have: &PeerRoute) -> bool {
        self.dst == have.dst
            && self.gw == have.gw
            && match self.oif {
                None => true,
                Some(_) => self.oif == have.oif && self.onlink == have.onlink,
            }
    }
}

/// What the vxlan backend asks of the kernel.
pub trait VxlanKernel {
    /// The link called `name`, if any.
    fn device(&mut self, name: &str) -> io::Result<Option<Device>>;
    /// Creates a VXLAN device (down).
    fn create_device(&mut self, spec: &VxlanSpec) -> io::Result<()>;
    /// Deletes a link (gone already is no error).
    fn delete_device(&mut self, index: u32) -> io::Result<()>;
    /// Sets a link's MTU.
    fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()>;
    /// Brings a link up.
    fn set_up(&mut self, index: u32) -> io::Result<()>;
    /// `net.ipv6.conf.<name>.accept_ra = 0`.
    fn disable_accept_ra(&mut self, name: &str) -> io::Result<()>;
    /// Turns the link's `tx-checksum-ip-generic` feature on or off (ethtool's netlink
    /// interface; an error when the kernel did not change it).
    fn set_tx_checksum(&mut self, name: &str, on: bool) -> io::Result<()>;
    /// The link's addresses of both families.
    fn addresses(&mut self, index: u32) -> io::Result<Vec<IpNetwork>>;
    /// Adds an address to the link (IPv6 without duplicate address detection: usable at
    /// once, and no one else has a flannel subnet's address).
    fn add_address(&mut self, index: u32, addr: IpNetwork) -> io::Result<()>;
    /// Removes an address from the link.
    fn delete_address(&mut self, index: u32, addr: IpNetwork) -> io::Result<()>;
    /// The link's permanent neighbour entries of one family (IPv6 when `v6`).
    fn neighbours(&mut self, index: u32, v6: bool) -> io::Result<Vec<Neighbour>>;
    /// Adds or replaces a permanent neighbour entry.
    fn replace_neighbour(&mut self, index: u32, n: Neighbour) -> io::Result<()>;
    /// Deletes a neighbour entry (gone already is no error).
    fn delete_neighbour(&mut self, index: u32, n: Neighbour) -> io::Result<()>;
    /// The link's FDB entries that have a remote address.
    fn fdb(&mut self, index: u32) -> io::Result<Vec<Fdb>>;
    /// Adds or replaces a permanent FDB entry.
    fn replace_fdb(&mut self, index: u32, e: Fdb) -> io::Result<()>;
    /// Deletes an FDB entry (gone already is no error).
    fn delete_fdb(&mut self, index: u32, e: Fdb) -> io::Result<()>;
    /// The main table's routes of one family (IPv6 when `v6`) with a gateway.
    fn routes(&mut self, v6: bool) -> io::Result<Vec<PeerRoute>>;
    /// Adds a route or replaces the one to the same destination.
    fn replace_route(&mut self, r: &PeerRoute) -> io::Result<()>;
    /// Deletes a route (gone already is no error).
    fn delete_route(&mut self, r: &PeerRoute) -> io::Result<()>;
    /// Whether `ip` is reached without a gateway (DirectRouting's test, Go's `RouteGet`).
    fn on_link(&mut self, ip: IpAddr) -> io::Result<bool>;
}

/// [`VxlanKernel`] over netlink in the namespace the socket was made in (sysctls: the
/// calling thread's).
#[derive(Debug)]
pub struct KernelVxlan(RouteSocket);

impl KernelVxlan {
    /// A netlink socket in the current namespace.
    pub fn current() -> Result<KernelVxlan, KernelError> {
        RouteSocket::current().map(KernelVxlan)
    }
}

fn mac6(v: &[u8]) -> Option<[u8; 6]> {
    v.try_into().ok()
}

fn device_of(m: &link::LinkMessage) -> Device {
    let vxlan = (link::kind(m) == Some(&InfoKind::Vxlan)).then(|| {
        let mut a = VxlanAttrs {
            vni: 0,
            link: None,
            local: None,
            port: 0,
            gbp: false,
            l2miss: false,
        };
        for i in link::vxlan_info(m) {
            match i {
                InfoVxlan::Id(v) => a.vni = *v,
                InfoVxlan::Link(l) if *l != 0 => a.link = Some(*l),
                InfoVxlan::Local(ip) => a.local = Some(IpAddr::V4(*ip)),
                InfoVxlan::Local6(ip) => a.local = Some(IpAddr::V6(*ip)),
                InfoVxlan::Port(p) => a.port = *p,
                InfoVxlan::Gbp => a.gbp = true,
                InfoVxlan::L2Miss(b) => a.l2miss = *b,
                _ => {}
            }
        }
        a
    });
    Device {
        index: m.header.index,
        mac: mac6(&link::mac(m)).unwrap_or_default(),
        mtu: link::mtu(m).unwrap_or_default(),
        up: link::is_up(m),
        vxlan,
    }
}

fn route_message(r: &PeerRoute) -> route::RouteMessage {
    let mut m = route::main_table(r.dst.network(), r.dst.prefix());
    if let Some(oif) = r.oif {
        m = route::via_link(m, oif);
    }
    m = route::via_gateway(m, r.gw);
    if r.onlink {
        m = route::onlink(m);
    }
    m
}

impl VxlanKernel for KernelVxlan {
    fn device(&mut self, name: &str) -> io::Result<Option<Device>> {
        Ok(self.0.link(LinkId::Name(name))?.map(|m| device_of(&m)))
    }

    fn create_device(&mut self, spec: &VxlanSpec) -> io::Result<()> {
        self.0.create_link(&link::vxlan(spec))
    }

    fn delete_device(&mut self, index: u32) -> io::Result<()> {
        self.0.delete_link(index)
    }

    fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        self.0.set_link(&link::with_mtu(index, mtu))
    }

    fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.0.set_link_flag(index, LinkFlags::Up, true)
    }

    fn disable_accept_ra(&mut self, name: &str) -> io::Result<()> {
        node_kernel::write_sysctl(&format!("net/ipv6/conf/{name}/accept_ra"), "0")
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn set_tx_checksum(&mut self, name: &str, on: bool) -> io::Result<()> {
        let sock =
            node_kernel::EthtoolSocket::current().map_err(|e| io::Error::other(e.to_string()))?;
        sock.set_feature(name, node_kernel::ethtool::TX_CHECKSUM_IP_GENERIC, on)
    }

    fn addresses(&mut self, index: u32) -> io::Result<Vec<IpNetwork>> {
        Ok(self
            .0
            .addresses(index)?
            .into_iter()
            .map(|(a, _)| a)
            .collect())
    }

    fn add_address(&mut self, index: u32, addr: IpNetwork) -> io::Result<()> {
        self.0
            .add_address(&node_kernel::addr::address(index, addr, false))
    }

    fn delete_address(&mut self, index: u32, addr: IpNetwork) -> io::Result<()> {
        for (a, m) in self.0.addresses(index)? {
            if a == addr {
                return self.0.delete_address(&m);
            }
        }
        Ok(())
    }

    fn neighbours(&mut self, index: u32, v6: bool) -> io::Result<Vec<Neighbour>> {
        let family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        Ok(self
            .0
            .neighbours(family, index)?
            .iter()
            .filter(|m| m.header.state == neigh::NeighbourState::Permanent)
            .filter_map(|m| {
                Some(Neighbour {
                    ip: neigh::destination(m).filter(|ip| ip.is_ipv6() == v6)?,
                    mac: mac6(neigh::mac(m)?)?,
                })
            })
            .collect())
    }

    fn replace_neighbour(&mut self, index: u32, n: Neighbour) -> io::Result<()> {
        self.0
            .replace_neighbour(&neigh::permanent(index, n.ip, n.mac))
    }

    fn delete_neighbour(&mut self, index: u32, n: Neighbour) -> io::Result<()> {
        self.0
            .delete_neighbour(&neigh::permanent(index, n.ip, n.mac))
    }

    fn fdb(&mut self, index: u32) -> io::Result<Vec<Fdb>> {
        Ok(self
            .0
            .neighbours(AddressFamily::Bridge, index)?
            .iter()
            .filter_map(|m| {
                Some(Fdb {
                    mac: mac6(neigh::mac(m)?)?,
                    dst: neigh::destination(m)?,
                })
            })
            .collect())
    }

    fn replace_fdb(&mut self, index: u32, e: Fdb) -> io::Result<()> {
        self.0.replace_neighbour(&neigh::fdb(index, e.mac, e.dst))
    }

    fn delete_fdb(&mut self, index: u32, e: Fdb) -> io::Result<()> {
        self.0.delete_neighbour(&neigh::fdb(index, e.mac, e.dst))
    }

    fn routes(&mut self, v6: bool) -> io::Result<Vec<PeerRoute>> {
        Ok(self
            .0
            .routes(!v6)?
            .iter()
            .filter(|m| route::in_main_table(m))
            .filter_map(|m| {
                let (Some(dst), Some(gw)) = (route::destination(m), route::gateway(m)) else {
                    return None;
                };
                if dst.is_ipv6() != v6 || gw.is_ipv6() != v6 {
                    return None;
                }
                Some(PeerRoute {
                    dst,
                    gw,
                    oif: route::output_link(m),
                    onlink: route::is_onlink(m),
                })
            })
            .collect())
    }

    fn replace_route(&mut self, r: &PeerRoute) -> io::Result<()> {
        self.0.replace_route(&route_message(r))
    }

    fn delete_route(&mut self, r: &PeerRoute) -> io::Result<()> {
        // Any protocol: a stale route may have been added by hand (`proto boot`).
        let mut m = route_message(r);
        m.header.protocol = RouteProtocol::Unspec;
        self.0.delete_route(&m)
    }

    fn on_link(&mut self, ip: IpAddr) -> io::Result<bool> {
        Ok(self
            .0
            .route_to(ip)?
            .is_some_and(|m| route::gateway(&m).is_none()))
    }
}
