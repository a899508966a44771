//! Incremental builds equal clean builds (issue 6), checked on generated workspaces and edit
//! sequences, and minimality: a build after which nothing changed runs nothing, writes nothing
//! to the CAS and rewrites no output.
//!
//! `incremental_equals_clean` generates a workspace *model*: plain data (source files in three
//! packages, a DAG of 5–40 tasks, a sequence of edits), rendered to files only to run flow. After
//! the initial render and after every edit it runs `flow build -k //...` twice, through the real
//! binary:
//! - in workspace A, edited in place step after step, with one cache for the whole sequence;
//! - in workspace B, a fresh directory holding the same files, with a fresh cache;
//!
//! and asserts that both exit with the same code, report every label the same way (passed,
//! `[FAILED]` or `[SKIPPED]`; `[RAN]` and `[CACHED]` both count as passed) and leave the same
//! `flow-out/` (every path, its bytes and its executable bit). On the way, it builds A a second
//! time and asserts a no-op: the same outcomes, nothing `[RAN]`, no file under `flow-out/`
//! written (size, mtime, inode) and, when nothing failed, no file of the CAS either.
//!
//! Since the model is data, proptest shrinks a failure to a small DAG and a short edit sequence
//! (tasks and files are named by position hints, so dropping one renames nothing else); the
//! failure message lists the file operations of every step and the whole workspace of the
//! failing step.
//!
//! What the generator covers:
//! - tasks with one file output: `cat` of their sources and of their dependencies' outputs,
//!   through `tr`, `sort`, `cksum`, `wc -l` or `head` (some of which keep the output unchanged
//!   after an edit: early cutoff), or an `awk` guard that fails on a "poison" character; tasks
//!   with a directory output; checks without outputs (`! ... | grep -q x`), which fail
//!   deterministically and skip their dependents;
//! - explicit `srcs`, `glob(["*.in"])` and `glob(["**/*.in"])`, `env = {"V": ..., "S": S}` echoed
//!   by every command (`S` comes from `lib/defs.star`, which every BUILD file loads), which of
//!   its sources are executable printed by every command, dependencies within and across
//!   packages, on file, directory and check targets; BUILD files and `lib/defs.star` that start
//!   as symlinks to files in `links/` (a directory in no package), or not; ignore files
//!   (`.gitignore`, `.ignore`) there from the start;
//! - edits: content; touch (a new mtime in the past, the same bytes rewritten, or the file
//!   replaced by a copy: new inode); the racy edit (same size, same mtime and inode, new bytes,
//!   see `Edit::Racy`; and of a directory: a file created in it without changing its mtime,
//!   see `Edit::RacyAdd`); an in-place overwrite that keeps the size, mtime and inode long after
//!   the state was recorded, the ctime its only witness (`Edit::Overwrite`, as `cp -p`); delete
//!   (also from `srcs`); rename (into or out of a glob, over an existing file); add (globbed or
//!   not); `chmod +x`/`-x` alone (mode and ctime change, nothing else); a BUILD file touched; a
//!   command changed; a dependency added or removed (kept acyclic); an `env` value set, changed
//!   or removed; the value in `lib/defs.star` changed; a BUILD file or `lib/defs.star` turned
//!   into a symlink or back (every edit of a linked file then writes the link's target in
//!   place); a source added to `srcs`; a glob changed; an output renamed; a target removed; a
//!   sub-package created or removed under a globbed directory; a package's `.gitignore` hiding
//!   globbed files; an ignore file created, removed, or rewritten in place, at the root or in
//!   `tools` (in no package), in a package or a sub-package's directory, one that ignores itself
//!   among them (only `.gitignore` files count; an `.ignore` must change nothing); a file output
//!   under `flow-out/` deleted or overwritten, or all of `flow-out/` deleted (flow restores them
//!   from the cache).
//!
//! New kinds of edits are new `Edit` variants (generated in `edit()`, applied to the model in
//! `Model::apply`); an edit that `render` + a diff of the files cannot express (it keeps bytes,
//! keeps times, or builds in the middle) returns an `Op`, which `check_case` performs.
//!
//! CI runs a fixed seed: 5 cases of 6 to 12 edits (about 30 s in a debug build on 2 cores).
//! A longer run, with another seed, and one line per step on stderr:
//!
//! ```text
//! FLOW_PROPTEST_CASES=200 FLOW_PROPTEST_STEPS=30 FLOW_PROPTEST_SEED=7 FLOW_PROPTEST_VERBOSE=1 \
//!     cargo test --test integration incremental_equals_clean -- --nocapture
//! ```
//!
//! `FLOW_PROPTEST_SHRINK_SECS` bounds the time spent shrinking a failure (default 300).
//! Failures are never persisted to files. While other processes rebuild the same `target/`,
//! a long run is safer with its own `CARGO_TARGET_DIR` (the `flow` binary can vanish mid-run).
//!
//! Before each build of A, `flow explain //...` predicts what the build will do with every
//! action, and the build's `--events` decisions must agree (issue 14: explain asks the same
//! reuse decision): carried, cached, restored, run, fails; an action waiting on one that runs
//! may then run, be cached (early cutoff) or be skipped.
//!
//! The `regression_*` tests are the minimal cases the generator found (all fixed since).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use crate::support::{env_number, flow_bin, label_tags, seeded_rng, settle, Ws};

// ---------------------------------------------------------------------------------------------
// The model: a workspace as plain data.
// ---------------------------------------------------------------------------------------------

/// The packages. `tools/gen` has no parent package; each may get a sub-package `d`.
const PKGS: [&str; 3] = ["app", "lib", "tools/gen"];

/// Task positions `t0`..`t39`.
const MAX_TASKS: usize = 40;

/// The contents of the `.gitignore` a `Gitignore` edit toggles in a package.
const GITIGNORE: &str = "g0.in\nd/g1.in\n";

/// Where an `Ignore` edit puts an ignore file: the root and `tools` (above `tools/gen`), in no
/// package; a package; a sub-package's directory (a package or not). The packages' own
/// `.gitignore` is also toggled by `Gitignore`.
const IGNORE_DIRS: [&str; 4] = ["", "tools", "app", "lib/d"];

/// What an `Ignore` edit writes: patterns that hide only globbed files (`.in`) or the `d/`
/// sub-directories (where only globbed files and sub-package BUILD files live), one that
/// ignores itself too, and one that un-ignores.
const IGNORE_CONTENTS: [&str; 5] = [
    "*.in\n",
    "g1.in\n",
    "d/\n",
    ".gitignore\n.ignore\ng2.in\n",
    "*.in\n!g0.in\n",
];

/// Where symlinked BUILD and `.star` files point: a directory in no package.
const LINKS: &str = "links";

/// The `.star` module every BUILD file loads (its `S` is in every task's `env`).
const STAR: &str = "lib/defs.star";

/// What `render` writes for a symlink (and `read_tree` reads back): this, then the target.
const SYMLINK: &str = "symlink -> ";

/// Where a source file lives in its package. Only `Txt` files are listed in `srcs` by name;
/// `In` and `DirIn` files are reached by globs only (so that a `.gitignore` or a sub-package can
/// hide them without making a BUILD file invalid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// `sN.txt`
    Txt,
    /// `gN.in`
    In,
    /// `d/gN.in`
    DirIn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Name {
    place: Place,
    n: u8,
}

impl Name {
    fn path(self) -> String {
        match self.place {
            Place::Txt => format!("s{}.txt", self.n),
            Place::In => format!("g{}.in", self.n),
            Place::DirIn => format!("d/g{}.in", self.n),
        }
    }
}

/// Whether a package-relative source path may be listed in `srcs` by name.
fn nameable(path: &str) -> bool {
    path.ends_with(".txt") && !path.contains('/')
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `outs = ["oN.txt"]`
    File,
    /// `outs = ["oN/"]`, holding `f.txt` and `sub/g.txt`
    Dir,
    /// No outputs: `! ... | grep -q C`, which fails when its input holds C (a "poison"
    /// character).
    Check,
}

/// The last stage of a task's pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    Cat,
    Upper,
    Sort,
    Cksum,
    /// `tr -d 0-9`: many edits leave its output unchanged (early cutoff).
    NoDigits,
    /// `wc -l`: likewise.
    Lines,
    Head,
    /// `awk '/C/ {exit 1} {print}'`: fails when its input holds C (a "poison" character),
    /// after writing the lines before it.
    Guard(char),
}

impl Filter {
    fn sh(self) -> String {
        match self {
            Filter::Cat => "cat".into(),
            Filter::Upper => "tr a-z A-Z".into(),
            Filter::Sort => "sort".into(),
            Filter::Cksum => "cksum".into(),
            Filter::NoDigits => "tr -d 0-9".into(),
            Filter::Lines => "wc -l".into(),
            Filter::Head => "head -n 2".into(),
            Filter::Guard(c) => format!("awk '/{c}/ {{exit 1}} {{print}}'"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Glob {
    None,
    /// `glob(["*.in"])`
    Top,
    /// `glob(["**/*.in"])`
    Deep,
}

#[derive(Clone, Debug)]
struct Task {
    pkg: usize,
    kind: Kind,
    /// Package-relative `Txt` sources listed by name; sorted, no duplicates.
    srcs: Vec<String>,
    glob: Glob,
    /// Indices of earlier tasks: the graph is acyclic by construction.
    deps: BTreeSet<usize>,
    filter: Filter,
    /// The poison character a `Check` looks for.
    check: char,
    /// The value of `V` in `env`; `None`: no `env`.
    env: Option<String>,
    /// Bumped by `RenameOut`: the output's name.
    out_gen: u8,
    removed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct SrcFile {
    content: String,
    exec: bool,
}

/// The workspace. Tasks keep their index (their name is `tN`) for the whole sequence; a removed
/// task stays in the vector, marked.
#[derive(Clone, Debug)]
struct Model {
    /// (package index, package-relative path) → file.
    files: BTreeMap<(usize, String), SrcFile>,
    tasks: Vec<Task>,
    subpackage: [bool; 3],
    /// The directory of the gates that hold a task while an edit races it (see `Edit::Race`):
    /// outside the workspaces, the same in A and B, so commands are the same in both.
    gate: String,
    /// Ignore files (`.gitignore`, `.ignore`): workspace-relative path → contents.
    ignores: BTreeMap<String, String>,
    /// Whether each package's BUILD file is a symlink to `links/<package>.BUILD`.
    linked_build: [bool; 3],
    /// Whether `lib/defs.star` is a symlink to `links/defs.star`.
    linked_star: bool,
    /// The value of `S` in `lib/defs.star`.
    star: String,
}

/// A rendered workspace: workspace-relative path → (bytes, executable).
type Files = BTreeMap<String, (Vec<u8>, bool)>;

/// How a `Touch` keeps the bytes of a file and changes its metadata.
#[derive(Clone, Copy, Debug)]
enum TouchHow {
    /// Sets the mtime to this many seconds after 2001-09-09 (in the past, so the file state
    /// is trusted at once).
    Mtime(u16),
    /// Writes the same bytes again: new mtime, same inode.
    Rewrite,
    /// Writes a copy and renames it over the file: new inode and mtime.
    Replace,
}

/// A file named by an edit: the first file at or after this one in (package, path) order (the
/// first file if none is after it). Edits name files and tasks by such hints, never by their
/// rank among the files or tasks that exist, so that shrinking the workspace (fewer files or
/// tasks) leaves the other edits pointing at the same things.
#[derive(Clone, Copy, Debug)]
struct FileRef {
    pkg: usize,
    name: Name,
}

/// Tasks are named by position `tN` (a hint, like `FileRef`: the first live task at or after
/// `N`, else the last one), sources in `srcs` by number `sN.txt` (the first nameable file at or
/// after it, else the first).
#[derive(Clone, Debug)]
enum Edit {
    Content {
        file: FileRef,
        content: String,
    },
    Touch {
        file: FileRef,
        how: TouchHow,
    },
    Delete {
        file: FileRef,
    },
    Rename {
        file: FileRef,
        to: Name,
    },
    Add {
        pkg: usize,
        name: Name,
        content: String,
    },
    /// `chmod +x` or `-x`, and nothing else: the bytes, size, mtime and inode stay, the mode
    /// and ctime change. Every command prints which of its sources are executable, so the
    /// outputs show it.
    Chmod {
        file: FileRef,
    },
    /// An in-place overwrite that keeps the size, mtime and inode (`cp -p` over the file, or a
    /// write then `touch -d` back): the file's mtime is set in the past, A is built (an extra
    /// build, not compared) so that its state is recorded and trusted, then `content` (cut or
    /// padded to the old size, different bytes) is written into the same inode and the mtime
    /// set back. The ctime is the only witness. Unlike `Racy`, the mtime is long past: this is
    /// not a same-tick edit.
    Overwrite {
        file: FileRef,
        content: String,
    },
    TouchBuild {
        pkg: usize,
        how: TouchHow,
    },
    Cmd {
        task: usize,
        filter: Filter,
        check: char,
    },
    AddDep {
        task: usize,
        dep: Index,
    },
    RemoveDep {
        task: usize,
        dep: Index,
    },
    Env {
        task: usize,
        value: Option<String>,
    },
    AddSrc {
        task: usize,
        src: u8,
    },
    SetGlob {
        task: usize,
        glob: Glob,
    },
    RenameOut {
        task: usize,
    },
    RemoveTask {
        task: usize,
    },
    Subpackage {
        pkg: usize,
    },
    Gitignore {
        pkg: usize,
    },
    /// Writes `IGNORE_CONTENTS[content]` to the `.gitignore` (`git`) or `.ignore` of
    /// `IGNORE_DIRS[at]`, or removes it (`content` out of range). Only `.gitignore` files count
    /// (docs/build-language.md), wherever they are, one that ignores itself too.
    Ignore {
        at: usize,
        git: bool,
        content: usize,
    },
    /// Rewrites an ignore file that exists (the one at `which` among them) in place with
    /// `IGNORE_CONTENTS[content]`: its directory does not change, only the file.
    RewriteIgnore {
        which: Index,
        content: usize,
    },
    /// Turns a package's BUILD file into a symlink to `links/<package>.BUILD` (same bytes), or
    /// back. While it is a link, the edits of its targets write the link's target in place.
    LinkBuild {
        pkg: usize,
    },
    /// The same for `lib/defs.star`, which every BUILD file loads.
    LinkStar,
    /// Sets `S` in `lib/defs.star` (written in place, through the link when it is one).
    Star {
        value: String,
    },
    /// The racy edit: writes `content` with its first byte changed, builds A (an extra build,
    /// not compared), then writes `content` (same size) and sets the mtime back to that of the
    /// first write, as a second write within the same timestamp tick would leave it (same
    /// size, mtime and inode, new bytes). Only if the extra build ran within 1.5 s of the first
    /// write: flow trusts a file state only when the file was hashed 2 s or more after its
    /// mtime, and a state it trusts is rightly never re-read. An empty `content` is a plain
    /// content edit.
    Racy {
        file: FileRef,
        content: String,
    },
    /// The racy edit of a directory: creates `gN1.in` (or `d/gN1.in`), builds A (an extra
    /// build), creates `gN2.in` beside it and sets the directory's mtime back to what the first
    /// creation left, as a creation within the same timestamp tick would (the directory's
    /// listing changed, its stamp did not). Only if the extra build ran within 1.5 s of the
    /// first creation, as for `Racy`.
    RacyAdd {
        pkg: usize,
        deep: bool,
        n1: u8,
        n2: u8,
        content: String,
    },
    /// Something happens to `flow-out/` (which flow rebuilds from the cache): the model does
    /// not change.
    Tamper {
        task: usize,
        how: TamperHow,
    },
    /// The edit `inner` is made while an extra build of A holds task `task` running (the
    /// task's command waits at its gate): after that build hashed the sources, before the
    /// task's dependents are keyed and staged. The extra build's outcome is not compared (it
    /// saw a workspace between two states), but what it stored must not make any later build
    /// differ from a clean one. `inner` is one of the edits made of plain file writes (see
    /// `race_inner`), which take no build of their own.
    /// So that the task runs in that build, its `env` value is first set to `env` (a fresh
    /// value: its key is new). With `undo`, the sources go back to their state before `inner`
    /// once that build is over: a result it computed from the raced bytes and stored under the
    /// key of the old ones (the class of issue 15's first defect) is then restored.
    Race {
        task: usize,
        env: String,
        inner: Box<Edit>,
        undo: bool,
    },
    /// Only as a `Race`'s `inner`: new content for a source listed by a direct dependent of the
    /// raced one (the `n`th of them, wrapping), which that build has hashed and will stage
    /// after the raced task ends. Elsewhere it changes nothing.
    Aimed {
        n: usize,
        content: String,
    },
}

#[derive(Clone, Copy, Debug)]
enum TamperHow {
    /// Deletes the file output of the task.
    Delete,
    /// Overwrites the file output of the task.
    Overwrite,
    /// Deletes all of `flow-out/`.
    RemoveAll,
}

/// A file operation that `render` + diff cannot express (it keeps bytes, or moves them).
enum Op {
    Rename(String, String),
    Touch(String, TouchHow),
    /// Writes these bytes, builds, and lets the sync write the final bytes with the same
    /// mtime (see `Edit::Racy`).
    Racy(String, Vec<u8>),
    /// Creates the first file, builds, creates the second one and keeps the mtime of their
    /// directory (see `Edit::RacyAdd`).
    RacyAdd(String, String, Vec<u8>),
    /// Sets the file's mtime in the past, builds, and lets the sync write the final bytes in
    /// place with that mtime (see `Edit::Overwrite`).
    Overwrite(String),
    /// A change under `flow-out/` (path relative to it; empty: all of it).
    Tamper(String, TamperHow),
}

#[derive(Clone, Debug)]
struct FileSpec {
    pkg: usize,
    name: Name,
    content: String,
}

#[derive(Clone, Debug)]
struct TaskSpec {
    pkg: usize,
    kind: Kind,
    srcs: Vec<u8>,
    glob: Glob,
    deps: Vec<Index>,
    filter: Filter,
    check: char,
    env: Option<String>,
}

/// One generated test case: the initial workspace and the edits. Task `tN` is `slots[N]`, if
/// `N < count` and the slot holds a task: shrinking drops tasks (`count`, or a slot becoming
/// `None`) without renumbering the others. A dependency names a position: on an empty slot, it
/// is left out.
#[derive(Clone, Debug)]
struct Case {
    files: Vec<FileSpec>,
    count: usize,
    slots: Vec<Option<TaskSpec>>,
    /// Which BUILD files (per package), and whether `lib/defs.star`, start as symlinks.
    linked: ([bool; 3], bool),
    /// The ignore files there from the start: (`IGNORE_DIRS` index, `.gitignore`?,
    /// `IGNORE_CONTENTS` index).
    ignores: Vec<(usize, bool, usize)>,
    edits: Vec<Edit>,
}

impl Model {
    fn new(case: &Case) -> Model {
        let mut files = BTreeMap::new();
        for f in &case.files {
            files.insert(
                (f.pkg, f.name.path()),
                SrcFile {
                    content: f.content.clone(),
                    exec: false,
                },
            );
        }
        let mut m = Model {
            files,
            tasks: Vec::new(),
            subpackage: [false; 3],
            gate: String::new(),
            ignores: BTreeMap::new(),
            linked_build: case.linked.0,
            linked_star: case.linked.1,
            star: "s0".to_owned(),
        };
        for &(at, git, content) in &case.ignores {
            let text = IGNORE_CONTENTS[content % IGNORE_CONTENTS.len()];
            m.ignores.insert(ignore_path(at, git), text.to_owned());
        }
        for (i, slot) in case.slots.iter().take(case.count).enumerate() {
            let Some(t) = slot else {
                m.tasks.push(Task {
                    pkg: 0,
                    kind: Kind::Check,
                    srcs: Vec::new(),
                    glob: Glob::None,
                    deps: BTreeSet::new(),
                    filter: Filter::Cat,
                    check: 'x',
                    env: None,
                    out_gen: 0,
                    removed: true,
                });
                continue;
            };
            let mut srcs: Vec<String> = t
                .srcs
                .iter()
                .filter_map(|&n| m.pick_src(t.pkg, n))
                .collect();
            srcs.sort();
            srcs.dedup();
            let deps = if i == 0 {
                BTreeSet::new()
            } else {
                t.deps
                    .iter()
                    .map(|ix| ix.index(i))
                    .filter(|&j| !m.tasks[j].removed)
                    .collect()
            };
            m.tasks.push(Task {
                pkg: t.pkg,
                kind: t.kind,
                srcs,
                glob: t.glob,
                deps,
                filter: t.filter,
                check: t.check,
                env: t.env.clone(),
                out_gen: 0,
                removed: false,
            });
        }
        m
    }

    /// The source `sN.txt` of package `pkg`, or the first nameable one after it, or the first.
    fn pick_src(&self, pkg: usize, n: u8) -> Option<String> {
        let nameable: Vec<&String> = self
            .files
            .keys()
            .filter(|(p, path)| *p == pkg && nameable(path))
            .map(|(_, path)| path)
            .collect();
        let hint = format!("s{n}.txt");
        let found = nameable.iter().find(|p| ***p >= hint).or(nameable.first());
        found.map(|p| (*p).clone())
    }

    fn live(&self) -> Vec<usize> {
        (0..self.tasks.len())
            .filter(|&i| !self.tasks[i].removed)
            .collect()
    }

    fn pick_task(&self, hint: usize) -> Option<usize> {
        let live = self.live();
        live.iter().find(|&&i| i >= hint).or(live.last()).copied()
    }

    /// The task a `Race` holds: of the tasks with dependents (whose staging the race can
    /// reach), the `hint`th, wrapping; else any.
    fn pick_raced(&self, hint: usize) -> Option<usize> {
        let live = self.live();
        let feeding: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&t| live.iter().any(|&d| self.tasks[d].deps.contains(&t)))
            .collect();
        let from = if feeding.is_empty() { &live } else { &feeding };
        (!from.is_empty()).then(|| from[hint % from.len()])
    }

    /// The `n`th (wrapping) of the sources listed by the direct dependents of task `t` (the
    /// tasks keyed and staged as soon as `t` ends).
    fn downstream_src(&self, t: usize, n: usize) -> Option<(usize, String)> {
        let srcs: Vec<(usize, String)> = self
            .live()
            .into_iter()
            .filter(|&d| self.tasks[d].deps.contains(&t))
            .flat_map(|d| {
                let pkg = self.tasks[d].pkg;
                self.tasks[d].srcs.iter().map(move |s| (pkg, s.clone()))
            })
            .filter(|k| self.files.contains_key(k))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        (!srcs.is_empty()).then(|| srcs[n % srcs.len()].clone())
    }

    fn pick_file(&self, hint: FileRef) -> Option<(usize, String)> {
        let key = (hint.pkg, hint.name.path());
        self.files
            .range(key..)
            .next()
            .or(self.files.iter().next())
            .map(|(k, _)| k.clone())
    }

    fn label(&self, i: usize) -> String {
        format!("//{}:t{i}", PKGS[self.tasks[i].pkg])
    }

    /// How task `from` names task `to` in its BUILD file.
    fn dep_label(&self, from: usize, to: usize) -> String {
        if self.tasks[from].pkg == self.tasks[to].pkg {
            format!(":t{to}")
        } else {
            self.label(to)
        }
    }

    /// The output of task `i`, relative to its package, without the `/` of a directory.
    fn out(&self, i: usize) -> String {
        let t = &self.tasks[i];
        let base = if t.out_gen == 0 {
            format!("o{i}")
        } else {
            format!("o{i}_{}", t.out_gen)
        };
        match t.kind {
            Kind::File => format!("{base}.txt"),
            Kind::Dir | Kind::Check => base,
        }
    }

    fn cmd(&self, i: usize) -> String {
        let t = &self.tasks[i];
        let mut reads = String::new();
        for &j in &t.deps {
            let loc = format!("$(location {})", self.dep_label(i, j));
            match self.tasks[j].kind {
                Kind::File => write!(reads, " {loc}").unwrap(),
                Kind::Dir => write!(reads, " {loc}/f.txt {loc}/sub/g.txt").unwrap(),
                Kind::Check => {}
            }
        }
        let g = format!("{}/t{i}", self.gate);
        // Which sources are executable, so that a `chmod` shows in the outputs.
        let modes = "for f in $(SRCS); do test -x $$f && echo E $${f%.*}; done";
        let body = format!(
            "if [ -e {g}.hold ]; then touch {g}.running; while [ ! -e {g}.go ]; do sleep 0.01; done; fi; \
             echo t{i}; cat $(SRCS){reads} < /dev/null; {modes}; echo \"V=$${{V:-unset}} S=$${{S:-unset}}\""
        );
        match t.kind {
            Kind::File => format!("{{ {body}; }} | {} > $(OUTS)", t.filter.sh()),
            Kind::Dir => {
                let o = self.out(i);
                format!(
                    "mkdir -p {o}/sub && {{ {body}; }} | {} > {o}/f.txt && echo t{i} > {o}/sub/g.txt",
                    t.filter.sh()
                )
            }
            Kind::Check => format!("! {{ {body}; }} | grep -q {}", t.check),
        }
    }

    fn build_file(&self, pkg: usize) -> String {
        let mut s = format!("load(\"//{}\", \"S\")\n", STAR.replacen('/', ":", 1));
        for i in self.live() {
            let t = &self.tasks[i];
            if t.pkg != pkg {
                continue;
            }
            writeln!(s, "task(\n    name = \"t{i}\",").unwrap();
            let named = quoted_list(t.srcs.iter().cloned());
            match t.glob {
                Glob::None if t.srcs.is_empty() => {}
                Glob::None => writeln!(s, "    srcs = {named},").unwrap(),
                Glob::Top => writeln!(s, "    srcs = {named} + glob([\"*.in\"]),").unwrap(),
                Glob::Deep => writeln!(s, "    srcs = {named} + glob([\"**/*.in\"]),").unwrap(),
            }
            match t.kind {
                Kind::File => writeln!(s, "    outs = [\"{}\"],", self.out(i)).unwrap(),
                Kind::Dir => writeln!(s, "    outs = [\"{}/\"],", self.out(i)).unwrap(),
                Kind::Check => {}
            }
            if !t.deps.is_empty() {
                let deps = quoted_list(t.deps.iter().map(|&j| self.dep_label(i, j)));
                writeln!(s, "    deps = {deps},").unwrap();
            }
            if let Some(v) = &t.env {
                writeln!(s, "    env = {{\"V\": {}, \"S\": S}},", starlark_str(v)).unwrap();
            }
            writeln!(s, "    cmd = {},\n)", starlark_str(&self.cmd(i))).unwrap();
        }
        s
    }

    /// Where package `pkg`'s BUILD file lives while it is a symlink.
    fn build_target(&self, pkg: usize) -> String {
        format!("{LINKS}/{}.BUILD", PKGS[pkg].replace('/', "_"))
    }

    fn render(&self) -> Files {
        let mut out = Files::new();
        out.insert("flow.toml".into(), (Vec::new(), false));
        for (p, name) in PKGS.iter().enumerate() {
            let text = self.build_file(p).into_bytes();
            let target = self.linked_build[p].then(|| self.build_target(p));
            put_maybe_linked(&mut out, &format!("{name}/BUILD"), target.as_deref(), text);
            if self.subpackage[p] {
                out.insert(
                    format!("{name}/d/BUILD"),
                    (b"# sub-package\n".to_vec(), false),
                );
            }
        }
        let star = format!("S = {}\n", starlark_str(&self.star)).into_bytes();
        let target = self.linked_star.then(|| format!("{LINKS}/defs.star"));
        put_maybe_linked(&mut out, STAR, target.as_deref(), star);
        for (path, text) in &self.ignores {
            out.insert(path.clone(), (text.clone().into_bytes(), false));
        }
        for ((p, path), f) in &self.files {
            out.insert(
                format!("{}/{path}", PKGS[*p]),
                (f.content.clone().into_bytes(), f.exec),
            );
        }
        out
    }

    /// Applies `edit` to the model; returns the operations that keep or move bytes (the rest
    /// is a diff of the renders).
    fn apply(&mut self, edit: &Edit) -> Vec<Op> {
        let ws_path = |(p, path): &(usize, String)| format!("{}/{path}", PKGS[*p]);
        match edit {
            Edit::Content { file, content } => {
                if let Some(k) = self.pick_file(*file) {
                    self.files.get_mut(&k).unwrap().content = content.clone();
                }
            }
            Edit::Touch { file, how } => {
                if let Some(k) = self.pick_file(*file) {
                    return vec![Op::Touch(ws_path(&k), *how)];
                }
            }
            Edit::Delete { file } => {
                if let Some(k) = self.pick_file(*file) {
                    self.files.remove(&k);
                    for t in &mut self.tasks {
                        if t.pkg == k.0 {
                            t.srcs.retain(|s| *s != k.1);
                        }
                    }
                }
            }
            Edit::Rename { file, to } => {
                let Some(k) = self.pick_file(*file) else {
                    return Vec::new();
                };
                let new = (k.0, to.path());
                if new == k {
                    return Vec::new();
                }
                let f = self.files.remove(&k).unwrap();
                self.files.insert(new.clone(), f);
                for t in &mut self.tasks {
                    if t.pkg == k.0 && t.srcs.contains(&k.1) {
                        t.srcs.retain(|s| *s != k.1);
                        if nameable(&new.1) {
                            t.srcs.push(new.1.clone());
                            t.srcs.sort();
                            t.srcs.dedup();
                        }
                    }
                }
                return vec![Op::Rename(ws_path(&k), ws_path(&new))];
            }
            Edit::Add { pkg, name, content } => {
                let f = self
                    .files
                    .entry((*pkg, name.path()))
                    .or_insert_with(|| SrcFile {
                        content: String::new(),
                        exec: false,
                    });
                f.content = content.clone();
            }
            Edit::Chmod { file } => {
                if let Some(k) = self.pick_file(*file) {
                    let f = self.files.get_mut(&k).unwrap();
                    f.exec = !f.exec;
                }
            }
            Edit::TouchBuild { pkg, how } => {
                // A linked BUILD file is touched where its bytes are.
                let path = match self.linked_build[*pkg] {
                    true => self.build_target(*pkg),
                    false => format!("{}/BUILD", PKGS[*pkg]),
                };
                return vec![Op::Touch(path, *how)];
            }
            Edit::Cmd {
                task,
                filter,
                check,
            } => {
                if let Some(i) = self.pick_task(*task) {
                    self.tasks[i].filter = *filter;
                    self.tasks[i].check = *check;
                }
            }
            Edit::AddDep { task, dep } => {
                if let Some(i) = self.pick_task(*task) {
                    let earlier: Vec<usize> = self.live().into_iter().filter(|&j| j < i).collect();
                    if !earlier.is_empty() {
                        let j = earlier[dep.index(earlier.len())];
                        self.tasks[i].deps.insert(j);
                    }
                }
            }
            Edit::RemoveDep { task, dep } => {
                if let Some(i) = self.pick_task(*task) {
                    let deps = &mut self.tasks[i].deps;
                    if !deps.is_empty() {
                        let j = *deps.iter().nth(dep.index(deps.len())).unwrap();
                        deps.remove(&j);
                    }
                }
            }
            Edit::Env { task, value } => {
                if let Some(i) = self.pick_task(*task) {
                    self.tasks[i].env = value.clone();
                }
            }
            Edit::AddSrc { task, src } => {
                if let Some(i) = self.pick_task(*task) {
                    if let Some(path) = self.pick_src(self.tasks[i].pkg, *src) {
                        let t = &mut self.tasks[i];
                        t.srcs.push(path);
                        t.srcs.sort();
                        t.srcs.dedup();
                    }
                }
            }
            Edit::SetGlob { task, glob } => {
                if let Some(i) = self.pick_task(*task) {
                    self.tasks[i].glob = *glob;
                }
            }
            Edit::RenameOut { task } => {
                if let Some(i) = self.pick_task(*task) {
                    self.tasks[i].out_gen += 1;
                }
            }
            Edit::RemoveTask { task } => {
                // Keep one target: `//...` matching nothing is an error of its own.
                if self.live().len() > 1 {
                    if let Some(i) = self.pick_task(*task) {
                        self.tasks[i].removed = true;
                        for t in &mut self.tasks {
                            t.deps.remove(&i);
                        }
                    }
                }
            }
            Edit::Subpackage { pkg } => self.subpackage[*pkg] = !self.subpackage[*pkg],
            Edit::Gitignore { pkg } => {
                let path = format!("{}/.gitignore", PKGS[*pkg]);
                if self.ignores.remove(&path).is_none() {
                    self.ignores.insert(path, GITIGNORE.to_owned());
                }
            }
            Edit::Ignore { at, git, content } => {
                let path = ignore_path(*at, *git);
                match IGNORE_CONTENTS.get(*content) {
                    Some(text) => self.ignores.insert(path, (*text).to_owned()),
                    None => self.ignores.remove(&path),
                };
            }
            Edit::RewriteIgnore { which, content } => {
                if !self.ignores.is_empty() {
                    let at = which.index(self.ignores.len());
                    let text = self.ignores.values_mut().nth(at).unwrap();
                    // Other contents than the file has.
                    let others: Vec<&str> = IGNORE_CONTENTS
                        .iter()
                        .copied()
                        .filter(|c| c != text)
                        .collect();
                    *text = others[content % others.len()].to_owned();
                }
            }
            Edit::LinkBuild { pkg } => self.linked_build[*pkg] = !self.linked_build[*pkg],
            Edit::LinkStar => self.linked_star = !self.linked_star,
            Edit::Star { value } => self.star = value.clone(),
            Edit::Overwrite { file, content } => {
                if let Some(k) = self.pick_file(*file) {
                    let f = self.files.get_mut(&k).unwrap();
                    let old = f.content.as_bytes();
                    if old.is_empty() {
                        return Vec::new();
                    }
                    let mut new = content.clone().into_bytes();
                    new.resize(old.len(), b'a');
                    if new == old {
                        new[0] = if new[0] == b'b' { b'c' } else { b'b' };
                    }
                    f.content = String::from_utf8(new).unwrap();
                    return vec![Op::Overwrite(ws_path(&k))];
                }
            }
            Edit::Racy { file, content } => {
                if let Some(k) = self.pick_file(*file) {
                    self.files.get_mut(&k).unwrap().content = content.clone();
                    if let Some(c) = content.bytes().next() {
                        let mut first = content.clone().into_bytes();
                        first[0] = if c == b'b' { b'c' } else { b'b' };
                        return vec![Op::Racy(ws_path(&k), first)];
                    }
                }
            }
            Edit::RacyAdd {
                pkg,
                deep,
                n1,
                n2,
                content,
            } => {
                let n2 = if n1 == n2 { (n1 + 1) % 4 } else { *n2 };
                let place = if *deep { Place::DirIn } else { Place::In };
                let mut paths = Vec::new();
                for n in [*n1, n2] {
                    let key = (*pkg, Name { place, n }.path());
                    paths.push(ws_path(&key));
                    let f = self.files.entry(key).or_insert_with(|| SrcFile {
                        content: String::new(),
                        exec: false,
                    });
                    f.content = content.clone();
                }
                let second = paths.pop().unwrap();
                let first = paths.pop().unwrap();
                return vec![Op::RacyAdd(first, second, content.clone().into_bytes())];
            }
            Edit::Race { task, inner, .. } => {
                let Edit::Aimed { n, content } = &**inner else {
                    return self.apply(inner);
                };
                let aimed = self
                    .pick_raced(*task)
                    .and_then(|t| self.downstream_src(t, *n));
                if let Some(k) = aimed {
                    self.files.get_mut(&k).unwrap().content = content.clone();
                }
            }
            Edit::Aimed { .. } => {}
            Edit::Tamper { task, how } => {
                if let TamperHow::RemoveAll = how {
                    return vec![Op::Tamper(String::new(), *how)];
                }
                // Only file outputs: flow checks a directory output by its marker file only
                // (docs/build.md, Limits).
                if let Some(i) = self.pick_task(*task) {
                    if self.tasks[i].kind == Kind::File {
                        let path = format!("{}/{}", PKGS[self.tasks[i].pkg], self.out(i));
                        return vec![Op::Tamper(path, *how)];
                    }
                }
            }
        }
        Vec::new()
    }
}

/// The workspace-relative path of the `.gitignore` (`git`) or `.ignore` in `IGNORE_DIRS[at]`.
fn ignore_path(at: usize, git: bool) -> String {
    let dir = IGNORE_DIRS[at % IGNORE_DIRS.len()];
    let name = if git { ".gitignore" } else { ".ignore" };
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Puts `bytes` at `rel`, or at `target` (workspace-relative) with a symlink to it at `rel`.
fn put_maybe_linked(out: &mut Files, rel: &str, target: Option<&str>, bytes: Vec<u8>) {
    match target {
        None => {
            out.insert(rel.to_owned(), (bytes, false));
        }
        Some(target) => {
            let up = "../".repeat(rel.matches('/').count());
            let link = format!("{SYMLINK}{up}{target}").into_bytes();
            out.insert(rel.to_owned(), (link, false));
            out.insert(target.to_owned(), (bytes, false));
        }
    }
}

fn starlark_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quoted_list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.map(|s| starlark_str(&s)).collect();
    format!("[{}]", items.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------------------------

/// File contents: a few short lines; one file in six holds a poison character (`x` or `y`),
/// which makes a `Check` or a `Guard` that reads it fail.
fn content() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => "[a-d0-9 \n]{0,10}",
        1 => "[a-d0-9 \n]{0,5}[xy][a-d0-9 \n]{0,4}",
    ]
}

fn poison() -> impl Strategy<Value = char> {
    prop::sample::select(vec!['x', 'y'])
}

fn env_value() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[ab ]{0,3}")
}

fn name() -> impl Strategy<Value = Name> {
    (
        prop_oneof![3 => Just(Place::Txt), 2 => Just(Place::In), 1 => Just(Place::DirIn)],
        0u8..4,
    )
        .prop_map(|(place, n)| Name { place, n })
}

fn filter() -> impl Strategy<Value = Filter> {
    prop_oneof![
        3 => Just(Filter::Cat),
        1 => Just(Filter::Upper),
        1 => Just(Filter::Sort),
        1 => Just(Filter::Cksum),
        2 => Just(Filter::NoDigits),
        1 => Just(Filter::Lines),
        1 => Just(Filter::Head),
        1 => poison().prop_map(Filter::Guard),
    ]
}

fn glob() -> impl Strategy<Value = Glob> {
    prop_oneof![2 => Just(Glob::None), 1 => Just(Glob::Top), 1 => Just(Glob::Deep)]
}

fn touch_how() -> impl Strategy<Value = TouchHow> {
    prop_oneof![
        any::<u16>().prop_map(TouchHow::Mtime),
        Just(TouchHow::Rewrite),
        Just(TouchHow::Replace),
    ]
}

fn pkg() -> impl Strategy<Value = usize> {
    0..PKGS.len()
}

fn file_spec() -> impl Strategy<Value = FileSpec> {
    (pkg(), name(), content()).prop_map(|(pkg, name, content)| FileSpec { pkg, name, content })
}

fn task_spec() -> impl Strategy<Value = TaskSpec> {
    (
        pkg(),
        prop_oneof![6 => Just(Kind::File), 1 => Just(Kind::Dir), 2 => Just(Kind::Check)],
        prop::collection::vec(0u8..4, 0..3),
        glob(),
        prop::collection::vec(any::<Index>(), 0..4),
        filter(),
        poison(),
        env_value(),
    )
        .prop_map(
            |(pkg, kind, srcs, glob, deps, filter, check, env)| TaskSpec {
                pkg,
                kind,
                srcs,
                glob,
                deps,
                filter,
                check,
                env,
            },
        )
}

/// Whether an ignore file is a `.gitignore` (mostly) or an `.ignore`.
fn git_or_not() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.7)
}

fn file_ref() -> impl Strategy<Value = FileRef> {
    (pkg(), name()).prop_map(|(pkg, name)| FileRef { pkg, name })
}

fn edit() -> impl Strategy<Value = Edit> {
    let ix = any::<Index>;
    let file = file_ref;
    let task = || 0..MAX_TASKS;
    prop_oneof![
        6 => (file(), content()).prop_map(|(file, content)| Edit::Content { file, content }),
        3 => (file(), touch_how()).prop_map(|(file, how)| Edit::Touch { file, how }),
        2 => file().prop_map(|file| Edit::Delete { file }),
        2 => (file(), name()).prop_map(|(file, to)| Edit::Rename { file, to }),
        3 => (pkg(), name(), content()).prop_map(|(pkg, name, content)| Edit::Add { pkg, name, content }),
        2 => file().prop_map(|file| Edit::Chmod { file }),
        3 => (file(), content()).prop_map(|(file, content)| Edit::Overwrite { file, content }),
        1 => (pkg(), touch_how()).prop_map(|(pkg, how)| Edit::TouchBuild { pkg, how }),
        3 => (task(), filter(), poison()).prop_map(|(task, filter, check)| Edit::Cmd { task, filter, check }),
        2 => (task(), ix()).prop_map(|(task, dep)| Edit::AddDep { task, dep }),
        2 => (task(), ix()).prop_map(|(task, dep)| Edit::RemoveDep { task, dep }),
        2 => (task(), env_value()).prop_map(|(task, value)| Edit::Env { task, value }),
        1 => (task(), 0u8..4).prop_map(|(task, src)| Edit::AddSrc { task, src }),
        1 => (task(), glob()).prop_map(|(task, glob)| Edit::SetGlob { task, glob }),
        1 => task().prop_map(|task| Edit::RenameOut { task }),
        1 => task().prop_map(|task| Edit::RemoveTask { task }),
        1 => pkg().prop_map(|pkg| Edit::Subpackage { pkg }),
        1 => pkg().prop_map(|pkg| Edit::Gitignore { pkg }),
        2 => (0..IGNORE_DIRS.len(), git_or_not(), 0..=IGNORE_CONTENTS.len())
            .prop_map(|(at, git, content)| Edit::Ignore { at, git, content }),
        3 => (ix(), 0..IGNORE_CONTENTS.len())
            .prop_map(|(which, content)| Edit::RewriteIgnore { which, content }),
        1 => pkg().prop_map(|pkg| Edit::LinkBuild { pkg }),
        1 => Just(Edit::LinkStar),
        2 => "[a-c]{1,3}".prop_map(|value| Edit::Star { value }),
        2 => (file(), content()).prop_map(|(file, content)| Edit::Racy { file, content }),
        1 => (pkg(), any::<bool>(), 0u8..4, 0u8..4, content()).prop_map(
            |(pkg, deep, n1, n2, content)| Edit::RacyAdd { pkg, deep, n1, n2, content }
        ),
        1 => (task(), prop_oneof![
            2 => Just(TamperHow::Delete),
            2 => Just(TamperHow::Overwrite),
            1 => Just(TamperHow::RemoveAll),
        ])
            .prop_map(|(task, how)| Edit::Tamper { task, how }),
        4 => (task(), "[a-z0-9]{8}", race_inner(), prop::bool::weighted(0.7))
            .prop_map(|(task, env, inner, undo)| Edit::Race { task, env, inner: Box::new(inner), undo }),
    ]
}

/// The edits a `Race` makes while a build runs: plain writes, renames and deletions, and
/// tampering with `flow-out/`; none takes a build of its own (which would wait for the
/// racing build's workspace lock).
fn race_inner() -> impl Strategy<Value = Edit> {
    let file = file_ref;
    prop_oneof![
        6 => (0..8usize, content()).prop_map(|(n, content)| Edit::Aimed { n, content }),
        2 => (file(), content()).prop_map(|(file, content)| Edit::Content { file, content }),
        1 => (file(), touch_how()).prop_map(|(file, how)| Edit::Touch { file, how }),
        1 => file().prop_map(|file| Edit::Delete { file }),
        1 => (file(), name()).prop_map(|(file, to)| Edit::Rename { file, to }),
        1 => (pkg(), name(), content()).prop_map(|(pkg, name, content)| Edit::Add { pkg, name, content }),
        1 => file().prop_map(|file| Edit::Chmod { file }),
        1 => (0..MAX_TASKS, filter(), poison()).prop_map(|(task, filter, check)| Edit::Cmd { task, filter, check }),
        1 => (0..MAX_TASKS, Just(TamperHow::Overwrite)).prop_map(|(task, how)| Edit::Tamper { task, how }),
    ]
}

fn case(max_edits: usize) -> impl Strategy<Value = Case> {
    // Shrunk in this order: the edits, the number of tasks, each task, the files, the links,
    // the ignore files.
    let linked = || prop::bool::weighted(0.3);
    let ignore = (0..IGNORE_DIRS.len(), git_or_not(), 0..IGNORE_CONTENTS.len());
    (
        prop::collection::vec(edit(), max_edits / 2..=max_edits),
        5..=MAX_TASKS,
        prop::collection::vec(prop::option::weighted(0.9, task_spec()), MAX_TASKS),
        prop::collection::vec(file_spec(), 1..14),
        ([linked(), linked(), linked()], linked()),
        prop::collection::vec(ignore, 1..4),
    )
        .prop_map(|(edits, count, slots, files, linked, ignores)| Case {
            files,
            count,
            slots,
            linked,
            ignores,
            edits,
        })
}

// ---------------------------------------------------------------------------------------------
// Files on disk.
// ---------------------------------------------------------------------------------------------

/// Writes a file, or (for bytes starting with `SYMLINK`) a symlink, replacing a symlink or a
/// file that is there (never writing through a link). A file that is there is written in place.
fn write_file(root: &Path, rel: &str, bytes: &[u8], exec: bool) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let there = std::fs::symlink_metadata(&p).ok();
    if let Some(target) = bytes.strip_prefix(SYMLINK.as_bytes()) {
        if there.is_some() {
            std::fs::remove_file(&p).unwrap();
        }
        let target = std::str::from_utf8(target).unwrap();
        std::os::unix::fs::symlink(target, &p).unwrap();
        return;
    }
    if there.is_some_and(|m| m.is_symlink()) {
        std::fs::remove_file(&p).unwrap();
    }
    std::fs::write(&p, bytes).unwrap();
    set_exec(&p, exec);
}

fn set_exec(p: &Path, exec: bool) {
    let mode = if exec { 0o755 } else { 0o644 };
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn write_all(root: &Path, files: &Files) {
    for (rel, (bytes, exec)) in files {
        write_file(root, rel, bytes, *exec);
    }
}

fn touch(root: &Path, rel: &str, how: TouchHow) {
    let p = root.join(rel);
    match how {
        TouchHow::Mtime(s) => {
            let t = UNIX_EPOCH + Duration::from_secs(1_000_000_000 + u64::from(s));
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        TouchHow::Rewrite => {
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, bytes).unwrap();
        }
        TouchHow::Replace => {
            let tmp = p.with_extension("flow-test-tmp");
            std::fs::copy(&p, &tmp).unwrap();
            std::fs::rename(&tmp, &p).unwrap();
        }
    }
}

/// Every entry below `dir` except `flow-out/`, as `Files` (directories are left out).
fn read_tree(dir: &Path, skip: &[&str]) -> Files {
    let mut out = Files::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if skip.contains(&rel.as_str()) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                let bytes = format!("symlink -> {}", target.display()).into_bytes();
                out.insert(rel, (bytes, false));
            } else {
                let exec = meta.permissions().mode() & 0o111 != 0;
                out.insert(rel, (std::fs::read(&p).unwrap(), exec));
            }
        }
    }
    out
}

/// Brings the files of `root` from `old` to `new`; returns what it did, for the failure message.
fn sync(root: &Path, old: &Files, new: &Files) -> Vec<String> {
    let mut did = Vec::new();
    for rel in old.keys() {
        if !new.contains_key(rel) {
            std::fs::remove_file(root.join(rel)).unwrap();
            did.push(format!("rm {rel}"));
        }
    }
    for (rel, (bytes, exec)) in new {
        match old.get(rel) {
            Some((b, e)) if b == bytes && e == exec => {}
            Some((b, _)) if b == bytes => {
                set_exec(&root.join(rel), *exec);
                did.push(format!("chmod {} {rel}", if *exec { "+x" } else { "-x" }));
            }
            _ => {
                write_file(root, rel, bytes, *exec);
                did.push(format!("write {rel} {:?}", String::from_utf8_lossy(bytes)));
            }
        }
    }
    did
}

// ---------------------------------------------------------------------------------------------
// Running flow and comparing.
// ---------------------------------------------------------------------------------------------

/// What a build did, as far as incremental must equal clean.
#[derive(Debug, PartialEq)]
struct Outcome {
    code: i32,
    /// Label → `ok` ([RAN], [CACHED], [FLAKY]), `FAILED` or `SKIPPED`.
    labels: BTreeMap<String, String>,
    out: Files,
    stdout: String,
    stderr: String,
    /// Label → the reuse decision the build took (`--events`): carried, cached, restored,
    /// ran or failed.
    decisions: BTreeMap<String, String>,
}

fn build(ws: &Path, cache: &Path) -> Outcome {
    let events = cache.with_extension("events");
    let out = Command::new(flow_bin())
        .args(["--color", "never", "-C"])
        .arg(ws)
        .arg("--cache-dir")
        .arg(cache)
        .args(["build", "-k", "//...", "--events"])
        .arg(&events)
        .env_remove("FLOW_CACHE_DIR")
        .env_remove("CI")
        // In verbose runs, the phases on stderr tell how each build went (see `path_taken`).
        .env(
            "FLOW_PROFILE",
            if std::env::var_os("FLOW_PROPTEST_VERBOSE").is_some() {
                "1"
            } else {
                "0"
            },
        )
        .output()
        .expect("run flow");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut labels = label_tags(&stdout);
    for tag in labels.values_mut() {
        if matches!(tag.as_str(), "RAN" | "CACHED" | "FLAKY") {
            *tag = "ok".to_owned();
        }
    }
    let decisions = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some((
                v["label"].as_str()?.to_owned(),
                v["decision"].as_str()?.to_owned(),
            ))
        })
        .collect();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        labels,
        out: read_tree(&ws.join("flow-out"), &[]),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        decisions,
    }
}

/// What `flow explain //...` predicts for each action of the next `flow build //...`: label →
/// its tag (`CARRIED`, `CACHED`, `RESTORE`, `RUN`, `WAITS`, `FAILS`); `None` when it cannot
/// say (exit code not 0: an analysis error, which the build reports too).
fn explain(ws: &Path, cache: &Path) -> Option<BTreeMap<String, String>> {
    let out = Command::new(flow_bin())
        .args(["--color", "never", "-C"])
        .arg(ws)
        .arg("--cache-dir")
        .arg(cache)
        .args(["explain", "//..."])
        .env_remove("FLOW_CACHE_DIR")
        .env_remove("CI")
        .output()
        .expect("run flow explain");
    if out.status.code() != Some(0) {
        return None;
    }
    Some(label_tags(&String::from_utf8_lossy(&out.stdout)))
}

/// Where `flow explain`'s prediction and the build's decisions disagree, if anywhere. An
/// action waiting on one that runs may run or be cached (early cutoff), or be skipped when
/// that one fails; every other verdict names exactly one decision.
fn disagreement(
    predicted: &BTreeMap<String, String>,
    got: &BTreeMap<String, String>,
) -> Option<String> {
    let labels: BTreeSet<&String> = predicted.keys().chain(got.keys()).collect();
    for label in labels {
        let said = predicted.get(label).map_or("(nothing)", String::as_str);
        let did = got.get(label).map_or("(nothing)", String::as_str);
        let agrees = match said {
            "CARRIED" => did == "carried",
            "CACHED" => did == "cached",
            "RESTORE" => did == "restored",
            "RUN" => did == "ran",
            "FAILS" => did == "failed",
            "WAITS" => matches!(did, "ran" | "cached" | "restored" | "(nothing)"),
            _ => false,
        };
        if !agrees {
            return Some(format!("`{label}`: explain said {said}, the build {did}"));
        }
    }
    None
}

/// How a build with `FLOW_PROFILE=1` went, from its phases: through analysis, from the build
/// record with some actions keyed (`carried`), or a no-op answered by the record alone.
fn path_taken(o: &Outcome) -> &'static str {
    if o.stderr.contains("profile: analysis") {
        "analysis"
    } else if o.stderr.contains("profile: plan from the build record") {
        "carried"
    } else if o.stderr.contains("profile: build record") {
        "record no-op"
    } else {
        "?"
    }
}

fn describe_diff(a: &Outcome, b: &Outcome) -> String {
    let mut s = String::new();
    if a.code != b.code {
        writeln!(s, "exit code: incremental {}, clean {}", a.code, b.code).unwrap();
    }
    let labels: BTreeSet<&String> = a.labels.keys().chain(b.labels.keys()).collect();
    for l in labels {
        let (x, y) = (a.labels.get(l), b.labels.get(l));
        if x != y {
            writeln!(s, "{l}: incremental {x:?}, clean {y:?}").unwrap();
        }
    }
    let paths: BTreeSet<&String> = a.out.keys().chain(b.out.keys()).collect();
    for p in paths {
        let show = |f: Option<&(Vec<u8>, bool)>| match f {
            None => "(missing)".to_owned(),
            Some((bytes, exec)) => {
                format!(
                    "{:?}{}",
                    String::from_utf8_lossy(bytes),
                    if *exec { " +x" } else { "" }
                )
            }
        };
        let (x, y) = (a.out.get(p), b.out.get(p));
        if x != y {
            writeln!(
                s,
                "flow-out/{p}: incremental {}, clean {}",
                show(x),
                show(y)
            )
            .unwrap();
        }
    }
    s
}

fn show_files(files: &Files) -> String {
    let mut s = String::new();
    for (rel, (bytes, exec)) in files {
        let x = if *exec { " (+x)" } else { "" };
        writeln!(s, "--- {rel}{x}\n{}", String::from_utf8_lossy(bytes)).unwrap();
    }
    s
}

/// Runs one case: builds A incrementally and B from scratch after every step.
/// An extra build of A holding one task at its gate while an edit is made (`Edit::Race`).
struct Race {
    build: std::process::Child,
    gate: PathBuf,
    /// Whether the task reached its gate (it may be cached, carried or skipped instead, and
    /// then the edit races nothing in particular).
    held: bool,
}

impl Race {
    /// Starts the build and waits until task `t` is at its gate or the build has ended.
    fn start(ws: &Path, cache: &Path, gate: &Path, t: usize) -> Race {
        let gate = gate.join(format!("t{t}"));
        std::fs::write(gate.with_extension("hold"), "").unwrap();
        let mut build = Command::new(flow_bin())
            .args(["--color", "never", "-C"])
            .arg(ws)
            .arg("--cache-dir")
            .arg(cache)
            .args(["build", "-k", "//..."])
            .env_remove("FLOW_CACHE_DIR")
            .env_remove("CI")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run flow");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let held = loop {
            if gate.with_extension("running").exists() {
                break true;
            }
            if build.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Race { build, gate, held }
    }

    /// Opens the gate, waits for the build, and says what happened.
    fn finish(mut self) -> String {
        std::fs::write(self.gate.with_extension("go"), "").unwrap();
        let status = self.build.wait().unwrap();
        for ext in ["hold", "running", "go"] {
            let _ = std::fs::remove_file(self.gate.with_extension(ext));
        }
        let name = self
            .gate
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if self.held {
            format!(
                "[the writes below were made while {name} ran in an extra build of A (exit {:?})]",
                status.code()
            )
        } else {
            format!("[the writes below were made after an extra build of A in which {name} did not run]")
        }
    }
}

fn check_case(case: &Case) -> Result<(), TestCaseError> {
    let tmp = tempfile::Builder::new()
        .prefix("flow-incremental")
        .tempdir()
        .unwrap();
    let a = tmp.path().join("a");
    let cache_a = tmp.path().join("cache-a");
    let mut model = Model::new(case);
    let gate = tmp.path().join("gate");
    std::fs::create_dir(&gate).unwrap();
    model.gate = gate.display().to_string();
    let mut files = model.render();
    write_all(&a, &files);
    let mut history = vec!["step 0: the initial workspace".to_owned()];
    for step in 0..=case.edits.len() {
        if step > 0 {
            let edit = &case.edits[step - 1];
            let mut did = Vec::new();
            let mut keep_mtime = Vec::new();
            // Paths whose mtime a racy edit keeps on purpose: not aged.
            let mut racy = Vec::new();
            let race = match edit {
                Edit::Race { task, env, .. } => model.pick_raced(*task).map(|t| {
                    model.tasks[t].env = Some(env.clone());
                    let next = model.render();
                    did.extend(sync(&a, &files, &next));
                    files = next;
                    (Race::start(&a, &cache_a, &gate, t), model.clone())
                }),
                _ => None,
            };
            for op in model.apply(edit) {
                match op {
                    Op::Rename(from, to) => {
                        let dest = a.join(&to);
                        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                        std::fs::rename(a.join(&from), dest).unwrap();
                        let f = files.remove(&from).unwrap();
                        files.insert(to.clone(), f);
                        did.push(format!("mv {from} {to}"));
                    }
                    Op::Touch(rel, how) => {
                        touch(&a, &rel, how);
                        did.push(format!("touch {rel} ({how:?})"));
                    }
                    Op::RacyAdd(first, second, bytes) => {
                        let first_path = a.join(&first);
                        if first_path.exists() {
                            std::fs::remove_file(&first_path).unwrap();
                        }
                        let exec = files.get(&first).is_some_and(|f| f.1);
                        write_file(&a, &first, &bytes, exec);
                        files.insert(first.clone(), (bytes.clone(), exec));
                        let extra = build(&a, &cache_a);
                        let dir = first_path.parent().unwrap().to_path_buf();
                        let mtime = std::fs::metadata(&dir).unwrap().modified().unwrap();
                        let age = SystemTime::now().duration_since(mtime).unwrap_or_default();
                        let exec = files.get(&second).is_some_and(|f| f.1);
                        write_file(&a, &second, &bytes, exec);
                        files.insert(second.clone(), (bytes.clone(), exec));
                        did.push(format!(
                            "create {first} {:?}; an extra build of A (exit {}); write {second}",
                            String::from_utf8_lossy(&bytes),
                            extra.code
                        ));
                        if age < Duration::from_millis(1500) {
                            std::fs::File::open(&dir)
                                .unwrap()
                                .set_modified(mtime)
                                .unwrap();
                            racy.push(dir.clone());
                            did.push("the directory's mtime set back".to_owned());
                        } else {
                            did.push(format!("(too slow for a racy edit of {first}: {age:?})"));
                        }
                    }
                    Op::Tamper(rel, how) => {
                        let path = a.join("flow-out").join(&rel);
                        let done = match how {
                            TamperHow::RemoveAll => std::fs::remove_dir_all(&path),
                            TamperHow::Delete => std::fs::remove_file(&path),
                            TamperHow::Overwrite if path.exists() => {
                                std::fs::write(&path, "tampered\n")
                            }
                            TamperHow::Overwrite => Ok(()),
                        };
                        // The output may not exist (its task failed, or was skipped).
                        if done.is_ok() {
                            did.push(format!("flow-out/{rel}: {how:?}"));
                        }
                    }
                    Op::Overwrite(rel) => {
                        let path = a.join(&rel);
                        let past = SystemTime::now() - Duration::from_secs(90);
                        std::fs::File::options()
                            .write(true)
                            .open(&path)
                            .unwrap()
                            .set_modified(past)
                            .unwrap();
                        settle();
                        let extra = build(&a, &cache_a);
                        did.push(format!(
                            "mtime of {rel} set 90 s back; an extra build of A (exit {})",
                            extra.code
                        ));
                        keep_mtime.push((rel, past));
                    }
                    Op::Racy(rel, first) => {
                        let exec = files[&rel].1;
                        write_file(&a, &rel, &first, exec);
                        files.insert(rel.clone(), (first.clone(), exec));
                        let extra = build(&a, &cache_a);
                        did.push(format!(
                            "write {rel} {:?}; an extra build of A (exit {})",
                            String::from_utf8_lossy(&first),
                            extra.code
                        ));
                        let mtime = std::fs::metadata(a.join(&rel)).unwrap().modified().unwrap();
                        let age = SystemTime::now().duration_since(mtime).unwrap_or_default();
                        if age < Duration::from_millis(1500) {
                            keep_mtime.push((rel, mtime));
                        } else {
                            did.push(format!("(too slow for a racy edit of {rel}: {age:?})"));
                        }
                    }
                }
            }
            let next = model.render();
            did.extend(sync(&a, &files, &next));
            for (rel, mtime) in keep_mtime {
                racy.push(a.join(&rel));
                let f = std::fs::File::options()
                    .write(true)
                    .open(a.join(&rel))
                    .unwrap();
                f.set_modified(mtime).unwrap();
                did.push(format!("mtime of {rel} set back"));
            }
            files = next;
            if let Some((race, before)) = race {
                // First, so that it shows in the verbose run's shortened lines.
                did.insert(0, race.finish());
                if let Edit::Race { undo: true, .. } = edit {
                    model = before;
                    let next = model.render();
                    did.push("then the sources as they were before:".to_owned());
                    did.extend(sync(&a, &files, &next));
                    files = next;
                }
            }
            if step % 2 == 0 {
                let aged = age(&a, &racy);
                settle();
                did.push(format!("{aged} recent path(s) aged"));
            }
            history.push(format!("step {step}: {edit:?}: {}", did.join("; ")));
        } else {
            let aged = age(&a, &[]);
            settle();
            history[0].push_str(&format!("; {aged} path(s) aged"));
        }
        // The harness itself: A holds exactly the rendered sources.
        let on_disk = read_tree(&a, &["flow-out"]);
        assert!(
            on_disk == files,
            "test harness bug: workspace A differs from its model at step {step}"
        );

        let predicted = explain(&a, &cache_a);
        let got = build(&a, &cache_a);
        if let Some(why) = predicted.and_then(|p| disagreement(&p, &got.decisions)) {
            return Err(TestCaseError::fail(format!(
                "flow explain disagrees with the build after step {step}: {why}\n\
                 === steps\n{}\n\n=== workspace at step {step}\n{}\n\
                 === build (stdout)\n{}\n=== build (stderr)\n{}",
                history.join("\n"),
                show_files(&files),
                got.stdout,
                got.stderr,
            )));
        }
        // Minimality on the way: building A again right away is a no-op.
        // A failing action runs again, and replaces the outputs its failed run kept.
        let out_stats = || without_failed_runs(stats(&a.join("flow-out")));
        let (out_before, cas_before) = (out_stats(), stats(&cache_a.join("cas")));
        let again = build(&a, &cache_a);
        let problem = if again.labels != got.labels || again.code != got.code {
            Some("other outcomes")
        } else if again.stdout.contains("[RAN]") {
            Some("actions ran")
        } else if out_stats() != out_before {
            Some("files under flow-out/ were written")
        } else if !got.labels.values().any(|v| v == "FAILED")
            && stats(&cache_a.join("cas")) != cas_before
        {
            Some("the CAS changed")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(TestCaseError::fail(format!(
                "a second build right after step {step} is not a no-op: {problem}\n\
                 === steps\n{}\n\n=== workspace at step {step}\n{}\n\
                 === first build (stdout)\n{}\n=== second build (stdout)\n{}\n\
                 === second build (stderr)\n{}",
                history.join("\n"),
                show_files(&files),
                got.stdout,
                again.stdout,
                again.stderr,
            )));
        }
        let b = tmp.path().join(format!("b{step}"));
        let cache_b = tmp.path().join(format!("cache-b{step}"));
        write_all(&b, &files);
        let want = build(&b, &cache_b);
        if std::env::var_os("FLOW_PROPTEST_VERBOSE").is_some() {
            let count = |o: &Outcome, t: &str| o.labels.values().filter(|v| *v == t).count();
            let edit: String = history.last().unwrap().chars().take(300).collect();
            eprintln!(
                "{edit} | A: code {} ok {} failed {} skipped {} ran {} via {}, again via {} | B: code {} | out files {}",
                got.code,
                count(&got, "ok"),
                count(&got, "FAILED"),
                count(&got, "SKIPPED"),
                got.stdout.matches("[RAN]").count(),
                path_taken(&got),
                path_taken(&again),
                want.code,
                got.out.len()
            );
        }
        if model.live().is_empty() {
            // Shrinking can remove every task; `//...` then matches nothing, an error.
            if (got.code, want.code) != (2, 2) {
                return Err(TestCaseError::fail(format!(
                    "with no targets, expected exit 2 twice, got {} and {}",
                    got.code, want.code
                )));
            }
        } else if got.code == 2 || want.code == 2 {
            // The model keeps every BUILD file valid; an analysis error is a harness bug.
            return Err(TestCaseError::fail(format!(
                "analysis error at step {step} (incremental {}, clean {}):\n{}\n{}",
                got.code,
                want.code,
                want.stderr,
                show_files(&files)
            )));
        }
        if (got.code, &got.labels, &got.out) != (want.code, &want.labels, &want.out) {
            return Err(TestCaseError::fail(format!(
                "the incremental build differs from a clean build after step {step}:\n{}\n\
                 === steps\n{}\n\n=== workspace at step {step}\n{}\n\
                 === incremental build (stdout)\n{}\n=== incremental build (stderr)\n{}\n\
                 === clean build (stdout)\n{}\n=== clean build (stderr)\n{}",
                describe_diff(&got, &want),
                history.join("\n"),
                show_files(&files),
                got.stdout,
                got.stderr,
                want.stdout,
                want.stderr,
            )));
        }
        std::fs::remove_dir_all(&b).unwrap();
        std::fs::remove_dir_all(&cache_b).unwrap();
    }
    Ok(())
}

#[test]
fn incremental_equals_clean() {
    let cases = env_number("FLOW_PROPTEST_CASES", 5) as u32;
    let steps = env_number("FLOW_PROPTEST_STEPS", 12) as usize;
    let seed = env_number("FLOW_PROPTEST_SEED", 0);
    let shrink_secs = env_number("FLOW_PROPTEST_SHRINK_SECS", 300) as u32;
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_time: shrink_secs.saturating_mul(1000),
        // (`u32::MAX` would mean `4 * cases`.)
        max_shrink_iters: 1_000_000,
        ..Config::default()
    };
    let rng = seeded_rng(*b"flow incremental equals clean!!!", seed);
    let mut runner = TestRunner::new_with_rng(config, rng);
    match runner.run(&case(steps), |c| check_case(&c)) {
        Ok(()) => {}
        Err(TestError::Fail(why, c)) => {
            let tasks: Vec<(usize, &TaskSpec)> = c.slots[..c.count]
                .iter()
                .enumerate()
                .filter_map(|(i, t)| Some((i, t.as_ref()?)))
                .collect();
            panic!(
                "{why}\n=== minimal failing case\nedits: {:#?}\ntasks (position, spec): {tasks:#?}\nfiles: {:#?}",
                c.edits, c.files
            )
        }
        Err(TestError::Abort(why)) => panic!("proptest aborted: {why}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Minimality.
// ---------------------------------------------------------------------------------------------

/// Three packages: a file output read across packages through an early-cutoff stage (`sort`), a
/// directory output, a check (no outputs), `env`, a glob, and an unrelated target.
fn minimality_ws() -> Ws {
    Ws::new()
        .file("lib/words.txt", "pear\napple\n")
        .file("lib/more/extra.in", "fig\n")
        .file(
            "lib/BUILD",
            r#"task(
    name = "sorted",
    srcs = ["words.txt"] + glob(["**/*.in"]),
    outs = ["sorted.txt"],
    cmd = "sort $(SRCS) > $(OUTS)",
)
task(
    name = "site",
    srcs = ["words.txt"],
    outs = ["site/"],
    cmd = "mkdir -p site/data && cp words.txt site/data/ && echo '<h1>words</h1>' > site/index.html",
)
task(name = "lint", srcs = ["words.txt"], cmd = "grep -q apple words.txt")
"#,
        )
        .file("app/main.txt", "main\n")
        .file(
            "app/BUILD",
            r#"task(
    name = "count",
    srcs = ["main.txt"],
    deps = ["//lib:sorted", "//lib:lint"],
    outs = ["count.txt"],
    env = {"MODE": "ci"},
    cmd = "cat main.txt $(location //lib:sorted) | wc -l > $(OUTS); echo $$MODE >> $(OUTS)",
)
task(
    name = "upper",
    deps = [":count", "//lib:site"],
    outs = ["gen/upper.txt"],
    cmd = "cat $(location :count) $(location //lib:site)/index.html | tr a-z A-Z > $(OUTS)",
)
"#,
        )
        .file("other/o.txt", "other\n")
        .file(
            "other/BUILD",
            r#"task(name = "copy", srcs = ["o.txt"], outs = ["o.out"], cmd = "cp o.txt o.out")"#,
        )
}

const MINIMALITY: &[&str] = &[
    "//app:count",
    "//app:upper",
    "//lib:lint",
    "//lib:site",
    "//lib:sorted",
    "//other:copy",
];

/// Size, mtime and inode of every file under `dir`: what a rewrite would change.
type Stats = BTreeMap<String, (u64, i64, i64, u64)>;

/// Sets every file, directory and symlink (itself) under `root` (but `flow-out/` and `skip`)
/// modified in the last few seconds to a distinct mtime a minute in the past; returns how many. File states recorded
/// after that are trusted at once (their mtime is outside the racy window), so the next builds
/// carry unchanged actions over from the build record instead of re-keying them all, as they do
/// when edits are seconds old. Each aged path gets a new mtime, so aging is itself a touch.
fn age(root: &Path, skip: &[std::path::PathBuf]) -> usize {
    let now = SystemTime::now();
    let mut aged = 0u32;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() && path != root.join("flow-out") {
                stack.push(path.clone());
            }
            let recent = meta
                .modified()
                .is_ok_and(|m| now.duration_since(m).unwrap_or_default() < Duration::from_secs(5));
            if !recent || skip.contains(&path) || path == root.join("flow-out") {
                continue;
            }
            aged += 1;
            let when = now - Duration::from_secs(60) + Duration::from_nanos(u64::from(aged) * 1000);
            set_mtime_of_link(&path, when);
        }
    }
    aged as usize
}

/// Sets the mtime of `path` itself (a symlink is not followed).
fn set_mtime_of_link(path: &Path, when: SystemTime) {
    let since = when.duration_since(UNIX_EPOCH).unwrap();
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &nix::sys::time::TimeSpec::UTIME_OMIT,
        &nix::sys::time::TimeSpec::from_duration(since),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn stats(dir: &Path) -> Stats {
    let mut out = Stats::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            out.insert(rel, (m.size(), m.mtime(), m.mtime_nsec(), m.ino()));
        }
    }
    out
}

/// `stats` without the outputs of failed runs: the `.NAME.flow-failed` markers and what they
/// mark (files, or directories' contents), which the next run of a failing action replaces
/// (docs/build.md, "Outputs of a failed run").
fn without_failed_runs(mut s: Stats) -> Stats {
    let marked: Vec<String> = s
        .keys()
        .filter_map(|rel| {
            let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            let out = name.strip_prefix('.')?.strip_suffix(".flow-failed")?;
            Some(if dir.is_empty() {
                out.to_owned()
            } else {
                format!("{dir}/{out}")
            })
        })
        .collect();
    s.retain(|rel, _| {
        !rel.ends_with(".flow-failed")
            && !marked.iter().any(|m| {
                rel == m
                    || rel
                        .strip_prefix(m.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            })
    });
    s
}

/// `flow build //...` in `ws`: the exit code and label → tag.
fn build_ws(ws: &Ws) -> (BTreeMap<String, String>, String) {
    let run = ws.run(&["build", "//..."]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    (label_tags(&run.stdout), run.stdout)
}

fn all(tag: &str) -> BTreeMap<String, String> {
    MINIMALITY
        .iter()
        .map(|l| (l.to_string(), tag.to_owned()))
        .collect()
}

/// The workspace's sources: every file but `.flow/` and `flow-out/`.
fn sources(ws: &Ws) -> Vec<String> {
    read_tree(ws.path(), &[".flow", "flow-out"])
        .into_keys()
        .collect()
}

#[test]
fn touching_every_source_runs_nothing_writes_nothing_and_rewrites_nothing() {
    let ws = minimality_ws();
    let (tags, _) = build_ws(&ws);
    assert_eq!(tags, all("RAN"));
    let cas = ws.path().join(".flow/cas");
    let out = ws.path().join("flow-out");
    let (cas_before, out_before) = (stats(&cas), stats(&out));
    assert!(!cas_before.is_empty() && out_before.len() >= 6);

    let hows = [
        TouchHow::Mtime(1),
        TouchHow::Rewrite,
        TouchHow::Replace,
        TouchHow::Mtime(2),
    ];
    for how in hows {
        // Every source, BUILD files and flow.toml included.
        for rel in sources(&ws) {
            touch(ws.path(), &rel, how);
        }
        let (tags, stdout) = build_ws(&ws);
        assert_eq!(
            tags,
            all("CACHED"),
            "after touching with {how:?}:\n{stdout}"
        );
        assert!(
            stdout.contains("flow: ok: 0 ran, 6 cached, 0 failed, 0 skipped, 0 flaky in "),
            "{stdout}"
        );
        assert_eq!(stats(&cas), cas_before, "the CAS changed ({how:?})");
        assert_eq!(stats(&out), out_before, "flow-out/ was rewritten ({how:?})");
    }
}

#[test]
fn a_rerun_rewrites_no_unrelated_output_and_no_blob() {
    let ws = minimality_ws();
    build_ws(&ws);
    let cas = ws.path().join(".flow/cas");
    let out = ws.path().join("flow-out");
    let (cas_before, out_before) = (stats(&cas), stats(&out));

    ws.write("other/o.txt", b"changed\n");
    let (tags, stdout) = build_ws(&ws);
    let mut want = all("CACHED");
    want.insert("//other:copy".into(), "RAN".into());
    assert_eq!(tags, want, "{stdout}");
    assert_eq!(
        std::fs::read_to_string(out.join("other/o.out")).unwrap(),
        "changed\n"
    );
    let out_after = stats(&out);
    for (rel, before) in &out_before {
        if rel != "other/o.out" {
            assert_eq!(
                out_after.get(rel),
                Some(before),
                "flow-out/{rel} was rewritten"
            );
        }
    }
    // Blobs are immutable: the new run only adds.
    let cas_after = stats(&cas);
    for (rel, before) in &cas_before {
        assert_eq!(cas_after.get(rel), Some(before), "cas/{rel} was rewritten");
    }
    assert!(cas_after.len() > cas_before.len());
}

/// Early cutoff: `//lib:sorted` re-runs after `words.txt` is reordered and writes identical
/// bytes, so `//app:count`, which reads only that output (and a check), stays cached and its
/// output file is not touched. `docs/build.md` promises nothing about the re-run action's own
/// output file under `flow-out/` beyond its bytes ("Outputs are then written to
/// `flow-out/<package>/`"), so only its bytes are asserted: the engine currently writes it again
/// (a new inode) after every run.
#[test]
fn early_cutoff_leaves_dependents_cached_and_their_outputs_untouched() {
    let ws = minimality_ws();
    build_ws(&ws);
    let out = ws.path().join("flow-out");
    let before = stats(&out);
    let bytes = |rel: &str| std::fs::read(out.join(rel)).unwrap();
    let (sorted, count) = (bytes("lib/sorted.txt"), bytes("app/count.txt"));

    ws.write("lib/words.txt", b"apple\npear\n");
    let (tags, stdout) = build_ws(&ws);
    let mut want = all("CACHED");
    for ran in ["//lib:sorted", "//lib:site", "//lib:lint", "//app:upper"] {
        want.insert(ran.into(), "RAN".into());
    }
    assert_eq!(tags, want, "{stdout}");
    assert_eq!(bytes("lib/sorted.txt"), sorted);
    assert_eq!(bytes("app/count.txt"), count);
    let after = stats(&out);
    for cached in ["app/count.txt", "other/o.out"] {
        assert_eq!(
            after[cached], before[cached],
            "flow-out/{cached} was rewritten"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions found by `incremental_equals_clean`: `flow-out/` kept outputs that a clean build
// does not have (fixed in 2cb69ca).
// ---------------------------------------------------------------------------------------------

/// `flow build -k //...` in `ws` (default cache): the exit code and the paths under `flow-out/`.
fn build_k(ws: &Ws) -> (i32, Vec<String>) {
    let run = ws.run(&["build", "-k", "//..."]);
    let out = read_tree(&ws.path().join("flow-out"), &[]);
    (run.code, out.into_keys().collect())
}

#[test]
fn regression_renamed_output_keeps_stale_file() {
    let ws = Ws::new().file(
        "p/BUILD",
        r#"task(name = "t", outs = ["a.txt"], cmd = "echo t > $(OUTS)")"#,
    );
    assert_eq!(build_k(&ws), (0, vec!["p/a.txt".into()]));
    ws.write(
        "p/BUILD",
        br#"task(name = "t", outs = ["b.txt"], cmd = "echo t > $(OUTS)")"#,
    );
    // A clean build leaves only `p/b.txt`.
    assert_eq!(build_k(&ws), (0, vec!["p/b.txt".into()]));
}

#[test]
fn regression_removed_target_keeps_stale_output() {
    let ws = Ws::new().file(
        "p/BUILD",
        r#"task(name = "t", outs = ["a.txt"], cmd = "echo t > $(OUTS)")
task(name = "u", outs = ["b.txt"], cmd = "echo u > $(OUTS)")
"#,
    );
    assert_eq!(build_k(&ws), (0, vec!["p/a.txt".into(), "p/b.txt".into()]));
    ws.write(
        "p/BUILD",
        br#"task(name = "u", outs = ["b.txt"], cmd = "echo u > $(OUTS)")"#,
    );
    assert_eq!(build_k(&ws), (0, vec!["p/b.txt".into()]));
}

#[test]
fn regression_failed_action_keeps_stale_output() {
    let ws = Ws::new().file("p/a.txt", "ok\n").file(
        "p/BUILD",
        r#"task(name = "t", srcs = ["a.txt"], outs = ["o.txt"], cmd = "cp a.txt o.txt && ! grep -q x a.txt")"#,
    );
    assert_eq!(build_k(&ws), (0, vec!["p/o.txt".into()]));
    ws.write("p/a.txt", b"x\n");
    // `//p:t` fails; a clean build keeps only the failed run's own output, marked as such
    // (`engine/failed.rs`), never the earlier success's.
    assert_eq!(
        build_k(&ws),
        (1, vec!["p/.o.txt.flow-failed".into(), "p/o.txt".into()])
    );
    let out = read_tree(&ws.path().join("flow-out"), &[]);
    assert_eq!(out["p/o.txt"].0, b"x\n");
}

#[test]
fn regression_skipped_action_keeps_stale_output() {
    let ws = Ws::new().file("p/a.txt", "ok\n").file(
        "p/BUILD",
        r#"task(name = "check", srcs = ["a.txt"], cmd = "! grep -q x a.txt")
task(name = "t", deps = [":check"], outs = ["o.txt"], cmd = "echo t > $(OUTS)")
"#,
    );
    assert_eq!(build_k(&ws), (0, vec!["p/o.txt".into()]));
    ws.write("p/a.txt", b"x\n");
    // `//p:check` fails and `//p:t` is skipped; a clean build leaves nothing in flow-out/.
    assert_eq!(build_k(&ws), (1, Vec::<String>::new()));
}
