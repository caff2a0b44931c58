//! Network namespaces given by path: run code inside one, open sockets bound to one, write
//! its sysctls.
//!
//! Entering is per thread (`setns`) and always undone before [`Netns::run`] returns, so the
//! calling thread is never left in the container's namespace. If switching back fails the
//! thread's namespace is unknown; the plugin reports the error and the process exits.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

/// A namespace that cannot be opened or entered, or a sysctl that cannot be written; each
/// keeps the path or key and the system's error.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {} does not exist", .0.display())]
    NotFound(PathBuf),
    #[error("{} is not a network namespace", .0.display())]
    NotANamespace(PathBuf),
    #[error("failed to open network namespace {}: {source}", .path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("failed to enter network namespace {}: {source}", .path.display())]
    Enter {
        path: PathBuf,
        source: netns_rs::Error,
    },
    #[error("failed to write sysctl {key}: {source}")]
    Sysctl { key: String, source: io::Error },
}

impl NetnsError {
    /// True when the namespace is gone: DEL treats this as nothing left to clean inside it.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::NotFound(_) | Self::NotANamespace(_))
    }
}

/// An open handle on a network namespace.
#[derive(Debug)]
pub struct Netns {
    ns: netns_rs::NetNs,
}

impl Netns {
    /// Opens the namespace at `path` and checks that it is one (an nsfs file), so that a
    /// leftover mount point or a plain file is reported as gone rather than entered.
    pub fn open(path: &Path) -> Result<Netns, NetnsError> {
        let ns = netns_rs::get_from_path(path).map_err(|e| match e {
            netns_rs::Error::OpenNsError(_, source) if source.kind() == io::ErrorKind::NotFound => {
                NetnsError::NotFound(path.to_owned())
            }
            netns_rs::Error::OpenNsError(_, source) => NetnsError::Open {
                path: path.to_owned(),
                source,
            },
            other => NetnsError::Open {
                path: path.to_owned(),
                source: io::Error::other(other.to_string()),
            },
        })?;
        match fstatfs(ns.file()) {
            Ok(st) if st.filesystem_type() == NSFS_MAGIC => Ok(Netns { ns }),
            Ok(_) => Err(NetnsError::NotANamespace(path.to_owned())),
            Err(errno) => Err(NetnsError::Open {
                path: path.to_owned(),
                source: io::Error::from(errno),
            }),
        }
    }

    /// The calling thread's own namespace (the plugin's "host").
    pub fn current() -> Result<Netns, NetnsError> {
        Netns::open(Path::new("/proc/thread-self/ns/net"))
    }

    /// The namespace's file descriptor, for requests that name a namespace (a veth peer
    /// created in another one).
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.ns.file().as_raw_fd()
    }

    /// The path the namespace was opened by.
    pub fn path(&self) -> &Path {
        self.ns.path()
    }

    /// Runs `f` with the calling thread inside this namespace, then switches back.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        self.ns.run(|_| f()).map_err(|source| NetnsError::Enter {
            path: self.path().to_owned(),
            source,
        })
    }

    /// Whether this is the namespace the calling thread is in (the "host" of the plugin).
    pub fn is_current(&self) -> bool {
        let ours = fs::metadata("/proc/thread-self/ns/net");
        let theirs = self.ns.file().metadata();
        matches!((ours, theirs), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
    }
}

/// Writes a sysctl of the calling thread's network namespace (call inside [`Netns::run`] for
/// a container's). `key` is a `/`-separated path below `/proc/sys` built by the caller from
/// validated parts.
pub fn write_sysctl(key: &str, value: &str) -> Result<(), NetnsError> {
    fs::write(Path::new("/proc/sys").join(key), value).map_err(|source| NetnsError::Sysctl {
        key: key.to_owned(),
        source,
    })
}

/// Reads a sysctl of the calling thread's network namespace, without its trailing newline.
pub fn read_sysctl(key: &str) -> Result<String, NetnsError> {
    fs::read_to_string(Path::new("/proc/sys").join(key))
        .map(|s| s.trim_end().to_owned())
        .map_err(|source| NetnsError::Sysctl {
            key: key.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_path_is_gone() {
        let e = Netns::open(Path::new("/nonexistent/netns/x")).unwrap_err();
        assert!(e.is_gone(), "{e}");
    }

    #[test]
    fn plain_file_is_not_a_namespace() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = Netns::open(f.path()).unwrap_err();
        assert!(matches!(e, NetnsError::NotANamespace(_)), "{e}");
        assert!(e.is_gone());
    }

    #[test]
    fn own_namespace_is_current_and_run_works() {
        // Opening our own namespace needs no privilege and changes nothing.
        let ns = Netns::open(Path::new("/proc/thread-self/ns/net")).unwrap();
        assert!(ns.is_current());
        assert_eq!(ns.run(|| 7).unwrap(), 7);
    }
}
