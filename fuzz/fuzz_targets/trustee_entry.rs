//! `StudentEntry::from_secret_bytes` (what a trustee persists per student),
//! with the round-trip hook; a version 1 or 2 entry loads and is upgraded
//! to a stable version 3.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::StudentEntry;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::upgrading_bytes(
        "trustee entry",
        data,
        &["sosvault/trustee-entry/v1", "sosvault/trustee-entry/v2"],
        StudentEntry::from_secret_bytes,
        |e| e.to_secret_bytes(),
    );
});
