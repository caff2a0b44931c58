//! Masquerade and MAC spoof-check rules: per attachment, a base chain in
//! `inet cni_rs_masquerade` (nat postrouting) and one in `bridge cni_rs_macspoofchk`
//! (filter prerouting), built with [`cni_nft`].

use cni_nft::nftables::batch::Batch;
use cni_nft::nftables::expr::{Expression, Meta, MetaKey, NamedExpression};
use cni_nft::nftables::schema::Nftables;
use cni_nft::nftables::stmt::{Operator, Statement};
use cni_nft::nftables::types::NfFamily;
use cni_nft::{BaseChain, Hook, NftError, Tag, matches, payload, prefix, string};
use ipnetwork::IpNetwork;

use crate::config::format_mac;

pub const MASQ_TABLE: &str = "cni_rs_masquerade";
pub const SPOOF_TABLE: &str = "cni_rs_macspoofchk";
const CHAIN_PREFIX: &str = "cni";

pub fn masq_chain(tag: &Tag<'_>) -> BaseChain {
    BaseChain {
        family: NfFamily::INet,
        table: MASQ_TABLE,
        name: tag.chain(CHAIN_PREFIX),
        hook: Hook::NAT_POSTROUTING,
    }
}

pub fn spoof_chain(tag: &Tag<'_>) -> BaseChain {
    BaseChain {
        family: NfFamily::Bridge,
        table: SPOOF_TABLE,
        name: tag.chain(CHAIN_PREFIX),
        hook: Hook::BRIDGE_PREROUTING,
    }
}

/// `saddr == ip, daddr != its subnet, daddr != multicast → masquerade`.
fn masquerade_rule(net: IpNetwork) -> Vec<Statement<'static>> {
    let (proto, multicast, multicast_len) = if net.is_ipv4() {
        ("ip", "224.0.0.0", 4)
    } else {
        ("ip6", "ff00::", 8)
    };
    vec![
        matches(
            payload(proto, "saddr"),
            Operator::EQ,
            string(net.ip().to_string()),
        ),
        matches(
            payload(proto, "daddr"),
            Operator::NEQ,
            prefix(net.network().to_string(), net.prefix()),
        ),
        matches(
            payload(proto, "daddr"),
            Operator::NEQ,
            prefix(multicast.to_owned(), multicast_len),
        ),
        Statement::Masquerade(None),
    ]
}

/// `iifname == host veth, ether saddr != container MAC → drop`.
fn spoof_rule(host_veth: &str, mac: &[u8]) -> Vec<Statement<'static>> {
    vec![
        matches(
            Expression::Named(NamedExpression::Meta(Meta {
                key: MetaKey::Iifname,
            })),
            Operator::EQ,
            string(host_veth),
        ),
        matches(
            payload("ether", "saddr"),
            Operator::NEQ,
            string(format_mac(mac)),
        ),
        Statement::Drop(None),
    ]
}

/// What one attachment needs.
#[derive(Debug, Default)]
pub struct Rules<'a> {
    /// Addresses to masquerade (with their subnet).
    pub masquerade: Vec<IpNetwork>,
    /// Host veth and container MAC for the spoof check.
    pub spoof_check: Option<(&'a str, Vec<u8>)>,
}

/// The ADD transaction: the attachment's chains written from scratch.
pub fn add_batch(tag: &Tag<'_>, rules: &Rules<'_>) -> Nftables<'static> {
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
        spoof_chain(tag).replace(&mut batch, &comment, vec![spoof_rule(veth, mac)]);
    }
    batch.to_nftables()
}

/// The DEL transaction: succeeds whether or not the chains exist.
pub fn del_batch(tag: &Tag<'_>, masquerade: bool, spoof_check: bool) -> Nftables<'static> {
    let mut batch = Batch::new();
    if masquerade {
        masq_chain(tag).remove(&mut batch);
    }
    if spoof_check {
        spoof_chain(tag).remove(&mut batch);
    }
    batch.to_nftables()
}

/// Every rule in our two tables.
pub fn list() -> Result<Vec<cni_nft::Listed>, NftError> {
    let mut rules = cni_nft::list("inet", MASQ_TABLE)?;
    rules.extend(cni_nft::list("bridge", SPOOF_TABLE)?);
    Ok(rules)
}

/// Deletes whole chains of ours (GC), in one transaction.
pub fn delete_chains(chains: &[(NfFamily, String)]) -> Result<(), NftError> {
    let mut batch = Batch::new();
    for (family, name) in chains {
        let (table, hook) = if *family == NfFamily::Bridge {
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
    cni_nft::apply(
        &batch.to_nftables(),
        "failed to delete stale firewall chains",
    )
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
            spoof_check: Some(("veth0123abcd", vec![2, 0, 0, 0, 0, 1])),
        };
        let add = serde_json::to_string_pretty(&add_batch(&tag(), &rules)).unwrap();
        insta::assert_snapshot!("add_batch", add);
        let del = serde_json::to_string_pretty(&del_batch(&tag(), true, true)).unwrap();
        insta::assert_snapshot!("del_batch", del);
        assert!(del_batch(&tag(), false, false).objects.is_empty());
    }
}
