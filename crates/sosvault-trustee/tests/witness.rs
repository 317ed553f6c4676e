//! Witnessed checkpoints between real trustee processes (issue 12): one
//! trustee's log, the others its witnesses (c2sp.org/tlog-witness), the
//! relay the control room will run done here by hand, and `log verify
//! --witness ... --quorum K`.
//!
//! The attacker holds the log's key (an operator of trustee A, or a thief of
//! its key file) and signs a second history: a second `MerkleLog` signed
//! with A's own log key. The witnesses must never cosign it, restarts
//! included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output};

use common::http_answers::content_type;
use common::*;
use serde_json::{Value, json};
use sosvault::checkpoint::{
    AddCheckpoint, Checkpoint, KeyName, LogVerifier, Note, NoteSignature, Witness, WitnessVerifier,
};
use sosvault::log::MerkleLog;
use sosvault::{ControlRoomKey, LogKey, Timestamp, TrusteeKey};

const ADD: &str = "/v1/witness/add-checkpoint";

/// Trustee `t`'s log, as its witnesses pin it.
fn log_vkey(t: &TrusteeDir) -> LogVerifier {
    LogVerifier::for_key(t.trustee_key().log_key().public())
}

/// Trustee `t` as a witness, as the logs it witnesses pin it.
fn witness_vkey(t: &TrusteeDir) -> WitnessVerifier {
    let public = t.trustee_key().log_key().public();
    WitnessVerifier::new(Witness::default_name(&public), public)
}

/// A text answer: status, content type, body.
fn text(resp: reqwest::blocking::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let ct = content_type(resp.headers());
    (status, ct, resp.text().unwrap())
}

fn get_text(r: &Running, path: &str) -> (u16, String, String) {
    text(r.http.get(format!("{}{path}", r.url)).send().unwrap())
}

fn add(r: &Running, body: Vec<u8>) -> (u16, String, String) {
    text(
        r.http
            .post(format!("{}{ADD}", r.url))
            .body(body)
            .send()
            .unwrap(),
    )
}

/// The log's checkpoint as it is now (what a relay sends to witnesses).
fn latest(r: &Running) -> Note {
    let (s, ct, body) = get_text(r, "/v1/log/checkpoint?latest=true");
    assert_eq!(
        (s, ct.as_str()),
        (200, "text/plain; charset=utf-8"),
        "{body}"
    );
    Note::parse(body.as_bytes()).unwrap()
}

fn size_of(note: &Note) -> u64 {
    Checkpoint::parse_body(note.text()).unwrap().size
}

/// What the control room's relay will do: the log's latest checkpoint to
/// the witness, from the size the witness holds (learnt from its 409), with
/// the log's consistency proof. Returns the checkpoint and the cosignature.
fn relay(log: &Running, witness: &Running) -> (Note, NoteSignature) {
    let note = latest(log);
    let size = size_of(&note);
    let first = req(0, Vec::new(), note.clone());
    let (s, ct, body) = add(witness, first.to_bytes());
    let line = match s {
        200 => body,
        409 => {
            assert_eq!(ct, "text/x.tlog.size");
            let old: u64 = body.trim_end().parse().unwrap();
            let proof = if old == size {
                Vec::new()
            } else {
                let (s, v) = log.get(&format!("/v1/log/proof/consistency?old={old}&new={size}"));
                assert_eq!(s, 200, "{v}");
                v["proof"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| unb64(h.as_str().unwrap()).try_into().unwrap())
                    .collect()
            };
            let (s, _, body) = add(witness, req(old, proof, note.clone()).to_bytes());
            assert_eq!(s, 200, "{body}");
            body
        }
        _ => panic!("add-checkpoint answered {s}: {body}"),
    };
    assert!(line.ends_with('\n'), "{line:?}");
    (note, NoteSignature::parse_line(line.trim_end()).unwrap())
}

/// Hands cosignatures back to the log, as the relay will.
fn hand_back(log: &Running, note: &Note, lines: &[NoteSignature]) -> Value {
    let with = note.with_signatures(lines.iter().cloned()).unwrap();
    let (s, v) = log.post("/v1/log/cosignatures", json!({ "note": with.to_text() }));
    assert_eq!(s, 200, "{v}");
    v
}

/// `n` share deliveries: `n` new leaves in `t`'s log.
fn grow(r: &Running, t: &TrusteeDir, n: usize) {
    let others = [
        TrusteeKey::generate().public(),
        TrusteeKey::generate().public(),
    ];
    for _ in 0..n {
        let s = Student::enroll(
            &[t.public.clone(), others[0].clone(), others[1].clone()],
            Timestamp::now(),
        );
        assert_eq!(r.deliver(&s.delivery(1)).0, 200);
    }
}

/// An add-checkpoint request.
fn req(old_size: u64, proof: Vec<[u8; 32]>, note: Note) -> AddCheckpoint {
    AddCheckpoint {
        old_size,
        proof,
        note,
    }
}

/// The checkpoint of `log`'s first `size` leaves under `origin`, signed by `key`.
fn signed(log: &MerkleLog, size: u64, origin: &KeyName, key: &LogKey) -> Note {
    Checkpoint {
        origin: origin.clone(),
        size,
        root: log.root_at(size).unwrap(),
    }
    .sign(key)
}

/// A second history of `n` leaves (nothing like the trustee's entries).
fn other_history(n: u8) -> MerkleLog {
    MerkleLog::from_leaf_hashes((0..n).map(|i| [i ^ 0xa5; 32]))
}

fn log_verify(t: &TrusteeDir, url: &str, witnesses: &[&WitnessVerifier], quorum: usize) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["log", "verify", "--url", url, "--trustee-public"])
        .arg(t.public.to_hex())
        .args(["--quorum", &quorum.to_string()])
        .env_remove("SOSVAULT_AUDITOR_TOKEN");
    for w in witnesses {
        cmd.arg("--witness").arg(w.to_string());
    }
    cmd.output().unwrap()
}

#[test]
fn a_witness_cosigns_a_consistent_log_refuses_a_fork_and_still_does_after_a_restart() {
    let cr = ControlRoomKey::generate();
    let a = TrusteeDir::init("log-a");
    let b = TrusteeDir::init("witness-b");
    let env = [("SOSVAULT_TRUSTEE_WITNESS_LOGS", log_vkey(&a).to_string())];
    let ra = a.start(&[&cr], &[]);
    let rb = b.start(&[&cr], &env);
    let b_leaves = rb.log_size();
    let wv = witness_vkey(&b);
    // B says who it is as a witness, and whose log A is.
    let id = rb.get("/v1/identity").1;
    assert_eq!(id["witness_vkey"], wv.to_string());
    assert_eq!(
        ra.get("/v1/identity").1["log_vkey"],
        log_vkey(&a).to_string()
    );

    // First contact: cosigned, and the cosignature verifies under B's vkey.
    grow(&ra, &a, 3);
    let (note, line) = relay(&ra, &rb);
    assert_eq!(size_of(&note), 3);
    assert!(wv.verify(note.text(), &line).is_some());

    // A grew: a request from the wrong old size gets 409 with the size B
    // holds (tlog-witness's text/x.tlog.size), then the proof gets a cosignature.
    grow(&ra, &a, 2);
    let grown = latest(&ra);
    let from_zero = req(0, Vec::new(), grown.clone());
    assert_eq!(
        add(&rb, from_zero.to_bytes()),
        (409, "text/x.tlog.size".into(), "3\n".into())
    );
    let (note, line) = relay(&ra, &rb);
    assert_eq!(size_of(&note), 5);
    assert!(wv.verify(note.text(), &line).is_some());

    // The attacker holds A's log key and signs another history.
    let key = a.trustee_key().log_key();
    let origin = log_vkey(&a).name().clone();
    let fork = other_history(8);
    // The same size as cosigned, another root: a fork.
    let same_size = req(5, Vec::new(), signed(&fork, 5, &origin, &key));
    let (s, _, body) = add(&rb, same_size.to_bytes());
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("\"fork\""), "{body}");
    // A longer rewritten history with its own consistency proof.
    let rewritten = req(
        5,
        fork.consistency_proof(5, 8).unwrap(),
        signed(&fork, 8, &origin, &key),
    );
    let (s, _, body) = add(&rb, rewritten.to_bytes());
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("\"inconsistent\""), "{body}");
    // A smaller tree than the old size: 400.
    let shrunk = req(5, Vec::new(), signed(&fork, 4, &origin, &key));
    let (s, _, body) = add(&rb, shrunk.to_bytes());
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("old_size_above_size"), "{body}");
    // Another key under A's origin: 403. A log B does not follow: 404.
    let stranger = LogKey::generate();
    let forged = req(5, Vec::new(), signed(&fork, 5, &origin, &stranger));
    assert_eq!(add(&rb, forged.to_bytes()).0, 403);
    let elsewhere = LogVerifier::for_key(stranger.public()).name().clone();
    let unknown = req(0, Vec::new(), signed(&fork, 5, &elsewhere, &stranger));
    assert_eq!(add(&rb, unknown.to_bytes()).0, 404);
    // Junk and an oversized body: 400 and 413.
    assert_eq!(add(&rb, b"old 0\n\nnot a note".to_vec()).0, 400);
    assert_eq!(add(&rb, vec![b'x'; 30_000]).0, 413);
    // None of it (nor the cosignatures) became a leaf of B's own log.
    assert_eq!(rb.log_size(), b_leaves);

    // A restart keeps what B cosigned: the fork is still refused, and the
    // 409 still says 5.
    rb.stop();
    let rb = b.start(&[&cr], &env);
    let (s, _, body) = add(&rb, same_size.to_bytes());
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("\"fork\""), "{body}");
    assert_eq!(add(&rb, rewritten.to_bytes()).0, 422);
    assert_eq!(
        add(&rb, from_zero.to_bytes()),
        (409, "text/x.tlog.size".into(), "5\n".into())
    );
    // And the honest log goes on being cosigned.
    grow(&ra, &a, 1);
    assert_eq!(size_of(&relay(&ra, &rb).0), 6);
}

#[test]
fn log_verify_with_a_quorum_passes_only_once_the_witnesses_have_cosigned() {
    let cr = ControlRoomKey::generate();
    let a = TrusteeDir::init("log-a");
    let b = TrusteeDir::init("witness-b");
    let c = TrusteeDir::init("witness-c");
    let (wb, wc) = (witness_vkey(&b), witness_vkey(&c));
    let ra = a.start(
        &[&cr],
        &[("SOSVAULT_TRUSTEE_WITNESSES", format!("{wb},{wc}"))],
    );
    let follow_a = [("SOSVAULT_TRUSTEE_WITNESS_LOGS", log_vkey(&a).to_string())];
    let rb = b.start(&[&cr], &follow_a);
    let rc = c.start(&[&cr], &follow_a);
    grow(&ra, &a, 3);

    // No cosignature yet: a quorum of 2 (or 1) fails, saying why.
    fails(
        &log_verify(&a, &ra.url, &[&wb, &wc], 2),
        "0 valid cosignatures",
    );
    fails(
        &log_verify(&a, &ra.url, &[&wb, &wc], 1),
        "0 valid cosignatures",
    );

    // B cosigns and the relay hands it back: one of two.
    let (note, line_b) = relay(&ra, &rb);
    let kept = hand_back(&ra, &note, &[line_b]);
    assert_eq!(
        kept,
        json!({"size": 3, "kept": [wb.name().to_string()], "refused": 0})
    );
    fails(
        &log_verify(&a, &ra.url, &[&wb, &wc], 2),
        "1 valid cosignatures",
    );
    let out = ok(&log_verify(&a, &ra.url, &[&wb, &wc], 1));
    assert!(
        out.contains("cosigned by 1 of 2 trusted witnesses"),
        "{out}"
    );

    // C cosigns the same checkpoint: two of two.
    let (again, line_c) = relay(&ra, &rc);
    assert_eq!(again.text(), note.text());
    assert_eq!(
        again.signatures().len(),
        2,
        "the latest checkpoint carries what is held for it"
    );
    hand_back(&ra, &note, &[line_c]);
    let out = ok(&log_verify(&a, &ra.url, &[&wb, &wc], 2));
    assert!(
        out.contains("checkpoint of 3 entries cosigned by 2 of 2 trusted witnesses"),
        "{out}"
    );

    // The log grows past the witnessed checkpoint: the checkpoint served is
    // still the witnessed one, and it is proven on the head's history.
    grow(&ra, &a, 2);
    let served = Note::parse(get_text(&ra, "/v1/log/checkpoint").2.as_bytes()).unwrap();
    assert_eq!((size_of(&served), served.signatures().len()), (3, 3));
    assert_eq!(size_of(&latest(&ra)), 5);
    let out = ok(&log_verify(&a, &ra.url, &[&wb, &wc], 2));
    assert!(out.contains("signed head of 5 entries"), "{out}");

    // A witness the auditor does not trust does not count toward its quorum.
    let stranger = WitnessVerifier::new(
        KeyName::new("stranger.example/w").unwrap(),
        TrusteeKey::generate().log_key().public(),
    );
    fails(
        &log_verify(&a, &ra.url, &[&wb, &stranger], 2),
        "1 valid cosignatures",
    );

    // The trustee keeps only its configured witnesses' valid cosignatures:
    // a stranger's is ignored, one forged under B's name and key ID dropped.
    let outsider = Witness::new(
        KeyName::new("outsider.example/w").unwrap(),
        TrusteeKey::generate().log_key(),
    );
    let cp = Checkpoint::parse_body(note.text()).unwrap();
    let outsiders = outsider.cosign(&cp, Timestamp::now());
    let v = hand_back(&ra, &note, std::slice::from_ref(&outsiders));
    assert_eq!(
        (v["kept"].clone(), v["refused"].clone()),
        (json!([]), json!(0))
    );
    // The outsider's signature under B's name and key ID: B's line by name
    // and ID, and it does not verify.
    let mut bytes = wb.key_id().to_be_bytes().to_vec();
    bytes.extend_from_slice(outsiders.signature());
    let forged_b =
        NoteSignature::parse_line(&format!("\u{2014} {} {}", wb.name(), b64(&bytes))).unwrap();
    let v = hand_back(&ra, &note, &[forged_b]);
    assert_eq!(
        (v["kept"].clone(), v["refused"].clone()),
        (json!([]), json!(1))
    );
    // B's valid cosignature is still the one served.
    let out = ok(&log_verify(&a, &ra.url, &[&wb, &wc], 2));
    assert!(out.contains("cosigned by 2 of 2"), "{out}");

    // A note that is not this log's checkpoint is refused.
    let other = Checkpoint {
        root: [9; 32],
        ..cp.clone()
    }
    .sign(&a.trustee_key().log_key());
    let (s, v) = ra.post("/v1/log/cosignatures", json!({ "note": other.to_text() }));
    assert_eq!((s, code(&v)), (422, "not_our_checkpoint"), "{v}");
    let (s, v) = ra.post("/v1/log/cosignatures", json!({ "note": "junk" }));
    assert_eq!((s, code(&v)), (400, "malformed"), "{v}");
}
