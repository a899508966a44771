//! `Cache`: one open cache directory, the handle the engine holds.
//!
//! Layout of the directory (see `docs/cache-format.md`):
//!
//! ```text
//! <dir>/flow.db        SQLite (WAL: also flow.db-wal, flow.db-shm) — schema in db.rs
//! <dir>/cas/ab/cdef…   blobs, named by digest (cas.rs)
//! <dir>/tmp/           files on their way into cas/; stale ones are removed by gc
//! ```
//!
//! The methods are spread over one file per concept: `action_cache.rs`, `file_state.rs`,
//! `history.rs`, `gc.rs`, `stats.rs`. `Cache` is `Send + Sync`: its one SQLite connection sits
//! behind a mutex, held for one statement or one transaction at a time ([`Cache::with_conn`]).
//! Several processes (each with its own `Cache`) may share a directory; SQLite's locking and the
//! CAS's atomic renames keep them consistent.
//!
//! Damage: SQLite checks a page only when a statement reads it, so opening finds a damaged
//! header or schema but not a damaged table or index page. Every statement therefore runs
//! through [`Cache::with_conn`], which meets such damage where it shows ("database disk image
//! is malformed"), repairs the database as opening does (`db::recover`: moved aside, an empty
//! one started), carries over the builds this handle has begun, and runs the statement once
//! more on the new database. Checking every page at open instead (`PRAGMA quick_check`) costs
//! about 1.2 ms per MB of database (52 ms for 43 MB), more than a whole incremental build.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use crate::db::{self, open_or_recover, FileId};
use crate::error::{io_err, sql_err};
use crate::regular::real_dir;
use crate::{CacheError, Cas};

/// The file name of the database inside the cache directory.
pub const DB_FILE: &str = "flow.db";

/// Where the repairs are reported as they happen.
type Sink = Box<dyn Fn(&str) + Send + Sync>;

/// The directories inside the cache directory that flow creates and writes into.
pub const SUBDIRS: [&str; 3] = ["cas", "tmp", "analysis"];

pub struct Cache {
    dir: PathBuf,
    cas: Cas,
    db: Mutex<Db>,
    notices: Mutex<Notices>,
    /// The builds begun through this handle and not finished (`begin_build`): carried into a
    /// database that replaces a damaged one, so that their runs still have a build to belong to.
    begun: Mutex<Vec<Begun>>,
}

/// The connection and the file it was opened on (`None` if that is not known for sure).
struct Db {
    conn: Connection,
    file: Option<FileId>,
}

#[derive(Default)]
struct Notices {
    all: Vec<String>,
    sink: Option<Sink>,
}

/// A row of `builds` as `begin_build` wrote it.
pub(crate) struct Begun {
    pub id: i64,
    pub started_at: i64,
    pub workspace: String,
    pub args: String,
}

impl Cache {
    /// Opens the cache directory `dir`, creating it, `cas/`, `tmp/` and the database as needed,
    /// and migrating the schema (a database newer than this flow is refused). A damaged database
    /// is moved aside and replaced by an empty one ([`Cache::notices`] says so), at open or
    /// when a statement first meets the damage.
    pub fn open(dir: &Path) -> Result<Cache, CacheError> {
        if let Err(e) = std::fs::create_dir_all(dir) {
            // Something else by that name (a link to one is the caller's choice, and followed).
            return Err(match std::fs::metadata(dir) {
                Ok(m) if !m.is_dir() => CacheError::WrongFileType {
                    path: dir.to_owned(),
                    expected: "a directory",
                    found: crate::regular::kind_of(&m),
                },
                _ => io_err("create directory", dir)(e),
            });
        }
        // The directories flow writes into must be its own: a link there would lead the
        // writes outside the cache, a file or a FIFO would fail every store.
        let mut notices = Vec::new();
        for sub in SUBDIRS {
            let path = dir.join(sub);
            if let Some(kind) = real_dir(&path).map_err(io_err("create directory", &path))? {
                notices.push(format!(
                    "`{}` was {kind}, not a directory; replaced it with an empty directory",
                    path.display()
                ));
            }
        }
        let cas = Cas::open(dir)?;
        let path = dir.join(DB_FILE);
        let (conn, file, opened) = open_or_recover(dir, &path)?;
        notices.extend(opened);
        Ok(Cache {
            dir: dir.to_owned(),
            cas,
            db: Mutex::new(Db { conn, file }),
            notices: Mutex::new(Notices {
                all: notices,
                sink: None,
            }),
            begun: Mutex::new(Vec::new()),
        })
    }

    /// What was found damaged and repaired so far (a database moved aside, an unusable
    /// write-ahead log), one sentence each. Empty when all was well.
    pub fn notices(&self) -> Vec<String> {
        lock(&self.notices).all.clone()
    }

    /// Gives `sink` every notice so far and every later one as it happens (a database found
    /// damaged in the middle of a build), for the caller to print as warnings.
    pub fn report_notices(&self, sink: impl Fn(&str) + Send + Sync + 'static) {
        let mut n = lock(&self.notices);
        n.all.iter().for_each(|text| sink(text));
        n.sink = Some(Box::new(sink));
    }

    fn notice(&self, text: String) {
        let mut n = lock(&self.notices);
        if let Some(sink) = &n.sink {
            sink(&text);
        }
        n.all.push(text);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cas(&self) -> &Cas {
        &self.cas
    }

    /// Runs `f` with the connection: one statement or one transaction. If SQLite finds the
    /// database damaged meanwhile, the database is repaired (see the module docs) and `f` runs
    /// once more, on the database that replaced it; what it returns then is the answer.
    pub(crate) fn with_conn<T>(
        &self,
        mut f: impl FnMut(&mut Connection) -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
        let mut db = lock(&self.db);
        let damage = match f(&mut db.conn) {
            Err(e) if db::is_damaged(&e) => e,
            other => return other,
        };
        for notice in self.replace_damaged(&mut db, &db::damage_reason(&damage))? {
            self.notice(notice);
        }
        f(&mut db.conn)
    }

    /// Runs `f` in one IMMEDIATE transaction and commits it (see [`Cache::with_conn`]).
    pub(crate) fn write<T>(
        &self,
        op: &'static str,
        mut f: impl FnMut(&Transaction<'_>) -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
        self.with_conn(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_err(op))?;
            let value = f(&tx)?;
            tx.commit().map_err(sql_err(op))?;
            Ok(value)
        })
    }

    /// Moves the database SQLite found damaged (`reason`: SQLite's words) aside, unless another
    /// process did already, and connects to its replacement; the builds this handle has begun
    /// are written into it. Returns what was done, one sentence each.
    fn replace_damaged(
        &self,
        db: &mut MutexGuard<'_, Db>,
        reason: &str,
    ) -> Result<Vec<String>, CacheError> {
        // Closed first: its file is about to be renamed.
        let closed = Connection::open_in_memory().map_err(sql_err("open"))?;
        drop(std::mem::replace(&mut db.conn, closed));
        let path = self.dir.join(DB_FILE);
        let (conn, file, notices) = db::recover(&self.dir, &path, db.file, reason)?;
        db.conn = conn;
        db.file = file;
        for b in lock(&self.begun).iter() {
            db.conn
                .execute(
                    "INSERT OR IGNORE INTO builds (id, started_at, workspace, args) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![b.id, b.started_at, b.workspace, b.args],
                )
                .map_err(sql_err("carry over the builds begun"))?;
        }
        Ok(notices)
    }

    /// For `verify --fix`, after `PRAGMA quick_check` found the database damaged (`reason`):
    /// what a statement meeting the damage does ([`Cache::with_conn`]). The sentences say what
    /// was done.
    pub(crate) fn repair_database(&self, reason: &str) -> Result<Vec<String>, CacheError> {
        let mut db = lock(&self.db);
        self.replace_damaged(&mut db, reason)
    }

    pub(crate) fn begun(&self) -> MutexGuard<'_, Vec<Begun>> {
        lock(&self.begun)
    }
}

/// The connection as it is, for tests that look at it directly.
#[cfg(test)]
pub(crate) struct ConnGuard<'a>(MutexGuard<'a, Db>);

#[cfg(test)]
impl std::ops::Deref for ConnGuard<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0.conn
    }
}

#[cfg(test)]
impl Cache {
    pub(crate) fn conn(&self) -> ConnGuard<'_> {
        ConnGuard(lock(&self.db))
    }
}

/// A panic while holding a lock rolled back any open transaction (it was dropped).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
