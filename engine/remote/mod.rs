//! The remote cache client: the cache services of the Remote Execution API v2 (REAPI), which
//! existing servers provide (BuildGrid, bazel-remote, Buildbarn, NativeLink, BuildBuddy):
//! `Capabilities` first, then the content-addressable storage (`FindMissingBlobs`,
//! `BatchUpdateBlobs`, `BatchReadBlobs`). The protocol's types and clients are the generated
//! ones of the `bazel-remote-apis` crate, on tonic.
//!
//! Digests: flow's own keys and blobs are blake3. A server that offers BLAKE3 (REAPI's digest
//! function 9, since v2.5) is spoken to in blake3; one that offers only SHA-256 (BuildGrid) is
//! spoken to in SHA-256, computed beside blake3 when a blob is sent or received. Every blob
//! read is hashed again and refused when it does not match the digest asked for, before
//! anything is written.
//!
//! Large blobs go through ByteStream (`bytestream.rs`), small ones in batches (`blobs.rs`);
//! the action cache and what a build shares are in `tier.rs`, directory outputs as REAPI
//! `Tree`s in `tree.rs`.
//!
//! Time: connecting may take 5 s, a call 10 s ([`CALL_TIMEOUT`]), a transfer more the larger it
//! is; a call the server turns away for a moment (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`,
//! `ABORTED`) is tried again, [`ATTEMPTS`] times in all ([`BUSY_ATTEMPTS`] for a busy one),
//! about 100, 300, 900 ms and then 1 s apart (jittered). At most [`CALLS_AT_ONCE`] calls are made at a time, one fewer each time the
//! server says it is busy (`RESOURCE_EXHAUSTED`).

pub mod blobs;
pub mod bytestream;
pub mod config;
pub mod results;
pub mod tier;
pub mod tree;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use re::capabilities_client::CapabilitiesClient;
use re::content_addressable_storage_client::ContentAddressableStorageClient;
use re::digest_function::Value as DigestValue;
use sha2::Digest as _;
use tonic::transport::{Channel, Endpoint};

/// Why the remote cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("`{url}` is not a remote cache address: write grpc://HOST:PORT, or grpcs://HOST:PORT for TLS")]
    BadUrl { url: String },
    #[error("`{url}`: a token is never sent in plain text; use grpcs:// (TLS), or grpc:// to this machine only")]
    TokenInPlainText { url: String },
    #[error("the remote cache's token is not one an HTTP header can carry (visible ASCII only)")]
    BadToken,
    #[error("cannot read the certificates to trust for the remote cache, {path}: {why}")]
    CaFile { path: String, why: String },
    #[error("cannot reach the remote cache at {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("the remote cache at {url} answered {call} with an error: {why}")]
    Call {
        url: String,
        call: &'static str,
        why: String,
    },
    #[error("the remote cache at {url} offers no digest function flow can use (it offers {offered}; flow speaks BLAKE3 and SHA256)")]
    NoDigestFunction { url: String, offered: String },
    #[error("the remote cache at {url} names blob {digest}, larger than the {free} bytes free for the local cache")]
    TooLarge {
        url: String,
        digest: String,
        free: u64,
    },
    #[error("the remote cache at {url} does not hold blob {digest}")]
    Missing { url: String, digest: String },
    #[error("the remote cache at {url} refused {call}: {why}")]
    Refused {
        url: String,
        call: &'static str,
        why: String,
    },
    #[error("the remote cache at {url} stalled: {why}")]
    Stalled { url: String, why: String },
    #[error("the remote cache at {url} has no entry for {call}")]
    NotFound { url: String, call: &'static str },
    #[error("the local cache: {0}")]
    Local(String),
    #[error("the remote cache at {url} sent a blob that is not what was asked for: {digest} has {size} bytes that hash to {actual}; refused")]
    Corrupt {
        url: String,
        digest: String,
        size: usize,
        actual: String,
    },
}

/// The hash function a server and flow agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashFunction {
    Blake3,
    Sha256,
}

impl HashFunction {
    pub fn name(self) -> &'static str {
        match self {
            HashFunction::Blake3 => "BLAKE3",
            HashFunction::Sha256 => "SHA256",
        }
    }

    pub(crate) fn value(self) -> DigestValue {
        match self {
            HashFunction::Blake3 => DigestValue::Blake3,
            HashFunction::Sha256 => DigestValue::Sha256,
        }
    }

    /// The REAPI digest of `bytes`: the lowercase hex hash and the size.
    pub fn digest(self, bytes: &[u8]) -> re::Digest {
        let hash = match self {
            HashFunction::Blake3 => blake3::hash(bytes).to_hex().to_string(),
            HashFunction::Sha256 => hex(&sha2::Sha256::digest(bytes)),
        };
        re::Digest {
            hash,
            size_bytes: bytes.len() as i64,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a server said of itself.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// `2.0` to `2.2`.
    pub api: (String, String),
    pub offered: Vec<String>,
    pub function: HashFunction,
    pub update_enabled: bool,
    /// The most bytes a batch call carries (0: the server sets no limit).
    pub max_batch_bytes: u64,
}

/// A connection to one remote cache (one REAPI instance).
pub struct Remote {
    pub(crate) url: String,
    pub(crate) instance: String,
    pub(crate) channel: Channel,
    /// The calls made at the same time (`retrying`), and how many are allowed now.
    calls: std::sync::Arc<tokio::sync::Semaphore>,
    calls_allowed: std::sync::atomic::AtomicUsize,
    /// `Bearer TOKEN`, marked sensitive (never printed).
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    pub capabilities: Capabilities,
}

/// How long a call may take before the server is taken to be down (a lookup is on the
/// build's way: a server slower than this is not worth waiting for).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The most bytes flow puts in one batch call when the server sets no lower limit: gRPC's
/// default message limit is 4 MiB.
const BATCH_BYTES: u64 = 4 << 20;

/// `grpc://HOST:PORT` (plain text) or `grpcs://HOST:PORT` (TLS) as the URI tonic connects
/// to, and whether it is TLS.
pub fn endpoint_uri(url: &str) -> Result<(String, bool), RemoteError> {
    let bad = || RemoteError::BadUrl {
        url: url.to_owned(),
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let tls = match scheme {
        "grpc" => false,
        "grpcs" => true,
        _ => return Err(bad()),
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    let port = host.rsplit_once(':').map(|(_, p)| p);
    let port_ok = port.is_some_and(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    let odd = |c: char| c.is_whitespace() || "/?#@".contains(c);
    if host.is_empty() || host.contains(odd) || !port_ok {
        return Err(bad());
    }
    Ok((
        format!("{}://{host}", if tls { "https" } else { "http" }),
        tls,
    ))
}

/// A bearer token: a secret, never printed (its `Debug` is `***`), never part of a key.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// The token in the environment variable `name`, if set and not empty.
    pub fn from_env(name: &str) -> Option<Token> {
        std::env::var(name)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .map(Token)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The variable a bearer token is read from unless `[remote] token_env` names another.
pub const TOKEN_ENV: &str = "FLOW_REMOTE_TOKEN";

/// Where a remote cache is and how to speak to it.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// `grpc://HOST:PORT` or `grpcs://HOST:PORT`.
    pub url: String,
    pub instance: String,
    /// A PEM file of certificates to trust besides the system's (TLS only).
    pub ca_file: Option<std::path::PathBuf>,
    /// Sent as `authorization: Bearer …` with every call.
    pub token: Option<Token>,
}

impl Target {
    pub fn new(url: &str, instance: &str) -> Target {
        Target {
            url: url.to_owned(),
            instance: instance.to_owned(),
            ..Target::default()
        }
    }
}

/// Whether `url`'s host is this machine (a token may go there in plain text).
fn is_loopback(uri: &str) -> bool {
    let host = uri.split_once("://").map_or(uri, |(_, h)| h);
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

impl Remote {
    /// Connects to `target` and asks for its capabilities; chooses BLAKE3 when offered, else
    /// SHA-256.
    pub async fn connect(target: &Target) -> Result<Remote, RemoteError> {
        let url = target.url.as_str();
        let (uri, tls) = endpoint_uri(url)?;
        if target.token.is_some() && !tls && !is_loopback(&uri) {
            return Err(RemoteError::TokenInPlainText {
                url: url.to_owned(),
            });
        }
        let unreachable = |why: String| RemoteError::Unreachable {
            url: url.to_owned(),
            why,
        };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| unreachable(chain(&e)))?
            .connect_timeout(Duration::from_secs(5));
        if tls {
            let mut config = tonic::transport::ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = &target.ca_file {
                let pem = std::fs::read(ca).map_err(|e| RemoteError::CaFile {
                    path: ca.display().to_string(),
                    why: e.to_string(),
                })?;
                config = config.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| unreachable(chain(&e)))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unreachable(chain(&e)))?;
        let authorization = match &target.token {
            Some(Token(token)) => {
                let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
                    format!("Bearer {token}")
                        .parse()
                        .map_err(|_| RemoteError::BadToken)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let answer = CapabilitiesClient::new(channel.clone())
            .get_capabilities(authorized(
                re::GetCapabilitiesRequest {
                    instance_name: target.instance.clone(),
                },
                CALL_TIMEOUT,
                &authorization,
            ))
            .await
            .map_err(|s| call_error(url, "GetCapabilities", &s))?
            .into_inner();
        let cache = answer.cache_capabilities.unwrap_or_default();
        let offered: Vec<String> = cache
            .digest_functions
            .iter()
            .map(|f| {
                DigestValue::try_from(*f)
                    .map(|v| v.as_str_name().to_owned())
                    .unwrap_or_else(|_| format!("function {f}"))
            })
            .collect();
        let has = |v: DigestValue| cache.digest_functions.contains(&(v as i32));
        let function = match (has(DigestValue::Blake3), has(DigestValue::Sha256)) {
            (true, _) => HashFunction::Blake3,
            (false, true) => HashFunction::Sha256,
            _ => {
                return Err(RemoteError::NoDigestFunction {
                    url: url.to_owned(),
                    offered: match offered.is_empty() {
                        true => "none".to_owned(),
                        false => offered.join(", "),
                    },
                })
            }
        };
        let version = |v: Option<bazel_remote_apis::build::bazel::semver::SemVer>| {
            v.map_or("?".to_owned(), |v| format!("{}.{}", v.major, v.minor))
        };
        let capabilities = Capabilities {
            api: (
                version(answer.low_api_version),
                version(answer.high_api_version),
            ),
            offered,
            function,
            update_enabled: cache
                .action_cache_update_capabilities
                .is_some_and(|u| u.update_enabled),
            max_batch_bytes: u64::try_from(cache.max_batch_total_size_bytes).unwrap_or(0),
        };
        Ok(Remote {
            url: url.to_owned(),
            instance: target.instance.clone(),
            channel,
            authorization,
            calls: std::sync::Arc::new(tokio::sync::Semaphore::new(CALLS_AT_ONCE)),
            calls_allowed: std::sync::atomic::AtomicUsize::new(CALLS_AT_ONCE),
            capabilities,
        })
    }

    pub fn function(&self) -> HashFunction {
        self.capabilities.function
    }

    pub(crate) fn cas(&self) -> ContentAddressableStorageClient<Channel> {
        ContentAddressableStorageClient::new(self.channel.clone())
    }

    pub(crate) fn batch_limit(&self) -> u64 {
        match self.capabilities.max_batch_bytes {
            0 => BATCH_BYTES,
            n => n.min(BATCH_BYTES),
        }
    }

    /// `message` as a request that the client gives up after [`CALL_TIMEOUT`], with the
    /// token.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        authorized(message, CALL_TIMEOUT, &self.authorization)
    }

    /// `message` as a request given up after `timeout`, with the token.
    pub(crate) fn request_within<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        authorized(message, timeout, &self.authorization)
    }

    /// `call` made by `f`, tried again when the server turns it away for a moment (module
    /// docs).
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        call: &'static str,
        mut f: F,
    ) -> Result<T, RemoteError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut wait = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let slot = self
                .calls
                .acquire()
                .await
                .expect("the call limit is never closed");
            let answer = f().await;
            drop(slot);
            match answer {
                Ok(t) => return Ok(t),
                Err(s) if attempt < attempts(&s) && transient(&s) => {
                    if s.code() == tonic::Code::ResourceExhausted {
                        self.fewer_calls();
                    }
                    // Jittered, so that calls turned away together do not come back together.
                    tokio::time::sleep(wait.mul_f64(0.5 + fastrand::f64())).await;
                    wait = (wait * 3).min(Duration::from_secs(1));
                    attempt += 1;
                }
                Err(s) => return Err(call_error(&self.url, call, &s)),
            }
        }
    }

    /// The server said it is busy (`RESOURCE_EXHAUSTED`: BuildGrid answers so beyond its
    /// worker threads, 10 on 2 cores): one call fewer at a time from now on, down to one.
    fn fewer_calls(&self) {
        let now = self.calls_allowed.load(Ordering::SeqCst);
        if now > 1
            && self
                .calls_allowed
                .compare_exchange(now, now - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            let calls = self.calls.clone();
            // The slot is given back by a call still running when none is free now.
            tokio::spawn(async move {
                if let Ok(slot) = calls.acquire_owned().await {
                    slot.forget();
                }
            });
        }
    }
}

/// Calls made in all when the server turns one away for a moment.
pub const ATTEMPTS: u32 = 4;

/// Calls made in all when the server says it is busy: more, since it is asked fewer at a time
/// from then on.
pub const BUSY_ATTEMPTS: u32 = 8;

fn attempts(s: &tonic::Status) -> u32 {
    match s.code() {
        tonic::Code::ResourceExhausted => BUSY_ATTEMPTS,
        _ => ATTEMPTS,
    }
}

/// Calls made to a server at the same time, at first (fewer once it says it is busy).
pub const CALLS_AT_ONCE: usize = 8;

/// Whether a failed call may succeed if made again soon.
fn transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::ResourceExhausted | tonic::Code::Aborted
    )
}

/// `message` as a request given up after `timeout`, with `authorization` when there is one.
fn authorized<T>(
    message: T,
    timeout: Duration,
    authorization: &Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.clone());
    }
    request
}

/// An error and its causes, as one line (tonic's transport error says only "transport error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

pub(crate) fn call_error(url: &str, call: &'static str, status: &tonic::Status) -> RemoteError {
    let why = match status.code() {
        // The message only: tonic's source chain is debug output.
        tonic::Code::Unavailable => {
            return RemoteError::Unreachable {
                url: url.to_owned(),
                why: status.message().to_owned(),
            };
        }
        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
            return RemoteError::Unreachable {
                url: url.to_owned(),
                why: format!(
                    "it did not finish {call} within its time limit ({} s a call, more for a \
                     large transfer)",
                    CALL_TIMEOUT.as_secs()
                ),
            };
        }
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            return RemoteError::Refused {
                url: url.to_owned(),
                call,
                why: format!("{:?}: {}", status.code(), status.message()),
            };
        }
        tonic::Code::NotFound => {
            return RemoteError::NotFound {
                url: url.to_owned(),
                call,
            }
        }
        code => format!("{code:?}: {}", status.message()),
    };
    RemoteError::Call {
        url: url.to_owned(),
        call,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            endpoint_uri("grpc://127.0.0.1:9092").unwrap(),
            ("http://127.0.0.1:9092".to_owned(), false)
        );
        assert_eq!(
            endpoint_uri("grpcs://cache.example.com:443/").unwrap(),
            ("https://cache.example.com:443".to_owned(), true)
        );
        for bad in [
            "ftp://x",
            "127.0.0.1:9092",
            "grpc://",
            "grpc://a/b",
            "grpc://127.0.0.1",
            "grpc://127.0.0.1:99999",
            "grpc://u@h:1",
            "grpc://h:1?x=1",
            "http://h:1",
            "grpcs://h",
            "",
        ] {
            assert!(
                matches!(endpoint_uri(bad), Err(RemoteError::BadUrl { .. })),
                "{bad}"
            );
        }
        assert!(is_loopback("http://127.0.0.1:1") && is_loopback("http://localhost:1"));
        assert!(!is_loopback("http://cache.example.com:1"));
    }

    #[test]
    fn a_token_is_never_printed() {
        let target = Target {
            token: Some(Token("s3cr3t".into())),
            ..Target::new("grpcs://h:1", "")
        };
        assert!(!format!("{target:?}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn a_token_is_not_sent_in_plain_text_to_another_machine() {
        let target = Target {
            token: Some(Token("s3cr3t".into())),
            ..Target::new("grpc://cache.example.com:9092", "")
        };
        let e = Remote::connect(&target).await.err().unwrap();
        assert!(matches!(e, RemoteError::TokenInPlainText { .. }), "{e}");
        assert!(!e.to_string().contains("s3cr3t"));
    }

    #[test]
    fn digests_of_both_functions() {
        // SHA-256 of "abc", from FIPS 180-2's example.
        assert_eq!(
            HashFunction::Sha256.digest(b"abc").hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            HashFunction::Blake3.digest(b"abc").hash,
            blake3::hash(b"abc").to_hex().to_string()
        );
        assert_eq!(HashFunction::Sha256.digest(b"abc").size_bytes, 3);
    }
}
