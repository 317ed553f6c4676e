//! Low-level escrow primitives, for tests, benchmarks and auditors.
//!
//! Hazardous: these work on raw secret bytes and skip every check the rest of
//! the crate makes (commitments, signatures, epochs). Applications use
//! [`crate::Device`], [`crate::Trustee`] and [`crate::Opener`] instead.

use zeroize::Zeroizing;

use crate::escrow;
pub use crate::escrow::SplitError;
use crate::messages::ShareValue;

/// One raw share: its index (x, 1..=n) and 32 bytes (y).
pub struct RawShare {
    /// The x coordinate, 1..=n.
    pub index: u8,
    /// The 32 y bytes.
    pub y: Zeroizing<[u8; 32]>,
}

impl core::fmt::Debug for RawShare {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RawShare({}, [redacted])", self.index)
    }
}

/// Splits 32 secret bytes `threshold`-of-`shares` exactly as enrollment does.
pub fn split_secret(
    secret: &[u8; 32],
    threshold: usize,
    shares: usize,
) -> Result<Vec<RawShare>, SplitError> {
    split_secret_with_rng(secret, threshold, shares, rand::rng())
}

/// [`split_secret`] with a caller's RNG (deterministic tests and vectors only).
pub fn split_secret_with_rng(
    secret: &[u8; 32],
    threshold: usize,
    shares: usize,
    rng: impl rand::CryptoRng,
) -> Result<Vec<RawShare>, SplitError> {
    Ok(escrow::split(secret, threshold, shares, rng)?
        .into_iter()
        .map(|s| RawShare {
            index: s.index,
            y: s.y,
        })
        .collect())
}

/// Combines raw shares exactly as the opener does (no commitment checks).
/// Returns `None` if the shares are unusable (duplicate or zero indices, fewer than two).
pub fn combine_shares(shares: &[RawShare]) -> Option<Zeroizing<[u8; 32]>> {
    let values: Vec<ShareValue> = shares
        .iter()
        .map(|s| ShareValue {
            index: s.index,
            y: s.y.clone(),
        })
        .collect();
    let refs: Vec<&ShareValue> = values.iter().collect();
    escrow::combine(&refs)
}
