//! Any lease file content and any owner-index bucket: read without panicking, and an index
//! entry is only ever built from names that are safe as file names.
#![no_main]

use cni_host_local::store::LeaseOwner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = LeaseOwner::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        for entry in cni_host_local::index::parse_bucket(text) {
            assert!(!entry.id.contains(' ') && !entry.leaf.contains(' '));
        }
    }
});
