//! Notifications in the owner loop. A `notify` node is taken out of the dependency order (the
//! scheduler sees it without dependencies, and the loop sets it aside at once), so that a
//! failure upstream never skips it; once every other node settled, each one whose `on` events
//! happened runs with `FLOW_EVENT` naming a JSON file that describes the build:
//!
//! ```json
//! {"outcome": "failure", "events": ["failure", "deploy"], "failed": ["//app:test"],
//!  "ran": 3, "cached": 10, "ledger": [...entries recorded by this build...],
//!  "commit": "…", "branch": "main", "user": "ci"}
//! ```
//!
//! It runs like a task (sandboxed, its secrets masked in every log), and is never cached.

use flow_rules::Delivery;

use super::Drive;
use crate::delivery::effects::{status_failure, Effects};
use crate::executor::{Cancel, Executor, Slots};
use crate::plan::{ActionKind, Plan};
use crate::rebuilder::StagedOutput;
use crate::reporter::Reporter;
use crate::scheduler::Scheduler;

/// The scheduler of `plan`, with notifications free of their dependencies (see the module doc).
pub(super) fn scheduler(plan: &Plan, costs: &[u64]) -> Scheduler {
    let is_notify = |i: usize| plan.nodes[i].kind == ActionKind::Notify;
    let deps: Vec<Vec<usize>> = (0..plan.nodes.len())
        .map(|i| match is_notify(i) {
            true => Vec::new(),
            false => plan.nodes[i].deps.clone(),
        })
        .collect();
    let dependents = plan
        .all_dependents()
        .into_iter()
        .map(|list| list.into_iter().filter(|&d| !is_notify(d)).collect())
        .collect();
    Scheduler::with_dependents(&deps, dependents, costs)
}

impl<E: Executor> Drive<'_, E> {
    /// Runs the notifications set aside, now that the outcome is known.
    pub(super) async fn notify(&mut self, reporter: &mut Reporter) {
        for i in std::mem::take(&mut self.notifications) {
            let label = self.runner.plan.nodes[i].label.to_string();
            if self.runner.effects.is_none() {
                let why = super::effect_job::NO_EFFECTS_HERE.to_owned();
                self.summary.failed += 1;
                self.failures[i] = Some(why.clone());
                reporter.failed(&label, &why, b"");
                continue;
            }
            match self.notify_one(i).await {
                Ok(Some(line)) => {
                    self.summary.ran += 1;
                    reporter.effect(&label, &line);
                }
                Ok(None) => reporter.effect(
                    &label,
                    &format!("[QUIET] {label} (none of its events happened)"),
                ),
                Err((why, log)) => {
                    self.summary.failed += 1;
                    self.failures[i] = Some(why.clone());
                    reporter.failed(&label, &why, &log);
                }
            }
        }
    }

    /// `Ok(None)`: none of its events happened; `Ok(Some(line))`: it ran; `Err`: it failed.
    async fn notify_one(&mut self, i: usize) -> Result<Option<String>, (String, Vec<u8>)> {
        let runner = self.runner;
        let action = &runner.plan.nodes[i];
        let Some(Delivery::Notify { on }) = &action.delivery else {
            return Ok(None);
        };
        let happened = runner
            .effects
            .as_ref()
            .map(|e| e.happened.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default();
        let failed = self.summary.failed > 0 || self.summary.skipped > 0;
        let events: Vec<&str> = [
            ("failure", failed),
            ("success", !failed),
            ("deploy", happened.deployed()),
            ("rollback", happened.rolled_back()),
        ]
        .into_iter()
        .filter(|(_, yes)| *yes)
        .map(|(e, _)| e)
        .collect();
        let told: Vec<&str> = events
            .iter()
            .copied()
            .filter(|e| on.iter().any(|o| o == e))
            .collect();
        if told.is_empty() {
            return Ok(None);
        }
        let secrets = action.secrets_from_env().map_err(|why| (why, Vec::new()))?;
        let event = self.event_json(&events, &happened.entries, runner.effects.as_deref());
        let dir = runner.rebuilder.cache.dir().join("tmp");
        let file = dir.join(format!("event-{}.json", crate::delivery::ledger::new_id()));
        std::fs::write(&file, event).map_err(|e| {
            let why = format!("cannot write its event file `{}`: {e}", file.display());
            (why, Vec::new())
        })?;
        let deps: Vec<StagedOutput> = action
            .deps
            .iter()
            .flat_map(|&d| self.outputs[d].clone().unwrap_or_default())
            .collect();
        let mut spec = runner
            .rebuilder
            .spec(action, &self.resolved.sources, &deps, secrets);
        spec.env
            .insert("FLOW_EVENT".into(), file.display().to_string());
        spec.env.insert(
            "FLOW_WORKSPACE".into(),
            runner.rebuilder.workspace_root.display().to_string(),
        );
        let ticket = Slots::new(1).ticket().await;
        let r = runner.executor.run(spec, Cancel::never(), ticket).await;
        let mut log = r.stdout.clone();
        log.extend_from_slice(&r.stderr);
        let failed = status_failure(&r, action.timeout);
        // Its logs (masked by the executor) for `flow log`, under its key as a task's.
        let (stdout, stderr) = runner.rebuilder.store_logs(&r);
        let key = runner
            .rebuilder
            .key(action, &self.resolved.sources, &deps, &self.resolved.tools)
            .map_or_else(
                |_| flow_cache::Digest::of(action.label.to_string().as_bytes()),
                |k| k.digest(),
            );
        let row = super::history::RunRow {
            outcome: match failed {
                None => flow_cache::Outcome::Ran,
                Some(_) => flow_cache::Outcome::Failed,
            },
            took: r.duration,
            exit: match r.status {
                crate::executor::Status::Exited(c) => Some(c),
                _ => None,
            },
            stdout,
            stderr,
        };
        self.history.run(action.label.to_string(), key, row);
        runner.executor.cleanup(&r);
        let _ = std::fs::remove_file(&file);
        match failed {
            Some(why) => Err((why, log)),
            None => Ok(Some(format!(
                "[NOTIFIED] {} ({})",
                action.label,
                told.join(", ")
            ))),
        }
    }

    fn event_json(
        &self,
        events: &[&str],
        entries: &[crate::delivery::ledger::Entry],
        effects: Option<&Effects>,
    ) -> String {
        let plan = &self.runner.plan;
        let failed: Vec<String> = (0..plan.nodes.len())
            .filter(|&i| self.failures[i].is_some())
            .map(|i| plan.nodes[i].label.to_string())
            .collect();
        let git = effects.and_then(|e| e.git.as_ref());
        serde_json::json!({
            "outcome": if events.contains(&"failure") { "failure" } else { "success" },
            "events": events,
            "failed": failed,
            "ran": self.summary.ran,
            "cached": self.summary.cached,
            "skipped": self.summary.skipped,
            "ledger": entries,
            "commit": git.map(|g| g.commit.clone()),
            "branch": git.and_then(|g| g.branch.clone()),
            "user": effects.map(|e| e.user.clone()),
        })
        .to_string()
    }
}
