//! `StudentEntry::from_secret_bytes` (what a trustee persists per student),
//! with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::StudentEntry;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::bytes(
        "trustee entry",
        data,
        StudentEntry::from_secret_bytes,
        |e| e.to_secret_bytes(),
    );
});
