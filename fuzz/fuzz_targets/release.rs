//! `Signed::<Release>::decode` (the trustee-signed release), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::Release;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<Release>(data, sosvault_fuzz::trustee_key());
});
