//! `flow metrics`: what the engine's own records say over a period (docs/metrics.md): the DORA
//! metrics of each environment from the deploy ledger (`dora.rs`), and from the action history
//! the cache hit rate, the slowest and most-run targets, and the flaky ones (the same key both
//! passed and failed, or passed on a retry) with their flaky test cases (a case that both passed
//! and failed under one key, from the JUnit outputs history records).

pub mod dora;

use std::collections::{BTreeMap, BTreeSet};

use flow_cache::{ActionRun, CaseRun, Outcome};
use serde::Serialize;

/// How many targets the slowest and most-run lists hold.
pub const TOP: usize = 10;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Actions {
    /// Runs that were decided (ran, cached, failed, flaky, timed out).
    pub runs: usize,
    pub cached: usize,
    /// `cached / runs`; `None` without a run.
    pub cache_hit_rate: Option<f64>,
    /// Label, median seconds of the runs that executed, and how many there were.
    pub slowest: Vec<Timed>,
    /// Label and how many times its command ran.
    pub most_run: Vec<Counted>,
    pub flaky: Vec<Flaky>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timed {
    pub label: String,
    pub median_s: f64,
    pub runs: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Counted {
    pub label: String,
    pub runs: usize,
}

/// A target whose command both passed and failed with the same key (or passed only on a
/// retry): what it did was not a function of its inputs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Flaky {
    pub label: String,
    pub passed: usize,
    pub failed: usize,
    /// Runs that passed on a retry.
    pub retried: usize,
    /// Its test cases that both passed and failed under one key.
    pub cases: Vec<FlakyCase>,
}

/// A test case that both passed and failed under one key of its target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlakyCase {
    /// `classname.name`.
    pub name: String,
    pub passed: usize,
    pub failed: usize,
}

/// The action metrics of `runs` and their test `cases` (one workspace's history over the
/// period).
pub fn actions(runs: &[ActionRun], cases: &[CaseRun]) -> Actions {
    let decided: Vec<&ActionRun> = runs
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Skipped | Outcome::Cancelled))
        .collect();
    let cached = decided
        .iter()
        .filter(|r| r.outcome == Outcome::Cached)
        .count();
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in decided.iter().filter(|r| r.outcome.executed()) {
        times
            .entry(&r.label)
            .or_default()
            .push(r.duration_ms as f64 / 1000.0);
    }
    let mut slowest: Vec<Timed> = times
        .iter()
        .map(|(label, t)| {
            let mut t = t.clone();
            t.sort_by(f64::total_cmp);
            Timed {
                label: (*label).to_owned(),
                median_s: dora::percentile(&t, 50.0).unwrap_or(0.0),
                runs: t.len(),
            }
        })
        .collect();
    slowest.sort_by(|a, b| {
        b.median_s
            .total_cmp(&a.median_s)
            .then(a.label.cmp(&b.label))
    });
    slowest.truncate(TOP);
    let mut most_run: Vec<Counted> = times
        .iter()
        .map(|(label, t)| Counted {
            label: (*label).to_owned(),
            runs: t.len(),
        })
        .collect();
    most_run.sort_by(|a, b| b.runs.cmp(&a.runs).then(a.label.cmp(&b.label)));
    most_run.truncate(TOP);
    Actions {
        runs: decided.len(),
        cached,
        cache_hit_rate: (!decided.is_empty()).then(|| cached as f64 / decided.len() as f64),
        slowest,
        most_run,
        flaky: flaky(&decided, cases),
    }
}

/// label → its test cases that passed and failed under one key.
fn flaky_cases(cases: &[CaseRun]) -> BTreeMap<&str, Vec<FlakyCase>> {
    // (label, name, key) → (passed, failed)
    let mut counts: BTreeMap<(&str, &str, flow_cache::Digest), (usize, usize)> = BTreeMap::new();
    for c in cases {
        let n = counts.entry((&c.label, &c.name, c.key)).or_default();
        match c.passed {
            true => n.0 += 1,
            false => n.1 += 1,
        }
    }
    let mut out: BTreeMap<&str, BTreeMap<&str, (usize, usize)>> = BTreeMap::new();
    for ((label, name, _), (p, f)) in counts.iter().filter(|(_, (p, f))| *p > 0 && *f > 0) {
        let n = out.entry(label).or_default().entry(name).or_default();
        n.0 += p;
        n.1 += f;
    }
    out.into_iter()
        .map(|(label, names)| {
            let list = names
                .into_iter()
                .map(|(name, (passed, failed))| FlakyCase {
                    name: name.to_owned(),
                    passed,
                    failed,
                })
                .collect();
            (label, list)
        })
        .collect()
}

/// The labels whose runs passed and failed under one key, or passed on a retry, or that have a
/// flaky test case.
fn flaky(runs: &[&ActionRun], cases: &[CaseRun]) -> Vec<Flaky> {
    let mut by_case = flaky_cases(cases);
    // (label, key) → (passed, failed); label → retried.
    let mut by_key: BTreeMap<(&str, flow_cache::Digest), (usize, usize)> = BTreeMap::new();
    let mut retried: BTreeMap<&str, usize> = BTreeMap::new();
    for r in runs {
        let counts = by_key.entry((&r.label, r.key)).or_default();
        match r.outcome {
            Outcome::Ran | Outcome::Flaky => counts.0 += 1,
            Outcome::Failed | Outcome::TimedOut => counts.1 += 1,
            _ => {}
        }
        if r.outcome == Outcome::Flaky {
            *retried.entry(&r.label).or_default() += 1;
        }
    }
    let mut labels: BTreeSet<&str> = by_key
        .iter()
        .filter(|(_, (p, f))| *p > 0 && *f > 0)
        .map(|((l, _), _)| *l)
        .collect();
    labels.extend(retried.keys());
    labels.extend(by_case.keys());
    labels
        .into_iter()
        .map(|label| {
            let (passed, failed) = by_key
                .iter()
                .filter(|((l, _), _)| *l == label)
                .fold((0, 0), |(p, f), (_, (pp, ff))| (p + pp, f + ff));
            Flaky {
                label: label.to_owned(),
                passed,
                failed,
                retried: retried.get(label).copied().unwrap_or(0),
                cases: by_case.remove(label).unwrap_or_default(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
