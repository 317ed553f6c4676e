//! `Signed::<Manifest>::decode` (the authority-signed deployment manifest), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<Manifest>(data, sosvault_fuzz::authority_key());
});
