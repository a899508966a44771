//! The executor: runs ONE action's command and reports what happened.
//!
//! The runner hands an [`ActionSpec`] (an already expanded command, its inputs, its declared
//! outputs, its environment) to an [`Executor`] and gets an [`ExecResult`] back; it then collects
//! the outputs from `result.exec_root/<package>/<out>` and calls [`Executor::cleanup`]. The
//! executor never looks at the cache, the graph or the queue.
//!
//! Implementations:
//! - [`SandboxExecutor`] (`sandbox.rs`) runs real processes, each action in a fresh private
//!   directory holding only its declared inputs, or with `sandbox = false` in the real package
//!   directory.
//! - [`FakeExecutor`] (`fake.rs`) spawns nothing and touches no file system: scheduler tests
//!   configure durations, exit codes and in-memory outputs and read back an event log.
//!
//! One run of [`SandboxExecutor`]:
//! 1. check every path of the spec (relative, no `..`), create `<sandbox_root>/<pid>-<n>/` with
//!    `exec/`, `home/` and `tmp/` (`sandbox.rs`);
//! 2. stage each input at `exec/<dest>` and create the declared outputs' directories
//!    (`stage.rs`), then snapshot the tree for the stray-write report (`tree.rs`);
//! 3. run `/bin/sh -c cmd` in `exec/<package>` in its own process group with a clean environment,
//!    capturing stdout and stderr concurrently (`process.rs`, `capture.rs`); on timeout or cancel
//!    SIGTERM the group, after a 2 s grace SIGKILL it; after a normal exit SIGKILL whatever is left
//!    of the group;
//! 4. mask secret values in the captured output, check the declared outputs (`outputs.rs`) and
//!    diff the tree against the snapshot (`tree.rs`).
//!
//! Invariants:
//! - the child's environment is exactly `spec.env` + `spec.secrets` + `HOME` + `TMPDIR` (both
//!   inside the action's private directory); nothing leaks from flow's own environment;
//! - no process of the action's process group outlives [`Executor::run`] (processes that leave the
//!   group, e.g. with `setsid`, are out of reach: see limits in `process.rs`); if flow is killed
//!   with SIGKILL, none outlives the next flow command in the workspace (`groups.rs`);
//! - no complete occurrence of a secret value (4 bytes or longer) is returned in `stdout`/`stderr`,
//!   not even one cut by the 16 MiB truncation;
//! - a staged input never shares an inode with a workspace source, so writing to it cannot change
//!   the workspace (see `stage.rs` for the measurements behind "copy");
//! - a directory input is a real directory that cannot be written through to the dependency's
//!   output and whose `..` stays in the exec root (a read-only bind in the action's own mount
//!   namespace, `mounts.rs`, or a copy).
//!
//! Setup failures (a missing input, an unwritable sandbox root, a path that escapes) are reported
//! as [`Status::SpawnFailed`] with a message: the action fails, the build goes on.

mod builtin;
mod cancel;
mod capture;
mod fake;
mod groups;
mod live;
mod mounts;
mod outputs;
mod process;
mod sandbox;
mod stage;
mod tree;

#[cfg(test)]
mod staging_bench;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use flow_cache::Digest;

pub use cancel::{Cancel, CancelHandle};
pub use capture::{Masker, OUTPUT_CAP};
pub use fake::{FakeAction, FakeEvent, FakeExecutor};
#[cfg(test)]
pub use groups::gone_within;
pub use groups::{group_alive, kill_left, GroupLog, Recorded};
pub use live::{printable, LiveTail};
pub use process::KILL_GRACE;
pub use sandbox::{
    release_root, sandbox_root, sweep_and_choose_root, SandboxExecutor, TMPFS_MIN_FREE,
};

/// One action to run. Every path in it is relative and free of `..`; the executor refuses
/// (with [`Status::SpawnFailed`]) a spec whose paths are not.
#[derive(Clone)]
pub struct ActionSpec {
    /// For messages, e.g. `//app:lint`.
    pub label: String,
    /// Run as `/bin/sh -c cmd`; already expanded.
    pub cmd: String,
    /// The text of the `$(SRCS_FILE)` file (the sources, one a line), written to
    /// `$TMPDIR/flow-srcs.txt` before the command starts; `None` when `cmd` does not use it.
    pub srcs_file: Option<String>,
    /// The package directory relative to the exec root (`""` = the root): the working directory.
    pub package: String,
    /// What the sandbox holds.
    pub inputs: Vec<Input>,
    /// Declared outputs, relative to the package directory; a trailing `/` means a directory.
    pub outputs: Vec<String>,
    /// The declared environment plus `PATH`. The executor adds `HOME` and `TMPDIR`.
    pub env: BTreeMap<String, String>,
    /// Name -> value: put in the environment, never hashed, masked in the captured output.
    pub secrets: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    /// `false`: run in the real `<workspace_root>/<package>` (outputs are collected from there).
    pub sandbox: bool,
    /// Absolute; the working tree when `sandbox` is false.
    pub workspace_root: PathBuf,
    /// Fed the last line the command prints, for the progress rows on a terminal; `None`
    /// elsewhere (nothing to feed).
    pub live: Option<LiveTail>,
    /// A gate's checks (`flow_rules::gate::canonical`): flow evaluates them in the sandbox in
    /// place of running `cmd` (`builtin.rs`).
    pub gate: Option<String>,
}

/// Secret values stay out of debug output.
impl fmt::Debug for ActionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionSpec")
            .field("label", &self.label)
            .field("cmd", &self.cmd)
            .field("srcs_file", &self.srcs_file.as_ref().map(String::len))
            .field("package", &self.package)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("env", &self.env)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("sandbox", &self.sandbox)
            .field("workspace_root", &self.workspace_root)
            .finish()
    }
}

/// One input of an action, staged at `exec/<dest>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Exec-root-relative path, e.g. `pkg/src/a.py` or `dep/out/x.txt`.
    pub dest: String,
    /// Absolute: a workspace file, or a read-only CAS blob.
    pub source: PathBuf,
    pub executable: bool,
    /// A directory input (a dependency's tree output materialized elsewhere): bound read-only
    /// as a whole, or copied (`stage.rs`).
    pub is_dir: bool,
    /// For a file input, the digest its action key holds: the staged copy is hashed and a copy
    /// with other bytes (a file saved while the build ran) is reported in
    /// [`ExecResult::seen_inputs`]. `None`: not checked.
    pub digest: Option<Digest>,
}

/// How the action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The shell exited with this code.
    Exited(i32),
    /// The shell was killed by this signal (not by flow).
    Signaled(i32),
    /// `spec.timeout` elapsed; the process group was terminated.
    TimedOut,
    /// The cancel token fired; the process group was terminated (or it never started).
    Cancelled,
    /// The action was staged but its command never ran: the build stopped ([`Slots::close`])
    /// or the action was cancelled while it waited for a slot.
    NotStarted,
    /// The action could not be set up or started (sandbox, staging, spawn); the message says why.
    SpawnFailed(String),
}

impl Status {
    /// `Exited(0)`.
    pub fn success(&self) -> bool {
        *self == Status::Exited(0)
    }
}

/// How many commands of a build may run at once (`-j`), shared by its actions. An executor
/// prepares an action (stages its sandbox) before it takes a slot: so the runner keeps more
/// actions in flight than there are slots, and the next command starts as soon as a slot is
/// free instead of after its sandbox is built (on the 1,000-package root edit, 2.42 s → 2.30 s;
/// `bench/RESULTS.md`). The runner takes a [`Ticket`] when it hands an action out, so slots go
/// in the scheduler's priority order (tokio's semaphore is fair), not in the order sandboxes
/// happen to be ready.
///
/// A success gives its slot back when the command exits; after a failure the executor leaves the
/// slot taken ([`ExecResult::holds_slot`]) and the runner gives it back with [`Slots::release`]
/// once it has acted on the result, so that it can [`Slots::close`] first and no waiting command
/// starts after a failure that stops the build.
#[derive(Debug, Clone)]
pub struct Slots(std::sync::Arc<tokio::sync::Semaphore>);

/// A slot taken for a command. [`Slot::release_unless_failed`] decides whether it stays taken
/// for [`Slots::release`]; dropped (an early return), it is given back at once.
pub struct Slot {
    permit: tokio::sync::OwnedSemaphorePermit,
}

impl Slot {
    /// After the command: a success (exit 0, every declared output there) gives the slot back
    /// at once, as it cannot stop the build; a failure leaves it taken for the runner
    /// ([`ExecResult::holds_slot`]). Returns whether it is still taken.
    pub fn release_unless_failed(self, status: &Status, missing_outputs: &[String]) -> bool {
        if status.success() && missing_outputs.is_empty() {
            drop(self);
            false
        } else {
            self.permit.forget();
            true
        }
    }
}

impl Slots {
    /// `n` slots (at least one).
    pub fn new(n: usize) -> Slots {
        Slots(std::sync::Arc::new(tokio::sync::Semaphore::new(n.max(1))))
    }

    /// A place in the queue for a slot, from now: the slot itself comes with [`Ticket::enter`].
    /// Granted at once if a slot is free (it is then held while the action is staged: nothing
    /// was waiting for it).
    pub async fn ticket(&self) -> Ticket {
        let mut waiting: Acquire = Box::pin(self.0.clone().acquire_owned());
        // One poll queues the waiter (or takes a free permit); the future keeps its place.
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(waiting.as_mut().poll(cx))).await;
        let state = match first {
            std::task::Poll::Ready(Ok(permit)) => TicketState::Granted(permit),
            std::task::Poll::Ready(Err(_)) => TicketState::Closed,
            std::task::Poll::Pending => TicketState::Waiting(waiting),
        };
        Ticket {
            slots: self.clone(),
            state,
            on_enter: None,
        }
    }

    /// Turns away every action still waiting, and every later one: the build starts nothing new.
    pub fn close(&self) {
        self.0.close();
    }

    /// Gives back a slot an executor kept ([`ExecResult::holds_slot`]).
    pub fn release(&self) {
        self.0.add_permits(1);
    }
}

type Acquire = std::pin::Pin<
    Box<
        dyn Future<Output = Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>>
            + Send,
    >,
>;

/// An action's place in the queue for a [`Slots`] slot.
pub struct Ticket {
    slots: Slots,
    state: TicketState,
    /// Called once, when the slot is granted: the command is about to start.
    on_enter: Option<Box<dyn FnOnce() + Send>>,
}

enum TicketState {
    Granted(tokio::sync::OwnedSemaphorePermit),
    Waiting(Acquire),
    Closed,
}

impl Ticket {
    /// Calls `f` when the slot is granted (the runner reports the action running from then on,
    /// not while it is staged or waits for a slot).
    pub fn on_enter(mut self, f: impl FnOnce() + Send + 'static) -> Ticket {
        self.on_enter = Some(Box::new(f));
        self
    }

    /// Waits for the slot. `None` if the slots were closed (the build stopped) or `cancel` fired
    /// before the command could start.
    pub async fn enter(mut self, cancel: &Cancel) -> Option<Slot> {
        let on_enter = self.on_enter.take();
        let slot = self.wait(cancel).await;
        if let (Some(_), Some(f)) = (&slot, on_enter) {
            f();
        }
        slot
    }

    async fn wait(self, cancel: &Cancel) -> Option<Slot> {
        if cancel.is_cancelled() || self.slots.0.is_closed() {
            return None;
        }
        match self.state {
            TicketState::Granted(permit) => Some(Slot { permit }),
            TicketState::Closed => None,
            TicketState::Waiting(waiting) => tokio::select! {
                biased;
                _ = cancel.cancelled() => None,
                permit = waiting => permit.ok().map(|permit| Slot { permit }),
            },
        }
    }
}

/// What happened when an action ran.
#[derive(Debug, Clone)]
pub struct ExecResult {
    pub status: Status,
    /// Masked; at most [`OUTPUT_CAP`] bytes of the tail, after a one-line note when truncated.
    pub stdout: Vec<u8>,
    /// Masked and capped as `stdout`.
    pub stderr: Vec<u8>,
    pub duration: Duration,
    /// Outputs live at `<exec_root>/<package>/<out>`; the workspace root for `sandbox = false`.
    pub exec_root: PathBuf,
    /// Declared outputs (as declared) that do not exist, or have the wrong kind, after the run.
    pub missing_outputs: Vec<String>,
    /// Human-readable, one per problem, e.g. "declared output `out/` is a file, not a directory".
    pub output_problems: Vec<String>,
    /// Exec-root-relative paths created or modified in the sandbox outside the declared outputs
    /// (a new directory is listed once, with a trailing `/`); sandbox mode only. Never collected.
    pub stray_writes: Vec<String>,
    /// File inputs whose staged copy differs from the digest their key holds (saved while the
    /// build ran, between hashing and staging): exec-root-relative path → digest of the bytes
    /// the action was given (`None`: unreadable after a run in the real tree, so unknown).
    /// Empty when the action saw exactly what its key says.
    pub seen_inputs: BTreeMap<String, Option<Digest>>,
    /// Outputs held in memory (keyed as declared); only [`FakeExecutor`] fills this.
    pub fake_outputs: BTreeMap<String, Vec<u8>>,
    /// The action's private directory, removed by [`Executor::cleanup`]; `None` when nothing is
    /// left to remove (`sandbox = false`, the fake, or a setup failure that cleaned up already).
    pub sandbox_dir: Option<PathBuf>,
    /// The command failed in a slot of the [`Slots`] given to `run`, and the slot is still
    /// taken: the caller gives it back with [`Slots::release`].
    pub holds_slot: bool,
}

impl ExecResult {
    /// A result for an action that never started: `SpawnFailed`, or `Cancelled` before the start.
    pub fn not_run(status: Status, exec_root: PathBuf) -> ExecResult {
        ExecResult {
            status,
            stdout: Vec::new(),
            stderr: Vec::new(),
            duration: Duration::ZERO,
            exec_root,
            missing_outputs: Vec::new(),
            output_problems: Vec::new(),
            stray_writes: Vec::new(),
            seen_inputs: BTreeMap::new(),
            fake_outputs: BTreeMap::new(),
            sandbox_dir: None,
            holds_slot: false,
        }
    }
}

/// Runs one action. The real one is [`SandboxExecutor`], the test double [`FakeExecutor`].
pub trait Executor: Send + Sync + 'static {
    /// Runs `spec` to completion, timeout or cancellation. Never panics on a failing action;
    /// every failure is a [`Status`].
    /// The action is prepared first (its sandbox staged); the command starts only once
    /// `ticket` gets its slot (see [`Slots`] for when the slot is given back).
    fn run(
        &self,
        spec: ActionSpec,
        cancel: Cancel,
        ticket: Ticket,
    ) -> impl Future<Output = ExecResult> + Send;

    /// Removes what `run` left for the runner to collect (the sandbox directory). Call it once,
    /// after collecting the outputs.
    fn cleanup(&self, result: &ExecResult);
}
