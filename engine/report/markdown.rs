//! The report as Markdown: for a pull request comment or a job summary.

use std::fmt::Write as _;

use super::Report;

/// Text safe in a table cell and a code span: `|`, newlines, backticks and `<` (an HTML comment
/// would hide the rest of a job summary) neutralized.
pub fn cell(s: &str) -> String {
    s.replace('|', "\\|")
        .replace(['\n', '\r'], " ")
        .replace('`', "'")
        .replace('<', "&lt;")
}

fn date(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

pub fn markdown(r: &Report) -> String {
    let mut md = String::from("## flow quality report\n\n");
    match &r.build {
        Some(b) => {
            let _ = writeln!(
                md,
                "Last recorded build: `flow {}`, {} ({}): {} ran, {} cached, {} failed, {} skipped \
                 (actions no change reached are carried over and not listed).\n",
                cell(&b.args),
                b.finished_ms.map(date).unwrap_or_default(),
                if b.outcome.is_empty() { "unfinished" } else { &b.outcome },
                b.ran + b.flaky,
                b.cached,
                b.failed,
                b.skipped,
            );
        }
        None => md.push_str("No build recorded in this workspace's history yet.\n\n"),
    }
    md.push_str("### Gates\n\n");
    if r.gates.is_empty() && r.gates_without_table.is_empty() {
        md.push_str("No gate is declared.\n\n");
    }
    for g in &r.gates_without_table {
        let _ = writeln!(
            md,
            "**`{}`**: no table under `flow-out/` (not built yet, or skipped: a dependency failed)\n",
            cell(g)
        );
    }
    for g in &r.gates {
        let _ = writeln!(
            md,
            "**`{}`**: {}\n\n| Metric | Threshold | Value | Verdict |\n|---|---|---:|---|",
            cell(&g.gate),
            if g.passed { "passed" } else { "**failed**" }
        );
        for c in &g.checks {
            let _ = writeln!(
                md,
                "| `{}` | {} {} | {} | {} |",
                cell(&c.metric),
                cell(&c.op),
                cell(&c.threshold),
                cell(c.value.as_deref().unwrap_or("-")),
                if c.passed { "pass" } else { "**FAIL**" }
            );
        }
        md.push('\n');
    }
    if !r.coverage.is_empty() {
        md.push_str(
            "### Coverage by package\n\n| Package | Coverage | Statements |\n|---|---:|---:|\n",
        );
        for c in &r.coverage {
            let _ = writeln!(
                md,
                "| `//{}` | {:.1}% | {} |",
                cell(&c.package),
                c.percent,
                c.statements
            );
        }
        md.push('\n');
    }
    if !r.tests.is_empty() {
        md.push_str("### Tests\n\n| Target | Passed | Failed | Errors | Skipped |\n|---|---:|---:|---:|---:|\n");
        for t in &r.tests {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {} |",
                cell(&t.label),
                t.passed,
                t.failed,
                t.errors,
                t.skipped
            );
        }
        md.push('\n');
    }
    if !r.findings.is_empty() {
        md.push_str("### Findings\n\n| Target | Kind | Total | Detail |\n|---|---|---:|---|\n");
        for f in &r.findings {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} |",
                cell(&f.label),
                f.kind,
                f.total,
                cell(&f.detail)
            );
        }
        md.push('\n');
    }
    if !r.deployments.is_empty() {
        md.push_str("### Deployments in the last 30 days\n\n| Environment | Succeeded | Days with a failed deployment |\n|---|---:|---:|\n");
        for s in &r.deployments {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                cell(&s.name),
                s.values.iter().sum::<f64>(),
                s.marked.iter().filter(|m| **m).count()
            );
        }
        md.push('\n');
    }
    if let Some(b) = &r.build {
        let failed: Vec<&super::Run> = b
            .runs
            .iter()
            .filter(|x| x.outcome == "failed" || x.outcome == "timed out")
            .collect();
        if !failed.is_empty() {
            md.push_str("### Failed in the last build\n\n");
            for f in failed {
                let _ = writeln!(
                    md,
                    "- `{}` ({}; `flow log {}`)",
                    cell(&f.label),
                    f.outcome,
                    cell(&f.label)
                );
            }
            md.push('\n');
        }
    }
    md
}
