//! Every key decoder, with the round-trip hook: the secret key files
//! (`from_secret_bytes`) and the public encodings (`from_bytes`, `from_hex`).
//! Each decoder checks its own tag, so one input exercises them all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::keys::{LogKey, LogPublic};
use sosvault::{
    ControlRoomKey, ControlRoomPublic, DeviceKey, DevicePublic, IncidentKey, IncidentRecipient,
    TrusteeKey, TrusteePublic, VaultKey, VaultRecipient,
};
use sosvault_fuzz::bytes;

fuzz_target!(|data: &[u8]| {
    // Secret key files: tag, then 32 secret bytes.
    bytes("DeviceKey", data, DeviceKey::from_secret_bytes, |k| {
        k.to_secret_bytes()
    });
    bytes("VaultKey", data, VaultKey::from_secret_bytes, |k| {
        k.to_secret_bytes()
    });
    bytes("TrusteeKey", data, TrusteeKey::from_secret_bytes, |k| {
        k.to_secret_bytes()
    });
    bytes(
        "ControlRoomKey",
        data,
        ControlRoomKey::from_secret_bytes,
        |k| k.to_secret_bytes(),
    );
    bytes("IncidentKey", data, IncidentKey::from_secret_bytes, |k| {
        k.to_secret_bytes()
    });
    bytes("LogKey", data, LogKey::from_secret_bytes, |k| {
        k.to_secret_bytes()
    });

    // Public pairs: tag, ed25519 key, X25519 key; and their hex form.
    bytes("TrusteePublic", data, TrusteePublic::from_bytes, |k| {
        k.to_bytes()
    });
    bytes(
        "ControlRoomPublic",
        data,
        ControlRoomPublic::from_bytes,
        |k| k.to_bytes(),
    );
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(k) = TrusteePublic::from_hex(s) {
            assert_eq!(TrusteePublic::from_hex(&k.to_hex()).ok(), Some(k));
        }
        if let Ok(k) = ControlRoomPublic::from_hex(s) {
            assert_eq!(ControlRoomPublic::from_hex(&k.to_hex()).ok(), Some(k));
        }
        if let Ok(k) = LogPublic::from_hex(s) {
            assert_eq!(LogPublic::from_hex(&k.to_hex()).ok(), Some(k));
        }
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
    }
});
