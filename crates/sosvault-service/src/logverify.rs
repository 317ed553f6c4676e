//! `log verify`: an auditor's check of a service's transparency log from
//! outside, shared by `sosvault-trustee log verify` and `sosvault-server log
//! verify`.
//!
//! The two services serve their logs under different routes and encodings;
//! each command says how to read its service's log by implementing
//! [`LogSource`]. Everything else is the same and lives here:
//!
//! 1. [`pin_log_key`]: the log key the service names must be the one pinned
//!    on the command line, and the one remembered in the state file from an
//!    earlier run (trust on first use when neither is there).
//! 2. [`check`]: the signed head verifies under that key. Against the head
//!    remembered from the last run: the log did not shrink, a head of the
//!    same size has the same root (else the log forked), and the served
//!    consistency proof from the old head to the new one verifies (else its
//!    history was rewritten). Then every leaf of the head: each entry that is
//!    served (to a caller allowed to read entries) hashes to its leaf hash and
//!    decodes as a log entry; the root rebuilt from the leaf hashes is the
//!    signed root; and the served inclusion proof of every leaf verifies.
//! 3. [`read_state`] and [`write_state`]: the state file, JSON, written to a
//!    temporary file and renamed, so a crash leaves the old state or the new.
//!    A failed check never writes it: it keeps the head that proves what the
//!    service signed before.
//! 4. [`Http`]: JSON `GET`s with plain-words errors, over TLS trusting only
//!    a pinned certificate or CA ([`crate::tls::client_config`]) when given
//!    one.
//! 5. [`check_witnessed`] (`log verify --witness ... --quorum K`): the
//!    service's checkpoint (`sosvault::checkpoint`) carries the log's
//!    signature and cosignatures from at least `K` distinct trusted
//!    witnesses, and lies on the history of the signed head checked in 2
//!    (same size, same root; else a consistency proof between them). A log
//!    that shows its witnesses one history and this auditor another fails.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sosvault::checkpoint::{
    Checkpoint, CheckpointError, KeyName, LogVerifier, MAX_NOTE_BYTES, Note, WitnessPolicy,
    WitnessVerifier,
};
use sosvault::log::{LogEntry, MerkleLog, TreeHead, leaf_hash};
use sosvault::{Container as _, LogPublic, Signed};

/// One leaf of a log, as a service serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Its index.
    pub index: u64,
    /// Its RFC 6962 leaf hash.
    pub leaf_hash: [u8; 32],
    /// The entry's bytes, when the service serves them to this caller.
    pub entry: Option<Vec<u8>>,
}

/// How one service serves its log: each `log verify` command implements it
/// over its service's routes.
pub trait LogSource {
    /// The consistency proof between the trees of `old` and `new` leaves
    /// (`1 <= old < new`).
    fn consistency_proof(
        &self,
        old: u64,
        new: u64,
    ) -> impl Future<Output = anyhow::Result<Vec<[u8; 32]>>>;
    /// Leaves from `start` on, before `end`, in order: a page (the service
    /// may stop early, but serves at least one leaf when `start < end`).
    fn leaves(&self, start: u64, end: u64) -> impl Future<Output = anyhow::Result<Vec<Leaf>>>;
    /// The inclusion proof of leaf `index` in the tree of `size` leaves.
    fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> impl Future<Output = anyhow::Result<Vec<[u8; 32]>>>;
    /// The served witnessed checkpoint (`GET /v1/log/checkpoint`): a signed
    /// note, at most [`MAX_NOTE_BYTES`].
    fn checkpoint(&self) -> impl Future<Output = anyhow::Result<Vec<u8>>>;
}

/// What a successful check saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The verified head's size.
    pub size: u64,
    /// Its root, hex.
    pub root: String,
    /// The size of the earlier head it was proven consistent with.
    pub previous_size: Option<u64>,
    /// Whether entry bytes (not only leaf hashes) were checked.
    pub full_entries: bool,
}

impl Report {
    /// The line `log verify` prints on success.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "ok: log of {} entries, root {}, signature verified, every entry included",
            self.size, self.root
        );
        if self.full_entries {
            line.push_str(", every entry matches its leaf hash");
        }
        match self.previous_size {
            Some(p) => line.push_str(&format!(
                ", consistent with the head of {p} entries seen before"
            )),
            None => line.push_str(", no earlier head to compare"),
        }
        line
    }
}

/// How messages name what is checked.
#[derive(Clone, Copy, Debug)]
pub struct Names<'a> {
    /// The service, as a sentence's subject: `the trustee`, `the dispatch service`.
    pub who: &'a str,
    /// Its URL.
    pub url: &'a str,
    /// The command-line flag that pins the log key: `--log-public-key`.
    pub pin_flag: &'a str,
}

/// Checks the log key the service names (`served`) against the one pinned on
/// the command line and the one remembered in the state file.
pub fn pin_log_key(
    served: &LogPublic,
    pinned: Option<&LogPublic>,
    remembered: Option<&str>,
    names: Names<'_>,
) -> anyhow::Result<()> {
    let Names { who, url, pin_flag } = names;
    if let Some(pinned) = pinned
        && pinned.to_bytes() != served.to_bytes()
    {
        bail!(
            "{who} at {url} signs its log with another key than the one pinned with {pin_flag} \
             ({}, not {}): this is not the log you meant to audit, or its key was replaced",
            served.to_hex(),
            pinned.to_hex()
        );
    }
    if let Some(remembered) = remembered
        && !remembered.eq_ignore_ascii_case(&served.to_hex())
    {
        bail!(
            "{who}'s log key changed since the last check ({}, remembered {remembered}): a \
             replaced key can sign any history. If the change was announced, pin the new key \
             with {pin_flag} and start a new state file; keep the old one as evidence",
            served.to_hex()
        );
    }
    Ok(())
}

/// Verifies the signed head `head` (its bytes as served) under `log`, its
/// extension of the `previous` head (bytes, from the state file) if any, and
/// every leaf `source` serves for it.
pub async fn check<S: LogSource>(
    source: &S,
    who: &str,
    head: &[u8],
    log: &LogPublic,
    previous: Option<&[u8]>,
) -> anyhow::Result<(Signed<TreeHead>, Report)> {
    let signed = TreeHead::verify(head, log).map_err(|e| {
        anyhow!("the signed tree head {who} served does not verify under its log key ({e})")
    })?;
    let h = *signed.body();
    let previous_size = match previous {
        Some(old) => Some(check_extension(source, who, &h, old, log).await?),
        None => None,
    };
    let (hashes, full_entries) = check_leaves(source, who, &h).await?;
    check_inclusion(source, who, &h, &hashes).await?;
    let report = Report {
        size: h.size,
        root: hex::encode(h.root),
        previous_size,
        // Nothing was checked of an empty log's entries.
        full_entries: full_entries && h.size > 0,
    };
    Ok((signed, report))
}

/// Checks that `h` extends the head `old_bytes` (from the state file): not
/// smaller, not another root at the same size, and a consistency proof
/// between them. Answers the old head's size.
async fn check_extension<S: LogSource>(
    source: &S,
    who: &str,
    h: &TreeHead,
    old_bytes: &[u8],
    log: &LogPublic,
) -> anyhow::Result<u64> {
    let old = TreeHead::verify(old_bytes, log).map_err(|e| {
        anyhow!(
            "the head in the state file does not verify under the log key ({e}): the state \
             file is damaged or belongs to another log"
        )
    })?;
    let o = *old.body();
    if o.size > h.size {
        bail!(
            "the log shrank from {} to {} entries since the last check: history was \
             rewritten. The state file keeps the signed head of {} entries as evidence",
            o.size,
            h.size,
            o.size
        );
    }
    if o.size == h.size && o.root != h.root {
        bail!(
            "fork: {who} signed two different heads of size {} (roots {} and {}). The state \
             file keeps the earlier one as evidence",
            h.size,
            hex::encode(o.root),
            hex::encode(h.root)
        );
    }
    let proof = if o.size > 0 && o.size < h.size {
        source.consistency_proof(o.size, h.size).await?
    } else {
        Vec::new()
    };
    o.verify_extended_by(h, &proof).map_err(|e| {
        anyhow!(
            "the log of {} entries does not extend the head of {} entries seen before ({e}): \
             history was rewritten or forked. The state file keeps the signed head of {} \
             entries as evidence",
            h.size,
            o.size,
            o.size
        )
    })?;
    Ok(o.size)
}

/// Reads every leaf of `h`, page by page, each at its index, each entry
/// served matching its leaf hash and decoding as an entry; the leaves must
/// add up to the signed root. Answers the leaf hashes, and whether every
/// entry's bytes were served (an auditor's token) or only hashes.
async fn check_leaves<S: LogSource>(
    source: &S,
    who: &str,
    h: &TreeHead,
) -> anyhow::Result<(Vec<[u8; 32]>, bool)> {
    let mut hashes: Vec<[u8; 32]> = Vec::new();
    let mut full_entries = true;
    while (hashes.len() as u64) < h.size {
        let start = hashes.len() as u64;
        let page = source.leaves(start, h.size).await?;
        if page.is_empty() {
            bail!(
                "{who} served {start} entries for a signed head of {} entries",
                h.size
            );
        }
        for leaf in page {
            let index = hashes.len() as u64;
            check_leaf(who, h, index, &leaf)?;
            full_entries &= leaf.entry.is_some();
            hashes.push(leaf.leaf_hash);
        }
    }
    let rebuilt = MerkleLog::from_leaf_hashes(hashes.iter().copied());
    if rebuilt.root() != h.root {
        bail!(
            "the {} entries {who} served do not add up to its signed root: the log was tampered \
             with",
            h.size
        );
    }
    Ok((hashes, full_entries))
}

/// Checks one served leaf: where it belongs (`index`, inside the head), and
/// if its entry's bytes were served, that they hash to it and decode.
fn check_leaf(who: &str, h: &TreeHead, index: u64, leaf: &Leaf) -> anyhow::Result<()> {
    if index >= h.size {
        bail!(
            "{who} served more entries than its signed head of {} entries",
            h.size
        );
    }
    if leaf.index != index {
        bail!(
            "{who} served entry {} where entry {index} belongs",
            leaf.index
        );
    }
    let Some(bytes) = &leaf.entry else {
        return Ok(());
    };
    if leaf_hash(bytes) != leaf.leaf_hash {
        bail!("entry {index} does not match its leaf hash: it was tampered with");
    }
    LogEntry::from_bytes(bytes).map_err(|e| {
        anyhow!("entry {index} is not a valid log entry ({e}): it was tampered with")
    })?;
    Ok(())
}

/// Checks every leaf's inclusion proof, as `source` serves it, against `h`.
async fn check_inclusion<S: LogSource>(
    source: &S,
    who: &str,
    h: &TreeHead,
    hashes: &[[u8; 32]],
) -> anyhow::Result<()> {
    for (index, hash) in hashes.iter().enumerate() {
        let proof = source.inclusion_proof(index as u64, h.size).await?;
        h.verify_inclusion(hash, index as u64, &proof)
            .map_err(|e| {
                anyhow!(
                    "the inclusion proof of entry {index} does not verify against the signed head \
                 ({e}): {who} serves proofs of another tree"
                )
            })?;
    }
    Ok(())
}

/// Reads the state file; `None` if there is none yet.
pub fn read_state<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the state file {} is not valid: restore it from a backup, or start a new one \
                 elsewhere (a new state file remembers nothing, so it cannot detect a rewrite)",
                path.display()
            )
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the state file {}", path.display())),
    }
}

/// Writes the state file: to a temporary file beside it, then renamed over it.
pub fn write_state<T: Serialize>(path: &Path, state: &T) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let bytes = serde_json::to_vec_pretty(state)?;
    std::fs::write(&tmp, bytes)
        .with_context(|| format!("cannot write the state file {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot write the state file {}", path.display()))?;
    Ok(())
}

/// A JSON client for one service, for `log verify`.
#[derive(Debug)]
pub struct Http {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    who: String,
    pinned: bool,
}

impl Http {
    /// A client for the service at `url`. With `ca` (a PEM file: the
    /// service's certificate or the CA that issued it) the URL must be
    /// `https://` and only that pin is trusted. `token` goes with every
    /// request as `Authorization: Bearer`.
    pub fn new(
        url: &str,
        ca: Option<&Path>,
        token: Option<String>,
        who: &str,
    ) -> anyhow::Result<Self> {
        let https = url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(ca) = ca {
            if !https {
                bail!(
                    "--ca pins a TLS certificate, but {url} is not an https:// URL: give the \
                     service's https:// address, or drop --ca"
                );
            }
            let tls = crate::tls::client_config(ca, None).with_context(|| {
                format!("cannot use {} as the pinned certificate", ca.display())
            })?;
            builder = builder.use_preconfigured_tls(tls).https_only(true);
        }
        Ok(Self {
            http: builder.build().context("cannot build the HTTP client")?,
            base: url.trim_end_matches('/').to_owned(),
            token,
            who: who.to_owned(),
            pinned: ca.is_some() || !https,
        })
    }

    /// `GET path`, its JSON answer as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let body = self.fetch(path, None).await?;
        serde_json::from_slice(&body)
            .with_context(|| format!("{}'s answer to {path} is not the expected JSON", self.who))
    }

    /// `GET path`, its answer's bytes (a text such as a signed note), at most
    /// `max` of them.
    pub async fn get_bytes(&self, path: &str, max: usize) -> anyhow::Result<Vec<u8>> {
        self.fetch(path, Some(max)).await
    }

    /// `GET path`: a success's body (at most `max` bytes when given), or a
    /// plain-words error naming the service, the status and the answer.
    async fn fetch(&self, path: &str, max: Option<usize>) -> anyhow::Result<Vec<u8>> {
        let who = &self.who;
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let hint = if self.pinned {
                    ""
                } else {
                    " (if its certificate is not from a CA this machine trusts, pin it or its CA \
                     with --ca FILE)"
                };
                return Err(
                    anyhow::Error::new(e).context(format!("cannot reach {who} at {url}{hint}"))
                );
            }
        };
        let status = resp.status();
        // Read chunk by chunk, so a bounded answer is cut off at its bound
        // rather than read whole first.
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("cannot read the answer of {url}"))?
        {
            body.extend_from_slice(&chunk);
            if let Some(max) = max
                && body.len() > max
            {
                bail!("{who}'s answer to {path} is larger than {max} bytes");
            }
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            bail!(
                "{who} answered {status} to {path}: {}",
                text.chars().take(300).collect::<String>()
            );
        }
        Ok(body)
    }
}

/// The `log verify` flags both services take alike: where the log is, the
/// state file, the pinned TLS certificate and the witnesses. Each service
/// flattens it into its own command (`#[command(flatten)]`) beside the flags
/// it names its own way (the log key, the token file).
#[derive(Clone, Debug, clap::Args)]
pub struct AuditArgs {
    /// The service's base URL.
    #[arg(long)]
    pub url: String,
    /// Where to keep the last verified head between runs: without it a
    /// rewritten history cannot be told from an honest one.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// For an `https://` URL: a PEM file with the service's TLS
    /// certificate or the CA that issued it, the only one trusted.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// A witness of the log, by its verifier key (a trustee's
    /// `witness_vkey`, `<name>+<key id>+<base64>`); repeat it for each.
    /// With any, `GET /v1/log/checkpoint` must carry `--quorum` of their
    /// cosignatures and lie on the signed head's history.
    #[arg(long = "witness", value_name = "VKEY")]
    pub witnesses: Vec<String>,
    /// How many of the `--witness`es must have cosigned (default: all).
    #[arg(long)]
    pub quorum: Option<usize>,
    /// The log's checkpoint origin, if the service sets `log_origin`
    /// (default: `sosvault.log/<log id hex>`).
    #[arg(long)]
    pub origin: Option<String>,
}

impl AuditArgs {
    /// The audit these flags ask for, with `log_public` (already parsed
    /// from the service's own flag) and the bearer `token` the caller read.
    ///
    /// # Errors
    ///
    /// A `--witness` that is not a verifier key or an `--origin` that is not
    /// a key name, named in words.
    pub fn into_audit(
        self,
        log_public: Option<LogPublic>,
        token: Option<String>,
    ) -> anyhow::Result<LogAudit> {
        let origin = self
            .origin
            .map(|o| {
                sosvault::checkpoint::KeyName::new(o.as_str())
                    .map_err(|e| anyhow!("--origin {o:?} is not a valid origin: {e:?}"))
            })
            .transpose()?;
        Ok(LogAudit {
            url: self.url,
            log_public,
            state: self.state,
            ca: self.ca,
            token,
            witnesses: WitnessOptions {
                witnesses: parse_witnesses(&self.witnesses)?,
                quorum: self.quorum,
                origin,
            },
        })
    }
}

/// A bearer token for `log verify`: the first line of `file` if given, else
/// the environment variable `env`, else none.
///
/// # Errors
///
/// The file cannot be read.
pub fn read_token(file: Option<&Path>, env: &str) -> anyhow::Result<Option<String>> {
    Ok(match file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the token file {}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var(env).ok(),
    })
}

/// Parses a pinned log key given as hex on the command line (`flag` names
/// it in the error).
///
/// # Errors
///
/// Not 64 hex digits of a log public key.
pub fn parse_log_public(hex: Option<&str>, flag: &str) -> anyhow::Result<Option<LogPublic>> {
    hex.map(|h| {
        LogPublic::from_hex(h.trim()).map_err(|_| {
            anyhow!("{flag} is not a log public key (64 hex digits: `log_public_key` in /v1/info)")
        })
    })
    .transpose()
}

/// Parses `--witness` verifier keys (`<name>+<key id>+<base64(0x04 || key)>`).
pub fn parse_witnesses(vkeys: &[String]) -> anyhow::Result<Vec<WitnessVerifier>> {
    vkeys
        .iter()
        .map(|v| {
            v.trim().parse::<WitnessVerifier>().map_err(|e| {
                anyhow!(
                    "--witness {v:?} is not a witness's verifier key (<name>+<key id>+<base64 of \
                     0x04 and the key>): {e}"
                )
            })
        })
        .collect()
}

/// What a witnessed check saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessReport {
    /// The witnessed checkpoint's size.
    pub size: u64,
    /// The trusted witnesses whose cosignature verified.
    pub cosigners: Vec<String>,
    /// How many were needed.
    pub quorum: usize,
    /// How many witnesses are trusted.
    pub trusted: usize,
    /// The size of the signed head it was checked against.
    pub head_size: u64,
}

/// What a successful `log verify` saw: the log, and its witnessed
/// checkpoint when witnesses were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The log's check.
    pub log: Report,
    /// The witnessed checkpoint's check.
    pub witnessed: Option<WitnessReport>,
}

impl Verified {
    /// The lines `log verify` prints on success.
    pub fn summary(&self) -> String {
        match &self.witnessed {
            Some(w) => format!("{}\n{}", self.log.summary(), w.summary()),
            None => self.log.summary(),
        }
    }
}

/// The policy of `log verify --witness ... --quorum K` for the log signing
/// with `log` under `origin` (by default `sosvault.log/<log id hex>`):
/// `None` without witnesses or quorum; the quorum is all the witnesses when
/// not given.
pub fn witness_policy(
    log: LogPublic,
    origin: Option<KeyName>,
    witnesses: &[WitnessVerifier],
    quorum: Option<usize>,
) -> anyhow::Result<Option<WitnessPolicy>> {
    if witnesses.is_empty() && quorum.is_none() {
        return Ok(None);
    }
    let origin = origin.unwrap_or_else(|| Checkpoint::default_origin(&log.log_id()));
    let quorum = quorum.unwrap_or(witnesses.len());
    WitnessPolicy::new(LogVerifier::new(origin, log), witnesses.to_vec(), quorum)
        .map(Some)
        .map_err(|e| anyhow!("--witness and --quorum: {e}"))
}

/// What an auditor asked of a log's witnesses (`--witness`, `--quorum`,
/// `--origin`).
#[derive(Clone, Debug, Default)]
pub struct WitnessOptions {
    /// The trusted witnesses.
    pub witnesses: Vec<WitnessVerifier>,
    /// How many must have cosigned (default: all).
    pub quorum: Option<usize>,
    /// The log's checkpoint origin (default: `sosvault.log/<log id hex>`).
    pub origin: Option<KeyName>,
}

/// What a state file remembers of a log: the key its heads verified under
/// and the last verified head.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditedHead {
    /// The log key (hex) the heads verified under.
    pub log_public_key: String,
    /// The last verified signed head, base64.
    pub head: String,
}

/// What an auditor gives both `log verify` commands: where the log is, what
/// they pin, their state file and their witnesses.
#[derive(Clone, Debug, Default)]
pub struct LogAudit {
    /// The service's base URL (`https://dispatch.example:8080`).
    pub url: String,
    /// The log's public key, if the auditor pins it (obtained out of band);
    /// otherwise the first run's is remembered in the state file.
    pub log_public: Option<LogPublic>,
    /// Where the last verified head is kept between runs.
    pub state: Option<PathBuf>,
    /// For an `https://` URL: a PEM file with the service's TLS certificate
    /// or the CA that issued it, the only one trusted.
    pub ca: Option<PathBuf>,
    /// A bearer token that lets the auditor read the entries' bytes too
    /// (without it, the leaf hashes only): an operator's session at the
    /// dispatch service, the auditor token at a trustee.
    pub token: Option<String>,
    /// The witnesses of the log the auditor trusts, the quorum and the log's
    /// origin. With witnesses, the served checkpoint must carry the quorum of
    /// their cosignatures and lie on the signed head's history.
    pub witnesses: WitnessOptions,
}

impl LogAudit {
    /// The client for the audited service; `who` names it in errors.
    pub fn http(&self, who: &str) -> anyhow::Result<Http> {
        Http::new(&self.url, self.ca.as_deref(), self.token.clone(), who)
    }

    /// The state file's content from the last run; `None` without a state
    /// file or before the first run.
    pub fn previous<T: DeserializeOwned>(&self) -> anyhow::Result<Option<T>> {
        Ok(match &self.state {
            Some(path) => read_state(path)?,
            None => None,
        })
    }

    /// Pins the log key the service serves ([`pin_log_key`]: against the
    /// pinned one and the state file's), then verifies the served head
    /// (base64) and all it stands for ([`verify_served`]) from the state
    /// file's head. `who` names the service and `pin_flag` the flag that pins
    /// its log key, in errors. Returns the state to save.
    pub async fn verify_log<S: LogSource>(
        &self,
        source: &S,
        (who, pin_flag): (&str, &str),
        (served_key, head): (&LogPublic, &str),
        previous: Option<&AuditedHead>,
    ) -> anyhow::Result<(AuditedHead, Verified)> {
        let names = Names {
            who,
            url: &self.url,
            pin_flag,
        };
        pin_log_key(
            served_key,
            self.log_public.as_ref(),
            previous.map(|p| p.log_public_key.as_str()),
            names,
        )?;
        let (head_bytes, verified) = verify_served(
            source,
            who,
            head,
            previous.map(|p| p.head.as_str()),
            served_key,
            &self.witnesses,
        )
        .await?;
        let state = AuditedHead {
            log_public_key: served_key.to_hex(),
            head: B64.encode(head_bytes),
        };
        Ok((state, verified))
    }

    /// Saves the new state, if the auditor keeps a state file.
    pub fn save<T: Serialize>(&self, state: &T) -> anyhow::Result<()> {
        match &self.state {
            Some(path) => write_state(path, state),
            None => Ok(()),
        }
    }
}

/// The whole check of `log verify` once the head is fetched and its key
/// pinned: [`check`] the served head (base64) against the state file's
/// (base64, if any), then, with witnesses, [`fetch_witnessed`]. Returns the
/// head's bytes, for the state file, and what was verified.
pub async fn verify_served<S: LogSource>(
    source: &S,
    who: &str,
    head: &str,
    previous: Option<&str>,
    log: &LogPublic,
    witnesses: &WitnessOptions,
) -> anyhow::Result<(Vec<u8>, Verified)> {
    let head_bytes = base64(who, "a head", head)?;
    let old_bytes = previous
        .map(|p| base64("the state file", "a head", p))
        .transpose()?;
    let policy = witness_policy(
        *log,
        witnesses.origin.clone(),
        &witnesses.witnesses,
        witnesses.quorum,
    )?;
    let (signed, report) = check(source, who, &head_bytes, log, old_bytes.as_deref()).await?;
    let witnessed = match &policy {
        Some(p) => Some(fetch_witnessed(source, who, p, signed.body()).await?),
        None => None,
    };
    Ok((
        head_bytes,
        Verified {
            log: report,
            witnessed,
        },
    ))
}

/// Fetches the service's `GET /v1/log/checkpoint` and checks it with
/// [`check_witnessed`] against `head`.
pub async fn fetch_witnessed<S: LogSource>(
    source: &S,
    who: &str,
    policy: &WitnessPolicy,
    head: &TreeHead,
) -> anyhow::Result<WitnessReport> {
    let note = source.checkpoint().await?;
    check_witnessed(source, who, &note, policy, head).await
}

impl WitnessReport {
    /// The line `log verify` prints for it.
    pub fn summary(&self) -> String {
        format!(
            "ok: checkpoint of {} entries cosigned by {} of {} trusted witnesses ({}; quorum {}), \
             on the same history as the signed head of {} entries",
            self.size,
            self.cosigners.len(),
            self.trusted,
            self.cosigners.join(", "),
            self.quorum,
            self.head_size
        )
    }
}

/// Checks a served checkpoint note against `policy` (the log's signature
/// under its pinned origin, and a quorum of distinct trusted witnesses'
/// cosignatures: [`WitnessPolicy::verify`]), then that it lies on the
/// history of `head`, a signed head already verified: the same size needs
/// the same root; otherwise the served consistency proof between the two
/// sizes must verify. A log showing its witnesses one history and its
/// auditors another fails here.
pub async fn check_witnessed<S: LogSource>(
    source: &S,
    who: &str,
    note: &[u8],
    policy: &WitnessPolicy,
    head: &TreeHead,
) -> anyhow::Result<WitnessReport> {
    let note = Note::parse(note)
        .map_err(|e| anyhow!("the checkpoint {who} served is not a signed note ({e})"))?;
    let witnessed = policy.verify(&note).map_err(|e| match e {
        CheckpointError::NoQuorum { have, need } => anyhow!(
            "the checkpoint {who} served carries {have} valid cosignatures of the trusted \
             witnesses, {need} needed: it is not witnessed (its witnesses have not cosigned it \
             yet, or were not asked)"
        ),
        e => anyhow!("the checkpoint {who} served is not acceptable: {e}"),
    })?;
    let cp = witnessed.checkpoint();
    let (small, big) = if cp.size <= head.size {
        ((cp.size, cp.root), (head.size, head.root))
    } else {
        ((head.size, head.root), (cp.size, cp.root))
    };
    if small.0 == big.0 {
        if small.1 != big.1 {
            bail!(
                "fork: the witnessed checkpoint and the signed head {who} served both have {} \
                 entries but different roots ({} and {}): its witnesses saw another history than \
                 this auditor",
                cp.size,
                hex::encode(cp.root),
                hex::encode(head.root)
            );
        }
    } else if small.0 == 0 {
        if small.1 != sosvault::log::empty_root() {
            bail!("a tree of 0 entries {who} signed does not have the empty tree's root");
        }
    } else {
        let proof = source.consistency_proof(small.0, big.0).await?;
        sosvault::log::verify_consistency(small.0, big.0, &small.1, &big.1, &proof).map_err(|e| {
            anyhow!(
                "the witnessed checkpoint of {} entries and the signed head of {} entries {who} \
                 served are not on one history ({e}): its witnesses saw another history than \
                 this auditor",
                cp.size,
                head.size
            )
        })?;
    }
    Ok(WitnessReport {
        size: cp.size,
        cosigners: witnessed
            .cosigners()
            .iter()
            .map(|c| c.name.to_string())
            .collect(),
        quorum: policy.quorum(),
        trusted: policy.witnesses().len(),
        head_size: head.size,
    })
}

/// One leaf as both services serve it in `GET /v1/log/entries` (extra fields,
/// such as a trustee's proofs in `/v1/log/mine`, are ignored).
#[derive(Deserialize)]
struct LeafWire {
    index: u64,
    leaf_hash: String,
    #[serde(default)]
    entry: Option<String>,
}

/// A page of `GET /v1/log/entries`.
#[derive(Deserialize)]
struct EntriesWire {
    entries: Vec<LeafWire>,
}

/// Leaves `[start, end)` from the `GET /v1/log/entries` route both services
/// serve, decoded: the shared body of [`LogSource::leaves`].
pub async fn fetch_leaves(
    http: &Http,
    who: &str,
    start: u64,
    end: u64,
) -> anyhow::Result<Vec<Leaf>> {
    let page: EntriesWire = http
        .get(&format!("/v1/log/entries?start={start}&end={end}"))
        .await?;
    page.entries
        .into_iter()
        .map(|l| {
            Ok(Leaf {
                index: l.index,
                leaf_hash: hash_base64(who, "a leaf hash", &l.leaf_hash)?,
                entry: l.entry.map(|e| base64(who, "an entry", &e)).transpose()?,
            })
        })
        .collect()
}

/// How a service writes the hashes of its proofs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashEncoding {
    /// Lower-case hex (the dispatch service).
    Hex,
    /// Standard base64 (a trustee).
    Base64,
}

/// The served witnessed checkpoint: the shared body of
/// [`LogSource::checkpoint`].
pub async fn fetch_checkpoint(http: &Http) -> anyhow::Result<Vec<u8>> {
    http.get_bytes("/v1/log/checkpoint", MAX_NOTE_BYTES).await
}

/// An answer that carries a proof.
#[derive(Deserialize)]
struct ProofWire {
    proof: Vec<String>,
}

/// The proof (`what`: "an inclusion proof") the service answers at `path`,
/// decoded.
pub async fn fetch_proof(
    http: &Http,
    who: &str,
    what: &str,
    path: &str,
    encoding: HashEncoding,
) -> anyhow::Result<Vec<[u8; 32]>> {
    let p: ProofWire = http.get(path).await?;
    match encoding {
        HashEncoding::Hex => hashes_hex(who, what, &p.proof),
        HashEncoding::Base64 => hashes_base64(who, what, &p.proof),
    }
}

/// Decodes a base64 field of an answer.
pub fn base64(who: &str, what: &str, s: &str) -> anyhow::Result<Vec<u8>> {
    B64.decode(s)
        .map_err(|_| anyhow!("{who} sent {what} that is not base64"))
}

/// Decodes a base64 hash.
pub fn hash_base64(who: &str, what: &str, s: &str) -> anyhow::Result<[u8; 32]> {
    base64(who, what, s)?
        .try_into()
        .map_err(|_| anyhow!("{who} sent {what} that is not 32 bytes"))
}

/// Decodes a list of base64 hashes (a proof).
pub fn hashes_base64(who: &str, what: &str, v: &[String]) -> anyhow::Result<Vec<[u8; 32]>> {
    v.iter().map(|h| hash_base64(who, what, h)).collect()
}

/// Decodes a list of hex hashes (a proof).
pub fn hashes_hex(who: &str, what: &str, v: &[String]) -> anyhow::Result<Vec<[u8; 32]>> {
    v.iter()
        .map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| anyhow!("{who} sent {what} with a hash that is not 32 bytes of hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::{
        Http, Leaf, LogSource, MerkleLog, Names, Path, check, check_witnessed, leaf_hash,
        pin_log_key, read_state, write_state,
    };

    use sosvault::Container as _;
    use sosvault::keys::LogKey;
    use sosvault::log::LogEntry;
    use sosvault::{IncidentId, StudentId, Timestamp};

    /// A log served from memory, with knobs for the lies a service may tell.
    struct Fake {
        tree: MerkleLog,
        entries: Vec<Vec<u8>>,
        with_entries: bool,
    }

    fn entry(i: u8) -> Vec<u8> {
        LogEntry::ProfileViewed {
            student: StudentId::from_bytes([i; 32]),
            incident: IncidentId::from_bytes([i; 16]),
            viewer: sosvault::log::Viewer::new(b"operator:asha".to_vec()).unwrap(),
            salt: Some([i; 16]),
            at: Timestamp(1_790_000_000 + u64::from(i)),
        }
        .to_bytes()
    }

    impl Fake {
        fn new(n: u8, with_entries: bool) -> Self {
            let entries: Vec<Vec<u8>> = (0..n).map(entry).collect();
            Self {
                tree: MerkleLog::from_leaf_hashes(entries.iter().map(|e| leaf_hash(e))),
                entries,
                with_entries,
            }
        }
    }

    impl LogSource for Fake {
        async fn consistency_proof(&self, old: u64, new: u64) -> anyhow::Result<Vec<[u8; 32]>> {
            Ok(self.tree.consistency_proof(old, new)?)
        }
        async fn leaves(&self, start: u64, end: u64) -> anyhow::Result<Vec<Leaf>> {
            // Pages of two, to walk the paging.
            Ok((start..end.min(start + 2))
                .map(|i| Leaf {
                    index: i,
                    leaf_hash: self.tree.leaf_hash(i).unwrap(),
                    entry: self.with_entries.then(|| self.entries[i as usize].clone()),
                })
                .collect())
        }
        async fn inclusion_proof(&self, index: u64, size: u64) -> anyhow::Result<Vec<[u8; 32]>> {
            Ok(self.tree.inclusion_proof(index, size)?)
        }
        async fn checkpoint(&self) -> anyhow::Result<Vec<u8>> {
            anyhow::bail!("this fake serves no checkpoint")
        }
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn head(f: &Fake, key: &LogKey) -> Vec<u8> {
        f.tree.sign_head(key, Timestamp(1)).as_bytes().to_vec()
    }

    #[test]
    fn an_honest_log_checks_and_a_grown_one_extends_it() {
        let key = LogKey::generate();
        let small = Fake::new(3, true);
        let first = head(&small, &key);
        let (_, r) = run(check(&small, "the service", &first, &key.public(), None)).unwrap();
        assert_eq!((r.size, r.previous_size, r.full_entries), (3, None, true));
        let big = Fake::new(7, false);
        let (_, r) = run(check(
            &big,
            "the service",
            &head(&big, &key),
            &key.public(),
            Some(&first),
        ))
        .unwrap();
        assert_eq!(
            (r.size, r.previous_size, r.full_entries),
            (7, Some(3), false)
        );
        assert!(
            r.summary()
                .contains("consistent with the head of 3 entries")
        );
    }

    #[test]
    fn every_lie_is_named() {
        let key = LogKey::generate();
        let honest = Fake::new(5, true);
        let seen = head(&honest, &key);
        let err = |f: &Fake, h: &[u8], prev: Option<&[u8]>| {
            run(check(f, "the service", h, &key.public(), prev))
                .unwrap_err()
                .to_string()
        };
        // Another key signed the head.
        let other = LogKey::generate();
        assert!(err(&honest, &head(&honest, &other), None).contains("does not verify"));
        // Shrunk, forked, rewritten.
        let shrunk = Fake::new(4, true);
        assert!(err(&shrunk, &head(&shrunk, &key), Some(&seen)).contains("the log shrank"));
        let mut forked = Fake::new(5, true);
        forked.entries[0] = entry(99);
        forked.tree = MerkleLog::from_leaf_hashes(forked.entries.iter().map(|e| leaf_hash(e)));
        assert!(err(&forked, &head(&forked, &key), Some(&seen)).contains("fork"));
        let mut rewritten = Fake::new(6, true);
        rewritten.entries[0] = entry(99);
        rewritten.tree =
            MerkleLog::from_leaf_hashes(rewritten.entries.iter().map(|e| leaf_hash(e)));
        assert!(err(&rewritten, &head(&rewritten, &key), Some(&seen)).contains("does not extend"));
        // An entry that is not the one hashed into the tree.
        let mut tampered = Fake::new(5, true);
        tampered.entries[2] = entry(42);
        assert!(
            err(&tampered, &head(&tampered, &key), None)
                .contains("entry 2 does not match its leaf hash")
        );
        // Leaves that do not make the signed root.
        let liar = Fake::new(5, true);
        let mut other_tree = Fake::new(5, true);
        other_tree.entries[4] = entry(77);
        other_tree.tree =
            MerkleLog::from_leaf_hashes(other_tree.entries.iter().map(|e| leaf_hash(e)));
        assert!(err(&liar, &head(&other_tree, &key), None).contains("do not add up"));
    }

    #[test]
    fn a_witnessed_checkpoint_must_have_its_quorum_and_lie_on_the_heads_history() {
        use sosvault::checkpoint::{Checkpoint, KeyName, LogVerifier, Witness, WitnessPolicy};

        let key = LogKey::generate();
        let log = LogVerifier::for_key(key.public());
        let witnesses: Vec<Witness> = ["a.example/w", "b.example/w"]
            .iter()
            .map(|n| Witness::new(KeyName::new(*n).unwrap(), LogKey::generate()))
            .collect();
        let policy = WitnessPolicy::new(
            log.clone(),
            witnesses.iter().map(Witness::verifier).collect(),
            2,
        )
        .unwrap();
        // A checkpoint of `f`'s first `size` leaves, cosigned by `by` witnesses.
        let note = |f: &Fake, size: u64, by: usize| {
            let cp = Checkpoint {
                origin: log.name().clone(),
                size,
                root: f.tree.root_at(size).unwrap(),
            };
            let lines = witnesses[..by].iter().map(|w| w.cosign(&cp, Timestamp(7)));
            cp.sign(&key)
                .with_signatures(lines)
                .unwrap()
                .to_text()
                .into_bytes()
        };
        let honest = Fake::new(6, false);
        let head = *honest.tree.sign_head(&key, Timestamp(1)).body();
        let go = |f: &Fake, n: &[u8]| run(check_witnessed(f, "the service", n, &policy, &head));
        // The same size as the head, an older one, a newer one than the head.
        for size in [6, 4, 1] {
            let r = go(&honest, &note(&honest, size, 2)).unwrap();
            assert_eq!((r.size, r.cosigners.len(), r.head_size), (size, 2, 6));
        }
        let bigger = Fake::new(9, false);
        assert_eq!(go(&bigger, &note(&bigger, 9, 2)).unwrap().size, 9);
        assert!(
            go(&honest, &note(&honest, 4, 2))
                .unwrap()
                .summary()
                .contains("cosigned by 2 of 2 trusted witnesses")
        );
        // One cosignature of two needed.
        let e = go(&honest, &note(&honest, 6, 1)).unwrap_err().to_string();
        assert!(e.contains("1 valid cosignatures"), "{e}");
        // The witnesses saw another history: same size, another root; and an
        // older size whose root is not on the head's history.
        let mut other = Fake::new(6, false);
        other.entries[0] = entry(99);
        other.tree = MerkleLog::from_leaf_hashes(other.entries.iter().map(|e| leaf_hash(e)));
        let e = go(&honest, &note(&other, 6, 2)).unwrap_err().to_string();
        assert!(e.starts_with("fork"), "{e}");
        let e = go(&honest, &note(&other, 4, 2)).unwrap_err().to_string();
        assert!(e.contains("not on one history"), "{e}");
        // Not a note at all.
        assert!(go(&honest, b"junk").is_err());
    }

    #[test]
    fn a_replaced_or_unpinned_key_is_refused() {
        let names = Names {
            who: "the service",
            url: "http://x",
            pin_flag: "--log-public",
        };
        let (a, b) = (LogKey::generate().public(), LogKey::generate().public());
        assert!(pin_log_key(&a, Some(&a), Some(&a.to_hex()), names).is_ok());
        assert!(pin_log_key(&a, None, None, names).is_ok());
        let e = pin_log_key(&a, Some(&b), None, names).unwrap_err();
        assert!(
            e.to_string()
                .contains("another key than the one pinned with --log-public")
        );
        let e = pin_log_key(&a, None, Some(&b.to_hex()), names).unwrap_err();
        assert!(
            e.to_string()
                .contains("log key changed since the last check")
        );
    }

    #[test]
    fn the_state_file_round_trips_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.json");
        assert!(read_state::<Vec<u8>>(&path).unwrap().is_none());
        write_state(&path, &vec![1u8, 2]).unwrap();
        assert_eq!(read_state::<Vec<u8>>(&path).unwrap(), Some(vec![1, 2]));
        std::fs::write(&path, b"{").unwrap();
        let e = read_state::<Vec<u8>>(&path).unwrap_err();
        assert!(format!("{e:#}").contains("is not valid"));
    }

    #[test]
    fn a_pin_needs_https() {
        let e = Http::new("http://127.0.0.1:1", Some(Path::new("ca.pem")), None, "x").unwrap_err();
        assert!(e.to_string().contains("not an https:// URL"));
    }
}
