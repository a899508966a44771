//! Results between flow's action cache and a REAPI server, both ways (docs/remote.md).
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

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

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

/// The largest `Tree` message flow reads (a tree of about a million files).
const MAX_TREE_BYTES: i64 = 256 << 20;

pub(crate) enum Refusal {
    Remote(RemoteError),
    Bad(String),
}

impl From<RemoteError> for Refusal {
    /// A blob that lies or is missing makes the result unusable; any other error is the
    /// server's or the network's.
    fn from(e: RemoteError) -> Refusal {
        match e {
            e @ (RemoteError::Corrupt { .. }
            | RemoteError::Missing { .. }
            | RemoteError::TooLarge { .. }) => Refusal::Bad(e.to_string()),
            e => Refusal::Remote(e),
        }
    }
}

/// The remote result for `key`: checked, its blobs read into the local CAS (verified), as a
/// local result. `None`: the server has none. `took`: the time the lookup itself took.
pub(crate) async fn fetch_remote(
    remote: &Remote,
    key: &Digest,
    declared: &[String],
    cache: &Cache,
    took: &mut std::time::Duration,
) -> Result<Option<ActionResult>, Refusal> {
    let asked = std::time::Instant::now();
    let function = remote.function();
    let (action, _) = action_of(function, key);
    // Small files and logs may come inline with the result (a server that does not inline
    // sends digests only): one call instead of two.
    let request = re::GetActionResultRequest {
        instance_name: remote.instance.clone(),
        action_digest: Some(action),
        digest_function: function.value() as i32,
        inline_stdout: true,
        inline_stderr: true,
        inline_output_files: declared
            .iter()
            .filter(|d| !d.ends_with('/'))
            .cloned()
            .collect(),
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
        trees.push((dir.path.clone(), read_tree(remote, cache, dir).await?));
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
    let mut fetched = remote
        .fetch_blobs(cache, &wanted, &inlined(&result))
        .await?
        .into_iter();
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
        let entries = entries
            .into_iter()
            .map(|e| local_entry(e, &mut next))
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

/// The blobs a result carries inline (an output file's `contents`, `stdout_raw`,
/// `stderr_raw`), by the hash and size they claim: verified where they are used.
fn inlined(result: &re::ActionResult) -> HashMap<(String, i64), Vec<u8>> {
    let mut inline = HashMap::new();
    let mut add = |d: &Option<re::Digest>, data: &[u8]| {
        if let Some(d) = d {
            if !data.is_empty() || d.size_bytes == 0 {
                inline.insert((d.hash.clone(), d.size_bytes), data.to_vec());
            }
        }
    };
    for f in &result.output_files {
        add(&f.digest, &f.contents);
    }
    add(&result.stdout_digest, &result.stdout_raw);
    add(&result.stderr_digest, &result.stderr_raw);
    inline
}

/// The entries of the output directory `dir` of a remote result: its `Tree` read (verified)
/// and checked (`tree.rs`).
async fn read_tree(
    remote: &Remote,
    cache: &Cache,
    dir: &re::OutputDirectory,
) -> Result<Vec<RemoteEntry>, Refusal> {
    let digest = dir.tree_digest.clone().expect("checked");
    if digest.size_bytes > MAX_TREE_BYTES {
        return Err(Refusal::Bad(format!(
            "the tree of `{}` has {} bytes",
            dir.path, digest.size_bytes
        )));
    }
    let local_digest = remote
        .fetch_blobs(cache, &[digest], &HashMap::new())
        .await?[0];
    let bytes = cache.cas().read_verified(&local_digest).map_err(local)?;
    let bad = |e: String| Refusal::Bad(format!("the tree of `{}`: {e}", dir.path));
    let tree = re::Tree::decode(bytes.as_slice()).map_err(|e| bad(e.to_string()))?;
    from_tree(remote.function(), &tree).map_err(bad)
}

/// A tree's entry as flow's manifest holds it, a file by the local digest `next` gives.
fn local_entry(e: RemoteEntry, next: &mut impl FnMut() -> Digest) -> TreeEntry {
    match e {
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
    }
}

/// Uploads the local result `result` of `key`: the blobs the server is missing, then the
/// result (never a result before its blobs).
pub(crate) async fn upload_one(
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
