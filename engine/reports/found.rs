//! What the actions' own outputs and logs tell the reports: the test cases of their JUnit XML
//! outputs, the results of their SARIF outputs, and `file:line:` diagnostics in a failed
//! action's log, each placed at a workspace file and line where one can be found.
//!
//! Outputs are read under the output root at their declared paths (a failed run's outputs are
//! kept there too), as regular files of at most [`MAX_REPORT`] bytes that stay inside the
//! output root: a report is never followed out of the tree, nor read without bound.

use std::collections::BTreeMap;
use std::path::Path;

use quick_xml::events::Event;

use super::{Context, Outcome, Record};
use crate::plan::Action;

/// The largest output read as a report.
pub const MAX_REPORT: u64 = 16 << 20;

/// Test cases of the actions' JUnit outputs the reports take, at most.
pub const MAX_CASES: usize = 100_000;

/// Diagnostics read from one failed action's log, at most.
const MAX_LOG_DIAGNOSTICS: usize = 50;

/// One test case of a JUnit file.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub name: String,
    pub classname: String,
    pub time: f64,
    pub result: CaseResult,
    /// Where it failed: a workspace file and line.
    pub at: Option<(String, u32)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CaseResult {
    Passed,
    Failed { message: String, text: String },
    Error { message: String, text: String },
    Skipped { message: String },
}

/// One test suite of a JUnit file.
#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    pub name: String,
    pub cases: Vec<Case>,
}

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

/// The suites of a JUnit XML file (`<testsuites>` or a lone `<testsuite>`, suites nested in
/// suites flattened, suites without test cases left out): `Ok(None)` when it is not JUnit,
/// `Err` when it starts as JUnit and is not well-formed.
pub fn parse_junit(bytes: &[u8]) -> Result<Option<Vec<Suite>>, String> {
    parse_junit_within(bytes, &mut Budget::new(usize::MAX))
}

/// How many test cases the reports still take: a merge stays bounded in memory and size
/// however many JUnit outputs the build has (adversarial run: four 15 MB files of 1.4 M cases
/// each took 1.9 GB).
pub struct Budget {
    left: usize,
    /// Cases seen once none were left.
    pub dropped: usize,
}

impl Budget {
    pub fn new(cases: usize) -> Budget {
        Budget {
            left: cases,
            dropped: 0,
        }
    }

    fn admit(&mut self) -> bool {
        if self.left == 0 {
            self.dropped += 1;
            return false;
        }
        self.left -= 1;
        true
    }
}

/// [`parse_junit`], keeping at most what `budget` admits.
fn parse_junit_within(bytes: &[u8], budget: &mut Budget) -> Result<Option<Vec<Suite>>, String> {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let mut suites: Vec<Suite> = Vec::new();
    // The suites open around the current point, innermost last (indices into `suites`).
    let mut open: Vec<usize> = Vec::new();
    let mut case: Option<Case> = None;
    // The element whose text is being read (`failure`, `error`), with its message.
    let mut text_of: Option<(String, String, String)> = None;
    let mut root_seen = false;
    // Elements open: a file that ends inside one is cut short.
    let mut depth = 0usize;
    loop {
        let event = match reader.read_event_into(&mut buf) {
            Ok(e) => e,
            Err(_) if !root_seen => return Ok(None),
            Err(e) => return Err(format!("at byte {}: {e}", reader.buffer_position())),
        };
        match &event {
            Event::Start(_) => depth += 1,
            Event::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
        match event {
            Event::Eof if root_seen && depth > 0 => {
                return Err(format!("it ends inside {depth} open element(s)"));
            }
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) if !root_seen => {
                root_seen = true;
                match e.name().as_ref() {
                    b"testsuites" => {}
                    b"testsuite" => {
                        suites.push(Suite {
                            name: attr(&e, b"name").unwrap_or_default(),
                            cases: Vec::new(),
                        });
                        open.push(suites.len() - 1);
                    }
                    _ => return Ok(None),
                }
            }
            Event::Start(e) if e.name().as_ref() == b"testsuite" => {
                suites.push(Suite {
                    name: attr(&e, b"name").unwrap_or_default(),
                    cases: Vec::new(),
                });
                open.push(suites.len() - 1);
            }
            ref ev @ (Event::Start(ref e) | Event::Empty(ref e)) => {
                let empty = matches!(ev, Event::Empty(_));
                match e.name().as_ref() {
                    b"testcase" => {
                        let c = Case {
                            name: attr(e, b"name").unwrap_or_default(),
                            classname: attr(e, b"classname").unwrap_or_default(),
                            time: attr(e, b"time").and_then(|t| t.parse().ok()).unwrap_or(0.0),
                            result: CaseResult::Passed,
                            at: attr(e, b"file").map(|f| {
                                let line = attr(e, b"line").and_then(|l| l.parse().ok());
                                (f, line.unwrap_or(0))
                            }),
                        };
                        if empty {
                            let &at = open.last().ok_or("a test case outside any suite")?;
                            if budget.admit() {
                                suites[at].cases.push(c);
                            }
                        } else {
                            case = Some(c);
                        }
                    }
                    kind @ (b"failure" | b"error" | b"skipped") => {
                        let kind = String::from_utf8_lossy(kind).into_owned();
                        let message = attr(e, b"message").unwrap_or_default();
                        if empty {
                            if let Some(c) = &mut case {
                                c.result = result(&kind, message, String::new());
                            }
                        } else {
                            text_of = Some((kind, message, String::new()));
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => {
                if let Some((_, _, text)) = &mut text_of {
                    text.push_str(&t.decode().map_err(|e| e.to_string())?);
                }
            }
            Event::GeneralRef(r) => {
                if let Some((_, _, text)) = &mut text_of {
                    let name = r.decode().map_err(|e| e.to_string())?;
                    match quick_xml::escape::unescape(&format!("&{name};")) {
                        Ok(c) => text.push_str(&c),
                        Err(_) => text.push_str(&format!("&{name};")),
                    }
                }
            }
            Event::CData(t) => {
                if let Some((_, _, text)) = &mut text_of {
                    text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::End(e) => match e.name().as_ref() {
                b"failure" | b"error" | b"skipped" => {
                    if let (Some((kind, message, text)), Some(c)) = (text_of.take(), &mut case) {
                        c.result = result(&kind, message, text);
                    }
                }
                b"testcase" => {
                    if let Some(c) = case.take() {
                        let &at = open.last().ok_or("a test case outside any suite")?;
                        if budget.admit() {
                            suites[at].cases.push(c);
                        }
                    }
                }
                b"testsuite" => {
                    open.pop();
                }
                _ => {}
            },
            _ => {}
        }
        buf.clear();
    }
    if !root_seen {
        return Ok(None);
    }
    suites.retain(|s| !s.cases.is_empty());
    Ok(Some(suites))
}

/// The text of a failure or error kept, at most (its end: where a traceback ends).
const MAX_CASE_TEXT: usize = 64 << 10;

fn result(kind: &str, message: String, text: String) -> CaseResult {
    let text = match text.len() > MAX_CASE_TEXT {
        true => {
            let mut at = text.len() - MAX_CASE_TEXT;
            while !text.is_char_boundary(at) {
                at += 1;
            }
            format!("[...]{}", &text[at..])
        }
        false => text,
    };
    let message = match message.char_indices().nth(MAX_CASE_TEXT) {
        Some((at, _)) => format!("{}[...]", &message[..at]),
        None => message,
    };
    match kind {
        "failure" => CaseResult::Failed { message, text },
        "error" => CaseResult::Error { message, text },
        _ => CaseResult::Skipped { message },
    }
}

fn attr(e: &quick_xml::events::BytesStart, name: &[u8]) -> Option<String> {
    let a = e.try_get_attribute(name).ok()??;
    a.unescape_value().ok().map(|v| v.into_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytest_junit_parses_with_failure_text() {
        let xml = br#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3"><testcase classname="tests.test_a" name="test_ok" time="0.001" /><testcase classname="tests.test_a" name="test_bad" time="0.002"><failure message="assert 1 == 2">def test_bad():
&gt;       assert 1 == 2
E       assert 1 == 2

tests/test_a.py:5: AssertionError</failure></testcase><testcase classname="tests.test_a" name="test_skip" time="0"><skipped type="pytest.skip" message="not now" /></testcase></testsuite></testsuites>"#;
        let suites = parse_junit(xml).unwrap().unwrap();
        assert_eq!(suites.len(), 1);
        let cases = &suites[0].cases;
        assert_eq!(cases.len(), 3);
        assert_eq!(cases[0].result, CaseResult::Passed);
        match &cases[1].result {
            CaseResult::Failed { message, text } => {
                assert_eq!(message, "assert 1 == 2");
                assert!(text.contains("> "), "{text}");
                assert!(text.ends_with("tests/test_a.py:5: AssertionError"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            cases[2].result,
            CaseResult::Skipped {
                message: "not now".into()
            }
        );
    }

    #[test]
    fn other_xml_is_not_junit_and_broken_junit_says_so() {
        assert_eq!(parse_junit(b"<html><body/></html>"), Ok(None));
        assert_eq!(parse_junit(b"not xml <"), Ok(None));
        let one = b"<testsuite name=\"x\"><testcase name=\"t\"/></testsuite>";
        assert_eq!(parse_junit(one).unwrap().unwrap()[0].name, "x");
        let cut = b"<testsuites><testsuite><testcase name=\"a\">";
        assert!(parse_junit(cut).is_err());
        let crossed = b"<testsuites><testsuite><testcase name=\"a\"></testsuite>";
        assert!(parse_junit(crossed).is_err());
    }

    /// The budget keeps what it admits and counts the rest.
    #[test]
    fn the_budget_bounds_the_cases_kept() {
        let xml = b"<testsuite name=\"s\"><testcase name=\"a\"/><testcase name=\"b\"></testcase><testcase name=\"c\"/></testsuite>";
        let mut budget = Budget::new(2);
        let suites = parse_junit_within(xml, &mut budget).unwrap().unwrap();
        let names: Vec<&str> = suites[0].cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!((names, budget.dropped), (vec!["a", "b"], 1));
    }

    /// Suites nested in suites are flattened, each case in its innermost suite, and suites
    /// without cases left out (adversarial run: 600k nested levels became 600k suites).
    #[test]
    fn nested_suites_are_flattened_and_empty_ones_dropped() {
        let mut xml = String::from("<testsuites>");
        for i in 0..1000 {
            xml.push_str(&format!("<testsuite name=\"s{i}\">"));
        }
        xml.push_str("<testcase name=\"deep\"/>");
        for _ in 0..999 {
            xml.push_str("</testsuite>");
        }
        xml.push_str("<testcase name=\"outer\"/></testsuite></testsuites>");
        let suites = parse_junit(xml.as_bytes()).unwrap().unwrap();
        let names: Vec<(&str, Vec<&str>)> = suites
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.cases.iter().map(|c| c.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(names, [("s0", vec!["outer"]), ("s999", vec!["deep"])]);
    }
}
