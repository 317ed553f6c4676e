//! `Signed::<TreeHead>::decode` (a log's signed tree head), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::log::TreeHead;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<TreeHead>(data, sosvault_fuzz::log_key());
});
