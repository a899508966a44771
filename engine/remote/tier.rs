//! The remote tier of the action cache: what the rebuilder asks after a local miss, and what a
//! build uploads after its successful runs (docs/remote.md).
//!
//! **The mapping.** flow's action key (blake3) names a REAPI `Action` whose `Command` has the
//! arguments `["flow-action", KEY]` and whose input root is the empty `Directory`: the Action's
//! digest, in the server's digest function, is the action cache key. The three small blobs are
//! uploaded with the result, so a server that checks that an action's parts exist finds them.
//! A result is its output files (package-relative paths, as declared), its exit code (0: only
//! successes are shared) and its stdout and stderr blobs.
//!
//! **What is refused.** A remote result is used only when every output path is relative, stays
//! below the package (`check_relative_path`) and is exactly one of the action's declared
//! outputs, every declared output is there, it has no directories or symbolic links, and every
//! blob read hashes to its digest; then its blobs are written to the local CAS and the result to
//! the local action cache, and the rebuilder restores it like a local hit. Anything else is a
//! miss, with a warning. Not shared yet: directory outputs, and blobs over the batch limit
//! (ByteStream is next).
//!
//! **Failures.** The first failure to reach the server is warned about once, and the remote is
//! not asked again during the build: a build with a remote cache down is a local build.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use flow_cache::{check_relative_path, ActionResult, Cache, Digest, OutputEntry, OutputKind};
use prost::Message;
use re::action_cache_client::ActionCacheClient;

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
/// it is there to save time.
const SLOW: std::time::Duration = std::time::Duration::from_secs(3);

/// The remote cache of a build.
pub struct RemoteTier {
    remote: Remote,
    /// Its own runtime (the channel's tasks run there); `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    /// Whether this build writes to it (`--remote-upload`).
    pub upload: bool,
    /// Keys stored locally by this build's runs, uploaded at its end.
    pending: Mutex<Vec<Digest>>,
    /// The remote failed once: not asked again this build.
    down: AtomicBool,
    warn: Box<dyn Fn(&str) + Send + Sync>,
}

impl RemoteTier {
    /// Connects; `None` (warned) when the server cannot be used.
    pub fn connect(
        url: &str,
        instance: &str,
        upload: bool,
        warn: Box<dyn Fn(&str) + Send + Sync>,
    ) -> Option<RemoteTier> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .ok()?;
        // On a thread of its own: the caller may be inside another runtime (`flow watch`).
        let connected = std::thread::scope(|s| {
            s.spawn(|| runtime.block_on(Remote::connect(url, instance)))
                .join()
                .expect("connecting to the remote cache panicked")
        });
        match connected {
            Ok(remote) => Some(RemoteTier {
                remote,
                runtime: Some(runtime),
                upload,
                pending: Mutex::new(Vec::new()),
                down: AtomicBool::new(false),
                warn,
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

    fn failed(&self, e: &RemoteError) {
        if !self.down.swap(true, Ordering::SeqCst) {
            (self.warn)(&format!(
                "{e}; the rest of this build does not use the remote cache"
            ));
        }
    }

    /// After a local miss: the remote result for `key`, checked against `declared` (the
    /// action's outputs), its blobs verified and stored locally, the result stored in the local
    /// action cache. `None`: a miss, a result refused (warned), or the remote down.
    pub fn fetch(&self, key: &Digest, declared: &[String], cache: &Cache) -> Option<ActionResult> {
        if self.down.load(Ordering::SeqCst) {
            return None;
        }
        let asked = std::time::Instant::now();
        let answer = self.call(self.fetch_remote(key, declared));
        let took = asked.elapsed();
        if took > SLOW && !self.down.swap(true, Ordering::SeqCst) {
            (self.warn)(&format!(
                "the remote cache took {:.1} s to answer one lookup; the rest of this build \
                 does not use it",
                took.as_secs_f64()
            ));
        }
        match answer {
            Ok(Some(blobs)) => self.store_locally(key, blobs, cache),
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

    async fn fetch_remote(
        &self,
        key: &Digest,
        declared: &[String],
    ) -> Result<Option<Fetched>, Refusal> {
        let function = self.remote.function();
        let (action, _) = action_of(function, key);
        let answer = ActionCacheClient::new(self.remote.channel.clone())
            .get_action_result(re::GetActionResultRequest {
                instance_name: self.remote.instance.clone(),
                action_digest: Some(action),
                digest_function: function.value() as i32,
                ..Default::default()
            })
            .await;
        let result = match answer {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => {
                return Err(Refusal::Remote(super::call_error(
                    &self.remote.url,
                    "GetActionResult",
                    &s,
                )))
            }
        };
        check_result(&result, declared).map_err(Refusal::Bad)?;
        let mut wanted: Vec<re::Digest> = result
            .output_files
            .iter()
            .filter_map(|f| f.digest.clone())
            .collect();
        wanted.extend(result.stdout_digest.clone());
        wanted.extend(result.stderr_digest.clone());
        if let Some(big) = wanted
            .iter()
            .find(|d| d.size_bytes as u64 > self.remote.batch_limit())
        {
            return Err(Refusal::Bad(format!(
                "a blob of {} bytes, over the batch limit (large blobs are not read yet)",
                big.size_bytes
            )));
        }
        let read = self.remote.download(&wanted).await.map_err(|e| match e {
            e @ RemoteError::Corrupt { .. } => Refusal::Bad(e.to_string()),
            e => Refusal::Remote(e),
        })?;
        let mut bytes = Vec::new();
        for (d, b) in wanted.iter().zip(read) {
            match b {
                Some(b) => bytes.push(b),
                None => {
                    return Err(Refusal::Bad(format!(
                        "blob {}/{} is missing",
                        d.hash, d.size_bytes
                    )))
                }
            }
        }
        Ok(Some(Fetched { result, bytes }))
    }

    fn store_locally(&self, key: &Digest, fetched: Fetched, cache: &Cache) -> Option<ActionResult> {
        let Fetched { result, bytes } = fetched;
        let mut blobs = bytes.into_iter();
        let mut outputs = Vec::new();
        let put = |b: &[u8]| cache.cas().put_bytes(b);
        for f in &result.output_files {
            let b = blobs.next()?;
            let digest = put(&b).ok()?;
            outputs.push(OutputEntry {
                path: f.path.clone(),
                kind: OutputKind::File {
                    digest,
                    size: b.len() as u64,
                    executable: f.is_executable,
                },
            });
        }
        let stdout = match result.stdout_digest {
            Some(_) => Some(put(&blobs.next()?).ok()?),
            None => None,
        };
        let stderr = match result.stderr_digest {
            Some(_) => Some(put(&blobs.next()?).ok()?),
            None => None,
        };
        let local = ActionResult {
            exit_code: 0,
            outputs,
            stdout,
            stderr,
            duration_ms: 0,
        };
        cache.put_action(key, &local).ok()?;
        Some(local)
    }

    /// A successful run stored locally under `key`: uploaded at the build's end.
    pub fn queue(&self, key: Digest) {
        if self.upload {
            self.pending.lock().expect("pending").push(key);
        }
    }

    /// Uploads the results queued by this build: the blobs the server is missing, then each
    /// result. Results with directory outputs or blobs over the batch limit are left out.
    /// Returns how many were uploaded.
    pub fn flush(&self, cache: &Cache) -> usize {
        let keys = std::mem::take(&mut *self.pending.lock().expect("pending"));
        if keys.is_empty() || self.down.load(Ordering::SeqCst) {
            return 0;
        }
        if !self.remote.capabilities.update_enabled {
            (self.warn)(&format!(
                "the remote cache at {} takes no updates (read only): nothing uploaded",
                self.remote.url
            ));
            return 0;
        }
        let Ok(found) = cache.get_actions(&keys) else {
            return 0;
        };
        let mut done = 0;
        for (key, result) in found {
            match self.call(self.upload_one(&key, &result, cache)) {
                Ok(true) => done += 1,
                Ok(false) => {}
                Err(e) => {
                    self.failed(&e);
                    break;
                }
            }
        }
        done
    }

    async fn upload_one(
        &self,
        key: &Digest,
        result: &ActionResult,
        cache: &Cache,
    ) -> Result<bool, RemoteError> {
        let function = self.remote.function();
        let limit = self.remote.batch_limit();
        let mut blobs: Vec<Vec<u8>> = Vec::new();
        let mut files = Vec::new();
        for out in &result.outputs {
            let OutputKind::File {
                digest, executable, ..
            } = &out.kind
            else {
                return Ok(false); // directory outputs are not shared yet
            };
            let Ok(b) = cache.cas().read_verified(digest) else {
                return Ok(false);
            };
            if b.len() as u64 > limit {
                return Ok(false);
            }
            files.push(re::OutputFile {
                path: out.path.clone(),
                digest: Some(function.digest(&b)),
                is_executable: *executable,
                ..Default::default()
            });
            blobs.push(b);
        }
        let mut too_big = false;
        let mut log = |d: &Option<Digest>| -> Option<re::Digest> {
            let b = cache.cas().read_verified(d.as_ref()?).ok()?;
            too_big |= b.len() as u64 > limit;
            let digest = function.digest(&b);
            blobs.push(b);
            Some(digest)
        };
        let stdout_digest = log(&result.stdout);
        let stderr_digest = log(&result.stderr);
        if too_big {
            return Ok(false); // a log over the batch limit: large blobs are not sent yet
        }
        let (action, parts) = action_of(function, key);
        blobs.extend(parts);
        let digests: Vec<re::Digest> = blobs.iter().map(|b| function.digest(b)).collect();
        let missing: BTreeSet<(String, i64)> = self
            .remote
            .find_missing(&digests)
            .await?
            .into_iter()
            .map(|d| (d.hash, d.size_bytes))
            .collect();
        let to_send: Vec<Vec<u8>> = blobs
            .into_iter()
            .zip(&digests)
            .filter(|(_, d)| missing.contains(&(d.hash.clone(), d.size_bytes)))
            .map(|(b, _)| b)
            .collect();
        self.remote.upload(&to_send).await?;
        ActionCacheClient::new(self.remote.channel.clone())
            .update_action_result(re::UpdateActionResultRequest {
                instance_name: self.remote.instance.clone(),
                action_digest: Some(action),
                action_result: Some(re::ActionResult {
                    output_files: files,
                    exit_code: 0,
                    stdout_digest,
                    stderr_digest,
                    ..Default::default()
                }),
                digest_function: function.value() as i32,
                ..Default::default()
            })
            .await
            .map_err(|s| super::call_error(&self.remote.url, "UpdateActionResult", &s))?;
        Ok(true)
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

struct Fetched {
    result: re::ActionResult,
    /// The output files' blobs in order, then stdout's and stderr's when named.
    bytes: Vec<Vec<u8>>,
}

enum Refusal {
    Remote(RemoteError),
    Bad(String),
}

/// A remote result flow may use for an action with the outputs `declared`: see the module docs.
/// (The deprecated symlink fields are checked too: older servers still fill them.)
#[allow(deprecated)]
pub fn check_result(result: &re::ActionResult, declared: &[String]) -> Result<(), String> {
    if result.exit_code != 0 {
        return Err(format!("exit code {}", result.exit_code));
    }
    if !result.output_directories.is_empty()
        || !result.output_symlinks.is_empty()
        || !result.output_file_symlinks.is_empty()
        || !result.output_directory_symlinks.is_empty()
    {
        return Err("it has directories or symbolic links".into());
    }
    let declared: BTreeSet<&str> = declared.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    for f in &result.output_files {
        check_relative_path(&f.path).map_err(|e| format!("output `{}`: {e}", f.path))?;
        if !declared.contains(f.path.as_str()) {
            return Err(format!(
                "output `{}` is not one the action declares",
                f.path
            ));
        }
        if f.digest.is_none() || !seen.insert(f.path.as_str()) {
            return Err(format!("output `{}` has no digest or comes twice", f.path));
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
                "`c.txt` is not one the action declares",
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
        let mut with_dir = result(&["out/a.txt", "b.txt"]);
        with_dir
            .output_directories
            .push(re::OutputDirectory::default());
        assert!(check_result(&with_dir, &declared).is_err());
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
