//! The bindings' API as an app calls it, against in-memory trustees and a
//! control room key: what each call refuses, and that a hostile service's
//! answers (receipts of its own keys, a report for another query, a log
//! entry of another student or signed by another key) are not believed.
//! `tests/python/test_phone.py` drives the same calls through the
//! generated Python bindings against the real services.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The in-memory control room and trustees the root suite's tests use.
#[path = "../../../tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use sosvault::log::{LogEntry, MerkleLog, Viewer};
use sosvault::status::{Stage as CoreStage, StatusReport, Team, TeamKind as CoreKind};
use sosvault::{
    AuthorityKey, Container as _, ControlRoomKey, EnrollmentPackage, InMemoryTrustee, IncidentId,
    Signed, StudentId, Timestamp,
};
use sosvault_ffi::{
    Category, Confirmation, Deployment, Fix, Phone, PinLock, ProvenEntry, Stage, StudentProfile,
    TeamKind, VaultError, read_log,
};

const NOW: u64 = 1_790_000_000;

struct World {
    authority: AuthorityKey,
    control_room: ControlRoomKey,
    trustees: Vec<InMemoryTrustee>,
    deployment: Arc<Deployment>,
}

fn world() -> World {
    let common::World {
        control_room,
        trustees,
    } = common::World::new(3);
    let publics: Vec<_> = trustees
        .iter()
        .map(|t| t.trustee().key().public())
        .collect();
    let authority = AuthorityKey::generate();
    let m = sosvault_testkit::fixtures::manifest(
        "kota-test",
        Timestamp(NOW),
        control_room.public(),
        &publics,
        |i| format!("https://trustee-{i}.example"),
    );
    let signed = Signed::sign(m, &authority).as_bytes().to_vec();
    let deployment = Deployment::verify(signed, authority.public().to_hex(), NOW).unwrap();
    World {
        authority,
        control_room,
        trustees,
        deployment,
    }
}

fn profile() -> StudentProfile {
    StudentProfile {
        name: "Asha Verma".into(),
        phone: "+91 94140 12345".into(),
        photo: String::new(),
        address: String::new(),
        hostel: "Shanti Girls Hostel, room 12".into(),
        institute: String::new(),
        guardian_name: String::new(),
        guardian_phone: String::new(),
        blood_group: "B+".into(),
        medical_notes: String::new(),
    }
}

const TALWANDI: Fix = Fix {
    lat: 25.1425,
    lon: 75.8350,
    accuracy_m: 8,
    at: NOW,
};

/// Enrolls `phone` in `w` as the service would relay it: each trustee
/// takes its share and answers with its receipt. The receipts' bytes.
fn shares_taken(w: &mut World, package: &[u8]) -> Vec<Vec<u8>> {
    let package = EnrollmentPackage::from_bytes(package).unwrap();
    let mut receipts = Vec::new();
    for (i, t) in w.trustees.iter_mut().enumerate() {
        let delivery = package.delivery(u8::try_from(i + 1).unwrap()).unwrap();
        let r = t
            .accept_share(&delivery.to_bytes(), Timestamp(NOW))
            .unwrap();
        receipts.push(r.as_bytes().to_vec());
    }
    receipts
}

fn enrolled(w: &mut World) -> Phone {
    let phone = Phone::create();
    let package = phone.enroll(&w.deployment, profile(), NOW).unwrap();
    let receipts = shares_taken(w, &package);
    phone.confirm_enrollment(receipts, NOW).unwrap();
    Arc::into_inner(phone).unwrap()
}

#[test]
fn a_manifest_is_trusted_only_under_the_pinned_authority_and_in_its_time() {
    let w = world();
    let bytes = w.deployment.manifest_bytes();
    let other = AuthorityKey::generate().public().to_hex();
    for (key, at) in [(other, NOW), (w.authority.public().to_hex(), NOW + 7200)] {
        let refused = Deployment::verify(bytes.clone(), key, at).unwrap_err();
        assert!(matches!(refused, VaultError::Manifest { .. }), "{refused}");
    }
    let bad = Deployment::verify(bytes, "not hex".into(), NOW).unwrap_err();
    assert!(matches!(bad, VaultError::BadInput { .. }));
    assert_eq!(w.deployment.threshold(), 2);
    assert_eq!(w.deployment.trustee_names().len(), 3);
}

#[test]
fn enrollment_moves_on_only_with_every_trustees_own_receipt() {
    let mut w = world();
    let phone = Phone::create();
    assert!(matches!(
        phone.panic(&w.deployment, Category::Police, TALWANDI, NOW),
        Err(VaultError::NotEnrolled)
    ));
    let package = phone.enroll(&w.deployment, profile(), NOW).unwrap();
    assert_eq!(phone.pending_enrollment(), Some(package.clone()));
    let receipts = shares_taken(&mut w, &package);
    // Two of three, or one forged by another key: the phone stays pending.
    let refused = phone
        .confirm_enrollment(receipts[..2].to_vec(), NOW)
        .unwrap_err();
    assert!(
        matches!(refused, VaultError::BadReceipt { index: 3, .. }),
        "{refused}"
    );
    assert_eq!(phone.epoch(), 0);
    let commit = phone.confirm_enrollment(receipts, NOW).unwrap();
    assert!(!commit.is_empty());
    assert_eq!(phone.epoch(), 1);
    assert_eq!(phone.pending_enrollment(), None);
    // Saved and restored, it is the same phone.
    let back = Phone::restore(phone.save()).unwrap();
    assert_eq!(back.student_id(), phone.student_id());
    assert_eq!(back.epoch(), 1);
}

#[test]
fn a_report_is_believed_only_from_the_control_room_for_its_own_query() {
    let mut w = world();
    let phone = enrolled(&mut w);
    let panic = phone
        .panic(&w.deployment, Category::Medical, TALWANDI, NOW)
        .unwrap();
    let query = phone
        .status_query(&w.deployment, panic.hash.clone(), NOW)
        .unwrap();
    let decoded = Signed::<sosvault::status::StatusQuery>::decode(&query.bytes()).unwrap();
    let team = Team {
        kind: CoreKind::Medical,
        distance_m: 400,
        eta_secs: 80,
    };
    let answer = |stage| {
        let report = StatusReport::answering(&decoded, stage, Timestamp(NOW));
        Signed::sign(report, &w.control_room).as_bytes().to_vec()
    };
    let sent = phone
        .read_status(&w.deployment, &query, answer(CoreStage::TeamSent(team)))
        .unwrap();
    assert_eq!((sent.stage, sent.help_is_coming), (Stage::TeamSent, false));
    let coming = phone
        .read_status(&w.deployment, &query, answer(CoreStage::TeamOnTheWay(team)))
        .unwrap();
    assert_eq!(
        (coming.stage, coming.help_is_coming),
        (Stage::TeamOnTheWay, true)
    );
    let t = coming.team.unwrap();
    assert_eq!(
        (t.kind, t.distance_m, t.eta_secs),
        (TeamKind::Medical, 400, 80)
    );
    // Another query's report, or one signed by another key, is not believed.
    let later = phone.status_query(&w.deployment, panic.hash, NOW).unwrap();
    let report = answer(CoreStage::TeamOnTheWay(team));
    assert!(matches!(
        phone.read_status(&w.deployment, &later, report),
        Err(VaultError::BadReport { .. })
    ));
    let forged = StatusReport::answering(&decoded, CoreStage::TeamOnTheWay(team), Timestamp(NOW));
    let forged = Signed::sign(forged, &ControlRoomKey::generate())
        .as_bytes()
        .to_vec();
    assert!(phone.read_status(&w.deployment, &query, forged).is_err());
    assert!(phone.status_query(&w.deployment, "zz".into(), NOW).is_err());
}

#[test]
fn cancel_and_stop_take_either_pin_and_count_only_the_trustees_receipts() {
    let mut w = world();
    let phone = enrolled(&mut w);
    let pins = PinLock::create("2468".into(), "1357".into()).unwrap();
    let panic = phone
        .panic(&w.deployment, Category::Police, TALWANDI, NOW)
        .unwrap();
    let moved = Fix {
        lat: 25.15,
        ..TALWANDI
    };
    phone
        .location_update(&w.deployment, panic.hash.clone(), moved, NOW)
        .unwrap();
    let off_the_globe = Fix {
        lat: 91.0,
        ..TALWANDI
    };
    assert!(
        phone
            .location_update(&w.deployment, panic.hash.clone(), off_the_globe, NOW)
            .is_err()
    );
    // A point of the sealed trail: signed, its own kind of message; a fix
    // off the globe signs nothing.
    let point = phone.trail_point(moved, NOW).unwrap();
    let decoded = sosvault::Signed::<sosvault::TrailPoint>::decode(&point.bytes).unwrap();
    assert_eq!(decoded.body().epoch, 1);
    assert!(phone.trail_point(off_the_globe, NOW).is_err());
    let wrong = phone.cancel(&w.deployment, panic.hash.clone(), &pins, "0000".into(), NOW);
    assert!(matches!(wrong, Err(VaultError::WrongPin)));
    // The PIN and the duress PIN make the same message: a cancel of the
    // panic, its note sealed to the control room.
    let safe = phone
        .cancel(&w.deployment, panic.hash.clone(), &pins, "2468".into(), NOW)
        .unwrap();
    let duress = phone
        .cancel(&w.deployment, panic.hash.clone(), &pins, "1357".into(), NOW)
        .unwrap();
    for c in [&safe, &duress] {
        let c = Signed::<sosvault::Cancel>::decode(&c.bytes).unwrap();
        assert_eq!(c.body().panic.to_hex(), panic.hash);
    }
    let mut receipts: Vec<Vec<u8>> = w
        .trustees
        .iter_mut()
        .map(|t| {
            t.cancel(&safe.bytes, Timestamp(NOW))
                .unwrap()
                .as_bytes()
                .to_vec()
        })
        .collect();
    receipts.push(b"anything a service adds".to_vec());
    let count = |r: Vec<Vec<u8>>| {
        phone.confirmed(&w.deployment, Confirmation::Cancel, safe.hash.clone(), r)
    };
    assert_eq!(count(receipts.clone()).unwrap(), 3);
    assert_eq!(
        count(vec![receipts[0].clone(); 3]).unwrap(),
        1,
        "one trustee thrice"
    );
    let other = phone.confirmed(
        &w.deployment,
        Confirmation::Cancel,
        duress.hash.clone(),
        receipts,
    );
    assert_eq!(other.unwrap(), 0, "receipts of another cancel");

    let stop = phone
        .stop(&w.deployment, &pins, "2468".into(), NOW)
        .unwrap();
    let shreds: Vec<Vec<u8>> = w
        .trustees
        .iter_mut()
        .map(|t| {
            t.shred(&stop.bytes, Timestamp(NOW))
                .unwrap()
                .as_bytes()
                .to_vec()
        })
        .collect();
    let shredded = |of| phone.confirmed(&w.deployment, of, stop.hash.clone(), shreds.clone());
    assert_eq!(shredded(Confirmation::Stop).unwrap(), 3);
    assert_eq!(
        shredded(Confirmation::Cancel).unwrap(),
        0,
        "shreds confirm no cancel"
    );
    assert!(matches!(
        phone.panic(&w.deployment, Category::Police, TALWANDI, NOW),
        Err(VaultError::Stopped)
    ));
}

#[test]
fn a_timer_takes_either_pin_to_check_in_and_its_receipts_count_as_a_cancels() {
    let mut w = world();
    let phone = enrolled(&mut w);
    let pins = PinLock::create("2468".into(), "1357".into()).unwrap();
    // An end that is not after now, or past 4 hours, signs nothing.
    for ends_at in [NOW, NOW + 4 * 3600 + 1] {
        let refused = phone.start_timer(&w.deployment, Category::Police, TALWANDI, ends_at, NOW);
        assert!(
            matches!(refused, Err(VaultError::BadInput { .. })),
            "{refused:?}"
        );
    }
    let timer = phone
        .start_timer(&w.deployment, Category::Police, TALWANDI, NOW + 1200, NOW)
        .unwrap();
    let decoded = Signed::<sosvault::timer::TimedPanic>::decode(&timer.bytes).unwrap();
    assert_eq!(decoded.body().not_before, Timestamp(NOW + 1200));
    assert_eq!(decoded.hash().to_hex(), timer.hash);
    // A wrong PIN signs nothing; the PIN and the duress PIN sign a check-in
    // of the same shape, with a note for every trustee.
    let wrong = phone.check_in(&w.deployment, timer.hash.clone(), &pins, "0000".into(), NOW);
    assert!(matches!(wrong, Err(VaultError::WrongPin)));
    let safe = phone
        .check_in(
            &w.deployment,
            timer.hash.clone(),
            &pins,
            "2468".into(),
            NOW + 600,
        )
        .unwrap();
    let duress = phone
        .check_in(
            &w.deployment,
            timer.hash.clone(),
            &pins,
            "1357".into(),
            NOW + 600,
        )
        .unwrap();
    for c in [&safe, &duress] {
        let c = Signed::<sosvault::timer::CheckIn>::decode(&c.bytes).unwrap();
        assert_eq!(c.body().panic.to_hex(), timer.hash);
        assert_eq!(c.body().trustee_notes.len(), w.trustees.len());
    }
    // The trustees' receipts of the check-in count as a cancel's.
    let receipts: Vec<Vec<u8>> = w
        .trustees
        .iter_mut()
        .map(|t| {
            t.cancel(&safe.bytes, Timestamp(NOW + 601))
                .unwrap()
                .as_bytes()
                .to_vec()
        })
        .collect();
    let counted = phone.confirmed(
        &w.deployment,
        Confirmation::Cancel,
        safe.hash.clone(),
        receipts,
    );
    assert_eq!(counted.unwrap(), 3);
}

#[test]
fn a_panic_both_ways_needs_the_control_rooms_own_channel_and_shares_one_counter() {
    let mut w = world();
    let phone = enrolled(&mut w);
    // A channel another key signed (a hostile service's number and key), or
    // bytes that are no channel: refused, and nothing is signed.
    let forged = ControlRoomKey::generate()
        .sms_channel("+917440000666", Timestamp(NOW))
        .unwrap();
    for channel in [forged.as_bytes().to_vec(), b"not a channel".to_vec()] {
        let refused = phone.panic_with_sms(&w.deployment, channel, Category::Police, TALWANDI, NOW);
        assert!(
            matches!(&refused, Err(VaultError::BadInput { what, .. }) if what == "the SMS channel"),
            "{refused:?}"
        );
    }
    let channel = w
        .control_room
        .sms_channel("+917440000100", Timestamp(NOW))
        .unwrap();
    let both = phone
        .panic_with_sms(
            &w.deployment,
            channel.as_bytes().to_vec(),
            Category::Police,
            TALWANDI,
            NOW,
        )
        .unwrap();
    assert_eq!(both.number, "+917440000100");
    assert!(both.text.len() <= sosvault::sms::MAX_SMS_CHARS);
    let http = Signed::<sosvault::PanicEvent>::decode(&both.panic.bytes).unwrap();
    let text = sosvault::sms::from_text(&both.text).unwrap();
    assert_eq!(text.as_bytes(), &both.sms.bytes[..]);
    assert_eq!(text.hash().to_hex(), both.sms.hash);
    // One counter both ways, and the refusals took none: this press is the
    // first message the phone signed.
    assert_eq!(text.body().panic().counter, http.body().counter);
    assert_eq!(http.body().counter, 1);
    // Only the control room opens where the student is.
    let at = w.control_room.sms_key().open_location(&text).unwrap();
    assert_eq!((at.lat(), at.lon()), (TALWANDI.lat, TALWANDI.lon));
}

#[test]
fn a_log_answer_is_shown_only_if_every_entry_is_the_students_and_proven() {
    let mut w = world();
    let phone = enrolled(&mut w);
    let student = StudentId::from_hex(&phone.student_id()).unwrap();
    let log_key = w.control_room.log_key();
    let mut log = MerkleLog::new();
    let view = |student, salt| LogEntry::ProfileViewed {
        student,
        incident: IncidentId::from_bytes([4; 16]),
        viewer: Viewer::new("unit:pcr-12").unwrap(),
        salt: Some(salt),
        at: Timestamp(NOW),
    };
    let entries = [
        view(student, [1; 16]),
        view(StudentId::from_bytes([9; 32]), [2; 16]),
    ];
    for e in &entries {
        log.append(e);
    }
    let head = log.sign_head(&log_key, Timestamp(NOW)).as_bytes().to_vec();
    let proven = |index: u64| ProvenEntry {
        index,
        entry: entries[usize::try_from(index).unwrap()].to_bytes(),
        proof: log
            .inclusion_proof(index, 2)
            .unwrap()
            .iter()
            .map(|h| h.to_vec())
            .collect(),
        reason: None,
        reason_nonce: None,
    };
    let key_hex = log_key.public().to_hex();
    let id = phone.student_id();
    let lines = read_log(id.clone(), key_hex.clone(), head.clone(), vec![proven(0)]).unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].kind, "profile-viewed");
    assert_eq!(lines[0].viewer.as_deref(), Some("unit:pcr-12"));
    // Another student's entry, an entry moved to another index, another
    // log's head: the whole answer is refused.
    let mut moved = proven(0);
    moved.index = 1;
    for bad in [vec![proven(1)], vec![proven(0), moved]] {
        let refused = read_log(id.clone(), key_hex.clone(), head.clone(), bad).unwrap_err();
        assert!(matches!(refused, VaultError::BadLog { .. }), "{refused}");
    }
    let other_key = ControlRoomKey::generate().log_key().public().to_hex();
    assert!(read_log(id, other_key, head, vec![proven(0)]).is_err());
}
