//! Opening files that must be regular files: a FIFO, a device, a socket or a directory found
//! where a file belongs is refused, never opened for reading in a way that could block or never
//! end.
//!
//! Every file flow reads from a place someone else could have planted something (a blob in the
//! cache, the database's companions, a build record, a marker under `flow-out/`, a workspace
//! source) goes through [`open_regular`]:
//! 1. `stat` (or `lstat`, when links are not followed): anything but a regular file is refused
//!    before it is opened at all (opening some devices has effects of its own);
//! 2. `open` with `O_NONBLOCK` (a FIFO swapped in after the `stat` opens at once instead of
//!    waiting for a writer), `O_NOCTTY`, `O_CLOEXEC`, and `O_NOFOLLOW` when links are not
//!    followed;
//! 3. `fstat` what was opened: a regular file, or refused. Reads from a regular file do not
//!    block and end at its end, so `O_NONBLOCK` changes nothing for the reader.
//!
//! [`read_regular`] then reads at most a given number of bytes: a file that grew past it (or
//! was big from the start) is an error naming the limit, not an allocation without bound.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Whether a symlink at the path itself is followed (to a regular file) or refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    Follow,
    Refuse,
}

/// The file at `path`, opened for reading, and its metadata (of what was opened): only if it
/// is a regular file (module docs). A symlink is followed or refused as `links` says.
pub fn open_regular(path: &Path, links: Links) -> io::Result<(File, Metadata)> {
    let before = match links {
        Links::Follow => std::fs::metadata(path)?,
        Links::Refuse => std::fs::symlink_metadata(path)?,
    };
    refuse_unless_regular(&before)?;
    open_stated(path, links)
}

/// [`open_regular`] without its first `stat`, for a caller that has just `stat`ed `path` and
/// seen a regular file (steps 2 and 3 only: a swap since is still refused without blocking).
pub fn open_stated(path: &Path, links: Links) -> io::Result<(File, Metadata)> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW on a link: say so, not "too many levels of symbolic links".
            Some(libc::ELOOP) if links == Links::Refuse => not_regular("a symlink"),
            _ => e,
        })?;
    let meta = file.metadata()?;
    refuse_unless_regular(&meta)?;
    Ok((file, meta))
}

/// The content of the regular file at `path` ([`open_regular`]), at most `limit` bytes: a
/// longer file is an error ("it is larger than `limit` bytes") after reading `limit + 1`.
pub fn read_regular(path: &Path, links: Links, limit: u64) -> io::Result<Vec<u8>> {
    let (file, meta) = open_regular(path, links)?;
    read_at_most(file, meta.len(), limit)
}

/// Reads `file` (of about `len` bytes) to its end, refusing more than `limit` bytes.
pub fn read_at_most(file: File, len: u64, limit: u64) -> io::Result<Vec<u8>> {
    if len > limit {
        return Err(too_large(limit));
    }
    let mut bytes = Vec::with_capacity(len as usize + 1);
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(bytes)
}

/// Makes `path` a real directory, never following a link there: missing, it is created (with
/// its parents); a directory, it is kept; anything else (a symlink, even to a directory, a
/// file, a FIFO, a device) is removed, never followed, and replaced by an empty directory.
/// Returns what was replaced, if anything ("a symlink"), for a warning. For the cache's own
/// directories: writing through a link there would write outside the cache.
pub fn real_dir(path: &Path) -> io::Result<Option<&'static str>> {
    let replaced = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(None),
        Ok(m) => {
            std::fs::remove_file(path)?;
            Some(kind_of(&m))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    match std::fs::create_dir_all(path) {
        // Made meanwhile by another process: fine if it is a real directory.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        other => other?,
    }
    if !std::fs::symlink_metadata(path)?.is_dir() {
        return Err(io::Error::other(format!(
            "`{}` is not a directory",
            path.display()
        )));
    }
    Ok(replaced)
}

/// Writes `bytes` to `path` (whose directory is made a real directory first: [`real_dir`])
/// through the temp file `tmp` beside it and a rename. The temp file is created new
/// (`O_EXCL`: a link or anything else planted under its name is removed first, never written
/// through); the rename replaces a file or a link at `path` without following it, and a
/// directory there is removed first. On failure the temp file is removed.
pub fn write_replacing(path: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        real_dir(dir)?;
    }
    let written = (|| {
        match std::fs::remove_file(tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = OpenOptions::new().write(true).create_new(true).open(tmp)?;
        f.write_all(bytes)?;
        drop(f);
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(path)?;
        }
        std::fs::rename(tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
}

/// What a file is, for messages: "a FIFO", "a character device", "a directory", ...
pub fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// Whether `e` is the refusal of [`open_regular`] (the path is not a regular file), as opposed
/// to a missing file or a failed read.
pub fn is_not_regular(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidInput
        && e.get_ref().is_some_and(|inner| inner.is::<NotRegular>())
}

fn refuse_unless_regular(meta: &Metadata) -> io::Result<()> {
    if meta.is_file() {
        Ok(())
    } else {
        Err(not_regular(kind_of(meta)))
    }
}

fn not_regular(kind: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, NotRegular(kind))
}

fn too_large(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("it is larger than {}", human(limit)),
    )
}

/// `16 MiB`, `512 KiB`, or bytes.
fn human(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[derive(Debug)]
struct NotRegular(&'static str);

impl std::fmt::Display for NotRegular {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "it is {}, not a regular file", self.0)
    }
}

impl std::error::Error for NotRegular {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn regular_files_are_read_and_everything_else_refused_at_once() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("f");
        std::fs::write(&file, "abc").unwrap();
        fifo(&t.path().join("fifo"));
        symlink("/dev/zero", t.path().join("zero")).unwrap();
        symlink(&file, t.path().join("link")).unwrap();
        symlink(t.path().join("fifo"), t.path().join("to-fifo")).unwrap();
        std::fs::create_dir(t.path().join("dir")).unwrap();
        let read = |name: &str, links| read_regular(&t.path().join(name), links, 16);
        assert_eq!(read("f", Links::Refuse).unwrap(), b"abc");
        assert_eq!(read("link", Links::Follow).unwrap(), b"abc");
        for (name, links, kind) in [
            ("fifo", Links::Follow, "a FIFO"),
            ("to-fifo", Links::Follow, "a FIFO"),
            ("zero", Links::Follow, "a character device"),
            ("zero", Links::Refuse, "a symlink"),
            ("link", Links::Refuse, "a symlink"),
            ("dir", Links::Follow, "a directory"),
        ] {
            let e = read(name, links).unwrap_err();
            assert!(is_not_regular(&e), "{name}: {e}");
            assert_eq!(e.to_string(), format!("it is {kind}, not a regular file"));
        }
    }

    #[test]
    fn a_file_over_the_limit_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("f");
        std::fs::write(&file, vec![b'x'; 2048]).unwrap();
        assert_eq!(
            read_regular(&file, Links::Refuse, 2048).unwrap().len(),
            2048
        );
        let e = read_regular(&file, Links::Refuse, 1024).unwrap_err();
        assert_eq!(e.to_string(), "it is larger than 1 KiB");
        assert!(!is_not_regular(&e));
    }
}
