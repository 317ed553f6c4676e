//! `Signed::<StatusQuery>::decode` (a phone's signed question about its own
//! incident), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::status::StatusQuery;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<StatusQuery>(data, sosvault_fuzz::device_key());
});
