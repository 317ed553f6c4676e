//! `Signed::<Stop>::decode` (the device-signed stop), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::Stop;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<Stop>(data, sosvault_fuzz::device_key());
});
