//! The student's phone: [`sosvault::Device`] behind a lock, with the
//! deployment it trusts passed to every call that seals or checks.

use std::sync::{Arc, Mutex, MutexGuard};

use sosvault::{
    CancelReceipt, Container as _, Device, DeviceKey, MessageHash, Policy, ShareReceipt,
    ShredReceipt, Signed, Timestamp,
};

use crate::{Category, Deployment, Fix, IncidentStatus, PinLock, StudentProfile, VaultError};

/// A message the phone signed: the bytes to send (base64 in the JSON
/// body) and its hash (hex), by which later messages name it.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct SignedMessage {
    /// The signed bytes.
    pub bytes: Vec<u8>,
    /// SHA-256 of them, hex: a panic's names its incident to later calls.
    pub hash: String,
}

pub(crate) fn signed<M: sosvault::Message>(m: &Signed<M>) -> SignedMessage {
    SignedMessage {
        bytes: m.as_bytes().to_vec(),
        hash: m.hash().to_hex(),
    }
}

/// The hash `hex` names (`what`: which, for the error).
pub(crate) fn hash_of(what: &str, hex: &str) -> Result<MessageHash, VaultError> {
    MessageHash::from_hex(hex.trim()).ok_or_else(|| VaultError::bad(what, "not 64 hex characters"))
}

/// One press, both ways ([`Phone::panic_with_sms`]): send `panic` while
/// data works; when it does not, text `text` to `number`. The control room
/// takes whichever arrives first and joins the other to its incident.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct PanicBothWays {
    /// The panic over HTTP (`{"panic": base64}` to `POST /v1/panic`).
    pub panic: SignedMessage,
    /// The same press as an SMS panic (`sosvault/sms-panic/v1`); its hash
    /// names the incident too.
    pub sms: SignedMessage,
    /// The SMS's text: base64, at most 284 characters (two SMS of GSM-7).
    pub text: String,
    /// Where to text it: the control room's number, as its signed channel
    /// names it (E.164).
    pub number: String,
}

/// What a receipt confirms ([`Phone::confirmed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Confirmation {
    /// A cancel (or a check-in): the trustee releases nothing more for the
    /// panic (or the timer).
    Cancel,
    /// A stop: the trustee shredded the student's share.
    Stop,
}

/// A signed status query, kept to check the answer against
/// ([`Phone::read_status`]).
#[derive(Debug, uniffi::Object)]
pub struct StatusQuery(Signed<sosvault::status::StatusQuery>);

#[uniffi::export]
impl StatusQuery {
    /// The bytes to send (`{"query": base64}` to `POST /v1/incident/status`).
    pub fn bytes(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }
}

/// The student's phone. Save it ([`Phone::save`]) after every call that
/// signs: a restored older state would reuse a counter, and the trustees
/// and the control room refuse a replayed counter.
#[derive(uniffi::Object)]
pub struct Phone {
    device: Mutex<Device>,
}

impl std::fmt::Debug for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Phone([redacted])")
    }
}

impl Phone {
    pub(crate) fn device(&self) -> MutexGuard<'_, Device> {
        // A panic inside a call cannot leave the device half-changed (each
        // call changes it last), so a poisoned lock's state is sound.
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many distinct trustees of `deployment` signed a receipt of kind
    /// `M` among `receipts` that `about` accepts; anything else is ignored
    /// (the service may add any bytes it likes).
    fn count<M: sosvault::Message>(
        deployment: &Deployment,
        receipts: &[Vec<u8>],
        about: impl Fn(&M) -> bool,
    ) -> u32 {
        let mut seen = std::collections::BTreeSet::new();
        for bytes in receipts {
            let Ok(receipt) = Signed::<M>::decode(bytes) else {
                continue;
            };
            if let Some(t) = deployment.trustee_of(receipt.signer())
                && about(receipt.body())
            {
                seen.insert(t);
            }
        }
        u32::try_from(seen.len()).unwrap_or(u32::MAX)
    }
}

#[uniffi::export]
impl Phone {
    /// A new phone with a fresh device key, not enrolled.
    #[uniffi::constructor]
    pub fn create() -> Arc<Self> {
        Arc::new(Self {
            device: Mutex::new(Device::new(DeviceKey::generate())),
        })
    }

    /// The phone as [`Phone::save`] wrote it.
    #[uniffi::constructor]
    pub fn restore(saved: Vec<u8>) -> Result<Arc<Self>, VaultError> {
        let saved = zeroize::Zeroizing::new(saved);
        let device =
            Device::from_secret_bytes(&saved).map_err(|e| VaultError::bad("the saved phone", e))?;
        Ok(Arc::new(Self {
            device: Mutex::new(device),
        }))
    }

    /// The phone's state: its device key, epoch, counter, trustees and any
    /// pending enrollment. Whoever holds it can panic, cancel and stop as
    /// the student: keep it in Keystore/Keychain-protected storage.
    pub fn save(&self) -> Vec<u8> {
        self.device().to_secret_bytes().to_vec()
    }

    /// The student id (hex): the hash of the device key.
    pub fn student_id(&self) -> String {
        self.device().student_id().to_hex()
    }

    /// The confirmed enrollment's epoch (0 before the first).
    pub fn epoch(&self) -> u32 {
        self.device().epoch()
    }

    /// A new enrollment to `deployment`'s trustees with `profile`, kept
    /// pending until [`Phone::confirm_enrollment`]: the package to send
    /// (`{"package": base64}` to `POST /v1/enroll`). At set-up, and again
    /// after every incident (a released vault key must not open the next).
    pub fn enroll(
        &self,
        deployment: &Deployment,
        profile: StudentProfile,
        now: u64,
    ) -> Result<Vec<u8>, VaultError> {
        let profile = sosvault::Profile::from(profile);
        let enrollment = self.device().enroll_to(
            deployment.verified(),
            &profile.to_bytes(),
            Policy::default(),
            Timestamp(now),
        )?;
        Ok(enrollment.package.to_bytes())
    }

    /// The pending enrollment's package, to send again byte for byte after
    /// a failed attempt (a trustee may hold it already).
    pub fn pending_enrollment(&self) -> Option<Vec<u8>> {
        self.device().pending_enrollment().map(|p| p.to_bytes())
    }

    /// Confirms the pending enrollment with the share receipts of
    /// `POST /v1/enroll`'s answer (each base64-decoded): every trustee of
    /// the manifest must have signed one for its share, naming this
    /// phone's own commitment. Only then does the phone move to the new
    /// epoch. The answer is the commit to send (`{"commit": base64}` to
    /// `POST /v1/enroll/commit`).
    pub fn confirm_enrollment(
        &self,
        receipts: Vec<Vec<u8>>,
        now: u64,
    ) -> Result<Vec<u8>, VaultError> {
        let receipts: Vec<Signed<ShareReceipt>> = receipts
            .iter()
            .filter_map(|r| Signed::<ShareReceipt>::decode(r).ok())
            .collect();
        let commit = self
            .device()
            .confirm_enrollment(&receipts, Timestamp(now))?;
        Ok(commit.as_bytes().to_vec())
    }

    /// Panic: `fix` sealed to the control room, `category` in clear
    /// (`{"panic": base64}` to `POST /v1/panic`).
    pub fn panic(
        &self,
        deployment: &Deployment,
        category: Category,
        fix: Fix,
        now: u64,
    ) -> Result<SignedMessage, VaultError> {
        let location = sosvault::Location::try_from(fix)?;
        let p = self.device().panic(
            category.into(),
            &location,
            deployment.control_room(),
            Timestamp(now),
        )?;
        Ok(signed(&p))
    }

    /// Panic, both ways at once: the HTTP panic and its twin for SMS, one
    /// counter between them. `channel` is the control room's signed SMS
    /// channel (the bytes of `GET /v1/sms/channel`'s `channel`, fetched
    /// while data worked, and kept): believed only if the deployment's
    /// control room signed it, else [`VaultError::BadInput`] and nothing is
    /// signed.
    pub fn panic_with_sms(
        &self,
        deployment: &Deployment,
        channel: Vec<u8>,
        category: Category,
        fix: Fix,
        now: u64,
    ) -> Result<PanicBothWays, VaultError> {
        let channel = sosvault::sms::SmsChannel::verify(&channel, deployment.control_room())
            .map_err(|e| VaultError::bad("the SMS channel", e))?;
        let location = sosvault::Location::try_from(fix)?;
        let (panic, sms) = self.device().panic_with_sms(
            category.into(),
            &location,
            deployment.control_room(),
            &channel,
            Timestamp(now),
        )?;
        Ok(PanicBothWays {
            panic: signed(&panic),
            text: sosvault::sms::to_text(&sms),
            sms: signed(&sms),
            number: channel.channel().number.clone(),
        })
    }

    /// A new position while the incident of panic `panic_hash` lasts
    /// (`{"update": base64}` to `POST /v1/location`).
    pub fn location_update(
        &self,
        deployment: &Deployment,
        panic_hash: String,
        fix: Fix,
        now: u64,
    ) -> Result<SignedMessage, VaultError> {
        let (panic, location) = (hash_of("the panic hash", &panic_hash)?, fix.try_into()?);
        let u = self.device().location_update(
            panic,
            &location,
            deployment.control_room(),
            Timestamp(now),
        )?;
        Ok(signed(&u))
    }

    /// A point of the sealed trail (`{"point": base64}` to `POST
    /// /v1/trail`): where the student is, sealed to the student's own vault
    /// recipient, which nobody (the control room included) opens before a
    /// panic's release. Send one a minute while a walk is timed, or always
    /// if the student opts in.
    pub fn trail_point(&self, fix: Fix, now: u64) -> Result<SignedMessage, VaultError> {
        let location = fix.try_into()?;
        let p = self.device().trail_point(&location, Timestamp(now))?;
        Ok(signed(&p))
    }

    /// Starts a check-in timer ("walk me home"): a panic that no trustee
    /// acts on before `ends_at` (unix seconds, after `now`, at most 4 hours
    /// on), `fix` (where the walk begins) sealed to the control room
    /// (`{"timed_panic": base64}` to `POST /v1/timers`; keep `hash`). Send
    /// [`Phone::trail_point`] once a minute while it runs, and
    /// [`Phone::check_in`] to end it; if the phone says nothing by
    /// `ends_at`, the control room acts on it as on a panic.
    pub fn start_timer(
        &self,
        deployment: &Deployment,
        category: Category,
        fix: Fix,
        ends_at: u64,
        now: u64,
    ) -> Result<SignedMessage, VaultError> {
        let location = sosvault::Location::try_from(fix)?;
        let t = self.device().timed_panic(
            category.into(),
            &location,
            Timestamp(ends_at),
            deployment.control_room(),
            Timestamp(now),
        )?;
        Ok(signed(&t))
    }

    /// "I got there": ends the timer whose timed panic is `timer_hash`,
    /// with the PIN the student typed: the PIN or the duress PIN make the
    /// same message (under duress, the control room acts at once and every
    /// receipt and screen reads as a check-in in safety); any other is
    /// [`VaultError::WrongPin`] and signs nothing (`{"check_in": base64}`
    /// to `POST /v1/check-in`; its receipts are checked as a cancel's,
    /// [`Confirmation::Cancel`]).
    pub fn check_in(
        &self,
        deployment: &Deployment,
        timer_hash: String,
        pins: &PinLock,
        pin: String,
        now: u64,
    ) -> Result<SignedMessage, VaultError> {
        let timer = hash_of("the timer hash", &timer_hash)?;
        let duress = pins.duress_of(&zeroize::Zeroizing::new(pin))?;
        let c = self
            .device()
            .check_in(timer, duress, deployment.control_room(), Timestamp(now))?;
        Ok(signed(&c))
    }

    /// "I am safe", with the PIN the student typed: the PIN or the duress
    /// PIN make the same message (the duress one escalates); any other is
    /// [`VaultError::WrongPin`] and signs nothing (`{"cancel": base64}` to
    /// `POST /v1/cancel`).
    pub fn cancel(
        &self,
        deployment: &Deployment,
        panic_hash: String,
        pins: &PinLock,
        pin: String,
        now: u64,
    ) -> Result<SignedMessage, VaultError> {
        let panic = hash_of("the panic hash", &panic_hash)?;
        let duress = pins.duress_of(&zeroize::Zeroizing::new(pin))?;
        let c = self
            .device()
            .cancel(panic, duress, deployment.control_room(), Timestamp(now))?;
        Ok(signed(&c))
    }

    /// Stop: wipe everything the student gave, at every trustee, with the
    /// PIN the student typed (the duress PIN: the same stop, and the
    /// control room is alerted). The phone signs nothing afterwards
    /// (`{"stop": base64}` to `POST /v1/stop`).
    pub fn stop(
        &self,
        deployment: &Deployment,
        pins: &PinLock,
        pin: String,
        now: u64,
    ) -> Result<SignedMessage, VaultError> {
        let duress = pins.duress_of(&zeroize::Zeroizing::new(pin))?;
        let s = self
            .device()
            .stop(duress, deployment.control_room(), Timestamp(now))?;
        Ok(signed(&s))
    }

    /// A signed question about the incident of panic `panic_hash`. Uses no
    /// counter: ask as often as the screen needs.
    pub fn status_query(
        &self,
        deployment: &Deployment,
        panic_hash: String,
        now: u64,
    ) -> Result<Arc<StatusQuery>, VaultError> {
        let panic = hash_of("the panic hash", &panic_hash)?;
        let q = self
            .device()
            .status_query(panic, deployment.control_room(), Timestamp(now));
        Ok(Arc::new(StatusQuery(q)))
    }

    /// The answer to `query` (its `report`, base64-decoded), believed only
    /// if the deployment's control room signed it for this very query.
    pub fn read_status(
        &self,
        deployment: &Deployment,
        query: &StatusQuery,
        report: Vec<u8>,
    ) -> Result<IncidentStatus, VaultError> {
        sosvault::status::StatusReport::verify(&report, deployment.control_room(), &query.0)
            .map(IncidentStatus::from)
            .map_err(|e| VaultError::BadReport { why: e.to_string() })
    }

    /// A signed question to a log for this student's own entries
    /// (`{"query": base64}` to `POST /v1/log/mine`): `holder_hex` is the
    /// log's id, [`Deployment::control_room_log_holder`] for the control
    /// room's log of profile reads, or a trustee's id for its log.
    pub fn log_query(&self, holder_hex: String, now: u64) -> Result<Vec<u8>, VaultError> {
        let holder = sosvault::TrusteeId::from_hex(holder_hex.trim())
            .ok_or_else(|| VaultError::bad("the log holder", "not 64 hex characters"))?;
        Ok(self
            .device()
            .log_query(holder, Timestamp(now))
            .as_bytes()
            .to_vec())
    }

    /// How many of the deployment's trustees confirmed the phone's cancel
    /// or stop whose hash is `hash` (its [`SignedMessage::hash`]), each with
    /// a signed receipt of that kind naming it and this student, among
    /// `receipts` (the answer's, base64-decoded). Duplicates, another
    /// message's receipts and anything not a manifest trustee's count for
    /// nothing.
    pub fn confirmed(
        &self,
        deployment: &Deployment,
        of: Confirmation,
        hash: String,
        receipts: Vec<Vec<u8>>,
    ) -> Result<u32, VaultError> {
        let hash = hash_of("the message hash", &hash)?;
        let student = self.device().student_id();
        Ok(match of {
            Confirmation::Cancel => Self::count::<CancelReceipt>(deployment, &receipts, |r| {
                (r.cancel, r.student) == (hash, student)
            }),
            Confirmation::Stop => Self::count::<ShredReceipt>(deployment, &receipts, |r| {
                (r.stop, r.student) == (hash, student)
            }),
        })
    }
}
