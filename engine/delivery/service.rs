//! Services: a background process (a database, a local server) that integration tests need,
//! started for its dependents and stopped after them.
//!
//! [`RunningService::start`]:
//! 1. spawn `/bin/sh -c start` with exactly `spec.env`, cwd `spec.cwd`, stdin from `/dev/null`,
//!    stdout and stderr appended to `spec.log`, in a new process group (its id is the shell's
//!    pid); record the group in the workspace lock file when a [`GroupLog`] is given
//!    (`executor/groups.rs`), so that if flow is killed with SIGKILL the next flow command kills
//!    the service;
//! 2. probe `spec.ready` every [`READY_EVERY`] until it passes or `spec.timeout` elapses; the
//!    shell exiting while no process of its group is left fails at once (a shell that exits after
//!    starting a daemon in its group is fine);
//! 3. not ready: SIGKILL the group, reap, and fail with why and the tail of the log.
//!
//! [`RunningService::stop`]: run `spec.stop` if given (a command probe: own group, same env and
//! cwd, at most [`STOP_COMMAND_LIMIT`]), then SIGTERM the group, wait up to [`TERM_GRACE`] for no
//! live member, SIGKILL, reap.
//!
//! Invariants: no process of the service's group outlives the [`RunningService`]: `stop`, an
//! error from `start`, a dropped `start` future and a dropped value (`Drop` SIGKILLs the group
//! synchronously) all end it. The group's record in the lock file is closed (`ended`) only after
//! the group was killed. Limits as for actions (`executor/process.rs`): a process that leaves the
//! group with `setsid` is out of reach.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::time::{sleep, Instant};

use super::probe::{
    check, describe_exit, human_duration, quote_tail, wait_until, Probe, ProbeContext,
};
use crate::executor::{group_alive, GroupLog, Recorded};

/// How long the members of a SIGKILLed group may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long a service must keep running after its ready probe passed.
const READY_SETTLE: Duration = Duration::from_millis(200);

/// How often readiness is probed.
pub const READY_EVERY: Duration = Duration::from_millis(100);

/// The most one readiness attempt may take (less if the service's timeout is shorter).
pub const READY_ATTEMPT_LIMIT: Duration = Duration::from_secs(5);

/// The most a `stop` command may take.
pub const STOP_COMMAND_LIMIT: Duration = Duration::from_secs(10);

/// How long the group has between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

const POLL: Duration = Duration::from_millis(10);

/// How much of the log an error quotes is capped by `probe::quote_tail`; this much is read.
const LOG_TAIL_READ: u64 = 4 << 10;

/// What to run.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// For messages, e.g. `//db:postgres`.
    pub label: String,
    /// Run as `/bin/sh -c start`.
    pub start: String,
    pub ready: Probe,
    /// Run as `/bin/sh -c stop` before the group is signalled.
    pub stop: Option<String>,
    /// The most `start` may take to get ready.
    pub timeout: Duration,
    pub cwd: PathBuf,
    /// The complete environment of `start`, `ready` and `stop`.
    pub env: BTreeMap<String, String>,
    /// Where stdout and stderr of `start` go (appended; created with its directory).
    pub log: PathBuf,
}

/// A started service; see the module docs.
#[derive(Debug)]
pub struct RunningService {
    spec: ServiceSpec,
    child: tokio::process::Child,
    pgid: Pid,
    /// How long it took to get ready.
    ready_after: Duration,
    /// Dropped after `Drop::drop` killed the group (fields drop after it).
    _recorded: Option<Recorded>,
    stopped: bool,
}

impl RunningService {
    /// Starts the service and waits until it is ready; see the module docs.
    pub async fn start(spec: ServiceSpec) -> Result<RunningService, String> {
        RunningService::start_recorded(spec, None).await
    }

    /// [`RunningService::start`], recording the group in `groups` (the session's log of running
    /// process groups, written to the workspace lock file) while it runs.
    pub async fn start_recorded(
        spec: ServiceSpec,
        groups: Option<&GroupLog>,
    ) -> Result<RunningService, String> {
        let label = spec.label.clone();
        let log = open_log(&spec.log).map_err(|e| {
            format!(
                "service {label}: cannot open its log `{}`: {e}",
                spec.log.display()
            )
        })?;
        let err_log = log
            .try_clone()
            .map_err(|e| format!("service {label}: cannot share its log: {e}"))?;
        let child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&spec.start)
            .current_dir(&spec.cwd)
            .env_clear()
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!(
                    "service {label}: cannot run `/bin/sh` in `{}`: {e}",
                    spec.cwd.display()
                )
            })?;
        let pgid = Pid::from_raw(child.id().expect("a child just spawned has a pid") as i32);
        let recorded = groups.and_then(|g| g.record(pgid));
        // From here on, every path (an error, a dropped future) kills the group.
        let mut service = RunningService {
            spec,
            child,
            pgid,
            ready_after: Duration::ZERO,
            _recorded: recorded,
            stopped: false,
        };
        match service.wait_ready().await {
            Ok(took) => {
                service.ready_after = took;
                Ok(service)
            }
            Err(why) => {
                service.kill_now().await;
                let tail = log_tail(&service.spec.log);
                let log = service.spec.log.display();
                Err(if tail.is_empty() {
                    format!("service {label} {why}; its log `{log}` is empty")
                } else {
                    format!("service {label} {why}; its log `{log}` ends: {tail}")
                })
            }
        }
    }

    /// The service's label.
    pub fn label(&self) -> &str {
        &self.spec.label
    }

    /// The id of its process group.
    pub fn pgid(&self) -> i32 {
        self.pgid.as_raw()
    }

    /// How long it took to get ready.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// Probes readiness until it passes, the timeout, or the group is gone (`Err`: the reason,
    /// worded to follow "service LABEL").
    async fn wait_ready(&mut self) -> Result<Duration, String> {
        let ctx = ProbeContext {
            cwd: self.spec.cwd.clone(),
            env: self.spec.env.clone(),
            attempt_timeout: self.spec.timeout.min(READY_ATTEMPT_LIMIT),
        };
        let within = self.spec.timeout;
        let ready_probe = self.spec.ready.clone();
        let mut ready = pin!(wait_until(&ready_probe, &ctx, READY_EVERY, within));
        let mut shell_done = false;
        let took = loop {
            tokio::select! {
                result = &mut ready => {
                    break result.map_err(|why| {
                        format!("did not get ready within {}: {why}", human_duration(within))
                    });
                }
                status = self.child.wait(), if !shell_done => {
                    shell_done = true;
                    if group_alive(self.pgid.as_raw()) {
                        continue; // the shell left a daemon in its group: keep probing
                    }
                    let how = match status {
                        Ok(s) => describe_exit(s),
                        Err(e) => format!("could not be waited for ({e})"),
                    };
                    return Err(format!("{how} before it was ready (ready: {})", self.spec.ready));
                }
            }
        };
        let took = took?;
        self.still_running(took).await
    }

    /// After its probe passed: the service must still run a moment later. One that died
    /// meanwhile (a port taken by another process, which is what answered the probe) would
    /// leave its dependents testing something else.
    async fn still_running(&mut self, took: Duration) -> Result<Duration, String> {
        tokio::time::sleep(READY_SETTLE).await;
        let exited = match self.child.try_wait() {
            Ok(Some(status)) if !group_alive(self.pgid.as_raw()) => Some(describe_exit(status)),
            _ => None,
        };
        match exited {
            None => Ok(took),
            Some(how) => Err(format!(
                "{how} although its ready probe ({}) passed: something else answers it",
                self.spec.ready
            )),
        }
    }

    /// Stops the service: its `stop` command if any, then SIGTERM, SIGKILL after
    /// [`TERM_GRACE`]; `Err` when the `stop` command failed (the group is ended anyway).
    pub async fn stop(mut self) -> Result<(), String> {
        let stop_result = match &self.spec.stop {
            None => Ok(()),
            Some(cmd) => {
                let ctx = ProbeContext {
                    cwd: self.spec.cwd.clone(),
                    env: self.spec.env.clone(),
                    attempt_timeout: STOP_COMMAND_LIMIT,
                };
                check(&Probe::Command(cmd.clone()), &ctx)
                    .await
                    .map_err(|why| {
                        format!(
                            "service {}: its stop command failed: {why}",
                            self.spec.label
                        )
                    })
            }
        };
        let _ = killpg(self.pgid, Signal::SIGTERM);
        let grace_end = Instant::now() + TERM_GRACE;
        while group_alive(self.pgid.as_raw()) && Instant::now() < grace_end {
            sleep(POLL).await;
        }
        self.kill_now().await;
        stop_result
    }

    /// SIGKILLs the group, reaps the shell, and waits (a bounded moment: a busy machine
    /// delivers the signal late) until no member of the group is left.
    async fn kill_now(&mut self) {
        let _ = killpg(self.pgid, Signal::SIGKILL);
        let _ = self.child.wait().await;
        let end = Instant::now() + KILL_WAIT;
        while group_alive(self.pgid.as_raw()) && Instant::now() < end {
            sleep(POLL).await;
        }
        self.stopped = true;
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        if !self.stopped {
            // ESRCH (nobody left) is the good case. `kill_on_drop` has tokio reap the shell.
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// The last bytes of the log on one line; empty if it is empty or unreadable.
fn log_tail(path: &Path) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_READ)));
    let mut bytes = Vec::new();
    let _ = file.take(LOG_TAIL_READ).read_to_end(&mut bytes);
    quote_tail(&bytes)
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
