//! Restoring blobs as files: `Cas::materialize_file` and the verified copy it shares with
//! `Cas::materialize_tree`; [`real_dest`], which prepares a destination below an output root.
//!
//! 1. open the blob: a regular file of the size the result records, never through a symlink
//!    and without blocking (missing, a FIFO, a device, a link, a directory, another size:
//!    `Corrupt`, and it is moved out of the way);
//! 2. copy at most that many bytes into a new temp file `.flow-tmp-<unique>` beside the
//!    destination (`O_EXCL`: never through an existing file or symlink), hashing while copying,
//!    with the mode (0644, or 0755 for executables) whatever the umask (set again only when the
//!    umask cut it);
//! 3. if fewer bytes came or the hash differs: remove the temp file and the blob, `Corrupt` (the
//!    destination was never touched); else rename the temp file over the destination (a symlink
//!    there is replaced, never followed).
//!
//! The copy is verified every time because the destination is what actions and users read:
//! a flipped bit in the store must never reach them silently.
//!
//! Below an output root (`flow-out/`), the relative path comes from a cached result: it is
//! checked ([`check_relative_path`]) and every directory between the root and the destination is
//! made a real directory ([`real_dest`]): a symlink found there (say `flow-out/pkg` swapped for a
//! link to `/tmp/x`) or a file (the output of an earlier build that declared `gen` where this
//! one declares `gen/a.txt`) is removed and replaced by an empty directory, so nothing is ever
//! created through a link. The root itself may be a link: it is the caller's choice.
//!
//! Temp names do not contain the destination's name, so a 255-byte output name still leaves
//! room for them (`.NAME.flow-tmp-<unique>` did not).
//!
//! Admitted limit: the directory checks are `lstat` then `mkdir`, not `openat`-relative, so a
//! process swapping a directory for a link while a restore runs could still race them.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::io_err;
use crate::{check_relative_path, CacheError, Cas, Digest};

/// The mode of a file flow writes below an output root, whatever the umask: 0755 if
/// `executable`, else 0644. A file there with another mode is not as flow left it (a `chmod`,
/// `chmod 000` included, keeps its content, size and mtime) and is restored.
pub const fn output_mode(executable: bool) -> u32 {
    if executable {
        0o755
    } else {
        0o644
    }
}

impl Cas {
    /// Copies the blob (recorded as `size` bytes) to `dest` (mode 0755 if `executable`, else
    /// 0644) through a temp file in `dest`'s directory and a rename, verifying size and digest
    /// while copying: on `Corrupt`, `dest` is untouched. Creates `dest`'s parent directories;
    /// replaces a directory at `dest`. Returns the file's metadata as flow left it, taken before
    /// the rename: a caller that records the state of `dest` compares it first, so that a write
    /// by someone else between the rename and its `stat` is never taken for flow's own.
    pub fn materialize_file(
        &self,
        d: &Digest,
        size: u64,
        executable: bool,
        dest: &Path,
    ) -> Result<fs::Metadata, CacheError> {
        let (parent, _) = split_dest(dest)?;
        fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
        // Always through a temp file, also where nothing is: a file written in place can be
        // written by someone else at once (`echo x > flow-out/...` while it is restored), and
        // its state, taken after, would then vouch for bytes flow never wrote (found by an
        // outside test; the rename saved was worth ~1% of a restore).
        let tmp = parent.join(format!(".flow-tmp-{}", self.unique_name()));
        let written = self.copy_verified(d, size, &tmp, output_mode(executable))?;
        replace_with(&tmp, dest)?;
        Ok(written)
    }

    /// Writes the blob, recorded as `size` bytes, to the new file `to` with `mode`, hashing
    /// while copying. The blob must be a regular file (not a link, FIFO, device or directory:
    /// [`Cas::open_blob`]) of exactly `size` bytes, and at most `size` bytes are read; anything
    /// else, or a digest mismatch, removes `to` and the blob, and the result is `Corrupt`.
    pub(crate) fn copy_verified(
        &self,
        d: &Digest,
        size: u64,
        to: &Path,
        mode: u32,
    ) -> Result<fs::Metadata, CacheError> {
        let blob = self.path_of(d);
        let (src, meta) = self.open_blob(d)?;
        if meta.len() != size {
            return Err(self.corrupt(d));
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(to)
            .map_err(io_err("create", to))?;
        let mut hasher = blake3::Hasher::new();
        // Sized to the blob (most outputs are small): zeroing 256 KiB per restored file cost
        // more than copying it.
        let mut buf = vec![0u8; (size as usize).clamp(4 << 10, 256 << 10)];
        let mut src = src.take(size);
        let copied = (|| -> Result<fs::Metadata, CacheError> {
            loop {
                let n = src.read(&mut buf).map_err(io_err("read", &blob))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                // A kill half way through a file (the crash tests stop here).
                let (head, tail) = buf[..n].split_at(n / 2);
                out.write_all(head).map_err(io_err("write", to))?;
                crate::failpoint("mid-output");
                out.write_all(tail).map_err(io_err("write", to))?;
            }
            // The mode asked for at creation is cut by the umask; set it only then.
            if mode & umask() != 0 {
                out.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_err("chmod", to))?;
            }
            out.metadata().map_err(io_err("stat", to))
        })();
        drop(out);
        let sound = hasher.count() == size && Digest::from_hasher(&hasher) == *d;
        let result = match copied {
            Ok(written) if sound => return Ok(written),
            Ok(_) => Err(self.corrupt(d)),
            Err(e) => Err(e),
        };
        let _ = fs::remove_file(to);
        result
    }
}

/// Where an output with the relative path `rel` (from a cached result) goes below the output
/// root `root`: checks `rel` ([`check_relative_path`]), creates `root` if missing (following it if
/// it is a link: the root is the caller's), and makes every directory between `root` and
/// `root/rel` a real directory, replacing a symlink or file found there by an empty directory
/// (never following it). Returns `root/rel`; what is at that path itself is left alone, for
/// [`Cas::materialize_file`] or [`Cas::materialize_tree`] to replace.
pub fn real_dest(root: &Path, rel: &str) -> Result<PathBuf, CacheError> {
    check_relative_path(rel)?;
    fs::create_dir_all(root).map_err(io_err("create directory", root))?;
    let parent = rel.rsplit_once('/').map_or("", |(parent, _)| parent);
    real_dirs(root, parent, true)?;
    Ok(root.join(rel))
}

/// Makes each of `root/a`, `root/a/b`, … for `rel = "a/b/…"` (already checked; may be empty) a
/// directory without following a symlink in any of them. A symlink or other non-directory in
/// the way is replaced by an empty directory when `replace`, else refused (`UnsafePath`).
pub(crate) fn real_dirs(root: &Path, rel: &str, replace: bool) -> Result<(), CacheError> {
    if rel.is_empty() {
        return Ok(());
    }
    let mut dir = root.to_path_buf();
    for segment in rel.split('/') {
        dir.push(segment);
        // A few rounds at most: each either finds a directory, makes one, or clears the way;
        // only a process fighting us over the same name could need more.
        let mut rounds = 0;
        loop {
            rounds += 1;
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => break,
                Ok(m) if rounds > 3 || !replace => {
                    return Err(CacheError::unsafe_path(
                        dir.display().to_string(),
                        format!(
                            "is {} where a directory is needed; refusing to write through it",
                            crate::cas::file_kind(&m)
                        ),
                    ))
                }
                // A symlink or a file where a directory belongs: unlink it (never follow).
                Ok(_) => fs::remove_file(&dir).map_err(io_err("remove", &dir))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && rounds <= 3 => {}
                    Err(e) => return Err(io_err("create directory", &dir)(e)),
                },
                Err(e) => return Err(io_err("stat", &dir)(e)),
            }
        }
    }
    Ok(())
}

/// This process's umask, read once from `/proc/self/status` (the `umask` call sets it as it
/// reads it, which another thread could see); all bits set when it cannot be read, so that
/// every mode is then set explicitly.
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("Umask:"))?;
                u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
            })
            .unwrap_or(0o777)
    })
}

/// `dest`'s parent directory ("." for a bare name) and file name.
pub(crate) fn split_dest(dest: &Path) -> Result<(&Path, &str), CacheError> {
    let name = dest.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        CacheError::unsafe_path(dest.display().to_string(), "has no usable file name")
    })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, name))
}

/// Renames `tmp` over `dest`; a directory at `dest` is removed first. On failure `tmp` is removed.
pub(crate) fn replace_with(tmp: &Path, dest: &Path) -> Result<(), CacheError> {
    let mut result = fs::rename(tmp, dest);
    if result.is_err() && fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir()) {
        let _ = fs::remove_dir_all(dest);
        result = fs::rename(tmp, dest);
    }
    result.map_err(|e| {
        let _ = fs::remove_file(tmp);
        io_err("replace", dest)(e)
    })
}
