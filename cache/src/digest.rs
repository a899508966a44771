//! `Digest`: the blake3 hash of some bytes, shown as 64 lowercase hex characters.
//!
//! Every blob in the CAS is named by the `Digest` of its content, every action result is keyed by
//! the `Digest` of its serialized action key, and the file-state table maps paths to the `Digest` of
//! their content. In SQLite a digest is a 32-byte BLOB (see `db.rs`); in JSON a hex string.
//!
//! Hashing a file ([`Digest::of_file`]) reads small files whole and memory-maps files of
//! [`LARGE_FILE`] bytes or more, hashing them on the rayon pool (stack findings §7: mmap only
//! pays above about 1 MiB; below it the cost is open/read/close, not the hash).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{io_err, CacheError};
use crate::regular::{open_regular, Links};

/// Files at least this large are hashed with `update_mmap_rayon`.
pub const LARGE_FILE: u64 = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Digest(#[serde(with = "hex")] [u8; 32]);

impl Digest {
    /// The digest of `bytes` (hashed on the rayon pool from [`LARGE_FILE`] bytes up).
    pub fn of(bytes: &[u8]) -> Digest {
        if bytes.len() as u64 >= LARGE_FILE {
            let mut hasher = blake3::Hasher::new();
            hasher.update_rayon(bytes);
            Digest::from_hasher(&hasher)
        } else {
            Digest(*blake3::hash(bytes).as_bytes())
        }
    }

    /// The digest of the regular file at `path` and the number of bytes hashed. A symlink is
    /// followed or refused as `links` says; anything but a regular file (a FIFO, a device, a
    /// directory) is refused without blocking ([`crate::regular::open_regular`]).
    pub fn of_file(path: &Path, links: Links) -> Result<(Digest, u64), CacheError> {
        let (file, meta) = open_regular(path, links).map_err(io_err("open", path))?;
        Digest::of_open_file(file, meta.len(), path)
    }

    /// The digest of `file`, a regular file of about `len` bytes opened from `path` (named in
    /// errors), and the number of bytes hashed. From [`LARGE_FILE`] bytes on, it is mapped
    /// through `/proc/self/fd` (the file already opened, not `path` again, which may have been
    /// swapped for something else since) and hashed on the rayon pool.
    pub fn of_open_file(
        mut file: File,
        len: u64,
        path: &Path,
    ) -> Result<(Digest, u64), CacheError> {
        let mut hasher = blake3::Hasher::new();
        if len >= LARGE_FILE {
            let by_fd = format!("/proc/self/fd/{}", file.as_raw_fd());
            if hasher.update_mmap_rayon(&by_fd).is_ok() {
                return Ok((Digest::from_hasher(&hasher), hasher.count()));
            }
            // No /proc: read it (a regular file; the reads end at its end).
            hasher = blake3::Hasher::new();
            hasher
                .update_reader(&mut file)
                .map_err(io_err("read", path))?;
        } else {
            let mut buf = Vec::with_capacity(len as usize + 1);
            file.read_to_end(&mut buf).map_err(io_err("read", path))?;
            hasher.update(&buf);
        }
        Ok((Digest::from_hasher(&hasher), hasher.count()))
    }

    pub(crate) fn from_hasher(hasher: &blake3::Hasher) -> Digest {
        Digest(*hasher.finalize().as_bytes())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// A digest from a 32-byte slice (a SQLite BLOB column); `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Digest> {
        Some(Digest(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Digest> {
        let h = blake3::Hash::from_hex(s).ok()?;
        Some(Digest(*h.as_bytes()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", blake3::Hash::from_bytes(self.0).to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&blake3::Hash::from_bytes(*b).to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        blake3::Hash::from_hex(&s)
            .map(|h| *h.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let d = Digest::of(b"hello");
        assert_eq!(d.to_string().len(), 64);
        assert_eq!(Digest::from_hex(&d.to_string()), Some(d));
        assert_ne!(Digest::of(b"hello"), Digest::of(b"hello!"));
        assert_eq!(Digest::from_hex("zz"), None);
    }

    #[test]
    fn slices_and_json() {
        let d = Digest::of(b"x");
        assert_eq!(Digest::from_slice(d.as_bytes()), Some(d));
        assert_eq!(Digest::from_slice(&[0; 31]), None);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn files_small_and_large_hash_like_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 5, LARGE_FILE as usize + 17] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(
                Digest::of_file(&path, Links::Refuse).unwrap(),
                (Digest::of(&bytes), len as u64)
            );
        }
    }
}
