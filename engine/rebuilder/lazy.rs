//! Which outputs a build writes under `flow-out/` (`flow build --materialize`).
//!
//! `all` (the default) writes every output. `targets` writes the outputs of the targets the
//! patterns name (a named group's are those of what it groups), and `needed` only what must be
//! there (below); both leave every other output
//! in the cache, where dependents are staged from (the blob is verified first, as it is when
//! a copy under `flow-out/` was edited by hand), the way Bazel's "build without the bytes"
//! leaves intermediate outputs on the remote cache. A CI build that needs only the verdicts of
//! its tests then writes almost nothing; `flow build` without the option writes the rest later
//! from the cache, without running anything.
//!
//! Written whatever the mode, because something reads them in place under `flow-out/`:
//! - the outputs of an action with a dependent that is not a sandboxed task or gate (a
//!   `sandbox = False` task reads its inputs there; deploys, monitors, notifications and
//!   services are given them from there), looked through groups;
//! - every directory output (a dependent's sandbox binds it from there);
//! - every output of a gate, and of an action with a JUnit (`.xml`) or SARIF (`.sarif`)
//!   output: the reports (`--junit`, the summary, annotations, `flow report`) read them there
//!   (an action's outputs are written or left together).
//!
//! Never left behind: an output that is not written is removed from `flow-out/` unless it is
//! there already as the current result wrote it (`Rebuilder::restore`), so `flow-out/` holds
//! for each output its current version or nothing, never an older one.

use std::collections::HashSet;

use flow_rules::Label;

use crate::plan::{ActionKind, Plan};

/// `flow build --materialize`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Materialize {
    /// Every output (the default).
    #[default]
    All,
    /// The outputs of the targets the patterns name, and what must be there.
    Targets,
    /// Only what must be there: outputs read in place, reports and gate tables.
    Needed,
}

/// The actions of `plan` whose outputs stay in the cache under `mode`.
pub fn kept_in_cache(plan: &Plan, mode: Materialize) -> HashSet<Label> {
    if mode == Materialize::All {
        return HashSet::new();
    }
    let named = match mode {
        Materialize::Targets => named_targets(plan),
        _ => HashSet::new(),
    };
    plan.actions()
        .filter(|&i| !named.contains(&i))
        .filter(|&i| !must_be_written(plan, i))
        .map(|i| plan.nodes[i].label.clone())
        .collect()
}

/// The nodes the patterns name, and through a named group (whose outputs are its
/// dependencies') the nodes it groups.
fn named_targets(plan: &Plan) -> HashSet<usize> {
    let mut named = HashSet::new();
    let mut stack: Vec<usize> = plan.requested.iter().copied().collect();
    while let Some(i) = stack.pop() {
        if named.insert(i) && plan.nodes[i].kind == ActionKind::Group {
            stack.extend(plan.nodes[i].deps.iter().copied());
        }
    }
    named
}

/// Whether something reads node `i`'s outputs in place under `flow-out/` (module docs).
fn must_be_written(plan: &Plan, i: usize) -> bool {
    let action = &plan.nodes[i];
    if action.kind == ActionKind::Gate || action.outs.iter().any(|o| is_report(o)) {
        return true;
    }
    if action.outs.iter().any(|o| o.ends_with('/')) {
        return true;
    }
    consumers(plan, i).into_iter().any(|c| {
        let c = &plan.nodes[c];
        !c.sandbox
            || !matches!(
                c.kind,
                ActionKind::Task | ActionKind::Uncached | ActionKind::Gate
            )
    })
}

/// An output the reports read: JUnit XML or SARIF (`reports/found.rs`).
fn is_report(out: &str) -> bool {
    out.ends_with(".xml") || out.contains(".sarif")
}

/// The nodes that are given node `i`'s outputs: its dependents, and through a group (which
/// forwards what it depends on) the group's.
fn consumers(plan: &Plan, i: usize) -> Vec<usize> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<usize> = plan.dependents(i).to_vec();
    while let Some(d) = stack.pop() {
        if !seen.insert(d) {
            continue;
        }
        match plan.nodes[d].kind {
            ActionKind::Group => stack.extend(plan.dependents(d).iter().copied()),
            _ => found.push(d),
        }
    }
    found
}
