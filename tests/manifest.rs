//! The deployment manifest as the device's trust anchor (issue 11, finding 2):
//! the device enrolls only to the trustees a manifest signed by its pinned
//! authority names, counts itself enrolled only once every trustee's receipt
//! verifies, and until then goes on panicking under the epoch it had.
//! Public API only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::receipts::{made_up_receipts, receipts_of};
use common::{T0, World, device, enrolled, here};
use sosvault::manifest::{Manifest, ManifestError, VerifiedManifest};
use sosvault::{
    AuthorityKey, Category, Container, DeviceError, Policy, Signed, Timestamp, TrusteeKey,
    TrusteePublic,
};

const YEAR: u64 = 365 * 24 * 3600;

fn manifest_for(world: &World, trustees: &[TrusteePublic], version: u64) -> Manifest {
    let base = sosvault_testkit::fixtures::manifest(
        "kota-test",
        T0,
        world.control_room.public(),
        trustees,
        |i| format!("https://trustee-{i}.example"),
    );
    Manifest {
        version,
        not_after: T0.plus(YEAR),
        control_room_url: "https://dispatch.example".into(),
        ..base
    }
}

fn signed(m: Manifest, authority: &AuthorityKey) -> Vec<u8> {
    Signed::sign(m, authority).as_bytes().to_vec()
}

/// `world`'s own manifest (its trustees, version `version`) signed by
/// `authority`, as a device pinning `authority` verifies it.
fn verified(world: &World, version: u64, authority: &AuthorityKey) -> VerifiedManifest {
    let bytes = signed(manifest_for(world, &world.publics(), version), authority);
    Manifest::verify(&bytes, &authority.public(), T0).unwrap()
}

/// `dev` enrolls to `manifest` with `profile` at [`T0`] (pending until
/// confirmed); the package.
fn enroll_to(
    dev: &mut sosvault::Device,
    manifest: &VerifiedManifest,
    profile: &[u8],
) -> sosvault::EnrollmentPackage {
    let e = dev.enroll_to(manifest, profile, Policy::default(), T0);
    e.unwrap().package
}

/// Three trustees, a deployment authority, the manifest of them it signed
/// (version `version`) as a device pinning it verifies it, and a fresh device.
fn pinned(version: u64) -> (World, AuthorityKey, VerifiedManifest, sosvault::Device) {
    let world = World::new(3);
    let authority = AuthorityKey::generate();
    let manifest = verified(&world, version, &authority);
    (world, authority, manifest, device())
}

/// `dev` enrolls to `manifest` with `profile`, `world`'s trustees take the
/// shares, and the device confirms with their receipts: the package and the
/// commit.
fn confirmed(
    world: &mut World,
    dev: &mut sosvault::Device,
    manifest: &VerifiedManifest,
    profile: &[u8],
) -> (
    sosvault::EnrollmentPackage,
    Signed<sosvault::EnrollmentCommit>,
) {
    let package = enroll_to(dev, manifest, profile);
    let receipts = receipts_of(&mut world.trustees, &package, T0);
    let commit = dev.confirm_enrollment(&receipts, T0).unwrap();
    (package, commit)
}

#[test]
fn only_the_pinned_authority_in_its_validity_is_believed() {
    let world = World::new(3);
    let authority = AuthorityKey::generate();
    let bytes = signed(manifest_for(&world, &world.publics(), 1), &authority);
    let ok = Manifest::verify(&bytes, &authority.public(), T0).unwrap();
    assert_eq!(ok.manifest().trustee_publics(), world.publics());
    assert_eq!(
        Manifest::verify(&bytes, &AuthorityKey::generate().public(), T0),
        Err(ManifestError::WrongAuthority)
    );
    assert_eq!(
        Manifest::verify(&bytes, &authority.public(), T0.minus(1)),
        Err(ManifestError::NotYetValid)
    );
    assert_eq!(
        Manifest::verify(&bytes, &authority.public(), T0.plus(YEAR + 1)),
        Err(ManifestError::Expired)
    );
    // Every byte matters: a flipped bit anywhere is refused, never believed.
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        assert!(
            Manifest::verify(&bad, &authority.public(), T0).is_err(),
            "bit at {at}"
        );
    }
    // A manifest naming one trustee twice, or a threshold above n, is malformed
    // even when the authority signed it.
    let mut twice = manifest_for(&world, &world.publics(), 1);
    twice.trustees[1] = twice.trustees[0].clone();
    assert!(matches!(
        Manifest::verify(&signed(twice, &authority), &authority.public(), T0),
        Err(ManifestError::Malformed(_))
    ));
    let mut high = manifest_for(&world, &world.publics(), 1);
    high.threshold = 4;
    assert!(matches!(
        Manifest::verify(&signed(high, &authority), &authority.public(), T0),
        Err(ManifestError::Malformed(_))
    ));
}

/// The attack of finding 2: a hostile dispatch service (or anyone on the path)
/// lists trustees of its own. The device never enrolls to them: it enrolls to
/// the manifest's trustees, whose shares the attacker's keys cannot open, and
/// receipts signed by the attacker's keys never confirm an enrollment.
#[test]
fn a_hostile_service_cannot_substitute_trustees_or_their_receipts() {
    let (mut world, authority, manifest, mut dev) = pinned(1);
    // The attacker's own "trustees", and a manifest it signs with its own key.
    let fake: Vec<TrusteeKey> = (0..3).map(|_| TrusteeKey::generate()).collect();
    let fake_publics: Vec<TrusteePublic> = fake.iter().map(TrusteeKey::public).collect();
    let forged = signed(
        manifest_for(&world, &fake_publics, 2),
        &AuthorityKey::generate(),
    );
    assert_eq!(
        Manifest::verify(&forged, &authority.public(), T0),
        Err(ManifestError::WrongAuthority)
    );

    let package = enroll_to(&mut dev, &manifest, b"profile");
    // The attacker relays, and tries to open every sealed share with its keys.
    let mut attacker = sosvault::InMemoryTrustee::new(sosvault::Trustee::new(
        TrusteeKey::generate(),
        vec![world.control_room.public()],
        sosvault::TimeLimits::default(),
    ));
    for i in 1..=3u8 {
        let d = package.delivery(i).unwrap();
        assert!(attacker.accept_share(&d.to_bytes(), T0).is_err());
    }
    // Receipts it makes up (for the device's real commitments, signed by its
    // own keys) do not confirm the enrollment; nothing changes.
    let made_up = made_up_receipts(&fake, dev.student_id(), &package, T0);
    assert!(matches!(
        dev.confirm_enrollment(&made_up, T0),
        Err(DeviceError::BadReceipt { index: 1, .. })
    ));
    assert_eq!(dev.epoch(), 0, "not enrolled on made-up receipts");
    // The real trustees' receipts confirm it.
    let receipts = receipts_of(&mut world.trustees, &package, T0);
    dev.confirm_enrollment(&receipts, T0).unwrap();
    assert_eq!(dev.epoch(), 1);
    assert_eq!(dev.manifest(), Some((1, manifest.hash())));
}

/// Finding 5 on the device: a re-enrollment is pending until every receipt
/// is in; meanwhile panics go out for the epoch the trustees hold, and a
/// missing, mixed-up or wrong receipt changes nothing.
#[test]
fn a_pending_reenrollment_never_costs_a_panic() {
    let (mut world, _, manifest, mut dev) = pinned(1);
    let first = enroll_to(&mut dev, &manifest, b"one");
    // Not enrolled before the receipts: no panic can be made for a vault no trustee holds.
    assert!(matches!(
        dev.panic(
            Category::Police,
            &here(T0),
            &world.control_room.public(),
            T0
        ),
        Err(DeviceError::NotEnrolled)
    ));
    let receipts = receipts_of(&mut world.trustees, &first, T0);
    dev.confirm_enrollment(&receipts, T0).unwrap();

    // Re-enroll after an incident: pending.
    let second = enroll_to(&mut dev, &manifest, b"two");
    assert_eq!(second.record.body().epoch, 2);
    assert_eq!(dev.pending_enrollment(), Some(&second));
    // The state survives a save and load, pending package included.
    let saved = dev.to_secret_bytes();
    let mut dev = sosvault::Device::from_secret_bytes(&saved).unwrap();
    assert_eq!(dev.pending_enrollment(), Some(&second));
    let panic = world.signed_panic(&mut dev, T0);
    assert_eq!(
        panic.body().epoch,
        1,
        "the panic is for the epoch the trustees hold"
    );
    // Only trustee 1 got the new share; the device is still on epoch 1.
    let d = second.delivery(1).unwrap();
    let r1 = world.trustees[0].accept_share(&d.to_bytes(), T0).unwrap();
    assert!(matches!(
        dev.confirm_enrollment(std::slice::from_ref(&r1), T0),
        Err(DeviceError::BadReceipt {
            index: 2,
            why: "missing"
        })
    ));
    // Receipts of the old epoch do not confirm the new one.
    let mut mixed = receipts.clone();
    mixed[0] = r1.clone();
    assert!(dev.confirm_enrollment(&mixed, T0).is_err());
    assert_eq!(dev.epoch(), 1);
    for (i, t) in world.trustees.iter_mut().enumerate().skip(1) {
        let d = second.delivery(i as u8 + 1).unwrap();
        mixed[i] = t.accept_share(&d.to_bytes(), T0).unwrap();
    }
    dev.confirm_enrollment(&mixed, T0).unwrap();
    assert_eq!(dev.epoch(), 2);
    assert!(dev.pending_enrollment().is_none());
    assert!(matches!(
        dev.confirm_enrollment(&mixed, T0),
        Err(DeviceError::NothingPending)
    ));
}

#[test]
fn a_device_refuses_a_rolled_back_or_equivocating_manifest_and_follows_a_newer_one() {
    let (mut world, authority, v2, mut dev) = pinned(2);
    confirmed(&mut world, &mut dev, &v2, b"p");

    let verify = |m: Manifest| -> VerifiedManifest {
        Manifest::verify(&signed(m, &authority), &authority.public(), T0).unwrap()
    };
    let v1 = verify(manifest_for(&world, &world.publics(), 1));
    assert!(matches!(
        dev.enroll_to(&v1, b"p", Policy::default(), T0),
        Err(DeviceError::Manifest(ManifestError::Rollback {
            held: 2,
            offered: 1
        }))
    ));
    let mut other = manifest_for(&world, &world.publics(), 2);
    other.control_room_url = "https://elsewhere.example".into();
    assert!(matches!(
        dev.enroll_to(&verify(other), b"p", Policy::default(), T0),
        Err(DeviceError::Manifest(ManifestError::Equivocation(2)))
    ));
    assert!(
        dev.pending_enrollment().is_none(),
        "a refused manifest changes nothing"
    );
    // A trustee replaced in version 3: the device re-enrolls to the new set.
    let mut set = world.publics();
    set[2] = TrusteeKey::generate().public();
    let v3 = verify(manifest_for(&world, &set, 3));
    let package = dev
        .enroll_to(&v3, b"p", Policy::default(), Timestamp(T0.0 + 10))
        .unwrap()
        .package;
    assert_eq!(package.record.body().trustees[2].trustee, set[2].id());
}

/// Finding 5 at the trustees: a re-enrollment that reached only some trustees
/// never makes the vault unopenable. Trustees that took the new epoch keep
/// the committed one beside it, so a panic the device sends meanwhile (for
/// its committed epoch) still gets t releases and opens; the device's commit
/// of the new epoch makes them drop the older share. Without commits (the old
/// behaviour) the same half-delivery leaves one share: nothing opens.
#[test]
fn a_half_delivered_reenrollment_keeps_every_panic_openable_until_the_commit() {
    let (mut world, authority, manifest, mut dev) = pinned(1);
    let (first, commit1) = confirmed(&mut world, &mut dev, &manifest, b"one");
    for t in &mut world.trustees {
        assert!(t.commit(commit1.as_bytes(), T0).unwrap());
        // The same commit again changes nothing.
        assert!(!t.commit(commit1.as_bytes(), T0).unwrap());
    }

    // Re-enrollment: only trustees 1 and 2 of 3 take the new share.
    let second = enroll_to(&mut dev, &manifest, b"two");
    let mut new_receipts = Vec::new();
    for i in 0..2 {
        let d = second.delivery(i as u8 + 1).unwrap();
        new_receipts.push(world.trustees[i].accept_share(&d.to_bytes(), T0).unwrap());
        let entry = world.trustees[i].entry(&dev.student_id()).unwrap();
        assert_eq!((entry.epoch(), entry.previous_epoch()), (Some(2), Some(1)));
    }
    // A panic now is for epoch 1; trustees 1 and 2 still release its share.
    let incident = world.panic(&mut dev, T0);
    assert_eq!(incident.panic.body().epoch, 1);
    let releases = [
        world.release(0, &incident, T0).unwrap(),
        world.release(1, &incident, T0).unwrap(),
    ];
    let opened = incident.open_profile(&first, &[&releases[0], &releases[1]]);
    assert_eq!(opened, b"one");

    // The third trustee comes back; the device confirms and commits epoch 2.
    let d = second.delivery(3).unwrap();
    new_receipts.push(world.trustees[2].accept_share(&d.to_bytes(), T0).unwrap());
    let commit2 = dev.confirm_enrollment(&new_receipts, T0).unwrap();
    // A commit the trustee does not hold a record for is refused.
    let mut stranger = device();
    let mut elsewhere = World::new(3);
    let other_manifest = verified(&elsewhere, 1, &authority);
    let (_, foreign) = confirmed(&mut elsewhere, &mut stranger, &other_manifest, b"x");
    assert!(world.trustees[0].commit(foreign.as_bytes(), T0).is_err());
    for t in &mut world.trustees {
        t.commit(commit2.as_bytes(), T0).unwrap();
        let entry = t.entry(&dev.student_id()).unwrap();
        assert_eq!((entry.committed(), entry.previous_epoch()), (2, None));
    }
    // The older share is gone: a new incident for the epoch-1 panic gets nothing.
    let again = world.incident_for(incident.panic.clone(), T0);
    assert!(world.release(0, &again, T0).is_err());
    // The new epoch opens the new profile.
    let newer = world.panic(&mut dev, T0);
    assert_eq!(newer.panic.body().epoch, 2);
    let all = world.release_all(&newer, T0);
    assert_eq!(newer.open_profile(&second, &[&all[0], &all[2]]), b"two");
}

/// Without the device's commit (an embedder using `Device::enroll`), a new
/// share replaces the old, as before: the staging is opt-in by committing.
#[test]
fn without_commits_a_new_share_replaces_the_old_one() {
    let (mut world, mut dev, _) = enrolled(3, b"one", 2);
    let e2 = dev.reenroll(b"two", T0).unwrap().package;
    let d = e2.delivery(1).unwrap();
    world.trustees[0].accept_share(&d.to_bytes(), T0).unwrap();
    let entry = world.trustees[0].entry(&dev.student_id()).unwrap();
    assert_eq!((entry.epoch(), entry.previous_epoch()), (Some(2), None));
}
