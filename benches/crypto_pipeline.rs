//! The crypto pipeline measured against its own primitives, in one run.
//!
//! ```text
//! cargo bench --bench crypto_pipeline              # full run (~3-4 minutes), prints the ratio table
//! cargo bench --bench crypto_pipeline -- --test    # quick check: every routine runs once
//! ```
//!
//! Three kinds of benchmark run side by side:
//!
//! - `primitives`: the raw operations from the crates we build on (X25519, ed25519, age),
//!   called directly.
//! - `shamir`: a 32-byte GF(256) split and combine with vsss-rs (directly and through
//!   `sosvault::hazmat`), sharks 0.5 and blahaj 0.7.
//! - `operations`: our four hot operations (enroll, a trustee's release, the control
//!   room's open, a shred), plus `pieces` that split them for attribution.
//!
//! After the groups run, `main` reads criterion's estimates *of this run* (files
//! older than the run are ignored) and prints, for each operation, its median time,
//! the sum of the medians of the primitives it must do ([`COUNTS`], derived from
//! `crates/sosvault/src` and explained in `docs/BENCHMARKS.md`), and the ratio.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use criterion::Criterion;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand::RngExt as _;
use sosvault::hazmat;
use sosvault::{
    Category, Container, ControlRoomKey, Device, DeviceKey, EnrollmentPackage, IncidentId,
    IncidentKey, IncidentRecipient, Location, MessageHash, Opener, Policy, StudentEntry,
    TimeLimits, Timestamp, Trustee, TrusteeKey, TrusteePublic,
};
use vsss_rs::Gf256;

#[path = "../tests/common/kota_profile.rs"]
mod kota_profile;
use kota_profile::kota_profile;

/// The fixed clock of the benchmark world (every check passes against it).
const NOW: Timestamp = Timestamp(1_790_000_000);
/// Size of the messages signed and verified by the ed25519 primitives: about the
/// size of a release request or a release (a few hundred bytes, see the doc).
const SIGNED_LEN: usize = 512;
/// Size of the small plaintexts sealed to a trustee or an incident (a share with
/// its binding: 100-130 bytes).
const SMALL_LEN: usize = 128;
/// Target size of the student's profile.
const PROFILE_LEN: usize = 1024;

// ------------------------------------------------------------------ primitives

fn random_32() -> [u8; 32] {
    rand::rng().random()
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill(&mut v[..]);
    v
}

fn primitives<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group("primitives");

    // X25519 (x25519-dalek 2).
    let secret = x25519_dalek::StaticSecret::from(random_32());
    let peer = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(random_32()));
    g.bench_function("x25519_keygen", |b| {
        b.iter(|| x25519_dalek::PublicKey::from(black_box(&secret)))
    });
    g.bench_function("x25519_dh", |b| {
        b.iter(|| black_box(&secret).diffie_hellman(black_box(&peer)))
    });

    // ed25519 (ed25519-dalek 2). Verification is variable-time (a double-scalar
    // multiplication whose cost depends on the scalars), so verify and key decode cycle
    // through 64 different keys, messages and signatures rather than time one lucky or
    // unlucky signature.
    let set: Vec<(SigningKey, Vec<u8>, Signature)> = (0..64)
        .map(|_| {
            let key = SigningKey::from_bytes(&random_32());
            let msg = random_bytes(SIGNED_LEN);
            let sig = key.sign(&msg);
            (key, msg, sig)
        })
        .collect();
    let verifying: Vec<(VerifyingKey, [u8; 32])> = set
        .iter()
        .map(|(k, _, _)| (k.verifying_key(), k.verifying_key().to_bytes()))
        .collect();
    let (key, msg, _) = &set[0];
    g.bench_function("ed25519_sign", |b| b.iter(|| key.sign(black_box(msg))));
    let mut i = 0;
    g.bench_function("ed25519_verify_strict", |b| {
        b.iter(|| {
            i = (i + 1) % set.len();
            let (_, msg, sig) = &set[i];
            verifying[i].0.verify_strict(black_box(msg), sig).unwrap()
        })
    });
    // What decoding a signer from the wire costs: point decompression plus the
    // weak-key check every sosvault decoder makes.
    let mut i = 0;
    g.bench_function("ed25519_key_decode", |b| {
        b.iter(|| {
            i = (i + 1) % verifying.len();
            let k = VerifyingKey::from_bytes(black_box(&verifying[i].1)).unwrap();
            assert!(!k.is_weak());
            k
        })
    });
    for n in [3usize, 64] {
        let keys: Vec<SigningKey> = (0..n)
            .map(|_| SigningKey::from_bytes(&random_32()))
            .collect();
        let msgs: Vec<Vec<u8>> = (0..n).map(|_| random_bytes(SIGNED_LEN)).collect();
        let sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        let publics: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        ed25519_dalek::verify_batch(&refs, &sigs, &publics).unwrap();
        g.bench_function(format!("ed25519_batch_verify_{n}"), |b| {
            b.iter(|| ed25519_dalek::verify_batch(black_box(&refs), &sigs, &publics).unwrap())
        });
    }

    // age 0.12 to an X25519 recipient: one ephemeral keygen and one agreement to
    // encrypt; one agreement and one public-key derivation (age recomputes the
    // identity's public key for the HKDF salt) to decrypt.
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    for (name, len) in [("1KiB", PROFILE_LEN), ("128B", SMALL_LEN)] {
        let plaintext = random_bytes(len);
        let ciphertext = age::encrypt(&recipient, &plaintext).unwrap();
        assert_eq!(age::decrypt(&identity, &ciphertext).unwrap(), plaintext);
        g.bench_function(format!("age_encrypt_{name}"), |b| {
            b.iter(|| age::encrypt(&recipient, black_box(&plaintext)).unwrap())
        });
        g.bench_function(format!("age_decrypt_{name}"), |b| {
            b.iter(|| age::decrypt(&identity, black_box(&ciphertext)).unwrap())
        });
    }

    // HPKE (RFC 9180 base mode, X25519 / HKDF-SHA256 / ChaCha20-Poly1305)
    // of the 20 bytes of a location fix with a 32-byte aad, as an SMS
    // panic seals it: one ephemeral keygen and one agreement to seal, one
    // agreement to open.
    type Kem = hpke::kem::X25519HkdfSha256;
    type Aead = hpke::aead::ChaCha20Poly1305;
    type Kdf = hpke::kdf::HkdfSha256;
    let (sk, pk) = <Kem as hpke::Kem>::gen_keypair(&mut rand_core_06::OsRng);
    let (fields, aad, info) = (random_bytes(20), random_bytes(32), b"bench");
    let seal = || {
        hpke::single_shot_seal::<Aead, Kdf, Kem, _>(
            &hpke::OpModeS::Base,
            &pk,
            info,
            &fields,
            &aad,
            &mut rand_core_06::OsRng,
        )
        .unwrap()
    };
    let (enc, ct) = seal();
    g.bench_function("hpke_seal_20B", |b| b.iter(seal));
    g.bench_function("hpke_open_20B", |b| {
        b.iter(|| {
            hpke::single_shot_open::<Aead, Kdf, Kem>(
                &hpke::OpModeR::Base,
                &sk,
                &enc,
                info,
                black_box(&ct),
                &aad,
            )
            .unwrap()
        })
    });
    g.finish();
}

/// Split and combine through a crate with the `sharks` API (`Sharks(t)`, a
/// `dealer` iterator, `recover`). sharks and its fork blahaj share that API
/// but no trait, hence a macro rather than a generic fn.
macro_rules! bench_sharks_api {
    ($g:expr, $krate:ident, $secret:expr, $t:expr, $n:expr) => {{
        let (secret, t, n) = (&$secret, $t, $n);
        let dealer = $krate::Sharks(t as u8);
        let shares: Vec<$krate::Share> = dealer.dealer(secret).take(n).collect();
        assert_eq!(dealer.recover(&shares[..t]).unwrap(), *secret);
        let name = stringify!($krate);
        $g.bench_function(format!("{name}_split_{t}of{n}"), |b| {
            b.iter(|| dealer.dealer(black_box(secret)).take(n).collect::<Vec<_>>())
        });
        $g.bench_function(format!("{name}_combine_{t}of{n}"), |b| {
            b.iter(|| dealer.recover(black_box(&shares[..t])).unwrap())
        });
    }};
}

fn shamir<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group("shamir");
    let secret = random_32();
    for (t, n) in [(2usize, 3usize), (3, 5)] {
        // vsss-rs 6, directly: what sosvault's escrow calls.
        let shares = Gf256::split_array(t, n, secret, rand::rng()).unwrap();
        assert_eq!(Gf256::combine_array(&shares[..t]).unwrap(), secret);
        g.bench_function(format!("vsss_split_{t}of{n}"), |b| {
            b.iter(|| Gf256::split_array(t, n, black_box(secret), rand::rng()).unwrap())
        });
        g.bench_function(format!("vsss_combine_{t}of{n}"), |b| {
            b.iter(|| Gf256::combine_array(black_box(&shares[..t])).unwrap())
        });

        // The same through sosvault::hazmat (our share layout and zeroizing buffers).
        let raw = hazmat::split_secret(&secret, t, n).unwrap();
        assert_eq!(*hazmat::combine_shares(&raw[..t]).unwrap(), secret);
        g.bench_function(format!("hazmat_split_{t}of{n}"), |b| {
            b.iter(|| hazmat::split_secret(black_box(&secret), t, n).unwrap())
        });
        g.bench_function(format!("hazmat_combine_{t}of{n}"), |b| {
            b.iter(|| hazmat::combine_shares(black_box(&raw[..t])).unwrap())
        });

        // sharks 0.5 (biased coefficients; see escrow.rs for why we do not use it).
        bench_sharks_api!(g, sharks, secret, t, n);
        // blahaj 0.7 (unbiased, table-based GF(256) arithmetic).
        bench_sharks_api!(g, blahaj, secret, t, n);
    }
    g.finish();
}

// ------------------------------------------------------------------ our operations

/// A realistic profile of about [`PROFILE_LEN`] bytes once encoded.
fn profile_bytes() -> Vec<u8> {
    let mut p = kota_profile();
    p.address = "12 Gandhi Nagar, Jaipur, Rajasthan 302015".into();
    p.medical_notes = "Asthma (salbutamol inhaler, two puffs as needed); allergic to \
                       penicillin and sulfa drugs. "
        .into();
    while p.to_bytes().len() < PROFILE_LEN {
        p.medical_notes
            .push_str("Emergency contact at the institute: counsellor's desk. ");
    }
    let bytes = p.to_bytes().to_vec();
    assert!((PROFILE_LEN..PROFILE_LEN + 80).contains(&bytes.len()));
    bytes
}

/// One enrolled student, three trustees, a panic, a release request, two releases
/// and a stop, all valid at [`NOW`].
struct World {
    profile: Vec<u8>,
    trustees: Vec<Trustee>,
    publics: Vec<TrusteePublic>,
    package: EnrollmentPackage,
    /// The entry each trustee holds after accepting its share.
    entries: Vec<StudentEntry>,
    request: Vec<u8>,
    panic_hash: MessageHash,
    incident: IncidentId,
    incident_key: IncidentKey,
    releases: Vec<Vec<u8>>,
    stop: Vec<u8>,
    control_room: ControlRoomKey,
    /// The same press's twin, as the SMS gateway hands it over.
    sms_text: String,
    /// The incident's chat key, and a student's chat text to it (128 bytes
    /// of text, sealed to both ends, signed).
    chat_key: sosvault::chat::ChatKey,
    chat_message: Vec<u8>,
}

impl World {
    fn new() -> Self {
        let profile = profile_bytes();
        let control_room = ControlRoomKey::generate();
        let trustees: Vec<Trustee> = (0..3)
            .map(|_| {
                Trustee::new(
                    TrusteeKey::generate(),
                    vec![control_room.public()],
                    TimeLimits::default(),
                )
            })
            .collect();
        let publics: Vec<TrusteePublic> = trustees.iter().map(|t| t.key().public()).collect();
        let mut device = Device::new(DeviceKey::generate());
        let package = device
            .enroll(&profile, &publics, 2, Policy::default(), NOW)
            .unwrap()
            .package;
        let entries: Vec<StudentEntry> = trustees
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let delivery = package.delivery(i as u8 + 1).unwrap().to_bytes();
                t.accept_share(None, &delivery, NOW).unwrap().entry
            })
            .collect();
        let here = Location::new(25.1425, 75.8350, 10, NOW).unwrap();
        let panic = device
            .panic(Category::Police, &here, &control_room.public(), NOW)
            .unwrap();
        let incident = IncidentId::random();
        let incident_key = IncidentKey::generate();
        let request = control_room
            .release_request(&panic, incident, &incident_key, NOW)
            .as_bytes()
            .to_vec();
        let releases: Vec<Vec<u8>> = trustees[..2]
            .iter()
            .zip(&entries)
            .map(|(t, e)| {
                let checked = t.check_request(&request, NOW).unwrap();
                let out = t.release(Some(e), &checked, NOW).unwrap();
                out.answer.as_bytes().to_vec()
            })
            .collect();
        let channel = control_room.sms_channel("+917440000100", NOW).unwrap();
        let channel =
            sosvault::sms::SmsChannel::verify(channel.as_bytes(), &control_room.public()).unwrap();
        let (_, sms) = device
            .panic_with_sms(
                Category::Police,
                &here,
                &control_room.public(),
                &channel,
                NOW,
            )
            .unwrap();
        let sms_text = sosvault::sms::to_text(&sms);
        let chat_key = sosvault::chat::ChatKey::generate();
        let chat_message = device
            .chat_message(
                panic.hash(),
                &chat_key.recipient(),
                &"a".repeat(SMALL_LEN),
                NOW,
            )
            .unwrap()
            .as_bytes()
            .to_vec();
        let stop = device
            .stop(false, &control_room.public(), NOW)
            .unwrap()
            .as_bytes()
            .to_vec();
        let world = Self {
            profile,
            trustees,
            publics,
            package,
            entries,
            request,
            panic_hash: panic.hash(),
            incident,
            incident_key,
            releases,
            stop,
            control_room,
            sms_text,
            chat_key,
            chat_message,
        };
        // The measured routines below must do the real work: check it once.
        assert_eq!(world.open(), world.profile);
        let t = world.release();
        assert!(!t.repeated && t.entry.highest_counter() == 1);
        assert_eq!(world.sms_open().lat(), here.lat());
        assert_eq!(world.chat_open(), SMALL_LEN);
        let s = world.shred();
        assert!(!s.repeated && !s.entry.holds_share() && s.entry.tombstone().is_some());
        world
    }

    /// A trustee's release: the stateless request checks, then the decision.
    fn release(&self) -> sosvault::Transition<sosvault::Release> {
        let trustee = &self.trustees[0];
        let checked = trustee.check_request(&self.request, NOW).unwrap();
        trustee
            .release(Some(&self.entries[0]), &checked, NOW)
            .unwrap()
    }

    /// The control room's open: two releases in, the key rebuilt, the profile opened.
    fn open(&self) -> Vec<u8> {
        let record = &self.package.record;
        let mut opener = Opener::new(record, self.panic_hash, self.incident, &self.incident_key);
        for release in &self.releases {
            opener.add(release).unwrap();
        }
        let vault = opener.open().unwrap();
        vault
            .open(&self.package.sealed_profile, 1 << 20)
            .unwrap()
            .to_vec()
    }

    /// The control room takes an SMS panic: the text read and its
    /// signature checked, then its location opened with the SMS key
    /// (derived from the control room's seed, as the service does per text).
    fn sms_open(&self) -> Location {
        let panic = sosvault::sms::from_text(&self.sms_text).unwrap();
        self.control_room
            .open_panic_location(&panic.into())
            .unwrap()
    }

    /// The control room takes a student's chat text: the message decoded
    /// and its signature checked, then the text opened with the incident's
    /// chat key (the device's own stanza comes first: one agreement that
    /// does not open it, then its own).
    fn chat_open(&self) -> usize {
        let m =
            sosvault::Signed::<sosvault::chat::ChatMessage>::decode(&self.chat_message).unwrap();
        sosvault::chat::open_chat_text(&self.chat_key, &m.body().sealed)
            .unwrap()
            .len()
    }

    /// A shred: the stop's checks, then the decision.
    fn shred(&self) -> sosvault::Transition<sosvault::ShredReceipt> {
        let checked = Trustee::check_stop(&self.stop).unwrap();
        self.trustees[0]
            .shred(Some(&self.entries[0]), &checked, NOW)
            .unwrap()
    }
}

fn operations<M: Measurement>(c: &mut Criterion<M>, w: &World) {
    let mut g = c.benchmark_group("operations");
    // Enrolling again bumps the device's epoch; nothing else carries over.
    let mut device = Device::new(DeviceKey::generate());
    g.bench_function("enroll_2of3", |b| {
        b.iter(|| {
            device
                .enroll(black_box(&w.profile), &w.publics, 2, Policy::default(), NOW)
                .unwrap()
        })
    });
    // `Trustee::release` is pure: it takes the entry by reference and returns the
    // next one, so the same enrolled entry and the same request (counter 1) take the
    // full release path on every iteration; no replay refusal can short-cut it.
    g.bench_function("trustee_release", |b| b.iter(|| w.release()));
    g.bench_function("control_room_open", |b| b.iter(|| w.open()));
    g.bench_function("trustee_shred", |b| b.iter(|| w.shred()));
    g.bench_function("control_room_sms_open", |b| b.iter(|| w.sms_open()));
    g.bench_function("control_room_chat_open", |b| b.iter(|| w.chat_open()));
    g.finish();
}

/// The operations cut into their parts, to attribute any overhead.
fn pieces<M: Measurement>(c: &mut Criterion<M>, w: &World) {
    let mut g = c.benchmark_group("pieces");
    let trustee = &w.trustees[0];
    g.bench_function("check_request", |b| {
        b.iter(|| trustee.check_request(black_box(&w.request), NOW).unwrap())
    });
    let checked = trustee.check_request(&w.request, NOW).unwrap();
    g.bench_function("release_decision", |b| {
        b.iter(|| trustee.release(Some(&w.entries[0]), &checked, NOW).unwrap())
    });
    let record = &w.package.record;
    g.bench_function("opener_add_one", |b| {
        b.iter(|| {
            let mut o = Opener::new(record, w.panic_hash, w.incident, &w.incident_key);
            o.add(black_box(&w.releases[0])).unwrap()
        })
    });
    let mut full = Opener::new(record, w.panic_hash, w.incident, &w.incident_key);
    for release in &w.releases {
        full.add(release).unwrap();
    }
    g.bench_function("opener_open", |b| b.iter(|| full.open().unwrap()));
    let vault = full.open().unwrap();
    g.bench_function("vault_open_profile", |b| {
        b.iter(|| {
            vault
                .open(black_box(&w.package.sealed_profile), 1 << 20)
                .unwrap()
        })
    });
    g.bench_function("incident_recipient", |b| {
        b.iter(|| black_box(&w.incident_key).recipient())
    });
    let recipient_bytes = w.incident_key.recipient().to_bytes();
    g.bench_function("incident_recipient_from_bytes", |b| {
        b.iter(|| IncidentRecipient::from_bytes(black_box(recipient_bytes)))
    });
    g.bench_function("check_stop", |b| {
        b.iter(|| Trustee::check_stop(black_box(&w.stop)).unwrap())
    });
    let stop = Trustee::check_stop(&w.stop).unwrap();
    g.bench_function("shred_decision", |b| {
        b.iter(|| {
            trustee
                .shred(Some(&w.entries[0]), black_box(&stop), NOW)
                .unwrap()
        })
    });
    g.finish();
}

// ------------------------------------------------------------------ the ratio table

/// The primitives each operation must do, read off `crates/sosvault/src`
/// (`docs/BENCHMARKS.md` walks through each line). Names are `group/bench`.
const COUNTS: &[(&str, &[(&str, u32)])] = &[
    (
        "operations/enroll_2of3",
        &[
            ("primitives/x25519_keygen", 1),    // the vault's public key
            ("shamir/vsss_split_2of3", 1),      // the vault key, 2-of-3
            ("primitives/age_encrypt_1KiB", 1), // the profile, to the vault
            ("primitives/age_encrypt_128B", 3), // one share per trustee
            ("primitives/ed25519_sign", 1),     // the enrollment record
        ],
    ),
    (
        "operations/trustee_release",
        &[
            ("primitives/ed25519_key_decode", 2), // control room + device keys
            ("primitives/ed25519_verify_strict", 2), // request + embedded panic
            ("primitives/age_encrypt_128B", 1),   // the share, to the incident key
            ("primitives/ed25519_sign", 1),       // the release
        ],
    ),
    (
        "operations/control_room_open",
        &[
            ("primitives/ed25519_key_decode", 2),    // two trustees' keys
            ("primitives/ed25519_verify_strict", 2), // two releases
            ("primitives/age_decrypt_128B", 2),      // two sealed shares
            ("shamir/vsss_combine_2of3", 1),         // the vault key
            ("primitives/x25519_keygen", 1),         // rebuilt key == record's recipient
            ("primitives/age_decrypt_1KiB", 1),      // the profile
        ],
    ),
    (
        "operations/control_room_sms_open",
        &[
            ("primitives/ed25519_key_decode", 1),    // the device key
            ("primitives/ed25519_verify_strict", 1), // the SMS panic
            ("primitives/x25519_keygen", 1),         // the SMS key, derived
            ("primitives/hpke_open_20B", 1),         // the location
        ],
    ),
    (
        "operations/control_room_chat_open",
        &[
            ("primitives/ed25519_key_decode", 1),    // the device key
            ("primitives/ed25519_verify_strict", 1), // the chat message
            // the device's stanza, tried first: age derives the identity's
            // public key for the salt, then the agreement, and it does not open
            ("primitives/x25519_keygen", 1),
            ("primitives/x25519_dh", 1),
            ("primitives/age_decrypt_128B", 1), // ours: the text
        ],
    ),
    (
        "operations/trustee_shred",
        &[
            ("primitives/ed25519_key_decode", 1),    // the device key
            ("primitives/ed25519_verify_strict", 1), // the stop
            ("primitives/ed25519_sign", 1),          // the shred receipt
        ],
    ),
];

/// The same for the pieces the operations are made of (attribution only).
const PIECE_COUNTS: &[(&str, &[(&str, u32)])] = &[
    (
        "pieces/check_request",
        &[
            ("primitives/ed25519_key_decode", 2),
            ("primitives/ed25519_verify_strict", 2),
        ],
    ),
    (
        "pieces/release_decision",
        &[
            ("primitives/age_encrypt_128B", 1),
            ("primitives/ed25519_sign", 1),
        ],
    ),
    (
        "pieces/opener_add_one",
        &[
            ("primitives/ed25519_key_decode", 1),
            ("primitives/ed25519_verify_strict", 1),
            ("primitives/age_decrypt_128B", 1),
        ],
    ),
    (
        "pieces/opener_open",
        &[
            ("shamir/vsss_combine_2of3", 1),
            ("primitives/x25519_keygen", 1),
        ],
    ),
    (
        "pieces/vault_open_profile",
        &[("primitives/age_decrypt_1KiB", 1)],
    ),
    (
        "pieces/incident_recipient",
        &[("primitives/x25519_keygen", 1)],
    ),
    (
        "pieces/check_stop",
        &[
            ("primitives/ed25519_key_decode", 1),
            ("primitives/ed25519_verify_strict", 1),
        ],
    ),
    ("pieces/shred_decision", &[("primitives/ed25519_sign", 1)]),
];

/// Where criterion writes its estimates: set explicitly so the table reads the same place.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // The bench binary is target/<profile>/deps/<name>-<hash>.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|t| t.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The median (ns) of `id` (`group/bench`) from this run's estimates, if it ran.
fn median_ns(dir: &Path, id: &str, since: SystemTime) -> Option<f64> {
    let path = dir.join(id).join("new").join("estimates.json");
    let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= since;
    if !fresh {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn us(ns: f64) -> String {
    format!("{:.1} µs", ns / 1e3)
}

fn print_table(dir: &Path, since: SystemTime) {
    let m = |id: &str| median_ns(dir, id, since);
    println!("\n## Primitives (median of this run)\n");
    println!("| primitive | median |");
    println!("| --- | ---: |");
    for id in [
        "primitives/x25519_keygen",
        "primitives/x25519_dh",
        "primitives/ed25519_sign",
        "primitives/ed25519_verify_strict",
        "primitives/ed25519_key_decode",
        "primitives/age_encrypt_1KiB",
        "primitives/age_decrypt_1KiB",
        "primitives/age_encrypt_128B",
        "primitives/age_decrypt_128B",
        "primitives/hpke_seal_20B",
        "primitives/hpke_open_20B",
    ] {
        let v = m(id).map_or("n/a".into(), us);
        println!("| {id} | {v} |");
    }
    for n in [3u32, 64] {
        let id = format!("primitives/ed25519_batch_verify_{n}");
        let v = m(&id).map_or("n/a".into(), |t| {
            format!("{} ({} per signature)", us(t), us(t / f64::from(n)))
        });
        println!("| {id} | {v} |");
    }
    println!("\n## Shamir, 32-byte secret (median of this run)\n");
    println!("| implementation | split 2-of-3 | combine 2 | split 3-of-5 | combine 3 |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for imp in ["vsss", "hazmat", "sharks", "blahaj"] {
        let cell =
            |op: &str, tn: &str| m(&format!("shamir/{imp}_{op}_{tn}")).map_or("n/a".into(), us);
        println!(
            "| {imp} | {} | {} | {} | {} |",
            cell("split", "2of3"),
            cell("combine", "2of3"),
            cell("split", "3of5"),
            cell("combine", "3of5")
        );
    }
    ratio_table(
        "Operations against their primitives (median of this run)",
        COUNTS,
        &m,
    );
    ratio_table(
        "Pieces against their primitives (attribution)",
        PIECE_COUNTS,
        &m,
    );
    let id = "pieces/incident_recipient_from_bytes";
    let v = m(id).map_or("n/a".into(), us);
    println!("\n{id}: {v} (no primitive: bech32 encode + age parse)");
}

fn ratio_table(title: &str, counts: &[(&str, &[(&str, u32)])], m: &dyn Fn(&str) -> Option<f64>) {
    println!("\n## {title}\n");
    println!("| operation | measured | primitive sum | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    for (op, counts) in counts {
        let measured = m(op);
        let sum: Option<f64> = counts
            .iter()
            .map(|(id, k)| m(id).map(|t| t * f64::from(*k)))
            .sum();
        match (measured, sum) {
            (Some(t), Some(s)) => println!("| {op} | {} | {} | {:.2} |", us(t), us(s), t / s),
            _ => println!("| {op} | n/a | n/a | n/a |"),
        }
    }
}

/// CPU time of the benchmark thread (`CLOCK_THREAD_CPUTIME_ID`): what the default run
/// measures. The machine this runs on is shared (several builds at once on two cores);
/// wall time then counts the time the thread waits for a core, which lands on whichever
/// benchmark happens to run during a compile and makes medians of different benchmarks
/// incomparable. Every routine here is single-threaded, CPU-bound and does no I/O, so on
/// a quiet machine the two clocks agree (`SOSVAULT_BENCH_CLOCK=wall` for wall time).
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.unsigned_abs(), t.tv_nsec.unsigned_abs() as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn run<M: Measurement>(c: Criterion<M>, world: &World) {
    let mut c = c
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40)
        .configure_from_args();
    primitives(&mut c);
    shamir(&mut c);
    operations(&mut c, world);
    pieces(&mut c, world);
    c.final_summary();
}

fn main() {
    let started = SystemTime::now();
    let dir = criterion_dir();
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    let wall = std::env::var("SOSVAULT_BENCH_CLOCK").is_ok_and(|v| v == "wall");
    let world = World::new();
    println!(
        "world: profile {} B (sealed {} B), record {} B, release request {} B, \
         release {} B, stop {} B",
        world.profile.len(),
        world.package.sealed_profile.len(),
        world.package.record.as_bytes().len(),
        world.request.len(),
        world.releases[0].len(),
        world.stop.len(),
    );
    let base = Criterion::default().output_directory(&dir);
    if wall {
        run(base, &world);
    } else {
        run(base.with_measurement(ThreadCpuTime), &world);
    }
    if quick {
        println!("quick check mode: every routine ran once; no ratio table");
    } else {
        let clock = if wall { "wall time" } else { "thread CPU time" };
        println!("\nclock: {clock}");
        print_table(&dir, started);
    }
}
