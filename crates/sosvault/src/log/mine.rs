//! The phone's check of a log's answer to its own query (`POST
//! /v1/log/mine`): believed whole or not at all.

use thiserror::Error;

use super::LogError;
use super::entry::{LogEntry, view_reason_commitment};
use super::head::TreeHead;
use crate::ids::StudentId;
use crate::keys::LogPublic;

/// One entry of the answer, as it arrived.
#[derive(Clone, Copy, Debug)]
pub struct ServedEntry<'a, P> {
    /// Its index in the log.
    pub index: u64,
    /// The entry's bytes.
    pub entry: &'a [u8],
    /// Its inclusion proof in the answer's head.
    pub proof: &'a [P],
    /// For a view with a reason: the reason's text and nonce, as served
    /// beside the entry.
    pub reason: Option<(&'a str, &'a [u8])>,
}

/// An entry of the student's, proven.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnEntry {
    /// Its index in the log.
    pub index: u64,
    /// The entry.
    pub entry: LogEntry,
    /// The reason a supervisor gave, for a view with a reason: the text its
    /// entry committed to.
    pub reason: Option<String>,
}

/// Why a phone does not believe a log's answer to its own query.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MineRefusal {
    /// The head does not decode or is not signed by the pinned log key.
    #[error("the head: {0}")]
    Head(LogError),
    /// An entry does not decode, or is not in the head at its index.
    #[error("entry {index}: {why}")]
    Entry {
        /// Its index.
        index: u64,
        /// Why.
        why: LogError,
    },
    /// An entry is about another student.
    #[error("entry {index} is about another student")]
    NotYours {
        /// Its index.
        index: u64,
    },
    /// A view with a reason came without its reason, or with another one
    /// than its entry committed to.
    #[error("entry {index}'s reason is missing or not the one logged")]
    Reason {
        /// Its index.
        index: u64,
    },
}

/// The entries of `student` that a log answered with `head` (signed by
/// `log_key`, the key the phone pins) and `entries`: each proven at its
/// index, each about `student`, each view's reason the one its entry
/// committed to. Any failure refuses the whole answer: a phone shows all
/// of it or none.
pub fn verify_mine<'a, P: AsRef<[u8]> + 'a>(
    head: &[u8],
    log_key: &LogPublic,
    student: StudentId,
    entries: impl IntoIterator<Item = ServedEntry<'a, P>>,
) -> Result<Vec<OwnEntry>, MineRefusal> {
    let head = TreeHead::verify(head, log_key).map_err(MineRefusal::Head)?;
    let mut out = Vec::new();
    for e in entries {
        let index = e.index;
        let entry = head
            .body()
            .verify_entry(e.entry, index, e.proof)
            .map_err(|why| MineRefusal::Entry { index, why })?;
        if entry.student() != Some(student) {
            return Err(MineRefusal::NotYours { index });
        }
        let reason = match (&entry, e.reason) {
            (LogEntry::ProfileViewedWithReason { reason, .. }, Some((text, nonce))) => {
                let nonce: [u8; 16] = nonce
                    .try_into()
                    .map_err(|_| MineRefusal::Reason { index })?;
                if view_reason_commitment(&nonce, text) != *reason {
                    return Err(MineRefusal::Reason { index });
                }
                Some(text.to_owned())
            }
            (LogEntry::ProfileViewedWithReason { .. }, None) => {
                return Err(MineRefusal::Reason { index });
            }
            _ => None,
        };
        out.push(OwnEntry {
            index,
            entry,
            reason,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ids::{IncidentId, Timestamp};
    use crate::keys::LogKey;
    use crate::log::{MerkleLog, Viewer};
    use crate::signed::Container as _;

    /// A log of two views of student 1 (one with a reason) and one of
    /// student 2; the served form of entry `i` with `reason`.
    struct Served {
        key: LogKey,
        head: Vec<u8>,
        entries: Vec<Vec<u8>>,
        proofs: Vec<Vec<[u8; 32]>>,
    }

    const WHY: &str = "night-shift handover";

    fn served() -> Served {
        let key = LogKey::generate();
        let view = |student: u8, reason: Option<&str>| {
            let (student, incident) = (StudentId([student; 32]), IncidentId([4; 16]));
            let viewer = Viewer::new("operator:ravi").unwrap();
            match reason {
                None => LogEntry::ProfileViewed {
                    student,
                    incident,
                    viewer,
                    salt: Some([7; 16]),
                    at: Timestamp(5),
                },
                Some(r) => LogEntry::ProfileViewedWithReason {
                    student,
                    incident,
                    viewer,
                    reason: view_reason_commitment(&[3; 16], r),
                    at: Timestamp(6),
                },
            }
        };
        let all = [view(1, None), view(1, Some(WHY)), view(2, None)];
        let mut log = MerkleLog::new();
        for e in &all {
            log.append(e);
        }
        Served {
            head: log.sign_head(&key, Timestamp(9)).as_bytes().to_vec(),
            entries: all.iter().map(|e| e.to_bytes()).collect(),
            proofs: (0..3).map(|i| log.inclusion_proof(i, 3).unwrap()).collect(),
            key,
        }
    }

    impl Served {
        fn entry(
            &self,
            i: usize,
            reason: Option<(&'static str, &'static [u8])>,
        ) -> ServedEntry<'_, [u8; 32]> {
            ServedEntry {
                index: i as u64,
                entry: &self.entries[i],
                proof: &self.proofs[i],
                reason,
            }
        }

        fn verify<'a>(
            &'a self,
            entries: impl IntoIterator<Item = ServedEntry<'a, [u8; 32]>>,
        ) -> Result<Vec<OwnEntry>, MineRefusal> {
            verify_mine(&self.head, &self.key.public(), StudentId([1; 32]), entries)
        }
    }

    #[test]
    fn a_students_answer_is_believed_whole_or_not_at_all() {
        let s = served();
        let nonce: &[u8] = &[3; 16];
        let own = s
            .verify([s.entry(0, None), s.entry(1, Some((WHY, nonce)))])
            .unwrap();
        assert_eq!(own.iter().map(|e| e.index).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(own[1].reason.as_deref(), Some(WHY));
        // Another student's entry; an entry at another index; a reason
        // missing, changed, or with a short nonce: all of it is refused.
        let moved = ServedEntry {
            index: 2,
            ..s.entry(0, None)
        };
        for (bad, want) in [
            (
                vec![s.entry(0, None), s.entry(2, None)],
                MineRefusal::NotYours { index: 2 },
            ),
            (vec![s.entry(1, None)], MineRefusal::Reason { index: 1 }),
            (
                vec![s.entry(1, Some(("night-shift handover.", nonce)))],
                MineRefusal::Reason { index: 1 },
            ),
            (
                vec![s.entry(1, Some((WHY, &[3; 15])))],
                MineRefusal::Reason { index: 1 },
            ),
        ] {
            assert_eq!(s.verify(bad), Err(want));
        }
        assert!(matches!(
            s.verify([moved]),
            Err(MineRefusal::Entry { index: 2, .. })
        ));
        let other = verify_mine(
            &s.head,
            &LogKey::generate().public(),
            StudentId([1; 32]),
            [s.entry(0, None)],
        );
        assert!(matches!(other, Err(MineRefusal::Head(_))));
    }
}
