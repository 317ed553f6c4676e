//! Group commit, once for both services: one writer thread owns the store,
//! takes whatever is queued (up to a maximum, never waiting on a timer to
//! fill a batch), runs it as one transaction with one commit (so one fsync
//! for the lot), and answers each job only after that commit returned.
//! Under load, batches grow by themselves: while one batch waits for its
//! fsync, the next one queues.
//!
//! Two layers:
//!
//! - [`Writer`]: the thread, the queue, the batching, the count of jobs not
//!   yet answered ([`Writer::waiting`]), an optional periodic duty between
//!   batches ([`Batcher::duty`]), and [`WriterExit`] to wait for the thread
//!   to end. What a batch *is* belongs to a [`Batcher`]: the trustee's
//!   hands its checked requests to its node, which runs them in one
//!   transaction with a savepoint each ([`Asked`] carries each request's
//!   answer back).
//! - [`Savepoints`]: a [`Batcher`] for jobs that are closures over a store
//!   ([`Writer::call`]): a savepoint per job (a job that fails, or panics,
//!   rolls back alone), one commit, work that cannot run inside a
//!   transaction after it ([`Transaction::after_commit`]), then the
//!   answers; a failed commit fails every job of the batch. The dispatch
//!   service's store runs on it.
//!
//! A batcher that panics loses its batch (every job of it sees its answer
//! dropped), not the writer: the next batch runs.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The most jobs in one batch, in both services. Under a burst a batch takes
/// what is queued up to this many; the rest go in the next one.
pub const MAX_BATCH: usize = 256;

/// What the writer thread hands each batch to.
pub trait Batcher: Send + 'static {
    /// One queued job.
    type Job: Send + 'static;
    /// What a batch's jobs are told once it is over.
    type Answers;

    /// Runs every job of `batch`, in order, as one commit, and returns only
    /// once that commit returned: the answers say how each job ended (if the
    /// commit failed, every job of the batch gets an error). Takes the jobs
    /// out of `batch` (the writer reuses it).
    fn run(&mut self, batch: &mut Vec<Self::Job>) -> Self::Answers;

    /// Hands each job its answer; the writer calls it right after
    /// [`run`](Self::run), once the batch no longer counts as
    /// [`waiting`](Writer::waiting).
    fn answer(&mut self, answers: Self::Answers);

    /// How often [`duty`](Self::duty) runs; `None` (the default): never.
    fn duty_every(&self) -> Option<Duration> {
        None
    }

    /// A timed duty, run in the writer thread between batches: once at
    /// start, then every [`duty_every`](Self::duty_every).
    fn duty(&mut self) {}
}

/// Why a job was not queued, or why its answer never came.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Lost {
    /// The writer thread has stopped: nothing more is stored.
    #[error("the writer thread has stopped")]
    Stopped,
    /// The job's answer was dropped: it panicked (its writes were undone),
    /// or its batcher did.
    #[error("the writer dropped the job")]
    Dropped,
}

/// The queue to the writer thread. Clones share the writer; it stops once
/// every clone is dropped, after running what was queued.
pub struct Writer<J> {
    queue: mpsc::Sender<J>,
    waiting: Arc<AtomicUsize>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl<J> Clone for Writer<J> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            waiting: Arc::clone(&self.waiting),
            thread: Arc::clone(&self.thread),
        }
    }
}

impl<J> core::fmt::Debug for Writer<J> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Writer")
            .field("waiting", &self.waiting.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl<J: Send + 'static> Writer<J> {
    /// Starts the writer thread `name` over `batcher`, with batches of at
    /// most `max_batch` jobs (at least one).
    pub fn start<B: Batcher<Job = J>>(
        name: &str,
        batcher: B,
        max_batch: usize,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let answered = Arc::clone(&waiting);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || write_batches(batcher, &jobs, max_batch.max(1), &answered))?;
        Ok(Self {
            queue,
            waiting,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Queues `job` for the next batch.
    pub fn send(&self, job: J) -> Result<(), Lost> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        if self.queue.send(job).is_err() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Lost::Stopped);
        }
        Ok(())
    }

    /// Jobs queued or in the batch being written, not yet answered.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// A handle to wait for the writer thread's end with (it holds no place
    /// in the queue, so it does not keep the writer running).
    pub fn exit(&self) -> WriterExit {
        WriterExit(Arc::clone(&self.thread))
    }
}

/// Waits for the writer thread to end: it ends once every [`Writer`] clone
/// is gone and what they queued is answered, and drops its batcher (and so
/// closes the store) as it ends.
#[derive(Debug)]
pub struct WriterExit(Arc<Mutex<Option<JoinHandle<()>>>>);

impl WriterExit {
    /// Blocks until the writer thread has ended (at once if it already has,
    /// or if another waiter took it).
    pub fn wait(self) {
        let handle = self.0.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the writer thread panicked");
        }
    }
}

/// The writer thread: batches whatever is queued, never waiting for more,
/// and runs the duty between batches when it is due.
fn write_batches<B: Batcher>(
    mut batcher: B,
    jobs: &mpsc::Receiver<B::Job>,
    max_batch: usize,
    waiting: &AtomicUsize,
) {
    let every = batcher.duty_every();
    let mut next_duty = every.map(|_| Instant::now());
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        if let (Some(every), Some(at)) = (every, next_duty)
            && Instant::now() >= at
        {
            contain(|| batcher.duty(), "its duty");
            next_duty = Some(Instant::now() + every);
        }
        let first = match next_job(jobs, next_duty) {
            Next::Job(job) => job,
            Next::Duty => continue,
            Next::Closed => break,
        };
        batch.push(first);
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let count = batch.len();
        let started = Instant::now();
        let answers = catch_unwind(AssertUnwindSafe(|| batcher.run(&mut batch)));
        // What a panicking batcher left is dropped: those jobs see their
        // answers dropped.
        batch.clear();
        waiting.fetch_sub(count, Ordering::AcqRel);
        match answers {
            Ok(answers) => contain(|| batcher.answer(answers), "its answers"),
            Err(_) => {
                tracing::error!("the writer's batcher panicked in a batch; the writer goes on")
            }
        }
        tracing::debug!(
            jobs = count,
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "batch written"
        );
    }
}

/// What the writer does next.
enum Next<J> {
    /// Starts a batch with this job.
    Job(J),
    /// Runs the duty (it is due).
    Duty,
    /// Ends: every handle is gone and the queue is empty.
    Closed,
}

/// Waits for the next job, or for the duty due at `duty`.
fn next_job<J>(jobs: &mpsc::Receiver<J>, duty: Option<Instant>) -> Next<J> {
    let Some(at) = duty else {
        return jobs.recv().map_or(Next::Closed, Next::Job);
    };
    match jobs.recv_timeout(at.saturating_duration_since(Instant::now())) {
        Ok(job) => Next::Job(job),
        Err(mpsc::RecvTimeoutError::Timeout) => Next::Duty,
        Err(mpsc::RecvTimeoutError::Disconnected) => Next::Closed,
    }
}

/// Runs `f`; a panic in it is logged, and the writer goes on.
fn contain(f: impl FnOnce(), what: &str) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        tracing::error!("the writer's batcher panicked in {what}; the writer goes on");
    }
}

/// A job that wants an answer: its input, and where its answer goes.
#[derive(Debug)]
pub struct Asked<I, O> {
    input: I,
    reply: Reply<O>,
}

impl<I, O> Asked<I, O> {
    /// The input, and the way to answer it.
    pub fn into_parts(self) -> (I, Reply<O>) {
        (self.input, self.reply)
    }
}

/// Where one job's answer goes.
#[derive(Debug)]
pub struct Reply<O>(oneshot::Sender<O>);

impl<O> Reply<O> {
    /// Answers the job (the asker may have gone: its job ran regardless).
    pub fn send(self, answer: O) {
        let _ = self.0.send(answer);
    }
}

impl<I: Send + 'static, O: Send + 'static> Writer<Asked<I, O>> {
    /// Queues `input` for the next batch; its answer comes on the receiver
    /// (from a future, or `blocking_recv` outside a runtime).
    pub fn ask(&self, input: I) -> Result<oneshot::Receiver<O>, Lost> {
        let (reply, answer) = oneshot::channel();
        self.send(Asked {
            input,
            reply: Reply(reply),
        })?;
        Ok(answer)
    }
}

/// What [`Savepoints`] needs from a store to run many jobs under one
/// commit: the transaction and savepoint statements SQL databases share.
///
/// The writer calls [`begin`](Self::begin); for each job
/// [`savepoint`](Self::savepoint), the job, then [`release`](Self::release)
/// or, if the job failed, [`rollback_to`](Self::rollback_to); then
/// [`commit`](Self::commit) once, and answers the jobs only after it returned.
pub trait Transaction: Send + 'static {
    /// What a job sees of the store.
    type Store: ?Sized + 'static;
    /// A store failure. One failed commit is reported to every job of its
    /// batch (hence `Clone`); a lost job is one too.
    type Error: Clone + core::fmt::Display + From<Lost> + Send + 'static;

    /// The store the jobs run against.
    fn store(&self) -> &Self::Store;
    /// Opens the batch's transaction.
    fn begin(&mut self) -> Result<(), Self::Error>;
    /// Marks where the next job starts.
    fn savepoint(&mut self) -> Result<(), Self::Error>;
    /// Keeps the writes of the job since the last savepoint. It may send
    /// nothing yet and leave its statement to the next
    /// [`savepoint`](Self::savepoint) or the commit (one round trip fewer
    /// per job where statements cross a network).
    fn release(&mut self) -> Result<(), Self::Error>;
    /// Undoes the writes of the job since the last savepoint, and only those.
    fn rollback_to(&mut self) -> Result<(), Self::Error>;
    /// Commits the batch: one durable write for all its jobs.
    fn commit(&mut self) -> Result<(), Self::Error>;
    /// Abandons the batch after a failed commit (a no-op if nothing is open).
    fn rollback(&mut self);
    /// Whether the job just run left work that cannot run inside a
    /// transaction; clears the mark. That job is answered after
    /// [`after_commit`](Self::after_commit).
    fn take_after_commit(&mut self) -> bool {
        false
    }
    /// Runs that work, after the commit.
    fn after_commit(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A job as it reaches [`Savepoints`]: run it against the store (or, if the
/// batch could not start, hand it the error), then deliver its result once
/// the batch's fate is known.
pub type Work<S, E> = Box<dyn FnOnce(Result<&S, &E>) -> Ran<E> + Send>;

/// Hands a job that ran its result, given the batch's fate: committed
/// (`None`) or not (`Some`, why).
type Deliver<E> = Box<dyn FnOnce(Option<&E>) + Send>;

/// A job that ran: whether it succeeded (its writes are kept) and its
/// answer, held back until the batch's fate is known.
pub struct Ran<E> {
    ok: bool,
    deliver: Deliver<E>,
}

/// The [`Batcher`] of closures over a [`Transaction`]'s store: a savepoint
/// per job, one commit, the answers after it.
#[derive(Debug)]
pub struct Savepoints<T>(T);

impl<T: Transaction> Savepoints<T> {
    /// Runs batches on `store`.
    pub fn new(store: T) -> Self {
        Self(store)
    }
}

impl<S: ?Sized + 'static, E: Clone + From<Lost> + Send + 'static> Writer<Work<S, E>> {
    /// Runs `f` against the store in the next batch. The result comes back
    /// only after the commit that holds `f`'s writes has returned (an error
    /// if it failed). `f` is queued at once, before the future is polled.
    pub fn call<R, F>(&self, f: F) -> impl Future<Output = Result<R, E>> + Send + use<R, F, S, E>
    where
        R: Send + 'static,
        F: FnOnce(&S) -> Result<R, E> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<R, E>>();
        let job: Work<S, E> = Box::new(move |store: Result<&S, &E>| {
            let result = match store {
                Ok(s) => f(s),
                Err(e) => Err(e.clone()),
            };
            Ran {
                ok: result.is_ok(),
                deliver: Box::new(move |failed: Option<&E>| {
                    let result = match (result, failed) {
                        (Ok(_), Some(e)) => Err(e.clone()),
                        (r, _) => r,
                    };
                    // The caller may have gone away; its job still ran.
                    let _ = tx.send(result);
                }),
            }
        });
        let queued = self.send(job);
        async move {
            queued?;
            // A dropped sender means the job panicked (its writes were undone).
            rx.await.map_err(|_| E::from(Lost::Dropped))?
        }
    }
}

/// How a [`Savepoints`] batch ended: each job that ran, and whether it
/// waits for the work after the commit; why the batch failed, if it did;
/// why that work failed, if it did.
pub struct Fate<E> {
    ran: Vec<(Ran<E>, bool)>,
    failed: Option<E>,
    after: Option<E>,
}

impl<T: Transaction> Batcher for Savepoints<T> {
    type Job = Work<T::Store, T::Error>;
    type Answers = Fate<T::Error>;

    fn run(&mut self, batch: &mut Vec<Self::Job>) -> Fate<T::Error> {
        run_batch(&mut self.0, batch.drain(..))
    }

    fn answer(&mut self, fate: Fate<T::Error>) {
        for (r, wanted_after) in fate.ran {
            let failed = match (&fate.failed, wanted_after) {
                (Some(e), _) => Some(e),
                (None, true) => fate.after.as_ref(),
                (None, false) => None,
            };
            (r.deliver)(failed);
        }
    }
}

/// Runs one batch: one transaction, a savepoint per job, one commit, the
/// work after it.
fn run_batch<T: Transaction>(
    store: &mut T,
    mut jobs: impl Iterator<Item = Work<T::Store, T::Error>>,
) -> Fate<T::Error> {
    let mut ran: Vec<(Ran<T::Error>, bool)> = Vec::with_capacity(jobs.size_hint().0);
    if let Err(e) = store.begin() {
        tracing::error!("store: starting a batch failed: {e}");
        return abandon(store, ran, jobs, e);
    }
    while let Some(job) = jobs.next() {
        if let Err(e) = store.savepoint() {
            // As for a close below: the transaction may be aborted now
            // (PostgreSQL aborts it at any error, and would turn the
            // commit into a rollback without a word), so the jobs already
            // run must not be told their writes were kept.
            tracing::error!("store: opening a job's savepoint failed: {e}");
            return abandon(store, ran, std::iter::once(job).chain(jobs), e);
        }
        // A job that panics is rolled back like one that failed; its caller
        // sees its answer channel dropped.
        let outcome = catch_unwind(AssertUnwindSafe(|| job(Ok(store.store()))));
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
            return abandon(store, ran, jobs, e);
        }
    }
    if let Err(e) = store.commit() {
        tracing::error!("store: committing a batch of {} failed: {e}", ran.len());
        return abandon(store, ran, std::iter::empty(), e);
    }
    let after = if ran.iter().any(|(_, after)| *after) {
        store.after_commit().err()
    } else {
        None
    };
    Fate {
        ran,
        failed: None,
        after,
    }
}

/// Rolls the batch back; every job of it, run or not, fails with `e`.
fn abandon<T: Transaction>(
    store: &mut T,
    mut ran: Vec<(Ran<T::Error>, bool)>,
    rest: impl Iterator<Item = Work<T::Store, T::Error>>,
    e: T::Error,
) -> Fate<T::Error> {
    store.rollback();
    ran.extend(rest.map(|job| (job(Err(&e)), false)));
    Fate {
        ran,
        failed: Some(e),
        after: None,
    }
}

#[cfg(test)]
mod tests;
