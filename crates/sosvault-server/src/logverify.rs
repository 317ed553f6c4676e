//! `sosvault-server log verify`: an auditor's check of the control room's
//! transparency log (every profile view) from outside, over HTTP(S).
//!
//! 1. Fetch the signed head (`GET /v1/log/head`). The log key it names must
//!    be the one pinned with `--log-public` and the one remembered in the
//!    state file from an earlier run; with neither, the first run's key is
//!    remembered (trust on first use: pin it to close that gap).
//! 2. Verify the head's signature under that key.
//! 3. If the state file holds an earlier head: the log must not have shrunk,
//!    a head of the same size must have the same root (else the service
//!    signed a fork), and the consistency proof from the old head to the new
//!    one (`GET /v1/log/consistency`) must verify (else history was
//!    rewritten).
//! 4. Read every leaf (`GET /v1/log/entries`): with an operator's token,
//!    check each entry hashes to its leaf hash and decodes; rebuild the root
//!    from the leaf hashes and compare it with the signed root; verify every
//!    served inclusion proof (`GET /v1/log/proof`) against the head.
//! 5. Save the new head in the state file; a failed check leaves it as it
//!    was, holding the signed head that proves what the service showed before.
//!
//! Steps 1 to 5 are the trustee's `log verify` too: they live in
//! [`sosvault_service::logverify`]; this module says how the dispatch service
//! serves its log.

use std::path::PathBuf;

use anyhow::anyhow;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sosvault::LogPublic;
pub use sosvault_service::logverify::Verified;
pub use sosvault_service::logverify::WitnessOptions;
use sosvault_service::logverify::{
    Http, Leaf, LogSource, Names, base64, hash_base64, hashes_hex, pin_log_key, read_state,
    verify_served, write_state,
};

use crate::api::{LogConsistencyBody, LogEntriesBody, LogHeadBody, LogProofBody};

const WHO: &str = "the dispatch service";

/// What `log verify` is given.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The service's base URL (`https://dispatch.example:8080`).
    pub url: String,
    /// The log's public key, if the auditor pins it (`log_public_key` of
    /// `/v1/info`, obtained out of band); otherwise the first run's is
    /// remembered in the state file.
    pub log_public: Option<LogPublic>,
    /// Where the last verified head is kept between runs.
    pub state: Option<PathBuf>,
    /// For an `https://` URL: a PEM file with the service's TLS certificate
    /// or the CA that issued it, the only one trusted.
    pub ca: Option<PathBuf>,
    /// An operator's session token: the entries' bytes are read and checked
    /// too (without it, the leaf hashes only).
    pub token: Option<String>,
    /// The witnesses of the control room's log the auditor trusts (the
    /// trustees' `witness_vkey`s), the quorum and the log's origin. With
    /// witnesses, the served checkpoint must carry the quorum of their
    /// cosignatures and lie on the signed head's history.
    pub witnesses: WitnessOptions,
}

/// The state file: what the auditor saw last time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditState {
    /// The log key (hex) the heads verified under.
    log_public_key: String,
    /// The last verified signed head, base64.
    head: String,
}

/// The dispatch service's log routes.
struct Dispatch(Http);

impl LogSource for Dispatch {
    async fn consistency_proof(&self, old: u64, new: u64) -> anyhow::Result<Vec<[u8; 32]>> {
        let p: LogConsistencyBody = self
            .0
            .get(&format!("/v1/log/consistency?old={old}&new={new}"))
            .await?;
        if (p.old, p.new) != (old, new) {
            return Err(anyhow!(
                "{WHO} answered a consistency proof between {} and {} entries when asked for one \
                 between {old} and {new}",
                p.old,
                p.new
            ));
        }
        hashes_hex(WHO, "a consistency proof", &p.proof)
    }

    async fn leaves(&self, start: u64, end: u64) -> anyhow::Result<Vec<Leaf>> {
        let page: LogEntriesBody = self
            .0
            .get(&format!("/v1/log/entries?start={start}&end={end}"))
            .await?;
        page.entries
            .into_iter()
            .map(|l| {
                Ok(Leaf {
                    index: l.index,
                    leaf_hash: hash_base64(WHO, "a leaf hash", &l.leaf_hash)?,
                    entry: l.entry.map(|e| base64(WHO, "an entry", &e)).transpose()?,
                })
            })
            .collect()
    }

    async fn inclusion_proof(&self, index: u64, size: u64) -> anyhow::Result<Vec<[u8; 32]>> {
        let p: LogProofBody = self
            .0
            .get(&format!("/v1/log/proof?index={index}&size={size}"))
            .await?;
        hashes_hex(WHO, "an inclusion proof", &p.proof)
    }
}

/// Runs the whole check; `Err` carries a plain-words reason.
pub async fn verify(opts: &VerifyOptions) -> anyhow::Result<Verified> {
    let http = Http::new(&opts.url, opts.ca.as_deref(), opts.token.clone(), WHO)?;
    let head: LogHeadBody = http.get("/v1/log/head").await?;
    let log_public = LogPublic::from_hex(&head.log_public_key)
        .map_err(|_| anyhow!("the log key {WHO} names in /v1/log/head is not a log key"))?;
    let previous: Option<AuditState> = match &opts.state {
        Some(p) => read_state(p)?,
        None => None,
    };
    pin_log_key(
        &log_public,
        opts.log_public.as_ref(),
        previous.as_ref().map(|p| p.log_public_key.as_str()),
        Names {
            who: WHO,
            url: &opts.url,
            pin_flag: "--log-public",
        },
    )?;
    let source = Dispatch(http);
    let (head_bytes, verified) = verify_served(
        &source,
        &source.0,
        WHO,
        &head.head,
        previous.as_ref().map(|p| p.head.as_str()),
        &log_public,
        &opts.witnesses,
    )
    .await?;
    if let Some(path) = &opts.state {
        write_state(
            path,
            &AuditState {
                log_public_key: log_public.to_hex(),
                head: B64.encode(&head_bytes),
            },
        )?;
    }
    Ok(verified)
}
