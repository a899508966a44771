//! `flow test [PATTERNS]`: builds the test targets among the selected ones (the tasks a
//! `py_test` declares, one per Python version, and any target tagged `test`), then prints a
//! test summary: per target, its Python version and the test cases of its JUnit output
//! (passed, failed, errors, skipped), kept from a failed run too.
//!
//! The build is `flow build -k` of those targets (the same lines, the same cache); the summary
//! reads their JUnit outputs under `flow-out/` (`reports/found.rs`).

use std::path::Path;

use flow_rules::{Label, TargetKind};

use crate::analysis::load_graph;
use crate::error::Error;
use crate::graph::TargetGraph;
use crate::reports::found::{parse_junit, CaseResult};
use crate::session::SessionArgs;

/// Whether target `i` is a test: a task declared by `py_test`, or tagged `test`.
fn is_test(graph: &TargetGraph, i: usize) -> bool {
    let t = graph.target(i);
    t.kind != TargetKind::Group
        && (t.generator.as_deref() == Some("py_test") || t.tags.iter().any(|tag| tag == "test"))
}

pub fn run(
    start: &Path,
    patterns: &[String],
    jobs: Option<usize>,
    cache_flag: Option<&Path>,
) -> Result<i32, Error> {
    let terms = crate::analysis::parse_patterns(patterns)?;
    let (ws, graph, cache_dir) = load_graph(start, cache_flag)?;
    let selected = match graph.targets().is_empty() {
        // A new workspace: no test yet is no error (as `flow build` says).
        true => Default::default(),
        false => graph.resolve_terms(&terms).map_err(Error::Unmatched)?,
    };
    // What the patterns reach: a group (`py_test`'s `NAME`) stands for its tests.
    let mut tests = std::collections::BTreeSet::new();
    let mut todo: Vec<usize> = selected.into_iter().collect();
    let mut seen = std::collections::HashSet::new();
    while let Some(i) = todo.pop() {
        if !seen.insert(i) {
            continue;
        }
        if is_test(&graph, i) {
            tests.insert(i);
        } else if graph.target(i).kind == TargetKind::Group {
            todo.extend(graph.deps(i));
        }
    }
    if tests.is_empty() {
        println!("flow test: no test among the selected targets (py_test, or tagged `test`)");
        return Ok(0);
    }
    let labels: Vec<String> = tests
        .iter()
        .map(|&i| graph.target(i).label.to_string())
        .collect();
    let code = crate::commands::build::run(
        &ws.root,
        crate::commands::build::BuildArgs::of_labels(
            &labels,
            SessionArgs {
                cache_dir: Some(&cache_dir),
                jobs,
                keep_going: true,
            },
        ),
    )?;
    let out_root = crate::session::out_root(&ws.root);
    println!();
    println!("flow test: {} test target(s)", labels.len());
    for &i in &tests {
        println!("{}", summary_line(&graph, i, &out_root));
    }
    Ok(code)
}

/// `//calc:test_py3_11  Python 3.11  2 passed, 1 failed` for target `i`.
fn summary_line(graph: &TargetGraph, i: usize, out_root: &Path) -> String {
    let t = graph.target(i);
    let python = t
        .tools
        .iter()
        .find_map(|tool| tool.strip_prefix("python"))
        .filter(|v| !v.is_empty())
        .map_or(String::new(), |v| format!("  Python {v}"));
    let counts = junit_counts(&t.label, &t.outs, out_root);
    format!("  {}{python}  {counts}", t.label)
}

/// The counts of a target's JUnit outputs under the output root, or why there are none.
fn junit_counts(label: &Label, outs: &[String], out_root: &Path) -> String {
    let (mut passed, mut failed, mut errors, mut skipped, mut files) = (0, 0, 0, 0, 0);
    for out in outs.iter().filter(|o| o.ends_with(".xml")) {
        let path = out_root.join(crate::expand::join_path(label.package(), out));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(Some(suites)) = parse_junit(&bytes) else {
            continue;
        };
        files += 1;
        for case in suites.iter().flat_map(|s| &s.cases) {
            match case.result {
                CaseResult::Passed => passed += 1,
                CaseResult::Failed { .. } => failed += 1,
                CaseResult::Error { .. } => errors += 1,
                CaseResult::Skipped { .. } => skipped += 1,
            }
        }
    }
    if files == 0 {
        return "no JUnit report (see its line above)".to_owned();
    }
    let mut parts = vec![format!("{passed} passed")];
    for (n, what) in [(failed, "failed"), (errors, "errors"), (skipped, "skipped")] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(", ")
}
