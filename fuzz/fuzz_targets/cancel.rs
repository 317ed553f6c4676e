//! `Signed::<Cancel>::decode` (the device-signed cancel), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::Cancel;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<Cancel>(data, sosvault_fuzz::device_key());
});
