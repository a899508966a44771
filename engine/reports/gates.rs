//! The tables of the gates a build ran or reused (`gates/`), read back from their outputs
//! (`NAME.gate.json` under `flow-out/`) for the reports: a `gate` event each in the stream, and
//! a "Gates" section in the job summary. A gate that did not run in this build (skipped, not
//! started) has no table here: its file would be an earlier run's.

use std::path::Path;

use serde::Deserialize;

use super::{Context, Outcome, Record};
use crate::plan::ActionKind;

/// The largest gate table read back.
const MAX_TABLE_BYTES: u64 = 4 << 20;

/// A gate's table, as `gates::evaluate` wrote it.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct Table {
    pub gate: String,
    pub passed: bool,
    pub checks: Vec<Row>,
    #[serde(default)]
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct Row {
    pub metric: String,
    pub op: String,
    pub threshold: String,
    pub value: Option<String>,
    pub passed: bool,
    #[serde(default)]
    pub from: Vec<String>,
}

impl Row {
    /// The value as the gate's log shows it: rounded only where the rounding cannot seem to
    /// contradict the verdict (`flow_rules::gate::number_near`); `NAME.gate.json` keeps it
    /// exactly. `-` when the check had nothing to read.
    pub fn shown(&self) -> String {
        let Some(value) = &self.value else {
            return "-".to_owned();
        };
        let op = flow_rules::gate::Op::parse(&self.op);
        match (op, value.parse::<f64>(), self.threshold.parse::<f64>()) {
            (Some(op), Ok(v), Ok(t)) => flow_rules::gate::number_near(v, op, t),
            _ => value.clone(),
        }
    }
}

/// The tables of the plan's gates whose record says they ran, were reused or failed.
pub fn tables(records: &[&Record], ctx: &Context) -> Vec<Table> {
    let Some(plan) = ctx.plan else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for action in plan.nodes.iter().filter(|a| a.kind == ActionKind::Gate) {
        let label = action.label.to_string();
        let counts = records
            .iter()
            .find(|r| r.label == label)
            .is_some_and(|r| !matches!(r.outcome, Outcome::Skipped { .. }));
        let Some(file) = action.outs.first().filter(|_| counts) else {
            continue;
        };
        let path = ctx
            .out_root
            .join(crate::expand::join_path(&action.package, file));
        if let Some(table) = read(&path) {
            out.push(table);
        }
    }
    out
}

/// The table of a gate from its output file; `None` when it is not one (or too big).
pub fn read(path: &Path) -> Option<Table> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_TABLE_BYTES {
        return None;
    }
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The "Gates" section of the job summary: one table per gate.
pub fn markdown(tables: &[Table], escape: impl Fn(&str) -> String) -> String {
    if tables.is_empty() {
        return String::new();
    }
    let mut md = String::from("\n#### Gates\n\n");
    for t in tables {
        md.push_str(&format!(
            "**`{}`**: {}\n\n| Metric | Threshold | Value | Verdict |\n|---|---|---:|---|\n",
            escape(&t.gate),
            if t.passed { "passed" } else { "**failed**" }
        ));
        for r in &t.checks {
            md.push_str(&format!(
                "| `{}` | {} {} | {} | {} |\n",
                escape(&r.metric),
                escape(&r.op),
                escape(&r.threshold),
                escape(&r.shown()),
                if r.passed { "pass" } else { "**FAIL**" }
            ));
        }
        for e in &t.errors {
            md.push_str(&format!("\nerror: {}\n", escape(e)));
        }
        md.push('\n');
    }
    md
}
