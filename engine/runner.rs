//! `Runner`: the owner loop of a build. It alone holds the plan's state, mutates it and prints;
//! actions run as tokio tasks that report back through a channel (ninja's `Builder::Build`,
//! cargo's `DrainState`).
//!
//! Loop:
//! 1. while fewer than 2 × `jobs` actions are in flight, pop the most urgent ready node from the
//!    `Scheduler` (the executor stages an action, then waits for one of the `jobs` `Slots` to run
//!    its command: the next sandbox is ready when a command exits);
//!    - a group completes at once, forwarding its dependencies' outputs;
//!    - a task gets its key from the `Rebuilder`: a cached result is reported `[CACHED]` (and
//!      restored if `flow-out/` does not hold it), otherwise the task is handed to the executor
//!      in a tokio task (retried up to `retries` times) that stores its outputs on success;
//! 2. wait for a completion (or Ctrl-C), report it, tell the scheduler, which releases dependents
//!    or skips them; after a failure without `-k`, start nothing new;
//! 3. when nothing runs and nothing is ready: save file states, history and LRU stamps in a few
//!    batched transactions.
//!
//! Ctrl-C cancels every running action (the executor kills their process groups); a cancelled
//! action records nothing. Exit code: 0 all passed, 1 a target failed, 130 interrupted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_cache::{ActionResult, ActionRun, BuildSummary, Cache, Digest, Outcome};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::executor::{Cancel, CancelHandle, ExecResult, Executor, Slots, Status};
use crate::hasher::Hashed;
use crate::plan::Plan;
use crate::rebuilder::{staged, Rebuilder, StagedOutput, StoreError};
use crate::reporter::{Reporter, Summary};
use crate::scheduler::{NodeState, Scheduler};

/// Settings of one build.
pub struct BuildOptions {
    pub jobs: usize,
    pub keep_going: bool,
    /// Print `[CACHED]` for actions that were already up to date (a build), or only for those
    /// restored from the cache (a watch cycle, where "unchanged" is the normal case).
    pub report_up_to_date: bool,
    /// The workspace root as text: history rows are per workspace.
    pub workspace: String,
}

/// Below this many tasks to key (the rest carried over), history and results are read one
/// label at a time rather than in bulk.
const FEW_KEYED: usize = 64;

/// The labels of the tasks to key when all but a few (at most [`FEW_KEYED`]) are carried over;
/// `None` otherwise.
pub fn few_keyed(
    plan: &Plan,
    carried: &HashMap<usize, (Vec<StagedOutput>, Digest)>,
) -> Option<Vec<String>> {
    if carried.is_empty() {
        return None;
    }
    let keyed: Vec<String> = plan
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.is_group && !carried.contains_key(i))
        .map(|(_, a)| a.label.to_string())
        .collect();
    (keyed.len() <= FEW_KEYED).then_some(keyed)
}

/// How an executed action ended, as the worker reports it.
enum Done {
    Ran {
        result: ActionResult,
        attempts: u32,
        took: Duration,
        stray: Vec<String>,
    },
    Failed {
        why: String,
        log: Vec<u8>,
        stdout: Option<Digest>,
        stderr: Option<Digest>,
        exit: Option<i32>,
        timed_out: bool,
        took: Duration,
    },
    Cancelled,
    /// Staged, but its command never ran: the build stopped, or it was cancelled, while it
    /// waited for a job slot.
    NotStarted,
}

struct Completion {
    node: usize,
    key: Digest,
    done: Done,
    /// The action's job slot is still taken: the owner gives it back once it has acted on
    /// `done` (after a failure, only after closing the slots). See `Slots`.
    holds_slot: bool,
}

/// Inputs resolved before the loop starts.
pub struct Resolved {
    /// Workspace-relative source path → digest (missing: unreadable).
    pub sources: HashMap<String, Hashed>,
    /// Tool name → identity (missing: not found on the action PATH).
    pub tools: HashMap<String, String>,
    /// Label → expected duration in ms, from history.
    pub durations: HashMap<String, u64>,
    /// Tasks known to be up to date without a key computation (carried over from the build
    /// record, see `record.rs`): node → its outputs as dependents see them, and its key.
    pub carried: HashMap<usize, (Vec<StagedOutput>, Digest)>,
    /// Whether the carried tasks' cache entries are to be marked used.
    pub touch_carried: bool,
}

/// What a finished build leaves besides its summary: per node, its outputs as dependents see
/// them and its key (`None` for a node that did not finish, or for a group's key).
pub struct Finished {
    pub summary: Summary,
    pub staged: Vec<Option<Vec<StagedOutput>>>,
    pub keys: Vec<Option<Digest>>,
}

pub struct Runner<E: Executor> {
    pub plan: Arc<Plan>,
    pub rebuilder: Arc<Rebuilder>,
    pub executor: Arc<E>,
    pub options: BuildOptions,
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
        sigint: Option<Signal>,
    ) -> Summary {
        let mut sigint = sigint;
        self.run_with(resolved, reporter, &mut sigint, None).await
    }

    /// `run`, also listening to `control`: a watcher sends `Control::Supersede` when files
    /// change under a running build; the runner then starts nothing new, cancels the running
    /// actions whose inputs changed (recording nothing for them), lets the others finish, and
    /// returns with `Summary::superseded` set so the caller starts the next cycle.
    pub async fn run_with(
        &self,
        resolved: &Resolved,
        reporter: &mut Reporter,
        sigint: &mut Option<Signal>,
        control: Option<mpsc::UnboundedReceiver<Control>>,
    ) -> Summary {
        self.run_to_end(resolved, reporter, sigint, control)
            .await
            .summary
    }

    /// `run_with`, also returning each node's outputs and key (for the build record).
    pub async fn run_to_end(
        &self,
        resolved: &Resolved,
        reporter: &mut Reporter,
        sigint: &mut Option<Signal>,
        mut control: Option<mpsc::UnboundedReceiver<Control>>,
    ) -> Finished {
        let started = Instant::now();
        let profile = crate::profile::Profile::from_env();
        let plan = &self.plan;
        let n = plan.nodes.len();
        let cache: &Cache = &self.rebuilder.cache;
        let build_id = cache
            .begin_build(
                &self.options.workspace,
                &std::env::args().collect::<Vec<_>>().join(" "),
            )
            .map_err(|e| reporter.warn(&format!("cannot record this build in the history: {e}")))
            .ok();
        let costs: Vec<u64> = plan
            .nodes
            .iter()
            .map(|a| {
                if a.is_group {
                    0
                } else {
                    resolved
                        .durations
                        .get(&a.label.to_string())
                        .copied()
                        .unwrap_or(100)
                        .max(1)
                }
            })
            .collect();
        let mut sched = Scheduler::new(&plan.deps(), &costs);
        let mut outputs: Vec<Option<Vec<StagedOutput>>> = vec![None; n];
        let mut keys: Vec<Option<Digest>> = vec![None; n];
        let mut summary = Summary::default();
        let mut runs: Vec<ActionRun> = Vec::new();
        let mut hits: Vec<Digest> = Vec::new();
        let mut key_jsons: Vec<(Digest, Vec<u8>)> = Vec::new();
        let (tx, mut rx) = mpsc::unbounded_channel::<Completion>();
        let mut cancels: HashMap<usize, CancelHandle> = HashMap::new();
        // `jobs` slots bound the commands running at once; up to twice as many actions are in
        // flight, so that the next sandbox is staged while commands run (see `Slots`).
        let slots = Slots::new(self.options.jobs.max(1));
        let in_flight_limit = self.options.jobs.max(1) * 2;
        let mut in_flight = 0usize;
        if sigint.is_none() {
            *sigint = signal(SignalKind::interrupt()).ok();
        }
        // Most keys of a build are the keys of the last one: fetch their results in a few bulk
        // queries instead of one point query per action. When all but a few actions are carried
        // over, only those few are looked up, one by one.
        let few = few_keyed(plan, &resolved.carried);
        let last_keys = match &few {
            Some(labels) => cache.last_keys_of(&self.options.workspace, labels),
            None => cache.last_keys(&self.options.workspace),
        }
        .unwrap_or_default();
        let prefetched: HashMap<Digest, ActionResult> = if few.is_some() {
            HashMap::new()
        } else {
            let keys: Vec<Digest> = last_keys.values().copied().collect();
            cache.get_actions(&keys).unwrap_or_default()
        };
        profile.mark("run: begin, last keys, prefetch results");
        let now_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        let workspace = self.options.workspace.clone();
        let run_row = |label: String,
                       key: Digest,
                       outcome: Outcome,
                       ms: u64,
                       exit: Option<i32>,
                       out: Option<Digest>,
                       err: Option<Digest>| ActionRun {
            label,
            key,
            outcome,
            duration_ms: ms,
            exit_code: exit,
            stdout: out,
            stderr: err,
            workspace: workspace.clone(),
            finished_at_ms: now_ms(),
        };

        loop {
            while in_flight < in_flight_limit {
                let Some(i) = sched.pop_ready() else { break };
                let action = &plan.nodes[i];
                let deps: Vec<StagedOutput> = action
                    .deps
                    .iter()
                    .flat_map(|&d| outputs[d].clone().unwrap_or_default())
                    .collect();
                if action.is_group {
                    outputs[i] = Some(deps);
                    sched.finish(i, true);
                    continue;
                }
                let label = action.label.to_string();
                if let Some((staged, key)) = resolved.carried.get(&i) {
                    outputs[i] = Some(staged.clone());
                    keys[i] = Some(*key);
                    if resolved.touch_carried {
                        hits.push(*key);
                    }
                    summary.cached += 1;
                    if self.options.report_up_to_date {
                        reporter.cached(&label);
                    } else {
                        reporter.up_to_date(&label);
                    }
                    sched.finish(i, true);
                    continue;
                }
                let key =
                    match self
                        .rebuilder
                        .key(action, &resolved.sources, &deps, &resolved.tools)
                    {
                        Ok(k) => k,
                        Err(why) => {
                            reporter.failed(&label, &why, b"");
                            summary.failed += 1;
                            self.skip_dependents(&mut sched, i, reporter, &mut summary);
                            continue;
                        }
                    };
                let digest = key.digest();
                keys[i] = Some(digest);
                let looked_up = match prefetched.get(&digest) {
                    Some(r) => Ok(Some(r.clone())),
                    None => self.rebuilder.lookup(&digest),
                };
                match looked_up {
                    Ok(Some(result)) => {
                        let mut restored = false;
                        let ready = if self.rebuilder.is_materialized(action, &result) {
                            true
                        } else {
                            restored = true;
                            match self.rebuilder.restore(action, &result) {
                                Ok(()) => true,
                                Err(e) => {
                                    reporter.warn(&format!("the cached result of `{label}` cannot be restored ({e}); running it again"));
                                    false
                                }
                            }
                        };
                        if ready {
                            if restored || last_keys.get(&label) != Some(&digest) {
                                // A restore, or a result other than the one history names last:
                                // record which result was used (`flow log` replays it). An
                                // action simply up to date writes nothing.
                                runs.push(run_row(
                                    label.clone(),
                                    digest,
                                    Outcome::Cached,
                                    0,
                                    Some(0),
                                    result.stdout,
                                    result.stderr,
                                ));
                            }
                            hits.push(digest);
                            outputs[i] = Some(staged(action, &result));
                            summary.cached += 1;
                            if restored || self.options.report_up_to_date {
                                reporter.cached(&label);
                            } else {
                                reporter.up_to_date(&label);
                            }
                            sched.finish(i, true);
                            continue;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => reporter.warn(&format!(
                        "cannot read the action cache ({e}); running `{label}`"
                    )),
                }
                // A miss: gather secrets, then run.
                let mut secrets = BTreeMap::new();
                let mut missing = Vec::new();
                for s in &action.secrets {
                    match std::env::var(s) {
                        Ok(v) => {
                            secrets.insert(s.clone(), v);
                        }
                        Err(_) => missing.push(format!("`{s}`")),
                    }
                }
                if !missing.is_empty() {
                    reporter.failed(
                        &label,
                        &format!(
                            "secret(s) {} not set in flow's environment",
                            missing.join(", ")
                        ),
                        b"",
                    );
                    summary.failed += 1;
                    runs.push(run_row(label, digest, Outcome::Failed, 0, None, None, None));
                    self.skip_dependents(&mut sched, i, reporter, &mut summary);
                    continue;
                }
                // A clean build would not have old outputs while this runs (or if it fails).
                crate::stale::clear_outputs(
                    &self.rebuilder.out_root,
                    &action.package,
                    &action.outs,
                );
                // The key's JSON is saved with the history, for `flow explain`.
                key_jsons.push((digest, key.to_json()));
                let spec = self
                    .rebuilder
                    .spec(action, &resolved.sources, &deps, secrets);
                reporter.started(&label);
                in_flight += 1;
                let executor = self.executor.clone();
                // The action's place in the queue for a slot is taken now, in priority order.
                let mut ticket = Some(slots.ticket().await);
                let slots = slots.clone();
                let rebuilder = self.rebuilder.clone();
                let plan = self.plan.clone();
                let tx = tx.clone();
                let (handle, cancel) = Cancel::new();
                cancels.insert(i, handle);
                let retries = action.retries;
                tokio::spawn(async move {
                    // The time its commands ran, retries included (not the wait for a slot).
                    let mut took = Duration::ZERO;
                    let mut attempts = 0;
                    let exec = loop {
                        attempts += 1;
                        let ticket = match ticket.take() {
                            Some(t) => t,
                            None => slots.ticket().await,
                        };
                        let r = executor.run(spec.clone(), cancel.clone(), ticket).await;
                        took += r.duration;
                        let retry = !r.status.success()
                            && attempts <= retries
                            && r.status != Status::Cancelled
                            && r.status != Status::NotStarted
                            && !cancel.is_cancelled();
                        if !retry {
                            break r;
                        }
                        executor.cleanup(&r);
                        if r.holds_slot {
                            slots.release();
                        }
                    };
                    let holds_slot = exec.holds_slot;
                    // The completion goes out before the sandbox is removed, so that
                    // dependents do not wait for the removal (the runtime waits for it on exit).
                    let sent = Arc::new(AtomicBool::new(false));
                    let (tx_done, sent_done) = (tx.clone(), sent.clone());
                    let joined = tokio::task::spawn_blocking(move || {
                        let done = finish_run(&rebuilder, &plan, i, &digest, &exec, attempts, took);
                        // A success stops nothing: its slot goes back at once.
                        let ran = matches!(done, Done::Ran { .. });
                        if ran && holds_slot {
                            slots.release();
                        }
                        let _ = tx_done.send(Completion {
                            node: i,
                            key: digest,
                            done,
                            holds_slot: holds_slot && !ran,
                        });
                        sent_done.store(true, Ordering::SeqCst);
                        executor.cleanup(&exec);
                    })
                    .await;
                    if let Err(e) = joined {
                        if !sent.load(Ordering::SeqCst) {
                            let done = Done::Failed {
                                why: format!(
                                    "internal error while storing results: {e} (this is a bug in flow)"
                                ),
                                log: Vec::new(),
                                stdout: None,
                                stderr: None,
                                exit: None,
                                timed_out: false,
                                took,
                            };
                            let _ = tx.send(Completion {
                                node: i,
                                key: digest,
                                done,
                                holds_slot,
                            });
                        }
                    }
                });
            }
            if sched.is_stopped() {
                // Actions prepared but still waiting for a slot do not start.
                slots.close();
            }
            if in_flight == 0 && (sched.is_finished() || sched.is_stopped()) {
                break;
            }
            if in_flight == 0 {
                continue;
            }
            reporter.flush();
            tokio::select! {
                Some(c) = rx.recv() => {
                    in_flight -= 1;
                    cancels.remove(&c.node);
                    let action = &plan.nodes[c.node];
                    let label = action.label.to_string();
                    match c.done {
                        Done::Ran { result, attempts, took, stray } => {
                            if !stray.is_empty() {
                                reporter.warn(&format!(
                                    "`{label}` wrote files outside its declared outputs (not kept): {}",
                                    stray.iter().take(5).map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                                ));
                            }
                            let outcome = if attempts > 1 {
                                summary.flaky += 1;
                                reporter.flaky(&label, attempts, took);
                                Outcome::Flaky
                            } else {
                                summary.ran += 1;
                                reporter.ran(&label, took);
                                Outcome::Ran
                            };
                            runs.push(run_row(label, c.key, outcome, took.as_millis() as u64, Some(0), result.stdout, result.stderr));
                            outputs[c.node] = Some(staged(action, &result));
                            sched.finish(c.node, true);
                        }
                        Done::Failed { why, log, stdout, stderr, exit, timed_out, took } => {
                            reporter.failed(&label, &why, &log);
                            summary.failed += 1;
                            let outcome = if timed_out { Outcome::TimedOut } else { Outcome::Failed };
                            runs.push(run_row(label, c.key, outcome, took.as_millis() as u64, exit, stdout, stderr));
                            self.skip_dependents(&mut sched, c.node, reporter, &mut summary);
                        }
                        Done::Cancelled => {
                            // Nothing recorded: the action is simply not done.
                            sched.finish(c.node, false);
                        }
                        Done::NotStarted => sched.unstart(c.node),
                    }
                    if c.holds_slot {
                        if sched.is_stopped() {
                            slots.close();
                        }
                        slots.release();
                    }
                }
                _ = interrupted(sigint), if !summary.interrupted => {
                    summary.interrupted = true;
                    sched.stop();
                    for h in cancels.values() {
                        h.cancel();
                    }
                }
                Some(Control::Supersede { affected }) = next_control(&mut control) => {
                    summary.superseded = true;
                    sched.stop();
                    for (&node, h) in &cancels {
                        if affected.contains(&plan.nodes[node].label.to_string()) {
                            h.cancel();
                        }
                    }
                }
            }
        }

        profile.mark("run: actions");
        summary.not_started = (0..n)
            .filter(|&i| !plan.nodes[i].is_group && sched.state(i) == NodeState::NotStarted)
            .count();
        // Batched writes: file states, history, LRU stamps. A no-op writes (almost) nothing.
        if let Err(e) = cache.save_file_states(&self.rebuilder.hasher.take_changed()) {
            reporter.warn(&format!("cannot save file states: {e}"));
        }
        profile.mark("run: save: file states");
        if let Err(e) = cache.save_keys(&key_jsons) {
            reporter.warn(&format!("cannot save action keys: {e}"));
        }
        profile.mark("run: save: keys");
        if let Some(id) = build_id {
            if let Err(e) = cache.record_runs(id, &runs) {
                reporter.warn(&format!("cannot record action history: {e}"));
            }
        }
        profile.mark("run: save: runs");
        if let Err(e) = cache.touch_actions(&hits) {
            reporter.warn(&format!("cannot update cache use times: {e}"));
        }
        profile.mark("run: save: use times");
        let took = started.elapsed();
        if let Some(id) = build_id {
            let outcome = if summary.interrupted {
                "interrupted"
            } else if summary.failed > 0 {
                "failed"
            } else {
                "ok"
            };
            let _ = cache.finish_build(
                id,
                &BuildSummary {
                    outcome: outcome.into(),
                    ran: summary.ran as u64,
                    cached: summary.cached as u64,
                    up_to_date: 0,
                    failed: summary.failed as u64,
                    skipped: summary.skipped as u64,
                    flaky: summary.flaky as u64,
                    duration_ms: took.as_millis() as u64,
                },
            );
        }
        reporter.summary(&summary, took);
        Finished {
            summary,
            staged: outputs,
            keys,
        }
    }

    /// After a failure: skip and list the dependents; without `-k`, start nothing new.
    fn skip_dependents(
        &self,
        sched: &mut Scheduler,
        i: usize,
        reporter: &mut Reporter,
        summary: &mut Summary,
    ) {
        if sched.state(i) == NodeState::Running {
            for s in sched.finish(i, false) {
                let a = &self.plan.nodes[s];
                if !a.is_group {
                    crate::stale::clear_outputs(&self.rebuilder.out_root, &a.package, &a.outs);
                    summary.skipped += 1;
                    reporter.skipped(&a.label.to_string(), "dependency failed");
                }
            }
        }
        if !self.options.keep_going {
            sched.stop();
        }
    }
}

/// The async runtime a build or a watch runs on, and the Ctrl-C stream, registered at once so
/// that Ctrl-C at any moment is handled by the runner (before the runner starts, it is noticed
/// as soon as the runner listens; nothing is recorded before then).
pub fn runtime_with_sigint(
    start: &std::path::Path,
) -> Result<(tokio::runtime::Runtime, Option<Signal>), crate::error::Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| crate::error::Error::Io {
            path: start.to_path_buf(),
            action: "start the async runtime in",
            error: e.to_string(),
        })?;
    let sigint = runtime
        .block_on(async { signal(SignalKind::interrupt()) })
        .ok();
    Ok((runtime, sigint))
}

/// A message from a watcher to a running build.
#[derive(Clone, Debug)]
pub enum Control {
    /// Files changed: stop starting work; cancel running actions whose labels are in
    /// `affected` (their inputs changed).
    Supersede { affected: BTreeSet<String> },
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

/// Resolves on SIGINT; never when there is no signal stream.
pub async fn interrupted(sigint: &mut Option<Signal>) {
    match sigint {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Removes the declared outputs of a `sandbox = False` action from the package directory (regular
/// files and real directories only: a symlink there is the user's, and stays).
fn remove_tree_outputs(root: &std::path::Path, package: &str, outs: &[String]) {
    for out in outs {
        let rel = out.trim_end_matches('/');
        if flow_cache::check_relative_path(rel).is_err() {
            continue;
        }
        let path = root.join(crate::expand::join_path(package, rel));
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() && out.ends_with('/') => {
                let _ = std::fs::remove_dir_all(&path);
            }
            Ok(m) if m.is_file() => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
}

/// In a blocking thread after the executor returns: store a success, or describe a failure.
fn finish_run(
    rebuilder: &Rebuilder,
    plan: &Plan,
    node: usize,
    key: &Digest,
    exec: &ExecResult,
    attempts: u32,
    took: Duration,
) -> Done {
    flow_cache::failpoint("after-run");
    let action = &plan.nodes[node];
    let mut log = exec.stdout.clone();
    log.extend_from_slice(&exec.stderr);
    let failed = |why: String, log: Vec<u8>, timed_out: bool| {
        if !action.sandbox {
            // Outputs of a failed run in the real tree are not kept: they would pass for
            // sources at the next analysis ("collides with a source file").
            remove_tree_outputs(&rebuilder.workspace_root, &action.package, &action.outs);
        }
        let (stdout, stderr) = rebuilder.store_logs(exec);
        let exit = match exec.status {
            Status::Exited(c) => Some(c),
            _ => None,
        };
        Done::Failed {
            why,
            log,
            stdout,
            stderr,
            exit,
            timed_out,
            took,
        }
    };
    match &exec.status {
        Status::Exited(0) => {}
        Status::Cancelled => return Done::Cancelled,
        Status::NotStarted => return Done::NotStarted,
        Status::Exited(code) => {
            return failed(
                format!("exit {code}, {:.2}s", took.as_secs_f64()),
                log,
                false,
            )
        }
        Status::Signaled(sig) => return failed(format!("killed by signal {sig}"), log, false),
        Status::TimedOut => {
            let limit = action.timeout.map_or(0.0, |t| t.as_secs_f64());
            return failed(
                format!("timed out after {limit:.1}s; its process group was killed"),
                log,
                true,
            );
        }
        Status::SpawnFailed(why) => return failed(format!("could not start: {why}"), log, false),
    }
    match rebuilder.store(action, key, exec) {
        Ok(result) => Done::Ran {
            result,
            attempts,
            took,
            stray: exec.stray_writes.clone(),
        },
        Err(StoreError::Outputs(problems)) => {
            let mut log = log;
            for p in &problems {
                log.extend_from_slice(format!("flow: {p}\n").as_bytes());
            }
            failed("declared outputs missing".into(), log, false)
        }
        Err(StoreError::Cache(e)) => failed(format!("cannot store its outputs: {e}"), log, false),
    }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
