//! `/run/flannel/subnet.env` read from its file (the format's reader is
//! `cni_common::subnet_env`).

use std::io::{self, ErrorKind};
use std::path::Path;

use crate::error::FlannelError;

pub use cni_common::subnet_env::{SubnetEnv, parse};

/// Reads subnet.env's text: [`SubnetEnvFile`] in the plugin, a fake in the unit tests.
pub trait SubnetEnvSource {
    fn read(&self, path: &Path) -> io::Result<String>;
}

/// The file flanneld writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubnetEnvFile;

impl SubnetEnvSource for SubnetEnvFile {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Reads and parses subnet.env at `path`. Missing or unreadable: try again later (flanneld
/// has not written it yet); malformed: a config error naming the line or the missing keys.
pub fn load(source: &impl SubnetEnvSource, path: &Path) -> Result<SubnetEnv, FlannelError> {
    let text = source.read(path).map_err(|source| {
        let path = path.to_owned();
        if source.kind() == ErrorKind::NotFound {
            FlannelError::SubnetEnvMissing { path, source }
        } else {
            FlannelError::SubnetEnvUnreadable { path, source }
        }
    })?;
    parse(&text).map_err(|reason| FlannelError::SubnetEnvInvalid {
        path: path.to_owned(),
        reason,
    })
}
