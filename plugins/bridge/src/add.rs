//! ADD: bridge, veth pair, IPAM, addresses and routes, gateway, firewall. A failure undoes
//! everything this call did before the error is returned.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use cni_common::result::Interface;
use cni_common::{CniResult, Command, Invocation};
use cni_nft::Tag;
use ipnetwork::IpNetwork;
use node_kernel::link::BridgePortState;

use crate::config::{BridgeConf, format_mac};
use crate::error::BridgeError;
use crate::firewall::{self, Rules};
use crate::gateway;
use crate::node::{Deps, Ipam, Link, LinkKind, Links, Namespace, Node, write_optional};
use crate::sysctl::Sysctl;

/// Retries when the random host veth name is taken.
const VETH_NAME_TRIES: usize = 10;
/// How long a new bridge port may take to reach forwarding (it is immediate without STP).
const PORT_FORWARDING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long IPv6 duplicate address detection may take when `enabledad` asks for it.
const DAD_TIMEOUT: Duration = Duration::from_secs(5);

/// What this ADD has done so far, to undo on failure.
#[derive(Debug, Default)]
struct Undo {
    container_if: Option<u32>,
    ipam: bool,
    firewall: bool,
}

/// One ADD: what it runs against and where.
struct Attach<'a, N: Node, I> {
    deps: &'a Deps<'a, N, I>,
    inv: &'a Invocation,
    conf: &'a BridgeConf,
    /// The container's namespace.
    ns: &'a N::Ns,
    /// The links of the plugin's own namespace.
    host: &'a N::Links,
    /// The links of the container's namespace.
    cont: &'a N::Links,
}

/// ADD: the attachment set up, or, on failure, what this call did undone.
pub fn add<N: Node, I: Ipam>(
    deps: &Deps<'_, N, I>,
    inv: &Invocation,
) -> Result<CniResult, BridgeError> {
    let conf = BridgeConf::load(&inv.config, &inv.env.args)?;
    // A bad or missing IPAM plugin is found before anything is created.
    if let Some(ipam) = &conf.ipam_type {
        deps.ipam.find(ipam, inv)?;
    }
    let netns_path = inv.required_netns()?;
    let ns = deps.node.open(netns_path)?;
    let host = deps.node.host_links()?;
    let cont = deps.node.links_in(&ns)?;
    let bridge = ensure_bridge(deps.node, &host, &conf)?;
    let attach = Attach {
        deps,
        inv,
        conf: &conf,
        ns: &ns,
        host: &host,
        cont: &cont,
    };
    let mut undo = Undo::default();
    let outcome = attach.run(&bridge, &mut undo);
    if outcome.is_err() {
        attach.rollback(&undo);
    }
    outcome
}

fn ensure_bridge<N: Node>(
    node: &N,
    host: &N::Links,
    conf: &BridgeConf,
) -> Result<Link, BridgeError> {
    let name = &conf.bridge;
    let mut found = host.by_name(name)?;
    if found.is_none() {
        cni_common::debug_log!("creating bridge {name}");
        match host.add_bridge(name, conf.mtu, conf.uses_vlans()) {
            // Another ADD created it first: that is what makes concurrent first pods safe.
            Err(e) if !e.is_exists() => return Err(e.into()),
            _ => {}
        }
        found = host.by_name(name)?;
    }
    let br = found.ok_or_else(|| BridgeError::Vanished {
        role: "bridge",
        name: name.clone(),
    })?;
    if br.kind != LinkKind::Bridge {
        return Err(BridgeError::Conflict(format!(
            "\"{name}\" already exists but is not a bridge"
        )));
    }
    if conf.promisc && !br.promisc {
        host.set_promisc(br.index)?;
    }
    // Router advertisements must not configure the bridge; absent without IPv6.
    write_optional(node, Sysctl::AcceptRa(name), "0");
    // No DAD for the bridge's own link-local address: while it is tentative the kernel cannot
    // send neighbour solicitations for forwarded IPv6 packets, so the first forwarded
    // connections to new pods would stall for about two seconds. Absent without IPv6.
    write_optional(node, Sysctl::AcceptDad(name), "0");
    if !br.up {
        host.set_up(br.index)?;
    }
    Ok(br)
}

fn random_veth_name(attempt: usize) -> String {
    let bits = RandomState::new().hash_one(attempt);
    format!("veth{:08x}", bits as u32)
}

impl<N: Node, I: Ipam> Attach<'_, N, I> {
    fn tag(&self) -> Tag<'_> {
        Tag::of(&self.conf.network, self.inv)
    }

    /// Undoes, in reverse, what `undo` says this ADD did; each failure is printed, the
    /// ADD's own error is the one reported.
    fn rollback(&self, undo: &Undo) {
        let (inv, conf) = (self.inv, self.conf);
        cni_common::debug_log!("ADD failed: rolling back {undo:?}");
        if undo.firewall {
            let batch = firewall::del_batch(&self.tag(), conf.ip_masq, conf.mac_spoof_check);
            if let Err(e) = self
                .deps
                .firewall
                .apply(&batch, "failed to remove firewall rules")
            {
                eprintln!("bridge: rollback: {e}");
            }
        }
        if let (true, Some(ipam)) = (undo.ipam, &conf.ipam_type)
            && let Err(e) = self.deps.ipam.exec(ipam, Command::Del, inv)
        {
            eprintln!("bridge: rollback: IPAM DEL: {e}");
        }
        if let Some(index) = undo.container_if
            && let Err(e) = self.cont.del_link(index)
        {
            eprintln!("bridge: rollback: {e}");
        }
    }

    /// Creates the pair and returns (host veth, container interface).
    fn create_veth(&self, undo: &mut Undo) -> Result<(Link, Link), BridgeError> {
        let (inv, conf, cont) = (self.inv, self.conf, self.cont);
        let ifname = inv.ifname();
        if cont.by_name(ifname)?.is_some() {
            return Err(BridgeError::Conflict(format!(
                "interface \"{ifname}\" already exists in the container's network namespace {}",
                inv.required_netns()?.display()
            )));
        }
        let host_ns = self.deps.node.current()?;
        let mut peer = String::new();
        for attempt in 0..VETH_NAME_TRIES {
            peer = random_veth_name(attempt);
            match cont.add_veth(ifname, &peer, conf.mtu, conf.mac, host_ns.fd()) {
                Ok(()) => break,
                Err(e)
                    if e.raw_os_error() == Some(nix::libc::EEXIST)
                        && attempt + 1 < VETH_NAME_TRIES =>
                {
                    continue;
                }
                Err(source) => {
                    return Err(BridgeError::Veth {
                        ifname: ifname.to_owned(),
                        peer,
                        source,
                    });
                }
            }
        }
        let container_if = cont.by_name(ifname)?.ok_or_else(|| BridgeError::Vanished {
            role: "veth",
            name: ifname.to_owned(),
        })?;
        undo.container_if = Some(container_if.index);
        let host_veth = self.host.by_name(&peer)?.ok_or(BridgeError::Vanished {
            role: "host veth",
            name: peer,
        })?;
        Ok((host_veth, container_if))
    }

    /// Everything after the bridge exists; `undo` says what to take back on failure.
    fn run(&self, bridge: &Link, undo: &mut Undo) -> Result<CniResult, BridgeError> {
        let (host_veth, container_if) = self.create_veth(undo)?;
        let host_name = host_veth.name.clone().unwrap_or_default();
        cni_common::debug_log!(
            "veth {host_name} on {} for {}",
            self.conf.bridge,
            self.inv.ifname()
        );
        self.attach_host_veth(bridge, host_veth.index, &host_name)?;
        let mut result = self.initial_result(&host_name, &container_if);
        if let Some(ipam) = &self.conf.ipam_type {
            self.address(ipam, bridge, container_if.index, &mut result, undo)?;
        } else if !self.conf.disable_container_interface {
            self.cont.set_up(container_if.index)?;
        }
        self.write_rules(&result, &host_name, &container_if, undo)?;
        self.report_final_macs(bridge, &host_veth, &mut result)?;
        if let Some(dns) = &self.conf.dns {
            result.dns = dns.clone();
        }
        Ok(result)
    }

    /// The host end: `accept_ra` off, enslaved (hairpin, isolation, VLANs), up.
    fn attach_host_veth(
        &self,
        bridge: &Link,
        host_index: u32,
        host_name: &str,
    ) -> Result<(), BridgeError> {
        let (conf, host) = (self.conf, self.host);
        // Absent without IPv6.
        write_optional(self.deps.node, Sysctl::AcceptRa(host_name), "0");
        host.attach_port(host_index, bridge.index, conf.hairpin, conf.port_isolation)?;
        if conf.uses_vlans() {
            host.set_port_vlans(
                host_index,
                conf.vlan,
                &conf.vlan_trunk,
                conf.preserve_default_vlan,
            )?;
        }
        host.set_up(host_index)?;
        Ok(())
    }

    /// The result's interfaces: the bridge, the host veth, the container's (MACs of the first
    /// two filled in at the end).
    fn initial_result(&self, host_name: &str, container_if: &Link) -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: self.conf.bridge.clone(),
                    ..Interface::default()
                },
                Interface {
                    name: host_name.to_owned(),
                    ..Interface::default()
                },
                Interface {
                    name: self.inv.ifname().to_owned(),
                    mac: format_mac(&container_if.mac),
                    sandbox: self.ns.path().display().to_string(),
                    ..Interface::default()
                },
            ],
            ..CniResult::default()
        }
    }

    /// The IPAM plugin's addresses on the container's interface, the gateway addresses on the
    /// bridge (or its VLAN port), forwarding on.
    fn address(
        &self,
        ipam: &str,
        bridge: &Link,
        container_index: u32,
        result: &mut CniResult,
        undo: &mut Undo,
    ) -> Result<(), BridgeError> {
        let conf = self.conf;
        let ipam_result = self.deps.ipam.add(ipam, self.inv)?;
        undo.ipam = true;
        if ipam_result.ips.is_empty() {
            return Err(BridgeError::Config(
                "IPAM plugin returned missing IP config".into(),
            ));
        }
        result.ips = ipam_result.ips;
        result.routes = ipam_result.routes;
        result.dns = ipam_result.dns;
        let bridge_addrs = gateway::apply(result, conf);
        cni_common::debug_log!(
            "IPAM {ipam} gave {:?}; gateway addresses {bridge_addrs:?}",
            result
                .ips
                .iter()
                .map(|ip| ip.address.to_string())
                .collect::<Vec<_>>()
        );
        self.configure_container(container_index, result)?;
        // With an access VLAN the gateway lives on a `<bridge>.<vlan>` port of that VLAN.
        let gateway_link = if conf.vlan != 0 && !bridge_addrs.is_empty() {
            let gw = self.ensure_vlan_gateway(bridge)?;
            result.interfaces.push(Interface {
                name: gw.name.clone().unwrap_or_default(),
                mac: format_mac(&gw.mac),
                ..Interface::default()
            });
            gw
        } else {
            bridge.clone()
        };
        for addr in &bridge_addrs {
            self.ensure_gateway_addr(&gateway_link, *addr)?;
        }
        if !bridge_addrs.is_empty() {
            self.pin_bridge_mac(bridge.index)?;
            for v4 in [true, false] {
                if bridge_addrs.iter().any(|a| a.is_ipv4() == v4) {
                    self.enable_forwarding(v4)?;
                }
            }
        }
        Ok(())
    }

    /// `ipMasq`'s masquerade and `macspoofchk`'s rules, in one transaction.
    fn write_rules(
        &self,
        result: &CniResult,
        host_name: &str,
        container_if: &Link,
        undo: &mut Undo,
    ) -> Result<(), BridgeError> {
        let conf = self.conf;
        let rules = Rules {
            masquerade: if conf.ip_masq {
                result.ips.iter().map(|ip| ip.address).collect()
            } else {
                Vec::new()
            },
            spoof_check: if conf.mac_spoof_check {
                let mac = <[u8; 6]>::try_from(container_if.mac.as_slice()).map_err(|_| {
                    BridgeError::NoEthernetAddress {
                        mac: container_if.mac.clone(),
                    }
                })?;
                Some((host_name, mac))
            } else {
                None
            },
        };
        if !rules.masquerade.is_empty() || rules.spoof_check.is_some() {
            undo.firewall = true;
            self.deps.firewall.apply(
                &firewall::add_batch(&self.tag(), &rules),
                "failed to add firewall rules",
            )?;
        }
        Ok(())
    }

    /// The bridge takes a port's MAC and a veth's MAC may change once enslaved: the result
    /// reports the final ones (after the port forwards, unless the container has no
    /// interface).
    fn report_final_macs(
        &self,
        bridge: &Link,
        host_veth: &Link,
        result: &mut CniResult,
    ) -> Result<(), BridgeError> {
        let host = self.host;
        let forwarding_veth = if self.conf.disable_container_interface {
            None
        } else {
            Some(self.wait_forwarding(host_veth)?)
        };
        let refreshed_bridge = host.by_index(bridge.index)?;
        result.interfaces[0].mac = format_mac(&refreshed_bridge.as_ref().unwrap_or(bridge).mac);
        let refreshed_veth = match forwarding_veth {
            Some(port) => Some(port),
            None => host.by_index(host_veth.index)?,
        };
        result.interfaces[1].mac = format_mac(&refreshed_veth.as_ref().unwrap_or(host_veth).mac);
        Ok(())
    }

    /// Sysctls, addresses, link up, DAD (only if asked for), routes: inside the container.
    fn configure_container(&self, index: u32, result: &CniResult) -> Result<(), BridgeError> {
        let (conf, cont) = (self.conf, self.cont);
        let ifname = self.inv.ifname();
        let has_v6 = result.ips.iter().any(|ip| ip.address.is_ipv6());
        self.ns
            .with_sysctls(|sysctls| -> Result<(), BridgeError> {
                if has_v6 {
                    for dev in ["lo", ifname] {
                        sysctls.write(Sysctl::DisableIpv6(dev), "0")?;
                    }
                    sysctls.write(Sysctl::KeepAddrOnDown(ifname), "1")?;
                }
                // Optional knobs: a kernel without them is no reason to fail.
                if conf.enable_dad {
                    write_optional(sysctls, Sysctl::EnhancedDad(ifname), "1");
                    write_optional(sysctls, Sysctl::AcceptDad(ifname), "1");
                } else {
                    write_optional(sysctls, Sysctl::AcceptDad(ifname), "0");
                }
                write_optional(sysctls, Sysctl::ArpNotify(ifname), "1");
                Ok(())
            })??;
        for ip in &result.ips {
            cont.add_address(index, ip.address, conf.enable_dad)?;
        }
        cont.set_up(index)?;
        if conf.enable_dad && has_v6 {
            self.wait_dad(index)?;
        }
        let first_gw = |v4: bool| {
            result
                .ips
                .iter()
                .filter(|ip| ip.address.is_ipv4() == v4)
                .find_map(|ip| ip.gateway)
        };
        let mut added: Vec<(IpNetwork, Option<IpAddr>)> = Vec::new();
        for route in &result.routes {
            let gw = route.gw.or_else(|| first_gw(route.dst.is_ipv4()));
            // An identical route twice would make the kernel refuse the second.
            if added.contains(&(route.dst, gw)) {
                continue;
            }
            cont.add_route(index, route, gw)?;
            added.push((route.dst, gw));
        }
        Ok(())
    }

    fn wait_dad(&self, index: u32) -> Result<(), BridgeError> {
        let deadline = Instant::now() + DAD_TIMEOUT;
        loop {
            let addrs = self.cont.addresses(index)?;
            if addrs.iter().any(|a| a.dad_failed) {
                return Err(BridgeError::Conflict(
                    "IPv6 duplicate address detection failed: the address is in use".into(),
                ));
            }
            if !addrs.iter().any(|a| a.tentative) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BridgeError::DadTimeout {
                    ifname: self.inv.ifname().to_owned(),
                });
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// The host-side gateway port of the access VLAN: a veth `<bridge>.<vlan>` whose peer is
    /// an untagged port of that VLAN on the bridge. Shared by every pod of the VLAN.
    fn ensure_vlan_gateway(&self, bridge: &Link) -> Result<Link, BridgeError> {
        let (conf, h) = (self.conf, self.host);
        let name = format!("{}.{}", conf.bridge, conf.vlan);
        if name.len() > cni_common::validate::IFNAME_MAX {
            return Err(BridgeError::Config(format!(
                "the VLAN gateway interface name {name} is longer than 15 bytes: use a shorter bridge name"
            )));
        }
        if let Some(existing) = h.by_name(&name)? {
            return Ok(existing);
        }
        let host_ns = self.deps.node.current()?;
        let peer = random_veth_name(0);
        if let Err(source) = h.add_veth(&name, &peer, conf.mtu, None, host_ns.fd()) {
            return Err(BridgeError::VlanGateway { name, source });
        }
        let port = h.by_name(&peer)?.ok_or(BridgeError::Vanished {
            role: "VLAN gateway port",
            name: peer,
        })?;
        h.attach_port(port.index, bridge.index, false, false)?;
        h.set_port_vlans(port.index, conf.vlan, &[], conf.preserve_default_vlan)?;
        h.set_up(port.index)?;
        let gw = h.by_name(&name)?.ok_or_else(|| BridgeError::Vanished {
            role: "VLAN gateway",
            name: name.clone(),
        })?;
        h.set_up(gw.index)?;
        Ok(gw)
    }

    /// Puts a gateway address on the bridge (or the VLAN gateway). Another IPv4 address, or
    /// an overlapping IPv6 one, means the node's subnet changed since the bridge was set up.
    fn ensure_gateway_addr(&self, target: &Link, addr: IpNetwork) -> Result<(), BridgeError> {
        let (conf, h) = (self.conf, self.host);
        let dev = target.name.as_deref().unwrap_or(&conf.bridge);
        for existing in h.addresses(target.index)? {
            let net = existing.net;
            if net.is_ipv4() != addr.is_ipv4() {
                continue;
            }
            if net.ip() == addr.ip() && net.prefix() == addr.prefix() {
                return Ok(());
            }
            let clashes = match (net, addr) {
                (IpNetwork::V4(_), IpNetwork::V4(_)) => true,
                (IpNetwork::V6(e), IpNetwork::V6(a)) => {
                    !e.ip().is_unicast_link_local() && (e.contains(a.ip()) || a.contains(e.ip()))
                }
                _ => false,
            };
            if !clashes {
                continue;
            }
            if conf.force_address {
                h.del_address(&existing)?;
            } else {
                return Err(BridgeError::Conflict(format!(
                    "failed to set bridge addr: \"{dev}\" already has an IP address different from {addr} \
                     ({net}); the node's subnet has changed: delete the old address \
                     (ip addr del {net} dev {dev}) or set \"forceAddress\": true"
                )));
            }
        }
        match h.add_address(target.index, addr, false) {
            // Concurrent first pods add the same gateway at once.
            Err(e) if !e.is_exists() => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Sets the bridge's MAC to its current value so that it stops following port churn.
    fn pin_bridge_mac(&self, index: u32) -> Result<(), BridgeError> {
        if let Some(br) = self.host.by_index(index)? {
            self.host.set_mac(index, br.mac)?;
        }
        Ok(())
    }

    fn enable_forwarding(&self, v4: bool) -> Result<(), BridgeError> {
        let key = Sysctl::forwarding(v4);
        let node = self.deps.node;
        if node.read(key).ok().as_deref() != Some("1") {
            node.write(key, "1")?;
        }
        Ok(())
    }

    /// Waits until the new port forwards (immediately without STP), so that the first
    /// packets of the pod are not lost (Go #463), polling quickly instead of sleeping for
    /// seconds. Returns the port as last read, which ADD reports (its MAC is final once
    /// enslaved).
    fn wait_forwarding(&self, host_veth: &Link) -> Result<Link, BridgeError> {
        let deadline = Instant::now() + PORT_FORWARDING_TIMEOUT;
        let mut pause = Duration::from_micros(200);
        loop {
            let port = self.host.by_index(host_veth.index)?;
            let state = port.as_ref().and_then(|p| p.port_state);
            if let Some(port) = port
                && state == Some(BridgePortState::Forwarding)
            {
                return Ok(port);
            }
            if Instant::now() > deadline {
                return Err(BridgeError::PortNotForwarding {
                    port: host_veth.name.clone().unwrap_or_default(),
                    state,
                });
            }
            sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}
