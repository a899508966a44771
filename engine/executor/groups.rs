//! The process groups of running actions, recorded where the next flow command finds them.
//!
//! Each action runs in a process group of its own (`process.rs`), which flow kills when the
//! action ends, is cancelled, or its future is dropped. A flow killed with SIGKILL runs none of
//! that: the group would go on, and a `sandbox = False` action writing into the real tree would
//! write its stale output while the next build re-runs the same action (which would then store
//! it under the new key). So:
//! 1. right after spawning, [`GroupLog::record`] appends `group <pgid> <start>` to the workspace
//!    lock file `flow-out/.flow-lock` (`lock.rs`; `start`: the group leader's start time, field
//!    22 of `/proc/<pgid>/stat`, in clock ticks since boot), and the [`Recorded`] guard appends
//!    `ended <pgid> <start>` once `process.rs` has killed the group (it is dropped after the
//!    group's guard);
//! 2. a command that takes the lock from a holder that died holding it (`lock.rs`) calls
//!    [`kill_left`] with the file's text before it looks at any other file: for each group
//!    started and not ended that still has a live member, SIGKILL the group, and wait (polling
//!    `/proc` every 10 ms, at most [`KILL_WAIT`]) until no member is left.
//!
//! The lock makes the record trustworthy: only the holder appends to its lock file, and a clean
//! exit removes the file. Cost: one `/proc/<pid>/stat` read and two appends (`O_APPEND` writes
//! to an open file, no directory operation) per action, and one `open` of the lock file in a command that runs an action; the no-op path
//! does nothing more, since
//! [`kill_left`] runs only after a dead holder and reads nothing but the text the lock already
//! read. (A file per action was measured first: a create and an unlink on this ext4 cost ~0.9 ms
//! an action, a 25% slower clean build of 400 trivial tasks.)
//!
//! Pid reuse: a group id cannot be reused while a member of the group lives. Once all are gone,
//! the pid may be given to an unrelated process that leads a group of its own; so a group whose
//! leader (alive or a zombie) started at another time than recorded is left alone, and only
//! members that started no earlier than the recorded leader are counted. The one case this cannot
//! tell apart: the leader's pid was reused by a process that led its own group and died, leaving
//! members; flow would kill those (it needs the pid reused and that leader dead).
//!
//! Limits: without `/proc` nothing can be verified and nothing is killed. A SIGKILL landing
//! between the spawn and the record (microseconds) leaves that group unrecorded. Between the
//! death of flow and the next flow command in the workspace the processes run on (the record
//! is only read then); `prctl(PR_SET_PDEATHSIG)` would end the shell at once, but not what it
//! started, it needs `fork` instead of `posix_spawn` (~0.4 ms an action, `stage.rs`), and it
//! fires when the spawning *thread* exits, which a tokio worker does after `block_in_place`
//! (`flow watch` uses it): a running action would be killed under a live flow.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How long [`kill_left`] waits for killed groups to vanish.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

const POLL: Duration = Duration::from_millis(10);

/// Where this process records the groups of its running actions: the workspace lock file while
/// the lock is held (nothing otherwise), opened for appending on the first record, so that a
/// command that runs no action never opens it.
#[derive(Debug, Default)]
pub struct GroupLog {
    file: Mutex<Target>,
}

#[derive(Debug, Default)]
enum Target {
    #[default]
    Nowhere,
    Path(PathBuf),
    Open(Arc<File>),
}

/// A group's record; on drop, the group is recorded as ended (drop it after killing the group).
#[derive(Debug)]
pub struct Recorded {
    file: Arc<File>,
    group: Group,
}

impl GroupLog {
    /// Records into the file at `path` from now on (`None`: nowhere).
    pub fn set(&self, path: Option<PathBuf>) {
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) =
            path.map_or(Target::Nowhere, Target::Path);
    }

    /// Records the group led by the just-spawned `leader`; `None` if it cannot (the action runs
    /// anyway: the record only matters if flow is killed). Used for actions (`process.rs`) and
    /// for the services of `delivery::service`.
    pub fn record(&self, leader: Pid) -> Option<Recorded> {
        let file = {
            let mut target = self.file.lock().ok()?;
            if let Target::Path(path) = &*target {
                // The lock file exists while the lock is held: never created, nor followed.
                let file = OpenOptions::new()
                    .append(true)
                    .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                    .open(path)
                    .ok()?;
                *target = Target::Open(Arc::new(file));
            }
            match &*target {
                Target::Open(file) => file.clone(),
                _ => return None,
            }
        };
        let start = proc_stat(leader.as_raw())?.start;
        let group = Group {
            pgid: leader.as_raw(),
            start,
        };
        // One `write` of one line: appends from several threads do not interleave.
        (&*file).write_all(group.line("group").as_bytes()).ok()?;
        Some(Recorded { file, group })
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let _ = (&*self.file).write_all(self.group.line("ended").as_bytes());
    }
}

/// Kills the groups recorded in `record` (the text of a dead holder's lock file) as started and
/// not ended, and waits for them to vanish (see the module docs).
pub fn kill_left(record: &str) {
    let mut groups: HashMap<(i32, u64), bool> = HashMap::new();
    for line in record.lines() {
        let parsed = |tag| Group::parse(line.strip_prefix(tag)?);
        if let Some(g) = parsed("group ") {
            groups.entry((g.pgid, g.start)).or_insert(true);
        } else if let Some(g) = parsed("ended ") {
            groups.insert((g.pgid, g.start), false);
        }
    }
    let groups: Vec<Group> = groups
        .into_iter()
        .filter(|&(_, running)| running)
        .map(|((pgid, start), _)| Group { pgid, start })
        .collect();
    if groups.is_empty() {
        return;
    }
    let deadline = Instant::now() + KILL_WAIT;
    while let Some(live) = live_groups(&groups).filter(|l| !l.is_empty()) {
        if Instant::now() >= deadline {
            break; // unkillable (uninterruptible sleep): nothing more can be done
        }
        for pgid in live {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        std::thread::sleep(POLL);
    }
}

/// Whether a process of group `pgid` is alive; zombies do not count (where PID 1 does not reap
/// orphans, a dead orphan stays a zombie and `kill(-pgid, 0)` keeps succeeding), read from
/// `/proc`; without `/proc`, whether `kill(-pgid, 0)` succeeds.
/// Waits up to `limit` until no process of group `pgid` is alive; whether none is (tests: a
/// killed group's members may take a moment to be gone on a busy machine).
#[cfg(test)]
pub fn gone_within(pgid: i32, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while group_alive(pgid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    !group_alive(pgid)
}

pub fn group_alive(pgid: i32) -> bool {
    match killpg(Pid::from_raw(pgid), None) {
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true,
        Ok(()) => match proc_stats() {
            Some(mut stats) => stats.any(|p| p.pgrp == pgid && p.live),
            None => true,
        },
    }
}

#[derive(Debug)]
/// One recorded group: its id (the leader's pid) and the leader's start time.
struct Group {
    pgid: i32,
    start: u64,
}

impl Group {
    /// `<pgid> <start>`.
    fn parse(text: &str) -> Option<Group> {
        let (pgid, start) = text.trim().split_once(' ')?;
        Some(Group {
            pgid: pgid.parse().ok().filter(|&p| p > 1)?,
            start: start.parse().ok()?,
        })
    }

    /// `<tag> <pgid> <start>\n`.
    fn line(&self, tag: &str) -> String {
        format!("{tag} {} {}\n", self.pgid, self.start)
    }
}

/// The ids of `groups` that still hold a live member of the recorded group; `None` without
/// `/proc`.
fn live_groups(groups: &[Group]) -> Option<Vec<i32>> {
    let wanted: HashMap<i32, u64> = groups.iter().map(|g| (g.pgid, g.start)).collect();
    let mut leaders_differ = Vec::new();
    let mut live = Vec::new();
    for stat in proc_stats()? {
        let Some(&start) = wanted.get(&stat.pgrp) else {
            if let Some(&start) = wanted.get(&stat.pid) {
                if stat.start != start {
                    leaders_differ.push(stat.pid); // the pid went to another process
                }
            }
            continue;
        };
        if stat.pid == stat.pgrp && stat.start != start {
            leaders_differ.push(stat.pid); // another group under the recorded id
        } else if stat.live && stat.start >= start {
            live.push(stat.pgrp);
        }
    }
    live.sort_unstable();
    live.dedup();
    live.retain(|pgid| !leaders_differ.contains(pgid));
    Some(live)
}

/// What flow reads of `/proc/<pid>/stat`.
pub(super) struct ProcStat {
    pub pid: i32,
    pub pgrp: i32,
    /// Not a zombie (nor dead).
    pub live: bool,
    /// Clock ticks after boot.
    pub start: u64,
}

/// `/proc/<pid>/stat`, parsed; `None` if there is no such process (or no `/proc`).
pub(super) fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp ... starttime(22) ...`; comm may hold spaces and parentheses.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().take(20).collect();
    Some(ProcStat {
        pid,
        live: !matches!(*fields.first()?, "Z" | "X"),
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Every process in `/proc`; `None` without `/proc`.
pub(super) fn proc_stats() -> Option<impl Iterator<Item = ProcStat>> {
    let entries = fs::read_dir("/proc").ok()?;
    Some(entries.flatten().filter_map(|entry| {
        let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
        proc_stat(pid) // `None` too if it exited meanwhile
    }))
}
