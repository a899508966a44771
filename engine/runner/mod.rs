//! `Runner`: the owner loop of a build. It alone holds the plan's state, mutates it and prints;
//! actions run as tokio tasks that report back through a channel (ninja's `Builder::Build`,
//! cargo's `DrainState`).
//!
//! Loop ([`Runner::run_to_end`]):
//! 1. dispatch (`dispatch.rs`): while fewer than 2 × `jobs` actions are in flight, pop the most
//!    urgent ready node from the `Scheduler` and ask the rebuilder's one reuse decision
//!    ([`Rebuilder::decide`](crate::rebuilder::Rebuilder::decide)) what to do with it:
//!    carried or cached, it is reported and finished at once; to run, it is handed to a
//!    worker (`worker.rs`: the executor stages it, waits for one of the `jobs` `Slots`, runs
//!    it, retries it up to `retries` times, and stores its outputs on success); it is reported
//!    running (the progress bar) only once it has its slot. A group
//!    completes at once, forwarding its dependencies' outputs;
//! 2. completion (`completion.rs`): wait for a worker's report (or Ctrl-C, or a watcher's
//!    `Control`), report it, tell the scheduler, which releases dependents or skips them;
//!    after a failure without `-k`, start nothing new;
//! 3. when nothing runs and nothing is ready: write the history batch (`history.rs`): file
//!    states, keys, runs and use times in a few transactions.
//!
//! Ctrl-C cancels every running action (the executor kills their process groups); a cancelled
//! action records nothing. Exit code: 0 all passed, 1 a target failed, 130 interrupted.

mod completion;
mod dispatch;
mod effect_job;
mod history;
mod notify;
mod services;
mod worker;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use flow_cache::{ActionResult, Digest};
use flow_rules::Label;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::executor::{CancelHandle, Executor, Slots};
use crate::hasher::Hashed;
use crate::interrupts::Interrupts;
use crate::plan::Plan;
use crate::rebuilder::{Carried, Rebuilder, StagedOutput};
use crate::reporter::{Reporter, Summary};
use crate::scheduler::{NodeState, Scheduler};

use history::HistoryBatch;
use worker::Completion;

/// Settings of one build.
pub struct BuildOptions {
    pub jobs: usize,
    pub keep_going: bool,
    /// Print `[CACHED]` for actions that were already up to date (a build), or only for those
    /// restored from the cache (a watch cycle, where "unchanged" is the normal case).
    pub report_up_to_date: bool,
    /// The workspace root as text: history rows are per workspace.
    pub workspace: String,
    pub clock: Clock,
    /// `[test] quarantine`: the failures of these targets are warnings (`completion.rs`).
    pub quarantine: Vec<flow_rules::pattern::TargetPattern>,
}

/// Below this many tasks to key (the rest carried over), history and results are read one
/// label at a time rather than in bulk.
const FEW_KEYED: usize = 64;

/// The labels of the tasks to key when all but a few (at most [`FEW_KEYED`]) are carried over;
/// `None` otherwise.
pub fn few_keyed(plan: &Plan, carried: &Carried) -> Option<Vec<String>> {
    if carried.is_empty() {
        return None;
    }
    let keyed: Vec<String> = plan
        .actions()
        .filter(|&i| carried.get(i).is_none())
        .map(|i| plan.nodes[i].label.to_string())
        .collect();
    (keyed.len() <= FEW_KEYED).then_some(keyed)
}

/// Inputs resolved before the loop starts.
pub struct Resolved {
    /// Workspace-relative source path → digest (missing: unreadable).
    pub sources: HashMap<String, Hashed>,
    /// Tool name → identity (missing: not found on the action PATH).
    pub tools: HashMap<String, String>,
    /// Label → expected duration in ms, from history.
    pub durations: HashMap<String, u64>,
    /// The tasks whose last result stands (the rebuilder's carry set; see
    /// `rebuilder::reuse`).
    pub carried: Carried,
    /// Whether the carried tasks' cache entries are to be marked used.
    pub touch_carried: bool,
}

/// What a finished build leaves besides its summary: per node, its outputs as dependents see
/// them and its key (`None` for a node that did not finish, or for a group's key).
pub struct Finished {
    pub summary: Summary,
    pub staged: Vec<Option<Vec<StagedOutput>>>,
    pub keys: Vec<Option<Digest>>,
    /// Per node, why it failed (`None`: it did not fail).
    pub failures: Vec<Option<String>>,
}

pub struct Runner<E: Executor> {
    pub plan: Arc<Plan>,
    pub rebuilder: Arc<Rebuilder>,
    pub executor: Arc<E>,
    pub options: BuildOptions,
    /// What effects share (the ledger, ...); `None` where effects cannot run (watch).
    pub effects: Option<Arc<crate::delivery::effects::Effects>>,
    /// Where services record their process groups (the lock file's log).
    pub groups: Option<Arc<crate::executor::GroupLog>>,
}

/// The state of one run of the owner loop.
struct Drive<'a, E: Executor> {
    runner: &'a Runner<E>,
    resolved: &'a Resolved,
    sched: Scheduler,
    outputs: Vec<Option<Vec<StagedOutput>>>,
    keys: Vec<Option<Digest>>,
    failures: Vec<Option<String>>,
    summary: Summary,
    history: HistoryBatch,
    /// Results of last build's keys, read in bulk (empty when only a few actions are keyed).
    prefetched: HashMap<Digest, ActionResult>,
    /// Nodes made ready and not yet looked ahead at (`prefetch_remote`, `restore_ahead`): kept
    /// while fewer than two are ready, so that a lone one joins the next ones.
    fresh: Vec<usize>,
    /// A hit had its outputs restored: from now on the restores of the hits ready at once are
    /// looked ahead for (`restore_ahead`).
    restoring: bool,
    /// Set by a watcher of its own when a stopping signal arrives: hits are decided (and
    /// restored) without the loop waiting on anything, so the loop's own signal stream would
    /// be seen only after the last of them (`dispatch_ready` and `restore_ahead` look here).
    signalled: Arc<std::sync::atomic::AtomicBool>,
    cancels: HashMap<usize, CancelHandle>,
    /// `jobs` slots bound the commands running at once; up to twice as many actions are in
    /// flight, so that the next sandbox is staged while commands run (see `Slots`).
    slots: Slots,
    in_flight: usize,
    in_flight_limit: usize,
    done: mpsc::UnboundedSender<Completion>,
    /// Workers say here which action got its slot (its command starts).
    started: mpsc::UnboundedSender<usize>,
    /// The live tails of the actions in flight (on a terminal), handed to the reporter when
    /// an action gets its slot.
    tails: HashMap<usize, crate::executor::LiveTail>,
    /// Notification nodes, run once every other node settled.
    notifications: Vec<usize>,
    services: Arc<services::ServicePool>,
}

impl<E: Executor> Runner<E> {
    /// Runs the build to the end; returns the summary (the exit code follows from it).
    ///
    /// `sigint` is the Ctrl-C stream, registered by the caller as early as possible (before
    /// analysis), so an early Ctrl-C is not lost; `None` registers one here.
    pub async fn run(
        &self,
        resolved: &Resolved,
        reporter: &mut Reporter,
        sigint: Option<Interrupts>,
    ) -> Summary {
        let mut sigint = sigint;
        self.run_to_end(resolved, reporter, &mut sigint, None)
            .await
            .summary
    }

    /// Runs the build, also listening to `control`: a watcher sends `Control::Supersede` when
    /// files change under a running build; the runner then starts nothing new, cancels the
    /// running actions whose inputs changed (recording nothing for them), lets the others
    /// finish, and returns with `Summary::superseded` set so the caller starts the next cycle.
    /// Returns each node's outputs and key too (for the build record and the next cycle).
    pub async fn run_to_end(
        &self,
        resolved: &Resolved,
        reporter: &mut Reporter,
        sigint: &mut Option<Interrupts>,
        mut control: Option<mpsc::UnboundedReceiver<Control>>,
    ) -> Finished {
        let started = Instant::now();
        let (tx, mut rx) = mpsc::unbounded_channel::<Completion>();
        let (started_tx, mut slot_granted) = mpsc::unbounded_channel::<usize>();
        if sigint.is_none() {
            *sigint = Interrupts::register();
        }
        let mut drive = Drive::new(self, resolved, reporter, tx, started_tx);
        let watcher = Interrupts::register().map(|mut signals| {
            let signalled = drive.signalled.clone();
            tokio::spawn(async move {
                signals.recv().await;
                signalled.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        });
        // One that came before the watcher listened (during analysis or hashing: found by an
        // outside test, which saw a build that only restores finish `ok` after a SIGTERM at
        // 10 ms) waits in the command's own stream.
        if signal_pending(sigint).await {
            drive.interrupt();
        }
        loop {
            drive.dispatch_ready(reporter).await;
            if drive.sched.is_stopped() {
                // Actions prepared but still waiting for a slot do not start.
                drive.slots.close();
            }
            if drive.in_flight == 0 && (drive.sched.is_finished() || drive.sched.is_stopped()) {
                break;
            }
            if drive.in_flight == 0 {
                continue;
            }
            reporter.flush();
            // Biased, in this order: an interrupt or a supersede first (never starved by a
            // stream of completions); then an action's `started` message before any completion,
            // since it is always sent before its own (random order lost the `started` events of
            // fast actions: CI run, the event stream's golden).
            tokio::select! {
                biased;
                _ = interrupted(sigint), if !drive.summary.interrupted => drive.interrupt(),
                Some(Control::Supersede { affected }) = next_control(&mut control) => {
                    drive.supersede(&affected);
                }
                Some(i) = slot_granted.recv() => {
                    // (Unless its completion came first.)
                    if drive.cancels.contains_key(&i) {
                        let tail = drive.tails.get(&i).cloned();
                        reporter.started(&self.plan.nodes[i].label.to_string(), tail);
                    }
                }
                Some(c) = rx.recv() => drive.complete(c, reporter),
            }
        }
        if let Some(w) = watcher {
            w.abort();
        }
        drive.services.stop_all().await;
        if !drive.summary.interrupted && !drive.summary.superseded {
            drive.notify(reporter).await;
        }
        // The build's time is its own; uploads still running are waited for after it, once
        // the screen has said how every action ended.
        let took = started.elapsed();
        reporter.flush();
        drive.finish_uploads(sigint).await;
        drive.finish(reporter, took)
    }
}

impl<'a, E: Executor> Drive<'a, E> {
    fn new(
        runner: &'a Runner<E>,
        resolved: &'a Resolved,
        reporter: &Reporter,
        done: mpsc::UnboundedSender<Completion>,
        started: mpsc::UnboundedSender<usize>,
    ) -> Drive<'a, E> {
        let profile = crate::profile::Profile::from_env();
        let plan = &runner.plan;
        let n = plan.nodes.len();
        let cache = &runner.rebuilder.cache;
        let workspace = &runner.options.workspace;
        let costs: Vec<u64> = plan
            .nodes
            .iter()
            .map(|a| match a.kind.runs() {
                false => 0,
                true => resolved
                    .durations
                    .get(&a.label.to_string())
                    .copied()
                    .unwrap_or(100)
                    .max(1),
            })
            .collect();
        // Most keys of a build are the keys of the last one: fetch their results in a few bulk
        // queries instead of one point query per action. When all but a few actions are
        // carried over, only those few are looked up, one by one.
        let few = few_keyed(plan, &resolved.carried);
        let last_keys = match &few {
            Some(labels) => cache.last_keys_of(workspace, labels),
            None => cache.last_keys(workspace),
        }
        .unwrap_or_default();
        let prefetched = if few.is_some() {
            HashMap::new()
        } else {
            let keys: Vec<Digest> = last_keys.values().copied().collect();
            cache.get_actions(&keys).unwrap_or_default()
        };
        let history =
            HistoryBatch::begin(cache, workspace, runner.options.clock, last_keys, reporter);
        profile.mark("run: begin, last keys, prefetch results");
        let jobs = runner.options.jobs.max(1);
        Drive {
            runner,
            resolved,
            sched: notify::scheduler(plan, &costs),
            outputs: vec![None; n],
            keys: vec![None; n],
            failures: vec![None; n],
            summary: Summary::default(),
            history,
            prefetched,
            fresh: Vec::new(),
            restoring: false,
            signalled: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            cancels: HashMap::new(),
            tails: HashMap::new(),
            slots: Slots::new(jobs),
            in_flight: 0,
            in_flight_limit: jobs * 2,
            done,
            started,
            notifications: Vec::new(),
            services: Arc::new(services::ServicePool::new(
                plan.clone(),
                runner.rebuilder.workspace_root.clone(),
                cache.dir().join("tmp"),
                runner.groups.clone(),
            )),
        }
    }

    /// Ctrl-C: start nothing new, cancel everything running.
    fn interrupt(&mut self) {
        self.summary.interrupted = true;
        self.sched.stop();
        for h in self.cancels.values() {
            h.cancel();
        }
    }

    /// A watcher saw inputs change: start nothing new, cancel the running actions affected.
    fn supersede(&mut self, affected: &BTreeSet<Label>) {
        self.summary.superseded = true;
        self.sched.stop();
        for (&node, h) in &self.cancels {
            if affected.contains(&self.runner.plan.nodes[node].label) {
                h.cancel();
            }
        }
    }

    /// Waits for the remote cache's uploads still running, or abandons them on Ctrl-C: either
    /// way they are over before the build ends.
    async fn finish_uploads(&mut self, sigint: &mut Option<Interrupts>) {
        let Some(remote) = self.runner.rebuilder.remote.clone() else {
            return;
        };
        let waited = std::time::Instant::now();
        let uploaded = match self.summary.interrupted {
            true => None,
            false => tokio::select! {
                biased;
                _ = interrupted(sigint) => {
                    self.summary.interrupted = true;
                    None
                }
                n = remote.finish_uploads() => Some(n),
            },
        };
        match uploaded {
            Some(done) => {
                let after = waited.elapsed().as_secs_f64();
                if done.uploaded > 0 {
                    eprintln!(
                        "flow: remote cache: {} result(s) uploaded ({after:.2}s after the last \
                         action)",
                        done.uploaded
                    );
                }
                if done.abandoned > 0 {
                    eprintln!(
                        "flow: remote cache: {} upload(s) abandoned (the server failed)",
                        done.abandoned
                    );
                }
            }
            None => match remote.abandon_uploads() {
                0 => {}
                n => eprintln!("flow: remote cache: {n} upload(s) abandoned (interrupted)"),
            },
        }
    }

    /// After the loop: count what never started, write the history batch, print the summary.
    fn finish(self, reporter: &mut Reporter, took: std::time::Duration) -> Finished {
        let profile = crate::profile::Profile::from_env();
        profile.mark("run: actions");
        let mut summary = self.summary;
        let plan = &self.runner.plan;
        summary.not_started = plan
            .actions()
            .filter(|&i| self.sched.state(i) == NodeState::NotStarted)
            .count();
        let rebuilder = &self.runner.rebuilder;
        if let Err(e) = rebuilder.flush() {
            reporter.warn(&format!(
                "cannot record the results of this build's runs: {e}"
            ));
        }
        let mut history = self.history;
        history.collect_cases(plan, &rebuilder.out_root);
        history.save(
            &rebuilder.cache,
            &rebuilder.hasher,
            &summary,
            took,
            reporter,
        );
        reporter.summary(&summary, took);
        Finished {
            summary,
            staged: self.outputs,
            keys: self.keys,
            failures: self.failures,
        }
    }
}

/// The async runtime a build or a watch runs on, and the stream of stopping signals (Ctrl-C,
/// SIGTERM, SIGHUP: `interrupts.rs`), registered at once so that one at any moment is handled by
/// the runner (before the runner starts, it is noticed
/// as soon as the runner listens; nothing is recorded before then).
pub fn runtime_with_sigint(
    start: &std::path::Path,
) -> Result<(tokio::runtime::Runtime, Option<Interrupts>), crate::error::Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| crate::error::Error::Io {
            path: start.to_path_buf(),
            action: "start the async runtime in",
            error: e.to_string(),
        })?;
    let sigint = runtime.block_on(async { Interrupts::register() });
    Ok((runtime, sigint))
}

/// A message from a watcher to a running build.
#[derive(Clone, Debug)]
pub enum Control {
    /// Files changed: stop starting work; cancel running actions whose labels are in
    /// `affected` (their inputs changed).
    Supersede { affected: BTreeSet<Label> },
}

async fn next_control(control: &mut Option<mpsc::UnboundedReceiver<Control>>) -> Option<Control> {
    match control {
        Some(rx) => match rx.recv().await {
            Some(c) => Some(c),
            None => {
                *control = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Whether a stopping signal is waiting in `sigint`, without waiting for one.
async fn signal_pending(sigint: &mut Option<Interrupts>) -> bool {
    tokio::select! {
        biased;
        _ = interrupted(sigint) => true,
        _ = std::future::ready(()) => false,
    }
}

/// Resolves on SIGINT; never when there is no signal stream.
pub async fn interrupted(sigint: &mut Option<Interrupts>) {
    match sigint {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests;
