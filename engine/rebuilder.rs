//! `Rebuilder`: for one action whose dependencies are done, decides hit or run, and does the
//! cache side of each — a constructive-trace rebuilder in the sense of "Build Systems à la Carte".
//! It never looks at the ready queue (the scheduler's) and never spawns a process (the
//! executor's). Whether an action's last result is reused at all is decided here and nowhere
//! else: [`Rebuilder::decide`] (`reuse.rs`).
//!
//! 1. `key`: the `ActionKey` from source digests (file-state table), dependency output digests
//!    and tool identities.
//! 2. `lookup`: a successful cached result for that key, if any.
//! 3. Hit: `is_materialized` (stat only: every output under `flow-out/` still has the recorded
//!    state of what flow wrote) → up to date, nothing to do; else `restore` from the CAS,
//!    verifying every blob and refusing any path that would leave `flow-out/`. A directory
//!    output's `.NAME.flow-tree` marker is removed before the tree is replaced and written
//!    after, so a crash in between leaves no marker vouching for the wrong tree. A failed
//!    run's marker beside an output (`failed.rs`) makes it not materialized, and is removed
//!    after the output is restored.
//! 4. Miss: the runner executes the action; `store` then checks every declared output exists,
//!    stores the outputs and both log streams in the CAS, and only then records the result (held,
//!    and written with others: `pending.rs`). A run killed at any point leaves either nothing or
//!    a complete entry. Failures are not cached. Outputs are then materialized under
//!    `flow-out/<package>/`, unless this build leaves them in the cache (`lazy.rs`).
//! 5. Before several ready hits are decided one by one, `restore_ahead` restores their outputs
//!    at once on every core; `decide` then finds them in place.
//!
//! Early cutoff needs no code: a dependency that re-runs and produces identical bytes gives its
//! dependents identical keys.

mod lazy;
mod pending;
mod reuse;
mod store;

pub use lazy::{kept_in_cache, Materialize};
pub use pending::Pending;
pub use reuse::{Apply, Carried, Decision, KeyInputs, LastResult};

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flow_cache::regular::{read_regular, Links};
use flow_cache::{
    check_relative_path, real_dest, ActionResult, Cache, CacheError, Digest, OutputEntry,
    OutputKind, TreeStamp,
};

use crate::action_key::{ActionKey, KEY_FORMAT_VERSION};
use crate::executor::{ActionSpec, Input};
use crate::expand::join_path;
use crate::hasher::{FileHasher, Hashed};
use crate::plan::Action;

/// One output of a finished action as its dependents see it: where it is staged
/// (workspace-relative) and what it is.
#[derive(Clone, Debug)]
pub struct StagedOutput {
    pub path: String,
    pub kind: OutputKind,
}

/// Why a finished run could not be stored.
#[derive(Debug)]
pub enum StoreError {
    /// The command succeeded but declared outputs are missing or of the wrong type.
    Outputs(Vec<String>),
    Cache(CacheError),
}

pub struct Rebuilder {
    pub cache: Arc<Cache>,
    pub hasher: Arc<FileHasher>,
    /// `<workspace>/flow-out`.
    pub out_root: PathBuf,
    pub workspace_root: PathBuf,
    /// The remote cache, asked after a local miss (`remote/tier.rs`); None without one.
    pub remote: Option<Arc<crate::remote::tier::RemoteTier>>,
    /// Results stored by runs and not yet written to the database (`pending.rs`).
    pub pending: Pending,
    /// The actions whose outputs stay in the cache, not written under `flow-out/`
    /// (`flow build --materialize`, `lazy.rs`); empty: every output is written.
    pub kept_in_cache: std::collections::HashSet<flow_rules::Label>,
    /// Nodes whose outputs `restore_ahead` restored and `decide` has not yet reported.
    pub restored_ahead: std::sync::Mutex<std::collections::HashSet<usize>>,
}

/// What is held is written when the rebuilder goes (an interrupted build included).
impl Drop for Rebuilder {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl Rebuilder {
    /// The key of `action`. `sources` holds the digests of every source (workspace-relative);
    /// `deps` the outputs of its direct dependencies; `tools` the identities of resolved tools.
    pub fn key(
        &self,
        action: &Action,
        sources: &HashMap<String, Hashed>,
        deps: &[StagedOutput],
        tools: &HashMap<String, String>,
    ) -> Result<ActionKey, String> {
        let mut inputs = BTreeMap::new();
        let mut executable = Vec::new();
        for s in &action.srcs {
            let h = sources
                .get(s)
                .ok_or_else(|| unreadable_source(&self.workspace_root, s))?;
            inputs.insert(s.clone(), h.digest);
            if h.executable {
                executable.push(s.clone());
            }
        }
        executable.sort();
        executable.dedup();
        let dep_outputs = deps
            .iter()
            .map(|o| (o.path.clone(), *o.kind.digest()))
            .collect();
        let mut tool_ids = BTreeMap::new();
        for t in &action.tools {
            let id = tools
                .get(t)
                .ok_or_else(|| format!("tool `{t}` is not on the action PATH"))?;
            tool_ids.insert(t.clone(), id.clone());
        }
        let mut secrets = action.secrets.clone();
        secrets.sort();
        let mut services = BTreeMap::new();
        for service in &action.services {
            let mut hasher = blake3::Hasher::new();
            hasher.update(service.definition.as_bytes());
            for s in &service.srcs {
                let h = sources
                    .get(s)
                    .ok_or_else(|| unreadable_source(&self.workspace_root, s))?;
                hasher.update(b"\0");
                hasher.update(s.as_bytes());
                hasher.update(h.digest.to_string().as_bytes());
            }
            services.insert(
                service.label.clone(),
                Digest::from_bytes(*hasher.finalize().as_bytes()),
            );
        }
        Ok(ActionKey {
            version: KEY_FORMAT_VERSION,
            platform: ActionKey::this_platform(),
            package: action.package.clone(),
            cmd: action.cmd.clone(),
            env: action.env.clone(),
            secrets,
            inputs,
            executable,
            dep_outputs,
            tools: tool_ids,
            outs: action.outs.clone(),
            sandbox: action.sandbox,
            services,
        })
    }

    /// A successful cached result for `key`.
    pub fn lookup(&self, key: &Digest) -> Result<Option<ActionResult>, CacheError> {
        Ok(self
            .cache
            .get_actions(std::slice::from_ref(key))?
            .remove(key))
    }

    /// Where output `out` of a package lives under `flow-out/`, refusing escaping paths.
    pub fn out_path(&self, package: &str, out: &str) -> Result<PathBuf, CacheError> {
        check_relative_path(out)?;
        if !package.is_empty() {
            check_relative_path(package)?;
        }
        Ok(self.out_root.join(join_path(package, out)))
    }

    /// Whether this build writes `action`'s outputs under `flow-out/` (`lazy.rs`).
    pub fn writes(&self, action: &Action) -> bool {
        !self.kept_in_cache.contains(&action.label)
    }

    /// Whether every output of `result` is in `flow-out/` exactly as flow last wrote it
    /// (judged by file state, without reading).
    pub fn is_materialized(&self, action: &Action, result: &ActionResult) -> bool {
        // A result that does not list exactly the declared outputs is not trusted (it is
        // refused again, with a warning, when restoring).
        if check_declared(action, result).is_err() {
            return false;
        }
        // An output beside a failed run's marker is not as flow wrote it (`failed.rs`).
        result.outputs.iter().all(|o| {
            self.out_path(&action.package, &o.path).is_ok_and(|path| {
                self.output_in_place(&path, &o.kind) && !crate::failed::is_marked(&path)
            })
        })
    }

    /// Whether the outputs a dependent sees (`staged`, workspace-relative paths, as the last
    /// watch cycle left them) are still in `flow-out/` exactly as flow last wrote them.
    pub fn staged_in_place(&self, staged: &[StagedOutput]) -> bool {
        staged.iter().all(|o| {
            check_relative_path(&o.path).is_ok()
                && self.output_in_place(&self.out_root.join(&o.path), &o.kind)
        })
    }

    /// The directory inputs among `inputs` (bound or copied from `flow-out/`) whose tree no
    /// longer carries the stamp its marker holds: changed while the action ran (a hand edit
    /// under `flow-out/`; the stamp sees even an edit undone), so the action may have seen
    /// files its key does not describe. One walk of each tree, after a successful run.
    pub fn dir_inputs_changed(&self, inputs: &[Input]) -> Vec<String> {
        inputs
            .iter()
            .filter(|i| i.is_dir && !TreeStamp::vouches(&tree_marker(&i.source), &i.source))
            .map(|i| i.dest.clone())
            .collect()
    }

    /// Whether `path` under `flow-out/` holds the output `kind` describes, judged by file state.
    fn output_in_place(&self, path: &Path, kind: &OutputKind) -> bool {
        match kind {
            // Its content by file state, and its mode as flow writes it (a `chmod` keeps size,
            // mtime and inode, but a dependent would see the x bit, and `chmod 000` leaves a
            // file no one but root can read).
            OutputKind::File {
                digest, executable, ..
            } => {
                self.hasher.trusted_output(path) == Some(*digest)
                    && std::fs::symlink_metadata(path).is_ok_and(|m| {
                        m.permissions().mode() & 0o7777 == flow_cache::output_mode(*executable)
                    })
            }
            OutputKind::Tree { digest, .. } => {
                let marker = tree_marker(path);
                // The marker as flow wrote it, naming this tree, and every file state inside
                // the directory as the stamp in its mtime says (a hand edit is repaired).
                self.hasher.trusted_output(&marker) == Some(*digest)
                    && read_regular(&marker, Links::Refuse, 64).ok().as_deref()
                        == Some(digest.to_string().as_bytes())
                    && TreeStamp::vouches(&marker, path)
            }
        }
    }

    /// Copies every output of `result` from the CAS into `flow-out/`, verifying digests.
    ///
    /// A result read from the cache is data, not trusted (the cache directory may be shared or
    /// restored from elsewhere): its outputs must be exactly the action's declared ones, each
    /// path is checked again, every directory between `flow-out/` and an output is made a real
    /// directory (a symlink there, say `flow-out/pkg` -> `/tmp/x`, is replaced, never followed:
    /// [`flow_cache::real_dest`]), and files, trees and tree markers are created without
    /// following a symlink.
    pub fn restore(&self, action: &Action, result: &ActionResult) -> Result<(), CacheError> {
        check_declared(action, result)?;
        if !self.writes(action) {
            return self.leave_in_cache(action, result, true);
        }
        let cas = self.cache.cas();
        for o in &result.outputs {
            self.out_path(&action.package, &o.path)?;
            let path = real_dest(&self.out_root, &join_path(&action.package, &o.path))?;
            match &o.kind {
                OutputKind::File {
                    digest,
                    size,
                    executable,
                } => {
                    // A directory (or symlink) at `path` is replaced, never followed.
                    let written = cas.materialize_file(digest, *size, *executable, &path)?;
                    flow_cache::failpoint("mid-materialize");
                    // Not recorded if written by someone else since the rename: then the next
                    // build finds it not in place and restores it again.
                    self.hasher.record_written(&path, *digest, &written);
                }
                OutputKind::Tree { digest, .. } => {
                    // The marker goes first: a crash between the swap and the new marker must
                    // not leave the old marker vouching for the new tree.
                    // (An error is harmless: a marker that is not a file is never trusted,
                    // and one that cannot be removed means the tree cannot be replaced either.)
                    let marker = tree_marker(&path);
                    let _ = std::fs::remove_file(&marker);
                    let written = cas.materialize_tree_stamped(digest, &path)?;
                    flow_cache::failpoint("mid-materialize");
                    write_replacing(&marker, digest.to_string().as_bytes())?;
                    // Stamped (and so vouched for) only if still the tree flow wrote: a write
                    // into it since the rename (an outside test hammered one) leaves it
                    // unvouched, and the next build restores it again.
                    let now = TreeStamp::of(&path)?;
                    if now == written {
                        now.set_on(&marker)?;
                        self.hasher.record(&marker, *digest);
                    }
                }
            }
            // After the output, so that a failed run's bytes are never left unmarked.
            remove_if_there(&crate::failed::failed_marker(&path))?;
        }
        Ok(())
    }

    /// For an action whose outputs stay in the cache (`lazy.rs`): checks that each file
    /// output's blob is sound when `verify` (a damaged one is a miss, as for a restore: its
    /// dependents must never be staged from it), then removes from `flow-out/` what is there
    /// of its outputs, which is not the current version (the caller knows it is not in place).
    fn leave_in_cache(
        &self,
        action: &Action,
        result: &ActionResult,
        verify: bool,
    ) -> Result<(), CacheError> {
        for o in result.outputs.iter().filter(|_| verify) {
            if let OutputKind::File { digest, .. } = &o.kind {
                self.cache.cas().read_verified(digest)?;
            }
        }
        crate::stale::clear_outputs(&self.out_root, &action.package, &action.outs);
        Ok(())
    }

    /// What the executor needs to run `action`: its sources and its dependencies' outputs as
    /// inputs, its declared outputs, its environment and secrets.
    pub fn spec(
        &self,
        action: &Action,
        sources: &HashMap<String, Hashed>,
        deps: &[StagedOutput],
        secrets: BTreeMap<String, String>,
    ) -> ActionSpec {
        let mut inputs: Vec<Input> = action
            .srcs
            .iter()
            .map(|s| Input {
                dest: s.clone(),
                source: self.workspace_root.join(s),
                executable: sources.get(s).is_some_and(|h| h.executable),
                is_dir: false,
                digest: sources.get(s).map(|h| h.digest),
            })
            .collect();
        // A dependency reached twice (directly and through a group) is staged once.
        let mut staged = std::collections::HashSet::new();
        for o in deps.iter().filter(|o| staged.insert(o.path.as_str())) {
            match &o.kind {
                OutputKind::File {
                    digest, executable, ..
                } => {
                    // The copy under flow-out/ was verified when it was written and its state
                    // is trusted: stage it. Otherwise the blob, verified first, so that a
                    // damaged blob never becomes a dependent's input.
                    let materialized = self.out_root.join(&o.path);
                    // An action in the real tree reads it there (`$(location)`), and that file
                    // is checked against the key after it ran.
                    let source = if !action.sandbox
                        || self.hasher.trusted_output(&materialized) == Some(*digest)
                    {
                        materialized
                    } else {
                        match self.cache.cas().read_verified(digest) {
                            Ok(_) => self.cache.cas().path_of(digest),
                            // Staging a missing input fails the action with a clear message.
                            Err(_) => materialized,
                        }
                    };
                    inputs.push(Input {
                        dest: o.path.clone(),
                        source,
                        executable: *executable,
                        is_dir: false,
                        digest: Some(*digest),
                    })
                }
                OutputKind::Tree { .. } => inputs.push(Input {
                    dest: o.path.clone(),
                    source: self.out_root.join(&o.path),
                    executable: false,
                    is_dir: true,
                    digest: None,
                }),
            }
        }
        // Relative to the package, as `$(SRCS)` gives them (computed only if the command
        // uses the file).
        let own_srcs = action
            .srcs
            .iter()
            .map(|s| crate::expand::relative(&action.package, s));
        ActionSpec {
            label: action.label.to_string(),
            cmd: action.cmd.clone(),
            srcs_file: crate::expand::srcs_file_text(&action.cmd, own_srcs),
            package: action.package.clone(),
            inputs,
            outputs: action.outs.clone(),
            env: action.env.clone(),
            secrets,
            timeout: action.timeout,
            sandbox: action.sandbox,
            workspace_root: self.workspace_root.clone(),
            live: None,
            gate: (action.kind == crate::plan::ActionKind::Gate).then(|| action.cmd.clone()),
        }
    }
}

/// Refuses (`BadRow`) a cached result whose outputs are not exactly the action's declared ones,
/// with their kinds (a declared `dir/` is a tree, anything else a file). The key holds the
/// declared outputs, so flow never stores such a result: it is damaged or forged.
fn check_declared(action: &Action, result: &ActionResult) -> Result<(), CacheError> {
    let is_tree = |o: &OutputEntry| matches!(o.kind, OutputKind::Tree { .. });
    let declared: BTreeMap<&str, bool> = action
        .outs
        .iter()
        .map(|o| (o.trim_end_matches('/'), o.ends_with('/')))
        .collect();
    let found: BTreeMap<&str, bool> = result
        .outputs
        .iter()
        .map(|o| (o.path.as_str(), is_tree(o)))
        .collect();
    if found == declared && found.len() == result.outputs.len() {
        return Ok(());
    }
    // Paths from the cache are shown escaped and cut short: they may be 5,000 bytes long or
    // hold a newline, and the warning must stay one line.
    let show = |paths: &mut dyn Iterator<Item = (&str, bool)>| {
        paths
            .map(|(p, tree)| {
                let full: String = p.escape_debug().collect();
                let mut shown: String = full.chars().take(60).collect();
                if shown.len() < full.len() {
                    shown.push('…');
                }
                format!("`{shown}{}`", if tree { "/" } else { "" })
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(CacheError::BadRow {
        table: "action_results",
        reason: format!(
            "its outputs ({}) are not the declared ones ({})",
            show(&mut result.outputs.iter().map(|o| (o.path.as_str(), is_tree(o)))),
            show(&mut declared.into_iter()),
        ),
    })
}

/// Writes `bytes` to `path` as a new file, removing whatever was there first: a symlink is
/// removed, never followed (and `O_EXCL` refuses one that appears in between).
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    use std::io::Write;
    let io = |op: &'static str| {
        move |source: std::io::Error| CacheError::Io {
            path: path.to_owned(),
            op,
            source,
        }
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(io("remove"))?,
        Ok(_) => std::fs::remove_file(path).map_err(io("remove"))?,
        Err(_) => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(io("write"))
}

/// Removes the file at `path`, if there is one.
fn remove_if_there(path: &Path) -> Result<(), CacheError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CacheError::Io {
            path: path.to_owned(),
            op: "remove",
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Why the source `rel` (workspace-relative) could not be hashed, for the action's failure:
/// probed again without blocking (a FIFO or a device is named as such).
fn unreadable_source(root: &Path, rel: &str) -> String {
    match flow_cache::regular::open_regular(&root.join(rel), Links::Follow) {
        Err(e) => format!("cannot read source `{rel}`: {e}"),
        Ok(_) => format!("cannot read source `{rel}`"),
    }
}

/// The file beside a materialized directory output that records which tree it holds.
pub fn tree_marker(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(tree_marker_name(&name))
}

/// The file name of the marker beside the directory output `name`: `.NAME.flow-tree`, or, when
/// that would pass the 255-byte limit of a file name, `.flow-tree-` and a digest of the name.
pub fn tree_marker_name(name: &str) -> String {
    let plain = format!(".{name}.flow-tree");
    if plain.len() <= 255 {
        plain
    } else {
        format!(
            ".flow-tree-{}",
            &blake3::hash(name.as_bytes()).to_hex()[..32]
        )
    }
}

/// The outputs of a finished action as its dependents stage them.
pub fn staged(action: &Action, result: &ActionResult) -> Vec<StagedOutput> {
    result
        .outputs
        .iter()
        .map(|o| StagedOutput {
            path: join_path(&action.package, &o.path),
            kind: o.kind.clone(),
        })
        .collect()
}
