//! Network configuration lists as libcni finds and reads them: the `.conf`, `.conflist` and
//! `.json` files of a directory in name order, the first whose `name` matches; a single
//! plugin's `.conf` becomes a one-plugin list.

use std::path::{Path, PathBuf};

use cni_common::Version;
use serde_json::{Map, Value, json};

use crate::error::{ConfigError, Error};

/// A network configuration list (`cniVersion`, `name`, `plugins`, `disableCheck`,
/// `disableGC`), validated enough to be run.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    name: String,
    version: Version,
    disable_check: bool,
    disable_gc: bool,
    plugins: Vec<PluginConfig>,
    document: Value,
}

/// One plugin of a list: its `type`, the capabilities it enables and its config object.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    plugin_type: String,
    capabilities: Vec<String>,
    config: Map<String, Value>,
}

/// libcni accepts JSON booleans or the strings "true"/"false".
fn flag(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

impl NetworkConfigList {
    /// Reads a `.conflist` document. An absent or empty `cniVersion` is 0.1.0, as in Go.
    pub fn from_value(document: Value) -> Result<NetworkConfigList, ConfigError> {
        let object = document.as_object().ok_or(ConfigError::NotAnObject)?;
        let name = match object.get("name") {
            Some(Value::String(name)) if !name.is_empty() => name.clone(),
            _ => return Err(ConfigError::MissingName),
        };
        let version = match object.get("cniVersion") {
            None | Some(Value::Null) => Version::DEFAULT,
            Some(Value::String(v)) => Version::parse(v).map_err(|source| ConfigError::Version {
                version: v.clone(),
                source,
            })?,
            Some(other) => {
                return Err(ConfigError::Version {
                    version: other.to_string(),
                    source: cni_common::CniError::decode("cniVersion is not a string", ""),
                });
            }
        };
        let plugins = match object.get("plugins") {
            Some(Value::Array(plugins)) if !plugins.is_empty() => plugins,
            _ => return Err(ConfigError::NoPlugins),
        };
        let plugins = plugins
            .iter()
            .enumerate()
            .map(|(index, p)| PluginConfig::from_value(index, p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NetworkConfigList {
            name,
            version,
            disable_check: flag(object.get("disableCheck")),
            disable_gc: flag(object.get("disableGC")),
            plugins,
            document,
        })
    }

    /// Wraps a single plugin's config (a `.conf` file) into a one-plugin list.
    pub fn from_conf(conf: Value) -> Result<NetworkConfigList, ConfigError> {
        let name = conf.get("name").cloned().unwrap_or(Value::Null);
        let version = conf.get("cniVersion").cloned().unwrap_or(Value::Null);
        Self::from_value(json!({"cniVersion": version, "name": name, "plugins": [conf]}))
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The list's `cniVersion`.
    pub fn version(&self) -> Version {
        self.version
    }

    /// `disableCheck`: CHECK does nothing.
    pub fn disable_check(&self) -> bool {
        self.disable_check
    }

    /// `disableGC`: GC does nothing.
    pub fn disable_gc(&self) -> bool {
        self.disable_gc
    }

    /// The plugins, in list order.
    pub fn plugins(&self) -> &[PluginConfig] {
        &self.plugins
    }

    /// The document the list was read from.
    pub fn document(&self) -> &Value {
        &self.document
    }
}

impl PluginConfig {
    fn from_value(index: usize, value: &Value) -> Result<PluginConfig, ConfigError> {
        let config = value
            .as_object()
            .ok_or(ConfigError::PluginNotAnObject { index })?;
        // libcni reads `type` and `capabilities` through a Go struct: any case of the key.
        let plugin_type = cni_common::gojson::get(config, "type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or(ConfigError::MissingType { index })?;
        let capabilities = cni_common::gojson::get(config, "capabilities")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(_, enabled)| **enabled == Value::Bool(true))
            .map(|(cap, _)| cap.clone())
            .collect();
        Ok(PluginConfig {
            plugin_type: plugin_type.to_owned(),
            capabilities,
            config: config.clone(),
        })
    }

    /// The plugin's `type`: the binary's name on `CNI_PATH`.
    pub fn plugin_type(&self) -> &str {
        &self.plugin_type
    }

    /// The capabilities it enables (`"capabilities": {"portMappings": true}`).
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    /// Its config object as written in the list.
    pub fn config(&self) -> &Map<String, Value> {
        &self.config
    }
}

/// Loads network `name` from the config directory `dir`: the first `.conf`, `.conflist` or
/// `.json` file in name order whose `name` matches. Every file before it must be JSON.
pub fn load(dir: &Path, name: &str) -> Result<NetworkConfigList, Error> {
    let io = |op, path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { op, path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io("read network configs in", dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(io("read", &file))?;
        let value: Value = match serde_json::from_str(&text) {
            Ok(value) => value,
            Err(source) => return Err(Error::Parse { path: file, source }),
        };
        if value.get("name").and_then(Value::as_str) != Some(name) {
            continue;
        }
        let list = if value.get("plugins").is_some() {
            NetworkConfigList::from_value(value)
        } else {
            NetworkConfigList::from_conf(value)
        };
        return list.map_err(|source| Error::InvalidFile { path: file, source });
    }
    Err(Error::NotFound {
        name: name.to_owned(),
        dir: dir.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::write(dir.join(file), text).unwrap();
    }

    #[test]
    fn reads_a_list_with_its_flags_types_and_capabilities() {
        let list = NetworkConfigList::from_value(json!({"cniVersion": "1.1.0", "name": "n",
            "disableCheck": "TRUE", "disableGC": false, "plugins": [
                {"Type": "bridge", "Capabilities": {"mac": true, "ips": false, "ipRanges": "true"}},
                {"type": "portmap", "capabilities": {"portMappings": true}}]}))
        .unwrap();
        assert_eq!(list.name(), "n");
        assert_eq!(list.version(), Version::V1_1_0);
        assert!(list.disable_check());
        assert!(!list.disable_gc());
        let types: Vec<&str> = list.plugins().iter().map(|p| p.plugin_type()).collect();
        assert_eq!(types, ["bridge", "portmap"]);
        assert_eq!(list.plugins()[0].capabilities(), ["mac"]);
        assert_eq!(list.plugins()[1].capabilities(), ["portMappings"]);
    }

    #[test]
    fn refuses_lists_it_cannot_run() {
        let bad = |v: Value| NetworkConfigList::from_value(v).unwrap_err().to_string();
        assert_eq!(bad(json!([])), "not a JSON object");
        assert_eq!(
            bad(json!({"name": "", "plugins": [{"type": "x"}]})),
            "missing 'name'"
        );
        assert_eq!(bad(json!({"name": "n"})), "no plugin configs found");
        assert_eq!(
            bad(json!({"name": "n", "plugins": []})),
            "no plugin configs found"
        );
        assert_eq!(
            bad(json!({"name": "n", "plugins": [{"type": "x"}, {"ipam": {}}]})),
            "plugin 1: missing 'type'"
        );
        assert_eq!(
            bad(json!({"name": "n", "plugins": [7]})),
            "plugin 0 is not a JSON object"
        );
        assert_eq!(
            bad(json!({"name": "n", "cniVersion": "2.0.0", "plugins": [{"type": "x"}]})),
            "unsupported cniVersion \"2.0.0\""
        );
        let no_version =
            NetworkConfigList::from_value(json!({"name": "n", "plugins": [{"type": "x"}]}));
        assert_eq!(no_version.unwrap().version(), Version::V0_1_0);
    }

    #[test]
    fn loads_the_first_match_in_name_order_and_wraps_a_conf() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"late"}]}"#,
        );
        write(
            dir.path(),
            "10-a.conf",
            r#"{"cniVersion":"0.4.0","name":"a","type":"loopback"}"#,
        );
        write(dir.path(), "05-x.txt", "not a config, not read");
        let list = load(dir.path(), "a").unwrap();
        assert_eq!(list.version(), Version::V0_4_0);
        assert_eq!(list.plugins()[0].plugin_type(), "loopback");
        assert_eq!(
            list.document(),
            &json!({"cniVersion": "0.4.0", "name": "a",
                "plugins": [{"cniVersion": "0.4.0", "name": "a", "type": "loopback"}]})
        );
    }

    #[test]
    fn load_errors_name_the_file_or_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "10.json",
            r#"{"cniVersion":"1.0.0","name":"typeless"}"#,
        );
        let err = load(dir.path(), "typeless").unwrap_err().to_string();
        assert!(err.ends_with("10.json: plugin 0: missing 'type'"), "{err}");
        let err = load(dir.path(), "nope").unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "no net configuration with name \"nope\" in {}",
                dir.path().display()
            )
        );
        write(dir.path(), "30.conflist", "{ not json");
        let err = load(dir.path(), "other").unwrap_err();
        assert!(matches!(&err, Error::Parse { path, .. } if path.ends_with("30.conflist")));
        assert!(
            err.to_string().starts_with("error parsing configuration"),
            "{err}"
        );
        let gone = load(&dir.path().join("missing"), "a").unwrap_err();
        assert!(matches!(gone, Error::Io { .. }), "{gone}");
    }
}
