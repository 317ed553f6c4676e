//! The whole life of one student's vault, with the core API only:
//! enroll, panic, release, open, re-enroll, stop, shred, and the proof that
//! nothing opens afterwards.
//!
//! ```text
//! cargo run --example lifecycle
//! ```
//!
//! Every step checks what it should; the example exits non-zero (with a
//! message saying which step went wrong) if anything behaves otherwise, so it
//! doubles as a smoke test in CI.

use std::error::Error;
use std::time::Instant;

use sosvault::{
    Category, Container, ControlRoomKey, Device, DeviceKey, InMemoryTrustee, IncidentId,
    IncidentKey, Location, OpenError, Opener, Policy, Profile, Refusal, ReleaseRefusal,
    ShareRejected, Signed, TimeLimits, Timestamp, Trustee, TrusteeKey,
};

#[path = "../tests/common/kota_profile.rs"]
mod kota_profile;
use kota_profile::kota_profile;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Fails the run with `msg` unless `ok`.
fn check(ok: bool, msg: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected behaviour: {msg}").into())
    }
}

/// Milliseconds since `t`, for the step lines.
fn ms(t: Instant) -> String {
    format!("{:.1} ms", t.elapsed().as_secs_f64() * 1e3)
}

/// The trustees of the example, in share-index order.
const TRUSTEE_NAMES: [&str; 3] = ["Police HQ", "Oversight office", "NGO"];

fn main() -> Result<()> {
    if let Err(e) = run() {
        eprintln!("lifecycle example FAILED: {e}");
        return Err(e);
    }
    Ok(())
}

fn run() -> Result<()> {
    let total = Instant::now();
    let mut now = Timestamp::now();

    // 0. The parties: a control room whose signing key every trustee pins, and
    //    three independent trustees.
    let t = Instant::now();
    let control_room = ControlRoomKey::generate();
    let mut trustees: Vec<InMemoryTrustee> = (0..TRUSTEE_NAMES.len())
        .map(|_| {
            InMemoryTrustee::new(Trustee::new(
                TrusteeKey::generate(),
                vec![control_room.public()],
                TimeLimits::default(),
            ))
        })
        .collect();
    let publics: Vec<_> = trustees
        .iter()
        .map(|t| t.trustee().key().public())
        .collect();
    println!(
        "0. Set up: a control room and 3 trustees ({}), each pinning the control room's key ({})",
        TRUSTEE_NAMES.join(", "),
        ms(t)
    );

    // 1. Enrollment: the profile is sealed to a fresh vault key, the key split 2 of 3,
    //    each share sealed to its trustee; every trustee checks its share against the
    //    device's signed commitment and answers with a signed receipt.
    let t = Instant::now();
    let mut device = Device::new(DeviceKey::generate());
    let profile = kota_profile();
    let enrollment = device.enroll(&profile.to_bytes(), &publics, 2, Policy::default(), now)?;
    let package1 = enrollment.package;
    let record1 = package1.record.body();
    check(record1.epoch == 1, "the first enrollment is epoch 1")?;
    check(
        package1.profile_matches(),
        "the sealed profile matches its digest",
    )?;
    for (i, trustee) in trustees.iter_mut().enumerate() {
        let index = u8::try_from(i + 1)?;
        let delivery = package1
            .delivery(index)
            .ok_or("the package has no share for this trustee")?;
        let receipt = trustee
            .accept_share(&delivery.to_bytes(), now)
            .map_err(|e| format!("{} refused its share: {e}", TRUSTEE_NAMES[i]))?;
        check(
            receipt.body().share_index == index && receipt.body().epoch == 1,
            "the share receipt names the share and epoch stored",
        )?;
        check(
            receipt.signer() == publics[i].verifying_key(),
            "the share receipt is signed by the trustee that stored it",
        )?;
    }
    println!(
        "1. Student enrolled (epoch 1): vault key split 2 of 3, shares sealed to {}; 3 signed share receipts back ({})",
        TRUSTEE_NAMES.join(", "),
        ms(t)
    );

    // 2. Panic in Talwandi, Kota. The location is sealed to the control room, the
    //    event signed by the device.
    now = now.plus(30);
    let t = Instant::now();
    let talwandi = Location::new(25.1425, 75.8350, 8, now).ok_or("Talwandi is on the globe")?;
    let panic1 = device.panic(Category::Police, &talwandi, &control_room.public(), now)?;
    let seen = control_room.open_location(&panic1.body().sealed_location)?;
    check(
        (seen.lat() - 25.1425).abs() < 1e-6 && (seen.lon() - 75.8350).abs() < 1e-6,
        "the control room reads the location the device sealed",
    )?;
    println!(
        "2. Panic pressed: signed by the device, location sealed to the control room, which reads {:.4},{:.4} (Talwandi, Kota) ({})",
        seen.lat(),
        seen.lon(),
        ms(t)
    );

    // 3. Release: the control room binds the panic to a fresh incident key in a
    //    signed request; two of the three trustees check everything and release
    //    their shares sealed to that key.
    now = now.plus(5);
    let t = Instant::now();
    let incident = IncidentId::random();
    let incident_key = IncidentKey::generate();
    let request = control_room.release_request(&panic1, incident, &incident_key, now);
    let mut opener = Opener::new(&package1.record, panic1.hash(), incident, &incident_key);
    let mut releases = Vec::new();
    for (i, trustee) in trustees.iter_mut().enumerate().take(2) {
        let release = trustee
            .release(request.as_bytes(), now)
            .map_err(|e| format!("{} refused a valid release: {e}", TRUSTEE_NAMES[i]))?;
        let progress = opener
            .add(release.as_bytes())
            .map_err(|e| format!("{}'s release was rejected: {e}", TRUSTEE_NAMES[i]))?;
        if i == 0 {
            check(
                matches!(
                    opener.open(),
                    Err(OpenError::NotEnoughShares { have: 1, need: 2 })
                ),
                "one share alone does not open the vault",
            )?;
        }
        check(progress.have == i + 1, "each good share counts once")?;
        releases.push(release);
    }
    // The same request again (the control room retrying) gets the very same
    // release, which the opener refuses to count twice; a release altered on the
    // way does not verify at all.
    let replay = trustees[0].release(request.as_bytes(), now)?;
    check(
        releases.first() == Some(&replay),
        "a retried request gets the same release",
    )?;
    check(
        matches!(
            opener.add(replay.as_bytes()),
            Err(ShareRejected::Duplicate(1))
        ),
        "a share already counted is refused as a duplicate",
    )?;
    let mut altered = replay.as_bytes().to_vec();
    let middle = altered.len() / 2;
    altered[middle] ^= 1;
    check(
        matches!(opener.add(&altered), Err(ShareRejected::Malformed(_))),
        "an altered release is refused",
    )?;
    println!(
        "3. Released by {} and {} (2 of 3): each share sealed to the incident's key and checked against the device's commitment ({})",
        TRUSTEE_NAMES[0],
        TRUSTEE_NAMES[1],
        ms(t)
    );

    // 4. Open: rebuild the vault key from the two shares, open the profile.
    let t = Instant::now();
    let vault1 = opener.open()?;
    check(
        vault1.recipient() == package1.record.body().vault_recipient,
        "the rebuilt key is the enrolled vault key",
    )?;
    let opened = Profile::from_bytes(&vault1.open(&package1.sealed_profile, 1 << 20)?)?;
    check(opened == profile, "the opened profile is the one enrolled")?;
    println!(
        "4. Profile opened by the control room: {}, {}; guardian {}; medical: {} ({})",
        opened.name,
        opened.hostel,
        opened.guardian_name,
        opened.medical_notes,
        ms(t)
    );

    // 5. Re-enroll under a fresh epoch: a new vault key, new shares; the released key
    //    opens nothing sealed from now on, and the old panic is refused.
    now = now.plus(600);
    let t = Instant::now();
    let package2 = device.reenroll(&profile.to_bytes(), now)?.package;
    check(
        package2.record.body().epoch == 2,
        "re-enrollment takes epoch 2",
    )?;
    check(
        package2.record.body().vault_recipient != package1.record.body().vault_recipient,
        "the new epoch has a new vault key",
    )?;
    for (i, trustee) in trustees.iter_mut().enumerate() {
        let delivery = package2
            .delivery(u8::try_from(i + 1)?)
            .ok_or("the package has no share for this trustee")?;
        trustee
            .accept_share(&delivery.to_bytes(), now)
            .map_err(|e| format!("{} refused its epoch-2 share: {e}", TRUSTEE_NAMES[i]))?;
    }
    check(
        vault1.open(&package2.sealed_profile, 1 << 20).is_err(),
        "the epoch-1 key must not open the epoch-2 profile",
    )?;
    let late = control_room.release_request(&panic1, IncidentId::random(), &incident_key, now);
    let refused = trustees[2].release(late.as_bytes(), now);
    check(
        matches!(
            refused,
            Err(Refusal::Release(ReleaseRefusal::WrongEpoch {
                offered: 1,
                current: 2
            }))
        ),
        "a panic of epoch 1 is refused once epoch 2 is enrolled",
    )?;
    println!(
        "5. Re-enrolled (epoch 2): new vault key, 3 new shares stored; the released epoch-1 key does not open the new vault, the old panic is refused ({})",
        ms(t)
    );

    // 6. Stop: the student wipes. Keep a copy of the phone's state from just before,
    //    as a thief's backup would.
    now = now.plus(60);
    let t = Instant::now();
    let backup = device.to_secret_bytes();
    let stop = device.stop(false, &control_room.public(), now)?;
    check(
        device
            .panic(Category::Police, &talwandi, &control_room.public(), now)
            .is_err(),
        "a stopped device signs nothing more",
    )?;
    println!(
        "6. Stop pressed: a signed stop for epoch {} and everything before it ({})",
        stop.body().epoch,
        ms(t)
    );

    // 7. Every trustee shreds its share and answers with a signed receipt; a repeated
    //    stop gets the very same receipt.
    let t = Instant::now();
    for (i, trustee) in trustees.iter_mut().enumerate() {
        let receipt = trustee
            .shred(stop.as_bytes(), now)
            .map_err(|e| format!("{} refused the stop: {e}", TRUSTEE_NAMES[i]))?;
        let body = receipt.body();
        check(
            body.epoch == 2 && body.stop == stop.hash() && body.student == device.student_id(),
            "the shred receipt names the student, epoch and stop",
        )?;
        check(
            receipt.signer() == publics[i].verifying_key(),
            "the shred receipt is signed by the trustee that shredded",
        )?;
        // The receipt travels as bytes; it must verify on the way back in.
        Signed::<sosvault::ShredReceipt>::decode(receipt.as_bytes())?;
        let again = trustee.shred(stop.as_bytes(), now.plus(1))?;
        check(again == receipt, "a repeated stop gets the same receipt")?;
        let entry = trustee
            .entry(&device.student_id())
            .ok_or("the trustee keeps a tombstone")?;
        check(
            !entry.holds_share() && entry.tombstone().is_some(),
            "the share is gone and a tombstone stays",
        )?;
    }
    println!(
        "7. Shred receipts collected from all 3 trustees: every share deleted, tombstones kept ({})",
        ms(t)
    );

    // 8. Nothing opens afterwards: the restored pre-stop backup signs a fresh panic,
    //    the control room asks every trustee, and every one refuses: shredded.
    now = now.plus(60);
    let t = Instant::now();
    let mut restored = Device::from_secret_bytes(&backup)?;
    let panic2 = restored.panic(Category::Police, &talwandi, &control_room.public(), now)?;
    let incident2_key = IncidentKey::generate();
    let request2 = control_room.release_request(&panic2, IncidentId::random(), &incident2_key, now);
    for (i, trustee) in trustees.iter_mut().enumerate() {
        let refused = trustee.release(request2.as_bytes(), now);
        check(
            matches!(refused, Err(Refusal::Release(ReleaseRefusal::Shredded))),
            &format!(
                "{} must refuse with Shredded after the stop, got {refused:?}",
                TRUSTEE_NAMES[i]
            ),
        )?;
    }
    check(
        vault1.open(&package2.sealed_profile, 1 << 20).is_err(),
        "the released epoch-1 key still does not open epoch 2",
    )?;
    println!(
        "8. After the stop nothing opens: a panic from a pre-stop backup is refused by all 3 trustees (shredded), and the old released key does not open epoch 2 ({})",
        ms(t)
    );

    println!("All steps behaved as expected ({} in all).", ms(total));
    Ok(())
}
