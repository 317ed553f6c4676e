//! Threshold escrow of a vault key: Shamir over GF(256) with `vsss-rs`, and
//! SHA-256 commitments to each share.
//!
//! Why vsss-rs 6.0.1 and not `sharks` or `blahaj`: sharks 0.5 draws polynomial
//! coefficients from 1..=255, so a single share of a 2-of-n split rules out one
//! value of every secret byte (see `tests/why_not_sharks.rs`); blahaj 0.7 fixes
//! the bias but multiplies through log/exp tables indexed by secret bytes, a
//! cache-timing channel. vsss-rs 6.0.1 draws coefficients uniformly and does
//! GF(256) arithmetic without tables.

use subtle::ConstantTimeEq;
use vsss_rs::Gf256;
use zeroize::Zeroizing;

use crate::ids::{ShareCommitment, StudentId, tagged_hash};
use crate::messages::ShareValue;

/// Domain tag of share commitments.
pub const COMMITMENT_TAG: &str = "sosvault/share-commitment/v1";

/// Why splitting failed: only bad parameters can make it fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// The threshold or share count is out of range (need 2 ≤ t ≤ n ≤ 16).
    #[error("threshold {threshold} of {shares} is not allowed (need 2 <= t <= n <= 16)")]
    BadThreshold {
        /// Requested threshold.
        threshold: usize,
        /// Requested number of shares.
        shares: usize,
    },
}

/// Splits `secret` t-of-n. Share `i` (0-based in the result) has index `i + 1`.
pub(crate) fn split(
    secret: &[u8; 32],
    threshold: usize,
    shares: usize,
    rng: impl rand::CryptoRng,
) -> Result<Vec<ShareValue>, SplitError> {
    let bad = SplitError::BadThreshold { threshold, shares };
    if threshold < 2 || threshold > shares || shares > crate::messages::MAX_TRUSTEES {
        return Err(bad);
    }
    let raw = Gf256::split_array(threshold, shares, secret, rng).map_err(|_| bad)?;
    let raw: Vec<Zeroizing<Vec<u8>>> = raw.into_iter().map(Zeroizing::new).collect();
    let mut out = Vec::with_capacity(shares);
    for (i, share) in raw.iter().enumerate() {
        // vsss-rs numbers participants 1..=n in order and returns x then 32 y bytes.
        if share.len() != 33 || share[0] as usize != i + 1 {
            return Err(bad);
        }
        let mut y = Zeroizing::new([0u8; 32]);
        y.copy_from_slice(&share[1..]);
        out.push(ShareValue { index: share[0], y });
    }
    Ok(out)
}

/// Rebuilds the secret from shares with distinct indices. The caller checks the
/// count against the threshold and each share against its commitment first.
pub(crate) fn combine(shares: &[&ShareValue]) -> Option<Zeroizing<[u8; 32]>> {
    let raw: Vec<Vec<u8>> = shares
        .iter()
        .map(|s| {
            let mut v = Vec::with_capacity(33);
            v.push(s.index);
            v.extend_from_slice(&s.y[..]);
            v
        })
        .collect();
    let raw = Zeroizing::new(raw);
    let secret = Zeroizing::new(Gf256::combine_array(&*raw).ok()?);
    let mut out = Zeroizing::new([0u8; 32]);
    if secret.len() != 32 {
        return None;
    }
    out.copy_from_slice(&secret);
    Some(out)
}

/// The commitment to one share, bound to student, epoch and index.
pub fn commitment(student: &StudentId, epoch: u32, index: u8, y: &[u8; 32]) -> ShareCommitment {
    ShareCommitment(tagged_hash(
        COMMITMENT_TAG,
        &[student.as_bytes(), &epoch.to_be_bytes(), &[index], y],
    ))
}

pub(crate) fn share_matches(
    student: &StudentId,
    epoch: u32,
    share: &ShareValue,
    expected: &ShareCommitment,
) -> bool {
    let c = commitment(student, epoch, share.index, &share.y);
    c.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::{combine, split};

    #[test]
    fn split_numbers_shares_from_one() {
        let shares = split(&[5u8; 32], 2, 3, rand::rng()).unwrap();
        let idx: Vec<u8> = shares.iter().map(|s| s.index).collect();
        assert_eq!(idx, vec![1, 2, 3]);
    }

    #[test]
    fn bad_thresholds_are_refused() {
        for (t, n) in [(1, 3), (4, 3), (2, 17), (0, 0)] {
            assert!(split(&[0u8; 32], t, n, rand::rng()).is_err(), "{t}-of-{n}");
        }
    }

    #[test]
    fn combine_inverts_split() {
        let secret = [0xA5u8; 32];
        let shares = split(&secret, 3, 5, rand::rng()).unwrap();
        let pick = [&shares[4], &shares[0], &shares[2]];
        assert_eq!(*combine(&pick).unwrap(), secret);
    }
}
