//! The SHA-256 of blobs, for remote caches that speak SHA-256 (flow's own digests are blake3):
//! table `sha256_of`, blake3 → SHA-256. A row is written only by the engine's remote client,
//! after it hashed bytes that it also verified against their blake3, so a row is a fact about
//! content and is never stale; `clear` empties the table.

use std::collections::HashMap;

use rusqlite::params;

use crate::db::IN_CHUNK;
use crate::error::sql_err;
use crate::{Cache, CacheError, Digest};

impl Cache {
    /// The SHA-256 known for each of `blobs` (those without one are left out).
    pub fn sha256_of(&self, blobs: &[Digest]) -> Result<HashMap<Digest, [u8; 32]>, CacheError> {
        let mut found = HashMap::new();
        self.with_conn(|conn| {
            for part in blobs.chunks(IN_CHUNK) {
                let marks = vec!["?"; part.len()].join(",");
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT blake3, sha256 FROM sha256_of WHERE blake3 IN ({marks})"
                    ))
                    .map_err(sql_err("read SHA-256 digests"))?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(part), |r| {
                        Ok((r.get::<_, Digest>(0)?, r.get::<_, Vec<u8>>(1)?))
                    })
                    .map_err(sql_err("read SHA-256 digests"))?;
                for row in rows {
                    let (blake3, sha) = row.map_err(sql_err("read SHA-256 digests"))?;
                    if let Ok(sha) = <[u8; 32]>::try_from(sha.as_slice()) {
                        found.insert(blake3, sha);
                    }
                }
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Records the SHA-256 of blobs (see the module docs for who may).
    pub fn map_sha256(&self, pairs: &[(Digest, [u8; 32])]) -> Result<(), CacheError> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.write("record SHA-256 digests", |tx| {
            let mut stmt = tx
                .prepare_cached("INSERT OR REPLACE INTO sha256_of (blake3, sha256) VALUES (?1, ?2)")
                .map_err(sql_err("record SHA-256 digests"))?;
            for (blake3, sha) in pairs {
                stmt.execute(params![blake3, &sha[..]])
                    .map_err(sql_err("record SHA-256 digests"))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_digests_are_kept_by_blake3_and_cleared_with_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        cache.map_sha256(&[(a, [1; 32])]).unwrap();
        let found = cache.sha256_of(&[a, b]).unwrap();
        assert_eq!(found.get(&a), Some(&[1; 32]));
        assert!(!found.contains_key(&b));
        cache.clear().unwrap();
        assert!(cache.sha256_of(&[a]).unwrap().is_empty());
    }
}
