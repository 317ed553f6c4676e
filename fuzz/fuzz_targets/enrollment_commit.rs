//! `Signed::<EnrollmentCommit>::decode` (the device-signed enrollment commit), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::EnrollmentCommit;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<EnrollmentCommit>(data, sosvault_fuzz::device_key());
});
