//! Witnessed checkpoints: a log's head as a C2SP checkpoint, signed as a
//! C2SP signed note, cosigned by witnesses, and the witness's own decision.
//!
//! A log that holds its own signing key can sign any history it likes, and
//! show one history to one auditor and another to the next (a *split
//! view*). [`log`](crate::log)'s consistency proofs catch a log that
//! rewrites what *one* auditor saw; they cannot catch two auditors being
//! shown two histories if those auditors never compare notes. Witnesses
//! compare notes for them: a witness cosigns a head only after checking it
//! is consistent with the last head it cosigned for that log, so as long as
//! fewer than `quorum` witnesses misbehave, two heads that each carry
//! `quorum` cosignatures lie on one history.
//!
//! The formats are the C2SP ones, so any C2SP client or witness can read
//! ours:
//!
//! - [`Checkpoint`]: `c2sp.org/tlog-checkpoint`, the note text
//!   `<origin>\n<size>\n<base64 root>\n`;
//! - [`Note`], [`NoteSignature`], [`LogVerifier`]: `c2sp.org/signed-note`
//!   with Ed25519 signatures (type `0x01`), the log's key name being the
//!   checkpoint's origin, and verifier keys (`vkey`s,
//!   `<name>+<hex key id>+<base64(type || key)>`);
//! - [`Witness`], [`WitnessVerifier`]: `c2sp.org/tlog-cosignature`,
//!   `cosignature/v1` (Ed25519, type `0x04`);
//! - [`AddCheckpoint`], [`decide`]: the `add-checkpoint` call of
//!   `c2sp.org/tlog-witness`, its request body and the witness's decision as
//!   a pure function of (stored state, request, now);
//! - [`WitnessPolicy`]: what a client checks: the log's signature and at
//!   least `quorum` valid cosignatures from distinct witnesses it trusts,
//!   giving a [`WitnessedCheckpoint`].
//!
//! `docs/PROTOCOL.md`, "Witnessed checkpoints", is the normative text, with
//! test vectors (checked by this module's `the_protocol_document_holds_these_vectors`).
//!
//! ```
//! use sosvault::checkpoint::{Checkpoint, Witness, WitnessPolicy, AddCheckpoint, decide,
//!     CheckedAddCheckpoint, LogVerifier, KeyName};
//! use sosvault::log::{LogEntry, MerkleLog};
//! use sosvault::{DeviceKey, Timestamp, TrusteeKey};
//!
//! let now = Timestamp(1_790_000_000);
//! let trustee = TrusteeKey::generate();
//! let log_key = trustee.log_key();
//! let student = DeviceKey::generate().student_id();
//! let mut log = MerkleLog::new();
//! log.append(&LogEntry::ShareAccepted { student, epoch: 1, share_index: 1, at: now });
//!
//! // The log publishes its head as a signed checkpoint.
//! let verifier = LogVerifier::for_key(log_key.public());
//! let head = log.head(log_key.log_id(), now);
//! let note = Checkpoint::of_head(verifier.name().clone(), &head).sign(&log_key);
//!
//! // Another trustee, as a witness, cosigns it (it saw nothing of this log before).
//! let witness = Witness::new(KeyName::new("witness.example/w1")?, TrusteeKey::generate().log_key());
//! let request = AddCheckpoint { old_size: 0, proof: Vec::new(), note: note.clone() };
//! let checked = CheckedAddCheckpoint::check(request, |origin| {
//!     (origin == verifier.name().as_str()).then_some(&verifier)
//! })?;
//! let cosigned = decide(None, &checked, &witness, now)?;
//! assert_eq!(cosigned.state.size, 1);
//!
//! // A client that trusts that witness, with a quorum of one, accepts the head.
//! let policy = WitnessPolicy::new(verifier.clone(), vec![witness.verifier()], 1)?;
//! let witnessed = policy.verify(&note.with_signatures([cosigned.cosignature])?)?;
//! assert_eq!(witnessed.checkpoint().root, log.root());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Why hand-written, not the `signed_note` crate
//!
//! Cloudflare's azul project publishes `signed_note` 0.2.0 on crates.io (its
//! `tlog_cosignature` and `tlog_witness` crates are not published, so
//! cosignatures and the witness would be ours anyway). It does not fit, read
//! in its source: it verifies Ed25519 with `verify`, not `verify_strict`
//! (this crate refuses weak keys and malleable signatures everywhere); its
//! bounds (1 MB, 100 signatures) are far above what a checkpoint needs; it
//! would bring a second `base64` (0.21) and `thiserror` (1); and its
//! repository has since moved to ed25519-dalek 3 and sha2 0.11, so its next
//! release would bring a second ed25519 major beside ours. The formats are
//! small (about 300 lines here), and the tests check them against the
//! specifications' own vectors (the signed-note example, the Go reference's
//! `PeterNeumann` note, transparency-dev's cosignature key and timestamp).
//!
//! ## One key, two roles
//!
//! A trustee signs its own log's checkpoints and cosigns other logs'
//! checkpoints with the same [`LogKey`]. The two never mix: a checkpoint
//! signature is signature type `0x01` and a cosignature type `0x04`, so they
//! have different key IDs (C2SP computes the ID over the type byte) and
//! different verifier keys, and the signed messages are disjoint: a
//! cosignature signs `cosignature/v1\ntime <t>\n` followed by the
//! checkpoint, whose second line is `time ...`, never a decimal tree size as
//! in a checkpoint; and a signed tree head (`sosvault/tree-head/v1`) starts
//! with a length byte below 0x20, a control character no note may contain.

use core::fmt;
use core::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::ids::Timestamp;
use crate::keys::{LogKey, LogPublic, SignerKey};
use crate::log::{LogId, TreeHead, empty_root, verify_consistency};

/// The longest key name (and so origin) accepted, in bytes.
pub const MAX_KEY_NAME_BYTES: usize = 256;
/// The largest signed note accepted, in bytes (text, blank line, signatures).
pub const MAX_NOTE_BYTES: usize = 16 * 1024;
/// The most signature lines a note may carry (signed-note: at least 16
/// must be accepted).
pub const MAX_SIGNATURES: usize = 32;
/// The longest signature in a line, in bytes, its key ID included: room for
/// an ML-DSA-44 cosignature (4 + 8 + 2420) from a witness we do not know.
pub const MAX_SIGNATURE_BYTES: usize = 4096;
/// The most consistency proof lines in an `add-checkpoint` request
/// (tlog-witness: a client MUST NOT send more than 63).
pub const MAX_PROOF_LINES: usize = 63;
/// The largest `add-checkpoint` request body: the old size line, every
/// proof line, the blank line and the largest note.
pub const MAX_REQUEST_BYTES: usize = 4 + 20 + 1 + MAX_PROOF_LINES * 45 + 1 + MAX_NOTE_BYTES;
/// Signature type of a note signature by a log (Ed25519, signed-note).
pub const SIG_ED25519: u8 = 0x01;
/// Signature type of a witness's cosignature (tlog-cosignature, Ed25519).
pub const SIG_COSIGNATURE_V1: u8 = 0x04;
/// The first line of the message a cosignature signs.
pub const COSIGNATURE_HEADER: &str = "cosignature/v1";
/// The prefix of the default origin of a sosvault log: `sosvault.log/<log id hex>`.
pub const DEFAULT_ORIGIN_PREFIX: &str = "sosvault.log/";
/// The prefix of the default witness name of a trustee:
/// `sosvault.witness/<log id hex>` (its witness key is its log key).
pub const DEFAULT_WITNESS_PREFIX: &str = "sosvault.witness/";

/// Every signature line starts with an em dash (U+2014) and a space.
const LINE_PREFIX: &str = "\u{2014} ";
/// A base64 hash line: 32 bytes are 44 characters.
const HASH_B64_LEN: usize = 44;

// ------------------------------------------------------------------ errors

/// Why a note, a checkpoint, a verifier key or a witness request did not parse.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NoteError {
    /// Larger than its limit.
    #[error("larger than its limit of {0} bytes")]
    TooLarge(usize),
    /// Not UTF-8, or holds a control character other than newline.
    #[error("not UTF-8 text without control characters")]
    NotText,
    /// No blank line before the signatures, or the note does not end in a newline.
    #[error("no blank line before the signatures, or no final newline")]
    NoSignatureBlock,
    /// No signature line, or more than [`MAX_SIGNATURES`].
    #[error("no signature, or more than {MAX_SIGNATURES}")]
    SignatureCount,
    /// A signature line is not `— <name> <base64>`.
    #[error("a signature line is malformed")]
    BadSignatureLine,
    /// A key name is empty, too long, or holds a space, a plus or a control character.
    #[error("a key name is empty, too long, or holds a space, a plus or a control character")]
    BadKeyName,
    /// The note text is not a checkpoint of exactly three lines.
    #[error("the text is not a checkpoint (origin, size, root: three lines, nothing else)")]
    NotCheckpoint,
    /// A size is not a decimal without leading zeros, or is above 2^63 - 1.
    #[error("a size is not a canonical decimal of at most 2^63 - 1")]
    BadSize,
    /// A hash is not the canonical base64 of 32 bytes.
    #[error("a hash is not the canonical base64 of 32 bytes")]
    BadHash,
    /// A verifier key is not `<name>+<8 hex>+<base64>` of the expected type, or
    /// its key ID is not the one its name and key give.
    #[error("not a verifier key of the expected type, or its key ID does not match")]
    BadVerifierKey,
    /// An `add-checkpoint` body is not `old <N>`, proof lines, a blank line and a note.
    #[error("not an add-checkpoint request (old size, proof lines, blank line, checkpoint)")]
    BadRequest,
}

/// Why a checkpoint was not accepted: its log's signature, or its witnesses'.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The note or its text does not parse.
    #[error("malformed checkpoint: {0}")]
    Malformed(NoteError),
    /// The checkpoint's origin is not the name the log's key is pinned under.
    #[error("the checkpoint names another origin than the pinned log's")]
    WrongOrigin,
    /// No signature line from the log's key.
    #[error("the checkpoint carries no signature from the log's key")]
    NotSigned,
    /// A signature line from the log's key does not verify (the note was
    /// edited after signing, or signed by another key).
    #[error("a signature from the log's key does not verify")]
    BadSignature,
    /// A cosignature line from a trusted witness does not verify.
    #[error("a cosignature from the trusted witness {0} does not verify")]
    BadCosignature(String),
    /// Fewer valid cosignatures from distinct trusted witnesses than the quorum.
    #[error("{have} valid cosignatures from distinct trusted witnesses, {need} needed")]
    NoQuorum {
        /// Distinct trusted witnesses whose cosignature verified.
        have: usize,
        /// The quorum.
        need: usize,
    },
    /// A signed head does not extend the witnessed checkpoint: another log,
    /// a smaller tree, another root at the same size, or a consistency
    /// proof that does not verify. The log showed its witnesses one history
    /// and this reader another.
    #[error("the signed head does not extend the witnessed checkpoint: {0}")]
    NotOnHistory(&'static str),
}

/// Why a [`WitnessPolicy`] cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The quorum is zero, or larger than the number of witnesses.
    #[error("the quorum must be between 1 and the number of witnesses ({0})")]
    Quorum(usize),
    /// Two witnesses share a key or a name: one key would count twice.
    #[error("two witnesses share a key or a name")]
    DuplicateWitness,
    /// A witness holds the log's own key: a log cannot witness itself.
    #[error("a witness holds the log's own key")]
    LogIsWitness,
}

// ------------------------------------------------------------------ names and key IDs

/// A signed-note key name, which is also a checkpoint's origin: non-empty,
/// at most [`MAX_KEY_NAME_BYTES`], no Unicode space, no plus, no control
/// character. (tlog-checkpoint only *recommends* that of an origin; a
/// sosvault log signs under its origin as key name, so it must be one.)
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName(String);

impl KeyName {
    /// Checks `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, NoteError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= MAX_KEY_NAME_BYTES
            && !name
                .chars()
                .any(|c| c.is_whitespace() || c == '+' || c.is_control());
        if ok {
            Ok(Self(name))
        } else {
            Err(NoteError::BadKeyName)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyName({:?})", self.0)
    }
}

/// A key ID as signed-note recommends it (and tlog-cosignature requires it):
/// the first four bytes, big-endian, of `SHA-256(name || 0x0A || type || key)`.
pub fn key_id(name: &str, sig_type: u8, key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([sig_type]);
    h.update(key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Formats a verifier key: `<name>+<hex key id>+<base64(type || key)>`.
fn format_vkey(name: &KeyName, sig_type: u8, key: &LogPublic) -> String {
    let mut material = Vec::with_capacity(33);
    material.push(sig_type);
    material.extend_from_slice(&key.to_bytes());
    format!(
        "{name}+{:08x}+{}",
        key_id(name.as_str(), sig_type, &key.to_bytes()),
        B64.encode(material)
    )
}

/// Parses a verifier key of signature type `sig_type`: the name, the key ID
/// (eight lower-case hex digits, which must be the one the name and key
/// give) and an Ed25519 key that is not weak.
fn parse_vkey(s: &str, sig_type: u8) -> Result<(KeyName, LogPublic), NoteError> {
    let bad = NoteError::BadVerifierKey;
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id), Some(material)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad);
    };
    let name = KeyName::new(name).map_err(|_| bad.clone())?;
    if id.len() != 8
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad);
    }
    let id = u32::from_str_radix(id, 16).map_err(|_| bad.clone())?;
    let material = decode_canonical(material).ok_or(bad.clone())?;
    let (&ty, key) = material.split_first().ok_or(bad.clone())?;
    let key: [u8; 32] = key.try_into().map_err(|_| bad.clone())?;
    if ty != sig_type || id != key_id(name.as_str(), sig_type, &key) {
        return Err(bad);
    }
    let key = LogPublic::from_bytes(&key).map_err(|_| bad)?;
    Ok((name, key))
}

/// Standard padded base64, canonical only (re-encoding gives the same text).
fn decode_canonical(s: &str) -> Option<Vec<u8>> {
    let bytes = B64.decode(s).ok()?;
    (B64.encode(&bytes) == s).then_some(bytes)
}

/// A size line: ASCII decimal, no leading zero (but `0`), at most 2^63 - 1
/// (every size a sosvault store can hold; tlog-witness implementations use
/// signed 64-bit sizes too).
fn parse_size(s: &str) -> Result<u64, NoteError> {
    let canonical = !s.is_empty()
        && s.len() <= 19
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if !canonical {
        return Err(NoteError::BadSize);
    }
    let n: u64 = s.parse().map_err(|_| NoteError::BadSize)?;
    if i64::try_from(n).is_err() {
        return Err(NoteError::BadSize);
    }
    Ok(n)
}

fn parse_hash(s: &str) -> Result<[u8; 32], NoteError> {
    if s.len() != HASH_B64_LEN {
        return Err(NoteError::BadHash);
    }
    decode_canonical(s)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or(NoteError::BadHash)
}

// ------------------------------------------------------------------ checkpoints

/// A log's head as a C2SP checkpoint (`c2sp.org/tlog-checkpoint`): its
/// origin, its size and its RFC 6962 root.
///
/// The note text is exactly `<origin>\n<size>\n<base64 root>\n`. We never
/// write extension lines and refuse them when parsing (the specification
/// makes them optional and recommends against them: witnesses cannot audit
/// them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, and the key name its signature is under.
    pub origin: KeyName,
    /// The number of leaves.
    pub size: u64,
    /// The RFC 6962 root of those leaves.
    pub root: [u8; 32],
}

impl Checkpoint {
    /// The checkpoint of a sosvault tree head: the same size and root.
    pub fn of_head(origin: KeyName, head: &TreeHead) -> Self {
        Self {
            origin,
            size: head.size,
            root: head.root,
        }
    }

    /// The origin a sosvault log has unless its owner configures another:
    /// `sosvault.log/<log id hex>` (the log id is a hash of its key, so the
    /// default names exactly one log).
    pub fn default_origin(log: &LogId) -> KeyName {
        KeyName(format!("{DEFAULT_ORIGIN_PREFIX}{}", log.to_hex()))
    }

    /// The note text: `<origin>\n<size>\n<base64 root>\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a note text that must be exactly a checkpoint body.
    pub fn parse_body(text: &str) -> Result<Self, NoteError> {
        let lines = text.strip_suffix('\n').ok_or(NoteError::NotCheckpoint)?;
        let mut it = lines.split('\n');
        let (Some(origin), Some(size), Some(root), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(NoteError::NotCheckpoint);
        };
        Ok(Self {
            origin: KeyName::new(origin)?,
            size: parse_size(size)?,
            root: parse_hash(root)?,
        })
    }

    /// Signs the checkpoint with the log's key: a note whose one signature
    /// is an Ed25519 note signature under the key name `origin`.
    pub fn sign(&self, key: &LogKey) -> Note {
        let text = self.body();
        let signature = key.signing_key().sign(text.as_bytes()).to_bytes().to_vec();
        let line = NoteSignature {
            key_id: key_id(self.origin.as_str(), SIG_ED25519, &key.public().to_bytes()),
            name: self.origin.clone(),
            signature,
        };
        Note {
            text,
            signatures: vec![line],
        }
    }
}

// ------------------------------------------------------------------ notes

/// One signature line of a note: `— <key name> base64(key ID || signature)`.
/// Parsed, not verified.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NoteSignature {
    name: KeyName,
    key_id: u32,
    signature: Vec<u8>,
}

impl fmt::Debug for NoteSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSignature({} {:08x})", self.name, self.key_id)
    }
}

impl NoteSignature {
    /// Parses one line (without its newline).
    pub fn parse_line(line: &str) -> Result<Self, NoteError> {
        let rest = line
            .strip_prefix(LINE_PREFIX)
            .ok_or(NoteError::BadSignatureLine)?;
        let (name, b64) = rest.split_once(' ').ok_or(NoteError::BadSignatureLine)?;
        let name = KeyName::new(name)?;
        if b64.len() > MAX_SIGNATURE_BYTES.div_ceil(3) * 4 {
            return Err(NoteError::BadSignatureLine);
        }
        let bytes = decode_canonical(b64).ok_or(NoteError::BadSignatureLine)?;
        if bytes.len() < 5 || bytes.len() > MAX_SIGNATURE_BYTES {
            return Err(NoteError::BadSignatureLine);
        }
        let (id, signature) = bytes.split_at(4);
        Ok(Self {
            name,
            key_id: u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
            signature: signature.to_vec(),
        })
    }

    /// The line, with its final newline.
    pub fn to_line(&self) -> String {
        let mut bytes = Vec::with_capacity(4 + self.signature.len());
        bytes.extend_from_slice(&self.key_id.to_be_bytes());
        bytes.extend_from_slice(&self.signature);
        format!("{LINE_PREFIX}{} {}\n", self.name, B64.encode(bytes))
    }

    /// The signer's key name.
    pub fn name(&self) -> &KeyName {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature bytes after the key ID.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// A signed note (`c2sp.org/signed-note`): a text and one or more signature
/// lines, none of them verified yet. At most [`MAX_NOTE_BYTES`] and
/// [`MAX_SIGNATURES`] lines; parsing and formatting are exact inverses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.bytes().any(|b| b < 0x20 && b != b'\n') {
        return Err(NoteError::NotText);
    }
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::NoSignatureBlock);
    }
    Ok(())
}

impl Note {
    /// A note of `text` (non-empty, ending in a newline, no control
    /// character but newline) with `signatures` (at least one).
    pub fn new(text: String, signatures: Vec<NoteSignature>) -> Result<Self, NoteError> {
        check_text(&text)?;
        if signatures.is_empty() || signatures.len() > MAX_SIGNATURES {
            return Err(NoteError::SignatureCount);
        }
        let note = Self { text, signatures };
        if note.encoded_len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge(MAX_NOTE_BYTES));
        }
        Ok(note)
    }

    /// Parses a note strictly: UTF-8, no control character but newline, the
    /// text separated from the signature lines by the last blank line, every
    /// line well formed, the whole within the limits.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge(MAX_NOTE_BYTES));
        }
        let s = core::str::from_utf8(bytes).map_err(|_| NoteError::NotText)?;
        if s.bytes().any(|b| b < 0x20 && b != b'\n') {
            return Err(NoteError::NotText);
        }
        let split = s.rfind("\n\n").ok_or(NoteError::NoSignatureBlock)?;
        let (text, sigs) = (&s[..=split], &s[split + 2..]);
        let sigs = sigs.strip_suffix('\n').ok_or(NoteError::NoSignatureBlock)?;
        let signatures = sigs
            .split('\n')
            .take(MAX_SIGNATURES + 1)
            .map(NoteSignature::parse_line)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(text.to_owned(), signatures)
    }

    /// The note as it travels: the text, a blank line, the signature lines.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(self.encoded_len());
        out.push_str(&self.text);
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.to_line());
        }
        out
    }

    fn encoded_len(&self) -> usize {
        self.text.len()
            + 1
            + self
                .signatures
                .iter()
                .map(|s| {
                    LINE_PREFIX.len() + s.name.0.len() + 2 + (4 + s.signature.len()).div_ceil(3) * 4
                })
                .sum::<usize>()
    }

    /// The signed text (with its final newline, without the blank line).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// This note with `more` signature lines after its own (a line already
    /// present is not added twice), within the limits.
    pub fn with_signatures(
        &self,
        more: impl IntoIterator<Item = NoteSignature>,
    ) -> Result<Self, NoteError> {
        let mut signatures = self.signatures.clone();
        for s in more {
            if !signatures.contains(&s) {
                signatures.push(s);
            }
        }
        Self::new(self.text.clone(), signatures)
    }
}

// ------------------------------------------------------------------ verifiers

/// A verifier key type: a name and an Ed25519 key under one signature type,
/// printed and parsed as `<name>+<hex key id>+<base64(type || key)>`.
macro_rules! verifier_key {
    ($(#[$doc:meta])* $ty:ident, $sig_type:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $ty {
            name: KeyName,
            key: LogPublic,
        }

        impl $ty {
            #[doc = concat!("The ", $what, " `name` with key `key`.")]
            pub fn new(name: KeyName, key: LogPublic) -> Self {
                Self { name, key }
            }

            #[doc = concat!("The ", $what, "'s name.")]
            pub fn name(&self) -> &KeyName {
                &self.name
            }

            #[doc = concat!("The ", $what, "'s key.")]
            pub fn public(&self) -> &LogPublic {
                &self.key
            }

            /// The key ID of its signatures: over its name, the signature
            /// type and the key.
            pub fn key_id(&self) -> u32 {
                key_id(self.name.as_str(), $sig_type, &self.key.to_bytes())
            }

            /// Whether `s` names this key (its name and key ID).
            pub fn matches(&self, s: &NoteSignature) -> bool {
                s.name == self.name && s.key_id == self.key_id()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&format_vkey(&self.name, $sig_type, &self.key))
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "({})"), self)
            }
        }

        impl FromStr for $ty {
            type Err = NoteError;

            /// Parses its verifier key; refuses another signature type, a
            /// key ID that is not the one the name and key give, a weak key.
            fn from_str(s: &str) -> Result<Self, NoteError> {
                parse_vkey(s, $sig_type).map(|(name, key)| Self { name, key })
            }
        }
    };
}

verifier_key!(
    /// What a client pins to check a log's checkpoints: the log's origin (its
    /// key name) and its Ed25519 key, the signed-note signature type `0x01`.
    /// Printed and parsed as a verifier key (`vkey`).
    LogVerifier,
    SIG_ED25519,
    "log"
);

impl LogVerifier {
    /// The verifier of a sosvault log under its default origin
    /// ([`Checkpoint::default_origin`]).
    pub fn for_key(key: LogPublic) -> Self {
        Self::new(Checkpoint::default_origin(&key.log_id()), key)
    }

    fn verifies(&self, text: &str, s: &NoteSignature) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(s.signature.as_slice()) else {
            return false;
        };
        self.key
            .verifying_key()
            .verify_strict(text.as_bytes(), &Signature::from_bytes(&sig))
            .is_ok()
    }
}

verifier_key!(
    /// What a client pins to check one witness's cosignatures: the witness's
    /// name and Ed25519 key, `cosignature/v1` (signature type `0x04`). Printed
    /// and parsed as a verifier key (`vkey`).
    ///
    /// A sosvault trustee's witness key is its [`LogKey`] (see the module's
    /// "One key, two roles": the type byte gives it another key ID and verifier
    /// key, and the messages cannot be confused).
    WitnessVerifier,
    SIG_COSIGNATURE_V1,
    "witness"
);

impl WitnessVerifier {
    /// Verifies `s` as this witness's cosignature of the checkpoint text
    /// `text`; its timestamp if it verifies.
    pub fn verify(&self, text: &str, s: &NoteSignature) -> Option<u64> {
        if !self.matches(s) {
            return None;
        }
        let (time, sig) = s.signature.split_first_chunk::<8>()?;
        let sig = <[u8; 64]>::try_from(sig).ok()?;
        let time = u64::from_be_bytes(*time);
        i64::try_from(time).ok()?;
        self.key
            .verifying_key()
            .verify_strict(
                cosigned_message(time, text).as_bytes(),
                &Signature::from_bytes(&sig),
            )
            .ok()?;
        Some(time)
    }
}

/// The message a `cosignature/v1` signs: `cosignature/v1\ntime <t>\n` and
/// the checkpoint's whole note text.
pub fn cosigned_message(time: u64, text: &str) -> String {
    format!("{COSIGNATURE_HEADER}\ntime {time}\n{text}")
}

// ------------------------------------------------------------------ signed and witnessed checkpoints

/// A checkpoint whose note carries a verified signature of its log's key.
/// Only [`SignedCheckpoint::open`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: Checkpoint,
    note: Note,
}

impl SignedCheckpoint {
    /// Checks `note` against the pinned `log`: its text is a checkpoint of
    /// `log`'s origin, at least one signature line is from `log`'s key, and
    /// every line from that key verifies (signed-note: a failing signature
    /// from a known key rejects the note). Other lines are ignored.
    pub fn open(note: Note, log: &LogVerifier) -> Result<Self, CheckpointError> {
        let checkpoint = Checkpoint::parse_body(&note.text).map_err(CheckpointError::Malformed)?;
        if checkpoint.origin != log.name {
            return Err(CheckpointError::WrongOrigin);
        }
        let mut signed = false;
        for s in note.signatures.iter().filter(|s| log.matches(s)) {
            if !log.verifies(&note.text, s) {
                return Err(CheckpointError::BadSignature);
            }
            signed = true;
        }
        if !signed {
            return Err(CheckpointError::NotSigned);
        }
        Ok(Self { checkpoint, note })
    }

    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The note it came in.
    pub fn note(&self) -> &Note {
        &self.note
    }

    /// The cosignatures in the note from `witnesses` that verify, one per
    /// witness (the first valid one), with the witness's index in
    /// `witnesses` and the cosignature's timestamp; and how many lines from
    /// those witnesses did not verify. Lines from anyone else are ignored.
    pub fn cosignatures(
        &self,
        witnesses: &[WitnessVerifier],
    ) -> (Vec<(usize, NoteSignature, u64)>, usize) {
        let mut valid: Vec<(usize, NoteSignature, u64)> = Vec::new();
        let mut bad = 0;
        for s in &self.note.signatures {
            let Some(i) = witnesses.iter().position(|w| w.matches(s)) else {
                continue;
            };
            match witnesses[i].verify(&self.note.text, s) {
                Some(time) if !valid.iter().any(|(j, _, _)| *j == i) => {
                    valid.push((i, s.clone(), time));
                }
                Some(_) => {}
                None => bad += 1,
            }
        }
        (valid, bad)
    }
}

/// One witness whose cosignature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosigner {
    /// The witness's name.
    pub name: KeyName,
    /// When it cosigned (POSIX seconds).
    pub timestamp: u64,
}

/// A checkpoint signed by its log and cosigned by at least a quorum of
/// distinct trusted witnesses. Only [`WitnessPolicy::verify`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessedCheckpoint {
    signed: SignedCheckpoint,
    cosigners: Vec<Cosigner>,
}

impl WitnessedCheckpoint {
    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        self.signed.checkpoint()
    }

    /// The distinct trusted witnesses whose cosignature verified.
    pub fn cosigners(&self) -> &[Cosigner] {
        &self.cosigners
    }

    /// The note it came in.
    pub fn note(&self) -> &Note {
        self.signed.note()
    }
}

/// What a client trusts: one log, a set of witnesses, and how many of them
/// must have cosigned a checkpoint for it to be believed.
#[derive(Clone, Debug)]
pub struct WitnessPolicy {
    log: LogVerifier,
    witnesses: Vec<WitnessVerifier>,
    quorum: usize,
}

impl WitnessPolicy {
    /// A policy for `log` requiring `quorum` of `witnesses`. Refuses a
    /// quorum of 0 or above the number of witnesses, two witnesses with one
    /// key or one name (one key must count once), and a witness holding the
    /// log's own key.
    pub fn new(
        log: LogVerifier,
        witnesses: Vec<WitnessVerifier>,
        quorum: usize,
    ) -> Result<Self, PolicyError> {
        if quorum == 0 || quorum > witnesses.len() {
            return Err(PolicyError::Quorum(witnesses.len()));
        }
        for (i, a) in witnesses.iter().enumerate() {
            if a.key == log.key {
                return Err(PolicyError::LogIsWitness);
            }
            if witnesses[..i]
                .iter()
                .any(|b| b.key == a.key || b.name == a.name)
            {
                return Err(PolicyError::DuplicateWitness);
            }
        }
        Ok(Self {
            log,
            witnesses,
            quorum,
        })
    }

    /// The log.
    pub fn log(&self) -> &LogVerifier {
        &self.log
    }

    /// The trusted witnesses.
    pub fn witnesses(&self) -> &[WitnessVerifier] {
        &self.witnesses
    }

    /// The quorum.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// Accepts `note` only if the log signed it ([`SignedCheckpoint::open`])
    /// and at least `quorum` distinct trusted witnesses cosigned it. A
    /// cosignature line from a trusted witness that does not verify rejects
    /// the note (signed-note: a failing signature from a known key);
    /// several lines of one witness count once; lines from unknown keys are
    /// ignored.
    pub fn verify(&self, note: &Note) -> Result<WitnessedCheckpoint, CheckpointError> {
        let signed = SignedCheckpoint::open(note.clone(), &self.log)?;
        let (valid, bad) = signed.cosignatures(&self.witnesses);
        if bad > 0 {
            let name = signed
                .note
                .signatures
                .iter()
                .find(|s| {
                    self.witnesses
                        .iter()
                        .any(|w| w.matches(s) && w.verify(&signed.note.text, s).is_none())
                })
                .map(|s| s.name.0.clone())
                .unwrap_or_default();
            return Err(CheckpointError::BadCosignature(name));
        }
        if valid.len() < self.quorum {
            return Err(CheckpointError::NoQuorum {
                have: valid.len(),
                need: self.quorum,
            });
        }
        let cosigners = valid
            .into_iter()
            .map(|(i, _, timestamp)| Cosigner {
                name: self.witnesses[i].name.clone(),
                timestamp,
            })
            .collect();
        Ok(WitnessedCheckpoint { signed, cosigners })
    }
}

impl WitnessPolicy {
    /// What a reader of a log answer (a student's `/v1/log/mine`) does with
    /// it: believes `head`, a signed head already verified under the log's
    /// key, only if `note` carries this policy's quorum ([`Self::verify`])
    /// and `head` extends the witnessed checkpoint: the same root at the same
    /// size, or, for a larger head, `proof`, the consistency proof from the
    /// checkpoint's size to the head's. A head smaller than the checkpoint is
    /// refused: the answer must cover at least what the witnesses saw.
    pub fn verify_head<P: AsRef<[u8]>>(
        &self,
        note: &Note,
        head: &TreeHead,
        proof: &[P],
    ) -> Result<WitnessedCheckpoint, CheckpointError> {
        let witnessed = self.verify(note)?;
        let cp = witnessed.checkpoint();
        if head.log_id != self.log.public().log_id() {
            return Err(CheckpointError::NotOnHistory("the head is another log's"));
        }
        if head.size < cp.size {
            return Err(CheckpointError::NotOnHistory(
                "the head is smaller than the witnessed checkpoint",
            ));
        }
        if head.size == cp.size {
            return if head.root == cp.root {
                Ok(witnessed)
            } else {
                Err(CheckpointError::NotOnHistory(
                    "another root at the witnessed size (a fork)",
                ))
            };
        }
        if cp.size == 0 {
            // Every tree extends the empty one.
            return Ok(witnessed);
        }
        crate::log::verify_consistency(cp.size, head.size, &cp.root, &head.root, proof)
            .map_err(|_| CheckpointError::NotOnHistory("the consistency proof does not verify"))?;
        Ok(witnessed)
    }
}

// ------------------------------------------------------------------ the witness

/// A witness: its name and its key. A sosvault trustee witnesses with its
/// [`LogKey`] (its checkpoints' key, under another signature type: see the
/// module's "One key, two roles").
pub struct Witness {
    name: KeyName,
    key: LogKey,
}

impl fmt::Debug for Witness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Witness({}, [redacted])", self.name)
    }
}

impl Witness {
    /// The witness `name` signing with `key`.
    pub fn new(name: KeyName, key: LogKey) -> Self {
        Self { name, key }
    }

    /// The default name of the witness whose key is `key`:
    /// `sosvault.witness/<log id hex>`.
    pub fn default_name(key: &LogPublic) -> KeyName {
        KeyName(format!("{DEFAULT_WITNESS_PREFIX}{}", key.log_id().to_hex()))
    }

    /// What clients pin to check this witness's cosignatures.
    pub fn verifier(&self) -> WitnessVerifier {
        WitnessVerifier::new(self.name.clone(), self.key.public())
    }

    /// A `cosignature/v1` of `checkpoint` at `now` (clamped to 1 ..= 2^63 - 1:
    /// the timestamp is never zero).
    pub fn cosign(&self, checkpoint: &Checkpoint, now: Timestamp) -> NoteSignature {
        let time = now.0.clamp(1, i64::MAX as u64);
        let sig = self
            .key
            .signing_key()
            .sign(cosigned_message(time, &checkpoint.body()).as_bytes());
        let mut signature = Vec::with_capacity(72);
        signature.extend_from_slice(&time.to_be_bytes());
        signature.extend_from_slice(&sig.to_bytes());
        NoteSignature {
            name: self.name.clone(),
            key_id: key_id(
                self.name.as_str(),
                SIG_COSIGNATURE_V1,
                &self.key.public().to_bytes(),
            ),
            signature,
        }
    }
}

/// What a witness remembers of one log: the last checkpoint it cosigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WitnessState {
    /// Its size.
    pub size: u64,
    /// Its root.
    pub root: [u8; 32],
}

/// An `add-checkpoint` request (`c2sp.org/tlog-witness`): the size of the
/// last checkpoint the client believes the witness cosigned, a consistency
/// proof from it to the new checkpoint, and the new checkpoint's note.
///
/// Body: `old <N>\n`, one base64 hash per line, a blank line, the note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The old size.
    pub old_size: u64,
    /// The consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<[u8; 32]>,
    /// The checkpoint, signed by its log (and perhaps others).
    pub note: Note,
}

impl AddCheckpoint {
    /// Parses a request body strictly, within [`MAX_REQUEST_BYTES`] and
    /// [`MAX_PROOF_LINES`].
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(NoteError::TooLarge(MAX_REQUEST_BYTES));
        }
        let split = bytes
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or(NoteError::BadRequest)?;
        let head = core::str::from_utf8(&bytes[..split]).map_err(|_| NoteError::BadRequest)?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or(NoteError::BadRequest)?;
        let old_size = parse_size(old)?;
        let proof = lines
            .take(MAX_PROOF_LINES + 1)
            .map(parse_hash)
            .collect::<Result<Vec<_>, _>>()?;
        if proof.len() > MAX_PROOF_LINES {
            return Err(NoteError::BadRequest);
        }
        let note = Note::parse(&bytes[split + 2..])?;
        Ok(Self {
            old_size,
            proof,
            note,
        })
    }

    /// The request body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old_size);
        for h in &self.proof {
            out.push_str(&B64.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.note.to_text());
        out.into_bytes()
    }
}

/// Why a witness refuses to cosign, each with the status tlog-witness gives it.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WitnessRefusal {
    /// The body does not parse (400).
    #[error("malformed request: {0}")]
    Malformed(NoteError),
    /// The checkpoint's origin is not a log this witness follows (404).
    #[error("the checkpoint's origin is not a log this witness follows")]
    UnknownLog,
    /// No valid signature of the log's key, or a bad one (403).
    #[error("the checkpoint is not validly signed by its log's key")]
    BadSignature,
    /// The old size is above the checkpoint's size (400).
    #[error("the old size {old} is above the checkpoint's size {size}")]
    OldSizeAboveSize {
        /// The request's old size.
        old: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// The old size is not the size of the last checkpoint this witness
    /// cosigned for the log (409, whose body is that size).
    #[error("the old size is not {stored}, the size of the last checkpoint cosigned")]
    Conflict {
        /// The size of the last checkpoint cosigned (0 if none).
        stored: u64,
    },
    /// A checkpoint of size 0 whose root is not the empty tree's (422).
    #[error("a checkpoint of size 0 must have the empty tree's root")]
    EmptyTreeRoot,
    /// A consistency proof from the empty tree (422: none is needed).
    #[error("the old size is 0, so the consistency proof must be empty")]
    ProofNotEmpty,
    /// The same size as the checkpoint cosigned before, another root: the
    /// log forked (422). Never cosigned.
    #[error("the log forked: same size as the checkpoint cosigned before, another root")]
    Fork,
    /// The consistency proof from the checkpoint cosigned before does not
    /// verify (422): history was rewritten, or the proof is wrong.
    #[error("the consistency proof from the checkpoint cosigned before does not verify")]
    Inconsistent,
}

impl WitnessRefusal {
    /// The HTTP status tlog-witness gives this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) | Self::OldSizeAboveSize { .. } => 400,
            Self::BadSignature => 403,
            Self::UnknownLog => 404,
            Self::Conflict { .. } => 409,
            Self::EmptyTreeRoot | Self::ProofNotEmpty | Self::Fork | Self::Inconsistent => 422,
        }
    }

    /// A stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UnknownLog => "unknown_log",
            Self::BadSignature => "bad_signature",
            Self::OldSizeAboveSize { .. } => "old_size_above_size",
            Self::Conflict { .. } => "conflict",
            Self::EmptyTreeRoot => "empty_tree_root",
            Self::ProofNotEmpty => "proof_not_empty",
            Self::Fork => "fork",
            Self::Inconsistent => "inconsistent",
        }
    }
}

/// An `add-checkpoint` request whose checkpoint is signed by a log this
/// witness follows: the stateless half of the decision (no store needed).
/// Only [`CheckedAddCheckpoint::check`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedAddCheckpoint {
    old_size: u64,
    proof: Vec<[u8; 32]>,
    signed: SignedCheckpoint,
}

impl CheckedAddCheckpoint {
    /// Checks, in tlog-witness's order: the checkpoint parses (400), its
    /// origin is a log `lookup` knows (404), that log's key signed it (403),
    /// and the old size is not above its size (400).
    pub fn check<'a>(
        request: AddCheckpoint,
        lookup: impl FnOnce(&str) -> Option<&'a LogVerifier>,
    ) -> Result<Self, WitnessRefusal> {
        let checkpoint =
            Checkpoint::parse_body(request.note.text()).map_err(WitnessRefusal::Malformed)?;
        let log = lookup(checkpoint.origin.as_str()).ok_or(WitnessRefusal::UnknownLog)?;
        let signed = SignedCheckpoint::open(request.note, log).map_err(|e| match e {
            CheckpointError::Malformed(e) => WitnessRefusal::Malformed(e),
            CheckpointError::WrongOrigin => WitnessRefusal::UnknownLog,
            _ => WitnessRefusal::BadSignature,
        })?;
        if request.old_size > checkpoint.size {
            return Err(WitnessRefusal::OldSizeAboveSize {
                old: request.old_size,
                size: checkpoint.size,
            });
        }
        Ok(Self {
            old_size: request.old_size,
            proof: request.proof,
            signed,
        })
    }

    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        self.signed.checkpoint()
    }

    /// The old size the client gave.
    pub fn old_size(&self) -> u64 {
        self.old_size
    }
}

/// What the witness answers and keeps after cosigning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosigned {
    /// The new state to store (atomically with the check of the old one).
    pub state: WitnessState,
    /// The cosignature to answer with.
    pub cosignature: NoteSignature,
}

/// The witness's decision (`c2sp.org/tlog-witness`, add-checkpoint), a pure
/// function of the state it stored for the log (`None`: it never cosigned
/// a checkpoint of it), a checked request and the time.
///
/// In order: the old size must be the stored size (409 with the stored
/// size); a checkpoint of size 0 must have the empty root (422); from the
/// empty tree no proof is needed and none may be given (422); the same size
/// as stored needs the same root (else a fork, 422); a larger one needs a
/// consistency proof from the stored checkpoint that verifies (422). Then
/// the checkpoint becomes the state and is cosigned. A refusal changes
/// nothing: the caller stores nothing.
pub fn decide(
    stored: Option<&WitnessState>,
    request: &CheckedAddCheckpoint,
    witness: &Witness,
    now: Timestamp,
) -> Result<Cosigned, WitnessRefusal> {
    let checkpoint = request.checkpoint();
    let stored_size = stored.map_or(0, |s| s.size);
    if request.old_size != stored_size {
        return Err(WitnessRefusal::Conflict {
            stored: stored_size,
        });
    }
    if checkpoint.size == 0 && checkpoint.root != empty_root() {
        return Err(WitnessRefusal::EmptyTreeRoot);
    }
    match stored {
        Some(s) if s.size > 0 => {
            if s.size == checkpoint.size && s.root != checkpoint.root {
                return Err(WitnessRefusal::Fork);
            }
            verify_consistency(
                s.size,
                checkpoint.size,
                &s.root,
                &checkpoint.root,
                &request.proof,
            )
            .map_err(|_| WitnessRefusal::Inconsistent)?;
        }
        _ => {
            if !request.proof.is_empty() {
                return Err(WitnessRefusal::ProofNotEmpty);
            }
        }
    }
    Ok(Cosigned {
        state: WitnessState {
            size: checkpoint.size,
            root: checkpoint.root,
        },
        cosignature: witness.cosign(checkpoint, now),
    })
}

/// [`CheckedAddCheckpoint::check`] then [`decide`]: the whole decision on a
/// request body, for a witness following the logs `lookup` knows.
pub fn add_checkpoint<'a>(
    stored: Option<&WitnessState>,
    body: &[u8],
    lookup: impl FnOnce(&str) -> Option<&'a LogVerifier>,
    witness: &Witness,
    now: Timestamp,
) -> Result<Cosigned, WitnessRefusal> {
    let request = AddCheckpoint::parse(body).map_err(WitnessRefusal::Malformed)?;
    let checked = CheckedAddCheckpoint::check(request, lookup)?;
    decide(stored, &checked, witness, now)
}

#[cfg(test)]
mod tests;
