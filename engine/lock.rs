//! The workspace lock: one flow command at a time writes a workspace's `flow-out/`.
//!
//! `flow build`, `flow watch` and `flow clean` all write `flow-out/`. Each restored file is
//! replaced atomically, but two builds of different edits restoring different results for the
//! same targets would leave `flow-out/` a mix of both; `flow clean` during a build would delete
//! a directory output while a dependent reads it; a watch cycle could swap a directory output
//! under a running build. In sequence it is always one command's result. So each of them takes
//! an exclusive `flock` on `<workspace>/flow-out/.flow-lock` (after analysis, so that bad input
//! never waits; before hashing sources, so that a command that waited sees the files as they
//! are when it starts) and holds it until it exits (`flow watch`: for its whole session):
//! 1. open (creating) the file and try the lock without blocking; if another command holds it,
//!    print once `flow: waiting for another flow command in this workspace (flow build, pid N,
//!    started HH:MM:SS UTC)` from what the holder wrote into the file, and retry every 50 ms
//!    (Ctrl-C ends the wait with exit 130);
//! 2. once locked, check that the path still names the locked file: a holder removes it when it
//!    exits, so a waiter may have locked a file that is gone; then start over;
//! 3. a file that already holds a pid was left by a command that died holding it (a clean exit
//!    removes it): the process groups of its actions that still run are killed (it recorded
//!    them in the file, see `executor/groups.rs`), and it may have left temp files beside its
//!    outputs, which are swept;
//! 4. write our pid, start time and command into it, then, while actions run, a line per
//!    action's process group (`executor/groups.rs`); on exit, remove it (then
//!    `flow-out/` if empty), and unlock.
//!
//! If the file cannot be created or locked (a read-only workspace, a file system without
//! `flock`), the command warns and goes on without the lock: alone, it is still correct.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::executor::kill_left;
use crate::interrupts::Interrupts;
use flow_cache::regular::Links;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::runtime::Handle;

use crate::clock::Clock;

/// The lock file's name in `flow-out/` (not an output: the stale-output sweep keeps it).
pub const LOCK_FILE: &str = ".flow-lock";

/// Takes the workspace lock for `command` (`build`, `watch`, `clean`): the lock (`None`: none
/// could be taken, warned) and whether another command held it first; `Err(130)` on Ctrl-C
/// while waiting.
pub fn lock_workspace(
    out_root: &Path,
    command: &str,
    clock: &Clock,
    runtime: &Handle,
    sigint: &mut Option<Interrupts>,
) -> Result<(Option<WorkspaceLock>, bool), i32> {
    match WorkspaceLock::acquire(out_root, command, clock, runtime, sigint) {
        Acquired::Locked(lock) => {
            if lock.previous_holder_died {
                flow_cache::sweep_leftovers(out_root, true);
            }
            let waited = lock.waited;
            Ok((Some(lock), waited))
        }
        Acquired::Interrupted => {
            eprintln!("flow: interrupted while waiting for the other flow command");
            Err(130)
        }
        Acquired::Failed(why) => {
            // The lock protects `flow-out/` from a concurrent command; without it (a read-only
            // workspace, a file system without `flock`) a lone command is still correct.
            eprintln!("warning: {why}; going on without the workspace lock");
            Ok((None, false))
        }
    }
}

/// Who holds the workspace lock now (`flow build, pid N, started ...`), or None: for commands
/// that only read `flow-out/` (`flow report`) and say that what they read may be changing.
pub fn held_by(out_root: &Path) -> Option<String> {
    let path = out_root.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(&path)
        .ok()
        .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => None,
        Err((_, Errno::EWOULDBLOCK)) => Some(holder(&path)),
        Err(_) => None,
    }
}

/// The exclusive lock on `<workspace>/flow-out/.flow-lock` (see the module docs).
pub struct WorkspaceLock {
    file: Flock<File>,
    path: PathBuf,
    out_root: PathBuf,
    /// The file held the pid of a build that died holding the lock.
    previous_holder_died: bool,
    /// Another build held the lock first.
    waited: bool,
}

/// The outcome of [`WorkspaceLock::acquire`].
enum Acquired {
    Locked(WorkspaceLock),
    /// Ctrl-C while waiting for another build.
    Interrupted,
    /// The lock file could not be created or locked: why.
    Failed(String),
}

/// How often a waiting build retries the lock.
const LOCK_POLL: Duration = Duration::from_millis(50);

impl WorkspaceLock {
    /// Takes the lock, waiting for another build that holds it (see the module docs).
    fn acquire(
        out_root: &Path,
        command: &str,
        clock: &Clock,
        runtime: &Handle,
        sigint: &mut Option<Interrupts>,
    ) -> Acquired {
        let path = out_root.join(LOCK_FILE);
        let failed = |action: &str, path: &Path, e: std::io::Error| {
            Acquired::Failed(format!("cannot {action} `{}`: {e}", path.display()))
        };
        let mut told = false;
        loop {
            if let Err(e) = fs::create_dir_all(out_root) {
                return failed("create", out_root, e);
            }
            // Anything but a regular file at the lock's place (a link, a FIFO, a socket, a
            // directory) is removed, never followed or read: flow writes nothing through a
            // link below `flow-out/`, a FIFO would block the read of the holder's pid forever,
            // and a directory there would leave every build without the lock.
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {
                    let _ = fs::remove_dir_all(&path);
                }
                Ok(m) if !m.is_file() => {
                    let _ = fs::remove_file(&path);
                }
                _ => {}
            }
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .open(&path);
            let file = match opened {
                Ok(file) => file,
                Err(e) => return failed("open", &path, e),
            };
            let mut attempt = Flock::lock(file, FlockArg::LockExclusiveNonblock);
            let mut locked = loop {
                match attempt {
                    Ok(locked) => break locked,
                    Err((file, Errno::EWOULDBLOCK | Errno::EINTR)) => {
                        if !told {
                            told = true;
                            eprintln!(
                                "flow: waiting for another flow command in this workspace ({})",
                                holder(&path)
                            );
                        }
                        if wait_or_interrupt(runtime, sigint) {
                            return Acquired::Interrupted;
                        }
                        attempt = Flock::lock(file, FlockArg::LockExclusiveNonblock);
                    }
                    Err((_, e)) => return failed("lock", &path, std::io::Error::from(e)),
                }
            };
            if !names_file(&path, &locked) {
                continue; // its holder removed it on exit: lock the file now at `path`
            }
            let mut previous = String::new();
            let _ = locked.read_to_string(&mut previous);
            // A holder that died may have left actions running (SIGKILL ends flow, not them):
            // end them before anything is read or swept, and before the record is overwritten.
            kill_left(&previous);
            let started = clock.now_secs();
            // Only the waiting message reads it: a failed write is not worth failing the command.
            let pid = std::process::id();
            let _ = locked
                .set_len(0)
                .and_then(|()| locked.rewind())
                .and_then(|()| write!(locked, "pid {pid}\nstarted {started}\ncommand {command}\n"));
            return Acquired::Locked(WorkspaceLock {
                file: locked,
                path,
                out_root: out_root.to_path_buf(),
                previous_holder_died: !previous.trim().is_empty(),
                waited: told,
            });
        }
    }
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock, and only if it is still ours (`flow
        // clean` may have removed it, and another build created a new one).
        if names_file(&self.path, &self.file) {
            let _ = fs::remove_file(&self.path);
            let _ = fs::remove_dir(&self.out_root); // only if empty: no outputs were made
        }
    }
}

impl WorkspaceLock {
    /// The lock file: where the running actions' process groups are recorded while the lock
    /// is held (`executor/groups.rs`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether `path` is the file open as `file` (same device and inode).
fn names_file(path: &Path, file: &File) -> bool {
    match (fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `flow build, pid N, started HH:MM:SS UTC` from the lock file at `path`, as its holder wrote
/// it (it writes just after locking, so an empty file is read again for a moment).
fn holder(path: &Path) -> String {
    for _ in 0..20 {
        let text = read_regular(path).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        if let (Some(pid), Some(started)) = (field("pid "), field("started ")) {
            let day = started % 86_400;
            let command = text
                .lines()
                .find_map(|l| l.strip_prefix("command "))
                .map_or(String::new(), |c| format!("flow {}, ", c.trim()));
            return format!(
                "{command}pid {pid}, started {:02}:{:02}:{:02} UTC",
                day / 3600,
                day % 3600 / 60,
                day % 60
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    "pid unknown".to_owned()
}

/// Sleeps [`LOCK_POLL`]; true if Ctrl-C came first.
fn wait_or_interrupt(runtime: &Handle, sigint: &mut Option<Interrupts>) -> bool {
    runtime.block_on(async {
        match sigint {
            Some(s) => tokio::select! {
                _ = s.recv() => true,
                _ = tokio::time::sleep(LOCK_POLL) => false,
            },
            None => {
                tokio::time::sleep(LOCK_POLL).await;
                false
            }
        }
    })
}

/// The first 4 KiB of `path` (the holder's own lines; the process groups follow) if it is a
/// regular file; never follows a link or blocks on a FIFO.
fn read_regular(path: &Path) -> Option<String> {
    let (file, _) = flow_cache::regular::open_regular(path, Links::Refuse).ok()?;
    let mut bytes = Vec::new();
    file.take(4 << 10).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}
