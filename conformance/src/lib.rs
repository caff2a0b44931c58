//! The test rig: private network namespaces, and plugin binaries run exactly as a runtime runs
//! them (environment + stdin in, stdout + exit code out), alone or as a chain.
//!
//! Nothing here touches the machine's own network namespace: every plugin runs inside a
//! private "host" namespace ([`Node`]), and every container has its own namespace. All of it
//! is removed when the values are dropped, also when a test fails.

// The rig is test code: a failure to set up a namespace should abort the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod chain;
pub mod netns;
pub mod node;
pub mod normalize;
pub mod plugin;

pub use chain::Chain;
pub use netns::TestNetns;
pub use node::Node;
pub use plugin::{Outcome, PluginCall, plugin_dir};

/// Reports a skipped check on the real stderr (the test harness captures `eprintln!`), so a
/// skip is always visible in CI output.
pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}
