//! The analysed state a watch cycle runs on, and what a batch of changed paths reaches in it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use flow_rules::Label;

use crate::hasher::Hashed;
use crate::plan::Plan;
use crate::stale::Declared;

/// The analysed state a cycle runs on.
pub(super) struct Analyzed {
    pub(super) plan: Arc<Plan>,
    /// Workspace-relative source → nodes that read it.
    pub(super) readers: HashMap<String, Vec<usize>>,
    /// The target of a source that is a symlink (inside the workspace) → the sources that lead
    /// to it: an event on the target is a change of those sources.
    pub(super) linked_sources: HashMap<String, Vec<String>>,
    /// The declared outputs of `sandbox = False` actions, workspace-relative (without a
    /// trailing `/`): they are written in the real tree, and their events are flow's own.
    pub(super) in_tree_outputs: HashSet<String>,
    pub(super) sources: HashMap<String, Hashed>,
    pub(super) tools: HashMap<String, String>,
    /// What the last analysis declares: the next cycle sweeps the outputs it does not declare
    /// (under the lock).
    pub(super) declared: Option<Declared>,
}

impl Analyzed {
    /// The nodes that read any of `paths` (directly).
    pub(super) fn readers_of<'a>(
        &'a self,
        paths: impl IntoIterator<Item = &'a String>,
    ) -> Vec<usize> {
        paths
            .into_iter()
            .filter_map(|p| self.readers.get(p))
            .flatten()
            .copied()
            .collect()
    }

    /// Labels of the nodes that read any of `paths`, and everything downstream of them.
    pub(super) fn affected(&self, paths: &BTreeSet<String>) -> BTreeSet<Label> {
        let reached = self.plan.downstream(self.readers_of(paths));
        (0..reached.len())
            .filter(|&i| reached[i])
            .map(|i| self.plan.nodes[i].label.clone())
            .collect()
    }
}
