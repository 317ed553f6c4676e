//! Group commit: [`Db`] queues store jobs for one writer thread, which runs
//! each batch in one transaction (a savepoint per job) and answers after its commit.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use super::{Store, StoreError, StoreResult};

/// What [`Db`]'s writer needs from a backend to run many jobs under one
/// commit: the transaction and savepoint statements SQL databases share.
///
/// The writer calls [`begin`](Self::begin); for each job
/// [`savepoint`](Self::savepoint), the job, then [`release`](Self::release)
/// or, if the job failed, [`rollback_to`](Self::rollback_to); then
/// [`commit`](Self::commit) once, and answers the jobs only after it returned.
pub trait GroupCommit: Store + Send + 'static {
    /// Opens the batch's transaction.
    fn begin(&mut self) -> StoreResult<()>;
    /// Marks where the next job starts.
    fn savepoint(&mut self) -> StoreResult<()>;
    /// Keeps the writes of the job since the last savepoint.
    fn release(&mut self) -> StoreResult<()>;
    /// Undoes the writes of the job since the last savepoint, and only those.
    fn rollback_to(&mut self) -> StoreResult<()>;
    /// Commits the batch: one durable write for all its jobs.
    fn commit(&mut self) -> StoreResult<()>;
    /// Abandons the batch after a failed commit (a no-op if nothing is open).
    fn rollback(&mut self);
    /// Whether the job just run left work that cannot run inside a
    /// transaction; clears the mark. That job is answered after
    /// [`after_commit`](Self::after_commit).
    fn take_after_commit(&mut self) -> bool {
        false
    }
    /// Runs that work, after the commit.
    fn after_commit(&mut self) -> StoreResult<()> {
        Ok(())
    }
}

/// Most jobs in one batch. Under a burst a batch takes what is queued up to
/// this many; the rest go in the next one.
pub const MAX_BATCH: usize = 256;

/// A job as it reaches the writer: run it against the store (or, if the
/// batch could not start, hand it the error), then deliver its result once
/// the batch's fate is known.
type Job = Box<dyn FnOnce(Result<&dyn Store, &StoreError>) -> Ran + Send>;

/// Hands a job that ran its result, given the batch's fate: committed
/// (`None`) or not (`Some`, why).
type Deliver = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A job that ran: whether it succeeded (its writes are kept) and its
/// answer, held back until the batch's fate is known.
struct Ran {
    ok: bool,
    deliver: Deliver,
}

/// Shared handle to the store: queues jobs for the group-commit writer.
#[derive(Clone)]
pub struct Db {
    queue: mpsc::Sender<Job>,
}

impl Db {
    /// Starts the writer thread, which owns `store` until the last handle is
    /// dropped.
    pub fn new<B: GroupCommit>(store: B) -> StoreResult<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sosvault-store".into())
            .spawn(move || writer(store, jobs))
            .map_err(|e| StoreError::WriterStart(e.to_string()))?;
        Ok(Self { queue })
    }

    /// Runs `f` against the store in the next batch. The result comes back
    /// only after the commit that holds `f`'s writes has returned (an error
    /// if it failed). `f` is queued at once, before the future is polled.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<R> + Send + 'static,
    ) -> impl Future<Output = StoreResult<R>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel::<StoreResult<R>>();
        let job: Job = Box::new(move |store: Result<&dyn Store, &StoreError>| {
            let result = match store {
                Ok(s) => f(s),
                Err(e) => Err(e.clone()),
            };
            Ran {
                ok: result.is_ok(),
                deliver: Box::new(move |failed: Option<&StoreError>| {
                    let result = match (result, failed) {
                        (Ok(_), Some(e)) => Err(e.clone()),
                        (r, _) => r,
                    };
                    // The caller may have gone away; its job still ran.
                    let _ = tx.send(result);
                }),
            }
        });
        let queued = self.queue.send(job).is_ok();
        async move {
            if !queued {
                return Err(StoreError::WriterStopped);
            }
            // A dropped sender means the job panicked (its writes were undone).
            rx.await.map_err(|_| StoreError::JobFailed)?
        }
    }
}

/// The writer thread: batches whatever is queued, never waiting for more.
fn writer<B: GroupCommit>(mut store: B, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut store, batch);
    }
}

/// Runs one batch: one transaction, a savepoint per job, one commit, then
/// the answers.
fn run_batch<B: GroupCommit>(store: &mut B, batch: Vec<Job>) {
    if let Err(e) = store.begin() {
        tracing::error!("store: starting a batch failed: {e}");
        return abandon(store, Vec::new(), batch.into_iter(), &e);
    }
    let mut ran: Vec<(Ran, bool)> = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    while let Some(job) = jobs.next() {
        if let Err(e) = store.savepoint() {
            tracing::error!("store: opening a job's savepoint failed: {e}");
            ran.push((job(Err(&e)), false));
            continue;
        }
        // A job that panics is rolled back like one that failed; its caller
        // sees its answer channel dropped.
        let outcome = catch_unwind(AssertUnwindSafe(|| job(Ok(&*store as &dyn Store))));
        let ok = matches!(&outcome, Ok(r) if r.ok);
        let ended = if ok {
            store.release()
        } else {
            store.rollback_to()
        };
        let after = store.take_after_commit() && ok;
        if let Ok(r) = outcome {
            ran.push((r, after));
        } else {
            tracing::error!("store: a job panicked; its writes were undone");
        }
        if let Err(e) = ended {
            // The savepoint could not be closed: the batch is in an unknown
            // state, so none of it is committed.
            tracing::error!("store: closing a job's savepoint failed: {e}");
            return abandon(store, ran, jobs, &e);
        }
    }
    if let Err(e) = store.commit() {
        tracing::error!("store: committing a batch of {} failed: {e}", ran.len());
        return abandon(store, ran, std::iter::empty(), &e);
    }
    let after = if ran.iter().any(|(_, after)| *after) {
        store.after_commit().err()
    } else {
        None
    };
    for (r, wanted_after) in ran {
        (r.deliver)(if wanted_after { after.as_ref() } else { None });
    }
}

/// Rolls the batch back and fails every job of it, run or not.
fn abandon<B: GroupCommit>(
    store: &mut B,
    ran: Vec<(Ran, bool)>,
    rest: impl Iterator<Item = Job>,
    e: &StoreError,
) {
    store.rollback();
    for (r, _) in ran {
        (r.deliver)(Some(e));
    }
    for job in rest {
        (job(Err(e)).deliver)(Some(e));
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
    use crate::store::tests::on_disk;
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
            s.add_timeline(&[0; 16], 0, "gate", "held the writer")
        });
        running.recv().unwrap();
        (open, held)
    }

    fn details(s: &dyn Store, incident: u8) -> StoreResult<Vec<String>> {
        Ok(s.timeline(&[incident; 16])?
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
                    s.add_timeline(&[i; 16], u64::from(i), "step", &format!("job {i}"))?;
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
        db.call(|s| s.add_timeline(&[9; 16], 1, "x", "alone"))
            .await
            .unwrap();
        assert_eq!(commits.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_failing_or_panicking_job_rolls_back_only_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (db, commits, _) = writer(dir.path());
        db.call(|s| s.append_log(0, b"a", &[1; 32], &[7; 32], &[1; 16], "op", None, 1))
            .await
            .unwrap();
        let before = commits.load(Ordering::SeqCst);
        let (open, held) = hold(&db);
        let a = db.call(|s| s.add_timeline(&[1; 16], 1, "x", "kept a"));
        // Writes a row, then a real SQLite error (the log index is taken).
        let b = db.call(|s| {
            s.add_timeline(&[2; 16], 1, "x", "undone")?;
            s.append_log(0, b"b", &[2; 32], &[7; 32], &[2; 16], "op", None, 2)
        });
        let c = db.call(|s| s.add_timeline(&[3; 16], 1, "x", "kept c"));
        let d = db.call(|s| -> StoreResult<()> {
            s.add_timeline(&[4; 16], 1, "x", "undone")?;
            panic!("a bug in a job");
        });
        let e = db.call(|s| s.add_timeline(&[5; 16], 1, "x", "kept e"));
        open.send(()).unwrap();
        held.await.unwrap();
        a.await.unwrap();
        assert!(b.await.unwrap_err().to_string().contains("UNIQUE"));
        c.await.unwrap();
        assert!(d.await.is_err());
        e.await.unwrap();
        assert_eq!(commits.load(Ordering::SeqCst), before + 2);
        let seen = details_of(&db, 1..=5).await;
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
        assert_eq!(
            db.call(|s| s.log_leaf_hashes()).await.unwrap(),
            vec![[1; 32]]
        );
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_job_of_the_batch_and_keeps_none() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _, refuse) = writer(dir.path());
        let (open, held) = hold(&db);
        let jobs: Vec<_> = (1..=20u8)
            .map(|i| db.call(move |s| s.add_timeline(&[i; 16], 1, "x", "lost")))
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
        db.call(move |s| s.put_enrollment(&[1; 32], &[2; 32], 1, b"record", &sealed, 1))
            .await
            .unwrap();
        let needle = secret[100..164].to_vec();
        assert!(!on_disk(dir.path(), &needle).is_empty());
        let (open, held) = hold(&db);
        let before = db.call(|s| s.add_timeline(&[3; 16], 1, "x", "before"));
        let stop = db.call(|s| s.apply_stop(&[1; 32], b"stop", &[[9; 32]], 2));
        let after = db.call(|s| s.add_timeline(&[3; 16], 2, "x", "after"));
        open.send(()).unwrap();
        held.await.unwrap();
        before.await.unwrap();
        stop.await.unwrap();
        assert_eq!(on_disk(dir.path(), &needle), Vec::<&str>::new());
        after.await.unwrap();
        assert!(db.call(|s| s.enrollment(&[1; 32])).await.unwrap().is_none());
        assert_eq!(db.call(|s| s.pending_shreds()).await.unwrap().len(), 1);
    }
}
