//! Silent chat (issue 15, `docs/BEYOND-PANIC.md` §5), with the real
//! services: during an incident the student and the control room exchange
//! short texts, each sealed to both ends (the incident's chat key and the
//! device's). The phone opens the chat with its first signed query; the
//! operator writes, the team reads. The texts are readable by those two ends
//! only: not by another phone, not in the service's database or log, and
//! not at all once the incident closes (the chat key and the texts go) or
//! the student stops. After a duress cancel the phone reads the chat as
//! closed and the control room can no longer write to it. Refused messages
//! change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use sosvault::chat::{ChatFrom, ChatKey, ChatLog, ChatMessage, ChatQuery, ChatRecipient};
use sosvault::{Category, Device, DeviceKey, MessageHash, Signed, Timestamp, TrusteeId};

/// What the operator writes, and what the student answers.
const ASK: &str = "Are you able to talk? Answer here; a team is on its way.";
const ANSWER: &str = "Cannot talk. He is next to me, blue jacket, near the gate.";

/// The phone asks for the chat from text `from` on; the log, believed
/// under the control room's key the phone pins.
async fn read(c: &Cluster, device: &Device, panic: MessageHash, from: u32) -> ChatLog {
    let query = device.chat_query(panic, &c.info.control_room, from, Timestamp::now());
    c.client
        .chat_log(&query, &c.info.control_room)
        .await
        .unwrap()
}

/// The texts of a log as the phone reads them: (from, text).
fn lines(device: &Device, panic: MessageHash, log: &ChatLog) -> Vec<(ChatFrom, String)> {
    device
        .open_chat(panic, log)
        .into_iter()
        .map(|l| {
            let l = l.expect("every text opens on the phone");
            (l.from, l.text.as_str().to_owned())
        })
        .collect()
}

/// The chat as `path` shows it to `token` (an operator's or a team's).
async fn shown(c: &Cluster, path: &str, token: &str) -> Value {
    c.client.get(path, Some(token)).await.unwrap()
}

/// The texts of a chat as the pages show it: (from, text).
fn texts(view: &Value) -> Vec<(String, String)> {
    view["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from"].as_str().unwrap().to_owned(),
                t["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `op` writes `text` to incident `id`'s student: the status and answer.
async fn write(c: &Cluster, op: &str, id: &str, text: &str) -> (u16, Value) {
    c.call(
        "POST",
        &format!("/v1/operator/incidents/{id}/chat"),
        Some(op),
        &json!({ "text": text }),
    )
    .await
}

/// `POST /v1/incident/chat/send` of `message`, read raw.
async fn send_raw(c: &Cluster, body: Value) -> (u16, Value) {
    let req = reqwest::Client::new()
        .post(format!("{}/v1/incident/chat/send", c.server.url()))
        .json(&body);
    let a = Answer::of(req).await;
    (
        a.status,
        serde_json::from_str(&a.body).unwrap_or(Value::Null),
    )
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The sealed bytes of every text a log carries.
fn sealed_of(log: &ChatLog) -> Vec<Vec<u8>> {
    log.entries.iter().map(|e| e.sealed.clone()).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// How many texts the store holds for incident `id`.
fn stored_texts(c: &Cluster, id: &str) -> i64 {
    c.stored.count(
        "SELECT COUNT(*) FROM chat_texts WHERE incident_id = ?1",
        vec![stored::P::Blob(hex::decode(id).unwrap())],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_is_read_by_its_two_ends_and_gone_with_the_incident() {
    let (c, op, mut ops) = Cluster::watched(Options::default()).await;
    let mut team = c.pcr_talwandi(&op).await;
    let mut asha = c.student("Asha Verma").await;
    let panic = c.talwandi_panic(&mut asha, Category::Police);
    let id = c.client.panic(&panic).await.unwrap();
    next_event(&mut team.events, 10, is("assigned", &id)).await;
    c.claim(&op, &id).await;
    let chat = format!("/v1/operator/incidents/{id}/chat");
    let team_chat = format!("/v1/unit/incidents/{id}/chat");

    // Before the phone asks, the chat is not open: nothing to seal to.
    assert_eq!(shown(&c, &chat, &op).await["open"], false);
    let (status, v) = write(&c, &op, &id, ASK).await;
    assert_eq!((status, v["error"].as_str()), (409, Some("chat_not_open")));

    // The phone's first query opens it: the incident's chat recipient, no texts.
    let log = read(&c, &asha, panic.hash(), 0).await;
    let incident_chat = log.recipient.clone().expect("an open chat");
    assert!(log.entries.is_empty());
    let d = c.incident(&op, &id).await;
    assert!(timeline_kinds(&d).contains(&"chat_open"), "{d}");
    // Asked again, the same recipient: the chat key is the incident's, once.
    assert_eq!(
        read(&c, &asha, panic.hash(), 0).await.recipient,
        Some(incident_chat.clone())
    );

    // The operator writes; the phone reads it, opened with its own key.
    let (status, v) = write(&c, &op, &id, ASK).await;
    assert_eq!((status, &v["index"]), (200, &json!(0)), "{v}");
    let ev = next_event(&mut ops, 10, is("chat", &id)).await;
    assert_eq!(ev["detail"], json!({ "index": 0, "from": "control_room" }));
    let log = read(&c, &asha, panic.hash(), 0).await;
    assert_eq!(
        lines(&asha, panic.hash(), &log),
        vec![(ChatFrom::ControlRoom, ASK.to_owned())]
    );

    // The student answers; the control room and the team read it.
    let message = asha
        .chat_message(panic.hash(), &incident_chat, ANSWER, Timestamp::now())
        .unwrap();
    let stored = c.client.chat_send(&message).await.unwrap();
    assert_eq!(stored, json!({ "status": "stored", "index": 1 }));
    next_event(&mut team.events, 10, is("chat", &id)).await;
    let both = vec![
        ("control_room".to_owned(), ASK.to_owned()),
        ("student".to_owned(), ANSWER.to_owned()),
    ];
    let view = shown(&c, &chat, &op).await;
    assert_eq!(texts(&view), both);
    assert_eq!(view["texts"][0]["author"], OPERATOR);
    assert_eq!(
        (&view["open"], &view["student_reads"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(texts(&shown(&c, &team_chat, &team.token).await), both);
    // The same message again (a retry) is the same text, not a second one.
    assert_eq!(c.client.chat_send(&message).await.unwrap()["index"], 1);
    // Counted once each (the retry is not a second text), never read.
    let metrics = c.client.get_text_auth("/metrics", Some(&op)).await.unwrap();
    for counter in [
        "sosvault_chat_student_texts_total 1",
        "sosvault_chat_control_room_texts_total 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == counter),
            "{counter} in {metrics}"
        );
    }

    // The phone reads the whole conversation, or from an index on.
    let log = read(&c, &asha, panic.hash(), 0).await;
    assert_eq!(
        lines(&asha, panic.hash(), &log),
        vec![
            (ChatFrom::ControlRoom, ASK.to_owned()),
            (ChatFrom::Student, ANSWER.to_owned())
        ]
    );
    let later = read(&c, &asha, panic.hash(), 1).await;
    assert_eq!((later.first, later.entries.len()), (1, 1));
    let sealed = sealed_of(&log);

    // Nobody else reads it. Another phone asking about Asha's panic is
    // told there is no such incident; a key that is neither end opens
    // nothing; another team is told there is no such incident.
    let ravi = c.student("Ravi Kumar").await;
    let query = ravi.chat_query(panic.hash(), &c.info.control_room, 0, Timestamp::now());
    assert_refused(
        c.client.chat_log(&query, &c.info.control_room).await,
        404,
        "unknown_incident",
    );
    assert!(
        ravi.open_chat(panic.hash(), &log)
            .iter()
            .all(Result::is_err),
        "another phone's key opens nothing"
    );
    let stranger = ChatKey::generate();
    assert!(
        sosvault::chat::open_entries(&stranger, &log.entries)
            .iter()
            .all(Result::is_err)
    );
    let other = c.unit(&op, "PCR Kunhadi", "police", 25.17, 75.83).await;
    assert_refused(
        c.client.get(&team_chat, Some(&other.token)).await,
        404,
        "not_found",
    );
    // The service's database holds the texts sealed only, and its log
    // holds neither the texts nor their bytes.
    let every = c.store_bytes();
    for clear in [ASK, ANSWER] {
        assert!(
            !contains(&every, clear.as_bytes()),
            "the store holds {clear:?}"
        );
        assert!(!c.server.logs().contains(clear), "the log holds {clear:?}");
    }
    assert!(sealed.iter().all(|s| contains(&every, s)), "stored sealed");
    assert_eq!(stored_texts(&c, &id), 2);

    // The control room closes the incident: the chat key and every text go.
    c.close(&op, &id).await;
    assert_eq!(stored_texts(&c, &id), 0);
    let every = c.store_bytes();
    assert!(
        sealed.iter().all(|s| !contains(&every, s)),
        "a closed incident's texts are gone from the store"
    );
    let row = c
        .stored
        .row(
            "SELECT chat_key_sealed, chat_reply_to FROM incidents WHERE id = ?1",
            vec![stored::P::Blob(hex::decode(&id).unwrap())],
        )
        .unwrap();
    assert_eq!((row[0].blob(), row[1].blob()), (None, None));
    // The phone reads a closed chat; nobody writes to it any more.
    let closed = read(&c, &asha, panic.hash(), 0).await;
    assert_eq!((closed.recipient, closed.entries.len()), (None, 0));
    let (status, v) = write(&c, &op, &id, "still there?").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (409, Some("incident_closed"))
    );
    let late = asha
        .chat_message(panic.hash(), &incident_chat, "hello?", Timestamp::now())
        .unwrap();
    assert_refused(c.client.chat_send(&late).await, 409, "incident_closed");
    let view = shown(&c, &chat, &op).await;
    assert_eq!(
        view,
        json!({ "open": false, "student_reads": false, "texts": [] })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duress_cancel_silences_the_chat_and_a_stop_wipes_it() {
    let (c, op, mut ops) = Cluster::watched(Options::default()).await;
    let mut asha = c.student("Asha Verma").await;
    let panic = c.talwandi_panic(&mut asha, Category::Police);
    let id = c.client.panic(&panic).await.unwrap();
    c.claim(&op, &id).await;
    let log = read(&c, &asha, panic.hash(), 0).await;
    let to = log.recipient.clone().unwrap();
    let (status, _) = write(&c, &op, &id, ASK).await;
    assert_eq!(status, 200);
    let message = asha
        .chat_message(panic.hash(), &to, ANSWER, Timestamp::now())
        .unwrap();
    c.client.chat_send(&message).await.unwrap();
    let sealed = sealed_of(&read(&c, &asha, panic.hash(), 0).await);
    assert_eq!(sealed.len(), 2);

    // "I am safe" under duress: the incident stays open in the control
    // room, escalated, but the phone reads the chat as it reads any closed
    // one, and a text from the control room would tell whoever holds the
    // phone otherwise: refused.
    let cancel = c.signed_cancel(&mut asha, panic.hash(), true);
    c.client.cancel(&cancel).await.unwrap();
    next_event(&mut ops, 10, is("escalated", &id)).await;
    let silent = read(&c, &asha, panic.hash(), 0).await;
    assert_eq!((silent.recipient, silent.entries.len()), (None, 0));
    let (status, v) = write(&c, &op, &id, "are you safe?").await;
    assert_eq!((status, v["error"].as_str()), (409, Some("chat_silenced")));
    let more = asha
        .chat_message(panic.hash(), &to, "ok now", Timestamp::now())
        .unwrap();
    assert_refused(c.client.chat_send(&more).await, 409, "incident_closed");
    // The control room still has what was said before.
    let view = shown(&c, &format!("/v1/operator/incidents/{id}/chat"), &op).await;
    assert_eq!(
        (&view["open"], &view["student_reads"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(view["texts"].as_array().unwrap().len(), 2);

    // Stop: every text and the chat key go, the incident still open.
    let stop = c.signed_stop(&mut asha, false);
    c.stop_until_done(&stop, &mut ops, 10).await;
    assert_eq!(stored_texts(&c, &id), 0);
    let every = c.store_bytes();
    assert!(
        sealed.iter().all(|s| !contains(&every, s)),
        "wiped by the stop"
    );
    let view = shown(&c, &format!("/v1/operator/incidents/{id}/chat"), &op).await;
    assert_eq!(view["texts"], json!([]));
    assert_eq!(view["open"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_chat_message_changes_nothing() {
    let (c, op) = Cluster::with_operator(Options::default()).await;
    let seed = [41u8; 32];
    let mut asha = c
        .student_with_key("Asha Verma", DeviceKey::from_seed(&seed))
        .await
        .0;
    let asha_key = DeviceKey::from_seed(&seed);
    // Another student, with an incident of his own.
    let mut ravi = c.student("Ravi Kumar").await;
    let ravis_panic = c.talwandi_panic(&mut ravi, Category::Medical);
    c.client.panic(&ravis_panic).await.unwrap();
    let panic = c.talwandi_panic(&mut asha, Category::Police);
    let id = c.client.panic(&panic).await.unwrap();
    let log = read(&c, &asha, panic.hash(), 0).await;
    let to = log.recipient.clone().unwrap();
    let good = asha
        .chat_message(panic.hash(), &to, ANSWER, Timestamp::now())
        .unwrap();
    assert_eq!(c.client.chat_send(&good).await.unwrap()["index"], 0);
    // What a chat message may write: the texts, the chat's keys, the
    // student's counter (the rest of the store moves with the incident's
    // own dispatch, on its own clock).
    let chat_state = || {
        let incident = vec![stored::P::Blob(hex::decode(&id).unwrap())];
        (
            c.stored.rows(
                "SELECT n, side, at_ms, sealed, hash FROM chat_texts ORDER BY incident_id, n",
                vec![],
            ),
            c.stored.rows(
                "SELECT chat_key_sealed, chat_reply_to FROM incidents WHERE id = ?1",
                incident,
            ),
            c.stored.rows(
                "SELECT student_id, highest_counter FROM students ORDER BY student_id",
                vec![],
            ),
        )
    };
    let before = chat_state();

    // Signed well, but sealed to a key that is not the incident's.
    let elsewhere = asha
        .chat_message(
            panic.hash(),
            &ChatKey::generate().recipient(),
            "x",
            Timestamp::now(),
        )
        .unwrap();
    // Another student's phone naming Asha's incident.
    let ravis = ravi
        .chat_message(panic.hash(), &to, "I am Asha", Timestamp::now())
        .unwrap();
    // Asha's text again, re-signed with a counter below her last.
    let stale = Signed::sign(
        ChatMessage {
            panic: panic.hash(),
            counter: 1,
            issued_at: Timestamp::now(),
            sealed: good.body().sealed.clone(),
        },
        &asha_key,
    );
    let mut flipped = good.as_bytes().to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    for (body, status, code) in [
        (json!({ "message": "not base64!" }), 400, "bad_base64"),
        (
            json!({ "message": b64(b"not a message") }),
            400,
            "malformed",
        ),
        (json!({ "message": b64(&flipped) }), 400, "malformed"),
        (
            json!({ "message": b64(good.as_bytes()), "extra": 1 }),
            400,
            "bad_json",
        ),
        (
            json!({ "message": b64(elsewhere.as_bytes()) }),
            400,
            "bad_text",
        ),
        (
            json!({ "message": b64(ravis.as_bytes()) }),
            404,
            "unknown_incident",
        ),
        (json!({ "message": b64(stale.as_bytes()) }), 409, "replayed"),
    ] {
        let (got, v) = send_raw(&c, body.clone()).await;
        assert_eq!((got, v["error"].as_str()), (status, Some(code)), "{body}");
    }
    // A query carrying another chat recipient than the chat was opened with.
    let other = Signed::sign(
        ChatQuery {
            control_room: TrusteeId::of_signer(c.info.control_room.verifying_key()),
            issued_at: Timestamp::now(),
            nonce: [9; 16],
            panic: panic.hash(),
            reply_to: ChatRecipient::from_bytes(ChatKey::generate().recipient().to_bytes()),
            from: 0,
        },
        &asha_key,
    );
    assert_refused(
        c.client.chat_log(&other, &c.info.control_room).await,
        409,
        "chat_key_changed",
    );
    // The operator's refused texts.
    for text in ["", "   \n", "bell\u{7}", &"a".repeat(501)] {
        let (status, v) = write(&c, &op, &id, text).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (400, Some("bad_text")),
            "{text:?}"
        );
    }
    // A dispatcher who does not handle the incident (nobody claimed it):
    // the supervisor of these tests may; refusals by role are the access
    // suite's. An unknown incident is 404.
    let (status, _) = write(&c, &op, &"ab".repeat(16), ASK).await;
    assert_eq!(status, 404);
    assert_eq!(chat_state(), before, "a refused message changed the chat");
}
