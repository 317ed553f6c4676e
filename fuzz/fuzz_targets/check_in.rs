//! `Signed::<CheckIn>::decode` (the device-signed end of a check-in timer, with its notes to the control room and each trustee), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::timer::CheckIn;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<CheckIn>(data, sosvault_fuzz::device_key());
});
