//! Any result JSON, read as every version, printed in every version: no panic, and what one
//! version prints reads back in that version.
#![no_main]

use cni_common::{CniResult, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for fallback in Version::ALL {
        let Ok(r) = CniResult::decode_bytes(data, fallback) else { continue };
        for v in Version::ALL {
            if let Ok(text) = r.encode(v) {
                let back = CniResult::decode_bytes(text.as_bytes(), v).expect("own output reads back");
                assert_eq!(back.encode(v).ok(), Some(text), "printing is stable in {v}");
            }
        }
    }
});
