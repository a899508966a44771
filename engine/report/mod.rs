//! `flow report`: a quality report of the workspace as its last build left it (docs/report.md):
//! the gates' tables, coverage by package, test results and findings by target, read from the
//! outputs under `flow-out/` (by the same readers as gates, `gates/reports.rs`), and what the
//! last recorded build ran, reused and failed, from the history. Written as Markdown (a PR
//! comment, a job summary: `markdown.rs`) or as one self-contained HTML page (`html.rs`).

pub mod findings;
pub mod html;
pub mod markdown;
pub mod trends;

use std::collections::BTreeMap;
use std::path::Path;

use flow_cache::Outcome;
use flow_rules::TargetKind;
use serde::Serialize;

use crate::gates::reports::{self as typed, Metric};
use crate::graph::TargetGraph;
use crate::reports::gates::Table;

/// The most new findings a report lists (the rest are counted).
pub const NEW_SHOWN: usize = 100;

/// The last build this workspace recorded in the history.
#[derive(Clone, Debug, Serialize)]
pub struct Build {
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub args: String,
    pub outcome: String,
    /// The build's own counts (skipped actions included, which have no run row).
    pub ran: u64,
    pub cached: u64,
    pub failed: u64,
    pub skipped: u64,
    pub flaky: u64,
    /// Each action the build recorded: label, outcome, seconds it ran, when it ended.
    pub runs: Vec<Run>,
    /// The build's critical path: the chain of dependencies with the longest total run time
    /// (reused actions count zero), from its first action to its last.
    pub critical_path: Vec<String>,
    /// Its length, in seconds.
    pub critical_seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub label: String,
    pub outcome: String,
    pub seconds: f64,
    pub finished_ms: i64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Coverage {
    pub package: String,
    pub percent: f64,
    pub statements: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Tests {
    pub label: String,
    pub passed: f64,
    pub failed: f64,
    pub errors: f64,
    pub skipped: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Findings {
    pub label: String,
    /// `vulnerabilities`, `findings` or `lint`.
    pub kind: String,
    pub total: f64,
    /// `2 high, 3 low`.
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub workspace: String,
    pub build: Option<Build>,
    pub gates: Vec<Table>,
    /// The gates with no table under `flow-out/` (not built yet, skipped, or failed to write).
    pub gates_without_table: Vec<String>,
    pub coverage: Vec<Coverage>,
    pub tests: Vec<Tests>,
    pub findings: Vec<Findings>,
    /// Every single finding of those reports (what `--base` compares).
    pub finding_items: Vec<findings::Item>,
    /// With `--base FILE`: the findings that FILE's report does not have.
    pub new_findings: Option<Vec<findings::Item>>,
    /// Succeeded deployments per day, per environment (the last 30 days).
    pub deployments: Vec<trends::Series>,
    /// The cache hit rate per day (the last 30 days).
    pub hit_rate: Option<trends::Series>,
}

/// The report of `graph`'s targets, from the outputs under `out_root` and `build`.
pub fn collect(
    graph: &TargetGraph,
    out_root: &Path,
    workspace: &str,
    build: Option<Build>,
) -> Report {
    let build = build.map(|mut b| {
        let (path, seconds) = critical_path(graph, &b.runs);
        b.critical_path = path;
        b.critical_seconds = seconds;
        b
    });
    let mut report = Report {
        workspace: workspace.to_owned(),
        build,
        ..Report::default()
    };
    // package → (percent × statements, statements)
    let mut coverage: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for t in graph.targets() {
        let label = t.label.to_string();
        for out in &t.outs {
            let path = out_root.join(crate::expand::join_path(
                t.label.package(),
                out.trim_end_matches('/'),
            ));
            if t.kind == TargetKind::Gate {
                match crate::reports::gates::read(&path) {
                    Some(table) => report.gates.push(table),
                    None => report.gates_without_table.push(label.clone()),
                }
                continue;
            }
            let (bytes, found_all) = read_reports(&path);
            if found_all
                .iter()
                .any(|f| matches!(f.kind, "vulnerabilities" | "findings" | "lint"))
            {
                report.finding_items.extend(findings::items(&label, &bytes));
            }
            for found in found_all {
                let n = |k: &str| match found.metrics.get(k) {
                    Some(Metric::Number(v)) => *v,
                    Some(Metric::Names(v)) => v.len() as f64,
                    None => 0.0,
                };
                match found.kind {
                    "coverage" => {
                        let c = coverage.entry(t.label.package().to_owned()).or_default();
                        c.0 += n("percent") * n("statements").max(1.0);
                        c.1 += n("statements").max(1.0);
                    }
                    "tests" => report.tests.push(Tests {
                        label: label.clone(),
                        passed: n("passed"),
                        failed: n("failed"),
                        errors: n("errors"),
                        skipped: n("skipped"),
                    }),
                    kind @ ("vulnerabilities" | "findings" | "lint") => {
                        let parts: &[&str] = match kind {
                            "vulnerabilities" => &["critical", "high", "medium", "low"],
                            "findings" => &["error", "warning", "note"],
                            _ => &["fixable"],
                        };
                        let detail = parts
                            .iter()
                            .filter(|p| n(p) > 0.0)
                            .map(|p| format!("{} {p}", n(p)))
                            .collect::<Vec<_>>()
                            .join(", ");
                        let total = match kind {
                            "lint" => n("violations"),
                            _ => n("total"),
                        };
                        report.findings.push(Findings {
                            label: label.clone(),
                            kind: kind.to_owned(),
                            total,
                            detail,
                        });
                    }
                    _ => {}
                }
            }
        }
    }
    report.coverage = coverage
        .into_iter()
        .map(|(package, (weighted, statements))| Coverage {
            package,
            percent: weighted / statements,
            statements,
        })
        .collect();
    report
}

/// The findings rows that found something, and those that found nothing.
pub fn split_findings(all: &[Findings]) -> (Vec<&Findings>, Vec<&Findings>) {
    all.iter().partition(|f| f.total > 0.0)
}

/// The typed reports in an output file, and its bytes (empty for a file of no report kind).
fn read_reports(path: &Path) -> (Vec<u8>, Vec<typed::Found>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Default::default();
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let typed = name.ends_with(".json") || name.ends_with(".xml") || name.ends_with(".sarif");
    if !meta.is_file() || !typed || meta.len() > typed::MAX_REPORT_BYTES {
        return Default::default();
    }
    let Ok(bytes) = std::fs::read(path) else {
        return Default::default();
    };
    match typed::read(&bytes, &[]) {
        Ok(found) if !found.is_empty() => (bytes, found),
        _ => Default::default(),
    }
}

/// The critical path of a build's runs over `graph` (its labels from first to last) and its
/// length in seconds: `reports::trace::longest_chain`, the same as `flow build --profile`'s.
fn critical_path(graph: &TargetGraph, runs: &[Run]) -> (Vec<String>, f64) {
    let seconds: BTreeMap<&str, f64> = runs
        .iter()
        .filter(|r| !matches!(r.outcome.as_str(), "cached" | "skipped" | "cancelled"))
        .map(|r| (r.label.as_str(), r.seconds))
        .collect();
    let labels: Vec<String> = graph
        .targets()
        .iter()
        .map(|t| t.label.to_string())
        .collect();
    let own: Vec<std::time::Duration> = labels
        .iter()
        .map(|l| {
            let s = seconds.get(l.as_str()).copied().unwrap_or(0.0);
            std::time::Duration::from_secs_f64(s.max(0.0))
        })
        .collect();
    let deps: Vec<Vec<usize>> = (0..labels.len()).map(|i| graph.deps(i).collect()).collect();
    let deps: Vec<&[usize]> = deps.iter().map(Vec::as_slice).collect();
    let mut chain = crate::reports::trace::longest_chain(&deps, &own);
    chain.reverse();
    let total: f64 = chain.iter().map(|&i| own[i].as_secs_f64()).sum();
    // To the millisecond the history measures in.
    let total = (total * 1000.0).round() / 1000.0;
    (
        chain.into_iter().map(|i| labels[i].clone()).collect(),
        total,
    )
}

/// The last build of `workspace` the history holds, with its runs.
pub fn last_build(
    cache: &flow_cache::Cache,
    workspace: &str,
) -> Result<Option<Build>, flow_cache::CacheError> {
    let Some(row) = cache
        .recent_builds(200)?
        .into_iter()
        .find(|b| b.workspace == workspace && b.finished_at_ms.is_some())
    else {
        return Ok(None);
    };
    let runs = cache
        .runs_of_build(row.id)?
        .into_iter()
        .map(|r| Run {
            label: r.label,
            outcome: r.outcome.words().to_owned(),
            seconds: match r.outcome {
                Outcome::Cached => 0.0,
                _ => r.duration_ms as f64 / 1000.0,
            },
            finished_ms: r.finished_at_ms,
        })
        .collect();
    // The history keeps the whole command line; the program's own path says nothing.
    let args = row
        .args
        .split_once(' ')
        .map_or(String::new(), |(_, rest)| rest.to_owned());
    let s = row.summary.unwrap_or_default();
    Ok(Some(Build {
        started_ms: row.started_at_ms,
        finished_ms: row.finished_at_ms,
        args,
        outcome: s.outcome,
        ran: s.ran,
        cached: s.cached + s.up_to_date,
        failed: s.failed,
        skipped: s.skipped,
        flaky: s.flaky,
        runs,
        critical_path: Vec::new(),
        critical_seconds: 0.0,
    }))
}
