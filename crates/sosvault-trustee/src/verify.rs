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

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sosvault::checkpoint::{KeyName, WitnessVerifier};
use sosvault::{LogPublic, TrusteePublic};
use sosvault_service::logverify::{
    Http, Leaf, LogSource, Names, WitnessOptions, base64, hash_base64, hashes_base64, pin_log_key,
    read_state, verify_served, write_state,
};

use crate::api::{EntriesResponse, HeadResponse, Identity, ProofResponse};

pub use sosvault_service::logverify::Report as VerifyReport;

const WHO: &str = "the trustee";

/// What `log verify` is given.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The trustee's base URL (`http://127.0.0.1:8080`).
    pub url: String,
    /// The trustee's public keys, if the auditor pins them.
    pub trustee_public: Option<TrusteePublic>,
    /// The log's public key, if the auditor pins it (from `init`'s output,
    /// out of band); otherwise the first run's is remembered in the state.
    pub log_public: Option<LogPublic>,
    /// Where the last verified head is kept between runs.
    pub state: Option<PathBuf>,
    /// A bearer token that lets the auditor read full entries.
    pub auditor_token: Option<String>,
    /// For an `https://` URL: a PEM file with the trustee's certificate or
    /// the CA that issued it, the only one trusted.
    pub ca: Option<PathBuf>,
    /// The witnesses of the trustee's log the auditor trusts. When any is
    /// given, the served checkpoint must carry `quorum` of their
    /// cosignatures and lie on the signed head's history.
    pub witnesses: Vec<WitnessVerifier>,
    /// How many of `witnesses` must have cosigned (default: all of them).
    pub quorum: Option<usize>,
    /// The log's checkpoint origin (default: `sosvault.log/<log id hex>`).
    pub origin: Option<KeyName>,
}

pub use sosvault_service::logverify::Verified;

/// The state file: what the auditor saw last time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditState {
    trustee_public: String,
    log_public_key: String,
    head: String,
}

/// A trustee's log routes.
struct Trustee(Http);

impl LogSource for Trustee {
    async fn consistency_proof(&self, old: u64, new: u64) -> anyhow::Result<Vec<[u8; 32]>> {
        let p: ProofResponse = self
            .0
            .get(&format!("/v1/log/proof/consistency?old={old}&new={new}"))
            .await?;
        hashes_base64(WHO, "a consistency proof", &p.proof)
    }

    async fn leaves(&self, start: u64, end: u64) -> anyhow::Result<Vec<Leaf>> {
        let page: EntriesResponse = self
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
        let p: ProofResponse = self
            .0
            .get(&format!(
                "/v1/log/proof/inclusion?index={index}&size={size}"
            ))
            .await?;
        hashes_base64(WHO, "an inclusion proof", &p.proof)
    }
}

/// Runs the whole check; `Err` carries a plain-words reason.
pub async fn verify(opts: &VerifyOptions) -> anyhow::Result<Verified> {
    let http = Http::new(
        &opts.url,
        opts.ca.as_deref(),
        opts.auditor_token.clone(),
        WHO,
    )?;
    let identity: Identity = http.get("/v1/identity").await?;
    let served_public = TrusteePublic::from_hex(&identity.public)
        .map_err(|_| anyhow!("the trustee's public key in /v1/identity is not valid"))?;
    if let Some(pinned) = &opts.trustee_public
        && pinned.to_bytes() != served_public.to_bytes()
    {
        bail!(
            "the trustee at {} is not the trustee pinned with --trustee-public",
            opts.url
        );
    }
    let log_public = LogPublic::from_hex(&identity.log_public_key)
        .map_err(|_| anyhow!("the trustee's log key in /v1/identity is not valid"))?;

    let previous: Option<AuditState> = match &opts.state {
        Some(p) => read_state(p)?,
        None => None,
    };
    if let Some(prev) = &previous
        && prev.trustee_public != identity.public
    {
        bail!("the trustee's public key changed since the last check");
    }
    pin_log_key(
        &log_public,
        opts.log_public.as_ref(),
        previous.as_ref().map(|p| p.log_public_key.as_str()),
        Names {
            who: WHO,
            url: &opts.url,
            pin_flag: "--log-public-key",
        },
    )?;

    let head: HeadResponse = http.get("/v1/log/head").await?;
    let source = Trustee(http);
    let witnesses = WitnessOptions {
        witnesses: opts.witnesses.clone(),
        quorum: opts.quorum,
        origin: opts.origin.clone(),
    };
    let (head_bytes, verified) = verify_served(
        &source,
        &source.0,
        WHO,
        &head.head,
        previous.as_ref().map(|p| p.head.as_str()),
        &log_public,
        &witnesses,
    )
    .await?;

    if let Some(path) = &opts.state {
        write_state(
            path,
            &AuditState {
                trustee_public: identity.public.clone(),
                log_public_key: identity.log_public_key.clone(),
                head: B64.encode(&head_bytes),
            },
        )?;
    }
    Ok(verified)
}
