//! `Signed::<PanicEvent>::decode` (the device-signed panic), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::PanicEvent;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<PanicEvent>(data, sosvault_fuzz::device_key());
});
