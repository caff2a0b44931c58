//! An in-memory kernel for the vxlan backend's unit tests: links, addresses, neighbour and
//! FDB entries, routes, kept as the kernel keeps them (a deleted link takes its entries and
//! routes with it), every change logged in order, any operation made to fail.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use node_kernel::link::VxlanSpec;

use super::super::kernel::{Device, Fdb, Neighbour, PeerRoute, VxlanAttrs, VxlanKernel};

/// The external interface's index in the backend tests (`hostgw::tests::ext`): the device
/// the kernel picks for a route given without one.
pub const FAKE_EXT_INDEX: u32 = 7;

/// The fake kernel.
#[derive(Debug, Default)]
pub struct FakeKernel {
    /// Links by name.
    pub links: BTreeMap<String, Device>,
    /// Addresses by link index.
    pub addrs: BTreeMap<u32, BTreeSet<IpNetwork>>,
    /// Neighbour entries (link index, entry).
    pub neigh: BTreeSet<(u32, Neighbour)>,
    /// FDB entries (link index, entry).
    pub fdb: BTreeSet<(u32, Fdb)>,
    /// Main-table routes with a gateway.
    pub routes: BTreeSet<PeerRoute>,
    /// Every change, in order: `create flannel.1`, `neigh 10.5.2.0 ...`.
    pub log: Vec<String>,
    /// An operation (a log line's first word, e.g. `fdb`) that fails.
    pub fail: Option<&'static str>,
    /// Addresses answering as on-link (DirectRouting).
    pub on_link: BTreeSet<IpAddr>,
    next_index: u32,
}

fn mac(m: &[u8; 6]) -> String {
    super::super::mac_string(m)
}

impl FakeKernel {
    /// A kernel without links; new links are numbered from 11.
    pub fn new() -> FakeKernel {
        FakeKernel {
            next_index: 10,
            ..FakeKernel::default()
        }
    }

    fn op(&mut self, name: &'static str, line: String) -> io::Result<()> {
        if self.fail == Some(name) {
            return Err(io::Error::other(format!("{name} refused")));
        }
        self.log.push(line);
        Ok(())
    }

    /// Deletes a link by hand (`ip link del`): its entries and routes go with it.
    pub fn remove_link(&mut self, name: &str) {
        if let Some(d) = self.links.remove(name) {
            self.forget(d.index);
        }
    }

    fn forget(&mut self, index: u32) {
        self.addrs.remove(&index);
        self.neigh.retain(|(i, _)| *i != index);
        self.fdb.retain(|(i, _)| *i != index);
        self.routes.retain(|r| r.oif != Some(index));
    }
}

impl VxlanKernel for FakeKernel {
    fn device(&mut self, name: &str) -> io::Result<Option<Device>> {
        Ok(self.links.get(name).cloned())
    }

    fn create_device(&mut self, spec: &VxlanSpec) -> io::Result<()> {
        self.op(
            "create",
            format!("create {} mac {}", spec.name, mac(&spec.mac)),
        )?;
        if self.links.contains_key(&spec.name) {
            return Err(io::Error::from_raw_os_error(17));
        }
        self.next_index += 1;
        self.links.insert(
            spec.name.clone(),
            Device {
                index: self.next_index,
                mac: spec.mac,
                mtu: spec.mtu,
                up: false,
                vxlan: Some(VxlanAttrs {
                    vni: spec.vni,
                    link: Some(spec.link),
                    local: Some(spec.local),
                    port: if spec.port == 0 { 8472 } else { spec.port },
                    gbp: spec.gbp,
                    l2miss: false,
                }),
            },
        );
        Ok(())
    }

    fn delete_device(&mut self, index: u32) -> io::Result<()> {
        self.op("delete", format!("delete link {index}"))?;
        self.links.retain(|_, d| d.index != index);
        self.forget(index);
        Ok(())
    }

    fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        self.op("mtu", format!("mtu {index} {mtu}"))?;
        for d in self.links.values_mut().filter(|d| d.index == index) {
            d.mtu = mtu;
        }
        Ok(())
    }

    fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.op("up", format!("up {index}"))?;
        for d in self.links.values_mut().filter(|d| d.index == index) {
            d.up = true;
        }
        Ok(())
    }

    fn disable_accept_ra(&mut self, name: &str) -> io::Result<()> {
        self.op("accept_ra", format!("accept_ra {name} 0"))
    }

    fn set_tx_checksum(&mut self, name: &str, on: bool) -> io::Result<()> {
        let v = if on { "on" } else { "off" };
        self.op(
            "tx_checksum",
            format!("ethtool -K {name} tx-checksum-ip-generic {v}"),
        )
    }

    fn addresses(&mut self, index: u32) -> io::Result<Vec<IpNetwork>> {
        Ok(self
            .addrs
            .get(&index)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default())
    }

    fn add_address(&mut self, index: u32, addr: IpNetwork) -> io::Result<()> {
        self.op("addr", format!("addr add {addr} dev {index}"))?;
        self.addrs.entry(index).or_default().insert(addr);
        Ok(())
    }

    fn delete_address(&mut self, index: u32, addr: IpNetwork) -> io::Result<()> {
        self.op("addr", format!("addr del {addr} dev {index}"))?;
        if let Some(s) = self.addrs.get_mut(&index) {
            s.remove(&addr);
        }
        Ok(())
    }

    fn neighbours(&mut self, index: u32, v6: bool) -> io::Result<Vec<Neighbour>> {
        Ok(self
            .neigh
            .iter()
            .filter(|(i, n)| *i == index && n.ip.is_ipv6() == v6)
            .map(|(_, n)| *n)
            .collect())
    }

    fn replace_neighbour(&mut self, index: u32, n: Neighbour) -> io::Result<()> {
        self.op(
            "neigh",
            format!("neigh {} lladdr {} dev {index}", n.ip, mac(&n.mac)),
        )?;
        self.neigh.retain(|(i, m)| !(*i == index && m.ip == n.ip));
        self.neigh.insert((index, n));
        Ok(())
    }

    fn delete_neighbour(&mut self, index: u32, n: Neighbour) -> io::Result<()> {
        self.op("neigh_del", format!("neigh del {} dev {index}", n.ip))?;
        self.neigh.retain(|(i, m)| !(*i == index && m.ip == n.ip));
        Ok(())
    }

    fn fdb(&mut self, index: u32) -> io::Result<Vec<Fdb>> {
        Ok(self
            .fdb
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, f)| *f)
            .collect())
    }

    fn replace_fdb(&mut self, index: u32, e: Fdb) -> io::Result<()> {
        self.op(
            "fdb",
            format!("fdb {} dst {} dev {index}", mac(&e.mac), e.dst),
        )?;
        self.fdb.retain(|(i, f)| !(*i == index && f.mac == e.mac));
        self.fdb.insert((index, e));
        Ok(())
    }

    fn delete_fdb(&mut self, index: u32, e: Fdb) -> io::Result<()> {
        self.op("fdb_del", format!("fdb del {} dev {index}", mac(&e.mac)))?;
        self.fdb.retain(|(i, f)| !(*i == index && f.mac == e.mac));
        Ok(())
    }

    fn routes(&mut self, v6: bool) -> io::Result<Vec<PeerRoute>> {
        Ok(self
            .routes
            .iter()
            .filter(|r| r.dst.is_ipv6() == v6)
            .copied()
            .collect())
    }

    fn replace_route(&mut self, r: &PeerRoute) -> io::Result<()> {
        let dev = r.oif.map(|o| format!(" dev {o}")).unwrap_or_default();
        let onlink = if r.onlink { " onlink" } else { "" };
        self.op(
            "route",
            format!("route {} via {}{dev}{onlink}", r.dst, r.gw),
        )?;
        self.routes.retain(|x| x.dst != r.dst);
        // The kernel picks the device of a route given without one (direct routing) and
        // lists it with that device.
        self.routes.insert(PeerRoute {
            oif: r.oif.or(Some(FAKE_EXT_INDEX)),
            ..*r
        });
        Ok(())
    }

    fn delete_route(&mut self, r: &PeerRoute) -> io::Result<()> {
        self.op("route_del", format!("route del {} via {}", r.dst, r.gw))?;
        self.routes.retain(|x| !r.is_met_by(x));
        Ok(())
    }

    fn on_link(&mut self, ip: IpAddr) -> io::Result<bool> {
        Ok(self.on_link.contains(&ip))
    }
}
