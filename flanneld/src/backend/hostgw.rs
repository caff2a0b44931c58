//! The host-gw backend (`pkg/backend/hostgw`): each peer's subnet routed via the peer's
//! PublicIP out of the external interface, `<peer subnet> via <peer PublicIP> dev <iface>`,
//! and, with IPv6 on, `<peer IPv6 subnet> via <peer PublicIPv6> dev <iface>`; the routes
//! removed when the peer's lease goes. No device, no BackendData; the MTU is the
//! interface's.
//!
//! The routes carry the agent's own route protocol ([`super::ROUTE_PROTOCOL`], `proto 102`
//! in `ip route`): once the agent holds a whole listing of the leases, a route of that
//! protocol to a subnet no lease names (a node deleted while the agent was down) is
//! deleted, at start and in every reconcile; routes of any other protocol (the operator's,
//! Go flanneld's `proto boot`) are never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use node_kernel::route::{main_table, via_gateway, via_link, with_protocol};
use node_kernel::{Context, KernelError, RouteSocket};

use super::{Backend, BackendError};
use crate::cache::LeaseEvent;
use crate::config::NetworkConfig;
use crate::iface::ExternalInterface;
use crate::lease::{Lease, LeaseAttrs};
use crate::log::{error, info, warning};

/// The backend's `BackendType`.
pub const TYPE: &str = "host-gw";

/// The route changes host-gw makes.
pub trait RouteTable {
    /// Adds `dst via gw dev oif`, replacing a route to the same destination.
    fn replace(&mut self, dst: IpNetwork, gw: IpAddr, oif: u32) -> io::Result<()>;
    /// Deletes that route (gone already is no error).
    fn delete(&mut self, dst: IpNetwork, gw: IpAddr, oif: u32) -> io::Result<()>;
    /// The main table's routes of one family (`v4`, else IPv6) through `oif` with a
    /// gateway, as (destination, gateway) → whether the route is ours (our protocol): one
    /// listing per reconcile and family, however many peers (a listing per peer made a
    /// reconcile at 5,000 peers dump 25 million routes).
    fn present(&mut self, oif: u32, v4: bool) -> io::Result<BTreeMap<(IpNetwork, IpAddr), bool>>;
}

/// The kernel's main routing table of the agent's namespace.
#[derive(Debug)]
pub struct KernelRoutes(RouteSocket);

impl KernelRoutes {
    /// A netlink socket in the current namespace.
    pub fn current() -> Result<KernelRoutes, KernelError> {
        RouteSocket::current().map(KernelRoutes)
    }
}

fn message(dst: IpNetwork, gw: IpAddr, oif: u32) -> node_kernel::route::RouteMessage {
    with_protocol(
        via_gateway(via_link(main_table(dst.ip(), dst.prefix()), oif), gw),
        super::ROUTE_PROTOCOL,
    )
}

impl RouteTable for KernelRoutes {
    fn replace(&mut self, dst: IpNetwork, gw: IpAddr, oif: u32) -> io::Result<()> {
        self.0.replace_route(&message(dst, gw, oif))
    }

    fn delete(&mut self, dst: IpNetwork, gw: IpAddr, oif: u32) -> io::Result<()> {
        self.0.delete_route(&message(dst, gw, oif))
    }

    fn present(&mut self, oif: u32, v4: bool) -> io::Result<BTreeMap<(IpNetwork, IpAddr), bool>> {
        use node_kernel::route::{destination, gateway, in_main_table, output_link, protocol};
        Ok(self
            .0
            .routes(v4)?
            .iter()
            .filter(|m| in_main_table(m) && output_link(m) == Some(oif))
            .filter_map(|m| {
                let ours = protocol(m) == super::ROUTE_PROTOCOL;
                Some(((destination(m)?, gateway(m)?), ours))
            })
            .collect())
    }
}

/// host-gw on one external interface.
#[derive(Debug)]
pub struct HostGw<R> {
    ext: ExternalInterface,
    routes: R,
    /// The families the network config enables.
    v4: bool,
    v6: bool,
    /// The peers' routes wanted: destination → gateway.
    wanted: BTreeMap<IpNetwork, IpAddr>,
    /// Each peer's destinations (by its lease's id): a peer whose IPv6 subnet changed
    /// under the same IPv4 one is re-announced, and its old route must go.
    by_peer: BTreeMap<IpNetwork, Vec<IpNetwork>>,
    /// Routes whose last attempt failed and was logged: the next failures of the same
    /// route are not (a peer behind another link would log a line every reconcile).
    failing: BTreeSet<(IpNetwork, IpAddr)>,
    /// The last reconcile could not list the routes.
    listing_failed: bool,
    /// A whole listing of the leases was handed: a route of ours no lease names is stale.
    listed: bool,
    restored: u64,
}

impl<R: RouteTable> HostGw<R> {
    /// Refuses a PublicIP that is not the interface's address (Go: "probably behind NAT"),
    /// and, with IPv6 on, a node without an IPv6 address or whose PublicIPv6 is not the
    /// interface's.
    pub fn new(
        ext: ExternalInterface,
        routes: R,
        config: &NetworkConfig,
    ) -> Result<HostGw<R>, BackendError> {
        let (v4, v6) = (config.v4.is_some(), config.v6.is_some());
        if v4 && ext.public_ip != ext.iface_addr {
            return Err(BackendError::Nat {
                public_ip: ext.public_ip.into(),
                iface: ext.name,
                iface_addr: ext.iface_addr.into(),
            });
        }
        if v6 {
            match (ext.public_ipv6, ext.iface_addr6) {
                (Some(public), Some(addr)) if public == addr => {}
                (Some(public), Some(addr)) => {
                    return Err(BackendError::Nat {
                        public_ip: public.into(),
                        iface: ext.name,
                        iface_addr: addr.into(),
                    });
                }
                _ => {
                    return Err(BackendError::Config(format!(
                        "EnableIPv6: the host-gw backend needs a global IPv6 address on {}",
                        ext.name
                    )));
                }
            }
        }
        Ok(HostGw {
            ext,
            routes,
            v4,
            v6,
            wanted: BTreeMap::new(),
            by_peer: BTreeMap::new(),
            failing: BTreeSet::new(),
            listing_failed: false,
            listed: false,
            restored: 0,
        })
    }

    /// The route table (tests read the fake's record).
    pub fn routes(&self) -> &R {
        &self.routes
    }

    /// Adds (replaces) or deletes one peer route, logging the outcome.
    fn apply(&mut self, dst: IpNetwork, gw: IpAddr, add: bool) {
        let oif = self.ext.index;
        if add {
            self.wanted.insert(dst, gw);
        } else {
            self.wanted.remove(&dst);
        }
        let what = format!("{dst} via {gw} dev {}", self.ext.name);
        let result = if add {
            self.routes.replace(dst, gw, oif)
        } else {
            self.routes.delete(dst, gw, oif)
        };
        self.failing.remove(&(dst, gw));
        let doing = if add { "adding" } else { "deleting" };
        match result.context(format!("{doing} route {what}")) {
            Ok(()) => info!("{} route {what}", if add { "added" } else { "deleted" }),
            Err(e) => {
                error!("{e} (retried by every reconcile, logged again once it worked)");
                if add {
                    self.failing.insert((dst, gw));
                }
            }
        }
    }

    /// Deletes the routes of ours in `present` to subnets no lease names.
    fn remove_stale(&mut self, present: &BTreeMap<(IpNetwork, IpAddr), bool>) {
        let stale: Vec<(IpNetwork, IpAddr)> = present
            .iter()
            .filter(|((dst, _), ours)| **ours && !self.wanted.contains_key(dst))
            .map(|(r, _)| *r)
            .collect();
        for (dst, gw) in stale {
            let what = format!("{dst} via {gw} dev {}", self.ext.name);
            match self.routes.delete(dst, gw, self.ext.index) {
                Ok(()) => info!("deleted stale route {what}: no lease names {dst}"),
                Err(e) => error!("deleting stale route {what}: {e}"),
            }
        }
    }

    /// The routes a peer's lease asks for, of the families the network enables.
    fn routes_of(&self, lease: &Lease) -> Vec<(IpNetwork, IpAddr)> {
        let mut out = Vec::new();
        if self.v4
            && let Some(sn) = lease.subnet.v4
        {
            out.push((IpNetwork::V4(sn), IpAddr::V4(lease.attrs.public_ip)));
        }
        if self.v6
            && let (Some(sn6), Some(ip6)) = (lease.subnet.v6, lease.attrs.public_ipv6)
        {
            out.push((IpNetwork::V6(sn6), IpAddr::V6(ip6)));
        }
        out
    }
}

impl<R: RouteTable> Backend for HostGw<R> {
    fn backend_type(&self) -> &'static str {
        TYPE
    }

    fn lease_attrs(&self) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: self.ext.public_ip,
            public_ipv6: if self.v6 { self.ext.public_ipv6 } else { None },
            backend_type: TYPE.to_owned(),
            backend_data: None,
            backend_v6_data: None,
        }
    }

    fn mtu(&self) -> u32 {
        self.ext.mtu
    }

    fn lease_acquired(&mut self, _lease: &Lease) -> Result<(), BackendError> {
        Ok(())
    }

    fn handle(&mut self, events: &[LeaseEvent]) {
        for (lease, add) in super::events_of_type(events, TYPE) {
            let Some(id) = lease.subnet.id() else {
                continue;
            };
            let routes = self.routes_of(lease);
            let dsts: Vec<IpNetwork> = routes.iter().map(|(dst, _)| *dst).collect();
            let before = if add {
                self.by_peer.insert(id, dsts.clone())
            } else {
                self.by_peer.remove(&id)
            };
            // What the peer had and no longer asks for (all of it when it goes).
            let stale: Vec<(IpNetwork, IpAddr)> = before
                .unwrap_or_else(|| if add { Vec::new() } else { dsts })
                .into_iter()
                .filter(|dst| !add || !routes.iter().any(|(d, _)| d == dst))
                .filter_map(|dst| Some((dst, *self.wanted.get(&dst)?)))
                .collect();
            for (dst, gw) in stale {
                self.apply(dst, gw, false);
            }
            if add {
                for (dst, gw) in routes {
                    self.apply(dst, gw, true);
                }
            }
        }
    }

    /// Re-adds any peer route that disappeared (Go does this every 10 s).
    fn reconcile(&mut self) {
        let oif = self.ext.index;
        let mut present = BTreeMap::new();
        for (on, v4) in [(self.v4, true), (self.v6, false)] {
            if !on {
                continue;
            }
            match self.routes.present(oif, v4) {
                Ok(p) => present.extend(p),
                Err(e) => {
                    error!("reconcile: listing routes: {e}");
                    self.listing_failed = true;
                    return;
                }
            }
        }
        self.listing_failed = false;
        let wanted: BTreeSet<(IpNetwork, IpAddr)> =
            self.wanted.iter().map(|(d, g)| (*d, *g)).collect();
        self.failing.retain(|r| wanted.contains(r));
        if self.listed {
            self.remove_stale(&present);
        }
        let missing: Vec<(IpNetwork, IpAddr)> = wanted
            .iter()
            .filter(|r| !present.contains_key(r))
            .copied()
            .collect();
        for (dst, gw) in missing {
            match self.routes.replace(dst, gw, oif) {
                Ok(()) => {
                    warning!(
                        "reconcile: restored route {dst} via {gw} dev {}",
                        self.ext.name
                    );
                    self.failing.remove(&(dst, gw));
                    self.restored += 1;
                }
                Err(e) => {
                    if self.failing.insert((dst, gw)) {
                        error!(
                            "reconcile: route {dst} via {gw}: {e} (retried by every reconcile, logged again once it worked)"
                        );
                    }
                }
            }
        }
    }

    fn listed(&mut self) {
        if !self.listed {
            self.listed = true;
            // At start: what a node deleted while the agent was down left goes now.
            self.reconcile();
        }
    }

    fn repairs(&self) -> super::Repairs {
        super::Repairs {
            route: self.restored,
            ..super::Repairs::default()
        }
    }

    fn watched_links(&self) -> Vec<String> {
        vec![self.ext.name.clone()]
    }

    fn programmed(&self) -> usize {
        self.wanted.len()
    }

    fn settled(&self) -> bool {
        self.failing.is_empty() && !self.listing_failed
    }

    fn watched_entries(&self) -> super::WatchedEntries {
        super::WatchedEntries {
            neighbours: Vec::new(),
            routes: vec![self.ext.index],
            // Its routes go through the external interface; one moved to another link by
            // hand waits for the minute's whole reconcile.
            networks: Vec::new(),
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::subnet::SubnetKey;

    const V4: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#;

    fn config(json: &str) -> NetworkConfig {
        NetworkConfig::parse(json.as_bytes()).unwrap()
    }

    /// Records route changes; fails on a chosen destination.
    #[derive(Debug, Default)]
    pub struct FakeRoutes {
        /// `replace 10.5.2.0/24 via 192.168.1.3 dev 7` / `delete ...`.
        pub log: Vec<String>,
        /// A destination whose change fails.
        pub fail: Option<IpNetwork>,
        /// Destinations deleted "by hand" (until replaced again).
        pub gone: Vec<IpNetwork>,
        /// How many times the routes were listed.
        pub listings: usize,
        /// Routes present that someone else made (not our protocol), `dst via gw`.
        pub foreign: Vec<(IpNetwork, IpAddr)>,
        /// Routes of ours present from before (an earlier run), `dst via gw`.
        pub left: Vec<(IpNetwork, IpAddr)>,
    }

    impl RouteTable for FakeRoutes {
        fn replace(&mut self, dst: IpNetwork, gw: IpAddr, oif: u32) -> io::Result<()> {
            if self.fail == Some(dst) {
                return Err(io::Error::other("network unreachable"));
            }
            self.gone.retain(|g| *g != dst);
            self.log.push(format!("replace {dst} via {gw} dev {oif}"));
            Ok(())
        }
        fn delete(&mut self, dst: IpNetwork, gw: IpAddr, oif: u32) -> io::Result<()> {
            self.left.retain(|r| *r != (dst, gw));
            self.log.push(format!("delete {dst} via {gw} dev {oif}"));
            Ok(())
        }
        fn present(
            &mut self,
            oif: u32,
            v4: bool,
        ) -> io::Result<BTreeMap<(IpNetwork, IpAddr), bool>> {
            self.listings += 1;
            let mut routes = BTreeSet::new();
            for l in &self.log {
                let f: Vec<&str> = l.split(' ').collect();
                let (Some(dst), Some(gw)) =
                    (f[1].parse::<IpNetwork>().ok(), f[3].parse::<IpAddr>().ok())
                else {
                    continue;
                };
                if f[5] != oif.to_string() || dst.is_ipv4() != v4 {
                    continue;
                }
                if f[0] == "replace" {
                    routes.insert((dst, gw));
                } else {
                    routes.remove(&(dst, gw));
                }
            }
            routes.retain(|(d, _)| !self.gone.contains(d));
            let mut out: BTreeMap<_, _> = routes.into_iter().map(|r| (r, true)).collect();
            let family = |r: &&(IpNetwork, IpAddr)| r.0.is_ipv4() == v4;
            out.extend(self.left.iter().filter(family).map(|r| (*r, true)));
            out.extend(self.foreign.iter().filter(family).map(|r| (*r, false)));
            Ok(out)
        }
    }

    pub fn ext(public: [u8; 4], addr: [u8; 4]) -> ExternalInterface {
        ExternalInterface {
            name: "eth0".into(),
            index: 7,
            iface_addr: addr.into(),
            public_ip: public.into(),
            iface_addr6: None,
            public_ipv6: None,
            mtu: 1500,
        }
    }

    use crate::testkit::lease;

    #[test]
    fn stale_routes_of_ours_go_once_the_leases_are_listed_others_stay() {
        let net = |s: &str| s.parse::<IpNetwork>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A node deleted while the agent was down, and a live one from before the restart.
        let routes = FakeRoutes {
            left: vec![
                (net("10.5.66.0/24"), ip("192.168.1.66")),
                (net("10.5.2.0/24"), ip("192.168.1.3")),
            ],
            foreign: vec![(net("10.5.77.0/24"), ip("192.168.1.77"))],
            ..FakeRoutes::default()
        };
        let mut hg =
            HostGw::new(ext([192, 168, 1, 2], [192, 168, 1, 2]), routes, &config(V4)).unwrap();
        // Before the whole listing: nothing is taken for stale (routes stay over a restart).
        hg.reconcile();
        assert!(
            !hg.routes.log.iter().any(|l| l.starts_with("delete")),
            "{:?}",
            hg.routes.log
        );
        hg.handle(&[LeaseEvent::Added(lease(
            "10.5.2.0-24",
            r#"{"PublicIP":"192.168.1.3","BackendType":"host-gw"}"#,
        ))]);
        hg.listed();
        assert_eq!(
            hg.routes.left,
            [(net("10.5.2.0/24"), ip("192.168.1.3"))],
            "the deleted node's route went at start: {:?}",
            hg.routes.log
        );
        assert!(
            hg.routes
                .log
                .contains(&"delete 10.5.66.0/24 via 192.168.1.66 dev 7".to_owned())
        );
        assert!(
            !hg.routes.log.iter().any(|l| l.contains("10.5.77.0")),
            "not ours: left alone"
        );
        // Later, in a reconcile: one of ours appears that no lease names.
        hg.routes
            .left
            .push((net("10.5.88.0/24"), ip("192.168.1.88")));
        hg.reconcile();
        assert!(
            hg.routes
                .log
                .contains(&"delete 10.5.88.0/24 via 192.168.1.88 dev 7".to_owned())
        );
        assert_eq!(hg.programmed(), 1);
    }

    #[test]
    fn routes_per_peer_lease() {
        let mut hg = HostGw::new(
            ext([192, 168, 1, 2], [192, 168, 1, 2]),
            FakeRoutes::default(),
            &config(V4),
        )
        .unwrap();
        assert_eq!(
            hg.lease_attrs().to_json(),
            r#"{"PublicIP":"192.168.1.2","PublicIPv6":null,"BackendType":"host-gw"}"#
        );
        assert_eq!(hg.mtu(), 1500);
        hg.routes.fail = Some("10.5.9.0/24".parse().unwrap());
        hg.handle(&[
            LeaseEvent::Added(lease(
                "10.5.2.0-24",
                r#"{"PublicIP":"192.168.1.3","BackendType":"host-gw"}"#,
            )),
            LeaseEvent::Added(lease(
                "10.5.9.0-24",
                r#"{"PublicIP":"192.168.1.9","BackendType":"host-gw"}"#,
            )),
            LeaseEvent::Added(lease(
                "10.5.3.0-24",
                r#"{"PublicIP":"192.168.1.4","BackendType":"vxlan"}"#,
            )),
            LeaseEvent::Removed(lease(
                "10.5.2.0-24",
                r#"{"PublicIP":"192.168.1.3","BackendType":"host-gw"}"#,
            )),
        ]);
        assert_eq!(
            hg.routes.log,
            [
                "replace 10.5.2.0/24 via 192.168.1.3 dev 7",
                "delete 10.5.2.0/24 via 192.168.1.3 dev 7"
            ]
        );
    }

    #[test]
    fn reconcile_re_adds_a_route_deleted_by_hand() {
        let mut hg = HostGw::new(
            ext([192, 168, 1, 2], [192, 168, 1, 2]),
            FakeRoutes::default(),
            &config(V4),
        )
        .unwrap();
        let peer = lease(
            "10.5.2.0-24",
            r#"{"PublicIP":"192.168.1.3","BackendType":"host-gw"}"#,
        );
        hg.handle(&[LeaseEvent::Added(peer.clone())]);
        hg.reconcile();
        assert_eq!(hg.routes.log.len(), 1, "present: nothing to do");
        hg.routes.gone.push("10.5.2.0/24".parse().unwrap());
        hg.reconcile();
        assert_eq!(hg.routes.log.len(), 2);
        assert_eq!(hg.repairs().route, 1);
        hg.handle(&[LeaseEvent::Removed(peer)]);
        hg.reconcile();
        assert_eq!(hg.routes.log.len(), 3, "a removed peer is not re-added");
    }

    #[test]
    fn a_route_that_keeps_failing_is_logged_once_until_it_works() {
        // Before: one error line per failing peer on every reconcile (every 5 s, forever).
        crate::log::capture::start();
        let mut hg = HostGw::new(
            ext([192, 168, 1, 2], [192, 168, 1, 2]),
            FakeRoutes {
                fail: Some("10.5.2.0/24".parse().unwrap()),
                ..FakeRoutes::default()
            },
            &config(V4),
        )
        .unwrap();
        hg.handle(&[LeaseEvent::Added(lease(
            "10.5.2.0-24",
            r#"{"PublicIP":"172.16.0.3","BackendType":"host-gw"}"#,
        ))]);
        for _ in 0..10 {
            hg.reconcile();
        }
        let failures = |lines: &[String]| {
            lines
                .iter()
                .filter(|l| l.contains("10.5.2.0/24 via"))
                .count()
        };
        assert_eq!(failures(&crate::log::capture::lines()), 1);
        hg.routes.fail = None;
        hg.reconcile();
        assert_eq!(hg.repairs().route, 1);
        hg.routes.fail = Some("10.5.2.0/24".parse().unwrap());
        hg.routes.gone.push("10.5.2.0/24".parse().unwrap());
        hg.reconcile();
        hg.reconcile();
        assert_eq!(
            failures(&crate::log::capture::lines()),
            3,
            "failed, restored, failed again: one line each"
        );
    }

    #[test]
    fn reconcile_lists_the_routes_once_however_many_peers() {
        let mut hg = HostGw::new(
            ext([192, 168, 1, 2], [192, 168, 1, 2]),
            FakeRoutes::default(),
            &config(V4),
        )
        .unwrap();
        let peers: Vec<LeaseEvent> = (10..60)
            .map(|i| {
                LeaseEvent::Added(lease(
                    &format!("10.5.{i}.0-24"),
                    &format!(r#"{{"PublicIP":"192.168.1.{i}","BackendType":"host-gw"}}"#),
                ))
            })
            .collect();
        hg.handle(&peers);
        hg.routes.gone.push("10.5.33.0/24".parse().unwrap());
        hg.reconcile();
        assert_eq!(hg.routes.listings, 1);
        assert_eq!(hg.repairs().route, 1);
        assert_eq!(
            hg.routes.log.last().map(String::as_str),
            Some("replace 10.5.33.0/24 via 192.168.1.33 dev 7")
        );
        hg.reconcile();
        assert_eq!((hg.routes.listings, hg.repairs().route), (2, 1));
    }

    /// A dual-stack node's interface (192.168.1.2, fd00::2) and network config.
    fn dual_stack() -> (ExternalInterface, NetworkConfig) {
        let mut e = ext([192, 168, 1, 2], [192, 168, 1, 2]);
        e.iface_addr6 = Some("fd00::2".parse().unwrap());
        e.public_ipv6 = e.iface_addr6;
        let dual = config(
            r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"host-gw"}}"#,
        );
        (e, dual)
    }

    #[test]
    fn dual_stack_and_ipv6_only_routes_go_via_the_peers_public_ipv6() {
        // Before: host-gw routed IPv4 only; a dual-stack network's IPv6 subnets went unrouted.
        let (e, dual) = dual_stack();
        let mut hg = HostGw::new(e.clone(), FakeRoutes::default(), &dual).unwrap();
        assert_eq!(
            hg.lease_attrs().to_json(),
            r#"{"PublicIP":"192.168.1.2","PublicIPv6":"fd00::2","BackendType":"host-gw"}"#
        );
        let peer = lease(
            "10.5.2.0-24&fc00:0:0:2::-64",
            r#"{"PublicIP":"192.168.1.3","PublicIPv6":"fd00::3","BackendType":"host-gw"}"#,
        );
        hg.handle(&[LeaseEvent::Added(peer.clone())]);
        assert_eq!(
            hg.routes.log,
            [
                "replace 10.5.2.0/24 via 192.168.1.3 dev 7",
                "replace fc00:0:0:2::/64 via fd00::3 dev 7"
            ]
        );
        hg.routes.gone.push("fc00:0:0:2::/64".parse().unwrap());
        hg.reconcile();
        assert_eq!(hg.repairs().route, 1);
        assert_eq!(hg.routes.listings, 2, "one listing per family");
        hg.handle(&[LeaseEvent::Removed(peer)]);
        assert_eq!(hg.routes.log.len(), 5);
        assert!(hg.routes.log[3..].iter().all(|l| l.starts_with("delete")));

        // IPv6 only (a kube network): no IPv4 route, PublicIP 0.0.0.0 as Go publishes it.
        let v6only = config(
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"host-gw"}}"#,
        );
        let mut e6 = e.clone();
        e6.public_ip = std::net::Ipv4Addr::UNSPECIFIED;
        let mut hg = HostGw::new(e6, FakeRoutes::default(), &v6only).unwrap();
        assert_eq!(
            hg.lease_attrs().to_json(),
            r#"{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::2","BackendType":"host-gw"}"#
        );
        let peer6 = Lease {
            subnet: SubnetKey {
                v4: None,
                v6: Some("fc00:0:0:3::/64".parse().unwrap()),
            },
            attrs: LeaseAttrs::from_json(
                br#"{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::3","BackendType":"host-gw"}"#,
            )
            .unwrap(),
            lease_id: 0,
            expiration: None,
        };
        hg.handle(&[LeaseEvent::Added(peer6)]);
        assert_eq!(hg.routes.log, ["replace fc00:0:0:3::/64 via fd00::3 dev 7"]);

        // IPv6 on without an IPv6 address, or behind NAT: refused with the reason.
        let e = HostGw::new(
            ext([192, 168, 1, 2], [192, 168, 1, 2]),
            FakeRoutes::default(),
            &dual,
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs a global IPv6 address"), "{e}");
    }

    #[test]
    fn a_peer_re_keyed_to_another_ipv6_subnet_loses_its_old_route() {
        // Before: the new IPv6 route was added and the old one stayed, in the kernel and
        // in what every reconcile restored.
        let (e, dual) = dual_stack();
        let mut hg = HostGw::new(e, FakeRoutes::default(), &dual).unwrap();
        let attrs = r#"{"PublicIP":"192.168.1.3","PublicIPv6":"fd00::3","BackendType":"host-gw"}"#;
        hg.handle(&[LeaseEvent::Added(lease(
            "10.5.2.0-24&fc00:0:0:2::-64",
            attrs,
        ))]);
        hg.routes.log.clear();
        let moved = lease("10.5.2.0-24&fc00:0:0:9::-64", attrs);
        hg.handle(&[LeaseEvent::Added(moved.clone())]);
        assert_eq!(
            hg.routes.log,
            [
                "delete fc00:0:0:2::/64 via fd00::3 dev 7",
                "replace 10.5.2.0/24 via 192.168.1.3 dev 7",
                "replace fc00:0:0:9::/64 via fd00::3 dev 7"
            ]
        );
        assert_eq!(hg.programmed(), 2);
        hg.routes.log.clear();
        hg.handle(&[LeaseEvent::Removed(moved)]);
        assert_eq!(
            hg.routes.log,
            [
                "delete 10.5.2.0/24 via 192.168.1.3 dev 7",
                "delete fc00:0:0:9::/64 via fd00::3 dev 7"
            ]
        );
        assert_eq!(hg.programmed(), 0);
    }

    #[test]
    fn refuses_nat() {
        let e = HostGw::new(
            ext([203, 0, 113, 5], [192, 168, 1, 2]),
            FakeRoutes::default(),
            &config(V4),
        )
        .unwrap_err();
        assert!(e.to_string().contains("behind NAT"), "{e}");
    }
}
