//! nftables building blocks shared by the plugins: rules built with the `nftables` crate's
//! JSON schema, run in-process by libnftables or by `nft -j` (see [`engine`]).
//!
//! The pattern: every attachment owns base chains in a table of ours, named from a hash of
//! (network, container ID, ifname) and holding rules commented with those three names. ADD
//! writes the chains from scratch in one transaction; DEL removes them by name in one
//! transaction that needs no listing and no prevResult (`add` the chain, a no-op when it
//! exists, then `flush` and `delete` it); CHECK and GC list the table.

use std::borrow::Cow;

use cni_common::CniError;
use cni_common::error::code;
use nftables::batch::Batch;
use nftables::expr::{Expression, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, FlushObject, NfCmd, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

pub use nftables;

pub mod engine;
use engine::RunError;

/// nft limits comments to 128 bytes.
pub const COMMENT_MAX: usize = 128;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NftError(pub String);

impl From<NftError> for CniError {
    fn from(e: NftError) -> Self {
        CniError::plugin(code::FIREWALL, e.0, "")
    }
}

/// The attachment rules belong to.
#[derive(Debug, Clone, Copy)]
pub struct Tag<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

/// FNV-1a 64: a name DEL can recompute from the names alone, whatever their lengths
/// (std's hasher is not promised to be stable).
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
    /// The attachment's chain name, `<prefix>-<16 hex digits>`.
    pub fn chain(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{:016x}",
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

/// Where a base chain hooks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    pub ty: NfChainType,
    pub hook: NfHook,
    pub priority: i32,
}

impl Hook {
    pub const NAT_PREROUTING: Hook = Hook {
        ty: NfChainType::NAT,
        hook: NfHook::Prerouting,
        priority: -100,
    };
    pub const NAT_OUTPUT: Hook = Hook {
        ty: NfChainType::NAT,
        hook: NfHook::Output,
        priority: -100,
    };
    pub const NAT_POSTROUTING: Hook = Hook {
        ty: NfChainType::NAT,
        hook: NfHook::Postrouting,
        priority: 100,
    };
    /// Before conntrack and DNAT (bridge family), like the Go plugin's spoof check.
    pub const BRIDGE_PREROUTING: Hook = Hook {
        ty: NfChainType::Filter,
        hook: NfHook::Prerouting,
        priority: -300,
    };
}

/// One base chain of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub family: NfFamily,
    pub table: &'static str,
    pub name: String,
    pub hook: Hook,
}

impl BaseChain {
    fn schema(&self) -> Chain<'static> {
        Chain {
            family: self.family,
            table: Cow::Borrowed(self.table),
            name: Cow::Owned(self.name.clone()),
            _type: Some(self.hook.ty),
            hook: Some(self.hook.hook),
            prio: Some(self.hook.priority),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }
    }

    fn table(&self) -> NfListObject<'static> {
        NfListObject::Table(Table {
            family: self.family,
            name: Cow::Borrowed(self.table),
            ..Table::default()
        })
    }

    /// Adds to `batch`: the chain (re)created empty, then `rules`, each with `comment`.
    pub fn replace(
        &self,
        batch: &mut Batch<'static>,
        comment: &str,
        rules: Vec<Vec<Statement<'static>>>,
    ) {
        batch.add(self.table());
        batch.add(NfListObject::Chain(self.schema()));
        batch.add_cmd(NfCmd::Flush(FlushObject::Chain(self.schema())));
        for expr in rules {
            batch.add(NfListObject::Rule(Rule {
                family: self.family,
                table: Cow::Borrowed(self.table),
                chain: Cow::Owned(self.name.clone()),
                expr: Cow::Owned(expr),
                comment: Some(Cow::Owned(comment.to_owned())),
                ..Rule::default()
            }));
        }
    }

    /// Adds to `batch`: the chain removed, whether or not it exists.
    pub fn remove(&self, batch: &mut Batch<'static>) {
        batch.add(self.table());
        batch.add(NfListObject::Chain(self.schema()));
        batch.add_cmd(NfCmd::Flush(FlushObject::Chain(self.schema())));
        batch.delete(NfListObject::Chain(Chain {
            family: self.family,
            table: Cow::Borrowed(self.table),
            name: Cow::Owned(self.name.clone()),
            ..Chain::default()
        }));
    }
}

pub fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

pub fn prefix(addr: String, len: u8) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(addr.into())),
        len: u32::from(len),
    }))
}

pub fn string(s: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(s.into()))
}

pub fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

/// Runs one transaction (see [`engine`]); an empty one runs nothing.
pub fn apply(batch: &Nftables<'_>, what: &str) -> Result<(), NftError> {
    if batch.objects.is_empty() {
        return Ok(());
    }
    match engine::apply_json(&to_json(batch)?) {
        Ok(()) => Ok(()),
        Err(RunError::Unavailable(detail) | RunError::Failed(detail)) => {
            Err(NftError(format!("{what}: {detail}")))
        }
    }
}

/// Like [`apply`] for DEL: without nftables installed no rule of ours can exist, so there is
/// nothing to remove.
pub fn apply_teardown(batch: &Nftables<'_>, plugin: &str) -> Result<(), NftError> {
    if batch.objects.is_empty() {
        return Ok(());
    }
    match engine::apply_json(&to_json(batch)?) {
        Err(RunError::Unavailable(detail)) => {
            eprintln!("{plugin}: {detail}: no firewall rules to remove");
            Ok(())
        }
        Err(RunError::Failed(detail)) => Err(NftError(format!(
            "failed to remove firewall rules: {detail}"
        ))),
        Ok(()) => Ok(()),
    }
}

fn to_json(batch: &Nftables<'_>) -> Result<String, NftError> {
    serde_json::to_string(batch).map_err(|e| NftError(format!("nft batch: {e}")))
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

/// Every rule of table `name` of `family` ("inet", "bridge", ...); an absent table (or no
/// `nft` at all) has none.
pub fn list(family: &str, name: &str) -> Result<Vec<Listed>, NftError> {
    // An absent table fails the listing: it holds nothing.
    let Ok(listed) = engine::list_json(&["list", "table", family, name]) else {
        return Ok(Vec::new());
    };
    parse_listing(name, &listed)
}

/// Reads `nft -j list` output as plain JSON, not as the crate's typed schema: we need four
/// fields of each rule, and deserializing the whole schema is about 200 KiB of code in
/// every binary.
fn parse_listing(name: &str, listed: &str) -> Result<Vec<Listed>, NftError> {
    let ruleset: serde_json::Value = serde_json::from_str(listed)
        .map_err(|e| NftError(format!("failed to list {name}: {e}")))?;
    let objects = ruleset
        .get("nftables")
        .and_then(serde_json::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(objects
        .iter()
        .filter_map(|obj| listed_rule(obj.get("rule")?))
        .collect())
}

fn listed_rule(rule: &serde_json::Value) -> Option<Listed> {
    let text = |key: &str| rule.get(key).and_then(serde_json::Value::as_str);
    Some(Listed {
        family: serde_json::from_value(rule.get("family")?.clone()).ok()?,
        chain: text("chain")?.to_owned(),
        comment: text("comment").unwrap_or_default().to_owned(),
        expr: rule.get("expr").map(|e| e.to_string()).unwrap_or_default(),
    })
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
    fn a_listing_yields_the_rules_with_family_chain_comment_and_statements() {
        // `nft -j list table inet t` (nftables 1.0.6), with a rule without a comment added.
        let listed = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"table": {"family": "inet", "name": "t", "handle": 1}},
            {"chain": {"family": "inet", "table": "t", "name": "c", "handle": 1}},
            {"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 2,
              "comment": "net: n, id: c1, if: eth0",
              "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                "right": "10.1.0.2"}}, {"masquerade": null}]}},
            {"rule": {"family": "bridge", "table": "t", "chain": "d", "handle": 3, "expr": []}}]}"#;
        let rules = parse_listing("t", listed).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].family, NfFamily::INet);
        assert_eq!(rules[0].chain, "c");
        assert_eq!(parse_comment(&rules[0].comment), Some(("n", "c1", "eth0")));
        assert!(rules[0].expr.contains("\"10.1.0.2\""));
        assert!(rules[0].expr.contains("masquerade"));
        assert_eq!(
            (rules[1].family, rules[1].comment.as_str()),
            (NfFamily::Bridge, "")
        );
        assert!(parse_listing("t", "not json").is_err());
        assert!(parse_listing("t", "{}").unwrap().is_empty());
    }

    #[test]
    fn chain_names_are_stable_and_distinct() {
        assert_eq!(tag().chain("cni"), tag().chain("cni"));
        assert_eq!(tag().chain("cni"), "cni-8470b6dd9a07596b");
        let other = Tag {
            ifname: "eth1",
            ..tag()
        };
        assert_ne!(tag().chain("cni"), other.chain("cni"));
        assert_ne!(fnv64(&["a", "bc"]), fnv64(&["ab", "c"]));
    }

    #[test]
    fn comments_round_trip_unless_truncated() {
        assert_eq!(tag().comment(), "net: cbr0, id: ctr1, if: eth0");
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
        assert_eq!(t.comment().len(), 128);
        assert_eq!(
            parse_comment(&t.comment()),
            None,
            "a truncated tag must never match"
        );
    }
}
