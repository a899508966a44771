//! `BlobWriter`: a blob written into the store piece by piece (a download from a remote cache),
//! hashed while it is written, so memory stays bounded whatever the blob's size.
//!
//! The bytes go to a fresh file in `tmp/`; [`BlobWriter::finish`] names the blob by the digest
//! of exactly the bytes written and renames it into place, like every other store
//! (`cas.rs`). A writer dropped without `finish` (an error, a refused download) removes its
//! file: nothing partial ever reaches `cas/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use crate::error::io_err;
use crate::{CacheError, Cas, Digest};

/// A blob on its way into the store: see the module docs.
pub struct BlobWriter<'a> {
    cas: &'a Cas,
    path: PathBuf,
    file: Option<File>,
    hasher: blake3::Hasher,
    size: u64,
}

impl Cas {
    /// A writer for a new blob of unknown content (module docs).
    pub fn writer(&self) -> Result<BlobWriter<'_>, CacheError> {
        let path = self.temp_path();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(io_err("create", &path))?;
        Ok(BlobWriter {
            cas: self,
            path,
            file: Some(file),
            hasher: blake3::Hasher::new(),
            size: 0,
        })
    }
}

impl BlobWriter<'_> {
    /// The bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Stores the blob: its digest and size.
    pub fn finish(mut self) -> Result<(Digest, u64), CacheError> {
        let file = self.file.take().expect("a writer finishes once");
        drop(file);
        let digest = Digest::from_bytes(*self.hasher.finalize().as_bytes());
        if self.cas.refresh_existing(&digest, self.size) {
            let _ = fs::remove_file(&self.path);
        } else {
            fs::set_permissions(&self.path, fs::Permissions::from_mode(0o444))
                .map_err(io_err("chmod", &self.path))?;
            self.cas.install(&self.path, &digest)?;
        }
        // Installed or removed: nothing is left for `drop` to remove.
        self.path = PathBuf::new();
        Ok((digest, self.size))
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self.file.as_mut().expect("not finished");
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_written_in_pieces_is_named_by_its_bytes_and_a_dropped_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let mut w = cas.writer().unwrap();
        for piece in [&b"hello "[..], b"", b"world"] {
            w.write_all(piece).unwrap();
        }
        assert_eq!(w.size(), 11);
        let (d, size) = w.finish().unwrap();
        assert_eq!((d, size), (Digest::of(b"hello world"), 11));
        assert_eq!(cas.read_verified(&d).unwrap(), b"hello world");
        // The same bytes again: the existing blob stays, the new file goes.
        let mut again = cas.writer().unwrap();
        again.write_all(b"hello world").unwrap();
        assert_eq!(again.finish().unwrap().0, d);

        let mut dropped = cas.writer().unwrap();
        dropped.write_all(b"half a blob").unwrap();
        drop(dropped);
        assert_eq!(fs::read_dir(cas.tmp_dir()).unwrap().count(), 0);
        assert!(!cas.contains(&Digest::of(b"half a blob")));
    }
}
