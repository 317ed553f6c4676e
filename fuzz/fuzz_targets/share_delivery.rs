//! `ShareDelivery::from_bytes` (what the dispatch service relays to a trustee), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::ShareDelivery;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::container::<ShareDelivery>(data);
});
