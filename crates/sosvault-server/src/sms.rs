//! The SMS gateway adapter: one text to one number, through a gateway in
//! the style Indian operators offer (a form `POST` of `apikey`, `sender`,
//! `numbers` and `message`, answered with JSON whose `status` is
//! `success`). Only the guardian's notice goes through it
//! (`docs/BEYOND-PANIC.md` §2).
//!
//! The API key is read from a file of mode 0600, kept zeroized, never
//! logged (`Debug` says `[redacted]`). An `https://` gateway is trusted
//! under `gateway_ca` only; plain `http://` only on loopback (the demo's
//! and the tests' fake gateway).

use std::time::Duration;

pub mod loopback;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::config::{ConfigError, GuardianConfig};

/// Why a text did not go.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmsError {
    /// The gateway could not be reached (or did not answer in time).
    #[error("the SMS gateway could not be reached: {0}")]
    Unreachable(String),
    /// The gateway answered, and refused the text.
    #[error("the SMS gateway refused the message: {0}")]
    Refused(String),
}

/// The configured gateway.
pub struct SmsGateway {
    url: String,
    key: Zeroizing<String>,
    sender: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for SmsGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsGateway")
            .field("url", &self.url)
            .field("key", &"[redacted]")
            .field("sender", &self.sender)
            .finish()
    }
}

/// What a gateway answers.
#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    errors: Vec<AnswerError>,
}

#[derive(Deserialize)]
struct AnswerError {
    #[serde(default)]
    message: String,
}

impl SmsGateway {
    /// The gateway `[guardians]` names, its key read from `api_key_file`
    /// (which must be mode 0600).
    pub fn from_config(g: &GuardianConfig) -> anyhow::Result<Self> {
        check_transport(g)?;
        crate::files::check_key_file(&g.api_key_file, "the SMS gateway's API key file")?;
        let key = Zeroizing::new(
            std::fs::read_to_string(&g.api_key_file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", g.api_key_file.display()))?
                .trim()
                .to_owned(),
        );
        if key.is_empty() {
            anyhow::bail!(
                "the SMS gateway's API key file {} is empty: put the key the gateway gave you in it",
                g.api_key_file.display()
            );
        }
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(ca) = &g.gateway_ca {
            let tls = sosvault_service::tls::client_config(ca, None)?;
            builder = builder.use_preconfigured_tls(tls).https_only(true);
        }
        Ok(Self {
            url: g.gateway_url.clone(),
            key,
            sender: g.sender.clone(),
            http: builder.build()?,
        })
    }

    /// Sends `text` to `to` (digits with a leading `+`).
    pub async fn send(&self, to: &str, text: &str) -> Result<(), SmsError> {
        let mut form = vec![
            ("apikey", self.key.as_str()),
            ("sender", self.sender.as_str()),
            ("numbers", to.trim_start_matches('+')),
            ("message", text),
        ];
        // A text beyond ASCII (a notice in Hindi) goes as Unicode SMS:
        // the gateways of this style want it said.
        if !text.is_ascii() {
            form.push(("unicode", "true"));
        }
        let resp = self
            .http
            .post(&self.url)
            .form(&form)
            .send()
            .await
            .map_err(|e| SmsError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        let answer: Option<Answer> = resp.json().await.ok();
        match answer {
            Some(a) if status.is_success() && a.status == "success" => Ok(()),
            Some(a) => Err(SmsError::Refused(
                a.errors
                    .first()
                    .map_or_else(|| format!("HTTP {status}"), |e| e.message.clone()),
            )),
            None => Err(SmsError::Refused(format!("HTTP {status}, no JSON answer"))),
        }
    }
}

/// `https://` with `gateway_ca`, or `http://` on loopback.
pub(crate) fn check_transport(g: &GuardianConfig) -> Result<(), ConfigError> {
    let url = reqwest::Url::parse(&g.gateway_url).map_err(|_| {
        ConfigError::Invalid(format!(
            "guardians: gateway_url {:?} is not a URL",
            g.gateway_url
        ))
    })?;
    let host = url.host_str().unwrap_or("");
    match url.scheme() {
        "https" if g.gateway_ca.is_none() => Err(ConfigError::Invalid(
            "guardians: an https:// gateway needs gateway_ca, the CA certificates (PEM) to trust \
             for it (e.g. /etc/ssl/certs/ca-certificates.crt)"
                .into(),
        )),
        "https" => Ok(()),
        "http" if sosvault_service::tls::is_loopback_host(host) => Ok(()),
        "http" => Err(ConfigError::Invalid(
            "guardians: plain http:// is for a loopback gateway only; use https:// with gateway_ca"
                .into(),
        )),
        other => Err(ConfigError::Invalid(format!(
            "guardians: gateway_url scheme {other:?} (use https://)"
        ))),
    }
}

/// A phone number as the gateway takes it (`+` and 8 to 15 digits), from a
/// profile's free text: spaces, dashes, dots and brackets dropped; a
/// ten-digit number, or one with a leading `0`, read under
/// `country_code`. `None`: not a phone number.
pub fn normalize_number(raw: &str, country_code: &str) -> Option<String> {
    let trimmed = raw.trim();
    let plus = trimmed.starts_with('+');
    let mut digits = String::new();
    for c in trimmed.trim_start_matches('+').chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    let full = if plus {
        digits
    } else if let Some(local) = digits.strip_prefix('0').filter(|d| d.len() == 10) {
        format!("{country_code}{local}")
    } else if digits.len() == 10 {
        format!("{country_code}{digits}")
    } else {
        return None;
    };
    (8..=15).contains(&full.len()).then(|| format!("+{full}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::loopback::{LoopbackGateway, Sent};
    use super::{SmsError, SmsGateway, normalize_number};
    use crate::config::GuardianConfig;

    /// The adapter for `url`, its key file written (mode 0600) in `dir`.
    fn adapter(dir: &std::path::Path, url: &str, key: &str) -> SmsGateway {
        let key_file = dir.join("sms.key");
        crate::files::write_private(&key_file, format!("{key}\n").as_bytes()).unwrap();
        SmsGateway::from_config(&GuardianConfig::new(
            url,
            key_file,
            "KOTAPS",
            "0744 232 3100",
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn a_text_goes_with_the_key_and_a_refusal_or_an_outage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let gateway = LoopbackGateway::start("k-123").await.unwrap();
        let sms = adapter(dir.path(), gateway.url(), "k-123");
        assert!(!format!("{sms:?}").contains("k-123"), "the key is redacted");
        sms.send("+919414122019", "hello").await.unwrap();
        assert_eq!(
            gateway.sent(),
            [Sent {
                to: "919414122019".into(),
                sender: "KOTAPS".into(),
                text: "hello".into(),
                unicode: false,
            }]
        );
        // Beyond ASCII (a notice in Hindi), it says to send it as Unicode.
        sms.send("+919414122019", "पैनिक").await.unwrap();
        let last = gateway.sent().pop().unwrap();
        assert_eq!((last.text.as_str(), last.unicode), ("पैनिक", true));
        let wrong = adapter(dir.path(), gateway.url(), "k-999");
        assert!(
            matches!(wrong.send("+919414122019", "x").await, Err(SmsError::Refused(m)) if m == "invalid API key")
        );
        gateway.set_down(true);
        assert!(matches!(
            sms.send("+919414122019", "x").await,
            Err(SmsError::Refused(_))
        ));
        assert_eq!(gateway.sent().len(), 2, "nothing more was taken");
        let url = gateway.url().to_owned();
        drop(gateway);
        let gone = adapter(dir.path(), &url, "k-123");
        assert!(matches!(
            gone.send("+919414122019", "x").await,
            Err(SmsError::Unreachable(_))
        ));
    }

    #[test]
    fn a_profiles_number_is_read_as_the_gateway_takes_it_or_not_at_all() {
        for (raw, want) in [
            ("+91 94141 22019", Some("+919414122019")),
            ("94141 22019", Some("+919414122019")),
            ("094141-22019", Some("+919414122019")),
            ("(0744) 232-3100", Some("+917442323100")),
            ("+44 20 7946 0958", Some("+442079460958")),
            ("", None),
            ("ask the warden", None),
            ("12345", None),
            ("+1234567890123456", None),
            ("9414122019 ext 4", None),
        ] {
            assert_eq!(normalize_number(raw, "91").as_deref(), want, "{raw:?}");
        }
    }
}
