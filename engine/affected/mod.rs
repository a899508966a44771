//! `--since REF`: the targets whose definition or transitive inputs differ between the commit
//! `REF` names and the working tree, by content.
//!
//! Each side gets a **static key** per target: a blake3 digest of its definition as evaluated
//! (kind, command, sources' paths, outputs, env, secret names, tools, sandboxing, caching,
//! delivery attributes), the content digest and executable bit of each of its sources, and the
//! static keys of its dependencies. A target is affected when its key differs from the key of the target of
//! the same label at `REF`, or when there is none. So a lockfile edit affects only what reads
//! it; a `.star` macro edit affects what the macro declares differently; a whitespace edit of a
//! source affects its readers (bytes differ; early cutoff stops it at run time as usual); an
//! edit nothing reads affects nothing.
//!
//! When git's diff shows only modified sources, nothing analysis reads, the answer comes from
//! the graph alone (`quick.rs`, the same set at a fraction of the cost). Otherwise `REF`'s side
//! is evaluated in a temporary copy of that commit's files (removed after; written
//! through a temporary git index, so the repository's index, work tree and worktrees are never
//! touched), with its own `flow.toml`, BUILD and `.star` files, and sources read there. A base
//! whose BUILD files do not evaluate has no targets: everything selected is affected. A ref missing from
//! the clone (a shallow clone without enough history) is an error saying how to fetch it,
//! never a silent "everything changed".

mod quick;

pub use quick::read_by_analysis;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::delivery::git::git;
use crate::error::Error;
use crate::graph::TargetGraph;
use crate::workspace::Workspace;

/// The targets of `graph` (the working tree's, of workspace `ws`) affected since `since`;
/// `scratch` is a path for the base's files, created and removed here: a path in the cache's
/// `tmp/` (`Cas::temp_path`), so that what a killed run leaves is swept with the rest; `cache`
/// is the cache directory; `inputs` what the analysis of `graph` read (its snapshot's record;
/// `None`: unknown, and no quick answer).
pub fn affected(
    ws: &Workspace,
    graph: &TargetGraph,
    since: &str,
    scratch: &Path,
    cache: &Path,
    inputs: Option<&crate::analysis::AnalysisInputs>,
) -> Result<BTreeSet<usize>, Error> {
    let profile = crate::profile::Profile::from_env();
    let commit = resolve(&ws.root, since)?;
    if let Some(affected) = quick::affected(ws, graph, &commit, cache, inputs) {
        profile.mark("affected set, from git's diff");
        return affected;
    }
    let (repo, within) = repository(&ws.root)?;
    let affected = against(ws, graph, &repo, &within, Some(&commit), scratch);
    profile.mark("affected set, from static keys of both sides");
    affected
}

/// The targets of `graph` (of workspace `ws`) whose static keys differ from those of the
/// workspace at `within` (relative) in `commit` of the git repository whose work tree is
/// `repo`; with no commit (a repository without one yet), every target. `ws` need not be in
/// `repo` (the pre-commit check builds a copy of the index: `commands/hooks/`). `scratch`: as
/// for [`affected`].
pub fn against(
    ws: &Workspace,
    graph: &TargetGraph,
    repo: &Path,
    within: &Path,
    commit: Option<&str>,
    scratch: &Path,
) -> Result<BTreeSet<usize>, Error> {
    let Some(commit) = commit else {
        return Ok((0..graph.targets().len()).collect());
    };
    let profile = crate::profile::Profile::from_env();
    let base = Checkout::of(repo, within, commit, scratch)?;
    profile.mark("since: the base's files written out");
    if !base.workspace.join(crate::config::CONFIG_FILE).is_file() {
        // The workspace is new since the commit: so is every target.
        return Ok((0..graph.targets().len()).collect());
    }
    let old_ws = Workspace::discover(&base.workspace)?;
    let old = match crate::analysis::analyze(&old_ws, &base.dir.join("analysis")) {
        Ok((old_graph, _)) => {
            profile.mark("since: the base analysed");
            keys(&old_graph, &old_ws, &HashMap::new())
        }
        // The base does not evaluate: every target is new to it. Said, since it means
        // building everything (a source linked out of the tree dangles in the base's copy).
        Err(Error::Analysis(errors)) => {
            base_does_not_evaluate(commit, &errors);
            HashMap::new()
        }
        Err(e) => return Err(e),
    };
    profile.mark("since: the base's static keys");
    let new = keys(graph, ws, &HashMap::new());
    profile.mark("since: the static keys");
    Ok((0..graph.targets().len())
        .filter(|&i| {
            let label = graph.target(i).label.to_string();
            old.get(&label) != new.get(&label)
        })
        .collect())
}

/// The work tree of the git repository `root` is in (canonical), and `root` relative to it.
pub fn repository(root: &Path) -> Result<(PathBuf, PathBuf), Error> {
    let top = git(root)
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .map_err(|e| io(root, "run git in", e))?;
    if !top.status.success() {
        return Err(Error::Io {
            path: root.to_path_buf(),
            action: "find the git work tree of",
            error: String::from_utf8_lossy(&top.stderr).trim().to_owned(),
        });
    }
    let repo = PathBuf::from(String::from_utf8_lossy(&top.stdout).trim());
    let repo = std::fs::canonicalize(&repo).unwrap_or(repo);
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let within = root
        .strip_prefix(&repo)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    Ok((repo, within))
}

/// The commit `since` names, or an error saying how to get it.
pub fn resolve(root: &Path, since: &str) -> Result<String, Error> {
    let inside = git(root)
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .map_err(|e| io(root, "run git in", e))?;
    if !inside.status.success() {
        return Err(Error::Usage {
            message: format!(
                "`--since {since}` compares with a git commit, and `{}` is not in a git checkout",
                root.display()
            ),
            help: None,
        });
    }
    let out = git(root)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{since}^{{commit}}"),
        ])
        .output()
        .map_err(|e| io(root, "run git in", e))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    let exists = git(root)
        .args(["rev-parse", "--verify", "--quiet", since])
        .output()
        .is_ok_and(|o| o.status.success());
    if exists {
        return Err(Error::Usage {
            message: format!(
                "`{since}` names a git object that is not a commit (a tree or a file): `--since` \
                 compares with a commit"
            ),
            help: Some("name a commit: a branch, a tag, a hash, `HEAD~1`".into()),
        });
    }
    let shallow = git(root)
        .args(["rev-parse", "--is-shallow-repository"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true");
    if !shallow && since.contains(['^', '~']) {
        return Err(Error::Usage {
            message: format!(
                "`{since}` is not a commit of this repository: its history is not that long"
            ),
            help: Some("`git log --oneline` lists the commits there are".into()),
        });
    }
    Err(Error::Usage {
        message: format!(
            "`{since}` is not a commit of this clone{}: flow cannot tell what changed since it",
            if shallow { " (a shallow clone)" } else { "" }
        ),
        help: Some(if since.contains(['^', '~', '@']) {
            // A commit named relative to another: more history is what is missing.
            "fetch more history first, e.g. `git fetch --deepen=100`; with actions/checkout, \
             set `fetch-depth` (2 for `HEAD^1`, 0 for all)"
                .to_owned()
        } else {
            format!(
                "fetch it first, e.g. `git fetch origin {since}` or `git fetch --deepen=100`; \
                 with actions/checkout, set `fetch-depth: 0`"
            )
        }),
    })
}

/// The files of a commit, written to a temporary directory (removed on drop) through a
/// temporary index (`git read-tree` + `git checkout-index`): the repository's own index, work
/// tree and worktree list are never touched, so a `flow` killed meanwhile leaves only a
/// directory in the cache's `tmp/`, which the next build sweeps (`Cache::sweep_orphans`).
struct Checkout {
    dir: PathBuf,
    /// The workspace's root inside it.
    workspace: PathBuf,
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Checkout {
    /// The files of `commit` of the repository whose work tree is `repo`, in the new directory
    /// `dir`; the workspace at `within` in it.
    fn of(repo: &Path, within: &Path, commit: &str, dir: &Path) -> Result<Checkout, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io(dir, "create a directory for the base of `--since` in", e))?;
        let checkout = Checkout {
            dir: dir.to_path_buf(),
            workspace: dir.join("tree").join(within),
        };
        let index = dir.join("index");
        let tree = dir.join("tree");
        let mut prefix = tree.as_os_str().to_owned();
        prefix.push("/");
        let steps: [Vec<std::ffi::OsString>; 2] = [
            vec!["read-tree".into(), commit.into()],
            vec![
                "checkout-index".into(),
                "--all".into(),
                "--prefix".into(),
                prefix,
            ],
        ];
        for args in steps {
            let out = git(repo)
                .env("GIT_INDEX_FILE", &index)
                .args(&args)
                .output()
                .map_err(|e| io(repo, "run git in", e))?;
            if !out.status.success() {
                return Err(Error::Io {
                    path: repo.to_path_buf(),
                    action: "write the files of the base commit of `--since` from",
                    error: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
        }
        relink_dangling(repo, Some(&index), &tree);
        Ok(checkout)
    }
}

/// Says that the workspace at `commit` does not evaluate: everything counts as affected.
fn base_does_not_evaluate(commit: &str, errors: &[flow_rules::AnalysisError]) {
    let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
    let first = first.lines().next().unwrap_or("");
    let short = &commit[..commit.len().min(12)];
    eprintln!(
        "warning: the workspace at {short} does not evaluate ({} error(s); the first: \
         {first}): every target counts as affected",
        errors.len()
    );
}

/// Every target's static key (see the module doc), by label; `changed` gives, for a
/// workspace-relative source, the digest and executable bit to use instead of the file's.
fn keys(
    graph: &TargetGraph,
    ws: &Workspace,
    changed: &HashMap<String, (blake3::Hash, bool)>,
) -> HashMap<String, blake3::Hash> {
    let root = &ws.root;
    // Every action's PATH (flow.toml's `[build] action_path`) is in its key.
    let path = ws.config.action_path.join(":");
    let mut keys: Vec<Option<blake3::Hash>> = vec![None; graph.targets().len()];
    for i in topo(graph) {
        let t = graph.target(i);
        let mut h = blake3::Hasher::new();
        h.update(path.as_bytes());
        h.update(b"\0");
        let mut definition = serde_json::to_value(t).unwrap_or_default();
        if let Some(map) = definition.as_object_mut() {
            // Where it is written is not what it does.
            map.remove("generator");
            map.remove("doc");
        }
        h.update(definition.to_string().as_bytes());
        for src in &t.srcs {
            let rel = crate::expand::join_path(t.label.package(), src);
            h.update(b"\0src\0");
            h.update(src.as_bytes());
            if let Some((digest, executable)) = changed.get(&rel) {
                h.update(digest.as_bytes());
                h.update(&[u8::from(*executable)]);
                continue;
            }
            let path = root.join(&rel);
            match std::fs::read(&path) {
                Ok(bytes) => h.update(blake3::hash(&bytes).as_bytes()),
                Err(_) => h.update(b"\0unreadable"),
            };
            // The executable bit is in the action key too (a script run as `./x.sh`).
            let executable = std::fs::metadata(&path).is_ok_and(|m| {
                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            });
            h.update(&[u8::from(executable)]);
        }
        for d in graph.deps(i) {
            h.update(b"\0dep\0");
            if let Some(k) = keys[d] {
                h.update(k.as_bytes());
            }
        }
        keys[i] = Some(h.finalize());
    }
    keys.into_iter()
        .enumerate()
        .filter_map(|(i, k)| Some((graph.target(i).label.to_string(), k?)))
        .collect()
}

/// The targets of `graph`, each after its dependencies.
fn topo(graph: &TargetGraph) -> Vec<usize> {
    match petgraph::algo::toposort(graph.petgraph(), None) {
        // Edges point at dependencies: reversed, dependencies come first.
        Ok(order) => order.into_iter().rev().map(|n| n.index()).collect(),
        Err(_) => (0..graph.targets().len()).collect(),
    }
}

fn io(path: &Path, action: &'static str, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        action,
        error: e.to_string(),
    }
}

/// The workspace-relative files that differ between commit `since` and the working tree
/// (tracked edits and untracked files): what annotations rank first. Best effort: empty when
/// git cannot tell.
pub fn changed_files(root: &Path, since: &str) -> BTreeSet<String> {
    let lines = |args: &[&str]| -> Vec<String> {
        match git(root).args(args).output() {
            Ok(o) if o.status.success() => o
                .stdout
                .split(|b| *b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut files = lines(&["diff", "--name-only", "-z", "--relative", since]);
    files.extend(lines(&["ls-files", "-z", "--others", "--exclude-standard"]));
    files.into_iter().collect()
}

/// Where the workspace `root` lies in its git repository (`sub/dir/`; empty at the top or
/// outside git).
pub fn repo_prefix(root: &Path) -> String {
    match git(root).args(["rev-parse", "--show-prefix"]).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => String::new(),
    }
}

/// In `tree`, a copy of the files of the index `index` (default: the repository's) of `repo`:
/// a committed symlink whose target is not in the copy (it leads out of the repository, or
/// to an ignored file) would dangle there, and the base would not evaluate: it is pointed
/// at what the same link reaches from the repository's work tree instead. Best effort.
pub fn relink_dangling(repo: &Path, index: Option<&Path>, tree: &Path) {
    let mut ls = git(repo);
    if let Some(index) = index {
        ls.env("GIT_INDEX_FILE", index);
    }
    let Ok(out) = ls.args(["ls-files", "-s", "-z"]).output() else {
        return;
    };
    for entry in out.stdout.split(|b| *b == 0) {
        // `MODE SHA STAGE\tPATH`
        let entry = String::from_utf8_lossy(entry);
        let Some((meta, path)) = entry.split_once('\t') else {
            continue;
        };
        if !meta.starts_with("120000 ") {
            continue;
        }
        let copy = tree.join(path);
        if copy.exists() {
            continue;
        }
        let Ok(target) = std::fs::read_link(&copy) else {
            continue;
        };
        let parent = Path::new(path).parent().unwrap_or(Path::new(""));
        let real = repo.join(parent).join(&target);
        if real.exists() && std::fs::remove_file(&copy).is_ok() {
            let _ = std::os::unix::fs::symlink(&real, &copy);
        }
    }
}
