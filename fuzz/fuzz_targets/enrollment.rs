//! `Signed::<EnrollmentRecord>::decode` (the device-signed enrollment record), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::EnrollmentRecord;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<EnrollmentRecord>(data, sosvault_fuzz::device_key());
});
