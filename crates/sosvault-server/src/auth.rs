//! Operator passwords (argon2id, PHC strings).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// An operator's password as stored (in the config file and the accounts
/// table): its argon2id PHC string. Not the password, but enough to guess
/// it offline, so its `Debug` says `[redacted]` and it is never logged.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct StoredPassword(String);

impl StoredPassword {
    /// The PHC string, to store or to check a password against.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for StoredPassword {
    fn from(phc: String) -> Self {
        Self(phc)
    }
}

impl From<&str> for StoredPassword {
    fn from(phc: &str) -> Self {
        Self(phc.to_owned())
    }
}

impl std::fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Hashes a password into a PHC string for the config file.
pub fn hash_password(password: &str) -> Result<StoredPassword, String> {
    let mut salt = [0u8; 16];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| StoredPassword(h.to_string()))
        .map_err(|e| e.to_string())
}

/// Checks a password against a PHC string. With no hash (unknown user) a
/// dummy hash is still verified, so the timing does not say which users exist.
pub fn verify_password(hash: Option<&StoredPassword>, password: &str) -> bool {
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2rmzXKVSZMgIe4wgmvTzT5yyQ2hYCRBW1zRJJ8JGvXc";
    let (phc, real) = match hash {
        Some(h) => (h.as_str(), true),
        None => (DUMMY, false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

#[cfg(test)]
mod tests {
    use super::{hash_password, verify_password};

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.as_str().starts_with("$argon2id$"));
        assert_eq!(format!("{h:?}"), "[redacted]");
        assert!(verify_password(Some(&h), "correct horse"));
        assert!(!verify_password(Some(&h), "wrong"));
        assert!(!verify_password(None, "correct horse"));
        assert!(!verify_password(Some(&"not a hash".into()), "x"));
    }
}
