use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{fold_eq, from_slice, from_value, get};

#[derive(Debug, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
struct Mapping {
    #[serde(default)]
    host_port: i64,
    #[serde(default)]
    container_port: i64,
    #[serde(default)]
    protocol: String,
    #[serde(default, rename = "hostIP")]
    host_ip: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Runtime {
    #[serde(default)]
    port_mappings: Vec<Mapping>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Conf {
    #[serde(default)]
    runtime_config: Option<Runtime>,
    #[serde(default = "yes")]
    preserve: bool,
    #[serde(default)]
    capabilities: Map<String, Value>,
    #[serde(default)]
    nested: Vec<Vec<Range>>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Range {
    subnet: String,
    #[serde(default)]
    range_start: Option<String>,
}

fn yes() -> bool {
    true
}

fn conf(s: &str) -> Result<Conf, serde_json::Error> {
    from_slice(s.as_bytes())
}

#[test]
fn containerd_capability_spelling_is_read() {
    // What containerd's go-cni marshals: Go field names, no tags.
    let c = conf(
        r#"{"RuntimeConfig":{"portMappings":[{"HostPort":8080,"ContainerPort":80,
            "Protocol":"tcp","HostIP":""}]}}"#,
    )
    .unwrap();
    let m = &c.runtime_config.unwrap().port_mappings[0];
    assert_eq!(
        m,
        &Mapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: Some(String::new()),
        }
    );
}

#[test]
fn any_case_at_any_depth() {
    let c = conf(r#"{"NESTED":[[{"SUBNET":"10.0.0.0/24","rangestart":"10.0.0.5"}]]}"#).unwrap();
    assert_eq!(c.nested[0][0].subnet, "10.0.0.0/24");
    assert_eq!(c.nested[0][0].range_start.as_deref(), Some("10.0.0.5"));
}

#[test]
fn later_key_for_the_same_field_wins_in_document_order() {
    let a = conf(r#"{"runtimeConfig":{"portMappings":[{"hostPort":1,"HostPort":2}]}}"#).unwrap();
    assert_eq!(a.runtime_config.unwrap().port_mappings[0].host_port, 2);
    let b = conf(r#"{"runtimeConfig":{"portMappings":[{"HostPort":2,"hostPort":1}]}}"#).unwrap();
    assert_eq!(b.runtime_config.unwrap().port_mappings[0].host_port, 1);
}

#[test]
fn null_leaves_the_default() {
    let c = conf(r#"{"preserve":null,"runtimeConfig":null}"#).unwrap();
    assert!(c.preserve);
    assert_eq!(c.runtime_config, None);
    let m: Mapping = from_slice(br#"{"hostPort":null,"protocol":null}"#).unwrap();
    assert_eq!(m, Mapping::default());
}

#[test]
fn map_keys_stay_as_written() {
    let c = conf(r#"{"Capabilities":{"PortMappings":true,"portMappings":false}}"#).unwrap();
    assert_eq!(c.capabilities.len(), 2);
    assert_eq!(c.capabilities["PortMappings"], true);
}

#[test]
fn unknown_keys_are_ignored_and_wrong_types_are_errors() {
    assert!(conf(r#"{"whatever":{"x":[1,2]},"hostPort":"x"}"#).is_ok());
    let e = conf(r#"{"Preserve":"yes"}"#).unwrap_err().to_string();
    assert_eq!(e, "invalid type: string \"yes\", expected a boolean");
    let e = conf(r#"{"nested":[[{"rangeStart":"x"}]]}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing field `subnet`"), "{e}");
    assert!(conf(r#"{"nested":{}}"#).is_err());
    assert!(conf("[1]").is_err());
    assert!(conf("{").is_err());
}

#[test]
fn go_folding() {
    assert!(fold_eq("hostPort", "HOSTPORT"));
    assert!(fold_eq("hostIP", "HostIp"));
    // Go folds the Kelvin sign to k and the long s to s.
    assert!(fold_eq("\u{212a}ey", "key"));
    assert!(fold_eq("\u{17f}ubnet", "subnet"));
    assert!(!fold_eq("subnet", "subnets"));
    assert!(!fold_eq("hostPort", "host_port"));
    let c = conf(r#"{"nested":[[{"ſubnet":"10.1.0.0/16"}]]}"#).unwrap();
    assert_eq!(c.nested[0][0].subnet, "10.1.0.0/16");
}

#[test]
fn exact_match_beats_a_folded_one() {
    #[derive(Deserialize)]
    struct Two {
        #[serde(rename = "Name")]
        upper: Option<String>,
        name: Option<String>,
    }
    let t: Two = from_slice(br#"{"name":"a","NAME":"b"}"#).unwrap();
    // "name" is exact for `name`; "NAME" folds to the first field in order, `Name`.
    assert_eq!(t.name.as_deref(), Some("a"));
    assert_eq!(t.upper.as_deref(), Some("b"));
}

#[test]
fn escaped_keys_and_values() {
    let c = conf(r#"{"runtime\u0043onfig":{"portMappings":[{"protocol":"t\"cp"}]}}"#).unwrap();
    assert_eq!(c.runtime_config.unwrap().port_mappings[0].protocol, "t\"cp");
}

#[test]
fn parsed_values_and_lookups() {
    let v = json!({"RangeStart": "10.0.0.2", "Subnet": "10.0.0.0/24"});
    let r: Range = from_value(&v).unwrap();
    assert_eq!(r.subnet, "10.0.0.0/24");
    let obj = v.as_object().unwrap();
    assert_eq!(get(obj, "subnet"), Some(&json!("10.0.0.0/24")));
    assert_eq!(get(obj, "Subnet"), Some(&json!("10.0.0.0/24")));
    assert_eq!(get(obj, "gateway"), None);
}
