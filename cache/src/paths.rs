//! Path safety for everything the cache turns back into files.
//!
//! A cached result is data that may have been written by another machine (a shared cache
//! directory, later a remote cache), so nothing it names is trusted:
//! 1. [`check_relative_path`] refuses a relative path that could leave the directory it is
//!    joined to: absolute, `..`, `.`, empty segments, NUL, longer than [`MAX_PATH_BYTES`], or a
//!    segment longer than [`MAX_NAME_BYTES`] (no file system can hold it, so it is refused here
//!    with a reason instead of failing later with `ENAMETOOLONG`).
//! 2. [`check_symlink`] follows a symlink's target through the other symlinks of the same tree,
//!    as the kernel would, and refuses it if any step climbs above the tree's root, or if the
//!    resolution needs more than [`MAX_SYMLINK_HOPS`] hops (a loop, or a chain longer than the
//!    kernel follows): such a link cannot be shown to stay inside, and a user-space resolver
//!    without the kernel's limit (Python's `os.path.realpath`) would follow it further. No
//!    real output needs one.
//!
//! Writing through symlinks is prevented elsewhere: materializing makes every directory between
//! the output root and a destination a real directory first (`materialize.rs`), and creates
//! files with `O_EXCL`, which never follows a link.

use std::collections::HashMap;

use crate::CacheError;

/// The longest relative path accepted from the cache (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// The longest segment (file or directory name) accepted from the cache (Linux's `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// How many symlinks one resolution may follow (Linux's `MAXSYMLINKS`).
pub const MAX_SYMLINK_HOPS: u32 = 40;

/// Checks a relative output path from the cache before it is joined to an output root:
/// `Err(UnsafePath)` for an empty or absolute path, a `..`, `.` or empty segment (so no trailing
/// slash either), a NUL byte, more than 4096 bytes, or a segment of more than 255 bytes.
pub fn check_relative_path(path: &str) -> Result<(), CacheError> {
    let reason = if path.is_empty() {
        "is empty"
    } else if path.len() > MAX_PATH_BYTES {
        "is longer than 4096 bytes"
    } else if path.contains('\0') {
        "contains a NUL byte"
    } else if path.starts_with('/') {
        "is absolute"
    } else if path.split('/').any(|s| s == "..") {
        "contains a `..` segment"
    } else if path.split('/').any(|s| s.is_empty()) {
        "has an empty segment"
    } else if path.split('/').any(|s| s == ".") {
        "has a `.` segment"
    } else if path.split('/').any(|s| s.len() > MAX_NAME_BYTES) {
        "has a segment longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(CacheError::unsafe_path(path, reason))
}

/// Checks that the symlink at `link` (a path already accepted by [`check_relative_path`]) with
/// `target` stays inside its tree, whose symlinks are `links` (path → target, `link` included).
pub(crate) fn check_symlink(
    link: &str,
    target: &str,
    links: &HashMap<&str, &str>,
) -> Result<(), CacheError> {
    let refuse = |reason: &str| {
        Err(CacheError::unsafe_path(
            link,
            format!("is a symlink to `{target}`, which {reason}"),
        ))
    };
    if target.is_empty() || target.contains('\0') || target.len() > MAX_PATH_BYTES {
        return refuse("is empty, contains NUL or is too long");
    }
    if target.starts_with('/') {
        return refuse("is absolute");
    }
    let mut parent: Vec<&str> = link.split('/').collect();
    parent.pop();
    let mut budget = MAX_SYMLINK_HOPS;
    match resolve(parent, target, links, &mut budget) {
        Ok(_) => Ok(()),
        Err(Escape::Outside) => refuse("leads outside the tree"),
        Err(Escape::TooManyHops) => refuse(&format!(
            "loops or needs more than {MAX_SYMLINK_HOPS} symlink hops to resolve"
        )),
    }
}

/// Why a resolution was refused.
enum Escape {
    /// A step climbed above the root or met an absolute target.
    Outside,
    /// The hop budget ran out (a loop, or a chain too long to prove anything about).
    TooManyHops,
}

/// Follows `target` from the directory `at` (as segments below the root).
fn resolve<'a>(
    mut at: Vec<&'a str>,
    target: &'a str,
    links: &HashMap<&str, &'a str>,
    budget: &mut u32,
) -> Result<Vec<&'a str>, Escape> {
    if target.starts_with('/') {
        return Err(Escape::Outside);
    }
    for segment in target.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                at.pop().ok_or(Escape::Outside)?;
            }
            name => {
                at.push(name);
                if let Some(next) = links.get(at.join("/").as_str()) {
                    if *budget == 0 {
                        return Err(Escape::TooManyHops);
                    }
                    *budget -= 1;
                    at.pop();
                    at = resolve(at, next, links, budget)?;
                }
            }
        }
    }
    Ok(at)
}
