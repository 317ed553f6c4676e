//! The deployment manifest: what a device trusts, and why it trusts nothing else.
//!
//! A device splits its vault key among the trustees it is told about. If the
//! dispatch service told it (as `GET /v1/info` once did), whoever runs that
//! service could list trustees of its own and hold every vault key without
//! a panic. So the trustees, the threshold and the control room come from a
//! **manifest** signed by a deployment [`AuthorityKey`] held offline by
//! whoever appoints the trustees; the app pins the authority's public key
//! ([`AuthorityPublic`]) at build time and believes a manifest only as far
//! as that signature goes. The service may serve the manifest (it is
//! public); it cannot change a byte of it.
//!
//! ```
//! use sosvault::manifest::{Manifest, ManifestTrustee};
//! use sosvault::{AuthorityKey, ControlRoomKey, Signed, Timestamp, TrusteeKey};
//!
//! let now = Timestamp(1_790_000_000);
//! let authority = AuthorityKey::generate(); // offline
//! let trustees: Vec<ManifestTrustee> = ["police-hq", "oversight", "ngo"]
//!     .iter()
//!     .map(|name| ManifestTrustee {
//!         name: (*name).into(),
//!         public: TrusteeKey::generate().public(),
//!         url: format!("https://{name}.example"),
//!     })
//!     .collect();
//! let manifest = Manifest {
//!     deployment: "kota".into(),
//!     version: 1,
//!     issued_at: now,
//!     not_before: now,
//!     not_after: now.plus(365 * 24 * 3600),
//!     threshold: 2,
//!     trustees,
//!     control_room: ControlRoomKey::generate().public(),
//!     control_room_url: "https://dispatch.example".into(),
//! };
//! let signed = Signed::sign(manifest, &authority);
//!
//! // On the phone: the pinned authority key decides.
//! let verified = Manifest::verify(signed.as_bytes(), &authority.public(), now)?;
//! assert_eq!(verified.manifest().threshold, 2);
//! assert!(Manifest::verify(signed.as_bytes(), &AuthorityKey::generate().public(), now).is_err());
//! # Ok::<(), sosvault::manifest::ManifestError>(())
//! ```
//!
//! Layout and rules: `docs/PROTOCOL.md` §7.11.

use thiserror::Error;

use crate::ids::{MessageHash, Timestamp};
use crate::keys::{AuthorityKey, AuthorityPublic, ControlRoomPublic, TrusteePublic};
use crate::messages::MAX_TRUSTEES;
use crate::signed::{Message, Signed, sealed::Body};
use crate::wire::{DecodeError, Reader, Writer};

/// Longest deployment or trustee name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest URL, in bytes.
pub const MAX_URL_BYTES: usize = 256;
/// Longest encoded public key of a trustee or the control room.
const MAX_PUBLIC_BYTES: usize = 128;

/// One trustee as the manifest names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestTrustee {
    /// A human name (`police-hq`), at most [`MAX_NAME_BYTES`].
    pub name: String,
    /// Its public keys: shares are sealed to it, its receipts verify with it.
    pub public: TrusteePublic,
    /// Where the control room reaches it (informative: the device never does).
    pub url: String,
}

/// `sosvault/manifest/v1`, signed by the deployment authority: the trustees,
/// the threshold and the control room every device of a deployment enrolls to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The deployment's name (`kota-police`), at most [`MAX_NAME_BYTES`].
    pub deployment: String,
    /// Grows with every manifest the authority signs for the deployment; a
    /// device refuses a lower one (rollback) and a different one of the same
    /// version (equivocation).
    pub version: u64,
    /// When it was signed.
    pub issued_at: Timestamp,
    /// Not valid before.
    pub not_before: Timestamp,
    /// Not valid after: a device refuses to enroll to an expired manifest.
    pub not_after: Timestamp,
    /// How many trustees must release to open a vault (2 ≤ t ≤ n).
    pub threshold: u8,
    /// The trustees, in share-index order (share i + 1 goes to trustee i).
    pub trustees: Vec<ManifestTrustee>,
    /// The control room: panics are sealed to it, trustees pin its signer.
    pub control_room: ControlRoomPublic,
    /// Where the device reaches the control room.
    pub control_room_url: String,
}

fn read_text(r: &mut Reader<'_>, field: &'static str, max: usize) -> Result<String, DecodeError> {
    let bytes = r.var(field, max)?;
    let text = core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidValue(field))?;
    if text.trim().is_empty() {
        return Err(DecodeError::InvalidValue(field));
    }
    Ok(text.to_owned())
}

impl Body for Manifest {
    fn encode_body(&self, w: &mut Writer) {
        w.var(self.deployment.as_bytes());
        w.u64(self.version);
        w.u64(self.issued_at.0);
        w.u64(self.not_before.0);
        w.u64(self.not_after.0);
        w.u8(self.threshold);
        // At most MAX_TRUSTEES: decoding refuses more, so a signed manifest never has more.
        w.u8(u8::try_from(self.trustees.len()).unwrap_or(u8::MAX));
        for t in &self.trustees {
            w.var(t.name.as_bytes());
            w.var(&t.public.to_bytes());
            w.var(t.url.as_bytes());
        }
        w.var(&self.control_room.to_bytes());
        w.var(self.control_room_url.as_bytes());
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let deployment = read_text(r, "deployment", MAX_NAME_BYTES)?;
        let version = r.u64("version")?;
        if version == 0 {
            return Err(DecodeError::InvalidValue("version"));
        }
        let issued_at = Timestamp(r.u64("issued at")?);
        let not_before = Timestamp(r.u64("not before")?);
        let not_after = Timestamp(r.u64("not after")?);
        if not_after < not_before {
            return Err(DecodeError::InvalidValue("validity"));
        }
        let threshold = r.u8("threshold")?;
        let n = usize::from(r.u8("trustee count")?);
        if n > MAX_TRUSTEES || threshold < 2 || usize::from(threshold) > n {
            return Err(DecodeError::InvalidValue("threshold"));
        }
        let mut trustees: Vec<ManifestTrustee> = Vec::with_capacity(n);
        for _ in 0..n {
            let name = read_text(r, "trustee name", MAX_NAME_BYTES)?;
            let public = TrusteePublic::from_bytes(r.var("trustee public", MAX_PUBLIC_BYTES)?)?;
            let url = read_text(r, "trustee url", MAX_URL_BYTES)?;
            if trustees.iter().any(|t| t.public.id() == public.id()) {
                return Err(DecodeError::InvalidValue("trustee listed twice"));
            }
            trustees.push(ManifestTrustee { name, public, url });
        }
        let control_room =
            ControlRoomPublic::from_bytes(r.var("control room public", MAX_PUBLIC_BYTES)?)?;
        let control_room_url = read_text(r, "control room url", MAX_URL_BYTES)?;
        Ok(Self {
            deployment,
            version,
            issued_at,
            not_before,
            not_after,
            threshold,
            trustees,
            control_room,
            control_room_url,
        })
    }
}

impl Message for Manifest {
    const TAG: &'static str = "sosvault/manifest/v1";
    const MAX_BODY: usize = 4
        + MAX_NAME_BYTES
        + 8 * 4
        + 2
        + MAX_TRUSTEES * (3 * 4 + MAX_NAME_BYTES + MAX_PUBLIC_BYTES + MAX_URL_BYTES)
        + 2 * 4
        + MAX_PUBLIC_BYTES
        + MAX_URL_BYTES;
    type Signer = AuthorityKey;
}

/// Why a manifest was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// It does not decode, or its signature does not verify.
    #[error("malformed manifest: {0}")]
    Malformed(#[from] DecodeError),
    /// It is not signed by the pinned authority.
    #[error("the manifest is not signed by the pinned deployment authority")]
    WrongAuthority,
    /// Its validity has not begun.
    #[error("the manifest is not valid yet")]
    NotYetValid,
    /// Its validity has ended.
    #[error("the manifest has expired; the deployment must publish a new one")]
    Expired,
    /// It is older than the one the device holds (a rollback).
    #[error("manifest version {offered} is older than the version {held} already trusted")]
    Rollback {
        /// The version held.
        held: u64,
        /// The version offered.
        offered: u64,
    },
    /// It differs from the one the device holds under the same version: the
    /// authority signed two manifests for one version, or someone is lying.
    #[error("a different manifest with the same version {0} is already trusted")]
    Equivocation(u64),
}

impl Manifest {
    /// Verifies a signed manifest against the pinned authority at `now`:
    /// the envelope and signature, the signer, the validity dates.
    pub fn verify(
        bytes: &[u8],
        authority: &AuthorityPublic,
        now: Timestamp,
    ) -> Result<VerifiedManifest, ManifestError> {
        let signed = Signed::<Manifest>::decode(bytes)?;
        if !authority.same_key(signed.signer()) {
            return Err(ManifestError::WrongAuthority);
        }
        let m = signed.body();
        if now < m.not_before {
            return Err(ManifestError::NotYetValid);
        }
        if now > m.not_after {
            return Err(ManifestError::Expired);
        }
        Ok(VerifiedManifest(signed))
    }

    /// The trustees' public keys, in share-index order.
    pub fn trustee_publics(&self) -> Vec<TrusteePublic> {
        self.trustees.iter().map(|t| t.public.clone()).collect()
    }
}

/// A manifest whose signature, signer and dates were checked by
/// [`Manifest::verify`]. Only that function makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest(Signed<Manifest>);

impl VerifiedManifest {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        self.0.body()
    }

    /// The signed manifest, exactly as verified.
    pub fn signed(&self) -> &Signed<Manifest> {
        &self.0
    }

    /// Its hash: what a device records as the manifest it enrolled under.
    pub fn hash(&self) -> MessageHash {
        self.0.hash()
    }

    /// Whether a device holding `held` (version and hash) may move to this
    /// manifest: a higher version, or the very same manifest.
    pub fn check_update(&self, held: (u64, MessageHash)) -> Result<(), ManifestError> {
        let (version, hash) = held;
        let offered = self.manifest().version;
        if offered < version {
            return Err(ManifestError::Rollback {
                held: version,
                offered,
            });
        }
        if offered == version && self.hash() != hash {
            return Err(ManifestError::Equivocation(version));
        }
        Ok(())
    }
}
