//! A network configuration list run the way libcni runs it: ADD in order with `prevResult`,
//! CHECK and DEL with the cached final result, DEL in reverse order.

use serde_json::{Map, Value, json};

use crate::node::Node;
use crate::plugin::Outcome;

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

    /// The request config for plugin `index`, built as libcni builds it.
    pub fn request_config(&self, index: usize, prev_result: Option<&Value>) -> Value {
        let mut conf = self.plugins()[index]
            .as_object()
            .cloned()
            .unwrap_or_default();
        conf.insert("name".into(), self.list["name"].clone());
        conf.insert("cniVersion".into(), self.list["cniVersion"].clone());
        let mut runtime = Map::new();
        if let Some(caps) = conf.get("capabilities").and_then(Value::as_object) {
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
        node: &Node,
        index: usize,
        command: &str,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Outcome {
        let plugin_type = self.plugins()[index]["type"].as_str().unwrap_or_default();
        node.plugin(plugin_type)
            .command(command)
            .container(&att.container_id, &att.netns)
            .env("CNI_IFNAME", &att.ifname)
            .config(&self.request_config(index, prev))
            .run()
    }

    fn fail(&self, index: usize, outcome: Outcome) -> ChainError {
        ChainError {
            index,
            plugin: self.plugins()[index]["type"]
                .as_str()
                .unwrap_or_default()
                .into(),
            outcome,
        }
    }

    /// ADD through every plugin; returns the final result (what a runtime caches).
    pub fn add(&self, node: &Node, att: &Attachment) -> Result<Value, ChainError> {
        let mut prev: Option<Value> = None;
        for index in 0..self.plugins().len() {
            let out = self.call(node, index, "ADD", att, prev.as_ref());
            if !out.success() {
                return Err(self.fail(index, out));
            }
            prev = Some(out.json());
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// CHECK through every plugin with the cached result.
    pub fn check(&self, node: &Node, att: &Attachment, cached: &Value) -> Result<(), ChainError> {
        for index in 0..self.plugins().len() {
            let out = self.call(node, index, "CHECK", att, Some(cached));
            if !out.success() {
                return Err(self.fail(index, out));
            }
        }
        Ok(())
    }

    /// DEL through every plugin in reverse; `cached` is passed as `prevResult` from 0.4.0 on.
    pub fn del(
        &self,
        node: &Node,
        att: &Attachment,
        cached: Option<&Value>,
    ) -> Result<(), ChainError> {
        let prev = cached
            .filter(|_| !matches!(self.version(), "" | "0.1.0" | "0.2.0" | "0.3.0" | "0.3.1"));
        for index in (0..self.plugins().len()).rev() {
            let out = self.call(node, index, "DEL", att, prev);
            if !out.success() {
                return Err(self.fail(index, out));
            }
        }
        Ok(())
    }
}
