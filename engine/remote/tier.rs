//! The remote tier of the action cache: what the rebuilder asks after a local miss, and what a
//! build uploads after its successful runs (docs/remote.md).
//!
//! **The mapping.** flow's action key (blake3) names a REAPI `Action` whose `Command` has the
//! arguments `["flow-action", KEY]` and whose input root is the empty `Directory`: the Action's
//! digest, in the server's digest function, is the action cache key. The three small blobs are
//! uploaded with the result, so a server that checks that an action's parts exist finds them.
//! A result is its output files and directories (package-relative paths, as declared; a
//! directory as a REAPI `Tree`, `tree.rs`), its exit code (0: only successes are shared) and its
//! stdout and stderr blobs.
//!
//! **What is refused.** A remote result is used only when every output path is relative, stays
//! below the package (`check_relative_path`) and is exactly one of the action's declared
//! outputs of its kind (file or directory), every declared output is there, it has no symbolic
//! links, every tree checks out (`tree.rs`) and every blob read hashes to its digest; then its
//! blobs are in the local CAS and the result goes to the local action cache, and the rebuilder
//! restores it like a local hit. Anything else is a miss, with a warning.
//!
//! **Uploads** start as soon as a run's result is stored, on the tier's own threads (at most
//! [`UPLOADS_AT_ONCE`] at a time), while the build goes on; the build waits for them at its end
//! ([`RemoteTier::finish_uploads`]), or abandons them on Ctrl-C.
//!
//! **Failures.** The first failure to reach the server is warned about once, and the remote is
//! not asked again during the build: a build with a remote cache down is a local build.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use flow_cache::{
    check_relative_path, ActionResult, Cache, Digest, OutputEntry, OutputKind, TreeEntry,
    TreeEntryKind,
};
use prost::Message;
use re::action_cache_client::ActionCacheClient;

use super::blobs::LocalBlob;
use super::bytestream::local;
use super::tree::{from_tree, to_tree, RemoteEntry};
use super::{HashFunction, Remote, RemoteError};

/// The action digest of flow key `key`, and the blobs that make the Action.
pub fn action_of(function: HashFunction, key: &Digest) -> (re::Digest, Vec<Vec<u8>>) {
    let command = re::Command {
        arguments: vec!["flow-action".to_owned(), key.to_string()],
        ..Default::default()
    }
    .encode_to_vec();
    let root = re::Directory::default().encode_to_vec();
    let action = re::Action {
        command_digest: Some(function.digest(&command)),
        input_root_digest: Some(function.digest(&root)),
        ..Default::default()
    }
    .encode_to_vec();
    (function.digest(&action), vec![action, command, root])
}

/// A lookup slower than this makes the remote cache not worth asking for the rest of a build:
/// it is there to save time. (Only the lookup: reading a large hit's blobs takes the time
/// their size takes.)
const SLOW: std::time::Duration = std::time::Duration::from_secs(3);

/// Results uploaded at the same time.
pub const UPLOADS_AT_ONCE: usize = 4;

/// The largest `Tree` message flow reads (a tree of about a million files).
const MAX_TREE_BYTES: i64 = 256 << 20;

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
    remote: Remote,
    /// Whether this build writes to it (`--remote-upload`).
    upload: bool,
    /// The remote failed once: not asked again this build.
    down: AtomicBool,
    /// The server takes no updates: said once.
    read_only_said: AtomicBool,
    uploaded: AtomicUsize,
    permits: tokio::sync::Semaphore,
    warn: Box<dyn Fn(&str) + Send + Sync>,
}

impl Shared {
    fn failed(&self, e: &RemoteError) {
        if !self.down.swap(true, Ordering::SeqCst) {
            (self.warn)(&format!(
                "{e}; the rest of this build does not use the remote cache"
            ));
        }
    }
}

impl RemoteTier {
    /// Connects; `None` (warned) when the server cannot be used.
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
        // On a thread of its own: the caller may be inside another runtime (`flow watch`).
        let connected = std::thread::scope(|s| {
            s.spawn(|| runtime.block_on(Remote::connect(target)))
                .join()
                .expect("connecting to the remote cache panicked")
        });
        match connected {
            Ok(remote) => Some(RemoteTier {
                shared: Arc::new(Shared {
                    remote,
                    upload,
                    down: AtomicBool::new(false),
                    read_only_said: AtomicBool::new(false),
                    uploaded: AtomicUsize::new(0),
                    permits: tokio::sync::Semaphore::new(UPLOADS_AT_ONCE),
                    warn,
                }),
                runtime: Some(runtime),
                uploads: Mutex::new(Vec::new()),
            }),
            Err(e) => {
                warn(&format!("{e}; building without the remote cache"));
                // Not dropped here: this thread may be inside another runtime.
                runtime.shutdown_background();
                None
            }
        }
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
        if shared.down.load(Ordering::SeqCst) {
            return None;
        }
        let mut took = std::time::Duration::ZERO;
        let answer = self.call(fetch_remote(
            &shared.remote,
            key,
            declared,
            cache,
            &mut took,
        ));
        if took > SLOW && !shared.down.swap(true, Ordering::SeqCst) {
            (shared.warn)(&format!(
                "the remote cache took {:.1} s to answer one lookup; the rest of this build \
                 does not use it",
                took.as_secs_f64()
            ));
        }
        match answer {
            Ok(Some(result)) => match cache.put_action(key, &result) {
                Ok(()) => Some(result),
                Err(e) => {
                    (shared.warn)(&format!(
                        "cannot store the remote result for key {key}: {e}"
                    ));
                    None
                }
            },
            Ok(None) => None,
            Err(Refusal::Remote(e)) => {
                shared.failed(&e);
                None
            }
            Err(Refusal::Bad(why)) => {
                (shared.warn)(&format!("refused the remote result for key {key}: {why}"));
                None
            }
        }
    }

    /// A successful run stored locally under `key`: its upload starts now, in the background.
    pub fn queue(&self, key: Digest, cache: &Arc<Cache>) {
        let shared = &self.shared;
        if !shared.upload || shared.down.load(Ordering::SeqCst) {
            return;
        }
        if !shared.remote.capabilities.update_enabled {
            if !shared.read_only_said.swap(true, Ordering::SeqCst) {
                (shared.warn)(&format!(
                    "the remote cache at {} takes no updates (read only): nothing is uploaded",
                    shared.remote.url
                ));
            }
            return;
        }
        let (shared, cache) = (self.shared.clone(), cache.clone());
        let upload = self.runtime().spawn(async move {
            let Ok(_permit) = shared.permits.acquire().await else {
                return;
            };
            if shared.down.load(Ordering::SeqCst) {
                return;
            }
            let result = match cache.get_actions(&[key]) {
                Ok(mut found) => match found.remove(&key) {
                    Some(r) => r,
                    None => return, // removed meanwhile (`gc`): nothing to share
                },
                Err(e) => return shared.failed(&local(e)),
            };
            match upload_one(&shared.remote, &key, &result, &cache).await {
                Ok(()) => {
                    shared.uploaded.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => shared.failed(&e),
            }
        });
        self.uploads.lock().expect("uploads").push(upload);
    }

    /// Waits for the uploads started so far; how many results were uploaded since the last
    /// call. (Each call in them has its time limit, so this ends.)
    pub async fn finish_uploads(&self) -> usize {
        let started = std::mem::take(&mut *self.uploads.lock().expect("uploads"));
        for upload in started {
            let _ = upload.await;
        }
        self.shared.uploaded.swap(0, Ordering::SeqCst)
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

enum Refusal {
    Remote(RemoteError),
    Bad(String),
}

impl From<RemoteError> for Refusal {
    /// A blob that lies or is missing makes the result unusable; any other error is the
    /// server's or the network's.
    fn from(e: RemoteError) -> Refusal {
        match e {
            e @ (RemoteError::Corrupt { .. } | RemoteError::Missing { .. }) => {
                Refusal::Bad(e.to_string())
            }
            e => Refusal::Remote(e),
        }
    }
}

/// The remote result for `key`: checked, its blobs read into the local CAS (verified), as a
/// local result. `None`: the server has none. `took`: the time the lookup itself took.
async fn fetch_remote(
    remote: &Remote,
    key: &Digest,
    declared: &[String],
    cache: &Cache,
    took: &mut std::time::Duration,
) -> Result<Option<ActionResult>, Refusal> {
    let asked = std::time::Instant::now();
    let function = remote.function();
    let (action, _) = action_of(function, key);
    let request = re::GetActionResultRequest {
        instance_name: remote.instance.clone(),
        action_digest: Some(action),
        digest_function: function.value() as i32,
        ..Default::default()
    };
    let answer = remote
        .retrying("GetActionResult", || {
            let mut client = ActionCacheClient::new(remote.channel.clone());
            let request = remote.request(request.clone());
            async move { client.get_action_result(request).await }
        })
        .await;
    *took = asked.elapsed();
    let result = match answer {
        Ok(r) => r.into_inner(),
        Err(RemoteError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Refusal::Remote(e)),
    };
    check_result(&result, declared).map_err(Refusal::Bad)?;
    // Trees first: their files join the files' blobs in one fetch.
    let mut trees = Vec::new();
    for dir in &result.output_directories {
        let digest = dir.tree_digest.clone().expect("checked");
        if digest.size_bytes > MAX_TREE_BYTES {
            return Err(Refusal::Bad(format!(
                "the tree of `{}` has {} bytes",
                dir.path, digest.size_bytes
            )));
        }
        let local_digest = remote.fetch_blobs(cache, &[digest]).await?[0];
        let bytes = cache.cas().read_verified(&local_digest).map_err(local)?;
        let tree = re::Tree::decode(bytes.as_slice())
            .map_err(|e| Refusal::Bad(format!("the tree of `{}`: {e}", dir.path)))?;
        let entries = from_tree(function, &tree)
            .map_err(|e| Refusal::Bad(format!("the tree of `{}`: {e}", dir.path)))?;
        trees.push((dir.path.clone(), entries));
    }
    let mut wanted: Vec<re::Digest> = result
        .output_files
        .iter()
        .filter_map(|f| f.digest.clone())
        .collect();
    for (_, entries) in &trees {
        wanted.extend(entries.iter().filter_map(|e| match e {
            RemoteEntry::File { digest, .. } => Some(digest.clone()),
            _ => None,
        }));
    }
    wanted.extend(result.stdout_digest.clone());
    wanted.extend(result.stderr_digest.clone());
    let mut fetched = remote.fetch_blobs(cache, &wanted).await?.into_iter();
    let mut next = || fetched.next().expect("one local digest per blob asked for");
    let mut outputs = Vec::new();
    for f in &result.output_files {
        outputs.push(OutputEntry {
            path: f.path.clone(),
            kind: OutputKind::File {
                digest: next(),
                size: f.digest.as_ref().map_or(0, |d| d.size_bytes as u64),
                executable: f.is_executable,
            },
        });
    }
    for (path, entries) in trees {
        let entries: Vec<TreeEntry> = entries
            .into_iter()
            .map(|e| match e {
                RemoteEntry::File {
                    path,
                    digest,
                    executable,
                } => TreeEntry {
                    path,
                    kind: TreeEntryKind::File {
                        digest: next(),
                        size: digest.size_bytes as u64,
                        executable,
                    },
                },
                RemoteEntry::Symlink { path, target } => TreeEntry {
                    path,
                    kind: TreeEntryKind::Symlink { target },
                },
                RemoteEntry::EmptyDir { path } => TreeEntry {
                    path,
                    kind: TreeEntryKind::Dir,
                },
            })
            .collect();
        let (digest, size) = cache
            .cas()
            .put_manifest(entries)
            .map_err(|e| Refusal::Bad(format!("the tree of `{path}`: {e}")))?;
        outputs.push(OutputEntry {
            path,
            kind: OutputKind::Tree { digest, size },
        });
    }
    // In the order the action declares them, as a local run stores them.
    let position = |path: &str| {
        declared
            .iter()
            .position(|d| d.trim_end_matches('/') == path)
            .unwrap_or(usize::MAX)
    };
    outputs.sort_by_key(|o| position(&o.path));
    let stdout = result.stdout_digest.as_ref().map(|_| next());
    let stderr = result.stderr_digest.as_ref().map(|_| next());
    Ok(Some(ActionResult {
        exit_code: 0,
        outputs,
        stdout,
        stderr,
        duration_ms: 0,
    }))
}

/// Uploads the local result `result` of `key`: the blobs the server is missing, then the
/// result (never a result before its blobs).
async fn upload_one(
    remote: &Remote,
    key: &Digest,
    result: &ActionResult,
    cache: &Arc<Cache>,
) -> Result<(), RemoteError> {
    let function = remote.function();
    // Every local blob the result needs: outputs' files (a tree's too), logs.
    let mut blobs: Vec<LocalBlob> = Vec::new();
    let mut trees = Vec::new();
    for out in &result.outputs {
        match &out.kind {
            OutputKind::File { digest, size, .. } => blobs.push(LocalBlob {
                digest: *digest,
                size: *size,
            }),
            OutputKind::Tree { digest, .. } => {
                let entries = cache.cas().tree_entries(digest).map_err(local)?;
                for e in &entries {
                    if let TreeEntryKind::File { digest, size, .. } = e.kind {
                        blobs.push(LocalBlob { digest, size });
                    }
                }
                trees.push((out.path.clone(), entries));
            }
        }
    }
    for log in [&result.stdout, &result.stderr].into_iter().flatten() {
        let size = std::fs::metadata(cache.cas().path_of(log))
            .map_err(|e| RemoteError::Local(format!("the log blob {log}: {e}")))?;
        blobs.push(LocalBlob {
            digest: *log,
            size: size.len(),
        });
    }
    let digests = remote.remote_digests(cache, &blobs)?;
    let remote_of: std::collections::HashMap<Digest, re::Digest> = blobs
        .iter()
        .zip(&digests)
        .map(|(b, d)| (b.digest, d.clone()))
        .collect();
    let mut pairs: Vec<(LocalBlob, re::Digest)> =
        blobs.iter().copied().zip(digests.iter().cloned()).collect();
    // The trees and the Action's parts are small messages made here: stored locally first, so
    // they go the same way as every other blob.
    let mut directories = Vec::new();
    for (path, entries) in &trees {
        let tree = to_tree(function, entries, |d| remote_of[d].clone()).encode_to_vec();
        directories.push(re::OutputDirectory {
            path: path.clone(),
            tree_digest: Some(function.digest(&tree)),
            ..Default::default()
        });
        pairs.push(made_here(cache, function, &tree)?);
    }
    let (action, parts) = action_of(function, key);
    for part in &parts {
        pairs.push(made_here(cache, function, part)?);
    }
    remote.send_blobs(cache, &pairs).await?;
    let mut files = Vec::new();
    for out in &result.outputs {
        if let OutputKind::File {
            digest, executable, ..
        } = &out.kind
        {
            files.push(re::OutputFile {
                path: out.path.clone(),
                digest: Some(remote_of[digest].clone()),
                is_executable: *executable,
                ..Default::default()
            });
        }
    }
    let log = |d: &Option<Digest>| d.as_ref().map(|d| remote_of[d].clone());
    let request = re::UpdateActionResultRequest {
        instance_name: remote.instance.clone(),
        action_digest: Some(action),
        action_result: Some(re::ActionResult {
            output_files: files,
            output_directories: directories,
            exit_code: 0,
            stdout_digest: log(&result.stdout),
            stderr_digest: log(&result.stderr),
            ..Default::default()
        }),
        digest_function: function.value() as i32,
        ..Default::default()
    };
    remote
        .retrying("UpdateActionResult", || {
            let mut client = ActionCacheClient::new(remote.channel.clone());
            let request = remote.request(request.clone());
            async move { client.update_action_result(request).await }
        })
        .await?;
    Ok(())
}

/// A message made here (a tree, an Action's part), stored in the local CAS to be sent like
/// any blob: the local blob and its remote digest.
fn made_here(
    cache: &Cache,
    function: HashFunction,
    bytes: &[u8],
) -> Result<(LocalBlob, re::Digest), RemoteError> {
    let digest = cache.cas().put_bytes(bytes).map_err(local)?;
    Ok((
        LocalBlob {
            digest,
            size: bytes.len() as u64,
        },
        function.digest(bytes),
    ))
}

/// A remote result flow may use for an action with the outputs `declared` (a directory's ends
/// with `/`): see the module docs. (The deprecated symlink fields are checked too: older
/// servers still fill them.)
#[allow(deprecated)]
pub fn check_result(result: &re::ActionResult, declared: &[String]) -> Result<(), String> {
    if result.exit_code != 0 {
        return Err(format!("exit code {}", result.exit_code));
    }
    if !result.output_symlinks.is_empty()
        || !result.output_file_symlinks.is_empty()
        || !result.output_directory_symlinks.is_empty()
    {
        return Err("it has symbolic links".into());
    }
    let files: BTreeSet<&str> = declared
        .iter()
        .filter(|d| !d.ends_with('/'))
        .map(String::as_str)
        .collect();
    let dirs: BTreeSet<&str> = declared
        .iter()
        .filter_map(|d| d.strip_suffix('/'))
        .collect();
    let mut seen = BTreeSet::new();
    let outputs = result
        .output_files
        .iter()
        .map(|f| (&f.path, f.digest.is_some(), &files, "file"))
        .chain(
            result
                .output_directories
                .iter()
                .map(|d| (&d.path, d.tree_digest.is_some(), &dirs, "directory")),
        );
    for (path, has_digest, of_kind, kind) in outputs {
        check_relative_path(path).map_err(|e| format!("output `{path}`: {e}"))?;
        if !of_kind.contains(path.as_str()) {
            return Err(format!(
                "output `{path}` is not a {kind} the action declares"
            ));
        }
        if !has_digest || !seen.insert(path.as_str()) {
            return Err(format!("output `{path}` has no digest or comes twice"));
        }
    }
    if seen.len() != declared.len() {
        return Err("it lacks declared outputs".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> re::OutputFile {
        re::OutputFile {
            path: path.to_owned(),
            digest: Some(HashFunction::Sha256.digest(b"x")),
            ..Default::default()
        }
    }

    fn result(paths: &[&str]) -> re::ActionResult {
        re::ActionResult {
            output_files: paths.iter().map(|p| file(p)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn results_that_could_escape_or_lie_are_refused() {
        let declared = vec!["out/a.txt".to_owned(), "b.txt".to_owned()];
        assert_eq!(
            check_result(&result(&["out/a.txt", "b.txt"]), &declared),
            Ok(())
        );
        for (paths, why) in [
            (&["../../x", "b.txt"][..], "output `../../x`"),
            (&["/etc/passwd", "b.txt"][..], "output `/etc/passwd`"),
            (&["out/../b.txt", "out/a.txt"][..], "output `out/../b.txt`"),
            (
                &["out/a.txt", "c.txt"][..],
                "`c.txt` is not a file the action declares",
            ),
            (&["out/a.txt"][..], "lacks declared outputs"),
            (&["out/a.txt", "out/a.txt"][..], "comes twice"),
        ] {
            let e = check_result(&result(paths), &declared).unwrap_err();
            assert!(e.contains(why), "{paths:?}: {e}");
        }
        let mut failed = result(&["out/a.txt", "b.txt"]);
        failed.exit_code = 1;
        assert!(check_result(&failed, &declared).is_err());
        // A directory where a file is declared, and the other way round.
        let mut with_dir = result(&["out/a.txt"]);
        with_dir.output_directories.push(re::OutputDirectory {
            path: "b.txt".into(),
            tree_digest: Some(HashFunction::Sha256.digest(b"t")),
            ..Default::default()
        });
        let e = check_result(&with_dir, &declared).unwrap_err();
        assert!(e.contains("not a directory the action declares"), "{e}");
        let with_tree = vec!["gen/".to_owned()];
        assert!(check_result(&with_dir, &with_tree).is_err());
        let mut tree_only = result(&[]);
        tree_only.output_directories.push(re::OutputDirectory {
            path: "gen".into(),
            tree_digest: Some(HashFunction::Sha256.digest(b"t")),
            ..Default::default()
        });
        assert_eq!(check_result(&tree_only, &with_tree), Ok(()));
        tree_only.output_directories[0].path = "../gen".into();
        assert!(check_result(&tree_only, &with_tree).is_err());
    }

    #[test]
    fn the_action_digest_names_the_key_in_the_server_function() {
        let key = Digest::of(b"some key");
        let (sha, blobs) = action_of(HashFunction::Sha256, &key);
        let (b3, _) = action_of(HashFunction::Blake3, &key);
        assert_eq!(sha.hash.len(), 64);
        assert_ne!(sha.hash, b3.hash);
        assert_eq!(HashFunction::Sha256.digest(&blobs[0]), sha);
        let command = re::Command::decode(blobs[1].as_slice()).unwrap();
        assert_eq!(
            command.arguments,
            ["flow-action".to_owned(), key.to_string()]
        );
    }
}
