//! Outputs of failed runs: a failed action's declared outputs that exist are kept under
//! `flow-out/`, at the paths a successful run's outputs have, each marked as from a failed run,
//! so that a user, a CI upload step and flow's own reports find a failing test's `junit.xml`
//! where they always do (docs/build.md, "Outputs of a failed run").
//!
//! - [`keep`] runs in the worker after a failure, before the sandbox is removed: it clears the
//!   action's declared outputs and markers under `flow-out/` (what an earlier run left there
//!   never passes for this run's), then for each declared output the run produced writes the
//!   marker `.NAME.flow-failed` beside it and moves the output in place: a rename, or, across
//!   file systems (a sandbox on tmpfs) or for a file with other hard links, a copy of at most
//!   its size. A `sandbox = false` action's outputs are moved out of the package directory the
//!   same way (left there, they would pass for sources at the next analysis).
//! - Only regular files and directories are kept, never through a symlink: a symlink among the
//!   directories between the exec root and an output, or at the output itself, keeps nothing;
//!   inside a directory output, symlinks and special files are left out. Every directory
//!   between `flow-out/` and a kept output is made a real one (`flow_cache::real_dest`).
//! - Never cached: nothing here touches the CAS, the action cache or the file-state table, so
//!   a kept file is never trusted as an output (`Rebuilder::is_materialized` also refuses an
//!   output with a marker). The next run of the action clears them before it starts
//!   (`stale::clear_outputs`, which removes the markers too), a restore removes each marker
//!   after writing the output, the sweep of undeclared outputs keeps the markers of declared
//!   outputs, and `flow clean` removes all of it.
//!
//! The marker is written before the output is moved in, and a restore removes it only after
//! writing the output: a crash in between leaves at worst a marker beside the right bytes
//! (`is_materialized` refuses it, so the next build restores again and removes it) or a marker
//! without an output ([`failed_outputs`] lists an output only when both are there).

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flow_cache::regular::{open_stated, Links};
use flow_cache::{check_relative_path, output_mode, real_dest};

use crate::expand::join_path;
use crate::plan::Action;

/// The name of the marker beside a kept output `name`: `.NAME.flow-failed`, or, when that would
/// pass the 255-byte limit of a file name, `.flow-failed-` and a digest of the name.
pub fn failed_marker_name(name: &str) -> String {
    let plain = format!(".{name}.flow-failed");
    if plain.len() <= 255 {
        plain
    } else {
        format!(
            ".flow-failed-{}",
            &blake3::hash(name.as_bytes()).to_hex()[..32]
        )
    }
}

/// The marker file beside the output at `path`.
pub fn failed_marker(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(failed_marker_name(&name))
}

/// Whether the output at `path` carries a failed run's marker (a regular file, not a link).
pub fn is_marked(path: &Path) -> bool {
    fs::symlink_metadata(failed_marker(path)).is_ok_and(|m| m.is_file())
}

/// The outputs of `action` under `out_root` (`flow-out/`) that are from its last, failed run:
/// each declared output that is there (a regular file, or a real directory for `dir/`) with its
/// marker beside it, in declaration order. Empty after a success, a restore or `flow clean`.
pub fn failed_outputs(out_root: &Path, action: &Action) -> Vec<PathBuf> {
    action
        .outs
        .iter()
        .filter_map(|out| {
            let rel = out.trim_end_matches('/');
            check_relative_path(rel).ok()?;
            if !action.package.is_empty() {
                check_relative_path(&action.package).ok()?;
            }
            let path = out_root.join(join_path(&action.package, rel));
            let meta = fs::symlink_metadata(&path).ok()?;
            let kind_ok = if out.ends_with('/') {
                meta.is_dir()
            } else {
                meta.is_file()
            };
            (kind_ok && is_marked(&path) && no_link_between(out_root, &path)).then_some(path)
        })
        .collect()
}

/// What [`keep`] kept, for the failure's log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Kept {
    /// Declared outputs (as declared, `dir/` for a directory) now under `flow-out/`.
    pub kept: Vec<String>,
    /// Declared outputs that were there but not kept, with why.
    pub refused: Vec<String>,
}

impl Kept {
    /// The lines appended to the failed action's log (empty when nothing was there).
    pub fn log_lines(&self, package: &str) -> String {
        let mut text = String::new();
        if !self.kept.is_empty() {
            let dir = match package {
                "" => crate::session::OUT_DIR.to_owned(),
                _ => join_path(crate::session::OUT_DIR, package),
            };
            text.push_str(&format!(
                "flow: outputs of this failed run kept in {dir}/ (marked by .NAME.flow-failed, \
                 never cached): {}\n",
                self.kept.join(", ")
            ));
        }
        for why in &self.refused {
            text.push_str(&format!("flow: {why}\n"));
        }
        text
    }
}

/// After a failed run of `action` that left its outputs under `exec_root/<package>/` (the
/// sandbox, or the workspace for `sandbox = false`): clears the action's outputs and markers
/// under `out_root`, then moves there each declared output the run produced, marked with
/// `note` (one line saying which run it is from). See the module docs.
pub fn keep(out_root: &Path, exec_root: &Path, action: &Action, note: &str) -> Kept {
    crate::stale::clear_outputs(out_root, &action.package, &action.outs);
    let mut kept = Kept::default();
    // A fake executor's results have no exec root: nothing to keep.
    if !exec_root.is_absolute() {
        return kept;
    }
    for out in &action.outs {
        let rel = out.trim_end_matches('/');
        if check_relative_path(rel).is_err()
            || (!action.package.is_empty() && check_relative_path(&action.package).is_err())
        {
            continue;
        }
        let full = join_path(&action.package, rel);
        let src = exec_root.join(&full);
        let Ok(meta) = fs::symlink_metadata(&src) else {
            continue;
        };
        if !no_link_between(exec_root, &src) {
            kept.refused.push(format!(
                "output `{out}` of the failed run was not kept: a directory on its path is a \
                 symlink"
            ));
            continue;
        }
        if !(meta.is_file() || meta.is_dir()) {
            kept.refused.push(format!(
                "output `{out}` of the failed run was not kept: it is {}",
                flow_cache::regular::kind_of(&meta)
            ));
            continue;
        }
        match place(out_root, &full, &src, &meta, note) {
            Ok(()) => kept.kept.push(out.clone()),
            Err(e) => kept.refused.push(format!(
                "output `{out}` of the failed run was not kept: {e}"
            )),
        }
    }
    kept
}

/// Writes the marker for `flow-out/<full>`, then moves `src` there.
fn place(out_root: &Path, full: &str, src: &Path, meta: &Metadata, note: &str) -> io::Result<()> {
    let dest = real_dest(out_root, full).map_err(io::Error::other)?;
    let marker = failed_marker(&dest);
    // Unique per call: two failed actions of one package are kept at once, by one process
    // (a name of the pid alone let one rename take the other's file: CI run, ENOENT).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = marker.with_file_name(format!(".flow-tmp-failed-{}-{n}", std::process::id()));
    flow_cache::regular::write_replacing(&marker, &tmp, note.as_bytes())?;
    if meta.is_dir() {
        place_tree(src, &dest)
    } else {
        place_file(src, meta, &dest)
    }
}

/// Moves the regular file `src` (stated as `meta`) to `dest`, where nothing is: a rename when
/// it has no other hard link, else (or across file systems) a copy of at most its size. Either
/// way with flow's output mode.
fn place_file(src: &Path, meta: &Metadata, dest: &Path) -> io::Result<()> {
    let mode = output_mode(meta.permissions().mode() & 0o111 != 0);
    if meta.nlink() == 1 {
        match fs::rename(src, dest) {
            Ok(()) => {
                // Renamed: what arrived must be the regular file that was stated (a swap in
                // between would bring a link into flow-out/).
                let arrived = fs::symlink_metadata(dest)?;
                if !arrived.is_file() {
                    let _ = fs::remove_file(dest);
                    return Err(io::Error::other("it changed while it was kept"));
                }
                return fs::set_permissions(dest, fs::Permissions::from_mode(mode));
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {}
            Err(e) => return Err(e),
        }
    }
    let (file, opened) = open_stated(src, Links::Refuse)?;
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dest)?;
    // `io::copy` uses `copy_file_range` (a reflink where the file system has them).
    io::copy(&mut io::Read::take(file, opened.len()), &mut to)?;
    to.set_permissions(fs::Permissions::from_mode(mode))
}

/// Moves the directory `src` to `dest` entry by entry: directories made, regular files placed
/// ([`place_file`]), symlinks and special files left out.
fn place_tree(src: &Path, dest: &Path) -> io::Result<()> {
    match fs::create_dir(dest) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        other => other?,
    }
    if !fs::symlink_metadata(dest)?.is_dir() {
        return Err(io::Error::other(
            "its place under flow-out/ is not a directory",
        ));
    }
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        if meta.is_dir() {
            place_tree(&from, &to)?;
        } else if meta.is_file() {
            place_file(&from, &meta, &to)?;
        }
    }
    Ok(())
}

/// Whether every directory between `root` and `path` (both excluded) is a real directory.
fn no_link_between(root: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return false;
    };
    let mut dir = root.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    parents[..parents.len().saturating_sub(1)].iter().all(|c| {
        dir.push(c);
        fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names_stay_within_a_file_name() {
        assert_eq!(failed_marker_name("junit.xml"), ".junit.xml.flow-failed");
        let long = "x".repeat(250);
        let name = failed_marker_name(&long);
        assert!(
            name.starts_with(".flow-failed-") && name.len() <= 255,
            "{name}"
        );
        assert_eq!(
            failed_marker(Path::new("/o/pkg/r.xml")),
            Path::new("/o/pkg/.r.xml.flow-failed")
        );
    }

    fn action(outs: &[&str]) -> Action {
        Action {
            label: flow_rules::label::Label::new("p", "t").unwrap(),
            package: "p".into(),
            kind: crate::plan::ActionKind::Task,
            cmd: String::new(),
            srcs: Vec::new(),
            outs: outs.iter().map(|o| o.to_string()).collect(),
            env: Default::default(),
            secrets: Vec::new(),
            tools: Vec::new(),
            timeout: None,
            retries: 0,
            sandbox: true,
            deps: Vec::new(),
            delivery: None,
            services: Vec::new(),
        }
    }

    #[test]
    fn kept_outputs_are_listed_until_their_marker_goes() {
        let dir = tempfile::tempdir().unwrap();
        let (exec, out) = (dir.path().join("exec"), dir.path().join("out"));
        fs::create_dir_all(exec.join("p/d")).unwrap();
        fs::write(exec.join("p/r.xml"), "<failed/>").unwrap();
        fs::write(exec.join("p/d/a"), "a").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", exec.join("p/l")).unwrap();
        // An earlier success left `gone.txt`, which this run did not write.
        fs::create_dir_all(out.join("p")).unwrap();
        fs::write(out.join("p/gone.txt"), "stale").unwrap();
        let a = action(&["r.xml", "d/", "l", "gone.txt"]);
        let kept = keep(&out, &exec, &a, "from a failed run\n");
        assert_eq!(kept.kept, ["r.xml", "d/"]);
        assert_eq!(kept.refused.len(), 1, "{:?}", kept.refused);
        assert!(kept.refused[0].contains("`l`") && kept.refused[0].contains("symlink"));
        assert!(!out.join("p/gone.txt").exists());
        assert!(fs::symlink_metadata(out.join("p/l")).is_err());
        assert_eq!(
            fs::read_to_string(out.join("p/r.xml")).unwrap(),
            "<failed/>"
        );
        assert_eq!(
            fs::read_to_string(out.join("p/.r.xml.flow-failed")).unwrap(),
            "from a failed run\n"
        );
        assert_eq!(
            failed_outputs(&out, &a),
            [out.join("p/r.xml"), out.join("p/d")]
        );
        // A restore removes the marker: the output is no longer a failed run's.
        fs::remove_file(out.join("p/.r.xml.flow-failed")).unwrap();
        assert_eq!(failed_outputs(&out, &a), [out.join("p/d")]);
        // The next run clears outputs and markers alike.
        crate::stale::clear_outputs(&out, "p", &a.outs);
        assert!(failed_outputs(&out, &a).is_empty());
        assert!(files_under(&out).is_empty(), "{:?}", files_under(&out));
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for e in fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                found.extend(files_under(&e.path()));
            } else {
                found.push(e.path());
            }
        }
        found
    }

    #[test]
    fn links_between_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("l")).unwrap();
        assert!(no_link_between(root, &root.join("a/b/f")));
        assert!(!no_link_between(root, &root.join("l/b/f")));
        assert!(no_link_between(root, &root.join("l")));
    }

    #[test]
    fn a_tree_keeps_files_and_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("src"), dir.path().join("dest"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/a.txt"), "a").unwrap();
        fs::write(src.join("outside"), "secret").unwrap();
        std::os::unix::fs::symlink(src.join("outside"), src.join("sub/link")).unwrap();
        // A hard link is copied, never moved (the other name keeps its inode to itself).
        fs::hard_link(src.join("outside"), src.join("hard")).unwrap();
        place_tree(&src, &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("sub/a.txt")).unwrap(), "a");
        assert!(fs::symlink_metadata(dest.join("sub/link")).is_err());
        assert_eq!(fs::read_to_string(dest.join("hard")).unwrap(), "secret");
        assert_eq!(fs::metadata(dest.join("hard")).unwrap().nlink(), 1);
        assert!(src.join("outside").exists());
        assert!(!src.join("sub/a.txt").exists(), "moved, not copied");
    }
}
