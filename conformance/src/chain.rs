//! A network configuration list run the way libcni runs it: ADD in order with `prevResult`,
//! CHECK and DEL with the cached final result, DEL in reverse order, GC and STATUS from 1.1.0,
//! `disableCheck` / `disableGC` honoured. The same runner serves the tests (plugins run in a
//! test node's namespace) and `cnitool` (plugins run where cnitool runs).

use serde_json::{Map, Value, json};

use crate::node::Node;
use crate::plugin::Outcome;

/// Runs one plugin of a list: `plugin` is its `type`, `att` is `None` for GC and STATUS.
pub trait Exec {
    fn exec(&self, plugin: &str, command: &str, att: Option<&Attachment>, stdin: &Value)
    -> Outcome;
}

impl Exec for Node {
    fn exec(
        &self,
        plugin: &str,
        command: &str,
        att: Option<&Attachment>,
        stdin: &Value,
    ) -> Outcome {
        self.plugin(plugin)
            .command(command)
            .config(stdin)
            .attachment(att)
            .run()
    }
}

fn at_least(version: &str, min: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    !version.is_empty() && parse(version) >= parse(min)
}

/// libcni accepts JSON booleans or the strings "true"/"false".
fn flag(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// One attachment's identity: container ID, its netns path and the interface name.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
}

impl Attachment {
    pub fn new(container_id: &str, netns: &str, ifname: &str) -> Attachment {
        Attachment {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: ifname.into(),
        }
    }
}

/// Which plugin of the list failed, and how.
#[derive(Debug)]
pub struct ChainError {
    pub index: usize,
    pub plugin: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct Chain {
    list: Value,
    capability_args: Map<String, Value>,
}

impl Chain {
    /// `list` is a `.conflist` document: `cniVersion`, `name`, `plugins`.
    pub fn new(list: Value) -> Chain {
        assert!(
            list["plugins"].is_array(),
            "a conflist needs a plugins array"
        );
        Chain {
            list,
            capability_args: Map::new(),
        }
    }

    /// Runtime-supplied capability arguments (`portMappings`, `ips`, `mac`, ...).
    pub fn with_capability_args(mut self, args: Value) -> Chain {
        self.capability_args = args.as_object().cloned().unwrap_or_default();
        self
    }

    /// The conflist document.
    pub fn list(&self) -> &Value {
        &self.list
    }

    pub fn version(&self) -> &str {
        self.list["cniVersion"].as_str().unwrap_or("")
    }

    fn plugins(&self) -> &[Value] {
        self.list["plugins"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Plugin `index`'s type: libcni reads it through a Go struct, so in any case of `type`.
    fn plugin_type(&self, index: usize) -> &str {
        self.plugins()[index]
            .as_object()
            .and_then(|p| cni_common::gojson::get(p, "type"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The request config for plugin `index`, built as libcni builds it.
    pub fn request_config(&self, index: usize, prev_result: Option<&Value>) -> Value {
        let mut conf = self.plugins()[index]
            .as_object()
            .cloned()
            .unwrap_or_default();
        conf.insert("name".into(), self.list["name"].clone());
        conf.insert("cniVersion".into(), self.list["cniVersion"].clone());
        let mut runtime = Map::new();
        // libcni reads a plugin's `capabilities` through a Go struct: any case of the key.
        if let Some(caps) =
            cni_common::gojson::get(&conf, "capabilities").and_then(Value::as_object)
        {
            for (cap, enabled) in caps {
                if let (true, Some(v)) = (enabled == &json!(true), self.capability_args.get(cap)) {
                    runtime.insert(cap.clone(), v.clone());
                }
            }
        }
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        if let Some(prev) = prev_result {
            conf.insert("prevResult".into(), prev.clone());
        }
        Value::Object(conf)
    }

    fn call(
        &self,
        exec: &dyn Exec,
        index: usize,
        command: &str,
        att: Option<&Attachment>,
        prev: Option<&Value>,
    ) -> Outcome {
        let plugin_type = self.plugin_type(index);
        exec.exec(plugin_type, command, att, &self.request_config(index, prev))
    }

    fn fail(&self, index: usize, outcome: Outcome) -> ChainError {
        ChainError {
            index,
            plugin: self.plugin_type(index).into(),
            outcome,
        }
    }

    /// ADD through every plugin; returns the final result (what a runtime caches).
    pub fn add(&self, exec: &dyn Exec, att: &Attachment) -> Result<Value, ChainError> {
        self.add_prefix(exec, att, self.plugins().len())
    }

    /// ADD through the first `count` plugins only (a runtime that stopped half-way).
    pub fn add_prefix(
        &self,
        exec: &dyn Exec,
        att: &Attachment,
        count: usize,
    ) -> Result<Value, ChainError> {
        let mut prev: Option<Value> = None;
        for index in 0..count.min(self.plugins().len()) {
            let out = self.call(exec, index, "ADD", Some(att), prev.as_ref());
            if !out.success() {
                return Err(self.fail(index, out));
            }
            prev = Some(out.json());
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// CHECK through every plugin with the cached result (nothing with `disableCheck`).
    pub fn check(
        &self,
        exec: &dyn Exec,
        att: &Attachment,
        cached: &Value,
    ) -> Result<(), ChainError> {
        if flag(&self.list["disableCheck"]) {
            return Ok(());
        }
        for index in 0..self.plugins().len() {
            let out = self.call(exec, index, "CHECK", Some(att), Some(cached));
            if !out.success() {
                return Err(self.fail(index, out));
            }
        }
        Ok(())
    }

    /// DEL through every plugin in reverse; `cached` is passed as `prevResult` from 0.4.0 on.
    pub fn del(
        &self,
        exec: &dyn Exec,
        att: &Attachment,
        cached: Option<&Value>,
    ) -> Result<(), ChainError> {
        let prev = cached.filter(|_| at_least(self.version(), "0.4.0"));
        for index in (0..self.plugins().len()).rev() {
            let out = self.call(exec, index, "DEL", Some(att), prev);
            if !out.success() {
                return Err(self.fail(index, out));
            }
        }
        Ok(())
    }

    /// GC through every plugin with the attachments still in use (1.1.0 and later, unless
    /// `disableGC`). Every plugin runs; the first failure is returned.
    pub fn gc(&self, exec: &dyn Exec, valid: &[Attachment]) -> Result<(), ChainError> {
        if !at_least(self.version(), "1.1.0") || flag(&self.list["disableGC"]) {
            return Ok(());
        }
        let list: Vec<Value> = valid
            .iter()
            .map(|a| json!({"containerID": a.container_id, "ifname": a.ifname}))
            .collect();
        let mut first_error = None;
        for index in 0..self.plugins().len() {
            let mut conf = self.request_config(index, None);
            conf["cni.dev/valid-attachments"] = Value::Array(list.clone());
            let plugin_type = self.plugin_type(index);
            let out = exec.exec(plugin_type, "GC", None, &conf);
            if !out.success() && first_error.is_none() {
                first_error = Some(self.fail(index, out));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// STATUS of every plugin, stopping at the first that is not ready (1.1.0 and later).
    pub fn status(&self, exec: &dyn Exec) -> Result<(), ChainError> {
        if !at_least(self.version(), "1.1.0") {
            return Ok(());
        }
        for index in 0..self.plugins().len() {
            let out = self.call(exec, index, "STATUS", None, None);
            if !out.success() {
                return Err(self.fail(index, out));
            }
        }
        Ok(())
    }
}
