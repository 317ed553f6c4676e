//! `Signed::<ShareReceipt>::decode` (the trustee-signed share receipt), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::ShareReceipt;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<ShareReceipt>(data, sosvault_fuzz::trustee_key());
});
