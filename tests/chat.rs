//! Silent chat (`docs/BEYOND-PANIC.md` §5, PROTOCOL §7.20 to §7.22): every
//! text opens with exactly two keys, the incident's chat key and the
//! device's chat key for that panic; the device's key is its own per panic
//! and per device; a phone believes a chat log only from the control room
//! it pins, for its own query; and a closed log carries nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{T0, enrolled};
use sosvault::chat::{
    ChatError, ChatFrom, ChatKey, ChatLog, ChatQuery, MAX_CHAT_ENTRIES, MAX_CHAT_TEXT,
    open_chat_text, open_entries,
};
use sosvault::status::ReportRefusal;
use sosvault::{ControlRoomKey, DeviceError, MessageHash, Signed, TrusteeId};

#[test]
fn a_text_opens_at_its_two_ends_only() {
    let (world, mut asha, _) = enrolled(3, b"{}", 2);
    let (_, ravi, _) = enrolled(3, b"{}", 2);
    let incident = world.panic(&mut asha, T0);
    let panic = incident.panic.hash();
    let incident_chat = ChatKey::generate();
    let message = asha
        .chat_message(panic, &incident_chat.recipient(), "cannot talk", T0)
        .unwrap();
    let sealed = &message.body().sealed;
    // The two ends.
    assert_eq!(
        open_chat_text(&incident_chat, sealed).unwrap().as_str(),
        "cannot talk"
    );
    assert_eq!(
        open_chat_text(&asha.chat_key(panic), sealed)
            .unwrap()
            .as_str(),
        "cannot talk"
    );
    // Nobody else: another incident's key, the same device's key for
    // another panic, another device's key for this panic, the control
    // room's own keys.
    let not_ends = [
        ChatKey::generate(),
        asha.chat_key(MessageHash::from_bytes([1; 32])),
        ravi.chat_key(panic),
    ];
    for key in &not_ends {
        assert!(matches!(
            open_chat_text(key, sealed),
            Err(ChatError::Seal(_))
        ));
    }
    assert!(world.control_room.open_note(sealed).is_err());
    // The device's key is the same each time for one panic (it keeps none).
    assert_eq!(
        asha.chat_key(panic).recipient(),
        asha.chat_key(panic).recipient()
    );
}

#[test]
fn a_text_is_checked_before_it_is_sealed_and_takes_a_counter() {
    let (world, mut asha, _) = enrolled(3, b"{}", 2);
    let incident = world.panic(&mut asha, T0);
    let to = ChatKey::generate().recipient();
    let before = asha.counter();
    for bad in ["", " \n ", "\u{7}", &"x".repeat(MAX_CHAT_TEXT + 1)] {
        assert!(matches!(
            asha.chat_message(incident.panic.hash(), &to, bad, T0),
            Err(DeviceError::Chat(ChatError::BadText))
        ));
    }
    assert_eq!(asha.counter(), before, "a refused text takes no counter");
    let m = asha
        .chat_message(incident.panic.hash(), &to, "ok", T0)
        .unwrap();
    assert_eq!(m.body().counter, before + 1);
}

#[test]
fn a_phone_believes_a_log_from_its_control_room_for_its_query_only() {
    let (world, mut asha, _) = enrolled(3, b"{}", 2);
    let room = &world.control_room;
    let incident = world.panic(&mut asha, T0);
    let panic = incident.panic.hash();
    let query = asha.chat_query(panic, &room.public(), 0, T0);
    let me = TrusteeId::of_signer(room.public().verifying_key());
    let checked = sosvault::query::check::<ChatQuery>(query.as_bytes(), &me, T0, 120).unwrap();
    assert_eq!(
        checked.query().body().reply_to,
        asha.chat_key(panic).recipient()
    );
    let key = ChatKey::generate();
    let sealed = key
        .seal_text("Are you able to talk?", &checked.query().body().reply_to)
        .unwrap();
    let log = Signed::sign(
        ChatLog::answering(&query, &key, vec![(ChatFrom::ControlRoom, T0, sealed)], T0),
        room,
    );
    let seen = ChatLog::verify(log.as_bytes(), &room.public(), &query).unwrap();
    let lines = open_entries(&asha.chat_key(panic), &seen.entries);
    assert_eq!(
        lines[0].as_ref().unwrap().text.as_str(),
        "Are you able to talk?"
    );
    // Not from another control room; not for another query (a replay of
    // an older log, or another index).
    let stranger = ControlRoomKey::generate();
    assert_eq!(
        ChatLog::verify(log.as_bytes(), &stranger.public(), &query),
        Err(ReportRefusal::WrongSigner)
    );
    let later = asha.chat_query(panic, &room.public(), 0, T0);
    assert_eq!(
        ChatLog::verify(log.as_bytes(), &room.public(), &later),
        Err(ReportRefusal::NotThisQuery)
    );
    // Every flipped bit is refused.
    for i in 0..log.as_bytes().len() {
        let mut b = log.as_bytes().to_vec();
        b[i] ^= 0x10;
        assert!(
            ChatLog::verify(&b, &room.public(), &query).is_err(),
            "byte {i}"
        );
    }
    // A closed log carries no recipient and no text; one that claims to be
    // closed with texts does not decode.
    let closed = Signed::sign(ChatLog::closed(&query, T0), room);
    let closed = ChatLog::verify(closed.as_bytes(), &room.public(), &query).unwrap();
    assert_eq!((closed.recipient, closed.entries.len()), (None, 0));
    let mut lying = ChatLog::closed(&query, T0);
    lying.entries = seen.entries.clone();
    let lying = Signed::sign(lying, room);
    assert!(ChatLog::verify(lying.as_bytes(), &room.public(), &query).is_err());
    // More than the most a log carries are not signed into it.
    let many = vec![(ChatFrom::Student, T0, vec![1u8; 8]); MAX_CHAT_ENTRIES + 5];
    let full = Signed::sign(ChatLog::answering(&query, &key, many, T0), room);
    let full = ChatLog::verify(full.as_bytes(), &room.public(), &query).unwrap();
    assert_eq!(full.entries.len(), MAX_CHAT_ENTRIES);
}
