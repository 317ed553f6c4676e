//! `Signed::<ShredReceipt>::decode` (the trustee-signed shred receipt), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::ShredReceipt;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<ShredReceipt>(data, sosvault_fuzz::trustee_key());
});
