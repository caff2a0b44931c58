//! Makes plugin output comparable across runs for snapshots: paths, MACs and generated names
//! are replaced by placeholders, and JSON is pretty-printed with sorted keys as-is.

use serde_json::Value;

/// Replaces every occurrence of each `(needle, placeholder)` and every MAC address.
pub fn redact(text: &str, replacements: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (needle, placeholder) in replacements {
        if !needle.is_empty() {
            out = out.replace(needle, placeholder);
        }
    }
    redact_macs(&out)
}

fn redact_macs(text: &str) -> String {
    // Only ASCII runs are replaced, so the bytes stay valid UTF-8.
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let candidate = bytes.get(i..i + 17);
        match candidate {
            Some(m) if is_mac(m) && m != b"00:00:00:00:00:00" => {
                out.extend_from_slice(b"[MAC]");
                i += 17;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn is_mac(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, c)| {
        if i % 3 == 2 {
            *c == b':'
        } else {
            c.is_ascii_hexdigit()
        }
    })
}

/// Pretty JSON of a value, for snapshots of values built in tests.
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_paths_and_macs() {
        let s = super::redact(
            "{\"mac\": \"0a:58:0a:01:11:05\", \"sandbox\": \"/tmp/x/c.netns\", \"lo\": \"00:00:00:00:00:00\"}",
            &[("/tmp/x", "[TMP]")],
        );
        assert_eq!(
            s,
            "{\"mac\": \"[MAC]\", \"sandbox\": \"[TMP]/c.netns\", \"lo\": \"00:00:00:00:00:00\"}"
        );
    }
}
