//! `EnrollmentPackage::from_bytes` (everything a device sends to enroll), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::EnrollmentPackage;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::container::<EnrollmentPackage>(data);
});
