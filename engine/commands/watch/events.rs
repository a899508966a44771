//! Watch events: batches of file events, debounced, filtered and classified (structural or
//! content), and which outputs under `flow-out/` they touched.

use std::collections::BTreeSet;
use std::path::Path;

use crate::interrupts::Interrupts;
use flow_cache::OutputKind;
use notify::{Event, EventKind};
use tokio::sync::mpsc;

use super::Watcher;
use crate::runner::interrupted;
use crate::session::OUT_DIR;
use flow_rules::listing::GITIGNORE;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

#[derive(Debug, Default)]
/// What a batch of events amounts to.
pub(super) struct Batch {
    /// Workspace-relative paths that were touched (not ignored).
    pub paths: BTreeSet<String>,
    /// Whether the graph may have changed (BUILD/.star/flow.toml, created/deleted/renamed files,
    /// a watcher overflow).
    pub structural: bool,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.structural
    }

    pub fn merge(&mut self, other: Batch) {
        self.paths.extend(other.paths);
        self.structural |= other.structural;
    }

    /// The cycle's header, naming the changed paths `shown` keeps (the ones still there, or
    /// known inputs: not an editor's temp file, written and renamed away within the batch).
    pub fn describe(&self, shown: impl Fn(&str) -> bool) -> String {
        let kept: Vec<&str> = self
            .paths
            .iter()
            .map(|s| s.as_str())
            .filter(|p| shown(p))
            .collect();
        let all: Vec<&str> = self.paths.iter().map(|s| s.as_str()).collect();
        let listed = if kept.is_empty() { all } else { kept };
        let mut names: Vec<&str> = listed.iter().copied().take(3).collect();
        if names.is_empty() {
            names.push("(the watcher asked for a rescan)");
        }
        let more = listed.len().saturating_sub(3);
        format!(
            "flow watch: changed {}{}",
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    }
}

/// Whether an event touched the output at `path` (relative to `flow-out/`): the path itself,
/// a directory above it, anything below it, or, for a directory output, its marker file.
pub(super) fn touches(touched: &BTreeSet<String>, path: &str, kind: &OutputKind) -> bool {
    if touched.is_empty() {
        return false;
    }
    let below = format!("{path}/");
    let mut above = path;
    let ancestor_touched = loop {
        if touched.contains(above) {
            break true;
        }
        match above.rfind('/') {
            Some(i) => above = &above[..i],
            None => break touched.contains(""),
        }
    };
    let marker_touched = matches!(kind, OutputKind::Tree { .. }) && {
        let marker = crate::rebuilder::tree_marker(Path::new(path));
        marker.to_str().is_some_and(|m| touched.contains(m))
    };
    ancestor_touched
        || marker_touched
        || touched
            .range(below.clone()..)
            .next()
            .is_some_and(|t| t.starts_with(&below))
}

impl Watcher<'_> {
    /// The next non-empty batch: the first event, then whatever arrives within the debounce
    /// window. `None` on Ctrl-C.
    pub(super) async fn next_batch(
        &self,
        events: &mut mpsc::UnboundedReceiver<notify::Result<Event>>,
        sigint: &mut Option<Interrupts>,
    ) -> Option<Batch> {
        loop {
            let first = tokio::select! {
                ev = events.recv() => ev?,
                _ = interrupted(sigint) => return None,
            };
            self.profile.mark("watch: waiting for a change");
            let mut batch = self.classify(first);
            self.drain_window(events, &mut batch).await;
            self.profile.mark("watch: debounce window");
            if !batch.is_empty() {
                return Some(batch);
            }
        }
    }

    pub(super) async fn drain_window(
        &self,
        events: &mut mpsc::UnboundedReceiver<notify::Result<Event>>,
        batch: &mut Batch,
    ) {
        let deadline = tokio::time::Instant::now() + self.args.debounce;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
            batch.merge(self.classify(ev));
        }
    }

    /// Turns one watcher event into a batch: ignored paths dropped, structure changes flagged.
    pub(super) fn classify(&self, ev: notify::Result<Event>) -> Batch {
        let mut batch = Batch::default();
        let ev = match ev {
            Ok(ev) => ev,
            Err(_) => {
                // The watcher lost track (e.g. queue overflow): rescan everything.
                batch.structural = true;
                return batch;
            }
        };
        if ev.need_rescan() {
            batch.structural = true;
            return batch;
        }
        if matches!(ev.kind, EventKind::Access(_)) {
            return batch;
        }
        for path in &ev.paths {
            if let Some(rel) = path
                .strip_prefix(&self.session.out_root)
                .ok()
                .and_then(|r| r.to_str())
            {
                self.touched_outputs.borrow_mut().insert(rel.to_owned());
            }
        }
        let structural_kind = matches!(
            ev.kind,
            EventKind::Create(_)
                | EventKind::Remove(_)
                | EventKind::Modify(notify::event::ModifyKind::Name(_))
        );
        for path in ev.paths {
            let Some(rel) = self.relevant(&path) else {
                continue;
            };
            let name = rel.rsplit('/').next().unwrap_or(&rel);
            let analysed = name == "BUILD"
                || name.ends_with(".star")
                || name == GITIGNORE
                || rel == "flow.toml"
                || self.analysis_links.contains(&rel);
            let known_source = self
                .state
                .as_ref()
                .is_some_and(|s| s.readers.contains_key(&rel))
                && path.is_file();
            if analysed {
                batch.structural = true;
            } else if structural_kind && !known_source {
                // A new, deleted or renamed file may change what a glob matches. So may a new
                // directory: the events of files written into it before its own watch was
                // added are lost (`mkdir p && echo ... > p/BUILD`), and only a walk finds them.
                batch.structural = true;
            }
            let linked = self.state.as_ref().and_then(|s| s.linked_sources.get(&rel));
            batch.paths.extend(linked.into_iter().flatten().cloned());
            batch.paths.insert(rel);
        }
        batch
    }

    /// The workspace-relative path of `path` unless it is ignored (a `.gitignore` never is: it
    /// may ignore itself, and still applies). Ignored or not, a path the last analysis or plan
    /// reads is kept: a source a nested `.gitignore` re-includes (`!keep.txt`), the target of a
    /// symlinked BUILD, `.star` or source file in an ignored directory.
    fn relevant(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.session.ws.root).ok()?;
        if path.starts_with(&self.session.cache_dir) {
            return None;
        }
        if rel.components().any(|c| {
            let c = c.as_os_str();
            c == ".git" || c == ".flow" || c == OUT_DIR
        }) {
            return None;
        }
        let text = rel.to_str()?.to_owned();
        if text.is_empty() {
            return None;
        }
        // What a `sandbox = False` action writes in the real tree (before flow moves it to
        // `flow-out/`) is no edit: taken for one, it superseded the very cycle writing it.
        if self.state.as_ref().is_some_and(|s| {
            s.in_tree_outputs.iter().any(|o| {
                text == *o
                    || text
                        .strip_prefix(o.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            })
        }) {
            return None;
        }
        let is_dir = path.is_dir();
        let gitignore = rel.file_name().is_some_and(|n| n == GITIGNORE);
        let read = self.analysis_links.contains(&text)
            || self.state.as_ref().is_some_and(|s| {
                s.readers.contains_key(&text) || s.linked_sources.contains_key(&text)
            });
        if !gitignore
            && !read
            && self
                .gitignore
                .matched_path_or_any_parents(rel, is_dir)
                .is_ignore()
        {
            return None;
        }
        Some(text)
    }
}

/// The root `.gitignore` of the workspace at `root`, as a matcher (empty if none).
pub(super) fn root_gitignore(root: &Path) -> Gitignore {
    let mut builder = GitignoreBuilder::new(root);
    builder.add(root.join(flow_rules::listing::GITIGNORE));
    builder.build().unwrap_or_else(|_| Gitignore::empty())
}

/// The symlinks among `paths` (workspace-relative) that lead inside the workspace at `root`
/// (canonical), each with its target, workspace-relative: the watcher reports an edit of a
/// link's target under the target's name.
pub(super) fn link_targets<'a>(
    root: &'a Path,
    paths: impl Iterator<Item = &'a String> + 'a,
) -> impl Iterator<Item = (&'a String, String)> + 'a {
    paths
        .filter(|p| std::fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.is_symlink()))
        .filter_map(move |p| {
            let target = std::fs::canonicalize(root.join(p)).ok()?;
            Some((p, target.strip_prefix(root).ok()?.to_str()?.to_owned()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_cache::Digest;

    fn set(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    fn file() -> OutputKind {
        OutputKind::File {
            digest: Digest::of(b""),
            size: 0,
            executable: false,
        }
    }

    #[test]
    fn an_output_is_touched_by_itself_its_directories_and_what_is_below_it() {
        let out = "pkg/out/a.txt";
        assert!(!touches(&set(&[]), out, &file()));
        assert!(touches(&set(&["pkg/out/a.txt"]), out, &file()));
        assert!(touches(&set(&["pkg/out"]), out, &file()));
        assert!(touches(&set(&["pkg"]), out, &file()));
        assert!(touches(&set(&[""]), out, &file()), "flow-out itself");
        assert!(touches(&set(&["pkg/out/a.txt/x"]), out, &file()));
        // Siblings and names that merely share a prefix are not.
        let others = set(&[
            "pkg/out/a.txt2",
            "pkg/out/a.txt-x/y",
            "pkg/out/b.txt",
            "pk",
            "pkg/o",
        ]);
        assert!(!touches(&others, out, &file()));
    }

    #[test]
    fn a_directory_output_is_touched_by_its_marker() {
        let tree = OutputKind::Tree {
            digest: Digest::of(b""),
            size: 0,
        };
        assert!(touches(&set(&["pkg/.gen.flow-tree"]), "pkg/gen", &tree));
        assert!(touches(&set(&["pkg/gen/deep/file"]), "pkg/gen", &tree));
        assert!(!touches(&set(&["pkg/.gen.flow-tree"]), "pkg/gen", &file()));
    }
}
