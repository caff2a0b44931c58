//! The seam between the plugins' firewall logic and the kernel: a transaction, a teardown, a
//! listing. [`Nftables`] is the kernel; `FakeFirewall` (feature `fake`) keeps the rules in
//! memory for unit tests.

use crate::{Batch, Family, Listed, NftError};

/// What a teardown found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Teardown {
    /// The transaction ran: the chains are gone (or never were).
    Done,
    /// The kernel has no nf_tables (or not the parts our rules use): no rule of ours can
    /// exist, so nothing was removed. The text says what was missing.
    NoNftables(String),
}

/// Where nf_tables transactions and listings go.
pub trait Firewall {
    /// Runs one transaction, all or nothing; an empty one runs nothing.
    fn apply(&self, batch: &Batch, what: &str) -> Result<(), NftError>;
    /// Runs a transaction that removes chains, for DEL: a kernel without nf_tables is not
    /// an error there.
    fn teardown(&self, batch: &Batch) -> Result<Teardown, NftError>;
    /// Every rule of table `table` of `family`; an absent table (or no nf_tables) has none.
    fn list(&self, family: Family, table: &str) -> Result<Vec<Listed>, NftError>;
}

/// nf_tables in the calling thread's network namespace, over netlink.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nftables;

impl Firewall for Nftables {
    fn apply(&self, batch: &Batch, what: &str) -> Result<(), NftError> {
        crate::apply(batch, what)
    }

    fn teardown(&self, batch: &Batch) -> Result<Teardown, NftError> {
        crate::teardown(batch)
    }

    fn list(&self, family: Family, table: &str) -> Result<Vec<Listed>, NftError> {
        crate::list(family, table)
    }
}
