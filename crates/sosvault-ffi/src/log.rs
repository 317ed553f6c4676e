//! Who read the profile: a log's answer to the phone's own query
//! (`POST /v1/log/mine`), checked by the core (`sosvault::log::verify_mine`)
//! and shown only if every check holds.

use sosvault::log::{LogEntry, ServedEntry, verify_mine};
use sosvault::{LogPublic, StudentId};

use crate::VaultError;

/// One entry of the answer, as the JSON carries it (base64-decoded).
#[derive(Clone, Debug, uniffi::Record)]
pub struct ProvenEntry {
    /// Its index in the log.
    pub index: u64,
    /// The entry's bytes.
    pub entry: Vec<u8>,
    /// Its inclusion proof, hash by hash.
    pub proof: Vec<Vec<u8>>,
    /// A supervisor's reason, for a view with a reason.
    pub reason: Option<String>,
    /// The reason's nonce (16 bytes), with it.
    pub reason_nonce: Option<Vec<u8>>,
}

/// An entry about the student, checked, for the app to show.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct LogLine {
    /// What happened: `profile-viewed`, `profile-viewed-with-reason`,
    /// `released`, `cancelled`, `shredded`, `share-accepted`, `refused`,
    /// `committed`, `guardian-told` (the control room told the guardian, by
    /// SMS, that the student pressed panic).
    pub kind: String,
    /// When (unix seconds).
    pub at: u64,
    /// Who read the profile (`operator:<name>`, `unit:<id>`), for a view.
    pub viewer: Option<String>,
    /// Why a supervisor read it, checked against the entry's commitment.
    pub reason: Option<String>,
    /// The incident (hex), for a view, a release or a guardian told.
    pub incident: Option<String>,
    /// Its index in the log.
    pub index: u64,
}

fn line(own: sosvault::log::OwnEntry) -> LogLine {
    let read = own.entry.profile_read();
    let incident = match &own.entry {
        LogEntry::Released { incident, .. } | LogEntry::GuardianTold { incident, .. } => {
            Some(*incident)
        }
        _ => read.map(|(incident, _)| incident),
    };
    LogLine {
        kind: own.entry.kind().to_owned(),
        at: own.entry.at().0,
        viewer: read.map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        reason: own.reason,
        incident: incident.map(|i| i.to_hex()),
        index: own.index,
    }
}

/// The student `student_id`'s entries of a log answer, if the answer holds
/// (`sosvault::log::verify_mine`): `head` (base64-decoded) is signed by
/// `log_key_hex` (the log key the app pins: the control room's, or a
/// trustee's), every entry is included in that head at its index, is about
/// this student, and a view's reason is the one its entry committed to.
/// Any failure refuses the whole answer.
#[uniffi::export]
pub fn read_log(
    student_id: String,
    log_key_hex: String,
    head: Vec<u8>,
    entries: Vec<ProvenEntry>,
) -> Result<Vec<LogLine>, VaultError> {
    let student = StudentId::from_hex(student_id.trim())
        .ok_or_else(|| VaultError::bad("the student id", "not 64 hex characters"))?;
    let key = LogPublic::from_hex(log_key_hex.trim())
        .map_err(|_| VaultError::bad("the log key", "not 64 hex characters of a key"))?;
    let served = entries.iter().map(|e| ServedEntry {
        index: e.index,
        entry: &e.entry,
        proof: &e.proof,
        reason: e.reason.as_deref().zip(e.reason_nonce.as_deref()),
    });
    let own = verify_mine(&head, &key, student, served).map_err(|why| VaultError::BadLog {
        why: why.to_string(),
    })?;
    Ok(own.into_iter().map(line).collect())
}
