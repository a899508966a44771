//! `TargetGraph`: every target of the workspace and the `deps` edges between them, validated.
//!
//! Built from an `Evaluation` in one pass:
//! 1. index every target by label (and remember the ones declared with errors);
//! 2. check each `deps` entry: it exists (else "did you mean"), it is not the target itself, and
//!    it is visible to the depending package;
//! 3. check that no two targets declare the same output or one inside the other, across
//!    packages too (all land in `flow-out/`);
//! 4. find cycles with Tarjan's algorithm and report each with its whole path and the BUILD
//!    location of every edge on it.
//!
//! All problems are collected, sorted and returned together. Node `i` of the petgraph graph is
//! `targets()[i]`; targets are sorted by label, so indices order like labels do. Edges point from
//! a target to its dependencies.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use flow_rules::error::sort_errors;
use flow_rules::suggest::closest_n;
use flow_rules::{
    AnalysisError, AnalysisErrorKind as K, Evaluation, Label, PatternTerm, Target, TargetPattern,
    VisibilityRule,
};
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

/// A validated target graph.
#[derive(Debug)]
pub struct TargetGraph {
    targets: Vec<Target>,
    index: HashMap<Label, usize>,
    graph: DiGraph<(), ()>,
    /// Every package of the workspace (including those that failed to evaluate).
    packages: BTreeSet<String>,
}

/// Why a target pattern selected nothing, or could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternMatchError {
    /// `//a:b` where the package exists but has no target `b`.
    NoSuchTarget {
        label: Label,
        suggestions: Vec<Label>,
    },
    /// The package named by the pattern does not exist.
    NoSuchPackage {
        package: String,
        suggestions: Vec<String>,
    },
    /// The pattern is valid but selects no targets (e.g. only `manual` ones, or all excluded).
    NothingMatched { pattern: String },
}

impl std::fmt::Display for PatternMatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatternMatchError::NoSuchTarget { label, .. } => {
                write!(
                    f,
                    "no target `{label}`: package `//{}` has no target `{}`",
                    label.package(),
                    label.name()
                )
            }
            PatternMatchError::NoSuchPackage { package, .. } => {
                write!(f, "no package `//{package}` (no `BUILD` file there)")
            }
            PatternMatchError::NothingMatched { pattern } => {
                write!(f, "`{pattern}` matches no targets")
            }
        }
    }
}

impl PatternMatchError {
    /// "Did you mean" and other hints.
    pub fn help(&self) -> Option<String> {
        match self {
            PatternMatchError::NoSuchTarget { suggestions, .. } if !suggestions.is_empty() => {
                Some(format!(
                    "did you mean {}?",
                    suggestions
                        .iter()
                        .map(|l| format!("`{l}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ))
            }
            PatternMatchError::NoSuchPackage { suggestions, .. } if !suggestions.is_empty() => {
                Some(format!(
                    "did you mean {}?",
                    suggestions
                        .iter()
                        .map(|p| format!("`//{p}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ))
            }
            PatternMatchError::NothingMatched { .. } => {
                Some("targets tagged `manual` are only matched when named exactly".into())
            }
            _ => None,
        }
    }
}

impl TargetGraph {
    /// Builds and validates the graph; `default_visibility` applies to targets without their own.
    /// Returns the graph (of the targets that evaluated) and every error, evaluation's included.
    pub fn build(
        evaluation: Evaluation,
        default_visibility: &[VisibilityRule],
    ) -> (TargetGraph, Vec<AnalysisError>) {
        let Evaluation {
            packages,
            mut errors,
            failed_packages,
            listing,
            ..
        } = evaluation;
        let mut broken: HashSet<Label> = HashSet::new();
        let mut targets: Vec<Target> = Vec::new();
        for p in packages {
            broken.extend(p.broken);
            targets.extend(p.targets);
        }
        targets.sort_by(|a, b| a.label.cmp(&b.label));
        let index: HashMap<Label, usize> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| (t.label.clone(), i))
            .collect();
        let all_packages: BTreeSet<String> = listing.packages.keys().cloned().collect();

        let mut graph = DiGraph::with_capacity(targets.len(), targets.len() * 2);
        for _ in &targets {
            graph.add_node(());
        }
        let mut labels_by_package: BTreeMap<&str, Vec<&Label>> = BTreeMap::new();
        for t in &targets {
            labels_by_package
                .entry(t.label.package())
                .or_default()
                .push(&t.label);
        }
        for (i, t) in targets.iter().enumerate() {
            for (dep, at) in t.deps.iter().zip(&t.dep_spans) {
                if dep == &t.label {
                    errors.push(AnalysisError::new(
                        K::SelfDependency {
                            label: t.label.clone(),
                        },
                        Some(at.clone()),
                    ));
                    continue;
                }
                let Some(&j) = index.get(dep) else {
                    if broken.contains(dep) || failed_packages.contains(dep.package()) {
                        continue; // Reported where it is declared.
                    }
                    let package_exists = all_packages.contains(dep.package());
                    let suggestions = if package_exists {
                        let in_package = labels_by_package
                            .get(dep.package())
                            .map(|v| v.as_slice())
                            .unwrap_or(&[]);
                        // Never the target itself: a dependency on it is no fix.
                        closest_in_package(
                            dep,
                            in_package.iter().copied().filter(|l| *l != &t.label),
                        )
                    } else {
                        let all: Vec<String> = targets
                            .iter()
                            .filter(|other| other.label != t.label)
                            .map(|other| other.label.to_string())
                            .collect();
                        closest_n(&dep.to_string(), all.iter().map(|s| s.as_str()), 3)
                            .into_iter()
                            .filter_map(|s| Label::parse(&s, None).ok())
                            .collect()
                    };
                    errors.push(AnalysisError::new(
                        K::UnknownDep {
                            label: t.label.clone(),
                            dep: dep.clone(),
                            suggestions,
                            package_exists,
                        },
                        Some(at.clone()),
                    ));
                    continue;
                };
                let target_dep = &targets[j];
                let rules = target_dep
                    .visibility
                    .as_deref()
                    .unwrap_or(default_visibility);
                let visible = rules
                    .iter()
                    .any(|r| r.allows(dep.package(), t.label.package()))
                    || dep.package() == t.label.package();
                if !visible {
                    errors.push(
                        AnalysisError::new(
                            K::NotVisible {
                                label: t.label.clone(),
                                dep: dep.clone(),
                                visibility: if rules.is_empty() {
                                    vec!["//visibility:private".into()]
                                } else {
                                    rules.iter().map(|r| r.to_string()).collect()
                                },
                            },
                            Some(at.clone()),
                        )
                        .with_related(target_dep.at.clone(), format!("`{dep}` is declared here")),
                    );
                }
                graph.add_edge(NodeIndex::new(i), NodeIndex::new(j), ());
            }
        }

        check_expansions(&targets, &index, &mut errors);
        crate::delivery::checks::check_targets(&targets, &index, &mut errors);
        check_outputs(&targets, &mut errors);
        check_cycles(&targets, &graph, &mut errors);
        sort_errors(&mut errors);
        (
            TargetGraph {
                targets,
                index,
                graph,
                packages: all_packages,
            },
            errors,
        )
    }

    /// All targets, sorted by label; a target's index is its position here.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn target(&self, i: usize) -> &Target {
        &self.targets[i]
    }

    pub fn index_of(&self, label: &Label) -> Option<usize> {
        self.index.get(label).copied()
    }

    pub fn get(&self, label: &Label) -> Option<&Target> {
        self.index_of(label).map(|i| &self.targets[i])
    }

    /// Every package of the workspace, sorted (including ones that failed to evaluate).
    pub fn packages(&self) -> &BTreeSet<String> {
        &self.packages
    }

    /// Direct dependencies of target `i`.
    pub fn deps(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(i), Direction::Outgoing)
            .map(|n| n.index())
    }

    /// Direct dependents (reverse dependencies) of target `i`.
    pub fn rdeps(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
            .map(|n| n.index())
    }

    /// The petgraph graph (node `i` is `targets()[i]`, edges point at dependencies).
    pub fn petgraph(&self) -> &DiGraph<(), ()> {
        &self.graph
    }

    /// The targets one pattern selects; an error when it selects none.
    pub fn resolve_pattern(
        &self,
        pattern: &TargetPattern,
    ) -> Result<BTreeSet<usize>, PatternMatchError> {
        if let TargetPattern::Label(label) = pattern {
            return match self.index_of(label) {
                Some(i) => Ok(BTreeSet::from([i])),
                None => Err(self.missing_label(label)),
            };
        }
        let package = match pattern {
            TargetPattern::Package(p) | TargetPattern::Recursive(p) => p,
            TargetPattern::Label(_) => unreachable!(),
        };
        let exists = match pattern {
            TargetPattern::Package(p) => self.packages.contains(p),
            // `//...` of a workspace without a BUILD file yet (`flow init`): nothing, no error,
            // as `bazel query //...` answers.
            TargetPattern::Recursive(p) if p.is_empty() && self.packages.is_empty() => {
                return Ok(BTreeSet::new())
            }
            _ => self.packages.iter().any(|p| pattern.covers_package(p)),
        };
        if !exists {
            return Err(PatternMatchError::NoSuchPackage {
                package: package.clone(),
                suggestions: closest_n(package, self.packages.iter().map(|s| s.as_str()), 3),
            });
        }
        let effects = self.reaching_effects();
        let found: BTreeSet<usize> = self
            .targets
            .iter()
            .enumerate()
            .filter(|(i, t)| pattern.matches(&t.label, t.is_manual() || effects[*i]))
            .map(|(i, _)| i)
            .collect();
        if found.is_empty() {
            return Err(PatternMatchError::NothingMatched {
                pattern: pattern.to_string(),
            });
        }
        Ok(found)
    }

    /// Per target, whether it is an effect or depends on one, directly or not: a wildcard
    /// skips those (`flow build //...` never deploys, not even through a group).
    fn reaching_effects(&self) -> Vec<bool> {
        let mut reached = vec![false; self.targets.len()];
        let mut stack: Vec<usize> = (0..self.targets.len())
            .filter(|&i| self.targets[i].kind.is_effect())
            .collect();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut reached[i], true) {
                stack.extend(self.rdeps(i));
            }
        }
        reached
    }

    /// The targets a list of patterns selects, applied in order (`-PATTERN` removes). Each
    /// including pattern must match something; errors for all of them are returned together.
    pub fn resolve_terms(
        &self,
        terms: &[PatternTerm],
    ) -> Result<BTreeSet<usize>, Vec<(PatternTerm, PatternMatchError)>> {
        let mut selected = BTreeSet::new();
        let mut errors = Vec::new();
        for term in terms {
            match self.resolve_pattern(&term.pattern) {
                Ok(set) if term.exclude => {
                    selected.retain(|i| !set.contains(i));
                }
                Ok(set) => selected.extend(set),
                Err(_) if term.exclude => {
                    // Excluding something that does not exist: harmless in Bazel too, unless
                    // the label is a typo of one that does; say so.
                    if let TargetPattern::Label(l) = &term.pattern {
                        let e = self.missing_label(l);
                        if e.help().is_some() {
                            errors.push((term.clone(), e));
                        }
                    }
                }
                Err(e) => errors.push((term.clone(), e)),
            }
        }
        if errors.is_empty() && selected.is_empty() {
            let pattern = terms
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(" ");
            if let Some(first) = terms.first() {
                errors.push((first.clone(), PatternMatchError::NothingMatched { pattern }));
            }
        }
        if errors.is_empty() {
            Ok(selected)
        } else {
            Err(errors)
        }
    }

    fn missing_label(&self, label: &Label) -> PatternMatchError {
        if !self.packages.contains(label.package()) {
            return PatternMatchError::NoSuchPackage {
                package: label.package().to_owned(),
                suggestions: closest_n(
                    label.package(),
                    self.packages.iter().map(|s| s.as_str()),
                    3,
                ),
            };
        }
        let in_package = self
            .targets
            .iter()
            .filter(|t| t.label.package() == label.package())
            .map(|t| &t.label);
        PatternMatchError::NoSuchTarget {
            label: label.clone(),
            suggestions: closest_in_package(label, in_package),
        }
    }
}

/// Every `$(...)` in a command must name something real (a dependency with outputs, ...).
fn check_expansions(
    targets: &[Target],
    index: &HashMap<Label, usize>,
    errors: &mut Vec<AnalysisError>,
) {
    for t in targets {
        // A dependency that is not in the graph was reported where it is (unknown, or in a
        // package that failed to evaluate): its expansions would only echo that error.
        if t.cmd.is_none() || t.deps.iter().any(|d| !index.contains_key(d)) {
            continue;
        }
        let outs_of = |l: &Label| index.get(l).map(|&i| targets[i].outs.as_slice());
        if let Err(e) = crate::expand::expand(t, crate::expand::Layout::Sandbox, outs_of) {
            let cmd = t.cmd.as_deref().unwrap_or("");
            let piece = &cmd[e.start.min(cmd.len())..e.end.min(cmd.len())];
            let text = t.at.text();
            let at = match text.find(piece) {
                Some(i) if !piece.is_empty() => t.at.sub(i, i + piece.len()),
                _ => t.at.clone(),
            };
            errors.push(AnalysisError::new(
                K::Expansion {
                    label: t.label.clone(),
                    message: e.message,
                    hint: e.help,
                },
                Some(at),
            ));
        }
    }
}

/// Targets of `wanted`'s package whose names are close to its name (the package part is equal,
/// so comparing whole labels would make every name look close).
fn closest_in_package<'a>(
    wanted: &Label,
    candidates: impl Iterator<Item = &'a Label>,
) -> Vec<Label> {
    let candidates: Vec<&Label> = candidates.collect();
    closest_n(wanted.name(), candidates.iter().map(|l| l.name()), 3)
        .into_iter()
        .filter_map(|name| {
            candidates
                .iter()
                .find(|l| l.name() == name)
                .map(|l| (*l).clone())
        })
        .collect()
}

/// Two targets of one package must not write the same output, or one inside the other.
/// Checks that no two targets declare the same output, or one inside the other, anywhere in
/// the workspace: outputs land in `flow-out/<package>/<out>`, so `//a:outer`'s directory `b/`
/// holds `//a/b:inner`'s `x.txt`, and whichever is written last sweeps the other away. A
/// target's own outputs are checked where it is declared.
fn check_outputs(targets: &[Target], errors: &mut Vec<AnalysisError>) {
    // (workspace-relative path, target, index into its `outs`), sorted by path: a path's
    // ancestors come before it. Targets are sorted by label, and the sort is stable.
    let mut outs: Vec<(String, &Target, usize)> = Vec::new();
    for t in targets {
        for (k, out) in t.outs.iter().enumerate() {
            let out = out.trim_end_matches('/');
            let path = match t.label.package() {
                "" => out.to_owned(),
                p => format!("{p}/{out}"),
            };
            outs.push((path, t, k));
        }
    }
    outs.sort_by(|a, b| a.0.cmp(&b.0));
    // The first declaration of each path.
    let mut first: HashMap<&str, (&Target, usize)> = HashMap::new();
    for (path, t, k) in &outs {
        let other_than_t = |p: &str| first.get(p).filter(|(o, _)| o.label != t.label).copied();
        let found = other_than_t(path)
            .map(|o| (o, path.as_str()))
            .or_else(|| ancestors(path).find_map(|a| other_than_t(a).map(|o| (o, a))));
        first.entry(path).or_insert((t, *k));
        let Some(((o, ok), place)) = found else {
            continue;
        };
        let at = find_literal(&t.at, &t.outs[*k]);
        let path_in_package = t.outs[*k].trim_end_matches('/').to_owned();
        let kind = if place == path && o.label.package() == t.label.package() {
            K::DuplicateOutput {
                path: path_in_package,
                first: o.label.clone(),
                second: t.label.clone(),
            }
        } else {
            K::OverlappingOutput {
                label: t.label.clone(),
                path: t.outs[*k].clone(),
                other: o.label.clone(),
                other_path: o.outs[ok].clone(),
                place: place.to_owned(),
                inside: place != path,
            }
        };
        errors.push(AnalysisError::new(kind, Some(at)).with_related(
            o.at.clone(),
            format!("`{}` declares `{}`", o.label, o.outs[ok]),
        ));
    }
}

/// The proper ancestors of a relative path, nearest first (`a/b/c` → `a/b`, `a`).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.rmatch_indices('/').map(move |(i, _)| &path[..i])
}

fn find_literal(call: &flow_rules::SourceSpan, value: &str) -> flow_rules::SourceSpan {
    let text = call.text();
    for q in ['"', '\''] {
        let needle = format!("{q}{value}{q}");
        if let Some(i) = text.find(&needle) {
            return call.sub(i, i + needle.len());
        }
    }
    call.clone()
}

/// Reports each strongly connected component as one cycle through its smallest label.
fn check_cycles(targets: &[Target], graph: &DiGraph<(), ()>, errors: &mut Vec<AnalysisError>) {
    for scc in tarjan_scc(graph) {
        if scc.len() < 2 {
            continue;
        }
        let members: HashSet<usize> = scc.iter().map(|n| n.index()).collect();
        let start = *members.iter().min().expect("non-empty component");
        // Breadth-first search inside the component for the shortest way back to `start`.
        let mut prev: HashMap<usize, usize> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut end = None;
        'search: while let Some(n) = queue.pop_front() {
            let mut next: Vec<usize> = graph
                .neighbors(NodeIndex::new(n))
                .map(|m| m.index())
                .filter(|m| members.contains(m))
                .collect();
            next.sort();
            for m in next {
                if m == start {
                    end = Some(n);
                    break 'search;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(m) {
                    e.insert(n);
                    queue.push_back(m);
                }
            }
        }
        let Some(mut n) = end else { continue };
        let mut path = vec![n];
        while n != start {
            n = prev[&n];
            path.push(n);
        }
        path.reverse(); // start ... end
        path.push(start);
        let cycle: Vec<Label> = path.iter().map(|&i| targets[i].label.clone()).collect();
        let edge_span = |from: usize, to: usize| {
            let t = &targets[from];
            t.deps
                .iter()
                .position(|d| *d == targets[to].label)
                .map(|k| t.dep_spans[k].clone())
                .unwrap_or_else(|| t.at.clone())
        };
        let last = path.len() - 1;
        let mut err = AnalysisError::new(
            K::Cycle {
                cycle: cycle.clone(),
            },
            Some(edge_span(path[last - 1], path[last])),
        );
        for w in path.windows(2).take(last - 1) {
            err = err.with_related(
                edge_span(w[0], w[1]),
                format!(
                    "`{}` depends on `{}`",
                    targets[w[0]].label, targets[w[1]].label
                ),
            );
        }
        errors.push(err);
    }
}
