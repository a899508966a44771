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
//! behind a mutex, held for one statement or one transaction at a time. Several processes (each
//! with its own `Cache`) may share a directory; SQLite's locking and the CAS's atomic renames
//! keep them consistent.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::db::open_or_recover;
use crate::error::{io_err, sql_err};
use crate::regular::real_dir;
use crate::{CacheError, Cas};

/// The file name of the database inside the cache directory.
pub const DB_FILE: &str = "flow.db";

/// The directories inside the cache directory that flow creates and writes into.
pub const SUBDIRS: [&str; 3] = ["cas", "tmp", "analysis"];

pub struct Cache {
    dir: PathBuf,
    cas: Cas,
    conn: Mutex<Connection>,
    notices: Vec<String>,
}

impl Cache {
    /// Opens the cache directory `dir`, creating it, `cas/`, `tmp/` and the database as needed,
    /// and migrating the schema (a database newer than this flow is refused). A damaged database
    /// is moved aside and replaced by an empty one ([`Cache::notices`] says so).
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
        let (conn, opened) = open_or_recover(dir, &dir.join(DB_FILE))?;
        notices.extend(opened);
        Ok(Cache {
            dir: dir.to_owned(),
            cas,
            conn: Mutex::new(conn),
            notices,
        })
    }

    /// What opening found damaged and repaired (a database moved aside, an unusable write-ahead
    /// log), one sentence each, for the caller to print as warnings. Empty when all was well.
    pub fn notices(&self) -> &[String] {
        &self.notices
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cas(&self) -> &Cas {
        &self.cas
    }

    /// The connection, for one statement or one transaction.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock rolled back any open transaction (it was dropped).
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in one IMMEDIATE transaction and commits it.
    pub(crate) fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err(op))?;
        let value = f(&tx)?;
        tx.commit().map_err(sql_err(op))?;
        Ok(value)
    }
}
