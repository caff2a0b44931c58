use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::rc::Rc;

use cni_common::skel::{Outcome, run};

use super::*;

/// A namespace's `lo`, shared between the fake and the test.
#[derive(Debug, Default)]
struct FakeLo {
    up: bool,
    addresses: Vec<IpNetwork>,
}

#[derive(Clone, Default)]
struct FakeOpener {
    namespaces: Rc<RefCell<HashMap<String, Rc<RefCell<FakeLo>>>>>,
}

struct FakeLink(Rc<RefCell<FakeLo>>);

impl LoLink for FakeLink {
    fn set_up(&mut self, up: bool) -> Result<(), CniError> {
        self.0.borrow_mut().up = up;
        Ok(())
    }
    fn is_up(&mut self) -> Result<bool, CniError> {
        Ok(self.0.borrow().up)
    }
    fn addresses(&mut self) -> Result<Vec<IpNetwork>, CniError> {
        Ok(self.0.borrow().addresses.clone())
    }
}

impl LinkOpener for FakeOpener {
    type Link = FakeLink;
    fn open(&self, netns: &Path) -> Result<Option<FakeLink>, CniError> {
        let key = netns.display().to_string();
        Ok(self.namespaces.borrow().get(&key).cloned().map(FakeLink))
    }
}

impl FakeOpener {
    fn with_ns(path: &str, addresses: &[&str]) -> (FakeOpener, Rc<RefCell<FakeLo>>) {
        let lo = Rc::new(RefCell::new(FakeLo {
            up: false,
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }));
        let opener = FakeOpener::default();
        opener
            .namespaces
            .borrow_mut()
            .insert(path.to_owned(), lo.clone());
        (opener, lo)
    }
}

fn invoke(opener: &FakeOpener, command: &str, netns: &str, stdin: &str) -> Outcome {
    let vars: HashMap<&str, &str> = HashMap::from([
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "ctr1"),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "lo"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]);
    let plugin = Loopback::with_opener(opener.clone());
    run(
        &plugin,
        |k| vars.get(k).map(OsString::from),
        stdin.as_bytes(),
    )
}

const CONF_1: &str = r#"{"cniVersion":"1.0.0","name":"lo-net","type":"loopback"}"#;

#[test]
fn add_sets_up_and_reports_addresses() {
    let (opener, lo) = FakeOpener::with_ns("/ns/a", &["127.0.0.1/8", "::1/128"]);
    let out = invoke(&opener, "ADD", "/ns/a", CONF_1);
    assert_eq!(out.exit_code, 0, "{}", out.stdout);
    assert!(lo.borrow().up);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["interfaces"][0]["name"], "lo");
    assert_eq!(v["interfaces"][0]["sandbox"], "/ns/a");
    assert_eq!(v["ips"][0]["address"], "127.0.0.1/8");
    assert_eq!(v["ips"][1]["address"], "::1/128");
    assert_eq!(v["ips"][1]["interface"], 0);
}

#[test]
fn add_refuses_non_loopback_addresses() {
    let (opener, _) = FakeOpener::with_ns("/ns/a", &["127.0.0.1/8", "10.0.0.1/24"]);
    let out = invoke(&opener, "ADD", "/ns/a", CONF_1);
    assert_eq!(out.exit_code, 1);
    assert!(
        out.stdout
            .contains("loopback interface found with non-loopback address \\\"10.0.0.1\\\""),
        "{}",
        out.stdout
    );
}

#[test]
fn add_passes_prev_result_through() {
    let (opener, lo) = FakeOpener::with_ns("/ns/a", &["127.0.0.1/8"]);
    let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"loopback",
        "prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.4/16"}]}}"#;
    let out = invoke(&opener, "ADD", "/ns/a", conf);
    assert_eq!(out.exit_code, 0);
    assert!(lo.borrow().up);
    assert!(out.stdout.contains("10.9.0.4/16"));
    assert!(!out.stdout.contains("127.0.0.1"));
}

#[test]
fn add_with_bad_prev_result_changes_nothing() {
    let (opener, lo) = FakeOpener::with_ns("/ns/a", &["127.0.0.1/8"]);
    let conf = r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"nope"}]}}"#;
    let out = invoke(&opener, "ADD", "/ns/a", conf);
    assert_eq!(out.exit_code, 1);
    assert!(!lo.borrow().up);
}

#[test]
fn add_without_namespace_fails_clearly() {
    let opener = FakeOpener::default();
    let out = invoke(&opener, "ADD", "/ns/missing", CONF_1);
    assert_eq!(out.exit_code, 1);
    assert!(out.stdout.contains("\"code\": 100"), "{}", out.stdout);
    assert!(out.stdout.contains("/ns/missing does not exist"));
}

#[test]
fn del_brings_lo_down_and_tolerates_missing_namespace() {
    let (opener, lo) = FakeOpener::with_ns("/ns/a", &["127.0.0.1/8"]);
    lo.borrow_mut().up = true;
    assert_eq!(invoke(&opener, "DEL", "/ns/a", CONF_1).exit_code, 0);
    assert!(!lo.borrow().up);
    assert_eq!(invoke(&opener, "DEL", "/ns/gone", CONF_1).exit_code, 0);
    assert_eq!(invoke(&opener, "DEL", "", CONF_1).exit_code, 0);
}

#[test]
fn check_fails_when_down() {
    let (opener, lo) = FakeOpener::with_ns("/ns/a", &["127.0.0.1/8"]);
    let out = invoke(&opener, "CHECK", "/ns/a", CONF_1);
    assert_eq!(out.exit_code, 1);
    assert!(out.stdout.contains("loopback interface is down"));
    lo.borrow_mut().up = true;
    assert_eq!(invoke(&opener, "CHECK", "/ns/a", CONF_1).exit_code, 0);
}

#[test]
fn old_versions_get_old_shapes() {
    let (opener, _) = FakeOpener::with_ns("/ns/a", &["127.0.0.1/8", "::1/128"]);
    let out = invoke(
        &opener,
        "ADD",
        "/ns/a",
        r#"{"cniVersion":"0.2.0","name":"n"}"#,
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ip4"]["ip"], "127.0.0.1/8");
    assert_eq!(v["ip6"]["ip"], "::1/128");
    let out = invoke(
        &opener,
        "ADD",
        "/ns/a",
        r#"{"cniVersion":"0.3.1","name":"n"}"#,
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ips"][0]["version"], "4");
    assert_eq!(v["dns"], serde_json::json!({}));
}
