//! `log verify`: an auditor's check of a trustee's log over HTTP.
//!
//! 1. Fetch `/v1/identity`; if a trustee public key is pinned (on the command
//!    line, or in the state file from an earlier run) it must match, and the
//!    log key must be the one seen before.
//! 2. Fetch the signed head and verify its signature under the log key.
//! 3. If the state file holds an earlier head: the new head must not be
//!    smaller, a head of the same size must have the same root (else the
//!    log forked), and a consistency proof from the old head to the new one
//!    must verify (else history was rewritten).
//! 4. Fetch every leaf of the head; with an auditor token, check that each
//!    entry hashes to its leaf hash and decodes as a log entry. Rebuild the
//!    root from the leaf hashes and compare it with the signed root, and
//!    verify the served inclusion proof of every leaf against the head.
//! 5. Save the new head in the state file (written to a temporary file and
//!    renamed, so a crash leaves the old state or the new).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sosvault::log::{LogEntry, MerkleLog, TreeHead, leaf_hash};
use sosvault::{Container, LogPublic, Signed, TrusteePublic};

use crate::api::{EntriesResponse, HeadResponse, Identity, ProofResponse};

/// What `log verify` is given.
#[derive(Debug, Clone)]
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
}

/// What a successful check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The verified head's size.
    pub size: u64,
    /// Its root, hex.
    pub root: String,
    /// The size of the earlier head it was proven consistent with.
    pub previous_size: Option<u64>,
    /// Whether entry bytes (not only leaf hashes) were checked.
    pub full_entries: bool,
}

/// The state file: what the auditor saw last time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditState {
    trustee_public: String,
    log_public_key: String,
    head: String,
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the trustee at {url}"))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("cannot read the answer of {url}"))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            bail!(
                "the trustee answered {status} to {path}: {}",
                text.chars().take(300).collect::<String>()
            );
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("the trustee's answer to {path} is not the expected JSON"))
    }
}

fn unb64(what: &str, s: &str) -> anyhow::Result<Vec<u8>> {
    B64.decode(s)
        .map_err(|_| anyhow!("the trustee sent {what} that is not base64"))
}

fn hashes(what: &str, v: &[String]) -> anyhow::Result<Vec<[u8; 32]>> {
    v.iter()
        .map(|h| {
            unb64(what, h)?
                .try_into()
                .map_err(|_| anyhow!("the trustee sent {what} with a hash that is not 32 bytes"))
        })
        .collect()
}

fn read_state(path: &Path) -> anyhow::Result<Option<AuditState>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("the state file {} is not valid", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the state file {}", path.display())),
    }
}

fn write_state(path: &Path, state: &AuditState) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(state)?;
    std::fs::write(&tmp, bytes)
        .with_context(|| format!("cannot write the state file {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot write the state file {}", path.display()))?;
    Ok(())
}

/// Runs the whole check; `Err` carries a plain-words reason.
pub async fn verify(opts: &VerifyOptions) -> anyhow::Result<VerifyReport> {
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?,
        base: opts.url.trim_end_matches('/').to_owned(),
        token: opts.auditor_token.clone(),
    };
    let identity: Identity = client.get("/v1/identity").await?;
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
    if let Some(pinned) = &opts.log_public
        && pinned.to_bytes() != log_public.to_bytes()
    {
        bail!(
            "the trustee at {} signs its log with another key than the one pinned with --log-public-key",
            opts.url
        );
    }

    let previous = match &opts.state {
        Some(p) => read_state(p)?,
        None => None,
    };
    if let Some(prev) = &previous {
        if prev.trustee_public != identity.public {
            bail!("the trustee's public key changed since the last check");
        }
        if prev.log_public_key != identity.log_public_key {
            bail!("the trustee's log key changed since the last check");
        }
    }

    let head: HeadResponse = client.get("/v1/log/head").await?;
    let head_bytes = unb64("a head", &head.head)?;
    let head = TreeHead::verify(&head_bytes, &log_public)
        .map_err(|e| anyhow!("the signed tree head does not verify: {e}"))?;
    let h = *head.body();

    let mut previous_size = None;
    if let Some(prev) = &previous {
        let old_bytes = unb64("a head", &prev.head)?;
        let old: Signed<TreeHead> = TreeHead::verify(&old_bytes, &log_public)
            .map_err(|e| anyhow!("the head in the state file does not verify: {e}"))?;
        let o = *old.body();
        if o.size > h.size {
            bail!(
                "the log shrank from {} to {} entries since the last check: history was rewritten",
                o.size,
                h.size
            );
        }
        if o.size == h.size && o.root != h.root {
            bail!(
                "fork: the trustee signed two different heads of size {} (roots {} and {})",
                h.size,
                hex::encode(o.root),
                hex::encode(h.root)
            );
        }
        let proof = if o.size > 0 && o.size < h.size {
            let p: ProofResponse = client
                .get(&format!(
                    "/v1/log/proof/consistency?old={}&new={}",
                    o.size, h.size
                ))
                .await?;
            hashes("a consistency proof", &p.proof)?
        } else {
            Vec::new()
        };
        o.verify_extended_by(&h, &proof).map_err(|e| {
            anyhow!(
                "the log of {} entries does not extend the head of {} entries seen before ({e}): history was rewritten or forked",
                h.size,
                o.size
            )
        })?;
        previous_size = Some(o.size);
    }

    // Every leaf of the head.
    let mut leaf_hashes: Vec<[u8; 32]> = Vec::new();
    let mut full_entries = client.token.is_some();
    while (leaf_hashes.len() as u64) < h.size {
        let start = leaf_hashes.len() as u64;
        let page: EntriesResponse = client
            .get(&format!("/v1/log/entries?start={start}&end={}", h.size))
            .await?;
        if page.entries.is_empty() {
            bail!(
                "the trustee served {start} entries for a signed head of {} entries",
                h.size
            );
        }
        for leaf in page.entries {
            let index = leaf_hashes.len() as u64;
            if leaf.index != index {
                bail!(
                    "the trustee served entry {} where entry {index} belongs",
                    leaf.index
                );
            }
            let hash: [u8; 32] = unb64("a leaf hash", &leaf.leaf_hash)?
                .try_into()
                .map_err(|_| anyhow!("the leaf hash of entry {index} is not 32 bytes"))?;
            match &leaf.entry {
                Some(entry) => {
                    let bytes = unb64("an entry", entry)?;
                    if leaf_hash(&bytes) != hash {
                        bail!("entry {index} does not match its leaf hash: it was tampered with");
                    }
                    LogEntry::from_bytes(&bytes).map_err(|e| {
                        anyhow!(
                            "entry {index} is not a valid log entry ({e}): it was tampered with"
                        )
                    })?;
                }
                None => full_entries = false,
            }
            leaf_hashes.push(hash);
        }
    }
    let rebuilt = MerkleLog::from_leaf_hashes(leaf_hashes.iter().copied());
    if rebuilt.root() != h.root {
        bail!(
            "the {} entries served do not add up to the signed root: the log was tampered with",
            h.size
        );
    }
    for (index, hash) in leaf_hashes.iter().enumerate() {
        let p: ProofResponse = client
            .get(&format!(
                "/v1/log/proof/inclusion?index={index}&size={}",
                h.size
            ))
            .await?;
        let proof = hashes("an inclusion proof", &p.proof)?;
        h.verify_inclusion(hash, index as u64, &proof).map_err(|e| {
            anyhow!("the inclusion proof of entry {index} does not verify against the signed head ({e})")
        })?;
    }

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
    Ok(VerifyReport {
        size: h.size,
        root: hex::encode(h.root),
        previous_size,
        full_entries,
    })
}
