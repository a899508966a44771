//! What the actions' own outputs and logs tell the reports: the test cases of their JUnit XML
//! outputs, the results of their SARIF outputs, and `file:line:` diagnostics in a failed
//! action's log, each placed at a workspace file and line where one can be found.
//!
//! Outputs are read under the output root at their declared paths (a failed run's outputs are
//! kept there too), as regular files of at most [`MAX_REPORT`] bytes that stay inside the
//! output root: a report is never followed out of the tree, nor read without bound.

use std::collections::BTreeMap;
use std::path::Path;

use super::junit_file::parse_junit_within;
pub use super::junit_file::{parse_junit, Budget, Case, CaseResult, Suite};
use super::{Context, Outcome, Record};
use crate::plan::Action;

/// The largest output read as a report.
pub const MAX_REPORT: u64 = 16 << 20;

/// Test cases of the actions' JUnit outputs the reports take, at most.
pub const MAX_CASES: usize = 100_000;

/// Diagnostics read from one failed action's log, at most.
const MAX_LOG_DIAGNOSTICS: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warning,
}

/// A finding at a source line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub label: String,
    pub file: String,
    pub line: u32,
    pub col: Option<u32>,
    pub level: Level,
    pub title: String,
    pub message: String,
}

/// Everything found, by label.
#[derive(Default)]
pub struct Found {
    pub suites: BTreeMap<String, Vec<Suite>>,
    pub diagnostics: Vec<Diagnostic>,
    /// Outputs that look like reports but could not be read, one warning each.
    pub problems: Vec<String>,
}

impl Found {
    pub fn collect(records: &[&Record], ctx: &Context) -> Found {
        let mut found = Found::default();
        let Some(plan) = ctx.plan else {
            return found;
        };
        let mut budget = Budget::new(MAX_CASES);
        let by_label: BTreeMap<String, &Action> = plan
            .nodes
            .iter()
            .map(|a| (a.label.to_string(), a))
            .collect();
        for r in records {
            let Some(action) = by_label.get(&r.label) else {
                continue;
            };
            if matches!(r.outcome, Outcome::Skipped { .. } | Outcome::Effect { .. }) {
                continue;
            }
            let failed = matches!(r.outcome, Outcome::Failed { .. });
            let before = found.diagnostics.len();
            for out in action.outs.iter().filter(|o| !o.ends_with('/')) {
                let shown = format!(
                    "`{}` of {}",
                    crate::expand::join_path(&action.package, out),
                    r.label
                );
                let bytes = match read_output(ctx.out_root, &action.package, out) {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => continue,
                    Err(size) => {
                        if out.ends_with(".xml") || out.contains(".sarif") {
                            found.problems.push(format!(
                                "{shown} is not read as a report: {size} bytes, more than {} MiB",
                                MAX_REPORT >> 20
                            ));
                        }
                        continue;
                    }
                };
                if out.ends_with(".xml") {
                    match parse_junit_within(&bytes, &mut budget) {
                        Ok(Some(mut suites)) => {
                            for case in suites.iter_mut().flat_map(|s| s.cases.iter_mut()) {
                                case.at = case_location(case, action, ctx.root);
                            }
                            let entry = found.suites.entry(r.label.clone()).or_default();
                            entry.extend(suites);
                        }
                        Ok(None) => {}
                        Err(why) => found.problems.push(format!(
                            "{shown} is not well-formed JUnit XML ({why}): its test cases are \
                             not in the reports"
                        )),
                    }
                } else if failed && (out.ends_with(".sarif") || out.ends_with(".sarif.json")) {
                    found
                        .diagnostics
                        .extend(sarif(&bytes, &r.label, action, ctx.root));
                }
            }
            if failed {
                let cases = found.suites.get(&r.label).into_iter().flatten();
                let located: Vec<Diagnostic> = cases
                    .flat_map(|s| &s.cases)
                    .filter_map(|c| case_diagnostic(&r.label, c))
                    .collect();
                found.diagnostics.extend(located);
            }
            // The log speaks only when the outputs said nothing located.
            if failed && found.diagnostics.len() == before {
                found
                    .diagnostics
                    .extend(log_diagnostics(&r.log, &r.label, action, ctx.root));
            }
        }
        if budget.dropped > 0 {
            found.problems.push(format!(
                "{} test case(s) of the actions' JUnit outputs are not in the reports: they take \
                 at most {MAX_CASES}",
                budget.dropped
            ));
        }
        found
    }
}

/// The bytes of a declared output under the output root: a regular file, within the root,
/// not larger than [`MAX_REPORT`] (`Err`: one that is larger, with its size).
fn read_output(out_root: &Path, package: &str, out: &str) -> Result<Option<Vec<u8>>, u64> {
    let Some(path) = inside(out_root, package, out) else {
        return Ok(None);
    };
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && m.len() > MAX_REPORT => Err(m.len()),
        Ok(m) if m.is_file() => Ok(read_file(&path)),
        _ => Ok(None),
    }
}

/// The real path of a declared output when it is under the output root.
fn inside(out_root: &Path, package: &str, out: &str) -> Option<std::path::PathBuf> {
    flow_cache::check_relative_path(out).ok()?;
    let path = out_root.join(crate::expand::join_path(package, out));
    let real = path.canonicalize().ok()?;
    real.starts_with(out_root.canonicalize().ok()?)
        .then_some(real)
}

fn read_file(real: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(real)
        .ok()?
        .take(MAX_REPORT)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

/// Where a failed case failed: its own `file`/`line` when they name a workspace file, else the
/// last `file:line` of its failure text that does (the innermost frame of a traceback).
fn case_location(case: &Case, action: &Action, root: &Path) -> Option<(String, u32)> {
    let text = match &case.result {
        CaseResult::Failed { text, message } | CaseResult::Error { text, message } => {
            format!("{message}\n{text}")
        }
        _ => return None,
    };
    if let Some((file, line)) = &case.at {
        if let Some(file) = resolve(file, action, root) {
            if *line > 0 {
                return Some((file, *line));
            }
        }
    }
    text.lines()
        .rev()
        .find_map(|l| file_line(l, action, root))
        .map(|(file, line, _, _)| (file, line))
}

fn case_diagnostic(label: &str, case: &Case) -> Option<Diagnostic> {
    let (message, text) = match &case.result {
        CaseResult::Failed { message, text } | CaseResult::Error { message, text } => {
            (message, text)
        }
        _ => return None,
    };
    let (file, line) = case.at.clone()?;
    let name = if case.classname.is_empty() {
        case.name.clone()
    } else {
        format!("{}.{}", case.classname, case.name)
    };
    let body = if message.is_empty() { text } else { message };
    Some(Diagnostic {
        label: label.to_owned(),
        file,
        line,
        col: None,
        level: Level::Error,
        title: format!("{name} failed ({label})"),
        message: super::tail(body, 20).1.join("\n"),
    })
}

/// `path:line[:col][:] message` at the start of a log line, where `path` is a workspace file.
fn file_line(
    line: &str,
    action: &Action,
    root: &Path,
) -> Option<(String, u32, Option<u32>, String)> {
    let line = line.trim_start();
    let mut parts = line.splitn(4, ':');
    let path = parts.next()?;
    let num: u32 = parts.next()?.trim().parse().ok()?;
    let rest: Vec<&str> = parts.collect();
    let (col, message) = match rest.as_slice() {
        [c, m] => match c.trim().parse::<u32>() {
            Ok(c) => (Some(c), m.trim().to_owned()),
            Err(_) => (None, format!("{c}:{m}").trim().to_owned()),
        },
        [m] => (None, m.trim().to_owned()),
        _ => (None, String::new()),
    };
    if num == 0 || path.is_empty() || path.contains(char::is_whitespace) {
        return None;
    }
    let file = resolve(path, action, root)?;
    Some((file, num, col, message))
}

fn log_diagnostics(log: &str, label: &str, action: &Action, root: &Path) -> Vec<Diagnostic> {
    log.lines()
        .filter_map(|l| file_line(l, action, root))
        .take(MAX_LOG_DIAGNOSTICS)
        .map(|(file, line, col, message)| Diagnostic {
            label: label.to_owned(),
            title: format!("{label} failed"),
            file,
            line,
            col,
            level: Level::Error,
            message,
        })
        .collect()
}

/// The results of a SARIF file, at their locations.
fn sarif(bytes: &[u8], label: &str, action: &Action, root: &Path) -> Vec<Diagnostic> {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for run in doc["runs"].as_array().into_iter().flatten() {
        let tool = run["tool"]["driver"]["name"].as_str().unwrap_or("SARIF");
        for result in run["results"].as_array().into_iter().flatten() {
            let loc = &result["locations"][0]["physicalLocation"];
            let Some(uri) = loc["artifactLocation"]["uri"].as_str() else {
                continue;
            };
            let uri = uri.strip_prefix("file://").unwrap_or(uri);
            let Some(file) = resolve(uri, action, root) else {
                continue;
            };
            let region = &loc["region"];
            let level = match result["level"].as_str() {
                Some("warning") | Some("note") => Level::Warning,
                _ => Level::Error,
            };
            let rule = result["ruleId"].as_str().unwrap_or("finding");
            out.push(Diagnostic {
                label: label.to_owned(),
                file,
                line: region["startLine"].as_u64().map_or(1, |l| l as u32),
                col: region["startColumn"].as_u64().map(|c| c as u32),
                level,
                title: format!("{tool} {rule} ({label})"),
                message: result["message"]["text"].as_str().unwrap_or("").to_owned(),
            });
        }
    }
    out
}

/// A path an action printed, as a workspace file: relative to the workspace or to the
/// action's package, or an absolute (sandbox) path ending with one of its sources.
fn resolve(path: &str, action: &Action, root: &Path) -> Option<String> {
    let path = path.trim_start_matches("./");
    let inside =
        |rel: &str| flow_cache::check_relative_path(rel).is_ok() && root.join(rel).is_file();
    if !path.starts_with('/') {
        if inside(path) {
            return Some(path.to_owned());
        }
        let in_package = crate::expand::join_path(&action.package, path);
        if inside(&in_package) {
            return Some(in_package);
        }
    }
    action
        .srcs
        .iter()
        .find(|src| path == src.as_str() || path.ends_with(&format!("/{src}")))
        .filter(|src| inside(src))
        .cloned()
}
