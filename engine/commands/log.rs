//! `flow log LABEL`: replays the logs of the last recorded run of a target, whether it ran or
//! was restored from the cache.

use std::io::Write;
use std::path::Path;

use flow_rules::Label;

use crate::analysis::{load_graph, open_cache};
use crate::error::Error;

/// Parses a single target label given on the command line, and checks that it exists.
pub fn single_label(graph: &crate::graph::TargetGraph, text: &str) -> Result<Label, Error> {
    // `//...` and `//pkg:all` parse as labels too (`//...:...`): they are patterns here.
    // (A target really named `all` is that target.)
    let named = Label::parse(text, None).is_ok_and(|l| graph.get(&l).is_some());
    if let Some(pattern) = flow_rules::TargetPattern::parse(text)
        .ok()
        .filter(|_| !named)
    {
        if !matches!(pattern, flow_rules::TargetPattern::Label(_)) {
            return Err(Error::Usage {
                message: format!("`{text}` is a pattern; this command takes one target label"),
                help: Some("name one target, e.g. `//pkg:name` (or `:name` in its package)".into()),
            });
        }
    }
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
    let members = members(&graph, &label);
    let Some(members) = members else {
        // An action: its last run, or an error saying how to get one.
        let Some(run) = cache
            .last_run(&workspace, &label.to_string())
            .map_err(cache_err)?
        else {
            return Err(Error::Usage {
                message: format!("`{label}` has no recorded run in this workspace"),
                help: Some(format!("run `flow build {label}` first")),
            });
        };
        replay(&cache, &label.to_string(), run).map_err(cache_err)?;
        return Ok(0);
    };
    // A group: the last run of each action it stands for, in label order.
    let mut replayed = 0;
    for member in &members {
        match cache.last_run(&workspace, member).map_err(cache_err)? {
            Some(run) => {
                replay(&cache, member, run).map_err(cache_err)?;
                replayed += 1;
            }
            None => eprintln!("flow: {member} (of {label}): no recorded run"),
        }
    }
    if replayed == 0 {
        return Err(Error::Usage {
            message: format!(
                "`{label}` is a group none of whose {} action(s) has a recorded run in this \
                 workspace",
                members.len()
            ),
            help: Some(format!("run `flow build {label}` first")),
        });
    }
    Ok(0)
}

/// For a group, the labels of the actions it stands for (through nested groups), sorted;
/// `None` for an action.
fn members(graph: &crate::graph::TargetGraph, label: &Label) -> Option<Vec<String>> {
    let start = graph.index_of(label)?;
    if graph.target(start).kind != flow_rules::TargetKind::Group {
        return None;
    }
    let mut found = std::collections::BTreeSet::new();
    let mut todo: Vec<usize> = graph.deps(start).collect();
    let mut seen = std::collections::HashSet::new();
    while let Some(i) = todo.pop() {
        if !seen.insert(i) {
            continue;
        }
        match graph.target(i).kind {
            flow_rules::TargetKind::Group => todo.extend(graph.deps(i)),
            _ => {
                found.insert(graph.target(i).label.to_string());
            }
        }
    }
    Some(found.into_iter().collect())
}

/// Prints one run: a header line on stderr, then what it printed.
fn replay(
    cache: &flow_cache::Cache,
    label: &str,
    run: flow_cache::ActionRun,
) -> Result<(), flow_cache::CacheError> {
    eprintln!(
        "flow: last run of {label}: {} ({:.2}s, key {})",
        run.outcome.words(),
        run.duration_ms as f64 / 1000.0,
        &run.key.to_string()[..12]
    );
    for (digest, to_stdout) in [(run.stdout, true), (run.stderr, false)] {
        let Some(d) = digest else { continue };
        let bytes = cache.cas().read_verified(&d)?;
        let _ = if to_stdout {
            std::io::stdout().write_all(&bytes)
        } else {
            std::io::stderr().write_all(&bytes)
        };
    }
    Ok(())
}
