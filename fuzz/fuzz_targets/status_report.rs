//! `Signed::<StatusReport>::decode` (the control room's signed answer to a
//! phone's status query), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::status::StatusReport;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<StatusReport>(data, sosvault_fuzz::control_room_key());
});
