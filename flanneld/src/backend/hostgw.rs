//! The host-gw backend (`pkg/backend/hostgw`): each peer's subnet routed via the peer's
//! PublicIP out of the external interface, `<peer subnet> via <peer PublicIP> dev <iface>`;
//! the route removed when the peer's lease goes. No device, no BackendData; the MTU is the
//! interface's.

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use node_kernel::route::{main_table, via_gateway, via_link};
use node_kernel::{Context, KernelError, RouteSocket};

use super::{Backend, BackendError};
use crate::cache::LeaseEvent;
use crate::iface::ExternalInterface;
use crate::lease::{Lease, LeaseAttrs};
use crate::log::{error, info, warning};

/// The backend's `BackendType`.
pub const TYPE: &str = "host-gw";

/// The route changes host-gw makes.
pub trait RouteTable {
    /// Adds `dst via gw dev oif`, replacing a route to the same destination.
    fn replace(&mut self, dst: Ipv4Network, gw: Ipv4Addr, oif: u32) -> io::Result<()>;
    /// Deletes that route (gone already is no error).
    fn delete(&mut self, dst: Ipv4Network, gw: Ipv4Addr, oif: u32) -> io::Result<()>;
    /// The main table's routes through `oif` with a gateway, as (destination, gateway): one
    /// listing per reconcile, however many peers (a listing per peer made a reconcile at
    /// 5,000 peers dump 25 million routes).
    fn present(&mut self, oif: u32) -> io::Result<BTreeSet<(Ipv4Network, Ipv4Addr)>>;
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

fn message(dst: Ipv4Network, gw: Ipv4Addr, oif: u32) -> node_kernel::route::RouteMessage {
    via_gateway(
        via_link(main_table(dst.ip().into(), dst.prefix()), oif),
        gw.into(),
    )
}

impl RouteTable for KernelRoutes {
    fn replace(&mut self, dst: Ipv4Network, gw: Ipv4Addr, oif: u32) -> io::Result<()> {
        self.0.replace_route(&message(dst, gw, oif))
    }

    fn delete(&mut self, dst: Ipv4Network, gw: Ipv4Addr, oif: u32) -> io::Result<()> {
        self.0.delete_route(&message(dst, gw, oif))
    }

    fn present(&mut self, oif: u32) -> io::Result<BTreeSet<(Ipv4Network, Ipv4Addr)>> {
        use node_kernel::route::{destination, gateway, in_main_table, output_link};
        Ok(self
            .0
            .routes(true)?
            .iter()
            .filter(|m| in_main_table(m) && output_link(m) == Some(oif))
            .filter_map(|m| match (destination(m)?, gateway(m)?) {
                (ipnetwork::IpNetwork::V4(dst), std::net::IpAddr::V4(gw)) => Some((dst, gw)),
                _ => None,
            })
            .collect())
    }
}

/// host-gw on one external interface.
#[derive(Debug)]
pub struct HostGw<R> {
    ext: ExternalInterface,
    routes: R,
    /// The peers' routes wanted: destination → gateway.
    wanted: std::collections::BTreeMap<(u32, u8), (Ipv4Network, Ipv4Addr)>,
    /// Routes whose last attempt failed and was logged: the next failures of the same
    /// route are not (a peer behind another link would log a line every reconcile).
    failing: std::collections::BTreeSet<(Ipv4Network, Ipv4Addr)>,
    /// The last reconcile could not list the routes.
    listing_failed: bool,
    restored: u64,
}

impl<R: RouteTable> HostGw<R> {
    /// Refuses a PublicIP that is not the interface's address (Go: "probably behind NAT").
    pub fn new(ext: ExternalInterface, routes: R) -> Result<HostGw<R>, BackendError> {
        if ext.public_ip != ext.iface_addr {
            return Err(BackendError::Nat {
                public_ip: ext.public_ip,
                iface: ext.name,
                iface_addr: ext.iface_addr,
            });
        }
        Ok(HostGw {
            ext,
            routes,
            wanted: Default::default(),
            failing: Default::default(),
            listing_failed: false,
            restored: 0,
        })
    }

    /// The route table (tests read the fake's record).
    pub fn routes(&self) -> &R {
        &self.routes
    }
}

impl<R: RouteTable> Backend for HostGw<R> {
    fn backend_type(&self) -> &'static str {
        TYPE
    }

    fn lease_attrs(&self) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: self.ext.public_ip,
            public_ipv6: None,
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
            let (dst, gw, oif) = (lease.subnet.v4, lease.attrs.public_ip, self.ext.index);
            let k = (u32::from(dst.network()), dst.prefix());
            if add {
                self.wanted.insert(k, (dst, gw));
            } else {
                self.wanted.remove(&k);
            }
            let what = format!("{dst} via {gw} dev {}", self.ext.name);
            let result = if add {
                self.routes.replace(dst, gw, oif)
            } else {
                self.routes.delete(dst, gw, oif)
            };
            self.failing.remove(&(dst, gw));
            match result.context(format!(
                "{} route {what}",
                if add { "adding" } else { "deleting" }
            )) {
                Ok(()) => info!("{} route {what}", if add { "added" } else { "deleted" }),
                Err(e) => {
                    error!("{e} (retried by every reconcile, logged again once it worked)");
                    if add {
                        self.failing.insert((dst, gw));
                    }
                }
            }
        }
    }

    /// Re-adds any peer route that disappeared (Go does this every 10 s).
    fn reconcile(&mut self) {
        let oif = self.ext.index;
        let present = match self.routes.present(oif) {
            Ok(p) => p,
            Err(e) => {
                error!("reconcile: listing routes: {e}");
                self.listing_failed = true;
                return;
            }
        };
        self.listing_failed = false;
        let wanted: std::collections::BTreeSet<_> = self.wanted.values().copied().collect();
        self.failing.retain(|r| wanted.contains(r));
        let missing: Vec<(Ipv4Network, Ipv4Addr)> = self
            .wanted
            .values()
            .filter(|r| !present.contains(r))
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

    /// Records route changes; fails on a chosen destination.
    #[derive(Debug, Default)]
    pub struct FakeRoutes {
        /// `replace 10.5.2.0/24 via 192.168.1.3 dev 7` / `delete ...`.
        pub log: Vec<String>,
        /// A destination whose change fails.
        pub fail: Option<Ipv4Network>,
        /// Destinations deleted "by hand" (until replaced again).
        pub gone: Vec<Ipv4Network>,
        /// How many times the routes were listed.
        pub listings: usize,
    }

    impl RouteTable for FakeRoutes {
        fn replace(&mut self, dst: Ipv4Network, gw: Ipv4Addr, oif: u32) -> io::Result<()> {
            if self.fail == Some(dst) {
                return Err(io::Error::other("network unreachable"));
            }
            self.gone.retain(|g| *g != dst);
            self.log.push(format!("replace {dst} via {gw} dev {oif}"));
            Ok(())
        }
        fn delete(&mut self, dst: Ipv4Network, gw: Ipv4Addr, oif: u32) -> io::Result<()> {
            self.log.push(format!("delete {dst} via {gw} dev {oif}"));
            Ok(())
        }
        fn present(&mut self, oif: u32) -> io::Result<BTreeSet<(Ipv4Network, Ipv4Addr)>> {
            self.listings += 1;
            let mut routes = BTreeSet::new();
            for l in &self.log {
                let f: Vec<&str> = l.split(' ').collect();
                let (Some(dst), Some(gw)) = (f[1].parse().ok(), f[3].parse().ok()) else {
                    continue;
                };
                if f[5] != oif.to_string() {
                    continue;
                }
                if f[0] == "replace" {
                    routes.insert((dst, gw));
                } else {
                    routes.remove(&(dst, gw));
                }
            }
            routes.retain(|(d, _)| !self.gone.contains(d));
            Ok(routes)
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

    fn lease(key: &str, value: &str) -> Lease {
        Lease {
            subnet: SubnetKey::parse(key).unwrap(),
            attrs: LeaseAttrs::from_json(value.as_bytes()).unwrap(),
            lease_id: 0,
            expiration: None,
        }
    }

    #[test]
    fn routes_per_peer_lease() {
        let mut hg = HostGw::new(
            ext([192, 168, 1, 2], [192, 168, 1, 2]),
            FakeRoutes::default(),
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

    #[test]
    fn refuses_nat() {
        let e = HostGw::new(
            ext([203, 0, 113, 5], [192, 168, 1, 2]),
            FakeRoutes::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("behind NAT"), "{e}");
    }
}
