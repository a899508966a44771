//! `CacheError`: everything that can go wrong in the cache, as data.
//!
//! Classified by consequence (STYLE.md habit 8):
//! - environment: [`CacheError::Io`], [`CacheError::DiskFull`], [`CacheError::Sqlite`] (including
//!   "database is locked" after the 30 s busy timeout), [`CacheError::SchemaTooNew`];
//! - damaged cache content, repaired by running the action again: [`CacheError::Corrupt`],
//!   [`CacheError::BadRow`], [`CacheError::BadManifest`];
//! - hostile or unusable paths: [`CacheError::UnsafePath`], [`CacheError::WrongFileType`].
//!
//! Only the binary renders these; the messages here follow the house style (paths in backticks,
//! no trailing period).

use std::io;
use std::path::{Path, PathBuf};

use crate::Digest;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot {op} `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("{}", sqlite_message(op, source))]
    Sqlite {
        op: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "cache blob {digest} is missing or corrupt (`{}`); it was removed and will be rebuilt",
        path.display()
    )]
    Corrupt { digest: Digest, path: PathBuf },
    #[error("no space left on the device holding `{}`", path.display())]
    DiskFull { path: PathBuf },
    #[error("refusing the path `{path}`: {reason}")]
    UnsafePath { path: String, reason: String },
    #[error("`{}` is {found}, expected {expected}", path.display())]
    WrongFileType {
        path: PathBuf,
        expected: &'static str,
        found: &'static str,
    },
    #[error(
        "the cache database `{}` has schema version {found}, newer than the {supported} this \
         flow knows; upgrade flow or use another cache directory",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("a row of the cache table `{table}` is damaged: {reason}")]
    BadRow { table: &'static str, reason: String },
    #[error("the tree manifest {digest} is not valid: {reason}")]
    BadManifest { digest: Digest, reason: String },
}

impl CacheError {
    /// True for SQLite's "database is locked" / "database is busy" (the busy timeout ran out).
    pub fn is_locked(&self) -> bool {
        matches!(self, CacheError::Sqlite { source, .. } if is_busy(source))
    }

    pub(crate) fn unsafe_path(path: impl Into<String>, reason: impl Into<String>) -> CacheError {
        CacheError::UnsafePath {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// `map_err` helper: an I/O error on `path` during `op`; ENOSPC and EDQUOT become `DiskFull`.
pub(crate) fn io_err<'p>(
    op: &'static str,
    path: &'p Path,
) -> impl FnOnce(io::Error) -> CacheError + 'p {
    move |source| match source.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => CacheError::DiskFull {
            path: path.to_owned(),
        },
        _ => CacheError::Io {
            path: path.to_owned(),
            op,
            source,
        },
    }
}

/// `map_err` helper for SQLite calls.
pub(crate) fn sql_err(op: &'static str) -> impl FnOnce(rusqlite::Error) -> CacheError {
    move |source| CacheError::Sqlite { op, source }
}

pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn sqlite_message(op: &str, source: &rusqlite::Error) -> String {
    if is_busy(source) {
        format!(
            "cache database is locked: {op} waited 30 s for another flow process sharing the \
             cache directory ({source})"
        )
    } else {
        format!("cache database error during {op}: {source}")
    }
}
