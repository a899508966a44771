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
    build_line(&mut md, r);
    gates(&mut md, r);
    tables(&mut md, r);
    new_findings(&mut md, r);
    trends_and_failures(&mut md, r);
    md
}

fn build_line(md: &mut String, r: &Report) {
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
            if !b.critical_path.is_empty() {
                let chain: Vec<String> = b
                    .critical_path
                    .iter()
                    .map(|l| format!("`{}`", cell(l)))
                    .collect();
                let _ = writeln!(
                    md,
                    "Critical path ({:.2}s): {}.\n",
                    b.critical_seconds,
                    chain.join(" → ")
                );
            }
        }
        None => md.push_str("No build recorded in this workspace's history yet.\n\n"),
    }
}

fn gates(md: &mut String, r: &Report) {
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
                cell(&c.shown()),
                if c.passed { "pass" } else { "**FAIL**" }
            );
        }
        md.push('\n');
        // Why a value is `-`: the check had nothing to read.
        for e in &g.errors {
            let _ = writeln!(md, "- error: {}", cell(e));
        }
        if !g.errors.is_empty() {
            md.push('\n');
        }
    }
}

/// Coverage by package, tests and findings.
fn tables(md: &mut String, r: &Report) {
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
        md.push_str("### Findings\n\n");
        let (some, none) = super::split_findings(&r.findings);
        if !none.is_empty() {
            let _ = writeln!(md, "{} other report(s) found nothing.\n", none.len());
        }
        if !some.is_empty() {
            md.push_str("| Target | Kind | Total | Detail |\n|---|---|---:|---|\n");
        }
        for f in some {
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
}

fn new_findings(md: &mut String, r: &Report) {
    if let Some(new) = &r.new_findings {
        let _ = writeln!(
            md,
            "### New findings against the base\n\n{} new finding(s).\n",
            new.len()
        );
        if !new.is_empty() {
            md.push_str("| Target | Rule | Where | Severity | Message |\n|---|---|---|---|---|\n");
            for f in new.iter().take(super::NEW_SHOWN) {
                let _ = writeln!(
                    md,
                    "| `{}` | `{}` | `{}:{}` | {} | {} |",
                    cell(&f.label),
                    cell(&f.rule),
                    cell(&f.file),
                    f.line,
                    cell(&f.severity),
                    cell(&f.message)
                );
            }
            if new.len() > super::NEW_SHOWN {
                let _ = writeln!(md, "\nand {} more.", new.len() - super::NEW_SHOWN);
            }
            md.push('\n');
        }
    }
}

fn trends_and_failures(md: &mut String, r: &Report) {
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
}
