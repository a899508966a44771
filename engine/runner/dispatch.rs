//! Dispatch: the owner loop's step 1. For each ready node, do what the rebuilder's reuse
//! decision says: forward a group's inputs, report a carried or cached task and finish it,
//! or gather the task's secrets and hand it to a worker.

use crate::executor::{Cancel, Executor};
use crate::plan::Action;
use crate::rebuilder::{staged, Apply, Carried, Decision, KeyInputs, StagedOutput};
use crate::reporter::Reporter;
use crate::scheduler::NodeState;

use super::history::RunRow;
use super::worker::Job;
use super::Drive;

impl<E: Executor> Drive<'_, E> {
    /// Starts ready nodes while fewer than the in-flight limit are running.
    pub(super) async fn dispatch_ready(&mut self, reporter: &mut Reporter) {
        while self.in_flight < self.in_flight_limit {
            // A run of hits never waits: a stopping signal is looked for between them.
            if self.signalled.load(std::sync::atomic::Ordering::SeqCst) {
                if !self.summary.interrupted {
                    self.interrupt();
                }
                break;
            }
            // Before each: a node dispatched as a hit may have made many ready at once. Restores
            // are looked ahead for once one was needed: in a build that restores nothing, the
            // look-ahead would only check again what each decision checks (a build of 2,000
            // carried actions after an edit took 6 ms longer).
            let remote = self.runner.rebuilder.remote.is_some();
            let ahead = self.restoring && !self.prefetched.is_empty();
            if remote || ahead {
                let fresh = self.newly_ready();
                if remote {
                    self.prefetch_remote(&fresh);
                }
                if ahead {
                    self.restore_ahead(&fresh);
                }
            }
            let Some(i) = self.sched.pop_ready() else {
                break;
            };
            self.dispatch(i, reporter).await;
        }
    }

    /// The outputs of node `i`'s direct dependencies, all done.
    fn deps_of(&self, i: usize) -> Vec<StagedOutput> {
        self.runner.plan.nodes[i]
            .deps
            .iter()
            .flat_map(|&d| self.outputs[d].clone().unwrap_or_default())
            .collect()
    }

    /// The nodes made ready since the last look ahead and still ready, when two or more (one
    /// is as well served by its own decision: it waits for the next ones).
    fn newly_ready(&mut self) -> Vec<usize> {
        self.fresh.extend(self.sched.take_fresh());
        let sched = &self.sched;
        self.fresh.retain(|&i| sched.state(i) == NodeState::Ready);
        match self.fresh.len() {
            0 | 1 => Vec::new(),
            _ => std::mem::take(&mut self.fresh),
        }
    }

    /// Restores at once, on every core, the cached outputs of the ready nodes whose decision
    /// would restore them one after the other (`Rebuilder::restore_ahead`).
    fn restore_ahead(&self, ready: &[usize]) {
        let signalled = self.signalled.clone();
        self.with_inputs(ready, |rebuilder, nodes, carried| {
            rebuilder.restore_ahead(nodes, carried, &signalled)
        });
    }

    /// With a remote cache: asks it at once for every ready node whose decision would ask it
    /// (`Rebuilder::prefetch_remote`), rather than one after the other as each is dispatched.
    fn prefetch_remote(&self, ready: &[usize]) {
        self.with_inputs(ready, |rebuilder, nodes, carried| {
            rebuilder.prefetch_remote(nodes, carried)
        });
    }

    /// Calls `f` with each of `ready` that is not carried over (both look-aheads skip those,
    /// and most nodes of a build after an edit are: their inputs are not gathered), its action
    /// and what its key is computed from; not at all for fewer than two.
    fn with_inputs(
        &self,
        ready: &[usize],
        f: impl FnOnce(&crate::rebuilder::Rebuilder, &[(usize, &Action, KeyInputs)], &Carried),
    ) {
        let carried = &self.resolved.carried;
        let ready: Vec<usize> = ready
            .iter()
            .copied()
            .filter(|&i| carried.get(i).is_none())
            .collect();
        if ready.len() < 2 {
            return;
        }
        let runner = self.runner;
        let deps: Vec<Vec<StagedOutput>> = ready.iter().map(|&i| self.deps_of(i)).collect();
        let nodes: Vec<_> = ready
            .iter()
            .zip(&deps)
            .map(|(&i, deps)| {
                let inputs = KeyInputs {
                    sources: &self.resolved.sources,
                    deps,
                    tools: &self.resolved.tools,
                    prefetched: &self.prefetched,
                };
                (i, &runner.plan.nodes[i], inputs)
            })
            .collect();
        f(&runner.rebuilder, &nodes, &self.resolved.carried);
    }

    async fn dispatch(&mut self, i: usize, reporter: &mut Reporter) {
        let runner = self.runner;
        let action = &runner.plan.nodes[i];
        let deps = self.deps_of(i);
        if !action.kind.runs() {
            // A service forwards nothing: it is started for its dependents (`services.rs`).
            let forwarded = if action.kind == crate::plan::ActionKind::Service {
                Vec::new()
            } else {
                deps
            };
            self.outputs[i] = Some(forwarded);
            self.sched.finish(i, true);
            return;
        }
        if action.kind == crate::plan::ActionKind::Notify {
            // Told the outcome at the end (`Drive::notify`), whatever happens meanwhile.
            self.notifications.push(i);
            self.sched.finish(i, true);
            return;
        }
        let label = action.label.to_string();
        let inputs = KeyInputs {
            sources: &self.resolved.sources,
            deps: &deps,
            tools: &self.resolved.tools,
            prefetched: &self.prefetched,
        };
        let decision =
            runner
                .rebuilder
                .decide(i, action, &self.resolved.carried, &inputs, Apply::Restore);
        let report_all = runner.options.report_up_to_date;
        match decision {
            Decision::Carried(last) => {
                self.settle_services(i);
                self.history.carried(last.key, self.resolved.touch_carried);
                self.outputs[i] = Some(last.staged);
                self.keys[i] = Some(last.key);
                self.summary.cached += 1;
                reporter.decided(&label, "carried", Some(&last.key));
                if report_all {
                    reporter.cached(&label);
                } else {
                    reporter.up_to_date(&label);
                }
                self.sched.finish(i, true);
            }
            Decision::Cached {
                key,
                result,
                restored,
            } => {
                self.settle_services(i);
                let row = RunRow::cached(result.stdout, result.stderr);
                self.history.reused(&label, key, restored, row);
                self.outputs[i] = Some(staged(action, &result));
                self.keys[i] = Some(key);
                self.summary.cached += 1;
                self.restoring |= restored;
                reporter.decided(
                    &label,
                    if restored { "restored" } else { "cached" },
                    Some(&key),
                );
                if restored || report_all {
                    reporter.cached(&label);
                } else {
                    reporter.up_to_date(&label);
                }
                self.sched.finish(i, true);
            }
            Decision::Unkeyable(why) => {
                reporter.decided(&label, "failed", None);
                reporter.failed(&label, &why, b"");
                self.failures[i] = Some(why);
                self.summary.failed += 1;
                self.skip_dependents(i, reporter);
            }
            Decision::StillFailing(why) => {
                reporter.decided(&label, "failed", None);
                let shown = format!("{why}; unchanged since it failed, not run again");
                reporter.failed(&label, &shown, b"");
                self.failures[i] = Some(why);
                self.summary.failed += 1;
                // An old failure stops nothing: the work the change reaches goes on.
                self.skip_dependents_of(i, reporter);
            }
            Decision::Run { key, warning } => {
                if let Some(w) = warning {
                    reporter.warn(&w);
                }
                self.start(i, *key, deps, reporter).await;
            }
        }
    }

    /// Hands node `i` to a worker, after gathering its secrets (a missing one fails it).
    async fn start(
        &mut self,
        i: usize,
        key: crate::action_key::ActionKey,
        deps: Vec<StagedOutput>,
        reporter: &mut Reporter,
    ) {
        let runner = self.runner;
        let action = &runner.plan.nodes[i];
        let label = action.label.to_string();
        let digest = key.digest();
        self.keys[i] = Some(digest);
        let secrets = match action.secrets_from_env() {
            Ok(secrets) => secrets,
            Err(why) => {
                reporter.decided(&label, "failed", Some(&digest));
                reporter.failed(&label, &why, b"");
                self.summary.failed += 1;
                self.failures[i] = Some(why);
                let row = RunRow {
                    outcome: flow_cache::Outcome::Failed,
                    took: std::time::Duration::ZERO,
                    exit: None,
                    stdout: None,
                    stderr: None,
                };
                self.history.run(label, digest, row);
                self.skip_dependents(i, reporter);
                return;
            }
        };
        // A clean build would not have old outputs while this runs (or if it fails).
        crate::stale::clear_outputs(&runner.rebuilder.out_root, &action.package, &action.outs);
        // The key's JSON is saved with the history, for `flow explain`.
        self.history.key_json(digest, key.to_json());
        let mut spec = runner
            .rebuilder
            .spec(action, &self.resolved.sources, &deps, secrets);
        spec.live = reporter.live_tail();
        if let Some(tail) = &spec.live {
            self.tails.insert(i, tail.clone());
        }
        reporter.decided(&label, "ran", Some(&digest));
        reporter.waiting(&label);
        self.in_flight += 1;
        let (handle, cancel) = Cancel::new();
        self.cancels.insert(i, handle);
        if action.kind.is_effect() {
            // An effect runs one command at a time, after its slot: it is reported running
            // once it has it, as a task is.
            let started = self.started.clone();
            let ticket = self.slots.ticket().await.on_enter(move || {
                let _ = started.send(i);
            });
            self.start_effect(i, &key, spec, &deps, cancel, ticket);
            return;
        }
        let job = Job {
            node: i,
            key,
            spec,
            retries: action.retries,
            // The action's place in the queue for a slot is taken now, in priority order; it
            // is reported running once it has its slot.
            ticket: {
                let started = self.started.clone();
                self.slots.ticket().await.on_enter(move || {
                    let _ = started.send(i);
                })
            },
            cancel,
            executor: runner.executor.clone(),
            rebuilder: runner.rebuilder.clone(),
            plan: runner.plan.clone(),
            slots: self.slots.clone(),
            done: self.done.clone(),
            services: self.services.clone(),
        };
        tokio::spawn(job.run());
    }
}
