//! Blobs over the batch limit, through the ByteStream service, in chunks: a read goes straight
//! into a [`BlobWriter`] of the local CAS while it is hashed in the server's function, a write
//! reads the CAS blob a chunk at a time. Memory is a few chunks, whatever the blob's size.
//!
//! Resource names (REAPI v2 `ByteStream` section): `{instance}/blobs/{hash}/{size}` to read,
//! `{instance}/uploads/{uuid}/blobs/{hash}/{size}` to write; for BLAKE3 the function's name
//! comes before the hash (`blobs/blake3/{hash}/{size}`), for SHA-256 it is left out. An empty
//! instance name leaves no leading `/`.
//!
//! Nothing unverified is kept or sent: a read that does not hash to its digest, or runs longer
//! than its size, is refused and its temporary file removed; a write holds its last chunk back
//! until the CAS blob has hashed to its blake3 name, and is abandoned (the stream ends without
//! `finish_write`) when it does not.

use std::io::Write;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::bytestream::{
    byte_stream_client::ByteStreamClient, ReadRequest, WriteRequest,
};
use flow_cache::{BlobWriter, Cache, Digest};
use sha2::Digest as _;

use super::{call_error, HashFunction, Remote, RemoteError, CALL_TIMEOUT};

/// Bytes per ByteStream message: well under gRPC's usual 4 MiB message limit.
pub const CHUNK: usize = 1 << 20;

/// A hash in the server's function, fed as bytes arrive.
pub(crate) enum RemoteHasher {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl RemoteHasher {
    pub fn new(function: HashFunction) -> RemoteHasher {
        match function {
            HashFunction::Blake3 => RemoteHasher::Blake3(Box::default()),
            HashFunction::Sha256 => RemoteHasher::Sha256(sha2::Sha256::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            RemoteHasher::Blake3(h) => {
                h.update(bytes);
            }
            RemoteHasher::Sha256(h) => h.update(bytes),
        }
    }

    /// The hash, lowercase hex.
    pub fn hex(self) -> String {
        match self {
            RemoteHasher::Blake3(h) => h.finalize().to_hex().to_string(),
            RemoteHasher::Sha256(h) => super::hex(&h.finalize()),
        }
    }
}

/// The time a transfer of `bytes` may take: a call's time plus 1 s a MiB (a slow link of about
/// 8 Mbit/s still finishes; a stalled one is given up).
pub fn transfer_timeout(bytes: i64) -> Duration {
    CALL_TIMEOUT + Duration::from_secs(u64::try_from(bytes).unwrap_or(0) >> 20)
}

impl Remote {
    fn blob_path(&self, d: &re::Digest) -> String {
        let function = match self.function() {
            HashFunction::Blake3 => "blake3/",
            HashFunction::Sha256 => "",
        };
        format!("blobs/{function}{}/{}", d.hash, d.size_bytes)
    }

    fn with_instance(&self, path: String) -> String {
        match self.instance.is_empty() {
            true => path,
            false => format!("{}/{path}", self.instance),
        }
    }

    /// `{instance}/blobs/…`: the resource a read names.
    pub fn read_resource(&self, d: &re::Digest) -> String {
        self.with_instance(self.blob_path(d))
    }

    /// `{instance}/uploads/{uuid}/blobs/…`: the resource a write names.
    pub fn write_resource(&self, d: &re::Digest) -> String {
        self.with_instance(format!("uploads/{}/{}", uuid(), self.blob_path(d)))
    }

    /// Reads the blob `d` into the local CAS, verified: its local (blake3) digest.
    pub async fn read_stream(&self, d: &re::Digest, cache: &Cache) -> Result<Digest, RemoteError> {
        let request = self.request_within(
            ReadRequest {
                resource_name: self.read_resource(d),
                read_offset: 0,
                read_limit: 0,
            },
            transfer_timeout(d.size_bytes),
        );
        let free = free_bytes(cache.cas().tmp_dir());
        if d.size_bytes as u64 > free {
            return Err(RemoteError::TooLarge {
                url: self.url.clone(),
                digest: format!("{}/{}", d.hash, d.size_bytes),
                free,
            });
        }
        let started = std::time::Instant::now();
        let mut stream = ByteStreamClient::new(self.channel.clone())
            .read(request)
            .await
            .map_err(|s| self.read_error(d, &s))?
            .into_inner();
        let mut writer: BlobWriter<'_> = cache.cas().writer().map_err(local)?;
        let mut hasher = RemoteHasher::new(self.function());
        let expected = u64::try_from(d.size_bytes).unwrap_or(0);
        loop {
            let next = tokio::time::timeout(CALL_TIMEOUT, stream.message())
                .await
                .map_err(|_| RemoteError::Stalled {
                    url: self.url.clone(),
                    why: format!(
                        "it stopped sending blob {}/{} for {} s",
                        d.hash,
                        d.size_bytes,
                        CALL_TIMEOUT.as_secs()
                    ),
                })?;
            let Some(piece) = next.map_err(|s| call_error(&self.url, "ByteStream.Read", &s))?
            else {
                break;
            };
            if writer.size() + piece.data.len() as u64 > expected {
                return Err(self.corrupt(d, writer.size() + piece.data.len() as u64, "more"));
            }
            // After a call's time, at least MIN_RATE a second since: a server that trickles
            // does not choose how long a build waits.
            let took = started.elapsed();
            let floor = took.saturating_sub(CALL_TIMEOUT).as_secs_f64() * MIN_RATE as f64;
            if ((writer.size() + piece.data.len() as u64) as f64) < floor {
                return Err(RemoteError::Stalled {
                    url: self.url.clone(),
                    why: format!(
                        "it sent {} of the {} bytes of blob {} in {:.0} s (less than 1 MiB/s)",
                        writer.size() + piece.data.len() as u64,
                        d.size_bytes,
                        d.hash,
                        took.as_secs_f64()
                    ),
                });
            }
            hasher.update(&piece.data);
            writer
                .write_all(&piece.data)
                .map_err(|e| RemoteError::Local(format!("writing a blob into the CAS: {e}")))?;
        }
        let size = writer.size();
        let actual = hasher.hex();
        if size != expected || actual != d.hash {
            return Err(RemoteError::Corrupt {
                url: self.url.clone(),
                digest: format!("{}/{}", d.hash, d.size_bytes),
                size: size as usize,
                actual,
            });
        }
        let (local_digest, _) = writer.finish().map_err(local)?;
        Ok(local_digest)
    }

    fn read_error(&self, d: &re::Digest, s: &tonic::Status) -> RemoteError {
        match s.code() {
            tonic::Code::NotFound => RemoteError::Missing {
                url: self.url.clone(),
                digest: format!("{}/{}", d.hash, d.size_bytes),
            },
            _ => call_error(&self.url, "ByteStream.Read", s),
        }
    }

    fn corrupt(&self, d: &re::Digest, size: u64, _more: &str) -> RemoteError {
        RemoteError::Corrupt {
            url: self.url.clone(),
            digest: format!("{}/{}", d.hash, d.size_bytes),
            size: size as usize,
            actual: "(more bytes than its size)".into(),
        }
    }

    /// Writes the local blob `local` as the remote blob `d`, a chunk at a time. A server that
    /// stops taking chunks for [`CALL_TIMEOUT`], or does not answer within it once it has them
    /// all, is given up on.
    pub async fn write_stream(
        &self,
        local_digest: Digest,
        d: &re::Digest,
        cache: &std::sync::Arc<Cache>,
    ) -> Result<(), RemoteError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteRequest>(2);
        let producer = tokio::task::spawn_blocking({
            let (resource, cache) = (self.write_resource(d), cache.clone());
            let handle = tokio::runtime::Handle::current();
            move || produce(&cache, local_digest, resource, &tx, &handle)
        });
        let request = self.request_within(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            transfer_timeout(d.size_bytes),
        );
        let mut client = ByteStreamClient::new(self.channel.clone());
        let write = client.write(request);
        tokio::pin!(write);
        let stalled = |what: &str| RemoteError::Stalled {
            url: self.url.clone(),
            why: format!(
                "it {what} blob {}/{} for {} s",
                d.hash,
                d.size_bytes,
                CALL_TIMEOUT.as_secs()
            ),
        };
        let written = tokio::select! {
            // An answer before every chunk went: an error, or a blob it already holds.
            written = &mut write => written,
            produced = producer => {
                match produced.map_err(|e| RemoteError::Local(e.to_string()))? {
                    Ok(()) => {}
                    Err(Produce::Stalled) => return Err(stalled("stopped taking")),
                    Err(Produce::Cache(e)) => return Err(local(e)),
                }
                tokio::time::timeout(CALL_TIMEOUT, &mut write)
                    .await
                    .map_err(|_| stalled("did not answer after"))?
            }
        };
        let answer = written
            .map_err(|s| call_error(&self.url, "ByteStream.Write", &s))?
            .into_inner();
        // A server that already held the blob may answer early with -1 or the full size.
        if answer.committed_size != d.size_bytes && answer.committed_size != -1 {
            return Err(RemoteError::Call {
                url: self.url.clone(),
                call: "ByteStream.Write",
                why: format!(
                    "committed {} bytes of {}",
                    answer.committed_size, d.size_bytes
                ),
            });
        }
        Ok(())
    }
}

/// Why the chunks of an upload stopped.
enum Produce {
    /// The call took no chunk for [`CALL_TIMEOUT`].
    Stalled,
    Cache(flow_cache::CacheError),
}

/// Sends the CAS blob `local_digest` as `WriteRequest`s to `tx`, the last one only once the
/// blob hashed to its name (on a blocking thread; `handle` times each send). Ends quietly when
/// the call ends first (its own answer says why).
fn produce(
    cache: &Cache,
    local_digest: Digest,
    resource: String,
    tx: &tokio::sync::mpsc::Sender<WriteRequest>,
    handle: &tokio::runtime::Handle,
) -> Result<(), Produce> {
    let mut offset = 0i64;
    let mut held: Option<Vec<u8>> = None;
    let mut first = true;
    let mut stalled = false;
    let mut send = |data: Vec<u8>, offset: i64, finish: bool, first: bool| {
        let request = WriteRequest {
            // Only the first message must name the resource.
            resource_name: if first {
                resource.clone()
            } else {
                String::new()
            },
            write_offset: offset,
            finish_write: finish,
            data,
        };
        match handle.block_on(tx.send_timeout(request, CALL_TIMEOUT)) {
            Ok(()) => true,
            Err(tokio::sync::mpsc::error::SendTimeoutError::Timeout(_)) => {
                stalled = true;
                false
            }
            Err(tokio::sync::mpsc::error::SendTimeoutError::Closed(_)) => false,
        }
    };
    let read = cache.cas().read_chunks(&local_digest, CHUNK, |piece| {
        let go_on = match held.take() {
            Some(prev) => {
                let n = prev.len() as i64;
                let ok = send(prev, offset, false, first);
                first = false;
                offset += n;
                ok
            }
            None => true,
        };
        held = Some(piece.to_vec());
        go_on
    });
    match read {
        Ok(true) => {
            send(held.unwrap_or_default(), offset, true, first);
        }
        Ok(false) => {}
        Err(e) => return Err(Produce::Cache(e)),
    }
    match stalled {
        true => Err(Produce::Stalled),
        false => Ok(()),
    }
}

/// The slowest a transfer may go, after its first [`CALL_TIMEOUT`]: bytes a second.
pub const MIN_RATE: u64 = 1 << 20;

/// The bytes free for an unprivileged user on the file system of `dir` (unknown: unlimited).
fn free_bytes(dir: &std::path::Path) -> u64 {
    nix::sys::statvfs::statvfs(dir).map_or(u64::MAX, |s| {
        s.blocks_available().saturating_mul(s.fragment_size())
    })
}

/// A local cache error on the way: the remote is not at fault.
pub(crate) fn local(e: flow_cache::CacheError) -> RemoteError {
    RemoteError::Local(e.to_string())
}

/// A random version-4 UUID, as ByteStream upload names take.
fn uuid() -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    b[8..].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = super::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names_are_version_4_uuids() {
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!("89ab".contains(&u[19..20]), "{u}");
        assert_ne!(u, uuid());
    }

    #[test]
    fn a_transfer_may_take_longer_the_larger_it_is() {
        assert_eq!(transfer_timeout(0), CALL_TIMEOUT);
        assert_eq!(
            transfer_timeout(200 << 20),
            CALL_TIMEOUT + Duration::from_secs(200)
        );
    }
}
