//! The quick answer to `--since`, when git can give the same one as the static keys without
//! the commit's files being written out.
//!
//! When every file that differs between the commit and the working tree (`git diff --raw`) is a
//! regular file modified in place (no file added, deleted, renamed, turned into a link, no
//! untracked file, no `flow.toml` or `.gitignore` change), the file listing is the same on both
//! sides, so `glob()` answers the same. Then:
//! - when no BUILD or `.star` file changed, the definitions are the same too: static keys
//!   differ exactly for the targets that read a changed file and what depends on them, computed
//!   from the graph alone;
//! - otherwise the commit's definitions come from evaluating the commit's text of the changed
//!   BUILD and `.star` files (`git cat-file`) over the working tree's files
//!   (`analysis::analyze_with`), and static keys are compared with the commit's digest and
//!   executable bit for each changed source.
//!
//! Both need every source, and every BUILD and `.star` file the evaluation read (its
//! snapshot's record), to be a regular file the commit holds at that path, no symlink in the
//! walk, and a repository
//! where `git diff` sees every byte and mode (see [`diff_shows_content`]); anything else (a
//! directory source, a linked one, an ignored one) is `None`: the caller writes the commit's
//! files out and compares static keys in full. `FLOW_SINCE_FULL=1` always does, so tests can
//! check that both answers agree.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use flow_rules::listing::{ALWAYS_SKIPPED, BUILD_FILE, GITIGNORE};

use crate::analysis::AnalysisInputs;
use crate::config::CONFIG_FILE;
use crate::delivery::git::git;
use crate::error::Error;
use crate::graph::TargetGraph;
use crate::workspace::Workspace;

/// Whether a change of the workspace-relative file `rel` can change what analysis gives: the
/// files evaluation reads (BUILD, `.star`, `flow.toml`) and the ignore files of the walk.
pub fn read_by_analysis(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name == BUILD_FILE || name.ends_with(".star") || name == GITIGNORE || rel == CONFIG_FILE
}

/// The files that differ from the commit, when each is a modified regular file (module docs):
/// the BUILD and `.star` files with their text at the commit, and the other files with the
/// digest and executable bit of their content there. `None`: another kind of change.
struct Changes {
    analysis: BTreeMap<String, Arc<str>>,
    sources: HashMap<String, (blake3::Hash, bool)>,
}

/// Changes this many files or more are left to the full comparison.
const MAX_CHANGES: usize = 2000;

impl Changes {
    fn read(root: &Path, commit: &str) -> Option<Changes> {
        let diff = lines(
            root,
            &[
                "diff",
                "--raw",
                "-z",
                "--no-renames",
                "--no-abbrev",
                "--relative",
                commit,
            ],
        )?;
        if diff.len() > 2 * MAX_CHANGES {
            return None;
        }
        let mut changes = Changes {
            analysis: BTreeMap::new(),
            sources: HashMap::new(),
        };
        // `:OLD_MODE NEW_MODE OLD_SHA NEW_SHA STATUS\0PATH\0` pairs.
        for pair in diff.chunks(2) {
            let [meta, path] = pair else {
                return None;
            };
            let fields: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
            let [old_mode, _, old_sha, _, status] = fields[..] else {
                return None;
            };
            let regular = std::fs::symlink_metadata(root.join(path)).is_ok_and(|m| m.is_file());
            let name = path.rsplit('/').next().unwrap_or(path);
            let file_at_commit = old_mode == "100644" || old_mode == "100755";
            if status != "M"
                || !regular
                || !file_at_commit
                || name == GITIGNORE
                || path == CONFIG_FILE
            {
                return None;
            }
            let bytes = blob(root, old_sha)?;
            // Any file can be a source too (`glob(["**"])` takes the package's BUILD file).
            let executable = old_mode == "100755";
            changes
                .sources
                .insert(path.clone(), (blake3::hash(&bytes), executable));
            if read_by_analysis(path) {
                let text = String::from_utf8(bytes).ok()?;
                changes.analysis.insert(path.clone(), Arc::from(text));
            }
        }
        Some(changes)
    }
}

/// The targets of `graph` affected since `commit`, when git's diff suffices (module docs);
/// `cache` is the cache directory (not walked).
pub fn affected(
    ws: &Workspace,
    graph: &TargetGraph,
    commit: &str,
    cache: &Path,
    inputs: Option<&AnalysisInputs>,
) -> Option<Result<BTreeSet<usize>, Error>> {
    let root = &ws.root;
    if std::env::var_os("FLOW_SINCE_FULL").is_some_and(|v| v != "0") {
        return None;
    }
    if !diff_shows_content(root)? {
        return None;
    }
    let untracked = lines(root, &["ls-files", "-z", "--others", "--exclude-standard"])?;
    // What the walk never enters need not be ignored: flow's own directories, the cache.
    let cache_rel = cache
        .strip_prefix(root)
        .ok()
        .map(|c| format!("{}/", c.display()));
    let never_walked = |p: &String| {
        p.split('/').any(|c| ALWAYS_SKIPPED.contains(&c))
            || cache_rel.as_deref().is_some_and(|c| p.starts_with(c))
    };
    if untracked.iter().any(|p| !never_walked(p)) {
        return None;
    }
    let changes = Changes::read(root, commit)?;
    let tracked: HashSet<String> = lines(
        root,
        &["ls-tree", "-r", "-z", "--name-only", commit, "--", "."],
    )?
    .into_iter()
    .collect();
    plain_tracked_sources(root, graph, &tracked)?;
    analysis_inputs_tracked(&ws.root, inputs?, &tracked)?;
    if changes.analysis.is_empty() {
        // Same definitions: what reads a changed file, and what depends on that.
        let mut direct: Vec<usize> = (0..graph.targets().len())
            .filter(|&i| {
                let t = graph.target(i);
                t.srcs.iter().any(|src| {
                    let path = crate::expand::join_path(t.label.package(), src);
                    changes.sources.contains_key(&path)
                })
            })
            .collect();
        let mut affected = BTreeSet::new();
        while let Some(i) = direct.pop() {
            if affected.insert(i) {
                direct.extend(graph.rdeps(i));
            }
        }
        return Some(Ok(affected));
    }
    // The commit's definitions: its BUILD and `.star` files over the same files.
    let base = match crate::analysis::analyze_with(ws, cache, changes.analysis) {
        // The commit's text may load a module the commit does not hold (an ignored file).
        Ok((_, loaded)) if loaded.iter().any(|m| !tracked.contains(m)) => return None,
        Ok((base, _)) => base,
        Err(Error::Analysis(errors)) => {
            super::base_does_not_evaluate(commit, &errors);
            return Some(Ok((0..graph.targets().len()).collect()));
        }
        Err(e) => return Some(Err(e)),
    };
    plain_tracked_sources(root, &base, &tracked)?;
    let old = super::keys(&base, ws, &changes.sources);
    let new = super::keys(graph, ws, &HashMap::new());
    Some(Ok((0..graph.targets().len())
        .filter(|&i| {
            let label = graph.target(i).label.to_string();
            old.get(&label) != new.get(&label)
        })
        .collect()))
}

/// `Some` when every file the workspace's evaluation read (BUILD, `.star`, `.gitignore` files,
/// as its snapshot recorded them) is a file the commit holds at that path, and the walk met no
/// link: a module loaded from an ignored file, or a BUILD or `.star` file reached through a
/// link, changes with files git does not show as the analysis input.
fn analysis_inputs_tracked(
    root: &Path,
    inputs: &AnalysisInputs,
    tracked: &HashSet<String>,
) -> Option<()> {
    if !inputs.links.is_empty() || !tracked.contains(CONFIG_FILE) {
        return None;
    }
    for (path, _) in &inputs.stamps {
        let file = std::fs::symlink_metadata(root.join(path)).is_ok_and(|m| m.is_file());
        if file && read_by_analysis(path) && !tracked.contains(path) {
            return None;
        }
    }
    Some(())
}

/// `Some` when every source of `graph` is a regular file (not through a link) that the commit
/// holds at that path (`tracked`): else only the full comparison can tell.
fn plain_tracked_sources(
    root: &Path,
    graph: &TargetGraph,
    tracked: &HashSet<String>,
) -> Option<()> {
    for t in graph.targets() {
        for src in &t.srcs {
            let path = crate::expand::join_path(t.label.package(), src);
            let plain = std::fs::symlink_metadata(root.join(&path)).is_ok_and(|m| m.is_file());
            if !plain || !tracked.contains(&path) {
                return None;
            }
        }
    }
    Some(())
}

/// The bytes of the blob `sha`.
fn blob(root: &Path, sha: &str) -> Option<Vec<u8>> {
    let out = git(root).args(["cat-file", "blob", sha]).output().ok()?;
    out.status.success().then_some(out.stdout)
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
