//! The SQLite database `flow.db`: its schema, its migrations and how it is opened.
//!
//! Schema (version 5; all timestamps are unix milliseconds unless named `_ns`; every digest is
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
//!            recorded_at_ns INTEGER,        -- when the digest was taken (racy-edit guard)
//!            ctime_ns INTEGER)              -- version 4; 0 in older rows, which never match
//!            WITHOUT ROWID
//! builds(id INTEGER PRIMARY KEY, started_at, finished_at /* NULL while running */, workspace,
//!        args, outcome, ran, cached, up_to_date, failed, skipped, flaky, duration_ms)
//! action_runs(id INTEGER PRIMARY KEY, build_id REFERENCES builds, label, key BLOB,
//!             outcome TEXT /* ran|cached|failed|flaky|timedout|skipped|cancelled */,
//!             duration_ms, exit_code, stdout BLOB, stderr BLOB, workspace, finished_at)
//! INDEX action_runs_by_label ON action_runs(workspace, label, id)
//! action_keys(id INTEGER PRIMARY KEY, key BLOB UNIQUE, json BLOB)        -- version 2, rowid since 3
//! action_latest(workspace, label,           -- version 3: one row per label, upserted with
//!               key BLOB,                   -- each action_runs row: its latest key, and the
//!               duration_ms INTEGER,        -- duration of its latest run that executed
//!               PRIMARY KEY (workspace, label))  WITHOUT ROWID
//! pins(digest BLOB PRIMARY KEY,             -- version 5: artifacts the deploy ledger pins;
//!      is_tree INTEGER)                     -- 1: a tree manifest, whose entries stay too
//!      WITHOUT ROWID
//! ```
//!
//! Opening:
//! 1. `busy_timeout` 30 s, then `journal_mode=WAL`, `synchronous=NORMAL`, `cache_size=-65536`
//!    (64 MiB), `foreign_keys=ON`, and no checkpoint on close (the WAL stays between commands);
//! 2. read `PRAGMA user_version`; refuse a version newer than [`MIGRATIONS`] knows;
//! 3. if older, in one IMMEDIATE transaction re-read it (another process may have just migrated)
//!    and apply the missing migrations in order, then set `user_version` to their count.
//!
//! Damage (see `open_or_recover`): before opening, a non-empty `flow.db-wal` that does not start
//! with a WAL header is reported (SQLite ignores such a log; what it held since the last
//! checkpoint is lost, so those results simply run again). If SQLite then says the database is
//! "not a database" or "malformed" while it is opened, configured and migrated, the process
//! takes an exclusive `flock` on the cache directory (so two processes meeting the same damaged
//! file repair it once), opens it again (another process may have repaired it meanwhile), and
//! only if it is still damaged renames `flow.db` to `flow.db.corrupt-<unix ms>` (its WAL to
//! `flow.db.corrupt-<unix ms>-wal`, kept for a post-mortem; the shared-memory index is removed)
//! and starts an empty database. Cached results are lost, never wrong: their actions run again.
//! The copies stay until someone looks: `flow cache stats` counts them ([`moved_aside`]) and
//! `flow clean --cache` removes them with the rest of the cache ([`remove_moved_aside`]).
//! Both repairs come back as one sentence each, which the engine prints as warnings. Only errors
//! SQLite itself reports as corruption move a database aside: a size or header heuristic could
//! misjudge a database another process is checkpointing, and moving a live database aside would
//! split the processes sharing it. Damage in pages that opening does not read (a table's, an
//! index's) is met by the statement that reads them, which fails with "database disk image is
//! malformed": then [`recover`] does the same under the same lock, if the file at the path is
//! still the one the statement read (its device and inode, [`FileId`]), and the statement runs
//! again on the new database (`Cache::with_conn`).
//!
//! Invariants: [`MIGRATIONS`] is append-only: entry *i* takes version *i* to *i + 1* and is never
//! edited once released; a schema change is a new entry. Every write in this crate runs in a
//! `TransactionBehavior::Immediate` transaction: a deferred one that reads then writes fails with
//! "database is locked" under concurrency instead of waiting (stack findings §6).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::config::DbConfig;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use crate::error::{io_err, sql_err, CacheError};
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
    // 1 → 2: the serialized action keys `flow explain` compares, written with the history
    // instead of one CAS blob per run.
    "CREATE TABLE action_keys (
        key BLOB PRIMARY KEY NOT NULL,
        json BLOB NOT NULL
    ) WITHOUT ROWID;",
    // 2 → 3: each label's latest key and latest executed duration, kept up to date by
    // `record_runs`, so that a build reads one row per label instead of grouping the whole
    // history (51 ms at 30,000 runs of a 2,000-action workspace, and growing). Filled from the
    // history once. And `action_keys` becomes a rowid table with a unique index on `key`: a
    // build's keys are appended instead of inserted at random places among ~750-byte rows
    // (1,001 keys into 37,000: 74 → 10 ms, WAL 11.6 → 2.4 MiB).
    "CREATE TABLE action_latest (
        workspace TEXT NOT NULL,
        label TEXT NOT NULL,
        key BLOB NOT NULL,
        duration_ms INTEGER,
        PRIMARY KEY (workspace, label)
    ) WITHOUT ROWID;
    INSERT INTO action_latest (workspace, label, key)
        SELECT workspace, label, key FROM action_runs
        WHERE id IN (SELECT max(id) FROM action_runs GROUP BY workspace, label);
    UPDATE action_latest SET duration_ms = (
        SELECT r.duration_ms FROM action_runs r
        WHERE r.workspace = action_latest.workspace AND r.label = action_latest.label
          AND r.outcome IN ('ran', 'failed', 'flaky', 'timedout')
        ORDER BY r.id DESC LIMIT 1);
    CREATE TABLE action_keys_by_row (
        id INTEGER PRIMARY KEY,
        key BLOB NOT NULL UNIQUE,
        json BLOB NOT NULL
    );
    INSERT INTO action_keys_by_row (key, json) SELECT key, json FROM action_keys;
    DROP TABLE action_keys;
    ALTER TABLE action_keys_by_row RENAME TO action_keys;",
    // 3 → 4: each file state's ctime, compared with the size, mtime and inode: an in-place
    // rewrite that keeps the size and sets the mtime back (`cp -p`), or a `chmod`, changes only
    // the ctime. Older rows get 0, which no file has: their files are hashed again once.
    "ALTER TABLE file_state ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0;",
    // 4 → 5: the artifacts the deploy ledger names as live or previously live, which `gc` and
    // `clear` keep (`pins.rs`); a tree's manifest keeps the blobs it lists.
    "CREATE TABLE pins (
        digest BLOB PRIMARY KEY NOT NULL,
        is_tree INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 5 → 6: the test cases of each test action that ran (from its JUnit outputs), for
    // `flow metrics --flaky`'s flaky test cases (`cases.rs`).
    "CREATE TABLE case_runs (
        id INTEGER PRIMARY KEY,
        build_id INTEGER NOT NULL,
        workspace TEXT NOT NULL,
        label TEXT NOT NULL,
        key BLOB NOT NULL,
        name TEXT NOT NULL,
        passed INTEGER NOT NULL,
        finished_at INTEGER NOT NULL
    );
    CREATE INDEX case_runs_by_time ON case_runs(workspace, finished_at);",
    // 6 → 7: the SHA-256 of blobs exchanged with a remote cache that speaks SHA-256, so a blob
    // is hashed in SHA-256 once (`sha256.rs`); a fact about content, never stale.
    "CREATE TABLE sha256_of (
        blake3 BLOB PRIMARY KEY NOT NULL,
        sha256 BLOB NOT NULL
    ) WITHOUT ROWID;",
];

/// How long a writer waits for another process's transaction before "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Rows per `SELECT … WHERE key IN (…)`, well under SQLite's bound-parameter limit.
pub(crate) const IN_CHUNK: usize = 500;

/// Device and inode of a database file: which file a connection was opened on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// Opens the database `path` of the cache directory `dir` like [`open_db`], repairing damage (see
/// the module docs). Returns the connection, the file it is on (if the same file was at `path`
/// before and after opening) and what was repaired, one sentence each.
pub(crate) fn open_or_recover(
    dir: &Path,
    path: &Path,
) -> Result<(Connection, Option<FileId>, Vec<String>), CacheError> {
    let mut notices = clear_special_files(dir, path)?;
    notices.extend(check_wal(path));
    let before = file_id(path);
    match open_db(path) {
        Ok(conn) => {
            // The file opened, unless another process replaced it meanwhile.
            let after = file_id(path);
            let file = if before.is_none() || before == after {
                after
            } else {
                None
            };
            return Ok((conn, file, notices));
        }
        Err(e) if is_damaged(&e) => {}
        Err(e) => return Err(e),
    }
    // Repairs are serialized: without the lock, a second process that met the same damaged file
    // could move aside the fresh database the first one just made.
    let lock = repair_lock(dir)?;
    let damage = match open_db(path) {
        Ok(conn) => return Ok((conn, file_id(path), notices)),
        Err(e) if is_damaged(&e) => e,
        Err(e) => return Err(e),
    };
    notices.push(move_aside_damaged(path, &damage_reason(&damage))?);
    let conn = open_db(path)?;
    let file = file_id(path);
    drop(lock);
    Ok((conn, file, notices))
}

/// After a statement found the database damaged (`damage`) in a page that opening did not read:
/// under the repair lock, moves the database aside if the file at `path` is still `was`, the one
/// the statement read (another process may have repaired it meanwhile; a file not known for sure
/// is left alone), then opens what is at `path` like [`open_or_recover`].
pub(crate) fn recover(
    dir: &Path,
    path: &Path,
    was: Option<FileId>,
    reason: &str,
) -> Result<(Connection, Option<FileId>, Vec<String>), CacheError> {
    let mut notices = Vec::new();
    let lock = repair_lock(dir)?;
    if was.is_some() && file_id(path) == was {
        notices.push(move_aside_damaged(path, reason)?);
    }
    drop(lock);
    let (conn, file, more) = open_or_recover(dir, path)?;
    notices.extend(more);
    Ok((conn, file, notices))
}

/// The lock that serializes repairs: an exclusive `flock` on the cache directory.
fn repair_lock(dir: &Path) -> Result<File, CacheError> {
    let lock = File::open(dir).map_err(io_err("open", dir))?;
    lock.lock().map_err(io_err("lock", dir))?;
    Ok(lock)
}

/// Moves the damaged database `path` aside (with the repair lock held); the sentence that says
/// so.
fn move_aside_damaged(path: &Path, reason: &str) -> Result<String, CacheError> {
    let aside = move_aside(path)?;
    Ok(format!(
        "the cache database `{}` is damaged ({reason}); moved it aside to `{}` and started an \
         empty one: cached results are lost and their actions run again",
        path.display(),
        aside.display()
    ))
}

/// SQLite's files for the database `db`, besides `db` itself: each must be a regular file if
/// it is there at all.
const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Clears what SQLite must never open: `db` or one of its [`COMPANIONS`] that is a FIFO, a
/// device, a socket, a directory or a symlink (SQLite opens these by name and follows links:
/// it would block on a FIFO, or write through a link to wherever it leads). Such a database is
/// moved aside like a damaged one (SQLite never makes anything but a regular file, so nothing
/// is lost); such a companion is removed. Under the repair lock; one sentence per file, as a
/// warning. One `lstat` per file when all is well.
fn clear_special_files(dir: &Path, db: &Path) -> Result<Vec<String>, CacheError> {
    let special = |path: &Path| -> Option<&'static str> {
        let meta = fs::symlink_metadata(path).ok()?;
        (!meta.is_file()).then(|| crate::regular::kind_of(&meta))
    };
    let found = std::iter::once(db.to_owned())
        .chain(COMPANIONS.iter().map(|s| companion(db, s)))
        .any(|p| special(&p).is_some());
    if !found {
        return Ok(Vec::new());
    }
    let lock = File::open(dir).map_err(io_err("open", dir))?;
    lock.lock().map_err(io_err("lock", dir))?;
    let mut notices = Vec::new();
    for suffix in COMPANIONS {
        let path = companion(db, suffix);
        if let Some(kind) = special(&path) {
            remove_any(&path).map_err(io_err("remove", &path))?;
            notices.push(format!(
                "`{}` was {kind}, not a regular file; removed it",
                path.display()
            ));
        }
    }
    if let Some(kind) = special(db) {
        let aside = move_aside(db)?;
        notices.push(format!(
            "the cache database `{}` was {kind}, not a regular file; moved it aside to `{}` \
             and started an empty one: cached results are lost and their actions run again",
            db.display(),
            aside.display()
        ));
    }
    drop(lock);
    Ok(notices)
}

/// Removes `path` whatever it is: a file, a link (never followed), a special file, a directory
/// tree.
fn remove_any(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether SQLite reported `e` as a damaged database file.
pub(crate) fn is_damaged(e: &CacheError) -> bool {
    matches!(
        e,
        CacheError::Sqlite { source, .. } if matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        )
    )
}

/// SQLite's own words for the damage ("file is not a database", "database disk image is
/// malformed").
pub(crate) fn damage_reason(e: &CacheError) -> String {
    match e {
        CacheError::Sqlite { source, .. } => match source {
            rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
            rusqlite::Error::SqliteFailure(code, None) => code.to_string(),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

/// `<db><suffix>`: SQLite's companion files are named by appending to the database's name.
fn companion(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// What a damaged database's new name adds to its old one, before the time and a counter.
const ASIDE: &str = ".corrupt-";

/// Renames the damaged database to `<db>.corrupt-<unix ms>` (and its WAL beside it) and removes
/// its shared-memory index; returns the new name. Called with the repair lock held.
fn move_aside(db: &Path) -> Result<PathBuf, CacheError> {
    let stamp = now_ms();
    let mut aside = companion(db, &format!("{ASIDE}{stamp}"));
    let mut n = 0;
    while fs::symlink_metadata(&aside).is_ok() {
        n += 1;
        aside = companion(db, &format!("{ASIDE}{stamp}-{n}"));
    }
    fs::rename(db, &aside).map_err(io_err("move aside", db))?;
    // The log belongs to the damaged file: replayed into the new one it would mix them.
    let wal = companion(db, "-wal");
    match fs::rename(&wal, companion(&aside, "-wal")) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("move aside", &wal)(e)),
    }
    for suffix in ["-shm", "-journal"] {
        let path = companion(db, suffix);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &path)(e)),
        }
    }
    Ok(aside)
}

/// One file that [`move_aside`] left beside the database `db`: a damaged database or its log.
pub(crate) struct MovedAside {
    pub path: PathBuf,
    pub bytes: u64,
    /// The log (`…-wal`) of a moved-aside database rather than the database itself.
    pub is_log: bool,
}

/// Every file that [`move_aside`] left beside `db` (`<db>.corrupt-*`), by name. A file that
/// vanishes during the listing (a concurrent `flow clean --cache`) is skipped.
pub(crate) fn moved_aside(db: &Path) -> Result<Vec<MovedAside>, CacheError> {
    let (Some(dir), Some(name)) = (db.parent(), db.file_name().and_then(|n| n.to_str())) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}{ASIDE}");
    let mut found = Vec::new();
    for path in crate::stats::read_dir(dir)? {
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !file.starts_with(&prefix) {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        found.push(MovedAside {
            is_log: file.ends_with("-wal"),
            bytes: meta.len(),
            path,
        });
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Removes every file [`moved_aside`] lists; one already gone is no error.
/// (A directory moved aside, found where the database belonged, is removed whole.)
pub(crate) fn remove_moved_aside(db: &Path) -> Result<(), CacheError> {
    for file in moved_aside(db)? {
        remove_any(&file.path).map_err(io_err("remove", &file.path))?;
    }
    Ok(())
}

/// A sentence if `<db>-wal` is not empty and does not start with a SQLite WAL header (magic
/// `0x377f0682` or `0x377f0683`, format version 3007000). An empty log is SQLite's normal state
/// after a checkpoint, and a live one always starts with its header, so this never misjudges a
/// log another process is using.
fn check_wal(db: &Path) -> Option<String> {
    let wal = companion(db, "-wal");
    let mut head = Vec::with_capacity(32);
    crate::regular::open_regular(&wal, crate::regular::Links::Refuse)
        .ok()?
        .0
        .take(32)
        .read_to_end(&mut head)
        .ok()?;
    if head.is_empty() {
        return None;
    }
    let word = |i: usize| {
        head.get(i..i + 4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
    };
    let valid = head.len() == 32
        && matches!(word(0), Some(0x377f_0682 | 0x377f_0683))
        && word(4) == Some(3_007_000);
    (!valid).then(|| {
        format!(
            "the cache database's write-ahead log `{}` is damaged (no SQLite WAL header); SQLite \
             ignores it: results it held since the last checkpoint, if any, are lost and their \
             actions run again",
            wal.display()
        )
    })
}

/// Puts the database in WAL mode. A new database is still in rollback mode, and changing that
/// takes its exclusive lock: when several processes open it at once, SQLite answers the ones
/// that would deadlock (holding a shared lock while another waits for the exclusive one) with
/// `SQLITE_BUSY` at once, without calling the busy handler. So a busy answer is retried here,
/// within the same [`BUSY_TIMEOUT`] the busy handler keeps elsewhere.
fn enable_wal(conn: &Connection) -> Result<(), CacheError> {
    let started = std::time::Instant::now();
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => return Ok(()),
            Err(e) if crate::error::is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(sql_err("enable WAL")(e)),
        }
    }
}

/// Opens `path`, configures the connection and brings the schema up to date.
pub(crate) fn open_db(path: &Path) -> Result<Connection, CacheError> {
    let mut conn = Connection::open(path).map_err(sql_err("open"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql_err("set busy_timeout"))?;
    enable_wal(&conn)?;
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA cache_size = -65536; PRAGMA foreign_keys = ON;",
    )
    .map_err(sql_err("configure"))?;
    // The last connection to close would checkpoint the WAL into the database and delete it,
    // and the next command would create it again: four fsyncs per command, 1-5 ms on a quiet
    // disk and tens of ms behind another process's writeback (the 1,000-package leaf edit,
    // run after turbo in the benchmark: 86 ms, of which the fsyncs were the part ninja does
    // not pay). The WAL stays between commands instead and is checkpointed when it passes
    // SQLite's 1,000 pages, by the commit that crosses that.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
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
