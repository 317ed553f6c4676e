//! What a hostile relay makes up in the place of the trustees' share
//! receipts.
//!
//! Shared by the cross-crate tests (`tests/manifest.rs`) and the dispatch
//! service's attacker suite (`crates/sosvault-server/tests/
//! hostile_control_room.rs`, which includes this file by path).

#![allow(dead_code)]

use sosvault::{EnrollmentPackage, ShareReceipt, Signed, StudentId, Timestamp, TrusteeKey};

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
