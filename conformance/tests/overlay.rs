//! Three nodes on one flannel vxlan overlay (scripts/e2e-multinode.sh), run with the
//! plugins and cnitool under test.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn three_nodes_one_overlay() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/e2e-multinode.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("CNI_PLUGIN_DIR", conformance::plugin_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "e2e failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ping matrix: 30 of 30"), "{stdout}");
    assert!(stdout.contains("e2e-multinode: OK"), "{stdout}");
}
