//! Evaluating a gate (docs/gates.md): its checks (`flow_rules::gate`) over the reports among
//! its inputs (`reports.rs`), in the gate's sandbox, in place of a command.
//!
//! 1. Every input named `*.json`, `*.xml` or `*.sarif` (at most `MAX_REPORT_BYTES`) is read and
//!    recognized by its shape; several reports of one kind are combined (counts added, a
//!    coverage percent weighted by statements, a maximum kept, names joined).
//! 2. Each check compares its metric with its threshold.
//! 3. The table (metric, threshold, value, verdict) is the log, and `NAME.gate.json` the output.
//!
//! Exit status: 0 when every check passes, 1 when one fails, 2 when a check has nothing to read
//! (no report of its kind among the inputs, a `metrics` name no metrics.json has): that is the
//! gate's own error, and the message lists what the inputs do hold.

pub mod reports;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flow_rules::gate::{from_canonical, number, Check, Threshold};
use serde_json::json;

use reports::{Found, Metric};

/// How a gate ended: its exit status, its log, and its output file's text.
pub struct Evaluated {
    pub status: i32,
    pub log: String,
    pub json: String,
}

/// One report read from an input.
struct Read {
    /// The input's path in the exec root (`pkg/reports/cov.json`).
    file: String,
    found: Found,
}

/// Evaluates the gate whose command is `canonical` over `inputs` (exec-root path, file).
pub fn evaluate(label: &str, canonical: &str, inputs: &[(String, PathBuf)]) -> Evaluated {
    let Some((checks, denied)) = from_canonical(canonical) else {
        return failed_to_start(format!(
            "`{label}`: this gate was declared by another version of flow; build it again"
        ));
    };
    let mut read = Vec::new();
    // Inputs that looked like reports and were not read, with why: said when a check finds
    // nothing to read.
    let mut skipped = Vec::new();
    for (file, path) in inputs {
        match read_input(path, &denied) {
            Ok(found) => read.extend(found.into_iter().map(|found| Read {
                file: file.clone(),
                found,
            })),
            Err(e) => skipped.push(format!("`{}` ({e})", reports::clean(file))),
        }
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for check in &checks {
        match value_of(check, &read, &skipped) {
            Ok((value, from)) => {
                let passed = verdict(check, &value);
                rows.push((check, Some(value), passed, from));
            }
            Err(e) => {
                errors.push(e);
                rows.push((check, None, false, Vec::new()));
            }
        }
    }
    let failed = rows.iter().filter(|r| !r.2).count();
    let status = match (errors.is_empty(), failed) {
        (false, _) => 2,
        (true, 0) => 0,
        (true, _) => 1,
    };
    let log = table(label, &rows, &errors);
    let json = json!({
        "gate": label,
        "passed": status == 0,
        "checks": rows.iter().map(|(check, value, passed, from)| json!({
            "metric": check.name(),
            "op": check.op.as_str(),
            "threshold": check.threshold.to_string(),
            "value": value.as_ref().map(shown),
            "passed": passed,
            "from": from,
        })).collect::<Vec<_>>(),
        "errors": errors,
    });
    Evaluated {
        status,
        log,
        json: format!(
            "{}\n",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        ),
    }
}

fn failed_to_start(message: String) -> Evaluated {
    Evaluated {
        status: 2,
        log: format!("{message}\n"),
        json: String::new(),
    }
}

/// The reports of one input; `Err` says why a file named like a report was not read.
fn read_input(path: &Path, denied: &[String]) -> Result<Vec<Found>, String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !(name.ends_with(".json") || name.ends_with(".xml") || name.ends_with(".sarif")) {
        return Ok(Vec::new());
    }
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Ok(Vec::new());
    }
    if meta.len() > reports::MAX_REPORT_BYTES {
        return Err(format!(
            "{} MiB: more than the {} MiB a report may be",
            meta.len() >> 20,
            reports::MAX_REPORT_BYTES >> 20
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let found = reports::read(&bytes, denied)?;
    if found.is_empty() && !name.ends_with(".xml") {
        return Err(match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Err(e) => format!("not valid JSON: {e}"),
            Ok(_) => "JSON of no report kind's shape (see docs/gates.md)".to_owned(),
        });
    }
    Ok(found)
}

/// At most `n` of `items`, then how many more.
fn first_of(items: &[String], n: usize) -> String {
    let mut text = items.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > n {
        text.push_str(&format!(" and {} more", items.len() - n));
    }
    text
}

/// The value of `check`'s metric over every report of its kind, and the files it came from.
fn value_of(
    check: &Check,
    read: &[Read],
    skipped: &[String],
) -> Result<(Metric, Vec<String>), String> {
    let of_kind: Vec<&Read> = read.iter().filter(|r| r.found.kind == check.kind).collect();
    if of_kind.is_empty() {
        let kind = flow_rules::gate::REPORT_KINDS
            .iter()
            .find(|k| k.name == check.kind)
            .map_or("", |k| k.read_from);
        let held: Vec<String> = read
            .iter()
            .map(|r| format!("`{}` ({}: {})", r.file, r.found.shape, r.found.kind))
            .collect();
        let mut message = format!(
            "`{}`: no {} report among the gate's inputs (it reads {kind}); {}",
            check.name(),
            check.kind,
            match held.is_empty() {
                true => "no input is a report".to_owned(),
                false => format!("the inputs hold {}", first_of(&held, 20)),
            }
        );
        if !skipped.is_empty() {
            message.push_str(&format!("; not read: {}", first_of(skipped, 20)));
        } else if held.is_empty() {
            message.push_str(": add the target that writes it to `deps`");
        }
        return Err(message);
    }
    let from: Vec<String> = of_kind.iter().map(|r| r.file.clone()).collect();
    let values: Vec<(&Metric, &BTreeMap<String, Metric>)> = of_kind
        .iter()
        .filter_map(|r| Some((r.found.metrics.get(&check.metric)?, &r.found.metrics)))
        .collect();
    if values.is_empty() {
        let names: Vec<String> = of_kind
            .iter()
            .flat_map(|r| r.found.metrics.keys())
            .map(|k| format!("`{}.{k}`", check.kind))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        return Err(format!(
            "`{}`: no such metric in {}; it has {}",
            check.name(),
            from.join(", "),
            match names.is_empty() {
                true => "none".to_owned(),
                false => first_of(&names, 20),
            }
        ));
    }
    Ok((combine(check, &values)?, from))
}

/// One value from several reports of a kind.
fn combine(
    check: &Check,
    values: &[(&Metric, &BTreeMap<String, Metric>)],
) -> Result<Metric, String> {
    let num = |m: &Metric| match m {
        Metric::Number(n) => *n,
        Metric::Names(v) => v.len() as f64,
    };
    let field = |all: &BTreeMap<String, Metric>, k: &str| all.get(k).map(num).unwrap_or(0.0);
    if let [(only, _)] = values {
        return Ok((*only).clone());
    }
    let weighted = |weight: &str| {
        let total: f64 = values.iter().map(|(_, all)| field(all, weight)).sum();
        match total {
            0.0 => values.iter().map(|(m, _)| num(m)).sum::<f64>() / values.len() as f64,
            _ => {
                values
                    .iter()
                    .map(|(m, all)| num(m) * field(all, weight))
                    .sum::<f64>()
                    / total
            }
        }
    };
    let name = check.name();
    Ok(match name.as_str() {
        "coverage.percent" => Metric::Number(weighted("statements")),
        "complexity.average" => Metric::Number(weighted("blocks")),
        "maintainability.average" => Metric::Number(weighted("files")),
        "vulnerabilities.score" => {
            let sum = |k: &str| values.iter().map(|(_, all)| field(all, k)).sum::<f64>();
            Metric::Number(reports::security_score(
                sum("critical"),
                sum("high"),
                sum("medium"),
                sum("low"),
            ))
        }
        "tests.pass_rate" => {
            let sum = |k: &str| values.iter().map(|(_, all)| field(all, k)).sum::<f64>();
            Metric::Number(reports::pass_rate(
                sum("passed"),
                sum("failed") + sum("errors"),
            ))
        }
        "complexity.max" => Metric::Number(values.iter().map(|(m, _)| num(m)).fold(0.0, f64::max)),
        "maintainability.min" => Metric::Number(
            values
                .iter()
                .map(|(m, _)| num(m))
                .fold(f64::INFINITY, f64::min),
        ),
        _ if check.kind == "metrics" => {
            let first = num(values[0].0);
            if values.iter().any(|(m, _)| num(m) != first) {
                return Err(format!(
                    "`{name}`: the metrics.json files among the inputs disagree on its value"
                ));
            }
            Metric::Number(first)
        }
        _ => match values[0].0 {
            Metric::Names(_) => {
                let mut all: Vec<String> = values
                    .iter()
                    .flat_map(|(m, _)| match m {
                        Metric::Names(v) => v.clone(),
                        Metric::Number(_) => Vec::new(),
                    })
                    .collect();
                all.sort();
                all.dedup();
                Metric::Names(all)
            }
            Metric::Number(_) => Metric::Number(values.iter().map(|(m, _)| num(m)).sum()),
        },
    })
}

fn verdict(check: &Check, value: &Metric) -> bool {
    match (&check.threshold, value) {
        (Threshold::Number(t), Metric::Number(v)) => check.op.holds(*v, *t),
        (Threshold::EmptyList, Metric::Names(v)) => match check.op {
            flow_rules::gate::Op::Eq => v.is_empty(),
            _ => !v.is_empty(),
        },
        _ => false,
    }
}

/// A value as the table shows it: rounded, but never so that it seems to contradict its
/// verdict (`flow_rules::gate::number_near`).
fn shown_near(check: &Check, value: &Metric) -> String {
    match (value, &check.threshold) {
        (Metric::Number(n), Threshold::Number(t)) => {
            flow_rules::gate::number_near(*n, check.op, *t)
        }
        _ => shown(value),
    }
}

/// A value exactly (the JSON table): `83.25`, `3`, `[]`, `[gpl-pkg (GPL-3.0)]`.
fn shown(value: &Metric) -> String {
    match value {
        Metric::Number(n) => number(*n),
        Metric::Names(v) if v.is_empty() => "[]".to_owned(),
        Metric::Names(v) => format!("[{}]", v.join(", ")),
    }
}

type Row<'a> = (&'a Check, Option<Metric>, bool, Vec<String>);

/// The log: a head line, the table, then the errors.
fn table(label: &str, rows: &[Row], errors: &[String]) -> String {
    let failed = rows.iter().filter(|r| !r.2).count();
    let mut out = format!(
        "gate {label}: {} check(s), {}\n",
        rows.len(),
        match failed {
            0 => "all passed".to_owned(),
            n => format!("{n} failed"),
        }
    );
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|(check, value, passed, _)| {
            [
                check.name(),
                format!("{} {}", check.op.as_str(), check.threshold),
                value
                    .as_ref()
                    .map_or("-".to_owned(), |v| shown_near(check, v)),
                if *passed { "pass" } else { "FAIL" }.to_owned(),
            ]
        })
        .collect();
    let head = [
        "metric".to_owned(),
        "threshold".to_owned(),
        "value".to_owned(),
        "verdict".to_owned(),
    ];
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            std::iter::once(&head)
                .chain(&cells)
                .map(|c| c[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(&head).chain(&cells) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(&format!("  {}\n", line.join("  ").trim_end()));
    }
    for e in errors {
        out.push_str(&format!("error: {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests;
