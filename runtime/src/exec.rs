//! How a plugin is run: the [`Exec`] seam between the chain logic and the processes.

use std::io;
use std::path::PathBuf;

use cni_common::{CniError, Command};
use serde_json::Value;

/// One attachment's identity: container ID, its netns path and the interface name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (empty once the namespace is gone, as runtimes send a late DEL).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

impl Attachment {
    /// An attachment of `container_id`'s interface `ifname` in the namespace at `netns`.
    pub fn new(container_id: &str, netns: &str, ifname: &str) -> Attachment {
        Attachment {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: ifname.into(),
        }
    }
}

/// What a plugin printed and how it exited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The exit status; -1 when a signal ended the plugin.
    pub exit_code: i32,
    /// Its stdout: the result, or the spec's error object.
    pub stdout: String,
    /// Its stderr, where the [`Exec`] captures it (empty otherwise).
    pub stderr: String,
}

impl Output {
    /// Whether the plugin exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// Runs one plugin of a list.
pub trait Exec {
    /// Runs the plugin whose `type` is `plugin` with `command` and the request config `stdin`.
    /// `att` is the attachment (`CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`), `None` for GC
    /// and STATUS. A plugin that ran is an `Ok`, whatever its exit status.
    fn exec(
        &self,
        plugin: &str,
        command: Command,
        att: Option<&Attachment>,
        stdin: &Value,
    ) -> Result<Output, ExecError>;
}

/// A plugin that could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No plugin of that name on `CNI_PATH`, or the name is not a file name.
    #[error(transparent)]
    NotFound(CniError),

    /// The plugin was found but could not be started or talked to.
    #[error("failed to run {}: {source}", path.display())]
    Spawn {
        /// The plugin binary.
        path: PathBuf,
        /// The error the system returned.
        #[source]
        source: io::Error,
    },
}
