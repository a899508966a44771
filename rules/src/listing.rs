//! `Listing`: one walk over the workspace that finds every package (a directory holding a `BUILD`
//! file) and assigns every file to its nearest enclosing package. `glob()` answers from it, so a
//! workspace is walked once per evaluation, however many `glob()` calls its BUILD files make.
//!
//! Skipped: `.git/`, `.flow/`, `flow-out/`, the directories listed in `EvalOptions::skip_dirs`
//! (the cache directory), nested workspaces (a directory with its own `flow.toml`) and everything
//! the workspace's `.gitignore` files exclude.
//!
//! Which files exclude: only the `.gitignore` files inside the workspace, each in the directory
//! it is in and below it, as git reads them (with or without a git repository). Nothing else:
//! not `.ignore` files (the `ignore` crate's default), not `.git/info/exclude`, not the global
//! `core.excludesFile`, not a `.gitignore` above the workspace root. So what a glob matches
//! depends on the workspace's files alone, the same in every checkout, and the evaluation
//! snapshot knows every file that can change it (`snapshot.rs` stamps every `.gitignore` of a
//! walked directory, even one that ignores itself).
//!
//! Names are listed as they are: a `\` is an ordinary character of a file name (it is not a
//! separator on Unix), so `a\b.txt` is one file in its directory.
//!
//! Symlinks: a symlink to a file is a file (listed; reading it reads the target). A symlink to
//! anything else — a directory, a FIFO, a device — and a dangling one are not files: they are
//! neither listed nor followed (a directory is never entered through a link). One exception: a
//! `BUILD` that is a FIFO, a device or a link to one is listed, so that its directory is still a
//! package and its evaluation says what the file is, instead of the package silently vanishing. Every symlink
//! walked is kept in [`Listing::links`] with whether it led to a file, so that a target that
//! appears, disappears or changes kind is seen as a change of the listing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ignore::WalkState;

/// The name of the file that makes a directory a package.
pub const BUILD_FILE: &str = "BUILD";

/// The name of the only files that exclude others from the listing (module docs).
pub const GITIGNORE: &str = ".gitignore";

/// Directory names never walked, wherever they are.
pub const ALWAYS_SKIPPED: &[&str] = &[".git", ".flow", "flow-out"];

/// What the walk collects, workspace-relative: regular files and symlinks to files, walked
/// directories, and every symlink with whether it led to a file.
#[derive(Default)]
struct Found {
    files: Vec<String>,
    dirs: Vec<String>,
    links: Vec<(String, bool)>,
}

#[derive(Debug, Default, Clone)]
pub struct Listing {
    /// Package name → its files, relative to the package directory, sorted. Files of
    /// sub-packages belong to the sub-package only.
    pub packages: BTreeMap<String, Vec<String>>,
    /// Every walked directory, workspace-relative (for snapshots: a directory's mtime changes
    /// when an entry is added, removed or renamed in it).
    pub dirs: Vec<String>,
    /// Every symlink walked, workspace-relative, sorted, and whether it led to a file (and so
    /// was listed).
    pub links: Vec<(String, bool)>,
}

impl Listing {
    /// Walks `root`; `skip` holds absolute directories not to enter.
    pub fn scan(root: &Path, skip: &[PathBuf]) -> std::io::Result<Listing> {
        let root_owned = root.to_path_buf();
        let skip = skip.to_vec();
        check_ignore_files(root, root)?;
        // A directory whose ignore file cannot be read safely is not entered; the walk fails.
        let refused: std::sync::Arc<Mutex<Option<std::io::Error>>> = Default::default();
        let refused_in_filter = refused.clone();
        let root_for_filter = root.to_path_buf();
        let walker = ignore::WalkBuilder::new(root)
            .hidden(false)
            // Only `.gitignore` files of the workspace exclude (module docs).
            .ignore(false)
            .git_ignore(true)
            .git_global(false)
            .git_exclude(false)
            .require_git(false)
            .parents(false)
            .filter_entry(move |entry| {
                if entry.depth() == 0 {
                    return true;
                }
                let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
                if !is_dir {
                    return true;
                }
                let name = entry.file_name().to_string_lossy();
                if ALWAYS_SKIPPED.contains(&name.as_ref()) {
                    return false;
                }
                if skip.iter().any(|s| s == entry.path()) {
                    return false;
                }
                // A nested workspace is not part of this one.
                if entry.path() != root_owned && entry.path().join("flow.toml").is_file() {
                    return false;
                }
                match check_ignore_files(&root_for_filter, entry.path()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused_in_filter
                            .lock()
                            .expect("walk lock")
                            .get_or_insert(e);
                        false
                    }
                }
            })
            .build_parallel();
        // Walked on several threads (reading directories was most of an evaluation's walk:
        // ~58 of ~150 ms at 1,000 packages); the order is restored by sorting below.
        let found: Mutex<Found> = Mutex::default();
        let failed: Mutex<Option<std::io::Error>> = Mutex::default();
        walker.run(|| {
            Box::new(|entry| {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) => {
                        let io = match e.into_io_error() {
                            Some(io) => io,
                            None => std::io::Error::other("cannot walk the workspace"),
                        };
                        failed.lock().expect("walk lock").get_or_insert(io);
                        return WalkState::Quit;
                    }
                };
                // Non-UTF-8 names cannot be named in a BUILD file.
                let Some(rel) = entry
                    .path()
                    .strip_prefix(root)
                    .ok()
                    .and_then(|r| r.to_str())
                else {
                    return WalkState::Continue;
                };
                let Some(kind) = entry.file_type() else {
                    return WalkState::Continue;
                };
                if kind.is_dir() {
                    if !rel.is_empty() {
                        found.lock().expect("walk lock").dirs.push(rel.to_owned());
                    }
                } else if kind.is_file() {
                    found.lock().expect("walk lock").files.push(rel.to_owned());
                } else if kind.is_symlink() {
                    // `stat` never blocks, whatever the target is (a FIFO is only opened by
                    // whoever reads it).
                    let target = std::fs::metadata(entry.path());
                    let file = target.as_ref().is_ok_and(|m| m.is_file());
                    let special = target.is_ok_and(|m| !m.is_file() && !m.is_dir());
                    let mut found = found.lock().expect("walk lock");
                    found.links.push((rel.to_owned(), file));
                    if file || (special && is_build_file(rel)) {
                        found.files.push(rel.to_owned());
                    }
                } else if is_build_file(rel) {
                    // A BUILD that is a FIFO, a device or a socket still makes a package, whose
                    // evaluation then says what it is (and never opens it to wait).
                    found.lock().expect("walk lock").files.push(rel.to_owned());
                }
                WalkState::Continue
            })
        });
        if let Some(e) = failed.into_inner().expect("walk lock") {
            return Err(e);
        }
        if let Some(e) = refused.lock().expect("walk lock").take() {
            return Err(e);
        }
        let Found {
            mut files,
            mut dirs,
            mut links,
        } = found.into_inner().expect("walk lock");
        files.sort();
        dirs.sort();
        links.sort();
        let mut packages: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in &files {
            let (dir, name) = f.rsplit_once('/').unwrap_or(("", f));
            if name == BUILD_FILE {
                packages.entry(dir.to_owned()).or_default();
            }
        }
        for f in files {
            let mut dir = f.rsplit_once('/').map_or("", |(d, _)| d);
            loop {
                if let Some(list) = packages.get_mut(dir) {
                    let rel = if dir.is_empty() {
                        &f[..]
                    } else {
                        &f[dir.len() + 1..]
                    };
                    list.push(rel.to_owned());
                    break;
                }
                if dir.is_empty() {
                    break;
                }
                dir = dir.rsplit_once('/').map_or("", |(d, _)| d);
            }
        }
        for list in packages.values_mut() {
            list.sort();
        }
        Ok(Listing {
            packages,
            dirs,
            links,
        })
    }

    /// The symlinks in `package`'s directory tree (package-relative) that do not lead to a
    /// regular file: not files to `glob()` or `srcs`, named only to say so.
    pub fn links_to_non_files(&self, package: &str) -> Vec<String> {
        let prefix = if package.is_empty() {
            String::new()
        } else {
            format!("{package}/")
        };
        self.links
            .iter()
            .filter(|(_, file)| !file)
            .filter_map(|(path, _)| path.strip_prefix(prefix.as_str()))
            .map(str::to_owned)
            .collect()
    }

    /// The sub-packages strictly below `package`, relative to it (`a/b` for `//pkg/a/b`).
    pub fn subpackages_of<'a>(
        &'a self,
        package: &'a str,
    ) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        if package.is_empty() {
            return Box::new(
                self.packages
                    .keys()
                    .filter(|p| !p.is_empty())
                    .map(|p| p.as_str()),
            );
        }
        // Sub-packages sort right after `package/`: a range, not a scan of every package.
        let prefix = format!("{package}/");
        Box::new(
            self.packages
                .range(prefix.clone()..)
                .map(|(p, _)| p.as_str())
                .take_while(move |p| p.starts_with(&prefix))
                .map(move |p| &p[package.len() + 1..]),
        )
    }
}

/// Whether the workspace-relative `rel` names a BUILD file.
fn is_build_file(rel: &str) -> bool {
    rel.rsplit('/').next() == Some(BUILD_FILE)
}

/// The ignore files the walk reads in each directory (the `ignore` crate opens and reads them
/// whole, blocking on a FIFO and reading a link to `/dev/zero` without end).
const IGNORE_FILES: &[&str] = &[".gitignore"];

/// The most the walk lets the `ignore` crate read of one ignore file.
const MAX_IGNORE_FILE_BYTES: u64 = 16 << 20;

/// Refuses the directory `dir` when an ignore file in it is there but is not a regular file
/// (after following links) or is larger than [`MAX_IGNORE_FILE_BYTES`]: one `stat` per name,
/// before the `ignore` crate opens it.
fn check_ignore_files(root: &Path, dir: &Path) -> std::io::Result<()> {
    for name in IGNORE_FILES {
        let path = dir.join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let problem = if !meta.is_file() {
            format!("it is {}, not a regular file", crate::eval::kind_of(&meta))
        } else if meta.len() > MAX_IGNORE_FILE_BYTES {
            format!("it is larger than {} MiB", MAX_IGNORE_FILE_BYTES >> 20)
        } else {
            continue;
        };
        let shown = path.strip_prefix(root).unwrap_or(&path);
        return Err(std::io::Error::other(format!(
            "cannot read `{}`: {problem}",
            shown.display()
        )));
    }
    Ok(())
}
