//! The share receipts of an enrollment: the ones in-memory trustees give
//! when each takes its share, and the ones a hostile relay makes up in their
//! place.
//!
//! Shared by the cross-crate tests (`tests/manifest.rs`), the dispatch
//! service's attacker suite (`crates/sosvault-server/tests/
//! hostile_control_room.rs`) and the CLI's fake dispatch service
//! (`crates/sosvault-cli/tests/manifest.rs`), which include this file by path.

#![allow(dead_code, clippy::unwrap_used)]

use sosvault::{
    Container as _, EnrollmentPackage, InMemoryTrustee, ShareReceipt, Signed, StudentId, Timestamp,
    TrusteeKey,
};

/// Relays share i + 1 of `package` to `trustees[i]` at `at`, as the dispatch
/// service does: each takes it; their receipts, in share order.
pub fn receipts_of(
    trustees: &mut [InMemoryTrustee],
    package: &EnrollmentPackage,
    at: Timestamp,
) -> Vec<Signed<ShareReceipt>> {
    trustees
        .iter_mut()
        .enumerate()
        .map(|(i, t)| {
            let d = package.delivery(i as u8 + 1).unwrap();
            t.accept_share(&d.to_bytes(), at).unwrap()
        })
        .collect()
}

/// Share receipts for `package`'s real commitments (share i + 1 for
/// `keys[i]`), stored at `at` and signed by `keys`: the attacker's own keys
/// standing in for the trustees'.
pub fn made_up_receipts(
    keys: &[TrusteeKey],
    student: StudentId,
    package: &EnrollmentPackage,
    at: Timestamp,
) -> Vec<Signed<ShareReceipt>> {
    let record = package.record.body();
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            Signed::sign(
                ShareReceipt {
                    student,
                    epoch: record.epoch,
                    share_index: i as u8 + 1,
                    commitment: record.trustees[i].commitment,
                    stored_at: at,
                },
                k,
            )
        })
        .collect()
}
