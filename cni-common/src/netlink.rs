//! rtnetlink connections bound to a network namespace.
//!
//! A netlink socket belongs to the namespace it was created in, so the socket is created
//! inside the target namespace and then used from the caller's, as netavark does: the thread
//! spends microseconds in the container's namespace, never the whole operation.

use std::future::Future;

use crate::error::{CniError, code};
use crate::netns::{Netns, NetnsError};

pub use rtnetlink::Handle;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("failed to start the netlink runtime: {0}")]
    Runtime(std::io::Error),
    #[error("failed to open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{what}: {source}")]
    Request {
        what: String,
        source: rtnetlink::Error,
    },
}

impl From<NetlinkError> for CniError {
    fn from(e: NetlinkError) -> Self {
        match e {
            NetlinkError::Netns(e) => e.into(),
            other => CniError::plugin(code::NETLINK, other.to_string(), ""),
        }
    }
}

/// Adds what was being done to an rtnetlink error.
pub trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T, NetlinkError>;
}

impl<T> Context<T> for Result<T, rtnetlink::Error> {
    fn context(self, what: impl Into<String>) -> Result<T, NetlinkError> {
        self.map_err(|source| NetlinkError::Request {
            what: what.into(),
            source,
        })
    }
}

/// A single-threaded runtime and an rtnetlink handle bound to one namespace.
#[derive(Debug)]
pub struct Netlink {
    runtime: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    /// A connection in the calling thread's namespace.
    pub fn current() -> Result<Netlink, NetlinkError> {
        let runtime = runtime()?;
        let handle = connect(&runtime)?;
        Ok(Netlink { runtime, handle })
    }

    /// A connection whose socket lives in `ns`.
    pub fn in_netns(ns: &Netns) -> Result<Netlink, NetlinkError> {
        let runtime = runtime()?;
        let handle = ns.run(|| connect(&runtime))??;
        Ok(Netlink { runtime, handle })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Drives a request to completion.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, NetlinkError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(NetlinkError::Runtime)
}

fn connect(runtime: &tokio::runtime::Runtime) -> Result<Handle, NetlinkError> {
    let _guard = runtime.enter();
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
    runtime.spawn(connection);
    Ok(handle)
}
