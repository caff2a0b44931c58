//! `testdata/bad-nodes/cases.json`: hostile Node objects for flanneld in kube mode (vxlan),
//! next to good ones. Each case becomes a Node's name, podCIDRs and the annotations Go
//! flanneld writes, with what the case changes or removes.

use std::collections::BTreeMap;

use serde_json::Value;

/// The corpus, placeholders and all (it is compiled in: no path to find at run time).
pub const CASES: &str = include_str!("../../testdata/bad-nodes/cases.json");

/// The prefix of flannel's Node annotations.
pub const PREFIX: &str = "flannel.alpha.coreos.com/";

/// A Node's PublicIP and VTEP MAC where its case names none.
const DEFAULT_IP: &str = "192.168.50.40";
const DEFAULT_MAC: &str = "02:bb:00:00:00:40";

/// One Node of the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCase {
    /// Its name.
    pub name: String,
    /// Its `spec.podCIDRs`.
    pub pod_cidrs: Vec<String>,
    /// Its annotations, full keys.
    pub annotations: Vec<(String, String)>,
}

impl NodeCase {
    /// Its podCIDRs, borrowed (as the API clients of the tests take them).
    pub fn cidrs(&self) -> Vec<&str> {
        self.pod_cidrs.iter().map(String::as_str).collect()
    }

    /// Its annotations, borrowed.
    pub fn annotation_pairs(&self) -> Vec<(&str, &str)> {
        self.annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// The good Nodes (to be programmed) and the bad ones (each skipped with one line).
#[derive(Debug, Clone)]
pub struct Cases {
    /// The Nodes a peer should program.
    pub good: Vec<NodeCase>,
    /// The hostile Nodes.
    pub bad: Vec<NodeCase>,
}

/// The corpus with each placeholder (`NETWORK`, `OUTSIDE`, `OWN_CIDR`, `OWN_HALF`, `OWN_IP`,
/// `OWN_MAC`) replaced as `replace` says; an error if one is left or the JSON is broken.
pub fn cases(replace: &[(&str, &str)]) -> Result<Cases, String> {
    let mut text = CASES.to_owned();
    for (from, to) in replace {
        text = text.replace(from, to);
    }
    for left in ["NETWORK", "OUTSIDE", "OWN_"] {
        if text.contains(&format!("\"{left}")) {
            return Err(format!("placeholder {left}… not replaced"));
        }
    }
    let all: Value = serde_json::from_str(&text).map_err(|e| format!("cases.json: {e}"))?;
    let list = |k: &str| -> Result<Vec<NodeCase>, String> {
        all[k]
            .as_array()
            .ok_or_else(|| format!("cases.json: no \"{k}\" list"))?
            .iter()
            .map(node)
            .collect()
    };
    Ok(Cases {
        good: list("good")?,
        bad: list("bad")?,
    })
}

/// The annotations Go flanneld writes for a vxlan Node at `ip` with VTEP `mac` (VNI 1).
pub fn go_annotations(ip: &str, mac: &str) -> Vec<(String, String)> {
    [
        ("backend-data", format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#)),
        ("backend-type", "vxlan".to_owned()),
        ("kube-subnet-manager", "true".to_owned()),
        ("public-ip", ip.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{PREFIX}{k}"), v))
    .collect()
}

fn node(case: &Value) -> Result<NodeCase, String> {
    let name = case["name"]
        .as_str()
        .ok_or_else(|| format!("a case without a name: {case}"))?
        .to_owned();
    let pod_cidrs = case["podCIDRs"]
        .as_array()
        .ok_or_else(|| format!("{name}: no podCIDRs"))?
        .iter()
        .map(|c| c.as_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| format!("{name}: a podCIDR that is not a string"))?;
    let ip = case["publicIP"].as_str().unwrap_or(DEFAULT_IP);
    let mac = case["mac"].as_str().unwrap_or(DEFAULT_MAC);
    let mut ann: BTreeMap<String, Option<String>> = go_annotations(ip, mac)
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    if let Some(n) = case["hugeData"].as_u64() {
        let pad = "x".repeat(usize::try_from(n).map_err(|e| format!("{name}: {e}"))?);
        ann.insert(
            format!("{PREFIX}backend-data"),
            Some(format!(r#"{{"VNI":1,"VtepMAC":"{mac}","Pad":"{pad}"}}"#)),
        );
    }
    // A case's own value replaces Go's; null removes the annotation.
    for (k, v) in case["annotations"].as_object().into_iter().flatten() {
        ann.insert(format!("{PREFIX}{k}"), v.as_str().map(str::to_owned));
    }
    let annotations = ann.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
    Ok(NodeCase {
        name,
        pod_cidrs,
        annotations,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const REPLACE: [(&str, &str); 6] = [
        ("OWN_CIDR", "10.244.1.0/24"),
        ("OWN_HALF", "10.244.1.128/25"),
        ("OWN_IP", "192.168.50.2"),
        ("OWN_MAC", "02:aa:00:00:00:01"),
        ("OUTSIDE", "10.99.0.0/24"),
        ("NETWORK", "10.244.0.0/16"),
    ];

    fn annotation<'a>(c: &'a NodeCase, key: &str) -> Option<&'a str> {
        let key = format!("{PREFIX}{key}");
        c.annotations
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn thirty_bad_two_good_with_gos_annotations_and_the_cases_changes() {
        let c = cases(&REPLACE).unwrap();
        assert_eq!((c.good.len(), c.bad.len()), (2, 30));
        let good = &c.good[0];
        assert_eq!(good.pod_cidrs, ["10.244.2.0/24"]);
        assert_eq!(annotation(good, "public-ip"), Some("192.168.50.3"));
        assert_eq!(
            annotation(good, "backend-data"),
            Some(r#"{"VNI":1,"VtepMAC":"02:bb:00:00:00:01"}"#)
        );
        let by_name = |n: &str| c.bad.iter().find(|b| b.name == n).unwrap();
        assert_eq!(
            annotation(by_name("bad-data-null"), "backend-data"),
            Some("null")
        );
        assert_eq!(by_name("bad-cidr-ours").pod_cidrs, ["10.244.1.0/24"]);
        assert_eq!(
            annotation(by_name("bad-ip-ours"), "public-ip"),
            Some("192.168.50.2")
        );
        assert_eq!(
            annotation(by_name("bad-backend-type-empty"), "backend-type"),
            None,
            "null removes Go's annotation"
        );
    }

    #[test]
    fn a_placeholder_left_is_an_error() {
        let e = cases(&REPLACE[1..]).unwrap_err();
        assert!(e.contains("OWN_"), "{e}");
    }
}
