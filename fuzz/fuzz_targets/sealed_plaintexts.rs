//! The plaintexts that travel sealed: `Location::from_bytes`, `Note::from_bytes`
//! (exact round trip) and `Profile::from_bytes` (JSON: the round trip is on
//! the value, and the encoding is stable once made).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::{Location, Note, Profile};
use sosvault_fuzz::bytes;

fuzz_target!(|data: &[u8]| {
    bytes(
        "location fix",
        data,
        Location::from_bytes,
        Location::to_bytes,
    );
    bytes("note", data, Note::from_bytes, Note::to_bytes);
    if let Ok(p) = Profile::from_bytes(data) {
        let encoded = p.to_bytes();
        let back = Profile::from_bytes(&encoded).expect("an encoded profile decodes");
        assert!(back == p, "the profile changed in a round trip");
        assert!(
            back.to_bytes() == encoded,
            "the profile's encoding is not stable"
        );
    }
});
