//! The runtime side of CNI, doing libcni's job: find a network's config list, run its plugins
//! as a chain (ADD in order with `prevResult`, CHECK and DEL with the cached result, DEL in
//! reverse, GC and STATUS from 1.1.0), turn the runtime's capability arguments into each
//! plugin's `runtimeConfig`, and keep the results in libcni's cache layout.
//!
//! How a plugin is run is the [`Exec`] seam: [`HostExec`] forks and execs the plugin found on
//! `CNI_PATH` (what `cnitool` uses); the conformance rig runs plugins inside a test node's
//! namespace; unit tests use a fake that records calls and answers with canned outputs.
//!
//! Versions and commands are `cni_common`'s [`Version`](cni_common::Version) and
//! [`Command`](cni_common::Command); nothing here panics, and every failure is an [`Error`]
//! that keeps its source (the I/O error and its path, or the failing plugin's index, type and
//! CNI error).

#![warn(missing_docs)]

pub mod cache;
pub mod chain;
pub mod conflist;
pub mod error;
pub mod exec;
pub mod host_exec;

pub use cache::Cache;
pub use chain::Chain;
pub use conflist::{NetworkConfigList, PluginConfig};
pub use error::{ConfigError, Error, PluginFailure};
pub use exec::{Attachment, Exec, ExecError, Output};
pub use host_exec::HostExec;
