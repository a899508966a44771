//! `flow test [PATTERNS]`: builds the test targets among the selected ones (the tasks a
//! `py_test` declares, one per Python version, and any target tagged `test`), then prints a
//! test summary: per target, its Python version and the test cases of its JUnit output
//! (passed, failed, errors, skipped), kept from a failed run too.
//!
//! The build is `flow build -k` of those targets (the same lines, the same cache); the summary
//! reads their JUnit outputs under `flow-out/` (`reports/found.rs`) and, for a target without
//! one, says how it ended, from the build's own events stream (`reports/events.rs`).

use std::collections::HashMap;
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
    // How each target ended, from the events stream of its build (a scratch file).
    let tmp = cache_dir.join("tmp");
    let _ = std::fs::create_dir_all(&tmp);
    let events = tempfile::Builder::new()
        .prefix(".flow-test-events")
        .tempfile_in(&tmp)
        .map_err(|e| Error::Io {
            path: tmp.clone(),
            action: "create a file in",
            error: e.to_string(),
        })?;
    let mut args = crate::commands::build::BuildArgs::of_labels(
        &labels,
        SessionArgs {
            cache_dir: Some(&cache_dir),
            jobs,
            keep_going: true,
            ..SessionArgs::default()
        },
    );
    args.reports.events = Some(events.path().to_path_buf());
    let code = crate::commands::build::run(&ws.root, args)?;
    let ended = outcomes(events.path());
    let out_root = crate::session::out_root(&ws.root);
    println!();
    println!("flow test: {} test target(s)", labels.len());
    for &i in &tests {
        let t = graph.target(i);
        let ended = ended.get(&t.label.to_string());
        println!("{}", summary_line(&graph, i, &out_root, ended));
    }
    Ok(code)
}

/// How an action ended: the `outcome` of its `finished` event, and its `why`.
type Ended = (String, Option<String>);

/// The `finished` events of an events stream, by label.
fn outcomes(events: &Path) -> HashMap<String, Ended> {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    let mut out = HashMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["event"] != "finished" {
            continue;
        }
        if let (Some(label), Some(outcome)) = (v["label"].as_str(), v["outcome"].as_str()) {
            let why = v["why"].as_str().map(str::to_owned);
            out.insert(label.to_owned(), (outcome.to_owned(), why));
        }
    }
    out
}

/// `//calc:test_py3_11  Python 3.11  2 passed, 1 failed` for target `i`, which ended as
/// `ended` says (`None`: it never started).
fn summary_line(graph: &TargetGraph, i: usize, out_root: &Path, ended: Option<&Ended>) -> String {
    let t = graph.target(i);
    let python = t
        .tools
        .iter()
        .find_map(|tool| tool.strip_prefix("python"))
        .filter(|v| !v.is_empty())
        .map_or(String::new(), |v| format!("  Python {v}"));
    let outcome = ended.map(|(o, _)| o.as_str());
    let why = ended.and_then(|(_, why)| why.as_deref());
    let counts = match outcome {
        // Its JUnit output would be an earlier run's (or none): say why it did not run.
        Some("skipped") => format!("skipped: {}", why.unwrap_or("not run")),
        None => "not run (the build stopped first)".to_owned(),
        Some(outcome) => {
            let failed = outcome == "failed";
            let ended = match (failed, why) {
                (true, Some(why)) => format!("failed: {}", first_clause(why)),
                (true, None) => "failed".to_owned(),
                (false, _) if outcome == "flaky" => "passed after a retry".to_owned(),
                (false, _) => "passed".to_owned(),
            };
            match junit_counts(&t.label, &t.outs, out_root) {
                Err(none) => format!("{ended} ({none})"),
                // The cases and the command agree: the counts say it all.
                Ok(c) if c.cases > 0 && (c.failing > 0) == failed => c.text,
                // They disagree (a command that exits 1 with every case passed, or 0 with a
                // failed case), or there is no case: both, so neither hides the other.
                Ok(c) if c.cases == 0 => format!("{ended} (no test case in its JUnit report)"),
                Ok(c) => format!("{}; the target {ended}", c.text),
            }
        }
    };
    format!("  {}{python}  {counts}", t.label)
}

/// `exit 1, 0.30s` → `exit 1`; `timed out after 1.0s; its process group was killed` →
/// `timed out after 1.0s`.
fn first_clause(why: &str) -> &str {
    why.split([',', ';']).next().unwrap_or(why)
}

/// The test cases of a target's JUnit reports, counted.
struct Counts {
    /// `2 passed, 1 failed`.
    text: String,
    cases: usize,
    /// Failed or in error.
    failing: usize,
}

/// The counts of a target's JUnit outputs under the output root; `Err` says why there are none
/// to count (no JUnit output, or one that cannot be read: the reason is shown, never hidden).
fn junit_counts(label: &Label, outs: &[String], out_root: &Path) -> Result<Counts, String> {
    let (mut passed, mut failed, mut errors, mut skipped, mut files) = (0, 0, 0, 0, 0);
    let mut unreadable = Vec::new();
    for out in outs.iter().filter(|o| o.ends_with(".xml")) {
        let path = out_root.join(crate::expand::join_path(label.package(), out));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let suites = match parse_junit(&bytes) {
            Ok(Some(suites)) => suites,
            Ok(None) => {
                unreadable.push(format!("`{out}` is not JUnit XML"));
                continue;
            }
            Err(e) => {
                unreadable.push(format!("`{out}` is not valid JUnit XML: {e}"));
                continue;
            }
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
        return Err(match unreadable.is_empty() {
            true => "no JUnit report".to_owned(),
            false => unreadable.join("; "),
        });
    }
    let mut parts = vec![format!("{passed} passed")];
    let error_word = if errors == 1 { "error" } else { "errors" };
    for (n, what) in [
        (failed, "failed"),
        (errors, error_word),
        (skipped, "skipped"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if !unreadable.is_empty() {
        parts.push(format!("and {}", unreadable.join("; ")));
    }
    Ok(Counts {
        text: parts.join(", "),
        cases: passed + failed + errors + skipped,
        failing: failed + errors,
    })
}
