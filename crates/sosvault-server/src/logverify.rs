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

use anyhow::anyhow;
use sosvault::LogPublic;
pub use sosvault_service::logverify::Verified;
pub use sosvault_service::logverify::WitnessOptions;
use sosvault_service::logverify::{
    AuditedHead, HashEncoding, Http, Leaf, LogSource, fetch_checkpoint, fetch_leaves, fetch_proof,
    hashes_hex,
};

use crate::api::{LogConsistencyBody, LogHeadBody};

const WHO: &str = "the dispatch service";

/// What `log verify` is given: the service's URL, the auditor's pins, state
/// file, operator token and witnesses.
pub use sosvault_service::logverify::LogAudit as VerifyOptions;

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
        fetch_leaves(&self.0, WHO, start, end).await
    }

    async fn inclusion_proof(&self, index: u64, size: u64) -> anyhow::Result<Vec<[u8; 32]>> {
        let path = format!("/v1/log/proof?index={index}&size={size}");
        fetch_proof(&self.0, WHO, "an inclusion proof", &path, HashEncoding::Hex).await
    }

    async fn checkpoint(&self) -> anyhow::Result<Vec<u8>> {
        fetch_checkpoint(&self.0).await
    }
}

/// Runs the whole check; `Err` carries a plain-words reason.
pub async fn verify(opts: &VerifyOptions) -> anyhow::Result<Verified> {
    let http = opts.http(WHO)?;
    let head: LogHeadBody = http.get("/v1/log/head").await?;
    let log_public = LogPublic::from_hex(&head.log_public_key)
        .map_err(|_| anyhow!("the log key {WHO} names in /v1/log/head is not a log key"))?;
    let previous: Option<AuditedHead> = opts.previous()?;
    let source = Dispatch(http);
    let (pin, served) = ((WHO, "--log-public"), (&log_public, head.head.as_str()));
    let remembered = previous.as_ref();
    let (state, verified) = opts.verify_log(&source, pin, served, remembered).await?;
    opts.save(&state)?;
    Ok(verified)
}
