//! Group commit: one writer thread owns every state change.
//!
//! HTTP handlers check a request's signatures in parallel ([`Checker`]),
//! then queue the checked [`Request`] here. The writer takes whatever is
//! queued (up to [`MAX_BATCH`]; it never waits on a timer to fill a batch),
//! runs it through [`Node::apply_batch`] (one transaction, a savepoint per
//! request, one `COMMIT` and so one fsync for the lot) and only then hands
//! each request its answer. Under load, batches grow by themselves: while
//! one batch waits for its fsync, the next one queues.
//!
//! The writer also runs the trustee's one timed duty: every
//! [`EXPIRE_EVERY`] (and once at start) it drops the stored releases whose
//! retry window has closed ([`Node::expire`]), between batches.
//!
//! [`Checker`]: crate::node::Checker

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use std::time::{Duration, Instant};

use sosvault::Timestamp;
use tokio::sync::oneshot;
use tracing::debug;

use crate::node::{Answer, Node, NodeError, Request};

/// The most requests in one batch (one transaction).
pub const MAX_BATCH: usize = 256;

/// How often the writer drops releases whose retry window has closed. A
/// closed window already refuses every repeat; this bounds how long the
/// sealed release stays in the store after it.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(30);

struct Job {
    request: Request,
    reply: oneshot::Sender<Result<Answer, NodeError>>,
}

/// The queue to the writer thread. Clones share the writer; it stops once
/// every clone is dropped (after answering what was queued).
#[derive(Clone, Debug)]
pub struct GroupCommit {
    queue: mpsc::Sender<Job>,
    waiting: Arc<AtomicUsize>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// Waits for the writer thread to end: it ends once every [`GroupCommit`]
/// clone is gone and what they queued is answered, and it closes the store
/// (SQLite checkpoints the WAL on close) as it ends.
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

impl core::fmt::Debug for Job {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Job")
            .field("op", &self.request.op())
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Starts the writer thread for `node`, with batches of at most
    /// `max_batch` requests (at least one).
    pub fn start(node: Arc<Mutex<Node>>, max_batch: usize) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel();
        let max_batch = max_batch.max(1);
        let waiting = Arc::new(AtomicUsize::new(0));
        let answered = Arc::clone(&waiting);
        let thread = std::thread::Builder::new()
            .name("trustee-writer".into())
            .spawn(move || write_batches(&node, &jobs, max_batch, &answered))?;
        Ok(Self {
            queue,
            waiting,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// A handle to wait for the writer thread's end with (it holds no place
    /// in the queue, so it does not keep the writer running).
    pub fn exit(&self) -> WriterExit {
        WriterExit(Arc::clone(&self.thread))
    }

    /// Requests queued or in the batch being written, not yet answered.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    fn enqueue(
        &self,
        request: Request,
    ) -> Result<oneshot::Receiver<Result<Answer, NodeError>>, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.waiting.fetch_add(1, Ordering::AcqRel);
        if self.queue.send(Job { request, reply }).is_err() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(NodeError::Internal("the writer thread has stopped".into()));
        }
        Ok(answer)
    }

    /// Queues a request and waits for its answer, which comes only once the
    /// batch holding it is durable.
    pub async fn submit(&self, request: Request) -> Result<Answer, NodeError> {
        self.enqueue(request)?
            .await
            .map_err(|_| NodeError::Internal("the writer thread dropped a request".into()))?
    }

    /// [`GroupCommit::submit`] for a thread outside an async runtime.
    pub fn submit_blocking(&self, request: Request) -> Result<Answer, NodeError> {
        self.enqueue(request)?
            .blocking_recv()
            .map_err(|_| NodeError::Internal("the writer thread dropped a request".into()))?
    }
}

fn write_batches(
    node: &Mutex<Node>,
    jobs: &mpsc::Receiver<Job>,
    max_batch: usize,
    waiting: &AtomicUsize,
) {
    let mut next_expiry = Instant::now();
    loop {
        if Instant::now() >= next_expiry {
            expire(node);
            next_expiry = Instant::now() + EXPIRE_EVERY;
        }
        let first = match jobs.recv_timeout(next_expiry.saturating_duration_since(Instant::now())) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut requests = vec![first.request];
        let mut replies = vec![first.reply];
        while requests.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => {
                    requests.push(job.request);
                    replies.push(job.reply);
                }
                Err(_) => break,
            }
        }
        let count = requests.len();
        let started = Instant::now();
        let answers = match node.lock() {
            Ok(mut node) => node.apply_batch(requests, Timestamp::now()),
            Err(_) => (0..count)
                .map(|_| Err(NodeError::Internal("the node's lock is poisoned".into())))
                .collect(),
        };
        for (reply, answer) in replies.into_iter().zip(answers) {
            // The asker may have gone (a timeout): its write stands regardless.
            let _ = reply.send(answer);
        }
        waiting.fetch_sub(count, Ordering::AcqRel);
        debug!(
            requests = count,
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "batch written"
        );
    }
}

/// One expiry pass, in the writer thread, between batches.
fn expire(node: &Mutex<Node>) {
    let result = match node.lock() {
        Ok(mut node) => node.expire(Timestamp::now()),
        Err(_) => Err(NodeError::Internal("the node's lock is poisoned".into())),
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "dropping expired releases failed; trying again later");
    }
}
