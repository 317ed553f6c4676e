//! The shared writer against a real SQLite file: a store of numbered rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

use super::{Asked, Batcher, Lost, Reply, Savepoints, Transaction, Work, Writer};
use crate::sqlite::{BUSY_TIMEOUT, open_checked};

/// A store failure as the test store reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failed {
    Sql(String),
    Lost(Lost),
}

impl core::fmt::Display for Failed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl From<Lost> for Failed {
    fn from(l: Lost) -> Self {
        Self::Lost(l)
    }
}

impl From<rusqlite::Error> for Failed {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e.to_string())
    }
}

/// One connection, its commits counted; commits refused while `refuse` is
/// set (the commit hook turns the COMMIT into a rollback and an error).
struct Rows {
    conn: Connection,
    commits: Arc<AtomicUsize>,
    /// The job just run asked for work after the commit.
    after: Arc<AtomicBool>,
    /// The commits counted when the after-commit work ran.
    after_ran: mpsc::Sender<usize>,
}

impl Transaction for Rows {
    type Store = Rows;
    type Error = Failed;

    fn store(&self) -> &Rows {
        self
    }
    fn begin(&mut self) -> Result<(), Failed> {
        Ok(self.conn.execute_batch("BEGIN IMMEDIATE")?)
    }
    fn savepoint(&mut self) -> Result<(), Failed> {
        Ok(self.conn.execute_batch("SAVEPOINT job")?)
    }
    fn release(&mut self) -> Result<(), Failed> {
        Ok(self.conn.execute_batch("RELEASE job")?)
    }
    fn rollback_to(&mut self) -> Result<(), Failed> {
        Ok(self.conn.execute_batch("ROLLBACK TO job; RELEASE job")?)
    }
    fn commit(&mut self) -> Result<(), Failed> {
        self.conn.execute_batch("COMMIT")?;
        self.commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
    fn take_after_commit(&mut self) -> bool {
        self.after.swap(false, Ordering::SeqCst)
    }
    fn after_commit(&mut self) -> Result<(), Failed> {
        let _ = self.after_ran.send(self.commits.load(Ordering::SeqCst));
        Ok(())
    }
}

impl Rows {
    fn insert(&self, n: i64) -> Result<(), Failed> {
        self.conn.execute("INSERT INTO rows (n) VALUES (?1)", [n])?;
        Ok(())
    }
}

type Db = Writer<Work<Rows, Failed>>;

struct Bench {
    db: Db,
    path: std::path::PathBuf,
    commits: Arc<AtomicUsize>,
    refuse: Arc<AtomicBool>,
    after: Arc<AtomicBool>,
    after_ran: mpsc::Receiver<usize>,
    _dir: tempfile::TempDir,
}

/// A writer (batches of at most `max`) over a fresh store.
fn bench(max: usize) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let conn = open_checked(&path, BUSY_TIMEOUT).unwrap();
    conn.execute_batch("CREATE TABLE rows (n INTEGER PRIMARY KEY)")
        .unwrap();
    let refuse = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&refuse);
    conn.commit_hook(Some(move || r.load(Ordering::SeqCst)));
    let commits = Arc::new(AtomicUsize::new(0));
    let after = Arc::new(AtomicBool::new(false));
    let (tx, after_ran) = mpsc::channel();
    let rows = Rows {
        conn,
        commits: Arc::clone(&commits),
        after: Arc::clone(&after),
        after_ran: tx,
    };
    let db = Writer::start("test-writer", Savepoints::new(rows), max).unwrap();
    Bench {
        db,
        path,
        commits,
        refuse,
        after,
        after_ran,
        _dir: dir,
    }
}

/// The rows a second connection sees: what is committed.
fn committed(path: &Path) -> Vec<i64> {
    let c = Connection::open(path).unwrap();
    let mut stmt = c.prepare("SELECT n FROM rows ORDER BY n").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Queues a job that holds the writer until the returned sender fires, and
/// returns once the writer is inside it: everything queued meanwhile lands
/// in the next batch.
fn hold(
    db: &Db,
) -> (
    mpsc::Sender<()>,
    impl Future<Output = Result<(), Failed>> + use<>,
) {
    let (open, gate) = mpsc::channel::<()>();
    let (inside, running) = mpsc::channel::<()>();
    let held = db.call(move |_| {
        let _ = inside.send(());
        let _ = gate.recv();
        Ok(())
    });
    running.recv().unwrap();
    (open, held)
}

#[tokio::test]
async fn a_failed_or_panicking_job_is_rolled_back_alone() {
    let b = bench(256);
    let (open, held) = hold(&b.db);
    let kept = b.db.call(|s| s.insert(1));
    // Writes a row, then fails on a real constraint: both undone.
    let failed = b.db.call(|s| {
        s.insert(2)?;
        s.insert(1)
    });
    let panicked = b.db.call(|s| -> Result<(), Failed> {
        s.insert(3)?;
        panic!("a bug in a job");
    });
    let also_kept = b.db.call(|s| s.insert(4));
    open.send(()).unwrap();
    held.await.unwrap();
    kept.await.unwrap();
    assert!(matches!(failed.await, Err(Failed::Sql(e)) if e.contains("UNIQUE")));
    assert_eq!(panicked.await, Err(Failed::Lost(Lost::Dropped)));
    also_kept.await.unwrap();
    assert_eq!(b.commits.load(Ordering::SeqCst), 2);
    assert_eq!(committed(&b.path), vec![1, 4]);
}

#[tokio::test]
async fn an_answer_comes_only_once_its_batch_is_committed() {
    let b = bench(256);
    let (open, held) = hold(&b.db);
    let jobs: Vec<_> = (1..=20)
        .map(|n| {
            let seen = Arc::clone(&b.commits);
            b.db.call(move |s| {
                s.insert(n)?;
                Ok(seen.load(Ordering::SeqCst))
            })
        })
        .collect();
    open.send(()).unwrap();
    held.await.unwrap();
    for (n, job) in (1..=20).zip(jobs) {
        let seen = job.await.unwrap();
        // The commit holding it returned before its answer left, and
        // another connection sees its row.
        assert!(b.commits.load(Ordering::SeqCst) > seen);
        assert!(committed(&b.path).contains(&n));
    }
}

#[tokio::test]
async fn a_failed_commit_fails_every_job_of_the_batch_and_keeps_none() {
    let b = bench(256);
    let (open, held) = hold(&b.db);
    let jobs: Vec<_> = (1..=10).map(|n| b.db.call(move |s| s.insert(n))).collect();
    let read = b.db.call(|s| Ok(s.conn.is_autocommit()));
    b.refuse.store(true, Ordering::SeqCst);
    open.send(()).unwrap();
    assert!(held.await.is_err(), "the held job's batch failed too");
    for r in futures_util::future::join_all(jobs).await {
        assert!(matches!(r, Err(Failed::Sql(e)) if e.contains("constraint failed")));
    }
    assert!(
        read.await.is_err(),
        "a read in a failed batch is not answered"
    );
    b.refuse.store(false, Ordering::SeqCst);
    // The writer goes on, and nothing of the failed batch is there.
    b.db.call(|s| s.insert(99)).await.unwrap();
    assert_eq!(committed(&b.path), vec![99]);
}

#[tokio::test]
async fn a_batch_forms_under_load_up_to_its_maximum() {
    let b = bench(4);
    let (open, held) = hold(&b.db);
    let jobs: Vec<_> = (1..=10).map(|n| b.db.call(move |s| s.insert(n))).collect();
    assert_eq!(b.db.waiting(), 11);
    open.send(()).unwrap();
    held.await.unwrap();
    for r in futures_util::future::join_all(jobs).await {
        r.unwrap();
    }
    // The held job alone, then 4, 4 and 2.
    assert_eq!(b.commits.load(Ordering::SeqCst), 4);
    assert_eq!(b.db.waiting(), 0);
    assert_eq!(committed(&b.path), (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn work_after_the_commit_runs_before_the_job_is_answered() {
    let b = bench(256);
    let (open, held) = hold(&b.db);
    let after = Arc::clone(&b.after);
    let plain = b.db.call(|s| s.insert(1));
    let wants = b.db.call(move |s| {
        after.store(true, Ordering::SeqCst);
        s.insert(2)
    });
    open.send(()).unwrap();
    held.await.unwrap();
    plain.await.unwrap();
    wants.await.unwrap();
    // It ran once, after the batch's commit, and before the answer.
    assert_eq!(b.after_ran.try_recv(), Ok(2));
    assert!(b.after_ran.try_recv().is_err());
}

#[tokio::test]
async fn exit_waits_for_every_queued_job() {
    let b = bench(256);
    let (open, held) = hold(&b.db);
    let jobs: Vec<_> = (1..=10).map(|n| b.db.call(move |s| s.insert(n))).collect();
    let exit = b.db.exit();
    drop(b.db);
    open.send(()).unwrap();
    std::thread::spawn(move || exit.wait()).join().unwrap();
    assert_eq!(committed(&b.path), (1..=10).collect::<Vec<_>>());
    held.await.unwrap();
    for r in futures_util::future::join_all(jobs).await {
        r.unwrap();
    }
}

/// A batcher of numbers that says when its duty ran and what each batch
/// held.
struct Counting {
    duty: mpsc::Sender<()>,
    batches: mpsc::Sender<Vec<u32>>,
}

impl Batcher for Counting {
    type Job = Asked<u32, u32>;
    type Answers = Vec<(Reply<u32>, u32)>;

    fn run(&mut self, batch: &mut Vec<Self::Job>) -> Self::Answers {
        let mut seen = Vec::with_capacity(batch.len());
        let mut answers = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            let (n, reply) = job.into_parts();
            if n == 0 {
                panic!("a bug in the batcher");
            }
            seen.push(n);
            answers.push((reply, n * 2));
        }
        let _ = self.batches.send(seen);
        answers
    }

    fn answer(&mut self, answers: Self::Answers) {
        for (reply, n) in answers {
            reply.send(n);
        }
    }

    fn duty_every(&self) -> Option<Duration> {
        Some(Duration::from_millis(1))
    }

    fn duty(&mut self) {
        let _ = self.duty.send(());
    }
}

#[test]
fn the_duty_runs_at_start_and_again_between_batches() {
    let (duty, duties) = mpsc::channel();
    let (batches, ran) = mpsc::channel();
    let w = Writer::start("test-duty", Counting { duty, batches }, 8).unwrap();
    // Waits on the writer's own signals (bounded, so a broken writer fails
    // the test instead of hanging it).
    let wait = Duration::from_secs(30);
    duties.recv_timeout(wait).unwrap();
    duties.recv_timeout(wait).unwrap();
    assert_eq!(w.ask(21).unwrap().blocking_recv(), Ok(42));
    assert_eq!(ran.recv_timeout(wait), Ok(vec![21]));
    duties.recv_timeout(wait).unwrap();
    let exit = w.exit();
    drop(w);
    exit.wait();
    // The duties that ran before the end may still be queued (one a
    // millisecond); past them, the channel is closed: the duty ended with the
    // writer. A duty still running would leave it open (`Empty`).
    let _ran_before_the_end = duties.try_iter().count();
    assert_eq!(
        duties.try_recv(),
        Err(mpsc::TryRecvError::Disconnected),
        "the duty ends with the writer"
    );
}

#[test]
fn a_panicking_batcher_loses_its_batch_not_the_writer() {
    let (duty, _duties) = mpsc::channel();
    let (batches, _ran) = mpsc::channel();
    let w = Writer::start("test-panic", Counting { duty, batches }, 8).unwrap();
    assert!(w.ask(0).unwrap().blocking_recv().is_err());
    assert_eq!(w.ask(5).unwrap().blocking_recv(), Ok(10));
    assert_eq!(w.waiting(), 0);
}
