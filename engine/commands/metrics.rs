//! `flow metrics [--days N] [--env ENV] [--flaky] [--json]`: the DORA metrics of each
//! environment from the deploy ledger, and the action metrics of the workspace's history, over
//! the last N days (`metrics/`, docs/metrics.md).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::analysis::{cache_dir, open_cache};
use crate::clock::Clock;
use crate::delivery::ledger::Ledger;
use crate::error::Error;
use crate::metrics::{actions, dora, Actions};
use crate::workspace::Workspace;

pub struct MetricsArgs<'a> {
    pub days: u32,
    pub environment: Option<&'a str>,
    pub flaky_only: bool,
    pub json: bool,
    pub cache_flag: Option<&'a Path>,
}

#[derive(Serialize)]
struct Report {
    from_ms: i64,
    to_ms: i64,
    days: u32,
    delivery: Vec<dora::Dora>,
    actions: Actions,
}

pub fn run(start: &Path, args: MetricsArgs) -> Result<i32, Error> {
    let ws = Workspace::discover(start)?;
    let to_ms = Clock::from_env().now_ms();
    let from_ms = to_ms - i64::from(args.days) * 86_400_000;
    let ledger = Ledger::open(&ws.root, &ws.config.ledger, &mut |w| {
        eprintln!("warning: {w}")
    })?;
    let mut environments: Vec<String> = ws.config.environments.keys().cloned().collect();
    for env in ledger.environments() {
        if !environments.iter().any(|e| e == env) {
            environments.push(env.to_owned());
        }
    }
    if let Some(env) = args.environment {
        if !environments.iter().any(|e| e == env) {
            return Err(Error::Usage {
                message: format!("no environment `{env}` in flow.toml or the ledger"),
                help: Some(match environments.is_empty() {
                    true => "declare one in flow.toml: [environments.NAME]".into(),
                    false => format!("environments: {}", environments.join(", ")),
                }),
            });
        }
        environments.retain(|e| e == env);
    }
    let delivery: Vec<dora::Dora> = environments
        .iter()
        .map(|env| dora::dora(ledger.entries(), env, from_ms, to_ms))
        .collect();
    let dir = cache_dir(&ws, args.cache_flag);
    let (runs, cases) = match dir.join("flow.db").exists() {
        true => {
            let cache = open_cache(&dir)?;
            let workspace = ws.root.display().to_string();
            let err = |e: flow_cache::CacheError| Error::Cache {
                path: dir.clone(),
                error: e.to_string(),
            };
            let runs = cache.runs_since(&workspace, from_ms).map_err(err)?;
            (runs, cache.cases_since(&workspace, from_ms).map_err(err)?)
        }
        // No build has run here: an empty history, not a new cache.
        false => (Vec::new(), Vec::new()),
    };
    let report = Report {
        from_ms,
        to_ms,
        days: args.days,
        delivery,
        actions: actions(&runs, &cases),
    };
    let text = match (args.json, args.flaky_only) {
        (true, false) => serde_json::to_string_pretty(&report).expect("metrics serialize") + "\n",
        (true, true) => {
            serde_json::to_string_pretty(&report.actions.flaky).expect("flaky serialize") + "\n"
        }
        (false, true) => flaky_text(&report.actions),
        (false, false) => text(&report),
    };
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, text.as_bytes());
    Ok(0)
}

fn date(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// `2h05m`, `5m`, `40s`.
fn duration(s: f64) -> String {
    let s = s.round() as i64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn percent(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn text(r: &Report) -> String {
    let mut t = format!(
        "flow metrics: the last {} day(s), {} to {} (UTC)\n\nDelivery (the deploy ledger)\n",
        r.days,
        date(r.from_ms),
        date(r.to_ms)
    );
    if r.delivery.is_empty() {
        t.push_str("  no environment: declare one in flow.toml ([environments.NAME])\n");
    }
    for d in &r.delivery {
        let _ = writeln!(
            t,
            "  {}: {} deployment(s), {:.2} a day; lead time {}; change failure rate {}; time to restore {}",
            d.environment,
            d.deployments,
            d.deployments_per_day,
            match (d.lead_time_median_s, d.lead_time_p90_s) {
                (Some(m), Some(p)) => format!("median {} (p90 {})", duration(m), duration(p)),
                _ => "- (no deployment names its commit)".to_owned(),
            },
            match d.change_failure_rate {
                Some(rate) => format!("{} ({} of {})", percent(rate), d.failed_changes, d.attempts),
                None => "- (no deployment)".to_owned(),
            },
            match d.time_to_restore_median_s {
                Some(s) => format!("median {} ({} of {} failure(s) restored)", duration(s), d.restored, d.failures),
                None if d.failures > 0 => format!("- ({} failure(s), none restored)", d.failures),
                None => "- (no failure)".to_owned(),
            }
        );
    }
    let a = &r.actions;
    t.push_str("\nActions (the history of this workspace)\n");
    let _ = writeln!(
        t,
        "  cache hit rate: {}",
        match a.cache_hit_rate {
            Some(rate) => format!("{} ({} of {} runs reused)", percent(rate), a.cached, a.runs),
            None => "- (no run recorded)".to_owned(),
        }
    );
    if !a.slowest.is_empty() {
        t.push_str("  slowest (median time of the runs that executed):\n");
        for s in &a.slowest {
            let _ = writeln!(
                t,
                "    {:<40} {:>8.2}s  ({} run(s))",
                s.label, s.median_s, s.runs
            );
        }
    }
    if !a.most_run.is_empty() {
        t.push_str("  most run:\n");
        for m in &a.most_run {
            let _ = writeln!(t, "    {:<40} {:>5} run(s)", m.label, m.runs);
        }
    }
    t.push_str(&flaky_text(a));
    t
}

fn flaky_text(a: &Actions) -> String {
    if a.flaky.is_empty() {
        return "  flaky: none (no target or test case both passed and failed with one key)\n"
            .to_owned();
    }
    let mut t = String::from("  flaky (passed and failed with one key, or passed on a retry; and their test cases that did):\n");
    for f in &a.flaky {
        let _ = writeln!(
            t,
            "    {:<40} {} passed, {} failed, {} passed on a retry",
            f.label, f.passed, f.failed, f.retried
        );
        for c in &f.cases {
            let _ = writeln!(
                t,
                "      test case {}: {} passed, {} failed",
                crate::executor::printable(&c.name),
                c.passed,
                c.failed
            );
        }
    }
    t
}
