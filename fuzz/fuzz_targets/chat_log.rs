//! `Signed::<ChatLog>::decode` (the control room's signed chat log), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::chat::ChatLog;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<ChatLog>(data, sosvault_fuzz::control_room_key());
});
