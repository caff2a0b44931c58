//! The kube wing (`--kube-subnet-mgr`, Go's `pkg/subnet/kube`): the node's subnet is its
//! Node's podCIDR(s), assigned by kube-controller-manager; the lease is published as the
//! Node's flannel annotations (written, only when they differ, through the nodes/status
//! subresource, as kube-flannel's ClusterRole allows); the peers are the other managed
//! Nodes, from a list and watch that keeps what each peer needs, not the Node objects.
//! Nothing expires and nothing is renewed; nothing is cleaned up on exit.

pub mod annotations;
pub mod api;
mod connect;
#[cfg(test)]
pub(crate) mod fake;
pub mod node;
#[cfg(test)]
mod tests;
pub mod watch;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde_json::json;

pub use annotations::Annotations;
pub use api::{ApiError, KubeApi, NodeApi};
pub use connect::{KubeOptions, connect};
use node::{Families, PodCidrError, pod_cidrs};
use watch::{Listing, Watcher};

use crate::backend::BackendError;
use crate::config::{ConfigError, NetworkConfig};
use crate::lease::{Lease, LeaseAttrs};
use crate::log::{info, shown, warning};
use crate::manager::{Failure, LeaseWatch, ManagerError, Stored, SubnetManager};
use crate::metrics::Metrics;
use crate::peer::PeerCheck;
use crate::subnet::SubnetKey;

/// Why the kube subnet manager failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The Kubernetes API answered with an error or could not be reached.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The client could not be configured.
    #[error("{what}: {source}")]
    Client {
        /// What was read (a flag, the in-cluster config).
        what: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The node's name cannot be known (`NODE_NAME`, `POD_NAME`, `POD_NAMESPACE`).
    #[error("{0}")]
    NodeName(String),
    /// `--kube-annotation-prefix` is refused (why, as Go words it).
    #[error("{0}")]
    AnnotationPrefix(String),
    /// The network config file could not be read.
    #[error("reading the network config {path}: {source}")]
    NetConf {
        /// `--net-config-path`.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The network config is invalid.
    #[error("network config {path}: {source}")]
    BadNetConf {
        /// `--net-config-path`.
        path: PathBuf,
        /// Why.
        source: ConfigError,
    },
    /// The network config's `Backend` is one this agent does not have, or refuses.
    #[error("network config {path}: {source}")]
    BadBackend {
        /// `--net-config-path`.
        path: PathBuf,
        /// Why.
        source: BackendError,
    },
    /// The node's Node does not exist (yet).
    #[error("node {0} is not registered (no such Node): waiting for the kubelet to register it")]
    NodeMissing(String),
    /// The node's Node has no podCIDR yet.
    #[error(
        "node {node} has no podCIDR assigned: kube-controller-manager assigns one with --allocate-node-cidrs=true and --cluster-cidr={network} (or set spec.podCIDR yourself)"
    )]
    NoPodCidr {
        /// The node.
        node: String,
        /// The config's Network(s), which --cluster-cidr should equal.
        network: String,
    },
    /// The node's podCIDRs cannot be used.
    #[error("node {node}: {source}")]
    BadPodCidr {
        /// The node.
        node: String,
        /// Why.
        source: PodCidrError,
    },
    /// A podCIDR the network config does not contain, or a family it needs missing.
    #[error("{0}")]
    PodCidrMismatch(String),
    /// The first listing of the Nodes did not succeed in time (and
    /// `CONT_WHEN_CACHE_NOT_READY` is not `true`).
    #[error(
        "the Nodes could not be listed within {0:?} (set CONT_WHEN_CACHE_NOT_READY=true to start anyway)"
    )]
    NotSynced(std::time::Duration),
}

impl ManagerError for KubeError {
    fn failure(&self) -> Failure {
        match self {
            KubeError::Api(_) => Failure::Transient,
            KubeError::NodeMissing(_) | KubeError::NoPodCidr { .. } => Failure::Wait,
            KubeError::Client { .. }
            | KubeError::NodeName(_)
            | KubeError::AnnotationPrefix(_)
            | KubeError::NetConf { .. }
            | KubeError::BadNetConf { .. }
            | KubeError::BadBackend { .. }
            | KubeError::BadPodCidr { .. }
            | KubeError::PodCidrMismatch(_)
            | KubeError::NotSynced(_) => Failure::Fatal,
        }
    }
}

/// The kube subnet manager of one node.
#[derive(Debug)]
pub struct KubeManager<A> {
    api: A,
    node_name: String,
    names: Annotations,
    net_config_path: PathBuf,
    set_node_network_unavailable: bool,
    depth: usize,
    watch_timeout: std::time::Duration,
    /// The families of the network config read at start (the listing's and the watch's).
    families: Families,
    /// The listing made at start, handed to the first watch.
    initial: Option<Listing>,
}

impl<A: NodeApi> KubeManager<A> {
    /// A manager for `node_name` through `api`, for a network of `families`, with
    /// `initial`, the listing made at start (see [`connect`]).
    pub fn new(
        api: A,
        node_name: &str,
        opts: &KubeOptions,
        families: Families,
        initial: Option<Listing>,
    ) -> Result<Self, KubeError> {
        Ok(KubeManager {
            api,
            node_name: node_name.to_owned(),
            names: Annotations::new(&opts.annotation_prefix)
                .map_err(KubeError::AnnotationPrefix)?,
            net_config_path: opts.net_config_path.clone(),
            set_node_network_unavailable: opts.set_node_network_unavailable,
            depth: opts.queue_depth,
            watch_timeout: opts.watch_timeout,
            families,
            initial,
        })
    }

    /// The node's own Node; an error when it is not there.
    async fn own_node(&self) -> Result<node::NodeLite, KubeError> {
        self.api
            .node(&self.node_name)
            .await?
            .ok_or_else(|| KubeError::NodeMissing(self.node_name.clone()))
    }
}

/// The families of `config`.
pub fn families(config: &NetworkConfig) -> Families {
    Families {
        v4: config.v4.is_some(),
        v6: config.v6.is_some(),
    }
}

/// The node's subnets from its podCIDRs, checked against the config as Go checks them (a
/// podCIDR must lie inside the family's network), and for the families the config enables.
pub fn subnets(
    node: &str,
    spec: &node::NodeSpec,
    config: &NetworkConfig,
    net_config_path: &std::path::Path,
) -> Result<SubnetKey, KubeError> {
    let (v4, v6) = pod_cidrs(spec).map_err(|source| match source {
        PodCidrError::None => KubeError::NoPodCidr {
            node: node.to_owned(),
            network: [
                config.v4.as_ref().map(|r| r.network.to_string()),
                config.v6.as_ref().map(|r| r.network.to_string()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(","),
        },
        source => KubeError::BadPodCidr {
            node: node.to_owned(),
            source,
        },
    })?;
    let fix = format!(
        "make kube-controller-manager's --cluster-cidr and the Network/IPv6Network of {} the same",
        net_config_path.display()
    );
    let v4 = match (&config.v4, v4) {
        (Some(r), Some(sn)) => {
            if !sn.is_subnet_of(r.network) {
                return Err(KubeError::PodCidrMismatch(format!(
                    "node {node}'s podCIDR {sn} is outside the Network {}: {fix}",
                    r.network
                )));
            }
            Some(sn)
        }
        (Some(_), None) => {
            return Err(KubeError::PodCidrMismatch(format!(
                "node {node} has no IPv4 podCIDR ({}) but the network config enables IPv4: {fix}",
                spec.pod_cidrs.join(",")
            )));
        }
        (None, _) => None,
    };
    let v6 = match (&config.v6, v6) {
        (Some(r), Some(sn)) => {
            if !sn.is_subnet_of(r.network) {
                return Err(KubeError::PodCidrMismatch(format!(
                    "node {node}'s IPv6 podCIDR {sn} is outside the IPv6Network {}: {fix}",
                    r.network
                )));
            }
            Some(sn)
        }
        (Some(_), None) => {
            return Err(KubeError::PodCidrMismatch(format!(
                "node {node} has no IPv6 podCIDR ({}) but the network config enables IPv6: {fix}",
                if spec.pod_cidrs.is_empty() {
                    &spec.pod_cidr
                } else {
                    &spec.pod_cidrs[0]
                }
            )));
        }
        (None, _) => None,
    };
    Ok(SubnetKey { v4, v6 })
}

/// The MAC of a `backend-data` annotation's `VtepMAC`, read as a peer's is; `None` when
/// absent or unusable (logged: a new MAC is chosen, and published).
fn stored_mac(ann: &std::collections::BTreeMap<String, String>, name: &str) -> Option<[u8; 6]> {
    let text = ann.get(name)?;
    if text == "null" {
        return None;
    }
    let decoded = serde_json::from_str::<serde_json::Value>(text)
        .map_err(|e| e.to_string())
        .and_then(|v| crate::vtep::decode_vtep(Some(&v), name, &[0; 6]));
    match decoded {
        Ok((_, mac)) => Some(mac),
        Err(why) => {
            warning!(
                "annotation {name} holds no usable VtepMAC ({}: {why}): a new MAC is chosen",
                shown(text)
            );
            None
        }
    }
}

impl<A: NodeApi> SubnetManager for KubeManager<A> {
    type Error = KubeError;

    async fn network_config(&self) -> Result<NetworkConfig, KubeError> {
        let path = &self.net_config_path;
        let bytes = std::fs::read(path).map_err(|source| KubeError::NetConf {
            path: path.clone(),
            source,
        })?;
        let config = NetworkConfig::parse_kube(&bytes).map_err(|source| KubeError::BadNetConf {
            path: path.clone(),
            source,
        })?;
        crate::backend::check(&config).map_err(|source| KubeError::BadBackend {
            path: path.clone(),
            source,
        })?;
        Ok(config)
    }

    async fn stored(&self) -> Result<Stored, KubeError> {
        let Some(node) = self.api.node(&self.node_name).await? else {
            return Ok(Stored::default());
        };
        let ann = &node.metadata.annotations;
        let mut stored = Stored {
            vtep_mac: stored_mac(ann, &self.names.backend_data),
            vtep_mac_v6: stored_mac(ann, &self.names.backend_v6_data),
            ..Stored::default()
        };
        match node::address::<Ipv4Addr>(ann, &self.names.backend_node_public_ip) {
            Ok(ip) => stored.public_ip = ip,
            Err(e) => warning!("{e}: ignored"),
        }
        match node::address::<Ipv6Addr>(ann, &self.names.backend_node_public_ipv6) {
            Ok(ip) => stored.public_ipv6 = ip,
            Err(e) => warning!("{e}: ignored"),
        }
        if let Some(ip) = stored.public_ip {
            info!(
                "node {} asks for public IP {ip} ({})",
                self.node_name, self.names.backend_node_public_ip
            );
        }
        if let Some(ip) = stored.public_ipv6 {
            info!(
                "node {} asks for public IPv6 {ip} ({})",
                self.node_name, self.names.backend_node_public_ipv6
            );
        }
        Ok(stored)
    }

    async fn acquire(
        &mut self,
        config: &NetworkConfig,
        attrs: &LeaseAttrs,
    ) -> Result<Lease, KubeError> {
        let node = self.own_node().await?;
        let subnet = subnets(&self.node_name, &node.spec, config, &self.net_config_path)?;
        let patch = self.names.patch(&node.metadata.annotations, attrs);
        if !patch.is_empty() {
            let body = json!({ "metadata": { "annotations": patch } });
            self.api.patch_status(&self.node_name, &body).await?;
            info!(
                "annotated node {}: {}",
                self.node_name,
                patch
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        Ok(Lease {
            subnet,
            attrs: attrs.clone(),
            lease_id: 0,
            expiration: None,
        })
    }

    async fn renew(&mut self, lease: &Lease) -> Result<Lease, KubeError> {
        // Never due: a kube lease does not expire.
        Ok(lease.clone())
    }

    async fn complete(&mut self, _lease: &Lease) -> Result<(), KubeError> {
        if !self.set_node_network_unavailable {
            return Ok(());
        }
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let condition = k8s_openapi::api::core::v1::NodeCondition {
            type_: "NetworkUnavailable".into(),
            status: "False".into(),
            reason: Some("FlannelIsUp".into()),
            message: Some("Flannel is running on this node".into()),
            last_transition_time: Some(now.clone()),
            last_heartbeat_time: Some(now),
        };
        let body = json!({ "status": { "conditions": [condition] } });
        self.api.patch_status(&self.node_name, &body).await?;
        info!(
            "node {}: condition NetworkUnavailable=False (FlannelIsUp)",
            self.node_name
        );
        Ok(())
    }

    fn describe(&self, lease: &Lease) -> String {
        format!("{} (the podCIDR of node {})", lease.subnet, self.node_name)
    }

    fn watch(&mut self, own: &Lease, metrics: &Metrics) -> LeaseWatch {
        Watcher {
            api: self.api.clone(),
            names: self.names.clone(),
            families: self.families,
            own_name: self.node_name.clone(),
            depth: self.depth,
            metrics: metrics.clone(),
            timeout: self.watch_timeout,
        }
        .start(own, self.initial.take())
    }

    fn peer_check(&self, config: &NetworkConfig, own: &LeaseAttrs) -> PeerCheck {
        PeerCheck::new(config, own).any_subnet_len()
    }
}
