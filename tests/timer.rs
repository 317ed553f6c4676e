//! The check-in timer at the trustees (`docs/BEYOND-PANIC.md` §3): a timed
//! panic released only from its not-before, revoked by a check-in in
//! safety, released at once after a duress check-in, and nothing a hostile
//! control room can do about either.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{T0, World, here};
use sosvault::timer::{AnyPanic, CheckIn, MAX_TIMER_SECS, TimedPanic};
use sosvault::{
    CancelRefusal, Category, Device, DeviceError, DeviceKey, IncidentId, IncidentKey, Refusal,
    ReleaseRefusal, Signed, StudentEntry, Timestamp,
};

/// A 20-minute walk home.
const WALK: u64 = 20 * 60;

struct Walk {
    world: World,
    device: Device,
    timed: Signed<TimedPanic>,
}

/// An enrolled student who starts a 20-minute timer at `T0`.
fn walk() -> Walk {
    let mut world = World::new(3);
    let mut device = Device::new(DeviceKey::generate());
    world.enroll(&mut device, b"{}", 2, T0.minus(3600));
    let timed = device
        .timed_panic(
            Category::Police,
            &here(T0),
            T0.plus(WALK),
            &world.control_room.public(),
            T0,
        )
        .unwrap();
    Walk {
        world,
        device,
        timed,
    }
}

impl Walk {
    /// Trustee `i`'s answer to a release request for the timed panic signed at `now`.
    fn release(&mut self, i: usize, now: Timestamp) -> Result<(), Refusal> {
        let request = self.world.control_room.release_request(
            &self.timed,
            IncidentId::random(),
            &IncidentKey::generate(),
            now,
        );
        self.world.trustees[i]
            .release(request.as_bytes(), now)
            .map(|_| ())
    }

    fn check_in(&mut self, duress: bool, now: Timestamp) -> Signed<CheckIn> {
        self.device
            .check_in(
                self.timed.hash(),
                duress,
                &self.world.control_room.public(),
                now,
            )
            .unwrap()
    }

    fn too_early(&self) -> Refusal {
        Refusal::Release(ReleaseRefusal::TooEarly {
            not_before: self.timed.body().not_before,
        })
    }
}

#[test]
fn a_timed_panic_is_released_only_from_its_not_before() {
    let mut w = walk();
    let early = w.too_early();
    assert_eq!(w.release(0, T0).unwrap_err(), early);
    assert_eq!(w.release(0, T0.plus(WALK - 1)).unwrap_err(), early);
    // The refusal changed nothing: at the end the same trustee releases.
    w.release(0, T0.plus(WALK)).unwrap();
    w.release(1, T0.plus(WALK)).unwrap();
}

#[test]
fn a_timed_panic_ages_from_its_not_before() {
    // A three-hour timer: its signature is three hours old at its end,
    // older than a panic may be, yet it is released then...
    let mut world = World::new(3);
    let mut device = Device::new(DeviceKey::generate());
    world.enroll(&mut device, b"{}", 2, T0.minus(3600));
    let end = T0.plus(3 * 3600);
    let timed = device
        .timed_panic(
            Category::Medical,
            &here(T0),
            end,
            &world.control_room.public(),
            T0,
        )
        .unwrap();
    let ask = |world: &mut World, i: usize, now: Timestamp| {
        let request = world.control_room.release_request(
            &timed,
            IncidentId::random(),
            &IncidentKey::generate(),
            now,
        );
        world.trustees[i].release(request.as_bytes(), now)
    };
    ask(&mut world, 0, end.plus(60)).unwrap();
    // ...and, like any panic, not past the maximum age counted from then.
    assert_eq!(
        ask(&mut world, 1, end.plus(3601)).unwrap_err(),
        Refusal::Release(ReleaseRefusal::StalePanic)
    );
}

#[test]
fn a_check_in_in_safety_revokes_the_timed_panic_for_good() {
    let mut w = walk();
    let check_in = w.check_in(false, T0.plus(600));
    for t in &mut w.world.trustees {
        let receipt = t.cancel(check_in.as_bytes(), T0.plus(601)).unwrap();
        assert_eq!(receipt.body().cancel, check_in.hash());
        assert_eq!(receipt.body().counter, check_in.body().counter);
        // The same check-in again: the same receipt.
        assert_eq!(
            t.cancel(check_in.as_bytes(), T0.plus(700)).unwrap(),
            receipt
        );
    }
    let student = w.device.student_id();
    for i in 0..3 {
        let entry = w.world.trustees[i].entry(&student).unwrap();
        assert!(!entry.withholds_log());
        assert_eq!(entry.cancelled_through(), check_in.body().counter);
        // At the timer's end, and ever after, nothing is released for it.
        assert!(matches!(
            w.release(i, T0.plus(WALK)).unwrap_err(),
            Refusal::Release(ReleaseRefusal::Cancelled { .. })
        ));
    }
}

#[test]
fn a_duress_check_in_releases_at_once_and_looks_like_one_in_safety() {
    let mut safe = walk();
    let mut forced = walk();
    let at = T0.plus(600);
    let calm = safe.check_in(false, at);
    let duress = forced.check_in(true, at);
    // On the wire: the same tag, the same shape, a note for every trustee.
    assert_eq!(
        calm.body().trustee_notes.len(),
        duress.body().trustee_notes.len()
    );
    let calm_receipt = safe.world.trustees[0].cancel(calm.as_bytes(), at).unwrap();
    let duress_receipt = forced.world.trustees[0]
        .cancel(duress.as_bytes(), at)
        .unwrap();
    // The receipts say the same thing (each names its own check-in).
    assert_eq!(calm_receipt.body().counter, duress_receipt.body().counter);
    assert_eq!(
        calm_receipt.body().revoked_at,
        duress_receipt.body().revoked_at
    );
    assert_eq!(duress_receipt.body().cancel, duress.hash());
    forced.world.trustees[1]
        .cancel(duress.as_bytes(), at)
        .unwrap();
    // The timer has eighteen minutes to run, but two trustees release now.
    forced.release(0, at.plus(5)).unwrap();
    forced.release(1, at.plus(5)).unwrap();
    // The third never got the check-in: it waits for the timer's end.
    assert_eq!(
        forced.release(2, at.plus(5)).unwrap_err(),
        forced.too_early()
    );
    // From the duress check-in on, the trustees keep the student's later
    // entries from the student's own log query.
    let student = forced.device.student_id();
    assert!(
        forced.world.trustees[0]
            .entry(&student)
            .unwrap()
            .withholds_log()
    );
    assert!(
        !forced.world.trustees[2]
            .entry(&student)
            .unwrap()
            .withholds_log()
    );
    // The mark is kept at rest (sealed with the entry) and survives a reload.
    let entry = forced.world.trustees[0].entry(&student).unwrap();
    let reloaded = StudentEntry::from_secret_bytes(&entry.to_secret_bytes()).unwrap();
    assert!(reloaded.withholds_log());
    assert_eq!(reloaded.to_secret_bytes(), entry.to_secret_bytes());
}

#[test]
fn a_duress_check_in_waives_the_not_before_of_its_own_timed_panic_only() {
    let mut w = walk();
    // A second timer after the first (a new walk): the duress check-in of
    // the first does not waive the second's not-before.
    let second = w
        .device
        .timed_panic(
            Category::Police,
            &here(T0),
            T0.plus(2 * WALK),
            &w.world.control_room.public(),
            T0.plus(1),
        )
        .unwrap();
    let duress = w.check_in(true, T0.plus(60));
    w.world.trustees[0]
        .cancel(duress.as_bytes(), T0.plus(60))
        .unwrap();
    let request = w.world.control_room.release_request(
        &second,
        IncidentId::random(),
        &IncidentKey::generate(),
        T0.plus(70),
    );
    assert_eq!(
        w.world.trustees[0]
            .release(request.as_bytes(), T0.plus(70))
            .unwrap_err(),
        Refusal::Release(ReleaseRefusal::TooEarly {
            not_before: T0.plus(2 * WALK)
        })
    );
}

#[test]
fn the_control_room_cannot_claim_duress() {
    // The control room holds a check-in made in safety; it can neither
    // alter its notes (the device signed them) nor make one of its own.
    let mut w = walk();
    let calm = w.check_in(false, T0.plus(600));
    let mut forged = calm.as_bytes().to_vec();
    let n = forged.len();
    forged[n - 100] ^= 1; // inside the last trustee's sealed note
    assert!(matches!(
        w.world.trustees[2]
            .cancel(&forged, T0.plus(601))
            .unwrap_err(),
        Refusal::Cancel(CancelRefusal::Malformed(_))
    ));
    // A check-in signed by another key is not the student's.
    let mut stranger = Device::new(DeviceKey::generate());
    let mut other = World::new(3);
    other.enroll(&mut stranger, b"{}", 2, T0);
    let fake = stranger
        .check_in(w.timed.hash(), true, &w.world.control_room.public(), T0)
        .unwrap();
    assert!(w.world.trustees[0].cancel(fake.as_bytes(), T0).is_err());
    // So the timed panic stays sealed until its end.
    assert_eq!(w.release(0, T0.plus(602)).unwrap_err(), w.too_early());
}

#[test]
fn a_timer_is_bounded_and_its_panic_decodes_as_either_kind() {
    let mut w = walk();
    let room = w.world.control_room.public();
    for end in [T0, T0.minus(1), T0.plus(MAX_TIMER_SECS + 1)] {
        assert!(matches!(
            w.device
                .timed_panic(Category::Police, &here(T0), end, &room, T0),
            Err(DeviceError::BadTimer)
        ));
    }
    let longest = w
        .device
        .timed_panic(
            Category::Police,
            &here(T0),
            T0.plus(MAX_TIMER_SECS),
            &room,
            T0,
        )
        .unwrap();
    let any = AnyPanic::decode(longest.as_bytes()).unwrap();
    assert_eq!(any.not_before(), Some(T0.plus(MAX_TIMER_SECS)));
    assert_eq!(any.age_from(), T0.plus(MAX_TIMER_SECS));
    let pressed = w.world.signed_panic(&mut w.device, T0);
    let any = AnyPanic::decode(pressed.as_bytes()).unwrap();
    assert_eq!((any.not_before(), any.age_from()), (None, T0));
    assert_eq!(any.hash(), pressed.hash());
}
