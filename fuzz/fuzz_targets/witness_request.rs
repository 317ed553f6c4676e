//! `AddCheckpoint::parse` and `Note::parse` (a witness's input), with the
//! round-trip hook, then the witness's decision on the request.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::witness_request(data);
});
