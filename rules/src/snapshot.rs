//! `Snapshot`: an evaluated workspace, saved so that the next run can skip walking the tree and
//! evaluating Starlark when nothing that evaluation depends on has changed.
//!
//! Evaluation depends only on (DESIGN.md): the text of BUILD and `.star` files, the `[vars]`
//! values, the prelude (part of the binary) and the file listing that `glob()` answers from. The
//! snapshot therefore records:
//! - the state (size, mtime, inode) of every BUILD file, every loaded workspace `.star` file and
//!   every `.gitignore` — a changed one means re-evaluate;
//! - the mtime and inode of every walked directory — a file created, deleted or renamed in a
//!   directory changes that directory's mtime, which means the listing (and so globs) may differ;
//! - a fingerprint of flow's version, the prelude and the `[vars]` values.
//!
//! `validate` only stats (a few thousand `stat` calls); nothing is read. Spans are stored as byte
//! ranges into their package's BUILD file, whose text is stored once per package.
//!
//! The file that holds a snapshot carries a digest of every byte (`engine/snapshot_file.rs`):
//! a damaged one is never used.
//!
//! Limit: an edit that keeps a file's size, mtime and inode is not seen (as for every
//! stat-based check in flow, the racy-edit window is guarded by comparing with the recording
//! time).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rayon::iter::IntoParallelIterator;
use serde::{Deserialize, Serialize};

use crate::error::SourceSpan;
use crate::eval::Evaluation;
use crate::label::Label;
use crate::listing::Listing;
use crate::target::{GlobCall, Package, Target, TargetKind};
use crate::visibility::VisibilityRule;

/// Bumped when the snapshot format changes.
const FORMAT: u32 = 2;

/// A file's or directory's identity as `stat` gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i64,
    pub ino: u64,
}

impl Stamp {
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(Stamp {
            size: if m.is_dir() { 0 } else { m.len() },
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ino: m.ino(),
        })
    }
}

#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    format: u32,
    /// flow's version, the prelude and `[vars]`, hashed.
    fingerprint: String,
    /// When the snapshot was taken (ns since the epoch): stamps newer than this minus the racy
    /// window are not trusted.
    taken_at_ns: i64,
    /// Workspace-relative path → stamp, for every file and directory evaluation depends on
    /// (except the root directory itself: see `root_entries`).
    stamps: BTreeMap<String, Stamp>,
    /// The names in the root directory, without `.git`, `.flow` and `flow-out`: the root's mtime
    /// also changes when flow creates its own directories there, which would throw the snapshot
    /// away for nothing.
    root_entries: Vec<String>,
    listing: BTreeMap<String, Vec<String>>,
    packages: Vec<PackageSnap>,
    module_loads: BTreeMap<String, Vec<String>>,
}

#[derive(Serialize, Deserialize)]
struct PackageSnap {
    name: String,
    build_file: String,
    source: String,
    targets: Vec<TargetSnap>,
    globs: Vec<(Vec<String>, Vec<String>)>,
    loads: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct TargetSnap {
    name: String,
    kind: TargetKind,
    generator: Option<String>,
    cmd: Option<String>,
    srcs: Vec<String>,
    deps: Vec<String>,
    outs: Vec<String>,
    env: BTreeMap<String, String>,
    secrets: Vec<String>,
    tools: Vec<String>,
    timeout_ms: Option<u64>,
    retries: u32,
    tags: Vec<String>,
    visibility: Option<Vec<String>>,
    sandbox: bool,
    #[serde(default = "yes")]
    cache: bool,
    doc: Option<String>,
    at: (usize, usize),
    dep_spans: Vec<(usize, usize)>,
}

/// How much older than the snapshot a stamp must be to be trusted (coarse timestamps).
const RACY_WINDOW: Duration = Duration::from_secs(2);

impl Snapshot {
    /// Captures a clean evaluation (one without errors). `started_at_ns` is when the evaluation
    /// began (from [`now_ns`]): a file written after that moment, while it was being read, has a
    /// newer mtime and so is never trusted (the racy-window rule below), although its stamp is
    /// taken after the evaluation.
    pub fn capture(
        root: &Path,
        evaluation: &Evaluation,
        fingerprint: String,
        started_at_ns: i64,
    ) -> Option<Snapshot> {
        if !evaluation.errors.is_empty() || !evaluation.failed_packages.is_empty() {
            return None;
        }
        let taken_at_ns = started_at_ns;
        let mut paths: BTreeSet<String> = BTreeSet::new();
        for dir in &evaluation.listing.dirs {
            paths.insert(dir.clone());
        }
        for (pkg, files) in &evaluation.listing.packages {
            for f in files {
                if f == ".gitignore" || f.ends_with("/.gitignore") || f.ends_with(".star") {
                    paths.insert(join(pkg, f));
                }
            }
        }
        for p in &evaluation.packages {
            paths.insert(p.build_file.clone());
        }
        for m in evaluation.module_loads.keys() {
            if let Some(rel) = workspace_module_path(m) {
                paths.insert(rel);
            }
        }
        let mut stamps = BTreeMap::new();
        for p in paths {
            stamps.insert(p.clone(), Stamp::of(&root.join(&p))?);
        }
        let packages = evaluation
            .packages
            .iter()
            .map(|p| PackageSnap {
                name: p.name.clone(),
                build_file: p.build_file.clone(),
                source: p.source.to_string(),
                targets: p.targets.iter().map(TargetSnap::from_target).collect(),
                globs: p
                    .globs
                    .iter()
                    .map(|g| (g.include.clone(), g.exclude.clone()))
                    .collect(),
                loads: p.loads.clone(),
            })
            .collect();
        Some(Snapshot {
            format: FORMAT,
            fingerprint,
            taken_at_ns,
            stamps,
            root_entries: root_entries(root)?,
            listing: evaluation.listing.packages.clone(),
            packages,
            module_loads: evaluation.module_loads.clone(),
        })
    }

    /// Whether everything the snapshot's evaluation depended on is unchanged (stats only).
    pub fn is_valid(&self, root: &Path, fingerprint: &str) -> bool {
        if self.format != FORMAT || self.fingerprint != fingerprint {
            return false;
        }
        unchanged(root, &self.stamps, self.taken_at_ns, &self.root_entries)
    }

    /// Every workspace-relative path evaluation depends on, with its stamp.
    pub fn stamps(&self) -> &BTreeMap<String, Stamp> {
        &self.stamps
    }

    /// When the evaluation began: stamps are trusted only if older than this minus the racy
    /// window.
    pub fn taken_at_ns(&self) -> i64 {
        self.taken_at_ns
    }

    /// The root directory's entries when the snapshot was taken (see [`root_entries`]).
    pub fn root_entries(&self) -> &[String] {
        &self.root_entries
    }

    /// The saved evaluation.
    pub fn into_evaluation(self) -> Option<Evaluation> {
        let mut packages = Vec::with_capacity(self.packages.len());
        for p in self.packages {
            let source: Arc<str> = Arc::from(p.source);
            let mut targets = Vec::with_capacity(p.targets.len());
            for t in p.targets {
                targets.push(t.into_target(&p.name, &p.build_file, &source)?);
            }
            packages.push(Package {
                name: p.name,
                build_file: p.build_file,
                source,
                targets,
                globs: p
                    .globs
                    .into_iter()
                    .map(|(include, exclude)| GlobCall { include, exclude })
                    .collect(),
                loads: p.loads,
                broken: Vec::new(),
            });
        }
        Some(Evaluation {
            packages,
            listing: Listing {
                packages: self.listing,
                dirs: Vec::new(),
            },
            module_loads: self.module_loads,
            ..Default::default()
        })
    }
}

impl TargetSnap {
    fn from_target(t: &Target) -> TargetSnap {
        TargetSnap {
            name: t.label.name().to_owned(),
            kind: t.kind,
            generator: t.generator.clone(),
            cmd: t.cmd.clone(),
            srcs: t.srcs.clone(),
            deps: t.deps.iter().map(|d| d.to_string()).collect(),
            outs: t.outs.clone(),
            env: t.env.clone(),
            secrets: t.secrets.clone(),
            tools: t.tools.clone(),
            timeout_ms: t.timeout.map(|d| d.as_millis() as u64),
            retries: t.retries,
            tags: t.tags.clone(),
            visibility: t
                .visibility
                .as_ref()
                .map(|v| v.iter().map(|r| r.to_string()).collect()),
            sandbox: t.sandbox,
            cache: t.cache,
            doc: t.doc.clone(),
            at: (t.at.start, t.at.end),
            dep_spans: t.dep_spans.iter().map(|s| (s.start, s.end)).collect(),
        }
    }

    fn into_target(self, package: &str, build_file: &str, source: &Arc<str>) -> Option<Target> {
        let span = |(s, e): (usize, usize)| SourceSpan::new(build_file, source.clone(), s, e);
        Some(Target {
            label: Label::new(package, &self.name).ok()?,
            kind: self.kind,
            generator: self.generator,
            cmd: self.cmd,
            srcs: self.srcs,
            deps: self
                .deps
                .iter()
                .map(|d| Label::parse(d, None).ok())
                .collect::<Option<Vec<_>>>()?,
            outs: self.outs,
            env: self.env,
            secrets: self.secrets,
            tools: self.tools,
            timeout: self.timeout_ms.map(Duration::from_millis),
            retries: self.retries,
            tags: self.tags,
            visibility: match self.visibility {
                Some(v) => Some(
                    v.iter()
                        .map(|r| VisibilityRule::parse(r).ok())
                        .collect::<Option<Vec<_>>>()?,
                ),
                None => None,
            },
            sandbox: self.sandbox,
            cache: self.cache,
            doc: self.doc,
            at: span(self.at),
            dep_spans: self.dep_spans.into_iter().map(span).collect(),
        })
    }
}

/// The sorted names in `root`, without the directories flow itself creates or never walks.
/// Whether the root's entries and every stamp are as recorded at `taken_at_ns` (stats only, in
/// parallel), each stamp older than that by the racy window. What `Snapshot::is_valid` checks,
/// also for the build record, which keeps the same stamps.
pub fn unchanged<'a, S>(root: &Path, stamps: S, taken_at_ns: i64, entries: &[String]) -> bool
where
    S: IntoParallelIterator<Item = (&'a String, &'a Stamp)>,
{
    use rayon::prelude::*;
    let limit = taken_at_ns - RACY_WINDOW.as_nanos() as i64;
    root_entries(root).as_deref() == Some(entries)
        && stamps
            .into_par_iter()
            .all(|(p, s)| s.mtime_ns < limit && Stamp::of(&root.join(p)).as_ref() == Some(s))
}

/// The names in the root directory, sorted, without the ones flow itself creates there.
pub fn root_entries(root: &Path) -> Option<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !crate::listing::ALWAYS_SKIPPED.contains(&n.as_str()))
        .collect();
    names.sort();
    Some(names)
}

fn join(dir: &str, file: &str) -> String {
    if dir.is_empty() {
        file.to_owned()
    } else {
        format!("{dir}/{file}")
    }
}

/// `//tools:defs.star` → `tools/defs.star`; prelude modules → `None`.
fn workspace_module_path(module: &str) -> Option<String> {
    let rest = module.strip_prefix("//")?;
    let (dir, file) = rest.split_once(':')?;
    Some(join(dir, file))
}

/// Now, in ns since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// A fingerprint of what evaluation depends on besides files: flow's version, the prelude and
/// the `[vars]` values.
pub fn fingerprint(vars: &BTreeMap<String, serde_json::Value>) -> String {
    let mut text = String::from(env!("CARGO_PKG_VERSION"));
    for (path, contents) in crate::prelude::FILES {
        text.push_str(path);
        text.push_str(contents);
    }
    text.push_str(&serde_json::to_string(vars).unwrap_or_default());
    // Not a security boundary: any stable hash will do; keep the rules crate free of blake3.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}-{}", text.len())
}

fn yes() -> bool {
    true
}
