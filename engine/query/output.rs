//! Rendering a query result: `--output label|json|dot|mermaid`.
//!
//! Every format lists targets in label order (the order of their indices) and is byte-for-byte
//! deterministic, so outputs can be diffed and checked in:
//! - `label`: one label per line, each ending in a newline (nothing for the empty set);
//! - `json`: a pretty-printed array of objects with the keys, in this order, `label`, `kind`,
//!   `generator` (only when a macro declared the target), `deps` (as declared), `srcs`, `outs`,
//!   `tags` and `doc` (only when set);
//! - `dot`: a Graphviz `digraph flow` with one node per target and the `deps` edges whose both
//!   ends are in the set;
//! - `mermaid`: a `graph LR` flowchart with the same nodes and edges, node ids `n0`, `n1`, ... by
//!   position in the result.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

use serde::Serialize;

use crate::graph::TargetGraph;

/// How `flow query` prints its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One label per line.
    #[default]
    Label,
    /// A JSON array of target objects.
    Json,
    /// A Graphviz digraph.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

/// The stable JSON shape of one target (not `Target`'s own `Serialize`, which may grow).
#[derive(Serialize)]
struct JsonTarget<'a> {
    label: String,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    generator: Option<&'a str>,
    deps: Vec<String>,
    srcs: &'a [String],
    outs: &'a [String],
    tags: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    doc: Option<&'a str>,
}

pub fn render(graph: &TargetGraph, set: &BTreeSet<usize>, format: OutputFormat) -> String {
    match format {
        OutputFormat::Label => set
            .iter()
            .map(|&i| format!("{}\n", graph.target(i).label))
            .collect(),
        OutputFormat::Json => json(graph, set),
        OutputFormat::Dot => dot(graph, set),
        OutputFormat::Mermaid => mermaid(graph, set),
    }
}

fn json(graph: &TargetGraph, set: &BTreeSet<usize>) -> String {
    let targets: Vec<JsonTarget<'_>> = set
        .iter()
        .map(|&i| {
            let t = graph.target(i);
            JsonTarget {
                label: t.label.to_string(),
                kind: t.kind.native(),
                generator: t.generator.as_deref(),
                deps: t.deps.iter().map(|d| d.to_string()).collect(),
                srcs: &t.srcs,
                outs: &t.outs,
                tags: &t.tags,
                doc: t.doc.as_deref(),
            }
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&targets).expect("strings always serialize");
    out.push('\n');
    out
}

/// The edges among `set`, as pairs of positions in `set`, sorted.
fn edges(graph: &TargetGraph, set: &BTreeSet<usize>) -> Vec<(usize, usize)> {
    let position: HashMap<usize, usize> = set.iter().enumerate().map(|(n, &i)| (i, n)).collect();
    let mut edges: Vec<(usize, usize)> = set
        .iter()
        .flat_map(|&i| {
            graph
                .deps(i)
                .filter(|j| set.contains(j))
                .map(move |j| (i, j))
        })
        .collect();
    edges.sort_unstable();
    edges.dedup();
    edges
        .into_iter()
        .map(|(i, j)| (position[&i], position[&j]))
        .collect()
}

/// A Graphviz quoted ID.
fn dot_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn dot(graph: &TargetGraph, set: &BTreeSet<usize>) -> String {
    let labels: Vec<String> = set
        .iter()
        .map(|&i| dot_quote(&graph.target(i).label.to_string()))
        .collect();
    let mut out = String::from("digraph flow {\n");
    for label in &labels {
        let _ = writeln!(out, "  {label};");
    }
    for (a, b) in edges(graph, set) {
        let _ = writeln!(out, "  {} -> {};", labels[a], labels[b]);
    }
    out.push_str("}\n");
    out
}

fn mermaid(graph: &TargetGraph, set: &BTreeSet<usize>) -> String {
    let mut out = String::from("graph LR\n");
    for (n, &i) in set.iter().enumerate() {
        let label = graph.target(i).label.to_string().replace('"', "#quot;");
        let _ = writeln!(out, "  n{n}[\"{label}\"]");
    }
    for (a, b) in edges(graph, set) {
        let _ = writeln!(out, "  n{a} --> n{b}");
    }
    out
}
