//! flanneld's subnet leases as the agent tests read and write them: the node's own key from
//! its subnet.env, peers' values in Go flanneld's format, the etcd lease and the history of a
//! key (`etcdctl watch` from a known revision, so no event is missed), and raw writes through
//! etcd-client (values `etcdctl`'s argv cannot carry: NUL bytes, 1 MiB).

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use etcd_client::{Client, PutOptions};

use crate::etcd::{Etcd, stop};
use rig::node::Node;

/// The lease key name (`10.5.23.0-24`) of the subnet in `<node dir>/<file>` (a subnet.env):
/// `None` while the file or its `FLANNEL_SUBNET` is missing.
pub fn own_key(node: &Node, file: &str) -> Option<String> {
    let text = fs::read_to_string(node.dir().join(file)).ok()?;
    let (v4, _) = cni_common::subnet_env::previous_subnets(&text);
    let sn = v4?;
    Some(format!("{}-{}", sn.network(), sn.prefix()))
}

/// Go flanneld's lease value for a host-gw node at `ip`.
pub fn host_gw_value(ip: &str) -> String {
    format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#)
}

/// Go flanneld's lease value for a vxlan node at `ip` with VTEP `mac` (VNI 1).
pub fn vxlan_value(ip: &str, mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    )
}

/// The value of `"<field>" : <value>` in `etcdctl -w fields` output (the first one).
fn field<'a>(fields: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("\"{name}\" : ");
    fields
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::trim)
}

impl Etcd {
    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let status = self.ctl_ok(&["endpoint", "status", "-w", "fields"]);
        field(&status, "Revision")
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no revision in {status}"))
    }

    /// The etcd lease `key` is attached to (0: none), `None` while the key does not exist.
    pub fn lease_id(&self, key: &str) -> Option<i64> {
        let fields = self.ctl_ok(&["get", key, "-w", "fields"]);
        // Without a kv, `-w fields` prints the header and "Count" : 0 only.
        field(&fields, "Lease").map(|id| {
            id.parse()
                .unwrap_or_else(|_| panic!("lease of {key}: {fields}"))
        })
    }

    /// The history of `key` from revision `from` on, recorded by `etcdctl watch` until the
    /// returned value is dropped.
    pub fn watch_key(&self, key: &str, from: i64) -> KeyHistory {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = self.dir().join(format!("watch-{n}.txt"));
        let file = fs::File::create(&out).unwrap();
        let child = self
            .ctl_command()
            .args(["watch", &format!("--rev={from}"), key, "-w", "fields"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("etcdctl (apt-get install etcd-client)");
        KeyHistory { child, out }
    }

    /// Writes `kvs` in order over one etcd-client connection, all on one etcd lease of
    /// `ttl`, from inside the LAN namespace (plain HTTP etcd without auth only).
    pub fn put_raw(&self, kvs: &[(String, String)], ttl: Duration) {
        assert!(
            !self.endpoint().starts_with("https"),
            "put_raw speaks plain HTTP only"
        );
        let endpoint = self.endpoint();
        crate::in_netns::block_on(self.ns_path(), || async {
            let mut c = Client::connect([endpoint.as_str()], None)
                .await
                .unwrap_or_else(|e| panic!("etcd {endpoint}: {e}"));
            let secs = i64::try_from(ttl.as_secs()).unwrap();
            let id = c.lease_grant(secs, None).await.unwrap().id();
            for (k, v) in kvs {
                c.put(
                    k.as_bytes(),
                    v.as_bytes(),
                    Some(PutOptions::new().with_lease(id)),
                )
                .await
                .unwrap_or_else(|e| panic!("put {k:?}: {e}"));
            }
        })
        .unwrap();
    }
}

/// One change of a watched key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEvent {
    /// Written, attached to this etcd lease (0: none).
    Put {
        /// The etcd lease ID.
        lease: i64,
    },
    /// Deleted, or its lease expired.
    Delete,
}

/// A running `etcdctl watch` of one key ([`Etcd::watch_key`]), stopped by PID on drop.
#[derive(Debug)]
pub struct KeyHistory {
    child: Child,
    out: PathBuf,
}

impl KeyHistory {
    /// What `etcdctl` printed so far.
    pub fn text(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The events so far, in order.
    pub fn events(&self) -> Vec<KeyEvent> {
        let mut events = Vec::new();
        for line in self.text().lines() {
            if let Some(kind) = line.strip_prefix("\"Type\" : ") {
                events.push(if kind.trim() == "DELETE" {
                    KeyEvent::Delete
                } else {
                    KeyEvent::Put { lease: 0 }
                });
            } else if let Some(id) = line.strip_prefix("\"Lease\" : ")
                && let Some(KeyEvent::Put { lease }) = events.last_mut()
            {
                *lease = id.trim().parse().unwrap_or(0);
            }
        }
        events
    }
}

impl Drop for KeyHistory {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(2));
    }
}
