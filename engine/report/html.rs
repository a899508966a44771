//! The report as one self-contained HTML page: inline style and inline SVG, no script, nothing
//! fetched at view time. The sections of the Markdown report, and the last build's timeline
//! (one bar per action that ran, from its end and duration).

use std::fmt::Write as _;

use super::Report;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}\
.pass{color:#176b2c}.fail{color:#b00020;font-weight:bold}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.5em}\
svg text{font:11px system-ui,sans-serif}span.critical{color:#d9822b;font-weight:bold}";

pub fn html(r: &Report) -> String {
    let mut h = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>flow quality report</title>\
         <style>{STYLE}</style></head><body>\n<h1>flow quality report</h1>\n<p>{}</p>\n",
        esc(&r.workspace)
    );
    h.push_str("<h2 id=\"gates\">Gates</h2>\n");
    if r.gates.is_empty() && r.gates_without_table.is_empty() {
        h.push_str("<p>No gate is declared.</p>\n");
    }
    for g in &r.gates_without_table {
        let _ = writeln!(
            h,
            "<p><code>{}</code>: no table under <code>flow-out/</code> (not built yet, or skipped)</p>",
            esc(g)
        );
    }
    for g in &r.gates {
        let _ = write!(
            h,
            "<p><code>{}</code>: <span class=\"{}\">{}</span></p>\n<table class=\"gate\"><tr><th>Metric</th><th>Threshold</th><th>Value</th><th>Verdict</th></tr>\n",
            esc(&g.gate),
            if g.passed { "pass" } else { "fail" },
            if g.passed { "passed" } else { "failed" }
        );
        for c in &g.checks {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{} {}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                esc(&c.metric),
                esc(&c.op),
                esc(&c.threshold),
                esc(&c.shown()),
                if c.passed { "pass" } else { "fail" },
                if c.passed { "pass" } else { "FAIL" }
            );
        }
        h.push_str("</table>\n");
        for e in &g.errors {
            let _ = writeln!(h, "<p class=\"fail\">error: {}</p>", esc(e));
        }
    }
    if let Some(b) = &r.build {
        timeline(&mut h, b);
    }
    if let Some(new) = &r.new_findings {
        new_findings(&mut h, new);
    }
    if !r.coverage.is_empty() {
        h.push_str("<h2 id=\"coverage\">Coverage by package</h2>\n<table><tr><th>Package</th><th>Coverage</th><th>Statements</th></tr>\n");
        for c in &r.coverage {
            let _ = writeln!(
                h,
                "<tr><td><code>//{}</code></td><td>{:.1}%</td><td>{}</td></tr>",
                esc(&c.package),
                c.percent,
                c.statements
            );
        }
        h.push_str("</table>\n");
    }
    if !r.tests.is_empty() {
        h.push_str("<h2 id=\"tests\">Tests</h2>\n<table><tr><th>Target</th><th>Passed</th><th>Failed</th><th>Errors</th><th>Skipped</th></tr>\n");
        for t in &r.tests {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&t.label),
                t.passed,
                t.failed,
                t.errors,
                t.skipped
            );
        }
        h.push_str("</table>\n");
    }
    if !r.findings.is_empty() {
        let (some, none) = super::split_findings(&r.findings);
        let _ = writeln!(
            h,
            "<h2 id=\"findings\">Findings</h2>\n<p>{} report(s) with findings; {} other report(s) found nothing.</p>",
            some.len(),
            none.len()
        );
        h.push_str("<table><tr><th>Target</th><th>Kind</th><th>Total</th><th>Detail</th></tr>\n");
        for f in some {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&f.label),
                esc(&f.kind),
                f.total,
                esc(&f.detail)
            );
        }
        h.push_str("</table>\n");
    }
    if !r.deployments.is_empty() || r.hit_rate.is_some() {
        h.push_str("<h2 id=\"over-time\">Over the last 30 days</h2>\n");
        for s in &r.deployments {
            chart(&mut h, &format!("deployments to {}", s.name), s, false);
        }
        if let Some(s) = &r.hit_rate {
            chart(&mut h, "cache hit rate", s, true);
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// The findings that are new against the base report (`--base`), at most `super::NEW_SHOWN`.
fn new_findings(h: &mut String, new: &[super::findings::Item]) {
    let _ = writeln!(
        h,
        "<h2 id=\"new-findings\">New findings against the base</h2>\n<p>{} new finding(s).</p>",
        new.len()
    );
    if new.is_empty() {
        return;
    }
    h.push_str("<table><tr><th>Target</th><th>Rule</th><th>Where</th><th>Severity</th><th>Message</th></tr>\n");
    for f in new.iter().take(super::NEW_SHOWN) {
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td><code>{}:{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&f.label),
            esc(&f.rule),
            esc(&f.file),
            f.line,
            esc(&f.severity),
            esc(&f.message)
        );
    }
    h.push_str("</table>\n");
    if new.len() > super::NEW_SHOWN {
        let _ = writeln!(h, "<p>and {} more.</p>", new.len() - super::NEW_SHOWN);
    }
}

/// One bar per day. Deployments: a red dot over a day with a failed deployment. A rate: bars
/// from 0 to 100 %, a grey tick on days without runs.
fn chart(h: &mut String, title: &str, s: &super::trends::Series, rate: bool) {
    let (bar, height, left) = (18.0, 80.0, 40.0);
    let max = match rate {
        true => 1.0,
        false => s.values.iter().copied().fold(1.0, f64::max),
    };
    let width = left + bar * s.values.len() as f64 + 10.0;
    let _ = writeln!(
        h,
        "<p>{}</p>\n<svg class=\"trend\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        height + 30.0,
        esc(title)
    );
    for (i, v) in s.values.iter().enumerate() {
        let x = left + i as f64 * bar;
        let hgt = v / max * height;
        let shown = match rate {
            true => format!("{:.0}%", v * 100.0),
            false => format!("{v}"),
        };
        let _ = writeln!(
            h,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{}\" height=\"{hgt:.1}\" fill=\"#3b6ea8\"><title>day {}: {shown}</title></rect>",
            10.0 + height - hgt,
            bar - 3.0,
            i + 1
        );
        if s.marked.get(i) == Some(&true) {
            let color = if rate { "#bbb" } else { "#b00020" };
            let _ = writeln!(
                h,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                x + (bar - 3.0) / 2.0,
                6.0 + height - hgt
            );
        }
    }
    let top = match rate {
        true => "100%".to_owned(),
        false => format!("{max}"),
    };
    let _ = writeln!(
        h,
        "<text x=\"0\" y=\"16\">{top}</text><text x=\"0\" y=\"{}\">0</text><text x=\"{left}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\">today</text></svg>",
        10.0 + height,
        height + 26.0,
        esc(&s.first_day),
        width - 40.0,
        height + 26.0
    );
}

/// The last build's actions as bars on a time axis (those that ran; cached ones take no time).
fn timeline(h: &mut String, b: &super::Build) {
    // Every run that executed, however short (a gate takes no measurable time); not the cached.
    let ran: Vec<&super::Run> = b
        .runs
        .iter()
        .filter(|r| !matches!(r.outcome.as_str(), "cached" | "skipped" | "cancelled"))
        .collect();
    let _ = write!(
        h,
        "<h2 id=\"timeline\">Last build</h2>\n<p><code>flow {}</code>: {} action(s) recorded, {} ran.</p>\n",
        esc(&b.args),
        b.runs.len(),
        ran.len()
    );
    if ran.is_empty() {
        return;
    }
    if !b.critical_path.is_empty() {
        let chain: Vec<String> = b
            .critical_path
            .iter()
            .map(|l| format!("<code>{}</code>", esc(l)))
            .collect();
        let _ = writeln!(
            h,
            "<p id=\"critical-path\"><span class=\"critical\">Critical path</span>: {:.2}s over {} action(s), the chain of dependencies that bounds the build's time: {}</p>",
            b.critical_seconds,
            b.critical_path.len(),
            chain.join(" → ")
        );
    }
    let start = ran
        .iter()
        .map(|r| r.finished_ms as f64 - r.seconds * 1000.0)
        .fold(f64::INFINITY, f64::min);
    let end = ran.iter().map(|r| r.finished_ms as f64).fold(0.0, f64::max);
    let span = (end - start).max(1.0);
    let (width, row, left) = (900.0, 18.0, 260.0);
    let height = row * ran.len() as f64 + 24.0;
    let _ = writeln!(
        h,
        "<svg id=\"timeline-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" role=\"img\" aria-label=\"build timeline\">",
        width + left + 60.0
    );
    for (i, r) in ran.iter().enumerate() {
        let y = i as f64 * row + 4.0;
        let x0 = left + (r.finished_ms as f64 - r.seconds * 1000.0 - start) / span * width;
        let w = (r.seconds * 1000.0 / span * width).max(1.0);
        let critical = b.critical_path.contains(&r.label);
        let color = match r.outcome.as_str() {
            "failed" | "timed out" => "#b00020",
            _ if critical => "#d9822b",
            _ => "#3b6ea8",
        };
        let _ = writeln!(
            h,
            "<text x=\"0\" y=\"{}\">{}</text><rect x=\"{x0:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" fill=\"{color}\"{}><title>{} {:.2}s {}{}</title></rect>",
            y + 12.0,
            esc(&r.label),
            row - 4.0,
            if critical { " class=\"critical\"" } else { "" },
            esc(&r.label),
            r.seconds,
            esc(&r.outcome),
            if critical { ", on the critical path" } else { "" }
        );
    }
    let _ = writeln!(
        h,
        "<text x=\"{left}\" y=\"{}\">0s</text><text x=\"{}\" y=\"{}\">{:.2}s</text></svg>",
        height - 4.0,
        left + width - 30.0,
        height - 4.0,
        span / 1000.0
    );
}
