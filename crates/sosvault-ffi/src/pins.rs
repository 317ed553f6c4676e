//! The PIN and the duress PIN that "I am safe" and stop ask for.
//!
//! Both PINs make the same message and the same screens; only the control
//! room, opening the sealed note, learns that the duress PIN was typed and
//! escalates. The lock keeps salted hashes of the two, never the PINs, and
//! compares in constant time, both every time; the PINs it is given are
//! wiped from its memory once hashed.
//!
//! A 4-digit PIN falls to any hash: whoever reads the saved lock can try
//! all 10,000 and learn which PIN is the duress one. Keep [`PinLock::save`]'s
//! bytes where the device key is kept (Android Keystore-wrapped storage,
//! the iOS Keychain), never in plain app storage or a backup.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::VaultError;

const FORMAT: u8 = 1;
const SAVED_LEN: usize = 1 + 16 + 32 + 32;
/// Shortest and longest PIN, in digits.
const DIGITS: std::ops::RangeInclusive<usize> = 4..=12;

/// The student's PIN and duress PIN, as salted hashes.
#[derive(uniffi::Object, Zeroize, ZeroizeOnDrop)]
pub struct PinLock {
    salt: [u8; 16],
    safe: [u8; 32],
    duress: [u8; 32],
}

impl std::fmt::Debug for PinLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinLock([redacted])")
    }
}

fn hash(salt: &[u8; 16], pin: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"sosvault-ffi/pin/v1");
    h.update(salt);
    h.update(pin.trim().as_bytes());
    h.finalize().into()
}

fn check_digits(what: &str, pin: &str) -> Result<(), VaultError> {
    let pin = pin.trim();
    if DIGITS.contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(VaultError::bad(what, "a PIN is 4 to 12 digits"))
    }
}

impl PinLock {
    /// Whether `pin` is the duress PIN (`true`), the PIN (`false`), or
    /// neither ([`VaultError::WrongPin`]).
    pub(crate) fn duress_of(&self, pin: &str) -> Result<bool, VaultError> {
        let mut typed = hash(&self.salt, pin);
        let safe = typed.ct_eq(&self.safe);
        let duress = typed.ct_eq(&self.duress);
        typed.zeroize();
        match (bool::from(safe), bool::from(duress)) {
            (true, _) => Ok(false),
            (_, true) => Ok(true),
            _ => Err(VaultError::WrongPin),
        }
    }
}

#[uniffi::export]
impl PinLock {
    /// A lock for `pin` and `duress_pin` (4 to 12 digits each, not the same).
    #[uniffi::constructor]
    pub fn create(pin: String, duress_pin: String) -> Result<Arc<Self>, VaultError> {
        let (pin, duress_pin) = (Zeroizing::new(pin), Zeroizing::new(duress_pin));
        check_digits("the PIN", &pin)?;
        check_digits("the duress PIN", &duress_pin)?;
        if pin.trim() == duress_pin.trim() {
            return Err(VaultError::bad(
                "the duress PIN",
                "it must differ from the PIN",
            ));
        }
        let salt: [u8; 16] = rand::random();
        Ok(Arc::new(Self {
            safe: hash(&salt, &pin),
            duress: hash(&salt, &duress_pin),
            salt,
        }))
    }

    /// The lock as [`PinLock::save`] wrote it.
    #[uniffi::constructor]
    pub fn restore(saved: Vec<u8>) -> Result<Arc<Self>, VaultError> {
        let bytes: &[u8; SAVED_LEN] = saved
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::bad("the saved PIN lock", "wrong length"))?;
        let (format, rest) = bytes.split_at(1);
        if format != [FORMAT] {
            return Err(VaultError::bad("the saved PIN lock", "unknown format"));
        }
        let mut lock = Self {
            salt: [0; 16],
            safe: [0; 32],
            duress: [0; 32],
        };
        lock.salt.copy_from_slice(&rest[..16]);
        lock.safe.copy_from_slice(&rest[16..48]);
        lock.duress.copy_from_slice(&rest[48..]);
        Ok(Arc::new(lock))
    }

    /// The lock's bytes, to keep beside the phone's state (see the module
    /// docs: as secret as the device key).
    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SAVED_LEN);
        out.push(FORMAT);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.safe);
        out.extend_from_slice(&self.duress);
        out
    }

    /// Whether `pin` opens the lock at all (either PIN), without saying
    /// which: for an app screen that asks for the PIN before showing
    /// anything.
    pub fn accepts(&self, pin: String) -> bool {
        self.duress_of(&Zeroizing::new(pin)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_the_two_pins_open_and_only_one_means_duress() {
        let lock = PinLock::create("2468".into(), "1357".into()).unwrap();
        assert!(!lock.duress_of("2468").unwrap());
        assert!(lock.duress_of(" 1357 ").unwrap());
        for wrong in ["", "0000", "24680", "abcd", "1357x"] {
            assert!(matches!(lock.duress_of(wrong), Err(VaultError::WrongPin)));
        }
        let back = PinLock::restore(lock.save()).unwrap();
        assert!(back.duress_of("1357").unwrap());
        assert!(!back.duress_of("2468").unwrap());
        // Saved: no PIN in clear, and a fresh salt each time.
        let saved = lock.save();
        assert!(!saved.windows(4).any(|w| w == b"2468" || w == b"1357"));
        let other = PinLock::create("2468".into(), "1357".into()).unwrap();
        assert_ne!(other.save(), saved);
    }

    #[test]
    fn bad_pins_and_damaged_locks_are_refused() {
        for (pin, duress) in [
            ("123", "4567"),
            ("1234", "1234"),
            ("12a4", "5678"),
            ("1234", ""),
        ] {
            assert!(
                PinLock::create(pin.into(), duress.into()).is_err(),
                "{pin} {duress}"
            );
        }
        let mut saved = PinLock::create("2468".into(), "1357".into())
            .unwrap()
            .save();
        assert!(PinLock::restore(saved[1..].to_vec()).is_err());
        saved[0] = 9;
        assert!(PinLock::restore(saved).is_err());
    }
}
