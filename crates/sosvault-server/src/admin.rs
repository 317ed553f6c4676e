//! `sosvault-server operator ...`: operator accounts, managed on the
//! service's database directly, beside a running service or not.
//!
//! SQLite in WAL mode takes this second writer; each change is one short
//! transaction that also deletes the account's sessions, and the running
//! service notices another process wrote (within
//! [`crate::engine::ACCOUNT_POLL`]) and ends those sessions and their live
//! streams. Passwords are hashed here (argon2id) and never stored or
//! printed in clear.

use anyhow::{Context as _, bail};

use crate::access::Role;
use crate::config::Config;
use crate::files;
use crate::store::{AccountChange, AccountRow, PgStore, SqliteStore, Store};

/// The shortest password `operator add` and `reset-password` accept.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Opens the service's database as the service does: the PostgreSQL
/// database of `database_url`, or `sosvault.db` (0600, created so).
pub fn open(cfg: &Config) -> anyhow::Result<Box<dyn Store>> {
    if let Some(url) = &cfg.database_url {
        let store = PgStore::connect(url.expose())
            .context("connecting to the PostgreSQL database of database_url")?;
        return Ok(Box::new(store));
    }
    for (path, mode) in files::prepare_database(&cfg.db_path())? {
        eprintln!(
            "warning: {} had mode {mode:o} (other users could read it); made it 0600",
            path.display()
        );
    }
    let store = SqliteStore::open(&cfg.db_path())
        .with_context(|| format!("opening the database {}", cfg.db_path().display()))?;
    Ok(Box::new(store))
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("an operator name is 1 to 64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

fn hash(password: &str) -> anyhow::Result<crate::auth::StoredPassword> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        bail!("the password must have at least {MIN_PASSWORD_CHARS} characters");
    }
    crate::auth::hash_password(password).map_err(anyhow::Error::msg)
}

fn now_ms() -> u64 {
    crate::engine::now_ms()
}

/// Adds an account.
pub fn add(store: &dyn Store, name: &str, role: Role, password: &str) -> anyhow::Result<()> {
    check_name(name)?;
    let row = AccountRow {
        username: name.to_owned(),
        password_hash: hash(password)?,
        role,
        disabled: false,
        changed_at_ms: now_ms(),
    };
    if !store.add_account(&row)? {
        bail!("there is already an operator {name:?} (see `operator list`)");
    }
    Ok(())
}

/// Sets a new password; the account's sessions end.
pub fn reset_password(store: &dyn Store, name: &str, password: &str) -> anyhow::Result<()> {
    change(store, name, AccountChange::Password(hash(password)?))
}

/// Changes an account (a [`AccountChange::Password`] holds the new PHC
/// string: see [`reset_password`]); its sessions end.
pub fn change(store: &dyn Store, name: &str, change: AccountChange) -> anyhow::Result<()> {
    if !store.change_account(name, &change, now_ms())? {
        bail!("there is no operator {name:?} (see `operator list`)");
    }
    Ok(())
}

/// Every account, one line each: name, role, enabled or disabled.
pub fn list(store: &dyn Store) -> anyhow::Result<Vec<String>> {
    Ok(store
        .accounts()?
        .into_iter()
        .map(|a| {
            format!(
                "{}\t{}\t{}",
                a.username,
                a.role,
                if a.disabled { "disabled" } else { "enabled" }
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{AccountChange, Config, Role, add, change, list, open, reset_password};

    #[test]
    fn accounts_are_added_changed_and_listed_with_clear_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::new(dir.path().to_path_buf());
        let s = open(&cfg).unwrap();
        assert!(add(&*s, "asha", Role::Dispatcher, "short").is_err());
        assert!(add(&*s, "bad name", Role::Dispatcher, "a long enough one").is_err());
        add(&*s, "asha", Role::Dispatcher, "a long enough one").unwrap();
        let again = add(&*s, "asha", Role::Auditor, "a long enough one").unwrap_err();
        assert!(again.to_string().contains("already"), "{again}");
        change(&*s, "asha", AccountChange::Role(Role::Supervisor)).unwrap();
        change(&*s, "asha", AccountChange::Disabled(true)).unwrap();
        assert!(change(&*s, "ravi", AccountChange::Disabled(true)).is_err());
        assert!(reset_password(&*s, "asha", "short").is_err());
        reset_password(&*s, "asha", "another long one").unwrap();
        assert_eq!(list(&*s).unwrap(), ["asha\tsupervisor\tdisabled"]);
        let a = s.account("asha").unwrap().unwrap();
        assert!(crate::auth::verify_password(
            Some(&a.password_hash),
            "another long one"
        ));
    }
}
