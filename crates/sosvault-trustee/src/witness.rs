//! Witnessed checkpoints at a trustee: its own log's checkpoint with the
//! cosignatures it holds, and the trustee as a witness of other logs.
//!
//! - **Its own log.** `GET /v1/log/checkpoint` serves the log's head as a
//!   C2SP checkpoint signed with the log key under the trustee's origin
//!   (`log_origin`, by default `sosvault.log/<log id hex>`), with every
//!   cosignature the trustee holds for it. The control room relays
//!   cosignatures from the other trustees' witnesses (`POST
//!   /v1/log/cosignatures`, behind the gate): each is checked against the
//!   configured `witnesses` before it is kept, in the `cosignatures` table,
//!   for the [`KEEP_SIZES`] newest checkpoints cosigned.
//! - **A witness of other logs.** `POST /v1/witness/add-checkpoint` is the
//!   C2SP tlog-witness call, for the logs in `witness_logs`. The stateless
//!   half (the body parses, the log is followed, its key signed) runs before
//!   the store is touched, so a stranger's request costs a parse and a
//!   signature check and writes nothing. The decision itself is the core's
//!   [`sosvault::checkpoint::decide`], run inside one `BEGIN IMMEDIATE`
//!   transaction with the read of the stored state (`witnessed_logs`) and
//!   the write of the new one, under the node's lock: two requests can never
//!   both pass the old-size check, and a restart finds exactly the last head
//!   cosigned, so a fork offered after it is still refused.
//!
//! The cosigning key is the trustee's log key (see
//! [`sosvault::checkpoint`], "One key, two roles").

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use sosvault::checkpoint::{
    CheckedAddCheckpoint, Checkpoint, KeyName, LogVerifier, MAX_SIGNATURES, Note, NoteSignature,
    SignedCheckpoint, Witness, WitnessRefusal, WitnessState, WitnessVerifier, decide,
};
use sosvault::{LogPublic, Timestamp, TrusteeKey};
use tracing::info;

use crate::gate::Tally;
use crate::node::{Node, NodeError, Refused};

/// How many checkpoints' cosignatures a trustee keeps: those of the newest
/// this many sizes it holds cosignatures for.
pub const KEEP_SIZES: usize = 8;

/// Why the witnessing configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `witness_logs` lists this trustee's own log: it would cosign itself.
    #[error("witness_logs lists this trustee's own log key: a log cannot witness itself")]
    WitnessOfItself,
    /// `witnesses` lists this trustee's own key: its own cosignature would count.
    #[error("witnesses lists this trustee's own key: a log cannot witness itself")]
    ItselfAsWitness,
}

/// What a trustee knows to serve its checkpoints and witness other logs.
pub struct Witnessing {
    witness: Witness,
    own: LogVerifier,
    logs: Vec<LogVerifier>,
    cosigners: Vec<WitnessVerifier>,
    refused: Tally,
}

impl core::fmt::Debug for Witnessing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Witnessing")
            .field("origin", self.own.name())
            .field("witness", &self.witness)
            .field("logs", &self.logs.len())
            .field("cosigners", &self.cosigners.len())
            .finish()
    }
}

impl Witnessing {
    /// The trustee `key` publishing under `origin`, cosigning as
    /// `witness_name` for `logs`, keeping the cosignatures of `cosigners`.
    pub fn new(
        key: &TrusteeKey,
        origin: KeyName,
        witness_name: KeyName,
        logs: Vec<LogVerifier>,
        cosigners: Vec<WitnessVerifier>,
    ) -> Result<Self, ConfigError> {
        let log_key = key.log_key();
        let public = log_key.public();
        if logs.iter().any(|l| l.public() == &public) {
            return Err(ConfigError::WitnessOfItself);
        }
        if cosigners.iter().any(|w| w.public() == &public) {
            return Err(ConfigError::ItselfAsWitness);
        }
        Ok(Self {
            witness: Witness::new(witness_name, log_key),
            own: LogVerifier::new(origin, public),
            logs,
            cosigners,
            refused: Tally::default(),
        })
    }

    /// The defaults: the default origin and witness name, no log witnessed,
    /// no cosignature kept.
    pub fn defaults(key: &TrusteeKey) -> Self {
        let public: LogPublic = key.log_key().public();
        Self {
            witness: Witness::new(Witness::default_name(&public), key.log_key()),
            own: LogVerifier::for_key(public),
            logs: Vec::new(),
            cosigners: Vec::new(),
            refused: Tally::default(),
        }
    }

    /// This trustee's log, as clients pin it (origin and key).
    pub fn own(&self) -> &LogVerifier {
        &self.own
    }

    /// This trustee as a witness, as logs' clients pin it.
    pub fn witness_verifier(&self) -> WitnessVerifier {
        self.witness.verifier()
    }

    /// The `add-checkpoint` requests refused, to summarise.
    pub fn refused(&self) -> &Tally {
        &self.refused
    }

    /// The stateless half of `add-checkpoint`: the body parses, its origin
    /// is a followed log, that log's key signed it, the old size is not above
    /// its size. Touches no store.
    pub fn check(&self, body: &[u8]) -> Result<CheckedAddCheckpoint, WitnessRefusal> {
        let request =
            sosvault::checkpoint::AddCheckpoint::parse(body).map_err(WitnessRefusal::Malformed)?;
        CheckedAddCheckpoint::check(request, |origin| {
            self.logs.iter().find(|l| l.name().as_str() == origin)
        })
    }
}

/// What `add-checkpoint` came to: a cosignature, or a refusal that changed nothing.
pub type Decision = Result<NoteSignature, WitnessRefusal>;

fn immediate(node: &Node) -> Result<Transaction<'_>, NodeError> {
    Ok(Transaction::new_unchecked(
        node.connection(),
        TransactionBehavior::Immediate,
    )?)
}

fn hash(bytes: Vec<u8>, what: &str) -> Result<[u8; 32], NodeError> {
    bytes
        .try_into()
        .map_err(|_| NodeError::Internal(format!("{what} is not 32 bytes")))
}

fn size_of(v: i64, what: &str) -> Result<u64, NodeError> {
    u64::try_from(v).map_err(|_| NodeError::Internal(format!("{what} is negative")))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The stateful half of `add-checkpoint`: reads the state stored for the
/// log, decides ([`decide`]) and stores the new state, in one immediate
/// transaction; a refusal rolls back (nothing was written) and is counted.
pub fn add_checkpoint(
    node: &Node,
    w: &Witnessing,
    checked: &CheckedAddCheckpoint,
    now: Timestamp,
) -> Result<Decision, NodeError> {
    let origin = checked.checkpoint().origin.as_str();
    let tx = immediate(node)?;
    let stored = tx
        .query_row(
            "SELECT size, root FROM witnessed_logs WHERE origin = ?1",
            [origin],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )
        .optional()?
        .map(|(size, root)| {
            Ok::<_, NodeError>(WitnessState {
                size: size_of(size, "a witnessed size")?,
                root: hash(root, "a witnessed root")?,
            })
        })
        .transpose()?;
    match decide(stored.as_ref(), checked, &w.witness, now) {
        Ok(cosigned) => {
            tx.execute(
                "INSERT INTO witnessed_logs (origin, size, root, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(origin) DO UPDATE SET size = excluded.size, root = excluded.root,
                 updated_at = excluded.updated_at",
                params![
                    origin,
                    to_i64(cosigned.state.size),
                    cosigned.state.root.as_slice(),
                    to_i64(now.0)
                ],
            )?;
            tx.commit()?;
            info!(op = "cosign", origin, size = cosigned.state.size);
            Ok(Ok(cosigned.cosignature))
        }
        Err(refusal) => {
            drop(tx);
            w.refused.add();
            Ok(Err(refusal))
        }
    }
}

/// The checkpoint `GET /v1/log/checkpoint` serves, signed by the log key,
/// with every cosignature held for it. `latest`: the log as it is now
/// (what a relay sends to witnesses). Otherwise the kept checkpoint with
/// the most cosignatures (the larger on a tie), or the log as it is now
/// when none is held.
pub fn checkpoint(node: &Node, w: &Witnessing, latest: bool) -> Result<Note, NodeError> {
    let now_size = node.log_size();
    let best: Option<i64> = if latest {
        None
    } else {
        node.connection()
            .query_row(
                "SELECT size FROM cosignatures WHERE size <= ?1
                 GROUP BY size ORDER BY COUNT(*) DESC, size DESC LIMIT 1",
                [to_i64(now_size)],
                |r| r.get(0),
            )
            .optional()?
    };
    let size = match best {
        Some(s) => size_of(s, "a cosigned size")?,
        None => now_size,
    };
    let root = node
        .root_at(size)
        .ok_or_else(|| NodeError::Internal(format!("no root at size {size}")))?;
    let note = Checkpoint {
        origin: w.own.name().clone(),
        size,
        root,
    }
    .sign(node.log_key());
    let mut stmt = node.connection().prepare(
        "SELECT line FROM cosignatures WHERE size = ?1 AND root = ?2 ORDER BY witness LIMIT ?3",
    )?;
    let lines = stmt
        .query_map(
            params![
                to_i64(size),
                root.as_slice(),
                to_i64((MAX_SIGNATURES - 1) as u64)
            ],
            |r| r.get::<_, String>(0),
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let lines = lines
        .iter()
        .map(|l| NoteSignature::parse_line(l))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NodeError::Internal(format!("a kept cosignature does not parse: {e}")))?;
    note.with_signatures(lines)
        .map_err(|e| NodeError::Internal(format!("the checkpoint note: {e}")))
}

/// What `POST /v1/log/cosignatures` kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// The checkpoint's size.
    pub size: u64,
    /// The witnesses whose cosignature verified and is kept.
    pub kept: Vec<String>,
    /// Lines from configured witnesses that did not verify (not kept).
    pub refused: usize,
}

/// Keeps the cosignatures in `note` that the configured witnesses made on
/// one of this log's checkpoints: the note must carry the log's own valid
/// signature, its checkpoint must be of this log's history, and it must be
/// among the [`KEEP_SIZES`] newest cosigned (the older ones are dropped).
/// Lines from unknown keys are ignored; lines from configured witnesses
/// that do not verify are counted and dropped.
pub fn keep_cosignatures(node: &Node, w: &Witnessing, note: Note) -> Result<Kept, NodeError> {
    let not_ours = |why: String| {
        NodeError::Refused(Refused::new(
            "not_our_checkpoint",
            422,
            format!("not a checkpoint of this trustee's log: {why}"),
        ))
    };
    let signed = SignedCheckpoint::open(note, &w.own).map_err(|e| not_ours(e.to_string()))?;
    let cp = signed.checkpoint().clone();
    if node.root_at(cp.size) != Some(cp.root) {
        return Err(not_ours(format!(
            "the log has no root {} at size {}",
            hex::encode(cp.root),
            cp.size
        )));
    }
    let (valid, refused) = signed.cosignatures(&w.cosigners);
    let tx = immediate(node)?;
    let newer: i64 = tx.query_row(
        "SELECT COUNT(DISTINCT size) FROM cosignatures WHERE size > ?1",
        [to_i64(cp.size)],
        |r| r.get(0),
    )?;
    if usize::try_from(newer).unwrap_or(usize::MAX) >= KEEP_SIZES {
        return Err(NodeError::Refused(Refused::new(
            "stale_checkpoint",
            409,
            format!(
                "cosignatures are kept for the {KEEP_SIZES} newest checkpoints cosigned; size {} is older",
                cp.size
            ),
        )));
    }
    let mut kept = Vec::new();
    for (i, line, timestamp) in valid {
        let witness = &w.cosigners[i];
        tx.execute(
            "INSERT INTO cosignatures (size, root, witness, line, timestamp)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(size, witness) DO UPDATE SET root = excluded.root,
             line = excluded.line, timestamp = excluded.timestamp
             WHERE excluded.timestamp > cosignatures.timestamp",
            params![
                to_i64(cp.size),
                cp.root.as_slice(),
                witness.public().to_bytes().as_slice(),
                line.to_line().trim_end(),
                to_i64(timestamp)
            ],
        )?;
        kept.push(witness.name().to_string());
    }
    tx.execute(
        "DELETE FROM cosignatures WHERE size NOT IN
         (SELECT DISTINCT size FROM cosignatures ORDER BY size DESC LIMIT ?1)",
        [to_i64(KEEP_SIZES as u64)],
    )?;
    tx.commit()?;
    info!(
        op = "cosignatures",
        size = cp.size,
        kept = kept.len(),
        refused
    );
    Ok(Kept {
        size: cp.size,
        kept,
        refused,
    })
}
