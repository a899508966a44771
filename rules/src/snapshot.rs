//! `Snapshot`: an evaluated workspace, saved so that the next run can skip walking the tree and
//! evaluating Starlark when nothing that evaluation depends on has changed.
//!
//! Evaluation depends only on (DESIGN.md): the text of BUILD and `.star` files, the `[vars]`
//! values, the prelude (part of the binary) and the file listing that `glob()` answers from. The
//! snapshot therefore records:
//! - the [`Stamp`] (size, mtime, ctime, inode) of every BUILD file, every loaded workspace
//!   `.star` file and every `.gitignore` of a walked directory (listed or not: one that ignores
//!   itself still applies) — a changed one means re-evaluate. A symlink is stamped by the file
//!   it leads to (`stat`, not `lstat`), so an edit of a symlinked BUILD file's target is seen;
//!   the link itself can only be replaced, which changes its directory's stamp;
//! - the stamp of every walked directory — a file created, deleted or renamed in a directory
//!   changes that directory's mtime and ctime, which means the listing (and so globs) may differ;
//! - every symlink the walk met and whether it led to a file (the listing holds links to files
//!   only): a target that appears, disappears or changes kind changes the listing without
//!   touching the link's directory;
//! - a fingerprint of flow's version, the prelude and the `[vars]` values.
//!
//! `validate` only stats (a few thousand `stat` calls); nothing is read. Spans are stored as byte
//! ranges into their package's BUILD file, whose text is stored once per package.
//!
//! Why ctime: any write, `chmod`, rename or `touch -d` sets it to the current time, and no call
//! sets it back, so an edit that restores the size and mtime (`cp -p`) is still seen. A stamp is
//! trusted only when [`settled`] before the moment it vouches for: an edit within the same
//! timestamp tick would leave it unchanged.
//!
//! The file that holds a snapshot carries a digest of every byte (`engine/snapshot_file.rs`):
//! a damaged one is never used.

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
const FORMAT: u32 = 4;

/// How much older than the moment a recording vouches for a file's mtime must be for the
/// recorded state to be trusted: covers coarse timestamp granularity (ext4 and tmpfs stamp
/// with a clock that ticks every few ms; FAT keeps 2 s). Shared by every stat-based check in
/// flow: the file-state table, the build record, this snapshot.
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// How much older than that moment a file's ctime must be, when it has sub-second precision.
/// The kernel stamps ctimes from a clock that ticks at least every 10 ms (HZ ≥ 100), so a later
/// change cannot get the same ctime once the recording is this far past it. A ctime of whole
/// seconds is taken for a file system that keeps seconds, and must be [`RACY_WINDOW_NS`] old.
pub const CTIME_WINDOW_NS: i64 = 50_000_000;

/// Whether a file state whose times are `mtime_ns` and `ctime_ns` can be trusted by a
/// recording that vouches for the moment `at_ns` (when a digest was taken, when an evaluation
/// started): a change after `at_ns` will have changed the ctime (and, for a plain write, the
/// mtime), whatever the file system's timestamp tick. Why both: the mtime can be set back
/// (`touch -d`, `cp -p`), the ctime cannot; a file system may also not keep ctimes as it keeps
/// mtimes (FAT reports a creation time).
pub fn settled(mtime_ns: i64, ctime_ns: i64, at_ns: i64) -> bool {
    let ctime_window = if ctime_ns % 1_000_000_000 == 0 {
        RACY_WINDOW_NS
    } else {
        CTIME_WINDOW_NS
    };
    mtime_ns.saturating_add(RACY_WINDOW_NS) <= at_ns
        && ctime_ns.saturating_add(ctime_window) <= at_ns
}

/// The mtime of `m`, in ns since the epoch.
pub fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// The ctime of `m` (when its inode last changed: content, mode, links, name), in ns since the
/// epoch.
pub fn ctime_ns(m: &std::fs::Metadata) -> i64 {
    m.ctime() * 1_000_000_000 + m.ctime_nsec()
}

/// A file's or directory's identity as `stat` gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
}

impl Stamp {
    /// The stamp of what `path` names: a symlink is stamped by what it leads to, a dangling
    /// one (or a loop) by the link itself; `None` if there is nothing at `path`.
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::symlink_metadata(path).ok()?;
        if m.file_type().is_symlink() {
            if let Some(target) = Stamp::following(path) {
                return Some(target);
            }
        }
        Some(Stamp::of_metadata(&m))
    }

    /// The stamp of what `path` leads to (`stat`); `None` if it cannot be stat'ed.
    pub fn following(path: &Path) -> Option<Stamp> {
        Some(Stamp::of_metadata(&std::fs::metadata(path).ok()?))
    }

    pub fn of_metadata(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: if m.is_dir() { 0 } else { m.len() },
            mtime_ns: mtime_ns(m),
            ctime_ns: ctime_ns(m),
            ino: m.ino(),
        }
    }

    /// Whether this stamp can vouch for the moment `at_ns` (see [`settled`]).
    pub fn settled(&self, at_ns: i64) -> bool {
        settled(self.mtime_ns, self.ctime_ns, at_ns)
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
    /// Every symlink the walk met, and whether it led to a file (see `Listing::links`).
    links: Vec<(String, bool)>,
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
    #[serde(default)]
    delivery: Option<crate::target::Delivery>,
    at: (usize, usize),
    dep_spans: Vec<(usize, usize)>,
}

impl Snapshot {
    /// Captures a clean evaluation (one without errors). `started_at_ns` is when the evaluation
    /// began (from [`now_ns`]): a file written after that moment, while it was being read, has a
    /// newer ctime and so is never trusted (the racy-window rule, [`settled`]), although its
    /// stamp is taken after the evaluation.
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
                if f.ends_with(".star") {
                    paths.insert(join(pkg, f));
                }
            }
        }
        // The `.gitignore` of every walked directory, the root's too, whether the listing holds
        // it or not (it may ignore itself, or lie outside every package).
        let walked = std::iter::once("").chain(evaluation.listing.dirs.iter().map(String::as_str));
        for dir in walked {
            let p = join(dir, crate::listing::GITIGNORE);
            if std::fs::symlink_metadata(root.join(&p)).is_ok() {
                paths.insert(p);
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
            links: evaluation.listing.links.clone(),
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
        unchanged(
            root,
            &self.stamps,
            self.taken_at_ns,
            &self.root_entries,
            &self.links,
        )
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

    /// Every symlink the walk met, and whether it led to a file.
    pub fn links(&self) -> &[(String, bool)] {
        &self.links
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
                links: self.links,
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
            delivery: t.delivery.clone(),
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
            delivery: self.delivery,
            at: span(self.at),
            dep_spans: self.dep_spans.into_iter().map(span).collect(),
        })
    }
}

/// Whether the root's entries, every stamp and every symlink's kind are as recorded at
/// `taken_at_ns` (stats only, in parallel), each stamp [`settled`] by then. What
/// `Snapshot::is_valid` checks, also for the build record, which keeps the same stamps.
pub fn unchanged<'a, S>(
    root: &Path,
    stamps: S,
    taken_at_ns: i64,
    entries: &[String],
    links: &[(String, bool)],
) -> bool
where
    S: IntoParallelIterator<Item = (&'a String, &'a Stamp)>,
{
    use rayon::prelude::*;
    root_entries(root).as_deref() == Some(entries)
        && links
            .par_iter()
            .all(|(p, file)| std::fs::metadata(root.join(p)).is_ok_and(|m| m.is_file()) == *file)
        && stamps
            .into_par_iter()
            .all(|(p, s)| s.settled(taken_at_ns) && Stamp::of(&root.join(p)).as_ref() == Some(s))
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
pub fn workspace_module_path(module: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_settled_once_its_mtime_and_ctime_are_old_enough() {
        let at = 1_800_000_000 * 1_000_000_000 + 123_456_789;
        let old = at - 10 * RACY_WINDOW_NS;
        assert!(settled(old, old + 7, at));
        // A recent mtime, or a recent ctime (a `chmod`, a `touch -d` back in time).
        assert!(!settled(at - RACY_WINDOW_NS / 2, old + 7, at));
        assert!(!settled(old, at - CTIME_WINDOW_NS / 2, at));
        assert!(settled(old, at - 2 * CTIME_WINDOW_NS + 7, at));
        // A ctime of whole seconds: a file system that keeps seconds, the 2 s window.
        let whole = (at / 1_000_000_000 - 1) * 1_000_000_000;
        assert!(!settled(old, whole, at));
        assert!(settled(old, whole - 2 * RACY_WINDOW_NS, at));
    }

    #[test]
    fn a_symlink_is_stamped_by_its_target_and_a_dangling_one_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.build");
        let link = dir.path().join("BUILD");
        std::os::unix::fs::symlink("real.build", &link).unwrap();
        let dangling = Stamp::of(&link).unwrap();
        assert_eq!(
            dangling.ino,
            std::fs::symlink_metadata(&link).unwrap().ino()
        );
        std::fs::write(&target, "x = 1\n").unwrap();
        let stamp = Stamp::of(&link).unwrap();
        assert_eq!(Some(stamp), Stamp::of(&target));
        assert_ne!(stamp, dangling);
        std::fs::write(&target, "x = 22\n").unwrap();
        assert_ne!(Stamp::of(&link), Some(stamp));
    }
}
