//! Reading the typed reports a gate's dependencies wrote: each file is recognized by its shape
//! (not its name) and turned into metrics of one or more report kinds
//! (`flow_rules::gate::REPORT_KINDS`).
//!
//! | shape | kinds |
//! |---|---|
//! | JUnit XML (`<testsuites>`, `<testsuite>`) | `tests` |
//! | an object with `totals.percent_covered` and `files` (coverage.py JSON) | `coverage` |
//! | an object with `results` and `metrics` (bandit JSON) | `vulnerabilities` |
//! | an object with `runs` and `version` (SARIF 2.1) | `findings`, `vulnerabilities` |
//! | a list of objects with `code` and `filename` (ruff JSON) | `lint` |
//! | a list of objects with `Name` and `License` (pip-licenses JSON) | `licenses` |
//! | an object of files to lists of blocks with `complexity` (radon cc JSON) | `complexity` |
//! | an object of files to objects with `mi` (radon mi JSON) | `maintainability` |
//! | an object of names to numbers (`metrics.json`) | `metrics` |
//!
//! An empty list is an empty ruff or pip-licenses report, an empty object an empty radon or
//! metrics report: counts of zero either way. Anything else is not a report (a wheel, a log),
//! and is left alone unless a check needs a kind no input has.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::reports::found::{parse_junit, CaseResult};

/// A metric's value: a number, or a list of names (`licenses.denied`).
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    Number(f64),
    Names(Vec<String>),
}

/// The metrics one file gives one report kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub kind: &'static str,
    /// What the file was read as (`coverage.py JSON`), for messages.
    pub shape: &'static str,
    pub metrics: BTreeMap<String, Metric>,
}

/// The largest report read (a bigger file is not taken for one).
pub const MAX_REPORT_BYTES: u64 = 64 << 20;

fn numbers(pairs: &[(&str, f64)]) -> BTreeMap<String, Metric> {
    pairs
        .iter()
        // `+ 0.0`: an empty sum of floats is -0.0, which would be shown as `-0`.
        .map(|(k, v)| ((*k).to_owned(), Metric::Number(*v + 0.0)))
        .collect()
}

/// The reports `bytes` holds; empty when it is no report. `Err` for a file that has a report's
/// shape but not its content (a coverage JSON without numbers).
pub fn read(bytes: &[u8], denied_licenses: &[String]) -> Result<Vec<Found>, String> {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != 0xEF && *b != 0xBB && *b != 0xBF);
    match start.map(|i| bytes[i]) {
        Some(b'<') => junit(bytes),
        // From the first bracket: a UTF-8 byte-order mark is not JSON, but editors write one.
        Some(b'{') | Some(b'[') => {
            match serde_json::from_slice::<Json>(&bytes[start.unwrap_or(0)..]) {
                Ok(json) => from_json(&json, denied_licenses),
                Err(_) => Ok(Vec::new()),
            }
        }
        _ => Ok(Vec::new()),
    }
}

fn junit(bytes: &[u8]) -> Result<Vec<Found>, String> {
    let Some(suites) = parse_junit(bytes)? else {
        return Ok(Vec::new());
    };
    let (mut passed, mut failed, mut errors, mut skipped) = (0.0, 0.0, 0.0, 0.0);
    for case in suites.iter().flat_map(|s| &s.cases) {
        match case.result {
            CaseResult::Passed => passed += 1.0,
            CaseResult::Failed { .. } => failed += 1.0,
            CaseResult::Error { .. } => errors += 1.0,
            CaseResult::Skipped { .. } => skipped += 1.0,
        }
    }
    Ok(vec![Found {
        kind: "tests",
        shape: "JUnit XML",
        metrics: numbers(&[
            ("total", passed + failed + errors + skipped),
            ("passed", passed),
            ("failed", failed),
            ("errors", errors),
            ("skipped", skipped),
            ("pass_rate", pass_rate(passed, failed + errors)),
        ]),
    }])
}

/// Passed over run (skipped ones left out); 1 when nothing ran.
pub fn pass_rate(passed: f64, failing: f64) -> f64 {
    match passed + failing {
        0.0 => 1.0,
        run => passed / run,
    }
}

/// A field that must be a finite number when it is there: `Ok(None)` when it is not.
fn finite(v: Option<&Json>, name: &str) -> Result<Option<f64>, String> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) if n.is_finite() => Ok(Some(n)),
            _ => Err(format!("`{name}` is {}, not a number", shown_json(v))),
        },
    }
}

/// A JSON value in a message: short, and without escapes.
fn shown_json(v: &Json) -> String {
    let text = v.to_string();
    let cut: String = text.chars().take(40).collect();
    clean(&if cut.len() < text.len() {
        cut + "..."
    } else {
        cut
    })
}

fn from_json(json: &Json, denied: &[String]) -> Result<Vec<Found>, String> {
    Ok(match json {
        Json::Object(o)
            if o.get("totals")
                .and_then(|t| t.get("percent_covered"))
                .is_some() =>
        {
            let t = &o["totals"];
            let get = |k: &str| -> Result<f64, String> {
                Ok(finite(t.get(k), &format!("totals.{k}"))?.unwrap_or(0.0))
            };
            vec![Found {
                kind: "coverage",
                shape: "coverage.py JSON",
                metrics: numbers(&[
                    ("percent", get("percent_covered")?),
                    ("statements", get("num_statements")?),
                    ("covered", get("covered_lines")?),
                    ("missing", get("missing_lines")?),
                ]),
            }]
        }
        Json::Object(o)
            if o.get("results").is_some_and(Json::is_array) && o.contains_key("metrics") =>
        {
            // By `issue_severity`; a result of another severity (bandit's `UNDEFINED`) counts in
            // `total` only.
            let mut by = BTreeMap::new();
            let results = o["results"].as_array().map_or(&[][..], Vec::as_slice);
            for r in results {
                let severity = r["issue_severity"].as_str().unwrap_or("").to_lowercase();
                *by.entry(severity).or_insert(0.0) += 1.0;
            }
            let mut found = vulnerabilities("bandit JSON", &by);
            found
                .metrics
                .insert("total".into(), Metric::Number(results.len() as f64));
            vec![found]
        }
        Json::Object(o)
            if o.get("runs").is_some_and(Json::is_array) && o.contains_key("version") =>
        {
            sarif(o["runs"].as_array().map(Vec::as_slice).unwrap_or(&[]))?
        }
        Json::Array(items) if items.is_empty() => vec![lint(items), licenses(items, denied)],
        Json::Array(items)
            if items
                .iter()
                .all(|i| i.get("code").is_some() && i.get("filename").is_some()) =>
        {
            vec![lint(items)]
        }
        Json::Array(items)
            if items
                .iter()
                .all(|i| i.get("Name").is_some() && i.get("License").is_some()) =>
        {
            vec![licenses(items, denied)]
        }
        Json::Object(o) if o.is_empty() => vec![
            complexity(o)?,
            maintainability(o)?,
            Found {
                kind: "metrics",
                shape: "metrics.json",
                metrics: BTreeMap::new(),
            },
        ],
        // radon writes `{"error": ...}` for a file it could not read, among the others.
        Json::Object(o)
            if o.values().all(|v| {
                radon_error(v).is_some()
                    || v.as_array()
                        .is_some_and(|blocks| blocks.iter().all(|b| b.get("complexity").is_some()))
            }) && o.values().any(Json::is_array) =>
        {
            radon_errors(o, "radon cc")?;
            vec![complexity(o)?]
        }
        Json::Object(o)
            if o.values()
                .all(|v| radon_error(v).is_some() || v.get("mi").is_some())
                && o.values().any(|v| v.get("mi").is_some()) =>
        {
            radon_errors(o, "radon mi")?;
            vec![maintainability(o)?]
        }
        Json::Object(o) if o.values().all(Json::is_number) => {
            let mut metrics = BTreeMap::new();
            for (k, v) in o {
                let n = finite(Some(v), k)?.unwrap_or(0.0);
                metrics.insert(clean(k), Metric::Number(n));
            }
            vec![Found {
                kind: "metrics",
                shape: "metrics.json",
                metrics,
            }]
        }
        _ => Vec::new(),
    })
}

/// The error radon gives for a file it could not read (`{"error": "invalid syntax ..."}`).
fn radon_error(v: &Json) -> Option<&str> {
    v.as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("error"))
        .and_then(Json::as_str)
}

/// Files radon could not read fail the report: their metrics would be missing from it.
fn radon_errors(files: &serde_json::Map<String, Json>, tool: &str) -> Result<(), String> {
    let errors: Vec<String> = files
        .iter()
        .filter_map(|(f, v)| Some(format!("{}: {}", clean(f), clean(radon_error(v)?))))
        .collect();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "{tool} could not read {} file(s): {}",
            errors.len(),
            errors.into_iter().take(5).collect::<Vec<_>>().join("; ")
        )),
    }
}

/// The security score of vulnerability counts: 100 less 10 per critical, 2.5 per high, 1 per
/// medium and 0.25 per low, not below 0. The weights make the seed's security gates agree: one
/// critical fails `score >= 95` as it fails `critical == 0`, and two highs, the most that
/// `high <= 2` allows, leave exactly 95.
pub fn security_score(critical: f64, high: f64, medium: f64, low: f64) -> f64 {
    (100.0 - 10.0 * critical - 2.5 * high - medium - 0.25 * low).max(0.0)
}

/// Counts by severity (`critical`, `high`, `medium`, `low`), their total and their score.
fn vulnerabilities(shape: &'static str, by: &BTreeMap<String, f64>) -> Found {
    let get = |k: &str| by.get(k).copied().unwrap_or(0.0);
    let total = ["critical", "high", "medium", "low"]
        .iter()
        .map(|k| get(k))
        .sum();
    Found {
        kind: "vulnerabilities",
        shape,
        metrics: numbers(&[
            ("critical", get("critical")),
            ("high", get("high")),
            ("medium", get("medium")),
            ("low", get("low")),
            ("total", total),
            (
                "score",
                security_score(get("critical"), get("high"), get("medium"), get("low")),
            ),
        ]),
    }
}

/// SARIF results: by level (`findings`), and by security severity (`vulnerabilities`): the
/// result's or its rule's `security-severity` (CVSS: 9 critical, 7 high, 4 medium, above 0
/// low), else its level (`error` high, `warning` medium, `note` low).
fn sarif(runs: &[Json]) -> Result<Vec<Found>, String> {
    let mut levels: BTreeMap<String, f64> = BTreeMap::new();
    let mut severities: BTreeMap<String, f64> = BTreeMap::new();
    for (n, run) in runs.iter().enumerate() {
        match run.get("results") {
            None | Some(Json::Null) | Some(Json::Array(_)) => {}
            Some(other) => {
                return Err(format!(
                    "SARIF: `runs[{n}].results` is {}, not a list",
                    shown_json(other)
                ))
            }
        }
        let listed: &[Json] = run["tool"]["driver"]["rules"]
            .as_array()
            .map_or(&[], Vec::as_slice);
        let rules: BTreeMap<&str, &Json> = listed
            .iter()
            .filter_map(|r| Some((r["id"].as_str()?, r)))
            .collect();
        for (i, result) in run["results"].as_array().into_iter().flatten().enumerate() {
            if !result.is_object() {
                return Err(format!(
                    "SARIF: `runs[{n}].results[{i}]` is {}, not a result",
                    shown_json(result)
                ));
            }
            // By index into the driver's rules (CodeQL), else by id.
            let by_index = result["ruleIndex"]
                .as_u64()
                .and_then(|i| listed.get(usize::try_from(i).ok()?));
            let rule = by_index.or_else(|| {
                result["ruleId"]
                    .as_str()
                    .and_then(|id| rules.get(id).copied())
            });
            let level = result["level"]
                .as_str()
                .or_else(|| rule.and_then(|r| r["defaultConfiguration"]["level"].as_str()))
                .unwrap_or("warning");
            if !matches!(level, "none" | "note" | "warning" | "error") {
                return Err(format!(
                    "SARIF: `runs[{n}].results[{i}]` has level `{}`, not none, note, warning or error",
                    clean(level)
                ));
            }
            *levels.entry(level.to_owned()).or_insert(0.0) += 1.0;
            // A CVSS score from 0 to 10, as a string (GitHub's form) or a number; anything else
            // is no score, and the level decides.
            let score_of = |v: &Json| match v {
                Json::String(s) => s.trim().parse::<f64>().ok(),
                other => other.as_f64(),
            };
            let score = score_of(&result["properties"]["security-severity"])
                .or_else(|| rule.and_then(|r| score_of(&r["properties"]["security-severity"])))
                .filter(|s| (0.0..=10.0).contains(s));
            let severity = match (score, level) {
                (Some(s), _) if s >= 9.0 => "critical",
                (Some(s), _) if s >= 7.0 => "high",
                (Some(s), _) if s >= 4.0 => "medium",
                (Some(s), _) if s > 0.0 => "low",
                (Some(_), _) => continue,
                (None, "error") => "high",
                (None, "warning") => "medium",
                (None, "note") => "low",
                (None, _) => continue,
            };
            *severities.entry(severity.to_owned()).or_insert(0.0) += 1.0;
        }
    }
    let get = |k: &str| levels.get(k).copied().unwrap_or(0.0);
    Ok(vec![
        Found {
            kind: "findings",
            shape: "SARIF",
            metrics: numbers(&[
                ("total", levels.values().sum()),
                ("error", get("error")),
                ("warning", get("warning")),
                ("note", get("note")),
            ]),
        },
        vulnerabilities("SARIF", &severities),
    ])
}

fn lint(items: &[Json]) -> Found {
    let fixable = items
        .iter()
        .filter(|i| i.get("fix").is_some_and(|f| !f.is_null()))
        .count();
    Found {
        kind: "lint",
        shape: "ruff JSON",
        metrics: numbers(&[
            ("violations", items.len() as f64),
            ("fixable", fixable as f64),
        ]),
    }
}

/// Whether `license` matches `pattern`, ignoring case: the whole name, or with a `*` at the
/// start or end (or both) any start or end (`AGPL*`, `*GPL*`).
pub fn license_matches(license: &str, pattern: &str) -> bool {
    let license = license.to_lowercase();
    let pattern = pattern.to_lowercase();
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(_), Some(_)) if pattern.len() >= 2 => {
            license.contains(&pattern[1..pattern.len() - 1])
        }
        (Some(rest), _) => license.ends_with(rest),
        (_, Some(rest)) => license.starts_with(rest),
        _ => license == pattern,
    }
}

/// Report text (package and license names, metric names) without escapes or control
/// characters: it reaches terminals, logs and Markdown.
pub fn clean(text: &str) -> String {
    crate::executor::printable(text)
}

/// pip-licenses: a package is denied when one of its licenses matches a pattern of `denied`
/// ([`license_matches`]), unknown when it says `UNKNOWN`.
fn licenses(items: &[Json], denied: &[String]) -> Found {
    let mut denied_names = Vec::new();
    let mut unknown = Vec::new();
    for item in items {
        let name = clean(item["Name"].as_str().unwrap_or("?"));
        let license = clean(item["License"].as_str().unwrap_or("UNKNOWN"));
        let parts: Vec<&str> = license.split(';').map(str::trim).collect();
        if parts
            .iter()
            .any(|l| denied.iter().any(|d| license_matches(l, d)))
        {
            denied_names.push(format!("{name} ({license})"));
        }
        if parts
            .iter()
            .all(|l| l.is_empty() || l.eq_ignore_ascii_case("UNKNOWN"))
        {
            unknown.push(name.clone());
        }
    }
    let mut metrics = numbers(&[("count", items.len() as f64)]);
    metrics.insert("denied".into(), Metric::Names(denied_names));
    metrics.insert("unknown".into(), Metric::Names(unknown));
    Found {
        kind: "licenses",
        shape: "pip-licenses JSON",
        metrics,
    }
}

/// radon cc: the cyclomatic complexity of every function and method, and of the functions
/// nested in them (radon's `closures`). Not of classes: radon gives a class the sum of its
/// methods' decisions, and lists each method on its own as well.
fn complexity(files: &serde_json::Map<String, Json>) -> Result<Found, String> {
    fn add(block: &Json, all: &mut Vec<f64>) -> Result<(), String> {
        if block["type"].as_str() != Some("class") {
            let c = finite(block.get("complexity"), "complexity")?.unwrap_or(0.0);
            all.push(c);
        }
        for inner in block["closures"].as_array().into_iter().flatten() {
            add(inner, all)?;
        }
        Ok(())
    }
    let mut all: Vec<f64> = Vec::new();
    for block in files.values().filter_map(Json::as_array).flatten() {
        add(block, &mut all)?;
    }
    let blocks = all.len() as f64;
    let max = all.iter().copied().fold(0.0, f64::max);
    let average = if all.is_empty() {
        0.0
    } else {
        all.iter().sum::<f64>() / blocks
    };
    let over = all.iter().filter(|c| **c > 10.0).count() as f64;
    Ok(Found {
        kind: "complexity",
        shape: "radon cc JSON",
        metrics: numbers(&[
            ("max", max),
            ("average", average),
            ("blocks", blocks),
            ("over_10", over),
        ]),
    })
}

/// radon mi: the maintainability index of every file (0 to 100, higher is better).
fn maintainability(files: &serde_json::Map<String, Json>) -> Result<Found, String> {
    let mut all: Vec<f64> = Vec::new();
    for (name, file) in files {
        if let Some(mi) = finite(file.get("mi"), &format!("{}: mi", clean(name)))? {
            all.push(mi);
        }
    }
    let n = all.len() as f64;
    // With no file, nothing is hard to maintain.
    let min = if all.is_empty() {
        100.0
    } else {
        all.iter().copied().fold(f64::INFINITY, f64::min)
    };
    let average = if all.is_empty() {
        100.0
    } else {
        all.iter().sum::<f64>() / n
    };
    Ok(Found {
        kind: "maintainability",
        shape: "radon mi JSON",
        metrics: numbers(&[("min", min), ("average", average), ("files", n)]),
    })
}
