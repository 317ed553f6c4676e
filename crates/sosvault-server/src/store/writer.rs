//! Group commit: [`Db`] queues store jobs for one writer thread, which runs
//! each batch in one transaction (a savepoint per job) and answers after its
//! commit. The thread, the batching and the savepoints are
//! `sosvault_service::group`'s, shared with the trustee; this is the
//! store's side of them.

use std::future::Future;

use sosvault_service::group::{Lost, Savepoints, Writer};
pub use sosvault_service::group::{MAX_BATCH, Transaction as GroupCommit};

use super::{Store, StoreError, StoreResult};

impl From<Lost> for StoreError {
    fn from(lost: Lost) -> Self {
        match lost {
            Lost::Stopped => Self::WriterStopped,
            // A dropped answer means the job panicked (its writes were undone).
            _ => Self::JobFailed,
        }
    }
}

/// A store job as the writer runs it.
type Job = sosvault_service::group::Work<dyn Store, StoreError>;

/// Shared handle to the store: queues jobs for the group-commit writer.
#[derive(Clone)]
pub struct Db {
    writer: Writer<Job>,
}

impl Db {
    /// Starts the writer thread, which owns `store` until the last handle is
    /// dropped.
    pub fn new<B>(store: B) -> StoreResult<Self>
    where
        B: GroupCommit<Store = dyn Store, Error = StoreError>,
    {
        let writer = Writer::start("sosvault-store", Savepoints::new(store), MAX_BATCH)
            .map_err(|e| StoreError::WriterStart(e.to_string()))?;
        Ok(Self { writer })
    }

    /// Runs `f` against the store in the next batch. The result comes back
    /// only after the commit that holds `f`'s writes has returned (an error
    /// if it failed). `f` is queued at once, before the future is polled.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<R> + Send + 'static,
    ) -> impl Future<Output = StoreResult<R>> + Send + 'static {
        self.writer
            .call(move |store: &(dyn Store + 'static)| f(store))
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::mpsc;

    use super::Db;
    use crate::store::tests::{iid, on_disk, sid, tid};
    use crate::store::{SqliteStore, Store, StoreResult};

    /// A writer over a fresh store in `dir`, with the store's commit counter
    /// and its refuse-commits flag ([`SqliteStore::watch_commits`]).
    fn writer(dir: &Path) -> (Db, Arc<AtomicUsize>, Arc<AtomicBool>) {
        let s = SqliteStore::open(&dir.join("db")).unwrap();
        let (commits, refuse) = s.watch_commits();
        (Db::new(s).unwrap(), commits, refuse)
    }

    /// Queues a job that holds the writer until the returned sender fires,
    /// and returns once the writer is inside it: everything queued meanwhile
    /// lands in the next batch.
    fn hold(db: &Db) -> (mpsc::Sender<()>, impl Future<Output = StoreResult<()>>) {
        let (open, gate) = mpsc::channel::<()>();
        let (inside, running) = mpsc::channel::<()>();
        let held = db.call(move |s| {
            let _ = inside.send(());
            let _ = gate.recv();
            s.add_timeline(&iid(0), 0, "gate", "held the writer")
        });
        running.recv().unwrap();
        (open, held)
    }

    fn details(s: &dyn Store, incident: u8) -> StoreResult<Vec<String>> {
        Ok(s.timeline(&iid(incident))?
            .into_iter()
            .map(|e| e.detail)
            .collect())
    }

    /// The timeline texts of incidents `[i; 16]` for every `i` of `ids`,
    /// read through the writer.
    async fn details_of(db: &Db, ids: std::ops::RangeInclusive<u8>) -> Vec<Vec<String>> {
        db.call(move |s| ids.map(|i| details(s, i)).collect::<Result<Vec<_>, _>>())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn concurrent_jobs_share_one_commit_and_each_gets_its_own_result() {
        let dir = tempfile::tempdir().unwrap();
        let (db, commits, _) = writer(dir.path());
        let (open, held) = hold(&db);
        let jobs: Vec<_> = (1..=200u8)
            .map(|i| {
                db.call(move |s| {
                    s.add_timeline(&iid(i), u64::from(i), "step", &format!("job {i}"))?;
                    details(s, i)
                })
            })
            .collect();
        open.send(()).unwrap();
        held.await.unwrap();
        let results = futures_util::future::join_all(jobs).await;
        for (i, r) in (1..=200u8).zip(results) {
            assert_eq!(r.unwrap(), vec![format!("job {i}")], "job {i}");
        }
        // 201 jobs, 201 durable writes: the held job's batch, then one for
        // the 200 queued behind it.
        assert_eq!(commits.load(Ordering::SeqCst), 2);
        let all = details_of(&db, 1..=200).await;
        assert!(all.iter().all(|d| d.len() == 1));
        // A lone call is a batch of one: one commit, as before.
        db.call(|s| s.add_timeline(&iid(9), 1, "x", "alone"))
            .await
            .unwrap();
        assert_eq!(commits.load(Ordering::SeqCst), 4);
    }

    /// In one batch, jobs that succeed around one that writes and then
    /// fails (a unique violation: `violation` is its code in the backend's
    /// words) and one that writes and then panics: the two are undone, the
    /// others kept, and the batch commits once (`commits`, where counted).
    /// On PostgreSQL, which aborts a transaction at its first error until
    /// it is rolled back to a savepoint, this is the savepoints' whole point.
    async fn only_the_failing_jobs_are_undone(
        db: &Db,
        violation: &str,
        commits: Option<&AtomicUsize>,
    ) {
        let team = || crate::store::UnitRow {
            id: crate::unit::UnitId::from_bytes([0xab; 6]),
            name: "PCR Talwandi".into(),
            kind: crate::geo::UnitKind::Police,
            position: None,
            position_at_ms: None,
        };
        db.call(move |s| s.create_unit(&team(), &[7; 32]))
            .await
            .unwrap();
        let before = commits.map(|c| c.load(Ordering::SeqCst));
        let (open, held) = hold(db);
        let a = db.call(|s| s.add_timeline(&iid(1), 1, "x", "kept a"));
        // Writes a row, then a real database error (the team's id is taken).
        let b = db.call(move |s| {
            s.add_timeline(&iid(2), 1, "x", "undone")?;
            s.create_unit(&team(), &[8; 32])
        });
        let c = db.call(|s| s.add_timeline(&iid(3), 1, "x", "kept c"));
        let d = db.call(|s| -> StoreResult<()> {
            s.add_timeline(&iid(4), 1, "x", "undone")?;
            panic!("a bug in a job");
        });
        let e = db.call(|s| s.add_timeline(&iid(5), 1, "x", "kept e"));
        open.send(()).unwrap();
        held.await.unwrap();
        a.await.unwrap();
        let refused = b.await.unwrap_err().to_string();
        assert!(refused.contains(violation), "{refused}");
        c.await.unwrap();
        assert!(d.await.is_err());
        e.await.unwrap();
        if let (Some(commits), Some(before)) = (commits, before) {
            // The held job's batch, then one for the five behind it.
            assert_eq!(commits.load(Ordering::SeqCst), before + 2);
        }
        let seen = details_of(db, 1..=5).await;
        assert_eq!(
            seen,
            vec![
                vec!["kept a".to_string()],
                vec![],
                vec!["kept c".to_string()],
                vec![],
                vec!["kept e".to_string()],
            ]
        );
        let units = db.call(|s| s.units()).await.unwrap();
        assert_eq!(
            units
                .iter()
                .map(|u| (u.id, u.name.as_str()))
                .collect::<Vec<_>>(),
            vec![(team().id, "PCR Talwandi")],
            "the first team, once"
        );
    }

    #[tokio::test]
    async fn a_failing_or_panicking_job_rolls_back_only_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (db, commits, _) = writer(dir.path());
        only_the_failing_jobs_are_undone(&db, "UNIQUE", Some(&commits)).await;
    }

    #[tokio::test]
    async fn on_postgres_a_failing_or_panicking_job_rolls_back_alone_and_the_batch_commits() {
        let pg = sosvault_testkit::postgres::TestDatabase::create();
        let db = Db::new(crate::store::PgStore::connect(pg.url()).unwrap()).unwrap();
        // 23505: a unique violation, in PostgreSQL's words.
        only_the_failing_jobs_are_undone(&db, "23505", None).await;
        drop(db);
    }

    /// Two writers on one PostgreSQL database, as two nodes run them: the
    /// database, not either writer's memory, decides. Each writer runs its
    /// jobs as one batch (held, then let go at once with the other's), in
    /// the opposite order to the other's, so that each batch waits on rows
    /// the other holds: PostgreSQL breaks the deadlock by undoing one
    /// statement, a second after it forms.
    mod two_writers {
        use std::sync::mpsc;
        use std::time::Duration;

        use futures_util::future::{BoxFuture, join_all};
        use sosvault::IncidentId;

        use super::{Db, hold};
        use crate::store::tests::{iid, incident, log_entry, mhash, sid, uid};
        use crate::store::{
            AssignmentRow, AssignmentStatus, IncidentStatus, NewLogEntry, PanicStored, PgStore,
            StoreError, StoreResult,
        };

        /// Two writers on a fresh database, students `[1; 32]` to
        /// `[PANICS; 32]` enrolled.
        async fn two_nodes(url: &str) -> (Db, Db) {
            let one = Db::new(PgStore::connect(url).unwrap()).unwrap();
            let two = Db::new(PgStore::connect(url).unwrap()).unwrap();
            for n in 1..=PANICS {
                let device = [n; 32];
                one.call(move |s| s.put_enrollment(&sid(n), &device, 1, b"rec", b"profile", 1))
                    .await
                    .unwrap();
            }
            (one, two)
        }

        /// For each `n` of `1..=PANICS`, `job(one, n, n)` on node one and
        /// `job(two, 100 + n, n)` on node two (each node draws its own
        /// incident ids), node two's in the opposite order, all queued while
        /// both writers are held: each writer runs its jobs as one batch,
        /// beside the other's. Halfway, each batch waits until the other is
        /// halfway too, so that each then asks for rows the other holds and
        /// has not committed: a deadlock every time, whatever the timing.
        /// The answers for each `n`: node one's, node two's.
        async fn at_once<T>(
            (one, two): (&Db, &Db),
            job: fn(&Db, u8, u8) -> BoxFuture<'static, T>,
        ) -> Vec<(T, T)> {
            // Each writer says it is halfway, then waits for the other's word.
            let (one_there, one_is_there) = mpsc::channel::<()>();
            let (two_there, two_is_there) = mpsc::channel::<()>();
            let meet = |db: &Db, there: mpsc::Sender<()>, other: mpsc::Receiver<()>| {
                let met: BoxFuture<'static, StoreResult<()>> = Box::pin(db.call(move |_| {
                    let _ = there.send(());
                    other.recv_timeout(Duration::from_secs(30)).map_err(|_| {
                        StoreError::Database("the other writer never got halfway".into())
                    })
                }));
                met
            };
            let (open_one, held_one) = hold(one);
            let (open_two, held_two) = hold(two);
            let half = PANICS / 2;
            let mut a: Vec<_> = (1..=half).map(|n| job(one, n, n)).collect();
            let met_one = meet(one, one_there, two_is_there);
            a.extend((half + 1..=PANICS).map(|n| job(one, n, n)));
            let mut b: Vec<_> = (half + 1..=PANICS)
                .rev()
                .map(|n| job(two, 100 + n, n))
                .collect();
            let met_two = meet(two, two_there, one_is_there);
            b.extend((1..=half).rev().map(|n| job(two, 100 + n, n)));
            open_one.send(()).unwrap();
            open_two.send(()).unwrap();
            held_one.await.unwrap();
            held_two.await.unwrap();
            let (a, b) = (join_all(a).await, join_all(b).await);
            met_one.await.unwrap();
            met_two.await.unwrap();
            a.into_iter().zip(b.into_iter().rev()).collect()
        }

        /// The answer to a panic's store call: done, or refused for the
        /// other writer storing the same panic (to be asked again).
        /// Anything else (a deadlock among them) fails the test.
        fn done_or_contended<T: std::fmt::Debug>(r: StoreResult<T>) -> Option<T> {
            match r {
                Ok(v) => Some(v),
                Err(StoreError::Contended(why)) => {
                    assert!(why.contains("storing the same panic"), "{why}");
                    None
                }
                Err(e) => panic!("neither done nor contended: {e}"),
            }
        }

        const PANICS: u8 = 6;

        /// Stores panic `n` (its hash `[n; 32]`) as incident `[id; 16]`.
        fn store_panic(db: &Db, id: u8, n: u8) -> BoxFuture<'static, StoreResult<PanicStored>> {
            let mut i = incident(id, n);
            // Student n's: a panic updates its student's row, and the same
            // student throughout would order the two batches one behind
            // the other.
            i.student_id = sid(n);
            i.counter = u64::from(n);
            // Boxed: the writer's future outlives the borrow of `db`.
            Box::pin(db.call(move |s| s.insert_panic(&i, "x")))
        }

        /// Claims team `[team; 6]` for incident `[incident; 16]`.
        fn claim_team(db: &Db, incident: u8, team: u8) -> BoxFuture<'static, StoreResult<()>> {
            let row = AssignmentRow {
                incident_id: iid(incident),
                unit_id: uid(team),
                assigned_at_ms: 1,
                status: AssignmentStatus::Pending,
            };
            Box::pin(db.call(move |s| s.put_assignment(&row)))
        }

        /// The same panic reaches two nodes at once (the phone tried one,
        /// timed out, and tried the other): one incident per panic, and
        /// each node's answer names it, or says to ask again.
        #[tokio::test]
        async fn the_same_panics_stored_by_two_writers_at_once_make_one_incident_each() {
            let pg = sosvault_testkit::postgres::TestDatabase::create();
            let (one, two) = two_nodes(pg.url()).await;
            let answers = at_once((&one, &two), store_panic).await;
            let mut contended = 0;
            for (n, (a, b)) in (1..=PANICS).zip(answers) {
                let (a, b) = (done_or_contended(a), done_or_contended(b));
                contended += usize::from(a.is_none()) + usize::from(b.is_none());
                // The incident the database kept for panic n.
                let kept = one
                    .call(move |s| s.incident_by_panic(&mhash(n)))
                    .await
                    .unwrap()
                    .expect("every panic is stored")
                    .id;
                assert!(kept == iid(n) || kept == iid(100 + n), "panic {n}");
                let news = [&a, &b]
                    .iter()
                    .filter(|r| matches!(r, Some(PanicStored::New(_))))
                    .count();
                assert!(news <= 1, "panic {n} stored as new twice");
                for answer in [a, b].into_iter().flatten() {
                    match answer {
                        PanicStored::New(row) => assert_eq!(row.id, kept, "panic {n}"),
                        PanicStored::Existing(id) => assert_eq!(id, kept, "panic {n}"),
                    }
                }
                // Asked again, either node names the one incident.
                for db in [&one, &two] {
                    let mut again = incident(200, n);
                    again.counter = u64::from(n);
                    let answer = db.call(move |s| s.insert_panic(&again, "x")).await;
                    assert_eq!(answer.unwrap(), PanicStored::Existing(kept));
                }
            }
            let open = one.call(|s| s.open_incidents()).await.unwrap();
            assert_eq!(open.len(), usize::from(PANICS), "one incident per panic");
            // The batches met halfway (`at_once`), each then storing the
            // panics the other held: refused at once while the other's
            // batch was open (the panic's lock, `Backend::PANIC_GUARD`),
            // found once it committed, never waited for (a deadlock,
            // SQLSTATE 40P01, a second later: `done_or_contended`).
            assert!(
                contended >= usize::from(PANICS / 2),
                "{contended}: the two batches never met"
            );
            drop((one, two));
        }

        /// Two nodes append to the one transparency log, each from its own
        /// tree: while one's transaction appends, the other's append is
        /// refused at once (not waited for), and once it commits the other's
        /// goes after it, learning the leaf it lacked: one log, one order.
        #[tokio::test]
        async fn two_writers_append_to_one_log_one_after_the_other() {
            let pg = sosvault_testkit::postgres::TestDatabase::create();
            let (one, two) = two_nodes(pg.url()).await;
            let entry = |leaf: u8, incident: u8| NewLogEntry {
                leaf_hash: [leaf; 32],
                ..log_entry(0, &[leaf], 1, incident, "operator:asha", 1)
            };
            // Node one appends, and its transaction stays open.
            let (appended, is_appended) = mpsc::channel::<()>();
            let (commit, may_commit) = mpsc::channel::<()>();
            let a = one.call(move |s| {
                let before = s.append_log(&entry(0xa1, 1))?;
                let _ = appended.send(());
                let _ = may_commit.recv_timeout(Duration::from_secs(30));
                Ok(before)
            });
            is_appended.recv().unwrap();
            // Both trees were empty; node two is refused while one holds the log.
            let refused = two.call(move |s| s.append_log(&entry(0xb2, 2))).await;
            assert!(
                matches!(&refused, Err(StoreError::Contended(why)) if why.contains("transparency log")),
                "{refused:?}"
            );
            commit.send(()).unwrap();
            assert_eq!(a.await.unwrap(), Vec::<[u8; 32]>::new());
            // Asked again from its empty tree, node two learns one's leaf and
            // takes the next index.
            assert_eq!(
                two.call(move |s| s.append_log(&entry(0xb2, 2)))
                    .await
                    .unwrap(),
                vec![[0xa1; 32]]
            );
            for db in [&one, &two] {
                assert_eq!(
                    db.call(|s| s.log_leaf_hashes(0)).await.unwrap(),
                    vec![[0xa1; 32], [0xb2; 32]]
                );
            }
            drop((one, two));
        }

        /// Two nodes claim the same teams at once for different incidents,
        /// in opposite orders: each team is held by one open incident,
        /// and each claim is taken, refused, or undone to ask again.
        #[tokio::test]
        async fn the_same_teams_claimed_by_two_writers_at_once_are_held_once_each() {
            let pg = sosvault_testkit::postgres::TestDatabase::create();
            let (one, two) = two_nodes(pg.url()).await;
            // Incidents [n; 16] are node one's, [100 + n; 16] node two's.
            for id in (1..=PANICS).chain(101..=100 + PANICS) {
                let mut i = incident(id, id);
                i.counter = u64::from(id);
                one.call(move |s| s.insert_panic(&i, "x")).await.unwrap();
            }
            let claim = claim_team;
            let answers = at_once((&one, &two), claim).await;
            let mut contended = 0;
            for (n, (a, b)) in (1..=PANICS).zip(answers) {
                let taken = |r: &StoreResult<()>| match r {
                    Ok(()) => Some(true),
                    Err(StoreError::UnitTaken) => Some(false),
                    Err(StoreError::Contended(_)) => None,
                    Err(e) => panic!("team {n}: neither taken, refused nor contended: {e}"),
                };
                let (a, b) = (taken(&a), taken(&b));
                contended += usize::from(a.is_none()) + usize::from(b.is_none());
                assert_ne!((a, b), (Some(true), Some(true)), "team {n} held twice");
                // Who holds the team, as the database says.
                let holders = |incident: u8| {
                    let db = one.clone();
                    async move {
                        let rows = db
                            .call(move |s| s.assignments(&iid(incident)))
                            .await
                            .unwrap();
                        rows.iter().any(|r| r.status == AssignmentStatus::Pending)
                    }
                };
                let held = (holders(n).await, holders(100 + n).await);
                assert_eq!(a == Some(true), held.0, "team {n}: node one's answer");
                assert_eq!(b == Some(true), held.1, "team {n}: node two's answer");
                // A claim undone for the other writer, asked again, is
                // decided: refused if the other took the team.
                for (mine, yours, db, answer) in [(n, 100 + n, &one, a), (100 + n, n, &two, b)] {
                    if answer.is_none() {
                        let again = claim(db, mine, n).await;
                        let other_holds = holders(yours).await;
                        assert_eq!(again.is_ok(), !other_holds, "team {n}, again");
                    }
                }
                let (one_holds, two_holds) = (holders(n).await, holders(100 + n).await);
                assert!(!(one_holds && two_holds), "team {n} held twice");
                assert!(one_holds || two_holds, "team {n} held by nobody");
            }
            // A claim never waits on the other node's: the one refused at
            // once (before, the batches met halfway deadlocked, and one
            // claim was undone a second later).
            assert_eq!(contended, 0, "a claim waited on the other writer's");
            // Closing an incident frees its team for the other node.
            let (closed, waiting): (IncidentId, u8) = {
                let rows = one.call(|s| s.assignments(&iid(1))).await.unwrap();
                if rows.iter().any(|r| r.status == AssignmentStatus::Pending) {
                    (iid(1), 101)
                } else {
                    (iid(101), 1)
                }
            };
            one.call(move |s| s.close_incident(&closed, IncidentStatus::Closed, 9))
                .await
                .unwrap();
            claim(&two, waiting, 1).await.unwrap();
            drop((one, two));
        }

        /// Each node acknowledges its own teams while claiming the other's
        /// (its board thought them free), in one batch each, the two
        /// batches met halfway: a claim of a team whose open assignment the
        /// other transaction is writing is refused at once, not waited on.
        /// (Waited on, each batch waits on the other's: a deadlock.)
        #[tokio::test]
        async fn a_claim_never_waits_on_the_other_nodes_write_of_the_team() {
            let pg = sosvault_testkit::postgres::TestDatabase::create();
            let (one, two) = two_nodes(pg.url()).await;
            let half = PANICS / 2;
            // Team n is held by node one's incident n up to half, by node
            // two's 100 + n above it.
            let holder = move |team: u8| if team <= half { team } else { 100 + team };
            for id in (1..=PANICS).chain(101..=100 + PANICS) {
                let mut i = incident(id, id);
                i.counter = u64::from(id);
                one.call(move |s| s.insert_panic(&i, "x")).await.unwrap();
            }
            for team in 1..=PANICS {
                claim_team(&one, holder(team), team).await.unwrap();
            }
            // `at_once` runs each node's own teams first (acknowledged),
            // then the other's (claimed).
            fn ack_or_claim(
                db: &Db,
                incident: u8,
                team: u8,
            ) -> BoxFuture<'static, StoreResult<()>> {
                let own = (incident == team) == (team <= PANICS / 2);
                let row = AssignmentRow {
                    incident_id: iid(incident),
                    unit_id: uid(team),
                    assigned_at_ms: 1,
                    status: if own {
                        AssignmentStatus::Acknowledged
                    } else {
                        AssignmentStatus::Pending
                    },
                };
                Box::pin(db.call(move |s| s.claim(&row, 2, "assigned", "x")))
            }
            let answers = at_once((&one, &two), ack_or_claim).await;
            for (team, (a, b)) in (1..=PANICS).zip(answers) {
                let (own, other) = if team <= half { (a, b) } else { (b, a) };
                assert!(
                    own.is_ok(),
                    "team {team}: acknowledged by its holder: {own:?}"
                );
                assert!(
                    matches!(other, Err(StoreError::UnitTaken)),
                    "team {team}: refused at once to the other node: {other:?}"
                );
                let rows = one
                    .call(move |s| s.assignments(&iid(holder(team))))
                    .await
                    .unwrap();
                assert_eq!(rows.len(), 1, "team {team}");
                assert_eq!(
                    rows[0].status,
                    AssignmentStatus::Acknowledged,
                    "team {team}"
                );
            }
            drop((one, two));
        }
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_job_of_the_batch_and_keeps_none() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _, refuse) = writer(dir.path());
        let (open, held) = hold(&db);
        let jobs: Vec<_> = (1..=20u8)
            .map(|i| db.call(move |s| s.add_timeline(&iid(i), 1, "x", "lost")))
            .collect();
        let read = db.call(|s| s.units());
        refuse.store(true, Ordering::SeqCst);
        open.send(()).unwrap();
        assert!(held.await.is_err(), "the held job's batch failed too");
        for r in futures_util::future::join_all(jobs).await {
            assert!(r.unwrap_err().to_string().contains("constraint failed"));
        }
        assert!(
            read.await.is_err(),
            "a read in a failed batch is not answered"
        );
        refuse.store(false, Ordering::SeqCst);
        // The writer goes on, and nothing of the failed batch is there.
        let seen = details_of(&db, 0..=20).await;
        assert!(seen.iter().all(Vec::is_empty), "{seen:?}");
    }

    #[tokio::test]
    async fn a_stop_in_a_batch_truncates_the_wal_before_it_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _, _) = writer(dir.path());
        let secret: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8 ^ 0x5a).collect();
        let sealed = secret.clone();
        db.call(move |s| s.put_enrollment(&sid(1), &[2; 32], 1, b"record", &sealed, 1))
            .await
            .unwrap();
        let needle = secret[100..164].to_vec();
        assert!(!on_disk(dir.path(), &needle).is_empty());
        let (open, held) = hold(&db);
        let before = db.call(|s| s.add_timeline(&iid(3), 1, "x", "before"));
        let stop = db.call(|s| {
            s.apply_stop(
                &sid(1),
                b"stop",
                &crate::store::ForwardTo {
                    trustees: &[tid(9)],
                    node: None,
                },
                2,
            )
        });
        let after = db.call(|s| s.add_timeline(&iid(3), 2, "x", "after"));
        open.send(()).unwrap();
        held.await.unwrap();
        before.await.unwrap();
        stop.await.unwrap();
        assert_eq!(on_disk(dir.path(), &needle), Vec::<&str>::new());
        after.await.unwrap();
        assert!(db.call(|s| s.enrollment(&sid(1))).await.unwrap().is_none());
        assert_eq!(db.call(|s| s.pending_shreds()).await.unwrap().len(), 1);
    }
}
