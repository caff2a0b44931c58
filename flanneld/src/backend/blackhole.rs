//! `--ip-blackhole-route`: a blackhole route for each of the node's own subnets
//! (`blackhole 10.5.7.0/24 proto 102`), so traffic to an address of the node's subnet that
//! no pod holds is dropped here instead of following the default route out of the node
//! (where it could loop between nodes until its TTL ends). The bridge's own route to the
//! subnet (`10.5.7.0/24 dev cni0`, added with the first pod) is more specific in metric
//! order and wins while it exists. Kept by reconcile, replaced when the lease changes,
//! removed when the flag is dropped (a blackhole of ours for a subnet the node does not
//! hold goes).

use std::collections::BTreeSet;
use std::io;

use ipnetwork::IpNetwork;
use node_kernel::route::{
    blackhole, destination, in_main_table, is_blackhole, protocol, with_protocol,
};
use node_kernel::{KernelError, RouteSocket};

use super::{Backend, BackendError, ROUTE_PROTOCOL, Repairs, WatchedEntries};
use crate::lease::Lease;
use crate::log::{error, info, warning};

/// The blackhole routes the agent makes.
pub trait Blackholes {
    /// Adds (or replaces) the blackhole route to `dst`.
    fn add(&mut self, dst: IpNetwork) -> io::Result<()>;
    /// Deletes it (gone already is no error).
    fn delete(&mut self, dst: IpNetwork) -> io::Result<()>;
    /// The blackhole routes of ours in the main table, both families.
    fn present(&mut self) -> io::Result<BTreeSet<IpNetwork>>;
}

/// The kernel's main table in the agent's namespace.
#[derive(Debug)]
pub struct KernelBlackholes(RouteSocket);

impl KernelBlackholes {
    /// A netlink socket in the current namespace.
    pub fn current() -> Result<KernelBlackholes, KernelError> {
        RouteSocket::current().map(KernelBlackholes)
    }
}

fn message(dst: IpNetwork) -> node_kernel::route::RouteMessage {
    with_protocol(blackhole(dst.ip(), dst.prefix()), ROUTE_PROTOCOL)
}

impl Blackholes for KernelBlackholes {
    fn add(&mut self, dst: IpNetwork) -> io::Result<()> {
        self.0.replace_route(&message(dst))
    }

    fn delete(&mut self, dst: IpNetwork) -> io::Result<()> {
        self.0.delete_route(&message(dst))
    }

    fn present(&mut self) -> io::Result<BTreeSet<IpNetwork>> {
        let mut out = BTreeSet::new();
        for v4 in [true, false] {
            out.extend(
                self.0
                    .routes(v4)?
                    .iter()
                    .filter(|m| {
                        in_main_table(m) && is_blackhole(m) && protocol(m) == ROUTE_PROTOCOL
                    })
                    .filter_map(destination),
            );
        }
        Ok(out)
    }
}

/// A backend with the node's blackhole routes.
#[derive(Debug)]
pub struct Blackholed<B, R> {
    inner: B,
    routes: R,
    /// `--ip-blackhole-route`; when off, the blackhole routes of an earlier run go at start.
    enabled: bool,
    wanted: BTreeSet<IpNetwork>,
    restored: u64,
}

impl<B: Backend, R: Blackholes> Blackholed<B, R> {
    /// `inner` with blackhole routes for the node's subnets made through `routes` when
    /// `enabled`; when not, only those an earlier run left are removed.
    pub fn new(inner: B, routes: R, enabled: bool) -> Blackholed<B, R> {
        Blackholed {
            inner,
            routes,
            enabled,
            wanted: BTreeSet::new(),
            restored: 0,
        }
    }

    /// The route table (tests read the fake).
    pub fn routes(&self) -> &R {
        &self.routes
    }

    /// Makes the kernel's blackhole routes of ours the wanted ones: missing added, others
    /// deleted. Returns how many were added.
    fn sync(&mut self, context: &str) -> usize {
        let present = match self.routes.present() {
            Ok(p) => p,
            Err(e) => {
                error!("{context}: listing blackhole routes: {e}");
                return 0;
            }
        };
        for dst in present.difference(&self.wanted) {
            match self.routes.delete(*dst) {
                Ok(()) => info!("deleted blackhole route {dst}: not the node's subnet"),
                Err(e) => error!("{context}: deleting blackhole route {dst}: {e}"),
            }
        }
        let mut added = 0;
        for dst in self.wanted.difference(&present) {
            match self.routes.add(*dst) {
                Ok(()) => added += 1,
                Err(e) => error!("{context}: adding blackhole route {dst}: {e}"),
            }
        }
        added
    }
}

impl<B: Backend, R: Blackholes> Backend for Blackholed<B, R> {
    super::pass_to_inner!(
        backend_type,
        lease_attrs,
        mtu,
        handle,
        listed,
        reconcile_without_entries,
        watched_links,
        settled,
        programmed,
        stop,
    );

    fn lease_acquired(&mut self, lease: &Lease) -> Result<(), BackendError> {
        self.inner.lease_acquired(lease)?;
        if !self.enabled {
            self.sync("removing an earlier run's blackhole routes");
            return Ok(());
        }
        self.wanted = [
            lease.subnet.v4.map(IpNetwork::V4),
            lease.subnet.v6.map(IpNetwork::V6),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.sync("--ip-blackhole-route");
        info!(
            "blackhole route for {}",
            self.wanted
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        );
        Ok(())
    }

    fn reconcile(&mut self) {
        self.inner.reconcile();
        if self.wanted.is_empty() {
            return;
        }
        let added = self.sync("reconcile");
        if added > 0 {
            warning!("reconcile: restored {added} blackhole route(s)");
            self.restored += added as u64;
        }
    }

    fn repairs(&self) -> Repairs {
        self.inner.repairs().plus(Repairs {
            route: self.restored,
            ..Repairs::default()
        })
    }

    fn watched_entries(&self) -> WatchedEntries {
        // A deletion of the blackhole route is a route notification for the node's subnet.
        let mut w = self.inner.watched_entries();
        w.networks.extend(self.wanted.iter().copied());
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::hostgw::HostGw;
    use crate::backend::hostgw::tests::{FakeRoutes, ext};
    use crate::config::NetworkConfig;

    #[derive(Debug, Default)]
    struct FakeBlackholes {
        routes: BTreeSet<IpNetwork>,
    }

    impl Blackholes for FakeBlackholes {
        fn add(&mut self, dst: IpNetwork) -> io::Result<()> {
            self.routes.insert(dst);
            Ok(())
        }
        fn delete(&mut self, dst: IpNetwork) -> io::Result<()> {
            self.routes.remove(&dst);
            Ok(())
        }
        fn present(&mut self) -> io::Result<BTreeSet<IpNetwork>> {
            Ok(self.routes.clone())
        }
    }

    use crate::testkit::own as lease;

    fn nets(v: &[&str]) -> BTreeSet<IpNetwork> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn own_subnets_blackholed_kept_replaced_and_stale_ones_removed() {
        let c = NetworkConfig::parse(
            br#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00:5::/48","Backend":{"Type":"host-gw"}}"#,
        )
        .unwrap();
        let mut e = ext([192, 168, 1, 2], [192, 168, 1, 2]);
        e.iface_addr6 = Some("fd00::2".parse().unwrap());
        e.public_ipv6 = e.iface_addr6;
        let hg = HostGw::new(e.clone(), FakeRoutes::default(), &c).unwrap();
        // One from the lease of an earlier run.
        let old = FakeBlackholes {
            routes: nets(&["10.5.99.0/24"]),
        };
        let mut b = Blackholed::new(hg, old, true);
        b.lease_acquired(&lease("10.5.7.0-24&fc00:5:0:7::-64"))
            .unwrap();
        assert_eq!(b.routes().routes, nets(&["10.5.7.0/24", "fc00:5:0:7::/64"]));
        assert!(
            b.watched_entries()
                .networks
                .contains(&"10.5.7.0/24".parse().unwrap())
        );
        // Deleted by hand: back at the next reconcile, and counted.
        b.routes.routes.remove(&"10.5.7.0/24".parse().unwrap());
        b.reconcile();
        assert_eq!(b.routes().routes.len(), 2);
        assert_eq!(b.repairs().route, 1);
        // A new lease: the old subnet's routes go.
        b.lease_acquired(&lease("10.5.8.0-24&fc00:5:0:8::-64"))
            .unwrap();
        assert_eq!(b.routes().routes, nets(&["10.5.8.0/24", "fc00:5:0:8::/64"]));

        // The flag dropped: the next run removes them, and adds none.
        let hg = HostGw::new(e, FakeRoutes::default(), &c).unwrap();
        let left = std::mem::take(&mut b.routes);
        let mut off = Blackholed::new(hg, left, false);
        off.lease_acquired(&lease("10.5.8.0-24&fc00:5:0:8::-64"))
            .unwrap();
        off.reconcile();
        assert!(off.routes().routes.is_empty());
    }
}
