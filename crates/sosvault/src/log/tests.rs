//! The log's unit tests: entries and their encoding, heads and proofs,
//! queries, and the known answers `docs/PROTOCOL.md` lists.

use sha2::{Digest, Sha256};

use super::entry::{
    KIND_PROFILE_VIEWED, KIND_PROFILE_VIEWED_SALTED, KIND_REFUSED, KIND_RELEASED,
    KIND_SHARE_ACCEPTED, truncate_utf8,
};
use super::{
    LogEntry, LogError, LogId, LogQuery, MAX_ENTRY_BYTES, MAX_REASON_BYTES, MAX_VIEWER_BYTES,
    MerkleLog, QueryRefusal, TreeHead, Viewer, empty_root, leaf_hash, node_hash, refusal_code,
    view_reason_commitment,
};
use crate::ids::{IncidentId, MessageHash, StudentId, Timestamp};
use crate::keys::{ControlRoomKey, DeviceKey, LogKey, TrusteeKey};
use crate::messages::{Category, PanicEvent};
use crate::signed::{Container, Signed};
use crate::trustee::{EnrollRefusal, Refusal, ReleaseRefusal, ShredRefusal};
use crate::wire::{DecodeError, Writer};

const NOW: Timestamp = Timestamp(1_790_000_000);

fn panic_from(device: &DeviceKey) -> Signed<PanicEvent> {
    Signed::sign(
        PanicEvent {
            epoch: 3,
            counter: 9,
            issued_at: NOW,
            category: Category::Police,
            sealed_location: vec![0xa5; 180],
        },
        device,
    )
}

fn one_of_each() -> Vec<LogEntry> {
    let device = DeviceKey::from_seed(&[1; 32]);
    let student = device.student_id();
    vec![
        LogEntry::ShareAccepted {
            student,
            epoch: 1,
            share_index: 2,
            at: NOW,
        },
        LogEntry::released(
            &panic_from(&device).into(),
            IncidentId([4; 16]),
            false,
            [0x5a; 16],
            NOW.plus(5),
        ),
        LogEntry::refused(
            &Refusal::Release(ReleaseRefusal::Replayed {
                offered: 3,
                seen: 9,
            }),
            Some(student),
            MessageHash([6; 32]),
            NOW,
        ),
        LogEntry::Refused {
            student: None,
            code: 901,
            reason: String::new(),
            request_hash: MessageHash([7; 32]),
            at: NOW,
        },
        LogEntry::Shredded {
            student,
            epoch: 2,
            stop_hash: MessageHash([8; 32]),
            at: NOW,
        },
        viewed(student, Some([3; 16])),
        viewed(student, None), // kind 5, written before salts
        LogEntry::ProfileViewedWithReason {
            student,
            incident: IncidentId([9; 16]),
            viewer: Viewer::new("operator:asha").unwrap(),
            reason: view_reason_commitment(&[5; 16], "night-shift handover"),
            at: NOW.plus(1),
        },
        // kind 6, written before salts
        LogEntry::Released {
            student,
            epoch: 3,
            counter: 9,
            panic: panic_from(&device).hash(),
            incident: IncidentId([4; 16]),
            repeat: true,
            salt: None,
            at: NOW.plus(6),
        },
        LogEntry::CheckedIn {
            student,
            counter: 11,
            check_in: MessageHash([0x2d; 32]),
            at: NOW.plus(10),
        },
        LogEntry::Cancelled {
            student,
            counter: 4,
            cancel: MessageHash([9; 32]),
            at: NOW.plus(7),
        },
        LogEntry::Committed {
            student,
            epoch: 2,
            at: NOW.plus(8),
        },
        LogEntry::GuardianTold {
            student,
            incident: IncidentId([9; 16]),
            salt: [0x6b; 16],
            at: NOW.plus(9),
        },
    ]
}

/// A view by `operator-17`, salted or not.
fn viewed(student: StudentId, salt: Option<[u8; 16]>) -> LogEntry {
    LogEntry::ProfileViewed {
        student,
        incident: IncidentId([9; 16]),
        viewer: Viewer::new("operator-17").unwrap(),
        salt,
        at: NOW,
    }
}

#[test]
fn entries_round_trip() {
    for entry in one_of_each() {
        let bytes = entry.to_bytes();
        assert!(bytes.len() <= MAX_ENTRY_BYTES);
        assert_eq!(
            LogEntry::from_bytes(&bytes).unwrap(),
            entry,
            "{}",
            entry.kind()
        );
        assert_eq!(entry.leaf_hash(), leaf_hash(&bytes));
    }
}

#[test]
fn truncated_or_extended_entries_are_rejected() {
    for entry in one_of_each() {
        let bytes = entry.to_bytes();
        for cut in 0..bytes.len() {
            assert!(
                LogEntry::from_bytes(&bytes[..cut]).is_err(),
                "{} cut at {cut}",
                entry.kind()
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            LogEntry::from_bytes(&longer),
            Err(DecodeError::TrailingBytes(1))
        );
    }
}

#[test]
fn student_selects_entries() {
    let entries = one_of_each();
    let student = DeviceKey::from_seed(&[1; 32]).student_id();
    let about: Vec<_> = entries
        .iter()
        .filter(|e| e.student() == Some(student))
        .collect();
    // Every entry but the refusal of an unreadable request.
    assert_eq!(about.len(), entries.len() - 1);
    assert_eq!(entries[3].student(), None);
}

/// Builds an entry body by hand after the tag.
fn raw(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new();
    w.tag(LogEntry::TAG);
    f(&mut w);
    w.into_bytes()
}

#[test]
fn a_reason_commitment_binds_the_text_and_hides_it_behind_its_nonce() {
    let nonce = [3u8; 16];
    let c = view_reason_commitment(&nonce, "night-shift handover");
    assert_eq!(c, view_reason_commitment(&nonce, "night-shift handover"));
    assert_ne!(c, view_reason_commitment(&nonce, "night-shift handover."));
    assert_ne!(
        c,
        view_reason_commitment(&[4u8; 16], "night-shift handover")
    );
    // Nothing of the text is in the entry: only the commitment.
    let entry = LogEntry::ProfileViewedWithReason {
        student: StudentId([1; 32]),
        incident: IncidentId([2; 16]),
        viewer: Viewer::new("supervisor:ravi").unwrap(),
        reason: c,
        at: Timestamp(7),
    };
    let bytes = entry.to_bytes();
    assert!(!bytes.windows(5).any(|w| w == b"night"));
    assert!(bytes.len() <= MAX_ENTRY_BYTES);
    assert_eq!(LogEntry::from_bytes(&bytes).unwrap(), entry);
    assert_eq!(entry.kind(), "profile-viewed-with-reason");
}

#[test]
fn non_canonical_fields_are_rejected() {
    let invalid = |bytes: Vec<u8>| {
        matches!(
            LogEntry::from_bytes(&bytes),
            Err(DecodeError::InvalidValue(_) | DecodeError::TooLong { .. })
        )
    };
    // Unknown kinds.
    assert!(invalid(raw(|w| w.u8(0))));
    assert!(invalid(raw(|w| w.u8(2)))); // retired: the whole panic embedded
    assert!(invalid(raw(|w| w.u8(14))));
    // Epoch 0, share index 0.
    assert!(invalid(raw(|w| {
        w.u8(KIND_SHARE_ACCEPTED);
        w.fixed(&[1; 32]);
        w.u32(0);
        w.u8(1);
        w.u64(0);
    })));
    assert!(invalid(raw(|w| {
        w.u8(KIND_SHARE_ACCEPTED);
        w.fixed(&[1; 32]);
        w.u32(1);
        w.u8(0);
        w.u64(0);
    })));
    // Student-present flag other than 0/1; reason not UTF-8; reason too long.
    let refused = |flag: u8, reason: &[u8]| {
        raw(|w| {
            w.u8(KIND_REFUSED);
            w.u8(flag);
            w.fixed(&7u16.to_be_bytes());
            w.var(reason);
            w.fixed(&[0; 32]);
            w.u64(0);
        })
    };
    assert!(LogEntry::from_bytes(&refused(0, b"ok")).is_ok());
    assert!(invalid(refused(2, b"ok")));
    assert!(invalid(refused(0, &[0xff, 0xfe])));
    assert!(invalid(refused(0, &[b'a'; MAX_REASON_BYTES + 1])));
    // Viewer empty or too long.
    let viewed = |viewer: &[u8]| {
        raw(|w| {
            w.u8(KIND_PROFILE_VIEWED);
            w.fixed(&[1; 32]);
            w.fixed(&[2; 16]);
            w.var(viewer);
            w.u64(0);
        })
    };
    assert!(LogEntry::from_bytes(&viewed(&[b'v'; MAX_VIEWER_BYTES])).is_ok());
    assert!(invalid(viewed(b"")));
    assert!(invalid(viewed(&[b'v'; MAX_VIEWER_BYTES + 1])));
    assert!(Viewer::new(vec![0u8; MAX_VIEWER_BYTES + 1]).is_none());
    // A salted view (kind 10) carries all 16 bytes of its salt.
    let salted = |salt: &[u8]| {
        raw(|w| {
            w.u8(KIND_PROFILE_VIEWED_SALTED);
            w.fixed(&[1; 32]);
            w.fixed(&[2; 16]);
            w.var(b"v");
            w.fixed(salt);
            w.u64(0);
        })
    };
    assert!(LogEntry::from_bytes(&salted(&[7; 16])).is_ok());
    assert!(LogEntry::from_bytes(&salted(&[7; 15])).is_err());
    assert!(LogEntry::from_bytes(&salted(&[7; 17])).is_err());
}

/// Whoever knows the student, the incident and the operators (the phone's
/// holder) cannot confirm from the public leaf hashes that, or when, the
/// profile was read: every second and every viewer hashed gives nothing
/// without the salt, while the kind-5 entry of before is found at once.
#[test]
fn a_salted_view_cannot_be_confirmed_from_its_leaf_hash() {
    let (student, incident) = (StudentId([1; 32]), IncidentId([2; 16]));
    let view = |salt, at| LogEntry::ProfileViewed {
        student,
        incident,
        viewer: Viewer::new("op:ravi").unwrap(),
        salt,
        at,
    };
    let public_leaves = [
        view(Some([0x5a; 16]), NOW.plus(30)).leaf_hash(),
        view(None, NOW.plus(40)).leaf_hash(),
    ];
    let guessed: Vec<_> = (0..60)
        .map(|s| view(None, NOW.plus(s)).leaf_hash())
        .filter(|h| public_leaves.contains(h))
        .collect();
    assert_eq!(
        guessed,
        [public_leaves[1]],
        "only the unsalted view is found"
    );
}

#[test]
fn a_release_entry_keeps_nothing_personal_of_its_panic() {
    let device = DeviceKey::from_seed(&[1; 32]);
    let panic = panic_from(&device);
    let entry = LogEntry::released(
        &panic.clone().into(),
        IncidentId([4; 16]),
        false,
        [1; 16],
        NOW,
    );
    let bytes = entry.to_bytes();
    // Neither the signed panic nor its sealed location is in the entry.
    let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!find(panic.as_bytes()));
    assert!(!find(&panic.body().sealed_location));
    assert!(!find(&panic.as_bytes()[panic.as_bytes().len() - 64..]));
    // What is: the student, the epoch, the counter and the panic's hash.
    match LogEntry::from_bytes(&bytes) {
        Ok(LogEntry::Released {
            student,
            epoch,
            counter,
            panic: hash,
            repeat: false,
            ..
        }) => {
            assert_eq!(student, device.student_id());
            assert_eq!((epoch, counter), (panic.body().epoch, panic.body().counter));
            assert_eq!(hash, panic.hash());
        }
        other => panic!("{other:?}"),
    }
    // The repeat flag is a canonical boolean; the epoch is never 0.
    let released = |epoch: u32, repeat: u8| {
        raw(|w| {
            w.u8(KIND_RELEASED);
            w.fixed(device.student_id().as_bytes());
            w.u32(epoch);
            w.u64(1);
            w.fixed(&[7; 32]);
            w.fixed(&[4; 16]);
            w.u8(repeat);
            w.u64(0);
        })
    };
    assert!(LogEntry::from_bytes(&released(1, 1)).is_ok());
    assert!(LogEntry::from_bytes(&released(1, 2)).is_err());
    assert!(LogEntry::from_bytes(&released(0, 0)).is_err());
}

#[test]
fn long_reasons_are_cut_at_a_character_boundary() {
    let text = "ज".repeat(100); // 3 bytes each
    let entry = LogEntry::Refused {
        student: None,
        code: 1,
        reason: text,
        request_hash: MessageHash([0; 32]),
        at: NOW,
    };
    let LogEntry::Refused { reason, .. } = LogEntry::from_bytes(&entry.to_bytes()).unwrap() else {
        panic!("kind changed")
    };
    assert_eq!(reason, "ज".repeat(66));
}

#[test]
fn refusal_codes_are_distinct() {
    let refusals = [
        Refusal::Enroll(EnrollRefusal::Malformed(DecodeError::TrailingBytes(1))),
        Refusal::Enroll(EnrollRefusal::NotOurShare),
        Refusal::Enroll(EnrollRefusal::DoesNotOpen),
        Refusal::Enroll(EnrollRefusal::Mismatch),
        Refusal::Enroll(EnrollRefusal::CommitmentMismatch),
        Refusal::Enroll(EnrollRefusal::StaleEpoch {
            offered: 1,
            held: 2,
        }),
        Refusal::Enroll(EnrollRefusal::Shredded(1)),
        Refusal::Release(ReleaseRefusal::Malformed(DecodeError::TrailingBytes(1))),
        Refusal::Release(ReleaseRefusal::UnpinnedControlRoom),
        Refusal::Release(ReleaseRefusal::StaleRequest),
        Refusal::Release(ReleaseRefusal::ForgedPanic),
        Refusal::Release(ReleaseRefusal::UnknownStudent),
        Refusal::Release(ReleaseRefusal::WrongDevice),
        Refusal::Release(ReleaseRefusal::WrongEpoch {
            offered: 1,
            current: 2,
        }),
        Refusal::Release(ReleaseRefusal::Shredded),
        Refusal::Release(ReleaseRefusal::Replayed {
            offered: 1,
            seen: 2,
        }),
        Refusal::Release(ReleaseRefusal::StalePanic),
        Refusal::Release(ReleaseRefusal::FuturePanic),
        Refusal::Release(ReleaseRefusal::SealFailed),
        Refusal::Shred(ShredRefusal::Malformed(DecodeError::TrailingBytes(1))),
        Refusal::Shred(ShredRefusal::WrongDevice),
        Refusal::Shred(ShredRefusal::StaleStop {
            offered: 1,
            current: 2,
        }),
    ];
    let mut codes: Vec<u16> = refusals.iter().map(refusal_code).collect();
    assert!(codes.iter().all(|c| (100..400).contains(c)));
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), refusals.len());
}

#[test]
fn tree_heads_sign_and_verify() {
    let key = TrusteeKey::from_seed(&[5; 32]).log_key();
    let mut log = MerkleLog::new();
    let empty = log.sign_head(&key, NOW);
    assert_eq!(empty.body().root, empty_root());
    for entry in one_of_each() {
        log.append(&entry);
    }
    let head = log.sign_head(&key, NOW.plus(60));
    let back = TreeHead::verify(head.as_bytes(), &key.public()).unwrap();
    assert_eq!(back.body(), head.body());
    assert_eq!(back.body().size, one_of_each().len() as u64);
    assert_eq!(back.body().log_id, key.log_id());

    // Another log's key, and the trustee's own release key, are not this log.
    let other = ControlRoomKey::from_seed(&[5; 32]).log_key();
    assert_eq!(
        TreeHead::verify(head.as_bytes(), &other.public()),
        Err(LogError::WrongLog)
    );
    // A head whose log id names another log than its signer's.
    let lying = Signed::sign(
        TreeHead {
            log_id: other.log_id(),
            ..*head.body()
        },
        &key,
    );
    assert_eq!(
        TreeHead::verify(lying.as_bytes(), &key.public()),
        Err(LogError::WrongLog)
    );
    // Any flipped byte breaks the signature or the shape.
    for i in 0..head.as_bytes().len() {
        let mut bad = head.as_bytes().to_vec();
        bad[i] ^= 0x40;
        assert!(TreeHead::verify(&bad, &key.public()).is_err(), "byte {i}");
    }
    // The empty tree has one root.
    let bogus_empty = Signed::sign(
        TreeHead {
            log_id: key.log_id(),
            size: 0,
            root: [1; 32],
            timestamp: NOW,
        },
        &key,
    );
    assert!(matches!(
        TreeHead::verify(bogus_empty.as_bytes(), &key.public()),
        Err(LogError::Malformed(DecodeError::InvalidValue("root")))
    ));
}

#[test]
fn heads_prove_growth_and_inclusion() {
    let key = LogKey::from_seed(&[3; 32]);
    let mut log = MerkleLog::new();
    let h0 = *log.sign_head(&key, NOW).body();
    let entries = one_of_each();
    log.append(&entries[0]);
    log.append(&entries[1]);
    let h2 = *log.sign_head(&key, NOW).body();
    for e in &entries[2..] {
        log.append(e);
    }
    let h6 = *log.sign_head(&key, NOW).body();

    h0.verify_extended_by(&h6, &[] as &[[u8; 32]]).unwrap();
    let proof = log.consistency_proof(2, h6.size).unwrap();
    h2.verify_extended_by(&h6, &proof).unwrap();
    assert!(h6.verify_extended_by(&h2, &proof).is_err());
    h6.verify_extended_by(&h6, &[] as &[[u8; 32]]).unwrap();
    let forked = TreeHead {
        root: [9; 32],
        ..h6
    };
    assert_eq!(
        h6.verify_extended_by(&forked, &[] as &[[u8; 32]]),
        Err(LogError::Fork)
    );
    let elsewhere = TreeHead {
        log_id: LogId([0; 32]),
        ..h6
    };
    assert_eq!(
        h2.verify_extended_by(&elsewhere, &proof),
        Err(LogError::WrongLog)
    );

    for (i, e) in entries.iter().enumerate() {
        let proof = log.inclusion_proof(i as u64, h6.size).unwrap();
        assert_eq!(
            h6.verify_entry(&e.to_bytes(), i as u64, &proof).unwrap(),
            *e
        );
        assert!(
            h6.verify_entry(&e.to_bytes(), (i as u64 + 1) % h6.size, &proof)
                .is_err()
        );
        h6.verify_inclusion(&e.leaf_hash(), i as u64, &proof)
            .unwrap();
        let other = &entries[(i + 1) % entries.len()];
        assert!(
            h6.verify_inclusion(&other.leaf_hash(), i as u64, &proof)
                .is_err()
        );
    }
}

#[test]
fn log_queries_speak_only_for_their_signer() {
    let device = DeviceKey::generate();
    let trustee = TrusteeKey::from_seed(&[8; 32]).id();
    let q = LogQuery::sign(&device, trustee, NOW);
    let checked = LogQuery::check(q.as_bytes(), &trustee, NOW.plus(30), 120).unwrap();
    assert_eq!(checked.student(), device.student_id());
    assert_eq!(checked.nonce(), q.body().nonce);
    // Fresh nonces.
    assert_ne!(
        LogQuery::sign(&device, trustee, NOW).body().nonce,
        q.body().nonce
    );

    let other = TrusteeKey::from_seed(&[9; 32]).id();
    assert_eq!(
        LogQuery::check(q.as_bytes(), &other, NOW, 120),
        Err(QueryRefusal::WrongTrustee)
    );
    assert_eq!(
        LogQuery::check(q.as_bytes(), &trustee, NOW.plus(121), 120),
        Err(QueryRefusal::Stale)
    );
    assert_eq!(
        LogQuery::check(q.as_bytes(), &trustee, NOW.minus(121), 120),
        Err(QueryRefusal::Stale)
    );
    let mut bad = q.as_bytes().to_vec();
    let i = bad.len() - 70; // inside the body
    bad[i] ^= 1;
    assert_eq!(
        LogQuery::check(&bad, &trustee, NOW, 120),
        Err(QueryRefusal::Malformed(DecodeError::BadSignature))
    );
}

#[test]
fn from_leaf_hashes_rebuilds_the_same_tree() {
    let mut log = MerkleLog::new();
    for e in one_of_each() {
        log.append(&e);
    }
    let hashes: Vec<[u8; 32]> = (0..log.size()).map(|i| log.leaf_hash(i).unwrap()).collect();
    let rebuilt = MerkleLog::from_leaf_hashes(hashes);
    assert_eq!(rebuilt.root(), log.root());
    assert_eq!(rebuilt.size(), log.size());
    assert_eq!(log.leaf_hash(log.size()), None);
}

fn arb_entry() -> impl proptest::strategy::Strategy<Value = LogEntry> {
    use proptest::prelude::*;
    let student = any::<[u8; 32]>().prop_map(StudentId);
    let at = any::<u64>().prop_map(Timestamp);
    prop_oneof![
        (student.clone(), 1u32.., 1u8.., at.clone()).prop_map(
            |(student, epoch, share_index, at)| {
                LogEntry::ShareAccepted {
                    student,
                    epoch,
                    share_index,
                    at,
                }
            }
        ),
        (
            proptest::option::of(student.clone()),
            any::<u16>(),
            "\\PC{0,80}",
            any::<[u8; 32]>(),
            at.clone()
        )
            .prop_map(|(student, code, reason, h, at)| LogEntry::Refused {
                student,
                code,
                reason: truncate_utf8(&reason, MAX_REASON_BYTES).to_owned(),
                request_hash: MessageHash(h),
                at,
            }),
        (student.clone(), 1u32.., any::<[u8; 32]>(), at.clone()).prop_map(
            |(student, epoch, h, at)| LogEntry::Shredded {
                student,
                epoch,
                stop_hash: MessageHash(h),
                at
            }
        ),
        (
            student.clone(),
            any::<[u8; 16]>(),
            proptest::collection::vec(any::<u8>(), 1..=MAX_VIEWER_BYTES),
            proptest::option::of(any::<[u8; 16]>()),
            at.clone()
        )
            .prop_map(
                |(student, incident, viewer, salt, at)| LogEntry::ProfileViewed {
                    student,
                    incident: IncidentId(incident),
                    viewer: Viewer(viewer),
                    salt,
                    at,
                }
            ),
        (
            student,
            any::<[u8; 16]>(),
            proptest::collection::vec(any::<u8>(), 1..=MAX_VIEWER_BYTES),
            any::<[u8; 32]>(),
            at
        )
            .prop_map(|(student, incident, viewer, reason, at)| {
                LogEntry::ProfileViewedWithReason {
                    student,
                    incident: IncidentId(incident),
                    viewer: Viewer(viewer),
                    reason: MessageHash(reason),
                    at,
                }
            }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    #[test]
    fn any_entry_round_trips(entry in arb_entry()) {
        let bytes = entry.to_bytes();
        proptest::prop_assert_eq!(LogEntry::from_bytes(&bytes).unwrap(), entry);
    }

    /// The encoding is canonical: whatever bytes decode re-encode to
    /// themselves. Inputs are valid encodings with one byte changed, and
    /// random bytes after the tag; decoding never panics on either.
    #[test]
    fn decoding_is_canonical_and_never_panics(
        entry in arb_entry(),
        pos in proptest::prelude::any::<usize>(),
        val in proptest::prelude::any::<u8>(),
        noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
    ) {
        let mut bytes = entry.to_bytes();
        let i = LogEntry::TAG.len() + 1 + pos % (bytes.len() - LogEntry::TAG.len() - 1);
        bytes[i] = val;
        if let Ok(decoded) = LogEntry::from_bytes(&bytes) {
            proptest::prop_assert_eq!(decoded.to_bytes(), bytes);
        }
        let random = raw(|w| w.fixed(&noise));
        if let Ok(decoded) = LogEntry::from_bytes(&random) {
            proptest::prop_assert_eq!(decoded.to_bytes(), random);
        }
    }
}

/// The reason commitment R and entry E (kind 9) of `docs/PROTOCOL.md`,
/// "Log test vectors": the student of device seed `01` × 32, incident
/// `77` × 16, viewer `operator:ravi`, nonce `5e` × 16, reason
/// `night-shift handover`, at 1790000620.
fn entry_e() -> (MessageHash, LogEntry) {
    let r = view_reason_commitment(&[0x5e; 16], "night-shift handover");
    let e = LogEntry::ProfileViewedWithReason {
        student: DeviceKey::from_seed(&[1; 32]).student_id(),
        incident: IncidentId([0x77; 16]),
        viewer: Viewer::new("operator:ravi").unwrap(),
        reason: r,
        at: Timestamp(1_790_000_620),
    };
    (r, e)
}

/// Fixed vectors, also listed in `docs/PROTOCOL.md` ("Transparency log").
#[test]
fn known_answers() {
    let device = DeviceKey::from_seed(&[1; 32]);
    let student = device.student_id();
    let a = LogEntry::ShareAccepted {
        student,
        epoch: 1,
        share_index: 2,
        at: Timestamp(1_790_000_000),
    };
    let b = LogEntry::Shredded {
        student,
        epoch: 1,
        stop_hash: MessageHash([0x5a; 32]),
        at: Timestamp(1_790_000_600),
    };
    let student_hex = "88bd2d85f0a3b163ef6bee67849767484828949e5a01399c914718fd4407ce70";
    let tag_hex = "15736f737661756c742f6c6f672d656e7472792f7631";
    assert_eq!(student.to_hex(), student_hex);
    assert_eq!(
        hex::encode(a.to_bytes()),
        format!("{tag_hex}01{student_hex}0000000102000000006ab13b80")
    );
    assert_eq!(
        hex::encode(b.to_bytes()),
        format!(
            "{tag_hex}04{student_hex}00000001{}000000006ab13dd8",
            "5a".repeat(32)
        )
    );
    let (la, lb) = (a.leaf_hash(), b.leaf_hash());
    assert_eq!(
        hex::encode(la),
        "6c5dcf52693280ee3ee7393eb92fda9b345b297518fc9757c17d7381fe0c4058"
    );
    assert_eq!(
        hex::encode(lb),
        "f2ce9ce6ec856b020296c6ccc1f227cba7137cb779a84b3d0b70659ca15787de"
    );
    let mut log = MerkleLog::new();
    log.append(&a);
    log.append(&b);
    let root = "5655f120e1baf803b441f3db47978c0a211836c8c3768029f181a0e9c7272f1a";
    assert_eq!(hex::encode(log.root()), root);
    assert_eq!(log.root(), node_hash(&la, &lb));

    // Kinds 6 (released, a repeat) and 7 (cancelled), written out by hand.
    let c = LogEntry::Released {
        student,
        epoch: 1,
        counter: 7,
        panic: MessageHash([0x6b; 32]),
        incident: IncidentId([0x77; 16]),
        repeat: true,
        salt: None,
        at: Timestamp(1_790_000_610),
    };
    let d = LogEntry::Cancelled {
        student,
        counter: 8,
        cancel: MessageHash([0x3c; 32]),
        at: Timestamp(1_790_000_900),
    };
    assert_eq!(
        hex::encode(c.to_bytes()),
        format!(
            "{tag_hex}06{student_hex}000000010000000000000007{}{}01000000006ab13de2",
            "6b".repeat(32),
            "77".repeat(16)
        )
    );
    assert_eq!(
        hex::encode(d.to_bytes()),
        format!(
            "{tag_hex}07{student_hex}0000000000000008{}000000006ab13f04",
            "3c".repeat(32)
        )
    );
    assert_eq!(
        hex::encode(c.leaf_hash()),
        "23cfd98bdce20e667fc0f45fb6aebba6cf617e6dbb1c47ae9f50e5306b3c1143"
    );
    assert_eq!(
        hex::encode(d.leaf_hash()),
        "0e2e853bb9c3bf712be8c1e93a67724689b23f78ac41d688d315c65b0f51f750"
    );
    // Kind 9 (profile viewed with a reason) and the commitment to its
    // reason, the tagged hash of §6.1 written out on plain SHA-256.
    let (r, e) = entry_e();
    let r_hex = "30ed64a9cb4687434bbff326a54834bb23711e11f46f7bba40c1dd1cb356cad2";
    assert_eq!(r.to_hex(), r_hex);
    let written_out: [u8; 32] = Sha256::new()
        .chain_update([23])
        .chain_update(b"sosvault/view-reason/v1")
        .chain_update([0x5e; 16])
        .chain_update(b"night-shift handover")
        .finalize()
        .into();
    assert_eq!(*r.as_bytes(), written_out);
    assert_eq!(
        hex::encode(e.to_bytes()),
        format!(
            "{tag_hex}09{student_hex}{}0000000d{}{r_hex}000000006ab13dec",
            "77".repeat(16),
            "6f70657261746f723a72617669"
        )
    );
    assert_eq!(
        hex::encode(e.leaf_hash()),
        "906bbcf5632517574a03508a81461aa3f2b3c565e43644775784db47c99ff5aa"
    );
    assert_eq!(LogEntry::from_bytes(&e.to_bytes()).unwrap(), e);
    // Kind 2 (the whole panic embedded) is retired.
    let mut retired = c.to_bytes();
    retired[tag_hex.len() / 2] = 2;
    assert!(LogEntry::from_bytes(&retired).is_err());

    let key = TrusteeKey::from_seed(&[0x42; 32]).log_key();
    let log_public = "39789437f195327b83c5bf463ad208f96f0d8b7156e1011373614ab7f204ecd8";
    let log_id = "a5bedac363feaa74cc08789ccba6a5a07d8c63ce9e24f5050765bafa9cfaaa1d";
    assert_eq!(key.public().to_hex(), log_public);
    assert_eq!(key.log_id().to_hex(), log_id);
    let head = log.sign_head(&key, Timestamp(1_790_000_700));
    assert_eq!(
        hex::encode(head.as_bytes()),
        format!(
            "{}{log_public}00000050{log_id}0000000000000002{root}000000006ab13e3c{}",
            "15736f737661756c742f747265652d686561642f7631",
            "aeda440cf1b2808a9b80a6f84dd089335d693df1b52440ff4d37d3608b18ed0c\
             6199cc1fdc70ba141f3227dcd618e8c5e7cf0d4571fa331f09526d75634ccc07"
        )
    );

    let query = Signed::sign(
        LogQuery {
            trustee: TrusteeKey::from_seed(&[0x42; 32]).id(),
            issued_at: Timestamp(1_790_000_000),
            nonce: [0x11; 16],
        },
        &device,
    );
    assert_eq!(
        hex::encode(query.as_bytes()),
        format!(
            "{}{}00000038{}000000006ab13b80{}{}",
            "15736f737661756c742f6c6f672d71756572792f7631",
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
            "1acee08d885eabcca0b75263d82550b57a0c328cd502202a63d768aac5b15120",
            "11".repeat(16),
            "9d61d5c1ddb0b84e09264edb24272f5022b9b63ad562203a63de89ff5a02be8f\
             b9e7044ab404a25ca9296d89ccf528e38f1e0450b5f2f33e5834aa7c85119700"
        )
    );
}

/// The rows of R and E in `docs/PROTOCOL.md`, "Log test vectors", as
/// this code makes them: the entry's bytes are cut into its fields (each
/// where the kind's row of "Entries" puts it) and written out.
fn entry_e_rows() -> String {
    let (r, e) = entry_e();
    let bytes = e.to_bytes();
    let (tag_and_kind, rest) = bytes.split_at(1 + LogEntry::TAG.len() + 1);
    let (student, rest) = rest.split_at(32);
    let (incident, rest) = rest.split_at(16);
    let (len, rest) = rest.split_at(4);
    let viewer_len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
    let (viewer, rest) = rest.split_at(viewer_len);
    let (commitment, at) = rest.split_at(32);
    assert_eq!(
        student,
        DeviceKey::from_seed(&[1; 32]).student_id().as_bytes()
    );
    assert_eq!(incident, [0x77; 16]);
    assert_eq!(viewer, b"operator:ravi");
    assert_eq!(commitment, r.as_bytes());
    assert_eq!(at.len(), 8);
    format!(
        "| reason commitment R: nonce `5e` × 16, reason `night-shift handover` | `{}` |\n\
         | entry E: profile viewed with a reason, incident `77` × 16, viewer `operator:ravi`, \
         reason R, at 1790000620 | `{}` ‖ student ‖ `77` × 16 ‖ `{}` `{}` ‖ R ‖ `{}` |\n\
         | leaf hash E | `{}` |\n",
        r.to_hex(),
        hex::encode(tag_and_kind),
        hex::encode(len),
        hex::encode(viewer),
        hex::encode(at),
        hex::encode(e.leaf_hash()),
    )
}

/// `docs/PROTOCOL.md` holds the kind-9 vectors this code makes; on a
/// deliberate change of format, paste the rows this test prints.
#[test]
fn the_protocol_document_holds_the_kind_9_vectors() {
    crate::test_support::assert_protocol_holds("Log test vectors", "rows", &entry_e_rows());
}

#[test]
fn a_read_of_the_profile_is_a_view_of_either_kind_and_nothing_else() {
    let reads: Vec<_> = one_of_each()
        .iter()
        .filter_map(|e| {
            e.profile_read()
                .map(|(i, v)| (e.kind(), i, v.as_bytes().to_vec()))
        })
        .collect();
    assert_eq!(
        reads,
        [
            (
                "profile-viewed",
                IncidentId([9; 16]),
                b"operator-17".to_vec()
            ),
            (
                "profile-viewed",
                IncidentId([9; 16]),
                b"operator-17".to_vec()
            ),
            (
                "profile-viewed-with-reason",
                IncidentId([9; 16]),
                b"operator:asha".to_vec()
            ),
        ]
    );
}
