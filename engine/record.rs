//! The build record: what the last successful `flow build` of one set of patterns saw, kept so
//! that the next build of the same patterns can tell from `stat` alone what may have changed.
//!
//! A build computes every action's key from the content of its inputs, which costs an analysis
//! (the evaluation snapshot, the graph, the plan), the file-state table read from SQLite, a stat
//! of every source, and a key serialized and hashed per action. When nothing changed, all of
//! that only proves that every key is the one of last time. The record keeps the proof's
//! premises instead, as ninja keeps mtimes, but with flow's content-based answers attached:
//!
//! - the stamps analysis depended on (BUILD and `.star` files, directories, the root's entries;
//!   the same ones the evaluation snapshot checks), a digest of `flow.toml`'s settings, the
//!   identity of the flow binary, and the action `PATH` with every tool it resolves;
//! - every source's file state (size, mtime, inode, digest, when recorded) as the build hashed it;
//! - every output's file state as flow wrote or verified it under `flow-out/` (a directory
//!   output by its tree marker);
//! - the plan itself, with each action's key and the outputs its dependents see.
//!
//! The next build with the same patterns [`Record::load`]s it and [`Record::check`]s it, in
//! parallel, with `stat` calls only:
//! - all stamps equal and trusted: the build is a no-op. It prints what a full build would have
//!   printed and exits, without opening the database, taking the workspace lock or starting the
//!   runner ([`Verdict::UpToDate`]);
//! - analysis inputs, `flow.toml`, the binary or the tools changed: the record says nothing, and
//!   the build starts from analysis ([`Verdict::Stale`]);
//! - otherwise some sources or outputs changed ([`Verdict::Changed`]): the plan comes from the
//!   record; the actions that read a changed source or own a changed output, and everything
//!   downstream of them, go through the runner as usual (keys, cache, early cutoff); every other
//!   action is carried over with its recorded outputs and key, neither hashed nor looked up
//!   ([`Record::carry`]).
//!
//! Trust follows the rules of the rest of flow: a source's state is trusted only if its mtime is
//! older than its recording by the racy window (`hasher::RACY_WINDOW_NS`), so a same-tick
//! rewrite is never missed; an analysis stamp only if older than the evaluation's start by the
//! same window; an output's state because only flow writes `flow-out/`. Anything not trusted
//! counts as changed. A record is written only after a build in which every planned action
//! succeeded, from the states that build used (never from a later `stat`), and removed after any
//! other outcome, by `flow cache gc`, `flow cache verify --fix` and `flow clean --cache`, since
//! carried actions name blobs that those may remove. It is a cache of a proof, so a record that
//! is missing, unreadable or of another format only costs the next build its speed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flow_cache::{Digest, FileState, OutputKind};
use flow_rules::snapshot::{self, Stamp, RACY_WINDOW};
use flow_rules::Label;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::analysis::AnalysisInputs;
use crate::config::Config;
use crate::hasher::RACY_WINDOW_NS;
use crate::plan::{find_tool, Action, Plan};
use crate::rebuilder::{tree_marker, StagedOutput};

/// Bumped when the record's layout or meaning changes.
const FORMAT: u32 = 1;
const MAGIC: &[u8; 8] = b"flowrec\x01";
/// The file extension of records in `<cache>/analysis/`.
const EXTENSION: &str = "rec";

/// Carried actions' cache entries are marked used (for `flow cache gc`'s LRU order) at least
/// this often: a no-op older than that goes through the runner once to mark them.
const TOUCH_EVERY_MS: i64 = flow_cache::TOUCH_AFTER_MS;

#[derive(Serialize, Deserialize)]
struct Head {
    format: u32,
    /// The flow binary that wrote the record.
    exe: Stamp,
    /// The patterns, as given (`//...` for none).
    request: String,
    /// blake3 of `flow.toml`'s parsed settings.
    config: [u8; 32],
    /// When the carried actions' cache entries were last marked used (ms since the epoch).
    touched_at_ms: i64,
    analysis_taken_at_ns: i64,
    root_entries: Vec<String>,
    /// Workspace-relative, `lstat`.
    analysis: Vec<(String, Stamp)>,
    tools: ToolStamps,
    sources: Vec<Entry>,
    outputs: Vec<Entry>,
    /// The labels of the plan's tasks, in plan order: what a no-op prints.
    labels: Vec<String>,
}

/// A file state, workspace-relative.
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    path: String,
    size: u64,
    mtime_ns: i64,
    ino: u64,
    digest: [u8; 32],
    recorded_at_ns: i64,
    /// For a directory output (this entry is its tree marker): the directory, which must still
    /// be a directory.
    dir: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Body {
    nodes: Vec<Node>,
    requested: Vec<u32>,
    /// Tool name → identity, as the runner keys them.
    tools: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize)]
struct Node {
    label: String,
    is_group: bool,
    cmd: String,
    srcs: Vec<String>,
    outs: Vec<String>,
    env: Vec<(String, String)>,
    secrets: Vec<String>,
    tools: Vec<String>,
    timeout_ms: Option<u64>,
    retries: u32,
    sandbox: bool,
    deps: Vec<u32>,
    /// The key of the task's result.
    key: Option<[u8; 32]>,
    /// Its outputs as dependents see them.
    staged: Vec<Staged>,
    /// Indices into `Head::outputs` of its outputs' states.
    outputs: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
struct Staged {
    path: String,
    tree: bool,
    digest: [u8; 32],
    size: u64,
    executable: bool,
}

/// What the tools of a plan resolve to, and the action `PATH` they are looked up on: a
/// directory of it whose entries change (a tool installed earlier on the `PATH`) or a link that
/// points elsewhere makes the record stale.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct ToolStamps {
    taken_at_ns: i64,
    /// Each directory of the action `PATH`, following links (`None`: missing).
    dirs: Vec<(String, Option<Stamp>)>,
    /// Each tool: the path found on the `PATH`, what it resolves to, and that file's stamp.
    tools: Vec<(String, String, Stamp)>,
}

impl ToolStamps {
    /// Takes the stamps before the tools are identified, so that a change while the build
    /// identifies them is seen next time.
    pub fn take(plan: &Plan, action_path: &[String]) -> ToolStamps {
        let names: BTreeSet<&String> = plan.nodes.iter().flat_map(|a| a.tools.iter()).collect();
        if names.is_empty() {
            return ToolStamps::default();
        }
        let taken_at_ns = snapshot::now_ns();
        let dirs = action_path
            .iter()
            .map(|d| (d.clone(), stamp_following(Path::new(d))))
            .collect();
        let tools = names
            .into_iter()
            .filter_map(|name| {
                let (found, canonical) = find_tool(name, action_path)?;
                let stamp = stamp_following(&canonical)?;
                Some((
                    found.to_str()?.to_owned(),
                    canonical.to_str()?.to_owned(),
                    stamp,
                ))
            })
            .collect();
        ToolStamps {
            taken_at_ns,
            dirs,
            tools,
        }
    }

    fn unchanged(&self) -> bool {
        let limit = self.taken_at_ns - RACY_WINDOW_NS;
        let trusted = |s: &Stamp| s.mtime_ns < limit;
        self.dirs.iter().all(|(d, s)| {
            s.as_ref().is_none_or(trusted) && stamp_following(Path::new(d)).as_ref() == s.as_ref()
        }) && self.tools.iter().all(|(found, canonical, s)| {
            trusted(s)
                && std::fs::canonicalize(found).ok().as_deref() == Some(Path::new(canonical))
                && stamp_following(Path::new(canonical)).as_ref() == Some(s)
        })
    }
}

/// What [`Record::check`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing the last build depended on changed.
    UpToDate,
    /// Analysis would repeat; these sources and outputs (indices) changed or are not trusted.
    Changed {
        sources: Vec<usize>,
        outputs: Vec<usize>,
    },
    /// Analysis may differ: the record says nothing.
    Stale,
}

/// A loaded record: its head decoded, its body (the plan) decoded only when needed.
pub struct Record {
    head: Head,
    body: Vec<u8>,
}

/// What a build takes from a record whose sources or outputs changed.
pub struct Carried {
    pub plan: Plan,
    pub tools: HashMap<String, String>,
    pub tool_stamps: ToolStamps,
    /// File states of the record's sources and outputs, keyed by absolute path (the hasher's
    /// table: nothing is read from the database).
    pub known: HashMap<String, FileState>,
    /// Tasks carried over: node → (outputs as dependents see them, key).
    pub clean: HashMap<usize, (Vec<StagedOutput>, Digest)>,
    /// The sources of the other tasks, which the build hashes.
    pub sources: Vec<String>,
    pub analysis: AnalysisInputs,
    /// Whether the carried tasks' cache entries must be marked used this time.
    pub touch: bool,
    /// When they were last marked used.
    pub touched_at_ms: i64,
}

/// Where the record of `request` for the workspace at `root` is kept.
pub fn path(cache: &Path, root: &Path, request: &str) -> PathBuf {
    let id = blake3::hash(request.as_bytes()).to_hex();
    cache.join("analysis").join(format!(
        "{}-{}.{EXTENSION}",
        crate::analysis::workspace_id(root),
        &id[..16]
    ))
}

/// The request text of a build: its patterns as given, `//...` for none.
pub fn request(patterns: &[String]) -> String {
    if patterns.is_empty() {
        "//...".to_owned()
    } else {
        patterns.join("\n")
    }
}

/// A digest of the settings of `flow.toml`.
pub fn config_digest(config: &Config) -> [u8; 32] {
    *blake3::hash(format!("{config:?}").as_bytes()).as_bytes()
}

/// Removes every record in the cache directory `cache` (after anything that may remove the
/// blobs carried actions name).
pub fn forget_all(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache.join("analysis")) else {
        return;
    };
    for e in entries.flatten() {
        if e.path().extension().is_some_and(|x| x == EXTENSION) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Removes the record at `path`, if any.
pub fn forget(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// The identity of the running flow binary.
fn exe_stamp() -> Option<Stamp> {
    stamp_following(&std::env::current_exe().ok()?)
}

fn stamp_following(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        size: if m.is_dir() { 0 } else { m.len() },
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ino: m.ino(),
    })
}

/// Whether `meta` has the size, mtime and inode of `e`.
fn matches(e: &Entry, meta: &std::fs::Metadata) -> bool {
    e.size == meta.len()
        && e.mtime_ns == meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
        && e.ino == meta.ino()
}

impl Record {
    /// The record at `path` if it was written by this flow binary for this request and these
    /// settings.
    pub fn load(path: &Path, request: &str, config: &[u8; 32]) -> Option<Record> {
        let bytes = std::fs::read(path).ok()?;
        let rest = bytes.strip_prefix(MAGIC)?;
        let (head, body): (Head, &[u8]) = postcard::take_from_bytes(rest).ok()?;
        let current = head.format == FORMAT
            && head.request == request
            && &head.config == config
            && Some(head.exe) == exe_stamp();
        current.then(|| Record {
            head,
            body: body.to_vec(),
        })
    }

    /// Compares every recorded stamp with the file system (in parallel; nothing is read).
    pub fn check(&self, root: &Path) -> Verdict {
        let h = &self.head;
        let limit = h.analysis_taken_at_ns - RACY_WINDOW.as_nanos() as i64;
        let analysis_unchanged = snapshot::root_entries(root).as_ref() == Some(&h.root_entries)
            && h.analysis.par_iter().with_min_len(128).all(|(p, s)| {
                s.mtime_ns < limit && Stamp::of(&root.join(p)).as_ref() == Some(s)
            })
            && h.tools.unchanged();
        if !analysis_unchanged {
            return Verdict::Stale;
        }
        let sources: Vec<usize> = (0..h.sources.len())
            .into_par_iter()
            .with_min_len(256)
            .filter(|&i| {
                let e = &h.sources[i];
                let trusted = e.mtime_ns.saturating_add(RACY_WINDOW_NS) <= e.recorded_at_ns;
                !(trusted && std::fs::metadata(root.join(&e.path)).is_ok_and(|m| matches(e, &m)))
            })
            .collect();
        let outputs: Vec<usize> = (0..h.outputs.len())
            .into_par_iter()
            .with_min_len(256)
            .filter(|&i| {
                let e = &h.outputs[i];
                let file = std::fs::symlink_metadata(root.join(&e.path))
                    .is_ok_and(|m| m.is_file() && matches(e, &m));
                let dir = e.dir.as_ref().is_none_or(|d| {
                    std::fs::symlink_metadata(root.join(d)).is_ok_and(|m| m.is_dir())
                });
                !(file && dir)
            })
            .collect();
        let touch_due = now_ms() - h.touched_at_ms >= TOUCH_EVERY_MS;
        if sources.is_empty() && outputs.is_empty() && !touch_due {
            Verdict::UpToDate
        } else {
            Verdict::Changed { sources, outputs }
        }
    }

    /// The labels a no-op reports, in plan order.
    pub fn labels(&self) -> &[String] {
        &self.head.labels
    }

    /// The plan and the carried tasks, after `check` found these `sources` and `outputs`
    /// changed; `None` if the body cannot be decoded.
    pub fn carry(self, root: &Path, sources: &[usize], outputs: &[usize]) -> Option<Carried> {
        let body: Body = postcard::from_bytes(&self.body).ok()?;
        let head = self.head;
        let mut nodes = Vec::with_capacity(body.nodes.len());
        for n in &body.nodes {
            let label = Label::parse(&n.label, None).ok()?;
            nodes.push(Action {
                package: label.package().to_owned(),
                label,
                is_group: n.is_group,
                cmd: n.cmd.clone(),
                srcs: n.srcs.clone(),
                outs: n.outs.clone(),
                env: n.env.iter().cloned().collect(),
                secrets: n.secrets.clone(),
                tools: n.tools.clone(),
                timeout: n.timeout_ms.map(Duration::from_millis),
                retries: n.retries,
                sandbox: n.sandbox,
                deps: n.deps.iter().map(|&d| d as usize).collect(),
            });
        }
        // Dirty: reads a changed source or owns a changed output, or depends on such a node.
        let changed_sources: HashSet<&str> = sources
            .iter()
            .filter_map(|&i| head.sources.get(i).map(|e| e.path.as_str()))
            .collect();
        let changed_outputs: HashSet<u32> = outputs.iter().map(|&i| i as u32).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (i, a) in nodes.iter().enumerate() {
            for &d in &a.deps {
                dependents.get_mut(d)?.push(i);
            }
        }
        let mut dirty = vec![false; nodes.len()];
        let mut stack: Vec<usize> = (0..nodes.len())
            .filter(|&i| {
                nodes[i]
                    .srcs
                    .iter()
                    .any(|s| changed_sources.contains(s.as_str()))
                    || body.nodes[i]
                        .outputs
                        .iter()
                        .any(|o| changed_outputs.contains(o))
            })
            .collect();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut dirty[i], true) {
                stack.extend(dependents[i].iter().copied());
            }
        }
        let mut clean = HashMap::new();
        let mut dirty_sources = BTreeSet::new();
        for (i, (a, n)) in nodes.iter().zip(&body.nodes).enumerate() {
            if a.is_group {
                continue;
            }
            match (dirty[i], n.key) {
                (false, Some(key)) => {
                    let staged = n.staged.iter().map(Staged::to_output).collect();
                    clean.insert(i, (staged, Digest::from_bytes(key)));
                }
                _ => dirty_sources.extend(a.srcs.iter().cloned()),
            }
        }
        let mut known = HashMap::with_capacity(head.sources.len() + head.outputs.len());
        for e in head.sources.iter().chain(&head.outputs) {
            let abs = root.join(&e.path).to_string_lossy().into_owned();
            known.insert(abs, e.state());
        }
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, a)| (a.label.clone(), i))
            .collect();
        let plan = Plan {
            nodes,
            requested: body.requested.iter().map(|&r| r as usize).collect(),
            index,
        };
        Some(Carried {
            plan,
            tools: body.tools.into_iter().collect(),
            tool_stamps: head.tools,
            known,
            clean,
            sources: dirty_sources.into_iter().collect(),
            analysis: AnalysisInputs {
                stamps: head.analysis,
                taken_at_ns: head.analysis_taken_at_ns,
                root_entries: head.root_entries,
            },
            touch: now_ms() - head.touched_at_ms >= TOUCH_EVERY_MS,
            touched_at_ms: head.touched_at_ms,
        })
    }
}

impl Entry {
    fn from_state(path: String, s: &FileState, dir: Option<String>) -> Entry {
        Entry {
            path,
            size: s.size,
            mtime_ns: s.mtime_ns,
            ino: s.ino,
            digest: *s.digest.as_bytes(),
            recorded_at_ns: s.recorded_at_ns,
            dir,
        }
    }

    fn state(&self) -> FileState {
        FileState {
            size: self.size,
            mtime_ns: self.mtime_ns,
            ino: self.ino,
            digest: Digest::from_bytes(self.digest),
            recorded_at_ns: self.recorded_at_ns,
        }
    }
}

impl Staged {
    fn of(o: &StagedOutput) -> Staged {
        let (tree, digest, size, executable) = match &o.kind {
            OutputKind::File {
                digest,
                size,
                executable,
            } => (false, digest, *size, *executable),
            OutputKind::Tree { digest, size } => (true, digest, *size, false),
        };
        Staged {
            path: o.path.clone(),
            tree,
            digest: *digest.as_bytes(),
            size,
            executable,
        }
    }

    fn to_output(&self) -> StagedOutput {
        let digest = Digest::from_bytes(self.digest);
        StagedOutput {
            path: self.path.clone(),
            kind: if self.tree {
                OutputKind::Tree {
                    digest,
                    size: self.size,
                }
            } else {
                OutputKind::File {
                    digest,
                    size: self.size,
                    executable: self.executable,
                }
            },
        }
    }
}

/// Everything a successful build leaves for the record.
pub struct Capture<'a> {
    pub request: &'a str,
    pub config: [u8; 32],
    pub analysis: &'a AnalysisInputs,
    pub tool_stamps: &'a ToolStamps,
    pub tools: &'a HashMap<String, String>,
    pub plan: &'a Plan,
    /// Per node: its outputs as dependents see them, and its key (tasks).
    pub staged: &'a [Option<Vec<StagedOutput>>],
    pub keys: &'a [Option<Digest>],
    /// The file states the build used and recorded (the hasher's, by absolute path).
    pub states: &'a dyn Fn(&str) -> Option<FileState>,
    pub root: &'a Path,
    /// When the carried actions' entries were last marked used.
    pub touched_at_ms: i64,
}

impl Capture<'_> {
    /// Writes the record at `path` (atomically); false, and no record, when some state the
    /// proof needs is missing (the next build then goes the long way).
    pub fn write(&self, path: &Path) -> bool {
        let written = self.encode().and_then(|bytes| {
            let dir = path.parent()?;
            let tmp = dir.join(format!(".{}.rec.tmp", std::process::id()));
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&tmp, bytes))
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })
                .ok()
        });
        if written.is_none() {
            forget(path);
        }
        written.is_some()
    }

    fn encode(&self) -> Option<Vec<u8>> {
        let root = self.root;
        let out_root = root.join("flow-out");
        let state_of = |abs: &Path| (self.states)(abs.to_str()?);
        let sources = self
            .plan
            .all_sources()
            .into_iter()
            .map(|s| {
                let state = state_of(&root.join(&s))?;
                Some(Entry::from_state(s, &state, None))
            })
            .collect::<Option<Vec<_>>>()?;
        let mut outputs = Vec::new();
        let mut nodes = Vec::with_capacity(self.plan.nodes.len());
        for (i, a) in self.plan.nodes.iter().enumerate() {
            let staged = self.staged.get(i)?.as_ref()?;
            let mut own = Vec::new();
            if !a.is_group {
                for o in staged {
                    let (entry_path, dir, digest) = match &o.kind {
                        OutputKind::File { digest, .. } => (out_root.join(&o.path), None, digest),
                        OutputKind::Tree { digest, .. } => {
                            let dir = out_root.join(&o.path);
                            (tree_marker(&dir), Some(dir), digest)
                        }
                    };
                    let state = state_of(&entry_path)?;
                    if state.digest != *digest {
                        return None;
                    }
                    let rel = |p: &Path| Some(p.strip_prefix(root).ok()?.to_str()?.to_owned());
                    let dir = match dir {
                        Some(d) => Some(rel(&d)?),
                        None => None,
                    };
                    own.push(outputs.len() as u32);
                    outputs.push(Entry::from_state(rel(&entry_path)?, &state, dir));
                }
            }
            nodes.push(Node {
                label: a.label.to_string(),
                is_group: a.is_group,
                cmd: a.cmd.clone(),
                srcs: a.srcs.clone(),
                outs: a.outs.clone(),
                env: a.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                secrets: a.secrets.clone(),
                tools: a.tools.clone(),
                timeout_ms: a.timeout.map(|t| t.as_millis() as u64),
                retries: a.retries,
                sandbox: a.sandbox,
                deps: a.deps.iter().map(|&d| d as u32).collect(),
                key: match (a.is_group, self.keys.get(i)?) {
                    (true, _) => None,
                    (false, Some(k)) => Some(*k.as_bytes()),
                    (false, None) => return None,
                },
                staged: if a.is_group {
                    Vec::new()
                } else {
                    staged.iter().map(Staged::of).collect()
                },
                outputs: own,
            });
        }
        let head = Head {
            format: FORMAT,
            exe: exe_stamp()?,
            request: self.request.to_owned(),
            config: self.config,
            touched_at_ms: self.touched_at_ms,
            analysis_taken_at_ns: self.analysis.taken_at_ns,
            root_entries: self.analysis.root_entries.clone(),
            analysis: self.analysis.stamps.clone(),
            tools: self.tool_stamps.clone(),
            sources,
            outputs,
            labels: self
                .plan
                .nodes
                .iter()
                .filter(|a| !a.is_group)
                .map(|a| a.label.to_string())
                .collect(),
        };
        let body = Body {
            nodes,
            requested: self.plan.requested.iter().map(|&r| r as u32).collect(),
            tools: self
                .tools
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let mut bytes = MAGIC.to_vec();
        bytes.extend(postcard::to_stdvec(&head).ok()?);
        bytes.extend(postcard::to_stdvec(&body).ok()?);
        Some(bytes)
    }
}

pub fn now_ms() -> i64 {
    snapshot::now_ns() / 1_000_000
}
