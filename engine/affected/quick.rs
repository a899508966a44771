//! The quick answer to `--since`, when git alone can give the same one as the static keys.
//!
//! When every file that differs between the commit and the working tree (`git diff`) is a
//! modified regular file (no file added, deleted, renamed, turned into a link, no untracked
//! file) and none of them is read by analysis (a BUILD file, a `.star` file, `flow.toml`, a
//! `.gitignore`, a link), the evaluation at the commit would give the same targets with the
//! same definitions: the same BUILD and `.star` files, the same config, the same file listing
//! for `glob()`. When moreover every source is a regular file the commit holds at that path,
//! static keys differ exactly for the targets that read a changed file and for everything that
//! depends on those. That set is computed here from the graph, without writing the commit's
//! files out.
//!
//! Anything else (a directory source, a linked one, an ignored one), or a repository where
//! `git diff` does not show every byte and mode (see [`diff_shows_content`]), is `None`: the
//! caller compares static keys in full. `FLOW_SINCE_FULL=1` always does, so tests
//! can check that both answers agree.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use flow_rules::listing::{BUILD_FILE, GITIGNORE};

use crate::config::CONFIG_FILE;
use crate::delivery::git::git;
use crate::graph::TargetGraph;

/// Whether a change of the workspace-relative file `rel` can change what analysis gives: the
/// files evaluation reads (BUILD, `.star`, `flow.toml`) and the ignore files of the walk.
pub fn read_by_analysis(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name == BUILD_FILE || name.ends_with(".star") || name == GITIGNORE || rel == CONFIG_FILE
}

/// The targets of `graph` affected since `commit`, when git's diff suffices (module docs).
pub fn affected(root: &Path, graph: &TargetGraph, commit: &str) -> Option<BTreeSet<usize>> {
    if std::env::var_os("FLOW_SINCE_FULL").is_some_and(|v| v != "0") {
        return None;
    }
    if !diff_shows_content(root)? {
        return None;
    }
    let untracked = lines(root, &["ls-files", "-z", "--others", "--exclude-standard"])?;
    if !untracked.is_empty() {
        return None;
    }
    let diff = lines(
        root,
        &[
            "diff",
            "--name-status",
            "-z",
            "--no-renames",
            "--relative",
            commit,
        ],
    )?;
    // `STATUS\0PATH\0` pairs.
    let mut changed = HashSet::new();
    for pair in diff.chunks(2) {
        let [status, path] = pair else {
            return None;
        };
        let regular = std::fs::symlink_metadata(root.join(path)).is_ok_and(|m| m.is_file());
        if status != "M" || !regular || read_by_analysis(path) {
            return None;
        }
        changed.insert(path.clone());
    }
    let tracked: HashSet<String> = lines(
        root,
        &["ls-tree", "-r", "-z", "--name-only", commit, "--", "."],
    )?
    .into_iter()
    .collect();
    let mut direct = Vec::new();
    for i in 0..graph.targets().len() {
        let t = graph.target(i);
        let mut reads_change = false;
        for src in &t.srcs {
            let path = crate::expand::join_path(t.label.package(), src);
            // A directory, a link, a file the commit does not hold (ignored, or reached through
            // a linked directory): only the static keys can tell.
            let plain = std::fs::symlink_metadata(root.join(&path)).is_ok_and(|m| m.is_file());
            if !plain || !tracked.contains(&path) {
                return None;
            }
            reads_change |= changed.contains(&path);
        }
        if reads_change {
            direct.push(i);
        }
    }
    let mut affected = BTreeSet::new();
    while let Some(i) = direct.pop() {
        if affected.insert(i) {
            direct.extend(graph.rdeps(i));
        }
    }
    Some(affected)
}

/// Whether `git diff` shows every difference of content and executable bit: not when the
/// repository ignores file modes (`core.fileMode = false`), trusts less than the full stat
/// (`core.trustctime = false`, `core.checkStat = minimal`) or a file-system monitor
/// (`core.fsmonitor`), converts line ends or filters content (`core.autocrlf`, attributes
/// `text`, `eol`, `filter`, `ident`, `working-tree-encoding`, in the repository, in
/// `info/attributes` or in the global attributes file), holds index entries git does not look
/// at (`--assume-unchanged`, `--skip-worktree`), or is pointed at by `GIT_DIR` and its kin.
/// `None` when git fails.
fn diff_shows_content(root: &Path) -> Option<bool> {
    let config = |key: &str| {
        let out = git(root).args(["config", "--get", key]).output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_lowercase())
    };
    // Git pointed elsewhere than the workspace's repository (a hook's environment).
    if [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
    {
        return Some(false);
    }
    // Settings under which git's stat check, or a monitor, can miss an edit.
    if config("core.filemode")? == "false"
        || config("core.trustctime")? == "false"
        || config("core.checkstat")? == "minimal"
        || !matches!(config("core.fsmonitor")?.as_str(), "" | "false")
        || matches!(config("core.autocrlf")?.as_str(), "true" | "input")
        || !config("core.attributesfile")?.is_empty()
    {
        return Some(false);
    }
    // `h`/`s` (lowercase: assume-unchanged) and `S` (skip-worktree) tags.
    let tagged = lines(root, &["ls-files", "-v", "-z", "--full-name", ":/"])?;
    if tagged
        .iter()
        .any(|l| l.starts_with(|c: char| c.is_ascii_lowercase() || c == 'S'))
    {
        return Some(false);
    }
    let attributes = lines(
        root,
        &["ls-files", "-z", "--full-name", ":/*.gitattributes"],
    )?;
    let top = lines(root, &["rev-parse", "--show-toplevel"])
        .and_then(|l| l.into_iter().next())
        .map(|t| std::path::PathBuf::from(t.trim()))?;
    let info = lines(root, &["rev-parse", "--git-path", "info/attributes"])
        .and_then(|l| l.into_iter().next())
        .map(|p| root.join(p.trim()));
    // The global attributes file git reads by default (`core.attributesFile` unset).
    let global = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))
        .map(|d| d.join("git/attributes"));
    let files = attributes
        .iter()
        .map(|a| top.join(a))
        .chain(info)
        .chain(global);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let converts = text.split_whitespace().any(|w| {
            let w = w.trim_start_matches(['-', '!']);
            [
                "text",
                "eol",
                "filter",
                "ident",
                "working-tree-encoding",
                "crlf",
            ]
            .iter()
            .any(|a| w == *a || w.starts_with(&format!("{a}=")))
        });
        if converts {
            return Some(false);
        }
    }
    Some(true)
}

/// The NUL-separated fields `git ARGS` prints in `root`; `None` when git fails.
fn lines(root: &Path, args: &[&str]) -> Option<Vec<String>> {
    let out = git(root).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        out.stdout
            .split(|b| *b == 0)
            .filter(|f| !f.is_empty())
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect(),
    )
}
