//! The remote cache against a small REAPI server made here, on the same crate flow's client uses
//! (`bazel-remote-apis`' generated services on tonic): the BLAKE3 path (BuildGrid speaks SHA-256
//! only), and a server that misbehaves on purpose: blobs that are not what their digest says, a
//! result naming `../../x`, delays, calls turned away for a moment, a server that goes away
//! mid-build. The server keeps what it was sent, so tests check it directly.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::bytestream as bs;
use re::action_cache_server::{ActionCache, ActionCacheServer};
use re::capabilities_server::{Capabilities, CapabilitiesServer};
use re::content_addressable_storage_server::{
    ContentAddressableStorage, ContentAddressableStorageServer,
};
use tonic::{Request, Response, Status, Streaming};

use crate::support::Ws;

/// What the server does wrong on purpose.
#[derive(Clone, Default)]
struct Faults {
    /// Every blob read has one byte flipped (batch and ByteStream).
    corrupt_reads: bool,
    /// A batch read answers with another blob's bytes.
    lie: bool,
    /// Results read have their first output's path replaced by this.
    rename_output: Option<String>,
    /// GetActionResult answers after this long.
    lookup_delay: Duration,
    /// The first this many GetActionResult calls are turned away (UNAVAILABLE).
    turned_away: usize,
    /// GetActionResult fails with this message (INTERNAL).
    lookup_error: Option<String>,
    /// ByteStream writes are never read nor answered.
    stall_writes: bool,
    /// ByteStream reads send one byte a second.
    trickle_reads: bool,
    /// Every write is refused (PERMISSION_DENIED), as with a token that may only read.
    refuse_writes: bool,
    /// GetActionResult sends the small files and logs asked for inline.
    inline: bool,
    /// GetActionResult answers RESOURCE_EXHAUSTED beyond this many at once (as BuildGrid does
    /// beyond its worker threads).
    busy_over: Option<usize>,
}

#[derive(Default)]
struct State {
    blobs: HashMap<String, Vec<u8>>,
    results: HashMap<String, re::ActionResult>,
    /// Calls by name, in order.
    calls: Vec<&'static str>,
    /// The digest functions requests named.
    functions: BTreeSet<i32>,
    /// GetActionResult calls being answered now, and the most at once.
    lookups_now: usize,
    lookups_most: usize,
    faults: Faults,
}

#[derive(Clone)]
struct Fake {
    state: Arc<Mutex<State>>,
    batch_limit: i64,
}

impl Fake {
    fn note(&self, call: &'static str, function: i32) -> Faults {
        let mut s = self.state.lock().unwrap();
        s.calls.push(call);
        s.functions.insert(function);
        s.faults.clone()
    }

    fn read(&self, hash: &str, faults: &Faults) -> Option<Vec<u8>> {
        let s = self.state.lock().unwrap();
        let mut data = s.blobs.get(hash)?.clone();
        if faults.lie {
            if let Some(other) = s.blobs.iter().find(|(h, _)| *h != hash).map(|(_, b)| b) {
                data = other.clone();
            }
        }
        if faults.corrupt_reads && !data.is_empty() {
            data[0] ^= 0x20;
        }
        Some(data)
    }

    /// Stores `data` if it hashes to `hash` (BLAKE3), as a server must.
    fn write(&self, hash: &str, data: Vec<u8>) -> Result<(), Status> {
        if blake3::hash(&data).to_hex().as_str() != hash {
            return Err(Status::invalid_argument(
                "the data does not hash to its digest",
            ));
        }
        self.state
            .lock()
            .unwrap()
            .blobs
            .insert(hash.to_owned(), data);
        Ok(())
    }
}

#[tonic::async_trait]
impl Capabilities for Fake {
    async fn get_capabilities(
        &self,
        _: Request<re::GetCapabilitiesRequest>,
    ) -> Result<Response<re::ServerCapabilities>, Status> {
        let semver = |minor| bazel_remote_apis::build::bazel::semver::SemVer {
            major: 2,
            minor,
            ..Default::default()
        };
        Ok(Response::new(re::ServerCapabilities {
            cache_capabilities: Some(re::CacheCapabilities {
                digest_functions: vec![re::digest_function::Value::Blake3 as i32],
                action_cache_update_capabilities: Some(re::ActionCacheUpdateCapabilities {
                    update_enabled: true,
                }),
                max_batch_total_size_bytes: self.batch_limit,
                ..Default::default()
            }),
            low_api_version: Some(semver(0)),
            high_api_version: Some(semver(11)),
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl ActionCache for Fake {
    async fn get_action_result(
        &self,
        request: Request<re::GetActionResultRequest>,
    ) -> Result<Response<re::ActionResult>, Status> {
        let r = request.into_inner();
        let faults = self.note("GetActionResult", r.digest_function);
        {
            let mut s = self.state.lock().unwrap();
            if faults.busy_over.is_some_and(|most| s.lookups_now >= most) {
                return Err(Status::resource_exhausted("Concurrent RPC limit exceeded!"));
            }
            s.lookups_now += 1;
            s.lookups_most = s.lookups_most.max(s.lookups_now);
        }
        tokio::time::sleep(faults.lookup_delay).await;
        self.state.lock().unwrap().lookups_now -= 1;
        if let Some(message) = faults.lookup_error {
            return Err(Status::internal(message));
        }
        {
            let mut s = self.state.lock().unwrap();
            if s.faults.turned_away > 0 {
                s.faults.turned_away -= 1;
                return Err(Status::unavailable("busy for a moment"));
            }
        }
        let hash = r.action_digest.unwrap_or_default().hash;
        let found = self.state.lock().unwrap().results.get(&hash).cloned();
        let mut result = found.ok_or_else(|| Status::not_found("no result"))?;
        if let (Some(path), Some(first)) = (&faults.rename_output, result.output_files.first_mut())
        {
            first.path = path.clone();
        }
        if faults.inline {
            let small = |d: &Option<re::Digest>| {
                let d = d.as_ref()?;
                let data = self.read(&d.hash, &faults)?;
                (data.len() < 64 << 10).then_some(data)
            };
            for f in &mut result.output_files {
                if r.inline_output_files.contains(&f.path) {
                    f.contents = small(&f.digest).unwrap_or_default();
                }
            }
            if r.inline_stdout {
                result.stdout_raw = small(&result.stdout_digest).unwrap_or_default();
            }
        }
        Ok(Response::new(result))
    }

    async fn update_action_result(
        &self,
        request: Request<re::UpdateActionResultRequest>,
    ) -> Result<Response<re::ActionResult>, Status> {
        let r = request.into_inner();
        if self
            .note("UpdateActionResult", r.digest_function)
            .refuse_writes
        {
            return Err(Status::permission_denied("this token may only read"));
        }
        let result = r.action_result.unwrap_or_default();
        let hash = r.action_digest.unwrap_or_default().hash;
        self.state
            .lock()
            .unwrap()
            .results
            .insert(hash, result.clone());
        Ok(Response::new(result))
    }
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ContentAddressableStorage for Fake {
    async fn find_missing_blobs(
        &self,
        request: Request<re::FindMissingBlobsRequest>,
    ) -> Result<Response<re::FindMissingBlobsResponse>, Status> {
        let r = request.into_inner();
        self.note("FindMissingBlobs", r.digest_function);
        let s = self.state.lock().unwrap();
        Ok(Response::new(re::FindMissingBlobsResponse {
            missing_blob_digests: r
                .blob_digests
                .into_iter()
                .filter(|d| !s.blobs.contains_key(&d.hash))
                .collect(),
        }))
    }

    async fn batch_update_blobs(
        &self,
        request: Request<re::BatchUpdateBlobsRequest>,
    ) -> Result<Response<re::BatchUpdateBlobsResponse>, Status> {
        let r = request.into_inner();
        if self
            .note("BatchUpdateBlobs", r.digest_function)
            .refuse_writes
        {
            return Err(Status::permission_denied("this token may only read"));
        }
        let mut responses = Vec::new();
        for blob in r.requests {
            let digest = blob.digest.unwrap_or_default();
            let code = match self.write(&digest.hash, blob.data) {
                Ok(()) => 0,
                Err(_) => tonic::Code::InvalidArgument as i32,
            };
            responses.push(re::batch_update_blobs_response::Response {
                digest: Some(digest),
                status: Some(bazel_remote_apis::google::rpc::Status {
                    code,
                    ..Default::default()
                }),
            });
        }
        Ok(Response::new(re::BatchUpdateBlobsResponse { responses }))
    }

    async fn batch_read_blobs(
        &self,
        request: Request<re::BatchReadBlobsRequest>,
    ) -> Result<Response<re::BatchReadBlobsResponse>, Status> {
        let r = request.into_inner();
        let faults = self.note("BatchReadBlobs", r.digest_function);
        let responses = r
            .digests
            .into_iter()
            .map(|d| {
                let data = self.read(&d.hash, &faults);
                re::batch_read_blobs_response::Response {
                    status: Some(bazel_remote_apis::google::rpc::Status {
                        code: if data.is_some() { 0 } else { 5 },
                        ..Default::default()
                    }),
                    digest: Some(d),
                    data: data.unwrap_or_default(),
                    ..Default::default()
                }
            })
            .collect();
        Ok(Response::new(re::BatchReadBlobsResponse { responses }))
    }

    type GetTreeStream = Stream<re::GetTreeResponse>;

    async fn get_tree(
        &self,
        _: Request<re::GetTreeRequest>,
    ) -> Result<Response<Self::GetTreeStream>, Status> {
        Err(Status::unimplemented("not used by flow"))
    }

    async fn split_blob(
        &self,
        _: Request<re::SplitBlobRequest>,
    ) -> Result<Response<re::SplitBlobResponse>, Status> {
        Err(Status::unimplemented("not used by flow"))
    }

    type GetChunkMappingStream = Stream<re::GetChunkMappingResponse>;

    async fn get_chunk_mapping(
        &self,
        _: Request<re::GetChunkMappingRequest>,
    ) -> Result<Response<Self::GetChunkMappingStream>, Status> {
        Err(Status::unimplemented("not used by flow"))
    }

    async fn splice_blob(
        &self,
        _: Request<re::SpliceBlobRequest>,
    ) -> Result<Response<re::SpliceBlobResponse>, Status> {
        Err(Status::unimplemented("not used by flow"))
    }

    async fn register_chunk_mapping(
        &self,
        _: Request<Streaming<re::RegisterChunkMappingRequest>>,
    ) -> Result<Response<re::RegisterChunkMappingResponse>, Status> {
        Err(Status::unimplemented("not used by flow"))
    }
}

/// The hash of a ByteStream resource `…/blobs/blake3/HASH/SIZE` (a write's has
/// `uploads/UUID/` before `blobs`); refused unless it names BLAKE3.
fn resource_hash(name: &str) -> Result<String, Status> {
    let parts: Vec<&str> = name.split('/').collect();
    let at = parts
        .iter()
        .position(|p| *p == "blobs")
        .ok_or_else(|| Status::invalid_argument(format!("resource `{name}`")))?;
    match &parts[at + 1..] {
        ["blake3", hash, _size] => Ok((*hash).to_owned()),
        _ => Err(Status::invalid_argument(format!(
            "resource `{name}` does not name a BLAKE3 blob"
        ))),
    }
}

#[tonic::async_trait]
impl bs::byte_stream_server::ByteStream for Fake {
    type ReadStream = Stream<bs::ReadResponse>;

    async fn read(
        &self,
        request: Request<bs::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let faults = self.note("ByteStream.Read", 0);
        let hash = resource_hash(&request.into_inner().resource_name)?;
        let data = self
            .read(&hash, &faults)
            .ok_or_else(|| Status::not_found("no such blob"))?;
        if faults.trickle_reads {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tokio::spawn(async move {
                for byte in data {
                    let piece = Ok(bs::ReadResponse { data: vec![byte] });
                    if tx.send(piece).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            return Ok(Response::new(Box::pin(stream)));
        }
        let chunks: Vec<Result<bs::ReadResponse, Status>> = data
            .chunks(64 << 10)
            .map(|c| Ok(bs::ReadResponse { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn write(
        &self,
        request: Request<Streaming<bs::WriteRequest>>,
    ) -> Result<Response<bs::WriteResponse>, Status> {
        if self.note("ByteStream.Write", 0).stall_writes {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let mut stream = request.into_inner();
        let (mut name, mut data, mut finished) = (String::new(), Vec::new(), false);
        while let Some(piece) = stream.message().await? {
            if name.is_empty() {
                name = piece.resource_name;
            }
            if piece.write_offset != data.len() as i64 {
                return Err(Status::invalid_argument("a write at the wrong offset"));
            }
            data.extend(piece.data);
            finished |= piece.finish_write;
        }
        if !finished {
            return Err(Status::invalid_argument("the write did not finish"));
        }
        let committed_size = data.len() as i64;
        self.write(&resource_hash(&name)?, data)?;
        Ok(Response::new(bs::WriteResponse { committed_size }))
    }

    async fn query_write_status(
        &self,
        _: Request<bs::QueryWriteStatusRequest>,
    ) -> Result<Response<bs::QueryWriteStatusResponse>, Status> {
        Err(Status::unimplemented("not used by flow"))
    }
}

/// The fake server, on 127.0.0.1, until dropped or stopped.
struct FakeServer {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// TLS and a token for the fake server.
#[derive(Default)]
struct Guard {
    /// The server's certificate and key (PEM).
    tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Calls without `authorization: Bearer TOKEN` are refused (UNAUTHENTICATED).
    token: Option<String>,
}

impl FakeServer {
    /// A server whose batch calls carry at most `batch_limit` bytes.
    fn start(batch_limit: i64) -> FakeServer {
        FakeServer::start_guarded(batch_limit, Guard::default())
    }

    fn start_guarded(batch_limit: i64, guard: Guard) -> FakeServer {
        let state = Arc::new(Mutex::new(State::default()));
        let fake = Fake {
            state: state.clone(),
            batch_limit,
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let tls = guard.tls.is_some();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let mut builder = tonic::transport::Server::builder();
                if let Some((cert, key)) = guard.tls {
                    let identity = tonic::transport::Identity::from_pem(cert, key);
                    builder = builder
                        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                        .unwrap();
                }
                let check = move |request: Request<()>| -> Result<Request<()>, Status> {
                    let Some(token) = &guard.token else {
                        return Ok(request);
                    };
                    let sent = request.metadata().get("authorization");
                    match sent.and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {token}")) {
                        true => Ok(request),
                        false => Err(Status::unauthenticated("no valid token")),
                    }
                };
                builder
                    .add_service(CapabilitiesServer::with_interceptor(
                        fake.clone(),
                        check.clone(),
                    ))
                    .add_service(ActionCacheServer::with_interceptor(
                        fake.clone(),
                        check.clone(),
                    ))
                    .add_service(ContentAddressableStorageServer::with_interceptor(
                        fake.clone(),
                        check.clone(),
                    ))
                    .add_service(bs::byte_stream_server::ByteStreamServer::with_interceptor(
                        fake, check,
                    ))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        async {
                            let _ = stopped.await;
                        },
                    )
                    .await
                    .unwrap();
            });
        });
        FakeServer {
            url: format!("{}://{addr}", if tls { "grpcs" } else { "grpc" }),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn faults(&self, faults: Faults) {
        self.state.lock().unwrap().faults = faults;
    }

    fn calls(&self) -> Vec<&'static str> {
        self.state.lock().unwrap().calls.clone()
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A file output of 300 kB (over the fake's 64 KiB batch limit: ByteStream), a small one, an
/// executable one and a directory.
const PIPELINE: &str = "task(name = \"a\", srcs = [\"in.txt\"], outs = [\"a.txt\", \"big.bin\"], cmd = \"tr a-z A-Z < in.txt > a.txt; head -c 300000 /dev/urandom > big.bin; echo made a\")\n\
task(name = \"b\", deps = [\":a\"], outs = [\"b.txt\", \"gen/\"], cmd = \"cat a.txt > b.txt; mkdir -p gen/sub gen/empty; cp b.txt gen/sub/b; printf '#!/bin/sh\\\\n' > gen/tool; chmod +x gen/tool\")\n";

fn checkout() -> Ws {
    Ws::new()
        .file("p/BUILD", PIPELINE)
        .file("p/in.txt", "hello\n")
}

const OUTPUTS: [&str; 5] = [
    "p/a.txt",
    "p/big.bin",
    "p/b.txt",
    "p/gen/sub/b",
    "p/gen/tool",
];

fn same_outputs(a: &Ws, b: &Ws) {
    for f in OUTPUTS {
        let read = |ws: &Ws| std::fs::read(ws.path().join("flow-out").join(f)).unwrap();
        assert!(read(a) == read(b), "{f} differs");
    }
}

/// The fake server holding what a first checkout uploaded, and that checkout.
fn uploaded() -> (Ws, FakeServer) {
    let first = checkout();
    let server = FakeServer::start(64 << 10);
    let run = first.run(&[
        "build",
        "--remote-cache",
        &server.url,
        "--remote-upload",
        "true",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("2 result(s) uploaded"),
        "{}",
        run.stderr
    );
    (first, server)
}

/// A server that offers BLAKE3 is spoken to in BLAKE3 only: the blobs it holds are named by
/// their blake3, large ones went both ways through ByteStream, and a second checkout restores
/// everything, byte-identical.
#[test]
fn the_blake3_path_against_a_server_that_offers_it() {
    let (first, server) = uploaded();
    {
        let s = server.state.lock().unwrap();
        let blake3 = re::digest_function::Value::Blake3 as i32;
        // 0: ByteStream calls name their function in the resource, which the fake checks.
        assert!(
            s.functions.iter().all(|f| [0, blake3].contains(f)),
            "{:?}",
            s.functions
        );
        let big = std::fs::read(first.path().join("flow-out/p/big.bin")).unwrap();
        assert!(s.blobs.contains_key(blake3::hash(&big).to_hex().as_str()));
    }
    assert!(server.calls().contains(&"ByteStream.Write"));
    let second = checkout();
    let run = second.run(&["build", "--remote-cache", &server.url]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("0 ran, 2 cached"), "{}", run.stdout);
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    assert!(server.calls().contains(&"ByteStream.Read"));
    same_outputs(&first, &second);
    assert!(second.path().join("flow-out/p/gen/empty").is_dir());
}

/// A result whose blobs are not what their digests say (flipped bytes through batch reads and
/// ByteStream, another blob's bytes), or that names `../../x`, is refused with a warning; the
/// action runs locally, its outputs are right, and nothing is written outside the output tree.
#[test]
fn a_lying_server_is_refused_and_the_build_is_local() {
    let (first, server) = uploaded();
    let cases = [
        (
            "corrupt",
            Faults {
                corrupt_reads: true,
                ..Faults::default()
            },
        ),
        (
            "lie",
            Faults {
                lie: true,
                ..Faults::default()
            },
        ),
        (
            "dotdot",
            Faults {
                rename_output: Some("../../x".into()),
                ..Faults::default()
            },
        ),
    ];
    for (name, faults) in cases {
        server.faults(faults);
        let second = checkout();
        let run = second.run(&["build", "--remote-cache", &server.url]);
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        assert!(
            run.stderr.contains("refused the remote result"),
            "{name}: {}",
            run.stderr
        );
        assert!(
            run.stdout.contains("[RAN] //p:a ("),
            "{name}: {}",
            run.stdout
        );
        for f in ["p/a.txt", "p/b.txt", "p/gen/sub/b"] {
            let read = |ws: &Ws| std::fs::read(ws.path().join("flow-out").join(f)).unwrap();
            assert_eq!(read(&first), read(&second), "{name}: {f}");
        }
        let outside = second.path().parent().unwrap();
        assert!(!outside.join("x").exists() && !second.path().join("x").exists());
        let verify = second.run(&["cache", "verify"]);
        assert_eq!(verify.code, 0, "{name}: {}", verify.stdout);
    }
}

/// A lookup slower than 3 s: one warning, the rest of the build is local and correct.
#[test]
fn a_slow_server_gives_one_warning_and_a_local_build() {
    let (first, server) = uploaded();
    server.faults(Faults {
        lookup_delay: Duration::from_secs(4),
        ..Faults::default()
    });
    let second = checkout();
    let run = second.run(&["build", "--remote-cache", &server.url]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr.matches("warning:").count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("to answer one lookup"),
        "{}",
        run.stderr
    );
    // The slow answer was a hit and is used; the next lookup is not made.
    assert_eq!(
        server
            .calls()
            .iter()
            .filter(|c| **c == "GetActionResult")
            .count(),
        3,
        "{:?}",
        server.calls()
    );
    same_outputs(&first, &second);
}

/// A call turned away for a moment (UNAVAILABLE) is made again, and the hit is used.
#[test]
fn a_call_turned_away_for_a_moment_is_made_again() {
    let (first, server) = uploaded();
    server.faults(Faults {
        turned_away: 2,
        ..Faults::default()
    });
    let second = checkout();
    let run = second.run(&["build", "--remote-cache", &server.url]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("0 ran, 2 cached"), "{}", run.stdout);
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    same_outputs(&first, &second);
}

/// The server goes away while the build runs (after the first action's lookup): one warning,
/// a correct local build, and the next build works without it.
#[test]
fn a_server_stopped_mid_build_gives_a_warning_and_a_correct_local_build() {
    let mut server = FakeServer::start(64 << 10);
    let marker = tempfile::tempdir().unwrap();
    let started = marker.path().join("a-started");
    let build = PIPELINE.replace(
        "tr a-z A-Z",
        &format!("touch {}; sleep 1; tr a-z A-Z", started.display()),
    );
    let ws = Ws::new()
        .file("p/BUILD", &build)
        .file("p/in.txt", "hello\n");
    let url = server.url.clone();
    let runner = std::thread::spawn(move || {
        let run = ws.run(&["build", "--remote-cache", &url, "--remote-upload", "true"]);
        (ws, run)
    });
    crate::support::wait_for_file(&started);
    server.stop();
    let (ws, run) = runner.join().unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr.matches("warning:").count(), 1, "{}", run.stderr);
    assert!(run.stdout.contains("2 ran"), "{}", run.stdout);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/p/b.txt")).unwrap(),
        "HELLO\n"
    );
}

/// `--remote-upload false`: the server is sent nothing (checked on the server).
#[test]
fn a_build_that_may_not_upload_sends_nothing() {
    let server = FakeServer::start(64 << 10);
    let ws = checkout();
    let run = ws.run(&[
        "build",
        "--remote-cache",
        &server.url,
        "--remote-upload",
        "false",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let s = server.state.lock().unwrap();
    assert!(s.blobs.is_empty() && s.results.is_empty());
    let writes = ["BatchUpdateBlobs", "ByteStream.Write", "UpdateActionResult"];
    assert!(!s.calls.iter().any(|c| writes.contains(c)), "{:?}", s.calls);
}

/// A CA, and a certificate it signed for `localhost` and 127.0.0.1, with its key (PEM), made
/// by `openssl` in `dir`: the CA's file path, the certificate and the key.
fn certificates(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>, Vec<u8>) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=flow test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    (dir.join("ca.pem"), read("server.pem"), read("server.key"))
}

/// TLS with a bearer token from a secret: `[remote]` names a CA file and the token's variable;
/// a first checkout uploads and a second restores everything over TLS, the server refusing any
/// call without the token. A build without the token is one warning and a local build. The
/// token is in no output, log or cache file.
#[test]
fn tls_with_a_bearer_token_from_a_secret() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path());
    let token = "tok-3f9a1c-never-printed";
    let server = FakeServer::start_guarded(
        64 << 10,
        Guard {
            tls: Some((cert, key)),
            token: Some(token.into()),
        },
    );
    let url = server.url.replace("127.0.0.1", "localhost");
    let config =
        format!("[remote]\nurl = \"{url}\"\nca_file = \"ca.pem\"\ntoken_env = \"CACHE_TOKEN\"\n");
    let checkout_with_config = || {
        let ws = checkout().file("flow.toml", &config);
        std::fs::copy(&ca, ws.path().join("ca.pem")).unwrap();
        ws
    };
    let env = [("CACHE_TOKEN", token)];
    let first = checkout_with_config();
    let one = first.run_env(first.path(), &["build", "--remote-upload", "true"], &env);
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert!(
        one.stderr.contains("2 result(s) uploaded"),
        "{}",
        one.stderr
    );
    let second = checkout_with_config();
    let two = second.run_env(second.path(), &["build"], &env);
    assert!(
        two.stdout.contains("0 ran, 2 cached"),
        "{}\n{}",
        two.stdout,
        two.stderr
    );
    same_outputs(&first, &second);
    // Without the token: turned away, one warning, a local build.
    let third = checkout_with_config();
    let three = third.run(&["build"]);
    assert_eq!(three.code, 0, "{}", three.stderr);
    assert_eq!(
        three.stderr.matches("warning:").count(),
        1,
        "{}",
        three.stderr
    );
    assert!(three.stderr.contains("no valid token"), "{}", three.stderr);
    assert!(three.stdout.contains("2 ran"), "{}", three.stdout);
    // The token is nowhere flow writes.
    for run in [&one, &two, &three] {
        assert!(!run.stdout.contains(token) && !run.stderr.contains(token));
    }
    let log = second.run_env(second.path(), &["log", "//p:a"], &env);
    assert!(!log.stdout.contains(token));
    for ws in [&first, &second] {
        for file in crate::support::files_under(ws.path()) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "{} holds the token",
                file.display()
            );
        }
    }
    // TLS really: a plain-text client gets nowhere.
    let plain = first.run(&["remote", "check", &server.url.replace("grpcs", "grpc")]);
    assert_eq!(plain.code, 2, "{}", plain.stdout);
}

/// A server that stops taking an upload (mid-stream, or after the last chunk) is given up on
/// after 10 s, not after the transfer's whole time limit: one warning, every action reported
/// as it ended, a correct build.
#[test]
fn a_server_that_stops_taking_an_upload_is_given_up_on() {
    let server = FakeServer::start(64 << 10);
    server.faults(Faults {
        stall_writes: true,
        ..Faults::default()
    });
    // 6 MB: more than the channel and the connection's window hold, so the chunks stop going
    // (its whole time limit would be 15 s); 300 kB: one chunk, then no answer.
    for (bytes, said) in [
        (6_000_000, &["stopped taking blob"][..]),
        (
            300_000,
            &[
                "did not answer after blob",
                "ByteStream.Write within its time limit",
            ][..],
        ),
    ] {
        let build = format!(
            "task(name = \"big\", outs = [\"big.bin\"], cmd = \"head -c {bytes} /dev/urandom > big.bin\")\n"
        );
        let ws = Ws::new().file("p/BUILD", &build);
        let started = std::time::Instant::now();
        let run = ws.run(&[
            "build",
            "--remote-cache",
            &server.url,
            "--remote-upload",
            "true",
        ]);
        let took = started.elapsed();
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            took < Duration::from_secs(14),
            "{bytes}: the build took {took:?}"
        );
        assert_eq!(run.stderr.matches("warning:").count(), 1, "{}", run.stderr);
        assert!(
            said.iter().any(|s| run.stderr.contains(s)),
            "{bytes}: {}",
            run.stderr
        );
        assert!(
            run.stderr
                .contains("the rest of this build does not use the remote cache"),
            "{}",
            run.stderr
        );
        assert!(run.stdout.contains("[RAN] //p:big ("), "{}", run.stdout);
        let out = ws.path().join("flow-out/p/big.bin");
        assert_eq!(std::fs::metadata(out).unwrap().len(), bytes);
    }
}

/// A server's words reach the screen without control characters: an error message holding
/// escape sequences, a bell and a line that fakes flow's summary stays one plain line.
#[test]
fn a_servers_words_cannot_move_the_cursor_or_fake_a_line() {
    let server = FakeServer::start(64 << 10);
    server.faults(Faults {
        lookup_error: Some(
            "boom\x1b[31mRED\x1b[0m\nflow: ok: 0 ran, all fine\x1b]0;PWNED\x07".into(),
        ),
        ..Faults::default()
    });
    let ws = checkout();
    let run = ws.run(&["build", "--remote-cache", &server.url]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        !run.stderr.contains(['\x1b', '\x07', '\r']),
        "{:?}",
        run.stderr
    );
    assert!(
        !run.stderr
            .lines()
            .any(|l| l.starts_with("flow: ok: 0 ran, all fine")),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.matches("warning:").count(), 1, "{}", run.stderr);
}

/// A server that sends a large blob a byte a second (never stopping for 10 s) is given up on
/// once it falls under 1 MiB/s after a call's time: one warning, a local build.
#[test]
fn a_server_that_trickles_a_blob_is_given_up_on() {
    let (first, server) = uploaded();
    server.faults(Faults {
        trickle_reads: true,
        ..Faults::default()
    });
    let second = checkout();
    let started = std::time::Instant::now();
    let run = second.run(&["build", "--remote-cache", &server.url]);
    let took = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(took < Duration::from_secs(20), "the build took {took:?}");
    assert_eq!(run.stderr.matches("warning:").count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("(less than 1 MiB/s)"), "{}", run.stderr);
    assert!(run.stdout.contains("[RAN] //p:a ("), "{}", run.stdout);
    for f in ["p/a.txt", "p/b.txt", "p/gen/sub/b"] {
        let read = |ws: &Ws| std::fs::read(ws.path().join("flow-out").join(f)).unwrap();
        assert_eq!(read(&first), read(&second), "{f}");
    }
}

/// A build that needs nothing from the remote cache (every action a local hit, nothing to
/// upload) never waits for it: a server that accepts connections and never answers costs it
/// nothing and says nothing.
#[test]
fn a_build_of_local_hits_never_waits_for_a_hung_server() {
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("grpc://{}", hung.local_addr().unwrap());
    let ws = checkout();
    ws.run(&["build"]).ok();
    std::fs::remove_dir_all(ws.path().join("flow-out")).unwrap();
    let started = std::time::Instant::now();
    let run = ws.run(&["build", "--remote-cache", &url, "--remote-upload", "true"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("0 ran, 2 cached"), "{}", run.stdout);
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the build took {took:?}");
    drop(hung);
}

/// What runs every time (`task(cache = False)`) is never uploaded: it is never reused.
#[test]
fn a_task_that_is_never_cached_is_never_uploaded() {
    let server = FakeServer::start(64 << 10);
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"every\", outs = [\"n.txt\"], cache = False, cmd = \"echo nc > n.txt\")\n",
    );
    let run = ws.run(&[
        "build",
        "--remote-cache",
        &server.url,
        "--remote-upload",
        "true",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("uploaded"), "{}", run.stderr);
    let calls = server.calls();
    assert!(!calls.contains(&"UpdateActionResult"), "{calls:?}");
    assert!(!calls.contains(&"GetActionResult"), "{calls:?}");
}

/// A write refused (a token that may only read) stops the uploads, not the reads: a hit looked
/// up after the refusal is still restored, and the refusal is said once.
#[test]
fn a_refused_write_stops_uploads_and_reads_go_on() {
    // `hit` waits for a task that runs every time (1 s) with the same output, so it is looked
    // up after `new`'s upload was refused.
    let build = "task(name = \"always\", outs = [\"s.txt\"], cache = False, cmd = \"sleep 1; echo same > s.txt\")\n\
                 task(name = \"hit\", deps = [\":always\"], outs = [\"h.txt\"], cmd = \"cat s.txt > h.txt\")\n\
                 task(name = \"new\", srcs = [\"new.txt\"], outs = [\"n.txt\"], cmd = \"cat new.txt > n.txt\")\n";
    let server = FakeServer::start(64 << 10);
    let first = Ws::new()
        .file("p/BUILD", build)
        .file("p/new.txt", "first\n");
    let one = first.run(&[
        "build",
        "--remote-cache",
        &server.url,
        "--remote-upload",
        "true",
    ]);
    assert!(
        one.stderr.contains("2 result(s) uploaded"),
        "{}",
        one.stderr
    );
    server.faults(Faults {
        refuse_writes: true,
        ..Faults::default()
    });
    let second = Ws::new()
        .file("p/BUILD", build)
        .file("p/new.txt", "second\n");
    let two = second.run(&[
        "build",
        "--remote-cache",
        &server.url,
        "--remote-upload",
        "true",
    ]);
    assert_eq!(two.code, 0, "{}", two.stderr);
    assert!(
        two.stdout.contains("[CACHED] //p:hit"),
        "{}\n{}",
        two.stdout,
        two.stderr
    );
    assert_eq!(two.stderr.matches("warning:").count(), 1, "{}", two.stderr);
    assert!(
        two.stderr
            .contains("this token may only read: nothing more is uploaded"),
        "{}",
        two.stderr
    );
}

/// The actions ready at once are looked up at once, not one after the other: with 100 ms a
/// lookup, the 24 dependents of one root, ready together once the root is restored, are asked
/// for many at a time (checked on the server), and all restored.
#[test]
fn ready_actions_are_looked_up_at_once() {
    let build: String = std::iter::once(
        "task(name = \"r\", outs = [\"r.txt\"], cmd = \"echo r > r.txt\")\n".to_owned(),
    )
    .chain((0..24).map(|i| {
        format!("task(name = \"t{i}\", deps = [\":r\"], outs = [\"t{i}.txt\"], cmd = \"echo {i} > t{i}.txt\")\n")
    }))
    .collect();
    let server = FakeServer::start(64 << 10);
    let first = Ws::new().file("p/BUILD", &build);
    let one = first.run(&[
        "build",
        "-j",
        "2",
        "--remote-cache",
        &server.url,
        "--remote-upload",
        "true",
    ]);
    assert!(
        one.stderr.contains("25 result(s) uploaded"),
        "{}",
        one.stderr
    );
    // All misses, most of them left waiting for a slot: each asked for once, no more.
    let asked = server
        .calls()
        .iter()
        .filter(|c| **c == "GetActionResult")
        .count();
    assert_eq!(asked, 25);
    server.faults(Faults {
        lookup_delay: Duration::from_millis(100),
        ..Faults::default()
    });
    server.state.lock().unwrap().lookups_most = 0;
    let second = Ws::new().file("p/BUILD", &build);
    let two = second.run(&["build", "-j", "2", "--remote-cache", &server.url]);
    assert!(
        two.stdout.contains("0 ran, 25 cached"),
        "{}\n{}",
        two.stdout,
        two.stderr
    );
    let most = server.state.lock().unwrap().lookups_most;
    assert!(most >= 8, "at most {most} lookups at once");
}

/// Ctrl-C while the remote cache is slow to answer a lookup ends the build at once (exit 130),
/// not when the lookup's time is up.
#[test]
fn ctrl_c_during_a_slow_lookup_ends_the_build_at_once() {
    let (_first, server) = uploaded();
    server.faults(Faults {
        lookup_delay: Duration::from_secs(8),
        ..Faults::default()
    });
    let second = checkout();
    let mut child = std::process::Command::new(crate::support::flow_bin())
        .current_dir(second.path())
        .args(["--color", "never", "build", "--remote-cache", &server.url])
        .env_remove("FLOW_CACHE_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Until the server has been asked.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.state.lock().unwrap().lookups_now == 0 {
        assert!(std::time::Instant::now() < deadline, "no lookup came");
        std::thread::sleep(Duration::from_millis(20));
    }
    let asked = std::time::Instant::now();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(130));
    assert!(took < Duration::from_secs(4), "Ctrl-C took {took:?}");
}

/// Small files and logs a server sends inline with a result are used (no read of their own)
/// and verified like any blob: flipped bytes inline are refused.
#[test]
fn blobs_sent_inline_are_used_and_verified() {
    let (first, server) = uploaded();
    server.faults(Faults {
        inline: true,
        ..Faults::default()
    });
    let before = server.calls().len();
    let second = checkout();
    let run = second.run(&["build", "--remote-cache", &server.url]);
    assert!(
        run.stdout.contains("0 ran, 2 cached"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    same_outputs(&first, &second);
    let log = second.run(&["log", "//p:a"]);
    assert!(log.stdout.contains("made a"), "{}", log.stdout);
    // //p:a's small file and log came inline: only big.bin was read (through ByteStream).
    let calls = server.calls()[before..].to_vec();
    assert!(calls.contains(&"ByteStream.Read"), "{calls:?}");
    server.faults(Faults {
        inline: true,
        corrupt_reads: true,
        ..Faults::default()
    });
    let third = checkout();
    let run = third.run(&["build", "--remote-cache", &server.url]);
    assert!(
        run.stderr.contains("refused the remote result"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("[RAN] //p:a ("), "{}", run.stdout);
}

/// A server that turns away calls beyond 3 at once (RESOURCE_EXHAUSTED) is asked fewer at a
/// time: every hit is still restored, without a warning.
#[test]
fn a_busy_server_is_asked_fewer_at_a_time() {
    let build: String = (0..24)
        .map(|i| {
            format!("task(name = \"t{i}\", outs = [\"t{i}.txt\"], cmd = \"echo {i} > t{i}.txt\")\n")
        })
        .collect();
    let server = FakeServer::start(64 << 10);
    let first = Ws::new().file("p/BUILD", &build);
    let one = first.run(&[
        "build",
        "--remote-cache",
        &server.url,
        "--remote-upload",
        "true",
    ]);
    assert!(
        one.stderr.contains("24 result(s) uploaded"),
        "{}",
        one.stderr
    );
    server.faults(Faults {
        lookup_delay: Duration::from_millis(50),
        busy_over: Some(3),
        ..Faults::default()
    });
    let second = Ws::new().file("p/BUILD", &build);
    let two = second.run(&["build", "--remote-cache", &server.url]);
    assert!(
        two.stdout.contains("0 ran, 24 cached"),
        "{}\n{}",
        two.stdout,
        two.stderr
    );
    assert!(!two.stderr.contains("warning"), "{}", two.stderr);
}

/// Lookups that never come back: the first to run out of time turns the remote off, and the
/// lookups still out are given up with it (not each waited for in turn).
#[test]
fn lookups_that_never_come_back_cost_one_time_limit() {
    let build: String = (0..24)
        .map(|i| {
            format!("task(name = \"t{i}\", outs = [\"t{i}.txt\"], cmd = \"echo {i} > t{i}.txt\")\n")
        })
        .collect();
    let server = FakeServer::start(64 << 10);
    server.faults(Faults {
        lookup_delay: Duration::from_secs(120),
        ..Faults::default()
    });
    let ws = Ws::new().file("p/BUILD", &build);
    let started = std::time::Instant::now();
    let run = ws.run(&["build", "--remote-cache", &server.url]);
    let took = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("24 ran"), "{}", run.stdout);
    assert_eq!(run.stderr.matches("warning:").count(), 1, "{}", run.stderr);
    assert!(took < Duration::from_secs(18), "the build took {took:?}");
}
