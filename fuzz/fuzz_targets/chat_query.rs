//! `Signed::<ChatQuery>::decode` (a phone's signed question for its incident's silent chat), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::chat::ChatQuery;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<ChatQuery>(data, sosvault_fuzz::device_key());
});
