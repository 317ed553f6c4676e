//! The PostgreSQL backend: one connection (rust-postgres's blocking client)
//! per store, statements prepared once, and after a stop the tables that
//! held the student's data vacuumed.
//!
//! PostgreSQL has no `secure_delete`: a deleted row stays in its page as a
//! dead tuple until `VACUUM` frees the space (and until new rows overwrite
//! it), in the WAL until the segment is recycled, and in every replica and
//! base backup. What the service does about each is in `SECURITY.md`
//! ("Storage at rest"); here, the `VACUUM` after every stop.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error;
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Config, NoTls, Statement};

use super::sql::{Backend, Param, Purge, Row, Value, numbered_dollars};
use super::sql_store::SqlStore;
use super::{StoreError, StoreResult};

/// The PostgreSQL store.
pub type PgStore = SqlStore<Postgres>;

/// One PostgreSQL connection, and the statements prepared on it.
pub struct Postgres {
    client: RefCell<Client>,
    prepared: RefCell<HashMap<String, Statement>>,
    /// Where to connect again after the connection is lost.
    config: Config,
}

/// The tables a stop deletes from or blanks (`Store::apply_stop`),
/// vacuumed once it is committed.
const STOP_TABLES: &str = "students, enrollments, previous_enrollments, enrollment_commits, pending_commits, locations, trail_points, timers, chat_texts, transparency_log, incidents, timeline";

/// The key of the advisory lock that serialises schema migrations.
const SCHEMA_LOCK: i64 = 0x736f_7376_6175_6c74; // "sosvault"

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        // The server's own words (`ERROR: duplicate key value ...`), not
        // only "db error".
        match e.as_db_error() {
            Some(db) if *db.code() == postgres::error::SqlState::UNIQUE_VIOLATION => {
                Self::Conflict(format!("{}: {}", db.code().code(), db.message()))
            }
            // Class 08, a connection exception; class 57, the server
            // shutting down or not yet taking connections.
            Some(db) if lost_class(db.code().code()) => {
                Self::Unavailable(format!("{}: {}", db.code().code(), db.message()))
            }
            // Undone to let another transaction through; asking again
            // after it ends is the whole remedy.
            Some(db)
                if *db.code() == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                    || *db.code() == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                Self::Contended(format!("{}: {}", db.code().code(), db.message()))
            }
            Some(db) => Self::Database(format!("{}: {}", db.code().code(), db.message())),
            None if e.is_closed() || io_error(&e) => Self::Unavailable(e.to_string()),
            None => Self::Database(e.to_string()),
        }
    }
}

/// Whether a SQLSTATE says the connection, not the statement, failed.
fn lost_class(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57")
}

/// Whether `e` came from the socket (refused, reset, timed out).
fn io_error(e: &postgres::Error) -> bool {
    e.source().is_some_and(|s| s.is::<std::io::Error>())
}

/// How long connecting, and an unanswered write, may take before the
/// database counts as unreachable, unless the URL says otherwise. Without
/// them a database cut off by the network (no reset, no answer) would hold
/// the store's writer, and every panic behind it, for the kernel's minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const USER_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// How long the server lets this node's connection sit in a transaction
/// without a statement before it ends the session: a node frozen mid-batch
/// (stopped, swapped out, paused by its hypervisor) must not hold the rows
/// of the incidents another node takes over past its lease. A batch takes
/// milliseconds.
const IDLE_IN_TRANSACTION: &str = "10s";

/// `url` as a connection configuration, with the timeouts above where it
/// sets none (the store's connection, and the ones carrying events across
/// nodes).
pub(crate) fn config(url: &str) -> StoreResult<Config> {
    let mut c: Config = url.parse().map_err(|e: postgres::Error| {
        // The parser's words, never the URL (it holds the password).
        StoreError::Database(format!("database_url: {e}"))
    })?;
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(CONNECT_TIMEOUT);
    }
    if c.get_tcp_user_timeout().is_none() {
        c.tcp_user_timeout(USER_TIMEOUT);
    }
    if c.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        c.keepalives_idle(KEEPALIVE_IDLE);
    }
    let idle = format!("-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION}");
    let options = match c.get_options() {
        Some(o) if o.contains("idle_in_transaction_session_timeout") => None,
        Some(o) => Some(format!("{o} {idle}")),
        None => Some(idle),
    };
    if let Some(o) = options {
        c.options(&o);
    }
    Ok(c)
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match (self, ty) {
            (Param::Null, _) => Ok(IsNull::Yes),
            (Param::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (Param::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Param::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Param::Int(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (Param::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (Param::Text(s), _) if <&str as ToSql>::accepts(ty) => s.as_ref().to_sql(ty, out),
            (Param::Blob(b), &Type::BYTEA) => b.as_ref().to_sql(ty, out),
            (p, ty) => Err(format!("{p:?} cannot be a {ty} parameter").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Column `i` of `row`, in the store's vocabulary.
fn value(row: &postgres::Row, i: usize) -> StoreResult<Value> {
    let ty = row.columns()[i].type_();
    let v = match *ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        _ if <String as postgres::types::FromSql>::accepts(ty) => {
            row.try_get::<_, Option<String>>(i)?.map(Value::Text)
        }
        _ => {
            return Err(StoreError::Database(format!(
                "column {i}: a {ty} column, which the store does not read"
            )));
        }
    };
    Ok(v.unwrap_or(Value::Null))
}

impl Postgres {
    /// `sql`, prepared once on this connection.
    fn statement(&self, sql: &str) -> StoreResult<Statement> {
        if let Some(st) = self.prepared.borrow().get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.borrow_mut().prepare(&numbered_dollars(sql))?;
        self.prepared
            .borrow_mut()
            .insert(sql.to_owned(), st.clone());
        Ok(st)
    }
}

fn refs<'a>(p: &'a [Param<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    p.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Backend for Postgres {
    const NAME: &'static str = "postgres";
    const BEGIN: &'static str = "BEGIN";
    const WRITES_IN_WITH: bool = true;
    const SHARED: bool = true;
    // Another transaction claiming the team now holds its lock: refused at
    // once (it is being taken). Another incident's open assignment of it,
    // as last committed, refuses it too, without waiting to see whether an
    // uncommitted write (an acknowledgement, a time-out, a close) of that
    // assignment commits: a team being let go is tried again in 5 s
    // (`Board::held_elsewhere`). The insert that follows then meets no
    // uncommitted row of the team but its own transaction's.
    const CLAIM_GUARD: Option<&'static str> = Some(
        "pg_try_advisory_xact_lock(?3) AND NOT EXISTS (SELECT 1 FROM assignments
             WHERE unit_id = ?2 AND incident_id <> ?1 AND status IN ('pending', 'acknowledged'))",
    );

    // Refused at once, not waited for, when another transaction stores the
    // same panic now ([`Backend::PANIC_GUARD`]).
    const PANIC_GUARD: Option<&'static str> = Some("pg_try_advisory_xact_lock(?14)");

    // An append to the log is refused at once, not waited for, while
    // another node's transaction appends ([`Backend::LOG_GUARD`]).
    const LOG_GUARD: Option<&'static str> = Some("SELECT 1 WHERE pg_try_advisory_xact_lock(?1)");

    fn exec(&self, sql: &str, p: &[Param<'_>]) -> StoreResult<usize> {
        let st = self.statement(sql)?;
        let n = self.client.borrow_mut().execute(&st, &refs(p))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn rows(&self, sql: &str, p: &[Param<'_>]) -> StoreResult<Vec<Row>> {
        let st = self.statement(sql)?;
        let rows = self.client.borrow_mut().query(&st, &refs(p))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| value(r, i))
                    .collect::<StoreResult<_>>()
                    .map(Row)
            })
            .collect()
    }

    fn batch(&self, sql: &str) -> StoreResult<()> {
        Ok(self.client.borrow_mut().batch_execute(sql)?)
    }

    fn reconnect_if_lost(&self) -> StoreResult<()> {
        if !self.client.borrow().is_closed() {
            return Ok(());
        }
        let client = self.config.connect(NoTls)?;
        // The statements were prepared on the lost connection.
        self.prepared.borrow_mut().clear();
        drop(self.client.replace(client));
        tracing::warn!("store: the connection to PostgreSQL was lost; connected again");
        Ok(())
    }

    fn purge(&self, what: Purge) -> StoreResult<()> {
        match what {
            // Frees the dead tuples of every table a stop touched now, not
            // whenever autovacuum comes by (SECURITY.md, "Storage at rest").
            Purge::Stop => self.batch(&format!("VACUUM {STOP_TABLES}")),
            // An incident key is sealed under `master.key`; its dead tuple
            // is left to autovacuum (a VACUUM of `incidents` per closed
            // incident would cost more than the panics it serves).
            Purge::Key => Ok(()),
        }
    }

    fn data_version(&self) -> StoreResult<i64> {
        let rows = self.rows("SELECT version FROM access_changes WHERE id = 1", &[])?;
        rows.first().map_or(Ok(0), |r| r.get(0))
    }

    fn ddl(sqlite: &str) -> Cow<'_, str> {
        Cow::Owned(pg_ddl(sqlite))
    }

    fn add_column(&self, table: &str, column: &str, ty: &str) -> StoreResult<()> {
        self.batch(&format!(
            "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {}",
            pg_ddl(ty)
        ))
    }

    fn lock_schema(&self) -> StoreResult<()> {
        self.exec(
            "SELECT pg_advisory_xact_lock(?1)",
            &[Param::Int(SCHEMA_LOCK)],
        )
        .map(drop)
    }
}

/// SQLite's column types as PostgreSQL's: the one schema, in both.
fn pg_ddl(sqlite: &str) -> String {
    let mut out = String::with_capacity(sqlite.len() + 64);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(match word.as_str() {
            "BLOB" => "BYTEA",
            "INTEGER" => "BIGINT",
            "REAL" => "DOUBLE PRECISION",
            "AUTOINCREMENT" => "GENERATED BY DEFAULT AS IDENTITY",
            w => w,
        });
        word.clear();
    };
    for c in sqlite.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    // `BIGINT PRIMARY KEY GENERATED ...` is not PostgreSQL's order.
    out.replace(
        "BIGINT PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    )
}

impl PgStore {
    /// Connects to the PostgreSQL database at `url` (a `postgres://` URL or
    /// a `key=value` string) and migrates its schema. Connects from a
    /// thread of its own, so it may be called from async code (the blocking
    /// client runs a runtime of its own, which cannot start inside one); the
    /// store is then used, and dropped, on a thread outside any runtime (the
    /// group-commit writer's).
    pub fn connect(url: &str) -> StoreResult<Self> {
        let config = config(url)?;
        std::thread::spawn(move || {
            let client = config.connect(NoTls)?;
            Self::on(Postgres {
                client: RefCell::new(client),
                prepared: RefCell::new(HashMap::new()),
                config,
            })
        })
        .join()
        .map_err(|_| StoreError::Database("connecting to PostgreSQL panicked".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::pg_ddl;

    #[test]
    fn the_schema_s_types_become_postgres_types() {
        assert_eq!(
            pg_ddl(
                "CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, a BLOB NOT NULL, b REAL, c TEXT, blobby INTEGER)"
            ),
            "CREATE TABLE t (seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, a BYTEA NOT NULL, b DOUBLE PRECISION, c TEXT, blobby BIGINT)"
        );
    }

    #[test]
    fn a_node_frozen_inside_a_transaction_is_ended_by_the_server() {
        use super::super::sql::Backend;
        use super::{IDLE_IN_TRANSACTION, PgStore};
        let pg = sosvault_testkit::postgres::TestDatabase::create();
        let s = PgStore::connect(pg.url()).unwrap();
        let rows =
            s.db.rows("SHOW idle_in_transaction_session_timeout", &[])
                .unwrap();
        assert_eq!(rows[0].get::<String>(0).unwrap(), IDLE_IN_TRANSACTION);
    }

    #[test]
    fn a_database_that_cannot_be_reached_is_unavailable_not_a_failure() {
        use super::{PgStore, StoreError, lost_class};
        // A port nobody listens on: refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url = format!("postgres://sosvault:secret-pw@127.0.0.1:{port}/sosvault");
        match PgStore::connect(&url) {
            Err(StoreError::Unavailable(why)) => assert!(!why.contains("secret-pw"), "{why}"),
            Err(e) => panic!("refused, but not as unavailable: {e}"),
            Ok(_) => panic!("connected to a port nobody listens on"),
        }
        // The server's words for a lost connection or one going away.
        for (code, lost) in [
            ("08006", true),
            ("57P01", true),
            ("57P03", true),
            ("23505", false),
            ("42P01", false),
        ] {
            assert_eq!(lost_class(code), lost, "{code}");
        }
    }
}
