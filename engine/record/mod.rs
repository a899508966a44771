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
//! - every source's file state (size, mtime, ctime, inode, digest, when recorded) as the build
//!   hashed it;
//! - every output's file state as flow wrote or verified it under `flow-out/` (a directory
//!   output by its tree marker, whose mtime is the stamp of the tree's file states: the check
//!   walks the tree, an `lstat` per entry);
//! - the plan itself, with each action's key and the outputs its dependents see.
//!
//! The next build with the same patterns [`Record::load`]s it and [`Record::check`]s it, in
//! parallel, with `stat` calls only:
//! - analysis inputs, `flow.toml`, the binary or the tools changed: the record says nothing, and
//!   the build starts from analysis (`None`);
//! - otherwise it says which sources and outputs changed ([`Changes`], often none), and
//!   [`Record::open`] gives the plan, every task's last result and the nodes that read a
//!   changed source or own a changed output. The record decides nothing: the rebuilder's
//!   reuse decision (`rebuilder::reuse`) carries over what no change reaches, and a build whose
//!   every action is carried is the no-op, which prints what a full build would have printed
//!   and exits, without opening the database, taking the workspace lock or starting the
//!   runner. What is not carried is keyed as usual (cache, early cutoff); only its sources are
//!   hashed ([`Opened::keyed`]).
//!
//! Trust follows the rules of the rest of flow: a source's state is trusted only if its mtime and
//! ctime are older than its recording by the racy windows (`snapshot::settled`), so a same-tick
//! rewrite is never missed; an analysis stamp only if older than the evaluation's start by the
//! same windows; an output's state because only flow writes `flow-out/`. Every comparison
//! includes the ctime, which a `chmod` or a rewrite that sets the mtime back (`cp -p`) changes. Anything not trusted
//! counts as changed. A record is written only after a build in which every planned action
//! succeeded, from the states that build used (never from a later `stat`), and removed after any
//! other outcome, by `flow cache gc`, `flow cache verify --fix` and `flow clean --cache`, since
//! carried actions name blobs that those may remove. It is a cache of a proof, so a record that
//! is missing, unreadable or of another format only costs the next build its speed.
//!
//! Layout (docs/cache-format.md): `MAGIC`, the blake3 of everything after it, the values'
//! length, the values, then the postcard-encoded head, results and plan. The values are what a build changes,
//! at fixed widths ([`Slots`]): `touched_at_ms`, every source's and output's state, every node's
//! key, every staged output's digest, size and kind. The postcard parts hold only what the plan
//! fixes (paths, labels, stamps of analysis), with the value fields `serde(skip)`ped. A build
//! from analysis writes the whole file and renames it into place; a build from the record
//! patches the values it changed in the file it read (`pwrite`, no new file: rewriting 2 MB cost
//! a leaf edit 6 ms of its ~50), then writes the new digest. [`Record::load`] trusts the record
//! only if all of it matches the digest, so a build killed mid-patch, a no-op reading beside a
//! patch (it takes no lock), or a damaged byte anywhere (a command in the plan included) finds
//! the record wanting and goes the long way.

mod capture;
mod format;
mod stamps;
mod tools;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use flow_cache::FileState;
use flow_rules::snapshot::{self, settled};
use rayon::prelude::*;

use crate::analysis::AnalysisInputs;
use crate::clock::Clock;
use crate::config::Config;
use crate::plan::Plan;
use crate::rebuilder::{Carried, LastResult};

pub use capture::Capture;
pub use tools::ToolStamps;

use format::*;
use stamps::{changed, libc_mode, matches};
use tools::exe_stamp;

/// The file extension of records in `<cache>/analysis/`.
const EXTENSION: &str = "rec";

/// Carried actions' cache entries are marked used (for `flow cache gc`'s LRU order) at least
/// this often: a no-op older than that goes through the runner once to mark them.
const TOUCH_EVERY_MS: i64 = flow_cache::TOUCH_AFTER_MS;

/// What [`Record::check`] found changed since the record was written (indices into its
/// sources and outputs): changed, or no longer trusted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub sources: Vec<usize>,
    pub outputs: Vec<usize>,
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

/// A record opened for a build: the plan and what the last build left, before the reuse
/// decision.
pub struct Opened {
    pub plan: Plan,
    pub tools: HashMap<String, String>,
    /// Per node, the last result (`None` for groups).
    pub last: Vec<Option<LastResult>>,
    /// The nodes that read a changed source or own a changed output.
    pub changed: Vec<usize>,
    /// Whether the carried tasks' cache entries must be marked used this time.
    pub touch: bool,
    /// When they were last marked used.
    pub touched_at_ms: i64,
    head: Head,
    results: Vec<NodeResult>,
    bytes: Vec<u8>,
    values_len: usize,
    body_at: usize,
    file: FileId,
}

/// What a build from the record keys: the file states and sources of the tasks not carried,
/// and the record to patch afterwards.
pub struct Keyed {
    pub plan: Plan,
    pub tools: HashMap<String, String>,
    /// File states of the sources and outputs of the tasks to key, by absolute path (the
    /// hasher's table: nothing is read from the database).
    pub known: HashMap<String, FileState>,
    /// The sources of those tasks, which the build hashes (sorted).
    pub sources: Vec<String>,
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
pub fn request(patterns: &[String], shard: Option<&crate::shard::Shard>) -> String {
    let patterns = if patterns.is_empty() {
        "//...".to_owned()
    } else {
        patterns.join("\n")
    };
    match shard {
        Some(shard) => format!("{patterns}\nshard {}", shard.record_key()),
        None => patterns,
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

/// The largest record read: far above the record of a 100,000-action workspace; a larger file
/// is not one flow wrote.
const MAX_RECORD_BYTES: u64 = 1 << 30;

/// Removes the record at `path`, if any.
pub fn forget(path: &Path) {
    let _ = std::fs::remove_file(path);
}

impl Record {
    /// The record at `path` if it was written by this flow binary for this request and these
    /// settings.
    pub fn load(path: &Path, request: &str, config: &[u8; 32]) -> Option<Record> {
        use flow_cache::regular::{open_regular, read_at_most, Links};
        use std::os::unix::fs::MetadataExt;
        // A regular file, not a link, FIFO or device (which would block or never end).
        let (f, meta) = open_regular(path, Links::Refuse).ok()?;
        let bytes = read_at_most(f, meta.len(), MAX_RECORD_BYTES).ok()?;
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
        read_head_values(&bytes[HEADER..HEADER + values_len], &mut head)?;
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

    /// Compares every recorded stamp with the file system (in parallel; nothing is read):
    /// `None` when analysis may differ (the record says nothing), else what changed.
    pub fn check(&self, root: &Path) -> Option<Changes> {
        let h = &self.head;
        let analysis = h.analysis.par_iter().map(|(p, s)| (p, s));
        let analysis_unchanged = snapshot::unchanged(
            root,
            analysis,
            h.analysis_taken_at_ns,
            &h.root_entries,
            &h.links,
        ) && h.tools.unchanged();
        if !analysis_unchanged {
            return None;
        }
        let sources = changed(root, &h.sources, true, |e, st| {
            settled(e.mtime_ns, e.ctime_ns, e.recorded_at_ns) && matches(e, st)
        });
        let outputs = changed(root, &h.outputs, false, |e, st| {
            st.st_mode & libc_mode::S_IFMT == libc_mode::S_IFREG
                && matches(e, st)
                // A file output has a mode flow writes: a `chmod` (to 000, say) keeps size,
                // mtime and inode. (Which of the two, the results say; a change between them
                // is seen by the reuse decision of a build from analysis.)
                && (e.dir.is_some()
                    || [false, true].map(flow_cache::output_mode).contains(&(st.st_mode & 0o7777)))
                // A directory output: its marker's mtime is the stamp of the tree's file
                // states as flow wrote them (`TreeStamp`): an edit inside it is a change.
                && e.dir
                    .as_ref()
                    .is_none_or(|d| flow_cache::TreeStamp::vouched_by(&root.join(d), e.mtime_ns))
        });
        Some(Changes { sources, outputs })
    }

    /// The no-op: when nothing changed, the carried tasks' use times are not due, and the
    /// reuse decision carries every task when nothing changed (taken when the record was
    /// written, see `Head::unchanged_carries`), the labels of the tasks. The plan is not
    /// decoded for this (it cost a no-op of 1,000 packages 5 ms of its ~40).
    pub fn no_op(&self, changes: &Changes, clock: &Clock) -> Option<&[String]> {
        let touch_due = clock.now_ms() - self.head.touched_at_ms >= TOUCH_EVERY_MS;
        let unchanged = changes.sources.is_empty() && changes.outputs.is_empty();
        let labels = self.head.unchanged_carries.as_deref()?;
        (unchanged && !touch_due).then_some(labels)
    }

    /// The plan, every task's last result and the nodes `changes` reach directly; `None` if
    /// the rest of the record cannot be decoded.
    pub fn open(self, changes: &Changes, clock: &Clock) -> Option<Opened> {
        let profile = crate::profile::Profile::from_env();
        let (mut results, body_bytes): (Vec<NodeResult>, &[u8]) =
            postcard::take_from_bytes(self.bytes.get(self.rest..)?).ok()?;
        let body_at = self.bytes.len() - body_bytes.len();
        let body: Body = postcard::from_bytes(body_bytes).ok()?;
        profile.mark("build record: decode the plan");
        let head = self.head;
        if results.len() != body.nodes.len() {
            return None;
        }
        read_values(
            &self.bytes[HEADER..HEADER + self.values_len],
            &head,
            &mut results,
        )?;
        let n = body.nodes.len();
        if body.nodes.iter().any(|a| a.deps.iter().any(|&d| d >= n)) {
            return None;
        }
        let changed_sources: HashSet<&str> = changes
            .sources
            .iter()
            .filter_map(|&i| head.sources.get(i).map(|e| e.path.as_str()))
            .collect();
        let changed_outputs: HashSet<u32> = changes.outputs.iter().map(|&i| i as u32).collect();
        let changed = (0..n)
            .filter(|&i| {
                body.nodes[i]
                    .srcs
                    .iter()
                    .any(|s| changed_sources.contains(s.as_str()))
                    || results[i]
                        .outputs
                        .iter()
                        .any(|o| changed_outputs.contains(o))
            })
            .collect();
        let last = body
            .nodes
            .iter()
            .zip(&results)
            .map(|(a, r)| {
                let key = r.key.filter(|_| a.kind.runs())?;
                Some(LastResult {
                    staged: r.staged.iter().map(Staged::to_output).collect(),
                    key: flow_cache::Digest::from_bytes(key),
                })
            })
            .collect();
        let requested = body.requested.iter().map(|&r| r as usize).collect();
        Some(Opened {
            plan: Plan::from_nodes(body.nodes, requested),
            tools: body.tools.into_iter().collect(),
            last,
            changed,
            touch: clock.now_ms() - head.touched_at_ms >= TOUCH_EVERY_MS,
            touched_at_ms: head.touched_at_ms,
            head,
            results,
            bytes: self.bytes,
            values_len: self.values_len,
            body_at,
            file: self.file,
        })
    }
}

impl Opened {
    /// After the reuse decision carried `carried`: the states and sources of the rest, which
    /// the build keys, and the record to patch where it does.
    pub fn keyed(self, root: &Path, carried: &Carried) -> Option<Keyed> {
        let Opened {
            plan,
            tools,
            head,
            results,
            bytes,
            values_len,
            body_at,
            file,
            ..
        } = self;
        let root_known = |known: &mut HashMap<String, FileState>, e: &Entry| {
            known.insert(root.join(&e.path).to_string_lossy().into_owned(), e.state());
        };
        let mut dirty = vec![false; plan.nodes.len()];
        let mut dirty_sources = BTreeSet::new();
        let mut known = HashMap::new();
        for i in plan.actions() {
            if carried.get(i).is_some() {
                continue;
            }
            dirty[i] = true;
            dirty_sources.extend(plan.nodes[i].srcs.iter().map(String::as_str));
            for &o in &results[i].outputs {
                root_known(&mut known, head.outputs.get(o as usize)?);
            }
        }
        for s in &dirty_sources {
            if let Ok(at) = head.sources.binary_search_by(|e| e.path.as_str().cmp(s)) {
                root_known(&mut known, &head.sources[at]);
            }
        }
        let sources = dirty_sources.into_iter().map(str::to_owned).collect();
        Some(Keyed {
            plan,
            tools,
            known,
            sources,
            previous: Box::new(Previous {
                head,
                results,
                dirty,
                bytes,
                values_len,
                body_at,
                file,
            }),
        })
    }
}
