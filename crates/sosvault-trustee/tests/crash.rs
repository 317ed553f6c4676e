//! The crash test: SIGKILL the trustee in the middle of a stream of
//! enrollments and shreds, restart it on the same store, and check that every
//! acknowledged write is there, that no state is half-written, and that the
//! log verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::mpsc;

use common::*;
use serde_json::json;
use sosvault::log::LogEntry;
use sosvault::{ControlRoomKey, StudentId, Timestamp, TrusteeKey};

#[derive(Clone, Copy, Debug)]
enum Op {
    Enroll(usize),
    Shred(usize),
}

/// Kill after this many acknowledged writes.
const KILL_AFTER: usize = 60;
const STUDENTS: usize = 240;
/// Enough writers that the trustee commits several writes per batch, so the
/// kill lands inside a batch's transaction with more than one write in it.
const WRITERS: usize = 12;

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_write_and_leaves_no_half_state() {
    let now = Timestamp::now();
    let cr = ControlRoomKey::generate();
    let t = TrusteeDir::init("crash");
    let mut running = t.start(&[&cr], &[]);
    let url = running.url.clone();

    // Everything signed up front, so the stream is only HTTP and the store.
    let others = [
        TrusteeKey::generate().public(),
        TrusteeKey::generate().public(),
    ];
    let publics = [t.public.clone(), others[0].clone(), others[1].clone()];
    let mut deliveries = Vec::new();
    let mut stops = Vec::new();
    let mut students = Vec::new();
    for _ in 0..STUDENTS {
        let mut s = Student::enroll(&publics, now);
        deliveries.push(s.delivery(1));
        stops.push(
            s.device
                .stop(false, &cr.public(), now)
                .unwrap()
                .as_bytes()
                .to_vec(),
        );
        students.push(s.device.student_id());
    }
    // Twelve writers, each with its own students, so several writes are in
    // flight (a batch of them, likely, inside its commit) when the kill lands.
    // Each writer: E(a) E(b) S(a) E(c) E(d) S(c) ...
    let mut plans: Vec<Vec<Op>> = vec![Vec::new(); WRITERS];
    for (w, plan) in plans.iter_mut().enumerate() {
        let mine: Vec<usize> = (w..STUDENTS).step_by(WRITERS).collect();
        for (j, &i) in mine.iter().enumerate() {
            plan.push(Op::Enroll(i));
            if j % 2 == 1 {
                plan.push(Op::Shred(mine[j - 1]));
            }
        }
    }
    let total_ops: usize = plans.iter().map(Vec::len).sum();

    let (tx, rx) = mpsc::channel::<()>();
    let writers: Vec<_> = plans
        .into_iter()
        .map(|plan| {
            let (tx, url) = (tx.clone(), url.clone());
            let (d2, s2) = (deliveries.clone(), stops.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                // Every acknowledged write, with the receipt it got; every attempted op.
                let mut acked: Vec<(Op, Vec<u8>)> = Vec::new();
                let mut attempted: Vec<Op> = Vec::new();
                for op in plan {
                    let (path, body) = match op {
                        Op::Enroll(i) => ("/v1/shares", json!({ "delivery": b64(&d2[i]) })),
                        Op::Shred(i) => ("/v1/shreds", json!({ "stop": b64(&s2[i]) })),
                    };
                    attempted.push(op);
                    let resp = match http.post(format!("{url}{path}")).json(&body).send() {
                        Ok(r) => r,
                        Err(_) => break, // the trustee is gone
                    };
                    let status = resp.status().as_u16();
                    let Ok(v) = resp.json::<serde_json::Value>() else {
                        break;
                    };
                    assert_eq!(status, 200, "{v}");
                    acked.push((op, unb64(v["receipt"].as_str().unwrap())));
                    let _ = tx.send(());
                }
                (acked, attempted)
            })
        })
        .collect();
    drop(tx);
    for _ in 0..KILL_AFTER {
        rx.recv().unwrap();
    }
    running.process.kill(); // SIGKILL
    let mut acked = Vec::new();
    let mut attempted = Vec::new();
    for w in writers {
        let (a, t) = w.join().unwrap();
        acked.extend(a);
        attempted.extend(t);
    }
    assert!(acked.len() >= KILL_AFTER);
    assert!(
        attempted.len() < total_ops,
        "the stream finished before the kill; make it longer"
    );

    // Restart on the same store.
    let r = t.start(&[&cr], &[]);
    let entries = r.entries();
    // The students of the entries of one kind.
    let logged = |kind: &str| -> HashSet<StudentId> {
        let of_kind = entries.iter().filter(|e| e.kind() == kind);
        of_kind.filter_map(LogEntry::student).collect()
    };
    let (accepted, shredded) = (logged("share-accepted"), logged("shredded"));
    assert_eq!(
        entries.len(),
        accepted.len() + shredded.len(),
        "only acceptances and shreds were sent, each logged once"
    );

    // Every acknowledged write is there, and answers the same on a retry.
    for (op, receipt) in &acked {
        match *op {
            Op::Enroll(i) => {
                assert!(accepted.contains(&students[i]), "acked enrollment {i} lost");
                if !shredded.contains(&students[i]) {
                    let (st, v) = r.deliver(&deliveries[i]);
                    assert_eq!(st, 200, "{v}");
                    assert_eq!(v["repeated"], true);
                    assert_eq!(&unb64(v["receipt"].as_str().unwrap()), receipt);
                }
            }
            Op::Shred(i) => {
                assert!(shredded.contains(&students[i]), "acked shred {i} lost");
                let (st, v) = r.shred(&stops[i]);
                assert_eq!(st, 200, "{v}");
                assert_eq!(v["repeated"], true);
                assert_eq!(&unb64(v["receipt"].as_str().unwrap()), receipt);
            }
        }
    }
    // Nothing beyond what was attempted.
    let attempted_students: HashSet<StudentId> = attempted
        .iter()
        .map(|op| match op {
            Op::Enroll(i) | Op::Shred(i) => students[*i],
        })
        .collect();
    assert!(accepted.is_subset(&attempted_students));
    assert!(shredded.is_subset(&attempted_students));

    // No half state: the entries table and the log agree, student by student.
    let c =
        rusqlite::Connection::open_with_flags(t.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = c
        .prepare("SELECT student, holds_share, tombstone_epoch FROM entries")
        .unwrap();
    let rows: Vec<(Vec<u8>, bool, Option<i64>)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let rows_students: HashSet<StudentId> = rows
        .iter()
        .map(|(s, _, _)| StudentId::from_bytes(s.as_slice().try_into().unwrap()))
        .collect();
    assert_eq!(rows_students, &accepted | &shredded);
    for (s, holds, tomb) in &rows {
        let s = StudentId::from_bytes(s.as_slice().try_into().unwrap());
        assert_eq!(
            *holds,
            accepted.contains(&s) && !shredded.contains(&s),
            "{s}"
        );
        assert_eq!(tomb.is_some(), shredded.contains(&s), "{s}");
    }
    drop(stmt);
    drop(c);

    let out = t.log_verify(&r.url, None, true);
    assert!(
        out.status.success(),
        "log verify after the crash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "crash test: {} acknowledged of {} attempted before SIGKILL, log {} entries",
        acked.len(),
        attempted.len(),
        entries.len()
    );
}
