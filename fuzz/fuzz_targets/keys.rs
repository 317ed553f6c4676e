//! Every key decoder, with the round-trip hook: the secret key files
//! (`from_secret_bytes`) and the public encodings (`from_bytes`, `from_hex`).
//! Each decoder checks its own tag, so one input exercises them all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::chat::{ChatKey, ChatRecipient};
use sosvault::keys::{LogKey, LogPublic};
use sosvault::{
    ControlRoomKey, ControlRoomPublic, DeviceKey, DevicePublic, IncidentKey, IncidentRecipient,
    TrusteeKey, TrusteePublic, VaultKey, VaultRecipient,
};
use sosvault_fuzz::bytes;

/// The round-trip hook for each named key type's decoder and encoder.
macro_rules! round_trip {
    ($data:expr, $decode:ident / $encode:ident: $($key:ident),+) => {
        $(bytes(stringify!($key), $data, $key::$decode, |k| k.$encode());)+
    };
}

/// Each named public key type decodes its hex form and re-encodes it exactly.
macro_rules! hex_round_trip {
    ($s:expr, $($key:ident),+) => {
        $(if let Ok(k) = $key::from_hex($s) {
            assert_eq!($key::from_hex(&k.to_hex()).ok(), Some(k));
        })+
    };
}

fuzz_target!(|data: &[u8]| {
    // Secret key files: tag, then 32 secret bytes.
    round_trip!(data, from_secret_bytes / to_secret_bytes:
        DeviceKey, VaultKey, TrusteeKey, ControlRoomKey, IncidentKey, LogKey, ChatKey);

    // Public pairs: tag, ed25519 key, X25519 key; and their hex form.
    round_trip!(data, from_bytes / to_bytes: TrusteePublic, ControlRoomPublic);
    if let Ok(s) = std::str::from_utf8(data) {
        hex_round_trip!(s, TrusteePublic, ControlRoomPublic, LogPublic);
    }

    // Raw 32-byte public keys.
    if let Ok(raw) = <[u8; 32]>::try_from(data) {
        if let Ok(k) = DevicePublic::from_bytes(&raw) {
            assert_eq!(k.to_bytes(), raw, "DevicePublic re-encodes differently");
        }
        if let Ok(k) = LogPublic::from_bytes(&raw) {
            assert_eq!(k.to_bytes(), raw, "LogPublic re-encodes differently");
        }
        assert_eq!(VaultRecipient::from_bytes(raw).to_bytes(), raw);
        assert_eq!(IncidentRecipient::from_bytes(raw).to_bytes(), raw);
        assert_eq!(ChatRecipient::from_bytes(raw).to_bytes(), raw);
    }
});
