//! `Plan`: the action graph of one build — the targets the patterns select plus everything they
//! depend on, each task turned into an `Action` (command expanded, inputs as workspace-relative
//! paths, environment fixed), each group kept as an ordering node.
//!
//! Built once per build from the validated `TargetGraph`; nothing here touches the cache or runs
//! anything. Node indices are positions in `Plan::nodes`, in label order. The graph questions
//! every stage asks of a plan (who depends on a node, everything downstream of a set, an order
//! with each node after its dependencies) are answered here, once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flow_rules::{Delivery, Label, TargetKind};
use serde::{Deserialize, Serialize};

use crate::expand::{expand, join_path, Layout};
use crate::graph::TargetGraph;

/// What kind of work a node is. Whether a kind's last result may ever be reused is said once,
/// in [`ActionKind::reusable`], and the rebuilder's one reuse decision
/// (`rebuilder::reuse`) is the only code that asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionKind {
    /// A pure function of its key: cached, restored, carried over, answered by a no-op.
    Task,
    /// A task declared with `cache = False`: it runs in every build that includes it; its
    /// result is never restored, carried over or answered by a no-op (its outputs still reach
    /// its dependents, keyed by content as usual).
    Uncached,
    /// Runs nothing: orders its dependencies and forwards their outputs.
    Group,
    /// Effects (docs/delivery.md): they change the world, so they run whenever a build
    /// includes them; what they did goes to the ledger, never to the action cache.
    Deploy,
    Monitor,
    Notify,
    /// A process started for the tasks that depend on it (when one of them runs); the node
    /// itself runs nothing and forwards nothing. Its definition keys its dependents.
    Service,
    /// A task flow evaluates itself (`gates/`): its `cmd` is the gate's checks
    /// (`flow_rules::gate::canonical`), its inputs its dependencies' reports. Reused as a task.
    Gate,
}

impl ActionKind {
    /// Whether a result of an earlier run of this kind may stand in for running it.
    pub fn reusable(self) -> bool {
        match self {
            ActionKind::Task | ActionKind::Group | ActionKind::Service | ActionKind::Gate => true,
            ActionKind::Uncached
            | ActionKind::Deploy
            | ActionKind::Monitor
            | ActionKind::Notify => false,
        }
    }

    /// Why a kind that is never reused runs (`flow explain`).
    pub fn why_never_reused(self) -> &'static str {
        match self {
            ActionKind::Deploy => {
                "a deploy runs in every build that names it, unless its artifact is live in its \
                 environment already (`[LIVE]`; docs/delivery.md)"
            }
            ActionKind::Monitor | ActionKind::Notify => {
                "an effect runs in every build that names it (docs/delivery.md)"
            }
            _ => "`cache = False`: it runs in every build",
        }
    }

    /// Whether nodes of this kind are keyed and run as actions (groups and services are not).
    pub fn runs(self) -> bool {
        !matches!(self, ActionKind::Group | ActionKind::Service)
    }

    /// Whether the kind is an effect: its outcome goes to the ledger, not the action cache.
    pub fn is_effect(self) -> bool {
        matches!(
            self,
            ActionKind::Deploy | ActionKind::Monitor | ActionKind::Notify
        )
    }

    fn of(target: &flow_rules::Target) -> ActionKind {
        match target.kind {
            TargetKind::Group => ActionKind::Group,
            TargetKind::Task if target.cache => ActionKind::Task,
            TargetKind::Task => ActionKind::Uncached,
            TargetKind::Deploy => ActionKind::Deploy,
            TargetKind::Monitor => ActionKind::Monitor,
            TargetKind::Notify => ActionKind::Notify,
            TargetKind::Service => ActionKind::Service,
            TargetKind::Gate => ActionKind::Gate,
        }
    }
}

/// One node of the build: a task to run, or a group that only orders and forwards. It is also
/// what the build record stores of the plan (`record::format`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Action {
    pub label: Label,
    pub package: String,
    pub kind: ActionKind,
    /// The command after expansion.
    pub cmd: String,
    /// Sources, workspace-relative.
    pub srcs: Vec<String>,
    /// Declared outputs, package-relative (a trailing `/` marks a directory output).
    pub outs: Vec<String>,
    /// Declared env plus the fixed `PATH`.
    pub env: BTreeMap<String, String>,
    pub secrets: Vec<String>,
    pub tools: Vec<String>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub sandbox: bool,
    /// Node indices of direct dependencies.
    pub deps: Vec<usize>,
    /// A deploy's, monitor's, notification's or service's own attributes.
    #[serde(default)]
    pub delivery: Option<Delivery>,
    /// The services it depends on directly: started for it, and part of its key.
    #[serde(default)]
    pub services: Vec<ServiceUse>,
}

impl Action {
    /// The values of its secrets in flow's environment; `Err` names those that are not set.
    pub fn secrets_from_env(&self) -> Result<BTreeMap<String, String>, String> {
        let mut secrets = BTreeMap::new();
        let mut missing = Vec::new();
        for s in &self.secrets {
            match std::env::var(s) {
                Ok(v) => {
                    secrets.insert(s.clone(), v);
                }
                Err(_) => missing.push(format!("`{s}`")),
            }
        }
        match missing.is_empty() {
            true => Ok(secrets),
            false => Err(format!(
                "secret(s) {} not set in flow's environment",
                missing.join(", ")
            )),
        }
    }
}

/// A service as the key of an action that needs it sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceUse {
    /// Its node.
    pub node: usize,
    pub label: String,
    /// Its label, `start`, `ready`, `stop`, package and env, as canonical JSON.
    pub definition: String,
    /// Its sources, workspace-relative: their digests are keyed too.
    pub srcs: Vec<String>,
}

#[derive(Debug)]
pub struct Plan {
    pub nodes: Vec<Action>,
    /// Nodes the user asked for (the rest are there because these depend on them).
    pub requested: BTreeSet<usize>,
    pub index: HashMap<Label, usize>,
    /// Per node, the nodes that depend on it directly.
    dependents: Vec<Vec<usize>>,
}

impl Plan {
    /// The closure of `selected` (target indices of `graph`) under `deps`.
    pub fn new(graph: &TargetGraph, selected: &BTreeSet<usize>, action_path: &[String]) -> Plan {
        let mut closure: BTreeSet<usize> = BTreeSet::new();
        let mut stack: Vec<usize> = selected.iter().copied().collect();
        while let Some(i) = stack.pop() {
            if closure.insert(i) {
                stack.extend(graph.deps(i));
            }
        }
        let order: Vec<usize> = closure.iter().copied().collect();
        let node_of: HashMap<usize, usize> =
            order.iter().enumerate().map(|(n, &t)| (t, n)).collect();
        let path = action_path.join(":");
        let nodes = order
            .iter()
            .map(|&t| {
                let target = graph.target(t);
                // A service runs in its package directory of the real tree.
                let layout = if target.sandbox && target.kind != TargetKind::Service {
                    Layout::Sandbox
                } else {
                    Layout::RealTree
                };
                let outs_of = |l: &Label| graph.get(l).map(|t| t.outs.as_slice());
                let cmd = match target.kind {
                    TargetKind::Group | TargetKind::Monitor => String::new(),
                    // The checks, not a shell command: nothing to expand.
                    TargetKind::Gate => target.cmd.clone().unwrap_or_default(),
                    // Validated at analysis: expansion cannot fail here.
                    _ => expand(target, layout, outs_of).unwrap_or_default(),
                };
                let mut env = target.env.clone();
                env.insert("PATH".into(), path.clone());
                let mut deps: Vec<usize> = graph.deps(t).map(|d| node_of[&d]).collect();
                deps.sort_unstable();
                Action {
                    label: target.label.clone(),
                    package: target.label.package().to_owned(),
                    kind: ActionKind::of(target),
                    cmd,
                    srcs: target
                        .srcs
                        .iter()
                        .map(|s| join_path(target.label.package(), s))
                        .collect(),
                    outs: target.outs.clone(),
                    env,
                    secrets: target.secrets.clone(),
                    tools: target.tools.clone(),
                    timeout: target.timeout,
                    retries: target.retries,
                    sandbox: target.sandbox,
                    services: deps
                        .iter()
                        .filter_map(|&d| service_use(graph.target(order[d]), d))
                        .collect(),
                    deps,
                    delivery: target.delivery.clone(),
                }
            })
            .collect::<Vec<_>>();
        Plan::from_nodes(nodes, selected.iter().map(|t| node_of[t]).collect())
    }

    /// A plan of `nodes` (each one's `deps` are indices into `nodes`), `requested` among them.
    pub fn from_nodes(nodes: Vec<Action>, requested: BTreeSet<usize>) -> Plan {
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, a)| (a.label.clone(), i))
            .collect();
        let mut dependents = vec![Vec::new(); nodes.len()];
        for (i, a) in nodes.iter().enumerate() {
            for &d in &a.deps {
                if let Some(list) = dependents.get_mut(d) {
                    list.push(i);
                }
            }
        }
        Plan {
            nodes,
            requested,
            index,
            dependents,
        }
    }

    /// The nodes that depend directly on node `i`.
    pub fn dependents(&self, i: usize) -> &[usize] {
        &self.dependents[i]
    }

    /// `from` and every node that depends on one of them, directly or not.
    pub fn downstream(&self, from: impl IntoIterator<Item = usize>) -> Vec<bool> {
        let mut reached = vec![false; self.nodes.len()];
        let mut stack: Vec<usize> = from.into_iter().collect();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut reached[i], true) {
                stack.extend(self.dependents[i].iter().copied());
            }
        }
        reached
    }

    /// Every node after its dependencies (Kahn's algorithm; the plan is acyclic).
    pub fn topo_order(&self) -> Vec<usize> {
        let mut waiting: Vec<usize> = self.nodes.iter().map(|a| a.deps.len()).collect();
        let mut order: Vec<usize> = (0..self.nodes.len()).filter(|&i| waiting[i] == 0).collect();
        let mut next = 0;
        while next < order.len() {
            let n = order[next];
            next += 1;
            for &d in &self.dependents[n] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    order.push(d);
                }
            }
        }
        order
    }

    /// The indices of the nodes that run a command (every node but groups).
    pub fn actions(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].kind.runs())
    }

    /// Every source file of every task, workspace-relative, deduplicated and sorted.
    pub fn all_sources(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.nodes.iter().flat_map(|a| a.srcs.iter()).collect();
        set.into_iter().cloned().collect()
    }

    /// The dependency lists, for the scheduler.
    pub fn deps(&self) -> Vec<Vec<usize>> {
        self.nodes.iter().map(|a| a.deps.clone()).collect()
    }

    /// Per node, the nodes that depend on it directly (a copy, for the scheduler).
    pub fn all_dependents(&self) -> Vec<Vec<usize>> {
        self.dependents.clone()
    }
}

/// How a dependent sees `target` (node `node`), if it is a service.
fn service_use(target: &flow_rules::Target, node: usize) -> Option<ServiceUse> {
    let Some(Delivery::Service { ready, stop, .. }) = &target.delivery else {
        return None;
    };
    let definition = serde_json::json!({
        "label": target.label.to_string(),
        "start": target.cmd,
        "ready": ready,
        "stop": stop,
        "env": target.env,
    });
    Some(ServiceUse {
        node,
        label: target.label.to_string(),
        definition: definition.to_string(),
        srcs: target
            .srcs
            .iter()
            .map(|s| join_path(target.label.package(), s))
            .collect(),
    })
}

/// Where tool `name` is on the action `PATH`: the first executable file of that name, as
/// written (`/usr/bin/python3`) and resolved through symlinks (`/usr/bin/python3.11`).
pub fn find_tool(name: &str, action_path: &[String]) -> Option<(PathBuf, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') || name.is_empty() {
        return None;
    }
    action_path.iter().find_map(|dir| {
        let candidate = Path::new(dir).join(name);
        let meta = std::fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then(|| {
            let canonical = std::fs::canonicalize(&candidate).unwrap_or_else(|_| candidate.clone());
            (candidate, canonical)
        })
    })
}

/// Each tool's identity: `path@digest` of the binary it resolves to. Unresolvable tools are
/// left out (the actions that need them fail with a message naming the tool).
pub fn tool_identities(
    plan: &Plan,
    action_path: &[String],
    hasher: &crate::hasher::FileHasher,
) -> HashMap<String, String> {
    let names: BTreeSet<&String> = plan.nodes.iter().flat_map(|a| a.tools.iter()).collect();
    let mut out = HashMap::new();
    for name in names {
        if let Some((path, canonical)) = find_tool(name, action_path) {
            if let Ok(h) = hasher.digest(&canonical) {
                out.insert(name.clone(), format!("{}@{}", path.display(), h.digest));
            }
        }
    }
    out
}

/// The file-state rows a build needs: the workspace's, plus those of the tool binaries (which
/// live outside it), so that neither is read again while unchanged.
pub fn known_states(
    cache: &flow_cache::Cache,
    root: &Path,
    plan: &Plan,
    action_path: &[String],
) -> Result<HashMap<String, flow_cache::FileState>, flow_cache::CacheError> {
    let mut known = cache.load_file_states(&format!("{}/", root.display()))?;
    let names: BTreeSet<&String> = plan.nodes.iter().flat_map(|a| a.tools.iter()).collect();
    for name in names {
        if let Some((_, canonical)) = find_tool(name, action_path) {
            if let Some(p) = canonical.to_str() {
                for (k, v) in cache.load_file_states(p)? {
                    if k == p {
                        known.insert(k, v);
                    }
                }
            }
        }
    }
    Ok(known)
}
