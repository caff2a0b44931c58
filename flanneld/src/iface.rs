//! The external interface (Go's `LookupExtIface`, `pkg/ipmatch`): `--iface` (a name or an
//! address, repeatable, first usable wins); when none of them is usable, `--iface-regex`
//! (matched against every interface's addresses, then names); when none matches,
//! `--iface-can-reach` (the interface of the route the kernel would take to that address);
//! with none of the three given, the default route's interface; its first IPv4
//! address, the PublicIP (`--public-ip` or that address), its first global IPv6 address (for
//! a dual-stack backend: Go's `GetInterfaceIP6Addr`), and its MTU.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use node_kernel::addr::AddressFlags;
use node_kernel::{Context, KernelError, RouteSocket};

/// The interface the node's traffic to peers leaves by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalInterface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub index: u32,
    /// Its IPv4 address used (the `--iface` address, or its first).
    pub iface_addr: Ipv4Addr,
    /// The address published in the lease.
    pub public_ip: Ipv4Addr,
    /// Its first global IPv6 address, if any (the local address of a dual-stack backend's
    /// IPv6 device).
    pub iface_addr6: Option<Ipv6Addr>,
    /// The IPv6 address published as `PublicIPv6` by a dual-stack backend: `--public-ipv6`,
    /// else [`ExternalInterface::iface_addr6`].
    pub public_ipv6: Option<Ipv6Addr>,
    /// Its MTU.
    pub mtu: u32,
}

/// A link as the selection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkAddrs {
    /// Name.
    pub name: String,
    /// Index.
    pub index: u32,
    /// MTU (0 when unknown).
    pub mtu: u32,
    /// IPv4 addresses, in the kernel's order.
    pub v4: Vec<Ipv4Addr>,
    /// Global IPv6 addresses (see [`is_global_v6`]), in the kernel's order.
    pub v6: Vec<Ipv6Addr>,
}

/// An IPv6 address a peer can reach the node at: not link-local (`fe80::/10`), loopback,
/// multicast or unspecified.
pub fn is_global_v6(ip: &Ipv6Addr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_unicast_link_local())
}

/// Whether an IPv6 address with these flags can carry the tunnel: not a privacy
/// (temporary) address that rotates away, not deprecated, not one whose duplicate address
/// detection failed. A tentative one is kept: it becomes usable once DAD ends.
pub fn is_stable_v6(flags: AddressFlags) -> bool {
    !flags.intersects(AddressFlags::Secondary | AddressFlags::Deprecated | AddressFlags::Dadfailed)
}

/// Why no interface could be used.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// Nothing matched.
    #[error("failed to find any valid interface to use: {0}")]
    NotFound(String),
    /// `--iface-can-reach`'s address has no route.
    #[error("--iface-can-reach {target}: {why}")]
    NoRoute {
        /// The address.
        target: IpAddr,
        /// The kernel's answer.
        why: String,
    },
    /// A `--iface-regex` that does not compile.
    #[error("invalid --iface-regex {pattern:?}: {source}")]
    Regex {
        /// The pattern.
        pattern: String,
        /// Why.
        source: regex_lite::Error,
    },
    /// The kernel could not be asked.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// `--iface-can-reach`: the address, and the route the kernel would take to it (its output
/// link and preferred source address), or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The address given.
    pub target: IpAddr,
    /// `(output link, source address)` of the kernel's route, or the kernel's refusal.
    pub route: Result<(u32, Option<IpAddr>), String>,
}

/// What the operator pinned the interface with: `--iface`, `--iface-regex`,
/// `--iface-can-reach` (tried in that order, each when the ones before found nothing).
#[derive(Debug, Clone, Copy, Default)]
pub struct Pins<'a> {
    /// `--iface`.
    pub ifaces: &'a [String],
    /// `--iface-regex`.
    pub regexes: &'a [String],
    /// `--iface-can-reach`, resolved.
    pub reach: Option<&'a Reach>,
}

impl Pins<'_> {
    fn none(&self) -> bool {
        self.ifaces.is_empty() && self.regexes.is_empty() && self.reach.is_none()
    }
}

/// Picks the interface and its IPv4 address (pure: the links, addresses and default route
/// are given).
pub fn choose(
    links: &[LinkAddrs],
    ifaces: &[String],
    regexes: &[String],
    default_oif: Option<u32>,
) -> Result<(LinkAddrs, Ipv4Addr), IfaceError> {
    let pins = Pins {
        ifaces,
        regexes,
        reach: None,
    };
    let (l, a) = choose_family(links, &pins, default_oif, true)?;
    match a {
        IpAddr::V4(a) => Ok((l, a)),
        IpAddr::V6(_) => Err(IfaceError::NotFound("no IPv4 address".into())),
    }
}

/// Picks the interface and its address of one family (`v4`, else IPv6: an IPv6-only
/// network), as Go's `LookupExtIface` does for that IP stack.
pub fn choose_family(
    links: &[LinkAddrs],
    pins: &Pins,
    default_oif: Option<u32>,
    v4: bool,
) -> Result<(LinkAddrs, IpAddr), IfaceError> {
    let family = if v4 { "IPv4" } else { "IPv6" };
    let addrs = |l: &LinkAddrs| -> Vec<IpAddr> {
        if v4 {
            l.v4.iter().map(|a| IpAddr::V4(*a)).collect()
        } else {
            l.v6.iter().map(|a| IpAddr::V6(*a)).collect()
        }
    };
    let first = |l: &LinkAddrs| addrs(l).first().map(|a| (l.clone(), *a));
    if pins.none() {
        let oif = default_oif.ok_or_else(|| {
            IfaceError::NotFound(format!("no {family} default route (use --iface)"))
        })?;
        return links
            .iter()
            .find(|l| l.index == oif)
            .and_then(first)
            .ok_or_else(|| {
                IfaceError::NotFound(format!(
                    "the default route's interface (index {oif}) has no {family} address"
                ))
            });
    }
    for want in pins.ifaces {
        let found = match want.parse::<IpAddr>() {
            Ok(ip) => links
                .iter()
                .find(|l| addrs(l).contains(&ip))
                .map(|l| (l.clone(), ip)),
            Err(_) => links.iter().find(|l| &l.name == want).and_then(first),
        };
        match found {
            Some(f) => return Ok(f),
            None => crate::log::info!(
                "could not use --iface {want}: no such interface or no {family} address on it"
            ),
        }
    }
    for pattern in pins.regexes {
        let re = regex_lite::Regex::new(pattern).map_err(|source| IfaceError::Regex {
            pattern: pattern.clone(),
            source,
        })?;
        for l in links {
            if let Some(ip) = addrs(l).into_iter().find(|ip| re.is_match(&ip.to_string())) {
                return Ok((l.clone(), ip));
            }
        }
        if let Some(f) = links
            .iter()
            .filter(|l| re.is_match(&l.name))
            .find_map(first)
        {
            return Ok(f);
        }
        crate::log::info!("no interface or {family} address matches --iface-regex {pattern}");
    }
    if let Some(reach) = pins.reach {
        match &reach.route {
            Err(why) => {
                crate::log::info!("could not use --iface-can-reach {}: {why}", reach.target)
            }
            Ok((oif, src)) => match links.iter().find(|l| l.index == *oif) {
                None => crate::log::info!(
                    "could not use --iface-can-reach {}: its route leaves by link {oif}, which is gone",
                    reach.target
                ),
                Some(l) => {
                    // Go takes the route's source address, else the link's first one.
                    let src = src.filter(|a| a.is_ipv4() == v4 && addrs(l).contains(a));
                    match src.map(|a| (l.clone(), a)).or_else(|| first(l)) {
                        Some(f) => return Ok(f),
                        None => crate::log::info!(
                            "could not use --iface-can-reach {}: {} has no {family} address",
                            reach.target,
                            l.name
                        ),
                    }
                }
            },
        }
    }
    let mut given = Vec::new();
    if !pins.ifaces.is_empty() {
        given.push(format!("--iface {}", pins.ifaces.join(", ")));
    }
    if !pins.regexes.is_empty() {
        given.push(format!("--iface-regex {}", pins.regexes.join(", ")));
    }
    if let Some(r) = pins.reach {
        given.push(format!("--iface-can-reach {}", r.target));
    }
    Err(IfaceError::NotFound(format!(
        "nothing matches {}",
        given.join(", then ")
    )))
}

/// The route the kernel would take to `target` (`ip route get`), as [`Reach`] keeps it.
pub fn reach(target: IpAddr) -> Result<Reach, IfaceError> {
    let sock = RouteSocket::current()?;
    let route = match sock.route_to(target) {
        Ok(Some(m)) => match node_kernel::route::output_link(&m) {
            Some(oif) => Ok((oif, node_kernel::route::preferred_source(&m))),
            None => Err("the kernel's route has no output link".to_owned()),
        },
        Ok(None) => Err("the kernel has no route to it".to_owned()),
        Err(e) => Err(format!("route lookup: {e}")),
    };
    Ok(Reach { target, route })
}

/// Reads the links, their addresses and the default route of one family (`v4`, else
/// IPv6) of the current namespace.
pub fn gather(v4: bool) -> Result<(Vec<LinkAddrs>, Option<u32>), IfaceError> {
    let sock = RouteSocket::current()?;
    let mut out = Vec::new();
    for msg in sock.links().context("listing links")? {
        let index = msg.header.index;
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (net, msg) in sock
            .addresses(index)
            .context(format!("listing the addresses of link {index}"))?
        {
            match net {
                IpNetwork::V4(n) => v4.push(n.ip()),
                IpNetwork::V6(n)
                    if is_global_v6(&n.ip())
                        && node_kernel::addr::flags(&msg).is_none_or(is_stable_v6) =>
                {
                    v6.push(n.ip())
                }
                IpNetwork::V6(_) => {}
            }
        }
        out.push(LinkAddrs {
            name: node_kernel::link::name(&msg).unwrap_or_default().to_owned(),
            index,
            mtu: node_kernel::link::mtu(&msg).unwrap_or(0),
            v4,
            v6,
        });
    }
    let default = sock
        .routes(v4)
        .context("listing routes")?
        .iter()
        .filter(|r| r.header.table == node_kernel::route_packet::route::RouteHeader::RT_TABLE_MAIN)
        .find(|r| node_kernel::route::destination(r).is_some_and(|d| d.prefix() == 0))
        .and_then(node_kernel::route::output_link);
    Ok((out, default))
}

/// The external interface for the flags given, chosen by its IPv4 address, or by its IPv6
/// address when the network's IPv4 is off (`v4` false); there the IPv4 address and
/// `PublicIP` are unspecified (`0.0.0.0`, as Go publishes them) unless given.
pub fn lookup(
    pins: Pins,
    public_ip: Option<Ipv4Addr>,
    public_ipv6: Option<Ipv6Addr>,
    v4: bool,
) -> Result<ExternalInterface, IfaceError> {
    let (links, default) = gather(v4)?;
    let flags = Selection {
        pins,
        public_ip,
        public_ipv6,
        v4,
    };
    external(&links, default, &flags)
}

/// What picks the external interface: the flags and the public addresses (given, or stored
/// for the node).
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    /// `--iface`, `--iface-regex`, `--iface-can-reach`.
    pub pins: Pins<'a>,
    /// The PublicIP to publish, if given.
    pub public_ip: Option<Ipv4Addr>,
    /// The PublicIPv6 to publish, if given.
    pub public_ipv6: Option<Ipv6Addr>,
    /// Whether the network's IPv4 is on.
    pub v4: bool,
}

/// The link holding the node's public address of the selection's family, with that
/// address (Go looks the interface up by `--public-ip` when no `--iface` is given); in a
/// network with IPv4, a public IPv6 address names the link too, with its first IPv4 one.
fn by_public_address(links: &[LinkAddrs], s: &Selection) -> Option<(LinkAddrs, IpAddr)> {
    let holding_v4 = |ip: Ipv4Addr| links.iter().find(|l| l.v4.contains(&ip));
    let holding_v6 = |ip: Ipv6Addr| links.iter().find(|l| l.v6.contains(&ip));
    if !s.v4 {
        let ip6 = s.public_ipv6?;
        return holding_v6(ip6).map(|l| (l.clone(), IpAddr::V6(ip6)));
    }
    if let Some(l) = s.public_ip.and_then(holding_v4) {
        return Some((l.clone(), IpAddr::V4(s.public_ip?)));
    }
    let l = s.public_ipv6.and_then(holding_v6)?;
    Some((l.clone(), IpAddr::V4(*l.v4.first()?)))
}

/// The external interface among `links` (pure: the kernel's view is given).
pub fn external(
    links: &[LinkAddrs],
    default_oif: Option<u32>,
    s: &Selection,
) -> Result<ExternalInterface, IfaceError> {
    let unpinned = s.pins.none();
    let by_public = if unpinned {
        by_public_address(links, s)
    } else {
        None
    };
    let (link, addr) = match by_public {
        Some(found) => found,
        None => {
            let public = if s.v4 {
                s.public_ip.map(IpAddr::V4)
            } else {
                s.public_ipv6.map(IpAddr::V6)
            };
            if let (true, Some(ip)) = (unpinned, public) {
                // Go exits here; a node behind NAT publishes an address it does not hold.
                crate::log::info!(
                    "the public address {ip} is on no interface here (behind NAT?): using the default route's interface"
                );
            }
            choose_family(links, &s.pins, default_oif, s.v4)?
        }
    };
    if link.mtu == 0 {
        return Err(IfaceError::NotFound(format!(
            "interface {} has MTU 0",
            link.name
        )));
    }
    let (mut iface_addr, mut iface_addr6) = match addr {
        IpAddr::V4(a) => (a, link.v6.first().copied()),
        IpAddr::V6(a) => (
            link.v4.first().copied().unwrap_or(Ipv4Addr::UNSPECIFIED),
            Some(a),
        ),
    };
    // A public address the link holds is the one it uses (not its first): a node with two
    // addresses that publishes its second is not behind NAT.
    if let Some(ip) = s.public_ip.filter(|ip| link.v4.contains(ip)) {
        iface_addr = ip;
    }
    if let Some(ip6) = s.public_ipv6.filter(|ip6| link.v6.contains(ip6)) {
        iface_addr6 = Some(ip6);
    }
    let own_v4 = if s.v4 {
        iface_addr
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    Ok(ExternalInterface {
        name: link.name,
        index: link.index,
        iface_addr,
        public_ip: s.public_ip.unwrap_or(own_v4),
        iface_addr6,
        public_ipv6: s.public_ipv6.or(iface_addr6),
        mtu: link.mtu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Vec<LinkAddrs> {
        let l = |name: &str, index, v4: &[[u8; 4]]| LinkAddrs {
            name: name.into(),
            index,
            mtu: 1500,
            v4: v4.iter().map(|a| Ipv4Addr::from(*a)).collect(),
            v6: Vec::new(),
        };
        vec![
            l("lo", 1, &[[127, 0, 0, 1]]),
            l("eth0", 2, &[[192, 168, 1, 2], [192, 168, 1, 20]]),
            l("wg0", 3, &[[10, 9, 0, 2]]),
            l("dummy", 4, &[]),
        ]
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn by_name_ip_regex_default() {
        let ls = links();
        let (l, a) = choose(&ls, &s(&["wg0"]), &[], Some(2)).unwrap();
        assert_eq!((l.name.as_str(), a), ("wg0", Ipv4Addr::new(10, 9, 0, 2)));
        let (l, a) = choose(&ls, &s(&["192.168.1.20"]), &[], None).unwrap();
        assert_eq!(
            (l.name.as_str(), a),
            ("eth0", Ipv4Addr::new(192, 168, 1, 20))
        );
        // The first usable of several.
        let (l, _) = choose(&ls, &s(&["nope", "dummy", "eth0"]), &[], None).unwrap();
        assert_eq!(l.name, "eth0");
        let (l, a) = choose(&ls, &[], &s(&[r"^10\.9\."]), None).unwrap();
        assert_eq!((l.name.as_str(), a), ("wg0", Ipv4Addr::new(10, 9, 0, 2)));
        let (l, _) = choose(&ls, &[], &s(&["^eth"]), None).unwrap();
        assert_eq!(l.name, "eth0");
        let (l, a) = choose(&ls, &[], &[], Some(2)).unwrap();
        assert_eq!(
            (l.name.as_str(), a),
            ("eth0", Ipv4Addr::new(192, 168, 1, 2))
        );
    }

    #[test]
    fn without_iface_flags_the_link_holding_the_public_address_is_used() {
        // Before: the default route's interface was used whatever --public-ip (or the
        // Node's public-ip-overwrite) said, and host-gw then refused the node as "behind
        // NAT" because the public IP was not that interface's first address.
        let ls = links();
        let sel = |public_ip: Option<[u8; 4]>| Selection {
            pins: Pins::default(),
            public_ip: public_ip.map(Ipv4Addr::from),
            public_ipv6: None,
            v4: true,
        };
        let e = external(&ls, Some(2), &sel(Some([10, 9, 0, 2]))).unwrap();
        assert_eq!(
            (e.name.as_str(), e.iface_addr),
            ("wg0", Ipv4Addr::new(10, 9, 0, 2))
        );
        assert_eq!(e.public_ip, e.iface_addr);
        // The default route's link, its second address published: that one is used.
        let e = external(&ls, Some(2), &sel(Some([192, 168, 1, 20]))).unwrap();
        assert_eq!(e.name, "eth0");
        assert_eq!(e.iface_addr, e.public_ip);
        // An address no link holds (behind NAT): the default route's link, its first.
        let e = external(&ls, Some(2), &sel(Some([203, 0, 113, 7]))).unwrap();
        assert_eq!(
            (e.name.as_str(), e.iface_addr),
            ("eth0", Ipv4Addr::new(192, 168, 1, 2))
        );
        assert_eq!(e.public_ip, Ipv4Addr::new(203, 0, 113, 7));
        // --iface wins over the public address.
        let wg = s(&["eth0"]);
        let pinned = Selection {
            pins: Pins {
                ifaces: &wg,
                ..Pins::default()
            },
            ..sel(Some([10, 9, 0, 2]))
        };
        assert_eq!(external(&ls, Some(2), &pinned).unwrap().name, "eth0");
        // IPv6 only: the link holding the public IPv6 address.
        let mut ls6 = links();
        ls6[2].v6 = vec!["fd00::9".parse().unwrap()];
        ls6[1].v6 = vec!["fd00::2".parse().unwrap()];
        let v6only = Selection {
            public_ipv6: Some("fd00::9".parse().unwrap()),
            v4: false,
            ..sel(None)
        };
        let e = external(&ls6, Some(2), &v6only).unwrap();
        assert_eq!(
            (e.name.as_str(), e.public_ip),
            ("wg0", Ipv4Addr::UNSPECIFIED)
        );
        assert_eq!(e.iface_addr6, v6only.public_ipv6);
    }

    #[test]
    fn iface_falls_through_to_the_regex_then_can_reach() {
        let ls = links();
        let pick = |ifaces: &[&str], regexes: &[&str], reach: Option<Reach>| {
            let (i, r) = (s(ifaces), s(regexes));
            let pins = Pins {
                ifaces: &i,
                regexes: &r,
                reach: reach.as_ref(),
            };
            choose_family(&ls, &pins, Some(2), true).map(|(l, a)| (l.name, a))
        };
        let to = |oif: u32, src: Option<[u8; 4]>| Reach {
            target: IpAddr::V4([10, 9, 0, 1].into()),
            route: Ok((oif, src.map(|a| IpAddr::V4(a.into())))),
        };
        let wg = ("wg0".to_owned(), IpAddr::V4([10, 9, 0, 2].into()));
        // Before: an --iface that matched nothing failed although the regex matched.
        assert_eq!(pick(&["nope"], &["^wg"], None).unwrap(), wg);
        assert_eq!(pick(&["nope"], &["^zz"], Some(to(3, None))).unwrap(), wg);
        assert_eq!(pick(&[], &[], Some(to(3, None))).unwrap(), wg);
        // The route's source address, when the link holds it.
        assert_eq!(
            pick(&[], &[], Some(to(2, Some([192, 168, 1, 20])))).unwrap(),
            ("eth0".to_owned(), IpAddr::V4([192, 168, 1, 20].into()))
        );
        // An --iface that matches wins over the rest.
        assert_eq!(
            pick(&["eth0"], &["^wg"], Some(to(3, None))).unwrap().0,
            "eth0"
        );
        // can-reach without a route, or to a link without an address: nothing.
        let unroutable = Reach {
            target: IpAddr::V4([10, 99, 0, 1].into()),
            route: Err("the kernel has no route to it".into()),
        };
        let e = pick(&["nope"], &[], Some(unroutable))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--iface nope, then --iface-can-reach 10.99.0.1"),
            "{e}"
        );
        assert!(
            pick(&[], &[], Some(to(4, None))).is_err(),
            "dummy has no address"
        );
    }

    #[test]
    fn nothing_usable() {
        let ls = links();
        assert!(choose(&ls, &s(&["nope", "dummy"]), &[], Some(2)).is_err());
        assert!(choose(&ls, &[], &s(&["^zz"]), None).is_err());
        assert!(matches!(
            choose(&ls, &[], &s(&["("]), None),
            Err(IfaceError::Regex { .. })
        ));
        assert!(
            choose(&ls, &[], &[], None)
                .unwrap_err()
                .to_string()
                .contains("no IPv4 default route")
        );
    }

    #[test]
    fn only_global_ipv6_addresses_are_usable() {
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert!(is_stable_v6(
            AddressFlags::Permanent | AddressFlags::Tentative
        ));
        assert!(is_stable_v6(AddressFlags::empty()));
        for no in [
            AddressFlags::Secondary,
            AddressFlags::Deprecated,
            AddressFlags::Dadfailed | AddressFlags::Permanent,
        ] {
            assert!(!is_stable_v6(no), "{no:?}");
        }
        assert!(is_global_v6(&v6("2001:db8::2")));
        assert!(
            is_global_v6(&v6("fd00:50::2")),
            "unique local is routable between nodes"
        );
        for no in ["fe80::1", "::1", "::", "ff02::1"] {
            assert!(!is_global_v6(&v6(no)), "{no}");
        }
    }
}
