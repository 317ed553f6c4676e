//! The student's profile: what the control room and the assigned team see
//! after a panic, and nobody sees before.

use core::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Largest encoded profile accepted (a small photo included).
pub const MAX_PROFILE_BYTES: usize = 512 * 1024;

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The profile is larger than [`MAX_PROFILE_BYTES`].
    #[error("the profile is larger than {MAX_PROFILE_BYTES} bytes")]
    TooLarge,
    /// The bytes are not a version-1 profile.
    #[error("not a version-1 sosvault profile")]
    Malformed,
}

/// A student's profile (JSON inside the vault, `"v": 1`).
///
/// Personal data: zeroized on drop, `[redacted]` in `Debug`, and no `Display`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Format version; always 1.
    pub v: u8,
    /// Full name.
    pub name: String,
    /// Phone number.
    pub phone: String,
    /// Photo as a `data:` URL (JPEG or PNG, base64); may be empty.
    #[serde(default)]
    pub photo: String,
    /// Home address.
    #[serde(default)]
    pub address: String,
    /// Hostel and room.
    #[serde(default)]
    pub hostel: String,
    /// Coaching institute.
    #[serde(default)]
    pub institute: String,
    /// Guardian's name.
    #[serde(default)]
    pub guardian_name: String,
    /// Guardian's phone.
    #[serde(default)]
    pub guardian_phone: String,
    /// Blood group.
    #[serde(default)]
    pub blood_group: String,
    /// Medical notes (allergies, conditions, medication).
    #[serde(default)]
    pub medical_notes: String,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Profile([redacted])")
    }
}

impl Profile {
    /// A version-1 profile with a name and phone; set the other fields directly.
    pub fn new(name: impl Into<String>, phone: impl Into<String>) -> Self {
        let mut p = Self::default();
        p.v = 1;
        p.name = name.into();
        p.phone = phone.into();
        p
    }

    /// The encoding sealed into the vault.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        // Serialising a struct of strings to a Vec cannot fail.
        Zeroizing::new(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses [`Profile::to_bytes`]'s encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProfileError> {
        if bytes.len() > MAX_PROFILE_BYTES {
            return Err(ProfileError::TooLarge);
        }
        let p: Profile = serde_json::from_slice(bytes).map_err(|_| ProfileError::Malformed)?;
        if p.v != 1 {
            return Err(ProfileError::Malformed);
        }
        Ok(p)
    }
}
