//! The keys of one network under its etcd prefix (`<prefix>/config`,
//! `<prefix>/subnets/10.5.52.0-24`) and a stored key/value read as a lease, as Go names and
//! reads them.

use super::store::KeyValue;
use crate::lease::{Lease, LeaseAttrs};
use crate::log::{shown, warning};
use crate::subnet::SubnetKey;

/// The keys under one `--etcd-prefix`.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys under `prefix` (a trailing `/` is dropped).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// `<prefix>/config`.
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `<prefix>/subnets/` (what the watch covers).
    pub fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    /// `<prefix>/subnets/<key>`.
    pub fn lease_key(&self, sn: &SubnetKey) -> String {
        format!("{}{}", self.subnets_prefix(), sn)
    }

    /// The subnet a key under `subnets/` names; `None` for any other key.
    pub fn subnet_of(&self, key: &str) -> Option<SubnetKey> {
        key.strip_prefix(&self.subnets_prefix())
            .and_then(SubnetKey::parse)
    }

    /// A stored key/value as a lease; `None` (with a log line) when the key or value is not
    /// one flannel could have written.
    pub fn parse_lease(&self, kv: &KeyValue) -> Option<Lease> {
        kv.key.strip_prefix(&self.subnets_prefix())?;
        let Some(subnet) = self.subnet_of(&kv.key) else {
            warning!("skipping {}: not a subnet key", shown(&kv.key));
            return None;
        };
        match LeaseAttrs::from_json(&kv.value) {
            Ok(attrs) => Some(Lease {
                subnet,
                attrs,
                lease_id: kv.lease,
                expiration: None,
            }),
            Err(e) => {
                warning!("skipping {}: {e}", shown(&kv.key));
                None
            }
        }
    }
}
