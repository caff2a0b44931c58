//! What can fail at the kernel interface, with what was being done and the system's error.

use std::io;

use crate::netns::NetnsError;

/// A failed kernel request or socket, keeping its source (errno) and what it was for.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// No netlink socket of the family could be opened (the kernel lacks it, or no rights).
    #[error("failed to open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The namespace the socket belongs in could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The kernel refused a request or its answer could not be read.
    #[error("{what}: {source}")]
    Request {
        /// What was being done, e.g. `failed to create bridge "cni0"`.
        what: String,
        /// The kernel's errno, or the decoding failure.
        #[source]
        source: io::Error,
    },
}

impl KernelError {
    /// The errno of a kernel refusal, if that is what the error is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Request { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Whether the kernel said "already exists".
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(nix::libc::EEXIST)
    }
}

/// Adds what was being done to a failed request.
pub trait Context<T> {
    /// Wraps the error with `what`.
    fn context(self, what: impl Into<String>) -> Result<T, KernelError>;
}

impl<T> Context<T> for Result<T, io::Error> {
    fn context(self, what: impl Into<String>) -> Result<T, KernelError> {
        self.map_err(|source| KernelError::Request {
            what: what.into(),
            source,
        })
    }
}
