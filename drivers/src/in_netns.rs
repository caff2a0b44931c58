//! Code run inside a namespace of the rig (etcd listens on the LAN's address only, an agent's
//! metrics on its node's loopback): a thread of its own enters the namespace, so the caller's
//! thread never leaves its own; async code runs there on a current-thread runtime.

use std::future::Future;
use std::path::Path;

/// Runs `f` in a thread inside the namespace at `ns`. The error says what could not be set
/// up: the namespace or the thread (a panic in `f` is printed by the thread and reported).
pub fn run<T: Send>(ns: &Path, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let netns =
                node_kernel::Netns::open(ns).map_err(|e| format!("{}: {e}", ns.display()))?;
            netns.run(f).map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| format!("the thread inside {} panicked", ns.display()))?
    })
}

/// Runs the future `make` returns to completion in a thread inside the namespace at `ns`.
pub fn block_on<T, F>(ns: &Path, make: impl FnOnce() -> F + Send) -> Result<T, String>
where
    T: Send,
    F: Future<Output = T>,
{
    run(ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("a tokio runtime: {e}"))?;
        Ok(rt.block_on(make()))
    })?
}
