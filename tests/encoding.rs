//! Every decoder of the public API, held to the encoding rules of
//! `docs/PROTOCOL.md` (property 10 at the library boundary):
//!
//! - round trip: decode(encode(x)) == x, and encoding again gives the same bytes;
//! - every truncation (each prefix length) and every extension (1..=64 appended
//!   bytes) is an error (`TrailingBytes(k)` exactly for extensions), never a panic;
//! - every single-bit flip of every sample is decoded without panicking; a
//!   signed message with a flipped bit never verifies, and anything else that
//!   decodes re-encodes to exactly the bytes given (one encoding per value);
//! - random mutations never panic, and never yield different content under a
//!   valid signature of the same signer;
//! - another version of the tag is `UnsupportedVersion`, another message's
//!   bytes are `WrongType`, for every pair of decoders.
//!
//! Public API only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Debug;

use common::{T0, World, here};
use proptest::prelude::*;
use proptest::sample::Index;
use sosvault::chat::{ChatFrom, ChatKey, ChatLog, ChatMessage, ChatQuery};
use sosvault::manifest::{Manifest, ManifestTrustee};
use sosvault::sms::{SmsChannel, SmsPanic};
use sosvault::timer::{CheckIn, TimedPanic};
use sosvault::{
    AuthorityKey, Cancel, CancelReceipt, Category, Container, ControlRoomKey, ControlRoomPublic,
    DecodeError, Device, DeviceKey, EnrollmentCommit, EnrollmentPackage, EnrollmentRecord,
    IncidentKey, Location, LocationUpdate, LogKey, Message, Note, PanicEvent, Profile,
    ProfileError, Release, ReleaseRequest, ShareDelivery, ShareReceipt, ShredReceipt, Signed, Stop,
    StudentEntry, TrailPoint, TrusteeKey, TrusteePublic, VaultKey,
};

/// A decoder under test: `Ok(Some(bytes))` is its re-encoding of what it
/// decoded; `Ok(None)` means a signed message (whose bytes are kept verbatim).
type Decode = fn(&[u8]) -> Result<Option<Vec<u8>>, DecodeError>;

struct Codec {
    name: &'static str,
    tag: &'static str,
    signed: bool,
    bytes: Vec<u8>,
    decode: Decode,
}

fn signed<M: Message>(b: &[u8]) -> Result<Option<Vec<u8>>, DecodeError> {
    Signed::<M>::decode(b).map(|_| None)
}

fn container<C: Container>(b: &[u8]) -> Result<Option<Vec<u8>>, DecodeError> {
    C::from_bytes(b).map(|c| Some(c.to_bytes()))
}

/// Every message, container, key, state and plaintext, from one real run.
struct Fixture {
    world: World,
    device_seed: [u8; 32],
    record: Signed<EnrollmentRecord>,
    package: EnrollmentPackage,
    delivery: ShareDelivery,
    panic: Signed<PanicEvent>,
    location: Signed<LocationUpdate>,
    cancel: Signed<Cancel>,
    stop: Signed<Stop>,
    trail: Signed<TrailPoint>,
    timed: Signed<TimedPanic>,
    check_in: Signed<CheckIn>,
    sms: Signed<SmsPanic>,
    channel: Signed<SmsChannel>,
    chat_query: Signed<ChatQuery>,
    chat: Signed<ChatMessage>,
    chat_log: Signed<ChatLog>,
    request: Signed<ReleaseRequest>,
    release: Signed<Release>,
    shred_receipt: Signed<ShredReceipt>,
    share_receipt: Signed<ShareReceipt>,
    cancel_receipt: Signed<CancelReceipt>,
    commit: Signed<EnrollmentCommit>,
    manifest: Signed<Manifest>,
    device_state: Vec<u8>,
    entry_live: Vec<u8>,
    entry_tombstoned: Vec<u8>,
    entry_duress: Vec<u8>,
}

fn fixture() -> Fixture {
    let mut world = World::new(3);
    let device_seed = [0x5Du8; 32];
    let mut dev = Device::new(DeviceKey::from_seed(&device_seed));
    let mut profile = Profile::new("Asha Verma", "+91 94140 12345");
    profile.hostel = "Shanti Girls Hostel, room 12".into();
    let package = world.enroll(&mut dev, &profile.to_bytes(), 2, T0);
    let delivery = package.delivery(1).unwrap();
    let share_receipt = world.trustees[0]
        .accept_share(&delivery.to_bytes(), T0)
        .unwrap();
    let incident = world.panic(&mut dev, T0);
    let cr = world.control_room.public();
    let location = dev
        .location_update(incident.panic.hash(), &here(T0), &cr, T0.plus(5))
        .unwrap();
    let cancel = dev
        .cancel(incident.panic.hash(), true, &cr, T0.plus(9))
        .unwrap();
    let release = world.release(0, &incident, T0).unwrap();
    let device_state = dev.to_secret_bytes().to_vec();
    let entry_live = world.trustees[0]
        .entry(&dev.student_id())
        .unwrap()
        .to_secret_bytes()
        .to_vec();
    let cancel_receipt = world.trustees[0]
        .cancel(cancel.as_bytes(), T0.plus(10))
        .unwrap();
    // A walk home, checked in under duress.
    let timed = dev
        .timed_panic(Category::Police, &here(T0), T0.plus(1200), &cr, T0.plus(11))
        .unwrap();
    let check_in = dev.check_in(timed.hash(), true, &cr, T0.plus(12)).unwrap();
    world.trustees[0]
        .cancel(check_in.as_bytes(), T0.plus(13))
        .unwrap();
    // A press sent by SMS too (its twin is not kept).
    let channel = world.control_room.sms_channel("+917440000100", T0).unwrap();
    let believed = SmsChannel::verify(channel.as_bytes(), &cr).unwrap();
    let (_, sms) = dev
        .panic_with_sms(Category::Medical, &here(T0), &cr, &believed, T0.plus(14))
        .unwrap();
    // A chat: the phone asks, writes, and the control room's log carries it.
    let chat_query = dev.chat_query(incident.panic.hash(), &cr, 0, T0.plus(15));
    let incident_chat = ChatKey::generate();
    let chat = dev
        .chat_message(
            incident.panic.hash(),
            &incident_chat.recipient(),
            "near the gate",
            T0.plus(16),
        )
        .unwrap();
    let chat_log = Signed::sign(
        ChatLog::answering(
            &chat_query,
            &incident_chat,
            vec![(ChatFrom::Student, T0.plus(16), chat.body().sealed.clone())],
            T0.plus(17),
        ),
        &world.control_room,
    );
    let entry_duress = world.trustees[0]
        .entry(&dev.student_id())
        .unwrap()
        .to_secret_bytes()
        .to_vec();
    let commit = Signed::sign(
        EnrollmentCommit {
            epoch: 1,
            record: package.record.hash(),
            issued_at: T0,
        },
        &DeviceKey::from_seed(&device_seed),
    );
    let manifest = Signed::sign(
        Manifest {
            deployment: "kota".into(),
            version: 1,
            issued_at: T0,
            not_before: T0,
            not_after: T0.plus(3600),
            threshold: 2,
            trustees: world
                .publics()
                .into_iter()
                .enumerate()
                .map(|(i, public)| ManifestTrustee {
                    name: format!("trustee {i}"),
                    public,
                    url: format!("https://t{i}.example"),
                })
                .collect(),
            control_room: world.control_room.public(),
            control_room_url: "https://dispatch.example".into(),
        },
        &AuthorityKey::from_seed(&[0x71; 32]),
    );

    // A second student stops, so the first stays enrolled.
    let mut other = Device::new(DeviceKey::generate());
    world.enroll(&mut other, b"{}", 2, T0);
    let trail = other.trail_point(&here(T0), T0.plus(19)).unwrap();
    let stop = other.stop(false, &cr, T0.plus(20)).unwrap();
    let shred_receipt = world.trustees[0]
        .shred(stop.as_bytes(), T0.plus(21))
        .unwrap();
    let entry_tombstoned = world.trustees[0]
        .entry(&other.student_id())
        .unwrap()
        .to_secret_bytes()
        .to_vec();

    Fixture {
        record: package.record.clone(),
        package,
        delivery,
        panic: incident.panic.clone(),
        location,
        cancel,
        stop,
        trail,
        timed,
        check_in,
        sms,
        channel,
        chat_query,
        chat,
        chat_log,
        request: incident.request.clone(),
        release,
        shred_receipt,
        share_receipt,
        cancel_receipt,
        commit,
        manifest,
        device_state,
        entry_live,
        entry_tombstoned,
        entry_duress,
        world,
        device_seed,
    }
}

fn codecs(f: &Fixture) -> Vec<Codec> {
    let s = |name, tag, bytes: &[u8], decode| Codec {
        name,
        tag,
        signed: true,
        bytes: bytes.to_vec(),
        decode,
    };
    let u = |name, tag, bytes: Vec<u8>, decode| Codec {
        name,
        tag,
        signed: false,
        bytes,
        decode,
    };
    // Each signed message of the fixture, named as its type.
    macro_rules! signed {
        ($($m:ident: $field:ident),+) => {
            [$(s(stringify!($m), $m::TAG, f.$field.as_bytes(), signed::<$m>)),+]
        };
    }
    // Each container of the fixture, named as its type.
    macro_rules! containers {
        ($($c:ident: $field:ident),+) => {
            [$(u(stringify!($c), <$c as Container>::TAG, f.$field.to_bytes(), container::<$c>)),+]
        };
    }
    // A fresh key of each type, read back from its secret file.
    macro_rules! keys {
        ($($k:ident)+) => {
            [$(u(stringify!($k), $k::TAG, $k::generate().to_secret_bytes().to_vec(), |b| {
                $k::from_secret_bytes(b).map(|k| Some(k.to_secret_bytes().to_vec()))
            })),+]
        };
    }
    let mut all = Vec::new();
    all.extend(signed!(
        EnrollmentRecord: record, PanicEvent: panic, LocationUpdate: location, Cancel: cancel,
        Stop: stop, TrailPoint: trail, TimedPanic: timed, CheckIn: check_in, SmsPanic: sms, SmsChannel: channel,
        ChatQuery: chat_query, ChatMessage: chat, ChatLog: chat_log, ReleaseRequest: request, Release: release, ShredReceipt: shred_receipt,
        ShareReceipt: share_receipt, CancelReceipt: cancel_receipt,
        EnrollmentCommit: commit, Manifest: manifest
    ));
    all.extend(containers!(ShareDelivery: delivery, EnrollmentPackage: package));
    all.extend(keys!(DeviceKey VaultKey TrusteeKey ControlRoomKey IncidentKey LogKey ChatKey));
    let public = |b: &[u8]| TrusteePublic::from_bytes(b).map(|k| Some(k.to_bytes()));
    let room = |b: &[u8]| ControlRoomPublic::from_bytes(b).map(|k| Some(k.to_bytes()));
    let device =
        |b: &[u8]| Device::from_secret_bytes(b).map(|d| Some(d.to_secret_bytes().to_vec()));
    let entry =
        |b: &[u8]| StudentEntry::from_secret_bytes(b).map(|e| Some(e.to_secret_bytes().to_vec()));
    let location = |b: &[u8]| Location::from_bytes(b).map(|l| Some(l.to_bytes()));
    let note = |b: &[u8]| Note::from_bytes(b).map(|n| Some(n.to_bytes()));
    let trustee_public = f.world.trustees[1].trustee().key().public().to_bytes();
    let new_device = Device::new(DeviceKey::generate())
        .to_secret_bytes()
        .to_vec();
    // One sample a line: name, tag, bytes, decoder.
    #[rustfmt::skip]
    let rest = [
        u("TrusteePublic", TrusteePublic::TAG, trustee_public, public),
        u("ControlRoomPublic", ControlRoomPublic::TAG, f.world.control_room.public().to_bytes(), room),
        u("Device (enrolled)", Device::STATE_TAG, f.device_state.clone(), device),
        u("Device (new)", Device::STATE_TAG, new_device, device),
        u("StudentEntry (live)", StudentEntry::TAG, f.entry_live.clone(), entry),
        u("StudentEntry (tombstoned)", StudentEntry::TAG, f.entry_tombstoned.clone(), entry),
        u("StudentEntry (duress check-in)", StudentEntry::TAG, f.entry_duress.clone(), entry),
        u("Location", Location::TAG, here(T0).to_bytes(), location),
        u("Note (duress)", Note::TAG, Note { duress: true }.to_bytes(), note),
        u("Note (no duress)", Note::TAG, Note { duress: false }.to_bytes(), note),
    ];
    all.extend(rest);
    all
}

/// Decodes, re-signs the decoded body with the signer's key, compares.
fn signed_round_trip<M>(msg: &Signed<M>, key: &M::Signer)
where
    M: Message + Clone + PartialEq + Debug,
{
    let back = Signed::<M>::decode(msg.as_bytes()).unwrap();
    assert_eq!(back.body(), msg.body(), "{}", M::TAG);
    assert_eq!(back.signer(), msg.signer(), "{}", M::TAG);
    assert_eq!(back.as_bytes(), msg.as_bytes(), "{}", M::TAG);
    assert_eq!(back.hash(), msg.hash(), "{}", M::TAG);
    // ed25519 is deterministic: re-encoding and re-signing the decoded body
    // gives the very same bytes, so the body encoding is canonical.
    let again = Signed::sign(back.body().clone(), key);
    assert_eq!(again.as_bytes(), msg.as_bytes(), "{}", M::TAG);
}

#[test]
fn every_decoder_round_trips() {
    let f = fixture();
    let dev_key = DeviceKey::from_seed(&f.device_seed);
    let t0 = f.world.trustees[0].trustee().key();
    signed_round_trip(&f.record, &dev_key);
    signed_round_trip(&f.panic, &dev_key);
    signed_round_trip(&f.location, &dev_key);
    signed_round_trip(&f.cancel, &dev_key);
    signed_round_trip(&f.timed, &dev_key);
    signed_round_trip(&f.check_in, &dev_key);
    signed_round_trip(&f.sms, &dev_key);
    signed_round_trip(&f.channel, &f.world.control_room);
    signed_round_trip(&f.request, &f.world.control_room);
    signed_round_trip(&f.release, t0);
    signed_round_trip(&f.shred_receipt, t0);
    signed_round_trip(&f.share_receipt, t0);
    // The stop was signed by the second device, whose key we do not keep.
    let stop = Signed::<Stop>::decode(f.stop.as_bytes()).unwrap();
    assert_eq!(stop.body(), f.stop.body());
    assert_eq!(stop.signer(), f.stop.signer());

    assert_eq!(
        ShareDelivery::from_bytes(&f.delivery.to_bytes()).unwrap(),
        f.delivery
    );
    assert_eq!(
        EnrollmentPackage::from_bytes(&f.package.to_bytes()).unwrap(),
        f.package
    );

    // Every secret key comes back from its file with the same public half.
    macro_rules! reloaded {
        ($k:ident: $key:expr) => {
            $k::from_secret_bytes(&$key.to_secret_bytes()).unwrap()
        };
    }
    let dk = DeviceKey::generate();
    assert_eq!(reloaded!(DeviceKey: dk).public(), dk.public());
    let vk = VaultKey::generate();
    let back = reloaded!(VaultKey: vk);
    assert_eq!(back.recipient(), vk.recipient());
    let sealed = vk.recipient().seal(b"x").unwrap();
    assert_eq!(&back.open(&sealed, 4096).unwrap()[..], b"x");
    let tk = TrusteeKey::generate();
    let back = reloaded!(TrusteeKey: tk);
    assert_eq!(back.public(), tk.public());
    assert_eq!(back.log_key().public(), tk.log_key().public());
    let (ck, ik, lk) = (
        ControlRoomKey::generate(),
        IncidentKey::generate(),
        LogKey::generate(),
    );
    assert_eq!(reloaded!(ControlRoomKey: ck).public(), ck.public());
    assert_eq!(reloaded!(IncidentKey: ik).recipient(), ik.recipient());
    assert_eq!(reloaded!(LogKey: lk).public(), lk.public());

    let tp = tk.public();
    assert_eq!(TrusteePublic::from_bytes(&tp.to_bytes()).unwrap(), tp);
    let cp = ck.public();
    assert_eq!(ControlRoomPublic::from_bytes(&cp.to_bytes()).unwrap(), cp);

    let dev = Device::from_secret_bytes(&f.device_state).unwrap();
    assert_eq!(&dev.to_secret_bytes()[..], &f.device_state[..]);
    assert_eq!(dev.public(), dk_public(&f.device_seed));
    assert_eq!(dev.epoch(), 1);
    assert_eq!(dev.counter(), 3);
    assert_eq!(
        dev.vault_recipient(),
        Some(&f.record.body().vault_recipient)
    );

    for bytes in [&f.entry_live, &f.entry_tombstoned] {
        let e = StudentEntry::from_secret_bytes(bytes).unwrap();
        assert_eq!(&e.to_secret_bytes()[..], &bytes[..]);
    }
    let live = StudentEntry::from_secret_bytes(&f.entry_live).unwrap();
    assert!(live.holds_share());
    assert_eq!(live.record(), Some(&f.record));
    assert_eq!(live.last_release(), Some(&f.release));
    assert_eq!(live.highest_counter(), f.panic.body().counter);
    let tomb = StudentEntry::from_secret_bytes(&f.entry_tombstoned).unwrap();
    assert!(!tomb.holds_share());
    assert_eq!(tomb.tombstone().map(|t| &t.receipt), Some(&f.shred_receipt));

    let loc = Location::new(-33.8688, 151.2093, 7, T0).unwrap();
    let back = Location::from_bytes(&loc.to_bytes()).unwrap();
    assert_eq!(back, loc);
    assert_eq!(back.lat(), -33.8688);
    assert_eq!(back.lon(), 151.2093);
    for duress in [false, true] {
        let n = Note { duress };
        assert_eq!(Note::from_bytes(&n.to_bytes()).unwrap(), n);
    }

    let mut p = Profile::new("Asha", "+91 90000 00000");
    p.medical_notes = "asthma; \"quoted\" \u{0928}\u{093e}\u{092e}".into();
    let bytes = p.to_bytes();
    let back = Profile::from_bytes(&bytes).unwrap();
    assert_eq!(back, p);
    assert_eq!(&back.to_bytes()[..], &bytes[..]);
}

fn dk_public(seed: &[u8; 32]) -> sosvault::DevicePublic {
    DeviceKey::from_seed(seed).public()
}

#[test]
fn every_truncation_and_extension_is_rejected() {
    let f = fixture();
    for c in codecs(&f) {
        assert!(
            (c.decode)(&c.bytes).is_ok(),
            "{}: the sample decodes",
            c.name
        );
        for len in 0..c.bytes.len() {
            assert!(
                (c.decode)(&c.bytes[..len]).is_err(),
                "{}: prefix of {len} of {} bytes accepted",
                c.name,
                c.bytes.len()
            );
        }
        for extra in 1..=64usize {
            for fill in [0x00u8, 0xFF, extra as u8] {
                let mut longer = c.bytes.clone();
                longer.extend(std::iter::repeat_n(fill, extra));
                assert_eq!(
                    (c.decode)(&longer).err(),
                    Some(DecodeError::TrailingBytes(extra)),
                    "{}: {extra} appended bytes",
                    c.name
                );
            }
            // The message's own bytes appended (a doubled message).
            let mut doubled = c.bytes.clone();
            doubled.extend_from_slice(&c.bytes[..extra.min(c.bytes.len())]);
            assert!((c.decode)(&doubled).is_err(), "{}: doubled", c.name);
        }
    }
}

/// Every single-bit flip of every sample, exhaustively.
#[test]
fn every_single_bit_flip_is_rejected_or_canonical() {
    let f = fixture();
    for c in codecs(&f) {
        let mut accepted = 0usize;
        for bit in 0..c.bytes.len() * 8 {
            let flipped = common::flip(&c.bytes, bit);
            match (c.decode)(&flipped) {
                Err(_) => {}
                Ok(None) => panic!(
                    "{}: a signed message with bit {bit} flipped verified",
                    c.name
                ),
                Ok(Some(again)) => {
                    assert!(!c.signed);
                    assert_eq!(again, flipped, "{}: bit {bit}: not canonical", c.name);
                    accepted += 1;
                }
            }
        }
        if c.signed {
            assert_eq!(accepted, 0, "{}", c.name);
        }
    }
}

#[test]
fn another_version_of_the_tag_is_unsupported_version() {
    let f = fixture();
    for c in codecs(&f) {
        let family = &c.tag[..c.tag.rfind('/').unwrap() + 1];
        for version in ["v0", "v2", "v3", "v10", "v1.1", "x"] {
            let tag = format!("{family}{version}");
            if tag == c.tag {
                continue;
            }
            let old_len = 1 + c.tag.len();
            let mut bytes = vec![tag.len() as u8];
            bytes.extend_from_slice(tag.as_bytes());
            bytes.extend_from_slice(&c.bytes[old_len..]);
            // An older version the decoder still reads: refused, by its
            // layout (the newer fields are left over), not by its tag.
            if tag == "sosvault/trustee-entry/v2" {
                assert!((c.decode)(&bytes).is_err(), "{} as {tag}", c.name);
                continue;
            }
            assert_eq!(
                (c.decode)(&bytes).err(),
                Some(DecodeError::UnsupportedVersion { expected: c.tag }),
                "{} as {tag}",
                c.name
            );
        }
    }
}

#[test]
fn another_messages_bytes_are_wrong_type() {
    let f = fixture();
    let all = codecs(&f);
    for decoder in &all {
        for input in all.iter().filter(|i| i.tag != decoder.tag) {
            assert_eq!(
                (decoder.decode)(&input.bytes).err(),
                Some(DecodeError::WrongType {
                    expected: decoder.tag
                }),
                "{} fed to {}",
                input.name,
                decoder.name
            );
        }
    }
}

/// The profile is JSON (inside the vault, never signed or hashed itself):
/// round trip, every truncation rejected, anything but JSON whitespace
/// appended rejected, another version or an unknown field rejected, the size
/// limit enforced, and flips never panic.
#[test]
fn profile_decoder_rejects_truncations_extensions_and_other_versions() {
    let mut p = Profile::new("Asha Verma", "+91 94140 12345");
    p.guardian_name = "Sunita".into();
    let bytes = p.to_bytes().to_vec();
    assert_eq!(Profile::from_bytes(&bytes).unwrap(), p);
    for len in 0..bytes.len() {
        assert!(Profile::from_bytes(&bytes[..len]).is_err(), "prefix {len}");
    }
    for extra in 1..=64usize {
        for fill in [b'x', b'}', b'0', 0xFF, 0x00] {
            let mut longer = bytes.clone();
            longer.extend(std::iter::repeat_n(fill, extra));
            assert!(Profile::from_bytes(&longer).is_err(), "{extra} x {fill:#x}");
        }
    }
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("\"v\":1"));
    for other in ["\"v\":0", "\"v\":2", "\"v\":11"] {
        let changed = text.replacen("\"v\":1", other, 1);
        assert!(matches!(
            Profile::from_bytes(changed.as_bytes()),
            Err(ProfileError::Malformed)
        ));
    }
    let unknown = text.replacen("{", "{\"extra\":\"x\",", 1);
    assert!(Profile::from_bytes(unknown.as_bytes()).is_err());
    let huge = vec![b' '; sosvault::MAX_PROFILE_BYTES + 1];
    assert!(matches!(
        Profile::from_bytes(&huge),
        Err(ProfileError::TooLarge)
    ));
    for bit in 0..bytes.len() * 8 {
        let _ = Profile::from_bytes(&common::flip(&bytes, bit));
    }
}

/// A mutation of a byte string.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, x) => {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        Mutation::Set(i, v) => {
            let i = i.index(bytes.len());
            bytes[i] = *v;
        }
        Mutation::Insert(i, v) => {
            let i = i.index(bytes.len() + 1);
            bytes.splice(i..i, v.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let i = i.index(bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Mutation::Truncate(i) => {
            let i = i.index(bytes.len());
            bytes.truncate(i);
        }
    }
}

/// The signer and body of a signed sample, to compare a mutated message with.
fn signed_view(name: &str, b: &[u8]) -> Option<(Vec<u8>, String)> {
    fn view<M: Message + Debug>(b: &[u8]) -> Option<(Vec<u8>, String)> {
        Signed::<M>::decode(b)
            .ok()
            .map(|s| (s.signer().as_bytes().to_vec(), format!("{:?}", s.body())))
    }
    match name {
        "EnrollmentRecord" => view::<EnrollmentRecord>(b),
        "PanicEvent" => view::<PanicEvent>(b),
        "LocationUpdate" => view::<LocationUpdate>(b),
        "Cancel" => view::<Cancel>(b),
        "Stop" => view::<Stop>(b),
        "TrailPoint" => view::<TrailPoint>(b),
        "TimedPanic" => view::<TimedPanic>(b),
        "CheckIn" => view::<CheckIn>(b),
        "SmsPanic" => view::<SmsPanic>(b),
        "SmsChannel" => view::<SmsChannel>(b),
        "ChatQuery" => view::<ChatQuery>(b),
        "ChatMessage" => view::<ChatMessage>(b),
        "ChatLog" => view::<ChatLog>(b),
        "ReleaseRequest" => view::<ReleaseRequest>(b),
        "Release" => view::<Release>(b),
        "ShredReceipt" => view::<ShredReceipt>(b),
        "ShareReceipt" => view::<ShareReceipt>(b),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random mutations (flips, overwrites, insertions, deletions, truncations,
    /// one to four of them) of every sample: never a panic; a signed message
    /// never decodes to other content under the same signer (it never verifies
    /// at all); anything else that decodes is canonical.
    #[test]
    fn random_mutations_never_panic_nor_forge(
        which in any::<Index>(),
        mutations in proptest::collection::vec(mutation(), 1..5),
    ) {
        let f = FIXTURE.with(|f| f.clone());
        let all = codecs(&f.0);
        let c = &all[which.index(all.len())];
        let mut bytes = c.bytes.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let result = (c.decode)(&bytes);
        if bytes == c.bytes {
            prop_assert!(result.is_ok());
        } else if c.signed {
            if let Some((signer, body)) = signed_view(c.name, &bytes) {
                let (orig_signer, orig_body) = signed_view(c.name, &c.bytes).unwrap();
                prop_assert!(
                    signer != orig_signer || body == orig_body,
                    "{}: different content under the same signer", c.name
                );
            }
            prop_assert!(result.is_err(), "{}: a mutated signed message verified", c.name);
        } else if let Ok(Some(again)) = result {
            prop_assert_eq!(again, bytes, "{}: not canonical", c.name);
        }
    }

    /// Arbitrary bytes after a valid tag: never a panic.
    #[test]
    fn arbitrary_bodies_after_a_valid_tag_never_panic(
        which in any::<Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let f = FIXTURE.with(|f| f.clone());
        let all = codecs(&f.0);
        let c = &all[which.index(all.len())];
        let mut bytes = vec![c.tag.len() as u8];
        bytes.extend_from_slice(c.tag.as_bytes());
        bytes.extend_from_slice(&tail);
        if let Ok(Some(again)) = (c.decode)(&bytes) {
            prop_assert_eq!(again, bytes, "{}: not canonical", c.name);
        }
    }
}

/// One fixture per test thread for the proptests (building it costs a few ms).
#[derive(Clone)]
struct Shared(std::rc::Rc<Fixture>);

thread_local! {
    static FIXTURE: Shared = Shared(std::rc::Rc::new(fixture()));
}

#[test]
fn the_fixture_covers_every_decoder_and_tag() {
    let f = fixture();
    let all = codecs(&f);
    assert_eq!(all.len(), 39);
    for c in &all {
        assert_eq!(c.bytes[0] as usize, c.tag.len(), "{}", c.name);
        assert_eq!(&c.bytes[1..1 + c.tag.len()], c.tag.as_bytes(), "{}", c.name);
    }
    // The sample panic really is a police panic of epoch 1 (the fixture is a real run).
    assert_eq!(f.panic.body().category, Category::Police);
    assert_eq!(f.panic.body().epoch, 1);
}

/// Small-order ("weak") ed25519 points: the identity and the point of order 2.
const WEAK_POINTS: [[u8; 32]; 2] = {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut order2 = [0xFFu8; 32];
    order2[0] = 0xEC;
    order2[31] = 0x7F;
    [identity, order2]
};

/// A weak public key is refused wherever a public key is decoded: as a
/// device, log, trustee or control-room key, and as the signer of a message.
#[test]
fn weak_public_keys_are_refused_everywhere() {
    let f = fixture();
    for weak in WEAK_POINTS {
        assert!(sosvault::DevicePublic::from_bytes(&weak).is_err());
        assert!(sosvault::LogPublic::from_bytes(&weak).is_err());
        for (tag, decode) in [
            (
                TrusteePublic::TAG,
                (|b| TrusteePublic::from_bytes(b).map(|_| ()))
                    as fn(&[u8]) -> Result<(), DecodeError>,
            ),
            (ControlRoomPublic::TAG, |b| {
                ControlRoomPublic::from_bytes(b).map(|_| ())
            }),
        ] {
            let mut bytes = vec![tag.len() as u8];
            bytes.extend_from_slice(tag.as_bytes());
            bytes.extend_from_slice(&weak);
            bytes.extend_from_slice(&[9u8; 32]);
            assert_eq!(
                decode(&bytes).err(),
                Some(DecodeError::InvalidValue("signing key")),
                "{tag}"
            );
        }
        let mut panic = f.panic.as_bytes().to_vec();
        let at = 1 + PanicEvent::TAG.len();
        panic[at..at + 32].copy_from_slice(&weak);
        assert_eq!(
            Signed::<PanicEvent>::decode(&panic).err(),
            Some(DecodeError::InvalidValue("signer"))
        );
    }
}

/// The hex forms of public keys (config files) round-trip and refuse every
/// truncation, extension and non-hex character.
#[test]
fn public_key_hex_forms_round_trip_and_refuse_damage() {
    let tp = TrusteeKey::generate().public();
    let cp = ControlRoomKey::generate().public();
    let lp = LogKey::generate().public();
    assert_eq!(TrusteePublic::from_hex(&tp.to_hex()).unwrap(), tp);
    assert_eq!(ControlRoomPublic::from_hex(&cp.to_hex()).unwrap(), cp);
    assert_eq!(sosvault::LogPublic::from_hex(&lp.to_hex()).unwrap(), lp);
    type Accepts = fn(&str) -> bool;
    let checks: [(String, Accepts); 3] = [
        (tp.to_hex(), |s| TrusteePublic::from_hex(s).is_ok()),
        (cp.to_hex(), |s| ControlRoomPublic::from_hex(s).is_ok()),
        (lp.to_hex(), |s| sosvault::LogPublic::from_hex(s).is_ok()),
    ];
    for (hex, ok) in checks {
        assert!(ok(&hex));
        assert!(
            ok(&format!(" {hex}\n")),
            "surrounding whitespace is trimmed"
        );
        for len in 0..hex.len() {
            assert!(!ok(&hex[..len]), "prefix {len}");
        }
        for extra in ["0", "00", "ff", "zz", "0000"] {
            assert!(!ok(&format!("{hex}{extra}")), "+{extra}");
        }
        for (i, _) in hex.char_indices().step_by(7) {
            let mut damaged = hex.clone();
            damaged.replace_range(i..i + 1, "g");
            assert!(!ok(&damaged), "non-hex at {i}");
        }
    }
}
