//! `Signed::<LocationUpdate>::decode` (the device-signed location update), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::LocationUpdate;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<LocationUpdate>(data, sosvault_fuzz::device_key());
});
