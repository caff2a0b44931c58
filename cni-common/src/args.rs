//! `CNI_ARGS`: `K=V;K=V`, matched case-sensitively against the keys a plugin knows, with the
//! `IgnoreUnknown` escape hatch every runtime sets.

use std::collections::BTreeMap;

use crate::error::CniError;

/// Parses `raw` and returns the known keys' values.
///
/// Unknown keys are an error unless `IgnoreUnknown` is true. Unlike Go's parser, empty
/// segments (`a=b;` or `;;`) are skipped rather than reported as invalid pairs.
pub fn parse(raw: &str, known: &[&str]) -> Result<BTreeMap<String, String>, CniError> {
    let mut pairs = Vec::new();
    for segment in raw.split(';').filter(|s| !s.is_empty()) {
        let mut parts = segment.split('=');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(k), Some(v), None) => pairs.push((k, v)),
            _ => {
                return Err(CniError::invalid_env(
                    format!("ARGS: invalid pair \"{}\"", segment.escape_debug()),
                    "",
                ));
            }
        }
    }
    let mut ignore_unknown = false;
    for (k, v) in &pairs {
        if *k == "IgnoreUnknown" {
            ignore_unknown = parse_bool(v)?;
        }
    }
    let mut known_values = BTreeMap::new();
    let mut unknown = Vec::new();
    for (k, v) in pairs {
        if k == "IgnoreUnknown" {
            continue;
        }
        if known.contains(&k) {
            known_values.insert(k.to_owned(), v.to_owned());
        } else {
            unknown.push(format!("\"{}={}\"", k.escape_debug(), v.escape_debug()));
        }
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(CniError::invalid_env(
            format!("ARGS: unknown args [{}]", unknown.join(" ")),
            "",
        ));
    }
    Ok(known_values)
}

fn parse_bool(v: &str) -> Result<bool, CniError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(CniError::invalid_env(
            format!("ARGS: IgnoreUnknown must be 1, 0, true or false, not \"{v}\""),
            "",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_only() {
        let m = parse("IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.0.0.5", &["IP"]).unwrap();
        assert_eq!(m.get("IP").map(String::as_str), Some("10.0.0.5"));
        assert_eq!(m.len(), 1);
        assert!(parse("", &["IP"]).unwrap().is_empty());
        assert!(parse("IP=1;", &["IP"]).is_ok());
    }

    #[test]
    fn unknown_keys_fail_without_ignore_unknown() {
        let e = parse("K8S_POD_NAME=x", &["IP"]).err().unwrap();
        assert_eq!(e.to_string(), "ARGS: unknown args [\"K8S_POD_NAME=x\"]");
        assert_eq!(e.code(), 4);
        // Keys are case-sensitive.
        assert!(parse("ip=10.0.0.1", &["IP"]).is_err());
        assert!(parse("IgnoreUnknown=TRUE;ip=10.0.0.1", &["IP"]).is_ok());
        assert!(parse("IgnoreUnknown=0;x=1", &["IP"]).is_err());
    }

    #[test]
    fn malformed_pairs() {
        for bad in ["IP", "IP=a=b", "=;x"] {
            let e = parse(bad, &["IP"]).err();
            assert!(e.is_some(), "{bad}");
        }
        assert_eq!(
            parse("IP=a=b", &["IP"]).err().map(|e| e.to_string()),
            Some("ARGS: invalid pair \"IP=a=b\"".into())
        );
        assert!(parse("IgnoreUnknown=maybe", &[]).is_err());
    }
}
