//! flannel's commands against in-memory fakes of the delegate, the saved configs and
//! subnet.env: the order of their steps, what reaches the delegate, what stays saved, and the
//! code of each failure. No root, no files, no processes.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use cni_common::config::Strictness;
use cni_common::env::Environment;
use cni_common::{CniError, CniResult, Command, Invocation, NetConf, TypedPlugin, Version};
use serde_json::{Map, Value, json};

use crate::Flannel;
use crate::delegate::Delegate;
use crate::error::FlannelError;
use crate::saved::{Saved, SavedConfigs, path};
use crate::subnet_env::SubnetEnvSource;

const SUBNET_FILE: &str = "/run/flannel/subnet.env";
const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n";
/// What flannel builds from [`conf`] and [`SUBNET_ENV`], as saved (compact, sorted keys).
const DELEGATE: &str = r#"{"cniVersion":"1.1.0","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}]],"routes":[{"dst":"10.1.0.0/16"}],"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cbr0","type":"bridge"}"#;

/// All three seams in one, so that one journal records every step in order.
#[derive(Default)]
struct Fakes {
    /// Each step: `"find bridge"`, `"save /d/c1"`, `"ADD bridge"`, `"remove /d/c1"`, ...
    journal: RefCell<Vec<String>>,
    /// subnet.env by path: its text, or the error reading it gives. Absent: not found.
    subnet_env: RefCell<HashMap<PathBuf, Result<String, io::ErrorKind>>>,
    /// Saved configs and temp files by path.
    files: RefCell<BTreeMap<PathBuf, Vec<u8>>>,
    /// Plugins missing from `CNI_PATH`.
    missing: Vec<&'static str>,
    /// Delegate commands that fail, with the delegate's code.
    failing: Vec<(Command, u32)>,
    /// A store operation (`"save"`, `"read"`, `"remove"`, `"remove_temp"`, `"list"`) that
    /// fails with EACCES.
    store_fails: Option<&'static str>,
    /// The configs the delegate got, by command, in order.
    sent: RefCell<Vec<(Command, Map<String, Value>)>>,
}

impl Fakes {
    fn ready() -> Fakes {
        let f = Fakes::default();
        f.subnet_env
            .borrow_mut()
            .insert(SUBNET_FILE.into(), Ok(SUBNET_ENV.into()));
        f
    }

    fn failing(mut self, command: Command, code: u32) -> Fakes {
        self.failing.push((command, code));
        self
    }

    fn store_failing(mut self, op: &'static str) -> Fakes {
        self.store_fails = Some(op);
        self
    }

    fn plugin(&self) -> Flannel<&Fakes, &Fakes, &Fakes> {
        Flannel {
            delegate: self,
            saved: self,
            subnet_env: self,
        }
    }

    fn log(&self, step: String) {
        self.journal.borrow_mut().push(step);
    }

    fn journal(&self) -> Vec<String> {
        self.journal.borrow().clone()
    }

    fn file(&self, p: &str) -> Option<String> {
        self.files
            .borrow()
            .get(Path::new(p))
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    fn put(&self, p: &str, text: &str) {
        self.files
            .borrow_mut()
            .insert(p.into(), text.as_bytes().to_vec());
    }

    fn names(&self) -> Vec<String> {
        self.files
            .borrow()
            .keys()
            .map(|p| p.display().to_string())
            .collect()
    }

    fn sent(&self, command: Command) -> Vec<Map<String, Value>> {
        self.sent
            .borrow()
            .iter()
            .filter(|(c, _)| *c == command)
            .map(|(_, m)| m.clone())
            .collect()
    }

    fn store_op(&self, op: &str, p: &Path) -> Result<(), FlannelError> {
        self.log(format!("{op} {}", p.display()));
        if self.store_fails == Some(op) {
            return Err(FlannelError::state(
                "cannot touch",
                p,
                io::Error::from(io::ErrorKind::PermissionDenied),
            ));
        }
        Ok(())
    }

    fn run(&self, kind: &str, command: Command, config: &[u8]) -> Result<(), CniError> {
        self.log(format!("{} {kind}", command.as_str()));
        let map: Map<String, Value> =
            serde_json::from_slice(config).map_err(|e| CniError::decode(e.to_string(), ""))?;
        self.sent.borrow_mut().push((command, map));
        match self.failing.iter().find(|(c, _)| *c == command) {
            Some(&(_, code)) => Err(CniError::Delegated {
                code,
                msg: format!("{} failed", command.as_str()),
                details: "from the fake".into(),
            }),
            None => Ok(()),
        }
    }
}

impl Delegate for &Fakes {
    fn find(&self, kind: &str, _: &Environment) -> Result<(), CniError> {
        self.log(format!("find {kind}"));
        if self.missing.contains(&kind) {
            return Err(CniError::plugin(
                102,
                format!("failed to find plugin \"{kind}\""),
                "",
            ));
        }
        Ok(())
    }

    fn add(
        &self,
        kind: &str,
        _: &Environment,
        config: &[u8],
        _: Version,
    ) -> Result<CniResult, CniError> {
        self.run(kind, Command::Add, config)?;
        Ok(serde_json::from_str(r#"{"ips":[{"address":"10.1.17.2/24"}]}"#).unwrap())
    }

    fn exec(
        &self,
        kind: &str,
        command: Command,
        _: &Environment,
        config: &[u8],
    ) -> Result<(), CniError> {
        self.run(kind, command, config)
    }
}

impl SavedConfigs for &Fakes {
    fn save(&self, dir: &Path, id: &str, bytes: &[u8]) -> Result<PathBuf, FlannelError> {
        let p = path(dir, id);
        self.store_op("save", &p)?;
        self.files.borrow_mut().insert(p.clone(), bytes.to_vec());
        Ok(p)
    }

    fn read(&self, dir: &Path, id: &str) -> Result<Option<Vec<u8>>, FlannelError> {
        let p = path(dir, id);
        self.store_op("read", &p)?;
        Ok(self.files.borrow().get(&p).cloned())
    }

    fn remove(&self, dir: &Path, id: &str) -> Result<(), FlannelError> {
        let p = path(dir, id);
        self.store_op("remove", &p)?;
        self.files.borrow_mut().remove(&p);
        Ok(())
    }

    fn remove_temp(&self, dir: &Path, id: &str) -> Result<(), FlannelError> {
        let p = dir.join(format!(".{id}.tmp"));
        self.store_op("remove_temp", &p)?;
        self.files.borrow_mut().remove(&p);
        Ok(())
    }

    fn list(&self, dir: &Path, network: &str) -> Result<Vec<Saved>, FlannelError> {
        self.store_op("list", dir)?;
        Ok(self
            .files
            .borrow()
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .filter_map(|(p, bytes)| {
                let id = p.file_name()?.to_str()?.to_owned();
                let map: Map<String, Value> = serde_json::from_slice(bytes).ok()?;
                (!id.starts_with('.') && map.get("name") == Some(&json!(network)))
                    .then_some((id, map))
            })
            .collect())
    }
}

impl SubnetEnvSource for &Fakes {
    fn read(&self, p: &Path) -> io::Result<String> {
        match self.subnet_env.borrow().get(p) {
            Some(Ok(text)) => Ok(text.clone()),
            Some(Err(kind)) => Err(io::Error::from(*kind)),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
}

/// flannel's config as kube-flannel's conflist has it, with `dataDir` `/d`.
fn conf() -> Value {
    json!({"cniVersion": "1.1.0", "name": "cbr0", "type": "flannel",
           "subnetFile": SUBNET_FILE, "dataDir": "/d", "delegate": {"hairpinMode": true}})
}

fn inv(command: Command, config: &Value) -> Invocation {
    let strictness = if command == Command::Del {
        Strictness::ForDel
    } else {
        Strictness::Strict
    };
    let attachment = command.has_attachment();
    Invocation {
        env: Environment {
            command,
            container_id: if attachment {
                "c1".into()
            } else {
                String::new()
            },
            netns: attachment.then(|| PathBuf::from("/var/run/netns/pod")),
            ifname: if attachment {
                "eth0".into()
            } else {
                String::new()
            },
            args: String::new(),
            path: vec![PathBuf::from("/opt/cni/bin")],
            netns_override: false,
        },
        config: NetConf::parse_with(&serde_json::to_vec(config).unwrap(), strictness).unwrap(),
    }
}

/// The error as the runtime sees it: code, message, details.
fn printed(e: FlannelError) -> (u32, String, String) {
    let e = CniError::from(e);
    (e.code(), e.to_string(), e.details().to_owned())
}

fn steps(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

// ADD

#[test]
fn add_finds_the_delegate_then_saves_then_delegates() {
    let f = Fakes::ready();
    let r = f.plugin().add(&inv(Command::Add, &conf())).unwrap();
    assert_eq!(r.ips[0].address.to_string(), "10.1.17.2/24");
    assert_eq!(
        f.journal(),
        steps(&["find bridge", "save /d/c1", "ADD bridge"])
    );
    // Saved as the Go plugin saves it, and the delegate got the same bytes.
    assert_eq!(f.file("/d/c1").as_deref(), Some(DELEGATE));
    assert_eq!(
        f.sent(Command::Add),
        [serde_json::from_str::<Map<String, Value>>(DELEGATE).unwrap()]
    );
}

#[test]
fn add_with_the_delegate_missing_saves_nothing() {
    let f = Fakes {
        missing: vec!["bridge"],
        ..Fakes::ready()
    };
    let e = f.plugin().add(&inv(Command::Add, &conf())).unwrap_err();
    let (code, msg, _) = printed(e);
    assert_eq!(code, 102);
    assert!(msg.starts_with("failed to find plugin \"bridge\""), "{msg}");
    assert_eq!(f.journal(), steps(&["find bridge"]));
    assert!(f.names().is_empty());
}

#[test]
fn a_failed_delegate_add_is_undone_and_its_code_kept() {
    let f = Fakes::ready().failing(Command::Add, 106);
    let e = f.plugin().add(&inv(Command::Add, &conf())).unwrap_err();
    assert_eq!(
        printed(e),
        (
            106,
            "failed to delegate add: ADD failed".into(),
            "from the fake".into()
        )
    );
    assert_eq!(
        f.journal(),
        steps(&[
            "find bridge",
            "save /d/c1",
            "ADD bridge",
            "DEL bridge",
            "remove_temp /d/.c1.tmp",
            "remove /d/c1",
        ])
    );
    // The DEL undoing it got the saved config.
    assert_eq!(f.sent(Command::Del), f.sent(Command::Add));
    assert!(f.names().is_empty(), "saved config left: {:?}", f.names());
}

#[test]
fn a_failed_undo_still_reports_the_add_error() {
    let f = Fakes::ready()
        .failing(Command::Add, 106)
        .failing(Command::Del, 11)
        .store_failing("remove");
    let e = f.plugin().add(&inv(Command::Add, &conf())).unwrap_err();
    assert_eq!(printed(e).0, 106);
    assert!(f.journal().contains(&"remove /d/c1".to_owned()));
}

#[test]
fn add_without_subnet_env_is_try_again_later_and_touches_nothing() {
    let f = Fakes::default();
    let e = f.plugin().add(&inv(Command::Add, &conf())).unwrap_err();
    assert!(matches!(e, FlannelError::SubnetEnvMissing { .. }), "{e:?}");
    assert!(std::error::Error::source(&e).is_some(), "io error dropped");
    let (code, msg, _) = printed(e);
    assert_eq!(code, 11);
    assert!(
        msg.starts_with("/run/flannel/subnet.env does not exist: flanneld has not written it yet"),
        "{msg}"
    );
    assert!(f.journal().is_empty());

    f.subnet_env
        .borrow_mut()
        .insert(SUBNET_FILE.into(), Err(io::ErrorKind::PermissionDenied));
    let (code, msg, _) = printed(f.plugin().add(&inv(Command::Add, &conf())).unwrap_err());
    assert_eq!(code, 11);
    assert!(
        msg.starts_with("cannot read /run/flannel/subnet.env: "),
        "{msg}"
    );
    assert!(f.journal().is_empty());
}

#[test]
fn add_with_a_malformed_subnet_env_names_file_and_line() {
    let f = Fakes::default();
    f.subnet_env.borrow_mut().insert(
        SUBNET_FILE.into(),
        Ok("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.300/24\n".into()),
    );
    let (code, msg, _) = printed(f.plugin().add(&inv(Command::Add, &conf())).unwrap_err());
    assert_eq!(code, 7);
    assert_eq!(
        msg,
        "failed to load flannel 'subnet.env' file: /run/flannel/subnet.env: line 2: \
         FLANNEL_SUBNET=10.1.17.300/24 is not a CIDR. Check the flannel pod log for this node."
    );
    f.subnet_env.borrow_mut().insert(
        SUBNET_FILE.into(),
        Ok("FLANNEL_NETWORK=10.1.0.0/16\n".into()),
    );
    let (_, msg, _) = printed(f.plugin().add(&inv(Command::Add, &conf())).unwrap_err());
    assert!(
        msg.contains("/run/flannel/subnet.env is missing FLANNEL_SUBNET"),
        "{msg}"
    );
    assert!(f.journal().is_empty());
}

#[test]
fn add_that_cannot_save_does_not_run_the_delegate() {
    let f = Fakes::ready().store_failing("save");
    let e = f.plugin().add(&inv(Command::Add, &conf())).unwrap_err();
    match &e {
        FlannelError::State { path, source, .. } => {
            assert_eq!(path, Path::new("/d/c1"));
            assert_eq!(source.kind(), io::ErrorKind::PermissionDenied);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(printed(e).0, 104);
    assert_eq!(f.journal(), steps(&["find bridge", "save /d/c1"]));
    assert!(f.sent.borrow().is_empty());
}

// DEL

#[test]
fn del_runs_the_saved_config_then_removes_it() {
    let f = Fakes::default();
    let saved = DELEGATE.replace("\"bridge\"", "\"other-bridge\"");
    f.put("/d/c1", &saved);
    f.plugin().del(&inv(Command::Del, &conf())).unwrap();
    // The saved config, not one rebuilt (there is no subnet.env), names the delegate.
    assert_eq!(
        f.journal(),
        steps(&[
            "read /d/c1",
            "DEL other-bridge",
            "remove_temp /d/.c1.tmp",
            "remove /d/c1"
        ])
    );
    assert_eq!(
        f.sent(Command::Del),
        [serde_json::from_str::<Map<String, Value>>(&saved).unwrap()]
    );
    assert!(f.names().is_empty());
}

#[test]
fn a_failed_delegate_del_keeps_the_saved_config_and_the_code() {
    let f = Fakes::ready().failing(Command::Del, 11);
    f.put("/d/c1", DELEGATE);
    let e = f.plugin().del(&inv(Command::Del, &conf())).unwrap_err();
    assert_eq!(
        printed(e),
        (
            11,
            "failed to delegate del: DEL failed".into(),
            "from the fake".into()
        )
    );
    assert_eq!(f.journal(), steps(&["read /d/c1", "DEL bridge"]));
    assert_eq!(f.file("/d/c1").as_deref(), Some(DELEGATE));
}

#[test]
fn del_without_a_saved_config_uses_one_rebuilt_from_subnet_env() {
    let f = Fakes::ready();
    f.plugin().del(&inv(Command::Del, &conf())).unwrap();
    assert_eq!(
        f.journal(),
        steps(&["read /d/c1", "remove_temp /d/.c1.tmp", "DEL bridge"])
    );
    assert_eq!(
        f.sent(Command::Del),
        [serde_json::from_str::<Map<String, Value>>(DELEGATE).unwrap()]
    );
}

#[test]
fn del_without_a_saved_config_succeeds_even_if_the_delegate_fails() {
    let f = Fakes::ready().failing(Command::Del, 7);
    f.plugin().del(&inv(Command::Del, &conf())).unwrap();
    assert_eq!(f.sent(Command::Del).len(), 1);
}

#[test]
fn del_without_a_saved_config_or_subnet_env_succeeds() {
    let f = Fakes::default();
    f.plugin().del(&inv(Command::Del, &conf())).unwrap();
    assert_eq!(
        f.journal(),
        steps(&["read /d/c1", "remove_temp /d/.c1.tmp"])
    );
}

#[test]
fn del_removes_the_temp_file_of_a_killed_add() {
    let f = Fakes::default();
    f.put("/d/.c1.tmp", "{\"name\":");
    f.plugin().del(&inv(Command::Del, &conf())).unwrap();
    assert!(f.names().is_empty(), "{:?}", f.names());
    // One that cannot be removed is litter, not a reason to fail the DEL.
    let f = Fakes::default().store_failing("remove_temp");
    f.put("/d/.c1.tmp", "{\"name\":");
    f.plugin().del(&inv(Command::Del, &conf())).unwrap();
}

#[test]
fn del_removes_a_saved_config_that_is_not_json() {
    let f = Fakes::ready();
    f.put("/d/c1", "{\"name\":\"cbr0\"");
    f.plugin().del(&inv(Command::Del, &conf())).unwrap();
    assert!(f.sent.borrow().is_empty(), "a delegate ran");
    assert!(f.names().is_empty());
}

#[test]
fn del_with_an_unreadable_config_finds_the_saved_one_by_container_id() {
    let f = Fakes::default();
    f.put("/d2/c1", DELEGATE);
    let mut config = conf();
    config["dataDir"] = json!("/d2");
    config["delegate"] = json!("not a dictionary");
    config["subnetFile"] = json!(5);
    let request = inv(Command::Del, &config);
    assert!(crate::config::FlannelConf::load(&request.config).is_err());
    f.plugin().del(&request).unwrap();
    assert_eq!(
        f.journal(),
        steps(&[
            "read /d2/c1",
            "DEL bridge",
            "remove_temp /d2/.c1.tmp",
            "remove /d2/c1"
        ])
    );
    assert!(f.names().is_empty());
}

#[test]
fn del_that_cannot_read_the_saved_config_fails_with_its_path() {
    let f = Fakes::ready().store_failing("read");
    let e = f.plugin().del(&inv(Command::Del, &conf())).unwrap_err();
    assert!(matches!(&e, FlannelError::State { path, .. } if path == Path::new("/d/c1")));
    assert_eq!(printed(e).0, 104);
    assert!(f.sent.borrow().is_empty());
}

// CHECK

#[test]
fn check_without_a_saved_config_is_check_failed() {
    let f = Fakes::ready();
    let e = f.plugin().check(&inv(Command::Check, &conf())).unwrap_err();
    assert_eq!(
        printed(e),
        (
            103,
            "no saved delegate config for container c1 in /d".into(),
            String::new()
        )
    );
    assert!(f.sent.borrow().is_empty());
}

#[test]
fn check_hands_the_delegate_the_saved_config_with_prev_result() {
    let f = Fakes::default().failing(Command::Check, 103);
    f.put("/d/c1", DELEGATE);
    let mut config = conf();
    let prev = json!({"cniVersion": "1.1.0", "ips": [{"address": "10.1.17.2/24"}]});
    config["prevResult"] = prev.clone();
    let e = f.plugin().check(&inv(Command::Check, &config)).unwrap_err();
    // The delegate's error as it is: no prefix, same code and details.
    assert_eq!(
        printed(e),
        (103, "CHECK failed".into(), "from the fake".into())
    );
    let mut expected: Map<String, Value> = serde_json::from_str(DELEGATE).unwrap();
    expected.insert("prevResult".into(), prev);
    assert_eq!(f.sent(Command::Check), [expected]);
    assert_eq!(
        f.file("/d/c1").as_deref(),
        Some(DELEGATE),
        "CHECK changed it"
    );
}

#[test]
fn check_with_a_saved_config_that_is_not_json_is_a_state_error() {
    let f = Fakes::default();
    f.put("/d/c1", "{");
    let e = f.plugin().check(&inv(Command::Check, &conf())).unwrap_err();
    assert!(std::error::Error::source(&e).is_some());
    let (code, msg, _) = printed(e);
    assert_eq!(code, 104);
    assert!(
        msg.starts_with("saved delegate config is not JSON: "),
        "{msg}"
    );
}

// STATUS

#[test]
fn status_without_subnet_env_is_not_available() {
    let f = Fakes::default();
    let (code, msg, _) = printed(
        f.plugin()
            .status(&inv(Command::Status, &conf()))
            .unwrap_err(),
    );
    assert_eq!(code, 50);
    assert!(msg.contains("flanneld has not written it yet"), "{msg}");
    assert!(f.sent.borrow().is_empty());
}

#[test]
fn status_asks_the_delegate_with_the_rebuilt_config() {
    let f = Fakes::ready();
    f.plugin().status(&inv(Command::Status, &conf())).unwrap();
    assert_eq!(
        f.sent(Command::Status),
        [serde_json::from_str::<Map<String, Value>>(DELEGATE).unwrap()]
    );
    let f = Fakes::ready().failing(Command::Status, 51);
    let e = f
        .plugin()
        .status(&inv(Command::Status, &conf()))
        .unwrap_err();
    assert_eq!(printed(e).0, 51);
}

// GC

fn gc_conf(valid: &[&str]) -> Value {
    let mut c = conf();
    c["cni.dev/valid-attachments"] = valid
        .iter()
        .map(|id| json!({"containerID": id, "ifname": "eth0"}))
        .collect();
    c
}

#[test]
fn gc_forwards_the_valid_attachments_and_drops_stale_saved_configs() {
    let f = Fakes::ready();
    f.put("/d/keep", DELEGATE);
    f.put("/d/stale", DELEGATE);
    f.put(
        "/d/other-net",
        &DELEGATE.replace("\"name\":\"cbr0\"", "\"name\":\"other\""),
    );
    f.plugin()
        .gc(&inv(Command::Gc, &gc_conf(&["keep"])))
        .unwrap();
    let sent = f.sent(Command::Gc);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]["cni.dev/valid-attachments"],
        json!([{"containerID": "keep", "ifname": "eth0"}])
    );
    assert_eq!(sent[0]["cniVersion"], "1.1.0");
    assert_eq!(
        sent[0]["ipam"]["ranges"],
        json!([[{"subnet": "10.1.17.0/24"}]])
    );
    assert_eq!(f.names(), ["/d/keep", "/d/other-net"]);
    // The delegate ran before anything was dropped.
    let journal = f.journal();
    let gc_at = journal.iter().position(|s| s == "GC bridge").unwrap();
    let rm_at = journal.iter().position(|s| s == "remove /d/stale").unwrap();
    assert!(gc_at < rm_at, "{journal:?}");
}

#[test]
fn gc_forwards_a_list_under_the_old_name_under_the_new_one() {
    let f = Fakes::ready();
    f.put("/d/keep", DELEGATE);
    let mut c = conf();
    c["cni.dev/attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    f.plugin().gc(&inv(Command::Gc, &c)).unwrap();
    assert_eq!(
        f.sent(Command::Gc)[0]["cni.dev/valid-attachments"],
        json!([{"containerID": "keep", "ifname": "eth0"}])
    );
    assert_eq!(f.names(), ["/d/keep"]);
}

#[test]
fn gc_without_subnet_env_takes_the_delegate_from_a_saved_config() {
    let f = Fakes::default();
    let old = DELEGATE
        .replace("\"cniVersion\":\"1.1.0\"", "\"cniVersion\":\"0.3.1\"")
        .replace("10.1.17.0/24", "10.1.9.0/24");
    f.put("/d/a", &old);
    f.put("/d/b", DELEGATE);
    f.plugin().gc(&inv(Command::Gc, &gc_conf(&[]))).unwrap();
    let sent = f.sent(Command::Gc);
    assert_eq!(sent.len(), 1);
    // The first saved config by container ID, in the request's version.
    assert_eq!(
        sent[0]["ipam"]["ranges"],
        json!([[{"subnet": "10.1.9.0/24"}]])
    );
    assert_eq!(sent[0]["cniVersion"], "1.1.0");
    assert_eq!(sent[0]["cni.dev/valid-attachments"], json!([]));
    assert!(f.names().is_empty());
}

#[test]
fn gc_without_subnet_env_or_saved_configs_has_nothing_to_do() {
    let f = Fakes::default();
    f.plugin().gc(&inv(Command::Gc, &gc_conf(&[]))).unwrap();
    assert!(f.sent.borrow().is_empty());
}

#[test]
fn a_failed_delegate_gc_keeps_the_saved_configs_and_the_code() {
    let f = Fakes::ready().failing(Command::Gc, 104);
    f.put("/d/stale", DELEGATE);
    let (code, msg, _) = printed(f.plugin().gc(&inv(Command::Gc, &gc_conf(&[]))).unwrap_err());
    assert_eq!((code, msg.as_str()), (104, "GC failed"));
    assert_eq!(f.names(), ["/d/stale"]);
}

#[test]
fn gc_that_cannot_list_the_saved_configs_still_runs_the_delegate() {
    let f = Fakes::ready().store_failing("list");
    f.plugin().gc(&inv(Command::Gc, &gc_conf(&[]))).unwrap();
    assert_eq!(f.sent(Command::Gc).len(), 1);
}

// Through the skeleton, as the binary runs it.

#[test]
fn the_skeleton_prints_flannel_errors_with_their_code() {
    let f = Fakes::default();
    let plugin = f.plugin();
    let vars: HashMap<&str, &str> = HashMap::from([
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/nonexistent/netns"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]);
    let out = cni_common::skel::run(
        &plugin,
        |k| vars.get(k).map(Into::into),
        conf().to_string().as_bytes(),
    );
    assert_eq!(out.exit_code, 1);
    assert!(out.stdout.contains("\"code\": 11,"), "{}", out.stdout);
    assert_eq!(cni_common::Plugin::name(&plugin), "flannel");
}
