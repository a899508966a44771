//! [`TreeStamp`]: the file states of a materialized tree, in one digest, so that an edit inside
//! a directory output under `flow-out/` is seen without reading a file.
//!
//! A file output has one file state (size, mtime, inode) in the file-state table; a directory
//! output has one marker file beside it (`.NAME.flow-tree`, holding the tree's digest), whose
//! state is recorded the same way. Neither changes when a file deep inside the tree is edited in
//! place: only that file's inode does. So right after a tree is materialized, flow takes its
//! stamp and sets it as the marker's mtime ([`TreeStamp::set_on`]), before the marker's state
//! is recorded; to trust the tree later it takes the stamp again and compares it with the
//! marker's mtime ([`TreeStamp::vouches`]), which the recorded state vouches was set by flow.
//!
//! Where the stamp lives, and why there: the mtime of the marker is already part of every
//! recorded state of it (the file-state table, the build record), so nothing new is stored,
//! and the bytes under `flow-out/` stay the same on every machine and every materialization
//! (a clean build and an incremental one leave identical trees). The mtime is 30 bits of the
//! stamp as seconds after 2004-01-10 and 30 more as nanoseconds ([`TreeStamp::mtime_ns`]); a
//! file system that keeps coarser times never vouches, and its trees are restored each build.
//!
//! [`TreeStamp::of`]:
//! 1. walk the tree without following symlinks, subdirectories in parallel;
//! 2. per directory, hash each entry in name order: its name and mode, and for a file or
//!    symlink its size, mtime, ctime and inode, for a directory the digest of its own entries
//!    (a directory's times change with its entries, which the names already cover);
//! 3. the digest of the top directory is the stamp.
//!
//! Why ctime: any write, `chmod`, `touch -d` or rename changes it, and no call sets it back
//! (not even as root), so an edit that restores the size and mtime is still seen.
//!
//! A marker of an older flow has an ordinary mtime and vouches for nothing: the tree is
//! materialized again once.
//!
//! Cost: a `readdir` per directory and an `lstat` per entry, no read (≈1 µs per entry warm).
//! Limits: an edit that keeps the size within the same timestamp tick as the materialization
//! (ext4 stamps times with a coarse clock, ~4 ms) is not seen; a tree that cannot be walked is
//! not vouched for.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rayon::prelude::*;

use crate::error::io_err;
use crate::{CacheError, Digest};

/// The file states below a materialized tree, as one digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeStamp(Digest);

impl TreeStamp {
    /// The stamp of the tree at `dir` (a directory, not followed if a symlink), its own mode
    /// included: a dependent sees it (`ls -ld`), and a `chmod 000` of it must not pass for the
    /// tree flow wrote.
    pub fn of(dir: &Path) -> Result<TreeStamp, CacheError> {
        crate::cas::require_dir(dir)?;
        let mode = fs::symlink_metadata(dir)
            .map_err(io_err("stat", dir))?
            .mode();
        let below = walk(dir).map_err(io_err("walk", dir))?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&below);
        hasher.update(&mode.to_le_bytes());
        Ok(TreeStamp(Digest::from_bytes(*hasher.finalize().as_bytes())))
    }

    /// The stamp as a file time: nanoseconds since the epoch, from 2004-01-10 (2^30 s) to 2038.
    pub fn mtime_ns(&self) -> i64 {
        let bits = u64::from_le_bytes(self.0.as_bytes()[..8].try_into().expect("8 bytes"));
        let secs = (1u64 << 30) + (bits >> 34);
        let nanos = (bits & ((1 << 30) - 1)) % 1_000_000_000;
        (secs * 1_000_000_000 + nanos) as i64
    }

    /// Sets this stamp as the mtime of the marker file `marker` (just written by flow).
    pub fn set_on(&self, marker: &Path) -> Result<(), CacheError> {
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(self.mtime_ns() as u64);
        fs::File::options()
            .write(true)
            .open(marker)
            .and_then(|f| f.set_modified(when))
            .map_err(io_err("set the mtime of", marker))
    }

    /// Whether the tree at `dir` still has the stamp that is the mtime `marker_mtime_ns` of its
    /// marker (as recorded, or as read now).
    pub fn vouched_by(dir: &Path, marker_mtime_ns: i64) -> bool {
        TreeStamp::of(dir).is_ok_and(|now| now.mtime_ns() == marker_mtime_ns)
    }

    /// Whether the marker file `marker` (not a link) carries the stamp of the tree at `dir`.
    pub fn vouches(marker: &Path, dir: &Path) -> bool {
        fs::symlink_metadata(marker).is_ok_and(|m| {
            m.is_file() && TreeStamp::vouched_by(dir, m.mtime() * 1_000_000_000 + m.mtime_nsec())
        })
    }
}

/// The digest of the entries below `dir`; subdirectories are walked in parallel (the rayon
/// pool) and their digests hashed in name order, so the result does not depend on the timing.
fn walk(dir: &Path) -> io::Result<[u8; 32]> {
    let mut entries = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    let metas = entries
        .iter()
        .map(|e| e.metadata())
        .collect::<io::Result<Vec<_>>>()?;
    let subdirs: Vec<[u8; 32]> = entries
        .par_iter()
        .zip(&metas)
        .filter(|(_, meta)| meta.is_dir())
        .map(|(e, _)| walk(&e.path()))
        .collect::<io::Result<_>>()?;
    let mut subdirs = subdirs.iter();
    let mut hasher = blake3::Hasher::new();
    for (entry, meta) in entries.iter().zip(&metas) {
        let name = entry.file_name();
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_encoded_bytes());
        hasher.update(&meta.mode().to_le_bytes());
        if meta.is_dir() {
            hasher.update(subdirs.next().expect("one digest per subdirectory"));
            // Its ctime too: an entry created and removed again leaves no path behind.
            hasher.update(&(meta.ctime() as u64).to_le_bytes());
            hasher.update(&(meta.ctime_nsec() as u64).to_le_bytes());
        } else {
            for n in [
                meta.size(),
                meta.mtime() as u64,
                meta.mtime_nsec() as u64,
                meta.ctime() as u64,
                meta.ctime_nsec() as u64,
                meta.ino(),
            ] {
                hasher.update(&n.to_le_bytes());
            }
        }
    }
    Ok(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("d/e")).unwrap();
        fs::write(t.path().join("d/e/f.txt"), "one").unwrap();
        fs::write(t.path().join("top.txt"), "two").unwrap();
        std::os::unix::fs::symlink("top.txt", t.path().join("d/link")).unwrap();
        t
    }

    #[test]
    fn the_same_tree_gives_the_same_stamp_and_a_marker_vouches_for_it() {
        let t = tree();
        let (dir, marker) = (t.path().join("d"), t.path().join(".d.flow-tree"));
        let stamp = TreeStamp::of(&dir).unwrap();
        assert_eq!(stamp, TreeStamp::of(&dir).unwrap());
        fs::write(&marker, "digest").unwrap();
        assert!(
            !TreeStamp::vouches(&marker, &dir),
            "an old marker (an ordinary mtime) vouches for nothing"
        );
        stamp.set_on(&marker).unwrap();
        assert!(TreeStamp::vouches(&marker, &dir));
        assert_eq!(
            fs::read_to_string(&marker).unwrap(),
            "digest",
            "bytes untouched"
        );
        assert!(!TreeStamp::vouches(&marker, t.path()), "another tree");
        let mtime_ns = stamp.mtime_ns();
        assert!(((1i64 << 30) * 1_000_000_000..(1i64 << 31) * 1_000_000_000).contains(&mtime_ns));
    }

    #[test]
    fn any_edit_inside_changes_the_stamp() {
        type Edit = fn(&Path);
        let edits: [(&str, Edit); 6] = [
            ("in place, same size", |p| {
                let f = p.join("d/e/f.txt");
                let mtime = fs::metadata(&f).unwrap().modified().unwrap();
                fs::write(&f, "ONE").unwrap();
                fs::File::options()
                    .write(true)
                    .open(&f)
                    .unwrap()
                    .set_modified(mtime)
                    .unwrap();
            }),
            ("appended", |p| {
                use std::io::Write;
                let mut f = fs::File::options()
                    .append(true)
                    .open(p.join("top.txt"))
                    .unwrap();
                f.write_all(b"!").unwrap();
            }),
            ("new file", |p| fs::write(p.join("d/new"), "").unwrap()),
            ("removed", |p| fs::remove_file(p.join("d/e/f.txt")).unwrap()),
            ("chmod", |p| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(p.join("top.txt"), fs::Permissions::from_mode(0o755)).unwrap()
            }),
            ("link retargeted", |p| {
                fs::remove_file(p.join("d/link")).unwrap();
                std::os::unix::fs::symlink("e/f.txt", p.join("d/link")).unwrap();
            }),
        ];
        for (what, edit) in edits {
            let t = tree();
            let before = TreeStamp::of(t.path()).unwrap();
            // Past the coarse timestamp tick (see the limits above).
            std::thread::sleep(std::time::Duration::from_millis(20));
            edit(t.path());
            assert_ne!(before, TreeStamp::of(t.path()).unwrap(), "{what}");
        }
    }

    #[test]
    fn a_link_or_file_is_not_a_tree() {
        let t = tree();
        assert!(TreeStamp::of(&t.path().join("d/link")).is_err());
        assert!(TreeStamp::of(&t.path().join("top.txt")).is_err());
    }
}
