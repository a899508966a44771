//! `FileHasher`: content digests of input files without re-reading unchanged ones.
//!
//! A file-state table (absolute path → size, mtime, ctime, inode, digest, when recorded) answers
//! for a file whose metadata is unchanged. The ctime is what gives away an in-place rewrite
//! that keeps the size and sets the mtime back (`cp -p`), and a `chmod`: no call sets it back.
//! The "racy" case — a file rewritten within the same timestamp tick as it was hashed — is
//! guarded as git does: a state is trusted only if the file's mtime is at least `RACY_WINDOW_NS`
//! older than the moment the digest was recorded, and its ctime older by the ctime window
//! (`flow_rules::snapshot::settled`); otherwise the file is read again (and recorded anew, so it
//! is trusted next time).
//!
//! Files are hashed in parallel (rayon); files of 1 MiB and more are memory-mapped and hashed
//! with blake3's multi-threaded mode. New or changed states are collected for one batched write.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use flow_cache::regular::{open_stated, Links};
use flow_cache::{Digest, FileState};
use rayon::prelude::*;

/// How much older than its recording a file's mtime must be for its recorded digest to be
/// trusted. Covers coarse timestamp granularity (ext4/tmpfs ticks; 1–2 s on some filesystems).
pub use flow_rules::snapshot::RACY_WINDOW_NS;
use flow_rules::snapshot::{ctime_ns, mtime_ns, settled};

pub struct FileHasher {
    known: HashMap<String, FileState>,
    changed: Mutex<Vec<(String, FileState)>>,
    /// States already handed out by `take_changed` (kept for `snapshot`).
    saved: Mutex<Vec<(String, FileState)>>,
    /// The states `record` took during this build, by path: outputs flow has just written,
    /// which `trusted_output` answers for before `known` (a dependent of an action that ran in
    /// this build stages its output from `flow-out/` instead of reading and verifying the blob).
    written: Mutex<HashMap<String, FileState>>,
}

/// The result of hashing one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hashed {
    pub digest: Digest,
    pub size: u64,
    pub executable: bool,
    /// Whether the file had to be read (its recorded state was missing, stale or racy).
    pub read: bool,
}

/// The real time in nanoseconds, against which file mtimes are judged (the racy-edit window):
/// the same reading the evaluation snapshot and the build record use.
pub use flow_rules::snapshot::now_ns;

impl FileHasher {
    pub fn new(known: HashMap<String, FileState>) -> FileHasher {
        FileHasher {
            known,
            changed: Mutex::new(Vec::new()),
            saved: Mutex::new(Vec::new()),
            written: Mutex::new(HashMap::new()),
        }
    }

    /// The digest of the file at `path` (absolute), from the table when its state is trusted.
    pub fn digest(&self, path: &Path) -> std::io::Result<Hashed> {
        let meta = std::fs::metadata(path)?;
        if !meta.is_file() {
            return Err(std::io::Error::other(format!(
                "`{}` is not a regular file",
                path.display()
            )));
        }
        let key = path.to_string_lossy().into_owned();
        let executable = meta.mode() & 0o111 != 0;
        if let Some(s) = self.known.get(&key) {
            if unchanged(s, &meta) && settled(s.mtime_ns, s.ctime_ns, s.recorded_at_ns) {
                return Ok(Hashed {
                    digest: s.digest,
                    size: s.size,
                    executable,
                    read: false,
                });
            }
        }
        let recorded_at_ns = now_ns();
        let digest = hash_file(path)?;
        let state = FileState {
            size: meta.len(),
            mtime_ns: mtime_ns(&meta),
            ctime_ns: ctime_ns(&meta),
            ino: meta.ino(),
            digest,
            recorded_at_ns,
        };
        self.changed
            .lock()
            .expect("hasher lock poisoned")
            .push((key, state));
        Ok(Hashed {
            digest,
            size: meta.len(),
            executable,
            read: true,
        })
    }

    /// Digests of many files, in parallel, in the order given.
    pub fn digest_many<P: AsRef<Path> + Sync>(&self, paths: &[P]) -> Vec<std::io::Result<Hashed>> {
        paths.par_iter().map(|p| self.digest(p.as_ref())).collect()
    }

    /// Records a state for a file flow itself just wrote with known content (a materialized
    /// output), so the next build trusts it without reading it.
    pub fn record(&self, path: &Path, digest: Digest) {
        if let Ok(meta) = std::fs::metadata(path) {
            self.record_state(path, digest, &meta);
        }
    }

    /// Records `meta` as the state of `path`, holding `digest`.
    fn record_state(&self, path: &Path, digest: Digest, meta: &std::fs::Metadata) {
        let state = FileState {
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
            ctime_ns: ctime_ns(meta),
            ino: meta.ino(),
            digest,
            recorded_at_ns: now_ns(),
        };
        let path = path.to_string_lossy().into_owned();
        self.written
            .lock()
            .expect("hasher lock poisoned")
            .insert(path.clone(), state.clone());
        self.changed
            .lock()
            .expect("hasher lock poisoned")
            .push((path, state));
    }

    /// [`record`](Self::record) for a file flow just wrote through a temp file and renamed to
    /// `path`: recorded only if `path` is still that file as flow left it (`written`, its
    /// metadata before the rename; the rename changes only its ctime). A write by someone else
    /// between the rename and this `stat` (found by an outside test hammering `flow-out/` during
    /// restores) would otherwise be recorded as flow's own, and trusted by every later build.
    pub fn record_written(&self, path: &Path, digest: Digest, written: &std::fs::Metadata) {
        let Ok(now) = std::fs::symlink_metadata(path) else {
            return;
        };
        let same = now.is_file()
            && now.ino() == written.ino()
            && now.dev() == written.dev()
            && now.len() == written.len()
            && mtime_ns(&now) == mtime_ns(written);
        if same {
            self.record_state(path, digest, &now);
        }
    }

    /// Like `digest` without reading: the recorded digest of `path` when its metadata still
    /// matches, with no racy-window guard. For files only flow writes (outputs it materialized
    /// under `flow-out/`), whose state was taken right after writing them.
    pub fn trusted_output(&self, path: &Path) -> Option<Digest> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        let key = path.to_str()?;
        let written = self.written.lock().expect("hasher lock poisoned");
        let s = written.get(key).or_else(|| self.known.get(key))?;
        (meta.is_file() && unchanged(s, &meta)).then_some(s.digest)
    }

    /// Every state this hasher knows: the ones it started with, updated by the ones it recorded
    /// (a watch loop starts its next cycle from these without reading the database).
    pub fn snapshot(&self) -> HashMap<String, FileState> {
        let mut all = self.known.clone();
        let saved = self.saved.lock().expect("hasher lock poisoned");
        let changed = self.changed.lock().expect("hasher lock poisoned");
        for (k, v) in saved.iter().chain(changed.iter()) {
            all.insert(k.clone(), v.clone());
        }
        all
    }

    /// [`snapshot`](Self::snapshot) without copying the table: the hasher is consumed.
    pub fn into_states(self) -> HashMap<String, FileState> {
        let mut all = self.known;
        let saved = self.saved.into_inner().expect("hasher lock poisoned");
        let changed = self.changed.into_inner().expect("hasher lock poisoned");
        all.extend(saved.into_iter().chain(changed));
        all
    }

    /// Calls `f` with a lookup of the current state of a path (absolute): the latest recorded
    /// during this build, else the one the hasher started with. Cheaper than `snapshot`.
    pub fn with_states<R>(&self, f: impl FnOnce(&dyn Fn(&str) -> Option<FileState>) -> R) -> R {
        let saved = self.saved.lock().expect("hasher lock poisoned");
        let changed = self.changed.lock().expect("hasher lock poisoned");
        let recent: HashMap<&str, &FileState> = saved
            .iter()
            .chain(changed.iter())
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let lookup = |path: &str| {
            recent
                .get(path)
                .copied()
                .or_else(|| self.known.get(path))
                .cloned()
        };
        f(&lookup)
    }

    /// States recorded during this build, to be saved in one transaction.
    pub fn take_changed(&self) -> Vec<(String, FileState)> {
        let taken = std::mem::take(&mut *self.changed.lock().expect("hasher lock poisoned"));
        self.saved
            .lock()
            .expect("hasher lock poisoned")
            .extend(taken.iter().cloned());
        taken
    }
}

/// Whether `meta` still has the size, mtime, ctime and inode recorded in `s`.
fn unchanged(s: &FileState, meta: &std::fs::Metadata) -> bool {
    s.size == meta.len()
        && s.mtime_ns == mtime_ns(meta)
        && s.ctime_ns == ctime_ns(meta)
        && s.ino == meta.ino()
}

/// Reads and hashes one file, just `stat`ed as a regular file (a symlink is followed to one):
/// a FIFO or a device put there since is refused, not read (it would block, or never end).
pub fn hash_file(path: &Path) -> std::io::Result<Digest> {
    let (file, meta) = open_stated(path, Links::Follow)?;
    Digest::of_open_file(file, meta.len(), path)
        .map(|(d, _)| d)
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_rules::snapshot::CTIME_WINDOW_NS;
    use std::io::Write;

    #[test]
    fn trusted_states_are_not_read_and_racy_ones_are() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "one").unwrap();
        let h = FileHasher::new(HashMap::new());
        let first = h.digest(&p).unwrap();
        assert!(first.read);
        assert_eq!(first.digest, Digest::of(b"one"));
        let mut states: HashMap<String, FileState> = h.take_changed().into_iter().collect();
        // Just recorded: the mtime is within the racy window, so it is read again.
        let h2 = FileHasher::new(states.clone());
        assert!(h2.digest(&p).unwrap().read);
        // Recorded long after the last write: trusted without reading.
        for s in states.values_mut() {
            s.recorded_at_ns += 10 * RACY_WINDOW_NS;
        }
        let h3 = FileHasher::new(states.clone());
        let third = h3.digest(&p).unwrap();
        assert!(!third.read);
        assert!(h3.take_changed().is_empty());
        // A content change with the same size is seen through the mtime.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&p, "two").unwrap();
        let h4 = FileHasher::new(states);
        let fourth = h4.digest(&p).unwrap();
        assert!(fourth.read);
        assert_eq!(fourth.digest, Digest::of(b"two"));
    }

    /// Issue 21, outside test: a file flow renamed into place and someone else wrote before
    /// flow's `stat` is not recorded (so never trusted); one left alone is.
    #[test]
    fn a_file_written_by_someone_else_after_its_rename_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, dest) = (dir.path().join("t"), dir.path().join("out.bin"));
        let h = FileHasher::new(HashMap::new());
        std::fs::write(&tmp, b"flow's bytes").unwrap();
        let written = std::fs::metadata(&tmp).unwrap();
        std::fs::rename(&tmp, &dest).unwrap();
        let d = Digest::of(b"flow's bytes");
        h.record_written(&dest, d, &written);
        assert_eq!(h.trusted_output(&dest), Some(d));
        // Again, with a write (here an append) between the rename and the record.
        std::fs::write(&tmp, b"flow's bytes").unwrap();
        let written = std::fs::metadata(&tmp).unwrap();
        std::fs::rename(&tmp, &dest).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&dest)
            .unwrap()
            .write_all(b"XXXX")
            .unwrap();
        let h = FileHasher::new(HashMap::new());
        h.record_written(&dest, d, &written);
        assert_eq!(h.trusted_output(&dest), None);
        assert!(h.take_changed().is_empty());
    }

    /// Issue 15, item 5: an overwrite in place that keeps the size and sets the mtime back
    /// (`cp -p`) changes only the ctime, which the state holds.
    #[test]
    fn an_overwrite_that_keeps_size_and_mtime_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "one").unwrap();
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let set_mtime = || {
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(long_ago).unwrap();
        };
        set_mtime();
        std::thread::sleep(std::time::Duration::from_nanos(2 * CTIME_WINDOW_NS as u64));
        let h = FileHasher::new(HashMap::new());
        assert!(h.digest(&p).unwrap().read);
        let states: HashMap<String, FileState> = h.take_changed().into_iter().collect();
        assert!(!FileHasher::new(states.clone()).digest(&p).unwrap().read);
        let ino = std::fs::metadata(&p).unwrap().ino();
        std::fs::write(&p, "two").unwrap();
        set_mtime();
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
        let again = FileHasher::new(states).digest(&p).unwrap();
        assert!(again.read);
        assert_eq!(again.digest, Digest::of(b"two"));
    }
}
