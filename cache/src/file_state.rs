//! The file-state table: absolute path → (size, mtime, ctime, inode) → content digest.
//!
//! Input hashing reads a file only when its metadata changed (design brief, "Execution and cache
//! semantics"). The engine, per build:
//! 1. loads every row under the workspace root at once ([`Cache::load_file_states`], one range
//!    query `path >= prefix AND path < prefix⁺`, where `prefix⁺` is the prefix with its last
//!    character incremented, so the primary key index answers it and two workspaces sharing the
//!    cache never mix);
//! 2. `stat`s each input; equal size, mtime, ctime and inode reuse the digest, others are
//!    re-hashed;
//! 3. saves the new or changed rows in one transaction ([`Cache::save_file_states`]).
//!
//! Invariant kept by the engine, not here: a row whose `recorded_at_ns` is not safely later than
//! its `mtime_ns` and `ctime_ns` (the "racy" same-tick edit, as in git's index) must not be
//! trusted (`flow_rules::snapshot::settled`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::sql_err;
use crate::{Cache, CacheError, Digest};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    pub size: u64,
    pub mtime_ns: i64,
    /// When the inode last changed (content, mode, links, name); no call can set it back.
    pub ctime_ns: i64,
    pub ino: u64,
    pub digest: Digest,
    /// When `digest` was taken (unix nanoseconds).
    pub recorded_at_ns: i64,
}

impl Cache {
    /// Every row whose path starts with `prefix` (an absolute directory path ending in `/`).
    pub fn load_file_states(&self, prefix: &str) -> Result<HashMap<String, FileState>, CacheError> {
        self.with_conn(|conn| {
            const COLUMNS: &str =
                "SELECT path, size, mtime_ns, ino, digest, recorded_at_ns, ctime_ns FROM file_state";
            let mut stmt;
            let rows = match upper_bound(prefix) {
                Some(upper) => {
                    stmt = conn
                        .prepare_cached(&format!("{COLUMNS} WHERE path >= ?1 AND path < ?2"))
                        .map_err(sql_err("load file states"))?;
                    stmt.query_map([prefix, upper.as_str()], row_to_state)
                }
                None => {
                    stmt = conn
                        .prepare_cached(&format!("{COLUMNS} WHERE path >= ?1"))
                        .map_err(sql_err("load file states"))?;
                    stmt.query_map([prefix], row_to_state)
                }
            }
            .map_err(sql_err("load file states"))?;
            let mut states = HashMap::new();
            for row in rows {
                let (path, state) = row.map_err(sql_err("load file states"))?;
                // A damaged digest is a row to forget: the file is simply hashed again.
                if let Some(state) = state {
                    states.insert(path, state);
                }
            }
            Ok(states)
        })
    }

    /// Inserts or replaces `rows` in one transaction; does nothing for no rows.
    pub fn save_file_states(&self, rows: &[(String, FileState)]) -> Result<(), CacheError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write("save file states", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO file_state \
                     (path, size, mtime_ns, ino, digest, recorded_at_ns, ctime_ns) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql_err("save file states"))?;
            for (path, s) in rows {
                stmt.execute(rusqlite::params![
                    path,
                    s.size as i64,
                    s.mtime_ns,
                    s.ino as i64,
                    s.digest,
                    s.recorded_at_ns,
                    s.ctime_ns
                ])
                .map_err(sql_err("save file states"))?;
            }
            Ok(())
        })
    }
}

fn row_to_state(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Option<FileState>)> {
    let state = || {
        Some(FileState {
            size: r.get::<_, i64>(1).ok()? as u64,
            mtime_ns: r.get(2).ok()?,
            ino: r.get::<_, i64>(3).ok()? as u64,
            digest: r.get(4).ok()?,
            recorded_at_ns: r.get(5).ok()?,
            ctime_ns: r.get(6).ok()?,
        })
    };
    Ok((r.get(0)?, state()))
}

/// The smallest string greater than every string that starts with `prefix`: the prefix with its
/// last character incremented (skipping the surrogate gap). `None` when there is none (empty
/// prefix, or only `char::MAX`s), meaning "no upper bound".
pub(crate) fn upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}
