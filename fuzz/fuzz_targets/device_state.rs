//! `Device::from_secret_bytes` (the phone's saved state), with the round-trip hook.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::Device;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::bytes("device state", data, Device::from_secret_bytes, |d| {
        d.to_secret_bytes()
    });
});
