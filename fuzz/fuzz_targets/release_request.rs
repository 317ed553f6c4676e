//! `Signed::<ReleaseRequest>::decode` (the control-room-signed release request), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::ReleaseRequest;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<ReleaseRequest>(data, sosvault_fuzz::control_room_key());
});
