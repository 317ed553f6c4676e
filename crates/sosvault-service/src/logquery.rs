//! The guard in front of a log's `POST /v1/log/mine`, the same in both
//! services: a student's device-signed [`LogQuery`] is checked
//! ([`LogQuery::check`]: signature, addressed to this log, issued within
//! the clock skew) and its nonce answered once. Each refusal has one code
//! and one status, whichever service gives it.
//!
//! Pure: the caller passes `now`, and keeps the guard wherever its state
//! lives (the trustee in its node, the dispatch service beside its engine's
//! state).
//!
//! ```
//! use sosvault::log::LogQuery;
//! use sosvault::{ControlRoomKey, DeviceKey, Timestamp, TrusteeId};
//! use sosvault_service::logquery::{QueryGuard, QueryRefused};
//!
//! let log = TrusteeId::of_signer(ControlRoomKey::generate().public().verifying_key());
//! let now = Timestamp::now();
//! let query = LogQuery::sign(&DeviceKey::generate(), log, now);
//! let mut guard = QueryGuard::new(120);
//! assert!(guard.admit::<LogQuery>(query.as_bytes(), &log, now).is_ok());
//! let again = guard.admit::<LogQuery>(query.as_bytes(), &log, now).unwrap_err();
//! assert_eq!((again.status(), again.code()), (409, "replayed"));
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sosvault::log::LogQuery;
use sosvault::query::{Checked, DeviceQuery, QueryRefusal};
use sosvault::{Signed, Timestamp, TrusteeId};
use utoipa::ToSchema;

use crate::body::BodyRefused;
use crate::http::ErrorBody;

crate::base64_fields! {
    log_query_field: Signed::<LogQuery>::MAX_LEN, "Base64 of a device-signed `sosvault/log-query/v1` addressed to this log: a trustee's id, or the control room's `control_room_id` (from `/v1/info`).";
}

/// `POST /v1/log/mine`'s request, in both services: the student's
/// device-signed query.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MineRequest {
    /// The signed query, base64.
    #[schema(schema_with = log_query_field)]
    pub query: String,
}

impl MineRequest {
    /// The request carrying the signed query `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use base64::Engine as _;
        Self {
            query: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The signed query, decoded ([`crate::body::base64_field`]: `too_long`
    /// past the largest query, `bad_base64`).
    pub fn query(&self) -> Result<Vec<u8>, BodyRefused> {
        crate::body::base64_field("query", &self.query, Signed::<LogQuery>::MAX_LEN)
    }
}

/// The refusals of a device-signed query as both services document them
/// (`responses(..., MineRefusals)`: `POST /v1/log/mine`, and the dispatch
/// service's `POST /v1/incident/status`): one per status of
/// [`QueryRefused`] and of the body ([`BodyRefused`]).
#[derive(utoipa::IntoResponses)]
pub enum MineRefusals {
    /// `bad_json` (the body), `too_long`, `bad_base64` (the field);
    /// `malformed`: the query does not decode or its signature does not
    /// verify.
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// `wrong_log`: the query is addressed to another log (another
    /// trustee, or another control room).
    #[response(status = 403)]
    WrongLog(ErrorBody),
    /// `replayed`: this query was answered before.
    #[response(status = 409)]
    Replayed(ErrorBody),
    /// `stale_query`: the query's time is outside the allowed clock skew.
    #[response(status = 422)]
    Stale(ErrorBody),
    /// `rate_limited`: too many queries right now.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// `internal`.
    #[response(status = 500)]
    Internal(ErrorBody),
}

/// Most nonces remembered at once; past it, queries are refused
/// ([`QueryRefused::Busy`]) until the oldest leave the window.
pub const MAX_SEEN: usize = 100_000;

/// Why a log query was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryRefused {
    /// It does not decode, or its signature does not verify.
    #[error("the query is malformed or its signature does not verify: {0}")]
    Malformed(String),
    /// It is addressed to another log.
    #[error("the query is addressed to another log")]
    WrongLog,
    /// Its time is outside the allowed clock skew.
    #[error("the query's time is outside the allowed clock skew")]
    Stale,
    /// Its nonce was answered already.
    #[error("this query was already answered")]
    Replayed,
    /// Too many nonces are remembered right now.
    #[error("too many queries right now; try again in a few minutes")]
    Busy,
}

impl QueryRefused {
    /// Every refusal, for documents and tests.
    pub const ALL: [QueryRefused; 5] = [
        Self::Malformed(String::new()),
        Self::WrongLog,
        Self::Stale,
        Self::Replayed,
        Self::Busy,
    ];

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) => 400,
            Self::WrongLog => 403,
            Self::Replayed => 409,
            Self::Stale => 422,
            Self::Busy => 429,
        }
    }

    /// The error code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::WrongLog => "wrong_log",
            Self::Stale => "stale_query",
            Self::Replayed => "replayed",
            Self::Busy => "rate_limited",
        }
    }
}

impl From<QueryRefusal> for QueryRefused {
    fn from(e: QueryRefusal) -> Self {
        match e {
            QueryRefusal::WrongTrustee => Self::WrongLog,
            QueryRefusal::Stale => Self::Stale,
            e => Self::Malformed(e.to_string()),
        }
    }
}

/// The nonces answered within the clock skew, and the skew.
#[derive(Debug)]
pub struct QueryGuard {
    skew_secs: u64,
    seen: HashMap<[u8; 16], Timestamp>,
}

impl QueryGuard {
    /// A guard admitting queries issued within `skew_secs` of `now`.
    pub fn new(skew_secs: u64) -> Self {
        Self {
            skew_secs,
            seen: HashMap::new(),
        }
    }

    /// [`sosvault::query::check`] of a query of kind `Q` (a
    /// [`LogQuery`], a [`StatusQuery`](sosvault::status::StatusQuery))
    /// with this guard's skew; remembers nothing (run it outside any lock,
    /// then [`remember`](Self::remember)).
    pub fn check<Q: DeviceQuery>(
        &self,
        query: &[u8],
        log: &TrusteeId,
        now: Timestamp,
    ) -> Result<Checked<Q>, QueryRefused> {
        Ok(sosvault::query::check(query, log, now, self.skew_secs)?)
    }

    /// Admits a checked query's nonce once: refuses a nonce seen within
    /// the window (by a query of any kind), and any nonce while
    /// [`MAX_SEEN`] are remembered.
    pub fn remember<Q: DeviceQuery>(
        &mut self,
        query: &Checked<Q>,
        now: Timestamp,
    ) -> Result<(), QueryRefused> {
        // A nonce stays until its query could no longer pass the skew check.
        let horizon = now.minus(self.skew_secs.saturating_mul(2));
        self.seen.retain(|_, at| *at >= horizon);
        let nonce = query.nonce();
        if self.seen.contains_key(&nonce) {
            return Err(QueryRefused::Replayed);
        }
        if self.seen.len() >= MAX_SEEN {
            return Err(QueryRefused::Busy);
        }
        self.seen
            .insert(nonce, query.query().body().issued_at().max(now));
        Ok(())
    }

    /// [`check`](Self::check), then [`remember`](Self::remember).
    pub fn admit<Q: DeviceQuery>(
        &mut self,
        query: &[u8],
        log: &TrusteeId,
        now: Timestamp,
    ) -> Result<Checked<Q>, QueryRefused> {
        let checked = self.check::<Q>(query, log, now)?;
        self.remember(&checked, now)?;
        Ok(checked)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashSet;

    use sosvault::log::LogQuery;
    use sosvault::{ControlRoomKey, DeviceKey, Timestamp, TrusteeId};

    use super::{MAX_SEEN, MineRefusals, MineRequest, QueryGuard, QueryRefused};
    use crate::body::BodyRefused;

    fn log() -> TrusteeId {
        TrusteeId::of_signer(ControlRoomKey::generate().public().verifying_key())
    }

    #[test]
    fn every_refusal_has_its_own_code_and_a_client_error_status() {
        let codes: HashSet<_> = QueryRefused::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), QueryRefused::ALL.len());
        for r in QueryRefused::ALL {
            assert!((400..500).contains(&r.status()), "{r:?}");
        }
    }

    #[test]
    fn each_bad_query_is_refused_for_its_reason_and_leaves_no_nonce() {
        let (ours, now) = (log(), Timestamp::now());
        let key = DeviceKey::generate();
        let mut g = QueryGuard::new(120);
        let other = LogQuery::sign(&key, log(), now);
        assert_eq!(
            g.admit::<LogQuery>(other.as_bytes(), &ours, now)
                .unwrap_err(),
            QueryRefused::WrongLog
        );
        for at in [now.minus(121), now.plus(121)] {
            let q = LogQuery::sign(&key, ours, at);
            assert_eq!(
                g.admit::<LogQuery>(q.as_bytes(), &ours, now).unwrap_err(),
                QueryRefused::Stale
            );
        }
        let mut forged = LogQuery::sign(&key, ours, now).as_bytes().to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(
            g.admit::<LogQuery>(&forged, &ours, now),
            Err(QueryRefused::Malformed(_))
        ));
        assert!(matches!(
            g.admit::<LogQuery>(b"", &ours, now),
            Err(QueryRefused::Malformed(_))
        ));
        assert!(g.seen.is_empty(), "a refused query is not remembered");
    }

    #[test]
    fn a_nonce_is_answered_once_within_the_window_and_forgotten_after_it() {
        let (ours, now) = (log(), Timestamp::now());
        let mut g = QueryGuard::new(120);
        let q = LogQuery::sign(&DeviceKey::generate(), ours, now);
        g.admit::<LogQuery>(q.as_bytes(), &ours, now).unwrap();
        assert_eq!(
            g.admit::<LogQuery>(q.as_bytes(), &ours, now.plus(100))
                .unwrap_err(),
            QueryRefused::Replayed
        );
        // Past the window the query is stale anyway, and the next query
        // admitted drops its nonce: memory holds only the window.
        let later = now.plus(241);
        assert_eq!(
            g.admit::<LogQuery>(q.as_bytes(), &ours, later).unwrap_err(),
            QueryRefused::Stale
        );
        let fresh = LogQuery::sign(&DeviceKey::generate(), ours, later);
        g.admit::<LogQuery>(fresh.as_bytes(), &ours, later).unwrap();
        assert_eq!(g.seen.len(), 1);
    }

    #[test]
    fn a_full_guard_refuses_new_nonces_until_old_ones_leave() {
        let (ours, now) = (log(), Timestamp::now());
        let mut g = QueryGuard::new(120);
        for i in 0..MAX_SEEN {
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
            g.seen.insert(nonce, now);
        }
        let q = LogQuery::sign(&DeviceKey::generate(), ours, now);
        assert_eq!(
            g.admit::<LogQuery>(q.as_bytes(), &ours, now).unwrap_err(),
            QueryRefused::Busy
        );
        let later = now.plus(241);
        let q = LogQuery::sign(&DeviceKey::generate(), ours, later);
        assert!(g.admit::<LogQuery>(q.as_bytes(), &ours, later).is_ok());
    }

    #[test]
    fn every_refusal_of_a_query_is_documented_once_with_the_error_body() {
        use utoipa::IntoResponses as _;
        let documented = MineRefusals::responses();
        let body_refusals = [
            BodyRefused::BadJson(String::new()),
            BodyRefused::FieldTooLong {
                field: "query",
                max_len: 1,
            },
            BodyRefused::NotBase64 { field: "query" },
        ];
        let all = QueryRefused::ALL;
        let statuses = all
            .iter()
            .map(QueryRefused::status)
            .chain(body_refusals.iter().map(BodyRefused::status))
            .chain([500]);
        for status in statuses {
            let answer = documented
                .get(&status.to_string())
                .unwrap_or_else(|| panic!("{status} is not documented"));
            let json = serde_json::to_string(answer).unwrap();
            assert!(
                json.contains("#/components/schemas/ErrorBody"),
                "{status}: {json}"
            );
        }
        for q in QueryRefused::ALL {
            let said = serde_json::to_string(&documented[&q.status().to_string()]).unwrap();
            assert!(
                said.contains(&format!("`{}`", q.code())),
                "{}: {said}",
                q.code()
            );
        }
    }

    #[test]
    fn a_query_request_carries_the_signed_bytes_and_bounds_them() {
        let bytes = LogQuery::sign(&DeviceKey::generate(), log(), Timestamp::now())
            .as_bytes()
            .to_vec();
        assert_eq!(MineRequest::of(&bytes).query(), Ok(bytes));
        let long = MineRequest {
            query: "A".repeat(4096),
        };
        assert_eq!(long.query().unwrap_err().code(), "too_long");
    }
}
