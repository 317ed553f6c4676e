//! Witnessed checkpoints, the control room's side (issue 12, "logs nobody
//! can fork").
//!
//! The control room is the one party that talks to every trustee, so it
//! relays: every `witness_interval_ms` it takes each log's newest checkpoint
//! (its own log's, signed here; each trustee's, `GET /v1/log/checkpoint?
//! latest=true`) to every other trustee's witness (`POST
//! /v1/witness/add-checkpoint`, with the consistency proof from the size that
//! witness cosigned last), and hands the cosignatures back: a trustee's to it
//! (`POST /v1/log/cosignatures`), its own kept here and served at `GET
//! /v1/log/checkpoint` and in `/v1/log/mine`.
//!
//! Relaying needs no trust: a witness checks the log's signature and the
//! consistency proof itself, and every cosignature is checked here against
//! the witness's verifier key (from its `/v1/identity`, over the pinned TLS
//! link) before it is kept. A hostile control room can withhold (not relay),
//! never forge: what it withholds shows as a checkpoint without its quorum.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sosvault::checkpoint::{
    AddCheckpoint, Checkpoint, KeyName, Note, NoteSignature, WitnessVerifier,
};

use super::Engine;
use super::EngineError;
use crate::trustees::TrusteeClient;

/// Largest answer read from a trustee for the relay.
const MAX_ANSWER: usize = sosvault::checkpoint::MAX_NOTE_BYTES + 4096;

/// What the relay remembers between rounds (memory only: after a restart
/// the witnesses' own state, answered with a 409 and the size, restores it).
#[derive(Default)]
pub(super) struct Relay {
    /// For each (log, witness): the size the witness cosigned last.
    cosigned: HashMap<(Log, usize), u64>,
    /// For each log: the size every witness last cosigned in one round, and
    /// when. A log that has not grown since is not relayed again until its
    /// cosignatures are [`REFRESH_MS`] old: each cosigning is an fsync at
    /// the witness, and re-cosigning an unchanged log buys freshness alone.
    settled: HashMap<Log, (u64, u64)>,
    /// Each trustee's witness verifier key, from its identity.
    witnesses: HashMap<usize, WitnessVerifier>,
    /// The control room's witnessed checkpoint: of those cosigned, the one
    /// with the most cosignatures (the newest on a tie), with them.
    pub(super) witnessed: Option<Note>,
}

/// An unchanged log's cosignatures are renewed this often (ms).
pub(super) const REFRESH_MS: u64 = 5 * 60 * 1000;

impl Relay {
    /// Whether `log` at `size` was cosigned by every witness less than
    /// [`REFRESH_MS`] before `now_ms`, so this round can pass it by.
    fn settled(&self, log: Log, size: u64, now_ms: u64) -> bool {
        self.settled
            .get(&log)
            .is_some_and(|&(s, at)| s == size && now_ms.saturating_sub(at) < REFRESH_MS)
    }
}

/// A log the relay carries: the control room's, or trustee `i`'s.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Log {
    ControlRoom,
    Trustee(usize),
}

fn unavailable(what: impl std::fmt::Display) -> EngineError {
    EngineError::WitnessUnavailable(what.to_string())
}

/// Reads at most [`MAX_ANSWER`] bytes of an answer.
async fn body(mut resp: reqwest::Response) -> Result<Vec<u8>, EngineError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(unavailable)? {
        if out.len() + chunk.len() > MAX_ANSWER {
            return Err(unavailable("answer too large"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn get(t: &TrusteeClient, path: &str) -> Result<Vec<u8>, EngineError> {
    let resp = t
        .http()
        .get(format!("{}{path}", t.base()))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(unavailable)?;
    if !resp.status().is_success() {
        return Err(unavailable(format!("{path}: {}", resp.status())));
    }
    body(resp).await
}

/// What a witness answered an add-checkpoint.
enum Answer {
    Cosigned(NoteSignature),
    /// 409: the size it cosigned last.
    Conflict(u64),
    Refused(String),
}

async fn add_checkpoint(w: &TrusteeClient, req: &AddCheckpoint) -> Result<Answer, EngineError> {
    let resp = w
        .http()
        .post(format!("{}/v1/witness/add-checkpoint", w.base()))
        .timeout(std::time::Duration::from_secs(10))
        .header(reqwest::header::CONTENT_TYPE, "text/plain")
        .body(req.to_bytes())
        .send()
        .await
        .map_err(unavailable)?;
    let status = resp.status().as_u16();
    let bytes = body(resp).await?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(match status {
        200 => Answer::Cosigned(
            NoteSignature::parse_line(text.trim_end_matches('\n'))
                .map_err(|e| unavailable(format!("a cosignature that does not parse: {e}")))?,
        ),
        409 => match text.trim().parse() {
            Ok(size) => Answer::Conflict(size),
            Err(_) => Answer::Refused(format!("409 without a size: {text}")),
        },
        s => Answer::Refused(format!(
            "{s}: {}",
            text.chars().take(200).collect::<String>()
        )),
    })
}

impl Engine {
    /// The control room log's origin (`log_origin`, or `sosvault.log/<log id hex>`).
    pub fn log_origin(&self) -> Result<KeyName, EngineError> {
        match &self.inner.cfg.log_origin {
            Some(o) => KeyName::new(o.clone())
                .map_err(|e| EngineError::internal(format!("log_origin: {e}"))),
            None => Ok(Checkpoint::default_origin(
                &self.inner.log_key.public().log_id(),
            )),
        }
    }

    /// The control room log's verifier key (`<origin>+<key id>+<base64>`):
    /// what each trustee lists in its `witness_logs` to witness this log,
    /// and what an auditor or a phone pins.
    pub fn log_vkey(&self) -> String {
        let origin = self
            .log_origin()
            .unwrap_or_else(|_| Checkpoint::default_origin(&self.inner.log_key.public().log_id()));
        sosvault::checkpoint::LogVerifier::new(origin, self.inner.log_key.public()).to_string()
    }

    /// The control room log's newest checkpoint, signed now, without cosignatures.
    async fn fresh_checkpoint(&self) -> Result<Note, EngineError> {
        let head = self.log_head().await;
        Ok(Checkpoint::of_head(self.log_origin()?, head.body()).sign(&self.inner.log_key))
    }

    /// What `GET /v1/log/checkpoint` serves: the newest checkpoint its
    /// witnesses cosigned, with their cosignatures, or (none yet) a fresh
    /// one with the log's signature only.
    pub async fn log_checkpoint(&self) -> Result<Note, EngineError> {
        let witnessed = self.inner.relay.lock().await.witnessed.clone();
        match witnessed {
            Some(n) => Ok(n),
            None => self.fresh_checkpoint().await,
        }
    }

    /// Runs the relay every `witness_interval_ms` until shutdown.
    pub(super) fn spawn_witness_relay(&self) {
        let every = self.inner.cfg.witness_interval_ms;
        if every == 0 || self.inner.trustees.is_empty() {
            return;
        }
        let engine = self.clone();
        let stop = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            loop {
                // Witness writes are fsyncs at every trustee: never while
                // panics are being answered (intake.rs).
                engine.inner.intake.idle(super::intake::MAX_DEFER).await;
                engine.relay_round().await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(every)) => {}
                }
            }
        });
    }

    /// One round: every log's newest checkpoint to every other trustee.
    pub async fn relay_round(&self) {
        let n = self.inner.trustees.len();
        let logs = std::iter::once(Log::ControlRoom).chain((0..n).map(Log::Trustee));
        for log in logs {
            match self.relay_log(log).await {
                Err(e) if e.is_internal() => tracing::error!(?log, "witness relay: {e}"),
                Err(e) => tracing::debug!(?log, error = ?e, "witness relay"),
                Ok(()) => {}
            }
        }
    }

    async fn relay_log(&self, log: Log) -> Result<(), EngineError> {
        let n = self.inner.trustees.len();
        let note = match log {
            Log::ControlRoom => self.fresh_checkpoint().await?,
            Log::Trustee(i) => {
                Note::parse(&get(&self.inner.trustees[i], "/v1/log/checkpoint?latest=true").await?)
                    .map_err(|e| unavailable(format!("a checkpoint that does not parse: {e}")))?
            }
        };
        let cp = Checkpoint::parse_body(note.text())
            .map_err(|e| unavailable(format!("a checkpoint that does not parse: {e}")))?;
        let now = super::now_ms();
        if self.inner.relay.lock().await.settled(log, cp.size, now) {
            return Ok(());
        }
        let mut gathered = Vec::new();
        let mut all = true;
        for w in 0..n {
            if log == Log::Trustee(w) {
                continue;
            }
            match self.cosign_by(log, w, &note, &cp).await {
                Ok(Some(line)) => gathered.push(line),
                Ok(None) => {}
                Err(e) => {
                    all = false;
                    tracing::debug!(?log, witness = w, error = ?e, "not cosigned");
                }
            }
        }
        if gathered.is_empty() {
            if all {
                self.settle(log, cp.size, now).await;
            }
            return Ok(());
        }
        // Only the log's own signature, then the cosignatures: a trustee's
        // note may carry older lines it kept.
        let own: Vec<NoteSignature> = note.signatures().iter().take(1).cloned().collect();
        let cosigned = Note::new(note.text().to_owned(), own)
            .and_then(|n| n.with_signatures(gathered))
            .map_err(|e| unavailable(format!("cosigned note: {e}")))?;
        match log {
            Log::ControlRoom => {
                // Served: the checkpoint with the most cosignatures, the
                // newer on a tie (as a trustee serves its own), so a round
                // with a witness down does not take away a fuller one.
                let count = cosigned.signatures().len();
                let size = cp.size;
                let mut relay = self.inner.relay.lock().await;
                let better = match &relay.witnessed {
                    None => true,
                    Some(old) => {
                        let old_size = Checkpoint::parse_body(old.text()).map_or(0, |c| c.size);
                        let old_count = old.signatures().len();
                        count > old_count || (count == old_count && size >= old_size)
                    }
                };
                if better {
                    relay.witnessed = Some(cosigned);
                }
            }
            Log::Trustee(i) => {
                let t = &self.inner.trustees[i];
                let resp = t
                    .http()
                    .post(format!("{}/v1/log/cosignatures", t.base()))
                    .timeout(std::time::Duration::from_secs(10))
                    .json(&serde_json::json!({ "note": cosigned.to_text() }))
                    .send()
                    .await
                    .map_err(unavailable)?;
                if !resp.status().is_success() {
                    return Err(unavailable(format!(
                        "cosignatures refused: {}",
                        resp.status()
                    )));
                }
            }
        }
        if all {
            self.settle(log, cp.size, now).await;
        }
        Ok(())
    }

    /// Every witness has cosigned `log` at `size` (or had already).
    async fn settle(&self, log: Log, size: u64, now_ms: u64) {
        self.inner
            .relay
            .lock()
            .await
            .settled
            .insert(log, (size, now_ms));
    }

    /// Asks witness `w` to cosign `log`'s checkpoint; its verified
    /// cosignature, or `None` when it already cosigned this size.
    async fn cosign_by(
        &self,
        log: Log,
        w: usize,
        note: &Note,
        cp: &Checkpoint,
    ) -> Result<Option<NoteSignature>, EngineError> {
        let witness = &self.inner.trustees[w];
        let verifier = self.witness_verifier(w).await?;
        let key = (log, w);
        let mut old = self.inner.relay.lock().await.cosigned.get(&key).copied();
        // Twice at most: a 409 tells the size the witness holds (after a
        // restart of either side), then the request is made from it.
        for _ in 0..2 {
            let from = old.unwrap_or(0).min(cp.size);
            let proof = self.consistency(log, from, cp.size).await?;
            let req = AddCheckpoint {
                old_size: from,
                proof,
                note: note.clone(),
            };
            match add_checkpoint(witness, &req).await? {
                Answer::Cosigned(line) => {
                    if verifier.verify(note.text(), &line).is_none() {
                        return Err(unavailable("a cosignature that does not verify"));
                    }
                    self.inner.relay.lock().await.cosigned.insert(key, cp.size);
                    return Ok(Some(line));
                }
                Answer::Conflict(size) if size == cp.size && old == Some(size) => return Ok(None),
                Answer::Conflict(size) => old = Some(size),
                Answer::Refused(why) => return Err(unavailable(why)),
            }
        }
        Err(unavailable("the witness keeps answering 409"))
    }

    /// The consistency proof of `log` between sizes `old` and `new`.
    async fn consistency(
        &self,
        log: Log,
        old: u64,
        new: u64,
    ) -> Result<Vec<[u8; 32]>, EngineError> {
        if old == 0 || old >= new {
            return Ok(Vec::new());
        }
        match log {
            Log::ControlRoom => self
                .with_log(move |log| sosvault_service::logapi::consistency_proof(log, old, new))
                .await
                .map_err(|e| EngineError::internal(format!("own consistency proof: {e}"))),
            Log::Trustee(i) => {
                let bytes = get(
                    &self.inner.trustees[i],
                    &format!("/v1/log/proof/consistency?old={old}&new={new}"),
                )
                .await?;
                let p: sosvault_service::logapi::LogProof =
                    serde_json::from_slice(&bytes).map_err(unavailable)?;
                p.proof
                    .iter()
                    .map(|h| {
                        B64.decode(h)
                            .ok()
                            .and_then(|b| <[u8; 32]>::try_from(b).ok())
                            .ok_or_else(|| unavailable("a proof hash that is not 32 bytes"))
                    })
                    .collect()
            }
        }
    }

    /// Trustee `w`'s witness verifier key, from its identity (cached).
    async fn witness_verifier(&self, w: usize) -> Result<WitnessVerifier, EngineError> {
        if let Some(v) = self.inner.relay.lock().await.witnesses.get(&w) {
            return Ok(v.clone());
        }
        #[derive(serde::Deserialize)]
        struct Identity {
            witness_vkey: String,
        }
        let id: Identity =
            serde_json::from_slice(&get(&self.inner.trustees[w], "/v1/identity").await?)
                .map_err(unavailable)?;
        let v: WitnessVerifier = id
            .witness_vkey
            .parse()
            .map_err(|e| unavailable(format!("witness_vkey: {e:?}")))?;
        self.inner.relay.lock().await.witnesses.insert(w, v.clone());
        Ok(v)
    }

    /// The checkpoint a student's `/v1/log/mine` answer carries, and the
    /// consistency proof from its size to `head_size` (the head the entries
    /// are proven against): the student accepts the head only if the
    /// checkpoint has its witnesses' quorum and the head extends it.
    pub(super) async fn mine_checkpoint(
        &self,
        log: &sosvault::log::MerkleLog,
        head_size: u64,
    ) -> Result<Option<(String, Vec<[u8; 32]>)>, EngineError> {
        let Some(note) = self.inner.relay.lock().await.witnessed.clone() else {
            return Ok(None);
        };
        let cp = Checkpoint::parse_body(note.text())
            .map_err(|e| EngineError::internal(format!("witnessed checkpoint: {e}")))?;
        let proof = if cp.size == 0 || cp.size >= head_size {
            Vec::new()
        } else {
            log.consistency_proof(cp.size, head_size)
                .map_err(|e| EngineError::internal(format!("log consistency proof: {e}")))?
        };
        Ok(Some((note.to_text(), proof)))
    }
}
