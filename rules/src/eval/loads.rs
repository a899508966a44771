//! Load resolution: the `.star` modules reachable from the BUILD files' `load()`s (steps 3 and 4
//! of the evaluation).
//!
//! 1. From the BUILD files' resolved loads, find every reachable module breadth first, without
//!    recursion (a 10,000-deep load chain is fine); read each once, from the workspace or the
//!    embedded prelude, and parse it in the `.star` dialect.
//! 2. Report each load that cannot be resolved or read once, at its first site (and say how many
//!    other sites there are).
//! 3. An iterative depth-first search reports each `load()` cycle with the location of every load
//!    on it, and gives the post-order (dependencies first) in which modules are evaluated.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use super::source::{parse_file, star_dialect, LoadSite, ParsedBuild, ParsedFile, Sources};
use crate::error::{AnalysisError, AnalysisErrorKind as K, SourceSpan};
use crate::module_id::ModuleId;
use crate::prelude;

/// What became of one module a file loads.
#[allow(clippy::large_enum_variant)] // One per module; boxing would only add indirection.
pub(super) enum ModState {
    /// Could not be read or parsed; the reason, reported at each load site (once).
    Missing(String),
    /// Parsed but had a syntax error (already reported).
    Broken,
    Parsed(ParsedFile),
}

/// The `.star` modules reachable from the BUILD files, each read and parsed once.
pub(super) struct LoadGraph {
    pub modules: HashMap<ModuleId, ModState>,
    /// Each module's source, by display path (for "did you mean" on a parameter of its `def`s).
    pub sources: HashMap<String, Arc<str>>,
}

impl LoadGraph {
    /// Step 3: finds, reads and parses every module reachable from `builds`, breadth first.
    /// Syntax errors go to `errors`; unreadable modules are remembered as `Missing`.
    pub fn discover(
        files: &Sources,
        builds: &[ParsedBuild],
        errors: &mut Vec<AnalysisError>,
    ) -> LoadGraph {
        let mut modules: HashMap<ModuleId, ModState> = HashMap::new();
        let mut queue: VecDeque<ModuleId> = VecDeque::new();
        for (_, _, r) in builds {
            if let Ok((_, p)) = r {
                enqueue(&p.loads, &modules, &mut queue);
            }
        }
        let star = star_dialect();
        let mut sources: HashMap<String, Arc<str>> = HashMap::new();
        while let Some(id) = queue.pop_front() {
            if modules.contains_key(&id) {
                continue;
            }
            let state = match module_source(files, &id) {
                Err(reason) => ModState::Missing(reason),
                Ok(source) => {
                    sources.insert(id.display_path(), source.clone());
                    let package = match &id {
                        ModuleId::Workspace(p) => {
                            p.rsplit_once('/').map_or("", |(d, _)| d).to_owned()
                        }
                        ModuleId::Prelude(_) => String::new(),
                    };
                    match parse_file(&id.display_path(), &source, &star, Some(&id), &package) {
                        Ok(p) => {
                            enqueue(&p.loads, &modules, &mut queue);
                            ModState::Parsed(p)
                        }
                        Err(e) => {
                            errors.push(e);
                            ModState::Broken
                        }
                    }
                }
            };
            modules.insert(id, state);
        }
        LoadGraph { modules, sources }
    }

    /// Reports each unresolvable or missing load once, at its first site (BUILD files and
    /// modules alike).
    pub fn report_bad_loads(&self, builds: &[ParsedBuild], errors: &mut Vec<AnalysisError>) {
        let mut bad_sites: BTreeMap<String, Vec<(SourceSpan, String)>> = BTreeMap::new();
        let mut note_sites = |loads: &[LoadSite]| {
            for l in loads {
                let reason = match &l.target {
                    Err(reason) => Some(reason.clone()),
                    Ok(id) => match self.modules.get(id) {
                        Some(ModState::Missing(reason)) => Some(reason.clone()),
                        _ => None,
                    },
                };
                if let Some(reason) = reason {
                    bad_sites
                        .entry(l.text.clone())
                        .or_default()
                        .push((l.at.clone(), reason));
                }
            }
        };
        for (_, _, r) in builds {
            if let Ok((_, p)) = r {
                note_sites(&p.loads);
            }
        }
        for state in self.modules.values() {
            if let ModState::Parsed(p) = state {
                note_sites(&p.loads);
            }
        }
        for (module, mut sites) in bad_sites {
            sites.sort_by(|a, b| (&a.0.file, a.0.start).cmp(&(&b.0.file, b.0.start)));
            let (at, reason) = sites[0].clone();
            let mut e = AnalysisError::new(K::LoadFailed { module, reason }, Some(at));
            if sites.len() > 1 {
                e.related.push((
                    sites[1].0.clone(),
                    format!("also loaded here (and in {} place(s) in all)", sites.len()),
                ));
            }
            errors.push(e);
        }
    }

    /// Step 4: post-order of the parsed modules (dependencies first) and the set of modules on a
    /// cycle; each cycle is reported once with the location of every `load()` on it.
    pub fn order(&self, errors: &mut Vec<AnalysisError>) -> (Vec<ModuleId>, BTreeSet<ModuleId>) {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            OnStack,
            Done,
        }
        let modules = &self.modules;
        let mut marks: HashMap<&ModuleId, Mark> = HashMap::new();
        let mut order = Vec::new();
        let mut in_cycle = BTreeSet::new();
        let mut roots: Vec<&ModuleId> = modules.keys().collect();
        roots.sort();
        for root in roots {
            if marks.contains_key(root) {
                continue;
            }
            // Stack of (module, index of the next load to visit).
            let mut stack: Vec<(&ModuleId, usize)> = vec![(root, 0)];
            marks.insert(root, Mark::OnStack);
            while let Some(&mut (id, ref mut next)) = stack.last_mut() {
                let loads: &[LoadSite] = match modules.get(id) {
                    Some(ModState::Parsed(p)) => &p.loads,
                    _ => &[],
                };
                if *next < loads.len() {
                    let site = &loads[*next];
                    *next += 1;
                    let Ok(child) = &site.target else { continue };
                    let Some((child, _)) = modules.get_key_value(child) else {
                        continue;
                    };
                    match marks.get(child) {
                        None => {
                            marks.insert(child, Mark::OnStack);
                            stack.push((child, 0));
                        }
                        Some(Mark::OnStack) => {
                            let start = stack.iter().position(|(m, _)| *m == child).unwrap_or(0);
                            let mut cycle: Vec<String> =
                                stack[start..].iter().map(|(m, _)| m.to_string()).collect();
                            cycle.push(child.to_string());
                            let mut err =
                                AnalysisError::new(K::LoadCycle { cycle }, Some(site.at.clone()));
                            for (m, n) in &stack[start..stack.len() - 1] {
                                if let Some(ModState::Parsed(p)) = modules.get(*m) {
                                    let s = &p.loads[n - 1];
                                    err.related
                                        .push((s.at.clone(), format!("`{m}` loads `{}`", s.text)));
                                }
                                in_cycle.insert((*m).clone());
                            }
                            in_cycle.insert(id.clone());
                            errors.push(err);
                        }
                        Some(Mark::Done) => {}
                    }
                } else {
                    marks.insert(id, Mark::Done);
                    order.push(id.clone());
                    stack.pop();
                }
            }
        }
        // A module that loads a module on a cycle cannot be evaluated either; `loader_for` sees to
        // that because cyclic modules are never frozen.
        (order, in_cycle)
    }
}

/// Queues the resolved targets of `loads` not yet seen.
fn enqueue(
    loads: &[LoadSite],
    modules: &HashMap<ModuleId, ModState>,
    queue: &mut VecDeque<ModuleId>,
) {
    for l in loads {
        if let Ok(id) = &l.target {
            if !modules.contains_key(id) && !queue.contains(id) {
                queue.push_back(id.clone());
            }
        }
    }
}

/// The source of module `id`, or why it cannot be had (one line, for the load site).
fn module_source(files: &Sources, id: &ModuleId) -> Result<Arc<str>, String> {
    let root = files.root;
    match id {
        ModuleId::Workspace(path) => files.read(path).map_err(|e| {
            if root.join(path).is_dir() {
                format!("`{path}` is a directory")
            } else if std::fs::metadata(root.join(path)).is_err() {
                format!("`{path}` does not exist in the workspace")
            } else {
                // A FIFO, a device, too large, not UTF-8: the reason, with the path.
                e.to_string()
            }
        }),
        ModuleId::Prelude(path) => prelude::get(path).map(Arc::from).ok_or_else(|| {
            let known: Vec<String> = prelude::FILES
                .iter()
                .map(|(p, _)| ModuleId::Prelude((*p).to_owned()).display_path())
                .collect();
            format!("the prelude has no `{path}`; it has {}", known.join(", "))
        }),
    }
}
