//! `Signed::<TrailPoint>::decode` (the device-signed point of the sealed
//! trail), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::TrailPoint;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<TrailPoint>(data, sosvault_fuzz::device_key());
});
