#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use proptest::prelude::*;

use super::{
    AddCheckpoint, B64, Checkpoint, CheckpointError, Cosigned, KeyName, LogKey, LogVerifier,
    MAX_KEY_NAME_BYTES, MAX_NOTE_BYTES, MAX_PROOF_LINES, MAX_REQUEST_BYTES, MAX_SIGNATURES, Note,
    NoteError, NoteSignature, PolicyError, SIG_ED25519, SignedCheckpoint, Timestamp, Witness,
    WitnessPolicy, WitnessRefusal, WitnessState, WitnessVerifier, add_checkpoint, empty_root,
    verify_consistency,
};
use crate::keys::SignerKey as _;
use crate::log::{LogEntry, MerkleLog};
use crate::{DeviceKey, MessageHash, TrusteeKey};

const T: Timestamp = Timestamp(1_790_000_000);

fn entry(i: u64) -> LogEntry {
    LogEntry::ShareAccepted {
        student: DeviceKey::from_seed(&[1; 32]).student_id(),
        epoch: 1,
        share_index: 1,
        at: Timestamp(1_790_000_000 + i),
    }
}

/// A log of `n` entries; `salt` changes every entry (another history).
fn tree(n: u64, salt: u64) -> MerkleLog {
    let mut log = MerkleLog::new();
    for i in 0..n {
        log.append(&entry(i + salt * 1_000_000));
    }
    log
}

/// The log key of trustee `seed`.
fn log_key(seed: u8) -> LogKey {
    TrusteeKey::from_seed(&[seed; 32]).log_key()
}

fn checkpoint(log: &MerkleLog, size: u64, key: &LogKey) -> Checkpoint {
    Checkpoint {
        origin: Checkpoint::default_origin(&key.log_id()),
        size,
        root: log.root_at(size).unwrap(),
    }
}

fn witness(seed: u8, name: &str) -> Witness {
    Witness::new(KeyName::new(name).unwrap(), log_key(seed))
}

/// A request to go from `old` to `size` of `log`, signed by `key`.
fn request(log: &MerkleLog, old: u64, size: u64, key: &LogKey) -> AddCheckpoint {
    let proof = if old == 0 || old == size {
        Vec::new()
    } else {
        log.consistency_proof(old, size).unwrap()
    };
    AddCheckpoint {
        old_size: old,
        proof,
        note: checkpoint(log, size, key).sign(key),
    }
}

fn run(
    stored: Option<&WitnessState>,
    req: &AddCheckpoint,
    log: &LogVerifier,
    w: &Witness,
) -> Result<Cosigned, WitnessRefusal> {
    add_checkpoint(
        stored,
        &req.to_bytes(),
        |o| (o == log.name().as_str()).then_some(log),
        w,
        T,
    )
}

// ------------------------------------------------------------------ the specifications' vectors

/// signed-note's own example: its verifier key verifies its note.
#[test]
fn the_signed_note_specifications_example_verifies() {
    let vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    let v: LogVerifier = vkey.parse().unwrap();
    assert_eq!(v.to_string(), vkey);
    assert_eq!(v.key_id(), 0x530d903a);
    let note = Note::parse(
        "This is an example message.\n\n\u{2014} example.com/foo \
         Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(note.text(), "This is an example message.\n");
    assert!(v.matches(&note.signatures()[0]));
    assert!(v.verifies(note.text(), &note.signatures()[0]));
    assert!(!v.verifies("This is an example message!\n", &note.signatures()[0]));
}

/// The Go reference implementation's (golang.org/x/mod/sumdb/note) signer:
/// the same key gives the same verifier key and, Ed25519 being
/// deterministic, the same signature line byte for byte.
#[test]
fn the_go_reference_notes_known_answer_is_reproduced() {
    let skey = B64
        .decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
        .unwrap();
    assert_eq!(skey[0], SIG_ED25519);
    let key = LogKey::from_seed(&skey[1..].try_into().unwrap());
    let v = LogVerifier::new(KeyName::new("PeterNeumann").unwrap(), key.public());
    assert_eq!(
        v.to_string(),
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    );
    let text = "If you think cryptography is the answer to your problem,\n\
                then you don't know what your problem is.\n";
    let line = NoteSignature {
        name: v.name().clone(),
        key_id: v.key_id(),
        signature: key.signing_key().sign(text.as_bytes()).to_bytes().to_vec(),
    };
    let note = Note::new(text.into(), vec![line]).unwrap();
    assert_eq!(
        note.to_text(),
        format!(
            "{text}\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        )
    );
    assert_eq!(Note::parse(note.to_text().as_bytes()).unwrap(), note);
}

/// transparency-dev/formats' cosignature vectors: a native `cosignature/v1`
/// verifier key (its key ID is over the type byte 0x04) and a cosignature's
/// key ID and timestamp.
#[test]
fn transparency_devs_cosignature_vectors_read_as_they_do_there() {
    let vkey = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2";
    let w: WitnessVerifier = vkey.parse().unwrap();
    assert_eq!(w.to_string(), vkey);
    assert_eq!(w.key_id(), 0xda77ade7);
    // The same material is not a log's (type 0x01) key.
    assert_eq!(vkey.parse::<LogVerifier>(), Err(NoteError::BadVerifierKey));
    // A type-0x01 key whose base64 holds a '+'.
    let log: LogVerifier = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"
        .parse()
        .unwrap();
    assert_eq!(log.key_id(), 0x7997405c);
    // A wrong key ID is refused.
    assert!(
        "remora.n621.de+da77ade8+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
            .parse::<WitnessVerifier>()
            .is_err()
    );
    let line = NoteSignature::parse_line(
        "\u{2014} w ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==",
    )
    .unwrap();
    assert_eq!(line.key_id(), 0x646846b9);
    assert_eq!(
        u64::from_be_bytes(line.signature()[..8].try_into().unwrap()),
        1_727_964_367
    );
}

// ------------------------------------------------------------------ parsing

#[test]
fn checkpoints_parse_strictly() {
    let root = B64.encode([7u8; 32]);
    let ok = format!("example.com/log\n12\n{root}\n");
    let c = Checkpoint::parse_body(&ok).unwrap();
    assert_eq!((c.size, c.root), (12, [7; 32]));
    assert_eq!(c.body(), ok);
    let bad = [
        format!("example.com/log\n12\n{root}"), // no final newline
        format!("example.com/log\n12\n{root}\nextension\n"), // an extension line
        format!("example.com/log\n012\n{root}\n"), // a leading zero
        format!("example.com/log\n+12\n{root}\n"), // a sign
        format!("example.com/log\n9223372036854775808\n{root}\n"), // above 2^63 - 1
        format!("example.com/log\n12\n{}\n", &root[..43]), // not 32 bytes
        format!("example.com/log\n12\n{}\n", B64.encode([7u8; 31])),
        "example.com/log\n12\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwd=\n".into(), // non-canonical
        format!("example.com log\n12\n{root}\n"), // a space in the origin
        format!("example.com+log\n12\n{root}\n"), // a plus
        format!("\n12\n{root}\n"),                // an empty origin
        format!("{}\n12\n{root}\n", "a".repeat(MAX_KEY_NAME_BYTES + 1)),
    ];
    for b in &bad {
        assert!(Checkpoint::parse_body(b).is_err(), "{b:?} parsed");
    }
    assert_eq!(
        Checkpoint::parse_body(&format!("o\n0\n{}\n", B64.encode(empty_root())))
            .unwrap()
            .size,
        0
    );
}

#[test]
fn notes_parse_strictly_and_within_bounds() {
    let key = log_key(1);
    let note = checkpoint(&tree(3, 0), 3, &key).sign(&key);
    let text = note.to_text();
    assert_eq!(Note::parse(text.as_bytes()).unwrap(), note);
    // Not ending in a newline, no blank line, a tab, a bad line, a bad name.
    for bad in [
        text.trim_end().to_owned(),
        text.replacen("\n\n", "\n", 1),
        text.replacen('\n', "\t\n", 1),
        text.replace('\u{2014}', "-"),
        text.replace("\u{2014} ", "\u{2014}  "),
        format!("{text}\u{2014} x !!!!\n"),
        format!("{text}\u{2014} x AAAA\n"), // fewer than five bytes
    ] {
        assert!(Note::parse(bad.as_bytes()).is_err(), "{bad:?} parsed");
    }
    assert_eq!(Note::parse(&[0xff, b'\n', b'\n']), Err(NoteError::NotText));
    // At most MAX_SIGNATURES lines; and MAX_NOTE_BYTES.
    let line = note.signatures()[0].to_line();
    let many = format!("{}\n{}", note.text(), line.repeat(MAX_SIGNATURES + 1));
    assert_eq!(Note::parse(many.as_bytes()), Err(NoteError::SignatureCount));
    let enough = format!("{}\n{}", note.text(), line.repeat(MAX_SIGNATURES));
    assert_eq!(
        Note::parse(enough.as_bytes()).unwrap().signatures().len(),
        32
    );
    let huge = format!("{}{text}", "x\n".repeat(MAX_NOTE_BYTES / 2));
    assert_eq!(
        Note::parse(huge.as_bytes()),
        Err(NoteError::TooLarge(MAX_NOTE_BYTES))
    );
    // A note's text may itself hold a blank line: the last one separates.
    let odd = Note::new("a\n\nb\n".into(), note.signatures().to_vec()).unwrap();
    assert_eq!(Note::parse(odd.to_text().as_bytes()).unwrap(), odd);
}

#[test]
fn requests_parse_strictly_and_within_bounds() {
    let key = log_key(1);
    let log = tree(5, 0);
    let req = request(&log, 3, 5, &key);
    let body = req.to_bytes();
    assert_eq!(AddCheckpoint::parse(&body).unwrap(), req);
    let text = String::from_utf8(body).unwrap();
    for bad in [
        text.replacen("old 3", "old 03", 1),
        text.replacen("old 3", "old  3", 1),
        text.replacen("old 3", "new 3", 1),
        text.replacen("old 3\n", "old 3\nnot-a-hash\n", 1),
        text.replacen("\n\n", "\n", 1),
    ] {
        assert!(AddCheckpoint::parse(bad.as_bytes()).is_err(), "{bad:?}");
    }
    let long = AddCheckpoint {
        old_size: 1,
        proof: vec![[1; 32]; MAX_PROOF_LINES + 1],
        note: req.note.clone(),
    };
    assert_eq!(
        AddCheckpoint::parse(&long.to_bytes()),
        Err(NoteError::BadRequest)
    );
    let most = AddCheckpoint {
        proof: vec![[1; 32]; MAX_PROOF_LINES],
        ..long
    };
    assert_eq!(AddCheckpoint::parse(&most.to_bytes()).unwrap(), most);
    assert!(AddCheckpoint::parse(&vec![b'o'; MAX_REQUEST_BYTES + 1]).is_err());
}

// ------------------------------------------------------------------ the log's signature

#[test]
fn a_note_edited_after_signing_or_signed_by_another_key_fails() {
    let key = log_key(1);
    let v = LogVerifier::for_key(key.public());
    let log = tree(4, 0);
    let note = checkpoint(&log, 4, &key).sign(&key);
    assert_eq!(
        SignedCheckpoint::open(note.clone(), &v)
            .unwrap()
            .checkpoint()
            .size,
        4
    );
    // Edited: another size, another root.
    for edit in [
        note.to_text().replacen("\n4\n", "\n5\n", 1),
        note.to_text()
            .replacen(&B64.encode(log.root()), &B64.encode(tree(4, 1).root()), 1),
    ] {
        let edited = Note::parse(edit.as_bytes()).unwrap();
        assert_eq!(
            SignedCheckpoint::open(edited, &v),
            Err(CheckpointError::BadSignature)
        );
    }
    // Another key under the same name: its key ID differs, so it is ignored
    // and the note carries no signature of the log's.
    let other = log_key(2);
    let forged = Checkpoint {
        origin: v.name().clone(),
        ..checkpoint(&log, 4, &key)
    }
    .sign(&other);
    assert_eq!(
        SignedCheckpoint::open(forged, &v),
        Err(CheckpointError::NotSigned)
    );
    // Another origin.
    let elsewhere = Checkpoint {
        origin: KeyName::new("elsewhere.example/log").unwrap(),
        ..checkpoint(&log, 4, &key)
    }
    .sign(&key);
    assert_eq!(
        SignedCheckpoint::open(elsewhere, &v),
        Err(CheckpointError::WrongOrigin)
    );
    // A forged line with the log's name and key ID fails the whole note.
    let mut bad = note.signatures()[0].clone();
    bad.signature[0] ^= 1;
    let with_bad = note.with_signatures([bad]).unwrap();
    assert_eq!(
        SignedCheckpoint::open(with_bad, &v),
        Err(CheckpointError::BadSignature)
    );
}

// ------------------------------------------------------------------ cosignatures and the quorum

#[test]
fn a_quorum_counts_distinct_trusted_witnesses_only() {
    let key = log_key(1);
    let log_v = LogVerifier::for_key(key.public());
    let log = tree(6, 0);
    let cp = checkpoint(&log, 6, &key);
    let note = cp.sign(&key);
    let (a, b, c, stranger) = (
        witness(2, "a.example/w"),
        witness(3, "b.example/w"),
        witness(4, "c.example/w"),
        witness(5, "stranger.example/w"),
    );
    let policy = WitnessPolicy::new(
        log_v.clone(),
        vec![a.verifier(), b.verifier(), c.verifier()],
        2,
    )
    .unwrap();

    // The log's signature alone: no quorum.
    assert_eq!(
        policy.verify(&note),
        Err(CheckpointError::NoQuorum { have: 0, need: 2 })
    );
    // One trusted witness, twice (two timestamps), and a stranger: one counts.
    let once = note
        .with_signatures([
            a.cosign(&cp, T),
            a.cosign(&cp, T.plus(60)),
            stranger.cosign(&cp, T),
        ])
        .unwrap();
    assert_eq!(once.signatures().len(), 4);
    assert_eq!(
        policy.verify(&once),
        Err(CheckpointError::NoQuorum { have: 1, need: 2 })
    );
    // A second trusted witness makes the quorum.
    let twice = once.with_signatures([b.cosign(&cp, T.plus(1))]).unwrap();
    let w = policy.verify(&twice).unwrap();
    assert_eq!(w.checkpoint(), &cp);
    let names: Vec<&str> = w.cosigners().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a.example/w", "b.example/w"]);
    assert_eq!(w.cosigners()[1].timestamp, T.0 + 1);
    // A stranger's line relabelled with a trusted name does not match its
    // key ID; one forged with the trusted key ID fails the note.
    let mut relabelled = stranger.cosign(&cp, T);
    relabelled.name = c.verifier().name().clone();
    assert_eq!(
        policy.verify(&once.with_signatures([relabelled.clone()]).unwrap()),
        Err(CheckpointError::NoQuorum { have: 1, need: 2 })
    );
    relabelled.key_id = c.verifier().key_id();
    assert_eq!(
        policy.verify(&once.with_signatures([relabelled]).unwrap()),
        Err(CheckpointError::BadCosignature("c.example/w".into()))
    );
    // A cosignature of another checkpoint (another size) does not verify.
    let other = checkpoint(&log, 5, &key);
    assert!(matches!(
        policy.verify(
            &note
                .with_signatures([a.cosign(&other, T), b.cosign(&cp, T)])
                .unwrap()
        ),
        Err(CheckpointError::BadCosignature(_))
    ));
    // The log's own signature does not count as a cosignature, even under
    // a witness's name: the message and the type differ.
    let mut log_as_witness = note.signatures()[0].clone();
    log_as_witness.name = a.verifier().name().clone();
    log_as_witness.key_id = a.verifier().key_id();
    assert!(a.verifier().verify(note.text(), &log_as_witness).is_none());
}

#[test]
fn a_policy_refuses_a_quorum_it_cannot_mean() {
    let key = log_key(1);
    let v = LogVerifier::for_key(key.public());
    let (a, b) = (witness(2, "a.example/w"), witness(3, "b.example/w"));
    assert_eq!(
        WitnessPolicy::new(v.clone(), vec![a.verifier()], 0).unwrap_err(),
        PolicyError::Quorum(1)
    );
    assert_eq!(
        WitnessPolicy::new(v.clone(), vec![a.verifier()], 2).unwrap_err(),
        PolicyError::Quorum(1)
    );
    // One key under two names would count twice.
    let again = WitnessVerifier::new(
        KeyName::new("again.example/w").unwrap(),
        log_key(2).public(),
    );
    assert_eq!(
        WitnessPolicy::new(v.clone(), vec![a.verifier(), again], 2).unwrap_err(),
        PolicyError::DuplicateWitness
    );
    let same_name = WitnessVerifier::new(a.verifier().name().clone(), log_key(3).public());
    assert_eq!(
        WitnessPolicy::new(v.clone(), vec![a.verifier(), same_name], 1).unwrap_err(),
        PolicyError::DuplicateWitness
    );
    let itself = WitnessVerifier::new(KeyName::new("me.example/w").unwrap(), key.public());
    assert_eq!(
        WitnessPolicy::new(v.clone(), vec![itself, b.verifier()], 1).unwrap_err(),
        PolicyError::LogIsWitness
    );
    assert!(WitnessPolicy::new(v, vec![a.verifier(), b.verifier()], 2).is_ok());
}

// ------------------------------------------------------------------ the witness's decision

#[test]
fn a_witness_cosigns_a_log_that_only_grows() {
    let key = log_key(1);
    let v = LogVerifier::for_key(key.public());
    let w = witness(2, "w.example/w");
    let log = tree(9, 0);
    // First contact, then growth with proofs, then the same head again.
    let first = run(None, &request(&log, 0, 3, &key), &v, &w).unwrap();
    assert_eq!(first.state.size, 3);
    let grown = run(Some(&first.state), &request(&log, 3, 9, &key), &v, &w).unwrap();
    assert_eq!(
        grown.state,
        WitnessState {
            size: 9,
            root: log.root()
        }
    );
    let again = run(Some(&grown.state), &request(&log, 9, 9, &key), &v, &w).unwrap();
    assert_eq!(again.state, grown.state);
    // The cosignature verifies under the witness's verifier key as printed
    // and parsed, with the time it was made.
    let wv: WitnessVerifier = w.verifier().to_string().parse().unwrap();
    let text = checkpoint(&log, 9, &key).body();
    assert_eq!(wv.verify(&text, &grown.cosignature), Some(T.0));
    // The empty tree too (its root is SHA-256 of nothing).
    let empty = run(None, &request(&MerkleLog::new(), 0, 0, &key), &v, &w).unwrap();
    assert_eq!(empty.state.size, 0);
}

#[test]
fn every_refusal_has_its_status() {
    let key = log_key(1);
    let v = LogVerifier::for_key(key.public());
    let w = witness(2, "w.example/w");
    let log = tree(8, 0);
    let at4 = WitnessState {
        size: 4,
        root: log.root_at(4).unwrap(),
    };
    let status =
        |r: Result<Cosigned, WitnessRefusal>| r.map(|_| 200).unwrap_or_else(|e| e.status());

    // 400: malformed.
    let r = add_checkpoint(None, b"old 0\n\nnot a note", |_| Some(&v), &w, T);
    assert!(matches!(r, Err(WitnessRefusal::Malformed(_))));
    assert_eq!(status(r), 400);
    // 404: a log this witness does not follow.
    let stranger = log_key(9);
    let r = run(None, &request(&log, 0, 4, &stranger), &v, &w);
    assert_eq!(r, Err(WitnessRefusal::UnknownLog));
    assert_eq!(status(r), 404);
    // 403: the origin is known but another key signed.
    let mut forged = request(&log, 0, 4, &key);
    let forged_note = Checkpoint {
        origin: v.name().clone(),
        ..checkpoint(&log, 4, &key)
    }
    .sign(&stranger);
    forged.note = forged_note;
    let r = run(None, &forged, &v, &w);
    assert_eq!(r, Err(WitnessRefusal::BadSignature));
    assert_eq!(status(r), 403);
    // 400: the old size above the checkpoint's (a log that shrank).
    let r = run(
        Some(&at4),
        &AddCheckpoint {
            old_size: 4,
            proof: Vec::new(),
            note: checkpoint(&log, 3, &key).sign(&key),
        },
        &v,
        &w,
    );
    assert_eq!(r, Err(WitnessRefusal::OldSizeAboveSize { old: 4, size: 3 }));
    assert_eq!(status(r), 400);
    // 409: the old size is not the stored one; the refusal carries it.
    for (stored, old) in [(Some(&at4), 0), (Some(&at4), 3), (None, 2)] {
        let r = run(stored, &request(&log, old, 8, &key), &v, &w);
        let want = stored.map_or(0, |s| s.size);
        assert_eq!(r, Err(WitnessRefusal::Conflict { stored: want }));
        assert_eq!(status(r), 409);
    }
    // 422: size 0 with another root.
    let bad_empty = Checkpoint {
        root: [1; 32],
        ..checkpoint(&MerkleLog::new(), 0, &key)
    };
    let r = run(
        None,
        &AddCheckpoint {
            old_size: 0,
            proof: Vec::new(),
            note: bad_empty.sign(&key),
        },
        &v,
        &w,
    );
    assert_eq!(r, Err(WitnessRefusal::EmptyTreeRoot));
    assert_eq!(status(r), 422);
    // 422: a proof from the empty tree.
    let mut proved = request(&log, 0, 8, &key);
    proved.proof = log.consistency_proof(4, 8).unwrap();
    let r = run(None, &proved, &v, &w);
    assert_eq!(r, Err(WitnessRefusal::ProofNotEmpty));
    assert_eq!(status(r), 422);
    // 422: a proof that does not verify (a wrong one for a true head).
    let mut wrong = request(&log, 4, 8, &key);
    wrong.proof = log.consistency_proof(3, 8).unwrap();
    let r = run(Some(&at4), &wrong, &v, &w);
    assert_eq!(r, Err(WitnessRefusal::Inconsistent));
    assert_eq!(status(r), 422);
}

/// The attacker holds the log's key and signs a second history: the same
/// size with another root, and a longer rewritten history whose proof from
/// the cosigned head cannot verify. Neither is cosigned.
#[test]
fn a_reader_believes_a_head_only_on_the_witnessed_history() {
    let key = log_key(1);
    let log = tree(9, 0);
    let cp = checkpoint(&log, 5, &key);
    let w = [witness(2, "w2.example"), witness(3, "w3.example")];
    let note = cp
        .sign(&key)
        .with_signatures(w.iter().map(|w| w.cosign(&cp, T)))
        .unwrap();
    let policy = WitnessPolicy::new(
        LogVerifier::new(cp.origin.clone(), key.public()),
        w.iter().map(Witness::verifier).collect(),
        2,
    )
    .unwrap();
    let id = key.public().log_id();
    let none: [[u8; 32]; 0] = [];
    // The same head, and a larger one with its consistency proof.
    assert!(
        policy
            .verify_head(
                &note,
                &log.head(id, T),
                &log.consistency_proof(5, 9).unwrap()
            )
            .is_ok()
    );
    let mut same = MerkleLog::new();
    for i in 0..5 {
        same.append(&entry(i));
    }
    assert!(policy.verify_head(&note, &same.head(id, T), &none).is_ok());
    // Another history: at the same size, and larger with any proof.
    let other = tree(9, 1);
    let fork = tree(5, 1);
    let refused = |head: &crate::log::TreeHead, proof: &[[u8; 32]]| {
        matches!(
            policy.verify_head(&note, head, proof),
            Err(CheckpointError::NotOnHistory(_))
        )
    };
    assert!(refused(&fork.head(id, T), &none));
    assert!(refused(
        &other.head(id, T),
        &other.consistency_proof(5, 9).unwrap()
    ));
    assert!(
        refused(&log.head(id, T), &none),
        "a larger head without its proof"
    );
    // A head smaller than what the witnesses saw, or another log's.
    let mut small = MerkleLog::new();
    small.append(&entry(0));
    assert!(refused(&small.head(id, T), &none));
    assert!(refused(
        &log.head(log_key(9).public().log_id(), T),
        &log.consistency_proof(5, 9).unwrap()
    ));
    // Without the quorum nothing is believed, whatever the head.
    let thin = cp
        .sign(&key)
        .with_signatures([w[0].cosign(&cp, T)])
        .unwrap();
    assert!(matches!(
        policy.verify_head(
            &thin,
            &log.head(id, T),
            &log.consistency_proof(5, 9).unwrap()
        ),
        Err(CheckpointError::NoQuorum { have: 1, need: 2 })
    ));
}

#[test]
fn a_fork_signed_with_the_logs_own_key_is_never_cosigned() {
    let key = log_key(1);
    let v = LogVerifier::for_key(key.public());
    let w = witness(2, "w.example/w");
    let honest = tree(6, 0);
    let forked = tree(6, 1);
    let state = run(None, &request(&honest, 0, 6, &key), &v, &w)
        .unwrap()
        .state;
    // Same size, other root.
    let r = run(Some(&state), &request(&forked, 6, 6, &key), &v, &w);
    assert_eq!(r, Err(WitnessRefusal::Fork));
    // A longer rewritten history, with its own (valid for it) proof.
    let rewritten = tree(10, 1);
    let r = run(Some(&state), &request(&rewritten, 6, 10, &key), &v, &w);
    assert_eq!(r, Err(WitnessRefusal::Inconsistent));
    // The honest log still grows.
    let mut longer = tree(6, 0);
    longer.append(&LogEntry::Shredded {
        student: DeviceKey::from_seed(&[1; 32]).student_id(),
        epoch: 1,
        stop_hash: MessageHash::from_bytes([3; 32]),
        at: T,
    });
    assert_eq!(
        run(Some(&state), &request(&longer, 6, 7, &key), &v, &w)
            .unwrap()
            .state
            .size,
        7
    );
}

// ------------------------------------------------------------------ properties

fn arb_name() -> impl Strategy<Value = KeyName> {
    "[a-z0-9./_-]{1,40}".prop_map(|s| KeyName::new(s).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn checkpoints_notes_and_requests_round_trip(
        origin in arb_name(),
        size in 0u64..=i64::MAX as u64,
        root in any::<[u8; 32]>(),
        old in 0u64..=i64::MAX as u64,
        proof in proptest::collection::vec(any::<[u8; 32]>(), 0..=MAX_PROOF_LINES),
        wname in arb_name(),
        time in 1u64..=i64::MAX as u64,
    ) {
        let cp = Checkpoint { origin, size, root };
        prop_assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp.clone());
        let key = log_key(1);
        let w = Witness::new(wname, log_key(2));
        let note = cp.sign(&key).with_signatures([w.cosign(&cp, Timestamp(time))]).unwrap();
        prop_assert_eq!(Note::parse(note.to_text().as_bytes()).unwrap(), note.clone());
        let req = AddCheckpoint { old_size: old, proof, note };
        prop_assert_eq!(AddCheckpoint::parse(&req.to_bytes()).unwrap(), req);
    }

    /// Parsing never panics, and whatever parses formats back to the same
    /// bytes (one encoding per value).
    #[test]
    fn parsing_is_canonical_and_never_panics(
        pos in any::<usize>(),
        val in any::<u8>(),
        noise in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let key = log_key(1);
        let req = request(&tree(5, 0), 2, 5, &key);
        let mut bytes = req.to_bytes();
        let i = pos % bytes.len();
        bytes[i] = val;
        if let Ok(r) = AddCheckpoint::parse(&bytes) {
            prop_assert_eq!(r.to_bytes(), bytes.clone());
        }
        let note = req.note.to_text().into_bytes();
        let mut edited = note.clone();
        let j = pos % edited.len();
        edited[j] = val;
        if let Ok(n) = Note::parse(&edited) {
            prop_assert_eq!(n.to_text().into_bytes(), edited);
        }
        let _ = Note::parse(&noise);
        let _ = AddCheckpoint::parse(&noise);
    }

    /// Whatever sequence of honest and forked requests a witness is sent
    /// (one attacker holding the log's key, two histories), the checkpoints
    /// it cosigns lie on one history: never two roots for one size, and each
    /// consistent with the one cosigned before.
    #[test]
    fn a_witness_never_cosigns_two_histories(
        steps in proptest::collection::vec((any::<bool>(), 0u64..=12, any::<bool>()), 1..24),
    ) {
        let key = log_key(1);
        let v = LogVerifier::for_key(key.public());
        let w = witness(2, "w.example/w");
        let logs = [tree(12, 0), tree(12, 1)];
        let mut stored: Option<WitnessState> = None;
        let mut cosigned: Vec<WitnessState> = Vec::new();
        for (fork, size, honest_old) in steps {
            let log = &logs[usize::from(fork)];
            let stored_size = stored.map_or(0, |s| s.size);
            let old = if honest_old && stored_size <= size { stored_size } else { size / 2 };
            let req = request(log, old.min(size), size, &key);
            if let Ok(c) = run(stored.as_ref(), &req, &v, &w) {
                stored = Some(c.state);
                cosigned.push(c.state);
            }
        }
        for pair in cosigned.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            prop_assert!(a.size <= b.size);
            if a.size > 0 {
                let proof = if a.size < b.size {
                    // Whichever log it came from, the proof must exist in one of them.
                    logs.iter()
                        .filter(|l| l.root_at(b.size).unwrap() == b.root)
                        .map(|l| l.consistency_proof(a.size, b.size).unwrap())
                        .next()
                        .unwrap()
                } else {
                    Vec::new()
                };
                prop_assert!(verify_consistency(a.size, b.size, &a.root, &b.root, &proof).is_ok());
            }
        }
    }
}

// ------------------------------------------------------------------ test vectors

/// The vectors of `docs/PROTOCOL.md`, "Witnessed checkpoints", rebuilt from
/// their inputs: the log is trustee `42` × 32's (the log of the
/// "Transparency log" vectors, with its entries A and B), the witness
/// trustee `43` × 32, both under their default names.
fn vectors() -> String {
    // The leaf hashes of entries A and B of "Log test vectors".
    let leaf = |h: &str| <[u8; 32]>::try_from(hex::decode(h).unwrap()).unwrap();
    let log = MerkleLog::from_leaf_hashes([
        leaf("6c5dcf52693280ee3ee7393eb92fda9b345b297518fc9757c17d7381fe0c4058"),
        leaf("f2ce9ce6ec856b020296c6ccc1f227cba7137cb779a84b3d0b70659ca15787de"),
    ]);
    let key = log_key(0x42);
    let v = LogVerifier::for_key(key.public());
    let wkey = log_key(0x43);
    let w = Witness::new(Witness::default_name(&wkey.public()), wkey);
    let head = log.head(key.log_id(), Timestamp(1_790_000_700));
    let cp = Checkpoint::of_head(v.name().clone(), &head);
    let note = cp.sign(&key);
    let stored = WitnessState {
        size: 1,
        root: log.root_at(1).unwrap(),
    };
    let req = AddCheckpoint {
        old_size: 1,
        proof: log.consistency_proof(1, 2).unwrap(),
        note: note.clone(),
    };
    let cosigned = add_checkpoint(
        Some(&stored),
        &req.to_bytes(),
        |o| (o == v.name().as_str()).then_some(&v),
        &w,
        Timestamp(1_790_000_700),
    )
    .unwrap();
    let cosigned_note = note
        .with_signatures([cosigned.cosignature.clone()])
        .unwrap();
    // The served note verifies under a quorum of one.
    let policy = WitnessPolicy::new(v.clone(), vec![w.verifier()], 1).unwrap();
    assert_eq!(policy.verify(&cosigned_note).unwrap().checkpoint(), &cp);
    format!(
        "Log verifier key (origin `{}`):\n\n```text\n{v}\n```\n\n\
         Witness verifier key:\n\n```text\n{}\n```\n\n\
         The checkpoint of [A, B], as the log signs it:\n\n```text\n{}```\n\n\
         The `add-checkpoint` request for it from a witness that last cosigned [A] \
         (`old 1`, the consistency proof is leaf hash B):\n\n```text\n{}```\n\n\
         The witness's answer at 1790000700 (the message it signs is \
         `cosignature/v1\\ntime 1790000700\\n` and the checkpoint's text):\n\n```text\n{}```\n\n\
         The checkpoint as the log then serves it:\n\n```text\n{}```\n",
        v.name(),
        w.verifier(),
        note.to_text(),
        String::from_utf8(req.to_bytes()).unwrap(),
        cosigned.cosignature.to_line(),
        cosigned_note.to_text(),
    )
}

/// `docs/PROTOCOL.md` holds exactly the vectors this code makes; on a
/// deliberate change of format, paste the block this test prints.
#[test]
fn the_protocol_document_holds_these_vectors() {
    crate::test_support::assert_protocol_holds("Witnessed checkpoints", "vectors", &vectors());
}
