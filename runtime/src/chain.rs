//! A network configuration list run the way libcni runs it: ADD in order with `prevResult`,
//! CHECK and DEL with the cached final result, DEL in reverse order, GC and STATUS from
//! 1.1.0, `disableCheck` / `disableGC` honoured, and the runtime's capability arguments
//! handed to the plugins that enable them as `runtimeConfig`.

use cni_common::{Command, Version};
use serde_json::{Map, Value};

use crate::conflist::{NetworkConfigList, PluginConfig};
use crate::error::{Error, PluginFailure};
use crate::exec::{Attachment, Exec, Output};

/// The key of GC's list of attachments still in use.
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

/// A network list with the runtime's capability arguments, ready to run through an [`Exec`].
#[derive(Debug, Clone)]
pub struct Chain {
    list: NetworkConfigList,
    capability_args: Map<String, Value>,
}

impl Chain {
    /// A chain over `list`, without capability arguments.
    pub fn new(list: NetworkConfigList) -> Chain {
        Chain {
            list,
            capability_args: Map::new(),
        }
    }

    /// Runtime-supplied capability arguments (`portMappings`, `ips`, `mac`, ...): each plugin
    /// gets, as `runtimeConfig`, those whose capability it enables.
    pub fn with_capability_args(mut self, args: Map<String, Value>) -> Chain {
        self.capability_args = args;
        self
    }

    /// The network list.
    pub fn list(&self) -> &NetworkConfigList {
        &self.list
    }

    /// The capability arguments.
    pub fn capability_args(&self) -> &Map<String, Value> {
        &self.capability_args
    }

    /// The request config for plugin `index`, built as libcni builds it: the plugin's object
    /// with the list's `name` and `cniVersion`, `runtimeConfig` from the capability
    /// arguments it enables, and `prevResult` when given.
    pub fn request_config(
        &self,
        index: usize,
        prev_result: Option<&Value>,
    ) -> Result<Value, Error> {
        let plugin = self
            .list
            .plugins()
            .get(index)
            .ok_or(Error::NoSuchPlugin { index })?;
        Ok(self.config_for(plugin, prev_result))
    }

    fn config_for(&self, plugin: &PluginConfig, prev_result: Option<&Value>) -> Value {
        let mut conf = plugin.config().clone();
        conf.insert("name".into(), Value::from(self.list.name()));
        conf.insert(
            "cniVersion".into(),
            Value::from(self.list.version().as_str()),
        );
        let runtime: Map<String, Value> = plugin
            .capabilities()
            .iter()
            .filter_map(|cap| Some((cap.clone(), self.capability_args.get(cap)?.clone())))
            .collect();
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        if let Some(prev) = prev_result {
            conf.insert("prevResult".into(), prev.clone());
        }
        Value::Object(conf)
    }

    /// Runs plugin `index` with `stdin`; an exit status other than 0 is its failure.
    fn run(
        &self,
        exec: &dyn Exec,
        (index, plugin): (usize, &PluginConfig),
        command: Command,
        att: Option<&Attachment>,
        stdin: &Value,
    ) -> Result<Output, Error> {
        let fail = |failure| Error::Plugin {
            index,
            plugin: plugin.plugin_type().to_owned(),
            command,
            failure: Box::new(failure),
        };
        let out = exec
            .exec(plugin.plugin_type(), command, att, stdin)
            .map_err(|e| fail(e.into()))?;
        if out.success() {
            Ok(out)
        } else {
            Err(fail(PluginFailure::from_output(out)))
        }
    }

    /// ADD through every plugin; returns the final result (what a runtime caches).
    pub fn add(&self, exec: &dyn Exec, att: &Attachment) -> Result<Value, Error> {
        self.add_prefix(exec, att, usize::MAX)
    }

    /// ADD through the first `count` plugins only (a runtime that stopped half-way); the
    /// result of the last one that ran (`null` when none did).
    pub fn add_prefix(
        &self,
        exec: &dyn Exec,
        att: &Attachment,
        count: usize,
    ) -> Result<Value, Error> {
        let mut prev: Option<Value> = None;
        for (index, plugin) in self.list.plugins().iter().enumerate().take(count) {
            let conf = self.config_for(plugin, prev.as_ref());
            let out = self.run(exec, (index, plugin), Command::Add, Some(att), &conf)?;
            match serde_json::from_str(&out.stdout) {
                Ok(result) => prev = Some(result),
                Err(source) => {
                    return Err(Error::Plugin {
                        index,
                        plugin: plugin.plugin_type().to_owned(),
                        command: Command::Add,
                        failure: Box::new(PluginFailure::BadResult {
                            output: out,
                            source,
                        }),
                    });
                }
            }
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// Refuses CHECK for a list older than 0.4.0, as libcni does.
    pub fn ensure_check_supported(&self) -> Result<(), Error> {
        let version = self.list.version();
        if version.allows_check() {
            Ok(())
        } else {
            Err(Error::Unsupported {
                command: Command::Check,
                version,
            })
        }
    }

    /// CHECK through every plugin with the cached result; nothing with `disableCheck`, an
    /// error before 0.4.0.
    pub fn check(&self, exec: &dyn Exec, att: &Attachment, cached: &Value) -> Result<(), Error> {
        self.ensure_check_supported()?;
        if self.list.disable_check() {
            return Ok(());
        }
        for (index, plugin) in self.list.plugins().iter().enumerate() {
            let conf = self.config_for(plugin, Some(cached));
            self.run(exec, (index, plugin), Command::Check, Some(att), &conf)?;
        }
        Ok(())
    }

    /// DEL through every plugin in reverse, stopping at the first failure; `cached` is
    /// passed as `prevResult` from 0.4.0 on.
    pub fn del(
        &self,
        exec: &dyn Exec,
        att: &Attachment,
        cached: Option<&Value>,
    ) -> Result<(), Error> {
        let prev = cached.filter(|_| self.list.version() >= Version::V0_4_0);
        for (index, plugin) in self.list.plugins().iter().enumerate().rev() {
            let conf = self.config_for(plugin, prev);
            self.run(exec, (index, plugin), Command::Del, Some(att), &conf)?;
        }
        Ok(())
    }

    /// GC through every plugin with the attachments still in use (1.1.0 and later, unless
    /// `disableGC`). Every plugin runs; the first failure is returned.
    pub fn gc(&self, exec: &dyn Exec, valid: &[Attachment]) -> Result<(), Error> {
        if !self.list.version().allows_gc_and_status() || self.list.disable_gc() {
            return Ok(());
        }
        let list: Vec<Value> = valid
            .iter()
            .map(|a| serde_json::json!({"containerID": a.container_id, "ifname": a.ifname}))
            .collect();
        let mut first_error = None;
        for (index, plugin) in self.list.plugins().iter().enumerate() {
            let mut conf = self.config_for(plugin, None);
            if let Value::Object(conf) = &mut conf {
                conf.insert(VALID_ATTACHMENTS.into(), Value::Array(list.clone()));
            }
            if let Err(e) = self.run(exec, (index, plugin), Command::Gc, None, &conf) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// STATUS of every plugin, stopping at the first that is not ready (1.1.0 and later).
    pub fn status(&self, exec: &dyn Exec) -> Result<(), Error> {
        if !self.list.version().allows_gc_and_status() {
            return Ok(());
        }
        for (index, plugin) in self.list.plugins().iter().enumerate() {
            let conf = self.config_for(plugin, None);
            self.run(exec, (index, plugin), Command::Status, None, &conf)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
