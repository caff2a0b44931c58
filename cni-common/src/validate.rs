//! Checks on names that come from outside and end up in paths, netlink messages or rules.
//! They run before any state is touched.

use crate::error::CniError;

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`: the rule of the spec for container IDs and network names.
/// It keeps `/`, `..`-only names (they start with `.`), NUL and whitespace out of paths.
pub fn is_valid_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

pub fn container_id(id: &str) -> Result<(), CniError> {
    if id.is_empty() {
        return Err(CniError::MissingEnv(vec!["CNI_CONTAINERID"]));
    }
    if !is_valid_identifier(id) {
        return Err(CniError::invalid_env(
            "invalid characters in containerID",
            id.escape_debug().to_string(),
        ));
    }
    Ok(())
}

pub fn network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::invalid_config("missing network name", ""));
    }
    if !is_valid_identifier(name) {
        return Err(CniError::invalid_config(
            "invalid characters found in network name",
            name.escape_debug().to_string(),
        ));
    }
    Ok(())
}

/// Maximum interface name length in bytes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

pub fn interface_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::invalid_env("interface name is empty", ""));
    }
    if name.len() > IFNAME_MAX {
        return Err(CniError::invalid_env(
            "interface name is too long",
            "interface name should be less than 16 characters",
        ));
    }
    if name == "." || name == ".." {
        return Err(CniError::invalid_env("interface name is . or ..", ""));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err(CniError::invalid_env(
            "interface name contains / or : or whitespace characters",
            name.escape_debug().to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["a", "0", "abc-DEF_1.2", "9f86d081884c7d659a2feaa0c55ad015"] {
            assert!(is_valid_identifier(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", "../x", "-a", "_a", "a/b", "a b", "a\0", "é", "a:b", "/abs",
        ] {
            assert!(!is_valid_identifier(bad), "{bad:?}");
        }
    }

    #[test]
    fn container_id_errors_are_code_4() {
        assert_eq!(container_id("").err().map(|e| e.code()), Some(4));
        let e = container_id("../etc").err();
        assert_eq!(
            e.as_ref().map(|e| (e.code(), e.to_string())),
            Some((4, "invalid characters in containerID".to_owned()))
        );
    }

    #[test]
    fn network_name_errors_are_code_7() {
        assert_eq!(
            network_name("").err().map(|e| (e.code(), e.to_string())),
            Some((7, "missing network name".to_owned()))
        );
        assert_eq!(
            network_name("a/b")
                .err()
                .map(|e| (e.code(), e.details().to_owned())),
            Some((7, "a/b".to_owned()))
        );
    }

    #[test]
    fn interface_names() {
        assert!(interface_name("eth0").is_ok());
        assert!(interface_name("abcdefghijklmno").is_ok());
        let msg = |n: &str| interface_name(n).err().map(|e| (e.code(), e.to_string()));
        assert_eq!(msg(""), Some((4, "interface name is empty".into())));
        assert_eq!(
            msg("abcdefghijklmnop"),
            Some((4, "interface name is too long".into()))
        );
        assert_eq!(msg("."), Some((4, "interface name is . or ..".into())));
        assert_eq!(msg(".."), Some((4, "interface name is . or ..".into())));
        for bad in ["a/b", "a:b", "a b", "a\tb", "a\0b", "a\u{a0}b"] {
            assert_eq!(
                msg(bad),
                Some((
                    4,
                    "interface name contains / or : or whitespace characters".into()
                )),
                "{bad:?}"
            );
        }
        // Multi-byte names count bytes, as the kernel does.
        assert!(interface_name("ééééééééé").is_err());
    }
}
