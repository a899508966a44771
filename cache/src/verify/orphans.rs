//! What processes that are gone left behind (step 4 of the outline in `verify.rs`, and the sweep
//! every build runs): temp files in `tmp/`, sandboxes in `sandbox/` or a sandbox root elsewhere,
//! and the temp entries of interrupted restores beside outputs in `flow-out/`.
//!
//! Whose is an entry: its name starts with the pid of the process that made it ([`owner_pid`]).
//! It is abandoned when that process is not alive (a zombie is gone), or, where that cannot be
//! told, when it is older than [`STALE_TEMP`].

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use super::repair::remove_entry;
use super::{Problem, ProblemKind};
use crate::gc::STALE_TEMP;
use crate::stats::read_dir;
use crate::{Cache, CacheError};

impl Cache {
    /// Removes what processes that are gone left in `tmp/` and `sandbox/`; returns how many
    /// entries were removed. Two directory listings when there is nothing to do: every build
    /// runs it before starting.
    pub fn sweep_orphans(&self) -> Result<usize, CacheError> {
        Ok(self.orphans(true)?.iter().filter(|p| p.fixed).count())
    }

    /// Orphans in `tmp/` and stale sandboxes, removed with `fix`.
    pub(super) fn orphans(&self, fix: bool) -> Result<Vec<Problem>, CacheError> {
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
/// process is gone. Directory outputs (a directory with a `.NAME.flow-tree` marker beside it) are
/// not searched: their content is the command's.
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

/// The last component of `path`, or `""`.
fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}
