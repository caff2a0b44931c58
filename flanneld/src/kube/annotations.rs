//! Flannel's Node annotations (`pkg/subnet/kube/annotations.go`): their names under
//! `--kube-annotation-prefix`, and what the node writes on its own Node, exactly as Go
//! writes it (values and the cases where a family's pair is written), so that Go and Rust
//! nodes read each other.

use std::collections::BTreeMap;

use crate::lease::LeaseAttrs;
use crate::vtep::VXLAN;

/// The default `--kube-annotation-prefix`.
pub const DEFAULT_PREFIX: &str = "flannel.alpha.coreos.com";

/// The annotation names of one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotations {
    /// `kube-subnet-manager`: `"true"` on every node a kube subnet manager manages.
    pub subnet_kube_managed: String,
    /// `backend-data`: the lease's `BackendData` as JSON (`null` for host-gw).
    pub backend_data: String,
    /// `backend-v6-data`: `BackendV6Data`.
    pub backend_v6_data: String,
    /// `backend-type`.
    pub backend_type: String,
    /// `public-ip`: the node's `PublicIP` (or its overwrite).
    pub backend_public_ip: String,
    /// `public-ipv6`.
    pub backend_public_ipv6: String,
    /// `node-public-ip` (an operator's): the address the node uses.
    pub backend_node_public_ip: String,
    /// `node-public-ipv6` (an operator's).
    pub backend_node_public_ipv6: String,
    /// `public-ip-overwrite` (an operator's): published instead of the node's address.
    pub backend_public_ip_overwrite: String,
    /// `public-ipv6-overwrite` (an operator's).
    pub backend_public_ipv6_overwrite: String,
}

impl Annotations {
    /// The names under `prefix`, which Go completes: without a `/` it gets one at the end,
    /// and one that ends in neither `/` nor `-` gets a `-`. Refused as Go refuses it: more
    /// than one `/`, or not `fqdn/[a-z0-9_-]*` (Go's check is unanchored at the start; this
    /// one is anchored, as a Kubernetes annotation name must be).
    pub fn new(prefix: &str) -> Result<Annotations, String> {
        let slashes = prefix.matches('/').count();
        if slashes > 1 {
            return Err(format!(
                "--kube-annotation-prefix {}: at most one slash",
                crate::log::shown(prefix)
            ));
        }
        let mut p = prefix.to_owned();
        if slashes == 0 {
            p.push('/');
        }
        if !p.ends_with('/') && !p.ends_with('-') {
            p.push('-');
        }
        let format = regex_lite::Regex::new(r"^(?:[a-z0-9_-]+\.)+[a-z0-9_-]+/(?:[a-z0-9_-]+-)?$")
            .map_err(|e| e.to_string())?;
        if !format.is_match(&p) {
            return Err(format!(
                "--kube-annotation-prefix {}: must be in the format fqdn/[0-9a-z-_]*",
                crate::log::shown(prefix)
            ));
        }
        let name = |s: &str| format!("{p}{s}");
        Ok(Annotations {
            subnet_kube_managed: name("kube-subnet-manager"),
            backend_data: name("backend-data"),
            backend_v6_data: name("backend-v6-data"),
            backend_type: name("backend-type"),
            backend_public_ip: name("public-ip"),
            backend_public_ipv6: name("public-ipv6"),
            backend_node_public_ip: name("node-public-ip"),
            backend_node_public_ipv6: name("node-public-ipv6"),
            backend_public_ip_overwrite: name("public-ip-overwrite"),
            backend_public_ipv6_overwrite: name("public-ipv6-overwrite"),
        })
    }

    /// What to write on the node's own Node (whose annotations are `current`) to publish
    /// `attrs`, as Go's `AcquireLease` decides it: the annotations whose value differs from
    /// what they should be, nothing when all are right.
    ///
    /// Go writes a family's pair (`backend-data` + `public-ip`, or `backend-v6-data` +
    /// `public-ipv6`) only when it has something for it: vxlan's IPv4 pair when it has an
    /// IPv4 VTEP, any other backend's always; the IPv6 pair for vxlan's IPv6 VTEP, for
    /// wireguard's IPv6 data and for host-gw with a `PublicIPv6`. An operator's `public-ip-overwrite` is published instead
    /// of the node's address.
    pub fn patch(
        &self,
        current: &BTreeMap<String, String>,
        attrs: &LeaseAttrs,
    ) -> BTreeMap<String, String> {
        let get = |k: &String| current.get(k).map(String::as_str).unwrap_or_default();
        let (bd, v6bd) = (
            crate::lease::backend_data_json(attrs.backend_data.as_ref()),
            crate::lease::backend_data_json(attrs.backend_v6_data.as_ref()),
        );
        let ip = attrs.public_ip.to_string();
        let ty = attrs.backend_type.as_str();
        let mut want = BTreeMap::new();
        want.insert(self.backend_type.clone(), ty.to_owned());
        // Go's `(vxlan && bd != null) || type != vxlan`.
        if ty != VXLAN || bd != "null" {
            want.insert(self.backend_data.clone(), bd);
            let overwrite = get(&self.backend_public_ip_overwrite);
            let published = if overwrite.is_empty() { &ip } else { overwrite };
            want.insert(self.backend_public_ip.clone(), published.to_owned());
        }
        if let Some(ip6) = attrs.public_ipv6
            && (((ty == VXLAN || ty == crate::backend::wireguard::TYPE) && v6bd != "null")
                || ty == crate::backend::hostgw::TYPE)
        {
            want.insert(self.backend_v6_data.clone(), v6bd);
            let ip6 = ip6.to_string();
            let overwrite = get(&self.backend_public_ipv6_overwrite);
            let published = if overwrite.is_empty() {
                &ip6
            } else {
                overwrite
            };
            want.insert(self.backend_public_ipv6.clone(), published.to_owned());
        }
        want.insert(self.subnet_kube_managed.clone(), "true".to_owned());
        want.retain(|k, v| get(k) != v);
        want
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(json: &str) -> LeaseAttrs {
        LeaseAttrs::from_json(json.as_bytes()).unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn prefixes_as_go_completes_and_refuses_them() {
        let a = Annotations::new(DEFAULT_PREFIX).unwrap();
        assert_eq!(a.backend_data, "flannel.alpha.coreos.com/backend-data");
        assert_eq!(
            a.subnet_kube_managed,
            "flannel.alpha.coreos.com/kube-subnet-manager"
        );
        assert_eq!(
            a.backend_public_ipv6_overwrite,
            "flannel.alpha.coreos.com/public-ipv6-overwrite"
        );
        let a = Annotations::new("example.com/net").unwrap();
        assert_eq!(a.backend_type, "example.com/net-backend-type");
        let a = Annotations::new("example.com/net-").unwrap();
        assert_eq!(a.backend_type, "example.com/net-backend-type");
        for bad in ["a/b/c", "nodots", "Example.com", "example.com/Net", ""] {
            assert!(Annotations::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_new_vxlan_node_gets_every_annotation_as_go_writes_them() {
        let a = Annotations::new(DEFAULT_PREFIX).unwrap();
        let vx = attrs(
            r#"{"PublicIP":"192.168.50.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}}"#,
        );
        let p = a.patch(&BTreeMap::new(), &vx);
        assert_eq!(
            p,
            map(&[
                (
                    "flannel.alpha.coreos.com/backend-data",
                    r#"{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}"#
                ),
                ("flannel.alpha.coreos.com/backend-type", "vxlan"),
                ("flannel.alpha.coreos.com/kube-subnet-manager", "true"),
                ("flannel.alpha.coreos.com/public-ip", "192.168.50.2"),
            ])
        );
        // Written: nothing differs any more.
        let mut now = p.clone();
        now.insert("other".into(), "kept".into());
        assert!(a.patch(&now, &vx).is_empty());
        // Only what changed (a new MAC after a reboot without the annotation's).
        let vx2 = attrs(
            r#"{"PublicIP":"192.168.50.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e4"}}"#,
        );
        assert_eq!(
            a.patch(&now, &vx2),
            map(&[(
                "flannel.alpha.coreos.com/backend-data",
                r#"{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e4"}"#
            )])
        );
    }

    #[test]
    fn host_gw_writes_null_and_the_ipv6_pair_with_a_public_ipv6() {
        let a = Annotations::new(DEFAULT_PREFIX).unwrap();
        let hg = attrs(r#"{"PublicIP":"192.168.50.2","BackendType":"host-gw"}"#);
        let p = a.patch(&BTreeMap::new(), &hg);
        assert_eq!(p["flannel.alpha.coreos.com/backend-data"], "null");
        assert!(!p.contains_key("flannel.alpha.coreos.com/backend-v6-data"));
        let hg6 =
            attrs(r#"{"PublicIP":"192.168.50.2","PublicIPv6":"fd00::2","BackendType":"host-gw"}"#);
        let p = a.patch(&BTreeMap::new(), &hg6);
        assert_eq!(p["flannel.alpha.coreos.com/backend-v6-data"], "null");
        assert_eq!(p["flannel.alpha.coreos.com/public-ipv6"], "fd00::2");
        // vxlan without an IPv4 VTEP (IPv6 only) writes no IPv4 pair.
        let v6only = attrs(
            r#"{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::2","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e5"}}"#,
        );
        let p = a.patch(&BTreeMap::new(), &v6only);
        assert!(!p.contains_key("flannel.alpha.coreos.com/public-ip"));
        assert!(!p.contains_key("flannel.alpha.coreos.com/backend-data"));
        assert_eq!(
            p["flannel.alpha.coreos.com/backend-v6-data"],
            r#"{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e5"}"#
        );
    }

    #[test]
    fn an_operators_overwrite_is_published_instead_of_the_address() {
        let a = Annotations::new(DEFAULT_PREFIX).unwrap();
        let hg = attrs(r#"{"PublicIP":"192.168.50.2","BackendType":"host-gw"}"#);
        let now = map(&[(
            "flannel.alpha.coreos.com/public-ip-overwrite",
            "203.0.113.7",
        )]);
        let p = a.patch(&now, &hg);
        assert_eq!(p["flannel.alpha.coreos.com/public-ip"], "203.0.113.7");
        let mut now = now;
        now.extend(p);
        assert!(a.patch(&now, &hg).is_empty());
    }
}
