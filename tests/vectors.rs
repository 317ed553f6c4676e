//! Fixed test vectors for every sosvault message, container, key and sealed
//! plaintext (`tests/vectors/<name>.hex`, listed in `docs/PROTOCOL.md`,
//! "Test vectors").
//!
//! Every vector is rebuilt here from fixed inputs (seeds, timestamps, field
//! values) with the public API and compared byte for byte with the committed
//! file: any change to an encoding, a tag, a derivation or a signature fails
//! this test. The committed files are also decoded, their signatures verified
//! and their signers' roles checked, and the sealed ones opened with the fixed
//! keys.
//!
//! age ciphertexts are randomised (ephemeral share, grease stanza), so the
//! sealed fields are themselves vectors (`sealed_*.hex`): real ciphertexts
//! made once, committed, and then used as fixed bytes inside the messages.
//! The two further sealed shares of the enrollment package (for trustees 2
//! and 3) have no file of their own; they are taken from the committed
//! `enrollment_package.hex` and checked the same way (they must open with
//! their trustee's key to the expected plaintext).
//!
//! Regenerate after a deliberate format change with
//!
//! ```text
//! SOSVAULT_UPDATE_VECTORS=1 cargo test --test vectors
//! ```
//!
//! which writes the files instead of comparing them. Committed ciphertexts
//! are kept as long as they still open to the expected plaintext, so a
//! regeneration only changes what really changed. Then update the hashes in
//! `docs/PROTOCOL.md` (the test prints the table) and say why in the commit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/kota_profile.rs"]
mod kota_profile;

use std::collections::BTreeMap;
use std::path::PathBuf;

use kota_profile::kota_profile;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sosvault::chat::{ChatEntry, ChatFrom, ChatKey, ChatLog, ChatMessage, ChatQuery};
use sosvault::hazmat::{RawShare, combine_shares, split_secret_with_rng};
use sosvault::manifest::{Manifest, ManifestTrustee};
use sosvault::messages::TrusteeSlot;
use sosvault::sms::{SmsChannel, SmsPanic};
use sosvault::status::{Stage, StatusQuery, StatusReport, Team, TeamKind};
use sosvault::timer::{CheckIn, TimedPanic, TrusteeNote};
use sosvault::{
    AuthorityKey, Cancel, CancelReceipt, Category, Container, ControlRoomKey, ControlRoomPublic,
    Device, DeviceKey, EnrollmentCommit, EnrollmentPackage, EnrollmentRecord, InMemoryTrustee,
    IncidentId, IncidentKey, Location, LocationUpdate, Message, MessageHash, Note, Opener,
    PanicEvent, Policy, Profile, Release, ReleaseRequest, ShareCommitment, ShareDelivery,
    ShareReceipt, ShredReceipt, Signed, Stop, StudentEntry, StudentId, TimeLimits, Timestamp,
    TrailPoint, Trustee, TrusteeId, TrusteeKey, TrusteePublic, VaultKey, VaultRecipient,
    commitment,
};

// ------------------------------------------------------------------ fixed inputs

/// Every vector file, by stem. (The fuzz corpus seeder reads these names.)
const NAMES: [&str; 50] = [
    "enrollment",
    "panic",
    "location",
    "cancel",
    "trail",
    "timed_panic",
    "check_in",
    "sms_channel",
    "sms_panic",
    "stop",
    "release_request",
    "status_query",
    "status_report",
    "release",
    "shred_receipt",
    "cancel_receipt",
    "manifest",
    "authority_key",
    "enrollment_commit",
    "share_receipt",
    "share_delivery",
    "enrollment_package",
    "device_key",
    "vault_key",
    "trustee_key",
    "control_room_key",
    "incident_key",
    "trustee_public",
    "control_room_public",
    "device_state",
    "trustee_entry",
    "location_fix",
    "note",
    "profile",
    "sealed_location",
    "sealed_note",
    "sealed_share_for_trustee",
    "sealed_released_share",
    "sealed_profile",
    "sealed_trail_location",
    "sealed_trustee_note_1",
    "sealed_trustee_note_2",
    "sealed_trustee_note_3",
    "sealed_sms_location",
    "chat_key",
    "chat_text",
    "sealed_chat_text",
    "chat_query",
    "chat",
    "chat_log",
];

/// The check-in's notes to trustees 1, 2 and 3.
const TRUSTEE_NOTES: [&str; 3] = [
    "sealed_trustee_note_1",
    "sealed_trustee_note_2",
    "sealed_trustee_note_3",
];

const DEVICE_SEED: [u8; 32] = [0x01; 32];
const TRUSTEE_SEEDS: [[u8; 32]; 3] = [[0x11; 32], [0x12; 32], [0x13; 32]];
const CONTROL_ROOM_SEED: [u8; 32] = [0x21; 32];
const VAULT_SCALAR: [u8; 32] = [0x31; 32];
const INCIDENT_SCALAR: [u8; 32] = [0x41; 32];
const SPLIT_RNG_SEED: [u8; 32] = [0x51; 32];
const INCIDENT_ID: [u8; 16] = [0x61; 16];
/// The status query's nonce.
const STATUS_NONCE: [u8; 16] = [0x81; 16];
const AUTHORITY_SEED: [u8; 32] = [0x71; 32];
/// The incident's chat key (the control room's, random in the service).
const CHAT_SCALAR: [u8; 32] = [0x91; 32];
/// The chat query's nonce.
const CHAT_NONCE: [u8; 16] = [0x92; 16];
/// What the student writes in the chat.
const CHAT_TEXT: &str = "Cannot talk. Near the library gate.";
/// The control room's SMS number.
const SMS_NUMBER: &str = "+917440000100";
/// HPKE's KEM for the SMS panic's location.
type SmsKem = hpke::kem::X25519HkdfSha256;
/// The manifest's validity: a year from T0.
const MANIFEST_YEAR: u64 = 365 * 24 * 3600;

/// The base time: 2026-09-21T12:53:20Z.
const T0: u64 = 1_790_000_000;
/// Enrollment record issued.
const AT_ENROLL: u64 = T0;
/// Trustee 1 stores its share (share receipt).
const AT_STORED: u64 = T0 + 1;
/// The location fix inside the panic.
const AT_FIX: u64 = T0 + 595;
/// Panic issued (counter 1).
const AT_PANIC: u64 = T0 + 600;
/// Release request signed.
const AT_REQUEST: u64 = T0 + 605;
/// Trustee 1 releases.
const AT_RELEASE: u64 = T0 + 610;
/// Location update (counter 2).
const AT_LOCATION: u64 = T0 + 630;
/// The phone asks where its incident stands.
const AT_STATUS_QUERY: u64 = T0 + 640;
/// The control room answers.
const AT_STATUS_REPORT: u64 = T0 + 641;
/// Cancel (counter 3).
const AT_CANCEL: u64 = T0 + 900;
/// A trustee takes the forwarded cancel.
const AT_REVOKE: u64 = T0 + 905;
/// A point of the sealed trail (counter 4): the student kept it on.
const AT_TRAIL: u64 = T0 + 1000;
/// A check-in timer starts (counter 5): a walk of 20 minutes.
const AT_TIMER: u64 = T0 + 1050;
/// The timer's end.
const AT_NOT_BEFORE: u64 = AT_TIMER + 1200;
/// The student checks in, under duress (counter 6).
const AT_CHECK_IN: u64 = T0 + 1150;
/// Stop (counter 7).
const AT_STOP: u64 = T0 + 1200;
/// Trustee 1 shreds.
const AT_SHRED: u64 = T0 + 1210;
/// The phone asks for the chat; it writes; the control room answers.
const AT_CHAT_QUERY: u64 = T0 + 650;
const AT_CHAT: u64 = T0 + 660;
const AT_CHAT_LOG: u64 = T0 + 661;

const THRESHOLD: u8 = 2;
const EPOCH: u32 = 1;

fn ts(secs: u64) -> Timestamp {
    Timestamp(secs)
}

/// A key file: `u8 len | tag | 32 secret bytes`.
fn key_file(tag: &str, secret: &[u8; 32]) -> Vec<u8> {
    let mut out = vec![tag.len() as u8];
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(secret);
    out
}

fn tag_bytes(tag: &str) -> Vec<u8> {
    let mut out = vec![tag.len() as u8];
    out.extend_from_slice(tag.as_bytes());
    out
}

fn device_key() -> DeviceKey {
    DeviceKey::from_seed(&DEVICE_SEED)
}

fn trustee_key(i: usize) -> TrusteeKey {
    TrusteeKey::from_seed(&TRUSTEE_SEEDS[i])
}

fn authority_key() -> AuthorityKey {
    AuthorityKey::from_seed(&AUTHORITY_SEED)
}

/// The deployment manifest: the three fixed trustees, 2-of-3, the fixed control room.
fn manifest() -> Manifest {
    let names = ["police-hq", "oversight-office", "ngo"];
    Manifest {
        deployment: "kota".into(),
        version: 1,
        issued_at: ts(T0),
        not_before: ts(T0),
        not_after: ts(T0 + MANIFEST_YEAR),
        threshold: THRESHOLD,
        trustees: (0..3)
            .map(|i| ManifestTrustee {
                name: names[i].into(),
                public: trustee_key(i).public(),
                url: format!("https://{}.example", names[i]),
            })
            .collect(),
        control_room: control_room_key().public(),
        control_room_url: "https://dispatch.example".into(),
    }
}

fn control_room_key() -> ControlRoomKey {
    ControlRoomKey::from_seed(&CONTROL_ROOM_SEED)
}

fn vault_key() -> VaultKey {
    VaultKey::from_secret_bytes(&key_file(VaultKey::TAG, &VAULT_SCALAR)).unwrap()
}

fn chat_key() -> ChatKey {
    ChatKey::from_secret_bytes(&key_file(ChatKey::TAG, &CHAT_SCALAR)).unwrap()
}

/// A chat text's plaintext (PROTOCOL §9.6): the tag, then `var` of the text.
fn chat_plaintext(text: &str) -> Vec<u8> {
    let tag = sosvault::chat::CHAT_TEXT_TAG;
    let mut out = vec![tag.len() as u8];
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

fn incident_key() -> IncidentKey {
    IncidentKey::from_secret_bytes(&key_file(IncidentKey::TAG, &INCIDENT_SCALAR)).unwrap()
}

fn trustee_publics() -> Vec<TrusteePublic> {
    (0..3).map(|i| trustee_key(i).public()).collect()
}

fn trustee(i: usize) -> Trustee {
    Trustee::new(
        trustee_key(i),
        vec![control_room_key().public()],
        TimeLimits::default(),
    )
}

fn location() -> Location {
    // Talwandi, Kota.
    Location::new(25.1425, 75.8350, 8, ts(AT_FIX)).unwrap()
}

fn note() -> Note {
    // The duress flag set: the byte that must never show outside the seal.
    Note { duress: true }
}

/// The three shares of the fixed vault scalar, 2-of-3, from a seeded RNG.
///
/// The y values depend on how vsss-rs draws its coefficients from the RNG;
/// an independent implementation takes them from the share plaintexts below,
/// not from the RNG.
fn shares() -> Vec<RawShare> {
    split_secret_with_rng(
        &VAULT_SCALAR,
        THRESHOLD as usize,
        3,
        StdRng::from_seed(SPLIT_RNG_SEED),
    )
    .unwrap()
}

fn student() -> StudentId {
    device_key().student_id()
}

/// The plaintext of `sosvault/share-for-trustee/v1`, written out by hand.
fn share_for_trustee_plaintext(share: &RawShare) -> Vec<u8> {
    let mut out = tag_bytes("sosvault/share-for-trustee/v1");
    out.extend_from_slice(student().as_bytes());
    out.extend_from_slice(&EPOCH.to_be_bytes());
    out.push(share.index);
    out.extend_from_slice(&share.y[..]);
    out
}

/// The plaintext of `sosvault/released-share/v1`, written out by hand.
fn released_share_plaintext(panic: &MessageHash, share: &RawShare) -> Vec<u8> {
    let mut out = tag_bytes("sosvault/released-share/v1");
    out.extend_from_slice(panic.as_bytes());
    out.extend_from_slice(student().as_bytes());
    out.extend_from_slice(&EPOCH.to_be_bytes());
    out.push(share.index);
    out.extend_from_slice(&share.y[..]);
    out
}

// ------------------------------------------------------------------ independent primitives

/// SHA-256 of the concatenation (through the crate's plain message hash).
fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    *MessageHash::of_message(&parts.concat()).as_bytes()
}

/// `SHA-256(u8 len(tag) || tag || parts...)`, written out from the document.
fn tagged_hash(tag: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut all = tag_bytes(tag);
    for p in parts {
        all.extend_from_slice(p);
    }
    sha256(&[&all])
}

/// HMAC-SHA-256 (RFC 2104) for keys of at most 64 bytes.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    assert!(key.len() <= 64);
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = sha256(&[&ipad, msg]);
    sha256(&[&opad, &inner])
}

/// HKDF-SHA-256 (RFC 5869) with no salt, first 32 bytes of output.
fn hkdf_sha256_32(ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let prk = hmac_sha256(&[0u8; 32], ikm);
    let mut m = info.to_vec();
    m.push(1);
    hmac_sha256(&prk, &m)
}

/// Multiplication in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1.
fn gf256_mul(mut a: u8, mut b: u8) -> u8 {
    let mut out = 0u8;
    while b != 0 {
        if b & 1 == 1 {
            out ^= a;
        }
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    out
}

fn x25519_public(scalar: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*scalar)).to_bytes()
}

fn ed25519_public(seed: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(seed)
        .verifying_key()
        .to_bytes()
}

/// Opens an age ciphertext with any X25519 scalar (dressed as a vault key file,
/// since a vault key is exactly an age X25519 identity).
fn open_with_scalar(scalar: &[u8; 32], ciphertext: &[u8]) -> Option<Vec<u8>> {
    let key = VaultKey::from_secret_bytes(&key_file(VaultKey::TAG, scalar)).unwrap();
    key.open(ciphertext, 1 << 20).ok().map(|p| p.to_vec())
}

/// A trustee's X25519 scalar, derived as the document says.
fn trustee_x25519_scalar(i: usize) -> [u8; 32] {
    hkdf_sha256_32(&TRUSTEE_SEEDS[i], TrusteeKey::X25519_INFO.as_bytes())
}

/// The envelope, parsed by hand: (tag, signer, body, signature), after checking
/// the signature with `verify_strict` over every byte before it.
fn parse_envelope(bytes: &[u8]) -> (String, [u8; 32], Vec<u8>) {
    let tag_len = bytes[0] as usize;
    let tag = String::from_utf8(bytes[1..1 + tag_len].to_vec()).unwrap();
    let mut at = 1 + tag_len;
    let signer: [u8; 32] = bytes[at..at + 32].try_into().unwrap();
    at += 32;
    let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    at += 4;
    let body = bytes[at..at + len].to_vec();
    at += len;
    assert_eq!(
        bytes.len(),
        at + 64,
        "{tag}: the signature ends the envelope"
    );
    let sig = ed25519_dalek::Signature::from_bytes(&bytes[at..].try_into().unwrap());
    ed25519_dalek::VerifyingKey::from_bytes(&signer)
        .unwrap()
        .verify_strict(&bytes[..at], &sig)
        .unwrap_or_else(|_| panic!("{tag}: signature over the envelope verifies"));
    (tag, signer, body)
}

// ------------------------------------------------------------------ files

/// While `every_vector_is_rebuilt_byte_for_byte` rewrites the files, the tests
/// that read them would race with it (and the document is stale until updated):
/// they stand aside. Run the suite again without the variable to check.
fn regenerating() -> bool {
    update_mode()
}

fn update_mode() -> bool {
    std::env::var("SOSVAULT_UPDATE_VECTORS").as_deref() == Ok("1")
}

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(format!("{name}.hex"))
}

fn read_vector(name: &str) -> Option<Vec<u8>> {
    let text = std::fs::read_to_string(vector_path(name)).ok()?;
    Some(hex::decode(text.trim()).unwrap_or_else(|e| panic!("{name}.hex is not hex: {e}")))
}

fn committed(name: &str) -> Vec<u8> {
    read_vector(name).unwrap_or_else(|| {
        panic!("tests/vectors/{name}.hex is missing; run with SOSVAULT_UPDATE_VECTORS=1")
    })
}

/// A fixed ciphertext: the committed one if it opens to `plaintext`; a fresh
/// one only when regenerating. In compare mode a committed ciphertext that
/// does not open to the expected plaintext fails the test here.
fn sealed_input(
    name: &str,
    existing: Option<Vec<u8>>,
    plaintext: &[u8],
    open: impl Fn(&[u8]) -> Option<Vec<u8>>,
    seal: impl FnOnce() -> Vec<u8>,
) -> Vec<u8> {
    if let Some(ct) = existing {
        if open(&ct).as_deref() == Some(plaintext) {
            return ct;
        }
        assert!(
            update_mode(),
            "{name}: the committed ciphertext does not open to the expected plaintext"
        );
    } else {
        assert!(
            update_mode(),
            "{name}: no committed ciphertext; run with SOSVAULT_UPDATE_VECTORS=1"
        );
    }
    seal()
}

/// [`sealed_input`] for a ciphertext committed as the vector `name`.
fn committed_sealed(
    name: &str,
    plaintext: &[u8],
    open: impl Fn(&[u8]) -> Option<Vec<u8>>,
    seal: impl FnOnce() -> Vec<u8>,
) -> Vec<u8> {
    sealed_input(name, read_vector(name), plaintext, open, seal)
}

// ------------------------------------------------------------------ the build

/// Every vector, rebuilt from the fixed inputs (and the fixed ciphertexts).
fn build() -> BTreeMap<&'static str, Vec<u8>> {
    let mut v: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    let device = device_key();
    let room = control_room_key();
    let vault = vault_key();
    let incident = incident_key();
    let publics = trustee_publics();
    let shares = shares();
    let student = student();

    // Keys.
    v.insert("device_key", device.to_secret_bytes().to_vec());
    v.insert("vault_key", vault.to_secret_bytes().to_vec());
    v.insert("trustee_key", trustee_key(0).to_secret_bytes().to_vec());
    v.insert("control_room_key", room.to_secret_bytes().to_vec());
    v.insert("incident_key", incident.to_secret_bytes().to_vec());
    v.insert("trustee_public", publics[0].to_bytes());
    v.insert("control_room_public", room.public().to_bytes());
    v.insert("authority_key", authority_key().to_secret_bytes().to_vec());
    v.insert(
        "manifest",
        Signed::sign(manifest(), &authority_key())
            .as_bytes()
            .to_vec(),
    );

    // Sealed plaintexts.
    let location_fix = location().to_bytes();
    let note_bytes = note().to_bytes();
    let profile_bytes = kota_profile().to_bytes().to_vec();
    v.insert("location_fix", location_fix.clone());
    v.insert("note", note_bytes.clone());
    v.insert("profile", profile_bytes.clone());

    // Sealed fields: fixed ciphertexts.
    let sealed_location = committed_sealed(
        "sealed_location",
        &location_fix,
        |ct| room.open_location(ct).ok().map(|l| l.to_bytes()),
        || room.public().seal(&location_fix).unwrap(),
    );
    let sealed_note = committed_sealed(
        "sealed_note",
        &note_bytes,
        |ct| room.open_note(ct).ok().map(|n| n.to_bytes()),
        || room.public().seal(&note_bytes).unwrap(),
    );
    let sealed_profile = committed_sealed(
        "sealed_profile",
        &profile_bytes,
        |ct| vault.open(ct, 1 << 20).ok().map(|p| p.to_vec()),
        || vault.recipient().seal(&profile_bytes).unwrap(),
    );
    let sealed_trail_location = committed_sealed(
        "sealed_trail_location",
        &location_fix,
        |ct| vault.open(ct, 2048).ok().map(|p| p.to_vec()),
        || vault.recipient().seal(&location_fix).unwrap(),
    );
    v.insert("sealed_trail_location", sealed_trail_location.clone());
    let committed_package = read_vector("enrollment_package")
        .and_then(|b| EnrollmentPackage::from_bytes(&b).ok())
        .map(|p| p.sealed_shares);
    let mut sealed_shares = Vec::new();
    for (i, share) in shares.iter().enumerate() {
        let plaintext = share_for_trustee_plaintext(share);
        let existing = if i == 0 {
            read_vector("sealed_share_for_trustee")
        } else {
            committed_package.as_ref().and_then(|s| s.get(i).cloned())
        };
        let scalar = trustee_x25519_scalar(i);
        let public = publics[i].clone();
        sealed_shares.push(sealed_input(
            &format!("sealed share {} (trustee {})", share.index, i + 1),
            existing,
            &plaintext,
            |ct| open_with_scalar(&scalar, ct),
            || public.seal(&plaintext).unwrap(),
        ));
    }
    v.insert("sealed_location", sealed_location.clone());
    v.insert("sealed_note", sealed_note.clone());
    v.insert("sealed_profile", sealed_profile.clone());
    v.insert("sealed_share_for_trustee", sealed_shares[0].clone());

    // Enrollment.
    let record = EnrollmentRecord {
        epoch: EPOCH,
        threshold: THRESHOLD,
        trustees: publics
            .iter()
            .zip(&shares)
            .map(|(t, s)| TrusteeSlot {
                trustee: t.id(),
                commitment: commitment(&student, EPOCH, s.index, &s.y),
            })
            .collect(),
        vault_recipient: vault.recipient(),
        profile_digest: sha256(&[&sealed_profile]),
        policy: Policy::default(),
        issued_at: ts(AT_ENROLL),
    };
    let record = Signed::sign(record, &device);
    let package = EnrollmentPackage {
        record: record.clone(),
        sealed_profile,
        sealed_shares,
    };
    let delivery = package.delivery(1).unwrap();
    v.insert("enrollment", record.as_bytes().to_vec());
    v.insert("enrollment_package", package.to_bytes());
    v.insert("share_delivery", delivery.to_bytes());
    let share_receipt = Signed::sign(
        ShareReceipt {
            student,
            epoch: EPOCH,
            share_index: 1,
            commitment: record.body().trustees[0].commitment,
            stored_at: ts(AT_STORED),
        },
        &trustee_key(0),
    );
    v.insert("share_receipt", share_receipt.as_bytes().to_vec());

    // Panic and release.
    let panic = Signed::sign(
        PanicEvent {
            epoch: EPOCH,
            counter: 1,
            issued_at: ts(AT_PANIC),
            category: Category::Police,
            sealed_location: sealed_location.clone(),
        },
        &device,
    );
    let request = room.release_request(
        &panic,
        IncidentId::from_bytes(INCIDENT_ID),
        &incident,
        ts(AT_REQUEST),
    );
    v.insert("panic", panic.as_bytes().to_vec());
    v.insert("release_request", request.as_bytes().to_vec());

    let released_plaintext = released_share_plaintext(&panic.hash(), &shares[0]);
    let sealed_released = committed_sealed(
        "sealed_released_share",
        &released_plaintext,
        |ct| open_with_scalar(&INCIDENT_SCALAR, ct),
        // Made by the real trustee: accept the delivery, answer the request.
        || {
            let mut t = InMemoryTrustee::new(trustee(0));
            t.accept_share(&delivery.to_bytes(), ts(AT_STORED)).unwrap();
            let release = t.release(request.as_bytes(), ts(AT_RELEASE)).unwrap();
            release.body().sealed_share.clone()
        },
    );
    v.insert("sealed_released_share", sealed_released.clone());
    let release = Signed::sign(
        Release {
            student,
            epoch: EPOCH,
            share_index: 1,
            panic: panic.hash(),
            incident: IncidentId::from_bytes(INCIDENT_ID),
            recipient: incident.recipient(),
            released_at: ts(AT_RELEASE),
            sealed_share: sealed_released,
        },
        &trustee_key(0),
    );
    v.insert("release", release.as_bytes().to_vec());

    // During and after the incident.
    let update = Signed::sign(
        LocationUpdate {
            panic: panic.hash(),
            counter: 2,
            issued_at: ts(AT_LOCATION),
            sealed_location: sealed_location.clone(),
        },
        &device,
    );
    let cancel = Signed::sign(
        Cancel {
            panic: panic.hash(),
            counter: 3,
            issued_at: ts(AT_CANCEL),
            sealed_note: sealed_note.clone(),
        },
        &device,
    );
    let trail = Signed::sign(
        TrailPoint {
            epoch: EPOCH,
            counter: 4,
            issued_at: ts(AT_TRAIL),
            sealed_location: sealed_trail_location,
        },
        &device,
    );
    v.insert("trail", trail.as_bytes().to_vec());
    let timed = Signed::sign(
        TimedPanic {
            panic: PanicEvent {
                epoch: EPOCH,
                counter: 5,
                issued_at: ts(AT_TIMER),
                category: Category::Police,
                sealed_location: sealed_location.clone(),
            },
            not_before: ts(AT_NOT_BEFORE),
        },
        &device,
    );
    v.insert("timed_panic", timed.as_bytes().to_vec());
    let trustee_notes = TRUSTEE_NOTES
        .iter()
        .zip(&publics)
        .enumerate()
        .map(|(i, (name, public))| {
            let sealed = committed_sealed(
                name,
                &note_bytes,
                |ct| open_with_scalar(&trustee_x25519_scalar(i), ct),
                || public.seal(&note_bytes).unwrap(),
            );
            v.insert(name, sealed.clone());
            TrusteeNote {
                trustee: public.id(),
                sealed_note: sealed,
            }
        })
        .collect();
    let check_in = Signed::sign(
        CheckIn {
            panic: timed.hash(),
            counter: 6,
            issued_at: ts(AT_CHECK_IN),
            sealed_note: sealed_note.clone(),
            trustee_notes,
        },
        &device,
    );
    v.insert("check_in", check_in.as_bytes().to_vec());

    // The panic's twin for SMS: the same press (counter 1), its location
    // sealed with HPKE to the control room's SMS key, which its signed
    // channel names.
    let channel = room.sms_channel(SMS_NUMBER, ts(AT_ENROLL)).unwrap();
    v.insert("sms_channel", channel.as_bytes().to_vec());
    let sms_twin = |sealed_location: Vec<u8>| {
        let body = SmsPanic::new(PanicEvent {
            sealed_location,
            ..panic.body().clone()
        })
        .unwrap();
        Signed::sign(body, &device)
    };
    let sealed_sms_location = committed_sealed(
        "sealed_sms_location",
        &location_fix,
        |ct| {
            let text = sms_twin(ct.to_vec());
            let key = room.sms_key();
            key.open_location(&text).ok().map(|l| l.to_bytes())
        },
        || {
            let fix = Location::from_bytes(&location_fix).unwrap();
            let recipient = room.sms_key().recipient();
            recipient.seal(&fix, &device.public()).unwrap()
        },
    );
    v.insert("sealed_sms_location", sealed_sms_location.clone());
    v.insert(
        "sms_panic",
        sms_twin(sealed_sms_location).as_bytes().to_vec(),
    );
    let stop = Signed::sign(
        Stop {
            epoch: EPOCH,
            counter: 7,
            issued_at: ts(AT_STOP),
            sealed_note,
        },
        &device,
    );
    let shred = Signed::sign(
        ShredReceipt {
            student,
            epoch: EPOCH,
            stop: stop.hash(),
            shredded_at: ts(AT_SHRED),
        },
        &trustee_key(0),
    );
    v.insert("location", update.as_bytes().to_vec());

    // The phone follows its incident: a team on its way, the profile open.
    let query = Signed::sign(
        StatusQuery {
            control_room: TrusteeId::of_signer(room.public().verifying_key()),
            issued_at: ts(AT_STATUS_QUERY),
            nonce: STATUS_NONCE,
            panic: panic.hash(),
        },
        &device,
    );
    let report = Signed::sign(
        StatusReport {
            query: query.hash(),
            panic: panic.hash(),
            at: ts(AT_STATUS_REPORT),
            stage: Stage::TeamOnTheWay(Team {
                kind: TeamKind::Police,
                distance_m: 850,
                eta_secs: 172,
            }),
            released: 2,
            threshold: THRESHOLD,
            opened_at: Some(ts(AT_RELEASE)),
        },
        &room,
    );
    v.insert("status_query", query.as_bytes().to_vec());
    v.insert("status_report", report.as_bytes().to_vec());

    // Silent chat: the phone asks (its chat recipient, derived from its
    // key and the panic), writes a text sealed to both ends, and the
    // control room's log carries it.
    let phone = Device::new(device_key());
    let phone_chat = phone.chat_key(panic.hash());
    let incident_chat = chat_key();
    v.insert("chat_key", incident_chat.to_secret_bytes().to_vec());
    let chat_plain = chat_plaintext(CHAT_TEXT);
    v.insert("chat_text", chat_plain.clone());
    let sealed_chat = committed_sealed(
        "sealed_chat_text",
        &chat_plain,
        |ct| {
            let both = open_with_scalar(&CHAT_SCALAR, ct)?;
            let mine = sosvault::chat::open_chat_text(&phone_chat, ct).ok()?;
            (mine.as_bytes() == CHAT_TEXT.as_bytes()).then_some(both)
        },
        || {
            phone_chat
                .seal_text(CHAT_TEXT, &incident_chat.recipient())
                .unwrap()
        },
    );
    v.insert("sealed_chat_text", sealed_chat.clone());
    let chat_query = Signed::sign(
        ChatQuery {
            control_room: TrusteeId::of_signer(room.public().verifying_key()),
            issued_at: ts(AT_CHAT_QUERY),
            nonce: CHAT_NONCE,
            panic: panic.hash(),
            reply_to: phone_chat.recipient(),
            from: 0,
        },
        &device,
    );
    v.insert("chat_query", chat_query.as_bytes().to_vec());
    let chat = Signed::sign(
        ChatMessage {
            panic: panic.hash(),
            counter: 8,
            issued_at: ts(AT_CHAT),
            sealed: sealed_chat.clone(),
        },
        &device,
    );
    v.insert("chat", chat.as_bytes().to_vec());
    let chat_log = Signed::sign(
        ChatLog {
            query: chat_query.hash(),
            panic: panic.hash(),
            at: ts(AT_CHAT_LOG),
            recipient: Some(incident_chat.recipient()),
            first: 0,
            entries: vec![ChatEntry {
                from: ChatFrom::Student,
                at: ts(AT_CHAT),
                sealed: sealed_chat,
            }],
        },
        &room,
    );
    v.insert("chat_log", chat_log.as_bytes().to_vec());
    v.insert("cancel", cancel.as_bytes().to_vec());
    v.insert("stop", stop.as_bytes().to_vec());
    v.insert("shred_receipt", shred.as_bytes().to_vec());
    let revoked = Signed::sign(
        CancelReceipt {
            student,
            cancel: cancel.hash(),
            counter: 3,
            revoked_at: ts(AT_REVOKE),
        },
        &trustee_key(0),
    );
    v.insert("cancel_receipt", revoked.as_bytes().to_vec());
    let commit = Signed::sign(
        EnrollmentCommit {
            epoch: EPOCH,
            record: Signed::<EnrollmentRecord>::decode(&v["enrollment"])
                .unwrap()
                .hash(),
            issued_at: ts(AT_STORED + 1),
        },
        &device,
    );
    v.insert("enrollment_commit", commit.as_bytes().to_vec());

    // Saved state.
    v.insert("device_state", device_state(&vault.recipient()));
    v.insert(
        "trustee_entry",
        trustee_entry(&delivery, &request, &release),
    );

    assert_eq!(v.len(), NAMES.len());
    v
}

/// The device's saved state after enrolling and sending a panic, a location
/// update and a cancel (counter 3), made by the real [`Device`]. Enrollment
/// draws a fresh vault key, so its recipient (32 bytes, at a fixed offset) is
/// replaced with the fixed vault's; nothing else in the state is random.
fn device_state(vault: &VaultRecipient) -> Vec<u8> {
    let room = control_room_key().public();
    let mut device = Device::new(device_key());
    device
        .enroll(
            &kota_profile().to_bytes(),
            &trustee_publics(),
            THRESHOLD,
            Policy::default(),
            ts(AT_ENROLL),
        )
        .unwrap();
    let panic = device
        .panic(Category::Police, &location(), &room, ts(AT_PANIC))
        .unwrap();
    device
        .location_update(panic.hash(), &location(), &room, ts(AT_LOCATION))
        .unwrap();
    device
        .cancel(panic.hash(), true, &room, ts(AT_CANCEL))
        .unwrap();
    let random = device.vault_recipient().unwrap().to_bytes();
    let mut bytes = device.to_secret_bytes().to_vec();
    let at = find(&bytes, &random).expect("the vault recipient is in the state");
    // tag | var(device key file) | u32 epoch | u64 counter | stopped | enrolled | threshold | u32 window
    assert_eq!(
        at,
        1 + Device::STATE_TAG.len() + 4 + 55 + 4 + 8 + 1 + 1 + 1 + 4
    );
    bytes[at..at + 32].copy_from_slice(&vault.to_bytes());
    bytes
}

/// Trustee 1's entry after accepting its share and releasing it once, made by
/// the real [`Trustee`]. The release it signs holds a fresh ciphertext, so the
/// embedded release (a `u32` length and the envelope) is replaced with the
/// fixed `release` vector; the test checks the two releases agree in every
/// other field.
fn trustee_entry(
    delivery: &ShareDelivery,
    request: &Signed<ReleaseRequest>,
    fixed_release: &Signed<Release>,
) -> Vec<u8> {
    let t = trustee(0);
    let accepted = t
        .accept_share(None, &delivery.to_bytes(), ts(AT_STORED))
        .unwrap();
    let checked = t.check_request(request.as_bytes(), ts(AT_RELEASE)).unwrap();
    let released = t
        .release(Some(&accepted.entry), &checked, ts(AT_RELEASE))
        .unwrap();
    let random = released.answer.as_bytes();
    let bytes = released.entry.to_secret_bytes().to_vec();
    let at = find(&bytes, random).expect("the release is in the entry");
    let mut out = bytes[..at - 4].to_vec();
    out.extend_from_slice(&(fixed_release.as_bytes().len() as u32).to_be_bytes());
    out.extend_from_slice(fixed_release.as_bytes());
    out.extend_from_slice(&bytes[at + random.len()..]);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ------------------------------------------------------------------ the tests

#[test]
fn every_vector_is_rebuilt_byte_for_byte() {
    let built = build();
    if update_mode() {
        std::fs::create_dir_all(vector_path("x").parent().unwrap()).unwrap();
        for (name, bytes) in &built {
            std::fs::write(vector_path(name), format!("{}\n", hex::encode(bytes))).unwrap();
        }
        println!("{}", vector_table(&built));
        return;
    }
    let mut changed = Vec::new();
    for name in NAMES {
        let want = committed(name);
        if built[name] != want {
            changed.push(name);
        }
    }
    assert!(
        changed.is_empty(),
        "these encodings changed: {changed:?}. If the change is deliberate, regenerate with \
         SOSVAULT_UPDATE_VECTORS=1 cargo test --test vectors and update docs/PROTOCOL.md"
    );
}

#[test]
fn vector_files_are_one_line_of_lower_case_hex() {
    if regenerating() {
        return;
    }
    for name in NAMES {
        let text = std::fs::read_to_string(vector_path(name)).unwrap();
        let line = text
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("{name}.hex ends with a newline"));
        assert!(
            !line.is_empty() && !line.contains('\n'),
            "{name}.hex: one line"
        );
        assert!(
            line.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{name}.hex: lower-case hex only"
        );
        assert_eq!(line.len() % 2, 0, "{name}.hex: whole bytes");
    }
}

/// The committed signed messages decode, verify, name the right signer and
/// carry exactly the fixed field values; decoding and re-encoding is the identity.
#[test]
fn committed_messages_decode_and_verify() {
    if regenerating() {
        return;
    }
    let device = device_key().public();
    let room = control_room_key().public();
    let t1 = trustee_key(0).public();
    let student = student();

    fn check<M: Message>(name: &str, signer: &ed25519_dalek::VerifyingKey) -> Signed<M> {
        let bytes = committed(name);
        let m = Signed::<M>::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.as_bytes(), &bytes[..], "{name}: kept verbatim");
        assert_eq!(m.signer(), signer, "{name}: signed by its role");
        let (tag, raw_signer, _) = parse_envelope(&bytes);
        assert_eq!(tag, M::TAG, "{name}: tag");
        assert_eq!(&raw_signer, signer.as_bytes(), "{name}: signer field");
        // One flipped bit anywhere and it no longer decodes.
        for at in [0, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            assert!(
                Signed::<M>::decode(&bad).is_err(),
                "{name}: bit flip at {at}"
            );
        }
        m
    }

    let record = check::<EnrollmentRecord>("enrollment", device.verifying_key());
    let r = record.body();
    assert_eq!(
        (r.epoch, r.threshold, r.share_count()),
        (EPOCH, THRESHOLD, 3)
    );
    assert_eq!(r.vault_recipient, vault_key().recipient());
    assert_eq!(r.issued_at, ts(AT_ENROLL));
    assert_eq!(r.policy.access_window_secs, 2700);
    for (i, slot) in r.trustees.iter().enumerate() {
        assert_eq!(slot.trustee, trustee_key(i).id());
    }
    assert_eq!(
        r.profile_digest,
        *MessageHash::of_message(&committed("sealed_profile")).as_bytes()
    );

    let panic = check::<PanicEvent>("panic", device.verifying_key());
    let p = panic.body();
    assert_eq!(
        (p.epoch, p.counter, p.issued_at, p.category),
        (EPOCH, 1, ts(AT_PANIC), Category::Police)
    );
    assert_eq!(p.sealed_location, committed("sealed_location"));
    assert_eq!(StudentId::of_device(panic.signer()), student);

    let update = check::<LocationUpdate>("location", device.verifying_key());
    assert_eq!(update.body().panic, panic.hash());
    assert_eq!(update.body().counter, 2);
    let cancel = check::<Cancel>("cancel", device.verifying_key());
    assert_eq!(
        (cancel.body().panic, cancel.body().counter),
        (panic.hash(), 3)
    );
    assert_eq!(cancel.body().sealed_note, committed("sealed_note"));
    let trail = check::<TrailPoint>("trail", device.verifying_key());
    assert_eq!(
        (
            trail.body().epoch,
            trail.body().counter,
            trail.body().issued_at
        ),
        (EPOCH, 4, ts(AT_TRAIL))
    );
    assert_eq!(
        trail.body().sealed_location,
        committed("sealed_trail_location")
    );
    let timed = check::<TimedPanic>("timed_panic", device.verifying_key());
    let t = timed.body();
    assert_eq!(
        (
            t.panic.epoch,
            t.panic.counter,
            t.panic.issued_at,
            t.not_before
        ),
        (EPOCH, 5, ts(AT_TIMER), ts(AT_NOT_BEFORE))
    );
    assert_eq!(t.panic.sealed_location, committed("sealed_location"));
    // A timed panic is no panic (nor the reverse), but a release request
    // carries either.
    assert!(Signed::<PanicEvent>::decode(&committed("timed_panic")).is_err());
    assert!(Signed::<TimedPanic>::decode(&committed("panic")).is_err());
    let either = sosvault::timer::AnyPanic::decode(&committed("timed_panic")).unwrap();
    assert_eq!(either.not_before(), Some(ts(AT_NOT_BEFORE)));
    assert_eq!(either.hash(), timed.hash());
    let check_in = check::<CheckIn>("check_in", device.verifying_key());
    assert_eq!(
        (check_in.body().panic, check_in.body().counter),
        (timed.hash(), 6)
    );
    let stop = check::<Stop>("stop", device.verifying_key());
    assert_eq!((stop.body().epoch, stop.body().counter), (EPOCH, 7));

    // The SMS channel names the SMS key derived as PROTOCOL §7.18 says:
    // HKDF-SHA-256 of the control room's seed, then HPKE's DeriveKeyPair.
    let channel = check::<SmsChannel>("sms_channel", room.verifying_key());
    let ikm = hkdf_sha256_32(&CONTROL_ROOM_SEED, ControlRoomKey::SMS_INFO.as_bytes());
    let (sms_secret, sms_public) = <SmsKem as hpke::Kem>::derive_keypair(&ikm);
    assert_eq!(
        channel.body().recipient.to_bytes()[..],
        hpke::Serializable::to_bytes(&sms_public)[..]
    );
    assert_eq!(channel.body().number, SMS_NUMBER);
    let verified = SmsChannel::verify(channel.as_bytes(), &room).unwrap();
    assert_eq!(verified.signed(), &channel);
    // The twin: the panic's fields, and a location HPKE opens (base mode,
    // the document's info, the device's key as aad) to the fix's fields.
    let text = check::<SmsPanic>("sms_panic", device.verifying_key());
    assert_eq!(text.body().panic().counter, panic.body().counter);
    assert_eq!(
        (text.body().panic().epoch, text.body().panic().issued_at),
        (EPOCH, ts(AT_PANIC))
    );
    let sealed = committed("sealed_sms_location");
    assert_eq!(text.body().panic().sealed_location, sealed);
    let enc =
        <<SmsKem as hpke::Kem>::EncappedKey as hpke::Deserializable>::from_bytes(&sealed[..32])
            .unwrap();
    let fields =
        hpke::single_shot_open::<hpke::aead::ChaCha20Poly1305, hpke::kdf::HkdfSha256, SmsKem>(
            &hpke::OpModeR::Base,
            &sms_secret,
            &enc,
            sosvault::sms::HPKE_INFO,
            &sealed[32..],
            device.verifying_key().as_bytes(),
        )
        .unwrap();
    let fix = committed("location_fix");
    assert_eq!(
        fields,
        fix[1 + fix[0] as usize..],
        "the fix's fields, no tag"
    );
    assert_eq!(
        sosvault::sms::from_text(&sosvault::sms::to_text(&text)).unwrap(),
        text
    );
    let either = sosvault::timer::AnyPanic::decode(&committed("sms_panic")).unwrap();
    assert_eq!(either.body().counter, 1);
    assert_eq!(either.not_before(), None);

    let query = check::<StatusQuery>("status_query", device.verifying_key());
    let me = TrusteeId::of_signer(room.verifying_key());
    let asked =
        sosvault::query::check::<StatusQuery>(query.as_bytes(), &me, ts(AT_STATUS_REPORT), 120)
            .unwrap();
    assert_eq!(asked.student(), student);
    assert_eq!(query.body().panic, panic.hash());
    let report = StatusReport::verify(&committed("status_report"), &room, &query).unwrap();
    assert!(report.stage.help_is_coming());
    assert_eq!((report.released, report.threshold), (2, THRESHOLD));

    // The chat: the device's chat key is HKDF of its seed under the info
    // and the panic's hash (PROTOCOL §6.3); the text opens with either end's
    // key to the plaintext of §9.6.
    let asked = check::<ChatQuery>("chat_query", device.verifying_key());
    let mut info = DeviceKey::CHAT_X25519_INFO.as_bytes().to_vec();
    info.extend_from_slice(panic.hash().as_bytes());
    let phone_scalar = hkdf_sha256_32(&DEVICE_SEED, &info);
    assert_eq!(
        asked.body().reply_to.to_bytes(),
        x25519_dalek::x25519(phone_scalar, x25519_dalek::X25519_BASEPOINT_BYTES)
    );
    assert_eq!((asked.body().panic, asked.body().from), (panic.hash(), 0));
    let sealed = committed("sealed_chat_text");
    for scalar in [phone_scalar, CHAT_SCALAR] {
        assert_eq!(
            open_with_scalar(&scalar, &sealed).unwrap(),
            committed("chat_text")
        );
    }
    let chat = check::<ChatMessage>("chat", device.verifying_key());
    assert_eq!((chat.body().panic, chat.body().counter), (panic.hash(), 8));
    assert_eq!(chat.body().sealed, sealed);
    let log = ChatLog::verify(&committed("chat_log"), &room, &asked).unwrap();
    assert_eq!(log.recipient, Some(chat_key().recipient()));
    assert_eq!(log.entries.len(), 1);
    assert_eq!(
        (log.entries[0].from, &log.entries[0].sealed),
        (ChatFrom::Student, &sealed)
    );
    let lines = Device::new(device_key()).open_chat(panic.hash(), &log);
    assert_eq!(lines[0].as_ref().unwrap().text.as_str(), CHAT_TEXT);

    let request = check::<ReleaseRequest>("release_request", room.verifying_key());
    assert_eq!(
        request.body().panic.as_bytes(),
        panic.as_bytes(),
        "the whole panic is embedded"
    );
    assert_eq!(request.body().incident, IncidentId::from_bytes(INCIDENT_ID));
    assert_eq!(request.body().recipient, incident_key().recipient());
    assert_eq!(request.body().issued_at, ts(AT_REQUEST));

    let release = check::<Release>("release", t1.verifying_key());
    let b = release.body();
    assert_eq!((b.student, b.epoch, b.share_index), (student, EPOCH, 1));
    assert_eq!(
        (b.panic, b.incident),
        (panic.hash(), request.body().incident)
    );
    assert_eq!(b.recipient, incident_key().recipient());
    assert_eq!(b.sealed_share, committed("sealed_released_share"));

    let receipt = check::<ShareReceipt>("share_receipt", t1.verifying_key());
    assert_eq!(receipt.body().commitment, r.trustees[0].commitment);
    let shred = check::<ShredReceipt>("shred_receipt", t1.verifying_key());
    assert_eq!(shred.body().stop, stop.hash());
    assert_eq!(shred.body().student, student);
    let commit = check::<EnrollmentCommit>("enrollment_commit", device.verifying_key());
    assert_eq!(commit.body().epoch, EPOCH);
    assert_eq!(commit.body().record, record.hash());
    let revoked = check::<CancelReceipt>("cancel_receipt", t1.verifying_key());
    let cancel = Signed::<Cancel>::decode(&committed("cancel")).unwrap();
    assert_eq!(
        (
            revoked.body().student,
            revoked.body().cancel,
            revoked.body().counter
        ),
        (student, cancel.hash(), cancel.body().counter)
    );

    // A message of one kind never decodes as another.
    assert!(Signed::<Cancel>::decode(&committed("location")).is_err());
    assert!(Signed::<PanicEvent>::decode(&committed("stop")).is_err());
    // The same layout, another tag: a stop is no trail point, nor the reverse.
    assert!(Signed::<TrailPoint>::decode(&committed("stop")).is_err());
    assert!(Signed::<Stop>::decode(&committed("trail")).is_err());
}

#[test]
fn committed_containers_keys_and_state_round_trip() {
    if regenerating() {
        return;
    }
    let package_bytes = committed("enrollment_package");
    let package = EnrollmentPackage::from_bytes(&package_bytes).unwrap();
    assert_eq!(package.to_bytes(), package_bytes);
    assert_eq!(package.record.as_bytes(), &committed("enrollment")[..]);
    assert_eq!(package.sealed_profile, committed("sealed_profile"));
    assert_eq!(
        package.sealed_shares[0],
        committed("sealed_share_for_trustee")
    );
    assert!(package.profile_matches());

    let delivery_bytes = committed("share_delivery");
    let delivery = ShareDelivery::from_bytes(&delivery_bytes).unwrap();
    assert_eq!(delivery.to_bytes(), delivery_bytes);
    assert_eq!(delivery, package.delivery(1).unwrap());

    let dk = DeviceKey::from_secret_bytes(&committed("device_key")).unwrap();
    assert_eq!(&dk.to_secret_bytes()[..], &committed("device_key")[..]);
    assert_eq!(dk.public(), device_key().public());
    let vk = VaultKey::from_secret_bytes(&committed("vault_key")).unwrap();
    assert_eq!(vk.recipient(), vault_key().recipient());
    let tk = TrusteeKey::from_secret_bytes(&committed("trustee_key")).unwrap();
    assert_eq!(tk.public(), trustee_key(0).public());
    let ck = ControlRoomKey::from_secret_bytes(&committed("control_room_key")).unwrap();
    assert_eq!(ck.public(), control_room_key().public());
    let ik = IncidentKey::from_secret_bytes(&committed("incident_key")).unwrap();
    assert_eq!(ik.recipient(), incident_key().recipient());
    let tp = TrusteePublic::from_bytes(&committed("trustee_public")).unwrap();
    assert_eq!(tp.to_bytes(), committed("trustee_public"));
    let cp = ControlRoomPublic::from_bytes(&committed("control_room_public")).unwrap();
    assert_eq!(cp.to_bytes(), committed("control_room_public"));
    // Key files of one kind are not accepted as another.
    assert!(ControlRoomKey::from_secret_bytes(&committed("trustee_key")).is_err());
    assert!(TrusteePublic::from_bytes(&committed("control_room_public")).is_err());

    // The manifest verifies under the fixed authority and names the fixed parties.
    let m = Manifest::verify(
        &committed("manifest"),
        &AuthorityKey::from_secret_bytes(&committed("authority_key"))
            .unwrap()
            .public(),
        ts(AT_PANIC),
    )
    .unwrap();
    assert_eq!(m.manifest(), &manifest());
    assert_eq!(m.signed().as_bytes(), &committed("manifest")[..]);

    // A device state written by version 1 still loads (kept, not rebuilt).
    let v1 = hex::decode(
        std::fs::read_to_string(vector_path("device_state_v1"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let old = Device::from_secret_bytes(&v1).unwrap();
    assert_eq!((old.epoch(), old.counter()), (EPOCH, 3));
    assert_eq!(old.vault_recipient(), Some(&vault_key().recipient()));
    assert_eq!(old.manifest(), None);

    let state_bytes = committed("device_state");
    let device = Device::from_secret_bytes(&state_bytes).unwrap();
    assert_eq!(&device.to_secret_bytes()[..], &state_bytes[..]);
    assert_eq!((device.epoch(), device.counter()), (EPOCH, 3));
    assert_eq!(device.student_id(), student());
    assert_eq!(device.vault_recipient(), Some(&vault_key().recipient()));

    let entry_bytes = committed("trustee_entry");
    let entry = StudentEntry::from_secret_bytes(&entry_bytes).unwrap();
    assert_eq!(&entry.to_secret_bytes()[..], &entry_bytes[..]);
    assert_eq!(entry.student(), student());
    assert_eq!(entry.epoch(), Some(EPOCH));
    assert!(entry.holds_share());
    assert_eq!(entry.highest_counter(), 1);
    assert_eq!(
        entry.record().unwrap().as_bytes(),
        &committed("enrollment")[..]
    );
    assert_eq!(
        entry.last_release().unwrap().as_bytes(),
        &committed("release")[..]
    );
    assert!(entry.tombstone().is_none());

    assert_eq!(
        Location::from_bytes(&committed("location_fix")).unwrap(),
        location()
    );
    assert_eq!(Note::from_bytes(&committed("note")).unwrap(), note());
    assert!(Profile::from_bytes(&committed("profile")).unwrap() == kota_profile());
}

/// Each sealed vector opens with its fixed key to exactly the expected plaintext,
/// and with no other party's key.
#[test]
fn sealed_vectors_open_with_the_fixed_keys() {
    if regenerating() {
        return;
    }
    let room = control_room_key();
    let loc = room.open_location(&committed("sealed_location")).unwrap();
    assert_eq!(loc.to_bytes(), committed("location_fix"));
    assert_eq!((loc.lat(), loc.lon(), loc.accuracy_m), (25.1425, 75.835, 8));
    let note = room.open_note(&committed("sealed_note")).unwrap();
    assert_eq!(note.to_bytes(), committed("note"));
    assert!(note.duress);

    let profile = vault_key()
        .open(&committed("sealed_profile"), 1 << 20)
        .unwrap();
    assert_eq!(&profile[..], &committed("profile")[..]);
    let trail = Signed::<TrailPoint>::decode(&committed("trail")).unwrap();
    let point = trail.body().open(&vault_key()).unwrap();
    assert_eq!(point.to_bytes(), committed("location_fix"));
    // The control room's own key does not open the trail.
    assert!(
        room.open_location(&committed("sealed_trail_location"))
            .is_err()
    );

    let shares = shares();
    let share_pt = open_with_scalar(
        &trustee_x25519_scalar(0),
        &committed("sealed_share_for_trustee"),
    )
    .unwrap();
    assert_eq!(share_pt, share_for_trustee_plaintext(&shares[0]));

    let panic = Signed::<PanicEvent>::decode(&committed("panic")).unwrap();
    let released = open_with_scalar(&INCIDENT_SCALAR, &committed("sealed_released_share")).unwrap();
    assert_eq!(
        released,
        released_share_plaintext(&panic.hash(), &shares[0])
    );

    // The check-in's notes: each trustee opens its own, to the duress note.
    let check_in = Signed::<CheckIn>::decode(&committed("check_in")).unwrap();
    assert_eq!(check_in.body().trustee_notes.len(), 3);
    for (i, (name, public)) in TRUSTEE_NOTES.iter().zip(trustee_publics()).enumerate() {
        let note = check_in.body().note_for(&public.id()).unwrap();
        assert_eq!(note, &committed(name)[..]);
        assert_eq!(
            open_with_scalar(&trustee_x25519_scalar(i), note).unwrap(),
            committed("note")
        );
    }
    assert_eq!(check_in.body().sealed_note, committed("sealed_note"));

    // Nobody else opens them.
    for name in [
        "sealed_location",
        "sealed_note",
        "sealed_share_for_trustee",
        "sealed_released_share",
        "sealed_profile",
        "sealed_trail_location",
        "sealed_trustee_note_1",
        "sealed_trustee_note_2",
        "sealed_trustee_note_3",
    ] {
        let ct = committed(name);
        let openers: [(&str, [u8; 32]); 3] = [
            ("vault", VAULT_SCALAR),
            ("incident", INCIDENT_SCALAR),
            ("trustee 2", trustee_x25519_scalar(1)),
        ];
        let expected_opener = match name {
            "sealed_profile" | "sealed_trail_location" => Some("vault"),
            "sealed_released_share" => Some("incident"),
            "sealed_trustee_note_2" => Some("trustee 2"),
            _ => None,
        };
        for (who, scalar) in openers {
            if Some(who) != expected_opener {
                assert!(
                    open_with_scalar(&scalar, &ct).is_none(),
                    "{name} opened by {who}"
                );
            }
        }
    }
}

/// The real trustee and opener, run on the vectors: trustees accept the
/// deliveries (so every sealed share matches its commitment), trustee 1's
/// answers equal the vectors, and two releases open the vault to the fixed
/// vault key, which opens the sealed profile.
#[test]
fn trustees_and_opener_agree_with_the_vectors() {
    if regenerating() {
        return;
    }
    let package = EnrollmentPackage::from_bytes(&committed("enrollment_package")).unwrap();
    let mut trustees: Vec<InMemoryTrustee> =
        (0..3).map(|i| InMemoryTrustee::new(trustee(i))).collect();
    for (i, t) in trustees.iter_mut().enumerate() {
        let delivery = package.delivery(i as u8 + 1).unwrap().to_bytes();
        let receipt = t.accept_share(&delivery, ts(AT_STORED)).unwrap();
        if i == 0 {
            assert_eq!(receipt.as_bytes(), &committed("share_receipt")[..]);
            assert_eq!(delivery, committed("share_delivery"));
        }
    }

    let request = committed("release_request");
    let fixed_release = Signed::<Release>::decode(&committed("release")).unwrap();
    let fresh = trustees[0].release(&request, ts(AT_RELEASE)).unwrap();
    // The same release but for age's randomness.
    let mut body = fresh.body().clone();
    assert_ne!(body.sealed_share, fixed_release.body().sealed_share);
    body.sealed_share = fixed_release.body().sealed_share.clone();
    assert_eq!(
        Signed::sign(body, &trustee_key(0)).as_bytes(),
        fixed_release.as_bytes()
    );

    let record = package.record.clone();
    let panic = Signed::<PanicEvent>::decode(&committed("panic")).unwrap();
    let incident = incident_key();
    let mut opener = Opener::new(
        &record,
        panic.hash(),
        IncidentId::from_bytes(INCIDENT_ID),
        &incident,
    );
    let progress = opener.add(fixed_release.as_bytes()).unwrap();
    assert_eq!((progress.index, progress.have, progress.need), (1, 1, 2));
    assert!(opener.open().is_err(), "one share opens nothing");
    let second = trustees[1].release(&request, ts(AT_RELEASE)).unwrap();
    opener.add(second.as_bytes()).unwrap();
    let vault = opener.open().unwrap();
    assert_eq!(&vault.to_secret_bytes()[..], &committed("vault_key")[..]);
    let profile = vault.open(&package.sealed_profile, 1 << 20).unwrap();
    assert_eq!(&profile[..], &committed("profile")[..]);

    // The cancel, forwarded, revokes the panic: its receipt is the vector, and
    // the release is refused from then on.
    let revoked = trustees[0]
        .cancel(&committed("cancel"), ts(AT_REVOKE))
        .unwrap();
    assert_eq!(revoked.as_bytes(), &committed("cancel_receipt")[..]);
    assert!(trustees[0].release(&request, ts(AT_REVOKE)).is_err());

    // The stop shreds, and the receipt is the vector.
    let receipt = trustees[0].shred(&committed("stop"), ts(AT_SHRED)).unwrap();
    assert_eq!(receipt.as_bytes(), &committed("shred_receipt")[..]);
    // The device counters carried by the vectors only grow.
    macro_rules! counter {
        ($m:ty, $name:literal) => {
            Signed::<$m>::decode(&committed($name))
                .unwrap()
                .body()
                .counter
        };
    }
    let counters = [
        counter!(PanicEvent, "panic"),
        counter!(LocationUpdate, "location"),
        counter!(Cancel, "cancel"),
        counter!(TrailPoint, "trail"),
        Signed::<TimedPanic>::decode(&committed("timed_panic"))
            .unwrap()
            .body()
            .panic
            .counter,
        counter!(CheckIn, "check_in"),
        counter!(Stop, "stop"),
    ];
    assert_eq!(counters, [1, 2, 3, 4, 5, 6, 7]);
}

/// Every derivation in `docs/PROTOCOL.md`, recomputed here from its written
/// definition (SHA-256, HMAC and HKDF built by hand on plain SHA-256), agrees
/// with the crate.
#[test]
fn derivations_match_the_document() {
    if regenerating() {
        return;
    }
    // RFC 5869, test case 3 (no salt, no info): our HKDF is standard HKDF.
    assert_eq!(
        hex::encode(hkdf_sha256_32(&[0x0b; 22], b"")),
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
    );

    // Trustee and control room: one seed, HKDF into ed25519 and X25519.
    assert_eq!(TrusteeKey::ED25519_INFO, "sosvault/trustee-key/v1/ed25519");
    assert_eq!(TrusteeKey::X25519_INFO, "sosvault/trustee-key/v1/x25519");
    assert_eq!(
        ControlRoomKey::ED25519_INFO,
        "sosvault/control-room-key/v1/ed25519"
    );
    assert_eq!(
        ControlRoomKey::X25519_INFO,
        "sosvault/control-room-key/v1/x25519"
    );
    for (seed, public, tag, ed_info, x_info) in [
        (
            TRUSTEE_SEEDS[0],
            trustee_key(0).public().to_bytes(),
            TrusteePublic::TAG,
            TrusteeKey::ED25519_INFO,
            TrusteeKey::X25519_INFO,
        ),
        (
            CONTROL_ROOM_SEED,
            control_room_key().public().to_bytes(),
            ControlRoomPublic::TAG,
            ControlRoomKey::ED25519_INFO,
            ControlRoomKey::X25519_INFO,
        ),
    ] {
        let mut expected = tag_bytes(tag);
        expected.extend_from_slice(&ed25519_public(&hkdf_sha256_32(&seed, ed_info.as_bytes())));
        expected.extend_from_slice(&x25519_public(&hkdf_sha256_32(&seed, x_info.as_bytes())));
        assert_eq!(public, expected, "{tag}");
    }
    assert_eq!(
        committed("trustee_public"),
        trustee_key(0).public().to_bytes()
    );
    // Log keys: their own info strings.
    assert_eq!(
        trustee_key(0).log_key().public().to_bytes(),
        ed25519_public(&hkdf_sha256_32(
            &TRUSTEE_SEEDS[0],
            TrusteeKey::LOG_ED25519_INFO.as_bytes()
        ))
    );
    assert_eq!(
        control_room_key().log_key().public().to_bytes(),
        ed25519_public(&hkdf_sha256_32(
            &CONTROL_ROOM_SEED,
            ControlRoomKey::LOG_ED25519_INFO.as_bytes()
        ))
    );

    // Device: the seed is the ed25519 seed; the student id is a tagged hash of the public key.
    let device_pk = ed25519_public(&DEVICE_SEED);
    assert_eq!(device_key().public().to_bytes(), device_pk);
    assert_eq!(
        *student().as_bytes(),
        tagged_hash("sosvault/student-id/v1", &[&device_pk])
    );
    // Trustee id: a tagged hash of the trustee's ed25519 key.
    let t_pk = ed25519_public(&hkdf_sha256_32(
        &TRUSTEE_SEEDS[0],
        TrusteeKey::ED25519_INFO.as_bytes(),
    ));
    assert_eq!(
        *trustee_key(0).id().as_bytes(),
        tagged_hash("sosvault/trustee-id/v1", &[&t_pk])
    );
    assert_eq!(
        trustee_key(0).id(),
        TrusteeId::of_signer(&ed25519_dalek::VerifyingKey::from_bytes(&t_pk).unwrap())
    );
    // Vault and incident recipients: X25519 of the scalar.
    assert_eq!(
        vault_key().recipient().to_bytes(),
        x25519_public(&VAULT_SCALAR)
    );
    assert_eq!(
        incident_key().recipient().to_bytes(),
        x25519_public(&INCIDENT_SCALAR)
    );
    // Share commitments.
    assert_eq!(sosvault::COMMITMENT_TAG, "sosvault/share-commitment/v1");
    let record = Signed::<EnrollmentRecord>::decode(&committed("enrollment")).unwrap();
    for (share, slot) in shares().iter().zip(&record.body().trustees) {
        let expected = tagged_hash(
            "sosvault/share-commitment/v1",
            &[
                student().as_bytes(),
                &EPOCH.to_be_bytes(),
                &[share.index],
                &share.y[..],
            ],
        );
        assert_eq!(slot.commitment, ShareCommitment::from_bytes(expected));
    }
    // Message hash: plain SHA-256 of the envelope's bytes.
    let panic_bytes = committed("panic");
    let panic = Signed::<PanicEvent>::decode(&panic_bytes).unwrap();
    assert_eq!(*panic.hash().as_bytes(), sha256(&[&panic_bytes]));
    // The shares are points of a line over GF(2^8) with the AES polynomial
    // x^8 + x^4 + x^3 + x + 1, whose value at x = 0 is the vault scalar.
    let s = shares();
    for (byte, &secret) in VAULT_SCALAR.iter().enumerate() {
        let slope = s[0].y[byte] ^ secret; // f(1) = s + a
        for share in &s {
            assert_eq!(
                share.y[byte],
                secret ^ gf256_mul(slope, share.index),
                "share {} byte {byte}",
                share.index
            );
        }
    }
    // And vsss-rs rebuilds the scalar from any two.
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let pair = [
            RawShare {
                index: s[a].index,
                y: s[a].y.clone(),
            },
            RawShare {
                index: s[b].index,
                y: s[b].y.clone(),
            },
        ];
        assert_eq!(*combine_shares(&pair).unwrap(), VAULT_SCALAR);
    }
}

/// The tags and body limits the document lists.
#[test]
fn tags_and_limits_match_the_document() {
    fn tag<M: Message>() -> (&'static str, usize) {
        (M::TAG, M::MAX_BODY)
    }
    assert_eq!(tag::<EnrollmentRecord>(), ("sosvault/enrollment/v1", 1106));
    assert_eq!(tag::<PanicEvent>(), ("sosvault/panic/v1", 2073));
    assert_eq!(tag::<LocationUpdate>(), ("sosvault/location/v1", 2100));
    assert_eq!(tag::<Cancel>(), ("sosvault/cancel/v1", 2100));
    assert_eq!(tag::<Stop>(), ("sosvault/stop/v1", 2072));
    assert_eq!(tag::<TrailPoint>(), ("sosvault/trail/v1", 2072));
    assert_eq!(tag::<TimedPanic>(), ("sosvault/timed-panic/v1", 2081));
    assert_eq!(tag::<CheckIn>(), ("sosvault/check-in/v1", 35445));
    assert_eq!(
        tag::<ReleaseRequest>(),
        ("sosvault/release-request/v1", 4156)
    );
    assert_eq!(tag::<Release>(), ("sosvault/release/v1", 2177));
    assert_eq!(tag::<ShredReceipt>(), ("sosvault/shred-receipt/v1", 76));
    assert_eq!(tag::<ShareReceipt>(), ("sosvault/share-receipt/v1", 77));
    assert_eq!(
        <ShareDelivery as Container>::TAG,
        "sosvault/share-delivery/v1"
    );
    assert_eq!(
        <EnrollmentPackage as Container>::TAG,
        "sosvault/enrollment-package/v1"
    );
}

/// `docs/PROTOCOL.md` lists every vector with its SHA-256; they must agree.
#[test]
fn the_document_lists_every_vector_hash() {
    if regenerating() {
        return;
    }
    let doc_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/PROTOCOL.md");
    let Ok(doc) = std::fs::read_to_string(&doc_path) else {
        panic!("docs/PROTOCOL.md is missing");
    };
    let committed: BTreeMap<&str, Vec<u8>> = NAMES.iter().map(|n| (*n, committed(n))).collect();
    let mut wrong = Vec::new();
    for (name, bytes) in &committed {
        let digest = hex::encode(sha256(&[bytes]));
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}.hex` |")));
        if !row.is_some_and(|r| r.contains(&digest)) {
            wrong.push(*name);
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/PROTOCOL.md has no or a stale row for {wrong:?}; the table is:\n{}",
        vector_table(&committed)
    );
}

/// The "Test vectors" table of `docs/PROTOCOL.md`.
fn vector_table(vectors: &BTreeMap<&str, Vec<u8>>) -> String {
    let mut out =
        String::from("| file | bytes | first bytes | SHA-256 |\n| --- | --- | --- | --- |\n");
    for name in NAMES {
        let bytes = &vectors[name];
        out.push_str(&format!(
            "| `{name}.hex` | {} | `{}` | `{}` |\n",
            bytes.len(),
            hex::encode(&bytes[..bytes.len().min(12)]),
            hex::encode(sha256(&[bytes]))
        ));
    }
    out
}
