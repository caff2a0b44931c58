//! The parts of a Node the agent reads (name, resourceVersion, annotations, podCIDR(s)) and
//! a Node turned into a lease, as Go's `nodeToLease` does: only what a peer needs is kept,
//! never the whole object (Go's informer keeps every Node whole: status, images, managed
//! fields; that is why kube-flannel needs 50 MiB and more on large clusters).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::Deserialize;
use serde_json::Value;

use super::annotations::Annotations;
use crate::lease::{Lease, LeaseAttrs};
use crate::log::shown;
use crate::subnet::SubnetKey;

/// A Node as the agent reads it; every other field of the object is skipped while decoding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NodeLite {
    /// `metadata`.
    pub metadata: NodeMeta,
    /// `spec`.
    pub spec: NodeSpec,
}

/// The read part of a Node's `metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeMeta {
    /// `name`.
    pub name: String,
    /// `resourceVersion`.
    pub resource_version: String,
    /// `annotations` (a null map is an empty one).
    #[serde(deserialize_with = "null_as_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The read part of a Node's `spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeSpec {
    /// `podCIDR`.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
    /// `podCIDRs`.
    #[serde(rename = "podCIDRs", deserialize_with = "null_as_empty")]
    pub pod_cidrs: Vec<String>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A page of a Node listing.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NodeList {
    /// `metadata` of the list.
    pub metadata: ListMeta,
    /// The Nodes.
    #[serde(deserialize_with = "null_as_empty")]
    pub items: Vec<NodeLite>,
}

/// The list's `metadata`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ListMeta {
    /// `resourceVersion` of the listing.
    pub resource_version: String,
    /// `continue`: where the next page starts (empty: last page).
    #[serde(rename = "continue")]
    pub continue_token: String,
}

/// A Pod as the agent reads it (`POD_NAME`/`POD_NAMESPACE` to the node's name).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PodLite {
    /// `spec`.
    pub spec: PodSpec,
}

/// The read part of a Pod's `spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    /// `nodeName`.
    pub node_name: String,
}

/// Why a Node's podCIDRs cannot be the node's subnets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodCidrError {
    /// Neither `podCIDR` nor `podCIDRs` is set (kube-controller-manager has not assigned one).
    #[error("no podCIDR assigned")]
    None,
    /// A value is not a CIDR.
    #[error("podCIDR {} is not a CIDR", shown(.0))]
    Bad(String),
    /// More than two, or two of one family.
    #[error("podCIDRs {0:?} should be IPv4/IPv6 only or dual-stack")]
    Many(Vec<String>),
}

/// A Node's pod subnets by family, as Go picks them: `podCIDRs` when set (at most two), else
/// `podCIDR`. The address is reduced to the network (`10.244.1.7/24` is `10.244.1.0/24`).
pub fn pod_cidrs(
    spec: &NodeSpec,
) -> Result<(Option<Ipv4Network>, Option<Ipv6Network>), PodCidrError> {
    let all: Vec<&String> = if spec.pod_cidrs.is_empty() {
        if spec.pod_cidr.is_empty() {
            return Err(PodCidrError::None);
        }
        vec![&spec.pod_cidr]
    } else if spec.pod_cidrs.len() > 2 {
        return Err(PodCidrError::Many(spec.pod_cidrs.clone()));
    } else {
        spec.pod_cidrs.iter().collect()
    };
    let (mut v4, mut v6) = (None, None);
    for s in all {
        let net: IpNetwork = s
            .parse()
            .ok()
            .filter(|_| s.contains('/'))
            .ok_or_else(|| PodCidrError::Bad(s.clone()))?;
        let taken = match net {
            IpNetwork::V4(n) => v4
                .replace(Ipv4Network::new(n.network(), n.prefix()).map_err(|_| bad(s))?)
                .is_some(),
            IpNetwork::V6(n) => v6
                .replace(Ipv6Network::new(n.network(), n.prefix()).map_err(|_| bad(s))?)
                .is_some(),
        };
        if taken {
            return Err(PodCidrError::Many(spec.pod_cidrs.clone()));
        }
    }
    Ok((v4, v6))
}

fn bad(s: &str) -> PodCidrError {
    PodCidrError::Bad(s.to_owned())
}

/// What a Node's lease holds for the families the network enables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    /// `EnableIPv4`.
    pub v4: bool,
    /// `EnableIPv6`.
    pub v6: bool,
}

/// A JSON annotation value as a lease's backend data: `null` (host-gw's) or absent is none.
fn backend_data(s: Option<&String>, name: &str) -> Result<Option<Value>, String> {
    match s.map(String::as_str) {
        None | Some("") | Some("null") => Ok(None),
        Some(s) => serde_json::from_str(s)
            .map(|v: Value| (!v.is_null()).then_some(v))
            .map_err(|_| format!("annotation {name} is not JSON: {}", shown(s))),
    }
}

/// A managed Node as a peer's lease (Go's `nodeToLease`); `Ok(None)` for a node no kube
/// subnet manager manages (no `kube-subnet-manager: "true"`), `Err` (why) for a managed one
/// whose annotations or podCIDRs are unusable.
pub fn to_lease(
    node: &NodeLite,
    names: &Annotations,
    families: Families,
) -> Result<Option<Lease>, String> {
    let ann = &node.metadata.annotations;
    if ann.get(&names.subnet_kube_managed).map(String::as_str) != Some("true") {
        return Ok(None);
    }
    let (v4, v6) = pod_cidrs(&node.spec).map_err(|e| e.to_string())?;
    let text = |name: &String| ann.get(name).map(String::as_str).unwrap_or_default();
    let mut attrs = LeaseAttrs {
        public_ip: Ipv4Addr::UNSPECIFIED,
        public_ipv6: None,
        backend_type: text(&names.backend_type).to_owned(),
        backend_data: None,
        backend_v6_data: None,
    };
    let mut subnet_v4 = None;
    if families.v4 {
        let ip = text(&names.backend_public_ip);
        attrs.public_ip = ip.parse().map_err(|_| {
            format!(
                "annotation {} is not an IPv4 address: {}",
                names.backend_public_ip,
                shown(ip)
            )
        })?;
        attrs.backend_data = backend_data(ann.get(&names.backend_data), &names.backend_data)?;
        subnet_v4 = Some(v4.ok_or("no IPv4 podCIDR")?);
    }
    let mut subnet_v6 = None;
    if families.v6 {
        let ip = text(&names.backend_public_ipv6);
        attrs.public_ipv6 = Some(ip.parse::<Ipv6Addr>().map_err(|_| {
            format!(
                "annotation {} is not an IPv6 address: {}",
                names.backend_public_ipv6,
                shown(ip)
            )
        })?);
        attrs.backend_v6_data =
            backend_data(ann.get(&names.backend_v6_data), &names.backend_v6_data)?;
        subnet_v6 = Some(v6.ok_or("no IPv6 podCIDR")?);
    }
    Ok(Some(Lease {
        subnet: SubnetKey {
            v4: subnet_v4,
            v6: subnet_v6,
        },
        attrs,
        lease_id: 0,
        expiration: None,
    }))
}

/// An address annotation (`node-public-ip`, `public-ip-overwrite`...) read; `None` when
/// absent or empty, an error naming it when it is not an address of the family.
pub fn address<T: std::str::FromStr>(
    ann: &BTreeMap<String, String>,
    name: &str,
) -> Result<Option<T>, String> {
    match ann.get(name).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            let family = match s.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => "an IPv4 address where IPv6 is needed",
                Ok(IpAddr::V6(_)) => "an IPv6 address where IPv4 is needed",
                Err(_) => "not an IP address",
            };
            format!("annotation {name}: {} is {family}", shown(s))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Annotations {
        Annotations::new("flannel.alpha.coreos.com").unwrap()
    }

    fn node(json: &str) -> NodeLite {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn only_the_read_parts_of_a_node_are_kept() {
        let n = node(
            r#"{"kind":"Node","apiVersion":"v1","metadata":{"name":"n1","uid":"u","resourceVersion":"42",
            "managedFields":[{"manager":"kubelet","fieldsV1":{"f:status":{}}}],
            "annotations":{"a":"b"}},"spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24"],
            "taints":[{"key":"k","effect":"NoSchedule"}]},"status":{"images":[{"names":["x"],"sizeBytes":1}]}}"#,
        );
        assert_eq!(n.metadata.name, "n1");
        assert_eq!(n.metadata.resource_version, "42");
        assert_eq!(n.metadata.annotations.len(), 1);
        assert_eq!(n.spec.pod_cidrs, ["10.244.1.0/24"]);
        let n = node(r#"{"metadata":{"name":"n2","annotations":null},"spec":{"podCIDRs":null}}"#);
        assert!(n.metadata.annotations.is_empty() && n.spec.pod_cidrs.is_empty());
    }

    #[test]
    fn pod_cidrs_as_go_picks_them() {
        let spec = |one: &str, many: &[&str]| NodeSpec {
            pod_cidr: one.into(),
            pod_cidrs: many.iter().map(|s| s.to_string()).collect(),
        };
        let (v4, v6) = pod_cidrs(&spec("10.244.1.0/24", &[])).unwrap();
        assert_eq!(
            (v4.unwrap().to_string().as_str(), v6),
            ("10.244.1.0/24", None)
        );
        let (v4, v6) = pod_cidrs(&spec("x", &["fd00:1::/64", "10.244.2.7/24"])).unwrap();
        assert_eq!(v4.unwrap().to_string(), "10.244.2.0/24");
        assert_eq!(v6.unwrap().to_string(), "fd00:1::/64");
        assert_eq!(pod_cidrs(&spec("", &[])), Err(PodCidrError::None));
        assert!(matches!(
            pod_cidrs(&spec("", &["10.0.0.0/24", "10.0.1.0/24"])),
            Err(PodCidrError::Many(_))
        ));
        assert!(matches!(
            pod_cidrs(&spec("", &["a", "b", "c"])),
            Err(PodCidrError::Many(_))
        ));
        assert!(matches!(
            pod_cidrs(&spec("10.0.0.1", &[])),
            Err(PodCidrError::Bad(_))
        ));
    }

    #[test]
    fn a_managed_node_is_a_lease_in_gos_format() {
        let n = node(
            r#"{"metadata":{"name":"n1","annotations":{
            "flannel.alpha.coreos.com/backend-data":"{\"VNI\":1,\"VtepMAC\":\"12:c6:65:89:b4:e3\"}",
            "flannel.alpha.coreos.com/backend-type":"vxlan",
            "flannel.alpha.coreos.com/kube-subnet-manager":"true",
            "flannel.alpha.coreos.com/public-ip":"192.168.50.12"}},
            "spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24"]}}"#,
        );
        let v4 = Families {
            v4: true,
            v6: false,
        };
        let l = to_lease(&n, &names(), v4).unwrap().unwrap();
        assert_eq!(l.subnet.to_string(), "10.244.1.0-24");
        assert_eq!(
            l.attrs.to_json(),
            r#"{"PublicIP":"192.168.50.12","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}}"#
        );
        // Not managed: no lease, no error.
        let mut plain = n.clone();
        plain
            .metadata
            .annotations
            .remove("flannel.alpha.coreos.com/kube-subnet-manager");
        assert_eq!(to_lease(&plain, &names(), v4), Ok(None));
        // host-gw's "null" is no backend data.
        let mut hg = n.clone();
        hg.metadata.annotations.insert(
            "flannel.alpha.coreos.com/backend-data".into(),
            "null".into(),
        );
        assert_eq!(
            to_lease(&hg, &names(), v4)
                .unwrap()
                .unwrap()
                .attrs
                .backend_data,
            None
        );
        // Unusable: said why.
        let mut bad = n.clone();
        bad.metadata
            .annotations
            .insert("flannel.alpha.coreos.com/public-ip".into(), "x\n".into());
        let e = to_lease(&bad, &names(), v4).unwrap_err();
        assert!(
            e.contains("public-ip is not an IPv4 address") && !e.contains('\n'),
            "{e}"
        );
        let mut no_v6 = n;
        no_v6.metadata.annotations.insert(
            "flannel.alpha.coreos.com/public-ipv6".into(),
            "fd00::12".into(),
        );
        let dual = Families { v4: true, v6: true };
        assert_eq!(
            to_lease(&no_v6, &names(), dual).unwrap_err(),
            "no IPv6 podCIDR"
        );
    }

    #[test]
    fn address_annotations() {
        let ann: BTreeMap<String, String> = [
            ("a".to_string(), "10.0.0.1".to_string()),
            ("b".to_string(), "fd00::1".to_string()),
            ("c".to_string(), String::new()),
        ]
        .into();
        assert_eq!(
            address::<Ipv4Addr>(&ann, "a"),
            Ok(Some([10, 0, 0, 1].into()))
        );
        assert_eq!(address::<Ipv4Addr>(&ann, "c"), Ok(None));
        assert_eq!(address::<Ipv4Addr>(&ann, "z"), Ok(None));
        assert!(
            address::<Ipv4Addr>(&ann, "b")
                .unwrap_err()
                .contains("IPv6 address where IPv4")
        );
        assert!(
            address::<Ipv6Addr>(&ann, "a")
                .unwrap_err()
                .contains("IPv4 address where IPv6")
        );
    }
}
