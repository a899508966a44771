//! The report's charts over time: deployments per day and environment, from the deploy ledger,
//! and the cache hit rate per day, from the history (both over the last [`DAYS`] days).

use serde::Serialize;

use crate::delivery::ledger::{Entry, EntryKind, Verdict};

/// How many days the charts show, ending today.
pub const DAYS: i64 = 30;
const DAY_MS: i64 = 86_400_000;

/// One value per day, oldest first.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Series {
    pub name: String,
    /// The first day (`2026-12-07`).
    pub first_day: String,
    pub values: Vec<f64>,
    /// Days marked (a failed change that day), parallel to `values`.
    pub marked: Vec<bool>,
}

fn day_of(ms: i64, from_ms: i64) -> Option<usize> {
    let d = (ms - from_ms).div_euclid(DAY_MS);
    (0..DAYS).contains(&d).then_some(d as usize)
}

fn date(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The first millisecond of the chart: midnight UTC, [`DAYS`] - 1 days before `now_ms`'s day.
pub fn start(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS) * DAY_MS - (DAYS - 1) * DAY_MS
}

/// Succeeded deployments (`deploy`, `emergency`) per day, one series per environment; a day
/// with a failed deployment is marked.
pub fn deployments(entries: &[Entry], now_ms: i64) -> Vec<Series> {
    let from = start(now_ms);
    let mut envs: Vec<&str> = entries.iter().map(|e| e.environment.as_str()).collect();
    envs.sort_unstable();
    envs.dedup();
    envs.into_iter()
        .map(|env| {
            let mut s = Series {
                name: env.to_owned(),
                first_day: date(from),
                values: vec![0.0; DAYS as usize],
                marked: vec![false; DAYS as usize],
            };
            for e in entries.iter().filter(|e| e.environment == env) {
                if !matches!(e.kind, EntryKind::Deploy | EntryKind::Emergency) {
                    continue;
                }
                let Some(d) = day_of(e.started_ms, from) else {
                    continue;
                };
                match e.outcome {
                    Verdict::Succeeded => s.values[d] += 1.0,
                    Verdict::Failed => s.marked[d] = true,
                }
            }
            s
        })
        .collect()
}

/// The share of runs answered from the cache, per day (0 on a day without runs).
pub fn hit_rate(runs: &[flow_cache::ActionRun], now_ms: i64) -> Series {
    use flow_cache::Outcome;
    let from = start(now_ms);
    let mut decided = vec![0.0; DAYS as usize];
    let mut cached = vec![0.0; DAYS as usize];
    for r in runs {
        if matches!(r.outcome, Outcome::Skipped | Outcome::Cancelled) {
            continue;
        }
        if let Some(d) = day_of(r.finished_at_ms, from) {
            decided[d] += 1.0;
            if r.outcome == Outcome::Cached {
                cached[d] += 1.0;
            }
        }
    }
    Series {
        name: "cache hit rate".into(),
        first_day: date(from),
        values: cached
            .iter()
            .zip(&decided)
            .map(|(c, n)| if *n > 0.0 { c / n } else { 0.0 })
            .collect(),
        marked: decided.iter().map(|n| *n == 0.0).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_counted_from_midnight_utc_thirty_days_back() {
        let now = 1_800_000_000_000; // 2027-01-15 08:00 UTC
        let from = start(now);
        assert_eq!(date(from), "2026-12-17");
        assert_eq!(day_of(now, from), Some(29));
        assert_eq!(day_of(from, from), Some(0));
        assert_eq!(day_of(from - 1, from), None);
    }
}
