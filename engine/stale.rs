//! Stale outputs: what `flow-out/` must not keep, so that an incremental build leaves the same
//! tree as a clean one.
//!
//! - Before an action runs, and when it is skipped because a dependency failed, its declared
//!   outputs are removed from `flow-out/` (a clean build would not have them; an old copy would
//!   pass for the result of the failed or skipped run). What a failed run itself produced is
//!   kept there, marked (`failed.rs`): a clean build that failed the same way would keep it too.
//! - After every analysis a build or a watch cycle goes through (not the build record's
//!   shortcut, which vouches for the same graph as the last build), files under `flow-out/`
//!   that no target of the workspace declares any more (a renamed output, a removed target or
//!   package) are deleted, and directories left empty are removed. Not only after an
//!   evaluation computed afresh: a command that writes nothing (`flow query`, `flow explain`)
//!   may have computed it and saved the snapshot, so the build finds it already evaluated
//!   (the incremental proptest found that once explain ran before each build).
//!
//! Symlinks are never followed: a link is removed as a link.

use std::collections::HashSet;
use std::path::Path;

use crate::expand::join_path;
use crate::failed::failed_marker_name;
use crate::graph::TargetGraph;
use crate::lock::LOCK_FILE;
use crate::rebuilder::tree_marker_name;
use crate::session::OUT_TAG;

/// What the graph declares: output files and output directories, workspace-relative.
pub struct Declared {
    files: HashSet<String>,
    dirs: Vec<String>,
}

impl Declared {
    pub fn of(graph: &TargetGraph) -> Declared {
        let mut files = HashSet::new();
        let mut dirs = Vec::new();
        for t in graph.targets() {
            for out in &t.outs {
                let path = join_path(t.label.package(), out.trim_end_matches('/'));
                // A failed run's marker beside an output belongs to it (`failed.rs`).
                let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
                files.insert(join_path(parent, &failed_marker_name(name)));
                if out.ends_with('/') {
                    // The tree marker beside a directory output belongs to it.
                    let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
                    files.insert(join_path(parent, &tree_marker_name(name)));
                    dirs.push(path);
                } else {
                    files.insert(path);
                }
            }
        }
        dirs.sort();
        Declared { files, dirs }
    }

    fn keeps(&self, rel: &str) -> bool {
        rel == LOCK_FILE
            || rel == OUT_TAG
            || self.files.contains(rel)
            || self.dirs.iter().any(|d| {
                rel == d
                    || (rel.starts_with(d.as_str()) && rel.as_bytes().get(d.len()) == Some(&b'/'))
            })
    }

    /// Whether `rel` (a directory) is, or leads to, something declared.
    fn leads_to_declared(&self, rel: &str) -> bool {
        let prefix = format!("{rel}/");
        self.keeps(rel)
            || self.files.iter().any(|f| f.starts_with(&prefix))
            || self.dirs.iter().any(|d| d.starts_with(&prefix))
    }
}

/// Deletes what `declared` does not name under `out_root`; returns how many entries went.
pub fn sweep_undeclared(out_root: &Path, declared: &Declared) -> usize {
    fn walk(dir: &Path, rel: &str, declared: &Declared, removed: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let child_rel = join_path(rel, &name);
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if declared.keeps(&child_rel) {
                    continue;
                }
                if declared.leads_to_declared(&child_rel) {
                    walk(&path, &child_rel, declared, removed);
                    // Remove it if nothing is left inside.
                    if std::fs::remove_dir(&path).is_ok() {
                        *removed += 1;
                    }
                } else if std::fs::remove_dir_all(&path).is_ok() {
                    *removed += 1;
                }
            } else if !declared.keeps(&child_rel) && std::fs::remove_file(&path).is_ok() {
                *removed += 1;
            }
        }
    }
    let mut removed = 0;
    walk(out_root, "", declared, &mut removed);
    removed
}

/// Removes the declared outputs of one target from `flow-out/` (and a directory output's marker,
/// and a failed run's markers).
pub fn clear_outputs(out_root: &Path, package: &str, outs: &[String]) {
    for out in outs {
        let rel = out.trim_end_matches('/');
        if flow_cache::check_relative_path(rel).is_err() {
            continue;
        }
        let full = join_path(package, rel);
        // Never through a link: a symlinked directory below flow-out/ is unlinked (only the
        // link goes; what it points at is not flow's), and then there is nothing to clear.
        if unlink_linked_parent(out_root, &full) {
            continue;
        }
        let path = out_root.join(&full);
        let _ = std::fs::remove_file(crate::failed::failed_marker(&path));
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(&path);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(_) => {}
        }
        if out.ends_with('/') {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = std::fs::remove_file(path.with_file_name(tree_marker_name(&name)));
        }
    }
}

/// Unlinks the first symlink among the directories between `out_root` and `rel`'s parent;
/// true when there was one.
fn unlink_linked_parent(out_root: &Path, rel: &str) -> bool {
    let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
    let mut dir = out_root.to_path_buf();
    for segment in parent.split('/').filter(|s| !s.is_empty()) {
        dir.push(segment);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                let _ = std::fs::remove_file(&dir);
                return true;
            }
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    false
}
