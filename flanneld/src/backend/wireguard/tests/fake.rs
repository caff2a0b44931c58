//! An in-memory node for the wireguard backend: links with addresses and routes, WireGuard
//! devices with keys and peers, a log of every change, and switches for failures.

use std::collections::BTreeMap;
use std::io;

use ipnetwork::IpNetwork;
use node_kernel::wireguard::{DeviceSettings, PeerChange, WgDevice};

use super::super::{Flavor, Link, WgKernel};

/// One link.
#[derive(Debug, Clone)]
pub struct FakeLink {
    pub link: Link,
    pub addresses: Vec<IpNetwork>,
    pub routes: Vec<IpNetwork>,
    pub wg: WgDevice,
    pub private: Option<[u8; 32]>,
}

/// The fake node.
#[derive(Debug, Default)]
pub struct FakeWg {
    pub links: BTreeMap<String, FakeLink>,
    pub log: Vec<String>,
    /// The kernel has no WireGuard: devices are userspace.
    pub no_module: bool,
    /// Peer changes fail.
    pub fail_peers: bool,
    pub stopped: bool,
    pub next_index: u32,
}

impl FakeWg {
    pub fn link_mut(&mut self, name: &str) -> &mut FakeLink {
        self.links.get_mut(name).unwrap()
    }

    /// A link that is not WireGuard (someone else's) of this name.
    pub fn foreign(&mut self, name: &str) {
        self.next_index += 1;
        self.links.insert(
            name.to_owned(),
            FakeLink {
                link: Link {
                    index: 100 + self.next_index,
                    mtu: 1500,
                    up: true,
                    ours: false,
                },
                addresses: Vec::new(),
                routes: Vec::new(),
                wg: WgDevice::default(),
                private: None,
            },
        );
    }

    fn by_index(&mut self, index: u32) -> io::Result<&mut FakeLink> {
        self.links
            .values_mut()
            .find(|l| l.link.index == index)
            .ok_or_else(|| io::Error::from_raw_os_error(19))
    }
}

impl WgKernel for FakeWg {
    fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        Ok(self.links.get(name).map(|l| l.link))
    }

    fn create(&mut self, name: &str, mtu: u32) -> io::Result<Flavor> {
        if self.links.contains_key(name) {
            return Err(io::Error::from_raw_os_error(17));
        }
        self.next_index += 1;
        let link = Link {
            index: self.next_index,
            mtu,
            up: false,
            ours: true,
        };
        self.links.insert(
            name.to_owned(),
            FakeLink {
                link,
                addresses: Vec::new(),
                routes: Vec::new(),
                wg: WgDevice::default(),
                private: None,
            },
        );
        let flavor = if self.no_module {
            Flavor::Userspace
        } else {
            Flavor::Kernel
        };
        self.log.push(format!("create {name} mtu {mtu} {flavor:?}"));
        Ok(flavor)
    }

    fn delete(&mut self, name: &str, index: u32) -> io::Result<()> {
        self.links.retain(|_, l| l.link.index != index);
        self.log.push(format!("delete {name}"));
        Ok(())
    }

    fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        self.by_index(index)?.link.mtu = mtu;
        Ok(())
    }

    fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.by_index(index)?.link.up = true;
        self.log.push(format!("up {index}"));
        Ok(())
    }

    fn addresses(&mut self, index: u32) -> io::Result<Vec<IpNetwork>> {
        Ok(self.by_index(index)?.addresses.clone())
    }

    fn add_address(&mut self, index: u32, addr: IpNetwork) -> io::Result<()> {
        self.log.push(format!("address {addr}"));
        self.by_index(index)?.addresses.push(addr);
        Ok(())
    }

    fn delete_address(&mut self, index: u32, addr: IpNetwork) -> io::Result<()> {
        self.log.push(format!("del address {addr}"));
        self.by_index(index)?.addresses.retain(|a| *a != addr);
        Ok(())
    }

    fn routes(&mut self, index: u32, v4: bool) -> io::Result<Vec<IpNetwork>> {
        let l = self.by_index(index)?;
        Ok(l.routes
            .iter()
            .filter(|r| r.is_ipv4() == v4)
            .copied()
            .collect())
    }

    fn replace_route(&mut self, index: u32, dst: IpNetwork) -> io::Result<()> {
        let l = self.by_index(index)?;
        if !l.routes.contains(&dst) {
            l.routes.push(dst);
        }
        self.log.push(format!("route {dst}"));
        Ok(())
    }

    fn configure(
        &mut self,
        name: &str,
        settings: &DeviceSettings,
        peers: &[PeerChange],
    ) -> io::Result<()> {
        if self.fail_peers && !peers.is_empty() {
            return Err(io::Error::from_raw_os_error(12));
        }
        let mut lines = Vec::new();
        let l = self
            .links
            .get_mut(name)
            .ok_or_else(|| io::Error::from_raw_os_error(19))?;
        if let Some(k) = settings.private_key {
            l.private = Some(k);
            l.wg.public_key = Some(super::super::Key(k).public().0);
        }
        if let Some(p) = settings.listen_port {
            l.wg.listen_port = p;
            lines.push(format!("{name} port {p}"));
        }
        for c in peers {
            match c {
                PeerChange::Set(p) => {
                    l.wg.peers.retain(|x| x.public_key != p.public_key);
                    l.wg.peers.push(p.clone());
                    lines.push(format!(
                        "{name} peer {} {:?} {}",
                        p.endpoint.map(|e| e.to_string()).unwrap_or_default(),
                        p.allowed_ips
                            .iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>(),
                        p.public_key[0]
                    ));
                }
                PeerChange::Remove(k) => {
                    l.wg.peers.retain(|x| x.public_key != *k);
                    lines.push(format!("{name} remove {}", k[0]));
                }
            }
        }
        self.log.extend(lines);
        Ok(())
    }

    fn read(&mut self, name: &str) -> io::Result<WgDevice> {
        self.links
            .get(name)
            .map(|l| l.wg.clone())
            .ok_or_else(|| io::Error::from_raw_os_error(19))
    }

    fn stop(&mut self) {
        self.stopped = true;
    }
}
