//! `flow query`: a subset of Bazel's query language over the `TargetGraph`.
//!
//! ```text
//! expr := //pattern | 'pattern' | (expr) | expr op expr       op: + union - except ^ intersect
//!       | deps(expr[, depth]) | rdeps(universe, expr[, depth])
//!       | somepath(from, to) | allpaths(from, to)
//!       | kind(regex, expr) | attr(name, regex, expr) | filter(regex, expr)
//! ```
//!
//! A query runs in three steps:
//! 1. `lexer` splits the expression into words, parentheses, commas and operators, each with its
//!    byte span;
//! 2. `parser` builds an `Expr` and checks everything that needs no graph (function names,
//!    arities, depths, regexes, attribute names, pattern syntax);
//! 3. `eval` computes the set of target indices, resolving patterns against the graph.
//!
//! `output` then renders a set as labels, JSON, Graphviz or Mermaid.
//!
//! Invariants: a result is a set of indices into `graph.targets()`, so it is always sorted by
//! label; every error carries the byte span of the part of the expression it is about, for a
//! caret under it.
//!
//! Limits, compared with Bazel: no `let`, `set(...)`, `labels`, `tests`, `buildfiles`,
//! `siblings`, `same_pkg_direct_rdeps` or `visible`; no `--universe_scope`; patterns cannot
//! exclude with a leading `-` inside an expression (write `x - y`).

mod attr;
mod eval;
mod lexer;
mod output;
mod parser;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;

use crate::graph::TargetGraph;
use lexer::Span;

pub use output::OutputFormat;

/// Why a query could not be parsed or evaluated, and where in the expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryError {
    /// Byte offset in the expression of what the error is about.
    pub offset: usize,
    /// Its length in bytes (0 for "at the end").
    pub len: usize,
    pub message: String,
    pub help: Option<String>,
}

impl QueryError {
    fn new(span: Span, message: impl Into<String>) -> QueryError {
        QueryError {
            offset: span.start,
            len: span.end - span.start,
            message: message.into(),
            help: None,
        }
    }

    fn with_help(mut self, help: impl Into<String>) -> QueryError {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for QueryError {}

/// Parses and evaluates `expr`: the indices (into `graph.targets()`) of the targets it denotes.
pub fn evaluate(graph: &TargetGraph, expr: &str) -> Result<BTreeSet<usize>, QueryError> {
    evaluate_in(graph, expr, "")
}

/// `evaluate`, with relative patterns relative to `package` (the one flow started in).
pub fn evaluate_in(
    graph: &TargetGraph,
    expr: &str,
    package: &str,
) -> Result<BTreeSet<usize>, QueryError> {
    let parsed = parser::parse(expr, package)?;
    eval::eval(graph, &parsed)
}

/// Renders a query result in `format`; see `output` for each format.
pub fn render(graph: &TargetGraph, set: &BTreeSet<usize>, format: OutputFormat) -> String {
    output::render(graph, set, format)
}
