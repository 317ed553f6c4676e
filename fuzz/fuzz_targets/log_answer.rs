//! `sosvault::log::verify_mine`: a log's answer to a phone's own query, as a
//! hostile service may serve it. The log is real and fixed (three entries,
//! two of them the student's, one a view with a reason); the answer's
//! entries are made from the input, or (first byte odd) are the honest
//! answer with the input's bytes flipped into it. Whatever is served, the
//! check never panics, and anything it accepts is exactly one of the
//! student's real entries at its real index, with the real reason.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sosvault::log::{
    LogEntry, MerkleLog, ServedEntry, Viewer, leaf_hash, verify_mine, view_reason_commitment,
};
use sosvault::{Container as _, IncidentId, StudentId, Timestamp};

const STUDENT: StudentId = StudentId::from_bytes([1; 32]);
const REASON: &str = "night-shift handover";
const NONCE: [u8; 16] = [3; 16];

/// One served entry, owned: index, entry, proof, reason and its nonce.
type Owned = (u64, Vec<u8>, Vec<[u8; 32]>, Option<(String, Vec<u8>)>);

struct Log {
    head: Vec<u8>,
    leaves: Vec<[u8; 32]>,
    honest: Vec<Owned>,
}

fn log() -> &'static Log {
    static L: OnceLock<Log> = OnceLock::new();
    L.get_or_init(|| {
        let viewer = || Viewer::new("operator:ravi").expect("a viewer");
        let entries = [
            LogEntry::ProfileViewed {
                student: STUDENT,
                incident: IncidentId::from_bytes([4; 16]),
                viewer: viewer(),
                salt: Some([7; 16]),
                at: Timestamp(5),
            },
            LogEntry::ProfileViewed {
                student: StudentId::from_bytes([2; 32]),
                incident: IncidentId::from_bytes([5; 16]),
                viewer: viewer(),
                salt: Some([8; 16]),
                at: Timestamp(6),
            },
            LogEntry::ProfileViewedWithReason {
                student: STUDENT,
                incident: IncidentId::from_bytes([4; 16]),
                viewer: viewer(),
                reason: view_reason_commitment(&NONCE, REASON),
                at: Timestamp(7),
            },
        ];
        let mut tree = MerkleLog::new();
        for e in &entries {
            tree.append(e);
        }
        let size = tree.size();
        let honest = [0u64, 2]
            .iter()
            .map(|&i| {
                let proof = tree.inclusion_proof(i, size).expect("a proof");
                let reason = (i == 2).then(|| (REASON.to_owned(), NONCE.to_vec()));
                (i, entries[i as usize].to_bytes(), proof, reason)
            })
            .collect();
        Log {
            head: tree
                .sign_head(sosvault_fuzz::log_key(), Timestamp(9))
                .as_bytes()
                .to_vec(),
            leaves: entries.iter().map(|e| leaf_hash(&e.to_bytes())).collect(),
            honest,
        }
    })
}

/// Reads the answer's entries from `data`: per entry a `u8` index, a `u8`
/// length and the entry's bytes, a `u8` count of proof hashes (32 bytes
/// each), and a `u8` reason length (0: none) with the reason and 16 bytes
/// of nonce. Stops where the input does.
fn made(mut data: &[u8]) -> Vec<Owned> {
    let mut take = |n: usize| -> Option<Vec<u8>> {
        let (head, rest) = data.split_at_checked(n)?;
        data = rest;
        Some(head.to_vec())
    };
    let mut out = Vec::new();
    while let Some(index) = take(1) {
        let Some(entry) = take(1).and_then(|n| take(n[0].into())) else {
            break;
        };
        let Some(count) = take(1) else { break };
        let proof: Option<Vec<[u8; 32]>> = (0..count[0] % 8)
            .map(|_| take(32).and_then(|h| h.try_into().ok()))
            .collect();
        let Some(proof) = proof else { break };
        let reason = match take(1).map(|n| n[0]) {
            Some(0) | None => None,
            Some(n) => take(n.into())
                .zip(take(16))
                .map(|(t, nonce)| (String::from_utf8_lossy(&t).into_owned(), nonce)),
        };
        out.push((u64::from(index[0]), entry, proof, reason));
    }
    out
}

/// The honest answer with `data`'s bytes xored into its entries, proofs
/// and reasons, in turn.
fn flipped(data: &[u8]) -> Vec<Owned> {
    let mut out = log().honest.clone();
    let mut flips = data.iter().copied().cycle().take(data.len());
    for (index, entry, proof, reason) in &mut out {
        *index ^= u64::from(flips.next().unwrap_or(0) & 3);
        for b in entry.iter_mut().chain(proof.iter_mut().flatten()) {
            *b ^= flips.next().unwrap_or(0);
        }
        if let Some((_, nonce)) = reason {
            for b in nonce.iter_mut() {
                *b ^= flips.next().unwrap_or(0);
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let served = if mode & 1 == 1 {
        flipped(rest)
    } else {
        made(rest)
    };
    let l = log();
    let entries = served
        .iter()
        .map(|(index, entry, proof, reason)| ServedEntry {
            index: *index,
            entry,
            proof,
            reason: reason.as_ref().map(|(t, n)| (t.as_str(), n.as_slice())),
        });
    let Ok(own) = verify_mine(
        &l.head,
        &sosvault_fuzz::log_key().public(),
        STUDENT,
        entries,
    ) else {
        return;
    };
    for e in own {
        let index = usize::try_from(e.index).expect("an index in the log");
        assert_eq!(
            leaf_hash(&e.entry.to_bytes()),
            l.leaves[index],
            "an entry not in the log"
        );
        assert_eq!(e.entry.student(), Some(STUDENT), "another student's entry");
        let want = (index == 2).then(|| REASON.to_owned());
        assert_eq!(e.reason, want, "a reason not the logged one");
    }
});
