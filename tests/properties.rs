//! The security properties of `docs/PROTOCOL.md` / `SECURITY.md`, each as a
//! test that fails if the property breaks. Public API only.
//!
//! | property | tests (prefix) |
//! | --- | --- |
//! | 1 threshold, nothing without a valid panic | `p1_` |
//! | 2 t - 1 shares leave every byte value possible | `p2_` (and `tests/why_not_sharks.rs`) |
//! | 3 trustee refusals, one per `ReleaseRefusal` | `p3_` |
//! | 4 bad shares detected and skipped | `p4_` |
//! | 5 shred | `p5_` |
//! | 6 a released key does not open the next epoch | `p6_` |

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    Incident, T0, World, body_offset, control_room_identity, control_room_signing_key, device,
    enrolled, enrolled_under, envelope, flip, here, identity_from_scalar, incident_identity,
    request_body, tagged, trustee_identity,
};
use proptest::prelude::*;
use proptest::sample::Index;
use sosvault::hazmat::{self, RawShare};
use sosvault::{
    CancelRefusal, Category, Container, ControlRoomKey, DecodeError, DeviceKey, EnrollRefusal,
    IncidentId, IncidentKey, OpenError, PanicEvent, Refusal, Release, ReleaseRefusal,
    ReleaseRequest, SealError, ShareDelivery, ShareRejected, ShredRefusal, Signed, StudentEntry,
    TimeLimits, VaultRecipient,
};

const MAX: usize = 1 << 20;

/// The profile `package` sealed, opened with the vault key `opener` rebuilt
/// (it must have enough releases).
fn opened_profile(opener: &sosvault::Opener, package: &sosvault::EnrollmentPackage) -> Vec<u8> {
    let vault = opener.open().unwrap();
    vault.open(&package.sealed_profile, MAX).unwrap().to_vec()
}

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// (t, n) with 2 <= t <= n <= 5.
fn t_n() -> impl Strategy<Value = (usize, usize)> {
    (2usize..=5).prop_flat_map(|n| (2usize..=n, Just(n)))
}

/// (t, n) with 2 <= t < n <= 5.
fn t_lt_n() -> impl Strategy<Value = (usize, usize)> {
    (3usize..=5).prop_flat_map(|n| (2usize..n, Just(n)))
}

/// Every k-element subset of 0..n.
fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    (0u32..(1 << n))
        .filter(|m| m.count_ones() as usize == k)
        .map(|m| (0..n).filter(|i| (m >> i) & 1 == 1).collect())
        .collect()
}

/// A k-element subset of 0..n picked by `seed`.
fn pick(n: usize, k: usize, seed: &Index) -> Vec<usize> {
    let all = subsets(n, k);
    all[seed.index(all.len())].clone()
}

/// The refusal inside a failed release.
fn refusal(r: Result<Signed<Release>, Refusal>) -> ReleaseRefusal {
    match r {
        Err(Refusal::Release(e)) => e,
        other => panic!("expected a release refusal, got {other:?}"),
    }
}

fn enroll_refusal(r: Result<Signed<sosvault::ShareReceipt>, Refusal>) -> EnrollRefusal {
    match r {
        Err(Refusal::Enroll(e)) => e,
        other => panic!("expected an enrollment refusal, got {other:?}"),
    }
}

/// The share (index, y) inside a trustee's stored entry, if it holds one.
/// Layout (`sosvault/trustee-entry/v1`): tag, student[32], has_record u8,
/// [u32 len, record], accepted_at u64, has_share u8, [index u8, y[32]], ...
fn entry_share(entry: &[u8]) -> Option<(u8, [u8; 32])> {
    let mut off = tagged(StudentEntry::TAG).len() + 32;
    if entry[off] == 1 {
        let len = u32::from_be_bytes(entry[off + 1..off + 5].try_into().unwrap()) as usize;
        off += 5 + len;
    } else {
        off += 1;
    }
    off += 8;
    if entry[off] != 1 {
        return None;
    }
    let index = entry[off + 1];
    Some((index, entry[off + 2..off + 34].try_into().unwrap()))
}

/// (index, y) from a `ShareForTrustee` or `ReleasedShare` plaintext: its last 33 bytes.
fn plaintext_share(pt: &[u8]) -> (u8, [u8; 32]) {
    let n = pt.len();
    (pt[n - 33], pt[n - 32..].try_into().unwrap())
}

fn raw(index: u8, y: [u8; 32]) -> RawShare {
    let mut s = RawShare {
        index,
        y: Default::default(),
    };
    *s.y = y;
    s
}

// ======================================================================= property 1

proptest! {
    #![proptest_config(cfg(24))]

    /// Property 1: every t-subset of the n releases opens the vault and the
    /// profile decrypts to the exact bytes enrolled; every (t-1)-subset gets
    /// `NotEnoughShares`.
    #[test]
    fn p1_any_t_of_n_releases_open_the_vault_and_any_t_minus_1_do_not(
        (t, n) in t_n(),
        profile in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let (mut world, mut dev, package) = enrolled(n, &profile, t as u8);
        let incident = world.panic(&mut dev, T0);
        let releases = world.release_all(&incident, T0);
        for set in subsets(n, t) {
            let picked: Vec<_> = set.iter().map(|&i| &releases[i]).collect();
            let opened = incident.open_profile(&package, &picked);
            prop_assert_eq!(&opened[..], &profile[..], "subset {:?}", set);
        }
        for set in subsets(n, t - 1) {
            let picked: Vec<_> = set.iter().map(|&i| &releases[i]).collect();
            prop_assert_eq!(
                incident.open_with(&package.record, &picked).err(),
                Some(OpenError::NotEnoughShares { have: t - 1, need: t }),
                "subset {:?}", set
            );
        }
    }

    /// Property 1 on raw shares: any t combine to the secret; t-1 good shares
    /// plus one wrong share (any non-zero change of its y) never do, and t-1
    /// shares alone do not either.
    #[test]
    fn p1_hazmat_any_t_raw_shares_combine_and_t_minus_1_plus_a_wrong_share_do_not(
        (t, n) in t_n(),
        secret in any::<[u8; 32]>(),
        mask in any::<[u8; 32]>().prop_filter("non-zero change", |m| m != &[0u8; 32]),
    ) {
        let shares = hazmat::split_secret(&secret, t, n).unwrap();
        let copy = |i: usize| RawShare { index: shares[i].index, y: shares[i].y.clone() };
        for set in subsets(n, t) {
            let good: Vec<RawShare> = set.iter().map(|&i| copy(i)).collect();
            prop_assert_eq!(*hazmat::combine_shares(&good).unwrap(), secret);
            for wrong in 0..t {
                let mut bad: Vec<RawShare> = set.iter().map(|&i| copy(i)).collect();
                for (b, m) in bad[wrong].y.iter_mut().zip(mask) {
                    *b ^= m;
                }
                // Lagrange at 0 weights every share by a non-zero coefficient, so any
                // change of one y changes the result: never the secret.
                let got = hazmat::combine_shares(&bad).unwrap();
                prop_assert_ne!(*got, secret, "subset {:?}, wrong share {}", set, wrong);
            }
        }
        for set in subsets(n, t - 1) {
            let few: Vec<RawShare> = set.iter().map(|&i| copy(i)).collect();
            // One share combines to nothing; t-1 >= 2 interpolate a lower-degree
            // polynomial whose value at 0 is the secret with probability 2^-256.
            if let Some(got) = hazmat::combine_shares(&few) {
                prop_assert_ne!(*got, secret, "subset {:?}", set);
            }
        }
    }
}

/// Property 1 (hazmat contract): bad parameters never split; unusable share
/// sets (fewer than two, a zero index, a repeated index) never combine.
#[test]
fn p1_hazmat_refuses_bad_parameters_and_unusable_shares() {
    for (t, n) in [(0, 0), (1, 1), (1, 3), (2, 1), (3, 2), (2, 17), (17, 17)] {
        assert!(
            hazmat::split_secret(&[1u8; 32], t, n).is_err(),
            "{t}-of-{n}"
        );
    }
    assert_eq!(hazmat::split_secret(&[1u8; 32], 16, 16).unwrap().len(), 16);
    let s = hazmat::split_secret(&[7u8; 32], 2, 3).unwrap();
    let c = |i: usize, index: u8| RawShare {
        index,
        y: s[i].y.clone(),
    };
    assert!(hazmat::combine_shares(&[]).is_none());
    assert!(hazmat::combine_shares(&[c(0, 1)]).is_none());
    assert!(hazmat::combine_shares(&[c(0, 1), c(0, 1)]).is_none());
    assert!(hazmat::combine_shares(&[c(0, 1), c(1, 1)]).is_none());
    assert!(hazmat::combine_shares(&[c(0, 0), c(1, 2)]).is_none());
    assert!(hazmat::combine_shares(&[c(0, 1), c(1, 2), c(1, 2)]).is_none());
    assert_eq!(
        *hazmat::combine_shares(&[c(2, 3), c(0, 1)]).unwrap(),
        [7u8; 32]
    );
}

/// Property 1: without a valid panic inside a request signed by a pinned control
/// room, no trustee releases anything, and no trustee's state moves.
#[test]
fn p1_without_a_valid_panic_no_trustee_releases() {
    let (mut world, mut dev, _) = enrolled(3, b"profile", 2);
    let panic = world.signed_panic(&mut dev, T0);
    let student = dev.student_id();

    // A control room the trustees do not pin, with a real panic.
    let rogue = ControlRoomKey::generate();
    let key = IncidentKey::generate();
    let unpinned = rogue.release_request(&panic, IncidentId::random(), &key, T0);
    // The pinned control room inventing a panic: it holds no device key of the
    // student, so it signs with a key of its own.
    let invented = Signed::sign(
        PanicEvent {
            epoch: 1,
            counter: 99,
            issued_at: T0,
            category: Category::Police,
            sealed_location: Vec::new(),
        },
        &DeviceKey::generate(),
    );
    let made_up = world
        .control_room
        .release_request(&invented, IncidentId::random(), &key, T0);
    // The real panic with one bit of its signature flipped, in a request the
    // pinned control room signed.
    let forged_panic = flip(panic.as_bytes(), (panic.as_bytes().len() - 1) * 8);
    let sk = control_room_signing_key(&world.control_room);
    let id = IncidentId::random();
    let forged = envelope::<ReleaseRequest>(&sk, &request_body(&forged_panic, &id, &key, T0));
    // Another message in the panic's place: a signed stop is not a panic.
    let stop = dev.stop(false, &world.control_room.public(), T0).unwrap();
    let not_a_panic =
        envelope::<ReleaseRequest>(&sk, &request_body(stop.as_bytes(), &id, &key, T0));

    for trustee in &mut world.trustees {
        assert_eq!(
            refusal(trustee.release(unpinned.as_bytes(), T0)),
            ReleaseRefusal::UnpinnedControlRoom
        );
        assert_eq!(
            refusal(trustee.release(made_up.as_bytes(), T0)),
            ReleaseRefusal::UnknownStudent
        );
        assert_eq!(
            refusal(trustee.release(&forged, T0)),
            ReleaseRefusal::ForgedPanic
        );
        assert_eq!(
            refusal(trustee.release(&not_a_panic, T0)),
            ReleaseRefusal::Malformed(DecodeError::WrongType {
                expected: "sosvault/panic/v1"
            })
        );
        let entry = trustee.entry(&student).unwrap();
        assert!(entry.last_release().is_none());
        assert_eq!(entry.highest_counter(), 0);
        assert!(entry.holds_share());
    }
}

proptest! {
    #![proptest_config(cfg(8))]

    /// Property 1: the dispatch database (enrollment package, panic, release
    /// requests) plus the control room's key plus the full key material of any
    /// t-1 trustees opens neither the profile nor any other trustee's share.
    /// Positive controls show the derived keys are the real ones: the control
    /// room's opens the panic's location, each trustee's opens its own share, and
    /// one more trustee's share does rebuild the vault key.
    #[test]
    fn p1_dispatch_database_control_room_key_and_t_minus_1_trustees_open_nothing(
        (t, n) in t_n(), seed in any::<Index>(),
    ) {
        let (world, mut dev, package) = enrolled(n, b"{\"name\":\"Asha\"}", t as u8);
        let incident = world.panic(&mut dev, T0);
        let cr = control_room_identity(&world.control_room);

        // The control room's key opens what is sealed to it, and nothing else here.
        let loc = cr.open(&incident.panic.body().sealed_location, 4096);
        prop_assert!(loc.is_ok());
        prop_assert_eq!(cr.open(&package.sealed_profile, MAX).err(), Some(SealError::DoesNotOpen));
        for sealed in &package.sealed_shares {
            prop_assert_eq!(cr.open(sealed, 4096).err(), Some(SealError::DoesNotOpen));
        }

        // t-1 colluding trustees: each opens its own share and no other.
        let coalition = pick(n, t - 1, &seed);
        let ids: Vec<_> = world.trustees.iter().map(|t| trustee_identity(t.trustee().key())).collect();
        let mut stolen = Vec::new();
        for &i in &coalition {
            for (j, sealed) in package.sealed_shares.iter().enumerate() {
                let opened = ids[i].open(sealed, 4096);
                if i == j {
                    let pt = opened.unwrap();
                    prop_assert!(pt.starts_with(&tagged("sosvault/share-for-trustee/v1")));
                    stolen.push(plaintext_share(&pt));
                } else {
                    prop_assert_eq!(opened.err(), Some(SealError::DoesNotOpen));
                }
            }
        }
        let shares: Vec<RawShare> = stolen.iter().map(|&(i, y)| raw(i, y)).collect();
        if let Some(guess) = hazmat::combine_shares(&shares) {
            let key = identity_from_scalar(&guess);
            prop_assert_ne!(&key.recipient(), &package.record.body().vault_recipient);
            prop_assert!(key.open(&package.sealed_profile, MAX).is_err());
        }
        // Positive control: one more trustee's share makes t, and that opens it.
        let extra = (0..n).find(|i| !coalition.contains(i)).unwrap();
        let pt = ids[extra].open(&package.sealed_shares[extra], 4096).unwrap();
        stolen.push(plaintext_share(&pt));
        let shares: Vec<RawShare> = stolen.iter().map(|&(i, y)| raw(i, y)).collect();
        let key = identity_from_scalar(&hazmat::combine_shares(&shares).unwrap());
        prop_assert_eq!(&key.recipient(), &package.record.body().vault_recipient);
        prop_assert!(key.open(&package.sealed_profile, MAX).is_ok());
    }
}

// ======================================================================= property 2

/// Splits per secret value in the exhaustive 2-of-n test.
const SPLITS_T2: usize = 320;

/// Property 2, exhaustively over the byte values: for t = 2 one share is
/// consistent with every secret, so (with uniform coefficients) its y takes
/// every value 0..=255 for every secret byte s, y == s included. sharks 0.5
/// never gives y == s (`tests/why_not_sharks.rs`).
///
/// For each s in 0..=255 (secret [s; 32]) we split `SPLITS_T2` times 2-of-3 and
/// collect, per share index, the y values seen over all 32 bytes: 32 * 320 =
/// 10240 uniform samples. The chance a given value is missed is
/// (255/256)^10240 = 2^-57.8; over 256 secrets x 256 values x 3 shares
/// (2^17.6 events) a false failure has probability below 2^-40.2.
#[test]
fn p2_one_share_of_2_of_n_takes_every_byte_value_for_every_secret_byte() {
    for s in 0..=255u8 {
        let mut seen = [[false; 256]; 3];
        for _ in 0..SPLITS_T2 {
            let shares = hazmat::split_secret(&[s; 32], 2, 3).unwrap();
            for (k, share) in shares.iter().enumerate() {
                assert_eq!(share.index as usize, k + 1);
                for &y in share.y.iter() {
                    seen[k][y as usize] = true;
                }
            }
        }
        for (k, seen) in seen.iter().enumerate() {
            let missing: Vec<usize> = (0..256).filter(|&v| !seen[v]).collect();
            assert!(
                missing.is_empty(),
                "secret byte {s:#04x}: share {} never took the values {missing:?}",
                k + 1
            );
            assert!(seen[s as usize], "y == s must be possible");
        }
    }
}

/// Splits per secret value in the 3-of-n pair test.
const SPLITS_T3: usize = 90_000;

/// Property 2 for t = 3: two shares are consistent with every secret, so the
/// pair (y1, y2) takes all 65536 values for a fixed secret byte. For three
/// secret values, 90 000 splits give 32 * 90 000 = 2.88 M pair samples; a given
/// pair is missed with probability (1 - 2^-16)^2.88M = 2^-63.4, and over
/// 3 x 65536 pairs a false failure has probability below 2^-45.
#[test]
fn p2_two_shares_of_3_of_n_take_every_pair_of_values() {
    for s in [0x00u8, 0xA5, 0xFF] {
        let mut seen = vec![false; 1 << 16];
        for _ in 0..SPLITS_T3 {
            let shares = hazmat::split_secret(&[s; 32], 3, 3).unwrap();
            for (a, b) in shares[0].y.iter().zip(shares[1].y.iter()) {
                seen[(*a as usize) << 8 | *b as usize] = true;
            }
        }
        let missing = seen.iter().filter(|v| !**v).count();
        assert_eq!(
            missing, 0,
            "secret byte {s:#04x}: {missing} (y1, y2) pairs never seen"
        );
    }
}

// ======================================================================= property 3

proptest! {
    #![proptest_config(cfg(32))]

    /// Property 3, replay: once a trustee released for the panic with counter
    /// c, every panic with counter <= c in another incident is `Replayed`; the
    /// exact same request again gets the very same release (marked `repeated`).
    #[test]
    fn p3_replayed_counter_is_refused_and_a_retry_gets_the_same_release(
        k in 2usize..6,
        j in any::<Index>(),
    ) {
        let (mut world, mut dev, _) = enrolled(2, b"p", 2);
        let panics: Vec<Signed<PanicEvent>> = (0..k)
            .map(|_| dev.panic(Category::Medical, &here(T0), &world.control_room.public(), T0).unwrap())
            .collect();
        let j = j.index(k);
        let incident = world.incident_for(panics[j].clone(), T0);
        let first = world.release(0, &incident, T0).unwrap();

        let again = world.release(0, &incident, T0).unwrap();
        prop_assert_eq!(again.as_bytes(), first.as_bytes());
        let t = &world.trustees[0];
        let checked = t.trustee().check_request(incident.request.as_bytes(), T0).unwrap();
        let tr = t.trustee().release(t.entry(&dev.student_id()), &checked, T0).unwrap();
        prop_assert!(tr.repeated);
        prop_assert_eq!(tr.answer.as_bytes(), first.as_bytes());

        let seen = panics[j].body().counter;
        for p in &panics[..=j] {
            let other = world.incident_for(p.clone(), T0);
            prop_assert_eq!(
                refusal(world.release(0, &other, T0)),
                ReleaseRefusal::Replayed { offered: p.body().counter, seen }
            );
        }
        // Same panic and incident id, another recipient: not a retry, a replay.
        let key = IncidentKey::generate();
        let rebound = world.control_room.release_request(&panics[j], incident.id, &key, T0);
        prop_assert_eq!(
            refusal(world.trustees[0].release(rebound.as_bytes(), T0)),
            ReleaseRefusal::Replayed { offered: seen, seen }
        );
        // A newer panic still releases.
        if j + 1 < k {
            let newer = world.incident_for(panics[j + 1].clone(), T0);
            prop_assert!(world.release(0, &newer, T0).is_ok());
        }
    }

    /// Property 3, stale: a panic issued more than `max_panic_age` before the
    /// trustee's now is `StalePanic`; at exactly the limit it releases.
    #[test]
    fn p3_stale_panic_is_refused(extra in 1u64..10_000_000) {
        let limits = TimeLimits::default();
        let (mut world, mut dev, _) = enrolled_under(limits, 2, b"p", 2);
        let panic = world.signed_panic(&mut dev, T0);
        // One second past the limit, and `extra` seconds past it.
        for past in [1, extra] {
            let late = T0.plus(limits.max_panic_age_secs + past);
            let stale = world.incident_for(panic.clone(), late);
            prop_assert_eq!(refusal(world.release(0, &stale, late)), ReleaseRefusal::StalePanic);
        }
        let edge = T0.plus(limits.max_panic_age_secs);
        let ok = world.incident_for(panic, edge);
        prop_assert!(world.release(1, &ok, edge).is_ok());
    }

    /// Property 3, future: a panic issued more than the skew ahead of the
    /// trustee's clock is `FuturePanic`; at exactly the skew it releases.
    #[test]
    fn p3_future_panic_is_refused(extra in 1u64..10_000_000) {
        let limits = TimeLimits::default();
        let (mut world, mut dev, _) = enrolled_under(limits, 2, b"p", 2);
        // One second past the skew, and `extra` seconds past it.
        for past in [1, extra] {
            let ahead = T0.plus(limits.max_skew_secs + past);
            let panic = dev.panic(Category::Police, &here(T0), &world.control_room.public(), ahead).unwrap();
            let future = world.incident_for(panic, T0);
            prop_assert_eq!(refusal(world.release(0, &future, T0)), ReleaseRefusal::FuturePanic);
        }
        let edge = T0.plus(limits.max_skew_secs);
        let panic = dev.panic(Category::Police, &here(T0), &world.control_room.public(), edge).unwrap();
        let ok = world.incident_for(panic, T0);
        prop_assert!(world.release(1, &ok, T0).is_ok());
    }

    /// Property 3, forged: any bit flipped in the panic's signature or body,
    /// inside a request the pinned control room really signed, is `ForgedPanic`.
    /// The hand-built envelope is first checked byte for byte against the
    /// library's own request, so only the flipped bit differs.
    #[test]
    fn p3_forged_panic_is_refused(sig_bit in 0usize..512, body_bit in any::<Index>()) {
        let (mut world, mut dev, _) = enrolled(2, b"p", 2);
        let panic = world.signed_panic(&mut dev, T0);
        let incident = world.incident_for(panic.clone(), T0);
        let sk = control_room_signing_key(&world.control_room);
        let honest = envelope::<ReleaseRequest>(
            &sk,
            &request_body(panic.as_bytes(), &incident.id, &incident.key, T0),
        );
        prop_assert_eq!(&honest[..], incident.request.as_bytes());

        let bytes = panic.as_bytes();
        let sig_start = bytes.len() - 64;
        let body_start = body_offset::<PanicEvent>();
        let body_bits = (sig_start - body_start) * 8;
        for bit in [sig_start * 8 + sig_bit, body_start * 8 + body_bit.index(body_bits)] {
            let forged = envelope::<ReleaseRequest>(
                &sk,
                &request_body(&flip(bytes, bit), &incident.id, &incident.key, T0),
            );
            prop_assert_eq!(
                refusal(world.trustees[0].release(&forged, T0)),
                ReleaseRefusal::ForgedPanic
            );
        }
        prop_assert_eq!(world.trustees[0].entry(&dev.student_id()).unwrap().highest_counter(), 0);
        prop_assert!(world.release(0, &incident, T0).is_ok());
    }

    /// Property 3, unbound: a request signed by an unpinned control room is
    /// `UnpinnedControlRoom`; one issued more than the skew away from the
    /// trustee's clock (either way) is `StaleRequest`; at exactly the skew it
    /// releases.
    #[test]
    fn p3_unpinned_or_stale_request_is_refused(off in 121u64..10_000_000) {
        let limits = TimeLimits::default();
        prop_assert!(off > limits.max_skew_secs);
        let (mut world, mut dev, _) = enrolled_under(limits, 2, b"p", 2);
        let panic = world.signed_panic(&mut dev, T0);
        let key = IncidentKey::generate();
        let rogue = ControlRoomKey::generate().release_request(&panic, IncidentId::random(), &key, T0);
        prop_assert_eq!(
            refusal(world.trustees[0].release(rogue.as_bytes(), T0)),
            ReleaseRefusal::UnpinnedControlRoom
        );
        let edge = limits.max_skew_secs + 1;
        for at in [T0.minus(off), T0.plus(off), T0.minus(edge), T0.plus(edge)] {
            let stale = world.incident_for(panic.clone(), at);
            prop_assert_eq!(refusal(world.release(0, &stale, T0)), ReleaseRefusal::StaleRequest);
        }
        let early = world.incident_for(panic.clone(), T0.minus(limits.max_skew_secs));
        prop_assert!(world.release(0, &early, T0).is_ok());
        let late = world.incident_for(panic, T0.plus(limits.max_skew_secs));
        prop_assert!(world.release(1, &late, T0).is_ok());
    }
}

/// Property 3, cross-student: a panic speaks only for the student its device
/// key derives. Another enrolled student's panic gets that student's own share
/// (useless to an opener for the first student: `WrongIncident`), a trustee
/// that holds nothing for the signer says `UnknownStudent`, and the state
/// machine refuses to answer one student's panic from another's entry.
#[test]
fn p3_cross_student_panic_gets_only_its_own_students_share() {
    let mut world = World::new(3);
    let mut asha = device();
    let package_a = world.enroll(&mut asha, b"asha", 2, T0);
    let mut bina = device();
    let e = bina
        .enroll(
            b"bina",
            &world.publics(),
            2,
            sosvault::Policy::default(),
            T0,
        )
        .unwrap();
    // Trustee 3 never received Bina's share.
    for i in 0..2 {
        let d = e.package.delivery(i as u8 + 1).unwrap();
        world.trustees[i].accept_share(&d.to_bytes(), T0).unwrap();
    }
    let bina_incident = world.panic(&mut bina, T0);
    // An opener for Asha's vault, fed Bina's releases.
    let mut opener = bina_incident.opener(&package_a.record);
    for i in 0..2 {
        let r = world.release(i, &bina_incident, T0).unwrap();
        assert_eq!(r.body().student, bina.student_id());
        assert_ne!(r.body().student, asha.student_id());
        assert_eq!(
            opener.add(r.as_bytes()).err(),
            Some(ShareRejected::WrongIncident)
        );
    }
    assert_eq!(
        opener.open().err(),
        Some(OpenError::NotEnoughShares { have: 0, need: 2 })
    );
    assert_eq!(
        refusal(world.release(2, &bina_incident, T0)),
        ReleaseRefusal::UnknownStudent
    );
    // The pure state machine, handed Asha's entry for Bina's request.
    let t = &world.trustees[2];
    let checked = t
        .trustee()
        .check_request(bina_incident.request.as_bytes(), T0)
        .unwrap();
    assert_eq!(checked.student(), bina.student_id());
    assert_eq!(
        t.trustee()
            .release(t.entry(&asha.student_id()), &checked, T0)
            .err(),
        Some(ReleaseRefusal::UnknownStudent)
    );
    // Asha's share at every trustee is untouched.
    for t in &world.trustees {
        assert!(
            t.entry(&asha.student_id())
                .unwrap()
                .last_release()
                .is_none()
        );
    }
}

/// Property 3, wrong device: the state machine checks the panic's signer
/// against the enrolled record's signer, not only the student id it looked up.
/// A store whose entry pairs Asha's student id with Bina's record (a corrupted
/// or tampered database) answers Asha's panic with `WrongDevice`.
#[test]
fn p3_panic_not_signed_by_the_enrolled_device_is_wrong_device() {
    let mut world = World::new(2);
    let mut asha = device();
    let mut bina = device();
    world.enroll(&mut asha, b"asha", 2, T0);
    world.enroll(&mut bina, b"bina", 2, T0);
    let incident = world.panic(&mut asha, T0);
    let t = &world.trustees[0];
    let mut forged = t
        .entry(&bina.student_id())
        .unwrap()
        .to_secret_bytes()
        .to_vec();
    let at = tagged(StudentEntry::TAG).len();
    forged[at..at + 32].copy_from_slice(asha.student_id().as_bytes());
    let forged = StudentEntry::from_secret_bytes(&forged).unwrap();
    assert_eq!(forged.student(), asha.student_id());
    let checked = t
        .trustee()
        .check_request(incident.request.as_bytes(), T0)
        .unwrap();
    assert_eq!(
        t.trustee().release(Some(&forged), &checked, T0).err(),
        Some(ReleaseRefusal::WrongDevice)
    );
    // The genuine entry releases.
    assert!(
        t.trustee()
            .release(t.entry(&asha.student_id()), &checked, T0)
            .is_ok()
    );
}

/// Property 3, wrong epoch: a panic for epoch 1 after re-enrollment to epoch 2
/// is `WrongEpoch`; a panic for epoch 2 releases.
#[test]
fn p3_panic_for_an_old_epoch_is_refused() {
    let (mut world, mut dev, _) = enrolled(2, b"v1", 2);
    let old = world.panic(&mut dev, T0);
    world.reenroll(&mut dev, b"v2", T0);
    assert_eq!(dev.epoch(), 2);
    assert_eq!(
        refusal(world.release(0, &old, T0)),
        ReleaseRefusal::WrongEpoch {
            offered: 1,
            current: 2
        }
    );
    let new = world.panic(&mut dev, T0);
    assert!(world.release(0, &new, T0).is_ok());
}

/// Property 3, post-shred: after a trustee shredded on a stop, a panic made
/// before the stop is `Shredded` there (a trustee that has not seen the stop yet
/// still answers, so the panic itself was valid).
#[test]
fn p3_release_after_shred_is_refused() {
    let (mut world, mut dev, _) = enrolled(2, b"p", 2);
    let incident = world.panic(&mut dev, T0);
    let stop = dev.stop(false, &world.control_room.public(), T0).unwrap();
    world.trustees[0].shred(stop.as_bytes(), T0).unwrap();
    assert_eq!(
        refusal(world.release(0, &incident, T0)),
        ReleaseRefusal::Shredded
    );
    assert!(world.release(1, &incident, T0).is_ok());
}

/// Property 3, retry window: the same (panic, incident, recipient) is answered
/// again, with the very same release, only within `retry_window_secs` of the
/// first release; after it the repeat is `RetryExpired`, and once the
/// trustee's expiry pass has dropped the stored release it is `Replayed`. A
/// control room that re-signs the request (any time, any number of times, as
/// a restarted or copied control room would) gets nothing more.
#[test]
fn p3_a_retry_is_answered_only_inside_its_window_and_never_after() {
    let limits = TimeLimits::default();
    let window = limits.retry_window_secs;
    let (mut world, mut dev, _) = enrolled_under(limits, 2, b"p", 2);
    let incident = world.panic(&mut dev, T0);
    let first = world.release(0, &incident, T0).unwrap();
    let resign = |world: &World, at: sosvault::Timestamp| {
        world
            .control_room
            .release_request(&incident.panic, incident.id, &incident.key, at)
    };
    for d in [0, 1, window / 2, window] {
        let at = T0.plus(d);
        let req = resign(&world, at);
        let again = world.trustees[0].release(req.as_bytes(), at).unwrap();
        assert_eq!(again.as_bytes(), first.as_bytes(), "retry {d} s after");
    }
    for d in [window + 1, window + 60, 7 * 24 * 3600] {
        let at = T0.plus(d);
        let req = resign(&world, at);
        assert_eq!(
            refusal(world.trustees[0].release(req.as_bytes(), at)),
            ReleaseRefusal::RetryExpired,
            "retry {d} s after"
        );
    }
    // The expiry pass drops the stored release once the window has closed, not before.
    let student = dev.student_id();
    let keeps_release = |w: &World| {
        w.trustees[0]
            .entry(&student)
            .unwrap()
            .last_release()
            .is_some()
    };
    assert_eq!(world.trustees[0].expire(T0.plus(window)), 0);
    assert!(keeps_release(&world));
    assert_eq!(world.trustees[0].expire(T0.plus(window + 1)), 1);
    assert!(!keeps_release(&world));
    let at = T0.plus(window + 2);
    let seen = incident.panic.body().counter;
    let req = resign(&world, at);
    assert_eq!(
        refusal(world.trustees[0].release(req.as_bytes(), at)),
        ReleaseRefusal::Replayed {
            offered: seen,
            seen
        }
    );
    // The other trustee never released: the panic itself is still valid there.
    assert!(world.release(1, &incident, T0).is_ok());
}

/// Property 3, retry window: a retry inside the window is still refused once
/// the panic itself is older than `max_panic_age_secs`.
#[test]
fn p3_a_retry_never_outlives_the_panics_maximum_age() {
    let limits = TimeLimits {
        retry_window_secs: 600,
        ..TimeLimits::default()
    };
    let (mut world, mut dev, _) = enrolled_under(limits, 2, b"p", 2);
    // Pressed just inside the maximum age, released at once.
    let pressed = T0.minus(limits.max_panic_age_secs - 10);
    let panic = world.signed_panic(&mut dev, pressed);
    let incident = world.incident_for(panic, T0);
    world.release(0, &incident, T0).unwrap();
    let in_age = T0.plus(10);
    let req =
        world
            .control_room
            .release_request(&incident.panic, incident.id, &incident.key, in_age);
    assert!(world.trustees[0].release(req.as_bytes(), in_age).is_ok());
    let past_age = T0.plus(11);
    let req =
        world
            .control_room
            .release_request(&incident.panic, incident.id, &incident.key, past_age);
    assert_eq!(
        refusal(world.trustees[0].release(req.as_bytes(), past_age)),
        ReleaseRefusal::RetryExpired
    );
}

/// Property 3, cancel: once a trustee took the student's cancel, it releases
/// nothing for any panic at or below the cancel's counter (`Cancelled`), a
/// retry of a release it gave included; a panic pressed after the cancel
/// releases. The same cancel again gets the same receipt; an older one is
/// `Stale`; another device's cancel is `WrongDevice`; a student it holds
/// nothing for is `UnknownStudent`.
#[test]
fn p3_a_cancel_revokes_every_panic_at_or_below_its_counter() {
    let (mut world, mut dev, _) = enrolled(3, b"p", 2);
    let older = world.panic(&mut dev, T0);
    let incident = world.panic(&mut dev, T0);
    world.release(0, &incident, T0).unwrap();
    let cancel = dev
        .cancel(
            incident.panic.hash(),
            false,
            &world.control_room.public(),
            T0.plus(5),
        )
        .unwrap();
    let cancel_counter = cancel.body().counter;
    let receipts: Vec<_> = world
        .trustees
        .iter_mut()
        .map(|t| t.cancel(cancel.as_bytes(), T0.plus(5)).unwrap())
        .collect();
    for (t, r) in world.trustees.iter().zip(&receipts) {
        assert_eq!(t.trustee().key().public().verifying_key(), r.signer());
        assert_eq!(r.body().student, dev.student_id());
        assert_eq!(r.body().cancel, cancel.hash());
        assert_eq!(r.body().counter, cancel_counter);
    }
    let at = T0.plus(6);
    let cancelled = ReleaseRefusal::Cancelled {
        cancelled_through: cancel_counter,
    };
    // The retry of the release trustee 0 gave, inside its window: refused.
    let retry = world
        .control_room
        .release_request(&incident.panic, incident.id, &incident.key, at);
    assert_eq!(
        refusal(world.trustees[0].release(retry.as_bytes(), at)),
        cancelled
    );
    // Trustees that never released, a fresh incident key, an older panic: refused.
    for (i, p) in [(1, &incident), (2, &incident), (1, &older)] {
        let fresh = world.incident_for(p.panic.clone(), at);
        assert_eq!(refusal(world.release(i, &fresh, at)), cancelled);
    }
    // The same cancel again: the same receipt. An older one: stale.
    let again = world.trustees[1].cancel(cancel.as_bytes(), at).unwrap();
    assert_eq!(again.as_bytes(), receipts[1].as_bytes());
    // A newer panic releases, at every trustee.
    let newer = world.panic(&mut dev, at);
    world.release_all(&newer, at);
    // A cancel of the newer panic, then the first cancel replayed: stale.
    let second = dev
        .cancel(newer.panic.hash(), false, &world.control_room.public(), at)
        .unwrap();
    world.trustees[2].cancel(second.as_bytes(), at).unwrap();
    let stale = world.trustees[2].cancel(cancel.as_bytes(), at).unwrap_err();
    assert_eq!(
        stale,
        Refusal::Cancel(CancelRefusal::Stale {
            offered: cancel_counter,
            cancelled_through: second.body().counter,
        })
    );
    // Another device's cancel for this student cannot be made (the student id
    // is the signer's); a cancel from a device this trustee does not know:
    let mut elsewhere = World::new(2);
    let mut stranger = device();
    elsewhere.enroll(&mut stranger, b"q", 2, at);
    let p = world.signed_panic(&mut stranger, at);
    let foreign = stranger
        .cancel(p.hash(), false, &world.control_room.public(), at)
        .unwrap();
    assert_eq!(
        world.trustees[0]
            .cancel(foreign.as_bytes(), at)
            .unwrap_err(),
        Refusal::Cancel(CancelRefusal::UnknownStudent)
    );
}

/// The entry keeps the cancel state across its encoding, and entries written
/// before cancels reached trustees (`sosvault/trustee-entry/v1`) and before
/// check-in timers (`v2`) still load.
#[test]
fn the_trustee_entry_keeps_the_cancel_state_and_v1_entries_still_load() {
    let (mut world, mut dev, _) = enrolled(2, b"p", 2);
    let incident = world.panic(&mut dev, T0);
    let cancel = dev
        .cancel(
            incident.panic.hash(),
            true,
            &world.control_room.public(),
            T0,
        )
        .unwrap();
    world.trustees[0].cancel(cancel.as_bytes(), T0).unwrap();
    let entry = world.trustees[0].entry(&dev.student_id()).unwrap();
    let back = StudentEntry::from_secret_bytes(&entry.to_secret_bytes()).unwrap();
    assert_eq!(back.cancelled_through(), cancel.body().counter);
    assert_eq!(back.last_cancel(), entry.last_cancel());
    assert_eq!(
        back.to_secret_bytes().as_slice(),
        entry.to_secret_bytes().as_slice()
    );

    let v1 = hex::decode(
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/trustee_entry_v1.hex"
        ))
        .unwrap()
        .trim(),
    )
    .unwrap();
    let old = StudentEntry::from_secret_bytes(&v1).unwrap();
    assert_eq!(old.cancelled_through(), 0);
    assert!(old.last_cancel().is_none());
    assert!(old.holds_share());
    // Re-encoded, it is a current entry that loads to the same state.
    let again = StudentEntry::from_secret_bytes(&old.to_secret_bytes()).unwrap();
    assert_eq!(
        again.to_secret_bytes().as_slice(),
        old.to_secret_bytes().as_slice()
    );

    // An entry written before check-in timers (`sosvault/trustee-entry/v2`,
    // the `trustee_entry` vector of then) loads with no duress check-in.
    let v2 = hex::decode(
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/trustee_entry_v2.hex"
        ))
        .unwrap()
        .trim(),
    )
    .unwrap();
    let old = StudentEntry::from_secret_bytes(&v2).unwrap();
    assert!(old.holds_share() && !old.withholds_log());
    assert!(old.last_release().is_some());
    let current = hex::decode(
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/trustee_entry.hex"
        ))
        .unwrap()
        .trim(),
    )
    .unwrap();
    // The same state as the current vector: only the tag and the two new
    // fields (no waived panic, no withholding) differ.
    assert_eq!(old.to_secret_bytes().as_slice(), &current[..]);
}

// ======================================================================= property 4

/// How a rogue trustee (it holds its own signing key) tampers with its release.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// One bit of the sealed share flipped, re-signed.
    SealedBit,
    /// One bit of y flipped inside the plaintext, resealed, re-signed.
    WrongY,
    /// The plaintext claims another share index.
    OtherIndexInside,
    /// The release claims another trustee's share index.
    ClaimsOtherSlot,
    /// The release names another incident.
    OtherIncident,
    /// The plaintext names another panic.
    OtherPanicInside,
    /// Sealed to another key than the incident's.
    SealedElsewhere,
}

const TAMPERS: [Tamper; 7] = [
    Tamper::SealedBit,
    Tamper::WrongY,
    Tamper::OtherIndexInside,
    Tamper::ClaimsOtherSlot,
    Tamper::OtherIncident,
    Tamper::OtherPanicInside,
    Tamper::SealedElsewhere,
];

/// Builds trustee `i`'s tampered release and the rejection the opener must give.
fn tamper(
    world: &World,
    incident: &Incident,
    honest: &Signed<Release>,
    i: usize,
    how: Tamper,
    bit: usize,
) -> (Signed<Release>, ShareRejected) {
    let key = world.trustees[i].trustee().key();
    let n = world.trustees.len();
    let index = i as u8 + 1;
    let mut body = honest.body().clone();
    let pt0 = incident_identity(&incident.key)
        .open(&body.sealed_share, 4096)
        .unwrap()
        .to_vec();
    let reseal = |pt: &[u8]| {
        VaultRecipient::from_bytes(incident.key.recipient().to_bytes())
            .seal(pt)
            .unwrap()
    };
    let plaintext = || pt0.clone();
    let expected = match how {
        Tamper::SealedBit => {
            let bits = body.sealed_share.len() * 8;
            body.sealed_share = flip(&body.sealed_share, bit % bits);
            ShareRejected::DoesNotOpen
        }
        Tamper::WrongY => {
            let mut pt = plaintext();
            let len = pt.len();
            pt[len - 32 + (bit / 8) % 32] ^= 1 << (bit % 8);
            body.sealed_share = reseal(&pt);
            ShareRejected::CommitmentMismatch(index)
        }
        Tamper::OtherIndexInside => {
            let mut pt = plaintext();
            let len = pt.len();
            pt[len - 33] = (i as u8 + 1) % n as u8 + 1;
            body.sealed_share = reseal(&pt);
            ShareRejected::DoesNotOpen
        }
        Tamper::ClaimsOtherSlot => {
            body.share_index = (i as u8 + 1) % n as u8 + 1;
            ShareRejected::WrongTrustee(body.share_index)
        }
        Tamper::OtherIncident => {
            body.incident = IncidentId::random();
            ShareRejected::WrongIncident
        }
        Tamper::OtherPanicInside => {
            let mut pt = plaintext();
            let off = tagged("sosvault/released-share/v1").len();
            pt[off + (bit / 8) % 32] ^= 1 << (bit % 8);
            body.sealed_share = reseal(&pt);
            ShareRejected::DoesNotOpen
        }
        Tamper::SealedElsewhere => {
            let pt = plaintext();
            let elsewhere = IncidentKey::generate().recipient().to_bytes();
            body.sealed_share = VaultRecipient::from_bytes(elsewhere).seal(&pt).unwrap();
            ShareRejected::DoesNotOpen
        }
    };
    (Signed::sign(body, key), expected)
}

proptest! {
    #![proptest_config(cfg(32))]

    /// Property 4: n - t rogue trustees each send a validly signed but tampered
    /// release (a random kind of tampering); each is rejected with its exact
    /// `ShareRejected`, and the t honest releases still open the vault.
    #[test]
    fn p4_tampered_releases_are_rejected_and_the_vault_still_opens(
        (t, n) in t_lt_n(),
        seed in any::<Index>(),
        kinds in proptest::collection::vec(any::<Index>(), 5),
        bit in 0usize..100_000,
    ) {
        let (mut world, mut dev, package) = enrolled(n, b"profile bytes", t as u8);
        let incident = world.panic(&mut dev, T0);
        let releases = world.release_all(&incident, T0);
        let rogues = pick(n, n - t, &seed);
        let mut opener = incident.opener(&package.record);
        for (k, &i) in rogues.iter().enumerate() {
            let how = TAMPERS[kinds[k].index(TAMPERS.len())];
            let (bad, expected) = tamper(&world, &incident, &releases[i], i, how, bit);
            prop_assert_eq!(opener.add(bad.as_bytes()).err(), Some(expected), "{:?}", how);
            prop_assert_eq!(opener.have(), 0);
        }
        for i in (0..n).filter(|i| !rogues.contains(i)) {
            prop_assert!(opener.add(releases[i].as_bytes()).is_ok());
        }
        let vault = opener.open().unwrap();
        prop_assert_eq!(&vault.open(&package.sealed_profile, MAX).unwrap()[..], b"profile bytes");
    }

    /// Property 4: any bit flipped in a release on the wire (not re-signed) is
    /// rejected; inside the signed body or the signature it is exactly a bad
    /// signature. The other releases still open the vault.
    #[test]
    fn p4_any_bit_flip_of_a_release_on_the_wire_is_rejected(bit in any::<Index>()) {
        let (mut world, mut dev, package) = enrolled(3, b"p", 2);
        let incident = world.panic(&mut dev, T0);
        let releases = world.release_all(&incident, T0);
        let bytes = releases[0].as_bytes();
        let bit = bit.index(bytes.len() * 8);
        let mut opener = incident.opener(&package.record);
        let got = opener.add(&flip(bytes, bit));
        prop_assert!(got.is_err());
        if bit >= body_offset::<Release>() * 8 {
            prop_assert_eq!(got.err(), Some(ShareRejected::Malformed(DecodeError::BadSignature)));
        }
        prop_assert_eq!(opener.have(), 0);
        prop_assert!(opener.add(releases[1].as_bytes()).is_ok());
        prop_assert!(opener.add(releases[2].as_bytes()).is_ok());
        prop_assert_eq!(opened_profile(&opener, &package), b"p");
    }
}

/// Property 4: a trustee whose stored share got corrupted (its entry loaded
/// from tampered bytes) sends a release that is validly signed by the right
/// trustee, for the right incident, and opens, but fails the device's
/// commitment: `CommitmentMismatch`. The same release twice is `Duplicate`.
#[test]
fn p4_a_correctly_signed_release_of_a_corrupted_share_fails_its_commitment() {
    let (mut world, mut dev, package) = enrolled(3, b"p", 2);
    let incident = world.panic(&mut dev, T0);
    let t0 = &world.trustees[0];
    let entry = t0.entry(&dev.student_id()).unwrap().to_secret_bytes();
    let (index, y) = entry_share(&entry).unwrap();
    assert_eq!(index, 1);
    let pos = entry
        .windows(32)
        .position(|w| w == y)
        .expect("the share is in the entry");
    let mut corrupted = entry.to_vec();
    corrupted[pos + 7] ^= 0x10;
    let corrupted = StudentEntry::from_secret_bytes(&corrupted).unwrap();
    let checked = t0
        .trustee()
        .check_request(incident.request.as_bytes(), T0)
        .unwrap();
    let bad = t0
        .trustee()
        .release(Some(&corrupted), &checked, T0)
        .unwrap()
        .answer;
    let mut opener = incident.opener(&package.record);
    assert_eq!(
        opener.add(bad.as_bytes()).err(),
        Some(ShareRejected::CommitmentMismatch(1))
    );
    let r2 = world.release(1, &incident, T0).unwrap();
    let r3 = world.release(2, &incident, T0).unwrap();
    assert!(opener.add(r2.as_bytes()).is_ok());
    assert_eq!(
        opener.add(r2.as_bytes()).err(),
        Some(ShareRejected::Duplicate(2))
    );
    assert!(opener.add(r3.as_bytes()).is_ok());
    assert_eq!(opened_profile(&opener, &package), b"p");
}

/// Property 4: an honest trustee's release for another incident of the same
/// student (another panic, another incident key) is `WrongIncident` at this
/// incident's opener, and does not count towards the threshold.
#[test]
fn p4_a_release_for_another_incident_is_rejected() {
    let (mut world, mut dev, package) = enrolled(3, b"p", 2);
    let first = world.panic(&mut dev, T0);
    let first_releases = world.release_all(&first, T0);
    let second = world.panic(&mut dev, T0.plus(30));
    let mut opener = second.opener(&package.record);
    for r in &first_releases {
        assert_eq!(
            opener.add(r.as_bytes()).err(),
            Some(ShareRejected::WrongIncident)
        );
    }
    assert_eq!(opener.have(), 0);
    let second_releases = world.release_all(&second, T0.plus(30));
    assert!(opener.add(second_releases[2].as_bytes()).is_ok());
    assert!(opener.add(second_releases[0].as_bytes()).is_ok());
    assert_eq!(opened_profile(&opener, &package), b"p");
}

/// Property 4 at enrollment: a trustee never stores a bad share. A delivery
/// for another trustee's index is `NotOurShare`; a share sealed to another
/// trustee is `DoesNotOpen`; a plaintext naming another epoch, index or student
/// is `Mismatch`; a wrong y (sealed by anyone to this trustee, who has the
/// public key) is `CommitmentMismatch`. The honest delivery is then accepted.
#[test]
fn p4_tampered_share_deliveries_are_refused_at_enrollment() {
    let mut world = World::new(3);
    let mut dev = device();
    let e = dev
        .enroll(b"p", &world.publics(), 2, sosvault::Policy::default(), T0)
        .unwrap();
    let pkg = &e.package;
    let honest = pkg.delivery(1).unwrap();
    let me = world.trustees[0].trustee().key().public();
    let pt = trustee_identity(world.trustees[0].trustee().key())
        .open(&honest.sealed_share, 4096)
        .unwrap()
        .to_vec();
    let tag_len = tagged("sosvault/share-for-trustee/v1").len();
    let with = |sealed: Vec<u8>, index: u8| {
        ShareDelivery {
            record: pkg.record.clone(),
            share_index: index,
            sealed_share: sealed,
        }
        .to_bytes()
    };
    let edit = |at: usize, x: u8| {
        let mut p = pt.clone();
        p[at] ^= x;
        me.seal(&p).unwrap()
    };
    let len = pt.len();
    let cases: Vec<(Vec<u8>, EnrollRefusal)> = vec![
        (
            pkg.delivery(2).unwrap().to_bytes(),
            EnrollRefusal::NotOurShare,
        ),
        (
            with(pkg.sealed_shares[1].clone(), 1),
            EnrollRefusal::DoesNotOpen,
        ),
        // student id, epoch (last byte), index
        (with(edit(tag_len + 3, 1), 1), EnrollRefusal::Mismatch),
        (with(edit(tag_len + 35, 2), 1), EnrollRefusal::Mismatch),
        (with(edit(len - 33, 3), 1), EnrollRefusal::Mismatch),
        (with(edit(len - 1, 1), 1), EnrollRefusal::CommitmentMismatch),
    ];
    for (bytes, expected) in cases {
        assert_eq!(
            enroll_refusal(world.trustees[0].accept_share(&bytes, T0)),
            expected
        );
        assert!(world.trustees[0].entry(&dev.student_id()).is_none());
    }
    assert!(
        world.trustees[0]
            .accept_share(&honest.to_bytes(), T0)
            .is_ok()
    );
}

// ======================================================================= property 5

proptest! {
    #![proptest_config(cfg(20))]

    /// Property 5: once n - t + 1 trustees shredded on the student's stop, the
    /// remaining t - 1 releases cannot open the vault, the shredded trustees'
    /// stored entries no longer contain their shares (the raw bytes of every
    /// database, combined, do not rebuild the key), and the trustees that come
    /// back from an outage shred too.
    #[test]
    fn p5_after_n_minus_t_plus_1_shreds_nothing_opens((t, n) in t_n(), seed in any::<Index>()) {
        let (mut world, mut dev, package) = enrolled(n, b"p", t as u8);
        let student = dev.student_id();
        let incident = world.panic(&mut dev, T0);
        let before: Vec<[u8; 32]> = world
            .trustees
            .iter()
            .map(|tr| entry_share(&tr.entry(&student).unwrap().to_secret_bytes()).unwrap().1)
            .collect();
        let stop = dev.stop(false, &world.control_room.public(), T0.plus(1)).unwrap();
        let shredders = pick(n, n - t + 1, &seed);
        for &i in &shredders {
            world.trustees[i].shred(stop.as_bytes(), T0.plus(1)).unwrap();
            let entry = world.trustees[i].entry(&student).unwrap();
            prop_assert!(!entry.holds_share());
            let bytes = entry.to_secret_bytes();
            prop_assert!(!bytes.windows(32).any(|w| w == before[i]), "share {} still stored", i + 1);
        }
        // Everything every database holds, combined.
        let leftovers: Vec<RawShare> = world
            .trustees
            .iter()
            .filter_map(|tr| entry_share(&tr.entry(&student).unwrap().to_secret_bytes()))
            .map(|(i, y)| raw(i, y))
            .collect();
        prop_assert_eq!(leftovers.len(), t - 1);
        if let Some(guess) = hazmat::combine_shares(&leftovers) {
            prop_assert_ne!(&identity_from_scalar(&guess).recipient(), &package.record.body().vault_recipient);
        }
        let mut opener = incident.opener(&package.record);
        for i in 0..n {
            let r = world.release(i, &incident, T0.plus(2));
            if shredders.contains(&i) {
                prop_assert_eq!(refusal(r), ReleaseRefusal::Shredded);
            } else {
                prop_assert!(opener.add(r.unwrap().as_bytes()).is_ok());
            }
        }
        prop_assert_eq!(opener.open().err(), Some(OpenError::NotEnoughShares { have: t - 1, need: t }));
        // The rest come back from their outage and shred; then nobody releases.
        for i in (0..n).filter(|i| !shredders.contains(i)) {
            world.trustees[i].shred(stop.as_bytes(), T0.plus(3)).unwrap();
        }
        let retry = world.incident_for(incident.panic.clone(), T0.plus(4));
        for i in 0..n {
            prop_assert_eq!(refusal(world.release(i, &retry, T0.plus(4))), ReleaseRefusal::Shredded);
        }
    }
}

/// Property 5: stop is idempotent. The same stop again, at any later time,
/// gets byte-identical receipts and is marked `repeated`.
#[test]
fn p5_shred_is_idempotent() {
    let (mut world, mut dev, _) = enrolled(3, b"p", 2);
    let stop = dev.stop(false, &world.control_room.public(), T0).unwrap();
    for tr in &mut world.trustees {
        let first = tr.shred(stop.as_bytes(), T0).unwrap();
        assert_eq!(first.body().student, dev.student_id());
        assert_eq!(first.body().epoch, 1);
        assert_eq!(first.body().stop, stop.hash());
        let again = tr.shred(stop.as_bytes(), T0.plus(86_400)).unwrap();
        assert_eq!(again.as_bytes(), first.as_bytes());
        let checked = sosvault::Trustee::check_stop(stop.as_bytes()).unwrap();
        let t = tr
            .trustee()
            .shred(tr.entry(&dev.student_id()), &checked, T0.plus(5))
            .unwrap();
        assert!(t.repeated);
        assert_eq!(t.answer.as_bytes(), first.as_bytes());
    }
}

/// Property 5: an old stop replayed after a re-enrollment does not shred the new
/// epoch. A trustee that already shredded epoch 1 repeats its old receipt
/// (`repeated`, share of epoch 2 kept); one that never saw the stop refuses it
/// as `StaleStop`. The new epoch still opens.
///
/// (A device can only re-enroll after a stop if its state was restored from a
/// backup taken before the stop: that is the scenario.)
#[test]
fn p5_a_replayed_stop_does_not_shred_a_new_epoch() {
    let (mut world, mut dev, _) = enrolled(2, b"v1", 2);
    let backup = dev.to_secret_bytes();
    let stop = dev.stop(false, &world.control_room.public(), T0).unwrap();
    let receipt = world.trustees[0].shred(stop.as_bytes(), T0).unwrap();

    let mut restored = sosvault::Device::from_secret_bytes(&backup).unwrap();
    let package = world.reenroll(&mut restored, b"v2", T0.plus(10));
    assert_eq!(restored.epoch(), 2);
    let student = restored.student_id();

    let again = world.trustees[0]
        .shred(stop.as_bytes(), T0.plus(20))
        .unwrap();
    assert_eq!(again.as_bytes(), receipt.as_bytes());
    let checked = sosvault::Trustee::check_stop(stop.as_bytes()).unwrap();
    let t = world.trustees[0]
        .trustee()
        .shred(world.trustees[0].entry(&student), &checked, T0.plus(20))
        .unwrap();
    assert!(t.repeated);
    assert!(world.trustees[0].entry(&student).unwrap().holds_share());
    match world.trustees[1].shred(stop.as_bytes(), T0.plus(20)) {
        Err(Refusal::Shred(e)) => assert_eq!(
            e,
            ShredRefusal::StaleStop {
                offered: 1,
                current: 2
            }
        ),
        other => panic!("expected StaleStop, got {other:?}"),
    }
    assert!(world.trustees[1].entry(&student).unwrap().holds_share());

    // The restored device's next counter equals the stop's, which trustee 1 saw
    // as shredded: burn one, then panic.
    let _ = world.signed_panic(&mut restored, T0);
    let incident = world.panic(&mut restored, T0.plus(30));
    let releases = world.release_all(&incident, T0.plus(30));
    let opened = incident.open_profile(&package, &[&releases[0], &releases[1]]);
    assert_eq!(opened, b"v2");
}

// ======================================================================= property 6

proptest! {
    #![proptest_config(cfg(10))]

    /// Property 6: after a release the student re-enrolls; the new epoch's
    /// recipient differs, and the released epoch-1 key opens neither the
    /// epoch-2 profile nor data sealed to the vault afterwards (the epoch-2 key,
    /// released for a new panic, opens both). Epoch-1 releases are not accepted
    /// for epoch 2.
    #[test]
    fn p6_a_released_key_does_not_open_the_next_epoch((t, n) in t_n()) {
        let (mut world, mut dev, v1) = enrolled(n, b"profile v1", t as u8);
        let inc1 = world.panic(&mut dev, T0);
        let rel1 = world.release_all(&inc1, T0);
        let picked: Vec<_> = rel1.iter().take(t).collect();
        let key1 = inc1.open_with(&v1.record, &picked).unwrap();
        prop_assert_eq!(&key1.open(&v1.sealed_profile, MAX).unwrap()[..], b"profile v1");
        let before = dev.seal_to_vault(b"diary, epoch 1").unwrap();
        prop_assert_eq!(&key1.open(&before, MAX).unwrap()[..], b"diary, epoch 1");

        let v2 = world.reenroll(&mut dev, b"profile v2", T0.plus(60));
        prop_assert_ne!(&v2.record.body().vault_recipient, &v1.record.body().vault_recipient);
        prop_assert_eq!(dev.vault_recipient(), Some(&v2.record.body().vault_recipient));
        let after = dev.seal_to_vault(b"diary, epoch 2").unwrap();
        prop_assert_eq!(key1.open(&v2.sealed_profile, MAX).err(), Some(SealError::DoesNotOpen));
        prop_assert_eq!(key1.open(&after, MAX).err(), Some(SealError::DoesNotOpen));

        let inc2 = world.panic(&mut dev, T0.plus(120));
        let mut opener = inc2.opener(&v2.record);
        for r in &rel1 {
            prop_assert_eq!(opener.add(r.as_bytes()).err(), Some(ShareRejected::WrongIncident));
        }
        let rel2 = world.release_all(&inc2, T0.plus(120));
        for r in rel2.iter().take(t) {
            prop_assert!(opener.add(r.as_bytes()).is_ok());
        }
        let key2 = opener.open().unwrap();
        prop_assert_eq!(&key2.open(&v2.sealed_profile, MAX).unwrap()[..], b"profile v2");
        prop_assert_eq!(&key2.open(&after, MAX).unwrap()[..], b"diary, epoch 2");
        prop_assert!(key2.open(&v1.sealed_profile, MAX).is_err());
    }
}
