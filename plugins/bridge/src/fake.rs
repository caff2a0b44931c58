//! In-memory fakes of the bridge's seams for unit tests: namespaces holding links (with
//! indices, ports, VLANs), addresses, routes and sysctls; an IPAM plugin; every change
//! logged in order; any step can be made to fail once.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use cni_common::result::Route;
use cni_common::{CniError, CniResult, Command, Invocation};
use ipnetwork::IpNetwork;
use node_kernel::link::BridgePortState;
use node_kernel::{Context, KernelError, NetnsError};

use crate::node::{Address, Ipam, Link, LinkKind, Links, Namespace, Node, Sysctls};
use crate::sysctl::Sysctl;

/// The "file descriptor" of the plugin's own namespace.
pub const HOST: RawFd = 3;
/// The path the container's namespace is opened by.
pub const NETNS: &str = "/var/run/netns/pod";

/// A link of a fake namespace, with what the kernel would know about it.
#[derive(Debug, Clone)]
pub struct FakeLink {
    /// What [`Links`] reports.
    pub link: Link,
    /// The other end of a veth: (namespace, index).
    pub peer: Option<(RawFd, u32)>,
    /// The port's hairpin flag.
    pub hairpin: bool,
    /// The port's isolation flag.
    pub isolated: bool,
    /// The port's VLANs (access first).
    pub vlans: Vec<u16>,
    /// The MTU it was created with.
    pub mtu: Option<u32>,
}

/// An address of a fake namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeAddr {
    /// The link it is on.
    pub index: u32,
    /// The address and prefix.
    pub net: IpNetwork,
    /// DAD still runs.
    pub tentative: bool,
    /// DAD found it in use.
    pub dad_failed: bool,
}

/// One fake namespace.
#[derive(Debug, Clone, Default)]
pub struct FakeNs {
    /// Its links.
    pub links: Vec<FakeLink>,
    /// Its addresses.
    pub addrs: Vec<FakeAddr>,
    /// (link, destination, gateway)
    pub routes: Vec<(u32, IpNetwork, Option<IpAddr>)>,
    /// The sysctls written, by key.
    pub sysctls: BTreeMap<String, String>,
}

impl FakeNs {
    /// The link called `name`.
    pub fn named(&self, name: &str) -> Option<&FakeLink> {
        self.links
            .iter()
            .find(|l| l.link.name.as_deref() == Some(name))
    }

    fn at(&mut self, index: u32) -> io::Result<&mut FakeLink> {
        self.links
            .iter_mut()
            .find(|l| l.link.index == index)
            .ok_or_else(|| errno(nix::libc::ENODEV))
    }
}

#[derive(Debug)]
struct State {
    namespaces: BTreeMap<RawFd, FakeNs>,
    paths: BTreeMap<PathBuf, RawFd>,
    next_index: u32,
    /// (step, calls to let pass first, errno).
    failures: Vec<(String, u32, i32)>,
    /// Polls of a port before it forwards; `None`: never.
    polls_to_forward: Option<u32>,
    polls: u32,
    /// IPv6 addresses added with DAD fail it.
    dad_fails: bool,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// The node: the plugin's own namespace ([`HOST`]) and a container's at [`NETNS`].
#[derive(Debug, Clone)]
pub struct FakeNode {
    state: Arc<Mutex<State>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Default for FakeNode {
    fn default() -> Self {
        FakeNode::new()
    }
}

impl FakeNode {
    /// An empty host namespace and an empty container namespace at [`NETNS`].
    pub fn new() -> FakeNode {
        let mut namespaces = BTreeMap::new();
        namespaces.insert(HOST, FakeNs::default());
        namespaces.insert(HOST + 1, FakeNs::default());
        let mut paths = BTreeMap::new();
        paths.insert(PathBuf::from(NETNS), HOST + 1);
        FakeNode {
            state: Arc::new(Mutex::new(State {
                namespaces,
                paths,
                next_index: 10,
                failures: Vec::new(),
                polls_to_forward: Some(0),
                polls: 0,
                dad_fails: false,
            })),
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// The next call of `step` (a [`Links`] method name, `write <key>`, `open`, `enter`,
    /// `socket`) fails with `errno`.
    pub fn fail(&self, step: &str, errno: i32) {
        self.fail_nth(step, 1, errno);
    }

    /// The `n`th call of `step` from now fails with `errno`.
    pub fn fail_nth(&self, step: &str, n: u32, errno: i32) {
        self.lock()
            .failures
            .push((step.to_owned(), n.saturating_sub(1), errno));
    }

    /// Ports forward after `polls` reads; `None`: never.
    pub fn forward_after(&self, polls: Option<u32>) {
        self.lock().polls_to_forward = polls;
    }

    /// IPv6 duplicate address detection fails.
    pub fn dad_fails(&self) {
        self.lock().dad_fails = true;
    }

    /// The container's namespace is gone.
    pub fn remove_netns(&self) {
        self.lock().paths.clear();
    }

    /// Every change made so far, in order: `host add_bridge cni0`, `ctr add_address ...`,
    /// `ipam ADD`.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Position of the first log entry starting with `prefix`.
    pub fn at(&self, prefix: &str) -> Option<usize> {
        self.log().iter().position(|l| l.starts_with(prefix))
    }

    /// A copy of the plugin's own namespace.
    pub fn host(&self) -> FakeNs {
        self.lock().namespaces[&HOST].clone()
    }

    /// A copy of the container's namespace.
    pub fn container(&self) -> FakeNs {
        self.lock().namespaces[&(HOST + 1)].clone()
    }

    /// Adds a link to a namespace, as if another program had made it.
    pub fn put_link(&self, ns: RawFd, name: &str, kind: LinkKind) -> u32 {
        let mut st = self.lock();
        let index = st.next_index;
        st.next_index += 1;
        st.namespaces
            .get_mut(&ns)
            .unwrap()
            .links
            .push(new_link(index, name, kind, None));
        index
    }

    /// Adds an address, as if another program had.
    pub fn put_address(&self, ns: RawFd, index: u32, net: &str) {
        self.lock()
            .namespaces
            .get_mut(&ns)
            .unwrap()
            .addrs
            .push(FakeAddr {
                index,
                net: net.parse().unwrap(),
                tentative: false,
                dad_failed: false,
            });
    }

    /// Removes addresses or routes, as if someone had.
    pub fn edit(&self, ns: RawFd, f: impl FnOnce(&mut FakeNs)) {
        f(self.lock().namespaces.get_mut(&ns).unwrap());
    }

    fn record(&self, entry: String) {
        self.log.lock().unwrap().push(entry);
    }

    fn injected(&self, step: &str) -> io::Result<()> {
        let mut st = self.lock();
        let Some(i) = st.failures.iter().position(|(s, _, _)| s == step) else {
            return Ok(());
        };
        match &mut st.failures[i] {
            (_, 0, _) => Err(errno(st.failures.remove(i).2)),
            (_, pass, _) => {
                *pass -= 1;
                Ok(())
            }
        }
    }
}

fn new_link(index: u32, name: &str, kind: LinkKind, mac: Option<[u8; 6]>) -> FakeLink {
    let [a, b, c, d] = index.to_be_bytes();
    FakeLink {
        link: Link {
            index,
            name: Some(name.to_owned()),
            kind,
            mac: mac.map_or_else(|| vec![0x0a, 0x58, a, b, c, d], |m| m.to_vec()),
            up: false,
            promisc: false,
            controller: None,
            port_state: None,
        },
        peer: None,
        hairpin: false,
        isolated: false,
        vlans: Vec::new(),
        mtu: None,
    }
}

fn ns_name(ns: RawFd) -> &'static str {
    if ns == HOST { "host" } else { "ctr" }
}

/// An open fake namespace.
#[derive(Debug)]
pub struct FakeNsHandle {
    fd: RawFd,
    path: PathBuf,
    node: FakeNode,
}

impl Namespace for FakeNsHandle {
    fn path(&self) -> &Path {
        &self.path
    }

    fn fd(&self) -> RawFd {
        self.fd
    }

    fn with_sysctls<T>(&self, f: impl FnOnce(&dyn Sysctls) -> T) -> Result<T, NetnsError> {
        self.node
            .injected("enter")
            .map_err(|source| NetnsError::Open {
                path: self.path.clone(),
                source,
            })?;
        Ok(f(&FakeSysctls {
            ns: self.fd,
            node: self.node.clone(),
        }))
    }
}

/// The sysctls of a fake namespace: any key can be written unless a failure is injected.
#[derive(Debug)]
pub struct FakeSysctls {
    ns: RawFd,
    node: FakeNode,
}

impl Sysctls for FakeSysctls {
    fn read(&self, key: Sysctl<'_>) -> Result<String, NetnsError> {
        let key = key.key();
        let st = self.node.lock();
        st.namespaces[&self.ns]
            .sysctls
            .get(&key)
            .cloned()
            .ok_or_else(|| NetnsError::Sysctl {
                key,
                source: errno(nix::libc::ENOENT),
            })
    }

    fn write(&self, key: Sysctl<'_>, value: &str) -> Result<(), NetnsError> {
        let key = key.key();
        self.node
            .injected(&format!("write {key}"))
            .map_err(|source| NetnsError::Sysctl {
                key: key.clone(),
                source,
            })?;
        self.node
            .record(format!("{} write {key}={value}", ns_name(self.ns)));
        self.node
            .lock()
            .namespaces
            .get_mut(&self.ns)
            .unwrap()
            .sysctls
            .insert(key, value.to_owned());
        Ok(())
    }
}

impl Sysctls for FakeNode {
    fn read(&self, key: Sysctl<'_>) -> Result<String, NetnsError> {
        FakeSysctls {
            ns: HOST,
            node: self.clone(),
        }
        .read(key)
    }

    fn write(&self, key: Sysctl<'_>, value: &str) -> Result<(), NetnsError> {
        FakeSysctls {
            ns: HOST,
            node: self.clone(),
        }
        .write(key, value)
    }
}

impl Node for FakeNode {
    type Ns = FakeNsHandle;
    type Links = FakeLinks;

    fn open(&self, path: &Path) -> Result<FakeNsHandle, NetnsError> {
        self.injected("open").map_err(|source| NetnsError::Open {
            path: path.to_owned(),
            source,
        })?;
        let fd = self.lock().paths.get(path).copied();
        match fd {
            Some(fd) => Ok(FakeNsHandle {
                fd,
                path: path.to_owned(),
                node: self.clone(),
            }),
            None => Err(NetnsError::NotFound(path.to_owned())),
        }
    }

    fn current(&self) -> Result<FakeNsHandle, NetnsError> {
        Ok(FakeNsHandle {
            fd: HOST,
            path: PathBuf::from("/proc/thread-self/ns/net"),
            node: self.clone(),
        })
    }

    fn host_links(&self) -> Result<FakeLinks, KernelError> {
        self.injected("socket").map_err(KernelError::Socket)?;
        Ok(FakeLinks {
            ns: HOST,
            node: self.clone(),
        })
    }

    fn links_in(&self, ns: &FakeNsHandle) -> Result<FakeLinks, KernelError> {
        self.injected("socket").map_err(KernelError::Socket)?;
        Ok(FakeLinks {
            ns: ns.fd,
            node: self.clone(),
        })
    }
}

/// The links of one fake namespace.
#[derive(Debug)]
pub struct FakeLinks {
    ns: RawFd,
    node: FakeNode,
}

impl FakeLinks {
    /// Runs a change: the injected failure first, then the log entry, then `f`.
    fn change<T>(
        &self,
        step: &str,
        args: String,
        f: impl FnOnce(&mut State, RawFd) -> io::Result<T>,
    ) -> io::Result<T> {
        self.node.injected(step)?;
        self.node.record(
            format!("{} {step} {args}", ns_name(self.ns))
                .trim_end()
                .to_owned(),
        );
        f(&mut self.node.lock(), self.ns)
    }

    fn name_of(&self, index: u32) -> String {
        let st = self.node.lock();
        st.namespaces[&self.ns]
            .links
            .iter()
            .find(|l| l.link.index == index)
            .and_then(|l| l.link.name.clone())
            .unwrap_or_else(|| index.to_string())
    }

    fn lookup(&self, step: &str, f: impl Fn(&Link) -> bool) -> io::Result<Option<Link>> {
        self.node.injected(step)?;
        let mut st = self.node.lock();
        let forward = st.polls_to_forward.is_some_and(|n| st.polls >= n);
        st.polls += 1;
        let ns = st.namespaces.get_mut(&self.ns).unwrap();
        let found = ns.links.iter_mut().find(|l| f(&l.link));
        Ok(found.map(|l| {
            if forward && l.link.up && l.link.port_state == Some(BridgePortState::Listening) {
                l.link.port_state = Some(BridgePortState::Forwarding);
            }
            l.link.clone()
        }))
    }
}

impl Links for FakeLinks {
    fn by_name(&self, name: &str) -> Result<Option<Link>, KernelError> {
        self.lookup("by_name", |l| l.name.as_deref() == Some(name))
            .context(format!("failed to look up {name}"))
    }

    fn by_index(&self, index: u32) -> Result<Option<Link>, KernelError> {
        self.lookup("by_index", |l| l.index == index)
            .context(format!("failed to look up link {index}"))
    }

    fn add_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
        _vlan_filtering: bool,
    ) -> Result<(), KernelError> {
        self.change("add_bridge", name.to_owned(), |st, ns| {
            if st.namespaces[&ns].named(name).is_some() {
                return Err(errno(nix::libc::EEXIST));
            }
            let index = st.next_index;
            st.next_index += 1;
            let mut link = new_link(index, name, LinkKind::Bridge, None);
            link.mtu = mtu;
            st.namespaces.get_mut(&ns).unwrap().links.push(link);
            Ok(())
        })
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
        self.change("add_veth", format!("{ifname} {peer}"), |st, ns| {
            if st.namespaces[&ns].named(ifname).is_some()
                || st.namespaces[&peer_ns].named(peer).is_some()
            {
                return Err(errno(nix::libc::EEXIST));
            }
            let (a, b) = (st.next_index, st.next_index + 1);
            st.next_index += 2;
            let mut here = new_link(a, ifname, LinkKind::Veth, mac);
            here.peer = Some((peer_ns, b));
            here.mtu = mtu;
            let mut there = new_link(b, peer, LinkKind::Veth, None);
            there.peer = Some((ns, a));
            there.mtu = mtu;
            st.namespaces.get_mut(&ns).unwrap().links.push(here);
            st.namespaces.get_mut(&peer_ns).unwrap().links.push(there);
            Ok(())
        })
    }

    fn del_link(&self, index: u32) -> Result<(), KernelError> {
        let name = self.name_of(index);
        self.change("del_link", name, |st, ns| {
            let link = st.namespaces.get_mut(&ns).unwrap().at(index)?.clone();
            let mut gone = vec![(ns, index)];
            gone.extend(link.peer);
            for (ns, index) in gone {
                let n = st.namespaces.get_mut(&ns).unwrap();
                n.links.retain(|l| l.link.index != index);
                n.addrs.retain(|a| a.index != index);
                n.routes.retain(|r| r.0 != index);
            }
            Ok(())
        })
        .context(format!("failed to delete link {index}"))
    }

    fn set_up(&self, index: u32) -> Result<(), KernelError> {
        self.change("set_up", self.name_of(index), |st, ns| {
            st.namespaces.get_mut(&ns).unwrap().at(index)?.link.up = true;
            Ok(())
        })
        .context(format!("failed to set link {index} up"))
    }

    fn set_promisc(&self, index: u32) -> Result<(), KernelError> {
        self.change("set_promisc", self.name_of(index), |st, ns| {
            st.namespaces.get_mut(&ns).unwrap().at(index)?.link.promisc = true;
            Ok(())
        })
        .context("failed to set promiscuous mode")
    }

    fn set_mac(&self, index: u32, mac: Vec<u8>) -> Result<(), KernelError> {
        self.change("set_mac", self.name_of(index), |st, ns| {
            st.namespaces.get_mut(&ns).unwrap().at(index)?.link.mac = mac;
            Ok(())
        })
        .context("could not set bridge's mac")
    }

    fn attach_port(
        &self,
        port: u32,
        bridge: u32,
        hairpin: bool,
        isolated: bool,
    ) -> Result<(), KernelError> {
        let args = format!("{} {}", self.name_of(port), self.name_of(bridge));
        self.change("attach_port", args, |st, ns| {
            let n = st.namespaces.get_mut(&ns).unwrap();
            n.at(bridge)?;
            let l = n.at(port)?;
            l.link.controller = Some(bridge);
            l.link.port_state = Some(BridgePortState::Listening);
            l.hairpin = hairpin;
            l.isolated = isolated;
            Ok(())
        })
        .context(format!("failed to connect link {port} to bridge {bridge}"))
    }

    fn set_port_vlans(
        &self,
        port: u32,
        access: u16,
        trunk: &[u16],
        _preserve_default: bool,
    ) -> Result<(), KernelError> {
        self.change("set_port_vlans", self.name_of(port), |st, ns| {
            let l = st.namespaces.get_mut(&ns).unwrap().at(port)?;
            l.vlans = std::iter::once(access)
                .filter(|v| *v != 0)
                .chain(trunk.iter().copied())
                .collect();
            Ok(())
        })
        .context(format!("failed to add VLANs to port {port}"))
    }

    fn addresses(&self, index: u32) -> Result<Vec<Address>, KernelError> {
        self.node
            .injected("addresses")
            .context("failed to list addresses")?;
        let mut st = self.node.lock();
        let ns = st.namespaces.get_mut(&self.ns).unwrap();
        let listed = ns
            .addrs
            .iter()
            .filter(|a| a.index == index)
            .map(|a| Address {
                net: a.net,
                tentative: a.tentative,
                dad_failed: a.dad_failed,
                message: node_kernel::addr::address(index, a.net, false),
            })
            .collect();
        // Duplicate address detection finishes once somebody looked.
        for a in &mut ns.addrs {
            a.tentative = false;
        }
        Ok(listed)
    }

    fn add_address(&self, index: u32, net: IpNetwork, dad: bool) -> Result<(), KernelError> {
        let args = format!("{} {net}", self.name_of(index));
        self.change("add_address", args, |st, ns| {
            let dad_fails = st.dad_fails;
            let n = st.namespaces.get_mut(&ns).unwrap();
            n.at(index)?;
            if n.addrs.iter().any(|a| a.index == index && a.net == net) {
                return Err(errno(nix::libc::EEXIST));
            }
            let dad = dad && net.is_ipv6();
            n.addrs.push(FakeAddr {
                index,
                net,
                tentative: dad,
                dad_failed: dad && dad_fails,
            });
            Ok(())
        })
        .context(format!("failed to add IP addr {net}"))
    }

    fn del_address(&self, address: &Address) -> Result<(), KernelError> {
        let index = address.message.header.index;
        let args = format!("{} {}", self.name_of(index), address.net);
        self.change("del_address", args, |st, ns| {
            let n = st.namespaces.get_mut(&ns).unwrap();
            let before = n.addrs.len();
            n.addrs
                .retain(|a| !(a.index == index && a.net == address.net));
            if n.addrs.len() == before {
                return Err(errno(nix::libc::EADDRNOTAVAIL));
            }
            Ok(())
        })
        .context("failed to delete address")
    }

    fn add_route(&self, index: u32, route: &Route, gw: Option<IpAddr>) -> Result<(), KernelError> {
        let args = format!("{} via {gw:?}", route.dst);
        self.change("add_route", args, |st, ns| {
            let n = st.namespaces.get_mut(&ns).unwrap();
            n.at(index)?;
            if n.routes.iter().any(|r| r.1 == route.dst && r.2 == gw) {
                return Err(errno(nix::libc::EEXIST));
            }
            n.routes.push((index, route.dst, gw));
            Ok(())
        })
        .context(format!("failed to add route {} via {gw:?}", route.dst))
    }

    fn routes(&self, v4: bool) -> Result<Vec<(IpNetwork, Option<IpAddr>)>, KernelError> {
        self.node
            .injected("routes")
            .context("failed to list routes")?;
        let st = self.node.lock();
        Ok(st.namespaces[&self.ns]
            .routes
            .iter()
            .filter(|r| r.1.is_ipv4() == v4)
            .map(|r| (r.1, r.2))
            .collect())
    }
}

/// An IPAM plugin that hands out the result it was given and logs each call into the node's
/// log (`ipam ADD`, `ipam DEL`...).
#[derive(Debug)]
pub struct FakeIpam {
    log: Arc<Mutex<Vec<String>>>,
    /// What ADD returns.
    pub result: CniResult,
    /// Its binary is not in `CNI_PATH`.
    pub missing: bool,
    failures: Mutex<Vec<Command>>,
}

impl FakeIpam {
    /// An IPAM plugin giving `result` (JSON of a 1.0.0 result).
    pub fn new(node: &FakeNode, result: &str) -> FakeIpam {
        FakeIpam {
            log: node.log.clone(),
            result: serde_json::from_str(result).unwrap(),
            missing: false,
            failures: Mutex::new(Vec::new()),
        }
    }

    /// The next `command` fails (code 11, "ipam busy").
    pub fn fail(&self, command: Command) {
        self.failures.lock().unwrap().push(command);
    }

    fn call(&self, command: Command) -> Result<(), CniError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("ipam {}", command.as_str()));
        let mut failures = self.failures.lock().unwrap();
        match failures.iter().position(|c| *c == command) {
            Some(i) => {
                failures.remove(i);
                Err(CniError::Delegated {
                    code: 11,
                    msg: "ipam busy".into(),
                    details: String::new(),
                })
            }
            None => Ok(()),
        }
    }
}

impl Ipam for FakeIpam {
    fn find(&self, name: &str, _inv: &Invocation) -> Result<(), CniError> {
        if self.missing {
            return Err(CniError::plugin(
                cni_common::error::code::DELEGATE,
                format!("failed to find plugin \"{name}\" in path [/opt/cni/bin]"),
                "",
            ));
        }
        Ok(())
    }

    fn add(&self, _name: &str, _inv: &Invocation) -> Result<CniResult, CniError> {
        self.call(Command::Add)?;
        Ok(self.result.clone())
    }

    fn exec(&self, _name: &str, command: Command, _inv: &Invocation) -> Result<(), CniError> {
        self.call(command)
    }
}
