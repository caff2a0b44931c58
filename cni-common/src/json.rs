//! JSON output in the byte layout the Go library uses, so golden files match either plugin.

use serde::Serialize;

/// Pretty-prints with four-space indentation and no trailing newline.
///
/// Serialising the suite's own types cannot fail (no maps with non-string keys, no
/// non-finite floats); should it ever, the caller still gets valid JSON instead of a panic.
pub fn pretty<T: Serialize>(value: &T) -> String {
    let mut out = Vec::with_capacity(256);
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    match value.serialize(&mut ser) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(e) => format!(
            "{{\n    \"code\": 999,\n    \"msg\": \"cannot encode output: {}\"\n}}",
            e.to_string().replace('"', "'")
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn four_spaces_no_newline() {
        let v = serde_json::json!({"a": [1]});
        assert_eq!(super::pretty(&v), "{\n    \"a\": [\n        1\n    ]\n}");
    }
}
