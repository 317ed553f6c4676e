//! Tests of the SQLite store's operations: panics, duress alerts, the access
//! window, cancels, the log, staged re-enrollment, and what a wipe leaves on disk.

use std::path::Path;

use rusqlite::Connection;
use sosvault::{Category, IncidentId, MessageHash, StudentId, TrusteeId};

use super::{
    AssignmentRow, AssignmentStatus, Beat, ChatAdded, ChatSide, CommitStored, DURESS_STOP,
    ForwardHolder, ForwardKey, ForwardTo, Glance, IncidentStatus, Lease, NewChat, NewDuressAlert,
    NewIncident, NewLogEntry, PanicStored, SqliteStore, Store, StoreError, StudentLogRow,
    TakenForwards, TakenLease, TimerRow, TimerState, TrailRow, TrusteeAnswer, UnitRow, ViewReason,
};
use crate::unit::UnitId;

/// The incident id `[n; 16]`.
pub(super) const fn iid(n: u8) -> IncidentId {
    IncidentId::from_bytes([n; 16])
}

/// The student id `[n; 32]`.
pub(super) const fn sid(n: u8) -> StudentId {
    StudentId::from_bytes([n; 32])
}

/// The unit id `[n; 6]`.
pub(super) const fn uid(n: u8) -> UnitId {
    UnitId::from_bytes([n; 6])
}

/// Teams `u` and `v` of the tests.
const U: UnitId = uid(1);
const V: UnitId = uid(2);

/// The trustee id `[n; 32]`.
pub(super) const fn tid(n: u8) -> TrusteeId {
    TrusteeId::from_bytes([n; 32])
}

/// Forwards to `trustees` stored on SQLite (no node carries them).
pub(super) fn to(trustees: &[TrusteeId]) -> ForwardTo<'_> {
    ForwardTo {
        trustees,
        node: None,
    }
}

/// The message hash `[n; 32]`.
pub(super) const fn mhash(n: u8) -> MessageHash {
    MessageHash::from_bytes([n; 32])
}

/// Log entry `index` with bytes `entry` (its leaf hash `[index + 1; 32]`),
/// about student `[student; 32]` and incident `[incident; 16]`, no reason.
pub(super) fn log_entry(
    index: u8,
    entry: &[u8],
    student: u8,
    incident: u8,
    actor: &str,
    at_ms: u64,
) -> NewLogEntry {
    NewLogEntry {
        index: index.into(),
        entry: entry.to_vec(),
        leaf_hash: [index + 1; 32],
        student: sid(student),
        incident: iid(incident),
        actor: actor.into(),
        reason: None,
        at_ms,
    }
}

pub(super) fn incident(id: u8, panic_hash: u8) -> NewIncident {
    NewIncident {
        id: iid(id),
        student_id: sid(1),
        panic_hash: mhash(panic_hash),
        panic: vec![9; 10],
        category: Category::Police,
        epoch: 1,
        // One press each (the student, epoch and counter are unique
        // among incidents): incident 3 is counter 5.
        counter: u64::from(id) + 2,
        created_at_ms: 1000,
        incident_key_sealed: vec![7; 8],
        flags: vec!["rate_limited".into()],
        lease: Lease {
            node: "n-a".into(),
            until_ms: 10_000,
        },
    }
}

/// The path of a database file in `dir` that an older schema left: made by
/// `sql` alone, before [`SqliteStore::open`] migrates it.
fn older_database(dir: &Path, sql: &str) -> std::path::PathBuf {
    let path = dir.join("db");
    let c = Connection::open(&path).unwrap();
    c.execute_batch(sql).unwrap();
    path
}

/// Enrolls student `[1; 32]` (epoch 1, device `[2; 32]`).
fn enroll(s: &dyn Store) {
    s.put_enrollment(&sid(1), &[2; 32], 1, b"rec", b"profile", 1)
        .unwrap();
}

/// A store in `dir` with student `[1; 32]` enrolled (epoch 1).
/// The student of [`enroll`] with two open incidents, `[3; 16]` and
/// `[5; 16]` (its panics of counters 3 and 5).
fn two_open_incidents(s: &dyn Store) {
    enroll(s);
    for (n, hash) in [(3, 4), (5, 6)] {
        let mut i = incident(n, hash);
        i.counter = u64::from(n);
        s.insert_panic(&i, "x").unwrap();
    }
}

fn enrolled(dir: &Path) -> SqliteStore {
    enrolled_with(dir, b"rec", b"profile")
}

/// Asserts whether `needle` is in the SQLite file or its WAL in `dir`. On
/// PostgreSQL (`None`) the files are the server's, and nothing is checked
/// here: SECURITY.md ("Storage at rest") says what they keep.
pub(super) fn on_disk_is(dir: Option<&Path>, needle: &[u8], present: bool) {
    if let Some(dir) = dir {
        assert_eq!(
            !on_disk(dir, needle).is_empty(),
            present,
            "{:?}",
            on_disk(dir, needle)
        );
    }
}

/// The store contract: each test named here runs on a fresh SQLite file
/// (`NAME::sqlite`) and on a fresh database of the test PostgreSQL server
/// (`NAME::postgres`, see `sosvault_testkit::postgres`).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let s = crate::store::SqliteStore::open(&dir.path().join("db")).unwrap();
                super::$name(&s, Some(dir.path()));
            }

            #[test]
            fn postgres() {
                let db = sosvault_testkit::postgres::TestDatabase::create();
                let s = crate::store::PgStore::connect(db.url()).unwrap();
                super::$name(&s, None);
            }
        }
    )*};
}
pub(super) use on_both_backends;

on_both_backends!(
    panic_is_stored_once,
    a_stop_blanks_the_category_and_it_reads_back_as_none,
    a_duress_alert_opens_once_and_only_without_an_open_incident,
    the_access_window_is_anchored_once_and_extended_only_while_open,
    a_cancel_is_queued_once_per_trustee_until_each_answers,
    transparency_log_rows_come_back_in_order,
    a_team_is_held_by_one_open_incident_at_a_time,
    a_claim_and_its_timeline_entry_are_written_both_or_neither,
    a_forward_is_carried_by_one_live_node_at_a_time,
    one_live_process_beats_under_a_name,
    an_open_incident_is_seen_at_a_glance,
    a_timeline_reads_in_the_order_of_its_times,
    an_arrival_and_an_outcome_are_kept_once_and_a_stop_takes_the_outcome,
    a_duress_mark_holds_back_the_incidents_later_entries_from_the_student,
    a_trail_point_is_kept_once_capped_pruned_and_gone_with_a_stop,
    a_guardians_notice_is_claimed_once_per_incident,
    a_timer_is_held_settled_once_pruned_and_gone_with_a_stop,
    a_twin_joins_its_incident_once_and_says_so,
    a_chat_opens_once_keeps_its_texts_in_order_and_goes_with_a_close_or_a_stop,
);

/// A held timer of student `[1; 32]` whose timed panic hashes to `[n; 32]`,
/// ending at `not_before_ms`; its bytes 300 bytes derived from `n`.
fn timer_row(n: u8, not_before_ms: u64) -> TimerRow {
    TimerRow {
        hash: MessageHash::from_bytes([n; 32]),
        student_id: sid(1),
        timed: (0..300u32)
            .map(|i| (i * 13 + u32::from(n)) as u8 ^ 0x3c)
            .collect(),
        not_before_ms,
        created_at_ms: 1,
        state: TimerState::Held,
        check_in: None,
    }
}

/// The check-in timers: a timer is stored once (its counter bumped with
/// it), found due at its end and not before, settled once (a check-in and
/// the sweeper of another node race: one wins), its timed panic dropped
/// some time after a check-in (the row stays), and deleted by a stop.
fn a_timer_is_held_settled_once_pruned_and_gone_with_a_stop(s: &dyn Store, dir: Option<&Path>) {
    enroll(s);
    let (a, b) = (timer_row(1, 1_000), timer_row(2, 2_000));
    assert!(s.add_timer(&a, 5).unwrap());
    assert_eq!(s.student(&sid(1)).unwrap().unwrap().highest_counter, 5);
    // A counter not above the last seen: nothing written.
    assert!(!s.add_timer(&b, 5).unwrap());
    assert!(s.timer(&b.hash).unwrap().is_none());
    assert!(s.add_timer(&b, 6).unwrap());
    assert_eq!(s.timer(&a.hash).unwrap(), Some(a.clone()));
    assert_eq!(
        (
            s.held_timers(&sid(1)).unwrap(),
            s.held_timers(&sid(2)).unwrap()
        ),
        (2, 0)
    );
    let due = |now| -> Vec<MessageHash> {
        s.due_timers(now, 10)
            .unwrap()
            .iter()
            .map(|t| t.hash)
            .collect()
    };
    assert_eq!(due(999), Vec::<MessageHash>::new());
    assert_eq!(due(1_000), [a.hash]);
    assert_eq!(due(5_000), [a.hash, b.hash]);
    // Settled once: a checks in, then the sweeper's claim finds it settled.
    let check_in = MessageHash::from_bytes([9; 32]);
    assert!(
        s.settle_timer(&a.hash, TimerState::CheckedIn, Some(&check_in))
            .unwrap()
    );
    assert!(!s.settle_timer(&a.hash, TimerState::Fired, None).unwrap());
    assert!(s.settle_timer(&b.hash, TimerState::Fired, None).unwrap());
    assert!(
        !s.settle_timer(&b.hash, TimerState::CheckedIn, Some(&check_in))
            .unwrap()
    );
    assert_eq!(due(5_000), Vec::<MessageHash>::new());
    assert_eq!(s.held_timers(&sid(1)).unwrap(), 0);
    let settled = s.timer(&a.hash).unwrap().unwrap();
    assert_eq!(
        (settled.state, settled.check_in),
        (TimerState::CheckedIn, Some(check_in))
    );
    // After the retention age a checked-in timer keeps no timed panic; a
    // fired one's is the incident's.
    on_disk_is(dir, &a.timed[..64], true);
    assert_eq!(s.prune_timers(1_500).unwrap(), 1);
    assert_eq!(s.prune_timers(1_500).unwrap(), 0);
    assert!(s.timer(&a.hash).unwrap().unwrap().timed.is_empty());
    assert_eq!(s.timer(&b.hash).unwrap().unwrap().timed, b.timed);
    // A panic of the student answers for a timer still held.
    let c = timer_row(3, 9_000);
    assert!(s.add_timer(&c, 7).unwrap());
    assert_eq!(s.supersede_timers(&sid(2)).unwrap(), 0);
    assert_eq!(s.supersede_timers(&sid(1)).unwrap(), 1);
    assert_eq!(s.timer(&c.hash).unwrap().unwrap().state, TimerState::Fired);
    assert_eq!(due(10_000), Vec::<MessageHash>::new());
    s.apply_stop(&sid(1), b"stop", &to(&[tid(9)]), 60).unwrap();
    assert!(s.timer(&a.hash).unwrap().is_none() && s.timer(&b.hash).unwrap().is_none());
    on_disk_is(dir, &b.timed[..64], false);
}

/// [`Store::claim_guardian_notice`]: the first claim of an incident wins,
/// every later one (a restart, another node) is refused; incidents are
/// apart.
fn a_guardians_notice_is_claimed_once_per_incident(s: &dyn Store, _dir: Option<&Path>) {
    two_open_incidents(s);
    assert!(s.claim_guardian_notice(&iid(3), 10).unwrap());
    assert!(!s.claim_guardian_notice(&iid(3), 11).unwrap());
    assert!(s.claim_guardian_notice(&iid(5), 12).unwrap());
    assert!(!s.claim_guardian_notice(&iid(5), 13).unwrap());
    // No such incident: nothing to claim.
    assert!(!s.claim_guardian_notice(&iid(9), 14).unwrap());
}

/// A trail point of student `[1; 32]`: `counter`, epoch 1, issued at
/// `issued_at`, taken at `received_at_ms`, its sealed bytes 300 bytes
/// derived from the counter (long enough to find on disk).
fn trail_point(counter: u64, issued_at: u64, received_at_ms: u64) -> TrailRow {
    TrailRow {
        student_id: sid(1),
        counter,
        epoch: 1,
        issued_at,
        received_at_ms,
        sealed: (0..300u64)
            .map(|i| (i * 31 + counter * 7) as u8 ^ 0xa5)
            .collect(),
    }
}

/// [`Store::add_trail_point`] and the rest of the trail: a point is stored
/// once (its counter bumped with it; an old counter writes nothing), read
/// back by epoch and time, capped per student (the oldest go), pruned by
/// the service's receipt time, and deleted, to the last byte on disk, by a
/// stop.
fn a_trail_point_is_kept_once_capped_pruned_and_gone_with_a_stop(
    s: &dyn Store,
    dir: Option<&Path>,
) {
    enroll(s);
    let keep = 3;
    for c in 1..=4 {
        assert!(
            s.add_trail_point(&trail_point(c, 1000 + c, 10 * c), keep)
                .unwrap()
        );
    }
    // The counter moved with the points: a panic of counter 4 is a replay.
    assert_eq!(s.student(&sid(1)).unwrap().unwrap().highest_counter, 4);
    // The same counter again, or an older one: nothing written.
    assert!(!s.add_trail_point(&trail_point(4, 2000, 50), keep).unwrap());
    assert!(!s.add_trail_point(&trail_point(2, 2000, 50), keep).unwrap());
    let p4 = trail_point(4, 1004, 40);
    assert!(s.has_trail_point(&p4).unwrap());
    // The same counter with another time or other bytes is not that point.
    assert!(!s.has_trail_point(&trail_point(4, 1005, 40)).unwrap());
    let mut other_bytes = p4.clone();
    other_bytes.sealed[0] ^= 1;
    assert!(!s.has_trail_point(&other_bytes).unwrap());
    // Capped at 3: point 1 went. Read back oldest first, from a time on.
    let read = |since| -> Vec<u64> {
        let rows = s.trail_points(&sid(1), 1, since).unwrap();
        rows.iter().map(|r| r.counter).collect()
    };
    assert_eq!(read(0), [2, 3, 4]);
    assert_eq!(read(1003), [3, 4]);
    assert_eq!(s.trail_points(&sid(1), 2, 0).unwrap(), Vec::new());
    assert_eq!(s.trail_points(&sid(2), 1, 0).unwrap(), Vec::new());
    assert_eq!(s.trail_points(&sid(1), 1, 0).unwrap()[2], p4);
    // Pruned by when the service took them (points 2 and 3, at 20 and 30 ms).
    assert_eq!(s.prune_trail(31).unwrap(), 2);
    assert_eq!(read(0), [4]);
    on_disk_is(dir, &p4.sealed[..64], true);
    s.apply_stop(&sid(1), b"stop", &to(&[tid(9)]), 60).unwrap();
    assert_eq!(read(0), Vec::<u64>::new());
    on_disk_is(dir, &p4.sealed[..64], false);
}

/// A text of the chat of incident `[3; 16]`: the student's (with counter
/// `counter` and message hash `[counter; 32]`) or the control room's; its
/// sealed bytes 200 random bytes (no two texts share a run of them), taken
/// at `100 + seed`.
fn chat_text(side: ChatSide, counter: u8, seed: u8, max: u32) -> NewChat {
    NewChat {
        side,
        at_ms: 100 + u64::from(seed),
        sealed: (0..200).map(|_| rand::random::<u8>()).collect(),
        author: (side == ChatSide::ControlRoom).then(|| "meena".to_owned()),
        student: (side == ChatSide::Student).then(|| {
            (
                sid(1),
                u64::from(counter),
                MessageHash::from_bytes([counter; 32]),
            )
        }),
        max,
    }
}

/// [`Store::open_chat`] and the rest of the chat: opened once (the first
/// keys stay, whoever opens it next), texts appended in order (a student's
/// bumps the counter; the same message again is the same text; an old
/// counter or a full chat writes nothing), and the keys and texts deleted,
/// to the last byte on disk, when the incident closes, and by a stop.
fn a_chat_opens_once_keeps_its_texts_in_order_and_goes_with_a_close_or_a_stop(
    s: &dyn Store,
    dir: Option<&Path>,
) {
    two_open_incidents(s);
    let (chat, other) = (iid(3), iid(5));
    // Not open: no keys, no texts taken.
    assert_eq!(s.chat_keys(&chat).unwrap(), None);
    assert_eq!(
        s.add_chat(&chat, &chat_text(ChatSide::ControlRoom, 0, 1, 9))
            .unwrap(),
        ChatAdded::NotOpen
    );
    let first = s
        .open_chat(&chat, &[0xc1; 48], &[0xd1; 32])
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.key_sealed.clone(), first.reply_to),
        (vec![0xc1; 48], [0xd1; 32])
    );
    // A second opening (another node, another key) keeps the first.
    assert_eq!(
        s.open_chat(&chat, &[0xc2; 48], &[0xd2; 32]).unwrap(),
        Some(first.clone())
    );
    assert_eq!(s.chat_keys(&chat).unwrap(), Some(first));
    assert_eq!(s.chat_keys(&other).unwrap(), None);
    // Texts in order; the student's counter moves with its texts.
    let cr = chat_text(ChatSide::ControlRoom, 0, 1, 3);
    let st = chat_text(ChatSide::Student, 8, 2, 3);
    assert_eq!(s.add_chat(&chat, &cr).unwrap(), ChatAdded::Added(0));
    assert_eq!(s.add_chat(&chat, &st).unwrap(), ChatAdded::Added(1));
    assert_eq!(s.student(&sid(1)).unwrap().unwrap().highest_counter, 8);
    assert_eq!(s.add_chat(&chat, &st).unwrap(), ChatAdded::Duplicate(1));
    assert_eq!(
        s.add_chat(&chat, &chat_text(ChatSide::Student, 7, 3, 3))
            .unwrap(),
        ChatAdded::Replayed
    );
    assert_eq!(
        s.add_chat(&chat, &chat_text(ChatSide::ControlRoom, 0, 4, 3))
            .unwrap(),
        ChatAdded::Added(2)
    );
    assert_eq!(
        s.add_chat(&chat, &chat_text(ChatSide::Student, 9, 5, 3))
            .unwrap(),
        ChatAdded::Full
    );
    // A full chat wrote nothing: not even the counter.
    assert_eq!(s.student(&sid(1)).unwrap().unwrap().highest_counter, 8);
    let rows = s.chat(&chat, 0).unwrap();
    let seen: Vec<(u32, ChatSide, Option<&str>)> = rows
        .iter()
        .map(|r| (r.n, r.side, r.author.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (0, ChatSide::ControlRoom, Some("meena")),
            (1, ChatSide::Student, None),
            (2, ChatSide::ControlRoom, Some("meena")),
        ]
    );
    assert_eq!(rows[1].sealed, st.sealed);
    assert_eq!(s.chat(&chat, 2).unwrap().len(), 1);
    assert_eq!(s.chat(&other, 0).unwrap(), Vec::new());
    // The other incident's chat, opened, with a text.
    s.open_chat(&other, &[0xc3; 48], &[0xd3; 32])
        .unwrap()
        .unwrap();
    let kept = chat_text(ChatSide::ControlRoom, 0, 6, 3);
    assert_eq!(s.add_chat(&other, &kept).unwrap(), ChatAdded::Added(0));
    // The close: the keys and the texts go, to the last byte on disk.
    on_disk_is(dir, &st.sealed[..64], true);
    s.close_incident(&chat, IncidentStatus::Closed, 500)
        .unwrap();
    assert_eq!(s.chat_keys(&chat).unwrap(), None);
    assert_eq!(s.chat(&chat, 0).unwrap(), Vec::new());
    on_disk_is(dir, &st.sealed[..64], false);
    on_disk_is(dir, &[0xc1; 48], false);
    // A closed incident's chat does not open again.
    assert_eq!(s.open_chat(&chat, &[0xc4; 48], &[0xd4; 32]).unwrap(), None);
    // A stop takes the open incident's chat too.
    on_disk_is(dir, &kept.sealed[..64], true);
    s.apply_stop(&sid(1), b"stop", &to(&[tid(9)]), 600).unwrap();
    assert_eq!(s.chat(&other, 0).unwrap(), Vec::new());
    assert_eq!(s.chat_keys(&other).unwrap(), None);
    on_disk_is(dir, &kept.sealed[..64], false);
    on_disk_is(dir, &[0xc3; 48], false);
}

/// Two nodes append to one chat at once (two connections to one
/// PostgreSQL database, two threads): every text is stored once, at its
/// own index, none lost; a writer that lost the race is told `Contended`
/// (503, ask again), never an internal error.
#[test]
fn on_postgres_two_writers_append_to_one_chat_and_lose_nothing() {
    let db = sosvault_testkit::postgres::TestDatabase::create();
    let first = crate::store::PgStore::connect(db.url()).unwrap();
    two_open_incidents(&first);
    first
        .open_chat(&iid(3), &[0xc1; 48], &[0xd1; 32])
        .unwrap()
        .unwrap();
    let per_writer = 15;
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let url = db.url().to_owned();
            std::thread::spawn(move || {
                let s = crate::store::PgStore::connect(&url).unwrap();
                let (mut stored, mut raced) = (0, 0);
                while stored < per_writer {
                    let text = chat_text(ChatSide::ControlRoom, 0, w, 200);
                    match s.add_chat(&iid(3), &text) {
                        Ok(ChatAdded::Added(_)) => stored += 1,
                        Err(StoreError::Contended(_)) => raced += 1,
                        other => panic!("writer {w}: {other:?}"),
                    }
                }
                raced
            })
        })
        .collect();
    let raced: u32 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    eprintln!("writers told to ask again: {raced}");
    let rows = first.chat(&iid(3), 0).unwrap();
    let indices: Vec<u32> = rows.iter().map(|r| r.n).collect();
    assert_eq!(indices, (0..2 * per_writer).collect::<Vec<u32>>());
}

/// [`Store::timeline`]: a step stored after a later one (a release's steps
/// wait for its outcome) reads in its place; steps of one millisecond in
/// the order they were added.
fn a_timeline_reads_in_the_order_of_its_times(s: &dyn Store, _dir: Option<&Path>) {
    for (at, detail) in [
        (30, "acknowledged"),
        (10, "requested"),
        (20, "share"),
        (30, "opened"),
    ] {
        s.add_timeline(&iid(4), at, "step", detail).unwrap();
    }
    s.add_timeline(&iid(5), 15, "step", "another incident's")
        .unwrap();
    let read: Vec<(u64, String)> = s
        .timeline(&iid(4))
        .unwrap()
        .into_iter()
        .map(|e| (e.at_ms, e.detail))
        .collect();
    let want = [
        (10, "requested"),
        (20, "share"),
        (30, "acknowledged"),
        (30, "opened"),
    ];
    assert_eq!(read, want.map(|(at, d)| (at, d.to_owned())));
}

/// [`Store::glances`]: the team holding each open incident, its last
/// location update, its overdue alarm; nothing of a closed incident, nor of
/// one beyond the listed newest.
fn an_open_incident_is_seen_at_a_glance(s: &dyn Store, _dir: Option<&Path>) {
    use AssignmentStatus::{Acknowledged, Pending, TimedOut};
    enroll(s);
    for (n, at) in [(3, 1000), (5, 2000), (7, 3000), (9, 4000)] {
        let mut i = incident(n, n + 1);
        i.counter = u64::from(n);
        i.created_at_ms = at;
        s.insert_panic(&i, "x").unwrap();
    }
    // 3: a team that timed out, then one that acknowledged; two locations.
    s.put_assignment(&assignment(3, U, 1, TimedOut)).unwrap();
    s.put_assignment(&assignment(3, V, 2, Acknowledged))
        .unwrap();
    assert!(s.add_location(&iid(3), &sid(1), 20, b"first", 5).unwrap());
    assert!(s.add_location(&iid(3), &sid(1), 21, b"last", 6).unwrap());
    // 5: a team pending, the overdue alarm raised.
    s.put_assignment(&assignment(5, U, 3, Pending)).unwrap();
    s.add_timeline(&iid(5), 7, "overdue", "OVERDUE").unwrap();
    // 7: closed, with all of it.
    s.add_timeline(&iid(7), 7, "overdue", "OVERDUE").unwrap();
    assert!(s.add_location(&iid(7), &sid(1), 22, b"gone", 8).unwrap());
    s.close_incident(&iid(7), IncidentStatus::Closed, 9)
        .unwrap();
    // 9: nothing but its row.
    let seen = s.glances(10).unwrap();
    assert_eq!(
        seen,
        vec![
            (
                iid(3),
                Glance {
                    team: Some((V, Acknowledged)),
                    last_location: Some(b"last".to_vec()),
                    overdue_raised: false,
                }
            ),
            (
                iid(5),
                Glance {
                    team: Some((U, Pending)),
                    last_location: None,
                    overdue_raised: true,
                }
            ),
        ]
    );
    // The newest two (9, 7): 7 is closed, 9 has nothing to say.
    assert!(s.glances(2).unwrap().is_empty());
    assert_eq!(s.glances(3).unwrap()[0].0, iid(5));
}

/// On PostgreSQL, which several nodes share (`Backend::SHARED`).
#[test]
fn on_postgres_an_open_incident_is_run_by_one_node_at_a_time() {
    let pg = sosvault_testkit::postgres::TestDatabase::create();
    let s = crate::store::PgStore::connect(pg.url()).unwrap();
    an_open_incident_is_run_by_one_node_at_a_time(&s, None);
}

/// On SQLite one node runs every incident: no lease is written.
#[test]
fn on_sqlite_no_lease_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("db")).unwrap();
    enroll(&s);
    s.insert_panic(&incident(3, 4), "x").unwrap();
    assert!(s.lease(&iid(3)).unwrap().is_none());
    assert!(s.renew_leases("n-a", 20_000).unwrap().is_empty());
}

/// Leases: a panic's is its storing node's; a node that stops renewing
/// loses it to one that takes it, once; a clean shutdown lets go at once;
/// a closed incident is nobody's.
fn an_open_incident_is_run_by_one_node_at_a_time(s: &dyn Store, _dir: Option<&Path>) {
    two_open_incidents(s);
    let taken = |from: Option<&str>, n: u8| TakenLease {
        incident: iid(n),
        from: from.map(str::to_owned),
    };
    // Both stored by node a, under leases until 10 s.
    assert_eq!(s.renew_leases("n-a", 20_000).unwrap().len(), 2);
    assert!(s.take_leases("n-b", 15_000, 30_000, 10).unwrap().is_empty());
    // Node a stops renewing: node b takes them once, at most `limit` a go.
    assert_eq!(
        s.take_leases("n-b", 25_000, 30_000, 1).unwrap(),
        [taken(Some("n-a"), 3)]
    );
    assert_eq!(
        s.take_leases("n-b", 25_000, 30_000, 10).unwrap(),
        [taken(Some("n-a"), 5)]
    );
    assert!(s.take_leases("n-c", 25_000, 30_000, 10).unwrap().is_empty());
    // Node a learns it lost them; node b holds them.
    assert!(s.renew_leases("n-a", 40_000).unwrap().is_empty());
    let mut held = s.renew_leases("n-b", 40_000).unwrap();
    held.sort_by_key(|i| *i.as_bytes());
    assert_eq!(held, [iid(3), iid(5)]);
    // A closed incident is nobody's; a clean shutdown lets go of the rest,
    // which anyone takes at once.
    s.close_incident(&iid(3), IncidentStatus::Closed, 30_000)
        .unwrap();
    assert_eq!(s.drop_leases("n-b").unwrap(), 1);
    assert_eq!(
        s.take_leases("n-c", 0, 50_000, 10).unwrap(),
        [taken(None, 5)]
    );
    assert_eq!(
        s.take_leases("n-d", 99_000, 100_000, 10).unwrap(),
        [taken(Some("n-c"), 5)]
    );
    assert!(
        s.take_leases("n-e", 99_000, 100_000, 10)
            .unwrap()
            .is_empty()
    );
}

/// Forwards to the trustees: each names the node that stored it; a node
/// whose beat ran out loses them to one that takes them, once, at most
/// `limit` of each kind a go; one that names no node is anyone's; a
/// restart under the same name finds its own; a clean shutdown (its beat
/// ended) lets go at once; an answered one is nobody's.
fn a_forward_is_carried_by_one_live_node_at_a_time(s: &dyn Store, _dir: Option<&Path>) {
    const BOTH: [TrusteeId; 2] = [tid(7), tid(9)];
    let by = |node| ForwardTo {
        trustees: &BOTH,
        node: Some(node),
    };
    let (stop, cancel, old) = (b"stop".to_vec(), b"cancel".to_vec(), b"old".to_vec());
    enroll(s);
    s.apply_stop(&sid(1), &stop, &by("n-a"), 1_000).unwrap();
    s.queue_cancel(&sid(2), &cancel, &by("n-a"), 1_000).unwrap();
    // Stored before version 4 (or on SQLite): no node carries it.
    s.queue_cancel(&sid(3), &old, &to(&[tid(7)]), 900).unwrap();
    s.put_enrollment(&sid(4), &[4; 32], 1, b"rec4", b"p", 1)
        .unwrap();
    let record = MessageHash::of_message(b"rec4");
    let committed = s.commit_enrollment(&sid(4), 1, &record, b"commit", &by("n-a"), 1_000);
    assert!(
        matches!(committed, Ok(CommitStored::New { .. })),
        "{committed:?}"
    );
    let key = |t| ForwardKey::Stop {
        student: sid(1),
        trustee: tid(t),
    };
    let holder = |n: &str| ForwardHolder::By(Some(n.to_owned()));
    assert_eq!(s.forward_node(&key(7)).unwrap(), holder("n-a"));
    let count = |t: &TakenForwards| (t.shreds.len(), t.cancels.len(), t.commits.len());

    // Node a beats until 10 s: node b takes only the one nobody carries.
    assert_eq!(s.beat("n-a", "a1", 0, 10_000).unwrap(), Beat::Held);
    assert_eq!(s.beat("n-b", "b1", 0, 10_000).unwrap(), Beat::Held);
    let taken = s.take_forwards("n-b", 5_000, false, 10).unwrap();
    assert_eq!(count(&taken), (0, 1, 0));
    assert_eq!(taken.cancels[0].signed, old);
    assert_eq!(taken.cancels[0].node, None);
    assert!(s.take_forwards("n-c", 5_000, false, 10).unwrap().is_empty());

    // Node a stops beating: node b takes its forwards once, `limit` a go.
    assert_eq!(s.beat("n-b", "b1", 20_000, 30_000).unwrap(), Beat::Held);
    let first = s.take_forwards("n-b", 20_000, false, 1).unwrap();
    assert_eq!(count(&first), (1, 1, 1));
    assert_eq!(first.shreds[0].node.as_deref(), Some("n-a"));
    assert_eq!(first.commits[0].commit, b"commit");
    let rest = s.take_forwards("n-b", 20_000, false, 10).unwrap();
    assert_eq!(count(&rest), (1, 1, 1));
    assert!(
        s.take_forwards("n-c", 20_000, false, 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.forward_node(&key(9)).unwrap(), holder("n-b"));
    // A round takes none of its own; a restart under its name finds them.
    assert!(
        s.take_forwards("n-b", 20_000, false, 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        count(&s.take_forwards("n-b", 20_000, true, 10).unwrap()),
        (2, 3, 2)
    );

    // An answered forward is nobody's.
    let receipt = TrusteeAnswer {
        trustee_id: tid(7),
        receipt: b"receipt".to_vec(),
        refusal: None,
    };
    s.finish_shred(&sid(1), &receipt, 21_000).unwrap();
    assert_eq!(s.forward_node(&key(7)).unwrap(), ForwardHolder::Done);
    // Answered twice (two nodes asked): one answer kept, nothing fails.
    s.finish_shred(&sid(1), &receipt, 21_500).unwrap();
    assert_eq!(s.shred_receipts(&sid(1)).unwrap().len(), 1);

    // Node b shuts down cleanly: node c takes the rest at once.
    s.end_beat("n-b", "b1").unwrap();
    assert_eq!(
        count(&s.take_forwards("n-c", 21_000, false, 10).unwrap()),
        (1, 3, 2)
    );
    assert_eq!(s.forward_node(&key(9)).unwrap(), holder("n-c"));
}

/// A node's beat is its process's (`boot`): another process under the same
/// name is refused while the beat is renewed, and takes the name once it
/// has run out (a crash) or was ended (a clean shutdown, by its own
/// process only).
fn one_live_process_beats_under_a_name(s: &dyn Store, _dir: Option<&Path>) {
    let clash = |until_ms| Beat::Clash { until_ms };
    assert_eq!(s.beat("n-a", "boot1", 0, 10_000).unwrap(), Beat::Held);
    assert_eq!(
        s.beat("n-a", "boot2", 5_000, 15_000).unwrap(),
        clash(10_000)
    );
    assert_eq!(s.beat("n-a", "boot1", 6_000, 16_000).unwrap(), Beat::Held);
    // Other names are other nodes.
    assert_eq!(s.beat("n-b", "boot2", 6_000, 16_000).unwrap(), Beat::Held);
    // Run out: the name is the next process's, and the old one is refused.
    assert_eq!(s.beat("n-a", "boot2", 17_000, 22_000).unwrap(), Beat::Held);
    assert_eq!(
        s.beat("n-a", "boot1", 18_000, 23_000).unwrap(),
        clash(22_000)
    );
    // Only a beat's own process ends it.
    s.end_beat("n-a", "boot1").unwrap();
    assert_eq!(
        s.beat("n-a", "boot3", 19_000, 24_000).unwrap(),
        clash(22_000)
    );
    s.end_beat("n-a", "boot2").unwrap();
    assert_eq!(s.beat("n-a", "boot3", 19_000, 24_000).unwrap(), Beat::Held);
}

fn assignment(incident: u8, unit: UnitId, at: u64, status: AssignmentStatus) -> AssignmentRow {
    AssignmentRow {
        incident_id: iid(incident),
        unit_id: unit,
        assigned_at_ms: at,
        status,
    }
}

/// The database, not any writer's memory, decides who holds a team: a
/// second open claim is refused and writes nothing; a timed-out, released
/// or closed incident's claim does not hold it.
fn a_team_is_held_by_one_open_incident_at_a_time(s: &dyn Store, _dir: Option<&Path>) {
    use AssignmentStatus::{Acknowledged, Pending, Released, TimedOut};
    enroll(s);
    for (n, hash) in [(3, 4), (5, 6), (7, 8)] {
        let mut i = incident(n, hash);
        i.counter = u64::from(n);
        s.insert_panic(&i, "x").unwrap();
    }
    s.put_assignment(&assignment(3, U, 1, Pending)).unwrap();
    // Pending and acknowledged both hold it.
    for held in [Pending, Acknowledged] {
        s.put_assignment(&assignment(3, U, 1, held)).unwrap();
        assert!(matches!(
            s.put_assignment(&assignment(5, U, 2, Pending)),
            Err(StoreError::UnitTaken)
        ));
        assert!(matches!(
            s.put_assignment(&assignment(5, U, 2, Acknowledged)),
            Err(StoreError::UnitTaken)
        ));
        assert!(
            s.assignments(&iid(5)).unwrap().is_empty(),
            "nothing written"
        );
    }
    // What does not hold a team: it may be claimed elsewhere, and written.
    s.put_assignment(&assignment(5, U, 2, TimedOut)).unwrap();
    // Acknowledging a claim that timed out is a claim again, refused while
    // another incident holds the team; the row stays as it was.
    assert!(matches!(
        s.put_assignment(&assignment(5, U, 2, Acknowledged)),
        Err(StoreError::UnitTaken)
    ));
    assert_eq!(s.assignments(&iid(5)).unwrap()[0].status, TimedOut);
    for free in [TimedOut, Released] {
        s.put_assignment(&assignment(3, U, 1, free)).unwrap();
        s.put_assignment(&assignment(5, U, 2, Pending)).unwrap();
        s.put_assignment(&assignment(5, U, 2, Released)).unwrap();
    }
    // A refused claim inside a batch's job leaves the rest of the job.
    s.put_assignment(&assignment(5, U, 3, Pending)).unwrap();
    assert!(matches!(
        s.put_assignment(&assignment(7, U, 3, Pending)),
        Err(StoreError::UnitTaken)
    ));
    s.put_assignment(&assignment(7, V, 3, Pending)).unwrap();
    // Closing an incident frees its team in the database too.
    s.close_incident(&iid(5), IncidentStatus::Closed, 4)
        .unwrap();
    let closed = s.assignments(&iid(5)).unwrap();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].status, Released);
    s.put_assignment(&assignment(7, U, 5, Pending)).unwrap();
    let open: Vec<_> = s
        .assignments(&iid(7))
        .unwrap()
        .into_iter()
        .map(|a| (a.unit_id, a.status))
        .collect();
    assert_eq!(open, [(V, Pending), (U, Pending)]);
}

/// [`Store::claim`]: a claim with the entry that says it. Whichever way
/// the claim goes (a fresh row, a team this incident had before, a team
/// held elsewhere), the entry is there exactly when the claim is.
fn a_claim_and_its_timeline_entry_are_written_both_or_neither(s: &dyn Store, _dir: Option<&Path>) {
    use AssignmentStatus::{Pending, TimedOut};
    two_open_incidents(s);
    let entries = |n: u8| -> Vec<(u64, String, String)> {
        s.timeline(&iid(n))
            .unwrap()
            .into_iter()
            .filter(|e| e.kind != "panic")
            .map(|e| (e.at_ms, e.kind, e.detail))
            .collect()
    };
    let said = |at: u64, detail: &str| (at, "assigned".to_owned(), detail.to_owned());
    // A fresh claim.
    s.claim(&assignment(3, U, 1, Pending), 10, "assigned", "near")
        .unwrap();
    assert_eq!(s.assignments(&iid(3)).unwrap()[0].status, Pending);
    assert_eq!(entries(3), [said(10, "near")]);
    // Held elsewhere: refused, and neither is written.
    assert!(matches!(
        s.claim(&assignment(5, U, 2, Pending), 20, "assigned", "taken"),
        Err(StoreError::UnitTaken)
    ));
    assert!(s.assignments(&iid(5)).unwrap().is_empty());
    assert!(entries(5).is_empty());
    // A team this incident had before (timed out), claimed again: the row
    // is open again, with its entry.
    s.put_assignment(&assignment(3, U, 1, TimedOut)).unwrap();
    s.claim(&assignment(3, U, 1, Pending), 30, "assigned", "again")
        .unwrap();
    assert_eq!(s.assignments(&iid(3)).unwrap()[0].status, Pending);
    assert_eq!(entries(3), [said(10, "near"), said(30, "again")]);
}

/// A store in `dir` with student `[1; 32]` enrolled (epoch 1, device
/// `[2; 32]`) under `record` and the sealed profile `sealed`.
fn enrolled_with(dir: &Path, record: &[u8], sealed: &[u8]) -> SqliteStore {
    let s = SqliteStore::open(&dir.join("db")).unwrap();
    s.put_enrollment(&sid(1), &[2; 32], 1, record, sealed, 1)
        .unwrap();
    s
}

fn panic_is_stored_once(s: &dyn Store, _dir: Option<&Path>) {
    assert!(
        s.panic_context(&sid(1), &mhash(4), (1, 5), 0)
            .unwrap()
            .is_none()
    );
    enroll(s);
    let before = s
        .panic_context(&sid(1), &mhash(4), (1, 5), 0)
        .unwrap()
        .unwrap();
    assert_eq!((before.existing, before.recent_panics), (None, 0));
    // The enrollment the panic opens with comes in the same read.
    let e = before.enrollment.expect("the current enrollment");
    assert_eq!(
        (e.record.as_slice(), e.sealed_profile.as_slice(), e.epoch),
        (&b"rec"[..], &b"profile"[..], 1)
    );
    let PanicStored::New(stored) = s.insert_panic(&incident(3, 4), "x").unwrap() else {
        panic!("a new panic was not stored as new");
    };
    // What insert_panic answers is the row as stored, column for column.
    assert_eq!(Some(*stored), s.incident(&iid(3)).unwrap());
    // The same panic again (by its hash) writes nothing: no counter, no
    // timeline entry (both checked below).
    let mut again = incident(5, 4);
    again.counter = 9;
    assert_eq!(
        s.insert_panic(&again, "x").unwrap(),
        PanicStored::Existing(iid(3))
    );
    assert_eq!(s.open_incidents().unwrap().len(), 1);
    assert_eq!(s.timeline(&iid(3)).unwrap().len(), 1, "one timeline entry");
    assert_eq!(s.student(&sid(1)).unwrap().unwrap().highest_counter, 5);
    assert!(!s.bump_counter(&sid(1), 5).unwrap());
    assert!(s.bump_counter(&sid(1), 6).unwrap());
    let row = s.incident(&iid(3)).unwrap().unwrap();
    assert_eq!(row.flags, vec!["rate_limited".to_string()]);
    // The panic's checks, in one read: the same panic is incident 3; the
    // student's panics count from the rate limit's window on.
    let again = s
        .panic_context(&sid(1), &mhash(4), (1, 5), 1000)
        .unwrap()
        .unwrap();
    assert_eq!(again.existing, Some(iid(3)));
    assert_eq!(again.recent_panics, 1);
    assert_eq!(again.student.highest_counter, 6);
    let later = s
        .panic_context(&sid(1), &mhash(9), (1, 10), 1001)
        .unwrap()
        .unwrap();
    assert_eq!(
        (later.existing, later.twin, later.recent_panics),
        (None, None, 0)
    );

    // The same press under another hash (its twin by SMS or HTTP): no
    // new incident, even when the checks did not see it (two writers at
    // once): the insert joins it to incident 3, which it names from then on.
    let twin = s
        .panic_context(&sid(1), &mhash(8), (1, 5), 0)
        .unwrap()
        .unwrap();
    assert_eq!((twin.existing, twin.twin), (None, Some(iid(3))));
    let mut raced = incident(7, 8);
    raced.counter = 5;
    assert_eq!(
        s.insert_panic(&raced, "x").unwrap(),
        PanicStored::Existing(iid(3))
    );
    assert_eq!(
        s.incident_by_panic(&mhash(8)).unwrap().map(|r| r.id),
        Some(iid(3))
    );
    assert_eq!(
        s.incident_by_panic(&mhash(4)).unwrap().map(|r| r.id),
        Some(iid(3))
    );
    // The raced twin is told on the timeline as one the checks found.
    let kinds: Vec<String> = s
        .timeline(&iid(3))
        .unwrap()
        .into_iter()
        .map(|t| t.kind)
        .collect();
    assert_eq!(kinds, ["panic", "twin"]);
    let joined = s
        .panic_context(&sid(1), &mhash(8), (1, 5), 0)
        .unwrap()
        .unwrap();
    assert_eq!(joined.existing, Some(iid(3)));
    // One twin joins: a third message of the press is answered with the
    // incident and recorded nowhere.
    assert!(!s.join_twin(&iid(3), &mhash(6), 2000, "again").unwrap());
    assert_eq!(s.incident_by_panic(&mhash(6)).unwrap(), None);
    assert_eq!(s.open_incidents().unwrap().len(), 1);
}

fn a_twin_joins_its_incident_once_and_says_so(s: &dyn Store, _dir: Option<&Path>) {
    enroll(s);
    let PanicStored::New(_) = s.insert_panic(&incident(3, 4), "x").unwrap() else {
        panic!("a new panic was not stored as new");
    };
    assert!(s.join_twin(&iid(3), &mhash(8), 2000, "by SMS too").unwrap());
    assert!(!s.join_twin(&iid(3), &mhash(9), 2001, "again").unwrap());
    let timeline = s.timeline(&iid(3)).unwrap();
    assert_eq!(timeline.len(), 2, "{timeline:?}");
    assert_eq!(
        s.incident_by_panic(&mhash(8)).unwrap().map(|r| r.id),
        Some(iid(3))
    );
    assert_eq!(s.incident_by_panic(&mhash(9)).unwrap(), None);
}

#[test]
fn a_damaged_id_or_status_is_an_error_never_a_panic_or_a_default() {
    for (damage, says) in [
        (
            "UPDATE incidents SET panic_hash = x'0102'",
            "message hash: 2-byte blob stored, 32 bytes expected",
        ),
        (
            "UPDATE incidents SET status = 'reopened'",
            r#"incident status: unknown value "reopened" stored"#,
        ),
        (
            "UPDATE incidents SET category = 'fire'",
            r#"category: unknown value "fire" stored"#,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = enrolled(dir.path());
        s.insert_panic(&incident(3, 4), "x").unwrap();
        s.connection().execute(damage, []).unwrap();
        let e = s.incident(&iid(3)).unwrap_err();
        assert!(
            matches!(&e, StoreError::Database(m) if m.contains(says)),
            "{damage}: {e}"
        );
    }
    // A unit id is its text, `u-` and 12 lower-case hex digits: any other
    // text, in a team's row or in an assignment's, is refused when read.
    let says = "a unit id is `u-` and 12 lower-case hex digits";
    type Read = fn(&SqliteStore) -> StoreError;
    let reads: [(&str, Read); 3] = [
        ("UPDATE units SET id = 'u'", |s| s.units().unwrap_err()),
        ("UPDATE units SET id = upper(id)", |s| {
            s.unit_by_token(&[7; 32]).unwrap_err()
        }),
        ("UPDATE assignments SET unit_id = 'unit-1'", |s| {
            s.assignments(&iid(3)).unwrap_err()
        }),
    ];
    for (damage, read) in reads {
        let dir = tempfile::tempdir().unwrap();
        let s = enrolled(dir.path());
        s.insert_panic(&incident(3, 4), "x").unwrap();
        let team = UnitRow {
            id: uid(0xab),
            name: "PCR Talwandi".into(),
            kind: crate::geo::UnitKind::Police,
            position: None,
            position_at_ms: None,
        };
        s.create_unit(&team, &[7; 32]).unwrap();
        s.put_assignment(&assignment(3, team.id, 1, AssignmentStatus::Pending))
            .unwrap();
        s.connection().execute(damage, []).unwrap();
        let e = read(&s);
        assert!(
            matches!(&e, StoreError::Database(m) if m.contains(says)),
            "{damage}: {e}"
        );
    }
}

fn a_stop_blanks_the_category_and_it_reads_back_as_none(s: &dyn Store, _dir: Option<&Path>) {
    enroll(s);
    s.insert_panic(&incident(3, 4), "x").unwrap();
    let row = s.incident(&iid(3)).unwrap().unwrap();
    assert_eq!(
        (row.category, row.category_name()),
        (Some(Category::Police), "police")
    );
    s.apply_stop(&sid(1), b"stop", &to(&[]), 2).unwrap();
    let row = s.incident(&iid(3)).unwrap().unwrap();
    assert_eq!((row.category, row.category_name()), (None, ""));
}

/// [`Store::mark_arrived`], [`Store::set_outcome`]: an arrival is kept on
/// an assignment that holds its team, the first time only; an outcome is
/// counted by its close time, and a stop takes it.
fn an_arrival_and_an_outcome_are_kept_once_and_a_stop_takes_the_outcome(
    s: &dyn Store,
    _dir: Option<&Path>,
) {
    use sosvault::status::Outcome;
    enroll(s);
    s.insert_panic(&incident(3, 4), "x").unwrap();
    s.put_assignment(&assignment(3, U, 1, AssignmentStatus::Acknowledged))
        .unwrap();
    assert_eq!(s.arrived_at(&iid(3), U).unwrap(), None);
    assert!(s.mark_arrived(&iid(3), U, 50).unwrap());
    assert!(s.mark_arrived(&iid(3), U, 60).unwrap(), "a repeat holds");
    assert_eq!(s.arrived_at(&iid(3), U).unwrap(), Some(50), "the first");
    // A team the incident does not hold.
    assert!(!s.mark_arrived(&iid(3), V, 70).unwrap());
    assert_eq!(s.arrived_at(&iid(3), V).unwrap(), None);

    assert_eq!(s.outcome(&iid(3)).unwrap(), None);
    s.close_incident(&iid(3), IncidentStatus::Closed, 100)
        .unwrap();
    s.set_outcome(&iid(3), Outcome::TakenToHospital).unwrap();
    assert_eq!(s.outcome(&iid(3)).unwrap(), Some(Outcome::TakenToHospital));
    assert_eq!(
        s.outcome_counts(100).unwrap(),
        [(Outcome::TakenToHospital, 1)]
    );
    assert!(s.outcome_counts(101).unwrap().is_empty(), "closed before");
    s.apply_stop(&sid(1), b"stop", &to(&[]), 200).unwrap();
    assert_eq!(s.outcome(&iid(3)).unwrap(), None);
    assert!(s.outcome_counts(0).unwrap().is_empty());
}

fn duress_alert(id: u8) -> NewDuressAlert {
    NewDuressAlert {
        id: iid(id),
        student_id: sid(1),
        key: [42; 32],
        category: Category::Police,
        epoch: 1,
        created_at_ms: 2000,
        timeline: vec![
            ("duress_stop".into(), "wiped".into()),
            ("escalated".into(), "ESCALATED".into()),
        ],
        lease: Lease {
            node: "n-a".into(),
            until_ms: 10_000,
        },
    }
}

fn a_duress_alert_opens_once_and_only_without_an_open_incident(s: &dyn Store, _dir: Option<&Path>) {
    enroll(s);
    // An open incident: the stop escalates it, no alert.
    s.insert_panic(&incident(3, 4), "x").unwrap();
    assert!(s.open_duress_alert(&duress_alert(5)).unwrap().is_none());
    assert!(s.incident(&iid(5)).unwrap().is_none());
    s.close_incident(&iid(3), IncidentStatus::Closed, 1500)
        .unwrap();

    let row = s.open_duress_alert(&duress_alert(5)).unwrap().unwrap();
    assert_eq!(row.id, iid(5));
    assert_eq!(row.status, IncidentStatus::Open);
    assert!(row.duress && row.stopped && !row.false_alarm);
    assert_eq!(row.flags, vec![DURESS_STOP.to_string()]);
    assert!(row.panic.is_none() && row.incident_key_sealed.is_none());
    assert!(s.locations(&iid(5)).unwrap().is_empty());
    let steps: Vec<String> = s
        .timeline(&iid(5))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(steps, ["duress_stop", "escalated"]);
    assert_eq!(s.open_incidents().unwrap().len(), 1);

    // Never a second one for the student: not while it is open, not
    // after an operator closed it.
    assert!(s.open_duress_alert(&duress_alert(6)).unwrap().is_none());
    s.close_incident(&iid(5), IncidentStatus::Closed, 3000)
        .unwrap();
    assert!(s.open_duress_alert(&duress_alert(6)).unwrap().is_none());
    assert!(s.incident(&iid(6)).unwrap().is_none());
    assert!(s.timeline(&iid(6)).unwrap().is_empty());
}

#[test]
fn an_existing_database_gains_the_window_columns_and_keeps_its_incidents() {
    let dir = tempfile::tempdir().unwrap();
    // The incidents table as the first schema made it.
    let path = older_database(
        dir.path(),
        "CREATE TABLE incidents (
                id BLOB PRIMARY KEY, student_id BLOB NOT NULL, panic_hash BLOB NOT NULL UNIQUE,
                panic BLOB, category TEXT NOT NULL, epoch INTEGER NOT NULL,
                created_at_ms INTEGER NOT NULL, status TEXT NOT NULL, closed_at_ms INTEGER,
                incident_key_sealed BLOB, duress INTEGER NOT NULL DEFAULT 0,
                false_alarm INTEGER NOT NULL DEFAULT 0, stopped INTEGER NOT NULL DEFAULT 0,
                flags TEXT NOT NULL DEFAULT '');
             INSERT INTO incidents (id, student_id, panic_hash, category, epoch, created_at_ms, status, incident_key_sealed)
             VALUES (x'03030303030303030303030303030303', zeroblob(32), zeroblob(32), 'police', 1, 1000, 'open', x'07');",
    );
    let s = SqliteStore::open(&path).unwrap();
    let row = s.incident(&iid(3)).unwrap().unwrap();
    assert_eq!(row.status, IncidentStatus::Open);
    assert_eq!(row.incident_key_sealed, Some(vec![7]));
    assert_eq!(
        (
            row.released_at_ms,
            row.access_until_ms,
            row.access_window_ms
        ),
        (None, None, None)
    );
    s.set_released(&iid(3), 5_000, 1_000).unwrap();
    drop(s);
    // Opening again migrates nothing twice.
    let s = SqliteStore::open(&path).unwrap();
    let row = s.incident(&iid(3)).unwrap().unwrap();
    assert_eq!(row.access_until_ms, Some(6_000));
}

fn the_access_window_is_anchored_once_and_extended_only_while_open(
    s: &dyn Store,
    _dir: Option<&Path>,
) {
    enroll(s);
    s.insert_panic(&incident(3, 4), "x").unwrap();
    s.set_released(&iid(3), 10_000, 3_000).unwrap();
    // A second opening (after a restart) does not move the window.
    s.set_released(&iid(3), 12_000, 3_000).unwrap();
    let row = s.incident(&iid(3)).unwrap().unwrap();
    assert_eq!(
        (
            row.released_at_ms,
            row.access_until_ms,
            row.access_window_ms
        ),
        (Some(10_000), Some(13_000), Some(3_000))
    );
    // A location update inside the window extends it; never shortens it.
    s.extend_access(&iid(3), 14_500, 11_500).unwrap();
    s.extend_access(&iid(3), 14_000, 11_000).unwrap();
    assert_eq!(
        s.incident(&iid(3)).unwrap().unwrap().access_until_ms,
        Some(14_500)
    );
    // Past its end it stays ended.
    s.extend_access(&iid(3), 18_000, 15_000).unwrap();
    assert_eq!(
        s.incident(&iid(3)).unwrap().unwrap().access_until_ms,
        Some(14_500)
    );
}

fn a_cancel_is_queued_once_per_trustee_until_each_answers(s: &dyn Store, _dir: Option<&Path>) {
    let cancel = b"signed cancel bytes".to_vec();
    let hash = MessageHash::of_message(&cancel);
    let trustees = [tid(10), tid(11), tid(12)];
    s.queue_cancel(&sid(1), &cancel, &to(&trustees), 100)
        .unwrap();
    s.queue_cancel(&sid(1), &cancel, &to(&trustees), 101)
        .unwrap();
    assert_eq!(s.pending_cancels().unwrap().len(), 3);
    assert_eq!(s.pending_cancel_count(&hash).unwrap(), 3);
    let receipt = TrusteeAnswer {
        trustee_id: tid(10),
        receipt: b"receipt".to_vec(),
        refusal: None,
    };
    s.finish_cancel(&hash, &tid(10), &receipt, 200).unwrap();
    let refused = TrusteeAnswer {
        trustee_id: tid(11),
        receipt: Vec::new(),
        refusal: Some("stale_cancel".into()),
    };
    s.finish_cancel(&hash, &tid(11), &refused, 201).unwrap();
    // The same cancel again: the answered trustees are not asked again.
    s.queue_cancel(&sid(1), &cancel, &to(&trustees), 300)
        .unwrap();
    let pending = s.pending_cancels().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].trustee_id, tid(12));
    assert_eq!(pending[0].signed, cancel);
    let answers = s.cancel_answers(&hash).unwrap();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0].receipt, b"receipt");
    assert_eq!(answers[1].refusal.as_deref(), Some("stale_cancel"));
    assert_eq!(s.pending_cancel_count(&hash).unwrap(), 1);
}

fn transparency_log_rows_come_back_in_order(s: &dyn Store, _dir: Option<&Path>) {
    let row = |index, entry: &[u8], reason| StudentLogRow {
        index,
        entry: entry.to_vec(),
        reason,
    };
    assert!(
        s.append_log(&log_entry(0, b"a", 7, 1, "operator:op", 1))
            .unwrap()
            .is_empty()
    );
    let why = ViewReason {
        text: "night-shift handover".into(),
        nonce: [5; 16],
    };
    s.append_log(&NewLogEntry {
        reason: Some(why.clone()),
        ..log_entry(1, b"b", 8, 2, "unit:u-1", 2)
    })
    .unwrap();
    assert_eq!(
        s.log_entries_of_student(&sid(7), 2, 10).unwrap(),
        vec![row(0, b"a", None)]
    );
    assert_eq!(
        s.log_entries_of_student(&sid(8), 2, 10).unwrap(),
        vec![row(1, b"b", Some(why.clone()))]
    );
    assert!(
        s.log_entries_of_student(&sid(8), 1, 10).unwrap().is_empty(),
        "beyond the size"
    );
    assert_eq!(s.log_leaf_hashes(0).unwrap(), vec![[1; 32], [2; 32]]);
    assert_eq!(s.log_leaf_hashes(2).unwrap(), Vec::<[u8; 32]>::new());
    assert_eq!(
        s.log_leaves(1, 5).unwrap(),
        vec![(1, [2; 32], b"b".to_vec())],
        "from start, stopping at the log's end"
    );
    assert!(s.log_leaves(2, u64::MAX).unwrap().is_empty());
    let mine = s.access_log(&iid(2)).unwrap();
    assert_eq!((mine.len(), mine[0].index), (1, 1));
    assert_eq!(mine[0].reason.as_deref(), Some("night-shift handover"));
    // A tree that lags (another node appended since) gets what it lacks,
    // and its entry goes after it: an index is used once.
    assert_eq!(
        s.append_log(&NewLogEntry {
            leaf_hash: [3; 32],
            ..log_entry(1, b"c", 8, 2, "x", 3)
        })
        .unwrap(),
        vec![[2; 32]]
    );
    assert_eq!(s.log_leaf_hashes(1).unwrap(), vec![[2; 32], [3; 32]]);
    assert_eq!(s.log_leaves(2, 3).unwrap()[0].2, b"c".to_vec());
    // A stop leaves the entry and its commitment, never the text.
    s.apply_stop(&sid(8), b"stop", &to(&[]), 9).unwrap();
    assert_eq!(
        s.log_entries_of_student(&sid(8), 2, 10).unwrap(),
        vec![row(1, b"b", None)]
    );
    assert_eq!(s.access_log(&iid(2)).unwrap()[0].reason, None);
}

/// [`Store::mark_duress`] and [`Store::log_entries_of_student`]: once a
/// duress cancel marks an incident, the student's own query no longer
/// answers the incident's entries written from then on (the phone must see
/// what a cancel in safety shows), a second mark moves nothing, and the
/// control room's access log keeps them all.
fn a_duress_mark_holds_back_the_incidents_later_entries_from_the_student(
    s: &dyn Store,
    _dir: Option<&Path>,
) {
    two_open_incidents(s);
    let view = |index: u8, incident: u8| {
        s.append_log(&log_entry(index, &[index], 1, incident, "unit:u-1", 1))
            .unwrap();
    };
    view(0, 3);
    view(1, 5);
    s.mark_duress(&iid(3)).unwrap();
    view(2, 3);
    view(3, 5);
    s.mark_duress(&iid(3)).unwrap();
    view(4, 3);
    let seen = s.log_entries_of_student(&sid(1), 5, 10).unwrap();
    assert_eq!(seen.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1, 3]);
    let logged = s.access_log(&iid(3)).unwrap();
    assert_eq!(
        logged.iter().map(|e| e.index).collect::<Vec<_>>(),
        [0, 2, 4]
    );
}

pub(super) fn on_disk(dir: &Path, needle: &[u8]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for name in ["db", "db-wal"] {
        let b = std::fs::read(dir.join(name)).unwrap_or_default();
        if b.windows(needle.len()).any(|w| w == needle) {
            out.push(if name == "db" { "db" } else { "wal" });
        }
    }
    out
}

mod staging {
    use std::path::Path;

    use sosvault::{MessageHash, StudentId, TrusteeId};

    use super::{iid, incident, on_disk_is, sid, tid, to};
    use crate::store::{CommitStored, IncidentStatus, SqliteStore, Store};

    const T: [TrusteeId; 3] = [tid(10), tid(11), tid(12)];
    const S: StudentId = sid(1);

    fn hash(record: &[u8]) -> MessageHash {
        MessageHash::of_message(record)
    }

    fn secret(seed: u32) -> Vec<u8> {
        (0..700u32).map(|i| (i * 7 + seed) as u8 ^ 0x5a).collect()
    }

    fn commit(s: &dyn Store, epoch: u32, record: &[u8]) -> CommitStored {
        s.commit_enrollment(&S, epoch, &hash(record), b"commit", &to(&T), 5)
            .unwrap()
    }

    /// Gives student `S` epoch 1 (profile `p1`) committed and a new epoch
    /// 2 beside it.
    fn committed_then_new(s: &dyn Store, p1: &[u8]) {
        s.put_enrollment(&S, &[2; 32], 1, b"rec1", p1, 1).unwrap();
        commit(s, 1, b"rec1");
        s.put_enrollment(&S, &[2; 32], 2, b"rec2", b"p2", 2)
            .unwrap();
    }

    super::on_both_backends!(
        without_a_commit_a_new_epoch_replaces_the_old_one,
        a_committed_enrollment_stays_beside_a_new_epoch_until_the_new_one_is_committed,
        a_previous_enrollment_an_open_incident_uses_goes_when_it_closes,
        a_previous_enrollment_is_not_dropped_before_the_current_one_is_committed,
        a_stop_deletes_the_previous_enrollment_too,
    );

    fn without_a_commit_a_new_epoch_replaces_the_old_one(s: &dyn Store, _dir: Option<&Path>) {
        s.put_enrollment(&S, &[2; 32], 1, b"rec1", b"p1", 1)
            .unwrap();
        s.put_enrollment(&S, &[2; 32], 2, b"rec2", b"p2", 2)
            .unwrap();
        assert!(s.previous_enrollment(&S).unwrap().is_none());
        assert!(s.enrollment_of_epoch(&S, 1).unwrap().is_none());
        assert_eq!(
            s.enrollment_of_epoch(&S, 2).unwrap().unwrap().record,
            b"rec2"
        );
    }

    fn a_committed_enrollment_stays_beside_a_new_epoch_until_the_new_one_is_committed(
        s: &dyn Store,
        dir: Option<&Path>,
    ) {
        let p1 = secret(1);
        s.put_enrollment(&S, &[2; 32], 1, b"rec1", &p1, 1).unwrap();
        // A commit naming another record, or another epoch, is refused.
        assert_eq!(commit(s, 1, b"other"), CommitStored::UnknownRecord);
        assert_eq!(commit(s, 2, b"rec1"), CommitStored::UnknownRecord);
        assert!(!s.is_committed(&S, 1).unwrap());
        assert!(s.pending_commits().unwrap().is_empty());

        assert_eq!(
            commit(s, 1, b"rec1"),
            CommitStored::New {
                dropped_previous: false,
                kept_for_incident: false
            }
        );
        assert!(s.is_committed(&S, 1).unwrap());
        assert_eq!(s.pending_commit_count(&S, 1).unwrap(), 3);
        // The same commit again: nothing new is queued.
        assert_eq!(commit(s, 1, b"rec1"), CommitStored::Repeat);
        assert_eq!(s.pending_commits().unwrap().len(), 3);
        s.finish_commit(&S, 1, &T[0]).unwrap();
        assert_eq!(s.pending_commit_count(&S, 1).unwrap(), 2);
        let left: Vec<TrusteeId> = s
            .pending_commits()
            .unwrap()
            .iter()
            .map(|p| p.trustee_id)
            .collect();
        assert_eq!(left, [T[1], T[2]]);

        // Re-enrollment over a committed epoch: the committed one is kept.
        s.put_enrollment(&S, &[2; 32], 2, b"rec2", b"p2", 2)
            .unwrap();
        assert_eq!(s.student(&S).unwrap().unwrap().epoch, 2);
        assert_eq!(s.enrollment(&S).unwrap().unwrap().record, b"rec2");
        let prev = s.enrollment_of_epoch(&S, 1).unwrap().unwrap();
        assert_eq!(
            (prev.epoch, &prev.record[..], &prev.sealed_profile[..]),
            (1, &b"rec1"[..], &p1[..])
        );
        // A retry of the same epoch keeps it too.
        s.put_enrollment(&S, &[2; 32], 2, b"rec2", b"p2", 3)
            .unwrap();
        assert_eq!(s.previous_enrollment(&S).unwrap().unwrap().epoch, 1);
        // The older commit again changes nothing.
        assert_eq!(commit(s, 1, b"rec1"), CommitStored::Repeat);
        on_disk_is(dir, &p1[100..164], true);

        // The new epoch's commit deletes it, from the file and the WAL.
        assert_eq!(
            commit(s, 2, b"rec2"),
            CommitStored::New {
                dropped_previous: true,
                kept_for_incident: false
            }
        );
        assert!(s.previous_enrollment(&S).unwrap().is_none());
        assert!(s.enrollment_of_epoch(&S, 1).unwrap().is_none());
        on_disk_is(dir, &p1[100..164], false);
        assert_eq!(s.pending_commit_count(&S, 2).unwrap(), 3);

        // Epoch 3 over committed 2 keeps 2; epoch 4 over uncommitted 3
        // replaces 3 and leaves 2 kept (as the trustees do).
        s.put_enrollment(&S, &[2; 32], 3, b"rec3", b"p3", 4)
            .unwrap();
        s.put_enrollment(&S, &[2; 32], 4, b"rec4", b"p4", 5)
            .unwrap();
        assert_eq!(s.previous_enrollment(&S).unwrap().unwrap().epoch, 2);
        assert!(s.enrollment_of_epoch(&S, 3).unwrap().is_none());
        // A commit of the replaced epoch names nothing on file.
        assert_eq!(commit(s, 3, b"rec3"), CommitStored::UnknownRecord);
    }

    fn a_previous_enrollment_an_open_incident_uses_goes_when_it_closes(
        s: &dyn Store,
        dir: Option<&Path>,
    ) {
        let p1 = secret(3);
        committed_then_new(s, &p1);
        // A panic under epoch 1 (the test incident's epoch) is open.
        s.insert_panic(&incident(3, 4), "x").unwrap();
        assert_eq!(
            commit(s, 2, b"rec2"),
            CommitStored::New {
                dropped_previous: false,
                kept_for_incident: true
            }
        );
        assert_eq!(s.previous_enrollment(&S).unwrap().unwrap().epoch, 1);
        assert!(!s.drop_spent_previous(&S).unwrap(), "still in use");
        s.close_incident(&iid(3), IncidentStatus::Closed, 10)
            .unwrap();
        assert!(s.drop_spent_previous(&S).unwrap());
        assert!(s.previous_enrollment(&S).unwrap().is_none());
        on_disk_is(dir, &p1[100..164], false);
        assert!(!s.drop_spent_previous(&S).unwrap(), "nothing left");
    }

    fn a_previous_enrollment_is_not_dropped_before_the_current_one_is_committed(
        s: &dyn Store,
        _dir: Option<&Path>,
    ) {
        committed_then_new(s, b"p1");
        assert!(!s.drop_spent_previous(&S).unwrap());
        assert_eq!(s.previous_enrollment(&S).unwrap().unwrap().epoch, 1);
    }

    fn a_stop_deletes_the_previous_enrollment_too(s: &dyn Store, dir: Option<&Path>) {
        let p1 = secret(5);
        committed_then_new(s, &p1);
        on_disk_is(dir, &p1[100..164], true);
        s.apply_stop(&S, b"stop", &to(&T), 3).unwrap();
        assert!(s.previous_enrollment(&S).unwrap().is_none());
        assert!(s.enrollment(&S).unwrap().is_none());
        on_disk_is(dir, &p1[100..164], false);
    }

    #[test]
    fn an_existing_database_gains_the_staging_tables_and_keeps_its_enrollments() {
        let dir = tempfile::tempdir().unwrap();
        // The two tables as the schema before staging made them.
        let path = super::older_database(
            dir.path(),
            "CREATE TABLE students (student_id BLOB PRIMARY KEY, device_public BLOB NOT NULL,
                    epoch INTEGER NOT NULL, highest_counter INTEGER NOT NULL DEFAULT 0,
                    false_alarms INTEGER NOT NULL DEFAULT 0, tombstoned_at INTEGER);
                 CREATE TABLE enrollments (student_id BLOB PRIMARY KEY, epoch INTEGER NOT NULL,
                    record BLOB NOT NULL, sealed_profile BLOB NOT NULL, enrolled_at INTEGER NOT NULL);
                 INSERT INTO students (student_id, device_public, epoch)
                    VALUES (x'0101010101010101010101010101010101010101010101010101010101010101', zeroblob(32), 1);
                 INSERT INTO enrollments (student_id, epoch, record, sealed_profile, enrolled_at)
                    VALUES (x'0101010101010101010101010101010101010101010101010101010101010101', 1, x'72656331', x'7031', 1);",
        );
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.enrollment(&S).unwrap().unwrap().record, b"rec1");
        assert!(s.previous_enrollment(&S).unwrap().is_none());
        assert!(matches!(commit(&s, 1, b"rec1"), CommitStored::New { .. }));
        s.put_enrollment(&S, &[0; 32], 2, b"rec2", b"p2", 2)
            .unwrap();
        assert_eq!(s.previous_enrollment(&S).unwrap().unwrap().epoch, 1);
    }
}

mod wipe {
    use rusqlite::Connection;

    use super::{iid, incident, on_disk, sid, tid, to};
    use crate::store::{Db, IncidentStatus, SqliteStore, Store};

    #[test]
    fn stop_leaves_no_ciphertext_in_the_file_or_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let secret: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8 ^ 0x5a).collect();
        let s = super::enrolled_with(dir.path(), b"record", &secret);
        s.put_enrollment(&sid(3), &[4; 32], 1, b"record", b"other", 1)
            .unwrap();
        assert!(!on_disk(dir.path(), &secret[100..164]).is_empty());
        s.apply_stop(&sid(1), b"stop", &to(&[tid(9)]), 2).unwrap();
        assert_eq!(on_disk(dir.path(), &secret[100..164]), Vec::<&str>::new());
        // Later writes do not bring it back.
        s.add_timeline(&iid(1), 3, "x", "y").unwrap();
        assert_eq!(on_disk(dir.path(), &secret[100..164]), Vec::<&str>::new());
    }

    #[tokio::test]
    async fn a_forgotten_or_closed_incident_key_is_in_neither_the_file_nor_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        let key =
            |seed: u32| -> Vec<u8> { (0..200u32).map(|i| (i * 13 + seed) as u8 ^ 0xa5).collect() };
        let (k1, k2) = (key(1), key(2));
        for (id, k) in [(1u8, &k1), (2u8, &k2)] {
            let mut i = incident(id, id);
            i.incident_key_sealed = k.clone();
            s.insert_panic(&i, "x").unwrap();
        }
        assert!(!on_disk(dir.path(), &k1[100..164]).is_empty());
        // Through the group commit: the window ends for one, the other closes.
        let db = Db::new(s).unwrap();
        db.call(|s| s.forget_incident_key(&iid(1))).await.unwrap();
        assert_eq!(on_disk(dir.path(), &k1[100..164]), Vec::<&str>::new());
        db.call(|s| s.close_incident(&iid(2), IncidentStatus::Closed, 5))
            .await
            .unwrap();
        assert_eq!(on_disk(dir.path(), &k2[100..164]), Vec::<&str>::new());
    }

    #[test]
    fn a_stop_whose_wal_cannot_be_emptied_is_an_error_not_a_silent_pass() {
        let dir = tempfile::tempdir().unwrap();
        let secret: Vec<u8> = (0..700u32).map(|i| (i * 11 + 5) as u8 ^ 0x3c).collect();
        let s = super::enrolled_with(dir.path(), b"record", &secret);
        // Another connection in the middle of a read keeps its snapshot's
        // pages in the WAL.
        let reader = Connection::open(dir.path().join("db")).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let n: i64 = reader
            .query_row("SELECT COUNT(*) FROM enrollments", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        s.connection()
            .busy_timeout(std::time::Duration::from_millis(50))
            .unwrap();
        assert!(s.apply_stop(&sid(1), b"stop", &to(&[tid(9)]), 2).is_err());
        assert!(
            !on_disk(dir.path(), &secret[100..164]).is_empty(),
            "the error is honest: the ciphertext is still on disk"
        );
        // Once the reader is gone, the stop again (as the phone retries) wipes.
        drop(reader);
        s.apply_stop(&sid(1), b"stop", &to(&[tid(9)]), 3).unwrap();
        assert_eq!(on_disk(dir.path(), &secret[100..164]), Vec::<&str>::new());
    }
}

mod migrations {
    use crate::store::{PgStore, SqliteStore, Store};

    /// What opening a database some newer build left says.
    fn refusal(opened: Result<impl Store, crate::store::StoreError>) -> String {
        match opened {
            Ok(_) => panic!("a database of a newer schema was opened"),
            Err(e) => e.to_string(),
        }
    }

    /// The state a version-1 database could hold, from `open` (a fresh
    /// store) and `raw` (SQL run on its database): team `u` open on two
    /// open incidents, team `w` open on a closed one, and no index yet.
    fn left_by_version_1(s: &dyn Store, raw: &dyn Fn(&str)) {
        use crate::store::{AssignmentRow, AssignmentStatus};
        raw(
            "DROP INDEX one_open_assignment_per_unit; DELETE FROM schema_migrations WHERE version >= 2",
        );
        super::enroll(s);
        for (n, hash) in [(3, 4), (5, 6), (7, 8)] {
            s.insert_panic(&super::incident(n, hash), "x").unwrap();
        }
        for (n, unit, at) in [(3, super::U, 1), (7, super::uid(3), 3)] {
            s.put_assignment(&AssignmentRow {
                incident_id: super::iid(n),
                unit_id: unit,
                assigned_at_ms: at,
                status: AssignmentStatus::Pending,
            })
            .unwrap();
        }
        // `u` on incident 5 too, written raw: today's store refuses it even
        // without the index (on PostgreSQL a claim first looks for another
        // incident holding the team). Incident 5 is the second by id.
        raw(&format!(
            "INSERT INTO assignments (incident_id, unit_id, assigned_at_ms, status)
             SELECT id, '{}', 2, 'acknowledged' FROM incidents ORDER BY id LIMIT 1 OFFSET 1",
            super::U
        ));
        raw(
            "UPDATE incidents SET status = 'closed' WHERE id = (SELECT id FROM incidents ORDER BY id DESC LIMIT 1)",
        );
    }

    /// After migrating: the newest claim on `u` kept, the others released,
    /// and the database refusing a second one from then on.
    fn settled_by_version_2(s: &dyn Store) {
        use crate::store::AssignmentStatus::{Acknowledged, Pending, Released};
        let status = |n| s.assignments(&super::iid(n)).unwrap()[0].status;
        assert_eq!(
            [status(3), status(5), status(7)],
            [Released, Acknowledged, Released]
        );
        let claim = crate::store::AssignmentRow {
            incident_id: super::iid(3),
            unit_id: super::U,
            assigned_at_ms: 9,
            status: Pending,
        };
        assert!(matches!(
            s.put_assignment(&claim),
            Err(crate::store::StoreError::UnitTaken)
        ));
    }

    #[test]
    fn on_sqlite_version_2_settles_what_version_1_left_and_then_holds_a_team_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let s = SqliteStore::open(&path).unwrap();
        left_by_version_1(&s, &|sql| s.connection().execute_batch(sql).unwrap());
        drop(s);
        settled_by_version_2(&SqliteStore::open(&path).unwrap());
    }

    #[test]
    fn on_postgres_version_2_settles_what_version_1_left_and_then_holds_a_team_once() {
        let pg = sosvault_testkit::postgres::TestDatabase::create();
        let s = PgStore::connect(pg.url()).unwrap();
        let url = pg.url().to_owned();
        let raw = move |sql: &str| {
            let (url, sql) = (url.clone(), sql.to_owned());
            std::thread::spawn(move || {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                c.batch_execute(&sql).unwrap();
            })
            .join()
            .unwrap();
        };
        left_by_version_1(&s, &raw);
        drop(s);
        settled_by_version_2(&PgStore::connect(pg.url()).unwrap());
    }

    #[test]
    fn on_sqlite_a_newer_schema_is_refused_and_reopening_migrates_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        drop(SqliteStore::open(&path).unwrap());
        drop(SqliteStore::open(&path).unwrap());
        let c = rusqlite::Connection::open(&path).unwrap();
        let versions: Vec<i64> = c
            .prepare("SELECT version FROM schema_migrations")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            versions,
            (1..=super::super::schema::LATEST).collect::<Vec<_>>()
        );
        c.execute_batch("INSERT INTO schema_migrations VALUES (99, 1)")
            .unwrap();
        let why = refusal(SqliteStore::open(&path));
        assert!(
            why.contains("schema version 99, written by a newer"),
            "{why}"
        );
    }

    #[test]
    fn on_postgres_a_newer_schema_is_refused_and_reopening_migrates_nothing_twice() {
        let pg = sosvault_testkit::postgres::TestDatabase::create();
        drop(PgStore::connect(pg.url()).unwrap());
        drop(PgStore::connect(pg.url()).unwrap());
        let url = pg.url().to_owned();
        let versions = std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let v: Vec<i64> = c
                .query("SELECT version FROM schema_migrations", &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            c.batch_execute("INSERT INTO schema_migrations VALUES (99, 1)")
                .unwrap();
            v
        })
        .join()
        .unwrap();
        assert_eq!(
            versions,
            (1..=super::super::schema::LATEST).collect::<Vec<_>>()
        );
        let why = refusal(PgStore::connect(pg.url()));
        assert!(
            why.contains("schema version 99, written by a newer"),
            "{why}"
        );
    }
}
