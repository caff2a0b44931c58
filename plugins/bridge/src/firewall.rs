//! Masquerade and MAC spoof-check rules: per attachment, a base chain in
//! `inet cni_rs_masquerade` (nat postrouting) and one in `bridge cni_rs_macspoofchk`
//! (filter prerouting), built with [`cni_nft`].

use std::net::IpAddr;

use cni_nft::{
    Action, BaseChain, Batch, Dir, Family, Firewall, Hook, Match, NftError, Op, Rule, Tag,
};
use ipnetwork::IpNetwork;

pub const MASQ_TABLE: &str = "cni_rs_masquerade";
pub const SPOOF_TABLE: &str = "cni_rs_macspoofchk";
const CHAIN_PREFIX: &str = "cni";

pub fn masq_chain(tag: &Tag<'_>) -> BaseChain {
    BaseChain {
        family: Family::Inet,
        table: MASQ_TABLE,
        name: tag.chain(CHAIN_PREFIX),
        hook: Hook::NAT_POSTROUTING,
    }
}

pub fn spoof_chain(tag: &Tag<'_>) -> BaseChain {
    BaseChain {
        family: Family::Bridge,
        table: SPOOF_TABLE,
        name: tag.chain(CHAIN_PREFIX),
        hook: Hook::BRIDGE_PREROUTING,
    }
}

/// `saddr == ip, daddr != its subnet, daddr != multicast → masquerade`.
fn masquerade_rule(net: IpNetwork) -> Rule {
    let multicast = if net.is_ipv4() {
        IpNetwork::new(IpAddr::from([224, 0, 0, 0]), 4)
    } else {
        IpNetwork::new(IpAddr::from([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8)
    };
    let mut matches = vec![
        Match::Addr {
            dir: Dir::Source,
            op: Op::Eq,
            net: IpNetwork::from(net.ip()),
        },
        Match::Addr {
            dir: Dir::Destination,
            // A prefix with host bits matches its network (as nft writes 10.1.17.5/24).
            op: Op::Neq,
            net,
        },
    ];
    matches.extend(multicast.ok().map(|m| Match::Addr {
        dir: Dir::Destination,
        op: Op::Neq,
        net: m,
    }));
    Rule::new(matches, Action::Masquerade)
}

/// `iifname == host veth, ether saddr != container MAC → drop`.
fn spoof_rule(host_veth: &str, mac: [u8; 6]) -> Rule {
    Rule::new(
        vec![
            Match::Ifname {
                dir: Dir::Source,
                op: Op::Eq,
                name: host_veth.to_owned(),
            },
            Match::EtherSource { op: Op::Neq, mac },
        ],
        Action::Drop,
    )
}

/// What one attachment needs.
#[derive(Debug, Default)]
pub struct Rules<'a> {
    /// Addresses to masquerade (with their subnet).
    pub masquerade: Vec<IpNetwork>,
    /// Host veth and container MAC for the spoof check.
    pub spoof_check: Option<(&'a str, [u8; 6])>,
}

/// The ADD transaction: the attachment's chains written from scratch.
pub fn add_batch(tag: &Tag<'_>, rules: &Rules<'_>) -> Batch {
    let mut batch = Batch::new();
    let comment = tag.comment();
    if !rules.masquerade.is_empty() {
        let r = rules
            .masquerade
            .iter()
            .map(|n| masquerade_rule(*n))
            .collect();
        masq_chain(tag).replace(&mut batch, &comment, r);
    }
    if let Some((veth, mac)) = &rules.spoof_check {
        spoof_chain(tag).replace(&mut batch, &comment, vec![spoof_rule(veth, *mac)]);
    }
    batch
}

/// The DEL transaction: succeeds whether or not the chains exist.
pub fn del_batch(tag: &Tag<'_>, masquerade: bool, spoof_check: bool) -> Batch {
    let mut batch = Batch::new();
    if masquerade {
        masq_chain(tag).remove(&mut batch);
    }
    if spoof_check {
        spoof_chain(tag).remove(&mut batch);
    }
    batch
}

/// Every rule in our two tables.
pub fn list(fw: &dyn Firewall) -> Result<Vec<cni_nft::Listed>, NftError> {
    let mut rules = fw.list(Family::Inet, MASQ_TABLE)?;
    rules.extend(fw.list(Family::Bridge, SPOOF_TABLE)?);
    Ok(rules)
}

/// Deletes whole chains of ours (GC), in one transaction.
pub fn delete_chains(fw: &dyn Firewall, chains: &[(Family, String)]) -> Result<(), NftError> {
    let mut batch = Batch::new();
    for (family, name) in chains {
        let (table, hook) = if *family == Family::Bridge {
            (SPOOF_TABLE, Hook::BRIDGE_PREROUTING)
        } else {
            (MASQ_TABLE, Hook::NAT_POSTROUTING)
        };
        BaseChain {
            family: *family,
            table,
            name: name.clone(),
            hook,
        }
        .remove(&mut batch);
    }
    fw.apply(&batch, "failed to delete stale firewall chains")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag() -> Tag<'static> {
        Tag {
            network: "cbr0",
            container_id: "ctr1",
            ifname: "eth0",
        }
    }

    #[test]
    fn transactions() {
        let rules = Rules {
            masquerade: vec![
                "10.1.17.5/24".parse().unwrap(),
                "fd00::5/64".parse().unwrap(),
            ],
            spoof_check: Some(("veth0123abcd", [2, 0, 0, 0, 0, 1])),
        };
        insta::assert_snapshot!("add_batch", add_batch(&tag(), &rules).to_string());
        insta::assert_snapshot!("del_batch", del_batch(&tag(), true, true).to_string());
        assert!(del_batch(&tag(), false, false).is_empty());
    }
}
