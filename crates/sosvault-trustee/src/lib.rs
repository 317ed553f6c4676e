//! # sosvault-trustee
//!
//! A sosvault trustee's service. A trustee (police headquarters, an
//! oversight office, an NGO) holds one key share per student, sealed at
//! rest; it releases a share only for a valid panic inside a release request
//! signed by a control room it pins, shreds it on the student's stop, and
//! records every decision in a Merkle log that anyone can verify.
//!
//! The decisions are the core crate's pure [`sosvault::Trustee`] state
//! machine; this crate persists them ([`node`]), commits them in batches
//! ([`group`]), serves them over HTTP ([`api`]) and audits a trustee's log
//! from outside ([`verify`]). [`witness`] publishes its log's checkpoints
//! with witnesses' cosignatures and witnesses other logs. [`rekey`] rotates the master key the entries
//! are sealed under, so a backup taken before a stop dies with the old key.
//!
//! ## Writes: checks in parallel, group commit
//!
//! A state change is split in two. Its stateless half (the envelope, every
//! signature, opening the delivered share, a release request's pin and
//! time) runs on the HTTP handler's own thread with no lock
//! ([`node::Checker`]). Its stateful half queues to one writer thread
//! ([`GroupCommit`]), which takes whatever is queued (up to
//! [`group::MAX_BATCH`]; it never waits on a timer), applies the batch in
//! one SQLite transaction with a savepoint per request
//! ([`Node::apply_batch`]), commits once, and only then answers each
//! request. So:
//!
//! - every acknowledged write is durable (`synchronous = FULL`), and a
//!   SIGKILL leaves each request's change wholly in or wholly out;
//! - a request the store refuses rolls back to its savepoint alone, the rest
//!   of its batch commits; a refusal is not a failure (its log entry
//!   commits with the batch);
//! - the in-memory Merkle tree learns a batch's leaves after its commit, so a
//!   signed head never covers a leaf that is not durable;
//! - after a batch with a shred, the WAL is checkpointed and truncated
//!   (outside the transaction) before anyone is answered.
//!
//! One fsync then covers as many requests as arrived while the last one ran:
//! the batch grows with the load.
//!
//! ## Routes
//!
//! | route | body / query | answer |
//! | --- | --- | --- |
//! | `GET /healthz`, `GET /v1/health` | | `{"status":"ok"}` |
//! | `GET /v1/identity` | | `{"trustee_id","public","log_public_key","name"}` |
//! | `POST /v1/shares` | `{"delivery": b64}` | `{"receipt": b64, "repeated": bool}` |
//! | `POST /v1/releases` | `{"request": b64}` | `{"release": b64, "repeated": bool}` |
//! | `POST /v1/shreds` | `{"stop": b64}` | `{"receipt": b64, "repeated": bool}` |
//! | `POST /v1/cancels` | `{"cancel": b64}` | `{"receipt": b64, "repeated": bool}` |
//! | `POST /v1/commits` | `{"commit": b64}` | `{"changed": bool}` |
//! | `GET /v1/log/head` | | `{"head": b64}` |
//! | `GET /v1/log/entries` | `?start=&end=` | `{"entries":[{"index","leaf_hash","entry"?}]}` |
//! | `GET /v1/log/proof/inclusion` | `?index=&size=` | `{"proof":[b64]}` |
//! | `GET /v1/log/proof/consistency` | `?old=&new=` | `{"proof":[b64]}` |
//! | `POST /v1/log/mine` | `{"query": b64}` | `{"head", "entries":[{"index","leaf_hash","entry","proof"}]}` |
//! | `GET /v1/log/checkpoint` | `?latest=` | the log's C2SP checkpoint, signed, with the cosignatures held ([`witness`]; `text/plain`) |
//! | `POST /v1/log/cosignatures` | `{"note": text}` | `{"size","kept":[name],"refused"}` (control room only) |
//! | `POST /v1/witness/add-checkpoint` | c2sp.org/tlog-witness text | a cosignature line (`text/plain`), or 409 with the size held (`text/x.tlog.size`) |
//! | `GET /openapi.json` | | this API as OpenAPI 3.1, generated from the handlers ([`api`]) |
//!
//! Errors are `{"error": "<code>", "message": "<plain words>"}` with a 4xx
//! status, or `{"error": "internal"}` with a 500 whose detail is only in the
//! service's own log. Log entries name students and panics, so the public
//! sees leaf hashes only; full entries go to auditors holding a bearer token
//! (`auditor_token_sha256` in the config) and, through a device-signed query,
//! to the student they are about.
//!
//! ## Quick start
//!
//! ```
//! use sosvault::{ControlRoomKey, TimeLimits, Trustee, TrusteeKey};
//! use sosvault_trustee::node::{Node, NodeOptions, RateLimit};
//! use sosvault_trustee::seal::MasterKey;
//!
//! let dir = std::env::temp_dir().join(format!("sosvault-trustee-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let trustee = Trustee::new(TrusteeKey::generate(), vec![ControlRoomKey::generate().public()], TimeLimits::default());
//! let node = Node::open(NodeOptions {
//!     rate: RateLimit { max_releases: 3, ..RateLimit::DEFAULT },
//!     ..NodeOptions::new(dir.join("trustee.db"), trustee, MasterKey::generate())
//! })?;
//! assert_eq!(node.log_size(), 0);
//! # drop(node);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod config;
pub mod gate;
pub mod group;
pub mod node;
pub mod rekey;
pub mod seal;
pub mod verify;
pub mod witness;

pub use api::{AppState, HttpLimits, app};
pub use config::Config;
pub use group::GroupCommit;
pub use node::{Node, NodeError, NodeOptions, RateLimit, Refused};
pub use seal::{EntrySealer, MasterKey};
