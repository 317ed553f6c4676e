//! What the service stored, read the way an attacker holding its database
//! would: on either backend.
//!
//! The suite runs on SQLite (the default) or, with
//! `SOSVAULT_TEST_BACKEND=postgres`, on a database of its own per cluster on
//! the test PostgreSQL server (`sosvault_testkit::postgres`). [`Stored`] is
//! that database: `rows` runs one query (`?1` placeholders, as the store's
//! own SQL) and hands back plain values; `every_byte` is everything a reader
//! of the database finds (SQLite: the file and its WAL; PostgreSQL: every
//! `bytea` and `text` value of every table, which is what a reader of a
//! PostgreSQL database sees; its files belong to the server, and what they
//! keep is in SECURITY.md).

use std::path::PathBuf;

use sosvault_testkit::postgres::TestDatabase;

/// Which backend the suite runs on (`SOSVAULT_TEST_BACKEND`).
pub use sosvault_testkit::postgres::suite_on_postgres as on_postgres;

/// A stored value.
#[derive(Clone, Debug, PartialEq)]
pub enum V {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl V {
    pub fn int(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::Null => None,
            other => panic!("an integer expected, {other:?} stored"),
        }
    }

    pub fn blob(&self) -> Option<Vec<u8>> {
        match self {
            Self::Blob(b) => Some(b.clone()),
            Self::Null => None,
            other => panic!("a blob expected, {other:?} stored"),
        }
    }

    pub fn text(&self) -> Option<String> {
        match self {
            Self::Text(t) => Some(t.clone()),
            Self::Null => None,
            other => panic!("text expected, {other:?} stored"),
        }
    }
}

/// A query's parameter.
pub enum P {
    Int(i64),
    Blob(Vec<u8>),
}

/// The service's database.
pub enum Stored {
    /// `sosvault.db` (and its WAL) in the data directory.
    Sqlite(PathBuf),
    /// A database of its own on the test server.
    Postgres(TestDatabase),
}

impl Stored {
    /// The PostgreSQL database's URL (the tests of several nodes).
    pub fn postgres_url(&self) -> &str {
        match self {
            Self::Postgres(db) => db.url(),
            Self::Sqlite(path) => panic!("{} is SQLite, not PostgreSQL", path.display()),
        }
    }

    /// `sql`'s rows.
    pub fn rows(&self, sql: &str, params: Vec<P>) -> Vec<Vec<V>> {
        match self {
            Self::Sqlite(path) => sqlite_rows(path, sql, params),
            Self::Postgres(db) => {
                let (url, sql) = (db.url().to_owned(), dollars(sql));
                std::thread::spawn(move || pg_rows(&url, &sql, params))
                    .join()
                    .unwrap()
            }
        }
    }

    /// The one row of `sql`; `None` if there is none.
    pub fn row(&self, sql: &str, params: Vec<P>) -> Option<Vec<V>> {
        let mut rows = self.rows(sql, params);
        assert!(rows.len() <= 1, "{sql}: {} rows", rows.len());
        rows.pop()
    }

    /// A `SELECT COUNT(*)`.
    pub fn count(&self, sql: &str, params: Vec<P>) -> i64 {
        self.row(sql, params).unwrap()[0].int().unwrap()
    }

    /// Everything a reader of the database finds, one value after another.
    pub fn every_byte(&self) -> Vec<u8> {
        match self {
            Self::Sqlite(path) => {
                let mut all = Vec::new();
                let wal = PathBuf::from(format!("{}-wal", path.display()));
                for p in [path, &wal] {
                    if let Ok(b) = std::fs::read(p) {
                        all.extend(b);
                    }
                }
                all
            }
            Self::Postgres(db) => {
                let url = db.url().to_owned();
                std::thread::spawn(move || pg_every_byte(&url))
                    .join()
                    .unwrap()
            }
        }
    }
}

fn dollars(sql: &str) -> String {
    let mut out = String::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let numbered = c == '?' && chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if numbered { '$' } else { c });
    }
    out
}

fn sqlite_rows(path: &PathBuf, sql: &str, params: Vec<P>) -> Vec<Vec<V>> {
    use rusqlite::types::ValueRef;
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let values: Vec<rusqlite::types::Value> = params
        .into_iter()
        .map(|p| match p {
            P::Int(i) => rusqlite::types::Value::Integer(i),
            P::Blob(b) => rusqlite::types::Value::Blob(b),
        })
        .collect();
    let mut st = c.prepare(sql).unwrap();
    let n = st.column_count();
    let mut rows = st.query(rusqlite::params_from_iter(values)).unwrap();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        out.push(
            (0..n)
                .map(|i| match r.get_ref(i).unwrap() {
                    ValueRef::Null => V::Null,
                    ValueRef::Integer(i) => V::Int(i),
                    ValueRef::Real(f) => V::Text(f.to_string()),
                    ValueRef::Text(t) => V::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => V::Blob(b.to_vec()),
                })
                .collect(),
        );
    }
    out
}

fn pg_rows(url: &str, sql: &str, params: Vec<P>) -> Vec<Vec<V>> {
    use postgres::types::{ToSql, Type};
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let boxed: Vec<Box<dyn ToSql + Sync>> = params
        .into_iter()
        .map(|p| -> Box<dyn ToSql + Sync> {
            match p {
                P::Int(i) => Box::new(i),
                P::Blob(b) => Box::new(b),
            }
        })
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
    let rows = c.query(sql, &refs).unwrap();
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match *r.columns()[i].type_() {
                    Type::INT8 => r.get::<_, Option<i64>>(i).map_or(V::Null, V::Int),
                    Type::INT4 => r
                        .get::<_, Option<i32>>(i)
                        .map_or(V::Null, |v| V::Int(v.into())),
                    Type::BOOL => r
                        .get::<_, Option<bool>>(i)
                        .map_or(V::Null, |v| V::Int(v.into())),
                    Type::BYTEA => r.get::<_, Option<Vec<u8>>>(i).map_or(V::Null, V::Blob),
                    _ => r.get::<_, Option<String>>(i).map_or(V::Null, V::Text),
                })
                .collect()
        })
        .collect()
}

fn pg_every_byte(url: &str) -> Vec<u8> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let columns: Vec<(String, String, String)> = c
        .query(
            "SELECT table_name, column_name, data_type FROM information_schema.columns
             WHERE table_schema = 'public' AND data_type IN ('bytea', 'text')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut all = Vec::new();
    for (table, column, ty) in columns {
        let sql = format!("SELECT {column} FROM {table} WHERE {column} IS NOT NULL");
        for r in c.query(&sql, &[]).unwrap() {
            if ty == "bytea" {
                all.extend(r.get::<_, Vec<u8>>(0));
            } else {
                all.extend(r.get::<_, String>(0).into_bytes());
            }
        }
    }
    all
}
