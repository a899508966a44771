//! Declared outputs before and after a run: checking that each exists with its declared kind,
//! and (for `sandbox = false` only) removing stale ones before the run.
//!
//! A file output (`out.txt`) must resolve to a regular file, a directory output (`out/`) to a
//! directory; symlinks are followed, as the runner will follow them when it collects. Anything
//! else makes the output missing, with a sentence in `output_problems` saying what was found.
//!
//! In the real tree (`sandbox = false`) an output left by an earlier run would look fresh, so
//! [`remove_stale`] deletes each declared output before the run, as Bazel does: a build that
//! forgot to write it then fails instead of caching yesterday's file. Only declared paths, checked
//! by `stage::check_layout` to be inside the package, are touched.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

/// Checks every declared output under `package_dir`; returns (missing outputs, problems).
pub(super) fn check(package_dir: &Path, outputs: &[String]) -> (Vec<String>, Vec<String>) {
    let mut missing = Vec::new();
    let mut problems = Vec::new();
    for out in outputs {
        let want_dir = out.ends_with('/');
        let path = package_dir.join(out.trim_end_matches('/'));
        let problem = match fs::metadata(&path) {
            Ok(meta) if want_dir && !meta.is_dir() => Some(format!(
                "declared output `{out}` is a file, not a directory"
            )),
            Ok(meta) if !want_dir && meta.is_dir() => Some(format!(
                "declared output `{out}` is a directory; declare it as `{out}/` to collect a tree"
            )),
            Ok(meta) if !want_dir && !meta.is_file() => {
                Some(format!("declared output `{out}` is not a regular file"))
            }
            Ok(_) => None,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if fs::symlink_metadata(&path).is_ok() {
                    Some(format!("declared output `{out}` is a dangling symlink"))
                } else {
                    Some(format!("declared output `{out}` was not created"))
                }
            }
            Err(e) => Some(format!("cannot read declared output `{out}`: {e}")),
        };
        if let Some(problem) = problem {
            missing.push(out.clone());
            problems.push(problem);
        }
    }
    (missing, problems)
}

/// Deletes the declared outputs under `package_dir` that exist already (sandbox = false).
pub(super) fn remove_stale(package_dir: &Path, outputs: &[String]) -> Result<(), String> {
    for out in outputs {
        let path = package_dir.join(out.trim_end_matches('/'));
        let removed = match fs::symlink_metadata(&path) {
            Err(_) => Ok(()),
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path),
            Ok(_) => fs::remove_file(&path),
        };
        removed.map_err(|e| format!("cannot remove stale output `{}`: {e}", path.display()))?;
    }
    Ok(())
}
