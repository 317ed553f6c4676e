//! The panic by SMS (issue 15, `docs/BEYOND-PANIC.md` §4), with the real
//! services: a phone with no data texts its panic; the gateway hands the
//! text over; the control room opens an incident where the student is and
//! sends the team; the trustees release for it as for any panic. When the
//! phone's data comes back, the same press over HTTP joins that incident,
//! and every later message may name either twin. A press is released for
//! once: not even the holder of the control room's keys gets a second
//! release for the twin, or one after a cancel of either. Refused texts
//! change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use sosvault::sms::{self, SmsPanic, VerifiedSmsChannel};
use sosvault::status::Stage;
use sosvault::{Category, Device, PanicEvent, Signed, Timestamp};

/// The control room's number in these tests.
const NUMBER: &str = "+917440000100";

/// A cluster that takes panics by SMS; the gateway's token.
async fn sms_cluster() -> (
    Cluster,
    String,
    tokio::sync::mpsc::UnboundedReceiver<Value>,
    String,
) {
    let (c, op, ops) = Cluster::watched_with(Options::default(), |cfg| {
        cfg.sms_panic = Some(sms_panic_config());
    })
    .await;
    (c, op, ops, SMS_TOKEN.to_owned())
}

/// The phone's channel, fetched and believed under the control room the
/// phone pins.
async fn channel(c: &Cluster) -> VerifiedSmsChannel {
    c.client.sms_channel(&c.info.control_room).await.unwrap()
}

/// One press at Talwandi, now: the HTTP panic and its SMS twin.
async fn press(c: &Cluster, device: &mut Device) -> (Signed<PanicEvent>, Signed<SmsPanic>) {
    let ch = channel(c).await;
    device
        .panic_with_sms(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            &ch,
            Timestamp::now(),
        )
        .unwrap()
}

/// The gateway hands `text` over with `token`: the status and the answer.
async fn hand_over(c: &Cluster, token: Option<&str>, text: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/sms/inbound", c.server.url()))
        .json(&json!({ "text": text }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let a = Answer::of(req).await;
    (
        a.status,
        serde_json::from_str(&a.body).unwrap_or(Value::Null),
    )
}

/// `POST /v1/panic` of `panic`, read raw: the status and the answer.
async fn http_panic(c: &Cluster, panic: &Signed<PanicEvent>) -> (u16, Value) {
    let body = json!({ "panic": base64_of(panic.as_bytes()) });
    let req = reqwest::Client::new()
        .post(format!("{}/v1/panic", c.server.url()))
        .json(&body);
    let a = Answer::of(req).await;
    (a.status, serde_json::from_str(&a.body).unwrap())
}

/// `text` with its character at `at` changed to another base64 character.
fn changed(text: &str, at: usize) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A counter of the service's metrics, as operator `op` reads them.
async fn metric(c: &Cluster, op: &str, name: &str) -> u64 {
    let text = c.client.get_text_auth("/metrics", Some(op)).await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_by_sms_sends_the_team_and_opens_the_vault_and_its_http_twin_joins_it() {
    let (c, op, mut ops, token) = sms_cluster().await;
    // The phone's channel: the configured number, the control room's SMS key.
    let ch = channel(&c).await;
    assert_eq!(ch.channel().number, NUMBER);
    assert_eq!(
        ch.channel().recipient,
        c.control_room_key().sms_key().recipient()
    );
    let mut team = c.pcr_talwandi(&op).await;
    let mut asha = c.student("Asha Verma").await;
    let (http, text) = press(&c, &mut asha).await;

    // No data: the text goes by SMS, and the gateway hands it over.
    let words = sms::to_text(&text);
    assert!(words.len() <= sms::MAX_SMS_CHARS);
    let (status, answer) = hand_over(&c, Some(&token), &words).await;
    assert_eq!(
        (status, answer["new"].as_bool()),
        (202, Some(true)),
        "{answer}"
    );
    let id = answer["incident_id"].as_str().unwrap().to_owned();

    // The team is sent to where the student is (the HPKE seal opened).
    next_event(&mut team.events, 10, is("assigned", &id)).await;
    c.claim(&op, &id).await;
    let d = c
        .incident_once(&op, &mut ops, 30, &id, |d| d["profile"].is_object())
        .await;
    assert!(has_flag(&d, "sms"), "{d}");
    let at = talwandi();
    assert_eq!(
        (d["location"]["lat"].as_f64(), d["location"]["lon"].as_f64()),
        (Some(at.lat()), Some(at.lon()))
    );
    assert_eq!(d["profile"]["name"], "Asha Verma");

    // The gateway hands the same text over again: the same incident.
    let (status, again) = hand_over(&c, Some(&token), &words).await;
    assert_eq!(
        (status, again["incident_id"].as_str()),
        (202, Some(&id[..]))
    );
    assert_eq!(again["new"], false);

    // Data comes back: the phone sends the same press over HTTP. It joins
    // the incident, and the timeline says so (told to the operators).
    let (status, joined) = http_panic(&c, &http).await;
    assert_eq!(
        (status, joined["incident_id"].as_str()),
        (202, Some(&id[..]))
    );
    assert_eq!(joined["new"], false);
    next_event(&mut ops, 10, |e| {
        e["incident"] == id.as_str() && timeline_step(e, "twin")
    })
    .await;
    assert!(timeline_kinds(&c.incident(&op, &id).await).contains(&"twin"));

    // Every later message may name either twin: the phone's location
    // update under the HTTP panic's hash moves the incident...
    let moved = sosvault::Location::new(25.1460, 75.8390, 6, Timestamp::now()).unwrap();
    let update = c.signed_location(&mut asha, http.hash(), &moved);
    assert_eq!(
        c.client.location(&update).await.unwrap()["status"],
        "stored"
    );
    // ...and its status query under either hash reads the same incident.
    let mut stages = Vec::new();
    for hash in [http.hash(), text.hash()] {
        let query = asha.status_query(hash, &c.info.control_room, Timestamp::now());
        let report = c
            .client
            .incident_status(&query, &c.info.control_room)
            .await
            .unwrap();
        assert!(
            matches!(report.stage, Stage::TeamSent(_)),
            "{:?}",
            report.stage
        );
        assert!(report.released >= report.threshold, "{}", report.released);
        stages.push(report.stage);
    }
    assert_eq!(stages[0], stages[1]);

    // One press, one release: the holder of the control room's keys asks
    // for the twin the service never asked for, and no trustee that
    // released for the SMS panic gives another share.
    let codes = c.attacker_asks(&http).await;
    assert!(
        codes.iter().filter(|c| c.as_str() == "replayed").count() >= 2,
        "{codes:?}"
    );
    assert_eq!(metric(&c, &op, "sosvault_sms_panics_total").await, 2);
    assert_eq!(metric(&c, &op, "sosvault_panic_twins_total").await, 1);
    assert_eq!(metric(&c, &op, "sosvault_panics_total").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_arriving_after_its_http_twin_joins_and_a_cancel_of_either_revokes_both() {
    let (c, op, mut ops, token) = sms_cluster().await;
    let mut meera = c.student("Meera Joshi").await;
    let (http, text) = press(&c, &mut meera).await;
    let id = c.client.panic(&http).await.unwrap();
    // The SMS, sent when data seemed gone, arrives late: the same incident.
    let (status, late) = hand_over(&c, Some(&token), &sms::to_text(&text)).await;
    assert_eq!((status, late["incident_id"].as_str()), (202, Some(&id[..])));
    assert_eq!(late["new"], false);
    let d = c.incident(&op, &id).await;
    assert!(!has_flag(&d, "sms"), "opened over HTTP: {d}");
    assert!(timeline_kinds(&d).contains(&"twin"));

    // The student cancels, naming the SMS twin (the one its phone knew to
    // be sent): the incident is cancelled, and once every trustee has the
    // cancel, the holder of the control room's keys gets neither twin.
    let cancel = c.signed_cancel(&mut meera, text.hash(), false);
    let mut answer = c.client.cancel(&cancel).await.unwrap();
    assert_eq!(answer["status"], "received", "{answer}");
    while answer["pending"] != 0 {
        next_event(&mut ops, 10, |e| e["kind"] == "cancel_receipt").await;
        answer = c.client.cancel(&cancel).await.unwrap();
    }
    assert_eq!(c.incident(&op, &id).await["status"], "cancelled");
    assert_eq!(c.attacker_asks(&text).await, ["cancelled"; 3]);
    assert_eq!(c.attacker_asks(&http).await, ["cancelled"; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_text_changes_nothing() {
    let (c, op, _ops, token) = sms_cluster().await;
    let mut asha = c.student("Asha Verma").await;
    let (_, text) = press(&c, &mut asha).await;
    let words = sms::to_text(&text);
    let before = c.store_bytes();
    let refused = [
        // Not the gateway.
        (None, words.clone(), 401, "unauthorized"),
        (Some("x".repeat(40)), words.clone(), 401, "unauthorized"),
        // Not an SMS panic.
        (Some(token.clone()), "help me!!".into(), 400, "malformed"),
        (Some(token.clone()), "A".repeat(600), 400, "malformed"),
        (Some(token.clone()), " ".repeat(1025), 400, "too_long"),
        (
            Some(token.clone()),
            base64_of(c.talwandi_panic(&mut asha, Category::Police).as_bytes()),
            400,
            "malformed",
        ),
        // A changed character: the signature fails.
        (Some(token.clone()), changed(&words, 100), 400, "malformed"),
    ];
    for (tok, body, status, code) in refused {
        let (s, v) = hand_over(&c, tok.as_deref(), &body).await;
        assert_eq!((s, v["error"].as_str()), (status, Some(code)), "{body}");
    }
    // A well-signed text of a phone this service never enrolled.
    let mut stranger = Device::new(sosvault::DeviceKey::generate());
    let enrolled = stranger.enroll(
        b"{}",
        &c.info.trustees,
        2,
        sosvault::Policy::default(),
        Timestamp::now(),
    );
    assert!(enrolled.is_ok());
    let (_, theirs) = press(&c, &mut stranger).await;
    let (s, v) = hand_over(&c, Some(&token), &sms::to_text(&theirs)).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("unknown_student")));
    let body = reqwest::Client::new()
        .post(format!("{}/v1/sms/inbound", c.server.url()))
        .bearer_auth(&token)
        .json(&json!({ "text": words, "sender": "+919999999999" }));
    assert_eq!(Answer::of(body).await.status, 400, "unknown fields refused");
    assert_eq!(c.store_bytes(), before, "a refused text wrote something");
    let list = c
        .client
        .get("/v1/operator/incidents", Some(&op))
        .await
        .unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}
