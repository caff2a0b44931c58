//! The tests' face of `cni_runtime`'s chain runner: a [`Chain`] built from a conflist
//! `Value` that panics on a list it cannot run, and a [`ChainError`] carrying the failing
//! plugin's whole [`Output`], so a test can assert on its code and message. Plugins run in a
//! test node's namespace ([`Exec`] for [`Node`]).

use cni_common::Command;
use serde_json::Value;

pub use cni_runtime::{Attachment, Exec, ExecError, Output};

use crate::node::Node;

impl Exec for Node {
    fn exec(
        &self,
        plugin: &str,
        command: Command,
        att: Option<&Attachment>,
        stdin: &Value,
    ) -> Result<Output, ExecError> {
        Ok(self
            .plugin(plugin)
            .command(command.as_str())
            .config(stdin)
            .attachment(att)
            .run())
    }
}

/// Which plugin of the list failed, and how.
#[derive(Debug)]
pub struct ChainError {
    pub index: usize,
    pub plugin: String,
    pub outcome: Output,
}

impl From<cni_runtime::Error> for ChainError {
    /// A plugin's failure; any other error (a plugin that could not be run) fails the test.
    fn from(e: cni_runtime::Error) -> ChainError {
        match e {
            cni_runtime::Error::Plugin {
                index,
                plugin,
                failure,
                ..
            } => match failure.output() {
                Some(output) => ChainError {
                    index,
                    plugin,
                    outcome: output.clone(),
                },
                None => panic!("plugin {index} ({plugin}) did not run: {failure}"),
            },
            other => panic!("the chain did not run: {other}"),
        }
    }
}

/// A conflist run as a runtime runs it (see `cni_runtime::Chain`).
#[derive(Debug, Clone)]
pub struct Chain {
    list: Value,
    inner: cni_runtime::Chain,
}

impl Chain {
    /// `list` is a `.conflist` document: `cniVersion`, `name`, `plugins`.
    pub fn new(list: Value) -> Chain {
        let parsed = cni_runtime::NetworkConfigList::from_value(list.clone())
            .unwrap_or_else(|e| panic!("not a usable conflist ({e}): {list}"));
        Chain {
            list,
            inner: cni_runtime::Chain::new(parsed),
        }
    }

    /// Runtime-supplied capability arguments (`portMappings`, `ips`, `mac`, ...).
    pub fn with_capability_args(mut self, args: Value) -> Chain {
        let args = args.as_object().cloned().unwrap_or_default();
        self.inner = self.inner.with_capability_args(args);
        self
    }

    /// The conflist document.
    pub fn list(&self) -> &Value {
        &self.list
    }

    /// The request config for plugin `index`, built as libcni builds it.
    pub fn request_config(&self, index: usize, prev_result: Option<&Value>) -> Value {
        self.inner.request_config(index, prev_result).unwrap()
    }

    /// ADD through every plugin; returns the final result (what a runtime caches).
    pub fn add(&self, exec: &dyn Exec, att: &Attachment) -> Result<Value, ChainError> {
        Ok(self.inner.add(exec, att)?)
    }

    /// ADD through the first `count` plugins only (a runtime that stopped half-way).
    pub fn add_prefix(
        &self,
        exec: &dyn Exec,
        att: &Attachment,
        count: usize,
    ) -> Result<Value, ChainError> {
        Ok(self.inner.add_prefix(exec, att, count)?)
    }

    /// CHECK through every plugin with the cached result (nothing with `disableCheck`).
    pub fn check(
        &self,
        exec: &dyn Exec,
        att: &Attachment,
        cached: &Value,
    ) -> Result<(), ChainError> {
        Ok(self.inner.check(exec, att, cached)?)
    }

    /// DEL through every plugin in reverse; `cached` is passed as `prevResult` from 0.4.0 on.
    pub fn del(
        &self,
        exec: &dyn Exec,
        att: &Attachment,
        cached: Option<&Value>,
    ) -> Result<(), ChainError> {
        Ok(self.inner.del(exec, att, cached)?)
    }
}
