//! nftables building blocks shared by the plugins, written to the kernel as nf_tables
//! netlink messages: no `nft` process and no libnftables (docs/dependencies.md).
//!
//! The pattern: every attachment owns base chains in a table of ours, named from a hash of
//! (network, container ID, ifname) and holding rules commented with those three names. ADD
//! writes the chains from scratch in one transaction; DEL removes them by name in one
//! transaction that needs no listing and no prevResult (`add` the chain, a no-op when it
//! exists, then `flush` and `delete` it); CHECK and GC list the table.

use std::fmt;

use cni_common::CniError;
use cni_common::error::code;

mod encode;
#[cfg(any(test, feature = "fake"))]
mod fake;
mod firewall;
mod kernel;
pub mod rule;

#[cfg(any(test, feature = "fake"))]
pub use fake::FakeFirewall;
pub use firewall::{Firewall, Nftables, Teardown};

pub use rule::{Action, Dir, L4, Match, Op, Rule, octets};

/// nft limits comments to 128 bytes.
pub const COMMENT_MAX: usize = 128;

/// A transaction or listing the kernel refused (or could not be asked): what the plugin was
/// doing, the command that failed when one did, and the kernel's errno.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {}{source}", .command.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct NftError {
    /// What the plugin was doing, e.g. `failed to add port mappings`.
    pub what: String,
    /// The refused command as nft text, when the kernel named one.
    pub command: Option<String>,
    /// The kernel's answer.
    #[source]
    pub source: std::io::Error,
}

impl NftError {
    fn from_run(what: impl Into<String>, e: RunError) -> NftError {
        let (RunError::Unavailable(failure) | RunError::Failed(failure)) = e;
        NftError {
            what: what.into(),
            command: failure.command,
            source: failure.source,
        }
    }
}

impl From<NftError> for CniError {
    fn from(e: NftError) -> Self {
        CniError::plugin(code::FIREWALL, e.to_string(), "")
    }
}

/// The table families we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Inet,
    Bridge,
    /// `ip`: IPv4 only (flanneld's `flannel-ipv4` table); address matches need no family
    /// check.
    Ip,
    /// `ip6`: IPv6 only (flanneld's `flannel-ipv6` table).
    Ip6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Bridge => "bridge",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        }
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

impl<'a> Tag<'a> {
    /// The attachment a plugin invocation is about: `network` (the config's `name`), the
    /// container ID and the interface name of `inv`.
    pub fn of(network: &'a str, inv: &'a cni_common::Invocation) -> Tag<'a> {
        Tag {
            network,
            container_id: inv.container_id(),
            ifname: inv.ifname(),
        }
    }
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

/// An attachment of one network whose rules are listed but that the runtime no longer
/// knows (GC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleAttachment {
    /// The container ID its rules name.
    pub container_id: String,
    /// The interface name its rules name.
    pub ifname: String,
    /// The chains holding its rules, sorted and without repeats.
    pub chains: Vec<(Family, String)>,
}

/// The attachments of `network` that `listed` rules belong to and that are not in `valid`
/// (`cni.dev/valid-attachments`), sorted by container ID and interface: GC's "valid set →
/// listing → comments → sort/dedup" step. Rules whose comment was truncated (or is not ours)
/// are never stale.
pub fn stale_attachments(
    listed: &[Listed],
    network: &str,
    valid: &[cni_common::config::Attachment],
) -> Vec<StaleAttachment> {
    use std::collections::{BTreeMap, BTreeSet, HashSet};
    let valid: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let mut stale: BTreeMap<(&str, &str), BTreeSet<(Family, &str)>> = BTreeMap::new();
    for rule in listed {
        if let Some((net, id, ifname)) = parse_comment(&rule.comment)
            && net == network
            && !valid.contains(&(id, ifname))
        {
            stale
                .entry((id, ifname))
                .or_default()
                .insert((rule.family, rule.chain.as_str()));
        }
    }
    stale
        .into_iter()
        .map(|((id, ifname), chains)| StaleAttachment {
            container_id: id.to_owned(),
            ifname: ifname.to_owned(),
            chains: chains
                .into_iter()
                .map(|(family, chain)| (family, chain.to_owned()))
                .collect(),
        })
        .collect()
}

/// Where a base chain hooks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    pub nat: bool,
    pub point: HookPoint,
    pub priority: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    Prerouting,
    Output,
    Postrouting,
    /// Forwarded packets (filter chains).
    Forward,
}

impl HookPoint {
    fn name(self) -> &'static str {
        match self {
            HookPoint::Prerouting => "prerouting",
            HookPoint::Output => "output",
            HookPoint::Postrouting => "postrouting",
            HookPoint::Forward => "forward",
        }
    }
}

impl Hook {
    pub const NAT_PREROUTING: Hook = Hook {
        nat: true,
        point: HookPoint::Prerouting,
        priority: -100,
    };
    pub const NAT_OUTPUT: Hook = Hook {
        nat: true,
        point: HookPoint::Output,
        priority: -100,
    };
    pub const NAT_POSTROUTING: Hook = Hook {
        nat: true,
        point: HookPoint::Postrouting,
        priority: 100,
    };
    /// Before conntrack and DNAT (bridge family), like the Go plugin's spoof check.
    pub const BRIDGE_PREROUTING: Hook = Hook {
        nat: false,
        point: HookPoint::Prerouting,
        priority: -300,
    };
    /// A filter chain on forwarded packets at priority `filter` (0), like flanneld's
    /// `forward` chain.
    pub const FILTER_FORWARD: Hook = Hook {
        nat: false,
        point: HookPoint::Forward,
        priority: 0,
    };

    fn chain_type(self) -> &'static str {
        if self.nat { "nat" } else { "filter" }
    }
}

/// One base chain of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub family: Family,
    pub table: &'static str,
    pub name: String,
    pub hook: Hook,
}

impl BaseChain {
    /// Adds to `batch`: the chain (re)created empty, then `rules`, each with `comment`.
    pub fn replace(&self, batch: &mut Batch, comment: &str, rules: Vec<Rule>) {
        self.empty(batch);
        for rule in rules {
            batch.push(Command::AddRule(self.clone(), rule, comment.to_owned()));
        }
    }

    /// Adds to `batch`: the chain removed, whether or not it exists.
    pub fn remove(&self, batch: &mut Batch) {
        self.empty(batch);
        batch.push(Command::DeleteChain(self.clone()));
    }

    /// The table and chain made to exist (a no-op when they do), then the chain emptied.
    fn empty(&self, batch: &mut Batch) {
        batch.push(Command::AddTable(self.family, self.table));
        batch.push(Command::AddChain(self.clone()));
        batch.push(Command::FlushChain(self.clone()));
    }
}

/// One step of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    AddTable(Family, &'static str),
    AddChain(BaseChain),
    FlushChain(BaseChain),
    AddRule(BaseChain, Rule, String),
    DeleteChain(BaseChain),
}

/// One transaction: applied whole or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub(crate) commands: Vec<Command>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    fn push(&mut self, c: Command) {
        self.commands.push(c);
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |c: &BaseChain| format!("{} {} {}", c.family.name(), c.table, c.name);
        match self {
            Command::AddTable(family, table) => write!(f, "add table {} {table}", family.name()),
            Command::AddChain(c) => write!(
                f,
                "add chain {} {{ type {} hook {} priority {}; policy accept; }}",
                at(c),
                c.hook.chain_type(),
                c.hook.point.name(),
                c.hook.priority
            ),
            Command::FlushChain(c) => write!(f, "flush chain {}", at(c)),
            Command::AddRule(c, rule, comment) => {
                write!(f, "add rule {} {rule} comment \"{comment}\"", at(c))
            }
            Command::DeleteChain(c) => write!(f, "delete chain {}", at(c)),
        }
    }
}

/// The transaction as an `nft -f` script, one command per line.
impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.commands {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}

/// The kernel's refusal: the command it named, if any, and the errno.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) command: Option<String>,
    pub(crate) source: std::io::Error,
}

/// Why a transaction or listing did not happen.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The kernel has no nf_tables (or not the parts we use): no rules of ours can exist.
    Unavailable(Failure),
    /// The kernel refused it.
    Failed(Failure),
}

/// Runs one transaction in the calling thread's network namespace; an empty one runs
/// nothing.
pub fn apply(batch: &Batch, what: &str) -> Result<(), NftError> {
    if batch.is_empty() {
        return Ok(());
    }
    match kernel::commit(batch) {
        Ok(()) => Ok(()),
        Err(e) => Err(NftError::from_run(what, e)),
    }
}

/// Like [`apply`] for DEL: where the kernel lacks nf_tables, no rule of ours can exist, so
/// there is nothing to remove; the caller decides whether to say so.
pub fn teardown(batch: &Batch) -> Result<Teardown, NftError> {
    if batch.is_empty() {
        return Ok(Teardown::Done);
    }
    match kernel::commit(batch) {
        Err(RunError::Unavailable(f)) => Ok(Teardown::NoNftables(match f.command {
            Some(c) => format!("{c}: {}", f.source),
            None => f.source.to_string(),
        })),
        Err(e) => Err(NftError::from_run("failed to remove firewall rules", e)),
        Ok(()) => Ok(Teardown::Done),
    }
}

/// [`teardown`], saying on stderr when there was no nf_tables to remove rules from.
pub fn apply_teardown(batch: &Batch, plugin: &str) -> Result<(), NftError> {
    if let Teardown::NoNftables(detail) = teardown(batch)? {
        eprintln!("{plugin}: {detail}: no firewall rules to remove");
    }
    Ok(())
}

/// One rule of ours as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub family: Family,
    pub chain: String,
    pub comment: String,
    /// The values the rule compares with or loads (addresses, ports, names), for CHECK.
    pub values: Vec<Vec<u8>>,
}

/// Every rule of table `table` of `family`; an absent table (or no nf_tables) has none.
pub fn list(family: Family, table: &str) -> Result<Vec<Listed>, NftError> {
    match kernel::list_rules(family, table) {
        Ok(rules) => Ok(rules),
        Err(RunError::Unavailable(_)) => Ok(Vec::new()),
        Err(e) => Err(NftError::from_run(
            format!("failed to list table {table}"),
            e,
        )),
    }
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

    #[test]
    fn stale_attachments_of_one_network() {
        let rule = |family, network: &str, id: &str| {
            let t = Tag {
                network,
                container_id: id,
                ifname: "eth0",
            };
            Listed {
                family,
                chain: t.chain("cni"),
                comment: t.comment(),
                values: Vec::new(),
            }
        };
        let listed = [
            rule(Family::Inet, "n", "b"),
            rule(Family::Inet, "n", "b"),
            rule(Family::Bridge, "n", "b"),
            rule(Family::Inet, "n", "a"),
            rule(Family::Inet, "n", "keep"),
            rule(Family::Inet, "other", "c"),
            Listed {
                family: Family::Inet,
                chain: "x".into(),
                comment: "not ours".into(),
                values: Vec::new(),
            },
        ];
        let valid = [cni_common::config::Attachment {
            container_id: "keep".into(),
            ifname: "eth0".into(),
        }];
        let stale = stale_attachments(&listed, "n", &valid);
        let ids: Vec<&str> = stale.iter().map(|s| s.container_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let b = &stale[1];
        assert_eq!(b.ifname, "eth0");
        assert_eq!(
            b.chains,
            [
                (Family::Inet, listed[0].chain.clone()),
                (Family::Bridge, listed[0].chain.clone())
            ]
        );
    }
}
