//! Stray writes: what an action created or modified in its sandbox outside its declared outputs.
//!
//! 1. [`Snapshot::take`] walks the exec root after staging (inputs, their directories, the
//!    output directories flow created) and records each entry's kind, size, mtime and inode.
//! 2. After the run, [`Snapshot::stray_writes`] walks it again, skipping declared outputs (a
//!    directory output is not entered): a new entry is reported (a new directory once, as
//!    `dir/`, without its contents), and so is a file or symlink whose kind, size, mtime or inode
//!    changed. Deleted entries are not writes and are not reported.
//!
//! Invariants: symlinks are never followed (a copied directory input may hold some);
//! HOME and TMPDIR live beside the exec root, so they are never walked.
//! Limits: an in-place rewrite of an input with the same size within one mtime tick goes
//! unnoticed; the report is advice for the user, never a reason to fail the action.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    len: u64,
    mtime: (i64, i64),
    ino: u64,
}

impl Entry {
    fn of(meta: &fs::Metadata) -> Entry {
        let ft = meta.file_type();
        let kind = if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else {
            Kind::Other
        };
        Entry {
            kind,
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ino: meta.ino(),
        }
    }
}

/// The exec root's entries, exec-root-relative.
#[derive(Debug, Default)]
pub(super) struct Snapshot(BTreeMap<PathBuf, Entry>);

impl Snapshot {
    pub(super) fn take(exec: &Path) -> Snapshot {
        let mut entries = BTreeMap::new();
        walk(exec, Path::new(""), &mut |rel, entry| {
            entries.insert(rel.to_path_buf(), entry);
            true
        });
        Snapshot(entries)
    }

    /// Exec-root-relative paths written outside `file_outputs` and `dir_outputs`, sorted.
    pub(super) fn stray_writes(
        &self,
        exec: &Path,
        file_outputs: &HashSet<PathBuf>,
        dir_outputs: &HashSet<PathBuf>,
    ) -> Vec<String> {
        let mut stray = Vec::new();
        walk(exec, Path::new(""), &mut |rel, entry| {
            if file_outputs.contains(rel) || dir_outputs.contains(rel) {
                return false;
            }
            match self.0.get(rel) {
                None if entry.kind == Kind::Dir => {
                    stray.push(format!("{}/", rel.display()));
                    false
                }
                None => {
                    stray.push(rel.display().to_string());
                    false
                }
                Some(before) if before.kind == Kind::Dir && entry.kind == Kind::Dir => true,
                Some(before) => {
                    if *before != entry {
                        stray.push(rel.display().to_string());
                    }
                    false
                }
            }
        });
        stray.sort();
        stray
    }
}

/// Depth-first walk below `root/rel`, without following symlinks; `visit` returns whether to
/// enter a directory. Unreadable directories are skipped.
fn walk(root: &Path, rel: &Path, visit: &mut dyn FnMut(&Path, Entry) -> bool) {
    let Ok(entries) = fs::read_dir(root.join(rel)) else {
        return;
    };
    for dirent in entries.flatten() {
        let Ok(meta) = dirent.metadata() else {
            continue;
        };
        let child = rel.join(dirent.file_name());
        let entry = Entry::of(&meta);
        if visit(&child, entry) && entry.kind == Kind::Dir {
            walk(root, &child, visit);
        }
    }
}
