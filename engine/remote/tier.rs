//! The remote tier of the action cache: what the rebuilder asks after a local miss, and what a
//! build uploads after its successful runs (docs/remote.md). What a remote result must be to be
//! used, and how results go both ways, is in `results.rs`.
//!
//! **Uploads** start as soon as a run's result is stored, on the tier's own threads (at most
//! [`UPLOADS_AT_ONCE`] at a time), while the build goes on; the build waits for them at its end
//! ([`RemoteTier::finish_uploads`]), or abandons them on Ctrl-C.
//!
//! **Failures.** The first failure to reach the server is warned about once, and the remote is
//! not asked again during the build: a build with a remote cache down is a local build.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use flow_cache::{ActionResult, Cache, Digest};

use super::bytestream::local;
use super::results::{fetch_remote, upload_one, Refusal};
use super::{Remote, RemoteError};

/// A lookup slower than this makes the remote cache not worth asking for the rest of a build:
/// it is there to save time. (Only the lookup: reading a large hit's blobs takes the time
/// their size takes.)
const SLOW: std::time::Duration = std::time::Duration::from_secs(3);

/// Lookups made at the same time (`fetch_many`).
pub const LOOKUPS_AT_ONCE: usize = 16;

/// Results uploaded at the same time.
pub const UPLOADS_AT_ONCE: usize = 4;

/// What became of a build's uploads.
pub struct Uploads {
    pub uploaded: usize,
    /// Given up because the server failed meanwhile.
    pub abandoned: usize,
}

/// The remote cache of a build.
pub struct RemoteTier {
    shared: Arc<Shared>,
    /// Its own runtime (the channel's tasks and the uploads run there); `None` only while
    /// dropping.
    runtime: Option<tokio::runtime::Runtime>,
    /// The uploads started and not yet waited for.
    uploads: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct Shared {
    target: super::Target,
    /// The connection, made when first needed (a build whose actions are all local hits and
    /// that uploads nothing never waits for a server); `None` when it could not be made.
    remote: tokio::sync::OnceCell<Option<Remote>>,
    /// Whether this build writes to it (`--remote-upload`).
    upload: bool,
    /// The remote failed once: not asked again this build.
    down: AtomicBool,
    /// Keys `fetch_many` asked for and got no usable result: not asked again.
    missing: Mutex<std::collections::HashSet<Digest>>,
    /// The server takes no updates (its capabilities say so, or it refused one): no more
    /// uploads, said once; reads go on.
    read_only_said: AtomicBool,
    uploaded: AtomicUsize,
    permits: tokio::sync::Semaphore,
    warn: Box<dyn Fn(&str) + Send + Sync>,
}

impl Shared {
    /// The connection, made on first use; `None` (warned once) when the server cannot be used.
    async fn remote(&self) -> Option<&Remote> {
        if self.down.load(Ordering::SeqCst) {
            return None;
        }
        let connected = self.remote.get_or_init(|| async {
            match Remote::connect(&self.target).await {
                Ok(remote) => Some(remote),
                Err(e) => {
                    if !self.down.swap(true, Ordering::SeqCst) {
                        (self.warn)(&format!("{e}; building without the remote cache"));
                    }
                    None
                }
            }
        });
        connected.await.as_ref()
    }

    /// What a lookup of `key` came to: a verified result, stored in the local action cache;
    /// or nothing, with a warning when the result was refused or the server failed or was
    /// slower than [`SLOW`] (then not asked again).
    fn settle(
        &self,
        key: &Digest,
        answer: Result<Option<ActionResult>, Refusal>,
        took: std::time::Duration,
        cache: &Cache,
    ) -> Option<ActionResult> {
        if took > SLOW && !self.down.swap(true, Ordering::SeqCst) {
            (self.warn)(&format!(
                "the remote cache took {:.1} s to answer one lookup; the rest of this build \
                 does not use it",
                took.as_secs_f64()
            ));
        }
        match answer {
            Ok(Some(result)) => match cache.put_action(key, &result) {
                Ok(()) => Some(result),
                Err(e) => {
                    (self.warn)(&format!(
                        "cannot store the remote result for key {key}: {e}"
                    ));
                    None
                }
            },
            Ok(None) => None,
            Err(Refusal::Remote(e)) => {
                self.failed(&e);
                None
            }
            Err(Refusal::Bad(why)) => {
                (self.warn)(&format!("refused the remote result for key {key}: {why}"));
                None
            }
        }
    }

    fn failed(&self, e: &RemoteError) {
        if !self.down.swap(true, Ordering::SeqCst) {
            (self.warn)(&format!(
                "{e}; the rest of this build does not use the remote cache"
            ));
        }
    }
}

impl RemoteTier {
    /// The remote cache at `target`, connected to when first needed (then a server that
    /// cannot be used is one warning); `None` only when its threads cannot be started.
    pub fn connect(
        target: &super::Target,
        upload: bool,
        warn: Box<dyn Fn(&str) + Send + Sync>,
    ) -> Option<RemoteTier> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flow-remote")
            .enable_all()
            .build()
            .ok()?;
        Some(RemoteTier {
            shared: Arc::new(Shared {
                target: target.clone(),
                remote: tokio::sync::OnceCell::new(),
                upload,
                down: AtomicBool::new(false),
                missing: Mutex::new(std::collections::HashSet::new()),
                read_only_said: AtomicBool::new(false),
                uploaded: AtomicUsize::new(0),
                permits: tokio::sync::Semaphore::new(UPLOADS_AT_ONCE),
                // A server's words (an error's message, a path it sent) are shown without the
                // control characters that would move the cursor or fake a line.
                warn: Box::new(move |w| warn(&crate::executor::printable(w))),
            }),
            runtime: Some(runtime),
            uploads: Mutex::new(Vec::new()),
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the tier")
    }

    /// Whether this build writes to the remote cache.
    pub fn uploads(&self) -> bool {
        self.shared.upload
    }

    /// Runs `f` on the tier's own runtime, given up when SIGINT, SIGTERM or SIGHUP arrives
    /// meanwhile (`None`; the runner sees the same signal and stops the build): a lookup or a
    /// large read never holds Ctrl-C back. The remote is not asked again after that.
    fn call_or_stop<T: Send>(&self, f: impl Future<Output = T> + Send) -> Option<T> {
        let stopped = self.call(async {
            let Some(mut stop) = crate::interrupts::Interrupts::register() else {
                return Some(f.await);
            };
            tokio::select! {
                answer = f => Some(answer),
                _ = stop.recv() => None,
            }
        });
        if stopped.is_none() {
            self.shared.down.store(true, Ordering::SeqCst);
        }
        stopped
    }

    /// Runs `f` on the tier's own runtime, from async code (the runner) or not.
    fn call<T: Send>(&self, f: impl Future<Output = T> + Send) -> T {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.runtime().block_on(f))
            }
            Ok(_) => std::thread::scope(|s| {
                s.spawn(|| self.runtime().block_on(f))
                    .join()
                    .expect("a remote call panicked")
            }),
            Err(_) => self.runtime().block_on(f),
        }
    }

    /// After a local miss: the remote result for `key`, checked against `declared` (the
    /// action's outputs; a directory's ends with `/`), its blobs verified and stored locally,
    /// the result stored in the local action cache. `None`: a miss, a result refused (warned),
    /// or the remote down.
    pub fn fetch(&self, key: &Digest, declared: &[String], cache: &Cache) -> Option<ActionResult> {
        let shared = &self.shared;
        if shared.down.load(Ordering::SeqCst)
            || shared.missing.lock().expect("missing").contains(key)
        {
            return None;
        }
        let (answer, took) = self.call_or_stop(async {
            let mut took = std::time::Duration::ZERO;
            let answer = match shared.remote().await {
                Some(remote) => fetch_remote(remote, key, declared, cache, &mut took).await,
                None => Ok(None),
            };
            (answer, took)
        })?;
        shared.settle(key, answer, took, cache)
    }

    /// Asks for several results at once (at most [`LOOKUPS_AT_ONCE`] at a time), each as
    /// [`RemoteTier::fetch`] would: what is verified goes to the local cache, keys the server
    /// does not hold are remembered. Returns when all are answered.
    pub fn fetch_many(&self, wanted: Vec<(Digest, Vec<String>)>, cache: &Arc<Cache>) {
        let shared = &self.shared;
        if shared.down.load(Ordering::SeqCst) {
            return;
        }
        self.call_or_stop(async {
            let permits = Arc::new(tokio::sync::Semaphore::new(LOOKUPS_AT_ONCE));
            let mut lookups = tokio::task::JoinSet::new();
            for (key, declared) in wanted {
                if shared.missing.lock().expect("missing").contains(&key) {
                    continue;
                }
                let (shared, cache, permits) =
                    (self.shared.clone(), cache.clone(), permits.clone());
                lookups.spawn(async move {
                    let Ok(_permit) = permits.acquire().await else {
                        return;
                    };
                    let Some(remote) = shared.remote().await else {
                        return;
                    };
                    if shared.down.load(Ordering::SeqCst) {
                        return;
                    }
                    let mut took = std::time::Duration::ZERO;
                    let answer = fetch_remote(remote, &key, &declared, &cache, &mut took).await;
                    // A miss or a refusal (warned once, here) is not asked about again.
                    if shared.settle(&key, answer, took, &cache).is_none() {
                        shared.missing.lock().expect("missing").insert(key);
                    }
                });
            }
            while lookups.join_next().await.is_some() {
                // The server failed: the lookups still out are not waited for.
                if shared.down.load(Ordering::SeqCst) {
                    lookups.abort_all();
                }
            }
        });
    }

    /// A successful run stored locally under `key`: its upload starts now, in the background.
    pub fn queue(&self, key: Digest, cache: &Arc<Cache>) {
        let shared = &self.shared;
        if !shared.upload
            || shared.down.load(Ordering::SeqCst)
            || shared.read_only_said.load(Ordering::SeqCst)
        {
            return;
        }
        let (shared, cache) = (self.shared.clone(), cache.clone());
        let upload = self.runtime().spawn(async move {
            let Ok(_permit) = shared.permits.acquire().await else {
                return;
            };
            let Some(remote) = shared.remote().await else {
                return;
            };
            if !remote.capabilities.update_enabled {
                if !shared.read_only_said.swap(true, Ordering::SeqCst) {
                    (shared.warn)(&format!(
                        "the remote cache at {} takes no updates (read only): nothing is uploaded",
                        remote.url
                    ));
                }
                return;
            }
            let result = match cache.get_actions(&[key]) {
                Ok(mut found) => match found.remove(&key) {
                    Some(r) => r,
                    None => return, // removed meanwhile (`gc`): nothing to share
                },
                Err(e) => return shared.failed(&local(e)),
            };
            match upload_one(remote, &key, &result, &cache).await {
                Ok(()) => {
                    shared.uploaded.fetch_add(1, Ordering::SeqCst);
                }
                // A write refused (a token that may only read): no more uploads, reads go on.
                Err(e @ RemoteError::Refused { .. }) => {
                    if !shared.read_only_said.swap(true, Ordering::SeqCst) {
                        (shared.warn)(&format!("{e}: nothing more is uploaded"));
                    }
                }
                Err(e) => shared.failed(&e),
            }
        });
        self.uploads.lock().expect("uploads").push(upload);
    }

    /// Waits for the uploads started so far; how many results were uploaded since the last
    /// call. (Each call in them has its time limit, so this ends.) Once the remote has failed,
    /// the uploads still running are abandoned rather than waited for. The uploads stay listed
    /// until they end, so that [`RemoteTier::abandon_uploads`] finds them if this wait is
    /// given up (Ctrl-C).
    pub async fn finish_uploads(&self) -> Uploads {
        let mut abandoned = 0;
        loop {
            {
                let mut uploads = self.uploads.lock().expect("uploads");
                uploads.retain(|u| !u.is_finished());
                if uploads.is_empty() {
                    break;
                }
                if self.shared.down.load(Ordering::SeqCst) {
                    abandoned = uploads.len();
                    for u in uploads.drain(..) {
                        u.abort();
                    }
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Uploads {
            uploaded: self.shared.uploaded.swap(0, Ordering::SeqCst),
            abandoned,
        }
    }

    /// Abandons the uploads not yet finished (Ctrl-C): what a server got is whole blobs and
    /// whole results, never a result before its blobs.
    pub fn abandon_uploads(&self) -> usize {
        let started = std::mem::take(&mut *self.uploads.lock().expect("uploads"));
        let unfinished = started.iter().filter(|u| !u.is_finished()).count();
        for upload in started {
            upload.abort();
        }
        unfinished
    }
}

impl Drop for RemoteTier {
    /// A runtime may not be dropped inside another one (the tier ends with `flow watch`'s):
    /// shut it down without waiting.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
