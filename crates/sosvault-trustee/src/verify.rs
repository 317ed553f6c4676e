//! `log verify`: an auditor's check of a trustee's log over HTTP.
//!
//! 1. Fetch `/v1/identity`; if a trustee public key is pinned (on the command
//!    line, or in the state file from an earlier run) it must match, and the
//!    log key must be the one pinned or seen before.
//! 2. Fetch the signed head and verify its signature under the log key.
//! 3. If the state file holds an earlier head: the new head must not be
//!    smaller, a head of the same size must have the same root (else the
//!    log forked), and a consistency proof from the old head to the new one
//!    must verify (else history was rewritten).
//! 4. Fetch every leaf of the head; with an auditor token, check that each
//!    entry hashes to its leaf hash and decodes as a log entry. Rebuild the
//!    root from the leaf hashes and compare it with the signed root, and
//!    verify the served inclusion proof of every leaf against the head.
//! 5. With `--witness` (and `--quorum`): fetch `/v1/log/checkpoint` and
//!    require the log's signature under its origin, `quorum` cosignatures of
//!    distinct given witnesses, and that the checkpoint lies on the history
//!    of the head verified in 2.
//! 6. Save the new head in the state file (written to a temporary file and
//!    renamed, so a crash leaves the old state or the new). A failed check
//!    writes nothing.
//!
//! Steps 1 (the log key), 2 to 5 and the state file are the dispatch
//! service's `log verify` too: they live in [`sosvault_service::logverify`];
//! this module says how a trustee serves its log ([`LogSource`]) and adds the
//! trustee's own identity.

use anyhow::{anyhow, bail};
use serde::{Deserialize, Serialize};
use sosvault::{LogPublic, TrusteePublic};
use sosvault_service::logverify::{
    AuditedHead, HashEncoding, Http, Leaf, LogAudit, LogSource, fetch_checkpoint, fetch_leaves,
    fetch_proof,
};

use crate::api::{HeadResponse, Identity};

pub use sosvault_service::logverify::Report as VerifyReport;

const WHO: &str = "the trustee";

/// What `log verify` is given: what every log audit is given, and the
/// trustee's own public key if the auditor pins it.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The trustee's URL, the auditor's pins, state file, auditor token and
    /// witnesses.
    pub log: LogAudit,
    /// The trustee's public keys, if the auditor pins them.
    pub trustee_public: Option<TrusteePublic>,
}

pub use sosvault_service::logverify::Verified;

/// The state file: what the auditor saw last time.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuditState {
    /// The trustee's public key (hex).
    trustee_public: String,
    /// Its log's key and last verified head.
    #[serde(flatten)]
    log: AuditedHead,
}

/// A trustee's log routes.
struct Trustee(Http);

impl LogSource for Trustee {
    async fn consistency_proof(&self, old: u64, new: u64) -> anyhow::Result<Vec<[u8; 32]>> {
        let path = format!("/v1/log/proof/consistency?old={old}&new={new}");
        let what = "a consistency proof";
        fetch_proof(&self.0, WHO, what, &path, HashEncoding::Base64).await
    }

    async fn leaves(&self, start: u64, end: u64) -> anyhow::Result<Vec<Leaf>> {
        fetch_leaves(&self.0, WHO, start, end).await
    }

    async fn inclusion_proof(&self, index: u64, size: u64) -> anyhow::Result<Vec<[u8; 32]>> {
        let path = format!("/v1/log/proof/inclusion?index={index}&size={size}");
        let what = "an inclusion proof";
        fetch_proof(&self.0, WHO, what, &path, HashEncoding::Base64).await
    }

    async fn checkpoint(&self) -> anyhow::Result<Vec<u8>> {
        fetch_checkpoint(&self.0).await
    }
}

/// Runs the whole check; `Err` carries a plain-words reason.
pub async fn verify(opts: &VerifyOptions) -> anyhow::Result<Verified> {
    let audit = &opts.log;
    let http = audit.http(WHO)?;
    let identity: Identity = http.get("/v1/identity").await?;
    let served_public = TrusteePublic::from_hex(&identity.public)
        .map_err(|_| anyhow!("the trustee's public key in /v1/identity is not valid"))?;
    if let Some(pinned) = &opts.trustee_public
        && pinned.to_bytes() != served_public.to_bytes()
    {
        bail!(
            "the trustee at {} is not the trustee pinned with --trustee-public",
            audit.url
        );
    }
    let log_public = LogPublic::from_hex(&identity.log_public_key)
        .map_err(|_| anyhow!("the trustee's log key in /v1/identity is not valid"))?;
    let previous: Option<AuditState> = audit.previous()?;
    if let Some(prev) = &previous
        && prev.trustee_public != identity.public
    {
        bail!("the trustee's public key changed since the last check");
    }
    let head: HeadResponse = http.get("/v1/log/head").await?;
    let source = Trustee(http);
    let (pin, served) = ((WHO, "--log-public-key"), (&log_public, head.head.as_str()));
    let remembered = previous.as_ref().map(|p| &p.log);
    let (log, verified) = audit.verify_log(&source, pin, served, remembered).await?;
    audit.save(&AuditState {
        trustee_public: identity.public.clone(),
        log,
    })?;
    Ok(verified)
}
