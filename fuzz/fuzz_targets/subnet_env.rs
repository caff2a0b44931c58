//! Any subnet.env text parses or fails with a message, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = cni_flannel::subnet_env::parse(text);
    }
});
