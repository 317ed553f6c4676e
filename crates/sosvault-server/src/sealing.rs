//! Incident keys at rest: sealed under the service's master key
//! (`master.key`, the one [`MasterKey`] both services use), bound to their
//! incident.
//!
//! ```text
//! sealed = "SVI1" | nonce | XChaCha20-Poly1305(HKDF(master key, "sosvault/server-store/v1/incident-key-seal"),
//!                                              aad = "sosvault/server-store/v1/incident-key" | incident id, key)
//! ```
//!
//! The events one node announces to the others through the database
//! (`engine/bus`) are sealed under the same master key, with a key of their
//! own purpose (`SVE1`, `sosvault/dispatch/v1/event-seal`), so the database
//! never sees one in the clear.
//!
//! A panic's answer seals its incident key, so sealing is symmetric: no
//! public-key operation on that path. The incident id in the associated data
//! binds the blob to its row: a database thief who copies one incident's
//! sealed key onto another gets nothing that opens.
//!
//! `master.key` written by versions before this one held an age X25519
//! identity (`AGE-SECRET-KEY-1...`) and incident keys were age-encrypted to
//! it. Such a file still loads: the symmetric key is derived from it, and
//! the incident keys it sealed still open, so an upgrade in the middle of
//! an incident loses nothing.

use core::fmt;

use age::secrecy::ExposeSecret;
use sosvault::IncidentId;
use sosvault_service::seal::{MasterKey, Sealer};
use zeroize::Zeroizing;

const MAGIC: [u8; 4] = *b"SVI1";
const PURPOSE: &str = "sosvault/server-store/v1/incident-key-seal";
const AAD_TAG: &[u8] = b"sosvault/server-store/v1/incident-key";
const EVENT_MAGIC: [u8; 4] = *b"SVE1";
const EVENT_PURPOSE: &str = "sosvault/dispatch/v1/event-seal";
/// The label of the symmetric key derived from an older key file's age
/// identity.
const FROM_AGE: &str = "sosvault/server/v1/master-key-from-age-identity";
/// How an age identity's key file text begins.
const AGE_PREFIX: &str = "AGE-SECRET-KEY-1";

/// Why `master.key` could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "master.key must hold 64 hex digits (or, written by an older version, an age identity \
     AGE-SECRET-KEY-1...); move it aside to have a new one made, which forgets the keys of \
     incidents still open"
)]
pub struct BadKeyFile;

/// Seals and opens incident keys, and the events nodes announce.
pub struct KeySealer {
    sealer: Sealer,
    events: Sealer,
    /// The age identity an older `master.key` held: what it sealed opens.
    legacy: Option<age::x25519::Identity>,
}

impl fmt::Debug for KeySealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySealer([redacted])")
    }
}

impl From<MasterKey> for KeySealer {
    fn from(master: MasterKey) -> Self {
        Self {
            sealer: Sealer::new(&master, PURPOSE, MAGIC),
            events: Sealer::new(&master, EVENT_PURPOSE, EVENT_MAGIC),
            legacy: None,
        }
    }
}

impl KeySealer {
    /// Reads `master.key`'s content: 64 hex digits, or an older version's
    /// age identity.
    pub fn from_key_file(bytes: &[u8]) -> Result<Self, BadKeyFile> {
        let text = core::str::from_utf8(bytes).map(str::trim).unwrap_or("");
        if !text.starts_with(AGE_PREFIX) {
            return MasterKey::from_encoded(bytes)
                .map(Self::from)
                .map_err(|_| BadKeyFile);
        }
        let identity: age::x25519::Identity = text.parse().map_err(|_| BadKeyFile)?;
        let secret = identity.to_string();
        let master = MasterKey::derived_from(secret.expose_secret().as_bytes(), FROM_AGE);
        Ok(Self {
            legacy: Some(identity),
            ..Self::from(master)
        })
    }

    fn aad(incident: &IncidentId) -> [u8; AAD_TAG.len() + 16] {
        let mut aad = [0u8; AAD_TAG.len() + 16];
        aad[..AAD_TAG.len()].copy_from_slice(AAD_TAG);
        aad[AAD_TAG.len()..].copy_from_slice(incident.as_bytes());
        aad
    }

    /// Seals `incident`'s key.
    pub fn seal(&self, incident: &IncidentId, key: &[u8]) -> Vec<u8> {
        self.sealer.seal(&Self::aad(incident), key)
    }

    /// Seals an event announced to the other nodes, bound to `aad`.
    pub fn seal_event(&self, aad: &[u8], event: &[u8]) -> Vec<u8> {
        self.events.seal(aad, event)
    }

    /// Opens an announced event: `None` if it does not open (another
    /// deployment's master key, altered bytes).
    pub fn open_event(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        self.events.open(aad, sealed).ok()
    }

    /// Opens `incident`'s sealed key: `None` if it does not open (another
    /// key, another incident's row, altered bytes).
    pub fn open(&self, incident: &IncidentId, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if self.sealer.recognises(sealed) {
            return self.sealer.open(&Self::aad(incident), sealed).ok();
        }
        let legacy = self.legacy.as_ref()?;
        age::decrypt(legacy, sealed).ok().map(Zeroizing::new)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use age::secrecy::ExposeSecret;
    use sosvault_service::seal::MasterKey;

    use super::{BadKeyFile, IncidentId, KeySealer};

    #[test]
    fn an_announced_event_opens_only_under_its_key_and_purpose() {
        let master = MasterKey::generate();
        let hex = master.to_hex_secret();
        let s = KeySealer::from(master);
        let sealed = s.seal_event(b"bus", b"{\"kind\":\"location\"}");
        assert!(sealed.starts_with(b"SVE1"));
        let again = KeySealer::from_key_file(hex.as_bytes()).unwrap();
        assert_eq!(
            again.open_event(b"bus", &sealed).unwrap().as_slice(),
            b"{\"kind\":\"location\"}"
        );
        assert!(s.open_event(b"other", &sealed).is_none(), "another binding");
        let other = KeySealer::from(MasterKey::generate());
        assert!(
            other.open_event(b"bus", &sealed).is_none(),
            "another deployment"
        );
        // Not an incident key, nor the other way round: each its own purpose.
        let id = IncidentId::from_bytes([1; 16]);
        assert!(s.open(&id, &sealed).is_none());
        let key = s.seal(&id, b"incident key");
        assert!(s.open_event(b"bus", &key).is_none());
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(s.open_event(b"bus", &altered).is_none(), "altered bytes");
    }

    #[test]
    fn an_incident_key_opens_only_in_its_own_incident_and_under_its_key() {
        let master = MasterKey::generate();
        let hex = master.to_hex_secret();
        let s = KeySealer::from(master);
        let sealed = s.seal(&IncidentId::from_bytes([1; 16]), b"incident key");
        assert_eq!(
            s.open(&IncidentId::from_bytes([1; 16]), &sealed)
                .unwrap()
                .as_slice(),
            b"incident key"
        );
        assert!(
            s.open(&IncidentId::from_bytes([2; 16]), &sealed).is_none(),
            "another incident's row"
        );
        let again = KeySealer::from_key_file(hex.as_bytes()).unwrap();
        assert!(
            again
                .open(&IncidentId::from_bytes([1; 16]), &sealed)
                .is_some(),
            "the same key file"
        );
        let other = KeySealer::from(MasterKey::generate());
        assert!(
            other
                .open(&IncidentId::from_bytes([1; 16]), &sealed)
                .is_none(),
            "another master key"
        );
        assert!(format!("{s:?}").contains("redacted"));
    }

    /// A `master.key` from before the symmetric seal: it loads, what it
    /// sealed with age still opens, and what it seals now opens after a
    /// restart from the same file.
    #[test]
    fn an_older_age_key_file_keeps_working() {
        let identity = age::x25519::Identity::generate();
        let text = identity.to_string().expose_secret().to_owned();
        let old_blob = age::encrypt(&identity.to_public(), b"old incident key").unwrap();
        let s = KeySealer::from_key_file(format!("{text}\n").as_bytes()).unwrap();
        assert_eq!(
            s.open(&IncidentId::from_bytes([9; 16]), &old_blob)
                .unwrap()
                .as_slice(),
            b"old incident key"
        );
        let new_blob = s.seal(&IncidentId::from_bytes([3; 16]), b"new incident key");
        assert!(new_blob.starts_with(b"SVI1"));
        let restarted = KeySealer::from_key_file(text.as_bytes()).unwrap();
        assert_eq!(
            restarted
                .open(&IncidentId::from_bytes([3; 16]), &new_blob)
                .unwrap()
                .as_slice(),
            b"new incident key"
        );
        // A new-format key does not open age blobs (it has no identity).
        let fresh = KeySealer::from(MasterKey::generate());
        assert!(
            fresh
                .open(&IncidentId::from_bytes([9; 16]), &old_blob)
                .is_none()
        );
    }

    #[test]
    fn a_bad_key_file_is_refused_with_what_to_do() {
        for bad in [
            &b""[..],
            b"not a key",
            b"AGE-SECRET-KEY-1NOTBECH32",
            &[0xff; 40],
        ] {
            assert_eq!(KeySealer::from_key_file(bad).unwrap_err(), BadKeyFile);
        }
        assert!(BadKeyFile.to_string().contains("move it aside"));
    }
}
