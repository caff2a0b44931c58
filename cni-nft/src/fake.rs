//! An in-memory nf_tables for unit tests: transactions are applied to tables of chains of
//! rules, listings read them back as the kernel would list them, and a failure can be
//! scripted for the next call.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::firewall::{Firewall, Teardown};
use crate::kernel::as_listed;
use crate::{Batch, Command, Family, Listed, NftError};

/// The chains (family, table, chain) and their rules, plus every transaction applied.
#[derive(Debug, Default)]
pub struct FakeFirewall {
    chains: RefCell<BTreeMap<(Family, String, String), Vec<Listed>>>,
    applied: RefCell<Vec<String>>,
    fail_next: RefCell<Option<String>>,
    no_nftables: bool,
}

impl FakeFirewall {
    /// An empty ruleset.
    pub fn new() -> FakeFirewall {
        FakeFirewall::default()
    }

    /// A kernel without nf_tables: transactions fail as unavailable, listings are empty.
    pub fn without_nftables() -> FakeFirewall {
        FakeFirewall {
            no_nftables: true,
            ..FakeFirewall::default()
        }
    }

    /// The next transaction or listing fails with `detail`.
    pub fn fail_next(&self, detail: &str) {
        *self.fail_next.borrow_mut() = Some(detail.to_owned());
    }

    /// Every transaction applied so far, as `nft -f` text.
    pub fn applied(&self) -> Vec<String> {
        self.applied.borrow().clone()
    }

    /// The names of the chains that exist, sorted.
    pub fn chains(&self) -> Vec<String> {
        self.chains
            .borrow()
            .keys()
            .map(|(_, _, chain)| chain.clone())
            .collect()
    }

    /// How many rules the chain holds (0 when it does not exist).
    pub fn rules_in(&self, chain: &str) -> usize {
        self.chains
            .borrow()
            .iter()
            .filter(|((_, _, c), _)| c == chain)
            .map(|(_, rules)| rules.len())
            .sum()
    }

    fn failure(&self, what: impl Into<String>) -> Option<NftError> {
        let detail = self.fail_next.borrow_mut().take()?;
        Some(NftError {
            what: what.into(),
            command: None,
            source: std::io::Error::other(detail),
        })
    }

    fn unavailable(what: &str) -> NftError {
        NftError {
            what: what.to_owned(),
            command: None,
            source: std::io::Error::from_raw_os_error(nix::libc::EAFNOSUPPORT),
        }
    }

    fn run(&self, batch: &Batch) {
        // All or nothing, as the kernel: work on a copy, keep it whole.
        let mut chains = self.chains.borrow().clone();
        for command in &batch.commands {
            match command {
                Command::AddTable(..) => {}
                Command::AddChain(c) | Command::FlushChain(c) => {
                    let key = (c.family, c.table.to_owned(), c.name.clone());
                    let rules = chains.entry(key).or_default();
                    if matches!(command, Command::FlushChain(_)) {
                        rules.clear();
                    }
                }
                Command::AddRule(c, rule, comment) => {
                    let key = (c.family, c.table.to_owned(), c.name.clone());
                    chains
                        .entry(key)
                        .or_default()
                        .push(as_listed(c, rule, comment));
                }
                Command::DeleteChain(c) => {
                    chains.remove(&(c.family, c.table.to_owned(), c.name.clone()));
                }
            }
        }
        *self.chains.borrow_mut() = chains;
        self.applied.borrow_mut().push(batch.to_string());
    }
}

impl Firewall for FakeFirewall {
    fn apply(&self, batch: &Batch, what: &str) -> Result<(), NftError> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(e) = self.failure(what) {
            return Err(e);
        }
        if self.no_nftables {
            return Err(Self::unavailable(what));
        }
        self.run(batch);
        Ok(())
    }

    fn teardown(&self, batch: &Batch) -> Result<Teardown, NftError> {
        if let Some(e) = self.failure("failed to remove firewall rules") {
            return Err(e);
        }
        if self.no_nftables {
            return Ok(Teardown::NoNftables("nf_tables is not available".into()));
        }
        self.run(batch);
        Ok(Teardown::Done)
    }

    fn list(&self, family: Family, table: &str) -> Result<Vec<Listed>, NftError> {
        if let Some(e) = self.failure(format!("failed to list table {table}")) {
            return Err(e);
        }
        Ok(self
            .chains
            .borrow()
            .iter()
            .filter(|((f, t, _), _)| *f == family && t == table)
            .flat_map(|(_, rules)| rules.iter().cloned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, BaseChain, Dir, Hook, Match, Op, Rule, Tag, octets};

    fn chain() -> BaseChain {
        BaseChain {
            family: Family::Inet,
            table: "t",
            name: "c-1".into(),
            hook: Hook::NAT_POSTROUTING,
        }
    }

    fn masq(ip: &str) -> Rule {
        Rule::new(
            vec![Match::Addr {
                dir: Dir::Source,
                op: Op::Eq,
                net: ip.parse().unwrap(),
            }],
            Action::Masquerade,
        )
    }

    #[test]
    fn rules_are_listed_as_the_kernel_lists_them() {
        let fw = FakeFirewall::new();
        let tag = Tag {
            network: "n",
            container_id: "c",
            ifname: "eth0",
        };
        let mut batch = Batch::new();
        chain().replace(&mut batch, &tag.comment(), vec![masq("10.1.0.5/32")]);
        fw.apply(&batch, "add").unwrap();
        let listed = fw.list(Family::Inet, "t").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].chain, "c-1");
        assert_eq!(listed[0].comment, tag.comment());
        assert!(
            listed[0]
                .values
                .contains(&octets("10.1.0.5".parse().unwrap()))
        );
        // Replacing empties the chain first; removing deletes it.
        fw.apply(&batch, "again").unwrap();
        assert_eq!(fw.rules_in("c-1"), 1);
        let mut del = Batch::new();
        chain().remove(&mut del);
        assert_eq!(fw.teardown(&del).unwrap(), Teardown::Done);
        assert!(fw.chains().is_empty());
        assert_eq!(fw.applied().len(), 3);
    }

    #[test]
    fn failures_and_a_kernel_without_nftables() {
        let fw = FakeFirewall::new();
        let mut batch = Batch::new();
        chain().replace(&mut batch, "x", vec![masq("10.1.0.6/32")]);
        fw.fail_next("EPERM");
        assert_eq!(
            fw.apply(&batch, "add").unwrap_err().to_string(),
            "add: EPERM"
        );
        assert!(
            fw.chains().is_empty(),
            "a failed transaction leaves nothing"
        );
        let none = FakeFirewall::without_nftables();
        assert!(none.apply(&batch, "add").is_err());
        assert!(matches!(none.teardown(&batch), Ok(Teardown::NoNftables(_))));
        assert!(none.list(Family::Inet, "t").unwrap().is_empty());
    }
}
