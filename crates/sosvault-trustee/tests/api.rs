//! End-to-end tests of the trustee's API: the real binary on loopback, a
//! temporary SQLite store, messages made with the core crate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::http_answers::assert_413_closes;
use common::*;
use ed25519_dalek::Signer as _;
use serde_json::json;
use sosvault::ReleaseRefusal as Why;
use sosvault::log::{LogEntry, LogQuery, TreeHead, leaf_hash, refusal_code};
use sosvault::{
    CancelReceipt, Container, ControlRoomKey, Opener, Profile, Refusal, Release, ReleaseRefusal,
    ShareReceipt, ShredReceipt, Signed, Timestamp,
};

#[test]
fn health_and_identity() {
    let (_, t, r) = TrusteeDir::serving("health-office");
    assert_eq!(r.get("/healthz"), (200, json!({"status": "ok"})));
    assert_eq!(r.get("/v1/health"), (200, json!({"status": "ok"})));
    let (s, id) = r.get("/v1/identity");
    assert_eq!(s, 200);
    assert_eq!(id["trustee_id"], t.id);
    assert_eq!(id["public"], t.public.to_hex());
    assert_eq!(id["name"], "health-office");
    assert_eq!(id["log_public_key"].as_str().unwrap().len(), 64);
    let (s, v) = r.get("/v1/nowhere");
    assert_eq!((s, code(&v)), (404, "not_found"));
}

#[test]
fn a_valid_panic_releases_and_two_trustees_open_the_vault() {
    let now = Timestamp::now();
    let cr = ControlRoomKey::generate();
    let (t1, t2) = (TrusteeDir::init("one"), TrusteeDir::init("two"));
    let (r1, r2) = (t1.start(&[&cr], &[]), t2.start(&[&cr], &[]));
    let publics = [t1.public.clone(), t2.public.clone(), stranger()];
    let mut s = Student::enroll(&publics, now);

    for (i, (r, t)) in [(&r1, &t1), (&r2, &t2)].into_iter().enumerate() {
        let delivery = s.delivery(i as u8 + 1);
        let (st, v) = r.deliver(&delivery);
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["repeated"], false);
        let receipt_bytes = unb64(v["receipt"].as_str().unwrap());
        let receipt = Signed::<ShareReceipt>::decode(&receipt_bytes).unwrap();
        assert_eq!(receipt.signer(), t.public.verifying_key());
        assert_eq!(receipt.body().student, s.device.student_id());
        assert_eq!(receipt.body().share_index, i as u8 + 1);
        // A relay retry: the same receipt, byte for byte, and nothing logged twice.
        let size = r.log_size();
        let (st, again) = r.deliver(&delivery);
        assert_eq!(st, 200);
        assert_eq!(again["repeated"], true);
        assert_eq!(unb64(again["receipt"].as_str().unwrap()), receipt_bytes);
        assert_eq!(r.log_size(), size);
        // The share was delivered to trustee i+1; the other index is not ours.
        let other = s.delivery(if i == 0 { 2 } else { 1 });
        let (st, v) = r.deliver(&other);
        assert_eq!((st, code(&v)), (422, "not_our_share"));
    }

    let panic = s.panic(&cr, now);
    let (req, incident, incident_key) = request(&cr, &panic, now);
    let mut opener = Opener::new(
        &s.enrollment.package.record,
        panic.hash(),
        incident,
        &incident_key,
    );
    for r in [&r1, &r2] {
        let (st, v) = r.release(&req);
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["repeated"], false);
        let bytes = unb64(v["release"].as_str().unwrap());
        let release = Signed::<Release>::decode(&bytes).unwrap();
        assert_eq!(release.body().panic, panic.hash());
        opener.add(&bytes).unwrap();
        // The control room retrying the same request gets the same release.
        let (st, again) = r.release(&req);
        assert_eq!(st, 200);
        assert_eq!(again["repeated"], true);
        assert_eq!(unb64(again["release"].as_str().unwrap()), bytes);
        // The release is in the log with the hash of the panic it answered,
        // and the retry is an entry of its own; neither holds the panic.
        let entries = r.entries();
        let released: Vec<bool> = entries
            .iter()
            .filter_map(|e| match e {
                LogEntry::Released {
                    panic: p,
                    incident: inc,
                    repeat,
                    ..
                } if *p == panic.hash() && *inc == incident => Some(*repeat),
                _ => None,
            })
            .collect();
        assert_eq!(released, [false, true]);
    }
    let vault = opener.open().unwrap();
    let profile = Profile::from_bytes(
        &vault
            .open(&s.enrollment.package.sealed_profile, 1 << 20)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(profile.name, "Asha");

    for (r, t) in [(&r1, &t1), (&r2, &t2)] {
        let out = t.log_verify(&r.url, None, true);
        assert!(out.status.success(), "{out:?}");
    }
}

/// A release request whose panic's signature no longer verifies, re-signed by
/// the (pinned) control room: the request's own signature is good.
fn forged_request(seed: &[u8; 32], req: &Signed<sosvault::ReleaseRequest>) -> Vec<u8> {
    let panic_bytes = req.body().panic.as_bytes();
    let mut bytes = req.as_bytes().to_vec();
    let at = bytes
        .windows(panic_bytes.len())
        .position(|w| w == panic_bytes)
        .unwrap();
    // Flip a bit in the panic's signature (its last 64 bytes).
    bytes[at + panic_bytes.len() - 10] ^= 1;
    let signed_len = bytes.len() - 64;
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, seed);
    let mut sk = [0u8; 32];
    hk.expand(ControlRoomKey::ED25519_INFO.as_bytes(), &mut sk)
        .unwrap();
    let sk = ed25519_dalek::SigningKey::from_bytes(&sk);
    let sig = sk.sign(&bytes[..signed_len]);
    bytes[signed_len..].copy_from_slice(&sig.to_bytes());
    bytes
}

#[test]
fn every_bad_release_is_refused_with_its_own_code_and_logged() {
    let now = Timestamp::now();
    let seed = [7u8; 32];
    let cr = ControlRoomKey::from_seed(&seed);
    let rogue = ControlRoomKey::generate();
    let t = TrusteeDir::init("refusals");
    let r = t.start(
        &[&cr],
        &[("SOSVAULT_TRUSTEE_MAX_RELEASES_PER_WINDOW", "2".into())],
    );
    let publics = t.and_two_strangers();
    let mut a = Student::enroll(&publics, now);
    let (st, _) = r.deliver(&a.delivery(1));
    assert_eq!(st, 200);

    // Checks one refusal: `send` gets `status` and `code_`, and one new log
    // entry, a refusal with the core's reason code (or the rate-limit code).
    let check =
        |send: &dyn Fn() -> (u16, serde_json::Value), status: u16, code_: &str, log_code| {
            let before = r.log_size();
            let (st, v) = send();
            assert_eq!((st, code(&v)), (status, code_), "{v}");
            assert!(!v["message"].as_str().unwrap().is_empty());
            assert_eq!(r.log_size(), before + 1, "{code_} must be logged once");
            match r.entries().last().unwrap() {
                LogEntry::Refused { code, reason, .. } => {
                    assert_eq!(*code, log_code, "{code_}: {reason}");
                    assert!(!reason.is_empty());
                }
                other => panic!("{code_}: last entry is {other:?}"),
            }
        };
    let rc = |r: ReleaseRefusal| refusal_code(&Refusal::Release(r));

    // Refused before any release, each for its own reason: not signed by a
    // pinned control room; a pinned signer, but the panic inside forged; the
    // request itself too old; the panic too old (over an hour) in a fresh
    // request; a panic from the future; another student, whose share this
    // trustee does not hold.
    let panic = a.panic(&cr, now);
    let (req, _, _) = request(&cr, &panic, now);
    let signed = |by: &ControlRoomKey, p, at| request(by, p, at).0.as_bytes().to_vec();
    let unpinned = signed(&rogue, &panic, now);
    let forged = forged_request(&seed, &req);
    let stale = signed(&cr, &panic, now.minus(1000));
    let (old_panic, future_panic) = (a.panic(&cr, now.minus(7300)), a.panic(&cr, now.plus(1000)));
    let old = signed(&cr, &old_panic, now);
    let future = signed(&cr, &future_panic, now);
    let mut b = Student::enroll(&publics, now);
    let bp = b.panic(&cr, now);
    let unknown = signed(&cr, &bp, now);
    for (request, status, code_, refusal) in [
        (
            unpinned,
            403,
            "unpinned_control_room",
            Why::UnpinnedControlRoom,
        ),
        (forged, 403, "forged_panic", Why::ForgedPanic),
        (stale, 422, "stale_request", Why::StaleRequest),
        (old, 422, "stale_panic", Why::StalePanic),
        (future, 422, "future_panic", Why::FuturePanic),
        (unknown, 404, "unknown_student", Why::UnknownStudent),
    ] {
        let send = || r.post("/v1/releases", json!({ "request": b64(&request) }));
        check(&send, status, code_, rc(refusal));
    }

    // A good panic is released; the same panic for another incident is a replay.
    let p1 = a.panic(&cr, now);
    let (req, _, _) = request(&cr, &p1, now);
    assert_eq!(r.release(&req).0, 200);
    let (req, _, _) = request(&cr, &p1, now);
    let replayed = rc(Why::Replayed {
        offered: 0,
        seen: 0,
    });
    check(&|| r.release(&req), 409, "replayed", replayed);
    // Second release within the window is allowed (limit 2), the third is not.
    let p2 = a.panic(&cr, now);
    let (req, _, _) = request(&cr, &p2, now);
    assert_eq!(r.release(&req).0, 200);
    let p3 = a.panic(&cr, now);
    let (req3, _, _) = request(&cr, &p3, now);
    check(&|| r.release(&req3), 429, "rate_limited", 1);
    match r.entries().last().unwrap() {
        LogEntry::Refused {
            reason, student, ..
        } => {
            assert!(reason.contains("rate limited"), "{reason}");
            assert_eq!(*student, Some(a.device.student_id()));
        }
        e => panic!("{e:?}"),
    }

    // A panic for a later epoch than this trustee holds (re-enrolled elsewhere).
    let profile = Profile::new("Asha", "+91 90000 00000");
    a.enrollment = a.device.reenroll(&profile.to_bytes(), now).unwrap();
    let p4 = a.panic(&cr, now);
    let (req, _, _) = request(&cr, &p4, now);
    let wrong_epoch = rc(Why::WrongEpoch {
        offered: 0,
        current: 0,
    });
    check(&|| r.release(&req), 409, "wrong_epoch", wrong_epoch);

    // The student reads its own entries, with proofs, and sees every refusal;
    // student b sees only its own.
    let q = LogQuery::sign(
        &a.key(),
        sosvault::TrusteeId::from_hex(&t.id).unwrap(),
        Timestamp::now(),
    );
    let (st, v) = r.post("/v1/log/mine", json!({ "query": b64(q.as_bytes()) }));
    assert_eq!(st, 200, "{v}");
    let id: serde_json::Value = r.get("/v1/identity").1;
    let log_public = sosvault::LogPublic::from_hex(id["log_public_key"].as_str().unwrap()).unwrap();
    let head = TreeHead::verify(&unb64(v["head"].as_str().unwrap()), &log_public).unwrap();
    let mine = v["entries"].as_array().unwrap();
    let mut refusals = 0;
    for e in mine {
        let bytes = unb64(e["entry"].as_str().unwrap());
        let entry = LogEntry::from_bytes(&bytes).unwrap();
        assert_eq!(entry.student(), Some(a.device.student_id()));
        let proof = proof_of(&e["proof"]);
        head.body()
            .verify_inclusion(&leaf_hash(&bytes), e["index"].as_u64().unwrap(), &proof)
            .unwrap();
        if matches!(entry, LogEntry::Refused { .. }) {
            refusals += 1;
        }
    }
    // unpinned, stale request, stale panic, future, replayed, rate limited, wrong
    // epoch name student a; the forged one cannot name anyone.
    assert_eq!(refusals, 7);
    // The same query again is a replay.
    let (st, v) = r.post("/v1/log/mine", json!({ "query": b64(q.as_bytes()) }));
    assert_eq!((st, code(&v)), (409, "replayed"));
    // A query addressed to another trustee is refused.
    let q = LogQuery::sign(&b.key(), stranger().id(), Timestamp::now());
    let (st, v) = r.post("/v1/log/mine", json!({ "query": b64(q.as_bytes()) }));
    assert_eq!((st, code(&v)), (403, "wrong_log"));
    let q = LogQuery::sign(
        &b.key(),
        sosvault::TrusteeId::from_hex(&t.id).unwrap(),
        Timestamp::now(),
    );
    let (st, v) = r.post("/v1/log/mine", json!({ "query": b64(q.as_bytes()) }));
    assert_eq!(st, 200);
    for e in v["entries"].as_array().unwrap() {
        let entry = LogEntry::from_bytes(&unb64(e["entry"].as_str().unwrap())).unwrap();
        assert_eq!(entry.student(), Some(b.device.student_id()));
    }
    // The public sees leaf hashes, not entries.
    let (st, v) = r.get("/v1/log/entries?start=0&end=100");
    assert_eq!(st, 200);
    assert!(
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e.get("entry").is_none())
    );

    let out = t.log_verify(&r.url, None, true);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn shred_deletes_the_share_for_good() {
    let now = Timestamp::now();
    let (cr, t, r) = TrusteeDir::serving("shredder");
    let mut s = Student::delivered(&t, &r, now);
    let student = s.device.student_id();
    let sealed_at = |db: &std::path::Path| -> Vec<u8> {
        let c =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        c.query_row(
            "SELECT sealed FROM entries WHERE student = ?1",
            [student.as_bytes().as_slice()],
            |row| row.get(0),
        )
        .unwrap()
    };
    let sealed_enrolled = sealed_at(&t.db());
    let panic = s.panic(&cr, now);
    let (req, _, _) = request(&cr, &panic, now);
    assert_eq!(r.release(&req).0, 200);
    let sealed_released = sealed_at(&t.db());
    assert_ne!(sealed_enrolled, sealed_released);

    let stop = s.device.stop(false, &cr.public(), now).unwrap();
    let (st, v) = r.shred(stop.as_bytes());
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["repeated"], false);
    let receipt = unb64(v["receipt"].as_str().unwrap());
    let parsed = Signed::<ShredReceipt>::decode(&receipt).unwrap();
    assert_eq!(parsed.body().student, s.device.student_id());
    assert_eq!(parsed.signer(), t.public.verifying_key());
    // The same stop again: the same receipt, byte for byte, nothing logged.
    let size = r.log_size();
    let (st, v) = r.shred(stop.as_bytes());
    assert_eq!((st, v["repeated"].as_bool()), (200, Some(true)));
    assert_eq!(unb64(v["receipt"].as_str().unwrap()), receipt);
    assert_eq!(r.log_size(), size);

    // A release after the shred is refused, even for a fresh panic.
    let (st, v) = r.release(&req);
    assert_eq!((st, code(&v)), (410, "shredded"), "{v}");
    // So is a late delivery of the shredded epoch.
    let (st, v) = r.deliver(&s.delivery(1));
    assert_eq!((st, code(&v)), (410, "shredded"), "{v}");

    // The row keeps only a tombstone.
    let c =
        rusqlite::Connection::open_with_flags(t.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let (holds, tomb): (i64, Option<i64>) = c
        .query_row(
            "SELECT holds_share, tombstone_epoch FROM entries WHERE student = ?1",
            [s.device.student_id().as_bytes().as_slice()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((holds, tomb), (0, Some(1)));
    drop(c);

    // No earlier sealed entry survives in the database file or its WAL, not
    // even a 16-byte piece of one.
    assert_no_piece_left(&t.db(), &[&sealed_enrolled, &sealed_released]);
    // And the trustee still says shredded after a restart.
    drop(r);
    let r = t.start(&[&cr], &[]);
    let (st, v) = r.release(&req);
    assert_eq!((st, code(&v)), (410, "shredded"));
}

#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let now = Timestamp::now();
    let (_cr, t, r) = TrusteeDir::serving("strict");
    let s = Student::enroll(&t.and_two_strangers(), now);
    let delivery = s.delivery(1);
    let before = r.log_size();

    let cases: Vec<(&str, (u16, serde_json::Value), u16, &str)> = vec![
        (
            "not JSON",
            r.post_raw("/v1/shares", "application/json", b"{not json".to_vec()),
            400,
            "bad_json",
        ),
        (
            "wrong content type",
            r.post_raw(
                "/v1/shares",
                "text/plain",
                serde_json::to_vec(&json!({ "delivery": b64(&delivery) })).unwrap(),
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            r.post_raw("/v1/releases", "", b"{}".to_vec()),
            415,
            "unsupported_media_type",
        ),
        (
            "huge body",
            r.post_raw(
                "/v1/shares",
                "application/json",
                serde_json::to_vec(&json!({ "delivery": "A".repeat(200_000) })).unwrap(),
            ),
            413,
            "too_large",
        ),
        (
            "unknown field",
            r.post(
                "/v1/shares",
                json!({ "delivery": b64(&delivery), "force": true }),
            ),
            400,
            "bad_json",
        ),
        (
            "missing field",
            r.post("/v1/shares", json!({})),
            400,
            "bad_json",
        ),
        (
            "not base64",
            r.post("/v1/shares", json!({ "delivery": "%%%" })),
            400,
            "bad_base64",
        ),
        (
            "wrong version tag",
            r.deliver(&{
                let mut d = delivery.clone();
                let tag = b"sosvault/share-delivery/v1";
                let at = d.windows(tag.len()).position(|w| w == tag).unwrap();
                d[at + tag.len() - 1] = b'9';
                d
            }),
            400,
            "malformed",
        ),
        (
            "a share delivery sent as a stop",
            r.shred(&delivery),
            400,
            "malformed",
        ),
        (
            "a share delivery sent as a release request",
            r.post("/v1/releases", json!({ "request": b64(&delivery) })),
            400,
            "malformed",
        ),
        (
            "truncated delivery",
            r.deliver(&delivery[..delivery.len() - 5]),
            400,
            "malformed",
        ),
        (
            "bad query string",
            r.get("/v1/log/entries?start=x&end=1"),
            400,
            "bad_query",
        ),
        (
            "proof beyond the log",
            r.get("/v1/log/proof/inclusion?index=0&size=5"),
            400,
            "bad_range",
        ),
    ];
    for (what, (st, v), status, code_) in cases {
        assert_eq!((st, code(&v)), (status, code_), "{what}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    assert_eq!(r.log_size(), before, "bad input must not reach the log");
    // Nothing was written: no entry row for the student.
    let c =
        rusqlite::Connection::open_with_flags(t.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let rows: i64 = c
        .query_row("SELECT COUNT(*) FROM entries", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 0);
    drop(c);
    // The good delivery still works afterwards.
    assert_eq!(r.deliver(&delivery).0, 200);
    assert_eq!(r.log_size(), before + 1);
}

#[test]
fn a_stalled_body_times_out_with_a_json_error() {
    use std::io::{Read, Write};
    let cr = ControlRoomKey::generate();
    let t = TrusteeDir::init("slow");
    let r = t.start(
        &[&cr],
        &[("SOSVAULT_TRUSTEE_REQUEST_TIMEOUT_SECS", "1".into())],
    );
    let addr = r.url.strip_prefix("http://").unwrap();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    // Headers promise 100 bytes of body; none ever come.
    conn.write_all(
        format!(
            "POST /v1/shares HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // Read until the whole JSON body is in (the server keeps the connection open).
    while !answer.ends_with(b"}") {
        let n = conn.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""error":"timeout""#), "{text}");
    // A wrong method gets the JSON shape too.
    let (st, v) = r.get("/v1/shares");
    assert_eq!((st, code(&v)), (405, "method_not_allowed"));
}

#[test]
fn the_store_refuses_a_wrong_master_key_and_takes_the_key_from_the_environment() {
    let cr = ControlRoomKey::generate();
    let t = TrusteeDir::init("keys");
    let now = Timestamp::now();
    let s = Student::enroll(&t.and_two_strangers(), now);
    let r = t.start(&[&cr], &[]);
    assert_eq!(r.deliver(&s.delivery(1)).0, 200);
    r.stop();
    // A graceful stop lets the writer thread close the store: SQLite folds
    // the WAL into the database file and removes it.
    let wal = std::path::PathBuf::from(format!("{}-wal", t.db().display()));
    assert!(
        !wal.exists(),
        "the WAL is left behind after a graceful stop"
    );
    let master_hex = std::fs::read_to_string(t.dir().join("master.key")).unwrap();
    // A wrong key in the environment (which wins over the file): refused at startup.
    let mut serve = t.serve_command();
    let out = serve.env("SOSVAULT_TRUSTEE_MASTER_KEY", "11".repeat(32));
    let out = out.output().unwrap();
    let stderr = refused_the_master_key(&out);
    assert!(
        !stderr.contains(&"11".repeat(32)),
        "the key must not be echoed"
    );
    // The right key from the environment, with the key file gone: the share is still held.
    std::fs::remove_file(t.dir().join("master.key")).unwrap();
    let r = t.start(
        &[&cr],
        &[("SOSVAULT_TRUSTEE_MASTER_KEY", master_hex.trim().to_owned())],
    );
    let (st, v) = r.deliver(&s.delivery(1));
    assert_eq!((st, v["repeated"].as_bool()), (200, Some(true)), "{v}");
    // init refuses to overwrite a trustee.
    let out = std::process::Command::new(BIN)
        .args(["init", "--dir"])
        .arg(t.dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    // Key files and the store are private.
    use std::os::unix::fs::PermissionsExt;
    for f in ["trustee.key", "trustee.db", "trustee.db-wal"] {
        let mode = std::fs::metadata(t.dir().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
}

/// An answer given before the body was read (413, 415) says `Connection:
/// close`, so a pooling client never sends its next request on a connection
/// the service is closing. Without the header the request right after a 413
/// failed about one time in six ("connection closed before message
/// completed"); 40 rounds make that near certain to show.
#[test]
fn an_answer_before_the_body_is_read_closes_the_connection_and_the_next_request_goes_through() {
    let t = TrusteeDir::init("keep-alive");
    let r = t.start(&[&ControlRoomKey::generate()], &[]);
    let huge = serde_json::to_vec(&json!({ "delivery": "A".repeat(200_000) })).unwrap();
    for round in 0..40 {
        let resp = r
            .http
            .post(format!("{}/v1/shares", r.url))
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .unwrap_or_else(|e| panic!("round {round}: the huge body was not answered: {e}"));
        assert_413_closes(round, resp.status(), resp.headers());
        let resp = r
            .http
            .post(format!("{}/v1/shares", r.url))
            .header("content-type", "text/plain")
            .body(b"{}".to_vec())
            .send()
            .unwrap_or_else(|e| panic!("round {round}: the request after a 413 failed: {e}"));
        assert_eq!(resp.status().as_u16(), 415);
        let resp = r
            .http
            .get(format!("{}/v1/health", r.url))
            .send()
            .unwrap_or_else(|e| panic!("round {round}: the request after a 415 failed: {e}"));
        assert_eq!(resp.status().as_u16(), 200);
        // A request whose body was read keeps its connection.
        assert!(resp.headers().get("connection").is_none());
    }
}

/// A cancel the control room forwards revokes the panic at this trustee for
/// good: a release of it is refused `cancelled` (also to a fresh incident key,
/// also after a restart), every step is on the log, the same cancel again gets
/// the same receipt, and bad cancels get a clear 4xx and change nothing.
#[test]
fn a_forwarded_cancel_revokes_the_panic_and_is_logged() {
    let now = Timestamp::now();
    let (cr, t, r) = TrusteeDir::serving("revoker");
    let mut s = Student::delivered(&t, &r, now);
    let panic = s.panic(&cr, now);
    let cancel = s
        .device
        .cancel(panic.hash(), false, &cr.public(), now)
        .unwrap();

    // Bad cancels first: each a clear 4xx, nothing in the log.
    let before = r.log_size();
    let mut forged = cancel.as_bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    for (bytes, status) in [(b"nope".to_vec(), 400), (forged, 400)] {
        let (st, v) = r.cancel(&bytes);
        assert_eq!((st, code(&v)), (status, "malformed"));
    }
    assert_eq!(
        r.post("/v1/cancels", json!({ "cancel": "%%" })).0,
        400,
        "not base64"
    );
    assert_eq!(r.post("/v1/cancels", json!({})).0, 400, "missing field");
    assert_eq!(r.log_size(), before);

    // A cancel from a student this trustee does not hold: refused and logged.
    let mut stranger = Student::enroll(&[stranger(), t.public.clone(), stranger()], now);
    let stranger_panic = stranger.panic(&cr, now);
    let foreign = stranger
        .device
        .cancel(stranger_panic.hash(), false, &cr.public(), now)
        .unwrap();
    let (st, v) = r.cancel(foreign.as_bytes());
    assert_eq!((st, code(&v)), (404, "unknown_student"));

    let (st, v) = r.cancel(cancel.as_bytes());
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["repeated"], false);
    let receipt = Signed::<CancelReceipt>::decode(&unb64(v["receipt"].as_str().unwrap())).unwrap();
    assert_eq!(receipt.signer(), t.public.verifying_key());
    assert_eq!(receipt.body().cancel, cancel.hash());
    let (st, again) = r.cancel(cancel.as_bytes());
    assert_eq!((st, again["repeated"].as_bool()), (200, Some(true)));
    assert_eq!(again["receipt"], v["receipt"]);

    let (req, _, _) = request(&cr, &panic, now);
    let (st, v) = r.release(&req);
    assert_eq!((st, code(&v)), (409, "cancelled"));
    // Still so after a restart, to yet another incident key.
    r.stop();
    let r = t.start(&[&cr], &[]);
    let (req, _, _) = request(&cr, &panic, Timestamp::now());
    let (st, v) = r.release(&req);
    assert_eq!((st, code(&v)), (409, "cancelled"));

    let entries = r.entries();
    let student = s.device.student_id();
    let cancelled = entries
        .iter()
        .filter(|e| matches!(e, LogEntry::Cancelled { student: who, cancel: h, .. } if *who == student && *h == cancel.hash()))
        .count();
    assert_eq!(
        cancelled, 1,
        "one entry for the cancel, none for its repeat"
    );
    let refused: Vec<u16> = entries.iter().filter_map(refusal).collect();
    assert_eq!(
        refused,
        [401, 212, 212],
        "unknown student, then cancelled twice"
    );
}

/// A check-in timer at a trustee: the timed panic is refused before its
/// end; a check-in in safety revokes it; a duress check-in (the same
/// receipt, the same entry in the student's own log) lets it be released
/// at once, and what follows is kept from the student's own query, though
/// not from the log (its leaf is salted, so no one who knows the rest of it
/// finds it among the public leaves).
#[test]
fn a_duress_check_in_releases_at_once_and_the_phone_sees_only_a_check_in() {
    let now = Timestamp::now();
    let (cr, t, r) = TrusteeDir::serving("timekeeper");
    let mut calm = Student::delivered(&t, &r, now);
    let mut forced = Student::delivered(&t, &r, now);
    let calm_timer = calm.timer(&cr, now, 1200);
    let forced_timer = forced.timer(&cr, now, 1200);

    // Before the timer's end: too early (a retry may succeed later), logged.
    let (req, _, _) = request(&cr, &forced_timer, now);
    let (st, v) = r.release(&req);
    assert_eq!((st, code(&v)), (409, "too_early"), "{v}");

    let calm_in = calm
        .device
        .check_in(calm_timer.hash(), false, &cr.public(), now)
        .unwrap();
    let forced_in = forced
        .device
        .check_in(forced_timer.hash(), true, &cr.public(), now)
        .unwrap();
    // Both answered alike: a receipt naming the check-in and its counter.
    for (check_in, who) in [(&calm_in, &calm), (&forced_in, &forced)] {
        let (st, v) = r.cancel(check_in.as_bytes());
        assert_eq!((st, v["repeated"].as_bool()), (200, Some(false)), "{v}");
        let receipt =
            Signed::<CancelReceipt>::decode(&unb64(v["receipt"].as_str().unwrap())).unwrap();
        assert_eq!(receipt.body().cancel, check_in.hash());
        assert_eq!(receipt.body().counter, check_in.body().counter);
        assert_eq!(receipt.body().student, who.device.student_id());
    }

    // In safety: revoked. Under duress: released now, eighteen minutes early.
    let (req, _, _) = request(&cr, &calm_timer, Timestamp::now());
    let (st, v) = r.release(&req);
    assert_eq!((st, code(&v)), (409, "cancelled"));
    let (req, _, _) = request(&cr, &forced_timer, Timestamp::now());
    let (st, v) = r.release(&req);
    assert_eq!(st, 200, "{v}");

    // The phones' own queries: the calm one sees its check-in and the
    // refused release after it; the forced one sees the too-early refusal
    // and its check-in, and nothing after.
    let kinds =
        |s: &Student| -> Vec<&'static str> { s.mine(&t, &r).iter().map(|e| e.kind()).collect() };
    assert_eq!(kinds(&calm), ["share-accepted", "checked-in", "refused"]);
    assert_eq!(kinds(&forced), ["share-accepted", "refused", "checked-in"]);
    // For good: a later stop of the forced student is not shown either.
    let stop = forced
        .device
        .stop(false, &cr.public(), Timestamp::now())
        .unwrap();
    assert_eq!(r.shred(stop.as_bytes()).0, 200);
    assert_eq!(kinds(&forced), ["share-accepted", "refused", "checked-in"]);
    // Even after a restart.
    r.stop();
    let r = t.start(&[&cr], &[]);
    let kinds =
        |s: &Student| -> Vec<&'static str> { s.mine(&t, &r).iter().map(|e| e.kind()).collect() };
    assert_eq!(kinds(&forced), ["share-accepted", "refused", "checked-in"]);

    // The log itself keeps all of it, for auditors: the release is there,
    // salted; rebuilt from everything but the salt, it matches no leaf.
    let entries = r.entries();
    let student = forced.device.student_id();
    let release = entries
        .iter()
        .find(|e| matches!(e, LogEntry::Released { student: who, .. } if *who == student))
        .unwrap();
    let LogEntry::Released { salt: Some(_), .. } = release else {
        panic!("a release's entry is salted: {release:?}");
    };
    let LogEntry::Released {
        epoch,
        counter,
        panic,
        incident,
        repeat,
        at,
        ..
    } = release.clone()
    else {
        unreachable!()
    };
    let guess = |salt| {
        LogEntry::Released {
            student,
            epoch,
            counter,
            panic,
            incident,
            repeat,
            salt,
            at,
        }
        .leaf_hash()
    };
    let (_, v) = r.get(&format!("/v1/log/entries?start=0&end={}", entries.len()));
    let public: Vec<Vec<u8>> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| unb64(e["leaf_hash"].as_str().unwrap()))
        .collect();
    assert!(public.contains(&release.leaf_hash().to_vec()));
    assert!(!public.contains(&guess(None).to_vec()));
    assert!(!public.contains(&guess(Some([0; 16])).to_vec()));
}

/// A log entry's refusal code, if it is a refusal.
fn refusal(e: &LogEntry) -> Option<u16> {
    match e {
        LogEntry::Refused { code, .. } => Some(*code),
        _ => None,
    }
}

/// A re-enrollment is staged at the trustee: after the device committed
/// epoch 1, the share of epoch 2 is kept beside it, a panic for epoch 1 still
/// releases; the device's commit of epoch 2 drops the older share, and no
/// sealed entry that held it survives in the database or its WAL.
#[test]
fn a_committed_share_is_kept_through_a_reenrollment_until_the_next_commit() {
    let now = Timestamp::now();
    let (cr, t, r) = TrusteeDir::serving("stager");
    let peers = t.and_two_strangers();
    let mut s = Student::enroll(&peers, now);
    let first = s.enrollment.package.record.clone();
    assert_eq!(r.deliver(&s.delivery(1)).0, 200);
    // The commit of epoch 1 (as `Device::confirm_enrollment` makes it).
    let key = s.key();
    let commit = |epoch: u32, record: &Signed<sosvault::EnrollmentRecord>| {
        Signed::sign(
            sosvault::EnrollmentCommit {
                epoch,
                record: record.hash(),
                issued_at: now,
            },
            &key,
        )
    };
    let (st, v) = r.commit(commit(1, &first).as_bytes());
    assert_eq!((st, v["changed"].as_bool()), (200, Some(true)), "{v}");
    let (st, v) = r.commit(commit(1, &first).as_bytes());
    assert_eq!((st, v["changed"].as_bool()), (200, Some(false)), "a repeat");
    let student = s.device.student_id();
    let staged_blob = |db: &std::path::Path| sealed_entry(db, &student);

    // Epoch 2 arrives; epoch 1 stays answerable.
    let second = s.device.reenroll(b"two", now).unwrap().package;
    let d = second.delivery(1).unwrap();
    assert_eq!(r.deliver(&d.to_bytes()).0, 200);
    let staged = staged_blob(&t.db());
    let old_panic = {
        let here = sosvault::Location::new(25.14, 75.83, 10, now).unwrap();
        // The device's state moved to epoch 2 (reenroll is immediate); sign an
        // epoch-1 panic as a device still on epoch 1 would.
        let p = sosvault::PanicEvent {
            epoch: 1,
            counter: 10,
            issued_at: now,
            category: sosvault::Category::Police,
            sealed_location: cr.public().seal(&here.to_bytes()).unwrap(),
        };
        Signed::sign(p, &key)
    };
    let (req, _, _) = request(&cr, &old_panic, now);
    let (st, v) = r.release(&req);
    assert_eq!(st, 200, "the committed epoch still releases: {v}");
    let released = staged_blob(&t.db());

    // A commit naming a record this trustee never held: refused, logged.
    let (st, v) = r.commit(commit(3, &first).as_bytes());
    assert_eq!((st, code(&v)), (409, "unknown_record"));
    // The device commits epoch 2: the older share goes.
    let (st, v) = r.commit(commit(2, &second.record).as_bytes());
    assert_eq!((st, v["changed"].as_bool()), (200, Some(true)), "{v}");
    let (req, _, _) = request(&cr, &old_panic, now);
    let (st, v) = r.release(&req);
    assert_eq!((st, code(&v)), (409, "wrong_epoch"), "{v}");
    // No sealed entry that held the older share is left in the files.
    for suffix in ["", "-wal"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", t.db().display()));
        if let Ok(bytes) = std::fs::read(&p) {
            for blob in [&staged, &released] {
                for piece in blob.chunks(16).filter(|c| c.len() == 16) {
                    assert!(
                        !contains(&bytes, piece),
                        "{} holds a staged entry",
                        p.display()
                    );
                }
            }
        }
    }
    let kinds: Vec<&str> = r.entries().iter().map(LogEntry::kind).collect();
    assert_eq!(
        kinds,
        [
            "share-accepted",
            "committed",
            "share-accepted",
            "released",
            "refused",
            "committed",
            "refused"
        ]
    );
}
