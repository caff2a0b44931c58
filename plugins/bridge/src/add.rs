//! ADD: bridge, veth pair, IPAM, addresses and routes, gateway, firewall. A failure undoes
//! everything this call did before the error is returned.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use cni_common::result::Interface;
use cni_common::{CniResult, Command, Invocation, delegate};
use ipnetwork::IpNetwork;
use node_kernel::addr::AddressFlags;
use node_kernel::link::{BridgePortState, InfoKind, LinkMessage};
use node_kernel::{Netns, RouteSocket as Netlink, read_sysctl, write_sysctl};

use crate::config::{BridgeConf, format_mac};
use crate::error::BridgeError;
use crate::firewall::{self, Rules};
use crate::gateway;
use crate::link;
use cni_nft::Tag;

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

pub fn tag<'a>(conf: &'a BridgeConf, inv: &'a Invocation) -> Tag<'a> {
    Tag {
        network: &conf.network,
        container_id: inv.container_id(),
        ifname: inv.ifname(),
    }
}

pub fn add(inv: &Invocation) -> Result<CniResult, BridgeError> {
    let conf = BridgeConf::load(&inv.config, &inv.env.args)?;
    // A bad or missing IPAM plugin is found before anything is created.
    if let Some(ipam) = &conf.ipam_type {
        delegate::find(ipam, &inv.env.path)?;
    }
    let netns_path = inv.required_netns()?;
    let ns = Netns::open(netns_path)?;
    let host = Netlink::current()?;
    let cont = Netlink::in_netns(&ns)?;
    let bridge = ensure_bridge(&host, &conf)?;
    let mut undo = Undo::default();
    let outcome = add_attachment(inv, &conf, &ns, &host, &cont, &bridge, &mut undo);
    if outcome.is_err() {
        rollback(inv, &conf, &cont, &undo);
    }
    outcome
}

fn rollback(inv: &Invocation, conf: &BridgeConf, cont: &Netlink, undo: &Undo) {
    cni_common::debug_log!("ADD failed: rolling back {undo:?}");
    if undo.firewall {
        let batch = firewall::del_batch(&tag(conf, inv), conf.ip_masq, conf.mac_spoof_check);
        if let Err(e) = cni_nft::apply(&batch, "failed to remove firewall rules") {
            eprintln!("bridge: rollback: {e}");
        }
    }
    if let (true, Some(ipam)) = (undo.ipam, &conf.ipam_type)
        && let Err(e) = delegate::exec(ipam, Command::Del, &inv.env, inv.config.raw())
    {
        eprintln!("bridge: rollback: IPAM DEL: {e}");
    }
    if let Some(index) = undo.container_if
        && let Err(e) = link::del_link(cont, index)
    {
        eprintln!("bridge: rollback: {e}");
    }
}

fn ensure_bridge(host: &Netlink, conf: &BridgeConf) -> Result<LinkMessage, BridgeError> {
    let h = host;
    let name = &conf.bridge;
    let mut found = link::by_name(h, name)?;
    if found.is_none() {
        cni_common::debug_log!("creating bridge {name}");
        match link::add_bridge(h, name, conf.mtu, conf.uses_vlans()) {
            // Another ADD created it first: that is what makes concurrent first pods safe.
            Err(e) if !e.is_exists() => return Err(e.into()),
            _ => {}
        }
        found = link::by_name(h, name)?;
    }
    let br = found.ok_or_else(|| BridgeError::Kernel(format!("bridge \"{name}\" vanished")))?;
    if link::kind(&br) != Some(&InfoKind::Bridge) {
        return Err(BridgeError::Conflict(format!(
            "\"{name}\" already exists but is not a bridge"
        )));
    }
    if conf.promisc && !link::is_promisc(&br) {
        link::set_promisc(h, br.header.index)?;
    }
    // Router advertisements must not configure the bridge; absent without IPv6.
    let _ = write_sysctl(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
    // No DAD for the bridge's own link-local address: while it is tentative the kernel cannot
    // send neighbour solicitations for forwarded IPv6 packets, so the first forwarded
    // connections to new pods would stall for about two seconds.
    let _ = write_sysctl(&format!("net/ipv6/conf/{name}/accept_dad"), "0");
    if !link::is_up(&br) {
        link::set_up(h, br.header.index, true)?;
    }
    Ok(br)
}

fn random_veth_name(attempt: usize) -> String {
    let bits = RandomState::new().hash_one(attempt);
    format!("veth{:08x}", bits as u32)
}

/// Creates the pair and returns (host veth, container interface).
fn create_veth(
    inv: &Invocation,
    conf: &BridgeConf,
    host: &Netlink,
    cont: &Netlink,
    undo: &mut Undo,
) -> Result<(LinkMessage, LinkMessage), BridgeError> {
    let ifname = inv.ifname();
    if link::by_name(cont, ifname)?.is_some() {
        return Err(BridgeError::Conflict(format!(
            "interface \"{ifname}\" already exists in the container's network namespace {}",
            inv.required_netns()?.display()
        )));
    }
    let host_ns = Netns::current()?;
    let mut peer = String::new();
    for attempt in 0..VETH_NAME_TRIES {
        peer = random_veth_name(attempt);
        let created = link::add_veth(cont, ifname, &peer, conf.mtu, conf.mac, host_ns.fd());
        match created {
            Ok(()) => break,
            Err(e)
                if e.raw_os_error() == Some(nix::libc::EEXIST) && attempt + 1 < VETH_NAME_TRIES =>
            {
                continue;
            }
            Err(e) => {
                return Err(BridgeError::Kernel(format!(
                    "failed to create veth pair {ifname}/{peer}: {e}"
                )));
            }
        }
    }
    let container_if = link::by_name(cont, ifname)?
        .ok_or_else(|| BridgeError::Kernel(format!("veth {ifname} vanished after creation")))?;
    undo.container_if = Some(container_if.header.index);
    let host_veth = link::by_name(host, &peer)?
        .ok_or_else(|| BridgeError::Kernel(format!("host veth {peer} not found after creation")))?;
    Ok((host_veth, container_if))
}

fn add_attachment(
    inv: &Invocation,
    conf: &BridgeConf,
    ns: &Netns,
    host: &Netlink,
    cont: &Netlink,
    bridge: &LinkMessage,
    undo: &mut Undo,
) -> Result<CniResult, BridgeError> {
    let (host_veth, container_if) = create_veth(inv, conf, host, cont, undo)?;
    let host_index = host_veth.header.index;
    let host_name = link::name(&host_veth).unwrap_or_default().to_owned();
    cni_common::debug_log!("veth {host_name} on {} for {}", conf.bridge, inv.ifname());
    let _ = write_sysctl(&format!("net/ipv6/conf/{host_name}/accept_ra"), "0");
    link::attach_port(
        host,
        host_index,
        bridge.header.index,
        conf.hairpin,
        conf.port_isolation,
    )?;
    if conf.uses_vlans() {
        link::set_port_vlans(
            host,
            host_index,
            conf.vlan,
            &conf.vlan_trunk,
            conf.preserve_default_vlan,
        )?;
    }
    link::set_up(host, host_index, true)?;

    let mut result = CniResult {
        interfaces: vec![
            Interface {
                name: conf.bridge.clone(),
                ..Interface::default()
            },
            Interface {
                name: host_name.clone(),
                ..Interface::default()
            },
            Interface {
                name: inv.ifname().to_owned(),
                mac: format_mac(&link::mac(&container_if)),
                sandbox: ns.path().display().to_string(),
                ..Interface::default()
            },
        ],
        ..CniResult::default()
    };

    let container_index = container_if.header.index;
    if let Some(ipam) = &conf.ipam_type {
        let ipam_result = delegate::add(ipam, &inv.env, inv.config.raw(), inv.config.version)?;
        undo.ipam = true;
        if ipam_result.ips.is_empty() {
            return Err(BridgeError::Config(
                "IPAM plugin returned missing IP config".into(),
            ));
        }
        result.ips = ipam_result.ips;
        result.routes = ipam_result.routes;
        result.dns = ipam_result.dns;
        let bridge_addrs = gateway::apply(&mut result, conf);
        cni_common::debug_log!(
            "IPAM {ipam} gave {:?}; gateway addresses {bridge_addrs:?}",
            result
                .ips
                .iter()
                .map(|ip| ip.address.to_string())
                .collect::<Vec<_>>()
        );
        configure_container(inv, conf, ns, cont, container_index, &result)?;
        // With an access VLAN the gateway lives on a `<bridge>.<vlan>` port of that VLAN.
        let gateway_link = if conf.vlan != 0 && !bridge_addrs.is_empty() {
            let gw = ensure_vlan_gateway(host, conf, bridge)?;
            result.interfaces.push(Interface {
                name: link::name(&gw).unwrap_or_default().to_owned(),
                mac: format_mac(&link::mac(&gw)),
                ..Interface::default()
            });
            gw
        } else {
            bridge.clone()
        };
        for addr in &bridge_addrs {
            ensure_gateway_addr(host, conf, &gateway_link, *addr)?;
        }
        if !bridge_addrs.is_empty() {
            pin_bridge_mac(host, bridge.header.index)?;
            for v4 in [true, false] {
                if bridge_addrs.iter().any(|a| a.is_ipv4() == v4) {
                    enable_forwarding(v4)?;
                }
            }
        }
    } else if !conf.disable_container_interface {
        link::set_up(cont, container_index, true)?;
    }

    let rules = Rules {
        masquerade: if conf.ip_masq {
            result.ips.iter().map(|ip| ip.address).collect()
        } else {
            Vec::new()
        },
        spoof_check: if conf.mac_spoof_check {
            let mac = link::mac(&container_if);
            let mac = <[u8; 6]>::try_from(mac.as_slice()).map_err(|_| {
                BridgeError::Kernel(format!(
                    "container interface has no Ethernet address to check: {mac:02x?}"
                ))
            })?;
            Some((host_name.as_str(), mac))
        } else {
            None
        },
    };
    if !rules.masquerade.is_empty() || rules.spoof_check.is_some() {
        undo.firewall = true;
        cni_nft::apply(
            &firewall::add_batch(&tag(conf, inv), &rules),
            "failed to add firewall rules",
        )?;
    }

    let forwarding_veth = if conf.disable_container_interface {
        None
    } else {
        Some(wait_forwarding(host, host_index)?)
    };

    // The bridge takes a port's MAC and a veth's MAC may change once enslaved: report the
    // final ones.
    let refreshed_bridge = link::by_index(host, bridge.header.index)?;
    result.interfaces[0].mac = format_mac(&link::mac(refreshed_bridge.as_ref().unwrap_or(bridge)));
    let refreshed_veth = match forwarding_veth {
        Some(port) => Some(port),
        None => link::by_index(host, host_index)?,
    };
    result.interfaces[1].mac =
        format_mac(&link::mac(refreshed_veth.as_ref().unwrap_or(&host_veth)));
    if let Some(dns) = &conf.dns {
        result.dns = dns.clone();
    }
    Ok(result)
}

/// Sysctls, addresses, link up, DAD (only if asked for), routes: inside the container.
fn configure_container(
    inv: &Invocation,
    conf: &BridgeConf,
    ns: &Netns,
    cont: &Netlink,
    index: u32,
    result: &CniResult,
) -> Result<(), BridgeError> {
    let ifname = inv.ifname();
    let has_v6 = result.ips.iter().any(|ip| ip.address.is_ipv6());
    ns.run(|| -> Result<(), BridgeError> {
        if has_v6 {
            for dev in ["lo", ifname] {
                write_sysctl(&format!("net/ipv6/conf/{dev}/disable_ipv6"), "0")?;
            }
            write_sysctl(&format!("net/ipv6/conf/{ifname}/keep_addr_on_down"), "1")?;
        }
        // Optional knobs: a kernel without them is no reason to fail.
        if conf.enable_dad {
            let _ = write_sysctl(&format!("net/ipv6/conf/{ifname}/enhanced_dad"), "1");
            let _ = write_sysctl(&format!("net/ipv6/conf/{ifname}/accept_dad"), "1");
        } else {
            let _ = write_sysctl(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0");
        }
        let _ = write_sysctl(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
        Ok(())
    })??;
    let h = cont;
    for ip in &result.ips {
        link::add_address(h, index, ip.address, conf.enable_dad)?;
    }
    link::set_up(h, index, true)?;
    if conf.enable_dad && has_v6 {
        wait_dad(cont, index)?;
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
        link::add_route(h, index, route, gw)?;
        added.push((route.dst, gw));
    }
    Ok(())
}

fn wait_dad(cont: &Netlink, index: u32) -> Result<(), BridgeError> {
    let deadline = Instant::now() + DAD_TIMEOUT;
    loop {
        let addrs = link::addresses(cont, index)?;
        let flags = |(_, m): &(IpNetwork, _)| node_kernel::addr::flags(m);
        if addrs
            .iter()
            .filter_map(flags)
            .any(|f| f.contains(AddressFlags::Dadfailed))
        {
            return Err(BridgeError::Conflict(
                "IPv6 duplicate address detection failed: the address is in use".into(),
            ));
        }
        if !addrs
            .iter()
            .filter_map(flags)
            .any(|f| f.contains(AddressFlags::Tentative))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BridgeError::Kernel(
                "IPv6 addresses still tentative after 5s of duplicate address detection".into(),
            ));
        }
        sleep(Duration::from_millis(20));
    }
}

/// The host-side gateway port of the access VLAN: a veth `<bridge>.<vlan>` whose peer is an
/// untagged port of that VLAN on the bridge. Shared by every pod of the VLAN.
fn ensure_vlan_gateway(
    host: &Netlink,
    conf: &BridgeConf,
    bridge: &LinkMessage,
) -> Result<LinkMessage, BridgeError> {
    let h = host;
    let name = format!("{}.{}", conf.bridge, conf.vlan);
    if name.len() > cni_common::validate::IFNAME_MAX {
        return Err(BridgeError::Config(format!(
            "the VLAN gateway interface name {name} is longer than 15 bytes: use a shorter bridge name"
        )));
    }
    if let Some(existing) = link::by_name(h, &name)? {
        return Ok(existing);
    }
    let host_ns = Netns::current()?;
    let peer = random_veth_name(0);
    link::add_veth(h, &name, &peer, conf.mtu, None, host_ns.fd())
        .map_err(|e| BridgeError::Kernel(format!("failed to create VLAN gateway {name}: {e}")))?;
    let port = link::by_name(h, &peer)?
        .ok_or_else(|| BridgeError::Kernel(format!("{peer} vanished after creation")))?;
    link::attach_port(h, port.header.index, bridge.header.index, false, false)?;
    link::set_port_vlans(
        h,
        port.header.index,
        conf.vlan,
        &[],
        conf.preserve_default_vlan,
    )?;
    link::set_up(h, port.header.index, true)?;
    let gw = link::by_name(h, &name)?
        .ok_or_else(|| BridgeError::Kernel(format!("{name} vanished after creation")))?;
    link::set_up(h, gw.header.index, true)?;
    Ok(gw)
}

/// Puts a gateway address on the bridge (or the VLAN gateway). Another IPv4 address, or an
/// overlapping IPv6 one, means the node's subnet changed since the bridge was set up.
fn ensure_gateway_addr(
    host: &Netlink,
    conf: &BridgeConf,
    target: &LinkMessage,
    addr: IpNetwork,
) -> Result<(), BridgeError> {
    let h = host;
    let index = target.header.index;
    let dev = link::name(target).unwrap_or(&conf.bridge).to_owned();
    for (existing, msg) in link::addresses(h, index)? {
        if existing.is_ipv4() != addr.is_ipv4() {
            continue;
        }
        if existing.ip() == addr.ip() && existing.prefix() == addr.prefix() {
            return Ok(());
        }
        let clashes = match (existing, addr) {
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
            link::del_address(h, &msg)?;
        } else {
            return Err(BridgeError::Conflict(format!(
                "failed to set bridge addr: \"{dev}\" already has an IP address different from {addr} \
                 ({existing}); the node's subnet has changed: delete the old address \
                 (ip addr del {existing} dev {dev}) or set \"forceAddress\": true"
            )));
        }
    }
    match link::add_address(h, index, addr, false) {
        // Concurrent first pods add the same gateway at once.
        Err(e) if !e.is_exists() => Err(e.into()),
        _ => Ok(()),
    }
}

/// Sets the bridge's MAC to its current value so that it stops following port churn.
fn pin_bridge_mac(host: &Netlink, index: u32) -> Result<(), BridgeError> {
    if let Some(br) = link::by_index(host, index)? {
        link::set_mac(host, index, link::mac(&br))?;
    }
    Ok(())
}

fn enable_forwarding(v4: bool) -> Result<(), BridgeError> {
    let key = if v4 {
        "net/ipv4/ip_forward"
    } else {
        "net/ipv6/conf/all/forwarding"
    };
    if read_sysctl(key).ok().as_deref() != Some("1") {
        write_sysctl(key, "1")?;
    }
    Ok(())
}

/// Waits until the new port forwards (immediately without STP), so that the first packets
/// of the pod are not lost (Go #463), polling quickly instead of sleeping for seconds.
/// Returns the port as last read, which ADD reports (its MAC is final once enslaved).
fn wait_forwarding(host: &Netlink, index: u32) -> Result<LinkMessage, BridgeError> {
    let deadline = Instant::now() + PORT_FORWARDING_TIMEOUT;
    let mut pause = Duration::from_micros(200);
    loop {
        let port = link::by_index(host, index)?;
        let state = port.as_ref().and_then(link::port_state);
        if let Some(port) = port
            && state == Some(BridgePortState::Forwarding)
        {
            return Ok(port);
        }
        if Instant::now() > deadline {
            return Err(BridgeError::Kernel(format!(
                "bridge port in error state: {state:?}"
            )));
        }
        sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
