//! Panics by SMS (`docs/BEYOND-PANIC.md` §4, `PROTOCOL.md` §7.18–7.19).
//!
//! A phone with signal and no data texts its panic (`sosvault/sms-panic/v1`,
//! base64) to the control room's number; the SMS gateway hands the text
//! over (`POST /v1/sms/inbound`, under its bearer token), and the text
//! takes the panic's own path: the same checks, the same store job, the
//! same dispatch, its location opened with the control room's SMS key. A
//! press sent both ways is one incident: whichever arrives first opens it,
//! the other joins it (`incidents.twin_hash`).
//!
//! Phones learn the number and the key from the channel
//! (`sosvault/sms-channel/v1`) the control room signs at start and serves
//! at `GET /v1/sms/channel`; they believe it only under the control room
//! their manifest pins.
//!
//! Nothing is sent back to the student's number: a text arriving on a
//! phone in a coercer's hands would tell the coercer what the student
//! did. The phone learns where its panic stands over data, when it has
//! some (the status query of `sosvault::status`).

use std::sync::atomic::Ordering;

use sosvault::IncidentId;

use super::{Engine, EngineError};
use crate::metrics::BearerToken;

/// What `[sms_panic]` set up at start.
pub(crate) struct SmsPanics {
    /// The gateway's bearer token (its hash).
    token: BearerToken,
    /// The signed channel (`sosvault/sms-channel/v1`) phones fetch.
    channel: Vec<u8>,
}

impl Engine {
    /// Takes panics by SMS from now on, from a gateway presenting `token`,
    /// and publishes the channel (`[sms_panic]`'s number and the control
    /// room's SMS key, signed now). Once, at start; refused without
    /// `[sms_panic]` or when set already.
    pub fn take_sms_panics(&self, token: BearerToken) -> Result<(), EngineError> {
        let number = &self
            .inner
            .cfg
            .sms_panic
            .as_ref()
            .ok_or(EngineError::SmsOff)?
            .number;
        let channel = self
            .inner
            .control_room
            .sms_channel(number, sosvault::Timestamp::now())
            .map_err(|e| EngineError::Internal(format!("sms_panic: number: {e}")))?;
        let panics = SmsPanics {
            token,
            channel: channel.as_bytes().to_vec(),
        };
        self.inner
            .sms_panics
            .set(panics)
            .map_err(|_| EngineError::Internal("panics by SMS are taken already".into()))
    }

    /// The signed SMS channel phones fetch, if panics are taken by SMS.
    pub fn sms_channel(&self) -> Result<&[u8], EngineError> {
        self.sms_panics().map(|p| p.channel.as_slice())
    }

    /// Whether `presented` is the SMS gateway's token (constant time):
    /// `Unauthorized` if it is not, and to anyone when no panic is taken
    /// by SMS (a caller without the token learns nothing of the
    /// configuration; `GET /v1/sms/channel` says whether panics are taken).
    pub fn check_sms_gateway(&self, presented: Option<&str>) -> Result<(), EngineError> {
        match (self.inner.sms_panics.get(), presented) {
            (Some(panics), Some(token)) if panics.token.matches(token) => Ok(()),
            _ => Err(EngineError::Unauthorized),
        }
    }

    fn sms_panics(&self) -> Result<&SmsPanics, EngineError> {
        self.inner.sms_panics.get().ok_or(EngineError::SmsOff)
    }

    /// A panic by SMS, as the gateway handed over its text: stored and
    /// dispatched as a panic over HTTP is. Its twin over HTTP (the same
    /// press), whichever arrives first, is the same incident: the answer
    /// names it, not new.
    pub async fn sms_panic(&self, text: &str) -> Result<(IncidentId, bool), EngineError> {
        let _busy = self.inner.intake.enter();
        self.sms_panics()?;
        self.inner
            .metrics
            .sms_panics
            .fetch_add(1, Ordering::Relaxed);
        let panic =
            sosvault::sms::from_text(text).map_err(|e| EngineError::malformed("SMS panic", e))?;
        self.open_panic(panic.into(), None).await
    }
}
