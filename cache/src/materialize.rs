//! Restoring blobs as files: `Cas::materialize_file` and the verified copy it shares with
//! `Cas::materialize_tree`.
//!
//! 1. open the blob (missing: `Corrupt`);
//! 2. copy it into a new temp file beside the destination, hashing while copying, and set the
//!    mode (0644, or 0755 for executables) explicitly, whatever the umask;
//! 3. if the hash differs: remove the temp file and the blob, `Corrupt` (the destination was
//!    never touched); else rename the temp file over the destination.
//!
//! The copy is verified every time because the destination is what actions and users read:
//! a flipped bit in the store must never reach them silently.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::io_err;
use crate::{CacheError, Cas, Digest};

impl Cas {
    /// Copies the blob to `dest` (mode 0755 if `executable`, else 0644) through a temp file in
    /// `dest`'s directory and a rename, verifying the digest while copying: on `Corrupt`, `dest`
    /// is untouched. Creates `dest`'s parent directories; replaces a directory at `dest`.
    pub fn materialize_file(
        &self,
        d: &Digest,
        executable: bool,
        dest: &Path,
    ) -> Result<(), CacheError> {
        let (parent, name) = split_dest(dest)?;
        fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
        let tmp = parent.join(format!(".{name}.flow-tmp-{}", self.unique_name()));
        self.copy_verified(d, &tmp, if executable { 0o755 } else { 0o644 })?;
        replace_with(&tmp, dest)
    }

    /// Writes the blob to the new file `to` with `mode`, hashing while copying. On a digest
    /// mismatch `to` is removed, the blob too, and the result is `Corrupt`.
    pub(crate) fn copy_verified(&self, d: &Digest, to: &Path, mode: u32) -> Result<(), CacheError> {
        let blob = self.path_of(d);
        let mut src = match File::open(&blob) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(self.corrupt(d)),
            Err(e) => return Err(io_err("open", &blob)(e)),
        };
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(to)
            .map_err(io_err("create", to))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let copied = (|| -> Result<(), CacheError> {
            loop {
                let n = src.read(&mut buf).map_err(io_err("read", &blob))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io_err("write", to))?;
            }
            out.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", to))
        })();
        drop(out);
        let result = match copied {
            Ok(()) if Digest::from_hasher(&hasher) == *d => return Ok(()),
            Ok(()) => Err(self.corrupt(d)),
            Err(e) => Err(e),
        };
        let _ = fs::remove_file(to);
        result
    }
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
