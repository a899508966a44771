//! `CacheStats` for `flow cache stats`, and the walk over the CAS that `gc` shares.
//!
//! Blob counts come from walking `cas/` (`readdir` plus one `lstat` per blob), not from the
//! database: the CAS has no table, so the walk is the truth, including blobs no result names.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cache::DB_FILE;
use crate::error::{io_err, sql_err};
use crate::{Cache, CacheError, Cas, Digest};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub action_results: u64,
    pub file_states: u64,
    pub builds: u64,
    pub action_runs: u64,
    /// `flow.db` plus its write-ahead log.
    pub db_bytes: u64,
    /// Damaged databases moved aside by an earlier open (`flow.db.corrupt-*`), kept for a
    /// post-mortem until `flow clean --cache` or a hand removes them.
    pub moved_aside: u64,
    /// What they weigh, their logs included.
    pub moved_aside_bytes: u64,
}

/// One blob found by [`list_blobs`].
pub(crate) struct BlobInfo {
    pub digest: Digest,
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
}

/// Every blob under `cas/`. Files whose names are not digests are skipped; a file that vanishes
/// during the walk (a concurrent `gc`) is skipped too.
pub(crate) fn list_blobs(cas: &Cas) -> Result<Vec<BlobInfo>, CacheError> {
    let mut blobs = Vec::new();
    for shard in read_dir(cas.root())? {
        let Some(prefix) = shard
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
        else {
            continue;
        };
        if prefix.len() != 2 || !shard.is_dir() {
            continue;
        }
        for path in read_dir(&shard)? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some(digest) = Digest::from_hex(&format!("{prefix}{name}")) else {
                continue;
            };
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            blobs.push(BlobInfo {
                digest,
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                path,
            });
        }
    }
    Ok(blobs)
}

/// The entries of `dir` (none if it vanished).
pub(crate) fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, CacheError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    entries
        .map(|e| e.map(|e| e.path()).map_err(io_err("list", dir)))
        .collect()
}

impl Cache {
    pub fn stats(&self) -> Result<CacheStats, CacheError> {
        let blobs = list_blobs(self.cas())?;
        self.with_conn(|conn| {
            let count = |table: &str| -> Result<u64, CacheError> {
                conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n as u64)
                .map_err(sql_err("count rows"))
            };
            let db_bytes = ["", "-wal"]
                .iter()
                .filter_map(|suffix| {
                    fs::metadata(self.dir().join(format!("{DB_FILE}{suffix}"))).ok()
                })
                .map(|m| m.len())
                .sum();
            let aside = crate::db::moved_aside(&self.dir().join(DB_FILE))?;
            Ok(CacheStats {
                blobs: blobs.len() as u64,
                blob_bytes: blobs.iter().map(|b| b.size).sum(),
                action_results: count("action_results")?,
                file_states: count("file_state")?,
                builds: count("builds")?,
                action_runs: count("action_runs")?,
                db_bytes,
                moved_aside: aside.iter().filter(|f| !f.is_log).count() as u64,
                moved_aside_bytes: aside.iter().map(|f| f.bytes).sum(),
            })
        })
    }
}
