//! The engine's side of who may do what ([`crate::access`] holds the rules):
//! operator accounts seeded from the config, sessions kept in step with the
//! database (so `sosvault-server operator disable` ends a session and its
//! streams within a second, from another process), claims and handovers,
//! and units' tokens rotated or revoked.

use std::time::Duration;

use serde_json::json;
use sosvault::IncidentId;
use zeroize::Zeroizing;

use super::{
    Audience, Conflict, Engine, EngineError, EventKind, Invalid, OperatorId, Session, now_ms,
    token_hash,
};
use crate::access::{self, Action, Claim, ClaimRefused, Denied};
use crate::store::{AccountRow, IncidentStatus};
use crate::unit::UnitId;

/// How often the service looks for account changes made by another process.
pub const ACCOUNT_POLL: Duration = Duration::from_secs(1);

impl Engine {
    /// Whether `op` may do `action`; the refusal as an answer otherwise.
    pub fn authorize(&self, op: &OperatorId, action: Action<'_>) -> Result<(), EngineError> {
        access::may(op.role, &op.name, action).map_err(EngineError::Denied)
    }

    /// The incident `op` asks to act on (`NotFound` if there is none), once the
    /// rules let them: a dispatcher only on one they handle.
    pub(super) async fn incident_to_act_on(
        &self,
        id: IncidentId,
        op: &OperatorId,
    ) -> Result<crate::store::IncidentRow, EngineError> {
        let row = self.incident_row(id).await?;
        self.authorize(
            op,
            Action::Act {
                handler: row.handler.as_deref(),
            },
        )?;
        Ok(row)
    }

    /// Creates the accounts of the config's `[[operators]]` tables that the
    /// database does not have yet. Once created, an account is the
    /// database's: the `operator` command changes it, the config no more.
    pub(super) async fn seed_accounts(&self) -> Result<(), EngineError> {
        let seeds: Vec<AccountRow> = self
            .inner
            .cfg
            .operators
            .iter()
            .map(|o| AccountRow {
                username: o.username.clone(),
                password_hash: o.password_hash.clone(),
                role: o.role,
                disabled: false,
                changed_at_ms: now_ms(),
            })
            .collect();
        for row in seeds {
            let name = row.username.clone();
            let role = row.role;
            if self.inner.db.call(move |s| s.add_account(&row)).await? {
                tracing::info!(operator = %name, %role, "operator account created from the config");
            }
        }
        Ok(())
    }

    /// Brings the in-memory sessions in step with the store: a session the
    /// store no longer has (its account was changed or disabled by the
    /// `operator` command) ends, with its live streams; one it has and
    /// memory does not (at start) is taken in, with its account's role.
    pub(super) async fn sync_sessions(&self) -> Result<(), EngineError> {
        // Read before the store: a login that saved its session after this
        // is not in what the store answers, and is kept.
        let now = now_ms();
        let (sessions, accounts) = self
            .inner
            .db
            .call(move |s| Ok((s.live_sessions(now)?, s.accounts()?)))
            .await?;
        let mut st = self.state();
        let live: std::collections::HashSet<[u8; 32]> = sessions.iter().map(|s| s.0).collect();
        st.sessions.retain(|hash, s| {
            let keep = live.contains(hash) || s.known_since_ms >= now;
            if !keep {
                s.closed.cancel();
                tracing::info!(operator = %s.username, "operator session ended: the account changed");
            }
            keep
        });
        for (hash, username, expires_at_ms) in sessions {
            if st.sessions.contains_key(&hash) {
                continue;
            }
            let Some(account) = accounts
                .iter()
                .find(|a| a.username == username && !a.disabled)
            else {
                continue;
            };
            st.sessions.insert(
                hash,
                Session {
                    username,
                    role: account.role,
                    known_since_ms: now,
                    expires_at_ms,
                    closed: self.inner.streams.child_token(),
                },
            );
        }
        Ok(())
    }

    /// Watches for account changes by another process (`PRAGMA
    /// data_version`, one cheap read a second, from `version`, read before
    /// the sessions were) and syncs the sessions then.
    pub(super) fn spawn_account_watch(&self, version: i64) {
        let engine = self.clone();
        let stop = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            let mut seen = Some(version);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(ACCOUNT_POLL) => {}
                }
                let Ok(v) = engine.inner.db.call(|s| s.data_version()).await else {
                    continue;
                };
                if seen.is_some_and(|s| s != v)
                    && let Err(e) = engine.sync_sessions().await
                {
                    tracing::warn!(error = ?e, "syncing operator sessions");
                    continue;
                }
                seen = Some(v);
            }
        });
    }

    /// `op` claims an incident, or (a supervisor) hands it to `to`.
    pub async fn claim(
        &self,
        id: IncidentId,
        op: &OperatorId,
        to: Option<&str>,
    ) -> Result<String, EngineError> {
        let row = self.incident_row(id).await?;
        if let Some(to) = to.filter(|t| *t != op.name) {
            let name = to.to_owned();
            let account = self.inner.db.call(move |s| s.account(&name)).await?;
            if !account.is_some_and(|a| !a.disabled && access::can_handle(a.role)) {
                return Err(EngineError::Invalid(Invalid::Operator));
            }
        }
        let decision = access::claim(
            op.role,
            &op.name,
            row.handler.as_deref(),
            to,
            row.status == IncidentStatus::Open,
        );
        let (from, to) = match decision {
            Ok(Claim::AlreadyTheirs) => return Ok(row.handler.unwrap_or_default()),
            Ok(Claim::To { from, to }) => (from, to),
            Err(ClaimRefused::Role(r)) => return Err(EngineError::Denied(Denied::Role(r))),
            Err(ClaimRefused::HandledBy(h)) => {
                return Err(EngineError::Conflict(Conflict::Claimed { by: Some(h) }));
            }
            Err(ClaimRefused::Closed) => {
                return Err(EngineError::Conflict(Conflict::AlreadyClosed));
            }
        };
        let (f, t) = (from.clone(), to.clone());
        let set = self
            .inner
            .db
            .call(move |s| s.set_handler(&id, f.as_deref(), &t))
            .await?;
        if !set {
            // Another claim came first.
            return Err(EngineError::Conflict(Conflict::Claimed { by: None }));
        }
        let detail = match &from {
            None if to == op.name => format!("claimed by {to}"),
            None => format!("handed to {to} by supervisor {}", op.name),
            Some(f) => format!("handed from {f} to {to} by {} {}", op.role, op.name),
        };
        self.timeline(id, "claimed", detail).await;
        self.emit(
            EventKind::Claimed,
            Some(&id),
            None,
            Audience::Operators,
            json!({ "handler": to }),
        );
        Ok(to)
    }

    /// A new token for a unit: the old one opens nothing from now on and
    /// the streams opened with it end. The token is returned once.
    pub async fn rotate_unit_token(&self, unit: UnitId) -> Result<String, EngineError> {
        let mut raw = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut raw);
        let token = Zeroizing::new(hex::encode(raw));
        let hash = token_hash(&token);
        if !self
            .inner
            .db
            .call(move |s| s.set_unit_token(unit, &hash))
            .await?
        {
            return Err(EngineError::NotFound);
        }
        self.forget_unit_tokens(unit, false);
        self.say_tokens_changed(unit, false);
        tracing::info!(unit = %unit, "unit token rotated");
        Ok(token.to_string())
    }

    /// Revokes a unit: its token opens nothing, its streams end, it is
    /// never dispatched again. A team on an incident is taken off it (it
    /// can no longer acknowledge nor be told) and the next nearest team
    /// sent.
    pub async fn revoke_unit(&self, unit: UnitId, op: &OperatorId) -> Result<(), EngineError> {
        let now = now_ms();
        if !self
            .inner
            .db
            .call(move |s| s.revoke_unit(unit, now))
            .await?
        {
            return Err(EngineError::NotFound);
        }
        let on = self.forget_unit_tokens(unit, true);
        self.say_tokens_changed(unit, true);
        tracing::info!(unit = %unit, operator = %op.name, "unit revoked");
        self.emit(
            EventKind::UnitRevoked,
            None,
            Some(unit),
            Audience::Operators,
            json!({}),
        );
        if let Some((incident, team)) = on {
            let why = format!("team revoked by {} {}", op.role, op.name);
            self.taken_off(incident, &team, "revoked", &why).await;
        }
        Ok(())
    }

    /// Drops the cached token lookups of `unit` and ends its streams; with
    /// `remove`, forgets the unit (never picked again). Returns the
    /// incident the unit was on, if any (it is off it now).
    pub(super) fn forget_unit_tokens(
        &self,
        unit: UnitId,
        remove: bool,
    ) -> Option<(sosvault::IncidentId, super::board::Withdrawn)> {
        let mut st = self.state();
        st.unit_tokens.retain(|_, u| *u != unit);
        if let Some(u) = st.units.get_mut(&unit) {
            u.closed.cancel();
            u.closed = self.inner.streams.child_token();
        }
        if !remove {
            return None;
        }
        st.units.remove(&unit);
        st.board.remove_team(unit)
    }

    /// When a unit's stream must end: the service stops, or the unit's
    /// token is rotated or revoked (a unit unknown here: at once).
    pub fn unit_stream_end(&self, unit: UnitId) -> tokio_util::sync::CancellationToken {
        match self.state().units.get(&unit) {
            Some(u) => u.closed.clone(),
            None => {
                let t = tokio_util::sync::CancellationToken::new();
                t.cancel();
                t
            }
        }
    }
}
