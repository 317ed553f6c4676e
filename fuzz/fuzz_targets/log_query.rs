//! `Signed::<LogQuery>::decode` (a student's signed log query), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::log::LogQuery;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<LogQuery>(data, sosvault_fuzz::device_key());
});
