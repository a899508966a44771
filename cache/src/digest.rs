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
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{io_err, CacheError};

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

    /// The digest of the file at `path` and the number of bytes hashed. Follows symlinks, like
    /// `open`; callers that must not follow them check with `symlink_metadata` first.
    pub fn of_file(path: &Path) -> Result<(Digest, u64), CacheError> {
        let mut file = std::fs::File::open(path).map_err(io_err("open", path))?;
        let len = file.metadata().map_err(io_err("stat", path))?.len();
        let mut hasher = blake3::Hasher::new();
        if len >= LARGE_FILE {
            drop(file);
            hasher
                .update_mmap_rayon(path)
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
                Digest::of_file(&path).unwrap(),
                (Digest::of(&bytes), len as u64)
            );
        }
    }
}
