//! The sealed trail (`docs/BEYOND-PANIC.md` §1, `PROTOCOL.md` §7.15):
//! points the phone seals to its own vault recipient, kept here unread,
//! opened only with a vault key a panic's release gave, for whoever may see
//! the profile, in memory; pruned after the retention age, and deleted with
//! everything else of the student's by a stop.

use std::time::Duration;

use sosvault::{Profile, Signed, StudentId, TrailPoint, VaultKey};
use subtle::ConstantTimeEq;

use super::{Conflict, Engine, EngineError, now_ms};
use crate::store::{EnrollmentRow, Store, StoreResult, TrailRow};

/// Most points kept per student: two hours at one a minute, twice over.
/// The oldest go first.
pub const MAX_TRAIL_POINTS: u32 = 240;

/// How often points past the retention age are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// The trail as shown beside the profile: the points that opened, oldest
/// first, and how many of the window's points did not.
#[derive(Clone, Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct SealedTrail {
    /// Where the phone was, from `trail_window_secs` before the panic on.
    pub points: Vec<TrailFix>,
    /// Points of the window that did not open with the released vault key
    /// (a phone's fault: nothing the service can read).
    pub unopened: u32,
}

/// One opened point of the trail.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TrailFix {
    /// Latitude, degrees.
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    /// Longitude, degrees.
    #[schema(minimum = -180, maximum = 180)]
    pub lon: f64,
    /// Accuracy radius, metres.
    pub accuracy_m: u32,
    /// When the fix was taken (unix seconds, the phone's clock).
    pub fix_time: u64,
}

/// Why a trail point is refused before the store is asked.
fn check_time(
    issued_at: u64,
    now_ms: u64,
    skew_secs: u64,
    max_age_secs: u64,
) -> Result<(), Conflict> {
    let now = now_ms / 1000;
    if issued_at > now.saturating_add(skew_secs) {
        return Err(Conflict::TrailPointTime { ahead: true });
    }
    if issued_at < now.saturating_sub(max_age_secs) {
        return Err(Conflict::TrailPointTime { ahead: false });
    }
    Ok(())
}

impl Engine {
    /// Takes a point of a student's sealed trail: `stored`, or `duplicate`
    /// for a copy of one stored. Refused, changing nothing: a point that
    /// does not verify, of a device that is not an enrolled student's (or
    /// has stopped), of an epoch the student has no enrollment of, issued
    /// too far ahead or too long ago, or whose counter is not above the
    /// last seen.
    pub async fn trail(&self, bytes: &[u8]) -> Result<&'static str, EngineError> {
        let point = Signed::<TrailPoint>::decode(bytes)
            .map_err(|e| EngineError::malformed("trail point", e))?;
        let body = point.body();
        let now = now_ms();
        let cfg = &self.inner.cfg;
        check_time(
            body.issued_at.0,
            now,
            cfg.max_skew_secs,
            cfg.trail_max_age_secs,
        )?;
        let sid = StudentId::of_device(point.signer());
        let signer = point.signer().to_bytes();
        let row = TrailRow {
            student_id: sid,
            counter: body.counter,
            epoch: body.epoch,
            issued_at: body.issued_at.0,
            received_at_ms: now,
            sealed: body.sealed_location.clone(),
        };
        self.inner
            .db
            .call(move |s| {
                if let Err(e) = enrolled_device(s, &sid, &signer, row.epoch)? {
                    return Ok(Err(e));
                }
                if s.add_trail_point(&row, MAX_TRAIL_POINTS)? {
                    return Ok(Ok("stored"));
                }
                if s.has_trail_point(&row)? {
                    return Ok(Ok("duplicate"));
                }
                Ok(Err(Conflict::Replayed {
                    what: "trail point",
                }
                .into()))
            })
            .await?
    }

    /// The points of `student`'s trail a detail may open: sealed under
    /// `epoch`, issued from the trail window before `panic_at` (unix
    /// seconds) on.
    pub(super) async fn trail_rows(
        &self,
        student: StudentId,
        epoch: u32,
        panic_at: u64,
    ) -> Result<Vec<TrailRow>, EngineError> {
        let since = panic_at.saturating_sub(self.inner.cfg.trail_window_secs);
        Ok(self
            .inner
            .db
            .call(move |s| s.trail_points(&student, epoch, since))
            .await?)
    }

    /// Deletes trail points past the retention age (and the timed panics of
    /// timers checked in before it), every 30 seconds, until shutdown. A failure is logged and tried again at the next turn.
    pub(super) async fn trail_pruner(&self) {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.inner.shutdown.cancelled() => return,
            }
            let before = now_ms().saturating_sub(self.inner.cfg.trail_max_age_secs * 1000);
            // A timer checked in keeps no start location past the same age.
            let pruned = self
                .inner
                .db
                .call(move |s| Ok((s.prune_trail(before)?, s.prune_timers(before)?)))
                .await;
            match pruned {
                Ok((0, 0)) => {}
                Ok((points, timers)) => tracing::info!(
                    points,
                    timers,
                    "sealed trail points and timers' start locations past the retention age deleted"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the sealed trail failed; trying again")
                }
            }
        }
    }
}

/// A store job's check of a device message that names an epoch (a trail
/// point, a timed panic): its signer is an enrolled, unstopped student's
/// device, and the epoch is the student's current one (the student's row
/// says which: no profile read for a point a minute) or the committed one
/// kept while a re-enrollment is pending.
pub(super) fn enrolled_device(
    s: &dyn Store,
    sid: &StudentId,
    signer: &[u8; 32],
    epoch: u32,
) -> StoreResult<Result<(), EngineError>> {
    let Some(student) = s.student(sid)? else {
        return Ok(Err(EngineError::UnknownStudent));
    };
    if student.tombstoned_at.is_some() {
        return Ok(Err(EngineError::Stopped));
    }
    if !bool::from(student.device_public.ct_eq(signer)) {
        return Ok(Err(EngineError::WrongDevice));
    }
    let held = student.epoch == epoch
        || s.previous_enrollment(sid)?
            .is_some_and(|p| p.epoch == epoch);
    if !held {
        return Ok(Err(Conflict::UnknownEpoch.into()));
    }
    Ok(Ok(()))
}

/// What a released vault key opens for a detail: the profile, and the
/// points of the sealed trail.
pub(super) struct Opened {
    pub(super) profile: Profile,
    pub(super) trail: SealedTrail,
}

/// Opens the profile of `e` and the trail `rows` with a released vault key,
/// in memory; `None` if the profile does not open.
pub(super) fn open_vault(vault: &VaultKey, e: &EnrollmentRow, rows: &[TrailRow]) -> Option<Opened> {
    let bytes = vault
        .open(&e.sealed_profile, sosvault::MAX_PROFILE_BYTES * 2)
        .ok()?;
    Some(Opened {
        profile: Profile::from_bytes(&bytes).ok()?,
        trail: open_trail(vault, rows),
    })
}

/// Opens `rows` with the released vault key, in memory: the points that
/// open, oldest first, and how many did not.
fn open_trail(vault: &VaultKey, rows: &[TrailRow]) -> SealedTrail {
    let mut trail = SealedTrail::default();
    for row in rows {
        match vault.open_location(&row.sealed) {
            Ok(fix) => trail.points.push(TrailFix {
                lat: fix.lat(),
                lon: fix.lon(),
                accuracy_m: fix.accuracy_m,
                fix_time: fix.fix_time.0,
            }),
            Err(_) => trail.unopened += 1,
        }
    }
    trail
}

#[cfg(test)]
mod tests {
    use super::{Conflict, check_time};

    #[test]
    fn a_point_must_be_recent_and_not_ahead() {
        let now_ms = 1_790_000_000_000;
        let now = now_ms / 1000;
        assert_eq!(check_time(now, now_ms, 120, 7200), Ok(()));
        assert_eq!(check_time(now + 120, now_ms, 120, 7200), Ok(()));
        assert_eq!(
            check_time(now + 121, now_ms, 120, 7200),
            Err(Conflict::TrailPointTime { ahead: true })
        );
        assert_eq!(check_time(now - 7200, now_ms, 120, 7200), Ok(()));
        assert_eq!(
            check_time(now - 7201, now_ms, 120, 7200),
            Err(Conflict::TrailPointTime { ahead: false })
        );
    }
}
