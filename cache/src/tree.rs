//! Directory outputs: storing a tree into the CAS and materializing it back.
//!
//! `put_tree(dir)`:
//! 1. walk `dir` without following symlinks, collecting files, symlinks (as their target text)
//!    and empty directories; a name that is not UTF-8 or a special file is refused;
//! 2. [`validate`] the entries exactly as a manifest read back would be, so a symlink whose
//!    target is absolute or leaves `dir` is refused (`UnsafePath`) before anything is stored;
//! 3. store every file blob (in parallel on the rayon pool), then the manifest blob.
//!
//! `materialize_tree(manifest, dest)`:
//! 1. read and verify the manifest, and validate every entry (nothing is written otherwise);
//! 2. build the whole tree in a fresh `.flow-tmp-<unique>` beside `dest`, each file copied and
//!    verified (any `Corrupt` blob aborts and removes the temp tree). Nothing is written through
//!    a symlink: directories are made one level at a time and must be real directories
//!    (`real_dirs`), files are created with `O_EXCL` and symlinks with `symlink(2)`, neither of
//!    which follows an existing link; validation already refused any entry below a symlink
//!    entry, and directories are made before any symlink;
//! 3. swap it in: rename the old `dest` aside (`.flow-old-<unique>`; a symlink at `dest` is
//!    moved, not followed), rename the new tree to `dest`, remove the old one.
//!
//! Admitted limit: the swap is two renames, so a reader can briefly see no `dest` at all.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::cas::file_kind;
use crate::error::io_err;
use crate::manifest::{decode, encode, validate, TreeEntry, TreeEntryKind};
use crate::materialize::{output_mode, real_dirs, split_dest};
use crate::{CacheError, Cas, Digest};

enum Found {
    File(PathBuf),
    Symlink(String),
    EmptyDir,
}

impl Cas {
    /// Stores the directory `dir` and returns the digest of its manifest and the total size of
    /// its files. With `take`, files are moved into the store where possible and `dir` is
    /// removed afterwards.
    pub fn put_tree(&self, dir: &Path, take: bool) -> Result<(Digest, u64), CacheError> {
        crate::cas::require_dir(dir)?;
        let mut found = Vec::new();
        walk(dir, "", &mut found)?;
        let mut entries: Vec<TreeEntry> = found
            .iter()
            .map(|(path, f)| TreeEntry {
                path: path.clone(),
                kind: match f {
                    Found::Symlink(target) => TreeEntryKind::Symlink {
                        target: target.clone(),
                    },
                    Found::EmptyDir => TreeEntryKind::Dir,
                    // Placeholder until stored; validation only looks at the kind.
                    Found::File(_) => TreeEntryKind::File {
                        digest: Digest::from_bytes([0; 32]),
                        size: 0,
                        executable: false,
                    },
                },
            })
            .collect();
        validate(&entries)?;
        let stored: Vec<Option<(Digest, u64, bool)>> = found
            .par_iter()
            .map(|(_, f)| match f {
                Found::File(abs) => self.put_file(abs, take).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        let mut total = 0;
        for (entry, stored) in entries.iter_mut().zip(stored) {
            if let Some((digest, size, executable)) = stored {
                total += size;
                entry.kind = TreeEntryKind::File {
                    digest,
                    size,
                    executable,
                };
            }
        }
        let manifest = self.put_bytes(&encode(&mut entries))?;
        if take {
            let _ = fs::remove_dir_all(dir); // best effort: the tree is stored
        }
        Ok((manifest, total))
    }

    /// Stores the manifest of a tree whose files are already in the store (one read from a
    /// remote cache): validated like every manifest read, and refused when a file's blob is
    /// missing. The manifest's digest and the total size of its files.
    pub fn put_manifest(&self, mut entries: Vec<TreeEntry>) -> Result<(Digest, u64), CacheError> {
        validate(&entries)?;
        let mut total = 0;
        for e in &entries {
            if let TreeEntryKind::File { digest, size, .. } = &e.kind {
                if !self.contains(digest) {
                    return Err(CacheError::Corrupt {
                        digest: *digest,
                        path: self.path_of(digest),
                    });
                }
                total += size;
            }
        }
        Ok((self.put_bytes(&encode(&mut entries))?, total))
    }

    /// The validated entries of the tree manifest `manifest`.
    pub fn tree_entries(&self, manifest: &Digest) -> Result<Vec<TreeEntry>, CacheError> {
        decode(manifest, &self.read_verified(manifest)?)
    }

    /// Replaces `dest` with the tree `manifest`, or leaves it untouched on any error.
    pub fn materialize_tree(&self, manifest: &Digest, dest: &Path) -> Result<(), CacheError> {
        self.materialize_tree_stamped(manifest, dest).map(|_| ())
    }

    /// [`Cas::materialize_tree`], returning the stamp of the tree as flow wrote it, taken before
    /// it was renamed into place (a rename changes nothing the stamp covers): a caller that
    /// stamps `dest` compares first, so that a write into the tree by someone else between the
    /// rename and its own walk is never taken for flow's.
    pub fn materialize_tree_stamped(
        &self,
        manifest: &Digest,
        dest: &Path,
    ) -> Result<crate::TreeStamp, CacheError> {
        let entries = self.tree_entries(manifest)?;
        let (parent, _) = split_dest(dest)?;
        fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
        let tmp = parent.join(format!(".flow-tmp-{}", self.unique_name()));
        fs::create_dir(&tmp).map_err(io_err("create directory", &tmp))?;
        let written = self
            .fill(&tmp, &entries)
            .and_then(|()| crate::TreeStamp::of(&tmp));
        let written = match written {
            Ok(stamp) => stamp,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let old = parent.join(format!(".flow-old-{}", self.unique_name()));
        let had_old = match fs::rename(dest, &old) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(io_err("move aside", dest)(e));
            }
        };
        if let Err(e) = fs::rename(&tmp, dest) {
            if had_old {
                let _ = fs::rename(&old, dest);
            }
            let _ = fs::remove_dir_all(&tmp);
            return Err(io_err("replace", dest)(e));
        }
        if had_old {
            remove_any(&old);
        }
        Ok(written)
    }

    /// Writes validated `entries` below the fresh, private directory `root`.
    fn fill(&self, root: &Path, entries: &[TreeEntry]) -> Result<(), CacheError> {
        let mut dirs = BTreeSet::new();
        for e in entries {
            match e.kind {
                TreeEntryKind::Dir => dirs.insert(e.path.as_str()),
                _ => match e.path.rsplit_once('/') {
                    Some((parent, _)) => dirs.insert(parent),
                    None => false,
                },
            };
        }
        for d in dirs {
            real_dirs(root, d, false)?;
        }
        entries.par_iter().try_for_each(|e| {
            let path = root.join(&e.path);
            match &e.kind {
                TreeEntryKind::File {
                    digest,
                    size,
                    executable,
                } => self
                    .copy_verified(digest, *size, &path, output_mode(*executable))
                    .map(|_| ()),
                TreeEntryKind::Symlink { target } => std::os::unix::fs::symlink(target, &path)
                    .map_err(io_err("create symlink", &path)),
                TreeEntryKind::Dir => Ok(()),
            }
        })
    }
}

/// Collects the entries below `dir` (whose path relative to the walk's root is `rel`).
fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, Found)>) -> Result<(), CacheError> {
    let mut children = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let abs = entry.path();
        let name = entry.file_name().into_string().map_err(|_| {
            CacheError::unsafe_path(abs.display().to_string(), "is not a valid UTF-8 name")
        })?;
        let ty = entry.file_type().map_err(io_err("stat", &abs))?;
        children.push((name, abs, ty));
    }
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, abs, ty) in children {
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if ty.is_dir() {
            let before = out.len();
            walk(&abs, &path, out)?;
            if out.len() == before {
                out.push((path, Found::EmptyDir));
            }
        } else if ty.is_symlink() {
            let target = fs::read_link(&abs).map_err(io_err("read symlink", &abs))?;
            let target = target.into_os_string().into_string().map_err(|_| {
                CacheError::unsafe_path(&path, "is a symlink whose target is not valid UTF-8")
            })?;
            out.push((path, Found::Symlink(target)));
        } else if ty.is_file() {
            out.push((path, Found::File(abs)));
        } else {
            let meta = fs::symlink_metadata(&abs).map_err(io_err("stat", &abs))?;
            return Err(CacheError::WrongFileType {
                path: abs,
                expected: "a file, a directory or a symlink",
                found: file_kind(&meta),
            });
        }
    }
    Ok(())
}

/// Removes a file, symlink or directory tree, ignoring errors (it was only the old copy).
fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}
