//! Any CNI_ARGS string parses or fails, and the keys returned are only known ones.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(map) = cni_common::args::parse(text, &["IP", "MAC"]) {
            assert!(map.keys().all(|k| k == "IP" || k == "MAC"));
        }
    }
});
