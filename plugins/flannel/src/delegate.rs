//! The delegate plugin (bridge, by default) as flannel's logic sees it: found, then run with
//! a command and a config. [`ExecDelegate`] runs the real one from `CNI_PATH`; the unit tests
//! use a fake.

use cni_common::env::Environment;
use cni_common::{CniError, CniResult, Command, Version, delegate};

pub trait Delegate {
    /// Checks that plugin `kind` can be run, before flannel saves anything for it.
    fn find(&self, kind: &str, env: &Environment) -> Result<(), CniError>;

    /// Runs the delegate's ADD with `config`; its result decoded in `version`.
    fn add(
        &self,
        kind: &str,
        env: &Environment,
        config: &[u8],
        version: Version,
    ) -> Result<CniResult, CniError>;

    /// Runs the delegate's DEL, CHECK, STATUS or GC with `config`; its output is not used.
    fn exec(
        &self,
        kind: &str,
        command: Command,
        env: &Environment,
        config: &[u8],
    ) -> Result<(), CniError>;
}

/// The plugin binary of that name in `CNI_PATH`, run as a runtime runs it
/// ([`cni_common::delegate`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecDelegate;

impl Delegate for ExecDelegate {
    fn find(&self, kind: &str, env: &Environment) -> Result<(), CniError> {
        delegate::find(kind, &env.path).map(drop)
    }

    fn add(
        &self,
        kind: &str,
        env: &Environment,
        config: &[u8],
        version: Version,
    ) -> Result<CniResult, CniError> {
        delegate::add(kind, env, config, version)
    }

    fn exec(
        &self,
        kind: &str,
        command: Command,
        env: &Environment,
        config: &[u8],
    ) -> Result<(), CniError> {
        delegate::exec(kind, command, env, config).map(drop)
    }
}
