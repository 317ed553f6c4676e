//! The deployment the phone trusts: a manifest verified against the
//! authority key the app ships with.

use std::sync::Arc;

use sosvault::manifest::{Manifest, VerifiedManifest};
use sosvault::{AuthorityPublic, Timestamp};

use crate::VaultError;

/// A deployment manifest verified under the pinned authority key: the
/// trustees, the threshold and the control room every panic is sealed to.
#[derive(uniffi::Object)]
pub struct Deployment {
    manifest: VerifiedManifest,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.manifest.manifest();
        f.debug_struct("Deployment")
            .field("name", &m.deployment)
            .field("version", &m.version)
            .finish()
    }
}

impl Deployment {
    /// The verified manifest.
    pub(crate) fn verified(&self) -> &VerifiedManifest {
        &self.manifest
    }

    /// The control room every message is sealed to and every report signed by.
    pub(crate) fn control_room(&self) -> &sosvault::ControlRoomPublic {
        &self.manifest.manifest().control_room
    }

    /// The manifest trustee's position whose key signed `signer`, if any.
    pub(crate) fn trustee_of(&self, signer: &ed25519_dalek::VerifyingKey) -> Option<usize> {
        let trustees = &self.manifest.manifest().trustees;
        trustees
            .iter()
            .position(|t| t.public.verifying_key() == signer)
    }
}

#[uniffi::export]
impl Deployment {
    /// Checks the signed manifest `manifest` (as `sosvault manifest make`
    /// wrote it, or `GET /v1/manifest` serves it) against `authority_hex`,
    /// the authority's public key the app was built with, at `now` (unix
    /// seconds): its signature, its validity window.
    #[uniffi::constructor]
    pub fn verify(
        manifest: Vec<u8>,
        authority_hex: String,
        now: u64,
    ) -> Result<Arc<Self>, VaultError> {
        let authority = AuthorityPublic::from_hex(authority_hex.trim())
            .map_err(|_| VaultError::bad("the authority key", "not 64 hex characters of a key"))?;
        let manifest = Manifest::verify(&manifest, &authority, Timestamp(now))
            .map_err(|e| VaultError::Manifest { why: e.to_string() })?;
        Ok(Arc::new(Self { manifest }))
    }

    /// The deployment's name (`kota-police`).
    pub fn name(&self) -> String {
        self.manifest.manifest().deployment.clone()
    }

    /// The manifest's version.
    pub fn version(&self) -> u64 {
        self.manifest.manifest().version
    }

    /// How many trustees must release to open the profile.
    pub fn threshold(&self) -> u8 {
        self.manifest.manifest().threshold
    }

    /// The trustees' names, in share order.
    pub fn trustee_names(&self) -> Vec<String> {
        let trustees = &self.manifest.manifest().trustees;
        trustees.iter().map(|t| t.name.clone()).collect()
    }

    /// Where the phone reaches the control room (the dispatch service).
    pub fn control_room_url(&self) -> String {
        self.manifest.manifest().control_room_url.clone()
    }

    /// The id (hex) the control room's log answers to: the `holder` of
    /// [`crate::Phone::log_query`] for `POST /v1/log/mine` at the control room.
    pub fn control_room_log_holder(&self) -> String {
        sosvault::TrusteeId::of_signer(self.control_room().verifying_key()).to_hex()
    }

    /// The signed manifest, exactly as verified (to store beside the phone).
    pub fn manifest_bytes(&self) -> Vec<u8> {
        self.manifest.signed().as_bytes().to_vec()
    }
}
