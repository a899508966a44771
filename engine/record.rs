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
//!
//! Layout (docs/cache-format.md): `MAGIC`, the blake3 of the *values* and their length, the
//! values, then the postcard-encoded head, results and plan. The values are what a build changes,
//! at fixed widths ([`Slots`]): `touched_at_ms`, every source's and output's state, every node's
//! key, every staged output's digest, size and kind. The postcard parts hold only what the plan
//! fixes (paths, labels, stamps of analysis), with the value fields `serde(skip)`ped. A build
//! from analysis writes the whole file and renames it into place; a build from the record
//! patches the values it changed in the file it read (`pwrite`, no new file: rewriting 2 MB cost
//! a leaf edit 6 ms of its ~50), then writes their digest. [`Record::load`] trusts the values only
//! if they match the digest, so a build killed mid-patch, or a no-op reading beside a patch
//! (it takes no lock), finds the record wanting and goes the long way.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flow_cache::{Digest, FileState, OutputKind};
use flow_rules::snapshot::{self, Stamp};
use flow_rules::Label;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;

use crate::analysis::AnalysisInputs;
use crate::config::Config;
use crate::hasher::RACY_WINDOW_NS;
use crate::plan::{find_tool, Action, Plan};
use crate::rebuilder::{tree_marker, StagedOutput};

/// Bumped when the record's layout or meaning changes.
const FORMAT: u32 = 3;
const MAGIC: &[u8; 8] = b"flowrec\x03";
/// `MAGIC`, the blake3 of the values, their length in bytes (u64, little-endian).
const HEADER: usize = MAGIC.len() + 32 + 8;
/// A file state in the values: size, mtime, inode, digest, when recorded.
const ENTRY_BYTES: usize = 8 + 8 + 8 + 32 + 8;
/// A node's key in the values: 1 if present, the key.
const KEY_BYTES: usize = 1 + 32;
/// A staged output in the values: digest, size, 1 if a tree, 1 if executable.
const STAGED_BYTES: usize = 32 + 8 + 1 + 1;
/// Patched ranges of the values closer than this are written as one.
const COALESCE: usize = 4096;
/// The file extension of records in `<cache>/analysis/`.
const EXTENSION: &str = "rec";

/// Carried actions' cache entries are marked used (for `flow cache gc`'s LRU order) at least
/// this often: a no-op older than that goes through the runner once to mark them.
const TOUCH_EVERY_MS: i64 = flow_cache::TOUCH_AFTER_MS;

#[derive(Clone, Serialize, Deserialize)]
struct Head {
    format: u32,
    /// The flow binary that wrote the record.
    exe: Stamp,
    /// The patterns, as given (`//...` for none).
    request: String,
    /// blake3 of `flow.toml`'s parsed settings.
    #[serde(with = "serde_bytes")]
    config: [u8; 32],
    /// When the carried actions' cache entries were last marked used (ms since the epoch).
    #[serde(skip)]
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

/// A file state, workspace-relative. The path (and `dir`) are encoded with the head; the state
/// is one of the values.
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    path: String,
    #[serde(skip)]
    size: u64,
    #[serde(skip)]
    mtime_ns: i64,
    #[serde(skip)]
    ino: u64,
    #[serde(skip)]
    digest: [u8; 32],
    #[serde(skip)]
    recorded_at_ns: i64,
    /// For a directory output (this entry is its tree marker): the directory, which must still
    /// be a directory.
    dir: Option<String>,
}

/// The plan: written by a build from analysis, copied as bytes by a build from the record.
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
}

/// What a node's last run left: patched for the nodes a build keyed. The key and the staged
/// outputs' contents are values; the rest is encoded after the head.
#[derive(Clone, Serialize, Deserialize)]
struct NodeResult {
    /// The key of the task's result (`None` for a group).
    #[serde(skip)]
    key: Option<[u8; 32]>,
    /// Its outputs as dependents see them.
    staged: Vec<Staged>,
    /// Indices into `Head::outputs` of its outputs' states.
    outputs: Vec<u32>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Staged {
    path: String,
    #[serde(skip)]
    tree: bool,
    #[serde(skip)]
    digest: [u8; 32],
    #[serde(skip)]
    size: u64,
    #[serde(skip)]
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

/// A loaded record: its head decoded, the rest (results and plan) only when needed.
pub struct Record {
    head: Head,
    /// The whole file: the values at `HEADER..HEADER + values_len`; the results and the plan
    /// start at `rest`.
    bytes: Vec<u8>,
    values_len: usize,
    rest: usize,
    file: FileId,
}

/// Device, inode and length of the record file a build read, so that its patch goes to that
/// file and no other.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
}

/// What a build takes from a record whose sources or outputs changed.
pub struct Carried {
    pub plan: Plan,
    pub tools: HashMap<String, String>,
    /// File states of the sources and outputs of the tasks to key, by absolute path (the
    /// hasher's table: nothing is read from the database).
    pub known: HashMap<String, FileState>,
    /// Tasks carried over: node → (outputs as dependents see them, key).
    pub clean: HashMap<usize, (Vec<StagedOutput>, Digest)>,
    /// The sources of the other tasks, which the build hashes (sorted).
    pub sources: Vec<String>,
    /// Whether the carried tasks' cache entries must be marked used this time.
    pub touch: bool,
    /// When they were last marked used.
    pub touched_at_ms: i64,
    /// The record, to be patched after the build.
    pub previous: Box<Previous>,
}

/// The parts of a record a build from it keeps, to write the next one by patching them.
pub struct Previous {
    head: Head,
    results: Vec<NodeResult>,
    dirty: Vec<bool>,
    /// The file as read: the values (patched in memory, then in the file) at
    /// `HEADER..HEADER + values_len`, the plan's bytes from `body_at`.
    bytes: Vec<u8>,
    values_len: usize,
    body_at: usize,
    file: FileId,
}

/// Where the parts of the next record come from.
pub enum Basis {
    /// A build from analysis: what analysis depended on, and the tools' stamps taken before
    /// they were identified.
    Analysis {
        analysis: AnalysisInputs,
        tool_stamps: ToolStamps,
    },
    /// A build from a record: its parts, patched where the build keyed tasks.
    Record(Box<Previous>),
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

/// Whether `st` has the size, mtime and inode of `e`.
fn matches(e: &Entry, st: &FileStat) -> bool {
    e.size == st.st_size as u64
        && e.mtime_ns == st.st_mtime * 1_000_000_000 + st.st_mtime_nsec
        && e.ino == st.st_ino
}

/// The indices of the `entries` that `unchanged` rejects or that cannot be stat'ed (following
/// links or not), in parallel. A `stat` spends most of its time walking the path, so each task
/// opens a directory once and stats its entries by name (`fstatat`): entries are grouped by
/// directory (sources are sorted, outputs in plan order).
fn changed(
    root: &Path,
    entries: &[Entry],
    follow: bool,
    unchanged: impl Fn(&Entry, &FileStat) -> bool + Sync,
) -> Vec<usize> {
    const CHUNK: usize = 256;
    let flags = if follow {
        AtFlags::empty()
    } else {
        AtFlags::AT_SYMLINK_NOFOLLOW
    };
    entries
        .par_chunks(CHUNK)
        .enumerate()
        .flat_map_iter(|(c, chunk)| {
            let mut open: Option<(&str, Option<OwnedFd>)> = None;
            let mut out = Vec::new();
            for (j, e) in chunk.iter().enumerate() {
                let (dir, name) = e.path.rsplit_once('/').unwrap_or(("", e.path.as_str()));
                if open.as_ref().is_none_or(|(d, _)| *d != dir) {
                    let fd = nix::fcntl::open(
                        &root.join(dir),
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .ok();
                    open = Some((dir, fd));
                }
                let st = match &open {
                    Some((_, Some(fd))) => fstatat(fd, name, flags).ok(),
                    _ => None,
                };
                if !st.is_some_and(|st| unchanged(e, &st)) {
                    out.push(c * CHUNK + j);
                }
            }
            out
        })
        .collect()
}

/// File type bits of `st_mode`.
mod libc_mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFREG: u32 = 0o100000;
}

impl Record {
    /// The record at `path` if it was written by this flow binary for this request and these
    /// settings.
    pub fn load(path: &Path, request: &str, config: &[u8; 32]) -> Option<Record> {
        use std::io::Read;
        let mut f = std::fs::File::open(path).ok()?;
        let meta = f.metadata().ok()?;
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        f.read_to_end(&mut bytes).ok()?;
        let values_len = checked_values(&bytes)?;
        let shape = &bytes[HEADER + values_len..];
        let (mut head, rest): (Head, &[u8]) = postcard::take_from_bytes(shape).ok()?;
        let current = head.format == FORMAT
            && head.request == request
            && &head.config == config
            && Some(head.exe) == exe_stamp();
        if !current {
            return None;
        }
        let values = &bytes[HEADER..HEADER + values_len];
        let slots = Slots::of(&head);
        if values.len() < slots.key(0) {
            return None;
        }
        head.touched_at_ms = i64::from_le_bytes(values[..8].try_into().ok()?);
        for (i, e) in head.sources.iter_mut().enumerate() {
            get_entry(&values[slots.source(i)..], e);
        }
        for (i, e) in head.outputs.iter_mut().enumerate() {
            get_entry(&values[slots.output(i)..], e);
        }
        let rest = bytes.len() - rest.len();
        let file = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: bytes.len() as u64,
        };
        Some(Record {
            head,
            bytes,
            values_len,
            rest,
            file,
        })
    }

    /// Compares every recorded stamp with the file system (in parallel; nothing is read).
    pub fn check(&self, root: &Path) -> Verdict {
        let h = &self.head;
        let analysis = h.analysis.par_iter().map(|(p, s)| (p, s));
        let analysis_unchanged =
            snapshot::unchanged(root, analysis, h.analysis_taken_at_ns, &h.root_entries)
                && h.tools.unchanged();
        if !analysis_unchanged {
            return Verdict::Stale;
        }
        let sources = changed(root, &h.sources, true, |e, st| {
            let trusted = e.mtime_ns.saturating_add(RACY_WINDOW_NS) <= e.recorded_at_ns;
            trusted && matches(e, st)
        });
        let outputs = changed(root, &h.outputs, false, |e, st| {
            st.st_mode & libc_mode::S_IFMT == libc_mode::S_IFREG
                && matches(e, st)
                && e.dir.as_ref().is_none_or(|d| {
                    std::fs::symlink_metadata(root.join(d)).is_ok_and(|m| m.is_dir())
                })
        });
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
    /// changed; `None` if the rest of the record cannot be decoded.
    pub fn carry(self, root: &Path, sources: &[usize], outputs: &[usize]) -> Option<Carried> {
        let (mut results, body_bytes): (Vec<NodeResult>, &[u8]) =
            postcard::take_from_bytes(self.bytes.get(self.rest..)?).ok()?;
        let body_at = self.bytes.len() - body_bytes.len();
        let body: Body = postcard::from_bytes(body_bytes).ok()?;
        let head = self.head;
        if results.len() != body.nodes.len() {
            return None;
        }
        let values = &self.bytes[HEADER..HEADER + self.values_len];
        let slots = Slots::of(&head);
        let first = first_staged(&results);
        let count = results.len();
        if values.len() != slots.staged(count, first[count]) {
            return None;
        }
        for (i, r) in results.iter_mut().enumerate() {
            r.key = get_key(&values[slots.key(i)..]);
            let at = slots.staged(count, first[i]);
            for (k, s) in r.staged.iter_mut().enumerate() {
                get_staged(&values[at + k * STAGED_BYTES..], s);
            }
        }
        let mut nodes = Vec::with_capacity(body.nodes.len());
        for n in body.nodes {
            let label = Label::parse(&n.label, None).ok()?;
            nodes.push(Action {
                package: label.package().to_owned(),
                label,
                is_group: n.is_group,
                cmd: n.cmd,
                srcs: n.srcs,
                outs: n.outs,
                env: n.env.into_iter().collect(),
                secrets: n.secrets,
                tools: n.tools,
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
                    || results[i]
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
        let mut known = HashMap::new();
        let mut know = |e: &Entry| {
            known.insert(root.join(&e.path).to_string_lossy().into_owned(), e.state());
        };
        for (i, (a, r)) in nodes.iter().zip(&results).enumerate() {
            if a.is_group {
                continue;
            }
            match (dirty[i], r.key) {
                (false, Some(key)) => {
                    let staged = r.staged.iter().map(Staged::to_output).collect();
                    clean.insert(i, (staged, Digest::from_bytes(key)));
                }
                _ => {
                    dirty_sources.extend(a.srcs.iter().map(String::as_str));
                    for &o in &r.outputs {
                        know(head.outputs.get(o as usize)?);
                    }
                }
            }
        }
        for s in &dirty_sources {
            if let Ok(at) = head.sources.binary_search_by(|e| e.path.as_str().cmp(s)) {
                know(&head.sources[at]);
            }
        }
        let sources: Vec<String> = dirty_sources.into_iter().map(str::to_owned).collect();
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
            known,
            clean,
            sources,
            touch: now_ms() - head.touched_at_ms >= TOUCH_EVERY_MS,
            touched_at_ms: head.touched_at_ms,
            previous: Box::new(Previous {
                head,
                results,
                dirty,
                bytes: self.bytes,
                values_len: self.values_len,
                body_at,
                file: self.file,
            }),
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
    pub fn write(&self, path: &Path, basis: Basis) -> bool {
        let bytes = match basis {
            Basis::Analysis {
                analysis,
                tool_stamps,
            } => self.encode_new(&analysis, tool_stamps),
            Basis::Record(previous) => match self.patch(path, previous) {
                Patch::Written => return true,
                Patch::Rewrite(bytes) => Some(bytes),
                Patch::Impossible => None,
            },
        };
        let written = bytes.and_then(|bytes| {
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

    /// The state of the file at `abs` as the build left it.
    fn state_of(&self, abs: &Path) -> Option<FileState> {
        (self.states)(abs.to_str()?)
    }

    /// The result of node `i`, appending its outputs' states to `outputs`.
    fn node_result(&self, i: usize, outputs: &mut Vec<Entry>) -> Option<NodeResult> {
        let a = &self.plan.nodes[i];
        let staged = self.staged.get(i)?.as_ref()?;
        if a.is_group {
            return Some(NodeResult {
                key: None,
                staged: Vec::new(),
                outputs: Vec::new(),
            });
        }
        let out_root = self.root.join("flow-out");
        let rel = |p: &Path| Some(p.strip_prefix(self.root).ok()?.to_str()?.to_owned());
        let mut own = Vec::with_capacity(staged.len());
        for o in staged {
            let (entry_path, dir, digest) = match &o.kind {
                OutputKind::File { digest, .. } => (out_root.join(&o.path), None, digest),
                OutputKind::Tree { digest, .. } => {
                    let dir = out_root.join(&o.path);
                    (tree_marker(&dir), Some(rel(&dir)?), digest)
                }
            };
            let state = self.state_of(&entry_path)?;
            if state.digest != *digest {
                return None;
            }
            own.push(outputs.len() as u32);
            outputs.push(Entry::from_state(rel(&entry_path)?, &state, dir));
        }
        Some(NodeResult {
            key: Some(*self.keys.get(i)?.as_ref()?.as_bytes()),
            staged: staged.iter().map(Staged::of).collect(),
            outputs: own,
        })
    }

    fn encode_new(&self, analysis: &AnalysisInputs, tool_stamps: ToolStamps) -> Option<Vec<u8>> {
        let sources = self
            .plan
            .all_sources()
            .into_iter()
            .map(|s| {
                let state = self.state_of(&self.root.join(&s))?;
                Some(Entry::from_state(s, &state, None))
            })
            .collect::<Option<Vec<_>>>()?;
        let mut outputs = Vec::new();
        let results = (0..self.plan.nodes.len())
            .map(|i| self.node_result(i, &mut outputs))
            .collect::<Option<Vec<_>>>()?;
        let nodes = self
            .plan
            .nodes
            .iter()
            .map(|a| Node {
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
            })
            .collect();
        let head = Head {
            format: FORMAT,
            exe: exe_stamp()?,
            request: self.request.to_owned(),
            config: self.config,
            touched_at_ms: self.touched_at_ms,
            analysis_taken_at_ns: analysis.taken_at_ns,
            root_entries: analysis.root_entries.clone(),
            analysis: analysis.stamps.clone(),
            tools: tool_stamps,
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
        let body = postcard::to_stdvec(&body).ok()?;
        encode(&head, &results, &body)
    }

    /// The previous record with the tasks this build keyed brought up to date (their sources'
    /// and outputs' states, keys and outputs), written over the changed values of the file it
    /// was read from; the plan's bytes are kept as they were.
    fn patch(&self, path: &Path, previous: Box<Previous>) -> Patch {
        let Previous {
            mut head,
            mut results,
            dirty,
            mut bytes,
            values_len,
            body_at,
            file,
        } = *previous;
        if results.len() != self.plan.nodes.len() || dirty.len() != results.len() {
            return Patch::Impossible;
        }
        let (front, body) = bytes.split_at_mut(body_at);
        let values = &mut front[HEADER..HEADER + values_len];
        let slots = Slots::of(&head);
        let first = first_staged(&results);
        let nodes = results.len();
        let mut ranges = vec![(0, 8)];
        head.touched_at_ms = self.touched_at_ms;
        values[..8].copy_from_slice(&self.touched_at_ms.to_le_bytes());
        let mut keyed_sources = BTreeSet::new();
        for (i, a) in self.plan.nodes.iter().enumerate() {
            if !dirty[i] {
                continue;
            }
            keyed_sources.extend(a.srcs.iter().map(String::as_str));
            let mut fresh = Vec::new();
            let Some(mut result) = self.node_result(i, &mut fresh) else {
                return Patch::Impossible;
            };
            let old = &results[i];
            let same_shape = old.outputs.len() == fresh.len()
                && old.staged.len() == result.staged.len()
                && old.key.is_some() == result.key.is_some()
                && old
                    .staged
                    .iter()
                    .zip(&result.staged)
                    .all(|(o, n)| o.path == n.path);
            if !same_shape {
                return Patch::Impossible;
            }
            for (&slot, entry) in old.outputs.iter().zip(fresh) {
                let Some(e) = head.outputs.get_mut(slot as usize) else {
                    return Patch::Impossible;
                };
                let at = slots.output(slot as usize);
                put_entry(&mut values[at..at + ENTRY_BYTES], &entry);
                ranges.push((at, ENTRY_BYTES));
                *e = entry;
            }
            let at = slots.key(i);
            put_key(&mut values[at..at + KEY_BYTES], result.key);
            ranges.push((at, KEY_BYTES));
            let at = slots.staged(nodes, first[i]);
            for (k, st) in result.staged.iter().enumerate() {
                let at = at + k * STAGED_BYTES;
                put_staged(&mut values[at..at + STAGED_BYTES], st);
            }
            ranges.push((at, result.staged.len() * STAGED_BYTES));
            result.outputs = old.outputs.clone();
            results[i] = result;
        }
        for s in keyed_sources {
            let Ok(at) = head.sources.binary_search_by(|e| e.path.as_str().cmp(s)) else {
                return Patch::Impossible;
            };
            let Some(state) = self.state_of(&self.root.join(s)) else {
                return Patch::Impossible;
            };
            head.sources[at] = Entry::from_state(s.to_owned(), &state, None);
            let off = slots.source(at);
            put_entry(&mut values[off..off + ENTRY_BYTES], &head.sources[at]);
            ranges.push((off, ENTRY_BYTES));
        }
        if patch_file(path, file, values, ranges) {
            return Patch::Written;
        }
        match encode(&head, &results, body) {
            Some(bytes) => Patch::Rewrite(bytes),
            None => Patch::Impossible,
        }
    }
}

/// How [`Capture::patch`] went.
enum Patch {
    /// The changed values and the checksum were written into the record read.
    Written,
    /// That file is gone or was replaced: these bytes are the whole record.
    Rewrite(Vec<u8>),
    /// The build does not fit the record's shape (it cannot happen with the same plan): no
    /// record.
    Impossible,
}

/// Writes the `ranges` (offset, length) of `values` into the record at `path`, if it is still
/// the file `id` a build read them from, and then their checksum; false if it is not, or a write
/// failed. Ranges close together go in one write. A reader never trusts a half-patched record:
/// until the checksum is written, the values do not match it (and a build killed in between
/// leaves a record the next build ignores).
fn patch_file(path: &Path, id: FileId, values: &[u8], mut ranges: Vec<(usize, usize)>) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) else {
        return false;
    };
    let now = f.metadata().ok().map(|m| FileId {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
    });
    if now != Some(id) {
        return false;
    }
    ranges.sort_unstable();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for (at, len) in ranges {
        match spans.last_mut() {
            Some((_, end)) if at <= *end + COALESCE => *end = (*end).max(at + len),
            _ => spans.push((at, at + len)),
        }
    }
    let sum = blake3::hash(values);
    spans
        .iter()
        .all(|&(a, b)| f.write_all_at(&values[a..b], (HEADER + a) as u64).is_ok())
        && f.write_all_at(sum.as_bytes(), MAGIC.len() as u64).is_ok()
}

/// Offsets in the values: `touched_at_ms`, then every source's state, every output's state,
/// every node's key, and every staged output, node after node.
struct Slots {
    sources: usize,
    outputs: usize,
}

impl Slots {
    fn of(head: &Head) -> Slots {
        Slots {
            sources: head.sources.len(),
            outputs: head.outputs.len(),
        }
    }

    fn source(&self, i: usize) -> usize {
        8 + i * ENTRY_BYTES
    }

    fn output(&self, i: usize) -> usize {
        8 + (self.sources + i) * ENTRY_BYTES
    }

    fn key(&self, node: usize) -> usize {
        8 + (self.sources + self.outputs) * ENTRY_BYTES + node * KEY_BYTES
    }

    /// The `k`th staged output of all, with `nodes` nodes (`k` = everything: the values' length).
    fn staged(&self, nodes: usize, k: usize) -> usize {
        self.key(nodes) + k * STAGED_BYTES
    }
}

/// For each node, how many staged outputs the nodes before it have; then the total.
fn first_staged(results: &[NodeResult]) -> Vec<usize> {
    let mut first = Vec::with_capacity(results.len() + 1);
    let mut n = 0;
    for r in results {
        first.push(n);
        n += r.staged.len();
    }
    first.push(n);
    first
}

fn put_entry(v: &mut [u8], e: &Entry) {
    v[..8].copy_from_slice(&e.size.to_le_bytes());
    v[8..16].copy_from_slice(&e.mtime_ns.to_le_bytes());
    v[16..24].copy_from_slice(&e.ino.to_le_bytes());
    v[24..56].copy_from_slice(&e.digest);
    v[56..64].copy_from_slice(&e.recorded_at_ns.to_le_bytes());
}

/// Reads the state of `e` from `v` (at least [`ENTRY_BYTES`] long: the caller checked).
fn get_entry(v: &[u8], e: &mut Entry) {
    let word = |at: usize| <[u8; 8]>::try_from(&v[at..at + 8]).expect("8 bytes");
    e.size = u64::from_le_bytes(word(0));
    e.mtime_ns = i64::from_le_bytes(word(8));
    e.ino = u64::from_le_bytes(word(16));
    e.digest.copy_from_slice(&v[24..56]);
    e.recorded_at_ns = i64::from_le_bytes(word(56));
}

fn put_key(v: &mut [u8], key: Option<[u8; 32]>) {
    v[0] = u8::from(key.is_some());
    v[1..33].copy_from_slice(&key.unwrap_or_default());
}

fn get_key(v: &[u8]) -> Option<[u8; 32]> {
    (v[0] == 1).then(|| v[1..33].try_into().expect("32 bytes"))
}

fn put_staged(v: &mut [u8], s: &Staged) {
    v[..32].copy_from_slice(&s.digest);
    v[32..40].copy_from_slice(&s.size.to_le_bytes());
    v[40] = u8::from(s.tree);
    v[41] = u8::from(s.executable);
}

fn get_staged(v: &[u8], s: &mut Staged) {
    s.digest.copy_from_slice(&v[..32]);
    s.size = u64::from_le_bytes(v[32..40].try_into().expect("8 bytes"));
    s.tree = v[40] == 1;
    s.executable = v[41] == 1;
}

/// The length of the values if `bytes` starts with `MAGIC` and the values match their checksum.
fn checked_values(bytes: &[u8]) -> Option<usize> {
    let after = bytes.strip_prefix(MAGIC)?;
    let sum: [u8; 32] = after.get(..32)?.try_into().ok()?;
    let len = usize::try_from(u64::from_le_bytes(after.get(32..40)?.try_into().ok()?)).ok()?;
    let values = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    (blake3::hash(values).as_bytes() == &sum).then_some(len)
}

/// The whole record: `MAGIC`, the values' checksum and length, the values, the head, the
/// results, the plan's bytes.
fn encode(head: &Head, results: &[NodeResult], body: &[u8]) -> Option<Vec<u8>> {
    let slots = Slots::of(head);
    let first = first_staged(results);
    let nodes = results.len();
    let mut values = vec![0u8; slots.staged(nodes, first[nodes])];
    values[..8].copy_from_slice(&head.touched_at_ms.to_le_bytes());
    for (i, e) in head.sources.iter().enumerate() {
        put_entry(&mut values[slots.source(i)..], e);
    }
    for (i, e) in head.outputs.iter().enumerate() {
        put_entry(&mut values[slots.output(i)..], e);
    }
    for (i, r) in results.iter().enumerate() {
        put_key(&mut values[slots.key(i)..], r.key);
        let at = slots.staged(nodes, first[i]);
        for (k, st) in r.staged.iter().enumerate() {
            put_staged(&mut values[at + k * STAGED_BYTES..], st);
        }
    }
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(blake3::hash(&values).as_bytes());
    bytes.extend_from_slice(&(values.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&values);
    bytes.extend(postcard::to_stdvec(head).ok()?);
    bytes.extend(postcard::to_stdvec(results).ok()?);
    bytes.extend_from_slice(body);
    Some(bytes)
}

pub fn now_ms() -> i64 {
    snapshot::now_ns() / 1_000_000
}
