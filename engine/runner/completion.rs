//! Completion: the owner loop's step 2. A worker's report is printed, recorded in the history
//! batch and given to the scheduler, which releases the node's dependents or skips them.

use flow_cache::Outcome;

use crate::executor::Executor;
use crate::rebuilder::staged;
use crate::reporter::Reporter;
use crate::scheduler::NodeState;

use super::history::RunRow;
use super::worker::{Completion, Done};
use super::Drive;

impl<E: Executor> Drive<'_, E> {
    pub(super) fn complete(&mut self, c: Completion, reporter: &mut Reporter) {
        self.in_flight -= 1;
        self.settle_services(c.node);
        self.cancels.remove(&c.node);
        self.tails.remove(&c.node);
        let action = &self.runner.plan.nodes[c.node];
        let label = action.label.to_string();
        reporter.settled(&label);
        match c.done {
            Done::Ran {
                result,
                attempts,
                took,
                stray,
                rekeyed,
            } => {
                if let Some(r) = rekeyed {
                    let shown: Vec<String> =
                        r.sources.iter().take(5).map(|s| format!("`{s}`")).collect();
                    reporter.warn(&format!(
                        "{} changed while the build ran; `{label}` ran on the new content, and \
                         its result is kept under that content's key",
                        shown.join(", ")
                    ));
                    self.history.key_json(c.key, r.json);
                    self.keys[c.node] = Some(c.key);
                }
                if !stray.is_empty() {
                    let shown: Vec<String> =
                        stray.iter().take(5).map(|s| format!("`{s}`")).collect();
                    reporter.warn(&format!(
                        "`{label}` wrote files outside its declared outputs (not kept): {}",
                        shown.join(", ")
                    ));
                }
                let outcome = if attempts > 1 {
                    self.summary.flaky += 1;
                    reporter.flaky(&label, attempts, took);
                    Outcome::Flaky
                } else {
                    self.summary.ran += 1;
                    reporter.ran(&label, took);
                    Outcome::Ran
                };
                let row = RunRow {
                    outcome,
                    took,
                    exit: Some(0),
                    stdout: result.stdout,
                    stderr: result.stderr,
                };
                self.history.run(label, c.key, row);
                self.outputs[c.node] = Some(staged(action, &result));
                self.sched.finish(c.node, true);
            }
            Done::Failed {
                why,
                log,
                stdout,
                stderr,
                exit,
                timed_out,
                took,
            } => {
                // Quarantined (`[test] quarantine`): a warning that fails no build; the history
                // still records the failure, and its dependents, which lack its outputs, skip.
                let quarantined = self
                    .runner
                    .options
                    .quarantine
                    .iter()
                    .any(|p| p.matches(&action.label, false));
                if quarantined {
                    reporter.quarantined(&label, &why, &log);
                    self.summary.quarantined += 1;
                } else {
                    reporter.failed(&label, &why, &log);
                    self.summary.failed += 1;
                }
                self.failures[c.node] = Some(why);
                let outcome = if timed_out {
                    Outcome::TimedOut
                } else {
                    Outcome::Failed
                };
                let row = RunRow {
                    outcome,
                    took,
                    exit,
                    stdout,
                    stderr,
                };
                self.history.run(label, c.key, row);
                // A quarantined failure does not stop the build, even without `-k`.
                match quarantined {
                    true => self.skip_dependents_of(c.node, reporter),
                    false => self.skip_dependents(c.node, reporter),
                }
            }
            Done::Effect(done) => {
                self.report_effect(&label, &done, reporter);
                // What its commands printed (masked by the executor), for `flow log`.
                let cas = self.runner.rebuilder.cache.cas();
                let log = (!done.log.is_empty())
                    .then(|| cas.put_bytes(&done.log).ok())
                    .flatten();
                let row = RunRow {
                    outcome: if done.ok {
                        Outcome::Ran
                    } else {
                        Outcome::Failed
                    },
                    took: done.took,
                    exit: None,
                    stdout: log,
                    stderr: None,
                };
                // A `[LIVE]` deploy ran nothing: `flow log` keeps showing the run that did.
                if done.ran {
                    self.history.run(label, c.key, row);
                }
                if done.ok {
                    self.outputs[c.node] = Some(Vec::new());
                    self.sched.finish(c.node, true);
                } else {
                    self.failures[c.node] = Some(done.line);
                    self.skip_dependents(c.node, reporter);
                }
            }
            Done::Cancelled => {
                // Nothing recorded: the action is simply not done.
                self.sched.finish(c.node, false);
            }
            Done::NotStarted => self.sched.unstart(c.node),
        }
        if c.holds_slot {
            if self.sched.is_stopped() {
                self.slots.close();
            }
            self.slots.release();
        }
    }

    /// Node `i` settled: the services it needs may stop (`services.rs`).
    pub(super) fn settle_services(&self, i: usize) {
        self.services.settle(i);
    }

    /// After a failure: skip and list the dependents; without `-k`, start nothing new.
    pub(super) fn skip_dependents(&mut self, i: usize, reporter: &mut Reporter) {
        self.skip_dependents_of(i, reporter);
        if !self.runner.options.keep_going {
            self.sched.stop();
        }
    }

    /// Skips and lists the dependents of the failed node `i`.
    pub(super) fn skip_dependents_of(&mut self, i: usize, reporter: &mut Reporter) {
        let plan = &self.runner.plan;
        if self.sched.state(i) == NodeState::Running {
            for s in self.sched.finish(i, false) {
                self.settle_services(s);
                let a = &plan.nodes[s];
                if a.kind.runs() {
                    let out_root = &self.runner.rebuilder.out_root;
                    crate::stale::clear_outputs(out_root, &a.package, &a.outs);
                    self.summary.skipped += 1;
                    reporter.skipped(&a.label.to_string(), "dependency failed");
                }
            }
        }
    }
}
