//! A fixed trustee (keys from seeds, one pinned control room) driven through a
//! sequence of transitions chosen by the input: raw bytes into
//! `accept_share` / `check_request` + `release` / `check_stop` + `shred`, and
//! well-signed messages with fuzzed fields (epochs, counters, times, signers):
//! panics of every kind (pressed now, timed, sent by SMS) in requests, stops, cancels (`revoke`), enrollment commits
//! (`commit`, which stage re-enrollments), and the clock (`expire`),
//! starting with or without an enrolled entry. The trustee's store is a map
//! from student to entry, looked up and replaced after each transition the way
//! the trustee service does it.
//!
//! It must never panic, and every answer must respect the trustee's rules
//! (`crates/sosvault/src/trustee.rs`): a share only for a fresh panic from the
//! enrolled device of the current, unshredded epoch inside a request from the
//! pinned control room; no share after a stop; a retry gets the same answer,
//! only inside its window; nothing at or below a cancel's counter.
//!
//! Input: `u8 flags` (bit 0: start enrolled), then operations until the input
//! runs out, each `u8 op` followed by its fields (see `step`; the seeds in
//! `scripts/seed-fuzz-corpus.sh` spell a few sequences out).
#![no_main]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sosvault::sms::{self, SmsPanic};
use sosvault::timer::{AnyPanic, TimedPanic};
use sosvault::{
    Cancel, Category, CheckedRequest, CheckedStop, Container, ControlRoomKey, Device, DeviceKey,
    EnrollmentCommit, EnrollmentRecord, IncidentId, IncidentRecipient, MessageHash, PanicEvent,
    Policy, Profile, Release, ReleaseRequest, ShareDelivery, ShareReceipt, ShredReceipt, Signed,
    Stop, StudentEntry, StudentId, TimeLimits, Timestamp, Transition, Trustee, TrusteeKey,
};
use sosvault_fuzz::{control_room_key, device_key, seeds, trustee_key};

const NOW: Timestamp = Timestamp(1_790_000_000);
const MAX_OPS: usize = 24;

struct Fixture {
    trustee: Trustee,
    stranger: DeviceKey,
    rogue_room: ControlRoomKey,
    /// Share deliveries: ours for epochs 1..=3, another trustee's, a stranger's,
    /// and one with its sealed share altered.
    deliveries: Vec<Vec<u8>>,
    /// The device's records of epochs 1..=3 (what its commits name).
    records: Vec<Signed<EnrollmentRecord>>,
    /// The trustee's entry after accepting epoch 1.
    enrolled: Vec<u8>,
}

impl Fixture {
    /// The enrolled device's key or a stranger's, as the next input bit says.
    fn device_or_stranger(&self, c: &mut Cursor<'_>) -> &DeviceKey {
        if c.u8() & 1 == 0 {
            device_key()
        } else {
            &self.stranger
        }
    }

    /// The pinned control room's key or a rogue one, as the next input bit says.
    fn room_or_rogue(&self, c: &mut Cursor<'_>) -> &ControlRoomKey {
        if c.u8() & 1 == 0 {
            control_room_key()
        } else {
            &self.rogue_room
        }
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let trustee = Trustee::new(
            TrusteeKey::from_seed(&seeds::TRUSTEE),
            vec![control_room_key().public()],
            TimeLimits::default(),
        );
        let publics = vec![
            trustee_key().public(),
            TrusteeKey::from_seed(&[0x11; 32]).public(),
            TrusteeKey::from_seed(&[0x12; 32]).public(),
        ];
        let profile = Profile::new("Fuzz", "+91 00000 00000").to_bytes();
        let mut device = Device::new(DeviceKey::from_seed(&seeds::DEVICE));
        let mut deliveries = Vec::new();
        let e1 = device
            .enroll(&profile, &publics, 2, Policy::default(), NOW)
            .unwrap()
            .package;
        deliveries.push(e1.delivery(1).unwrap().to_bytes());
        deliveries.push(e1.delivery(2).unwrap().to_bytes());
        let mut records = vec![e1.record.clone()];
        for _ in 0..2 {
            let e = device.reenroll(&profile, NOW).unwrap().package;
            deliveries.push(e.delivery(1).unwrap().to_bytes());
            records.push(e.record.clone());
        }
        let mut stranger = Device::new(DeviceKey::from_seed(&[0x04; 32]));
        let s = stranger
            .enroll(&profile, &publics, 2, Policy::default(), NOW)
            .unwrap()
            .package;
        deliveries.push(s.delivery(1).unwrap().to_bytes());
        let mut altered = e1.delivery(1).unwrap();
        let mid = altered.sealed_share.len() / 2;
        altered.sealed_share[mid] ^= 1;
        deliveries.push(altered.to_bytes());
        let enrolled = trustee
            .accept_share(None, &deliveries[0], NOW)
            .unwrap()
            .entry
            .to_secret_bytes()
            .to_vec();
        Fixture {
            trustee,
            stranger: DeviceKey::from_seed(&[0x04; 32]),
            rogue_room: ControlRoomKey::from_seed(&[0x05; 32]),
            deliveries,
            records,
            enrolled,
        }
    })
}

/// Reads fields off the input; past its end every field reads as zero.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes([self.u8(), self.u8()])
    }
    fn var(&mut self) -> Vec<u8> {
        let len = u16::from_be_bytes([self.u8(), self.u8()]) as usize;
        self.take(len).to_vec()
    }
}

/// `SOSVAULT_FUZZ_TRACE=1` prints each transition's outcome (to check what a
/// seed does: `cargo +nightly fuzz run trustee_transitions <file>`).
fn trace(what: &str, outcome: &dyn std::fmt::Debug) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("SOSVAULT_FUZZ_TRACE").is_some()) {
        eprintln!("{what}: {outcome:?}");
    }
}

fn shift(t: Timestamp, secs: i16) -> Timestamp {
    Timestamp(t.0.saturating_add_signed(i64::from(secs)))
}

struct State {
    now: Timestamp,
    /// The trustee's store: one entry per student, looked up the way the
    /// service does (by the student the input speaks for).
    entries: HashMap<StudentId, StudentEntry>,
    /// Requests and stops sent so far, to replay.
    sent: Vec<Vec<u8>>,
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let mut c = Cursor(data);
    let flags = c.u8();
    let mut st = State {
        now: NOW,
        entries: HashMap::new(),
        sent: Vec::new(),
    };
    if flags & 1 == 1 {
        let entry = StudentEntry::from_secret_bytes(&fx.enrolled).unwrap();
        st.entries.insert(entry.student(), entry);
    }
    for _ in 0..MAX_OPS {
        if c.is_empty() {
            break;
        }
        step(fx, &mut st, &mut c);
    }
});

fn step(fx: &Fixture, st: &mut State, c: &mut Cursor<'_>) {
    match c.u8() % 10 {
        0 => {
            let bytes = c.var();
            deliver(fx, st, &bytes);
        }
        1 => {
            let bytes = c.var();
            request(fx, st, &bytes);
        }
        2 => {
            let bytes = c.var();
            stop(fx, st, &bytes);
        }
        3 => {
            let pick = c.u8() as usize % fx.deliveries.len();
            deliver(fx, st, &fx.deliveries[pick]);
        }
        4 => {
            // A well-signed panic with fuzzed fields, in a well-signed
            // request: pressed now, timed (a not-before up to 9 hours on,
            // past the 4 a timer may run: then refused), or sent by SMS (its
            // sealed location cut or padded to an SMS seal's length).
            let signer = fx.device_or_stranger(c);
            let event = PanicEvent {
                epoch: u32::from(c.u8() % 4),
                counter: u64::from(c.u8()),
                issued_at: shift(st.now, c.i16()),
                category: Category::ALL[c.u8() as usize % 3],
                sealed_location: c.var(),
            };
            let room = fx.room_or_rogue(c);
            let incident = IncidentId::from_bytes([c.u8(); 16]);
            let recipient = IncidentRecipient::from_bytes([c.u8(); 32]);
            let issued_at = shift(st.now, c.i16());
            let panic: AnyPanic = match c.u8() % 3 {
                0 => Signed::sign(event, signer).into(),
                1 => {
                    let ahead = u64::from(u16::from_be_bytes([c.u8(), c.u8()])) / 2;
                    let not_before = event.issued_at.plus(ahead);
                    Signed::sign(
                        TimedPanic {
                            panic: event,
                            not_before,
                        },
                        signer,
                    )
                    .into()
                }
                _ => {
                    let mut event = event;
                    event.sealed_location.resize(sms::SEALED_LOCATION_LEN, 0);
                    Signed::sign(SmsPanic::new(event).unwrap(), signer).into()
                }
            };
            let req = Signed::sign(
                ReleaseRequest {
                    panic,
                    incident,
                    recipient,
                    issued_at,
                },
                room,
            );
            let bytes = req.as_bytes().to_vec();
            request(fx, st, &bytes);
            st.sent.push(bytes);
        }
        5 => {
            // A well-signed stop with fuzzed fields.
            let signer = fx.device_or_stranger(c);
            let s = Signed::sign(
                Stop {
                    epoch: u32::from(c.u8() % 4),
                    counter: u64::from(c.u8()),
                    issued_at: shift(st.now, c.i16()),
                    sealed_note: c.var(),
                },
                signer,
            );
            let bytes = s.as_bytes().to_vec();
            stop(fx, st, &bytes);
            st.sent.push(bytes);
        }
        6 => {
            // Replay something sent before (as a request and as a stop).
            if !st.sent.is_empty() {
                let i = c.u8() as usize % st.sent.len();
                let bytes = st.sent[i].clone();
                request(fx, st, &bytes);
                stop(fx, st, &bytes);
            }
        }
        7 => st.now = shift(st.now, c.i16()),
        8 => {
            // A real delivery whose sealed share the relay replaced: the trustee
            // opens attacker-chosen age ciphertext (the share sits outside the
            // record's signature).
            let pick = c.u8() as usize % fx.deliveries.len();
            let mut d = ShareDelivery::from_bytes(&fx.deliveries[pick]).unwrap();
            d.sealed_share = c.var();
            deliver(fx, st, &d.to_bytes());
        }
        _ => match c.u8() % 4 {
            1 => cancel(fx, st, c),
            2 => commit(fx, st, c),
            3 => {
                // The clock's one duty: drop releases whose retry window closed.
                for e in st.entries.values_mut() {
                    if let Some(next) = fx.trustee.expire(e, st.now) {
                        assert!(next.last_release().is_none());
                        assert!(fx.trustee.retry_deadline(e).is_some_and(|d| st.now > d));
                        *e = next;
                    }
                }
            }
            _ => reload(st),
        },
    }
}

/// Persist and load every entry, as the service does between requests.
fn reload(st: &mut State) {
    for e in st.entries.values_mut() {
        let bytes = e.to_secret_bytes();
        let back = StudentEntry::from_secret_bytes(&bytes).expect("a saved entry loads");
        assert!(
            back.to_secret_bytes() == bytes,
            "the entry changed on reload"
        );
        *e = back;
    }
}

/// A well-signed cancel with a fuzzed counter, from the device or a stranger.
fn cancel(fx: &Fixture, st: &mut State, c: &mut Cursor<'_>) {
    let signer = fx.device_or_stranger(c);
    let cancel = Signed::sign(
        Cancel {
            panic: MessageHash::from_bytes([c.u8(); 32]),
            counter: u64::from(c.u8()),
            issued_at: shift(st.now, c.i16()),
            sealed_note: c.var(),
        },
        signer,
    );
    let checked = Trustee::check_cancel(cancel.as_bytes()).unwrap();
    let student = checked.student();
    let prev = st.entries.get(&student);
    let t = match fx.trustee.revoke(prev, &checked, st.now) {
        Ok(t) => t,
        Err(e) => return trace("revoke", &e),
    };
    trace("revoke", &(t.answer.body().counter, t.repeated));
    let p = prev.expect("a cancel taken with no entry");
    assert!(ours(fx, t.answer.signer()));
    assert_eq!(
        p.record().map(|r| r.signer()),
        Some(cancel.signer()),
        "a stranger's cancel was taken"
    );
    assert_eq!(t.answer.body().cancel, cancel.hash());
    if !t.repeated {
        assert!(cancel.body().counter > p.cancelled_through());
        assert_eq!(t.entry.cancelled_through(), cancel.body().counter);
    }
    st.entries.insert(student, t.entry);
}

/// A well-signed enrollment commit of a fuzzed epoch, naming a record the
/// trustee holds (its current or previous one) or a made-up one.
fn commit(fx: &Fixture, st: &mut State, c: &mut Cursor<'_>) {
    let signer = fx.device_or_stranger(c);
    let epoch = u32::from(c.u8() % 4).max(1);
    let record = match c.u8() % 3 {
        0 => fx
            .records
            .iter()
            .find(|r| r.body().epoch == epoch)
            .map(Signed::hash),
        _ => None,
    }
    .unwrap_or_else(|| MessageHash::from_bytes([c.u8(); 32]));
    let commit = Signed::sign(
        EnrollmentCommit {
            epoch,
            record,
            issued_at: shift(st.now, c.i16()),
        },
        signer,
    );
    let checked = Trustee::check_commit(commit.as_bytes()).unwrap();
    let student = checked.student();
    let prev = st.entries.get(&student);
    let next = match fx.trustee.commit(prev, &checked, st.now) {
        Ok(Some(next)) => next,
        Ok(None) => return,
        Err(e) => return trace("commit", &e),
    };
    trace("commit", &(epoch, next.previous_epoch()));
    let p = prev.expect("a commit taken with no entry");
    assert_eq!(p.record().map(|r| r.signer()), Some(commit.signer()));
    assert!(next.committed() >= epoch);
    if next.epoch() == Some(epoch) {
        assert!(
            next.previous_epoch().is_none(),
            "a commit kept the older share"
        );
    }
    st.entries.insert(student, next);
}

fn deliver(fx: &Fixture, st: &mut State, bytes: &[u8]) {
    let Ok(student) = Trustee::delivery_student(bytes) else {
        return;
    };
    let prev = st.entries.get(&student);
    let t = match fx.trustee.accept_share(prev, bytes, st.now) {
        Ok(t) => t,
        Err(e) => return trace("accept_share", &e),
    };
    trace("accept_share", &t.answer.body());
    assert_eq!(t.entry.student(), student);
    check_accept(fx, prev, &t);
    st.entries.insert(student, t.entry);
}

fn request(fx: &Fixture, st: &mut State, bytes: &[u8]) {
    let checked = match fx.trustee.check_request(bytes, st.now) {
        Ok(c) => c,
        Err(e) => return trace("check_request", &e),
    };
    assert!(
        control_room_key()
            .public()
            .same_signer(checked.request().signer()),
        "a request from an unpinned control room passed the check"
    );
    let student = checked.student();
    let prev = st.entries.get(&student);
    let t = match fx.trustee.release(prev, &checked, st.now) {
        Ok(t) => t,
        Err(e) => return trace("release", &e),
    };
    trace("release", &(t.answer.body().epoch, t.repeated));
    assert_eq!(t.entry.student(), student);
    check_release(fx, prev, &checked, &t, st.now);
    st.entries.insert(student, t.entry);
}

fn stop(fx: &Fixture, st: &mut State, bytes: &[u8]) {
    let checked = match Trustee::check_stop(bytes) {
        Ok(c) => c,
        Err(e) => return trace("check_stop", &e),
    };
    let student = checked.student();
    let prev = st.entries.get(&student);
    let t = match fx.trustee.shred(prev, &checked, st.now) {
        Ok(t) => t,
        Err(e) => return trace("shred", &e),
    };
    trace("shred", &(t.answer.body().epoch, t.repeated));
    assert_eq!(t.entry.student(), student);
    check_shred(fx, prev, &checked, &t);
    st.entries.insert(student, t.entry);
}

fn ours(fx: &Fixture, signer: &ed25519_dalek::VerifyingKey) -> bool {
    fx.trustee.key().public().verifying_key() == signer
}

fn check_accept(fx: &Fixture, prev: Option<&StudentEntry>, t: &Transition<ShareReceipt>) {
    assert!(ours(fx, t.answer.signer()));
    assert!(t.entry.holds_share(), "accepted, but no share held");
    let epoch = t.entry.epoch().expect("accepted, but no record");
    assert_eq!(t.answer.body().epoch, epoch);
    if let Some(tomb) = t.entry.tombstone() {
        assert!(tomb.epoch < epoch, "a share accepted for a shredded epoch");
    }
    if let Some(p) = prev {
        if t.repeated {
            assert!(p.to_secret_bytes() == t.entry.to_secret_bytes());
        } else if let Some(old) = p.epoch() {
            assert!(
                epoch > old,
                "a share accepted for an epoch not newer than held"
            );
        }
    }
}

fn check_release(
    fx: &Fixture,
    prev: Option<&StudentEntry>,
    checked: &CheckedRequest,
    t: &Transition<Release>,
    now: Timestamp,
) {
    let prev = prev.expect("a release with no entry");
    let record = prev.record().expect("a release with no record");
    assert!(prev.holds_share(), "a release with no share held");
    assert!(ours(fx, t.answer.signer()));
    let panic = checked.panic();
    assert_eq!(
        panic.signer(),
        record.signer(),
        "a release for a panic not signed by the enrolled device"
    );
    let event = panic.body();
    assert!(
        Some(event.epoch) == prev.epoch() || Some(event.epoch) == prev.previous_epoch(),
        "a release for another epoch"
    );
    assert!(
        event.counter > prev.cancelled_through(),
        "a release of a cancelled panic"
    );
    if let Some(tomb) = prev.tombstone() {
        assert!(tomb.epoch < event.epoch, "a release after a stop");
    }
    let body = t.answer.body();
    assert_eq!(body.student, prev.student());
    assert_eq!(body.epoch, event.epoch);
    assert_eq!(body.panic, panic.hash());
    if Some(event.epoch) == prev.epoch() {
        assert_eq!(
            Some(body.share_index),
            record.body().index_of(&fx.trustee.id())
        );
    }
    if t.repeated {
        assert_eq!(
            Some(&t.answer),
            prev.last_release(),
            "a retry got a new release"
        );
        assert!(
            now <= body
                .released_at
                .plus(TimeLimits::default().retry_window_secs),
            "a retry answered after its window"
        );
        return;
    }
    assert!(
        event.counter > prev.highest_counter(),
        "a release for a replayed counter"
    );
    assert_eq!(t.entry.highest_counter(), event.counter);
    let limits = TimeLimits::default();
    assert!(
        event.issued_at <= now.plus(limits.max_skew_secs),
        "a future panic"
    );
    // A timed panic ages from its not-before, and is released only from
    // then on (or once a duress check-in waived it).
    assert!(
        panic.age_from() >= now.minus(limits.max_panic_age_secs),
        "a stale panic"
    );
    if let Some(not_before) = panic.not_before() {
        assert!(
            now >= not_before || prev.waived() == Some(panic.hash()),
            "a timed panic released before its not-before"
        );
    }
    let at = checked.request().body().issued_at;
    assert!(at <= now.plus(limits.max_skew_secs) && at >= now.minus(limits.max_skew_secs));
}

fn check_shred(
    fx: &Fixture,
    prev: Option<&StudentEntry>,
    checked: &CheckedStop,
    t: &Transition<ShredReceipt>,
) {
    let tomb = t.entry.tombstone().expect("no tombstone after a stop");
    let epoch = checked.stop().body().epoch;
    assert!(tomb.epoch >= epoch);
    // No share of the stop's epoch or an earlier one survives it.
    if t.entry.holds_share() {
        assert!(
            t.entry.epoch() > Some(epoch),
            "a share survived a stop of its epoch"
        );
    }
    if t.repeated {
        // An old stop again (a retry, or a replay after a later enrollment): the
        // same receipt, and nothing changes; the later epoch's share stays.
        let p = prev.expect("a repeated stop with no entry");
        assert_eq!(
            Some(&t.answer),
            p.tombstone().map(|t| &t.receipt),
            "a repeated stop got a new receipt"
        );
        assert!(
            p.to_secret_bytes() == t.entry.to_secret_bytes(),
            "a repeated stop changed the entry"
        );
        return;
    }
    assert!(!t.entry.holds_share(), "a share survived a stop");
    assert!(t.entry.last_release().is_none());
    assert!(ours(fx, t.answer.signer()));
    assert_eq!(t.answer.body().stop, checked.stop().hash());
    assert_eq!(t.answer.body().epoch, epoch);
    if let Some(record) = prev.and_then(|p| p.record()) {
        assert_eq!(
            record.signer(),
            checked.stop().signer(),
            "a stranger's stop shredded"
        );
    }
}
