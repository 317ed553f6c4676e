//! `Signed::<ChatMessage>::decode` (a student's signed chat text), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::chat::ChatMessage;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<ChatMessage>(data, sosvault_fuzz::device_key());
});
