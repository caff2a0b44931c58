//! The agent tests' kit: leases built from Go's key and value text, the one fake backend
//! ([`Recorder`]), and the agent started on it ([`start`]) over the etcd or kube manager.

use crate::lease::{Lease, LeaseAttrs};
use crate::subnet::SubnetKey;

/// The lease of key `key` (`10.5.2.0-24`, `10.5.2.0-24&fc00:5:0:2::-64`) holding `value` (Go's
/// lease JSON).
pub fn lease(key: &str, value: &str) -> Lease {
    of(SubnetKey::parse(key).unwrap(), value)
}

/// The lease of `subnet` holding `value`.
pub fn of(subnet: SubnetKey, value: &str) -> Lease {
    Lease {
        subnet,
        attrs: LeaseAttrs::from_json(value.as_bytes()).unwrap(),
        lease_id: 0,
        expiration: None,
    }
}

/// The lease of key `key` published by `192.168.1.2` (the backends' own node in their tests).
pub fn own(key: &str) -> Lease {
    lease(key, r#"{"PublicIP":"192.168.1.2"}"#)
}

mod backend;
mod rig;

pub use backend::Recorder;
pub use rig::{Rig, Setup, etcd_manager, settle, start};
