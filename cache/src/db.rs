//! The SQLite database `flow.db`: its schema, its migrations and how it is opened.
//!
//! Schema (version 1; all timestamps are unix milliseconds unless named `_ns`; every digest is
//! a 32-byte BLOB):
//!
//! ```sql
//! action_results(key BLOB PRIMARY KEY,      -- digest of the serialized action key
//!                exit_code INTEGER,         -- only 0 is ever served by get_actions
//!                outputs TEXT,              -- JSON array of OutputEntry
//!                stdout BLOB, stderr BLOB,  -- digests of the log blobs, NULL when absent
//!                duration_ms INTEGER,
//!                created_at INTEGER, last_used_at INTEGER)  WITHOUT ROWID
//! file_state(path TEXT PRIMARY KEY,         -- absolute path
//!            size INTEGER, mtime_ns INTEGER, ino INTEGER, digest BLOB,
//!            recorded_at_ns INTEGER)        -- when the digest was taken (racy-edit guard)
//!            WITHOUT ROWID
//! builds(id INTEGER PRIMARY KEY, started_at, finished_at /* NULL while running */, workspace,
//!        args, outcome, ran, cached, up_to_date, failed, skipped, flaky, duration_ms)
//! action_runs(id INTEGER PRIMARY KEY, build_id REFERENCES builds, label, key BLOB,
//!             outcome TEXT /* ran|cached|failed|flaky|timedout|skipped|cancelled */,
//!             duration_ms, exit_code, stdout BLOB, stderr BLOB, workspace, finished_at)
//! INDEX action_runs_by_label ON action_runs(workspace, label, id)
//! ```
//!
//! Opening:
//! 1. `busy_timeout` 30 s, then `journal_mode=WAL`, `synchronous=NORMAL`, `cache_size=-65536`
//!    (64 MiB), `foreign_keys=ON`;
//! 2. read `PRAGMA user_version`; refuse a version newer than [`MIGRATIONS`] knows;
//! 3. if older, in one IMMEDIATE transaction re-read it (another process may have just migrated)
//!    and apply the missing migrations in order, then set `user_version` to their count.
//!
//! Invariants: [`MIGRATIONS`] is append-only: entry *i* takes version *i* to *i + 1* and is never
//! edited once released; a schema change is a new entry. Every write in this crate runs in a
//! `TransactionBehavior::Immediate` transaction: a deferred one that reads then writes fails with
//! "database is locked" under concurrency instead of waiting (stack findings §6).

use std::path::Path;
use std::time::{Duration, SystemTime};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use crate::error::{sql_err, CacheError};
use crate::Digest;

/// The schema, one migration per version. Append only; never edit a released entry.
pub const MIGRATIONS: &[&str] = &[
    // 0 → 1: the initial schema.
    "CREATE TABLE action_results (
        key BLOB PRIMARY KEY NOT NULL,
        exit_code INTEGER NOT NULL,
        outputs TEXT NOT NULL,
        stdout BLOB,
        stderr BLOB,
        duration_ms INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE file_state (
        path TEXT PRIMARY KEY NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        digest BLOB NOT NULL,
        recorded_at_ns INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE builds (
        id INTEGER PRIMARY KEY,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        workspace TEXT NOT NULL,
        args TEXT NOT NULL,
        outcome TEXT,
        ran INTEGER,
        cached INTEGER,
        up_to_date INTEGER,
        failed INTEGER,
        skipped INTEGER,
        flaky INTEGER,
        duration_ms INTEGER
    );
    CREATE TABLE action_runs (
        id INTEGER PRIMARY KEY,
        build_id INTEGER NOT NULL REFERENCES builds(id),
        label TEXT NOT NULL,
        key BLOB NOT NULL,
        outcome TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        exit_code INTEGER,
        stdout BLOB,
        stderr BLOB,
        workspace TEXT NOT NULL,
        finished_at INTEGER NOT NULL
    );
    CREATE INDEX action_runs_by_label ON action_runs(workspace, label, id);",
];

/// How long a writer waits for another process's transaction before "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Rows per `SELECT … WHERE key IN (…)`, well under SQLite's bound-parameter limit.
pub(crate) const IN_CHUNK: usize = 500;

/// Opens `path`, configures the connection and brings the schema up to date.
pub(crate) fn open_db(path: &Path) -> Result<Connection, CacheError> {
    let mut conn = Connection::open(path).map_err(sql_err("open"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql_err("set busy_timeout"))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql_err("enable WAL"))?;
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA cache_size = -65536; PRAGMA foreign_keys = ON;",
    )
    .map_err(sql_err("configure"))?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

fn user_version(conn: &Connection) -> Result<i64, CacheError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err("read user_version"))
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), CacheError> {
    let known = MIGRATIONS.len() as i64;
    let too_new = |found| CacheError::SchemaTooNew {
        path: path.to_owned(),
        found,
        supported: known,
    };
    let found = user_version(conn)?;
    if found > known {
        return Err(too_new(found));
    }
    if found == known {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err("begin migration"))?;
    let found = user_version(&tx)?;
    if found > known {
        return Err(too_new(found));
    }
    for migration in &MIGRATIONS[found as usize..] {
        tx.execute_batch(migration).map_err(sql_err("migrate"))?;
    }
    tx.pragma_update(None, "user_version", known)
        .map_err(sql_err("set user_version"))?;
    tx.commit().map_err(sql_err("commit migration"))
}

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `?,?,…,?` with `n` placeholders.
pub(crate) fn placeholders(n: usize) -> String {
    let mut s = "?,".repeat(n);
    s.pop();
    s
}

impl ToSql for Digest {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(self.as_bytes())))
    }
}

impl FromSql for Digest {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let blob = value.as_blob()?;
        Digest::from_slice(blob).ok_or(FromSqlError::InvalidBlobSize {
            expected_size: 32,
            blob_size: blob.len(),
        })
    }
}
