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
//! The thread, its queue, the batching, the count of requests waiting and
//! [`WriterExit`] are `sosvault_service::group`'s, shared with the dispatch
//! service; a batch here is [`Node::apply_batch`].
//!
//! The writer also runs the trustee's one timed duty: every
//! [`EXPIRE_EVERY`] (and once at start) it drops the stored releases whose
//! retry window has closed ([`Node::expire`]), between batches.
//!
//! [`Checker`]: crate::node::Checker

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sosvault::Timestamp;
use sosvault_service::group::{Asked, Batcher, Reply, Writer};
pub use sosvault_service::group::{MAX_BATCH, WriterExit};
use tokio::sync::oneshot;

use crate::node::{Answer, Node, NodeError, Request};

/// How often the writer drops releases whose retry window has closed. A
/// closed window already refuses every repeat; this bounds how long the
/// sealed release stays in the store after it.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(30);

/// A request's answer, as the writer gives it.
type Outcome = Result<Answer, NodeError>;

/// The queue to the writer thread. Clones share the writer; it stops once
/// every clone is dropped (after answering what was queued).
#[derive(Clone, Debug)]
pub struct GroupCommit {
    writer: Writer<Asked<Request, Outcome>>,
}

impl GroupCommit {
    /// Starts the writer thread for `node`, with batches of at most
    /// `max_batch` requests (at least one).
    pub fn start(node: Arc<Mutex<Node>>, max_batch: usize) -> std::io::Result<Self> {
        let writer = Writer::start("trustee-writer", Batches { node }, max_batch)?;
        Ok(Self { writer })
    }

    /// A handle to wait for the writer thread's end with (it holds no place
    /// in the queue, so it does not keep the writer running).
    pub fn exit(&self) -> WriterExit {
        self.writer.exit()
    }

    /// Requests queued or in the batch being written, not yet answered.
    pub fn waiting(&self) -> usize {
        self.writer.waiting()
    }

    fn enqueue(&self, request: Request) -> Result<oneshot::Receiver<Outcome>, NodeError> {
        self.writer
            .ask(request)
            .map_err(|_| NodeError::Internal("the writer thread has stopped".into()))
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

/// The writer's side: a batch is one [`Node::apply_batch`], the duty one
/// [`Node::expire`].
struct Batches {
    node: Arc<Mutex<Node>>,
}

fn poisoned() -> NodeError {
    NodeError::Internal("the node's lock is poisoned".into())
}

impl Batcher for Batches {
    type Job = Asked<Request, Outcome>;
    type Answers = (Vec<Reply<Outcome>>, Vec<Outcome>);

    fn run(&mut self, batch: &mut Vec<Self::Job>) -> Self::Answers {
        let (requests, replies): (Vec<Request>, Vec<Reply<Outcome>>) =
            batch.drain(..).map(Asked::into_parts).unzip();
        let answers = match self.node.lock() {
            Ok(mut node) => node.apply_batch(requests, Timestamp::now()),
            Err(_) => requests.iter().map(|_| Err(poisoned())).collect(),
        };
        (replies, answers)
    }

    fn answer(&mut self, (replies, answers): Self::Answers) {
        for (reply, answer) in replies.into_iter().zip(answers) {
            // The asker may have gone (a timeout): its write stands regardless.
            reply.send(answer);
        }
    }

    fn duty_every(&self) -> Option<Duration> {
        Some(EXPIRE_EVERY)
    }

    /// One expiry pass, in the writer thread, between batches.
    fn duty(&mut self) {
        let result = match self.node.lock() {
            Ok(mut node) => node.expire(Timestamp::now()),
            Err(_) => Err(poisoned()),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "dropping expired releases failed; trying again later");
        }
    }
}
