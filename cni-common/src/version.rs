//! Spec versions, what each allows, and the VERSION command's output.

use std::fmt;
use std::str::FromStr;

use crate::error::CniError;

/// Every released version of the CNI specification, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// The shape a result takes on the wire in a given version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultShape {
    /// 0.1.0 and 0.2.0: `ip4` / `ip6`.
    Legacy,
    /// 0.3.0 to 0.4.0: `interfaces` / `ips` with `version`.
    V040,
    /// 1.0.0 and later.
    V100,
}

impl Version {
    pub const ALL: [Version; 7] = [
        Self::V0_1_0,
        Self::V0_2_0,
        Self::V0_3_0,
        Self::V0_3_1,
        Self::V0_4_0,
        Self::V1_0_0,
        Self::V1_1_0,
    ];

    /// The version assumed when a config has no `cniVersion`.
    pub const DEFAULT: Version = Self::V0_1_0;
    pub const LATEST: Version = Self::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_1_0 => "0.1.0",
            Self::V0_2_0 => "0.2.0",
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    pub fn result_shape(self) -> ResultShape {
        match self {
            Self::V0_1_0 | Self::V0_2_0 => ResultShape::Legacy,
            Self::V0_3_0 | Self::V0_3_1 | Self::V0_4_0 => ResultShape::V040,
            Self::V1_0_0 | Self::V1_1_0 => ResultShape::V100,
        }
    }

    pub fn allows_check(self) -> bool {
        self >= Self::V0_4_0
    }

    pub fn allows_gc_and_status(self) -> bool {
        self >= Self::V1_1_0
    }

    /// Whether a result may carry more than one address of a family.
    pub fn allows_multiple_ips_per_family(self) -> bool {
        self >= Self::V0_3_0
    }

    /// Parses a `cniVersion` value; the empty string means the default (0.1.0), as in Go.
    pub fn parse(s: &str) -> Result<Version, CniError> {
        if s.is_empty() {
            return Ok(Self::DEFAULT);
        }
        if let Some(v) = Self::ALL.into_iter().find(|v| v.as_str() == s) {
            return Ok(v);
        }
        if is_semver(s) {
            Err(CniError::IncompatibleVersion {
                details: format!("config is \"{s}\", plugin supports [{}]", all_joined(" ")),
            })
        } else {
            Err(CniError::decode(
                format!("invalid version \"{s}\": the version must be of the form X.Y.Z"),
                "",
            ))
        }
    }
}

fn is_semver(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn all_joined(sep: &str) -> String {
    Version::ALL.map(Version::as_str).join(sep)
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Version {
    type Err = CniError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The VERSION command's output: compact JSON and a newline, always labelled 1.1.0.
pub fn version_info_json() -> String {
    let list: Vec<String> = Version::ALL
        .iter()
        .map(|v| format!("\"{}\"", v.as_str()))
        .collect();
    format!(
        "{{\"cniVersion\":\"{}\",\"supportedVersions\":[{}]}}\n",
        Version::LATEST,
        list.join(",")
    )
}

/// The "about" text printed to stderr when `CNI_COMMAND` is unset.
pub fn about(plugin: &str) -> String {
    format!(
        "CNI {plugin} plugin v{}\nCNI protocol versions supported: {}\n",
        env!("CARGO_PKG_VERSION"),
        all_joined(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_release_and_orders_them() {
        for w in Version::ALL.windows(2) {
            assert!(w[0] < w[1]);
            assert_eq!(Version::parse(w[1].as_str()).ok(), Some(w[1]));
        }
        assert_eq!(Version::parse("").ok(), Some(Version::V0_1_0));
    }

    #[test]
    fn unknown_semver_is_code_1_garbage_is_code_6() {
        let e = Version::parse("0.5.0")
            .err()
            .map(|e| (e.code(), e.details().to_owned()));
        assert_eq!(
            e,
            Some((
                1,
                "config is \"0.5.0\", plugin supports [0.1.0 0.2.0 0.3.0 0.3.1 0.4.0 1.0.0 1.1.0]"
                    .to_owned()
            ))
        );
        assert_eq!(Version::parse("1.x").err().map(|e| e.code()), Some(6));
        assert_eq!(Version::parse("1.0").err().map(|e| e.code()), Some(6));
    }

    #[test]
    fn command_gates() {
        assert!(!Version::V0_3_1.allows_check());
        assert!(Version::V0_4_0.allows_check());
        assert!(!Version::V1_0_0.allows_gc_and_status());
        assert!(Version::V1_1_0.allows_gc_and_status());
    }

    #[test]
    fn version_output_matches_go_bytes() {
        assert_eq!(
            version_info_json(),
            "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
        );
    }
}
