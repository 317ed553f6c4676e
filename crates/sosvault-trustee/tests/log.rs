//! `log verify` as an auditor runs it: it follows an honest log as it grows,
//! and catches a tampered entry, a rewritten history, a forked head and a
//! shrunken log. The dishonest trustee is simulated by editing the store of
//! a stopped trustee and restarting it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::store_files::{restore, rewrite_entry, snapshot};
use common::*;
use serde_json::json;
use sosvault::log::{LogQuery, TreeHead, leaf_hash};
use sosvault::{ControlRoomKey, LogPublic, Timestamp, TrusteeId, TrusteeKey};

/// Some honest activity: `n` enrollments, a release for the first student
/// and a refused replay of it. Returns the students.
fn activity(r: &Running, t: &TrusteeDir, cr: &ControlRoomKey, n: usize) -> Vec<Student> {
    let now = Timestamp::now();
    let publics = t.and_two_strangers();
    let mut students: Vec<Student> = (0..n).map(|_| Student::enroll(&publics, now)).collect();
    for s in &students {
        assert_eq!(r.deliver(&s.delivery(1)).0, 200);
    }
    let panic = students[0].panic(cr, now);
    let (req, _, _) = request(cr, &panic, now);
    assert_eq!(r.release(&req).0, 200);
    let (req, _, _) = request(cr, &panic, now);
    assert_eq!(r.release(&req).0, 409);
    students
}

#[test]
fn an_honest_log_verifies_as_it_grows() {
    let (cr, t, r) = TrusteeDir::serving("honest");
    let state = t.dir().join("audit.json");
    // The empty log verifies, and is remembered.
    let out = ok(&t.log_verify(&r.url, Some(&state), true));
    assert!(out.contains("log of 0 entries"), "{out}");
    activity(&r, &t, &cr, 3);
    let out = ok(&t.log_verify(&r.url, Some(&state), true));
    assert!(out.contains("log of 5 entries"), "{out}");
    activity(&r, &t, &cr, 2);
    let out = ok(&t.log_verify(&r.url, Some(&state), false));
    assert!(
        out.contains("log of 9 entries") && out.contains("consistent with the head of 5 entries"),
        "{out}"
    );
    // Same size again: still fine (same root).
    ok(&t.log_verify(&r.url, Some(&state), true));
    // Served proofs check out for many sizes against the head of that size.
    let id = r.get("/v1/identity").1;
    let log_public = LogPublic::from_hex(id["log_public_key"].as_str().unwrap()).unwrap();
    let head = r.get("/v1/log/head").1;
    let head = TreeHead::verify(&unb64(head["head"].as_str().unwrap()), &log_public).unwrap();
    let size = head.body().size;
    let leaves = r.get(&format!("/v1/log/entries?start=0&end={size}")).1;
    let hashes: Vec<Vec<u8>> = leaves["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| unb64(e["leaf_hash"].as_str().unwrap()))
        .collect();
    let tree = sosvault::log::MerkleLog::from_leaf_hashes(
        hashes
            .iter()
            .map(|h| <[u8; 32]>::try_from(h.as_slice()).unwrap()),
    );
    for n in 1..=size {
        for i in 0..n {
            let p = r
                .get(&format!("/v1/log/proof/inclusion?index={i}&size={n}"))
                .1;
            let proof = proof_of(&p["proof"]);
            sosvault::log::verify_inclusion(
                &hashes[i as usize],
                i,
                n,
                &proof,
                &tree.root_at(n).unwrap(),
            )
            .unwrap();
        }
        let p = r
            .get(&format!("/v1/log/proof/consistency?old={n}&new={size}"))
            .1;
        let proof = proof_of(&p["proof"]);
        sosvault::log::verify_consistency(
            n,
            size,
            &tree.root_at(n).unwrap(),
            &head.body().root,
            &proof,
        )
        .unwrap();
    }
    // A wrong pin is refused.
    let mut cmd = std::process::Command::new(BIN);
    let out = cmd
        .args(["log", "verify", "--url", &r.url, "--trustee-public"])
        .arg(TrusteeKey::generate().public().to_hex())
        .output()
        .unwrap();
    fails(&out, "not the trustee pinned");
    let out = std::process::Command::new(BIN)
        .args(["log", "verify", "--url", &r.url, "--log-public-key"])
        .arg(TrusteeKey::generate().log_key().public().to_hex())
        .output()
        .unwrap();
    fails(&out, "another key than the one pinned");
    let out = std::process::Command::new(BIN)
        .args(["log", "verify", "--url", &r.url, "--log-public-key"])
        .arg(log_public.to_hex())
        .output()
        .unwrap();
    ok(&out);
}

#[test]
fn a_tampered_entry_is_detected() {
    let (cr, t, r) = TrusteeDir::serving("tampered");
    let state = t.dir().join("audit.json");
    let students = activity(&r, &t, &cr, 3);
    ok(&t.log_verify(&r.url, Some(&state), true));
    r.stop();
    // The operator edits entry 1 (student 1's acceptance) but not its leaf hash.
    rewrite_entry(&t.db(), "log_leaves", 1, false);
    let r = t.start(&[&cr], &[]);
    fails(
        &t.log_verify(&r.url, Some(&state), true),
        "entry 1 does not match its leaf hash",
    );
    // The student the entry is about sees it too: the entry it is served does
    // not hash to the leaf the proof includes.
    let q = LogQuery::sign(
        &students[1].key(),
        TrusteeId::from_hex(&t.id).unwrap(),
        Timestamp::now(),
    );
    let (st, v) = r.post("/v1/log/mine", json!({ "query": b64(q.as_bytes()) }));
    assert_eq!(st, 200);
    let id = r.get("/v1/identity").1;
    let log_public = LogPublic::from_hex(id["log_public_key"].as_str().unwrap()).unwrap();
    let head = TreeHead::verify(&unb64(v["head"].as_str().unwrap()), &log_public).unwrap();
    let e = &v["entries"][0];
    assert_eq!(e["index"], 1);
    let proof = proof_of(&e["proof"]);
    let entry = unb64(e["entry"].as_str().unwrap());
    assert!(
        head.body()
            .verify_inclusion(&leaf_hash(&entry), 1, &proof)
            .is_err()
    );
}

#[test]
fn a_rewritten_history_is_detected() {
    let (cr, t, r) = TrusteeDir::serving("rewritten");
    let state = t.dir().join("audit.json");
    activity(&r, &t, &cr, 3);
    ok(&t.log_verify(&r.url, Some(&state), true));
    r.stop();
    // The operator rewrites entry 0 and its leaf hash: a self-consistent log
    // with a different past.
    rewrite_entry(&t.db(), "log_leaves", 0, true);
    let r = t.start(&[&cr], &[]);
    activity(&r, &t, &cr, 1);
    // A fresh auditor with no memory cannot tell...
    ok(&t.log_verify(&r.url, None, true));
    // ...one that remembers the last head can.
    fails(
        &t.log_verify(&r.url, Some(&state), true),
        "history was rewritten",
    );
}

#[test]
fn a_forked_or_shrunken_log_is_detected() {
    let (cr, t, r) = TrusteeDir::serving("forked");
    let state = t.dir().join("audit.json");
    let snap = t.dir().join("snapshot");
    activity(&r, &t, &cr, 2);
    r.stop();
    snapshot(&t.db(), &snap);

    // Branch one: two more students; the auditor sees and remembers it.
    let r = t.start(&[&cr], &[]);
    activity(&r, &t, &cr, 2);
    let seen = r.log_size();
    ok(&t.log_verify(&r.url, Some(&state), true));
    r.stop();

    // The operator rolls the store back: the log shrank.
    restore(&t.db(), &snap);
    let r = t.start(&[&cr], &[]);
    fails(&t.log_verify(&r.url, Some(&state), true), "the log shrank");

    // Branch two from the same point, to the same size: a fork.
    activity(&r, &t, &cr, 2);
    assert_eq!(r.log_size(), seen);
    fails(&t.log_verify(&r.url, Some(&state), true), "fork");

    // And once it grows past the seen head, it still does not extend it.
    activity(&r, &t, &cr, 1);
    fails(&t.log_verify(&r.url, Some(&state), true), "does not extend");
}
