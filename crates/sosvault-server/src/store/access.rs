//! The store's half of who may do what: operator accounts (argon2id PHC
//! strings, a role, disabled or not), who handles each incident, and the
//! units' tokens (rotated or revoked).
//!
//! Accounts are managed by `sosvault-server operator ...`, which opens the
//! database beside the running service (SQLite in WAL mode takes a second
//! writer; each change is one short transaction). Every change to an
//! account deletes its sessions in the same transaction: the service sees
//! the sessions gone ([`AccessStore::data_version`] tells it another
//! process wrote) and ends them and their live streams.

use sosvault::IncidentId;

use super::sql::{Backend, Row, all, exec, maybe, params};
use super::{StoreError, StoreResult};
use crate::access::Role;
use crate::auth::StoredPassword;
use crate::unit::UnitId;

/// The tables of this module (created at open, after the main schema).
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS operator_accounts (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    changed_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS access_changes (
    id INTEGER PRIMARY KEY,
    version INTEGER NOT NULL
);
"#;

/// An operator account as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRow {
    /// The login name.
    pub username: String,
    /// The argon2id PHC string of the password.
    pub password_hash: StoredPassword,
    /// The role.
    pub role: Role,
    /// A disabled account cannot log in and has no sessions.
    pub disabled: bool,
    /// When it was created or last changed (unix ms).
    pub changed_at_ms: u64,
}

/// A change to an account.
#[derive(Clone, Debug)]
pub enum AccountChange {
    /// Disable (true) or enable (false).
    Disabled(bool),
    /// A new password (its PHC string).
    Password(StoredPassword),
    /// A new role.
    Role(Role),
}

/// Accounts, handlers and unit tokens.
pub trait AccessStore {
    /// An account by name.
    fn account(&self, username: &str) -> StoreResult<Option<AccountRow>>;
    /// Every account, by name.
    fn accounts(&self) -> StoreResult<Vec<AccountRow>>;
    /// Adds an account; `false` (nothing written) if the name is taken.
    fn add_account(&self, row: &AccountRow) -> StoreResult<bool>;
    /// Changes an account and ends its sessions, in one transaction;
    /// `false` if there is no such account.
    fn change_account(
        &self,
        username: &str,
        change: &AccountChange,
        now_ms: u64,
    ) -> StoreResult<bool>;
    /// A number that changes when another connection (the `operator`
    /// command, another node) changed the accounts: SQLite's `PRAGMA
    /// data_version`; on PostgreSQL, a counter every account change bumps.
    fn data_version(&self) -> StoreResult<i64>;
    /// The operator handling an incident, if any.
    fn handler(&self, incident: &IncidentId) -> StoreResult<Option<String>>;
    /// Hands an incident to `to` if it is still handled by `from` (a
    /// compare-and-set: two claims at once cannot both win); `false` if it
    /// was not.
    fn set_handler(&self, incident: &IncidentId, from: Option<&str>, to: &str)
    -> StoreResult<bool>;
    /// Replaces a unit's token (its hash); `false` if there is no such
    /// live unit.
    fn set_unit_token(&self, unit: UnitId, token_hash: &[u8; 32]) -> StoreResult<bool>;
    /// Revokes a unit: no token opens it again, it is dispatched no more;
    /// `false` if there is no such live unit.
    fn revoke_unit(&self, unit: UnitId, now_ms: u64) -> StoreResult<bool>;
}

fn account_row(r: &Row) -> StoreResult<AccountRow> {
    let role: String = r.get(2)?;
    Ok(AccountRow {
        username: r.get(0)?,
        password_hash: StoredPassword::from(r.get::<String>(1)?),
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::Database(format!("column 2: unknown role {role:?}")))?,
        disabled: r.get(3)?,
        changed_at_ms: r.get(4)?,
    })
}

const ACCOUNT_COLS: &str = "username, password_hash, role, disabled, changed_at_ms";

/// The SQL of [`AccessStore`] on one connection.
pub(super) fn account<B: Backend>(c: &B, username: &str) -> StoreResult<Option<AccountRow>> {
    maybe(
        c,
        &format!("SELECT {ACCOUNT_COLS} FROM operator_accounts WHERE username = ?1"),
        params![username],
        account_row,
    )
}

pub(super) fn accounts<B: Backend>(c: &B) -> StoreResult<Vec<AccountRow>> {
    all(
        c,
        &format!("SELECT {ACCOUNT_COLS} FROM operator_accounts ORDER BY username"),
        params![],
        account_row,
    )
}

pub(super) fn add_account<B: Backend>(c: &B, row: &AccountRow) -> StoreResult<bool> {
    let n = exec(
        c,
        "INSERT INTO operator_accounts (username, password_hash, role, disabled, changed_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (username) DO NOTHING",
        params![
            row.username,
            row.password_hash.as_str(),
            row.role.as_str(),
            row.disabled,
            row.changed_at_ms as i64
        ],
    )?;
    Ok(n == 1)
}

pub(super) fn change_account<B: Backend>(
    c: &B,
    username: &str,
    change: &AccountChange,
    now_ms: u64,
) -> StoreResult<bool> {
    let now = now_ms as i64;
    let n = match change {
        AccountChange::Disabled(d) => exec(
            c,
            "UPDATE operator_accounts SET disabled = ?2, changed_at_ms = ?3 WHERE username = ?1",
            params![username, d, now],
        )?,
        AccountChange::Password(phc) => exec(
            c,
            "UPDATE operator_accounts SET password_hash = ?2, changed_at_ms = ?3 WHERE username = ?1",
            params![username, phc.as_str(), now],
        )?,
        AccountChange::Role(r) => exec(
            c,
            "UPDATE operator_accounts SET role = ?2, changed_at_ms = ?3 WHERE username = ?1",
            params![username, r.as_str(), now],
        )?,
    };
    if n == 1 {
        // Whatever changed, the sessions opened before it end: a disabled
        // account, a leaked password or a narrower role keeps none.
        exec(
            c,
            "DELETE FROM operator_sessions WHERE username = ?1",
            params![username],
        )?;
        // Every service connection sees that accounts changed.
        exec(
            c,
            "INSERT INTO access_changes (id, version) VALUES (1, 1)
             ON CONFLICT (id) DO UPDATE SET version = access_changes.version + 1",
            params![],
        )?;
    }
    Ok(n == 1)
}

pub(super) fn handler<B: Backend>(c: &B, incident: &IncidentId) -> StoreResult<Option<String>> {
    Ok(maybe(
        c,
        "SELECT handler FROM incidents WHERE id = ?1",
        params![incident.as_bytes()],
        |r| r.get::<Option<String>>(0),
    )?
    .flatten())
}

pub(super) fn set_handler<B: Backend>(
    c: &B,
    incident: &IncidentId,
    from: Option<&str>,
    to: &str,
) -> StoreResult<bool> {
    let n = exec(
        c,
        "UPDATE incidents SET handler = ?3 WHERE id = ?1 AND handler IS NOT DISTINCT FROM ?2",
        params![incident.as_bytes(), from, to],
    )?;
    Ok(n == 1)
}

pub(super) fn set_unit_token<B: Backend>(
    c: &B,
    unit: UnitId,
    token_hash: &[u8; 32],
) -> StoreResult<bool> {
    let n = exec(
        c,
        "UPDATE units SET token_hash = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
        params![unit, &token_hash[..]],
    )?;
    Ok(n == 1)
}

pub(super) fn revoke_unit<B: Backend>(c: &B, unit: UnitId, now_ms: u64) -> StoreResult<bool> {
    // The token hash is replaced by one of a token nobody was given (the
    // column is unique and not null), so the old token opens nothing.
    let mut nobody = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut nobody);
    let n = exec(
        c,
        "UPDATE units SET token_hash = ?2, revoked_at_ms = ?3 WHERE id = ?1 AND revoked_at_ms IS NULL",
        params![unit, &nobody[..], now_ms as i64],
    )?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::super::{SqliteStore, Store};
    use super::{AccessStore, AccountChange, AccountRow, Role};

    fn row(name: &str, role: Role) -> AccountRow {
        AccountRow {
            username: name.into(),
            password_hash: "$argon2id$x".into(),
            role,
            disabled: false,
            changed_at_ms: 1,
        }
    }

    #[test]
    fn an_account_is_added_once_and_its_changes_end_its_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        assert!(s.add_account(&row("asha", Role::Dispatcher)).unwrap());
        assert!(!s.add_account(&row("asha", Role::Supervisor)).unwrap());
        assert_eq!(s.account("asha").unwrap().unwrap().role, Role::Dispatcher);
        for (i, change) in [
            AccountChange::Role(Role::Supervisor),
            AccountChange::Password("$argon2id$y".into()),
            AccountChange::Disabled(true),
        ]
        .iter()
        .enumerate()
        {
            s.save_session(&[i as u8; 32], "asha", u64::MAX / 2)
                .unwrap();
            s.save_session(&[9; 32], "ravi", u64::MAX / 2).unwrap();
            assert!(s.change_account("asha", change, 5).unwrap());
            let live = s.live_sessions(0).unwrap();
            assert!(live.iter().all(|(_, u, _)| u != "asha"), "{change:?}");
            assert!(live.iter().any(|(_, u, _)| u == "ravi"));
        }
        let a = s.account("asha").unwrap().unwrap();
        assert_eq!(
            (a.role, a.password_hash.as_str(), a.disabled),
            (Role::Supervisor, "$argon2id$y", true)
        );
        assert!(
            !s.change_account("nobody", &AccountChange::Disabled(true), 5)
                .unwrap()
        );
        assert!(!format!("{a:?}").contains("argon2"));
    }

    #[test]
    fn another_connection_s_commit_changes_the_data_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let server = SqliteStore::open(&path).unwrap();
        let v0 = server.data_version().unwrap();
        server.add_account(&row("own", Role::Auditor)).unwrap();
        assert_eq!(server.data_version().unwrap(), v0, "its own writes");
        let cli = SqliteStore::open(&path).unwrap();
        cli.add_account(&row("asha", Role::Dispatcher)).unwrap();
        assert_ne!(server.data_version().unwrap(), v0, "another's commit");
    }
}
