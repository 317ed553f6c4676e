//! The trustee checks a delivery (signatures, opening the share) before it
//! takes the store's lock, and decides it against the student's entry after.
//! Split that way, a delivery must still get the refusal the one-step
//! `Trustee::accept_share` gives: checks against the entry come first, so a
//! shredded student's delivery says "shredded" even when its share does not
//! open, and a relay retry gets its receipt back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sosvault::{
    Container, ControlRoomKey, Device, DeviceKey, EnrollRefusal, Policy, ShareDelivery,
    StudentEntry, TimeLimits, Timestamp, Transition, Trustee, TrusteeKey,
};

fn same(
    a: &Result<Transition<sosvault::ShareReceipt>, EnrollRefusal>,
    b: &Result<Transition<sosvault::ShareReceipt>, EnrollRefusal>,
) {
    match (a, b) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.repeated, b.repeated);
            assert_eq!(a.answer.body(), b.answer.body());
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("{a:?} != {b:?}"),
    }
}

/// Both paths, on the same entry and bytes; the split path's outcome.
fn decide(
    t: &Trustee,
    current: Option<&StudentEntry>,
    bytes: &[u8],
    now: Timestamp,
) -> Result<Transition<sosvault::ShareReceipt>, EnrollRefusal> {
    let one_step = t.accept_share(current, bytes, now);
    let split = t
        .check_delivery(bytes)
        .and_then(|checked| t.accept_checked_share(current, &checked, now));
    same(&one_step, &split);
    split
}

#[test]
fn checking_first_gives_the_same_decision_in_the_same_order() {
    let now = Timestamp::now();
    let cr = ControlRoomKey::generate();
    let key = TrusteeKey::generate();
    let publics = [
        key.public(),
        TrusteeKey::generate().public(),
        TrusteeKey::generate().public(),
    ];
    let t = Trustee::new(key, vec![cr.public()], TimeLimits::default());
    let mut device = Device::new(DeviceKey::generate());
    let e = device
        .enroll(b"profile", &publics, 2, Policy::default(), now)
        .unwrap();
    let ours = e.package.delivery(1).unwrap();
    // Our index, but the share sealed to trustee 2: it does not open here.
    let unopenable = ShareDelivery {
        sealed_share: e.package.delivery(2).unwrap().sealed_share,
        ..ours.clone()
    }
    .to_bytes();
    let ours = ours.to_bytes();
    let not_ours = e.package.delivery(2).unwrap().to_bytes();

    // Malformed bytes fail the check itself.
    assert!(matches!(
        t.check_delivery(b"not a delivery"),
        Err(EnrollRefusal::Malformed(_))
    ));
    // A fresh student.
    assert_eq!(
        decide(&t, None, &not_ours, now).unwrap_err(),
        EnrollRefusal::NotOurShare
    );
    assert_eq!(
        decide(&t, None, &unopenable, now).unwrap_err(),
        EnrollRefusal::DoesNotOpen
    );
    let accepted = decide(&t, None, &ours, now).unwrap();
    assert!(!accepted.repeated);
    let entry = accepted.entry;

    // Enrolled: the same record again is a retry, whatever its share.
    let retry = decide(&t, Some(&entry), &ours, now.plus(5)).unwrap();
    assert!(retry.repeated);
    assert_eq!(retry.answer.as_bytes(), accepted.answer.as_bytes());
    let retry = decide(&t, Some(&entry), &unopenable, now.plus(5)).unwrap();
    assert!(retry.repeated);

    // Shredded: "shredded" comes before "does not open".
    let stop = device.stop(false, &cr.public(), now).unwrap();
    let checked = Trustee::check_stop(stop.as_bytes()).unwrap();
    let shredded = t.shred(Some(&entry), &checked, now).unwrap().entry;
    for bytes in [&ours, &unopenable] {
        assert_eq!(
            decide(&t, Some(&shredded), bytes, now).unwrap_err(),
            EnrollRefusal::Shredded(1)
        );
    }
    // Not ours is told before anything about the entry.
    assert_eq!(
        decide(&t, Some(&shredded), &not_ours, now).unwrap_err(),
        EnrollRefusal::NotOurShare
    );
}
