//! `Signed::<SmsChannel>::decode` (the control-room-signed SMS channel), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::sms::SmsChannel;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<SmsChannel>(data, sosvault_fuzz::control_room_key());
});
