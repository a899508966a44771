//! `flow ledger [ENV] [--json]`: what the deploy ledger says. Without ENV, one line per
//! environment: what is live (short digest, the artifact's target), since when (UTC), from which
//! commit, by whom and how; with ENV, that environment's history, newest first, failed entries
//! included; `--json`, the entries themselves (all, or ENV's) as a JSON array, oldest first.
//! With `[ledger] remote`, the shared ledger is fetched first (`delivery::ledger`).

use std::fmt::Write as _;
use std::path::Path;

use crate::delivery::ledger::{Entry, Ledger, Verdict};
use crate::error::Error;
use crate::workspace::Workspace;

pub fn run(start: &Path, environment: Option<&str>, json: bool) -> Result<i32, Error> {
    let ws = Workspace::discover(start)?;
    let ledger = Ledger::open(&ws.root, &ws.config.ledger, &mut |w| {
        eprintln!("warning: {w}")
    })?;
    if let Some(env) = environment {
        known(&ledger, env)?;
    }
    if json {
        let entries: Vec<&Entry> = ledger
            .entries()
            .iter()
            .filter(|e| environment.is_none_or(|env| e.environment == env))
            .collect();
        let text = serde_json::to_string_pretty(&entries).expect("entries serialize");
        println!("{text}");
        return Ok(0);
    }
    let text = match environment {
        Some(env) => history(&ledger, env),
        None if ledger.entries().is_empty() => {
            eprintln!("flow: the deploy ledger is empty: nothing was deployed from this workspace");
            return Ok(0);
        }
        None => summary(&ledger),
    };
    print!("{text}");
    Ok(0)
}

/// An error unless `env` has entries.
fn known(ledger: &Ledger, env: &str) -> Result<(), Error> {
    let envs = ledger.environments();
    if envs.contains(&env) {
        return Ok(());
    }
    let help = match flow_rules::suggest::closest(env, envs.iter().copied()) {
        Some(close) => format!("did you mean `{close}`?"),
        None if envs.is_empty() => "the ledger is empty: nothing was deployed from this \
                                    workspace yet"
            .to_owned(),
        None => format!(
            "the ledger has entries for: {}",
            envs.iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Err(Error::Usage {
        message: format!("the deploy ledger has no entry for the environment `{env}`"),
        help: Some(help),
    })
}

/// One line per environment and deploy: what is live there.
fn summary(ledger: &Ledger) -> String {
    let envs = ledger.environments();
    let width = envs.iter().map(|e| e.len()).max().unwrap_or(0);
    let mut out = String::new();
    for env in envs {
        let deploys = ledger.deploys(env);
        let several = deploys.len() > 1;
        let live: Vec<&crate::delivery::ledger::Entry> = deploys
            .iter()
            .filter_map(|d| ledger.live(env, Some(d)))
            .collect();
        for e in &live {
            // With several deploys to one environment, each line says whose it is.
            let whose = match several {
                true => format!("  ({})", e.label),
                false => String::new(),
            };
            let _ = writeln!(
                out,
                "{env:width$}  {}  {}  since {}  commit {}  by {} ({}){whose}",
                short_digest(e),
                e.artifact.label,
                utc(e.ended_ms),
                short_commit(e),
                e.user,
                e.kind.as_str()
            );
        }
        if live.is_empty() {
            let last = ledger
                .entries()
                .iter()
                .rfind(|e| e.environment == env)
                .expect("the environment has entries");
            let _ = writeln!(
                out,
                "{env:width$}  nothing live  (last: {} {} at {})",
                outcome(last.outcome),
                last.kind.as_str(),
                utc(last.started_ms)
            );
        }
    }
    out
}

/// Every entry of `env`, newest first.
fn history(ledger: &Ledger, env: &str) -> String {
    let live: Vec<&str> = ledger
        .deploys(env)
        .into_iter()
        .filter_map(|d| ledger.live(env, Some(d)).map(|e| e.id.as_str()))
        .collect();
    let mut out = String::new();
    for e in ledger
        .entries()
        .iter()
        .rev()
        .filter(|e| e.environment == env)
    {
        let _ = write!(
            out,
            "{}  {:18}  {:9}  {}  {}  commit {}",
            utc(e.started_ms),
            e.kind.as_str(),
            outcome(e.outcome),
            short_digest(e),
            e.artifact.label,
            short_commit(e),
        );
        if let Some(branch) = &e.branch {
            let _ = write!(out, " ({branch})");
        }
        let _ = write!(out, "  by {}  {}", e.user, e.label);
        if let Some(approver) = &e.approved_by {
            let _ = write!(out, "  approved by {approver}");
        }
        if let Some(reason) = &e.reason {
            let _ = write!(out, "  reason: {reason}");
        }
        if live.contains(&e.id.as_str()) {
            out.push_str("  [live]");
        }
        out.push('\n');
    }
    out
}

fn outcome(v: Verdict) -> &'static str {
    match v {
        Verdict::Succeeded => "succeeded",
        Verdict::Failed => "failed",
    }
}

fn short_digest(e: &Entry) -> &str {
    e.artifact.digest.get(..12).unwrap_or(&e.artifact.digest)
}

fn short_commit(e: &Entry) -> &str {
    match &e.commit {
        Some(c) => c.get(..7).unwrap_or(c),
        None => "-",
    }
}

/// Milliseconds since the epoch as `2024-05-01 14:03:07 UTC`.
pub fn utc(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => format!("{ms} ms"),
    }
}
