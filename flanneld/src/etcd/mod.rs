//! The etcd wing: leases in etcd in Go flanneld's data model (`pkg/subnet/etcd`), behind
//! [`crate::manager::SubnetManager`]. [`LeaseManager`] acquires and renews the node's
//! subnet over any [`store::Store`] ([`EtcdStore`] on a real etcd, an in-memory fake in unit
//! tests); [`allocate`] picks a free subnet; the lease watch lists, watches and re-lists.

pub mod allocate;
mod client;
mod keys;
mod manager;
pub mod store;
mod watch;

pub use client::{EtcdOptions, EtcdStore};
pub use keys::Keys;
pub use manager::{DEFAULT_PREFIX, LeaseError, LeaseManager, RACE_RETRIES, SUBNET_TTL};
