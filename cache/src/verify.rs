//! `flow cache verify [--fix]`: proves a cache directory sound, or lists what is not; and the
//! sweep of what dead processes left behind, which every build runs.
//!
//! [`Cache::verify`]:
//! 1. `PRAGMA quick_check` on the database: SQLite reads every page (a build reads only the
//!    pages it needs, and meets damage elsewhere only when it reads there). A damaged database
//!    is a problem, and its rows are not read (step 3 is skipped);
//! 2. re-hash every blob under `cas/` (on the rayon pool); a blob whose content does not hash to
//!    its name is *corrupt*;
//! 3. read every row of `action_results` and check everything a hit would read: the row decodes,
//!    every output path is safe, every output blob, every tree manifest (which must decode and
//!    validate) and every file listed in it, and both logs exist, are sound and have the sizes
//!    the row records. A row failing any check is a *bad result*; a blob created after step 2
//!    (a concurrent build) is checked when a row first needs it;
//! 4. list `tmp/` and `sandbox/`: an entry made by a process that is gone (its name starts with
//!    the creator's pid, see [`owner_pid`](orphans::owner_pid)) is an *orphan* / a *stale
//!    sandbox*.
//!
//! With `fix`, in this order: a damaged database is moved aside and an empty one started (as a
//! build that meets the damage does: its results are lost, their actions run again); bad
//! results are deleted (only if the row is still the one read, so
//! a concurrent build's fresh result stays), so they become misses and the next build runs the
//! action again; corrupt blobs are re-hashed once more and removed; orphans and stale sandboxes
//! are removed. Each problem says whether it was fixed. Blobs no result needs are not problems
//! (that is `gc`'s business), nor is the history.
//!
//! [`sweep_leftovers`] does the same for an output root (`flow-out/`): the temp files and
//! directories `materialize_file` and `materialize_tree` create beside a destination
//! (`.flow-tmp-<unique>`, `.flow-old-<unique>`; older versions put the destination's name
//! first, `.NAME.flow-tmp-<unique>`) whose process is gone.
//!
//! Liveness: an entry is orphaned when the pid in its name is not a live process (a zombie is
//! gone: it can never write again). Where `/proc` is not available, or for a name without a pid,
//! an entry is orphaned only when older than [`STALE_TEMP`](crate::STALE_TEMP), as `gc` judges
//! it.
//! Admitted limit: processes sharing a cache directory must share a PID namespace; a process in
//! another namespace looks gone, and `--fix` (or a build's sweep) may remove its temp files,
//! which makes that process's store fail (an error for that action, never a wrong result).
//!
//! Files: the checks in `checks.rs` (they change nothing), the repairs in `repair.rs`, what dead
//! processes left behind in `orphans.rs`; here, the report and the order of it all.

mod checks;
mod orphans;
mod repair;

use std::fmt;

#[cfg(test)] // `tests/verify.rs` (the crate's unit tests) imports it from here.
pub(crate) use orphans::owner_pid;
pub use orphans::{sweep_leftovers, sweep_sandboxes};

use crate::{Cache, CacheError};

/// What [`Cache::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows of `action_results` checked.
    pub results: u64,
    /// Blobs re-hashed.
    pub blobs: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when nothing is wrong, or everything wrong was fixed.
    pub fn is_sound(&self) -> bool {
        self.problems.iter().all(|p| p.fixed)
    }
}

/// One thing wrong, as one line of text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// What is wrong, one line, without the outcome of a fix.
    pub message: String,
    /// Whether `fix` repaired it (always false without `fix`).
    pub fixed: bool,
    /// Why `fix` could not repair it.
    pub not_fixed: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// `PRAGMA quick_check` failed; fixed by moving the database aside (an empty one replaces
    /// it).
    Database,
    /// An action result that a hit could not restore; fixed by deleting the row.
    BadResult,
    /// A blob whose content does not hash to its name; fixed by removing it.
    CorruptBlob,
    /// A file in `tmp/` of a process that is gone; fixed by removing it.
    OrphanTemp,
    /// A directory in `sandbox/` of a process that is gone; fixed by removing it.
    StaleSandbox,
    /// A temp file or directory beside an output of an interrupted restore; fixed by removing it.
    Leftover,
    /// An evaluation snapshot that does not match its checksum (checked by the engine, which
    /// owns its format); fixed by removing it.
    Snapshot,
}

impl Problem {
    /// A problem, not (yet) fixed.
    pub fn new(kind: ProblemKind, message: String) -> Problem {
        Problem {
            kind,
            message,
            fixed: false,
            not_fixed: None,
        }
    }

    /// Records how a repair went.
    pub fn outcome(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => self.fixed = true,
            Err(why) => self.not_fixed = Some(why),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(why) = &self.not_fixed {
            write!(f, " (not fixed: {why})")?;
        }
        Ok(())
    }
}

impl Cache {
    /// Checks the whole cache directory; with `fix`, repairs what it can (see the module docs).
    pub fn verify(&self, fix: bool) -> Result<VerifyReport, CacheError> {
        let mut report = VerifyReport::default();
        let readable = self.check_database(fix, &mut report)?;

        // Every blob, re-hashed.
        let blobs = self.rehash_blobs()?;
        report.blobs = blobs.count;

        // Every action result, against those blobs.
        let rows = if readable {
            self.read_rows()?
        } else {
            Vec::new()
        };
        report.results = rows.len() as u64;
        let mut bad = self.bad_results(&rows, &blobs.states);
        if fix && !bad.is_empty() {
            let deleted = self.delete_rows(bad.iter().map(|(r, _)| *r));
            for ((_, p), r) in bad.iter_mut().zip(deleted) {
                p.outcome(r);
            }
        }
        report.problems.extend(bad.into_iter().map(|(_, p)| p));

        for (d, path, message) in blobs.corrupt {
            let mut p = Problem::new(ProblemKind::CorruptBlob, message);
            if fix {
                p.outcome(self.remove_corrupt_blob(&d, &path));
            }
            report.problems.push(p);
        }

        report.problems.extend(self.orphans(fix)?);
        Ok(report)
    }
}
