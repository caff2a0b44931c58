//! kube-flannel's network on a test node: its conflist (from testdata) with every state path
//! moved into the node's temp dir, and the node's subnet.env.

use std::fs;

use serde_json::{Value, json};

use crate::node::Node;

pub const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/flannel");

pub fn testdata(name: &str) -> String {
    fs::read_to_string(format!("{TESTDATA}/{name}")).unwrap()
}

/// The shipped conflist in `version`, with subnetFile, dataDirs and portmap's stateDir under
/// the node's temp dir.
pub fn conflist(node: &Node, version: &str) -> Value {
    let mut list: Value = serde_json::from_str(&testdata("10-flannel.conflist")).unwrap();
    list["cniVersion"] = json!(version);
    let flannel = &mut list["plugins"][0];
    flannel["subnetFile"] = json!(node.dir().join("subnet.env"));
    flannel["dataDir"] = json!(node.dir().join("flannel"));
    flannel["ipam"] = json!({"dataDir": node.dir().join("ipam")});
    list["plugins"][1]["stateDir"] = json!(node.dir().join("portmap"));
    list
}

/// The subnet.env the runtime tests' nodes get: 10.244.1.0/24 of 10.244.0.0/16, vxlan's
/// MTU, masquerade done by flanneld.
pub const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

/// kube-flannel's network for the Go plugins, which have no flannel in Debian: the bridge
/// config flannel delegates for [`SUBNET_ENV`] (masquerade on, as a node without flanneld's
/// would need), then portmap.
pub fn go_conflist(node: &Node, version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "cbr0",
        "plugins": [
            {
                "type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
                "ipMasq": true, "hairpinMode": true, "mtu": 1450,
                "ipam": {"type": "host-local", "subnet": "10.244.1.0/24",
                         "dataDir": node.dir().join("ipam")}
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

pub fn write_subnet_env(node: &Node, text: &str) {
    fs::write(node.dir().join("subnet.env"), text).unwrap();
}

/// Names in a directory of the node, sorted (empty when it does not exist).
pub fn names_in(node: &Node, sub: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(node.dir().join(sub))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The lease files of the flannel network `cbr0`.
pub fn leases(node: &Node) -> Vec<String> {
    names_in(node, "ipam/cbr0")
        .into_iter()
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect()
}
