//! Everything that can go wrong running a network, each failure with its source kept.

use std::io;
use std::path::PathBuf;

use cni_common::{CniError, Command, Version};
use serde_json::Value;

use crate::exec::{ExecError, Output};

/// A failure of the runtime side: reading configs or the cache, or a plugin of the chain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A directory or file (config directory, config file, cache entry) could not be read or
    /// written; `op` says what was attempted ("read", "write", ...).
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was attempted, as a verb phrase.
        op: &'static str,
        /// The directory or file.
        path: PathBuf,
        /// The error the system returned.
        #[source]
        source: io::Error,
    },

    /// A config file is not JSON.
    #[error("error parsing configuration {}: {source}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// Where the JSON is broken.
        #[source]
        source: serde_json::Error,
    },

    /// A config file has the network's name but is not a usable network config.
    #[error("{}: {source}", path.display())]
    InvalidFile {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ConfigError,
    },

    /// A config list given as a value is not a usable network config.
    #[error("invalid network configuration: {0}")]
    Config(#[from] ConfigError),

    /// No config file of the directory has the network's name.
    #[error("no net configuration with name \"{name}\" in {}", dir.display())]
    NotFound {
        /// The network asked for.
        name: String,
        /// The directory searched.
        dir: PathBuf,
    },

    /// The list's `cniVersion` does not have the command (CHECK before 0.4.0).
    #[error("configuration version \"{version}\" does not support the {} command", command.as_str())]
    Unsupported {
        /// The command refused.
        command: Command,
        /// The list's version.
        version: Version,
    },

    /// A plugin index beyond the end of the list.
    #[error("the network has no plugin {index}")]
    NoSuchPlugin {
        /// The index asked for.
        index: usize,
    },

    /// A cache entry is not the JSON libcni writes.
    #[error("cannot use cached result {}: {source}", path.display())]
    CacheEntry {
        /// The cache entry.
        path: PathBuf,
        /// What does not parse.
        #[source]
        source: serde_json::Error,
    },

    /// A plugin of the chain failed.
    #[error("plugin type=\"{plugin}\" failed: {failure}")]
    Plugin {
        /// Its position in the list.
        index: usize,
        /// Its `type`.
        plugin: String,
        /// The command it was running.
        command: Command,
        /// How it failed (boxed: it holds the plugin's output).
        #[source]
        failure: Box<PluginFailure>,
    },
}

impl Error {
    /// The failing plugin's CNI error, when a plugin failed with one.
    pub fn cni_error(&self) -> Option<&CniError> {
        match self {
            Self::Plugin { failure, .. } => failure.cni_error(),
            _ => None,
        }
    }
}

/// How one plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginFailure {
    /// It could not be found or started.
    #[error(transparent)]
    Exec(#[from] ExecError),

    /// It exited with an error and printed the spec's error object.
    #[error("{}", with_details(error))]
    Cni {
        /// The error it printed, with its code.
        #[source]
        error: CniError,
        /// Its output.
        output: Output,
    },

    /// It exited with an error without printing an error object.
    #[error("exit status {}: {}", output.exit_code, output.stdout.trim())]
    Exit {
        /// Its output.
        output: Output,
    },

    /// ADD succeeded but printed something that is not a JSON result.
    #[error("its result is not JSON: {source}")]
    BadResult {
        /// Its output.
        output: Output,
        /// Where the JSON is broken.
        #[source]
        source: serde_json::Error,
    },
}

fn with_details(error: &CniError) -> String {
    match error.details() {
        "" => error.to_string(),
        details => format!("{error}: {details}"),
    }
}

impl PluginFailure {
    /// Classifies the output of a plugin that exited with an error: the spec's error object
    /// (`code`, `msg`, `details`) on stdout, or anything else.
    pub fn from_output(output: Output) -> PluginFailure {
        match parse_error(&output.stdout) {
            Some(error) => Self::Cni { error, output },
            None => Self::Exit { output },
        }
    }

    /// The plugin's output, when it ran.
    pub fn output(&self) -> Option<&Output> {
        match self {
            Self::Exec(_) => None,
            Self::Cni { output, .. } | Self::Exit { output } | Self::BadResult { output, .. } => {
                Some(output)
            }
        }
    }

    /// The CNI error the plugin printed, or the runtime's own (plugin not found).
    pub fn cni_error(&self) -> Option<&CniError> {
        match self {
            Self::Cni { error, .. } | Self::Exec(ExecError::NotFound(error)) => Some(error),
            _ => None,
        }
    }
}

/// The spec's error object: a `msg` string is required, `code` and `details` are optional.
fn parse_error(stdout: &str) -> Option<CniError> {
    let value: Value = serde_json::from_str(stdout).ok()?;
    let text = |key: &str| value.get(key).and_then(Value::as_str);
    let msg = text("msg")?.to_owned();
    let code = value.get("code").and_then(Value::as_u64).unwrap_or(0);
    Some(CniError::Delegated {
        code: u32::try_from(code).unwrap_or(u32::MAX),
        msg,
        details: text("details").unwrap_or_default().to_owned(),
    })
}

/// Why a network config list cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The document is not a JSON object.
    #[error("not a JSON object")]
    NotAnObject,

    /// `name` is missing, empty or not a string.
    #[error("missing 'name'")]
    MissingName,

    /// `cniVersion` is not a version of the spec.
    #[error("unsupported cniVersion \"{version}\"")]
    Version {
        /// The version as written.
        version: String,
        /// Why it was refused.
        #[source]
        source: CniError,
    },

    /// `plugins` is missing, not a list, or empty.
    #[error("no plugin configs found")]
    NoPlugins,

    /// A plugin's config is not a JSON object.
    #[error("plugin {index} is not a JSON object")]
    PluginNotAnObject {
        /// Its position in the list.
        index: usize,
    },

    /// A plugin has no `type` (the binary to run).
    #[error("plugin {index}: missing 'type'")]
    MissingType {
        /// Its position in the list.
        index: usize,
    },
}
