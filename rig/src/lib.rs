//! The test rig: private network namespaces, and plugin binaries run exactly as a runtime runs
//! them (environment + stdin in, stdout + exit code out), alone or as a chain.
//!
//! Nothing here touches the machine's own network namespace: every plugin runs inside a
//! private "host" namespace ([`Node`]), and every container has its own namespace. All of it
//! is removed when the values are dropped, also when a test fails, and by the [`reaper`] when
//! a run is killed.

// The rig is test code: a failure to set up a namespace should abort the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod chain;
pub mod flannel;
pub mod netns;
pub mod node;
pub mod normalize;
pub mod plugin;
pub mod pod;
pub mod poll;
pub mod reaper;
pub mod report;
pub mod traffic;

pub use chain::Chain;
pub use netns::TestNetns;
pub use node::Node;
pub use plugin::{Outcome, OutcomeExt, PluginCall, plugin_dir};
pub use pod::Pod;

/// Where skipped checks are recorded; `scripts/test.sh` prints the file after the tests,
/// because the test harness swallows the output of passing tests.
pub const SKIP_LOG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-skips.txt");

/// Records a skipped check so that a skip is always visible in CI output, never a quiet pass.
pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let line = format!("SKIPPED {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(SKIP_LOG)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
