//! The repairs of `flow cache verify --fix`, each safe against a concurrent build: a bad result
//! is deleted only while it is still the row that was checked, a corrupt blob is removed only
//! while it is still corrupt, and entries are removed whole (read-only directories included).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::checks::{Blob, Row};
use crate::error::sql_err;
use crate::{Cache, Digest};

impl Cache {
    /// Deletes each row if it is still the one read (same key and creation time).
    pub(super) fn delete_rows<'a>(
        &self,
        rows: impl Iterator<Item = &'a Row>,
    ) -> Vec<Result<(), String>> {
        let rows: Vec<&Row> = rows.collect();
        let done = self.write("verify: delete bad results", |tx| {
            let mut stmt = tx
                .prepare("DELETE FROM action_results WHERE key = ?1 AND created_at IS ?2")
                .map_err(sql_err("verify: delete bad results"))?;
            rows.iter()
                .map(|r| {
                    stmt.execute(rusqlite::params![r.key, r.created_at])
                        .map(|n| {
                            if n == 1 {
                                Ok(())
                            } else {
                                Err("another process replaced it meanwhile".to_owned())
                            }
                        })
                        .map_err(sql_err("verify: delete bad results"))
                })
                .collect::<Result<Vec<_>, _>>()
        });
        match done {
            Ok(each) => each,
            Err(e) => rows.iter().map(|_| Err(e.to_string())).collect(),
        }
    }

    /// Removes a corrupt blob if it is still corrupt (a concurrent store may have repaired it).
    pub(super) fn remove_corrupt_blob(&self, d: &Digest, path: &Path) -> Result<(), String> {
        match Blob::check(d, path) {
            Blob::Sound { .. } | Blob::Missing => Ok(()),
            Blob::Corrupt { .. } | Blob::Unreadable(_) => {
                remove_entry(path).map_err(|e| format!("cannot remove it: {e}"))
            }
        }
    }
}

/// Removes a file, symlink or directory tree (making read-only directories writable first).
pub(super) fn remove_entry(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            make_writable(path);
            match fs::remove_dir_all(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Adds `rwx` for the owner to `dir` and every directory below it.
fn make_writable(dir: &Path) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode() | 0o700;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(mode));
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            make_writable(&e.path());
        }
    }
}
