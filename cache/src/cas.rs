//! `Cas`: the content-addressed store, one read-only file per blob under `<cache>/cas/`.
//!
//! Layout: the blob with digest `abcdef…` (64 hex characters) lives at `cas/ab/cdef…` (the first
//! two hex characters name a shard directory, the other 62 the file). Blobs are mode 0444 and
//! never modified in place.
//!
//! Storing a blob:
//! 1. hash the content; if `cas/ab/cdef…` already exists and is sound, stop (and refresh its
//!    mtime when it is older than [`REFRESH_AFTER`], so that `gc` sees it as fresh while a build
//!    may be about to record a result that refers to it). Sound means: a regular file of the
//!    content's size and, below [`VERIFY_EXISTING_BELOW`] bytes, hashing to its name (one read,
//!    cheaper than the action that produced the content). A blob that is not sound is damaged:
//!    it is removed and the good bytes are stored under its name again, so a result recorded
//!    now never points at a blob known to be bad. (A large blob with the right size but flipped
//!    bits is caught by the verified read of the next restore instead.)
//! 2. otherwise write the content to `tmp/<pid>-<counter>-<random>` (or move the caller's file
//!    there, for `take`), and
//! 3. `rename` it into place. Rename is atomic, so a reader sees the whole blob or none; two
//!    writers of the same blob write the same bytes, so the last rename wins harmlessly.
//!
//! Invariants: a file under `cas/` is complete and named by the digest of its content, unless the
//! disk corrupted it; every read that matters re-hashes ([`Cas::read_verified`],
//! [`Cas::materialize_file`]), and a blob that fails is removed so that the next store repairs it.
//!
//! Admitted limits: no `fsync` (a power cut can leave a renamed but empty or partial blob; reads
//! detect it as `Corrupt`, and it is then rebuilt); the symlink check on a source file is `lstat`
//! then `open`, so a process still running and swapping files under the caller could race it.

use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::digest::LARGE_FILE;
use crate::error::{io_err, CacheError};
use crate::regular::{is_not_regular, open_regular, Links};
use crate::Digest;

/// An existing blob that is stored again gets its mtime refreshed when older than this.
pub const REFRESH_AFTER: Duration = Duration::from_secs(5 * 60);

/// An existing blob smaller than this that is stored again is re-hashed first (larger ones are
/// only checked for their size); a damaged one is replaced.
pub(crate) const VERIFY_EXISTING_BELOW: u64 = LARGE_FILE;

/// The content-addressed store. `Send + Sync`: every method takes `&self` and may run on many
/// threads and in many processes at once.
#[derive(Debug)]
pub struct Cas {
    root: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
}

impl Cas {
    /// Opens (creating if needed) `cas/` and `tmp/` inside the cache directory `dir`.
    pub fn open(dir: &Path) -> Result<Cas, CacheError> {
        let cas = Cas {
            root: dir.join("cas"),
            tmp: dir.join("tmp"),
            counter: AtomicU64::new(0),
        };
        for d in [&cas.root, &cas.tmp] {
            fs::create_dir_all(d).map_err(io_err("create directory", d))?;
        }
        Ok(cas)
    }

    /// The `cas/` directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `tmp/` directory, for files on their way into the store.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// `<dir>/cas/ab/cdef…`: where the blob `d` lives.
    pub fn path_of(&self, d: &Digest) -> PathBuf {
        let hex = d.to_string();
        self.root.join(&hex[..2]).join(&hex[2..])
    }

    /// Whether the blob exists (one `lstat`; its content is not checked).
    pub fn contains(&self, d: &Digest) -> bool {
        fs::symlink_metadata(self.path_of(d)).is_ok_and(|m| m.is_file())
    }

    /// Stores `bytes`; a no-op if the blob exists.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, CacheError> {
        let d = Digest::of(bytes);
        if !self.refresh_existing(&d, bytes.len() as u64) {
            let tmp = self.temp_path();
            write_new(&tmp, bytes, 0o444)?;
            self.install(&tmp, &d)?;
        }
        Ok(d)
    }

    /// Stores the regular file `src` and returns its digest, size and executable bit. With
    /// `take`, `src` is moved into the store when it is on the same filesystem and has no other
    /// hard link (else copied), and is gone afterwards. A symlink is refused (`UnsafePath`).
    pub fn put_file(&self, src: &Path, take: bool) -> Result<(Digest, u64, bool), CacheError> {
        let meta = fs::symlink_metadata(src).map_err(io_err("stat", src))?;
        if meta.file_type().is_symlink() {
            return Err(CacheError::unsafe_path(
                src.display().to_string(),
                "is a symlink; the cache never follows symlinks",
            ));
        }
        if !meta.is_file() {
            return Err(CacheError::WrongFileType {
                path: src.to_owned(),
                expected: "a regular file",
                found: file_kind(&meta),
            });
        }
        let executable = meta.permissions().mode() & 0o111 != 0;
        if take && meta.nlink() == 1 {
            let tmp = self.temp_path();
            // Fails across filesystems (EXDEV) or without permission: copy instead.
            if fs::rename(src, &tmp).is_ok() {
                let (d, size) = self.store_moved(&tmp)?;
                return Ok((d, size, executable));
            }
        }
        let (d, size) = self.store_copy(src, meta.len())?;
        if take {
            // Best effort: the caller no longer needs it, and the blob is safely stored.
            let _ = fs::remove_file(src);
        }
        Ok((d, size, executable))
    }

    /// The blob's content, re-hashed. `Corrupt` if it is missing, is not a regular file (a
    /// FIFO, a device, a symlink, a directory: never opened to be read), or hashes to something
    /// else; a corrupt blob is moved out of the way, so the next store of that content repairs
    /// it. Reads at most the size the blob had when opened.
    pub fn read_verified(&self, d: &Digest) -> Result<Vec<u8>, CacheError> {
        let path = self.path_of(d);
        let (file, meta) = self.open_blob(d)?;
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        std::io::Read::read_to_end(&mut std::io::Read::take(file, meta.len()), &mut bytes)
            .map_err(io_err("read", &path))?;
        if Digest::of(&bytes) != *d {
            return Err(self.corrupt(d));
        }
        Ok(bytes)
    }

    /// The blob `d` opened for reading, with its metadata: `Corrupt` (and moved out of the way)
    /// when it is missing or anything but a regular file. A symlink is never followed.
    pub(crate) fn open_blob(&self, d: &Digest) -> Result<(File, fs::Metadata), CacheError> {
        let path = self.path_of(d);
        match open_regular(&path, Links::Refuse) {
            Ok(opened) => Ok(opened),
            Err(e) if e.kind() == io::ErrorKind::NotFound || is_not_regular(&e) => {
                Err(self.corrupt(d))
            }
            Err(e) => Err(io_err("open", &path)(e)),
        }
    }

    /// A fresh temp path `tmp/<pid>-<counter>-<random>` (not created): whatever is left there
    /// once this process is gone, `Cache::sweep_orphans` removes.
    pub fn temp_path(&self) -> PathBuf {
        self.tmp.join(self.unique_name())
    }

    /// `<pid>-<counter>-<random>`: unique among processes and threads sharing the directory.
    pub(crate) fn unique_name(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos());
        let random = std::collections::hash_map::RandomState::new().hash_one((n, nanos));
        format!("{}-{n}-{random:016x}", std::process::id())
    }

    /// Moves a corrupt or missing blob out of the way and returns the error to report. Whatever
    /// is at the blob's path (a damaged file, a FIFO, a link, a directory) is renamed into
    /// `tmp/` and removed there (a link is removed, never followed).
    pub(crate) fn corrupt(&self, d: &Digest) -> CacheError {
        let path = self.path_of(d);
        let away = self.tmp.join(format!("corrupt-{}", self.unique_name()));
        if fs::rename(&path, &away).is_ok() {
            match fs::symlink_metadata(&away) {
                Ok(m) if m.is_dir() => {
                    let _ = fs::remove_dir_all(&away);
                }
                _ => {
                    let _ = fs::remove_file(&away);
                }
            }
        }
        CacheError::Corrupt { digest: *d, path }
    }

    /// True if a sound blob `d` of `size` bytes exists (module docs); then refreshes its mtime
    /// if older than [`REFRESH_AFTER`]. A damaged blob is removed, and the answer is false.
    pub(crate) fn refresh_existing(&self, d: &Digest, size: u64) -> bool {
        let path = self.path_of(d);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return false;
        };
        let sound = meta.is_file()
            && meta.len() == size
            && (size >= VERIFY_EXISTING_BELOW
                || Digest::of_file(&path, Links::Refuse).is_ok_and(|(got, _)| got == *d));
        if !sound {
            let _ = self.corrupt(d);
            return false;
        }
        let stale = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > REFRESH_AFTER);
        if stale {
            // Best effort: only the owner may set times on a read-only file.
            if let Ok(f) = File::open(&path) {
                let _ = f.set_modified(SystemTime::now());
            }
        }
        true
    }

    /// Stores a file already moved to `tmp` (so no one else writes to it).
    fn store_moved(&self, tmp: &Path) -> Result<(Digest, u64), CacheError> {
        let stored = (|| {
            let meta = fs::symlink_metadata(tmp).map_err(io_err("stat", tmp))?;
            if !meta.is_file() {
                return Err(CacheError::WrongFileType {
                    path: tmp.to_owned(),
                    expected: "a regular file",
                    found: file_kind(&meta),
                });
            }
            let (d, size) = Digest::of_file(tmp, Links::Refuse)?;
            if self.refresh_existing(&d, size) {
                let _ = fs::remove_file(tmp);
            } else {
                fs::set_permissions(tmp, fs::Permissions::from_mode(0o444))
                    .map_err(io_err("chmod", tmp))?;
                self.install(tmp, &d)?;
            }
            Ok((d, size))
        })();
        if stored.is_err() {
            let _ = fs::remove_file(tmp);
        }
        stored
    }

    /// Copies `src` (of about `len` bytes) into the store.
    fn store_copy(&self, src: &Path, len: u64) -> Result<(Digest, u64), CacheError> {
        if len < LARGE_FILE {
            let bytes = fs::read(src).map_err(io_err("read", src))?;
            let d = self.put_bytes(&bytes)?;
            return Ok((d, bytes.len() as u64));
        }
        let (d, size) = Digest::of_file(src, Links::Refuse)?;
        if self.refresh_existing(&d, size) {
            return Ok((d, size));
        }
        // Copy first, then hash the copy: what is stored is exactly what is named, even if
        // `src` changed meanwhile.
        let tmp = self.temp_path();
        if let Err(e) = fs::copy(src, &tmp) {
            // A partial copy must not stay behind (on a full disk it is what fills it); a full
            // disk is the one holding the copy, any other error most likely the source's.
            let _ = fs::remove_file(&tmp);
            let full = matches!(
                e.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            );
            return Err(io_err("copy", if full { &tmp } else { src })(e));
        }
        self.store_moved(&tmp)
    }

    /// Renames the complete file `tmp` to the blob path of `d`, creating the shard directory.
    pub(crate) fn install(&self, tmp: &Path, d: &Digest) -> Result<(), CacheError> {
        let dest = self.path_of(d);
        // The shard must be a real directory: a link there would put the blob outside `cas/`.
        let shard = dest.parent().expect("a blob path has a shard directory");
        let mut result = Err(io::ErrorKind::NotFound.into());
        for _ in 0..2 {
            crate::regular::real_dir(shard).map_err(io_err("create directory", shard))?;
            result = fs::rename(tmp, &dest);
            // A shard emptied and removed meanwhile (`gc`): make it again, once.
            if !matches!(&result, Err(e) if e.kind() == io::ErrorKind::NotFound) {
                break;
            }
        }
        result.map_err(|e| {
            let _ = fs::remove_file(tmp);
            io_err("store", &dest)(e)
        })
    }
}

/// Writes `bytes` to the new file `path` with `mode`.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CacheError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("create", path))?;
    let (head, tail) = bytes.split_at(bytes.len() / 2);
    f.write_all(head)
        .and_then(|()| {
            crate::failpoint("mid-blob");
            f.write_all(tail)
        })
        .map_err(|e| {
            let _ = fs::remove_file(path);
            io_err("write", path)(e)
        })
}

/// Refuses `dir` unless it is a directory itself (a symlink to one is refused, not followed).
pub(crate) fn require_dir(dir: &Path) -> Result<(), CacheError> {
    let meta = fs::symlink_metadata(dir).map_err(crate::error::io_err("stat", dir))?;
    if meta.is_dir() {
        return Ok(());
    }
    Err(CacheError::WrongFileType {
        path: dir.to_owned(),
        expected: "a directory",
        found: file_kind(&meta),
    })
}

/// A short name for what a file is, for errors ("a FIFO", "a directory", ...).
pub(crate) fn file_kind(meta: &fs::Metadata) -> &'static str {
    crate::regular::kind_of(meta)
}

impl Cas {
    /// Reads the blob `d` in pieces of at most `chunk` bytes, each given to `f`, hashing as it
    /// goes; `Corrupt` (the blob moved out of the way) when it does not hash to `d`, which the
    /// caller learns only after the last piece: a caller that must not pass on unverified bytes
    /// holds the last piece back until this returns. `f` returns false to stop early: then the
    /// answer is `Ok(false)`. Memory: one piece.
    pub fn read_chunks(
        &self,
        d: &Digest,
        chunk: usize,
        mut f: impl FnMut(&[u8]) -> bool,
    ) -> Result<bool, CacheError> {
        let path = self.path_of(d);
        let (file, meta) = self.open_blob(d)?;
        let mut reader = std::io::Read::take(file, meta.len());
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; chunk.max(1)];
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                match std::io::Read::read(&mut reader, &mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_err("read", &path)(e)),
                }
            }
            if filled == 0 {
                break;
            }
            hasher.update(&buf[..filled]);
            if !f(&buf[..filled]) {
                return Ok(false);
            }
            if filled < buf.len() {
                break;
            }
        }
        if Digest::from_bytes(*hasher.finalize().as_bytes()) != *d {
            return Err(self.corrupt(d));
        }
        Ok(true)
    }
}
