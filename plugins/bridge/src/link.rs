//! The kernel requests the plugin makes, each with what it was doing when it fails: the
//! [`Links`] of a namespace as thin wrappers over `node_kernel`'s typed requests on its
//! rtnetlink socket.

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;

use cni_common::result::Route;
use ipnetwork::IpNetwork;
use node_kernel::addr;
use node_kernel::link::{self as klink, BridgeVlanInfoFlags, LinkFlags, LinkId};
use node_kernel::route::{self, RouteAttribute, RouteScope};
use node_kernel::{Context, KernelError, RouteSocket};

use crate::node::{Address, Link, Links};

type Nl<T> = Result<T, KernelError>;

impl Links for RouteSocket {
    fn by_name(&self, name: &str) -> Nl<Option<Link>> {
        self.link(LinkId::Name(name))
            .map(|l| l.as_ref().map(Link::from_message))
            .context(format!("failed to look up {name}"))
    }

    fn by_index(&self, index: u32) -> Nl<Option<Link>> {
        self.link(LinkId::Index(index))
            .map(|l| l.as_ref().map(Link::from_message))
            .context(format!("failed to look up link {index}"))
    }

    /// Created down, so that its sysctls can be set before the kernel configures IPv6 on it.
    fn add_bridge(&self, name: &str, mtu: Option<u32>, vlan_filtering: bool) -> Nl<()> {
        self.create_link(&klink::bridge(name, mtu, vlan_filtering))
            .context(format!("failed to create bridge \"{name}\""))
    }

    fn add_veth(
        &self,
        ifname: &str,
        peer: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        peer_ns: RawFd,
    ) -> io::Result<()> {
        self.create_link(&klink::veth(ifname, peer, peer_ns, mtu, mac))
    }

    fn del_link(&self, index: u32) -> Nl<()> {
        self.delete_link(index)
            .context(format!("failed to delete link {index}"))
    }

    fn set_up(&self, index: u32) -> Nl<()> {
        self.set_link_flag(index, LinkFlags::Up, true)
            .context(format!("failed to set link {index} up"))
    }

    fn set_promisc(&self, index: u32) -> Nl<()> {
        self.set_link_flag(index, LinkFlags::Promisc, true)
            .context("failed to set promiscuous mode")
    }

    fn set_mac(&self, index: u32, mac: Vec<u8>) -> Nl<()> {
        self.set_link(&klink::with_mac(index, mac))
            .context("could not set bridge's mac")
    }

    fn attach_port(&self, port: u32, bridge: u32, hairpin: bool, isolated: bool) -> Nl<()> {
        self.set_link(&klink::controller_of(port, bridge))
            .context(format!("failed to connect link {port} to bridge {bridge}"))?;
        self.modify_link(&klink::bridge_port_flags(port, hairpin, isolated))
            .context("failed to set bridge port flags")
    }

    /// Unless `preserve_default`, the default VLAN 1 goes first; `access` becomes the
    /// untagged PVID; `trunk` VLANs are tagged; a trunk without an access VLAN keeps VLAN 1
    /// as untagged PVID (the reference's layout).
    fn set_port_vlans(
        &self,
        port: u32,
        access: u16,
        trunk: &[u16],
        preserve_default: bool,
    ) -> Nl<()> {
        let untagged_pvid = BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged;
        if !preserve_default {
            // VLAN 1 may be absent already (a bridge created without default PVID): either
            // way it is not on the port afterwards, which is all this step wants.
            let _ = self.delete_port_vlan(port, 1);
        }
        let mut entries: Vec<(u16, BridgeVlanInfoFlags)> = Vec::new();
        if access != 0 {
            entries.push((access, untagged_pvid));
        } else if !trunk.is_empty() {
            entries.push((1, untagged_pvid));
        }
        entries.extend(trunk.iter().map(|v| (*v, BridgeVlanInfoFlags::empty())));
        for (vid, vflags) in entries {
            self.add_port_vlan(port, vid, vflags)
                .context(format!("failed to add VLAN {vid} to port {port}"))?;
        }
        Ok(())
    }

    fn addresses(&self, index: u32) -> Nl<Vec<Address>> {
        let listed = RouteSocket::addresses(self, index).context("failed to list addresses")?;
        Ok(listed
            .into_iter()
            .map(|(net, msg)| Address::from_message(net, msg))
            .collect())
    }

    fn add_address(&self, index: u32, net: IpNetwork, dad: bool) -> Nl<()> {
        RouteSocket::add_address(self, &addr::address(index, net, dad))
            .context(format!("failed to add IP addr {net}"))
    }

    fn del_address(&self, address: &Address) -> Nl<()> {
        self.delete_address(&address.message)
            .context("failed to delete address")
    }

    fn add_route(&self, index: u32, r: &Route, gw: Option<IpAddr>) -> Nl<()> {
        let what = || format!("failed to add route {} via {gw:?}", r.dst);
        let mut m = route::via_link(route::main_table(r.dst.network(), r.dst.prefix()), index);
        if let Some(gw) = gw {
            if addr::family(gw) != m.header.address_family {
                return Err(KernelError::Request {
                    what: what(),
                    source: io::Error::other("gateway and destination differ in family"),
                });
            }
            m = route::via_gateway(m, gw);
        } else {
            m.header.scope = RouteScope::Link;
        }
        if let Some(p) = r.priority {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        if let Some(t) = r.table {
            match u8::try_from(t) {
                Ok(small) => m.header.table = small,
                Err(_) => m.attributes.push(RouteAttribute::Table(t)),
            }
        }
        if let Some(s) = r.scope.and_then(|s| u8::try_from(s).ok()) {
            m.header.scope = RouteScope::from(s);
        }
        RouteSocket::add_route(self, &m).context(what())
    }

    fn routes(&self, v4: bool) -> Nl<Vec<(IpNetwork, Option<IpAddr>)>> {
        let msgs = RouteSocket::routes(self, v4).context("failed to list routes")?;
        Ok(msgs
            .iter()
            .filter_map(|m| route::destination(m).map(|d| (d, route::gateway(m))))
            .collect())
    }
}
