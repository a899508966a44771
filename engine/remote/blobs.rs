//! Blobs between the local CAS and the server, in bounded memory: small ones in batch calls of
//! at most the batch limit, large ones through ByteStream (`bytestream.rs`).
//!
//! **Digests.** A local blob is named by its blake3. Its remote digest is the same hash for a
//! BLAKE3 server; for a SHA-256 server it is read from flow.db's map (`sha256_of`), else the blob
//! is read once, verified against its blake3 while its SHA-256 is computed, and mapped. Every
//! blob received is hashed in the server's function and refused unless it matches, then stored
//! under its own blake3 (and mapped) before anything is built from it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use flow_cache::{Cache, Digest};
use sha2::Digest as _;

use super::bytestream::{local, CHUNK};
use super::{HashFunction, Remote, RemoteError};

/// Bytes a message carries besides a blob's (its digest, framing).
const OVERHEAD: u64 = 256;

/// Digests per FindMissingBlobs call, well under a message's limit.
const FIND_CHUNK: usize = 4096;

/// A local blob: its blake3 digest and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalBlob {
    pub digest: Digest,
    pub size: u64,
}

impl Remote {
    /// The remote digests of `blobs` (module docs), in order.
    pub fn remote_digests(
        &self,
        cache: &Cache,
        blobs: &[LocalBlob],
    ) -> Result<Vec<re::Digest>, RemoteError> {
        let size = |b: &LocalBlob| b.size as i64;
        if self.function() == HashFunction::Blake3 {
            return Ok(blobs
                .iter()
                .map(|b| re::Digest {
                    hash: b.digest.to_string(),
                    size_bytes: size(b),
                })
                .collect());
        }
        let wanted: Vec<Digest> = blobs.iter().map(|b| b.digest).collect();
        let mut known = cache.sha256_of(&wanted).map_err(local)?;
        let mut new = Vec::new();
        for b in blobs {
            if known.contains_key(&b.digest) {
                continue;
            }
            let mut sha = sha2::Sha256::new();
            cache
                .cas()
                .read_chunks(&b.digest, CHUNK, |piece| {
                    sha.update(piece);
                    true
                })
                .map_err(local)?;
            let sha: [u8; 32] = sha.finalize().into();
            known.insert(b.digest, sha);
            new.push((b.digest, sha));
        }
        cache.map_sha256(&new).map_err(local)?;
        Ok(blobs
            .iter()
            .map(|b| re::Digest {
                hash: super::hex(&known[&b.digest]),
                size_bytes: size(b),
            })
            .collect())
    }

    /// Which of `digests` the server does not hold.
    pub async fn find_missing(
        &self,
        digests: &[re::Digest],
    ) -> Result<Vec<re::Digest>, RemoteError> {
        let mut missing = Vec::new();
        for part in digests.chunks(FIND_CHUNK) {
            let answer = self
                .retrying("FindMissingBlobs", || {
                    let mut cas = self.cas();
                    let request = self.request(re::FindMissingBlobsRequest {
                        instance_name: self.instance.clone(),
                        blob_digests: part.to_vec(),
                        digest_function: self.function().value() as i32,
                    });
                    async move { cas.find_missing_blobs(request).await }
                })
                .await?;
            missing.extend(answer.into_inner().missing_blob_digests);
        }
        Ok(missing)
    }

    /// Sends the local blobs `blobs` (with their remote digests) that the server is missing.
    pub async fn send_blobs(
        &self,
        cache: &Arc<Cache>,
        blobs: &[(LocalBlob, re::Digest)],
    ) -> Result<(), RemoteError> {
        let all: Vec<re::Digest> = blobs.iter().map(|(_, d)| d.clone()).collect();
        let missing: BTreeSet<(String, i64)> = self
            .find_missing(&all)
            .await?
            .into_iter()
            .map(|d| (d.hash, d.size_bytes))
            .collect();
        let limit = self.batch_limit();
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        let mut sent = BTreeSet::new();
        for (local_blob, d) in blobs {
            let id = (d.hash.clone(), d.size_bytes);
            if !missing.contains(&id) || !sent.insert(id) {
                continue;
            }
            if local_blob.size + OVERHEAD > limit {
                self.write_stream(local_blob.digest, d, cache).await?;
                continue;
            }
            if !batch.is_empty() && bytes + local_blob.size + OVERHEAD > limit {
                self.update_batch(std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
            let data = cache
                .cas()
                .read_verified(&local_blob.digest)
                .map_err(local)?;
            bytes += data.len() as u64 + OVERHEAD;
            batch.push(re::batch_update_blobs_request::Request {
                digest: Some(d.clone()),
                data,
                ..Default::default()
            });
        }
        if !batch.is_empty() {
            self.update_batch(batch).await?;
        }
        Ok(())
    }

    /// Reads the blobs `wanted` into the local CAS, each verified (module docs): their local
    /// digests, in order. A blob the server does not hold is [`RemoteError::Missing`].
    /// `inline`: blobs the server already sent (in an `ActionResult`), by hash and size: each
    /// is verified like a blob read.
    pub async fn fetch_blobs(
        &self,
        cache: &Cache,
        wanted: &[re::Digest],
        inline: &HashMap<(String, i64), Vec<u8>>,
    ) -> Result<Vec<Digest>, RemoteError> {
        let limit = self.batch_limit();
        let mut got: HashMap<(String, i64), Digest> = HashMap::new();
        let mut batch: Vec<re::Digest> = Vec::new();
        let mut bytes = 0u64;
        let mut unique = BTreeSet::new();
        for d in wanted {
            if !unique.insert((d.hash.clone(), d.size_bytes)) {
                continue;
            }
            if let Some(data) = inline.get(&(d.hash.clone(), d.size_bytes)) {
                let local_digest = self.verified_into(cache, d, data)?;
                got.insert((d.hash.clone(), d.size_bytes), local_digest);
                continue;
            }
            let size = u64::try_from(d.size_bytes).unwrap_or(u64::MAX);
            if size.saturating_add(OVERHEAD) > limit {
                let local_digest = self.read_stream(d, cache).await?;
                self.map_received(cache, d, local_digest);
                got.insert((d.hash.clone(), d.size_bytes), local_digest);
                continue;
            }
            if !batch.is_empty() && bytes + size + OVERHEAD > limit {
                self.read_batch_into(cache, &std::mem::take(&mut batch), &mut got)
                    .await?;
                bytes = 0;
            }
            bytes += size + OVERHEAD;
            batch.push(d.clone());
        }
        if !batch.is_empty() {
            self.read_batch_into(cache, &batch, &mut got).await?;
        }
        Ok(wanted
            .iter()
            .map(|d| got[&(d.hash.clone(), d.size_bytes)])
            .collect())
    }

    async fn read_batch_into(
        &self,
        cache: &Cache,
        batch: &[re::Digest],
        got: &mut HashMap<(String, i64), Digest>,
    ) -> Result<(), RemoteError> {
        let read = self.download_batch(batch).await?;
        for (d, data) in batch.iter().zip(read) {
            let Some(data) = data else {
                return Err(RemoteError::Missing {
                    url: self.url.clone(),
                    digest: format!("{}/{}", d.hash, d.size_bytes),
                });
            };
            let local_digest = cache.cas().put_bytes(&data).map_err(local)?;
            self.map_received(cache, d, local_digest);
            got.insert((d.hash.clone(), d.size_bytes), local_digest);
        }
        Ok(())
    }

    /// Stores `data`, sent inline as the blob `d`, once it hashes to `d`.
    fn verified_into(
        &self,
        cache: &Cache,
        d: &re::Digest,
        data: &[u8],
    ) -> Result<Digest, RemoteError> {
        let got = self.function().digest(data);
        if got != *d {
            return Err(RemoteError::Corrupt {
                url: self.url.clone(),
                digest: format!("{}/{}", d.hash, d.size_bytes),
                size: data.len(),
                actual: got.hash,
            });
        }
        let local_digest = cache.cas().put_bytes(data).map_err(local)?;
        self.map_received(cache, d, local_digest);
        Ok(local_digest)
    }

    /// A verified blob received from a SHA-256 server: its SHA-256 is known from now on.
    fn map_received(&self, cache: &Cache, d: &re::Digest, local_digest: Digest) {
        if self.function() != HashFunction::Sha256 {
            return;
        }
        let mut sha = [0u8; 32];
        let ok = d.hash.len() == 64
            && (0..32).all(|i| {
                u8::from_str_radix(&d.hash[2 * i..2 * i + 2], 16)
                    .map(|b| sha[i] = b)
                    .is_ok()
            });
        if ok {
            // Best effort: without the row the blob is hashed again when it is sent.
            let _ = cache.map_sha256(&[(local_digest, sha)]);
        }
    }
}

/// The batch calls, blobs in memory (each under the batch limit): for the small messages flow
/// makes itself and `flow remote check`.
impl Remote {
    /// Writes `blobs` (small ones: each under the batch limit), in batches under the limit.
    pub async fn upload(&self, blobs: &[Vec<u8>]) -> Result<Vec<re::Digest>, RemoteError> {
        let limit = self.batch_limit();
        let mut digests = Vec::new();
        let mut batch: Vec<re::batch_update_blobs_request::Request> = Vec::new();
        let mut bytes = 0u64;
        for blob in blobs {
            let digest = self.function().digest(blob);
            // A message carries some bytes of its own besides the blob's.
            let size = blob.len() as u64 + 256;
            if !batch.is_empty() && bytes + size > limit {
                self.update_batch(std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
            bytes += size;
            digests.push(digest.clone());
            batch.push(re::batch_update_blobs_request::Request {
                digest: Some(digest),
                data: blob.clone(),
                ..Default::default()
            });
        }
        if !batch.is_empty() {
            self.update_batch(batch).await?;
        }
        Ok(digests)
    }

    pub(crate) async fn update_batch(
        &self,
        requests: Vec<re::batch_update_blobs_request::Request>,
    ) -> Result<(), RemoteError> {
        let request = re::BatchUpdateBlobsRequest {
            instance_name: self.instance.clone(),
            requests,
            digest_function: self.function().value() as i32,
        };
        let answer = self
            .retrying("BatchUpdateBlobs", || {
                let mut cas = self.cas();
                let request = self.request(request.clone());
                async move { cas.batch_update_blobs(request).await }
            })
            .await?;
        for r in answer.into_inner().responses {
            if let Some(status) = r.status.filter(|s| s.code != 0) {
                return Err(RemoteError::Call {
                    url: self.url.clone(),
                    call: "BatchUpdateBlobs",
                    why: format!("status {}: {}", status.code, status.message),
                });
            }
        }
        Ok(())
    }

    /// Reads the blobs `digests` (each under the batch limit), in calls under the limit, each
    /// verified against its digest: a blob that does not hash to what was asked for is refused
    /// ([`RemoteError::Corrupt`]). `None` for a blob the server does not hold.
    pub async fn download(
        &self,
        digests: &[re::Digest],
    ) -> Result<Vec<Option<Vec<u8>>>, RemoteError> {
        let limit = self.batch_limit();
        let mut out = Vec::with_capacity(digests.len());
        let mut start = 0;
        while start < digests.len() {
            let mut end = start;
            let mut bytes = 0u64;
            while end < digests.len() {
                let size = digests[end].size_bytes.max(0) as u64 + 256;
                if end > start && bytes + size > limit {
                    break;
                }
                bytes += size;
                end += 1;
            }
            out.extend(self.download_batch(&digests[start..end]).await?);
            start = end;
        }
        Ok(out)
    }

    pub(crate) async fn download_batch(
        &self,
        digests: &[re::Digest],
    ) -> Result<Vec<Option<Vec<u8>>>, RemoteError> {
        let request = re::BatchReadBlobsRequest {
            instance_name: self.instance.clone(),
            digests: digests.to_vec(),
            digest_function: self.function().value() as i32,
            ..Default::default()
        };
        let answer = self
            .retrying("BatchReadBlobs", || {
                let mut cas = self.cas();
                let request = self.request(request.clone());
                async move { cas.batch_read_blobs(request).await }
            })
            .await?;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; digests.len()];
        for r in answer.into_inner().responses {
            let Some(asked) = r.digest else { continue };
            let Some(i) = digests.iter().position(|d| *d == asked) else {
                continue;
            };
            if r.status.as_ref().is_some_and(|s| s.code != 0) {
                continue;
            }
            let got = self.function().digest(&r.data);
            if got != asked {
                return Err(RemoteError::Corrupt {
                    url: self.url.clone(),
                    digest: format!("{}/{}", asked.hash, asked.size_bytes),
                    size: r.data.len(),
                    actual: got.hash,
                });
            }
            out[i] = Some(r.data);
        }
        Ok(out)
    }
}
