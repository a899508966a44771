//! `flow hooks run pre-commit`: build the targets tagged `precommit` that the staged changes
//! affect, on the staged content, and fail (so git aborts the commit) when one fails.
//!
//! "Affected" is `--since`'s answer (`affected.rs`): static keys of the staged workspace
//! against those of `HEAD` (a repository without a commit yet: every target is new). Staged
//! content, never the unstaged edits nor untracked files:
//! - when the work tree equals the index for everything the build can read (no unstaged edit
//!   of a tracked file, no untracked file that is not ignored, outside `flow-out/` and
//!   `.flow/`), the build runs in place;
//! - otherwise the index is copied out (`git checkout-index`, which only reads the index) into
//!   a directory of the cache's `tmp/` (swept by `Cache::sweep_orphans` if flow is killed),
//!   and the build runs there with the user's cache, so results are shared both ways. The
//!   copy, and what the cache learnt about it as a workspace (its evaluation snapshot and build
//!   record), are removed after.
//!
//! The index is the one git names: during `git commit -a` or `git commit PATH`, git hands
//! the hook a temporary index in `GIT_INDEX_FILE`, read here like the usual one.
//!
//! Fast answers first: nothing staged in the workspace, no `precommit` target, or staged
//! paths none of which can change a tagged target's static key (no deletion, no BUILD,
//! `.star`, `flow.toml` or `.gitignore` file, none of the sources of the tagged targets and
//! their dependencies) exit 0 without evaluating `HEAD`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::delivery::git::git;
use crate::error::Error;
use crate::graph::TargetGraph;
use crate::session::SessionArgs;
use crate::workspace::Workspace;

/// The tag that marks the targets the pre-commit check builds.
pub const TAG: &str = "precommit";

/// `flow hooks run pre-commit`; `Ok` carries the exit code (1: a check failed).
pub fn run_pre_commit(start: &Path, cache_flag: Option<&Path>) -> Result<i32, Error> {
    absolute_index_file();
    let ws = Workspace::discover(start)?;
    let (repo, within) = super::repository(&ws.root, "run the pre-commit check")?;
    let cache_dir = crate::analysis::cache_dir(&ws, cache_flag);
    let staged = staged(&repo, &within)?;
    if staged.is_empty() {
        println!("flow: pre-commit: nothing staged in the workspace; nothing to check");
        return Ok(0);
    }
    let copy = if work_tree_differs(&repo, &within)? {
        Some(IndexCopy::write(&repo, &within, &cache_dir)?)
    } else {
        None
    };
    let build_ws = match &copy {
        Some(copy) if !copy.workspace.join(crate::config::CONFIG_FILE).is_file() => {
            println!("flow: pre-commit: flow.toml is not staged; nothing to check");
            return Ok(0);
        }
        Some(copy) => Workspace::discover(&copy.workspace)?,
        None => ws,
    };
    let (graph, _) = crate::analysis::analyze(&build_ws, &cache_dir)?;
    let tagged: BTreeSet<usize> = (0..graph.targets().len())
        .filter(|&i| graph.target(i).tags.iter().any(|t| t == TAG))
        .collect();
    if tagged.is_empty() {
        println!("flow: pre-commit: no target is tagged `{TAG}`; nothing to check");
        return Ok(0);
    }
    let nothing = || {
        println!(
            "flow: pre-commit: the staged changes affect none of the {} target(s) tagged \
             `{TAG}`; nothing to check",
            tagged.len()
        );
        Ok(0)
    };
    if !may_affect(&graph, &tagged, &staged, &within, &build_ws.root) {
        return nothing();
    }
    let head = head(&repo);
    let scratch = crate::analysis::open_cache(&cache_dir)?.cas().temp_path();
    let affected =
        crate::affected::against(&build_ws, &graph, &repo, &within, head.as_deref(), &scratch)?;
    let labels: Vec<String> = tagged
        .intersection(&affected)
        .map(|&i| graph.target(i).label.to_string())
        .collect();
    if labels.is_empty() {
        return nothing();
    }
    drop(graph);
    println!(
        "flow: pre-commit: checking {} target(s) tagged `{TAG}` on the staged content{}",
        labels.len(),
        if copy.is_some() {
            " (a copy of the index: the work tree has other changes)"
        } else {
            ""
        }
    );
    let code = crate::commands::build::run(
        &build_ws.root,
        crate::commands::build::BuildArgs::of_labels(
            &labels,
            SessionArgs {
                cache_dir: Some(&cache_dir),
                jobs: None,
                // Every failing check at once, not the first one.
                keep_going: true,
                ..SessionArgs::default()
            },
        ),
    )?;
    if code == 1 {
        eprintln!(
            "flow: pre-commit: a check failed, so the commit is aborted: fix it, `git add`, and \
             commit again (`git commit --no-verify` skips the check)"
        );
    }
    Ok(code)
}

/// During `git commit`, `GIT_INDEX_FILE` may be relative to the work tree's top, where git
/// started the hook; flow runs git elsewhere too, so it is made absolute once, here.
fn absolute_index_file() {
    if let Some(index) = std::env::var_os("GIT_INDEX_FILE") {
        let index = PathBuf::from(index);
        if index.is_relative() {
            if let Ok(cwd) = std::env::current_dir() {
                std::env::set_var("GIT_INDEX_FILE", cwd.join(index));
            }
        }
    }
}

/// `within` as a pathspec from the work tree's top.
fn pathspec(within: &Path) -> String {
    if within.as_os_str().is_empty() {
        ".".to_owned()
    } else {
        within.display().to_string()
    }
}

/// The staged changes under `within`: (git's status letter, path from the top).
fn staged(repo: &Path, within: &Path) -> Result<Vec<(u8, String)>, Error> {
    let out = git_output(
        repo,
        &[
            "diff",
            "--cached",
            "--name-status",
            "--no-renames",
            "-z",
            "--",
            &pathspec(within),
        ],
    )?;
    let mut fields = out.split(|&b| b == 0).filter(|f| !f.is_empty());
    let mut changes = Vec::new();
    while let (Some(status), Some(path)) = (fields.next(), fields.next()) {
        changes.push((status[0], String::from_utf8_lossy(path).into_owned()));
    }
    Ok(changes)
}

/// Whether the work tree differs from the index under `within` (an unstaged edit, an
/// untracked file that is not ignored), outside what the build never reads.
fn work_tree_differs(repo: &Path, within: &Path) -> Result<bool, Error> {
    let spec = pathspec(within);
    let exclude = |dir: &str| format!(":(exclude){}", within.join(dir).display());
    let out = git_output(
        repo,
        &[
            "--no-optional-locks",
            "status",
            "--porcelain",
            "-z",
            "--untracked-files=all",
            "--",
            &spec,
            &exclude(crate::session::OUT_DIR),
            &exclude(".flow"),
        ],
    )?;
    let mut fields = out.split(|&b| b == 0).filter(|f| !f.is_empty());
    while let Some(entry) = fields.next() {
        // `XY path`; a rename or copy in the index (X) is followed by its original path.
        if matches!(entry.first(), Some(b'R' | b'C')) {
            fields.next();
        }
        if entry.get(1).is_some_and(|&y| y != b' ') {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a staged path could change the static key of a tagged target (see the module doc).
/// `false` is certain; `true` leaves the answer to the static keys.
fn may_affect(
    graph: &TargetGraph,
    tagged: &BTreeSet<usize>,
    staged: &[(u8, String)],
    within: &Path,
    root: &Path,
) -> bool {
    let mut reads = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<usize> = tagged.iter().copied().collect();
    while let Some(i) = todo.pop() {
        if !seen.insert(i) {
            continue;
        }
        let t = graph.target(i);
        for src in &t.srcs {
            let path = crate::expand::join_path(t.label.package(), src);
            // Through a link (the source's own, or a linked directory), what is read is not
            // the path staged: only the static keys can tell.
            let full = root.join(&path);
            let canonical = root.canonicalize().map(|r| r.join(&path));
            if full.canonicalize().ok() != canonical.ok() {
                return true;
            }
            reads.insert(path);
        }
        todo.extend(graph.deps(i));
    }
    staged.iter().any(|(status, path)| {
        let rel = Path::new(path)
            .strip_prefix(within)
            .unwrap_or(Path::new(path));
        let rel = rel.to_str().unwrap_or("");
        *status != b'M' && *status != b'A'
            || crate::affected::read_by_analysis(rel)
            || reads.contains(rel)
    })
}

/// `HEAD`'s commit; `None` before the first commit.
fn head(repo: &Path) -> Option<String> {
    let out = git(repo)
        .args(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn git_output(repo: &Path, args: &[&str]) -> Result<Vec<u8>, Error> {
    let out = git(repo).args(args).output().map_err(|e| Error::Io {
        path: repo.to_path_buf(),
        action: "run git in",
        error: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(Error::Io {
            path: repo.to_path_buf(),
            action: "read the staged changes of",
            error: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

/// The index's files, written into the cache's `tmp/`; removed on drop, with the snapshot and
/// build records the cache keeps about the copy as a workspace.
struct IndexCopy {
    dir: PathBuf,
    /// The workspace's root inside it.
    workspace: PathBuf,
    cache_dir: PathBuf,
}

impl IndexCopy {
    fn write(repo: &Path, within: &Path, cache_dir: &Path) -> Result<IndexCopy, Error> {
        let dir = crate::analysis::open_cache(cache_dir)?.cas().temp_path();
        let copy = IndexCopy {
            workspace: dir.join(within),
            dir,
            cache_dir: cache_dir.to_path_buf(),
        };
        let mut prefix = copy.dir.display().to_string();
        prefix.push('/');
        // Reads the index only (no `-u`): the user's index, work tree and stash are untouched,
        // and git's `index.lock`, held during a commit, is no obstacle.
        git_output(
            repo,
            &["checkout-index", "--all", &format!("--prefix={prefix}")],
        )?;
        // Links out of the repository, or to ignored files, reach the same files from the copy.
        crate::affected::relink_dangling(repo, None, &copy.dir);
        Ok(copy)
    }
}

impl Drop for IndexCopy {
    fn drop(&mut self) {
        // The snapshot and build records of the copy's root: `analysis/<workspace id>*`.
        if let Ok(root) = std::fs::canonicalize(&self.workspace) {
            let id = crate::analysis::workspace_id(&root);
            let analysis = self.cache_dir.join("analysis");
            for entry in std::fs::read_dir(&analysis).into_iter().flatten().flatten() {
                if entry.file_name().to_string_lossy().starts_with(&id) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
