//! The one reuse decision: may an action's last result stand in for running it?
//!
//! A build, a watch cycle and `flow explain` ask [`Rebuilder::decide`] about every action, in
//! dependency order, and do what it answers. No other code skips, carries over or restores an
//! action. The answer ([`Decision`]) is one of:
//!
//! 1. **carried**: nothing the action reads changed since the run that produced its last result,
//!    so that result stands without keying it or looking it up. "Nothing changed" is an *input*
//!    here, never a decision made elsewhere: the build record (by `stat`) and the watcher (by
//!    its events) only say which nodes saw a change ([`Carried::compute`] takes that set);
//! 2. **cached**: its key has a successful result in the action cache; its outputs are in
//!    `flow-out/` as flow wrote them, or are restored from the CAS (a dry run, `flow explain`,
//!    only says they would be);
//! 3. **run**: anything else (with a warning when a cached result could not be read or
//!    restored);
//! 4. **still failing** (watch cycles only): its last run failed, nothing it reads changed
//!    since, and its key still has no successful result (another command may have stored one
//!    meanwhile: then it is cached), so running it again would only repeat the failure; it is
//!    reported failed again, without running. One that could not be keyed is keyed again.
//!    Failures are never stored, so a build never gets this answer.
//!
//! The no-op build is this decision with an empty change set: when it carries every action,
//! nothing is left to run. Which kinds of action may be reused at all is said once, by
//! [`ActionKind::reusable`]: a kind that is not is never carried, never cached, and is a change
//! for everything downstream of it (its outputs may differ from run to run).

use std::collections::HashMap;

use flow_cache::{ActionResult, Digest};

use super::{Rebuilder, StagedOutput};
use crate::action_key::ActionKey;
use crate::hasher::Hashed;
use crate::plan::{Action, Plan};

/// A task's last successful result as its dependents see it.
#[derive(Clone, Debug)]
pub struct LastResult {
    /// Its outputs, where dependents stage them.
    pub staged: Vec<StagedOutput>,
    /// The key it was stored under.
    pub key: Digest,
}

/// The tasks of one build whose last result stands without keying them.
#[derive(Default)]
pub struct Carried {
    nodes: HashMap<usize, LastResult>,
    /// Tasks whose last run failed (why) and that no change reaches.
    failed: HashMap<usize, String>,
}

impl Carried {
    /// Nothing carried: every action is keyed (a build from analysis, a first watch cycle).
    pub fn none() -> Carried {
        Carried::default()
    }

    /// The tasks of `plan` that can be carried over, given each node's `last` result (`None`:
    /// none known) and the nodes that saw a change since then (`changed`: they read a changed
    /// source, or an output of theirs is not as flow left it). A task is carried when no node
    /// upstream of it or itself changed, is of a kind that is never reused, or has no last
    /// result.
    pub fn compute(
        plan: &Plan,
        last: Vec<Option<LastResult>>,
        changed: impl IntoIterator<Item = usize>,
    ) -> Carried {
        Carried::with_failures(plan, last, Vec::new(), changed)
    }

    /// [`Carried::compute`], also given each node's last failure (`failed`, why; a watch cycle
    /// knows them): a failed task that no change reaches keeps its failure.
    pub fn with_failures(
        plan: &Plan,
        mut last: Vec<Option<LastResult>>,
        mut failed: Vec<Option<String>>,
        changed: impl IntoIterator<Item = usize>,
    ) -> Carried {
        let never_reused = plan.actions().filter(|&i| !plan.nodes[i].kind.reusable());
        let changed: Vec<usize> = changed.into_iter().chain(never_reused).collect();
        let reached = plan.downstream(changed.iter().copied());
        let unknown = plan
            .actions()
            .filter(|&i| last.get(i).is_none_or(Option::is_none));
        let dirty = plan.downstream(changed.into_iter().chain(unknown.collect::<Vec<_>>()));
        let nodes = plan
            .actions()
            .filter(|&i| !dirty[i])
            .filter_map(|i| Some((i, last.get_mut(i)?.take()?)))
            .collect();
        let failed = plan
            .actions()
            .filter(|&i| !reached[i])
            .filter_map(|i| Some((i, failed.get_mut(i)?.take()?)))
            .collect();
        Carried { nodes, failed }
    }

    pub fn get(&self, node: usize) -> Option<&LastResult> {
        self.nodes.get(&node)
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether every action of `plan` is carried: the build has nothing to do.
    pub fn covers(&self, plan: &Plan) -> bool {
        plan.actions().all(|i| self.nodes.contains_key(&i))
    }
}

/// What [`Rebuilder::decide`] answers for one action.
pub enum Decision {
    /// Nothing it reads changed: its last result stands.
    Carried(LastResult),
    /// Its key has a cached result; `restored`: its outputs were (or, in a dry run, would be)
    /// restored from the CAS.
    Cached {
        key: Digest,
        result: ActionResult,
        restored: bool,
    },
    /// It runs; `warning` says why a cached result could not be used, if one existed.
    Run {
        key: Box<ActionKey>,
        warning: Option<String>,
    },
    /// Its key cannot be computed (an unreadable source, a missing tool): it fails.
    Unkeyable(String),
    /// Its last run failed (why) and nothing it reads changed since: it fails again without
    /// running (watch cycles).
    StillFailing(String),
}

/// What an action's key is computed from, besides the action itself.
pub struct KeyInputs<'a> {
    /// Workspace-relative source → digest (missing: unreadable).
    pub sources: &'a HashMap<String, Hashed>,
    /// The outputs of its direct dependencies.
    pub deps: &'a [StagedOutput],
    /// Tool name → identity (missing: not found).
    pub tools: &'a HashMap<String, String>,
    /// Results already read in bulk, by key (a lookup goes to the database otherwise).
    pub prefetched: &'a HashMap<Digest, ActionResult>,
}

/// Whether a decision may change `flow-out/` (a build) or only says what it would do
/// (`flow explain`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    Restore,
    DryRun,
}

impl Rebuilder {
    /// Before the decisions of several ready nodes: asks the remote cache at once for each
    /// whose decision would ask it (as `decide` does: reusable, keyable, not carried, no kept
    /// failure, no local result). What it verifies goes to the local cache, where `decide`
    /// then finds it; a key it does not hold is remembered, so `decide` does not ask again.
    /// Nothing is decided here.
    pub fn prefetch_remote(&self, nodes: &[(usize, &Action, KeyInputs)], carried: &Carried) {
        let Some(remote) = &self.remote else {
            return;
        };
        let mut wanted = Vec::new();
        for (node, action, inputs) in nodes {
            if carried.get(*node).is_some()
                || carried.failed.contains_key(node)
                || !action.kind.reusable()
            {
                continue;
            }
            let Ok(key) = self.key(action, inputs.sources, inputs.deps, inputs.tools) else {
                continue;
            };
            let digest = key.digest();
            if inputs.prefetched.contains_key(&digest) || !matches!(self.lookup(&digest), Ok(None))
            {
                continue;
            }
            wanted.push((digest, action.outs.clone()));
        }
        if wanted.len() > 1 {
            remote.fetch_many(wanted, &self.cache);
        }
    }

    /// Before the decisions of several ready nodes: restores at once, on every core, the
    /// outputs of each whose decision would restore them (as `decide` does: reusable, not
    /// carried, no kept failure, a result already read in bulk, written under `flow-out/`, not
    /// in place there). `decide` then finds them in place and still decides; it reports
    /// those restored here as restored. One that fails here is restored again by `decide`,
    /// which says why it cannot be. Nothing is decided here.
    /// Once `stop` is set (a stopping signal), nothing more is restored.
    pub fn restore_ahead(
        &self,
        nodes: &[(usize, &Action, KeyInputs)],
        carried: &Carried,
        stop: &std::sync::atomic::AtomicBool,
    ) {
        use rayon::prelude::*;
        let wanted: Vec<(usize, &Action, &ActionResult)> = nodes
            .iter()
            .filter(|(node, action, _)| {
                carried.get(*node).is_none()
                    && !carried.failed.contains_key(node)
                    && action.kind.reusable()
                    && self.writes(action)
            })
            .filter_map(|(node, action, inputs)| {
                let key = self
                    .key(action, inputs.sources, inputs.deps, inputs.tools)
                    .ok()?;
                let result = inputs.prefetched.get(&key.digest())?;
                (!self.is_materialized(action, result)).then_some((*node, *action, result))
            })
            .collect();
        if wanted.len() < 2 {
            return;
        }
        let restored: Vec<usize> = wanted
            .par_iter()
            .filter(|(_, action, result)| {
                !stop.load(std::sync::atomic::Ordering::SeqCst)
                    && self.restore(action, result).is_ok()
            })
            .map(|(node, _, _)| *node)
            .collect();
        self.restored_ahead
            .lock()
            .expect("restored-ahead lock poisoned")
            .extend(restored);
    }

    /// The reuse decision for node `node` (`action`), whose dependencies are done.
    pub fn decide(
        &self,
        node: usize,
        action: &Action,
        carried: &Carried,
        inputs: &KeyInputs,
        apply: Apply,
    ) -> Decision {
        if let Some(last) = carried.get(node) {
            return Decision::Carried(last.clone());
        }
        let key = match self.key(action, inputs.sources, inputs.deps, inputs.tools) {
            Ok(key) => key,
            Err(why) => return Decision::Unkeyable(why),
        };
        let failed_before = carried.failed.get(&node);
        let run = |key, warning| Decision::Run {
            key: Box::new(key),
            warning,
        };
        if !action.kind.reusable() {
            return run(key, None);
        }
        let digest = key.digest();
        let looked_up = match inputs.prefetched.get(&digest) {
            Some(r) => Ok(Some(r.clone())),
            None => self.lookup(&digest),
        };
        // A local miss asks the remote cache, which stores what it verified locally first:
        // then it is a local hit like any other (restored below).
        let looked_up = match (looked_up, &self.remote) {
            (Ok(None), Some(remote)) if failed_before.is_none() && apply == Apply::Restore => {
                Ok(remote.fetch(&digest, &action.outs, &self.cache))
            }
            (other, _) => other,
        };
        let label = &action.label;
        match looked_up {
            Ok(Some(result)) => {
                let in_place = self.is_materialized(action, &result);
                let ahead = self
                    .restored_ahead
                    .lock()
                    .expect("restored-ahead lock poisoned")
                    .remove(&node);
                // Left in the cache (`--materialize`): nothing restored, an old copy cleared.
                let restored = (!in_place || ahead) && self.writes(action);
                if !in_place && apply == Apply::Restore {
                    if let Err(e) = self.restore(action, &result) {
                        let why = format!(
                            "the cached result of `{label}` cannot be restored ({e}); running it again"
                        );
                        return run(key, Some(why));
                    }
                }
                Decision::Cached {
                    key: digest,
                    result,
                    restored,
                }
            }
            // Nothing it reads changed since it failed, and no success for its key exists
            // (a `flow build` meanwhile may have stored one): it would fail again.
            Ok(None) if failed_before.is_some() => {
                Decision::StillFailing(failed_before.cloned().unwrap_or_default())
            }
            Ok(None) => run(key, None),
            Err(e) => run(
                key,
                Some(format!(
                    "cannot read the action cache ({e}); running `{label}`"
                )),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The carry set alone, on hand-made plans: what a change reaches, kinds never reused,
    //! unknown results, kept failures.

    use std::collections::BTreeSet;

    use flow_cache::{Digest, OutputKind};
    use flow_rules::Label;

    use super::*;
    use crate::plan::{Action, ActionKind};

    /// A plan of `kinds`, node `i` depending on `deps[i]`.
    fn plan(kinds: &[ActionKind], deps: &[&[usize]]) -> Plan {
        let nodes = kinds
            .iter()
            .zip(deps)
            .enumerate()
            .map(|(i, (&kind, d))| Action {
                label: Label::parse(&format!("//p:n{i}"), None).unwrap(),
                package: "p".into(),
                kind,
                cmd: String::new(),
                srcs: Vec::new(),
                outs: Vec::new(),
                env: Default::default(),
                secrets: Vec::new(),
                tools: Vec::new(),
                timeout: None,
                retries: 0,
                sandbox: true,
                deps: d.to_vec(),
                delivery: None,
                services: Vec::new(),
            })
            .collect();
        Plan::from_nodes(nodes, BTreeSet::new())
    }

    fn last(n: usize) -> Vec<Option<LastResult>> {
        (0..n)
            .map(|i| {
                Some(LastResult {
                    staged: vec![StagedOutput {
                        path: format!("p/o{i}"),
                        kind: OutputKind::File {
                            digest: Digest::of(&[i as u8]),
                            size: 1,
                            executable: false,
                        },
                    }],
                    key: Digest::of(&[i as u8, 1]),
                })
            })
            .collect()
    }

    fn carried(c: &Carried, n: usize) -> Vec<usize> {
        (0..n).filter(|&i| c.get(i).is_some()).collect()
    }

    use ActionKind::{Group, Task, Uncached};

    #[test]
    fn nothing_changed_carries_every_task() {
        let p = plan(&[Task, Task, Group], &[&[], &[0], &[1]]);
        let c = Carried::compute(&p, last(3), []);
        assert_eq!(carried(&c, 3), [0, 1]);
        assert!(c.covers(&p));
    }

    #[test]
    fn a_change_reaches_everything_downstream_through_groups() {
        // 0 <- 1 <- group 2 <- 3;  4 alone.
        let p = plan(
            &[Task, Task, Group, Task, Task],
            &[&[], &[0], &[1], &[2], &[]],
        );
        let c = Carried::compute(&p, last(5), [1]);
        assert_eq!(carried(&c, 5), [0, 4]);
        assert!(!c.covers(&p));
    }

    #[test]
    fn a_kind_never_reused_is_never_carried_nor_what_depends_on_it() {
        let p = plan(&[Uncached, Task, Task], &[&[], &[0], &[]]);
        let c = Carried::compute(&p, last(3), []);
        assert_eq!(carried(&c, 3), [2]);
        assert!(
            !c.covers(&p),
            "a build with a never-reused action is never a no-op"
        );
    }

    #[test]
    fn a_task_without_a_last_result_is_keyed_and_so_is_what_depends_on_it() {
        let p = plan(&[Task, Task, Task], &[&[], &[0], &[]]);
        let mut l = last(3);
        l[0] = None;
        assert_eq!(carried(&Carried::compute(&p, l, []), 3), [2]);
    }

    #[test]
    fn a_failure_is_kept_only_while_no_change_reaches_it() {
        let p = plan(&[Task, Task, Task], &[&[], &[0], &[]]);
        let mut l = last(3);
        l[1] = None;
        let failed = vec![None, Some("exit 1".to_owned()), None];
        let kept = Carried::with_failures(&p, l.clone(), failed.clone(), [2]);
        assert_eq!(kept.failed.get(&1).map(String::as_str), Some("exit 1"));
        let reached = Carried::with_failures(&p, l, failed, [0]);
        assert!(reached.failed.is_empty());
    }
}
