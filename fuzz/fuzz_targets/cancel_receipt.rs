//! `Signed::<CancelReceipt>::decode` (the trustee-signed cancel receipt), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::CancelReceipt;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<CancelReceipt>(data, sosvault_fuzz::trustee_key());
});
