//! Staging: lays out an action's declared inputs under its exec root, and nothing else.
//!
//! 1. [`check_layout`] refuses paths that are absolute, empty or contain `..`, two inputs at one
//!    place, an input inside a directory input, and an output that overlaps an input (creating
//!    the output's directory would then write through a link into someone else's tree).
//! 2. [`stage_inputs`] creates each destination's parent directories once, then a file input is
//!    COPIED (mode 0755 if its `executable` flag says so, else 0644: the flag is what the action
//!    key holds — a source's x bit when it was hashed, a dependency output's as it was stored —
//!    never the mode the file has by now, which a `chmod` may have changed) and a
//!    directory input is BOUND READ-ONLY (an empty directory here, and a bind for the child,
//!    `mounts.rs`) or, where the kernel does not allow that, COPIED as a read-only tree.
//! 3. [`create_output_dirs`] creates the parents of file outputs and directory outputs
//!    themselves, so commands may write `out/x.txt` without `mkdir -p`.
//!
//! Why copies. Measured by `staging_bench.rs` (`cargo test -p flow --release --lib
//! staging_bench -- --ignored --nocapture`): 1,000 files in 20 directories (20 files of 4 MiB),
//! µs per file including its share of directory creation, medians of the rounds, on the
//! project's 2-core ext4 machine. Nine runs (the 4 MiB size in the last three), from a quiet
//! moment to others compiling beside it (load 5); the range is quietest … busiest:
//!
//! | method   | 1 KiB      | 64 KiB     | 4 MiB         | teardown of 1 KiB |
//! |----------|------------|------------|---------------|-------------------|
//! | hardlink | 3.4 … 13   | 3.4 … 9    | 12 … 37       | 4 … 74            |
//! | symlink  | 4.8 … 316  | 4.5 … 265  | 13 … 31       | 5 … 76            |
//! | copy     | 14 … 362   | 40 … 362   | 1,700 … 2,700 | 7 … 79            |
//!
//! Hardlinks stay flat (no new inode). Symlinks and copies both create an inode, and that is
//! what slows down when the file system is busy, so a copy costs only ~10–100 µs more per small
//! file than a symlink: 10–100 ms for a 1,000-input action, about one Python start-up, and
//! nothing for the usual tens of inputs. Only copies meet the requirements for workspace
//! sources: a hardlink lets the action rewrite the source in place; a symlink does too, and it
//! leads into the real tree, where Python (`sys.path[0]` is the script's resolved directory)
//! imports undeclared siblings. For CAS blobs a link would be allowed, but flow runs as root in
//! CI containers (and here), where a blob's read-only mode stops no write, and one `>>` into an
//! input would corrupt the cache for every later build. So every file input is copied. The
//! price falls on large dependency outputs (~0.4–0.7 ms per MiB on ext4; a clone on btrfs/XFS);
//! if it ever matters, symlinking blobs when not running as root is the measured alternative.
//!
//! Why the copy is hashed. The action key holds each file input's digest, taken when the build
//! started; a source saved between that moment and the staging (while a dependency ran) would
//! otherwise be run on bytes the key does not describe, and its result stored under the old
//! bytes' key: a poisoned cache (issue 15). So `copy_file` hashes the bytes as they pass, and
//! the runner stores the result under the key of what was staged (`ActionKey::as_seen`).
//! Measured by `staging_bench` (method `copy` hashed, `plain` the former unhashed
//! `copy_file_range`), medians, on a busy 2-core machine (load 3–6): 1 KiB 889 vs 832 µs and
//! 64 KiB 799 vs 808 µs per file (noise: inode creation dominates), 4 MiB 2.6 vs 1.7 ms per file
//! (1.5×; hashing the copy afterwards through mmap instead was 2.0×). Verifying by `stat` after
//! the copy would be cheaper for large files but is not exact within a timestamp tick.
//!
//! Directory inputs (a dependency's tree output, materialized under `flow-out/`) are bound
//! read-only into the exec root in a mount namespace private to the action (`mounts.rs`): a
//! real directory, unwritable for root too, whose `..` is the exec root's, for the cost of two
//! `mount` calls whatever the tree holds. Where the kernel refuses the namespace, the tree is
//! copied, read-only, file by file (as a file input is). The symlink into `flow-out/` they used
//! to be let a dependent write through it into the dependency's output, read undeclared files
//! through `..`, and hid the files from `find`. Measured by `dir_input_bench` on the shape of
//! the example's tool directory (3,500 files in 250 directories, 107 MB, on ext4; the sandbox
//! on tmpfs), ms per action (stage, spawn `sh -c 'test -f …'`, tear down), medians of 9:
//!
//! | method                                   | ms    | holds?                             |
//! |------------------------------------------|-------|------------------------------------|
//! | symlink into `flow-out/` (before)        | 0.99  | no                                 |
//! | read-only bind in a private namespace    | 1.37  | yes, for root too                  |
//! | hard links of a per-digest tree on tmpfs | 31.4  | not as root (writes reach every link) |
//! | copy (the fallback)                      | 142.8 | yes, a private copy                |
//!
//! The bind's ~0.4 ms is the `fork` a `pre_exec` hook needs and the namespace; the copy costs
//! what the tree holds. The measured next step for the fallback is the hard-linked tree, with
//! a `TreeStamp` check after each action (6.3 ms for this tree) to fail it when root wrote
//! through a link.
//!
//! Limits: a symlinked file input is copied through (its target's content); a copied tree can
//! be written by root, in its private copy only (such a write fails the action: `sandbox.rs`).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flow_cache::regular::{open_regular, Links};
use flow_cache::{Digest, LARGE_FILE};

use super::mounts::Binds;
use super::Input;

/// Copies `source` to `dest` (which must not exist; its parent must) with mode 0755 if
/// `executable`, else 0644, and returns the digest of the bytes copied, hashed as they pass
/// (one read of the source; a file under [`LARGE_FILE`] in one piece). Measured against an
/// unhashed `copy_file_range` by `staging_bench.rs`: see the table above. `source` must be a
/// regular file (a symlink is followed to one): a FIFO or a device is refused without blocking
/// (`flow_cache::regular`).
pub(super) fn copy_file(source: &Path, dest: &Path, executable: bool) -> io::Result<Digest> {
    let (mut from, meta) = open_regular(source, Links::Follow)?;
    let size = meta.len();
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if executable { 0o755 } else { 0o644 })
        .open(dest)?;
    if size < LARGE_FILE {
        let mut bytes = Vec::with_capacity(size as usize);
        from.read_to_end(&mut bytes)?;
        to.write_all(&bytes)?;
        return Ok(Digest::of(&bytes));
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; LARGE_FILE as usize];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update_rayon(&buf[..n]);
        to.write_all(&buf[..n])?;
    }
    Ok(Digest::from_bytes(*hasher.finalize().as_bytes()))
}

/// Copies the regular file `source` (not a symlink) to `dest` read-only: 0555 if the source has
/// an executable bit, else 0444.
fn copy_read_only(source: &Path, dest: &Path) -> io::Result<()> {
    let (mut from, meta) = open_regular(source, Links::Refuse)?;
    let executable = meta.permissions().mode() & 0o111 != 0;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if executable { 0o555 } else { 0o444 })
        .open(dest)?;
    io::copy(&mut from, &mut to)?;
    Ok(())
}

/// Copies the tree at `source` to the new directory `dest`, files read-only (0444, 0555 if
/// executable), symlinks as they are (a materialized tree's links are relative and stay
/// inside it), without following any symlink.
pub(super) fn copy_tree(source: &Path, dest: &Path) -> io::Result<()> {
    fs::create_dir(dest)?;
    for entry in fs::read_dir(source)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dest.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if kind.is_file() {
            copy_read_only(&from, &to)?;
        } else {
            return Err(io::Error::other(format!(
                "`{}` is not a file, directory or symlink",
                from.display()
            )));
        }
    }
    Ok(())
}

/// Stages the directory input `source` (a real directory, not a link) at `target`: an empty
/// directory and a read-only bind in `binds` if `bind`, else a read-only copy.
fn stage_dir(source: &Path, target: &Path, bind: bool, binds: &mut Binds) -> io::Result<()> {
    if !fs::symlink_metadata(source)?.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    if bind {
        fs::create_dir(target)?;
        binds.push(&std::path::absolute(source)?, &std::path::absolute(target)?)
    } else {
        copy_tree(source, target)
    }
}

/// `path` as a relative path of normal components (`.` components dropped); `what` names it in
/// the error. An empty path is allowed only if `allow_empty` (the root package).
pub(super) fn checked_relative(
    path: &str,
    what: &str,
    allow_empty: bool,
) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{what} `{path}` must be a relative path without `..`"
                ));
            }
        }
    }
    if out.as_os_str().is_empty() && !allow_empty {
        return Err(format!("{what} `{path}` is empty"));
    }
    Ok(out)
}

/// The checked layout of one action, exec-root-relative.
#[derive(Debug, Default)]
pub(super) struct Layout {
    pub package: PathBuf,
    /// Input destination -> index into the spec's inputs.
    pub inputs: BTreeMap<PathBuf, usize>,
    /// Declared file outputs, exec-root-relative.
    pub file_outputs: HashSet<PathBuf>,
    /// Declared directory outputs, exec-root-relative, without the trailing `/`.
    pub dir_outputs: HashSet<PathBuf>,
}

/// Checks every path of an action and how they overlap; collects every problem, sorted.
pub(super) fn check_layout(
    package: &str,
    inputs: &[Input],
    outputs: &[String],
) -> Result<Layout, String> {
    let mut problems = Vec::new();
    let mut layout = Layout::default();
    match checked_relative(package, "package", true) {
        Ok(p) => layout.package = p,
        Err(e) => problems.push(e),
    }
    let mut dir_inputs = HashSet::new();
    for (i, input) in inputs.iter().enumerate() {
        match checked_relative(&input.dest, "input", false) {
            Ok(dest) => {
                if input.is_dir {
                    dir_inputs.insert(dest.clone());
                }
                if layout.inputs.insert(dest, i).is_some() {
                    problems.push(format!("input `{}` is declared twice", input.dest));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    for dest in layout.inputs.keys() {
        if dest.ancestors().skip(1).any(|a| dir_inputs.contains(a)) {
            problems.push(format!(
                "input `{}` lies inside a directory input",
                dest.display()
            ));
        }
    }
    for out in outputs {
        let rel = match checked_relative(out, "output", false) {
            Ok(rel) => layout.package.join(rel),
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let is_dir = out.ends_with('/');
        let overlaps = rel.ancestors().any(|a| layout.inputs.contains_key(a))
            || (is_dir && layout.inputs.keys().any(|dest| dest.starts_with(&rel)));
        if overlaps {
            problems.push(format!("output `{out}` overlaps an input"));
        }
        if is_dir {
            layout.dir_outputs.insert(rel);
        } else {
            layout.file_outputs.insert(rel);
        }
    }
    if problems.is_empty() {
        Ok(layout)
    } else {
        problems.sort();
        problems.dedup();
        Err(problems.join("; "))
    }
}

/// Creates directories, remembering which exist, so each is created once.
#[derive(Debug)]
pub(super) struct DirMaker {
    root: PathBuf,
    made: HashSet<PathBuf>,
}

impl DirMaker {
    pub(super) fn new(root: &Path) -> DirMaker {
        DirMaker {
            root: root.to_path_buf(),
            made: HashSet::from([PathBuf::new()]),
        }
    }

    /// Creates `root/rel` and its parents.
    pub(super) fn make(&mut self, rel: &Path) -> io::Result<()> {
        if self.made.contains(rel) {
            return Ok(());
        }
        fs::create_dir_all(self.root.join(rel))?;
        for a in rel.ancestors() {
            if !self.made.insert(a.to_path_buf()) {
                break;
            }
        }
        Ok(())
    }
}

/// What staging leaves for the run.
#[derive(Default)]
pub(super) struct Staged {
    /// The binds the child must make (`mounts.rs`).
    pub binds: Binds,
    /// File inputs whose copy has other bytes than their key says: dest → digest of the copy.
    pub seen: BTreeMap<String, Option<Digest>>,
}

/// Stages every input of `layout` under `exec`, and creates the package directory. Directory
/// inputs are bound if `bind`, else copied; file inputs are copied and their copies checked
/// against the digests their key holds.
pub(super) fn stage_inputs(
    exec: &Path,
    layout: &Layout,
    inputs: &[Input],
    bind: bool,
    dirs: &mut DirMaker,
) -> Result<Staged, String> {
    let mut staged = Staged::default();
    dirs.make(&layout.package).map_err(|e| {
        format!(
            "cannot create `{}`: {e}",
            exec.join(&layout.package).display()
        )
    })?;
    for (dest, &i) in &layout.inputs {
        let input = &inputs[i];
        if let Some(parent) = dest.parent() {
            dirs.make(parent)
                .map_err(|e| format!("cannot create `{}`: {e}", exec.join(parent).display()))?;
        }
        let target = exec.join(dest);
        let done = if input.is_dir {
            stage_dir(&input.source, &target, bind, &mut staged.binds)
        } else {
            copy_file(&input.source, &target, input.executable).map(|digest| {
                if input.digest.is_some_and(|keyed| keyed != digest) {
                    staged.seen.insert(input.dest.clone(), Some(digest));
                }
            })
        };
        done.map_err(|e| {
            format!(
                "cannot stage input `{}` from `{}`: {e}",
                input.dest,
                input.source.display()
            )
        })?;
    }
    Ok(staged)
}

/// Creates the parents of file outputs and the directory outputs themselves, under `root`.
pub(super) fn create_output_dirs(
    root: &Path,
    layout: &Layout,
    dirs: &mut DirMaker,
) -> Result<(), String> {
    let parents = layout.file_outputs.iter().filter_map(|f| f.parent());
    for dir in parents.chain(layout.dir_outputs.iter().map(PathBuf::as_path)) {
        dirs.make(dir).map_err(|e| {
            format!(
                "cannot create output directory `{}`: {e}",
                root.join(dir).display()
            )
        })?;
    }
    Ok(())
}
