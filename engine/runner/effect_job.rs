//! Effects in the owner loop: a deploy or a monitor whose dependencies all succeeded is handed
//! to `delivery::effects` in a task of its own, as a task goes to a worker; notifications are
//! held until every other node settled and run at the end (`Drive::notify`). The outcome comes
//! back as [`Done::Effect`]; nothing of it reaches the action cache.

use flow_rules::Delivery;

use super::worker::{Completion, Done};
use super::Drive;
use crate::action_key::ActionKey;
use crate::delivery::effects::{artifact_dest, artifact_of, EffectDone, EffectRun};
use crate::delivery::ledger::EntryKind;
use crate::executor::{ActionSpec, Cancel, Executor};
use crate::plan::ActionKind;
use crate::rebuilder::StagedOutput;
use crate::reporter::Reporter;

/// Why an effect fails where effects cannot run (`flow watch`: `Runner::effects` is `None`).
pub(super) const NO_EFFECTS_HERE: &str =
    "`flow watch` runs no deploy, monitor or notification: run `flow build LABEL` to deliver";

impl<E: Executor> Drive<'_, E> {
    /// Starts effect `i` (a deploy or a monitor) with `spec`; `deps` are its inputs' outputs.
    pub(super) fn start_effect(
        &mut self,
        i: usize,
        key: &ActionKey,
        spec: ActionSpec,
        deps: &[StagedOutput],
        cancel: Cancel,
        ticket: crate::executor::Ticket,
    ) {
        let runner = self.runner;
        let plan = runner.plan.clone();
        let action = &plan.nodes[i];
        let digest = key.digest();
        let done = self.done.clone();
        let executor = runner.executor.clone();
        let Some(effects) = runner.effects.clone() else {
            let why = NO_EFFECTS_HERE.to_owned();
            let _ = done.send(Completion {
                node: i,
                key: digest,
                done: Done::Effect(EffectDone::failed_to_start(why)),
                holds_slot: false,
            });
            return;
        };
        let monitored = match &action.delivery {
            Some(Delivery::Monitor { target, .. }) => plan.index.get(target).map(|&d| {
                let deploy = &plan.nodes[d];
                let deploy_deps: Vec<StagedOutput> = deploy
                    .deps
                    .iter()
                    .flat_map(|&x| self.outputs[x].clone().unwrap_or_default())
                    .collect();
                let spec = runner.rebuilder.spec(
                    deploy,
                    &self.resolved.sources,
                    &deploy_deps,
                    // Set: the deploy ran with them in this build.
                    deploy.secrets_from_env().unwrap_or_default(),
                );
                (d, spec, artifact_dest(&plan, d).unwrap_or_default())
            }),
            _ => None,
        };
        let dest = artifact_dest(&plan, i).unwrap_or_default();
        let artifact = artifact_of(action, deps, &dest);
        let services = self.services.clone();
        let task = async move {
            let action = &plan.nodes[i];
            // The services it needs (a deploy's integration check against a fake), as a task's.
            for need in &action.services {
                if let Err(why) = services.ensure(need.node).await {
                    let _ = done.send(Completion {
                        node: i,
                        key: digest,
                        done: Done::Effect(EffectDone::failed_to_start(why)),
                        holds_slot: false,
                    });
                    return;
                }
            }
            let run = EffectRun {
                effects: &effects,
                executor: &*executor,
                action,
                spec,
                cancel,
                artifact_dest: match action.kind {
                    ActionKind::Deploy => dest,
                    _ => String::new(),
                },
                ticket: std::sync::Mutex::new(Some(ticket)),
                restored: None,
            };
            let outcome = match (action.kind, artifact, monitored) {
                (ActionKind::Deploy, Some(artifact), _) => {
                    run.deploy(artifact, EntryKind::Deploy).await
                }
                (ActionKind::Monitor, _, Some((d, deploy_spec, deploy_dest))) => {
                    run.monitor(&plan.nodes[d], deploy_spec, deploy_dest).await
                }
                _ => EffectDone::failed_to_start(format!(
                    "`{}`: its artifact or its deploy is not in this build",
                    action.label
                )),
            };
            let _ = done.send(Completion {
                node: i,
                key: digest,
                done: Done::Effect(outcome),
                holds_slot: false,
            });
        };
        tokio::spawn(task);
    }

    /// Reports an effect's outcome (see `completion.rs` for the rest of the bookkeeping).
    pub(super) fn report_effect(
        &mut self,
        label: &str,
        done: &EffectDone,
        reporter: &mut Reporter,
    ) {
        if let Some(effects) = &self.runner.effects {
            let warnings =
                std::mem::take(&mut *effects.warnings.lock().unwrap_or_else(|e| e.into_inner()));
            for w in warnings {
                reporter.warn(&w);
            }
        }
        if done.ok {
            reporter.effect(label, &done.line);
            if done.ran {
                self.summary.ran += 1;
            } else {
                self.summary.live += 1;
            }
        } else {
            reporter.failed(label, &done.line, &done.log);
            self.summary.failed += 1;
        }
    }
}
