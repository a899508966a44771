//! [`FakeExecutor`]: an [`Executor`] for scheduler and runner tests that spawns no process and
//! touches no file system.
//!
//! Each label may be given a [`FakeAction`] (duration, exit code, in-memory outputs, logs);
//! an unconfigured label succeeds at once with no outputs. `run`:
//! 1. records the spec and `Started(label, now)`;
//! 2. sleeps the action's duration with `tokio::time::sleep`, so tests under
//!    `tokio::time::pause()` run instantly on virtual time, while honouring the cancel token
//!    (`Cancelled`) and `spec.timeout` (`TimedOut` when shorter than the duration);
//! 3. records `Finished(label, now)` and returns the configured outputs in
//!    `ExecResult::fake_outputs`, with `missing_outputs` computed against the declared ones as the
//!    real executor would (a directory output `d/` is present under the key `d/` or `d`, or if
//!    some key starts with `d/`).
//!
//! The log is shared (`Arc<Mutex<..>>`), so a test keeps a handle while the runner owns the
//! executor, and asserts order and concurrency from the recorded virtual instants.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::{ActionSpec, Cancel, ExecResult, Executor, Status, Ticket};

/// What the fake does for one label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeAction {
    pub duration: Duration,
    pub exit: i32,
    /// Output path (as declared, relative to the package) -> content.
    pub outputs: BTreeMap<String, Vec<u8>>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// One entry of the fake's log, with the (virtual) time it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeEvent {
    Started(String, Instant),
    Finished(String, Instant),
}

/// An executor that pretends. Clones share configuration and log.
#[derive(Debug, Clone, Default)]
pub struct FakeExecutor {
    actions: Arc<Mutex<BTreeMap<String, FakeAction>>>,
    log: Arc<Mutex<Vec<FakeEvent>>>,
    specs: Arc<Mutex<Vec<ActionSpec>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakeExecutor {
    pub fn new() -> FakeExecutor {
        FakeExecutor::default()
    }

    /// Configures `label` (builder style).
    pub fn with(self, label: impl Into<String>, action: FakeAction) -> FakeExecutor {
        self.set(label, action);
        self
    }

    /// Configures or reconfigures `label`, e.g. between two builds of one test.
    pub fn set(&self, label: impl Into<String>, action: FakeAction) {
        lock(&self.actions).insert(label.into(), action);
    }

    /// The shared log, for a test to keep.
    pub fn log(&self) -> Arc<Mutex<Vec<FakeEvent>>> {
        Arc::clone(&self.log)
    }

    /// A copy of the log so far.
    pub fn events(&self) -> Vec<FakeEvent> {
        lock(&self.log).clone()
    }

    /// Every spec `run` received, in order.
    pub fn specs(&self) -> Vec<ActionSpec> {
        lock(&self.specs).clone()
    }
}

impl Executor for FakeExecutor {
    fn run(
        &self,
        spec: ActionSpec,
        cancel: Cancel,
        ticket: Ticket,
    ) -> impl Future<Output = ExecResult> + Send {
        let action = lock(&self.actions)
            .get(&spec.label)
            .cloned()
            .unwrap_or_default();
        let log = Arc::clone(&self.log);
        let specs = Arc::clone(&self.specs);
        async move {
            let Some(slot) = ticket.enter(&cancel).await else {
                return ExecResult::not_run(Status::NotStarted, PathBuf::new());
            };
            let started = Instant::now();
            lock(&log).push(FakeEvent::Started(spec.label.clone(), started));
            let limit = spec.timeout.filter(|t| *t < action.duration);
            let status = tokio::select! {
                biased;
                _ = cancel.cancelled() => Status::Cancelled,
                _ = sleep(limit.unwrap_or(action.duration)) => match limit {
                    Some(_) => Status::TimedOut,
                    None => Status::Exited(action.exit),
                },
            };
            let finished = Instant::now();
            lock(&log).push(FakeEvent::Finished(spec.label.clone(), finished));

            let (fake_outputs, stdout, stderr) = match status {
                Status::Exited(_) => (action.outputs, action.stdout, action.stderr),
                _ => Default::default(),
            };
            // A key names an output as declared, or without the `/` of a directory output, or
            // a file inside a directory output.
            let present = |declared: &String| {
                let trimmed = declared.trim_end_matches('/');
                fake_outputs.contains_key(declared)
                    || fake_outputs.contains_key(trimmed)
                    || (declared.ends_with('/')
                        && fake_outputs
                            .keys()
                            .any(|k| k.starts_with(declared.as_str())))
            };
            let missing_outputs: Vec<String> = spec
                .outputs
                .iter()
                .filter(|o| !present(o))
                .cloned()
                .collect();
            let output_problems = missing_outputs
                .iter()
                .map(|o| format!("declared output `{o}` was not created"))
                .collect();
            lock(&specs).push(spec);
            let holds_slot = slot.release_unless_failed(&status, &missing_outputs);
            ExecResult {
                status,
                stdout,
                stderr,
                duration: finished - started,
                exec_root: PathBuf::new(),
                missing_outputs,
                output_problems,
                stray_writes: Vec::new(),
                seen_inputs: BTreeMap::new(),
                fake_outputs,
                sandbox_dir: None,
                holds_slot,
            }
        }
    }

    fn cleanup(&self, _result: &ExecResult) {}
}
