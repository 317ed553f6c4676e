//! The panic first (issue 17): while panics are being accepted, work that
//! can wait does.
//!
//! Every panic holds the intake busy from its request to its answer
//! ([`Intake::enter`]). Work that a panic's answer must never queue behind
//! (asking the trustees for releases, and with them their CPU and disks;
//! opening vaults; relaying checkpoints to the witnesses) first waits for
//! [`Intake::idle`]: no panic being accepted, or [`MAX_DEFER`] at most, so
//! that a flood of panics delays a release and never starves it.

use std::time::Duration;

use tokio::sync::watch;

/// The longest deferrable work waits for the intake to fall idle.
pub const MAX_DEFER: Duration = Duration::from_secs(2);

/// How many panics are being accepted right now.
#[derive(Debug)]
pub struct Intake {
    busy: watch::Sender<usize>,
}

impl Default for Intake {
    fn default() -> Self {
        Intake {
            busy: watch::Sender::new(0),
        }
    }
}

/// Held while one panic is being accepted; dropping it ends that panic's hold.
#[must_use = "the intake is busy only while the guard lives"]
pub struct Busy<'a>(&'a Intake);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Intake {
    /// One more panic is being accepted, until the guard drops.
    pub fn enter(&self) -> Busy<'_> {
        self.busy.send_modify(|n| *n += 1);
        Busy(self)
    }

    /// Waits until no panic is being accepted, or `max` has passed; says
    /// whether it waited for nothing (true: idle at once or within `max`).
    pub async fn idle(&self, max: Duration) -> bool {
        let mut rx = self.busy.subscribe();
        tokio::time::timeout(max, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Intake;

    #[tokio::test]
    async fn deferred_work_waits_for_the_last_panic_and_no_longer_than_its_bound() {
        let intake = Arc::new(Intake::default());
        assert!(intake.idle(Duration::ZERO).await, "idle at once");
        let a = intake.enter();
        let b = intake.enter();
        // Busy throughout: the bound ends the wait, and says so.
        assert!(!intake.idle(Duration::from_millis(20)).await);
        drop(a);
        assert!(
            !intake.idle(Duration::from_millis(20)).await,
            "one still busy"
        );
        let waiter = tokio::spawn({
            let intake = intake.clone();
            async move { intake.idle(Duration::from_secs(60)).await }
        });
        drop(b);
        // Ends when the last panic is answered, not at its 60 s bound.
        let idle = tokio::time::timeout(Duration::from_secs(10), waiter).await;
        assert!(matches!(idle, Ok(Ok(true))), "{idle:?}");
    }
}
