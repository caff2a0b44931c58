//! flanneld's firewall rules (Go's `pkg/trafficmngr/nftables`): `--ip-masq`'s masquerade
//! chain and `--iptables-forward-rules`' forward chain (Go's default: on, with or without
//! `--ip-masq`), written as ONE nf_tables netlink transaction through cni-nft (no `nft`
//! process):
//!
//! ```text
//! table ip flannel-ipv4 {
//!   chain postrtg { type nat hook postrouting priority srcnat; policy accept;
//!     meta mark & 0x00004000 == 0x00004000 return      # kube-proxy's masquerade mark
//!     ip saddr <pod subnet> ip daddr <Network> return   # pod → cluster
//!     ip saddr <Network> ip daddr <pod subnet> return   # cluster → pod
//!     ip saddr != <Network> ip daddr <pod subnet> return  # outside → pod: keep the source
//!     ip saddr <Network> ip daddr != 224.0.0.0/4 masquerade fully-random  # pod → outside
//!     ip saddr != <Network> ip daddr <Network> masquerade fully-random }  # host → pods
//!   chain forward { type filter hook forward priority filter; policy accept;
//!     ip saddr <Network> accept
//!     ip daddr <Network> accept } }
//! ```
//!
//! and the same in `ip6 flannel-ipv6` for a dual-stack lease (`fully-random` unless
//! `--ip-masq-fully-random-disable`). Each wanted chain is created if needed and flushed in
//! the same transaction, so a new subnet replaces the old rules whole; a chain not wanted
//! (the flag turned off since the last run, or Go's chain of the same name) is deleted in
//! it. [`Firewalled`] wraps a backend with these rules and checks them every
//! `--iptables-resync` seconds.
//!
//! Go's nftables mode (`EnableNFTables`) uses the same tables and chains, so its rules are
//! replaced by ours; its iptables mode's chains are removed at start by
//! [`super::go_iptables`].

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cni_nft::{Action, BaseChain, Batch, Dir, Family, Firewall, Hook, Listed, Match, Op, Rule};
use ipnetwork::IpNetwork;

use super::{Backend, BackendError, Repairs};
use crate::config::NetworkConfig;
use crate::lease::Lease;
use crate::log::{error, info, warning};
use crate::subnet::SubnetKey;

/// The IPv4 table.
pub const TABLE_V4: &str = "flannel-ipv4";
/// The IPv6 table.
pub const TABLE_V6: &str = "flannel-ipv6";
/// kube-proxy's masquerade mark bit: traffic it marked is left to kube-proxy.
pub const KUBE_PROXY_MARK: u32 = 0x4000;
/// The comment on every masquerade rule (iptables mode's).
pub const MASQ_COMMENT: &str = "flanneld masq";
/// The comment on every forward rule.
pub const FORWARD_COMMENT: &str = "flanneld forward";

fn chain(family: Family, name: &str, hook: Hook) -> BaseChain {
    BaseChain {
        family,
        table: if family == Family::Ip6 {
            TABLE_V6
        } else {
            TABLE_V4
        },
        name: name.to_owned(),
        hook,
    }
}

fn addr(dir: Dir, op: Op, net: IpNetwork) -> Match {
    Match::Addr { dir, op, net }
}

/// The postrouting rules for one family: `network` the cluster network, `pod` the node's
/// subnet.
pub fn masq_rules(network: IpNetwork, pod: IpNetwork, fully_random: bool) -> Vec<Rule> {
    use Dir::{Destination as D, Source as S};
    let multicast: IpNetwork = match network {
        IpNetwork::V4(_) => IpNetwork::new(IpAddr::V4([224, 0, 0, 0].into()), 4),
        IpNetwork::V6(_) => IpNetwork::new(IpAddr::V6([0xff00, 0, 0, 0, 0, 0, 0, 0].into()), 8),
    }
    .unwrap_or(network);
    let masq = if fully_random {
        Action::MasqueradeFullyRandom
    } else {
        Action::Masquerade
    };
    vec![
        Rule::new(
            vec![Match::MarkBits {
                bits: KUBE_PROXY_MARK,
            }],
            Action::Return,
        ),
        Rule::new(
            vec![addr(S, Op::Eq, pod), addr(D, Op::Eq, network)],
            Action::Return,
        ),
        Rule::new(
            vec![addr(S, Op::Eq, network), addr(D, Op::Eq, pod)],
            Action::Return,
        ),
        Rule::new(
            vec![addr(S, Op::Neq, network), addr(D, Op::Eq, pod)],
            Action::Return,
        ),
        Rule::new(
            vec![addr(S, Op::Eq, network), addr(D, Op::Neq, multicast)],
            masq.clone(),
        ),
        Rule::new(
            vec![addr(S, Op::Neq, network), addr(D, Op::Eq, network)],
            masq,
        ),
    ]
}

/// The forward rules for one family.
pub fn forward_rules(network: IpNetwork) -> Vec<Rule> {
    vec![
        Rule::new(vec![addr(Dir::Source, Op::Eq, network)], Action::Accept),
        Rule::new(
            vec![addr(Dir::Destination, Op::Eq, network)],
            Action::Accept,
        ),
    ]
}

/// Which rules the node writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSet {
    /// `--ip-masq`.
    pub masq: bool,
    /// Not `--ip-masq-fully-random-disable`.
    pub fully_random: bool,
    /// `--iptables-forward-rules`.
    pub forward: bool,
}

/// The whole transaction for the node's lease: the wanted chains of every family the
/// network and the lease have written, the others deleted.
pub fn batch(config: &NetworkConfig, lease: &SubnetKey, set: RuleSet) -> Batch {
    let mut b = Batch::new();
    let mut families = Vec::new();
    if let (Some(v4), Some(sn)) = (&config.v4, lease.v4) {
        families.push((Family::Ip, IpNetwork::V4(v4.network), IpNetwork::V4(sn)));
    }
    if let (Some(v6), Some(sn)) = (&config.v6, lease.v6) {
        families.push((Family::Ip6, IpNetwork::V6(v6.network), IpNetwork::V6(sn)));
    }
    for (family, network, pod) in families {
        let postrtg = chain(family, "postrtg", Hook::NAT_POSTROUTING);
        if set.masq {
            postrtg.replace(
                &mut b,
                MASQ_COMMENT,
                masq_rules(network, pod, set.fully_random),
            );
        } else {
            postrtg.remove(&mut b);
        }
        let forward = chain(family, "forward", Hook::FILTER_FORWARD);
        if set.forward {
            forward.replace(&mut b, FORWARD_COMMENT, forward_rules(network));
        } else {
            forward.remove(&mut b);
        }
    }
    b
}

/// How early a reconcile may come and still check the rules: the agent's timer is not
/// exact, and a check skipped for a few milliseconds would wait a whole period more.
const RESYNC_SLACK: Duration = Duration::from_millis(500);

/// A backend with the node's firewall rules: written when the lease is acquired (again: a
/// new subnet rewrites them), checked every `resync` against what the kernel listed right
/// after writing them, and rewritten when they differ.
#[derive(Debug)]
pub struct Firewalled<B, F> {
    inner: B,
    fw: F,
    config: NetworkConfig,
    set: RuleSet,
    resync: Duration,
    checked: Option<Instant>,
    written: Option<(Batch, Vec<Listed>)>,
    rules_repaired: u64,
}

impl<B: Backend, F: Firewall> Firewalled<B, F> {
    /// `inner` with `set`'s rules for `config`'s networks written through `fw`, checked
    /// every `resync`.
    pub fn new(
        inner: B,
        fw: F,
        config: NetworkConfig,
        set: RuleSet,
        resync: Duration,
    ) -> Firewalled<B, F> {
        Firewalled {
            inner,
            fw,
            config,
            set,
            resync,
            checked: None,
            written: None,
            rules_repaired: 0,
        }
    }

    /// The firewall (tests change the fake's rules through it).
    pub fn firewall(&self) -> &F {
        &self.fw
    }

    /// The wrapped backend.
    pub fn inner(&mut self) -> &mut B {
        &mut self.inner
    }

    fn listing(&self) -> Result<Vec<Listed>, cni_nft::NftError> {
        let mut all = self.fw.list(Family::Ip, TABLE_V4)?;
        if self.config.v6.is_some() {
            all.extend(self.fw.list(Family::Ip6, TABLE_V6)?);
        }
        Ok(all)
    }

    fn write(&mut self, b: Batch) -> Result<(), BackendError> {
        self.fw.apply(&b, "writing flanneld's firewall rules")?;
        let listed = self.listing()?;
        self.written = Some((b, listed));
        self.checked = Some(Instant::now());
        Ok(())
    }
}

impl<B: Backend, F: Firewall> Backend for Firewalled<B, F> {
    super::pass_to_inner!(
        backend_type,
        lease_attrs,
        mtu,
        handle,
        listed,
        watched_links,
        watched_entries,
        settled,
        programmed,
        stop,
    );

    fn lease_acquired(&mut self, lease: &Lease) -> Result<(), BackendError> {
        self.inner.lease_acquired(lease)?;
        let b = batch(&self.config, &lease.subnet, self.set);
        self.write(b)?;
        let what = match (self.set.masq, self.set.forward) {
            (true, true) => "masquerade and forward rules",
            (true, false) => "masquerade rules (no forward rules: --iptables-forward-rules=false)",
            (false, true) => "forward rules (no masquerade: --ip-masq is off)",
            (false, false) => "no rules (--ip-masq off, --iptables-forward-rules=false)",
        };
        info!(
            "wrote {what} for {} (nftables tables {TABLE_V4}{}{})",
            lease.subnet,
            if self.config.v6.is_some() {
                ", flannel-ipv6"
            } else {
                ""
            },
            if self.set.masq && !self.set.fully_random {
                "; masquerade without fully-random"
            } else {
                ""
            }
        );
        Ok(())
    }

    fn reconcile(&mut self) {
        self.inner.reconcile();
        self.reconcile_rules();
    }

    fn reconcile_without_entries(&mut self) {
        self.inner.reconcile_without_entries();
        self.reconcile_rules();
    }

    fn repairs(&self) -> Repairs {
        self.inner.repairs().plus(Repairs {
            rules: self.rules_repaired,
            ..Repairs::default()
        })
    }
}

impl<B: Backend, F: Firewall> Firewalled<B, F> {
    /// The rules compared with the kernel's listing, rewritten on a difference (nftables
    /// changes come with no notification the agent reads: checked every `resync`).
    fn reconcile_rules(&mut self) {
        let Some((b, want)) = &self.written else {
            return;
        };
        if self
            .checked
            .is_some_and(|t| t.elapsed() + RESYNC_SLACK < self.resync)
        {
            return;
        }
        self.checked = Some(Instant::now());
        let listed = match self.listing() {
            Ok(l) => l,
            Err(e) => {
                error!("reconcile: listing the masquerade rules: {e}");
                return;
            }
        };
        if &listed == want {
            return;
        }
        warning!(
            "reconcile: the masquerade/forward rules differ from those written: rewriting them"
        );
        let b = b.clone();
        match self.write(b) {
            Ok(()) => self.rules_repaired += 1,
            Err(e) => error!("reconcile: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::hostgw::tests::FakeRoutes;
    use crate::backend::hostgw::{HostGw, tests::ext};
    use cni_nft::FakeFirewall;

    fn config(s: &str) -> NetworkConfig {
        NetworkConfig::parse(s.as_bytes()).unwrap()
    }

    /// host-gw on 10.5.0.0/16 with masquerade, over in-memory routes and firewall.
    const ALL: RuleSet = RuleSet {
        masq: true,
        fully_random: true,
        forward: true,
    };

    fn masqueraded_host_gw() -> Firewalled<HostGw<FakeRoutes>, FakeFirewall> {
        firewalled_host_gw(ALL, Duration::ZERO)
    }

    fn firewalled_host_gw(
        set: RuleSet,
        resync: Duration,
    ) -> Firewalled<HostGw<FakeRoutes>, FakeFirewall> {
        let c = config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#);
        let hg = HostGw::new(
            ext([192, 168, 1, 2], [192, 168, 1, 2]),
            FakeRoutes::default(),
            &c,
        )
        .unwrap();
        Firewalled::new(hg, FakeFirewall::new(), c, set, resync)
    }

    use crate::testkit::own as lease;

    const GOLDEN_V4: &str = "\
add table ip flannel-ipv4
add chain ip flannel-ipv4 postrtg { type nat hook postrouting priority 100; policy accept; }
flush chain ip flannel-ipv4 postrtg
add rule ip flannel-ipv4 postrtg meta mark & 0x00004000 == 0x00004000 return comment \"flanneld masq\"
add rule ip flannel-ipv4 postrtg ip saddr 10.5.7.0/24 ip daddr 10.5.0.0/16 return comment \"flanneld masq\"
add rule ip flannel-ipv4 postrtg ip saddr 10.5.0.0/16 ip daddr 10.5.7.0/24 return comment \"flanneld masq\"
add rule ip flannel-ipv4 postrtg ip saddr != 10.5.0.0/16 ip daddr 10.5.7.0/24 return comment \"flanneld masq\"
add rule ip flannel-ipv4 postrtg ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random comment \"flanneld masq\"
add rule ip flannel-ipv4 postrtg ip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade fully-random comment \"flanneld masq\"
add table ip flannel-ipv4
add chain ip flannel-ipv4 forward { type filter hook forward priority 0; policy accept; }
flush chain ip flannel-ipv4 forward
add rule ip flannel-ipv4 forward ip saddr 10.5.0.0/16 accept comment \"flanneld forward\"
add rule ip flannel-ipv4 forward ip daddr 10.5.0.0/16 accept comment \"flanneld forward\"
";

    #[test]
    fn golden_nft_text_for_ipv4() {
        let c = config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
        let b = batch(&c, &SubnetKey::parse("10.5.7.0-24").unwrap(), ALL);
        assert_eq!(b.to_string(), GOLDEN_V4);
    }

    #[test]
    fn dual_stack_adds_the_ip6_table_and_plain_masquerade_is_possible() {
        let c = config(
            r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00:5::/48","Backend":{"Type":"host-gw"}}"#,
        );
        let text = batch(
            &c,
            &SubnetKey::parse("10.5.7.0-24&fc00:5:0:7::-64").unwrap(),
            RuleSet {
                fully_random: false,
                ..ALL
            },
        )
        .to_string();
        assert!(text.contains("add rule ip6 flannel-ipv6 postrtg ip6 saddr fc00:5::/48 ip6 daddr != ff00::/8 masquerade comment"), "{text}");
        assert!(
            text.contains("add rule ip6 flannel-ipv6 forward ip6 daddr fc00:5::/48 accept"),
            "{text}"
        );
        assert!(!text.contains("fully-random"));
    }

    #[test]
    fn written_on_lease_replaced_on_a_new_subnet_restored_when_changed() {
        let mut m = masqueraded_host_gw();
        m.lease_acquired(&lease("10.5.7.0-24")).unwrap();
        assert_eq!(m.firewall().applied(), [GOLDEN_V4]);
        assert_eq!(m.firewall().rules_in("postrtg"), 6);
        assert_eq!(m.firewall().rules_in("forward"), 2);
        m.reconcile();
        assert_eq!(
            m.firewall().applied().len(),
            1,
            "unchanged: nothing written"
        );

        // A new subnet: the same chains flushed and refilled in one transaction.
        m.lease_acquired(&lease("10.5.9.0-24")).unwrap();
        assert_eq!(m.firewall().rules_in("postrtg"), 6);
        assert!(
            m.firewall().applied()[1].contains("ip saddr 10.5.9.0/24 ip daddr 10.5.0.0/16 return")
        );
        assert!(!m.firewall().applied()[1].contains("10.5.7.0"));

        // The chain deleted by hand: the next reconcile writes it again and counts it.
        let mut gone = Batch::new();
        chain(Family::Ip, "postrtg", Hook::NAT_POSTROUTING).remove(&mut gone);
        m.firewall().apply(&gone, "test").unwrap();
        assert_eq!(m.firewall().rules_in("postrtg"), 0);
        m.reconcile();
        assert_eq!(m.firewall().rules_in("postrtg"), 6);
        assert_eq!(m.repairs().rules, 1);
        // Also on a tick that skips the kernel's entries: nftables sends no notification.
        m.firewall().apply(&gone, "test").unwrap();
        m.reconcile_without_entries();
        assert_eq!(m.firewall().rules_in("postrtg"), 6);
        assert_eq!(m.repairs().rules, 2);
    }

    #[test]
    fn forward_rules_without_masquerade_and_neither_when_both_are_off() {
        // Before: without --ip-masq no forward rule was written (Go writes them by default),
        // and --iptables-forward-rules=false was accepted and ignored.
        let forward_only = RuleSet { masq: false, ..ALL };
        let mut m = firewalled_host_gw(forward_only, Duration::ZERO);
        m.lease_acquired(&lease("10.5.7.0-24")).unwrap();
        assert_eq!(m.firewall().rules_in("forward"), 2);
        assert_eq!(m.firewall().rules_in("postrtg"), 0);
        assert!(m.firewall().applied()[0].contains("delete chain ip flannel-ipv4 postrtg"));
        let none = RuleSet {
            masq: false,
            fully_random: true,
            forward: false,
        };
        let mut m = firewalled_host_gw(none, Duration::ZERO);
        // A chain left by an earlier run (or Go's nftables mode) goes.
        let mut earlier = Batch::new();
        chain(Family::Ip, "forward", Hook::FILTER_FORWARD).replace(
            &mut earlier,
            FORWARD_COMMENT,
            forward_rules("10.5.0.0/16".parse().unwrap()),
        );
        m.firewall().apply(&earlier, "test").unwrap();
        m.lease_acquired(&lease("10.5.7.0-24")).unwrap();
        assert_eq!(m.firewall().chains(), Vec::<String>::new());
        let masq_only = RuleSet {
            forward: false,
            fully_random: false,
            ..ALL
        };
        let mut m = firewalled_host_gw(masq_only, Duration::ZERO);
        m.lease_acquired(&lease("10.5.7.0-24")).unwrap();
        assert_eq!(m.firewall().rules_in("postrtg"), 6);
        assert_eq!(m.firewall().rules_in("forward"), 0);
        let text = &m.firewall().applied()[0];
        assert!(text.contains(" masquerade comment") && !text.contains("fully-random"));
    }

    #[test]
    fn rules_are_checked_every_resync_period() {
        let mut m = firewalled_host_gw(ALL, Duration::from_secs(1));
        m.lease_acquired(&lease("10.5.7.0-24")).unwrap();
        let mut gone = Batch::new();
        chain(Family::Ip, "postrtg", Hook::NAT_POSTROUTING).remove(&mut gone);
        m.firewall().apply(&gone, "test").unwrap();
        m.reconcile();
        assert_eq!(
            m.firewall().rules_in("postrtg"),
            0,
            "not checked before the period ends"
        );
        std::thread::sleep(Duration::from_millis(600)); // past the period less the slack
        m.reconcile();
        assert_eq!(m.firewall().rules_in("postrtg"), 6);
        assert_eq!(m.repairs().rules, 1);
    }

    #[test]
    fn a_refused_transaction_is_an_error_of_the_lease() {
        let mut m = masqueraded_host_gw();
        m.firewall().fail_next("EPERM");
        let e = m.lease_acquired(&lease("10.5.7.0-24")).unwrap_err();
        assert!(e.to_string().contains("firewall rules"), "{e}");
    }
}
