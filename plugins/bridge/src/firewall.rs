//! Masquerade and MAC spoof-check rules in nftables, in tables of our own.
//!
//! Every attachment gets its own base chain, named from a hash of (network, container ID,
//! ifname), in `inet cni_rs_masquerade` (nat postrouting) and `bridge cni_rs_macspoofchk`
//! (filter prerouting). Each rule carries a comment naming the network, container and ifname.
//! Because the chain name is derived, DEL removes an attachment's rules in one transaction
//! without listing anything and without prevResult: `add` the chain (a no-op if it exists),
//! `flush` it, `delete` it. ADD is one transaction too.

use std::borrow::Cow;

use ipnetwork::IpNetwork;
use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, FlushObject, NfCmd, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::config::format_mac;
use crate::error::BridgeError;

pub const MASQ_TABLE: &str = "cni_rs_masquerade";
pub const SPOOF_TABLE: &str = "cni_rs_macspoofchk";
/// nft's srcnat priority.
const SRCNAT: i32 = 100;
/// Before conntrack and DNAT, as the Go plugin's spoof check.
const SPOOF_PRIORITY: i32 = -300;
/// nft limits comments to 128 bytes.
const COMMENT_MAX: usize = 128;

/// The attachment rules belong to.
#[derive(Debug, Clone, Copy)]
pub struct Tag<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

/// FNV-1a 64: a stable chain name whatever the lengths of the names hashed.
fn fnv64(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

impl Tag<'_> {
    pub fn chain(&self) -> String {
        format!(
            "cni-{:016x}",
            fnv64(&[self.network, self.container_id, self.ifname])
        )
    }

    pub fn comment(&self) -> String {
        let mut c = format!(
            "net: {}, id: {}, if: {}",
            self.network, self.container_id, self.ifname
        );
        if c.len() > COMMENT_MAX {
            let mut end = COMMENT_MAX;
            while !c.is_char_boundary(end) {
                end -= 1;
            }
            c.truncate(end);
        }
        c
    }
}

fn table(family: NfFamily, name: &str) -> NfListObject<'static> {
    NfListObject::Table(Table {
        family,
        name: Cow::Owned(name.to_owned()),
        ..Table::default()
    })
}

fn base_chain(family: NfFamily, table: &str, name: &str) -> Chain<'static> {
    let (ty, hook, prio) = match family {
        NfFamily::Bridge => (NfChainType::Filter, NfHook::Prerouting, SPOOF_PRIORITY),
        _ => (NfChainType::NAT, NfHook::Postrouting, SRCNAT),
    };
    Chain {
        family,
        table: Cow::Owned(table.to_owned()),
        name: Cow::Owned(name.to_owned()),
        _type: Some(ty),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn prefix(addr: String, len: u8) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(addr.into())),
        len: u32::from(len),
    }))
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
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
            Expression::String(net.ip().to_string().into()),
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
            Expression::String(host_veth.to_owned().into()),
        ),
        matches(
            payload("ether", "saddr"),
            Operator::NEQ,
            Expression::String(format_mac(mac).into()),
        ),
        Statement::Drop(None),
    ]
}

fn rule(
    family: NfFamily,
    table: &str,
    chain: &str,
    comment: &str,
    expr: Vec<Statement<'static>>,
) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family,
        table: Cow::Owned(table.to_owned()),
        chain: Cow::Owned(chain.to_owned()),
        expr: Cow::Owned(expr),
        comment: Some(Cow::Owned(comment.to_owned())),
        ..Rule::default()
    })
}

/// What one attachment needs.
#[derive(Debug, Default)]
pub struct Rules<'a> {
    /// Addresses to masquerade (with their subnet).
    pub masquerade: Vec<IpNetwork>,
    /// Host veth and container MAC for the spoof check.
    pub spoof_check: Option<(&'a str, Vec<u8>)>,
}

/// The ADD transaction: the attachment's chains (re)written from scratch.
pub fn add_batch(tag: &Tag<'_>, rules: &Rules<'_>) -> Nftables<'static> {
    let mut batch = Batch::new();
    let chain = tag.chain();
    let comment = tag.comment();
    if !rules.masquerade.is_empty() {
        batch.add(table(NfFamily::INet, MASQ_TABLE));
        let c = base_chain(NfFamily::INet, MASQ_TABLE, &chain);
        batch.add(NfListObject::Chain(c.clone()));
        batch.add_cmd(NfCmd::Flush(FlushObject::Chain(c)));
        for net in &rules.masquerade {
            batch.add(rule(
                NfFamily::INet,
                MASQ_TABLE,
                &chain,
                &comment,
                masquerade_rule(*net),
            ));
        }
    }
    if let Some((veth, mac)) = &rules.spoof_check {
        batch.add(table(NfFamily::Bridge, SPOOF_TABLE));
        let c = base_chain(NfFamily::Bridge, SPOOF_TABLE, &chain);
        batch.add(NfListObject::Chain(c.clone()));
        batch.add_cmd(NfCmd::Flush(FlushObject::Chain(c)));
        batch.add(rule(
            NfFamily::Bridge,
            SPOOF_TABLE,
            &chain,
            &comment,
            spoof_rule(veth, mac),
        ));
    }
    batch.to_nftables()
}

/// The DEL transaction: succeeds whether or not the chains exist.
pub fn del_batch(tag: &Tag<'_>, masquerade: bool, spoof_check: bool) -> Nftables<'static> {
    let mut batch = Batch::new();
    let chain = tag.chain();
    for (wanted, family, name) in [
        (masquerade, NfFamily::INet, MASQ_TABLE),
        (spoof_check, NfFamily::Bridge, SPOOF_TABLE),
    ] {
        if wanted {
            batch.add(table(family, name));
            let c = base_chain(family, name, &chain);
            batch.add(NfListObject::Chain(c.clone()));
            batch.add_cmd(NfCmd::Flush(FlushObject::Chain(c.clone())));
            batch.delete(NfListObject::Chain(Chain {
                family,
                table: Cow::Owned(name.to_owned()),
                name: Cow::Owned(chain.clone()),
                ..Chain::default()
            }));
        }
    }
    batch.to_nftables()
}

/// Runs one transaction through `nft`.
pub fn apply(batch: &Nftables<'_>, what: &str) -> Result<(), BridgeError> {
    if batch.objects.is_empty() {
        return Ok(());
    }
    nftables::helper::apply_ruleset(batch).map_err(|e| {
        let detail = match &e {
            nftables::helper::NftablesError::NftFailed { stderr, .. } => stderr.trim().to_owned(),
            other => other.to_string(),
        };
        BridgeError::Firewall(format!("{what}: {detail}"))
    })
}

/// Like [`apply`] for DEL: without `nft` installed no rule of ours can exist, so there is
/// nothing to remove.
pub fn apply_teardown(batch: &Nftables<'_>) -> Result<(), BridgeError> {
    if batch.objects.is_empty() {
        return Ok(());
    }
    match nftables::helper::apply_ruleset(batch) {
        Err(nftables::helper::NftablesError::NftExecution { inner, .. }) => {
            eprintln!("bridge: nft not available ({inner}): no firewall rules to remove");
            Ok(())
        }
        Err(e) => Err(BridgeError::Firewall(format!(
            "failed to remove firewall rules: {e}"
        ))),
        Ok(()) => Ok(()),
    }
}

/// One rule of ours as `nft` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub family: NfFamily,
    pub chain: String,
    pub comment: String,
    /// The rule's statements as JSON, for CHECK.
    pub expr: String,
}

/// Every rule in our tables (an absent table has none).
pub fn list() -> Result<Vec<Listed>, BridgeError> {
    let mut out = Vec::new();
    for (family, name) in [("inet", MASQ_TABLE), ("bridge", SPOOF_TABLE)] {
        let listed = nftables::helper::get_current_ruleset_with_args(
            None::<&str>,
            ["list", "table", family, name],
        );
        let ruleset = match listed {
            Ok(r) => r,
            // No such table (or no nft at all): nothing of ours there.
            Err(nftables::helper::NftablesError::NftFailed { .. })
            | Err(nftables::helper::NftablesError::NftExecution { .. }) => continue,
            Err(e) => return Err(BridgeError::Firewall(format!("failed to list {name}: {e}"))),
        };
        for obj in ruleset.objects.iter() {
            if let nftables::schema::NfObject::ListObject(NfListObject::Rule(r)) = obj {
                out.push(Listed {
                    family: r.family,
                    chain: r.chain.to_string(),
                    comment: r.comment.as_deref().unwrap_or_default().to_owned(),
                    expr: serde_json::to_string(&r.expr).unwrap_or_default(),
                });
            }
        }
    }
    Ok(out)
}

/// The (network, container ID, ifname) a rule comment names, unless it was truncated.
pub fn parse_comment(comment: &str) -> Option<(&str, &str, &str)> {
    if comment.len() >= COMMENT_MAX {
        return None;
    }
    let rest = comment.strip_prefix("net: ")?;
    let (network, rest) = rest.split_once(", id: ")?;
    let (id, ifname) = rest.rsplit_once(", if: ")?;
    Some((network, id, ifname))
}

/// Deletes whole chains of ours (GC), in one transaction.
pub fn delete_chains(chains: &[(NfFamily, String)]) -> Result<(), BridgeError> {
    let mut batch = Batch::new();
    for (family, chain) in chains {
        let table = if *family == NfFamily::Bridge {
            SPOOF_TABLE
        } else {
            MASQ_TABLE
        };
        let c = base_chain(*family, table, chain);
        batch.add_cmd(NfCmd::Flush(FlushObject::Chain(c)));
        batch.delete(NfListObject::Chain(Chain {
            family: *family,
            table: Cow::Owned(table.to_owned()),
            name: Cow::Owned(chain.clone()),
            ..Chain::default()
        }));
    }
    apply(
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
    fn chain_names_are_stable_and_distinct() {
        assert_eq!(tag().chain(), tag().chain());
        let other = Tag {
            ifname: "eth1",
            ..tag()
        };
        assert_ne!(tag().chain(), other.chain());
        assert_eq!(tag().chain().len(), 20);
        // "a\0bc" vs "ab\0c": separators keep different splits apart.
        assert_ne!(fnv64(&["a", "bc"]), fnv64(&["ab", "c"]));
    }

    #[test]
    fn comments_are_truncated_to_nft_limit() {
        let long = "x".repeat(300);
        let t = Tag {
            container_id: &long,
            ..tag()
        };
        assert_eq!(t.comment().len(), 128);
        assert_eq!(tag().comment(), "net: cbr0, id: ctr1, if: eth0");
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

    #[test]
    fn comments_round_trip() {
        assert_eq!(
            parse_comment(&tag().comment()),
            Some(("cbr0", "ctr1", "eth0"))
        );
        assert_eq!(parse_comment("something else"), None);
        let long = "x".repeat(300);
        let t = Tag {
            container_id: &long,
            ..tag()
        };
        assert_eq!(
            parse_comment(&t.comment()),
            None,
            "a truncated tag must never match"
        );
    }
}
