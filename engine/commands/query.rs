//! `flow query EXPR`: evaluates the workspace, then a query expression over its target graph.

use std::io::Write;
use std::path::Path;

use crate::analysis::load_graph;
use crate::error::Error;
use crate::query::{self, OutputFormat};

pub fn run(
    start: &Path,
    expr: &str,
    output: OutputFormat,
    cache_dir: Option<&Path>,
) -> Result<i32, Error> {
    // The evaluation snapshot lives in the cache directory (`--cache-dir` included).
    let (ws, graph, _) = load_graph(start, cache_dir)?;
    let package = ws.package_of(start);
    let set = query::evaluate_in(&graph, expr, &package).map_err(|error| Error::Query {
        expr: expr.to_owned(),
        error,
    })?;
    let text = query::render(&graph, &set, output);
    let mut out = std::io::stdout().lock();
    // A closed pipe (`flow query ... | head`) is not an error worth reporting.
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    Ok(0)
}
