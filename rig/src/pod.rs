//! A pod: a container namespace attached through a chain, with the result the runtime caches.

use serde_json::Value;

use crate::chain::{Attachment, Chain};
use crate::netns::TestNetns;
use crate::node::Node;

#[derive(Debug)]
pub struct Pod {
    pub att: Attachment,
    pub ns: TestNetns,
    pub result: Value,
}

impl Pod {
    /// A new container on `node`, ADDed through `chain` (as `eth0`); panics with the failing
    /// plugin's output.
    pub fn add(node: &Node, chain: &Chain) -> Pod {
        let (id, ns) = node.container();
        let att = Attachment::new(&id, &ns.path_str(), "eth0");
        let result = chain
            .add(node, &att)
            .unwrap_or_else(|e| panic!("ADD failed at {}: {:?}", e.plugin, e.outcome));
        Pod { att, ns, result }
    }

    /// DEL through `chain` with the cached result; panics on failure.
    pub fn del(&self, node: &Node, chain: &Chain) {
        chain
            .del(node, &self.att, Some(&self.result))
            .unwrap_or_else(|e| panic!("DEL failed at {}: {:?}", e.plugin, e.outcome));
    }

    /// The pod's first address of a family, without its prefix.
    pub fn ip(&self, v4: bool) -> String {
        self.address(v4)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// The pod's first address of a family, with its prefix.
    pub fn address(&self, v4: bool) -> String {
        self.result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .find(|a| a.contains('.') == v4)
            .unwrap_or_else(|| {
                panic!(
                    "no {} address in {}",
                    if v4 { "IPv4" } else { "IPv6" },
                    self.result
                )
            })
            .to_owned()
    }
}
