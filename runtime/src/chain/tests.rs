//! The chain logic against a fake [`Exec`] that records every call and answers with canned
//! outputs: by default ADD prints `{"by": <type>, "saw": <its prevResult>}`, everything else
//! succeeds silently.

use std::cell::RefCell;

use cni_common::CniError;
use serde_json::json;

use super::*;
use crate::error::ConfigError;
use crate::exec::ExecError;

#[derive(Debug, Clone)]
struct Call {
    plugin: String,
    command: Command,
    att: Option<Attachment>,
    stdin: Value,
}

#[derive(Default)]
struct Fake {
    calls: RefCell<Vec<Call>>,
    canned: Vec<(String, Command, Output)>,
}

impl Fake {
    fn answer(mut self, plugin: &str, command: Command, exit_code: i32, stdout: &str) -> Fake {
        let output = Output {
            exit_code,
            stdout: stdout.into(),
            stderr: String::new(),
        };
        self.canned.push((plugin.into(), command, output));
        self
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// `TYPE COMMAND` of every call, in order.
    fn trace(&self) -> Vec<String> {
        (self.calls.borrow().iter())
            .map(|c| format!("{} {}", c.plugin, c.command.as_str()))
            .collect()
    }
}

impl Exec for Fake {
    fn exec(
        &self,
        plugin: &str,
        command: Command,
        att: Option<&Attachment>,
        stdin: &Value,
    ) -> Result<Output, ExecError> {
        self.calls.borrow_mut().push(Call {
            plugin: plugin.into(),
            command,
            att: att.cloned(),
            stdin: stdin.clone(),
        });
        if plugin == "missing" {
            return Err(ExecError::NotFound(CniError::plugin(
                102,
                "failed to find plugin \"missing\"",
                "",
            )));
        }
        let canned = self
            .canned
            .iter()
            .find(|(p, c, _)| p == plugin && *c == command);
        Ok(match (canned, command) {
            (Some((_, _, out)), _) => out.clone(),
            (None, Command::Add) => Output {
                stdout: json!({"by": plugin, "saw": stdin.get("prevResult")}).to_string(),
                ..Output::default()
            },
            (None, _) => Output::default(),
        })
    }
}

fn chain(version: &str, types: &[&str]) -> Chain {
    let plugins: Vec<Value> = types.iter().map(|t| json!({"type": t})).collect();
    let list = json!({"cniVersion": version, "name": "net", "plugins": plugins});
    Chain::new(NetworkConfigList::from_value(list).unwrap())
}

fn att() -> Attachment {
    Attachment::new("c1", "/run/netns/p1", "eth0")
}

#[test]
fn add_runs_in_order_and_threads_prev_result() {
    let fake = Fake::default();
    let result = chain("1.0.0", &["a", "b", "c"]).add(&fake, &att()).unwrap();
    assert_eq!(fake.trace(), ["a ADD", "b ADD", "c ADD"]);
    let calls = fake.calls();
    assert_eq!(calls[0].stdin.get("prevResult"), None);
    assert_eq!(
        calls[1].stdin["prevResult"],
        json!({"by": "a", "saw": null})
    );
    assert_eq!(
        calls[2].stdin["prevResult"],
        json!({"by": "b", "saw": {"by": "a", "saw": null}})
    );
    assert_eq!(result["by"], "c");
    assert!(calls.iter().all(|c| c.att == Some(att())));
}

#[test]
fn add_prefix_stops_after_count_plugins() {
    let fake = Fake::default();
    let result = chain("1.0.0", &["a", "b", "c"])
        .add_prefix(&fake, &att(), 2)
        .unwrap();
    assert_eq!(fake.trace(), ["a ADD", "b ADD"]);
    assert_eq!(result["by"], "b");
    let none = chain("1.0.0", &["a"]).add_prefix(&fake, &att(), 0).unwrap();
    assert_eq!(none, Value::Null);
}

#[test]
fn add_stops_at_the_failing_plugin_with_its_index_type_and_cni_error() {
    let fake = Fake::default().answer(
        "b",
        Command::Add,
        1,
        r#"{"code": 106, "msg": "no addresses left", "details": "range 10.0.0.0/30"}"#,
    );
    let err = chain("1.0.0", &["a", "b", "c"])
        .add(&fake, &att())
        .unwrap_err();
    assert_eq!(fake.trace(), ["a ADD", "b ADD"]);
    let Error::Plugin {
        index,
        plugin,
        command,
        failure,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!((*index, plugin.as_str(), *command), (1, "b", Command::Add));
    assert_eq!(failure.output().map(|o| o.exit_code), Some(1));
    let cni = err.cni_error().unwrap();
    assert_eq!(
        (cni.code(), cni.to_string()),
        (106, "no addresses left".into())
    );
    assert_eq!(
        err.to_string(),
        "plugin type=\"b\" failed: no addresses left: range 10.0.0.0/30"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn failures_without_an_error_object_or_without_a_result_are_reported() {
    let fake = Fake::default().answer("a", Command::Add, 0, "not json");
    let err = chain("1.0.0", &["a"]).add(&fake, &att()).unwrap_err();
    assert!(matches!(
        &err,
        Error::Plugin { failure, .. } if matches!(**failure, PluginFailure::BadResult { .. })
    ));
    let fake = Fake::default().answer("a", Command::Del, 2, "segfault\n");
    let err = chain("1.0.0", &["a"]).del(&fake, &att(), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin type=\"a\" failed: exit status 2: segfault"
    );
    assert!(err.cni_error().is_none());
    let err = chain("1.0.0", &["missing"])
        .add(&Fake::default(), &att())
        .unwrap_err();
    assert_eq!(err.cni_error().map(CniError::code), Some(102));
    assert_eq!(
        err.to_string(),
        "plugin type=\"missing\" failed: failed to find plugin \"missing\""
    );
}

#[test]
fn del_runs_in_reverse_with_the_cached_result_from_0_4_0() {
    let cached = json!({"cniVersion": "0.4.0", "ips": []});
    let fake = Fake::default();
    chain("0.4.0", &["a", "b", "c"])
        .del(&fake, &att(), Some(&cached))
        .unwrap();
    assert_eq!(fake.trace(), ["c DEL", "b DEL", "a DEL"]);
    assert!(fake.calls().iter().all(|c| c.stdin["prevResult"] == cached));
}

#[test]
fn del_sends_no_prev_result_before_0_4_0() {
    let fake = Fake::default();
    chain("0.3.1", &["a", "b"])
        .del(&fake, &att(), Some(&json!({"ips": []})))
        .unwrap();
    assert_eq!(fake.trace(), ["b DEL", "a DEL"]);
    assert!(
        fake.calls()
            .iter()
            .all(|c| c.stdin.get("prevResult").is_none())
    );
}

#[test]
fn del_stops_at_the_first_failure() {
    let fake = Fake::default().answer("b", Command::Del, 1, r#"{"code": 5, "msg": "io"}"#);
    let err = chain("1.0.0", &["a", "b", "c"])
        .del(&fake, &att(), None)
        .unwrap_err();
    assert_eq!(fake.trace(), ["c DEL", "b DEL"]);
    assert!(matches!(err, Error::Plugin { index: 1, .. }));
}

#[test]
fn check_passes_the_cached_result_to_every_plugin() {
    let cached = json!({"cniVersion": "1.0.0"});
    let fake = Fake::default();
    chain("1.0.0", &["a", "b"])
        .check(&fake, &att(), &cached)
        .unwrap();
    assert_eq!(fake.trace(), ["a CHECK", "b CHECK"]);
    assert!(fake.calls().iter().all(|c| c.stdin["prevResult"] == cached));
}

#[test]
fn check_is_refused_before_0_4_0_and_skipped_with_disable_check() {
    let fake = Fake::default();
    let err = chain("0.3.1", &["a"])
        .check(&fake, &att(), &json!({}))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "configuration version \"0.3.1\" does not support the CHECK command"
    );
    let list = json!({"cniVersion": "1.0.0", "name": "net", "disableCheck": "true",
        "plugins": [{"type": "a"}]});
    Chain::new(NetworkConfigList::from_value(list).unwrap())
        .check(&fake, &att(), &json!({}))
        .unwrap();
    assert!(fake.trace().is_empty());
}

#[test]
fn capability_args_reach_only_plugins_that_enable_them() {
    let list = json!({"cniVersion": "1.0.0", "name": "net", "plugins": [
        {"type": "bridge", "capabilities": {"mac": true, "ips": false}},
        {"type": "portmap", "Capabilities": {"portMappings": true, "bandwidth": true}},
        {"type": "tuning", "runtimeConfig": {"kept": true}}]});
    let args = json!({"mac": "02:00:00:00:00:01", "ips": ["10.0.0.9/24"],
        "portMappings": [{"hostPort": 80, "containerPort": 8080}]});
    let chain = Chain::new(NetworkConfigList::from_value(list).unwrap())
        .with_capability_args(args.as_object().unwrap().clone());
    let fake = Fake::default();
    chain.add(&fake, &att()).unwrap();
    let calls = fake.calls();
    assert_eq!(
        calls[0].stdin["runtimeConfig"],
        json!({"mac": "02:00:00:00:00:01"})
    );
    assert_eq!(
        calls[1].stdin["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 80, "containerPort": 8080}]})
    );
    // No capability arguments of its own: its config is left as written.
    assert_eq!(calls[2].stdin["runtimeConfig"], json!({"kept": true}));
}

#[test]
fn request_config_is_the_plugin_with_the_lists_name_and_version() {
    let list = json!({"cniVersion": "1.1.0", "name": "net", "disableGC": true,
        "plugins": [{"Type": "bridge", "name": "ignored", "bridge": "cni0"}]});
    let chain = Chain::new(NetworkConfigList::from_value(list).unwrap());
    let prev = json!({"ips": []});
    assert_eq!(
        chain.request_config(0, Some(&prev)).unwrap(),
        json!({"Type": "bridge", "name": "net", "cniVersion": "1.1.0", "bridge": "cni0",
            "prevResult": {"ips": []}})
    );
    assert!(matches!(
        chain.request_config(1, None),
        Err(Error::NoSuchPlugin { index: 1 })
    ));
    // The plugin's type is read in any case of the key, as libcni's Go struct reads it.
    let fake = Fake::default();
    chain.add(&fake, &att()).unwrap();
    assert_eq!(fake.trace(), ["bridge ADD"]);
}

#[test]
fn gc_sends_the_valid_attachments_to_every_plugin_and_reports_the_first_failure() {
    let fake = Fake::default()
        .answer("a", Command::Gc, 1, r#"{"code": 104, "msg": "first"}"#)
        .answer("b", Command::Gc, 1, r#"{"code": 105, "msg": "second"}"#);
    let valid = [
        Attachment::new("c1", "/x", "eth0"),
        Attachment::new("c2", "", "net1"),
    ];
    let err = chain("1.1.0", &["a", "b", "c"])
        .gc(&fake, &valid)
        .unwrap_err();
    assert_eq!(fake.trace(), ["a GC", "b GC", "c GC"]);
    assert!(matches!(err, Error::Plugin { index: 0, .. }), "{err}");
    for call in fake.calls() {
        assert_eq!(call.att, None);
        assert_eq!(
            call.stdin[VALID_ATTACHMENTS],
            json!([{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}])
        );
    }
}

#[test]
fn gc_is_skipped_before_1_1_0_and_with_disable_gc() {
    let fake = Fake::default();
    chain("1.0.0", &["a"]).gc(&fake, &[]).unwrap();
    let list = json!({"cniVersion": "1.1.0", "name": "net", "disableGC": true,
        "plugins": [{"type": "a"}]});
    Chain::new(NetworkConfigList::from_value(list).unwrap())
        .gc(&fake, &[])
        .unwrap();
    assert!(fake.trace().is_empty());
}

#[test]
fn status_stops_at_the_first_plugin_not_ready_and_needs_1_1_0() {
    let fake = Fake::default().answer(
        "b",
        Command::Status,
        1,
        r#"{"code": 50, "msg": "not ready"}"#,
    );
    let err = chain("1.1.0", &["a", "b", "c"]).status(&fake).unwrap_err();
    assert_eq!(fake.trace(), ["a STATUS", "b STATUS"]);
    assert_eq!(err.cni_error().map(CniError::code), Some(50));
    assert!(fake.calls().iter().all(|c| c.att.is_none()));
    let old = Fake::default();
    chain("1.0.0", &["a"]).status(&old).unwrap();
    assert!(old.trace().is_empty());
}

#[test]
fn the_version_sent_is_the_lists_even_without_one() {
    let list = json!({"name": "net", "plugins": [{"type": "a", "cniVersion": "1.0.0"}]});
    let chain = Chain::new(NetworkConfigList::from_value(list).unwrap());
    assert_eq!(
        chain.request_config(0, None).unwrap()["cniVersion"],
        "0.1.0"
    );
    assert!(matches!(
        chain.ensure_check_supported(),
        Err(Error::Unsupported {
            version: Version::V0_1_0,
            ..
        })
    ));
    assert!(matches!(
        NetworkConfigList::from_value(
            json!({"name": "n", "cniVersion": 1, "plugins": [{"type": "a"}]})
        ),
        Err(ConfigError::Version { .. })
    ));
}
