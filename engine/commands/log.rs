//! `flow log LABEL`: replays the logs of the last recorded run of a target, whether it ran or
//! was restored from the cache.

use std::io::Write;
use std::path::Path;

use flow_rules::Label;

use crate::analysis::{load_graph, open_cache};
use crate::error::Error;

/// Parses a single target label given on the command line, and checks that it exists.
pub fn single_label(graph: &crate::graph::TargetGraph, text: &str) -> Result<Label, Error> {
    let label = Label::parse(text, None).map_err(|error| Error::BadPattern { error })?;
    if graph.get(&label).is_none() {
        let term = flow_rules::PatternTerm {
            exclude: false,
            pattern: flow_rules::TargetPattern::Label(label.clone()),
        };
        let err = graph
            .resolve_pattern(&term.pattern)
            .expect_err("the label is not in the graph");
        return Err(Error::Unmatched(vec![(term, err)]));
    }
    Ok(label)
}

pub fn run(start: &Path, label: &str, cache_dir: Option<&Path>) -> Result<i32, Error> {
    let (ws, graph, dir) = load_graph(start, cache_dir)?;
    let label = single_label(&graph, label)?;
    let cache = open_cache(&dir)?;
    let workspace = ws.root.display().to_string();
    let cache_err = |e: flow_cache::CacheError| Error::Cache {
        path: dir.clone(),
        error: e.to_string(),
    };
    let Some(run) = cache
        .last_run(&workspace, &label.to_string())
        .map_err(cache_err)?
    else {
        return Err(Error::Usage {
            message: format!("`{label}` has no recorded run in this workspace"),
            help: Some(format!("run `flow build {label}` first")),
        });
    };
    eprintln!(
        "flow: last run of {label}: {} ({:.2}s, key {})",
        run.outcome.as_str(),
        run.duration_ms as f64 / 1000.0,
        &run.key.to_string()[..12]
    );
    for (digest, to_stdout) in [(run.stdout, true), (run.stderr, false)] {
        let Some(d) = digest else { continue };
        let bytes = cache.cas().read_verified(&d).map_err(cache_err)?;
        let _ = if to_stdout {
            std::io::stdout().write_all(&bytes)
        } else {
            std::io::stderr().write_all(&bytes)
        };
    }
    Ok(0)
}
