//! Evaluation of a parsed `Expr` against a `TargetGraph`: every value is a set of target indices.
//!
//! Semantics (Bazel's, on flow's graph; edges point from a target to its dependencies):
//! - `deps(x, d)`: `x` and everything reachable from it in at most `d` steps (unbounded without
//!   `d`);
//! - `rdeps(u, x, d)`: within the universe `U = deps(u)`, the targets that reach `x ∩ U` in at
//!   most `d` steps, `x ∩ U` included (as in Bazel, the universe is closed under dependencies,
//!   so `rdeps(//a:app, //lib:x)` finds the path through targets outside `//a`);
//! - `somepath(a, b)`: the nodes of one shortest path from `a` to `b`, found by a breadth-first
//!   search from all of `a` that visits neighbours in label order, so the answer is
//!   deterministic; empty when there is none;
//! - `allpaths(a, b)`: every node on some path from `a` to `b`: reachable from `a` and reaching
//!   `b`;
//! - `kind`, `attr`, `filter`: the members of `x` whose kind (or generating macro), attribute or
//!   label matches the regex anywhere (unanchored, as in Bazel);
//! - set operators: union, difference, intersection.
//!
//! Operands are evaluated left to right, so the first failing pattern is the one reported.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::lexer::SetOp;
use super::parser::Expr;
use super::{attr, QueryError};
use crate::graph::TargetGraph;

type Set = BTreeSet<usize>;

pub fn eval(graph: &TargetGraph, expr: &Expr) -> Result<Set, QueryError> {
    Ok(match expr {
        Expr::Pattern { pattern, span } => graph.resolve_pattern(pattern).map_err(|e| {
            let err = QueryError::new(*span, e.to_string());
            match e.help() {
                Some(help) => err.with_help(help),
                None => err,
            }
        })?,
        Expr::Deps { of, depth } => {
            let start = eval(graph, of)?;
            reach(&start, *depth, |i| graph.deps(i).collect(), None)
        }
        Expr::Rdeps {
            universe,
            of,
            depth,
        } => {
            let universe = reach(
                &eval(graph, universe)?,
                None,
                |i| graph.deps(i).collect(),
                None,
            );
            let start: Set = eval(graph, of)?.intersection(&universe).copied().collect();
            reach(
                &start,
                *depth,
                |i| graph.rdeps(i).collect(),
                Some(&universe),
            )
        }
        Expr::Somepath { from, to } => {
            let from = eval(graph, from)?;
            let to = eval(graph, to)?;
            somepath(graph, &from, &to)
        }
        Expr::Allpaths { from, to } => {
            let from = reach(&eval(graph, from)?, None, |i| graph.deps(i).collect(), None);
            let to = reach(&eval(graph, to)?, None, |i| graph.rdeps(i).collect(), None);
            from.intersection(&to).copied().collect()
        }
        Expr::Kind { regex, of } => {
            let mut set = eval(graph, of)?;
            set.retain(|&i| {
                let t = graph.target(i);
                regex.is_match(t.kind.native())
                    || t.generator.as_deref().is_some_and(|g| regex.is_match(g))
            });
            set
        }
        Expr::Attr { name, regex, of } => {
            let mut set = eval(graph, of)?;
            set.retain(|&i| attr::matches(graph.target(i), name, regex));
            set
        }
        Expr::Filter { regex, of } => {
            let mut set = eval(graph, of)?;
            set.retain(|&i| regex.is_match(&graph.target(i).label.to_string()));
            set
        }
        Expr::Set { op, left, right } => {
            let left = eval(graph, left)?;
            let right = eval(graph, right)?;
            match op {
                SetOp::Union => left.union(&right).copied().collect(),
                SetOp::Except => left.difference(&right).copied().collect(),
                SetOp::Intersect => left.intersection(&right).copied().collect(),
            }
        }
    })
}

/// `start` and every node reachable from it through `next` in at most `depth` steps, staying
/// inside `within` when given.
fn reach(
    start: &Set,
    depth: Option<usize>,
    next: impl Fn(usize) -> Vec<usize>,
    within: Option<&Set>,
) -> Set {
    let mut seen = start.clone();
    let mut frontier: Vec<usize> = start.iter().copied().collect();
    let mut level = 0;
    while !frontier.is_empty() && depth.is_none_or(|d| level < d) {
        let mut found = Vec::new();
        for n in frontier {
            for m in next(n) {
                if within.is_none_or(|w| w.contains(&m)) && seen.insert(m) {
                    found.push(m);
                }
            }
        }
        frontier = found;
        level += 1;
    }
    seen
}

/// The nodes of the first shortest path from `from` to `to` found by a breadth-first search
/// that starts from `from` in label order and visits dependencies in label order.
fn somepath(graph: &TargetGraph, from: &Set, to: &Set) -> Set {
    if let Some(&both) = from.intersection(to).next() {
        return Set::from([both]);
    }
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue: VecDeque<usize> = from.iter().copied().collect();
    while let Some(n) = queue.pop_front() {
        let mut next: Vec<usize> = graph.deps(n).collect();
        next.sort_unstable();
        for m in next {
            if from.contains(&m) || parent.contains_key(&m) {
                continue;
            }
            parent.insert(m, n);
            if to.contains(&m) {
                let mut path = Set::from([m]);
                let mut k = m;
                while let Some(&p) = parent.get(&k) {
                    path.insert(p);
                    k = p;
                }
                return path;
            }
            queue.push_back(m);
        }
    }
    Set::new()
}
