//! Runs `/bin/sh -c cmd` in its own process group and supervises it.
//!
//! 1. Spawn with a cleared environment (the caller passes the complete one), stdin from
//!    `/dev/null`, stdout and stderr piped, `process_group(0)`: the shell leads a new group whose
//!    id is its pid, and everything it starts stays in that group unless it leaves on purpose.
//! 2. Read both pipes concurrently while waiting for the first of: the shell exits, the timeout
//!    elapses, the cancel token fires.
//! 3. Exit: SIGKILL the group at once (orphaned background children must not outlive the action;
//!    they have no claim on a grace period, as in Bazel's process-wrapper).
//!    Timeout or cancel: SIGTERM the group, poll every 10 ms until no live member is left, and
//!    after [`KILL_GRACE`] SIGKILL the group.
//! 4. Drain the pipes for at most [`DRAIN`] more (a process that left the group may hold them
//!    open forever), then mask and cap the output.
//!
//! Invariants: a [`GroupGuard`] SIGKILLs the group if the future is dropped half-way, so even an
//! aborted runner leaves no process of the group behind. The status is `TimedOut`/`Cancelled`
//! whenever flow ended the action, whatever signal the shell died of. While the group runs, it
//! is recorded in the workspace lock file (`groups.rs`), so that if flow is killed with SIGKILL
//! (no guard runs) the next flow command in the workspace kills it before building.
//!
//! Limits: a process that calls `setsid`/`setpgid` escapes the group and is not killed (Linux
//! offers cgroups or PID namespaces for that; not used here). "No live member" is read from
//! `/proc/*/stat` on Linux, because where PID 1 does not reap orphans (some containers, this
//! one included) a dead orphan stays a zombie and `kill(-pgid, 0)` keeps succeeding; elsewhere
//! the check falls back to `kill(-pgid, 0)` and may wait out the grace period.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{sleep, timeout, Instant};

use super::capture::{Capture, Masker, OUTPUT_CAP};
use super::groups::{group_alive, GroupLog};
use super::live::LiveTail;
use super::mounts::Binds;
use super::{Cancel, Status};

/// How long a process group has between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// How long to keep reading the pipes once the group is gone.
const DRAIN: Duration = Duration::from_secs(2);

const POLL: Duration = Duration::from_millis(10);

/// One command to run.
pub(super) struct Command<'a> {
    pub cmd: &'a str,
    pub cwd: &'a Path,
    /// The complete environment of the child.
    pub env: &'a BTreeMap<OsString, OsString>,
    pub timeout: Option<Duration>,
    pub cancel: &'a Cancel,
    pub masker: &'a Masker,
    /// Read-only binds of directory inputs, made in the child (`mounts.rs`); usually none.
    pub binds: Binds,
    /// Where the group is recorded while it runs (`groups.rs`); `None` in unit tests.
    pub groups: Option<&'a GroupLog>,
    /// Fed the last line printed, for the progress rows (`live.rs`); `None` off a terminal.
    pub live: Option<&'a LiveTail>,
}

/// What [`run`] saw.
pub(super) struct Finished {
    pub status: Status,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Why supervision stopped waiting.
enum End {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

/// The most Linux takes in one argument (`MAX_ARG_STRLEN`, 32 pages): `sh -c CMD` passes the
/// whole command as one.
const MAX_ARG_BYTES: usize = 128 << 10;

/// Why the kernel refused to start the command with `E2BIG`, and the way round it.
fn too_long(cmd: &str, env: &BTreeMap<OsString, OsString>) -> String {
    let env_bytes: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let what = if cmd.len() >= MAX_ARG_BYTES {
        format!(
            "the command is {} KiB after expansion, and the kernel takes at most {} KiB in one \
             argument",
            cmd.len() >> 10,
            MAX_ARG_BYTES >> 10
        )
    } else {
        format!(
            "the command ({} KiB) and its environment ({} KiB) are more than the kernel takes",
            cmd.len() >> 10,
            env_bytes >> 10
        )
    };
    format!(
        "argument list too long: {what}; pass long lists of sources in a file with \
         `$(SRCS_FILE)` (one path a line) instead of `$(SRCS)`"
    )
}

pub(super) async fn run(c: Command<'_>) -> Finished {
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(c.cmd)
        .current_dir(c.cwd)
        .env_clear()
        .envs(c.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if !c.binds.is_empty() {
        c.binds.install(&mut command);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let message = if error.raw_os_error() == Some(Errno::E2BIG as i32) {
                too_long(c.cmd, c.env)
            } else {
                format!("cannot run `/bin/sh` in `{}`: {error}", c.cwd.display())
            };
            return Finished {
                status: Status::SpawnFailed(message),
                stdout: Vec::new(),
                stderr: Vec::new(),
            };
        }
    };
    let pid = child.id().expect("a child that was just spawned has a pid");
    let leader = Pid::from_raw(pid as i32);
    // Declared before the group's guard, so dropped after it: the record goes once the group
    // has been killed.
    let _recorded = c.groups.and_then(|log| log.record(leader));
    let group = GroupGuard(leader);
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let mut out = Capture::new(OUTPUT_CAP, c.masker);
    let mut err = Capture::new(OUTPUT_CAP, c.masker);
    let status = {
        let mut reading = pin!(async {
            let live = c.live.map(|tail| (tail, c.masker));
            tokio::join!(
                pump(stdout, &mut out, live.map(|(t, m)| (t, m, 0))),
                pump(stderr, &mut err, live.map(|(t, m)| (t, m, 1)))
            );
        });
        let mut read_done = false;
        let mut deadline = pin!(async {
            match c.timeout {
                Some(t) => sleep(t).await,
                None => std::future::pending().await,
            }
        });
        let mut cancelled = pin!(c.cancel.cancelled());
        let end = loop {
            tokio::select! {
                biased;
                status = child.wait() => break End::Exited(status),
                _ = &mut cancelled => break End::Cancelled,
                _ = &mut deadline => break End::TimedOut,
                _ = &mut reading, if !read_done => read_done = true,
            }
        };
        let status = match end {
            End::Exited(Ok(status)) => {
                group.signal(Signal::SIGKILL);
                exit_status(status)
            }
            End::Exited(Err(error)) => {
                group.signal(Signal::SIGKILL);
                Status::SpawnFailed(format!("cannot wait for `/bin/sh`: {error}"))
            }
            End::TimedOut | End::Cancelled => {
                group.signal(Signal::SIGTERM);
                let grace_end = Instant::now() + KILL_GRACE;
                let mut reaped = false;
                while group.alive() && Instant::now() < grace_end {
                    tokio::select! {
                        _ = child.wait(), if !reaped => reaped = true,
                        _ = &mut reading, if !read_done => read_done = true,
                        _ = sleep(POLL) => {}
                    }
                }
                group.signal(Signal::SIGKILL);
                if !reaped {
                    let _ = child.wait().await;
                }
                if matches!(end, End::TimedOut) {
                    Status::TimedOut
                } else {
                    Status::Cancelled
                }
            }
        };
        if !read_done {
            let _ = timeout(DRAIN, &mut reading).await;
        }
        status
    };
    group.disarm();
    Finished {
        status,
        stdout: out.finish(c.masker),
        stderr: err.finish(c.masker),
    }
}

fn exit_status(status: ExitStatus) -> Status {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Status::Exited(code),
        (None, Some(signal)) => Status::Signaled(signal),
        (None, None) => Status::SpawnFailed(format!("`/bin/sh` ended with {status}")),
    }
}

/// `live`: where the last line goes as well, with the masker and the stream's index.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    into: &mut Capture,
    live: Option<(&LiveTail, &Masker, usize)>,
) {
    // Grown on demand (`read_buf` fills spare capacity without zeroing it): most actions print
    // nothing, and a zeroed 64 KiB buffer per pipe was 256 MB of memset in a 2,000-action build.
    let mut buf: Vec<u8> = Vec::with_capacity(4 << 10);
    loop {
        buf.clear();
        match pipe.read_buf(&mut buf).await {
            Ok(1..) => {
                into.push(&buf);
                if let Some((tail, masker, stream)) = live {
                    tail.push(stream, &buf, masker);
                }
            }
            _ => break,
        }
        if buf.len() == buf.capacity() && buf.capacity() < 64 << 10 {
            buf.reserve(buf.capacity());
        }
    }
}

/// The action's process group; SIGKILLed on drop unless disarmed.
struct GroupGuard(Pid);

impl GroupGuard {
    fn signal(&self, signal: Signal) {
        // ESRCH (nobody left) is the common, good case; nothing else can be done about EPERM.
        let _ = killpg(self.0, signal);
    }

    /// Whether a process of the group is alive (zombies do not count).
    fn alive(&self) -> bool {
        group_alive(self.0.as_raw())
    }

    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}
