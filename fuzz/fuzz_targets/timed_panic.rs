//! `Signed::<TimedPanic>::decode` (the device-signed panic of a check-in timer), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::timer::TimedPanic;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<TimedPanic>(data, sosvault_fuzz::device_key());
});
