//! Network configs as libcni finds them: `.conf`, `.conflist` and `.json` files of a
//! directory, in name order, the first whose `name` matches.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Loads network `name` from `dir` as a list (a single `.conf` becomes a one-plugin list).
pub fn load(dir: &Path, name: &str) -> Result<Value, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read network configs in {}: {e}", dir.display()))?
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
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("error parsing configuration {}: {e}", file.display()))?;
        if value["name"].as_str() != Some(name) {
            continue;
        }
        if value.get("plugins").is_some() {
            if value["plugins"].as_array().is_none_or(|p| p.is_empty()) {
                return Err(format!("{}: no plugin configs found", file.display()));
            }
            return Ok(value);
        }
        if value["type"].as_str().is_none_or(str::is_empty) {
            return Err(format!("{}: missing 'type'", file.display()));
        }
        return Ok(json!({
            "cniVersion": value["cniVersion"].clone(),
            "name": name,
            "plugins": [value],
        }));
    }
    Err(format!(
        "no net configuration with name \"{name}\" in {}",
        dir.display()
    ))
}
