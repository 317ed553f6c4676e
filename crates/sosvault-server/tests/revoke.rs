//! End to end: a cancel reaches every trustee (also a duress cancel, also
//! through an outage and a restart), after which the control room's own key
//! gets nothing for the cancelled panic; and a restart never extends the
//! access window of a released profile past the one its first opening began.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use common::stored::{P, V};
use common::*;
use serde_json::Value;
use sosvault::log::LogEntry;
use sosvault::{
    Cancel, CancelReceipt, Category, Device, IncidentId, IncidentKey, PanicEvent, Signed,
    StudentId, Timestamp,
};

fn unb64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

/// Checks every receipt of a cancel's answer: signed by one of the
/// service's trustees (a different one each), for this student, this cancel
/// and its counter. Returns the receipts' bytes, sorted.
fn check_receipts(
    c: &Cluster,
    answer: &Value,
    student: StudentId,
    cancel: &Signed<Cancel>,
) -> Vec<Vec<u8>> {
    let mut signers = BTreeSet::new();
    let mut out = Vec::new();
    for r in answer["receipts"].as_array().unwrap() {
        let bytes = unb64(r);
        let receipt = Signed::<CancelReceipt>::decode(&bytes).unwrap();
        let trustee = c
            .info
            .trustees
            .iter()
            .find(|t| t.verifying_key().as_bytes() == receipt.signer().as_bytes())
            .expect("a receipt signed by one of the service's trustees");
        assert!(
            signers.insert(trustee.id().to_hex()),
            "one receipt per trustee"
        );
        let b = receipt.body();
        assert_eq!(b.student, student);
        assert_eq!(b.cancel, cancel.hash());
        assert_eq!(b.counter, cancel.body().counter);
        out.push(bytes);
    }
    out.sort();
    out
}

/// The receipts the service stored for a cancel, sorted (refusals, stored
/// empty, left out).
fn stored_receipts(c: &Cluster, cancel: &Signed<Cancel>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = c
        .stored
        .rows(
            "SELECT receipt FROM cancel_receipts WHERE cancel_hash = ?1",
            vec![P::Blob(cancel.hash().as_bytes().to_vec())],
        )
        .iter()
        .map(|r| r[0].blob().unwrap())
        .collect();
    out.retain(|r| !r.is_empty());
    out.sort();
    out
}

fn is_cancel_of(e: &LogEntry, student: StudentId, cancel: &Signed<Cancel>) -> bool {
    matches!(e, LogEntry::Cancelled { student: s, counter, cancel: h, .. }
        if *s == student && *counter == cancel.body().counter && *h == cancel.hash())
}

/// What a thief of the control room's data directory tries: a release
/// request for the panic, signed with the control room's key, bound to
/// `incident` and `key` (the incident's own, from a copy of the directory
/// taken while it was open: a retry of a release already given; or fresh
/// ones), sent straight to each of `trustees`. Each must refuse it as
/// `cancelled`, and log the refusal.
async fn thief_gets_nothing(
    c: &Cluster,
    trustees: &[&TrusteeProc],
    panic: &Signed<PanicEvent>,
    student: StudentId,
    incident: IncidentId,
    key: &IncidentKey,
) {
    let request = c
        .control_room_key()
        .release_request(panic, incident, key, Timestamp::now());
    for t in trustees {
        let err = t
            .ask_release(&request)
            .await
            .expect_err("a trustee released a share for a cancelled panic");
        assert_eq!((err.status, err.code.as_str()), (409, "cancelled"), "{err}");
        let log = t.log().await;
        match log.last() {
            Some(LogEntry::Refused {
                student: Some(s),
                code,
                request_hash,
                ..
            }) => {
                assert_eq!(*s, student);
                assert_eq!(*code, 212, "the refusal is logged as `cancelled`");
                assert_eq!(*request_hash, request.hash());
            }
            other => panic!("the refusal is not on the trustee's log: {other:?}"),
        }
    }
}

/// [`thief_gets_nothing`] at `trustees`, with a fresh incident and key.
async fn stolen_key_gets_nothing(
    c: &Cluster,
    trustees: &[&TrusteeProc],
    panic: &Signed<PanicEvent>,
    student: StudentId,
) {
    let (incident, key) = (IncidentId::random(), IncidentKey::generate());
    thief_gets_nothing(c, trustees, panic, student, incident, &key).await;
}

/// Asserts each of `trustees`' logs ends with `cancel` of `student`.
async fn logs_end_with(trustees: &[&TrusteeProc], student: StudentId, cancel: &Signed<Cancel>) {
    for t in trustees {
        let log = t.log().await;
        assert!(
            log.last().is_some_and(|e| is_cancel_of(e, student, cancel)),
            "{}'s log ends with the cancel: {:?}",
            t.url(),
            log.last()
        );
    }
}

/// An open incident's key, as a copy of the data directory holds it (sealed
/// under `master.key`, next to it), and its sealed bytes.
fn incident_key_from_a_copy(c: &Cluster, id: &str) -> (IncidentKey, Vec<u8>) {
    let sealed = c
        .sealed_incident_key(id)
        .expect("an open incident's key is stored");
    let master = std::fs::read(c.server.dir.join("master.key")).unwrap();
    let master = sosvault_server::sealing::KeySealer::from_key_file(&master).unwrap();
    let incident = sosvault::IncidentId::from_hex(id).unwrap();
    let key = IncidentKey::from_secret_bytes(&master.open(&incident, &sealed).unwrap()).unwrap();
    (key, sealed)
}

/// A device's panic, sent and claimed by the operator with session `op` (so
/// it reads the profile); waits until its profile opened. Returns the panic,
/// the incident id and the `profile_available` event.
async fn panic_and_open(
    c: &Cluster,
    op: &str,
    ops: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
    device: &mut Device,
) -> (Signed<PanicEvent>, String, Value) {
    let panic = c.talwandi_panic(device, Category::Police);
    let id = c.client.panic(&panic).await.unwrap();
    c.claim(op, &id).await;
    let ev = next_event(ops, 20, is("profile_available", &id)).await;
    (panic, id, ev)
}

fn keys_of(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_every_trustee_and_the_control_rooms_own_key_then_gets_nothing() {
    let (c, op, mut ops) = Cluster::watched(Options::default()).await;
    let all: Vec<&TrusteeProc> = c.trustees.iter().collect();

    // "I am safe", after the profile opened.
    let mut device = c.student("Meera Iyer").await;
    let student = device.student_id();
    let (panic, id, _) = panic_and_open(&c, &op, &mut ops, &mut device).await;
    // A thief copies the data directory while the incident is open.
    let (copied_key, sealed_key) = incident_key_from_a_copy(&c, &id);
    let cancel = c.signed_cancel(&mut device, panic.hash(), false);
    let answer = c.client.cancel(&cancel).await.unwrap();
    assert_eq!(answer["status"], "received");
    assert_eq!(answer["pending"], 0, "{answer}");
    let receipts = check_receipts(&c, &answer, student, &cancel);
    assert_eq!(
        receipts.len(),
        3,
        "a signed cancel receipt from every trustee"
    );
    assert_eq!(
        stored_receipts(&c, &cancel),
        receipts,
        "the receipts are stored"
    );
    logs_end_with(&all, student, &cancel).await;
    let d = c.incident(&op, &id).await;
    assert_eq!(d["status"], "cancelled");
    assert!(
        !on_disk(&c, &sealed_key[sealed_key.len() - 32..]),
        "a later copy of the data directory holds no incident key"
    );
    // The phone retries: the same receipts, nothing forwarded again.
    let again = c.client.cancel(&cancel).await.unwrap();
    assert_eq!(again["pending"], 0);
    assert_eq!(check_receipts(&c, &again, student, &cancel), receipts);
    for t in &c.trustees {
        let cancels = t
            .log()
            .await
            .iter()
            .filter(|e| is_cancel_of(e, student, &cancel))
            .count();
        assert_eq!(cancels, 1, "the cancel was taken once");
    }
    // The thief asks again for the very releases the trustees gave (inside
    // their retry window): refused; and with a fresh incident key: refused.
    let incident = IncidentId::from_hex(&id).unwrap();
    thief_gets_nothing(&c, &all, &panic, student, incident, &copied_key).await;
    stolen_key_gets_nothing(&c, &all, &panic, student).await;

    // A duress cancel: forwarded the same way, answered with the same
    // fields; the control room escalates, and still reads what it holds.
    let mut coerced = c.student("Farah Khan").await;
    let coerced_id = coerced.student_id();
    let (duress_panic, duress_id, _) = panic_and_open(&c, &op, &mut ops, &mut coerced).await;
    let duress = c.signed_cancel(&mut coerced, duress_panic.hash(), true);
    let duress_answer = c.client.cancel(&duress).await.unwrap();
    assert_eq!(keys_of(&duress_answer), keys_of(&answer));
    assert_eq!(duress_answer["status"], "received");
    assert_eq!(duress_answer["pending"], 0);
    let duress_receipts = check_receipts(&c, &duress_answer, coerced_id, &duress);
    assert_eq!(duress_receipts.len(), 3);
    assert_eq!(stored_receipts(&c, &duress), duress_receipts);
    logs_end_with(&all, coerced_id, &duress).await;
    let d = c.incident(&op, &duress_id).await;
    assert_eq!(d["status"], "open");
    assert!(has_flag(&d, "duress"));
    assert_eq!(
        d["profile"]["name"], "Farah Khan",
        "the escalation goes on with what the control room holds"
    );
    // Nothing will ask the trustees for that panic again: its key is gone.
    assert!(
        c.sealed_incident_key(&duress_id).is_none(),
        "the duress-cancelled incident's key is forgotten"
    );
    stolen_key_gets_nothing(&c, &all, &duress_panic, coerced_id).await;

    // The cancel's answer is documented.
    let doc = c.client.get("/openapi.json", None).await.unwrap();
    let schema = &doc["components"]["schemas"]["CancelReceived"]["properties"];
    for field in ["status", "receipts", "pending"] {
        assert!(schema[field].is_object(), "{field} is documented: {schema}");
    }
    assert_eq!(
        doc["paths"]["/v1/cancel"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/CancelReceived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_a_trustee_that_was_down_after_the_service_restarted() {
    let (mut c, op, mut ops) = Cluster::watched(Options::default()).await;
    let mut device = c.student("Kabir Singh").await;
    let student = device.student_id();

    // Trustee 3 goes down; two shares still open the profile.
    c.trustees[2].kill();
    let (panic, _, _) = panic_and_open(&c, &op, &mut ops, &mut device).await;
    let cancel = c.signed_cancel(&mut device, panic.hash(), false);
    let answer = c.client.cancel(&cancel).await.unwrap();
    assert_eq!(answer["pending"], 1, "{answer}");
    assert_eq!(check_receipts(&c, &answer, student, &cancel).len(), 2);

    // The service crashes while the trustee is still down, and comes back;
    // then the trustee comes back and gets the cancel.
    c.server.kill();
    c.server.start();
    let op = c.operator().await;
    let mut ops = c.operator_events(&op).await;
    c.trustees[2].start();
    let ev = next_event(&mut ops, 20, |e| {
        e["kind"] == "cancel_receipt" && e["detail"]["trustee"] == "trustee-3"
    })
    .await;
    assert_eq!(ev["detail"]["receipt"], true);
    assert_eq!(ev["detail"]["student"], student.to_hex());
    logs_end_with(&[&c.trustees[2]], student, &cancel).await;
    // The phone asks again: three receipts now, all stored.
    let again = c.client.cancel(&cancel).await.unwrap();
    assert_eq!(again["pending"], 0, "{again}");
    let receipts = check_receipts(&c, &again, student, &cancel);
    assert_eq!(receipts.len(), 3);
    assert_eq!(stored_receipts(&c, &cancel), receipts);
    // Trustee 3 never released for this panic (without the cancel, a
    // thief's request would get its share now), and now never will; nor
    // will the others.
    stolen_key_gets_nothing(&c, &[&c.trustees[2]], &panic, student).await;
    let all: Vec<&TrusteeProc> = c.trustees.iter().collect();
    stolen_key_gets_nothing(&c, &all, &panic, student).await;
}

/// The incident's stored access window: (first release, end).
fn stored_window(c: &Cluster, id: &str) -> (Option<u64>, Option<u64>, Option<Vec<u8>>) {
    let r = c
        .stored
        .row(
            "SELECT released_at_ms, access_until_ms, incident_key_sealed FROM incidents WHERE id = ?1",
            vec![P::Blob(hex::decode(id).unwrap())],
        )
        .unwrap();
    let ms = |v: &V| v.int().map(|v| u64::try_from(v).unwrap());
    (ms(&r[0]), ms(&r[1]), r[2].blob())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_never_extends_the_access_window_of_the_first_release() {
    let (mut c, op, mut ops) = Cluster::watched(Options::access_window_secs(12)).await;
    let mut device = c.student("Window Student").await;
    let (_, id, first) = panic_and_open(&c, &op, &mut ops, &mut device).await;
    let first_end = first["detail"]["expires_at_ms"].as_u64().unwrap();
    let (released_at, until, key) = stored_window(&c, &id);
    let released_at = released_at.expect("the first release's time is stored");
    assert_eq!(until, Some(first_end), "the window's end is stored");
    assert_eq!(first_end, released_at + 12_000);
    let sealed_key = key.expect("the incident key is kept inside the window");
    assert!(on_disk(&c, &sealed_key[sealed_key.len() - 32..]));

    // A crash inside the window. Two trustees are down when the service
    // comes back, so its renewed collection finishes only once one returns
    // (and the test is listening).
    c.server.kill();
    c.trustees[0].kill();
    c.trustees[1].kill();
    c.server.start();
    let op = c.operator().await;
    let mut ops = c.operator_events(&op).await;
    c.trustees[0].start();
    let again = next_event(&mut ops, 20, is("profile_available", &id)).await;
    assert_eq!(
        again["detail"]["expires_at_ms"].as_u64(),
        Some(first_end),
        "the profile reopens only until the first window's end, not for a new window"
    );
    let d = c.incident(&op, &id).await;
    assert_eq!(d["profile"]["name"], "Window Student");
    assert_eq!(
        stored_window(&c, &id).0,
        Some(released_at),
        "the first release's time is never moved"
    );

    // Another crash, and the service stays down past the window's end with
    // the incident key still stored. Every trustee is back (a release would
    // be given again: the trustees' retry window is 300 s).
    assert!(
        now_ms() < first_end,
        "the test machine was too slow to crash inside the window"
    );
    c.server.kill();
    c.trustees[1].start();
    assert!(stored_window(&c, &id).2.is_some());
    // Time passing, not synchronisation: the window must end while the
    // service is down.
    while now_ms() <= first_end {
        tokio::time::sleep(Duration::from_millis(
            first_end + 50 - now_ms().min(first_end),
        ))
        .await;
    }
    let before: Vec<usize> = {
        let mut v = Vec::new();
        for t in &c.trustees {
            v.push(released_count(&t.log().await));
        }
        v
    };
    c.server.start();
    // Past the window nothing is collected again: the key is gone as soon as
    // the service is up, and the profile stays closed.
    let (_, until, key) = stored_window(&c, &id);
    assert_eq!(until, Some(first_end));
    assert!(
        key.is_none(),
        "the incident key is deleted once the window ended"
    );
    assert!(
        !on_disk(&c, &sealed_key[sealed_key.len() - 32..]),
        "no copy of the sealed incident key is left in the database or its WAL"
    );
    let op = c.operator().await;
    let d = c.incident(&op, &id).await;
    assert_profile_expired(&d);
    let steps = timeline_kinds(&d);
    let last_resume = steps.iter().rposition(|s| *s == "resumed").unwrap();
    assert!(
        steps[last_resume..].contains(&"access_expired"),
        "{steps:?}"
    );
    assert!(
        !steps[last_resume..].contains(&"release"),
        "no release was asked for after the window: {steps:?}"
    );
    for (t, n) in c.trustees.iter().zip(before) {
        assert_eq!(released_count(&t.log().await), n, "no release given again");
    }
}

/// Whether `needle` is in the service's database file or its WAL.
fn on_disk(c: &Cluster, needle: &[u8]) -> bool {
    c.store_bytes().windows(needle.len()).any(|w| w == needle)
}

fn released_count(log: &[LogEntry]) -> usize {
    log.iter()
        .filter(|e| matches!(e, LogEntry::Released { .. }))
        .count()
}

fn now_ms() -> u64 {
    sosvault_server::engine::now_ms()
}
