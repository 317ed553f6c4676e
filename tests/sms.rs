//! The SMS panic (`docs/BEYOND-PANIC.md` §4): one press, two encodings
//! with one counter; the text fits two SMS; its location opens only at the
//! control room, only inside the panic of the device that sealed it; the
//! trustees release for it as for any panic, and for one of the twins at
//! most once; and a phone believes a channel only from the manifest's
//! control room.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{T0, World, enrolled, here};
use sosvault::sms::{
    self, MAX_SMS_CHARS, MAX_TEXT_LEN, SEALED_LOCATION_LEN, SmsChannel, SmsChannelError, SmsPanic,
    VerifiedSmsChannel,
};
use sosvault::timer::AnyPanic;
use sosvault::{
    Category, ControlRoomKey, DecodeError, Device, IncidentId, IncidentKey, PanicEvent, Refusal,
    ReleaseRefusal, Signed, Timestamp,
};

/// The GSM 03.38 default alphabet's characters that base64 can use: all of
/// them are in it, so the text is GSM-7 (153 characters an SMS when
/// concatenated), never UCS-2 (67).
fn is_gsm7_base64(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')
}

fn channel(world: &World) -> VerifiedSmsChannel {
    let signed = world.control_room.sms_channel("+917440000100", T0).unwrap();
    SmsChannel::verify(signed.as_bytes(), &world.control_room.public()).unwrap()
}

/// One press at `now`: the HTTP panic and its SMS twin.
fn press(
    world: &World,
    device: &mut Device,
    now: Timestamp,
) -> (Signed<PanicEvent>, Signed<SmsPanic>) {
    device
        .panic_with_sms(
            Category::Medical,
            &here(now),
            &world.control_room.public(),
            &channel(world),
            now,
        )
        .unwrap()
}

fn ask<P: Clone + Into<AnyPanic>>(
    world: &mut World,
    i: usize,
    panic: &P,
    now: Timestamp,
) -> Result<(), Refusal> {
    let request = world.control_room.release_request(
        panic,
        IncidentId::random(),
        &IncidentKey::generate(),
        now,
    );
    world.trustees[i]
        .release(request.as_bytes(), now)
        .map(|_| ())
}

#[test]
fn the_twins_share_one_counter_and_the_text_fits_two_gsm7_sms() {
    let (world, mut device, _) = enrolled(3, b"{}", 2);
    let (http, text) = press(&world, &mut device, T0.plus(60));
    let (h, s) = (http.body(), text.body().panic());
    assert_eq!(
        (h.epoch, h.counter, h.issued_at, h.category),
        (s.epoch, s.counter, s.issued_at, s.category)
    );
    assert_eq!(s.sealed_location.len(), SEALED_LOCATION_LEN);
    assert_ne!(http.hash(), text.hash());
    // The next press takes the next counter.
    let (next, _) = press(&world, &mut device, T0.plus(120));
    assert_eq!(next.body().counter, h.counter + 1);

    let words = sms::to_text(&text);
    assert!(words.len() <= MAX_TEXT_LEN && MAX_TEXT_LEN <= MAX_SMS_CHARS);
    assert!(words.chars().all(is_gsm7_base64), "{words}");
    assert_eq!(sms::from_text(&words).unwrap(), text);
    // A gateway that folds the text, or pads it with spaces, changes nothing.
    let folded = format!(" {}\r\n{} ", &words[..153], &words[153..]);
    assert_eq!(sms::from_text(&folded).unwrap(), text);
}

#[test]
fn only_the_control_room_s_sms_key_opens_the_location_and_only_in_its_panic() {
    let (world, mut device, _) = enrolled(3, b"{}", 2);
    let (http, text) = press(&world, &mut device, T0.plus(60));
    let cr = &world.control_room;
    let fix = cr.sms_key().open_location(&text).unwrap();
    let sent = here(T0.plus(60));
    assert_eq!(
        (fix.lat(), fix.lon(), fix.accuracy_m, fix.fix_time),
        (sent.lat(), sent.lon(), sent.accuracy_m, sent.fix_time)
    );
    // Either twin opens through the one call the service makes.
    for panic in [AnyPanic::from(http), AnyPanic::from(text.clone())] {
        assert_eq!(cr.open_panic_location(&panic).unwrap().lat(), sent.lat());
    }
    // Another control room's key does not open it, nor does the age key.
    assert!(
        ControlRoomKey::generate()
            .sms_key()
            .open_location(&text)
            .is_err()
    );
    assert!(
        cr.open_location(&text.body().panic().sealed_location)
            .is_err()
    );
    // The SMS key is a key of its own, not the age key.
    assert_ne!(
        cr.sms_key().recipient().to_bytes().to_vec(),
        cr.public().to_bytes()[cr.public().to_bytes().len() - 32..].to_vec()
    );

    // Another device copies the sealed location into a panic of its own:
    // signed, well formed, and it does not open (HPKE's aad is the signer).
    let (_, mut thief, _) = enrolled(3, b"{}", 2);
    let (_, own) = press(&world, &mut thief, T0.plus(61));
    let stolen = SmsPanic::new(PanicEvent {
        sealed_location: text.body().panic().sealed_location.clone(),
        ..own.body().panic().clone()
    })
    .unwrap();
    let key = sosvault::DeviceKey::generate();
    let forged = Signed::sign(stolen, &key);
    assert!(cr.sms_key().open_location(&forged).is_err());
}

#[test]
fn the_trustees_release_for_an_sms_panic_and_for_one_twin_only() {
    let (mut world, mut device, _) = enrolled(3, b"{}", 2);
    let now = T0.plus(60);
    let (http, text) = press(&world, &mut device, now);
    // The SMS arrived first: two trustees release for it.
    ask(&mut world, 0, &text, now).unwrap();
    ask(&mut world, 1, &text, now).unwrap();
    // Its HTTP twin, arriving later, is the same press: no trustee that
    // released releases again (a control room asking for both, to open two
    // incidents of one press, gets one).
    let replayed = Refusal::Release(ReleaseRefusal::Replayed {
        offered: http.body().counter,
        seen: http.body().counter,
    });
    assert_eq!(ask(&mut world, 0, &http, now).unwrap_err(), replayed);
    // A trustee that had not released may release for either, once.
    ask(&mut world, 2, &http, now).unwrap();
    assert_eq!(ask(&mut world, 2, &text, now).unwrap_err(), replayed);
}

#[test]
fn a_cancel_of_the_http_twin_revokes_the_sms_twin() {
    let (mut world, mut device, _) = enrolled(3, b"{}", 2);
    let now = T0.plus(60);
    let (http, text) = press(&world, &mut device, now);
    let cancel = device
        .cancel(http.hash(), false, &world.control_room.public(), now)
        .unwrap();
    world.trustees[0].cancel(cancel.as_bytes(), now).unwrap();
    assert!(matches!(
        ask(&mut world, 0, &text, now).unwrap_err(),
        Refusal::Release(ReleaseRefusal::Cancelled { .. })
    ));
}

#[test]
fn a_phone_believes_a_channel_only_from_the_manifest_s_control_room() {
    let world = World::new(3);
    let other = ControlRoomKey::generate();
    let forged = other.sms_channel("+917440000666", T0).unwrap();
    assert_eq!(
        SmsChannel::verify(forged.as_bytes(), &world.control_room.public()).unwrap_err(),
        SmsChannelError::WrongControlRoom
    );
    let good = world.control_room.sms_channel("+917440000100", T0).unwrap();
    let believed = SmsChannel::verify(good.as_bytes(), &world.control_room.public()).unwrap();
    assert_eq!(believed.channel().number, "+917440000100");
    assert_eq!(
        believed.channel().recipient,
        world.control_room.sms_key().recipient()
    );
    // A flipped bit anywhere is refused.
    for i in 0..good.as_bytes().len() {
        let mut bad = good.as_bytes().to_vec();
        bad[i] ^= 1;
        assert!(SmsChannel::verify(&bad, &world.control_room.public()).is_err());
    }
    // Only E.164 numbers are signed.
    for number in [
        "",
        "+",
        "7440000100",
        "+0744000010",
        "+91 74400 00100",
        "+1234567890123456",
    ] {
        assert_eq!(
            world.control_room.sms_channel(number, T0).unwrap_err(),
            DecodeError::InvalidValue("number"),
            "{number}"
        );
    }
}

#[test]
fn a_bad_text_is_refused_before_anything_is_believed() {
    let (world, mut device, _) = enrolled(3, b"{}", 2);
    let (http, text) = press(&world, &mut device, T0.plus(60));
    let words = sms::to_text(&text);
    // Longer than any SMS panic: refused before base64 is decoded.
    let long = "A".repeat(MAX_TEXT_LEN + 1);
    assert!(matches!(
        sms::from_text(&long).unwrap_err(),
        DecodeError::TooLong { .. }
    ));
    // Multi-byte characters count by their bytes: a long text of them is
    // refused as long, whatever the limit falls inside.
    for c in ['é', '€', '😀'] {
        let long: String = std::iter::repeat_n(c, MAX_TEXT_LEN).collect();
        assert!(matches!(
            sms::from_text(&long).unwrap_err(),
            DecodeError::TooLong { .. }
        ));
    }
    assert_eq!(
        sms::from_text("help me!!").unwrap_err(),
        DecodeError::InvalidValue("base64")
    );
    // The HTTP panic's bytes as text: another kind of message.
    use base64::Engine as _;
    let http_text = base64::engine::general_purpose::STANDARD.encode(http.as_bytes());
    assert!(sms::from_text(&http_text).is_err());
    // A changed character: the signature fails (or the base64 does).
    let mut bad: Vec<char> = words.chars().collect();
    bad[100] = if bad[100] == 'A' { 'B' } else { 'A' };
    assert!(sms::from_text(&bad.into_iter().collect::<String>()).is_err());
    // A sealed location of the wrong length is not an SMS panic.
    let mut short = text.body().panic().clone();
    short.sealed_location.pop();
    assert_eq!(
        SmsPanic::new(short).unwrap_err(),
        DecodeError::InvalidValue("sealed location")
    );
}
