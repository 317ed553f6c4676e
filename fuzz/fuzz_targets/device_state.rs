//! `Device::from_secret_bytes` (the phone's saved state), with the round-trip
//! hook; a version 1 state loads and is upgraded to a stable version 2.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::Device;

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::upgrading_bytes(
        "device state",
        data,
        &["sosvault/device-state/v1"],
        Device::from_secret_bytes,
        |d| d.to_secret_bytes(),
    );
});
