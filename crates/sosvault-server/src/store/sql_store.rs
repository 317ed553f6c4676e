//! [`SqlStore`]: the store on one [`Backend`] connection. Its transactions
//! and savepoints, the purge after a wipe, and the group commit's side of
//! them, the same for SQLite and PostgreSQL.

use std::cell::Cell;

use super::access::{self, AccessStore, AccountChange, AccountRow};
use super::sql::{Backend, Purge};
use super::writer::GroupCommit;
use super::{Store, StoreResult};
use crate::unit::UnitId;
use sosvault::IncidentId;

/// The store on one connection. Used alone, every method is its own
/// transaction; behind [`Db`](super::Db), batches of jobs share one.
pub struct SqlStore<B> {
    pub(super) db: B,
    /// Inside a batch's transaction (between `begin` and `commit`).
    in_batch: Cell<bool>,
    /// How many [`SqlStore::atomic`] calls are running, one inside another.
    atomic_depth: Cell<u32>,
    /// The batch's transaction is not opened yet ([`GroupCommit::begin`]).
    begin_due: Cell<bool>,
    /// The last job of the batch succeeded and its savepoint is not
    /// released yet ([`GroupCommit::release`]).
    release_due: Cell<bool>,
    /// What the current batch deleted that a purge must follow, if anything.
    pending: Cell<Option<Purge>>,
    /// The purge after the current batch must succeed (a stop was in it).
    must_purge: Cell<bool>,
}

impl<B: Backend> SqlStore<B> {
    /// The store on `db`, whose schema is migrated.
    pub(super) fn on(db: B) -> StoreResult<Self> {
        super::schema::migrate(&db)?;
        Ok(Self {
            db,
            in_batch: Cell::new(false),
            atomic_depth: Cell::new(0),
            begin_due: Cell::new(false),
            release_due: Cell::new(false),
            pending: Cell::new(None),
            must_purge: Cell::new(false),
        })
    }

    /// Runs `f` atomically: its own transaction when called alone, a nested
    /// savepoint inside a batch or inside another `atomic`. An error undoes
    /// what `f` wrote.
    pub(super) fn atomic<T>(&self, f: impl FnOnce(&B) -> StoreResult<T>) -> StoreResult<T> {
        let depth = self.atomic_depth.get();
        self.atomic_depth.set(depth + 1);
        let done = self.atomic_at(depth, f);
        self.atomic_depth.set(depth);
        done
    }

    fn atomic_at<T>(&self, depth: u32, f: impl FnOnce(&B) -> StoreResult<T>) -> StoreResult<T> {
        let c = &self.db;
        if !self.in_batch.get() && depth == 0 {
            c.reconnect_if_lost()?;
            c.batch(B::BEGIN)?;
            // The close is the commit; if it fails the transaction is still
            // open and must be undone too.
            return match f(c).and_then(|v| c.batch("COMMIT").map(|()| v)) {
                Ok(v) => Ok(v),
                Err(e) => {
                    let _ = c.batch("ROLLBACK");
                    Err(e)
                }
            };
        }
        // Inside a transaction: a savepoint, which success leaves open. What
        // encloses it (the job's savepoint, another `atomic`, the commit)
        // keeps or undoes its writes with its own, so releasing it here
        // would only cost a round trip. Named for its depth: `ROLLBACK TO`
        // finds the newest savepoint of a name, which must be this one, not
        // a kept inner one.
        c.batch(&format!("SAVEPOINT op{depth}"))?;
        f(c).inspect_err(|_| {
            let _ = c.batch(&format!("ROLLBACK TO op{depth}; RELEASE op{depth}"));
        })
    }

    /// After a wipe: purges now (outside a batch) or once the batch is
    /// committed, before the job that asked is answered. A key's purge is
    /// best effort (logged if it fails), a stop's must succeed.
    pub(super) fn purge_soon(&self, what: Purge) -> StoreResult<()> {
        if self.in_batch.get() {
            let stronger = match (self.pending.get(), what) {
                (Some(Purge::Stop), _) | (_, Purge::Stop) => Purge::Stop,
                _ => Purge::Key,
            };
            self.pending.set(Some(stronger));
            return Ok(());
        }
        self.purge_now(what)
    }

    fn purge_now(&self, what: Purge) -> StoreResult<()> {
        match (self.db.purge(what), what) {
            (Err(e), Purge::Key) => {
                tracing::warn!(
                    backend = B::NAME,
                    "store: purging after deleting an incident key: {e}"
                );
                Ok(())
            }
            (r, _) => r,
        }
    }
}

impl<B: Backend> GroupCommit for SqlStore<B>
where
    SqlStore<B>: Store,
{
    type Store = dyn Store;
    type Error = super::StoreError;

    fn store(&self) -> &(dyn Store + 'static) {
        self
    }

    fn begin(&mut self) -> StoreResult<()> {
        self.must_purge.set(false);
        self.db.reconnect_if_lost()?;
        // Sent with the first job's savepoint: one round trip.
        self.begin_due.set(true);
        self.in_batch.set(true);
        Ok(())
    }

    fn savepoint(&mut self) -> StoreResult<()> {
        // What is due before it goes with it, in one round trip: the
        // batch's BEGIN, or the last job's release.
        let sql = if self.begin_due.replace(false) {
            format!("{}; SAVEPOINT job", B::BEGIN)
        } else if self.release_due.replace(false) {
            "RELEASE job; SAVEPOINT job".to_owned()
        } else {
            "SAVEPOINT job".to_owned()
        };
        self.db.batch(&sql)
    }

    fn release(&mut self) -> StoreResult<()> {
        // Sent with the next job's savepoint; the commit releases the last.
        self.release_due.set(true);
        Ok(())
    }

    fn rollback_to(&mut self) -> StoreResult<()> {
        self.db.batch("ROLLBACK TO job; RELEASE job")
    }

    fn commit(&mut self) -> StoreResult<()> {
        // A commit keeps the writes of every savepoint still open.
        self.release_due.set(false);
        if self.begin_due.replace(false) {
            // No job opened the transaction: there is nothing to commit.
            self.in_batch.set(false);
            return Ok(());
        }
        let r = self.db.batch("COMMIT");
        if r.is_ok() {
            self.in_batch.set(false);
        }
        r
    }

    fn rollback(&mut self) {
        self.release_due.set(false);
        self.begin_due.set(false);
        if self.in_batch.replace(false) {
            let _ = self.db.batch("ROLLBACK");
        }
        self.pending.set(None);
        self.must_purge.set(false);
    }

    fn take_after_commit(&mut self) -> bool {
        match self.pending.take() {
            Some(p) => {
                self.must_purge.set(p == Purge::Stop);
                true
            }
            None => false,
        }
    }

    fn after_commit(&mut self) -> StoreResult<()> {
        let what = if self.must_purge.get() {
            Purge::Stop
        } else {
            Purge::Key
        };
        self.purge_now(what)
    }
}

impl<B: Backend> AccessStore for SqlStore<B> {
    fn account(&self, username: &str) -> StoreResult<Option<AccountRow>> {
        access::account(&self.db, username)
    }
    fn accounts(&self) -> StoreResult<Vec<AccountRow>> {
        access::accounts(&self.db)
    }
    fn add_account(&self, row: &AccountRow) -> StoreResult<bool> {
        access::add_account(&self.db, row)
    }
    fn change_account(
        &self,
        username: &str,
        change: &AccountChange,
        now_ms: u64,
    ) -> StoreResult<bool> {
        self.atomic(|c| access::change_account(c, username, change, now_ms))
    }
    fn data_version(&self) -> StoreResult<i64> {
        self.db.data_version()
    }
    fn handler(&self, incident: &IncidentId) -> StoreResult<Option<String>> {
        access::handler(&self.db, incident)
    }
    fn set_handler(
        &self,
        incident: &IncidentId,
        from: Option<&str>,
        to: &str,
    ) -> StoreResult<bool> {
        access::set_handler(&self.db, incident, from, to)
    }
    fn set_unit_token(&self, unit: UnitId, token_hash: &[u8; 32]) -> StoreResult<bool> {
        access::set_unit_token(&self.db, unit, token_hash)
    }
    fn revoke_unit(&self, unit: UnitId, now_ms: u64) -> StoreResult<bool> {
        access::revoke_unit(&self.db, unit, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::SqlStore;
    use crate::store::GroupCommit;
    use crate::store::sql::Backend;
    use crate::store::tests::iid;
    use crate::store::{PgStore, SqliteStore, Store, StoreError, StoreResult};

    /// An `atomic` inside another: the inner one's failure undoes only its
    /// own writes, and the outer one still commits once; the outer one's
    /// failure undoes the inner ones it kept too. Alone and inside a
    /// batch's job.
    fn nested<B: Backend>(s: &mut SqlStore<B>)
    where
        SqlStore<B>: Store,
    {
        for in_batch in [false, true] {
            let n = if in_batch { 10 } else { 0 };
            if in_batch {
                s.begin().unwrap();
                s.savepoint().unwrap();
            }
            let outer: StoreResult<()> = s.atomic(|_| {
                s.add_timeline(&iid(n + 1), 1, "x", "outer")?;
                let kept: StoreResult<()> =
                    s.atomic(|_| s.add_timeline(&iid(n + 1), 2, "x", "kept inner"));
                kept?;
                let inner: StoreResult<()> = s.atomic(|_| {
                    s.add_timeline(&iid(n + 2), 1, "x", "inner")?;
                    Err(StoreError::JobFailed)
                });
                assert!(inner.is_err());
                s.add_timeline(&iid(n + 1), 3, "x", "after the inner one")
            });
            outer.unwrap();
            let failed: StoreResult<()> = s.atomic(|_| {
                s.add_timeline(&iid(n + 3), 1, "x", "undone")?;
                s.atomic(|_| s.add_timeline(&iid(n + 3), 2, "x", "kept inner, then undone"))?;
                Err(StoreError::JobFailed)
            });
            assert!(failed.is_err());
            s.add_timeline(&iid(n + 4), 1, "x", "after the failed one")
                .unwrap();
            if in_batch {
                s.release().unwrap();
                s.commit().unwrap();
            }
            assert_eq!(
                s.timeline(&iid(n + 1)).unwrap().len(),
                3,
                "batch: {in_batch}"
            );
            assert!(s.timeline(&iid(n + 2)).unwrap().is_empty());
            assert!(s.timeline(&iid(n + 3)).unwrap().is_empty());
            assert_eq!(s.timeline(&iid(n + 4)).unwrap().len(), 1);
        }
    }

    #[test]
    fn a_failed_atomic_inside_another_undoes_only_itself_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        nested(&mut SqliteStore::open(&dir.path().join("db")).unwrap());
    }

    #[test]
    fn a_failed_atomic_inside_another_undoes_only_itself_on_postgres() {
        let db = sosvault_testkit::postgres::TestDatabase::create();
        nested(&mut PgStore::connect(db.url()).unwrap());
    }
}
