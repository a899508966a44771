//! The spawn-and-retry worker: one tokio task per action that runs, handing the command to the
//! executor (again, up to `retries` times, while it fails), then storing a success or
//! describing a failure in a blocking thread, and reporting back to the owner loop.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flow_cache::{ActionResult, Digest};
use tokio::sync::mpsc;

use crate::action_key::ActionKey;
use crate::executor::{ActionSpec, Cancel, ExecResult, Executor, Input, Slots, Status, Ticket};
use crate::plan::Plan;
use crate::rebuilder::{Rebuilder, StoreError};

/// How an executed action ended, as the worker reports it.
pub(super) enum Done {
    Ran {
        result: ActionResult,
        attempts: u32,
        took: Duration,
        stray: Vec<String>,
        /// Set when sources were saved between the build's hashing and the action's staging:
        /// the result is stored under the key of what the action saw.
        rekeyed: Option<Rekeyed>,
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
    /// An effect ended (`runner::effect_job`).
    Effect(crate::delivery::effects::EffectDone),
    /// Staged, but its command never ran: the build stopped, or it was cancelled, while it
    /// waited for a job slot.
    NotStarted,
}

impl Done {
    /// A failure that is flow's own fault.
    fn internal(why: String, took: Duration) -> Done {
        Done::Failed {
            why,
            log: Vec::new(),
            stdout: None,
            stderr: None,
            exit: None,
            timed_out: false,
            took,
        }
    }
}

/// The key a run's result is stored under when it differs from the one it was started with.
pub(super) struct Rekeyed {
    /// The sources staged with other bytes than the build hashed.
    pub sources: Vec<String>,
    /// The key's JSON, for the history (`flow explain`).
    pub json: Vec<u8>,
}

pub(super) struct Completion {
    pub node: usize,
    /// The key its result is stored under (the key it started with, unless re-keyed).
    pub key: Digest,
    pub done: Done,
    /// The action's job slot is still taken: the owner gives it back once it has acted on
    /// `done` (after a failure, only after closing the slots). See `Slots`.
    pub holds_slot: bool,
}

/// One action handed to a worker.
pub(super) struct Job<E: Executor> {
    pub node: usize,
    pub key: ActionKey,
    pub spec: ActionSpec,
    pub retries: u32,
    /// Its place in the queue for a job slot, taken in priority order.
    pub ticket: Ticket,
    pub cancel: Cancel,
    pub executor: Arc<E>,
    pub rebuilder: Arc<Rebuilder>,
    pub plan: Arc<Plan>,
    pub slots: Slots,
    pub done: mpsc::UnboundedSender<Completion>,
    /// The services it needs are started (and ready) before its command runs.
    pub services: Arc<super::services::ServicePool>,
}

impl<E: Executor> Job<E> {
    /// Runs the job to its completion message.
    pub async fn run(self) {
        let Job {
            node,
            key,
            spec,
            retries,
            ticket,
            cancel,
            executor,
            rebuilder,
            plan,
            slots,
            done: tx,
            services,
        } = self;
        for need in &plan.nodes[node].services {
            if let Err(why) = services.ensure(need.node).await {
                let _ = tx.send(Completion {
                    node,
                    key: key.digest(),
                    done: Done::internal(why, Duration::ZERO),
                    holds_slot: false,
                });
                return;
            }
        }
        // The time its commands ran, retries included (not the wait for a slot).
        let mut took = Duration::ZERO;
        let mut attempts = 0;
        let mut ticket = Some(ticket);
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
        // The completion goes out before the sandbox is removed, so that dependents do not
        // wait for the removal (the runtime waits for it on exit).
        let sent = Arc::new(AtomicBool::new(false));
        let (tx_done, sent_done) = (tx.clone(), sent.clone());
        let started_as = key.digest();
        let joined = tokio::task::spawn_blocking(move || {
            let run = Run {
                key: &key,
                exec: &exec,
                inputs: &spec.inputs,
                attempts,
                took,
            };
            let (key, done) = finish_run(&rebuilder, &plan, node, run);
            // A success stops nothing: its slot goes back at once.
            let ran = matches!(done, Done::Ran { .. });
            if ran && holds_slot {
                slots.release();
            }
            let _ = tx_done.send(Completion {
                node,
                key,
                done,
                holds_slot: holds_slot && !ran,
            });
            sent_done.store(true, Ordering::SeqCst);
            executor.cleanup(&exec);
        })
        .await;
        if let Err(e) = joined {
            if !sent.load(Ordering::SeqCst) {
                let why =
                    format!("internal error while storing results: {e} (this is a bug in flow)");
                let _ = tx.send(Completion {
                    node,
                    key: started_as,
                    done: Done::internal(why, took),
                    holds_slot,
                });
            }
        }
    }
}

/// Removes the declared outputs of a `sandbox = False` action from the package directory
/// (regular files and real directories only: a symlink there is the user's, and stays).
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

/// What one job's run left, for [`finish_run`].
struct Run<'a> {
    key: &'a ActionKey,
    exec: &'a ExecResult,
    inputs: &'a [Input],
    attempts: u32,
    took: Duration,
}

/// In a blocking thread after the executor returns: store a success, or describe a failure;
/// with the digest of the key the outcome belongs to (see [`ActionKey::as_seen`]).
fn finish_run(rebuilder: &Rebuilder, plan: &Plan, node: usize, run: Run) -> (Digest, Done) {
    flow_cache::failpoint("after-run");
    let Run {
        key,
        exec,
        inputs,
        attempts,
        took,
    } = run;
    let action = &plan.nodes[node];
    let mut log = exec.stdout.clone();
    log.extend_from_slice(&exec.stderr);
    let failed = |why: String, mut log: Vec<u8>, timed_out: bool| {
        // The outputs it produced are kept under flow-out/, marked (`failed.rs`); a
        // `sandbox = false` action's are moved there out of the real tree, and what could not
        // be moved is removed: left there, it would pass for a source at the next analysis
        // ("collides with a source file").
        // Without the run's duration: the same failure leaves the same bytes.
        let end = match exec.status {
            Status::Exited(code) if code != 0 => format!("exit {code}"),
            _ => why.clone(),
        };
        let note = format!("from a failed run of {}: {end}\n", action.label);
        let kept = crate::failed::keep(&rebuilder.out_root, &exec.exec_root, action, &note);
        log.extend_from_slice(kept.log_lines(&action.package).as_bytes());
        if !action.sandbox {
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
    let started = key.digest();
    match &exec.status {
        Status::Exited(0) => {}
        Status::Cancelled => return (started, Done::Cancelled),
        Status::NotStarted => return (started, Done::NotStarted),
        // A gate says which checks failed (its log's head line), not an exit code.
        Status::Exited(code) if action.kind == crate::plan::ActionKind::Gate => {
            let head = String::from_utf8_lossy(&exec.stdout);
            let counts = head
                .lines()
                .next()
                .and_then(|l| l.split_once(": "))
                .map(|(_, c)| c.to_owned())
                .unwrap_or_default();
            let why = match code {
                1 => format!("gate failed: {counts}"),
                _ => format!("gate error: a check had nothing to read ({counts})"),
            };
            return (started, failed(why, log, false));
        }
        Status::Exited(code) => {
            let why = format!("exit {code}, {:.2}s", took.as_secs_f64());
            return (started, failed(why, log, false));
        }
        Status::Signaled(sig) => {
            return (
                started,
                failed(format!("killed by signal {sig}"), log, false),
            )
        }
        Status::TimedOut => {
            let limit = action.timeout.map_or(0.0, |t| t.as_secs_f64());
            let why = format!("timed out after {limit:.1}s; its process group was killed");
            return (started, failed(why, log, true));
        }
        Status::SpawnFailed(why) => {
            return (
                started,
                failed(format!("could not start: {why}"), log, false),
            )
        }
    }
    // The key must describe the bytes the action saw, not the ones the build hashed before.
    let mut seen = exec.seen_inputs.clone();
    for tree in rebuilder.dir_inputs_changed(inputs) {
        seen.insert(tree, None);
    }
    let (key, rekeyed) = match seen_key(key, &seen) {
        Ok(seen) => seen,
        Err(why) => {
            let why = format!("{why}; nothing was stored, run the build again");
            return (started, failed(why, log, false));
        }
    };
    let done = match rebuilder.store(action, &key, exec) {
        Ok(result) => Done::Ran {
            result,
            attempts,
            took,
            stray: exec.stray_writes.clone(),
            rekeyed,
        },
        Err(StoreError::Outputs(problems)) => {
            let mut log = log;
            for p in &problems {
                log.extend_from_slice(format!("flow: {p}\n").as_bytes());
            }
            let why = if problems
                .iter()
                .any(|p| p.contains("into its directory input"))
            {
                "wrote into a directory input"
            } else {
                "declared outputs missing"
            };
            failed(why.into(), log, false)
        }
        Err(StoreError::Cache(e)) => failed(format!("cannot store its outputs: {e}"), log, false),
    };
    (key, done)
}

/// The key of what the action saw (`seen`: inputs staged with other bytes than `key` says, as
/// `ExecResult::seen_inputs`), and how it differs from `key`.
fn seen_key(
    key: &ActionKey,
    seen: &BTreeMap<String, Option<Digest>>,
) -> Result<(Digest, Option<Rekeyed>), String> {
    if seen.is_empty() {
        return Ok((key.digest(), None));
    }
    let as_seen = key.as_seen(seen)?;
    let rekeyed = Rekeyed {
        sources: seen.keys().cloned().collect(),
        json: as_seen.to_json(),
    };
    let seen = as_seen;
    Ok((seen.digest(), Some(rekeyed)))
}
