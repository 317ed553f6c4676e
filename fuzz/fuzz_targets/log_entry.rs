//! `LogEntry::from_bytes` (one transparency-log entry), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::log::LogEntry;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::container::<LogEntry>(data);
});
