//! Guardians told (`docs/BEYOND-PANIC.md` §2): once a panic's release has
//! opened the vault, the control room sends the guardian named in the
//! sealed profile one short SMS: a student who named them pressed panic,
//! the control room is sending a team, the number to call and a reference.
//! Never a field of the profile. The number is read from the profile in
//! memory, while the vault key is held, and is never written anywhere; the
//! notice is claimed once per incident in the store (a restart, or another
//! node opening the same vault, sends nothing more) and goes on the
//! transparency log (kind 11) before it is sent.

use std::time::Duration;

use sosvault::log::LogEntry;
use sosvault::{IncidentId, Profile, Timestamp};
use zeroize::Zeroizing;

use super::{Engine, now_ms};
use crate::config::{GuardianConfig, NoticeLanguage};
use crate::sms::normalize_number;

/// Sends tried before the notice is given up (the waits between double
/// from 500 ms, capped by `max_backoff_ms`).
const SENDS: u32 = 4;

/// What the control room does about the guardian of a just-opened vault.
/// Its `Debug` leaves the number out: it is the profile's.
#[derive(PartialEq, Eq)]
pub(super) enum Notice {
    /// Send `text` to `to`.
    Send {
        /// The number, `+` and digits.
        to: Zeroizing<String>,
        /// The notice.
        text: String,
    },
    /// Tell nobody, for this reason (for the timeline; never the number).
    Nobody(&'static str),
}

/// The notice for the guardian of `profile`, for incident `id` whose panic
/// was pressed at `pressed` (unix seconds): a pure function of its inputs.
pub(super) fn notice(
    profile: &Profile,
    id: &IncidentId,
    pressed: u64,
    cfg: &GuardianConfig,
) -> Notice {
    if profile.guardian_phone.trim().is_empty() {
        return Notice::Nobody("the profile names no guardian's number");
    }
    let Some(to) = normalize_number(&profile.guardian_phone, &cfg.country_code) else {
        return Notice::Nobody("the guardian's number in the profile is not a phone number");
    };
    let local = pressed.saturating_add_signed(i64::from(cfg.utc_offset_minutes) * 60);
    let (hour, minute) = ((local / 3600) % 24, (local / 60) % 60);
    let reference = id.to_hex()[..6].to_ascii_uppercase();
    let (from, zone, phone) = (&cfg.notice_from, &cfg.zone, &cfg.control_room_phone);
    let text = match cfg.language {
        NoticeLanguage::En => format!(
            "{from}: a student who named you as their guardian pressed the panic button at \
             {hour:02}:{minute:02} {zone}. The control room is sending a team. Call the control \
             room on {phone}, reference {reference}."
        ),
        NoticeLanguage::Hi => format!(
            "{from}: जिस विद्यार्थी ने आपको अपना अभिभावक बताया है, उसने {hour:02}:{minute:02} \
             {zone} पर पैनिक बटन दबाया है। कंट्रोल रूम एक टीम भेज रहा है। कंट्रोल रूम को \
             {phone} पर कॉल करें, संदर्भ {reference}।"
        ),
    };
    Notice::Send {
        to: Zeroizing::new(to),
        text,
    }
}

impl std::fmt::Debug for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Send { text, .. } => f
                .debug_struct("Send")
                .field("to", &"[redacted]")
                .field("text", text)
                .finish(),
            Self::Nobody(why) => f.debug_tuple("Nobody").field(why).finish(),
        }
    }
}

impl Engine {
    /// Sets the SMS gateway guardians are told through (once, at start).
    pub fn set_sms_gateway(
        &self,
        gateway: crate::sms::SmsGateway,
    ) -> Result<(), crate::sms::SmsError> {
        self.inner
            .sms
            .set(gateway)
            .map_err(|_| crate::sms::SmsError::Refused("a gateway is set already".into()))
    }

    /// Tells the guardian of incident `id`'s student, if `[guardians]` is
    /// configured, its vault is open here and nobody told them yet.
    pub(super) async fn tell_guardian(&self, id: IncidentId) {
        let (Some(cfg), Some(gateway)) = (self.inner.cfg.guardians.as_ref(), self.inner.sms.get())
        else {
            return;
        };
        let Ok(row) = self.incident_row(id).await else {
            return;
        };
        let (sid, epoch) = (row.student_id, row.epoch);
        let Ok(Some(enrollment)) = self
            .inner
            .db
            .call(move |s| s.enrollment_of_epoch(&sid, epoch))
            .await
        else {
            return;
        };
        // The profile, opened in memory with the vault key this node holds
        // (a copy, the state's lock let go).
        let key = {
            let st = self.state();
            let grant = st.incidents.get(&id).and_then(|l| l.vault.as_ref());
            grant.and_then(|g| g.copy_for(epoch, now_ms()))
        };
        let Some(key) = key else {
            return;
        };
        let Ok(bytes) = key.open(&enrollment.sealed_profile, sosvault::MAX_PROFILE_BYTES * 2)
        else {
            return;
        };
        drop(key);
        let Ok(profile) = Profile::from_bytes(&bytes) else {
            return;
        };
        let pressed = row.created_at_ms / 1000;
        let notice = notice(&profile, &id, pressed, cfg);
        drop(profile);
        // Once per incident, whatever restarts or nodes open the vault again.
        let now = now_ms();
        match self
            .inner
            .db
            .call(move |s| s.claim_guardian_notice(&id, now))
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "the guardian's notice could not be claimed; not sent");
                return;
            }
        }
        let (to, text) = match notice {
            Notice::Send { to, text } => (to, text),
            Notice::Nobody(why) => {
                self.timeline(id, "guardian_not_told", format!("guardian not told: {why}"))
                    .await;
                return;
            }
        };
        // On the log before it goes: no entry, no message.
        let entry = LogEntry::GuardianTold {
            student: row.student_id,
            incident: id,
            salt: rand::random(),
            at: Timestamp::now(),
        };
        if let Err(e) = self
            .append_to_log(&entry, id, "control-room:sms", None)
            .await
        {
            tracing::warn!(error = %e, "the guardian's notice could not be logged; not sent");
            self.timeline(
                id,
                "guardian_not_told",
                "guardian not told: the notice could not be written to the log".into(),
            )
            .await;
            return;
        }
        let detail = self.send_notice(gateway, &to, &text).await;
        let kind = if detail.is_ok() {
            "guardian_told"
        } else {
            "guardian_not_told"
        };
        self.timeline(id, kind, detail.unwrap_or_else(|e| e)).await;
    }

    /// Sends the notice, trying again [`SENDS`] times in all; what the
    /// timeline says of it (never the number).
    async fn send_notice(
        &self,
        gateway: &crate::sms::SmsGateway,
        to: &str,
        text: &str,
    ) -> Result<String, String> {
        let mut wait = Duration::from_millis(500);
        let cap = Duration::from_millis(self.inner.cfg.max_backoff_ms.max(500));
        for attempt in 1..=SENDS {
            match gateway.send(to, text).await {
                Ok(()) => {
                    tracing::info!(attempt, "the guardian was told by SMS (logged)");
                    return Ok(
                        "the guardian was told by SMS that the student pressed panic".into(),
                    );
                }
                Err(e) if attempt == SENDS => {
                    tracing::warn!(error = %e, "the guardian's notice was not sent");
                    return Err(format!("guardian not told: {e}"));
                }
                Err(e) => {
                    tracing::info!(error = %e, attempt, "the guardian's notice: trying again");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.inner.shutdown.cancelled() => {
                            return Err("guardian not told: the service stopped".into());
                        }
                    }
                    wait = (wait * 2).min(cap);
                }
            }
        }
        Err("guardian not told".into())
    }
}

#[cfg(test)]
mod tests {
    use sosvault::{IncidentId, Profile};

    use super::{Notice, notice};
    use crate::config::{GuardianConfig, NoticeLanguage};

    fn cfg() -> GuardianConfig {
        GuardianConfig::new(
            "http://127.0.0.1:9/send",
            "sms.key",
            "KOTAPS",
            "0744 232 3100",
        )
    }

    fn profile(guardian: &str) -> Profile {
        let mut p = Profile::new("Ananya Sharma", "+91 98290 41122");
        p.hostel = "Saraswati Girls Hostel, room 214".into();
        p.guardian_name = "Rakesh Sharma".into();
        p.guardian_phone = guardian.into();
        p.medical_notes = "asthma".into();
        p
    }

    #[test]
    fn the_notice_says_when_and_whom_to_call_and_nothing_of_the_profile() {
        let id = IncidentId::from_bytes([0xab; 16]);
        // 15:34:00 UTC is 21:04 IST.
        let pressed = 1_790_000_000 - 1_790_000_000 % 86_400 + 15 * 3600 + 34 * 60;
        let Notice::Send { to, text } = notice(&profile("094141 22019"), &id, pressed, &cfg())
        else {
            panic!("a notice");
        };
        assert_eq!(to.as_str(), "+919414122019");
        assert_eq!(
            text,
            "Kota Police student safety: a student who named you as their guardian pressed the \
             panic button at 21:04 IST. The control room is sending a team. Call the control \
             room on 0744 232 3100, reference ABABAB."
        );
        // Nothing of the profile: the name, the student's number, the
        // hostel, the guardian's name, the medical notes, the guardian's own
        // number.
        for private in [
            "Ananya",
            "Sharma",
            "98290",
            "41122",
            "Saraswati",
            "214",
            "Rakesh",
            "asthma",
            "94141",
        ] {
            assert!(!text.contains(private), "{private} is in the notice");
        }
        assert!(
            text.len() <= 2 * 153,
            "at most two SMS: {} characters",
            text.len()
        );
    }

    /// The notice in Hindi, from the name the configuration gives: the
    /// same facts (the time, the number, the reference), in Devanagari,
    /// within three Unicode SMS (67 characters each when concatenated);
    /// nothing of the profile either.
    #[test]
    fn the_notice_in_hindi_from_the_configured_name_says_the_same() {
        let id = IncidentId::from_bytes([0xab; 16]);
        let pressed = 1_790_000_000 - 1_790_000_000 % 86_400 + 15 * 3600 + 34 * 60;
        let mut cfg = cfg();
        cfg.notice_from = "कोटा पुलिस छात्र सुरक्षा".into();
        cfg.language = NoticeLanguage::Hi;
        let Notice::Send { text, .. } = notice(&profile("094141 22019"), &id, pressed, &cfg) else {
            panic!("a notice");
        };
        assert_eq!(
            text,
            "कोटा पुलिस छात्र सुरक्षा: जिस विद्यार्थी ने आपको अपना अभिभावक बताया है, उसने \
             21:04 IST पर पैनिक बटन दबाया है। कंट्रोल रूम एक टीम भेज रहा है। कंट्रोल रूम को \
             0744 232 3100 पर कॉल करें, संदर्भ ABABAB।"
        );
        for private in ["Ananya", "98290", "Saraswati", "Rakesh", "asthma", "94141"] {
            assert!(!text.contains(private), "{private} is in the notice");
        }
        // UCS-2: one unit per character here (no character beyond the BMP).
        let units = text.encode_utf16().count();
        assert!(units <= 3 * 67, "at most three SMS: {units} characters");
        // And in English, the configured name comes first too.
        cfg.language = NoticeLanguage::En;
        cfg.notice_from = "Rajasthan Police".into();
        let Notice::Send { text, .. } = notice(&profile("094141 22019"), &id, pressed, &cfg) else {
            panic!("a notice");
        };
        assert!(
            text.starts_with("Rajasthan Police: a student who named you"),
            "{text}"
        );
    }

    #[test]
    fn no_number_or_not_a_number_tells_nobody() {
        let id = IncidentId::from_bytes([1; 16]);
        assert_eq!(
            notice(&profile(""), &id, 0, &cfg()),
            Notice::Nobody("the profile names no guardian's number")
        );
        assert_eq!(
            notice(&profile("the warden knows"), &id, 0, &cfg()),
            Notice::Nobody("the guardian's number in the profile is not a phone number")
        );
    }
}
