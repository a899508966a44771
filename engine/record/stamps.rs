//! Stat checks: which recorded entries no longer match the file system, in parallel, with one
//! directory opened per run of entries in it.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode};
use rayon::prelude::*;

use super::format::Entry;

/// Whether `st` has the size, mtime, ctime and inode of `e`. The ctime is what a `chmod` or an
/// in-place rewrite that sets the mtime back (`cp -p`) changes.
pub(super) fn matches(e: &Entry, st: &FileStat) -> bool {
    e.size == st.st_size as u64
        && e.mtime_ns == st.st_mtime * 1_000_000_000 + st.st_mtime_nsec
        && e.ctime_ns == st.st_ctime * 1_000_000_000 + st.st_ctime_nsec
        && e.ino == st.st_ino
}

/// The indices of the `entries` that `unchanged` rejects or that cannot be stat'ed (following
/// links or not), in parallel. A `stat` spends most of its time walking the path, so each task
/// opens a directory once and stats its entries by name (`fstatat`): entries are grouped by
/// directory (sources are sorted, outputs in plan order).
pub(super) fn changed(
    root: &Path,
    entries: &[Entry],
    follow: bool,
    unchanged: impl Fn(&Entry, &FileStat) -> bool + Sync,
) -> Vec<usize> {
    const CHUNK: usize = 256;
    let flags = if follow {
        AtFlags::empty()
    } else {
        AtFlags::AT_SYMLINK_NOFOLLOW
    };
    entries
        .par_chunks(CHUNK)
        .enumerate()
        .flat_map_iter(|(c, chunk)| {
            let mut open: Option<(&str, Option<OwnedFd>)> = None;
            let mut out = Vec::new();
            for (j, e) in chunk.iter().enumerate() {
                let (dir, name) = e.path.rsplit_once('/').unwrap_or(("", e.path.as_str()));
                if open.as_ref().is_none_or(|(d, _)| *d != dir) {
                    let fd = nix::fcntl::open(
                        &root.join(dir),
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .ok();
                    open = Some((dir, fd));
                }
                let st = match &open {
                    Some((_, Some(fd))) => fstatat(fd, name, flags).ok(),
                    _ => None,
                };
                if !st.is_some_and(|st| unchanged(e, &st)) {
                    out.push(c * CHUNK + j);
                }
            }
            out
        })
        .collect()
}

/// File type bits of `st_mode`.
pub(super) mod libc_mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFREG: u32 = 0o100000;
}
