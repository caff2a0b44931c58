//! Waiting for a condition in tests: polled with a generous timeout instead of a fixed sleep,
//! so a slow (loaded) machine waits longer and a fast one does not wait at all.

use std::time::{Duration, Instant};

/// How often a condition is checked.
pub const EVERY: Duration = Duration::from_millis(50);

/// Polls `f` every [`EVERY`] until it holds; after `timeout` panics with `what` and what
/// `context()` says then (a log, the keys in etcd...).
pub fn until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
    context: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}:\n{}",
            context()
        );
        std::thread::sleep(EVERY);
    }
}

/// [`until`] with the timeout in seconds.
pub fn secs(what: &str, secs: u64, f: impl FnMut() -> bool, context: impl FnOnce() -> String) {
    until(what, Duration::from_secs(secs), f, context);
}
