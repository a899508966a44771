//! `flow cache verify [--fix]`: proves a cache directory sound, or lists what is not; and the
//! sweep of what dead processes left behind, which every build runs.
//!
//! [`Cache::verify`]:
//! 1. `PRAGMA quick_check` on the database (not fixable here: reported only);
//! 2. re-hash every blob under `cas/` (on the rayon pool); a blob whose content does not hash to
//!    its name is *corrupt*;
//! 3. read every row of `action_results` and check everything a hit would read: the row decodes,
//!    every output path is safe, every output blob, every tree manifest (which must decode and
//!    validate) and every file listed in it, and both logs exist, are sound and have the sizes
//!    the row records. A row failing any check is a *bad result*; a blob created after step 2
//!    (a concurrent build) is checked when a row first needs it;
//! 4. list `tmp/` and `sandbox/`: an entry made by a process that is gone (its name starts with
//!    the creator's pid, see [`owner_pid`]) is an *orphan* / a *stale sandbox*.
//!
//! With `fix`, in this order: bad results are deleted (only if the row is still the one read, so
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
//! an entry is orphaned only when older than [`STALE_TEMP`], as `gc` judges it.
//! Admitted limit: processes sharing a cache directory must share a PID namespace; a process in
//! another namespace looks gone, and `--fix` (or a build's sweep) may remove its temp files,
//! which makes that process's store fail (an error for that action, never a wrong result).

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use rayon::prelude::*;
use rusqlite::types::Value;

use crate::action_cache::{OutputEntry, OutputKind};
use crate::error::sql_err;
use crate::gc::STALE_TEMP;
use crate::manifest::{decode, TreeEntryKind};
use crate::paths::check_relative_path;
use crate::stats::{list_blobs, read_dir};
use crate::{Cache, CacheError, Digest};

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
    /// `PRAGMA quick_check` failed; never fixed by flow.
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
}

impl Problem {
    fn new(kind: ProblemKind, message: String) -> Problem {
        Problem {
            kind,
            message,
            fixed: false,
            not_fixed: None,
        }
    }

    fn outcome(&mut self, result: Result<(), String>) {
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

/// The state of one blob, as verification found it.
#[derive(Clone, Debug)]
enum Blob {
    Sound { size: u64 },
    Missing,
    Corrupt { actual: Digest },
    Unreadable(String),
}

impl Blob {
    /// Checks the blob at `path`, named `d`.
    fn check(d: &Digest, path: &Path) -> Blob {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Blob::Missing,
            Err(e) => return Blob::Unreadable(e.to_string()),
            Ok(m) if !m.is_file() => return Blob::Unreadable("not a regular file".into()),
            Ok(_) => {}
        }
        match Digest::of_file(path) {
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
struct Row {
    key: Value,
    created_at: Value,
    exit_code: Value,
    outputs: Value,
    logs: [Value; 2],
}

impl Cache {
    /// Checks the whole cache directory; with `fix`, repairs what it can (see the module docs).
    pub fn verify(&self, fix: bool) -> Result<VerifyReport, CacheError> {
        let mut report = VerifyReport::default();
        self.check_database(&mut report)?;

        // Every blob, re-hashed.
        let listed = list_blobs(self.cas())?;
        let checked: Vec<(Digest, PathBuf, Blob)> = listed
            .into_par_iter()
            .map(|b| {
                let state = Blob::check(&b.digest, &b.path);
                (b.digest, b.path, state)
            })
            .collect();
        report.blobs = checked.len() as u64;
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
        let blobs = Mutex::new(blobs);

        // Every action result, against those blobs.
        let rows = self.read_rows()?;
        report.results = rows.len() as u64;
        let mut bad: Vec<(&Row, Problem)> = Vec::new();
        for row in &rows {
            if let Err(why) = self.check_row(row, &blobs) {
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
        if fix && !bad.is_empty() {
            let deleted = self.delete_rows(bad.iter().map(|(r, _)| *r));
            for ((_, p), r) in bad.iter_mut().zip(deleted) {
                p.outcome(r);
            }
        }
        report.problems.extend(bad.into_iter().map(|(_, p)| p));

        for (d, path, message) in corrupt {
            let mut p = Problem::new(ProblemKind::CorruptBlob, message);
            if fix {
                p.outcome(self.remove_corrupt_blob(&d, &path));
            }
            report.problems.push(p);
        }

        report.problems.extend(self.orphans(fix)?);
        Ok(report)
    }

    /// Removes what processes that are gone left in `tmp/` and `sandbox/`; returns how many
    /// entries were removed. Two directory listings when there is nothing to do: every build
    /// runs it before starting.
    pub fn sweep_orphans(&self) -> Result<usize, CacheError> {
        Ok(self.orphans(true)?.iter().filter(|p| p.fixed).count())
    }

    fn check_database(&self, report: &mut VerifyReport) -> Result<(), CacheError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("PRAGMA quick_check")
            .map_err(sql_err("verify: check the database"))?;
        let lines = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(sql_err("verify: check the database"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err("verify: check the database"))?;
        if lines != ["ok"] {
            report.problems.push(Problem::new(
                ProblemKind::Database,
                format!(
                    "the database `{}` is damaged: {}",
                    self.dir().join(crate::DB_FILE).display(),
                    lines.join("; ")
                ),
            ));
        }
        Ok(())
    }

    fn read_rows(&self) -> Result<Vec<Row>, CacheError> {
        let conn = self.conn();
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
                    let bytes = fs::read(self.cas().path_of(digest))
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

    /// Deletes each row if it is still the one read (same key and creation time).
    fn delete_rows<'a>(&self, rows: impl Iterator<Item = &'a Row>) -> Vec<Result<(), String>> {
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
    fn remove_corrupt_blob(&self, d: &Digest, path: &Path) -> Result<(), String> {
        match Blob::check(d, path) {
            Blob::Sound { .. } | Blob::Missing => Ok(()),
            Blob::Corrupt { .. } | Blob::Unreadable(_) => {
                remove_entry(path).map_err(|e| format!("cannot remove it: {e}"))
            }
        }
    }

    /// Orphans in `tmp/` and stale sandboxes, removed with `fix`.
    fn orphans(&self, fix: bool) -> Result<Vec<Problem>, CacheError> {
        let mut problems = Vec::new();
        let tmp = self.cas().tmp_dir();
        for path in read_dir(tmp)? {
            let name = file_name(&path);
            let pid = owner_pid(name.strip_prefix("corrupt-").unwrap_or(name));
            if let Some(why) = gone(pid, &path) {
                let mut p = Problem::new(
                    ProblemKind::OrphanTemp,
                    format!("orphaned temp file `{}` ({why})", path.display()),
                );
                if fix {
                    p.outcome(remove_entry(&path).map_err(|e| e.to_string()));
                }
                problems.push(p);
            }
        }
        problems.extend(stale_sandboxes(&self.dir().join("sandbox"), fix)?);
        Ok(problems)
    }
}

/// Finds (and with `fix` removes) the sandboxes under `root` of processes that are gone:
/// `<pid>-<n>` directories made by the executor (engine/executor/sandbox.rs). For a sandbox root
/// outside the cache directory (on a tmpfs); the cache's own `sandbox/` is checked by
/// `Cache::verify` and `Cache::sweep_orphans`. A root that cannot be listed yields nothing.
pub fn sweep_sandboxes(root: &Path, fix: bool) -> Vec<Problem> {
    stale_sandboxes(root, fix).unwrap_or_default()
}

fn stale_sandboxes(root: &Path, fix: bool) -> Result<Vec<Problem>, CacheError> {
    let mut problems = Vec::new();
    for path in read_dir(root)? {
        let name = file_name(&path);
        // `<pid>-<n>`, made by the executor (engine/executor/sandbox.rs).
        let pid = name
            .split_once('-')
            .filter(|(_, n)| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        if let Some(why) = gone(pid, &path) {
            let mut p = Problem::new(
                ProblemKind::StaleSandbox,
                format!("stale sandbox `{}` ({why})", path.display()),
            );
            if fix {
                p.outcome(remove_entry(&path).map_err(|e| e.to_string()));
            }
            problems.push(p);
        }
    }
    Ok(problems)
}

/// Finds (and with `fix` removes) what interrupted restores left under the output root `root`
/// (`flow-out/`): `[.NAME].flow-tmp-<unique>` and `[.NAME].flow-old-<unique>` entries whose
/// process is gone. Directory outputs (a directory with a `.NAME.flow-tree` marker beside it) are not
/// searched: their content is the command's.
pub fn sweep_leftovers(root: &Path, fix: bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut names = Vec::new();
        for e in entries.flatten() {
            let Ok(ty) = e.file_type() else { continue };
            names.push((e.file_name().to_string_lossy().into_owned(), ty.is_dir()));
        }
        for (name, is_dir) in &names {
            let path = dir.join(name);
            if let Some(unique) = leftover_unique(name) {
                if let Some(why) = gone(owner_pid(unique), &path) {
                    let mut p = Problem::new(
                        ProblemKind::Leftover,
                        format!(
                            "leftover of an interrupted restore `{}` ({why})",
                            path.display()
                        ),
                    );
                    if fix {
                        p.outcome(remove_entry(&path).map_err(|e| e.to_string()));
                    }
                    problems.push(p);
                }
                continue;
            }
            let marker = format!(".{name}.flow-tree");
            if *is_dir && !names.iter().any(|(n, _)| *n == marker) {
                stack.push(path);
            }
        }
    }
    problems
}

/// The `<unique>` of `[.NAME].flow-tmp-<unique>` or `[.NAME].flow-old-<unique>`.
fn leftover_unique(name: &str) -> Option<&str> {
    if !name.starts_with('.') {
        return None;
    }
    ["flow-tmp-", "flow-old-"].iter().find_map(|tag| {
        let at = name.rfind(&format!(".{tag}"))?;
        let unique = &name[at + tag.len() + 1..];
        owner_pid(unique).map(|_| unique)
    })
}

/// The pid in a name made by `Cas::unique_name`: `<pid>-<counter>-<16 hex digits>`.
pub(crate) fn owner_pid(unique: &str) -> Option<u32> {
    let mut parts = unique.split('-');
    let (pid, n, random) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let hex = random.len() == 16 && random.bytes().all(|c| c.is_ascii_hexdigit());
    if parts.next().is_some() || !digits(pid) || !digits(n) || !hex {
        return None;
    }
    pid.parse().ok()
}

/// Why the entry at `path` made by process `pid` is abandoned, or `None` if it may be in use:
/// its process is gone; or, when that cannot be told, it is older than [`STALE_TEMP`].
fn gone(pid: Option<u32>, path: &Path) -> Option<String> {
    match pid.and_then(pid_alive) {
        Some(false) => Some(format!("process {} is gone", pid.unwrap_or_default())),
        Some(true) => None,
        None => {
            let old = fs::symlink_metadata(path)
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age > STALE_TEMP);
            old.then(|| "older than an hour, of no known process".to_owned())
        }
    }
}

/// Whether `pid` is a live process (a zombie is not); `None` without `/proc`.
fn pid_alive(pid: u32) -> Option<bool> {
    if pid == std::process::id() {
        return Some(true);
    }
    if !Path::new("/proc/self").exists() {
        return None;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // `pid (comm) state ...`; comm may hold spaces and parentheses.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_ascii_whitespace().next());
            Some(!matches!(state, Some("Z" | "X")))
        }
        Err(_) => Some(false),
    }
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// Removes a file, symlink or directory tree (making read-only directories writable first).
fn remove_entry(path: &Path) -> io::Result<()> {
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
