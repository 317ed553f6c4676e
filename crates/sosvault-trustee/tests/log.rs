//! `log verify` as an auditor runs it: it follows an honest log as it grows,
//! and catches a tampered entry, a rewritten history, a forked head and a
//! shrunken log. The dishonest trustee is simulated by editing the store of
//! a stopped trustee and restarting it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;
use sosvault::log::{LogQuery, TreeHead, leaf_hash};
use sosvault::{ControlRoomKey, LogPublic, Timestamp, TrusteeId, TrusteeKey, TrusteePublic};

fn others() -> [TrusteePublic; 2] {
    [
        TrusteeKey::generate().public(),
        TrusteeKey::generate().public(),
    ]
}

/// Some honest activity: `n` enrollments, a release for the first student
/// and a refused replay of it. Returns the students.
fn activity(r: &Running, t: &TrusteeDir, cr: &ControlRoomKey, n: usize) -> Vec<Student> {
    let now = Timestamp::now();
    let [a, b] = others();
    let mut students: Vec<Student> = (0..n)
        .map(|_| Student::enroll(&[t.public.clone(), a.clone(), b.clone()], now))
        .collect();
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

fn db_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .collect()
}

fn snapshot(db: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for (i, f) in db_files(db).iter().enumerate() {
        let dst = to.join(i.to_string());
        let _ = std::fs::remove_file(&dst);
        if f.exists() {
            std::fs::copy(f, dst).unwrap();
        }
    }
}

fn restore(db: &Path, from: &Path) {
    for (i, f) in db_files(db).iter().enumerate() {
        let _ = std::fs::remove_file(f);
        let src = from.join(i.to_string());
        if src.exists() {
            std::fs::copy(src, f).unwrap();
        }
    }
}

fn edit(db: &Path, f: impl FnOnce(&rusqlite::Connection)) {
    let c = rusqlite::Connection::open(db).unwrap();
    f(&c);
    c.close().unwrap();
}

#[test]
fn an_honest_log_verifies_as_it_grows() {
    let cr = ControlRoomKey::generate();
    let t = TrusteeDir::init("honest");
    let state = t.dir().join("audit.json");
    let r = t.start(&[&cr], &[]);
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
            let proof: Vec<Vec<u8>> = p["proof"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| unb64(h.as_str().unwrap()))
                .collect();
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
        let proof: Vec<Vec<u8>> = p["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| unb64(h.as_str().unwrap()))
            .collect();
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
    let cr = ControlRoomKey::generate();
    let t = TrusteeDir::init("tampered");
    let state = t.dir().join("audit.json");
    let r = t.start(&[&cr], &[]);
    let students = activity(&r, &t, &cr, 3);
    ok(&t.log_verify(&r.url, Some(&state), true));
    r.stop();
    // The operator edits entry 1 (student 1's acceptance) but not its leaf hash.
    edit(&t.db(), |c| {
        let mut e: Vec<u8> = c
            .query_row("SELECT entry FROM log_leaves WHERE idx = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        let last = e.len() - 1;
        e[last] ^= 0x01; // the entry's time
        c.execute("UPDATE log_leaves SET entry = ?1 WHERE idx = 1", [e])
            .unwrap();
    });
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
    let proof: Vec<Vec<u8>> = e["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| unb64(h.as_str().unwrap()))
        .collect();
    let entry = unb64(e["entry"].as_str().unwrap());
    assert!(
        head.body()
            .verify_inclusion(&leaf_hash(&entry), 1, &proof)
            .is_err()
    );
}

#[test]
fn a_rewritten_history_is_detected() {
    let cr = ControlRoomKey::generate();
    let t = TrusteeDir::init("rewritten");
    let state = t.dir().join("audit.json");
    let r = t.start(&[&cr], &[]);
    activity(&r, &t, &cr, 3);
    ok(&t.log_verify(&r.url, Some(&state), true));
    r.stop();
    // The operator rewrites entry 0 and its leaf hash: a self-consistent log
    // with a different past.
    edit(&t.db(), |c| {
        let mut e: Vec<u8> = c
            .query_row("SELECT entry FROM log_leaves WHERE idx = 0", [], |r| {
                r.get(0)
            })
            .unwrap();
        let last = e.len() - 1;
        e[last] ^= 0x01;
        let h = leaf_hash(&e).to_vec();
        c.execute(
            "UPDATE log_leaves SET entry = ?1, leaf_hash = ?2 WHERE idx = 0",
            rusqlite::params![e, h],
        )
        .unwrap();
    });
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
    let cr = ControlRoomKey::generate();
    let t = TrusteeDir::init("forked");
    let state = t.dir().join("audit.json");
    let snap = t.dir().join("snapshot");
    let r = t.start(&[&cr], &[]);
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
