//! The checks of `flow cache verify`, which change nothing: the database's own check, every blob
//! re-hashed, and every action result checked against what a hit would read (steps 1–3 of the
//! outline in `verify.rs`).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use rusqlite::types::Value;

use super::{Problem, ProblemKind, VerifyReport};
use crate::action_cache::{OutputEntry, OutputKind};
use crate::error::sql_err;
use crate::manifest::{decode, TreeEntryKind};
use crate::paths::check_relative_path;
use crate::regular::Links;
use crate::stats::list_blobs;
use crate::{Cache, CacheError, Digest};

/// The state of one blob, as verification found it.
#[derive(Clone, Debug)]
pub(super) enum Blob {
    Sound { size: u64 },
    Missing,
    Corrupt { actual: Digest },
    Unreadable(String),
}

impl Blob {
    /// Checks the blob at `path`, named `d`.
    pub fn check(d: &Digest, path: &Path) -> Blob {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Blob::Missing,
            Err(e) => return Blob::Unreadable(e.to_string()),
            Ok(m) if !m.is_file() => {
                return Blob::Unreadable(format!(
                    "it is {}, not a regular file",
                    crate::regular::kind_of(&m)
                ))
            }
            Ok(_) => {}
        }
        match Digest::of_file(path, Links::Refuse) {
            Ok((actual, size)) if actual == *d => Blob::Sound { size },
            Ok((actual, _)) => Blob::Corrupt { actual },
            Err(CacheError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Blob::Missing
            }
            Err(e) => Blob::Unreadable(e.to_string()),
        }
    }
}

/// One undecoded row of `action_results`.
pub(super) struct Row {
    pub key: Value,
    pub created_at: Value,
    exit_code: Value,
    outputs: Value,
    logs: [Value; 2],
}

/// A corrupt or unreadable blob: its name, its path, and what is wrong with it.
pub(super) type CorruptBlob = (Digest, PathBuf, String);

/// Every blob of the CAS, re-hashed.
pub(super) struct BlobStates {
    /// How many blobs were re-hashed.
    pub count: u64,
    /// The blobs whose content does not hash to their name, or cannot be read.
    pub corrupt: Vec<CorruptBlob>,
    /// Each blob's state; a blob created since (a concurrent build) is checked when first needed.
    pub states: Mutex<HashMap<Digest, Blob>>,
}

impl Cache {
    /// Step 1: `PRAGMA quick_check` (SQLite reads every page). A damaged database is a
    /// problem; with `fix` it is moved aside and an empty one started, as when a build meets
    /// the damage. Returns whether the database can be read: its rows are checked only then.
    pub(super) fn check_database(
        &self,
        fix: bool,
        report: &mut VerifyReport,
    ) -> Result<bool, CacheError> {
        const OP: &str = "verify: check the database";
        let lines = self.with_conn(|conn| {
            let lines = conn.prepare("PRAGMA quick_check").and_then(|mut stmt| {
                stmt.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            });
            match lines.map_err(sql_err(OP)) {
                // Damage that stops the check itself (the schema's pages) is its finding.
                Err(e) if crate::db::is_damaged(&e) => Ok(vec![crate::db::damage_reason(&e)]),
                other => other,
            }
        })?;
        if lines == ["ok"] {
            return Ok(true);
        }
        let reason = match lines.as_slice() {
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first}; and {} more", rest.len()),
            [] => "no answer from `PRAGMA quick_check`".to_owned(),
        };
        let mut problem = Problem::new(
            ProblemKind::Database,
            format!(
                "the database `{}` is damaged ({reason})",
                self.dir().join(crate::DB_FILE).display(),
            ),
        );
        if !fix {
            problem.message += "; its action results were not checked";
            report.problems.push(problem);
            return Ok(false);
        }
        match self.repair_database(&reason) {
            Ok(done) if !done.is_empty() => {
                problem.message = done.join("; ");
                problem.outcome(Ok(()));
            }
            Ok(_) => problem.outcome(Err("another process replaced it meanwhile".into())),
            Err(e) => problem.outcome(Err(e.to_string())),
        }
        let readable = problem.fixed;
        report.problems.push(problem);
        Ok(readable)
    }

    /// Step 2: re-hashes every blob under `cas/`, on the rayon pool.
    pub(super) fn rehash_blobs(&self) -> Result<BlobStates, CacheError> {
        let listed = list_blobs(self.cas())?;
        let checked: Vec<(Digest, PathBuf, Blob)> = listed
            .into_par_iter()
            .map(|b| {
                let state = Blob::check(&b.digest, &b.path);
                (b.digest, b.path, state)
            })
            .collect();
        let count = checked.len() as u64;
        let mut corrupt = Vec::new();
        let mut blobs: HashMap<Digest, Blob> = HashMap::with_capacity(checked.len());
        for (d, path, state) in checked {
            match &state {
                Blob::Corrupt { actual } => corrupt.push((
                    d,
                    path.clone(),
                    format!(
                        "corrupt blob {d} (`{}`): its content hashes to {actual}",
                        path.display()
                    ),
                )),
                Blob::Unreadable(why) => corrupt.push((
                    d,
                    path.clone(),
                    format!("unreadable blob {d} (`{}`): {why}", path.display()),
                )),
                _ => {}
            }
            blobs.insert(d, state);
        }
        Ok(BlobStates {
            count,
            corrupt,
            states: Mutex::new(blobs),
        })
    }

    /// Step 3: every row of `action_results`, read without decoding.
    pub(super) fn read_rows(&self) -> Result<Vec<Row>, CacheError> {
        self.with_conn(|conn| {
            let mut stmt = conn
            .prepare(
                "SELECT key, created_at, exit_code, outputs, stdout, stderr FROM action_results",
            )
            .map_err(sql_err("verify: read results"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Row {
                        key: r.get(0)?,
                        created_at: r.get(1)?,
                        exit_code: r.get(2)?,
                        outputs: r.get(3)?,
                        logs: [r.get(4)?, r.get(5)?],
                    })
                })
                .map_err(sql_err("verify: read results"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql_err("verify: read results"))
        })
    }

    /// The rows a hit could not restore, each with its problem.
    pub(super) fn bad_results<'r>(
        &self,
        rows: &'r [Row],
        blobs: &Mutex<HashMap<Digest, Blob>>,
    ) -> Vec<(&'r Row, Problem)> {
        let mut bad = Vec::new();
        for row in rows {
            if let Err(why) = self.check_row(row, blobs) {
                let key = match &row.key {
                    Value::Blob(b) if b.len() == 32 => Digest::from_slice(b)
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                    other => format!("{other:?}"),
                };
                bad.push((
                    row,
                    Problem::new(
                        ProblemKind::BadResult,
                        format!("action result {key}: {why}"),
                    ),
                ));
            }
        }
        bad
    }

    /// `Err(why)` when a hit on `row` could not restore what it records.
    fn check_row(&self, row: &Row, blobs: &Mutex<HashMap<Digest, Blob>>) -> Result<(), String> {
        let Value::Blob(key) = &row.key else {
            return Err("its key is not a digest".into());
        };
        if key.len() != 32 {
            return Err(format!("its key has {} bytes instead of 32", key.len()));
        }
        if !matches!(row.exit_code, Value::Integer(_)) {
            return Err("its exit code is not an integer".into());
        }
        let Value::Text(outputs) = &row.outputs else {
            return Err("its outputs are not text".into());
        };
        let outputs: Vec<OutputEntry> =
            serde_json::from_str(outputs).map_err(|e| format!("its outputs do not decode: {e}"))?;
        let need = |d: &Digest, what: &str, size: Option<u64>| -> Result<(), String> {
            let state = {
                let mut known = blobs.lock().unwrap_or_else(|e| e.into_inner());
                known
                    .entry(*d)
                    .or_insert_with(|| Blob::check(d, &self.cas().path_of(d)))
                    .clone()
            };
            match state {
                Blob::Sound { size: actual } => match size {
                    Some(recorded) if recorded != actual => Err(format!(
                        "{what} records {recorded} bytes, but its blob {d} holds {actual}"
                    )),
                    _ => Ok(()),
                },
                Blob::Missing => Err(format!("{what} needs blob {d}, which is missing")),
                Blob::Corrupt { .. } => Err(format!("{what} needs blob {d}, which is corrupt")),
                Blob::Unreadable(why) => Err(format!(
                    "{what} needs blob {d}, which cannot be read: {why}"
                )),
            }
        };
        for o in &outputs {
            check_relative_path(&o.path).map_err(|e| e.to_string())?;
            match &o.kind {
                OutputKind::File { digest, size, .. } => {
                    need(digest, &format!("output `{}`", o.path), Some(*size))?;
                }
                OutputKind::Tree { digest, size } => {
                    let what = format!("the tree manifest of output `{}`", o.path);
                    need(digest, &what, None)?;
                    let path = self.cas().path_of(digest);
                    let bytes = crate::regular::read_regular(&path, Links::Refuse, u64::MAX)
                        .map_err(|e| format!("{what} cannot be read: {e}"))?;
                    let entries = decode(digest, &bytes).map_err(|e| format!("{what}: {e}"))?;
                    let mut total = 0;
                    for e in &entries {
                        if let TreeEntryKind::File { digest, size, .. } = &e.kind {
                            total += size;
                            let what = format!("file `{}` of output `{}`", e.path, o.path);
                            need(digest, &what, Some(*size))?;
                        }
                    }
                    if total != *size {
                        return Err(format!(
                            "output `{}` records {size} bytes, but its tree holds {total}",
                            o.path
                        ));
                    }
                }
            }
        }
        for (name, log) in ["stdout", "stderr"].iter().zip(&row.logs) {
            match log {
                Value::Null => {}
                Value::Blob(b) => match Digest::from_slice(b) {
                    Some(d) => need(&d, &format!("its {name}"), None)?,
                    None => return Err(format!("its {name} is not a digest")),
                },
                _ => return Err(format!("its {name} is not a digest")),
            }
        }
        Ok(())
    }
}
