//! The four DORA metrics of one environment over a period, from the deploy ledger alone
//! (docs/metrics.md says each definition):
//!
//! - **deployment frequency**: succeeded `deploy` and `emergency` entries (rollbacks ship no
//!   change), per day and in all;
//! - **lead time for changes**: from the deployed commit's time to the deploy's end, median and
//!   90th percentile, over the deployments whose entry names a commit;
//! - **change failure rate**: the share of attempted deployments that failed: the deploy itself
//!   failed, or before the next deployment of the same target in that environment a monitor of
//!   it failed or it was rolled back (by hand or automatically);
//! - **time to restore**: from a failure (a failed monitor, a failed deployment) to the next
//!   succeeded entry that ships an artifact for that target in that environment (a deploy, a
//!   rollback, an automatic rollback, an emergency), median, over the failures restored.

use serde::Serialize;

use crate::delivery::ledger::{Entry, EntryKind, Verdict};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Dora {
    pub environment: String,
    pub deployments: usize,
    pub deployments_per_day: f64,
    /// Seconds; `None` without a deployment that names its commit.
    pub lead_time_median_s: Option<f64>,
    pub lead_time_p90_s: Option<f64>,
    pub attempts: usize,
    pub failed_changes: usize,
    /// `failed_changes / attempts`; `None` without an attempt.
    pub change_failure_rate: Option<f64>,
    pub failures: usize,
    pub restored: usize,
    /// Seconds; `None` without a restored failure.
    pub time_to_restore_median_s: Option<f64>,
}

/// Whether an entry ships a change (not a rollback, not a monitor).
fn ships_change(e: &Entry) -> bool {
    matches!(e.kind, EntryKind::Deploy | EntryKind::Emergency)
}

/// The DORA metrics of `environment` for entries started in `[from_ms, to_ms)`.
pub fn dora(entries: &[Entry], environment: &str, from_ms: i64, to_ms: i64) -> Dora {
    let mut env: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.environment == environment)
        .collect();
    env.sort_by_key(|e| (e.started_ms, e.id.clone()));
    let in_period = |e: &&Entry| e.started_ms >= from_ms && e.started_ms < to_ms;
    let attempts: Vec<&Entry> = env
        .iter()
        .copied()
        .filter(in_period)
        .filter(|e| ships_change(e))
        .collect();
    let deployed: Vec<&Entry> = attempts
        .iter()
        .copied()
        .filter(|e| e.outcome == Verdict::Succeeded)
        .collect();
    let days = ((to_ms - from_ms).max(1) as f64) / 86_400_000.0;
    let mut lead: Vec<f64> = deployed
        .iter()
        .filter_map(|e| Some((e.ended_ms - e.commit_time? * 1000).max(0) as f64 / 1000.0))
        .collect();
    lead.sort_by(f64::total_cmp);
    let failed_changes = attempts
        .iter()
        .filter(|a| a.outcome == Verdict::Failed || went_bad(&env, a))
        .count();
    let failures: Vec<&Entry> = env
        .iter()
        .copied()
        .filter(in_period)
        .filter(|e| {
            e.outcome == Verdict::Failed && (e.kind == EntryKind::Monitor || ships_change(e))
        })
        .collect();
    let mut restore: Vec<f64> = failures
        .iter()
        .filter_map(|f| {
            let back = env.iter().find(|e| {
                e.kind.deploys()
                    && e.outcome == Verdict::Succeeded
                    && same_target(e, f)
                    && e.ended_ms >= f.ended_ms
                    && e.id != f.id
            })?;
            Some((back.ended_ms - f.ended_ms).max(0) as f64 / 1000.0)
        })
        .collect();
    restore.sort_by(f64::total_cmp);
    Dora {
        environment: environment.to_owned(),
        deployments: deployed.len(),
        deployments_per_day: deployed.len() as f64 / days,
        lead_time_median_s: percentile(&lead, 50.0),
        lead_time_p90_s: percentile(&lead, 90.0),
        attempts: attempts.len(),
        failed_changes,
        change_failure_rate: (!attempts.is_empty())
            .then(|| failed_changes as f64 / attempts.len() as f64),
        failures: failures.len(),
        restored: restore.len(),
        time_to_restore_median_s: percentile(&restore, 50.0),
    }
}

/// Whether `a` and `b` are about the same deployed target: a monitor's entry names the deploy
/// it watches by the artifact's target, as a deploy's does.
fn same_target(a: &Entry, b: &Entry) -> bool {
    a.artifact.label == b.artifact.label
}

/// Whether a succeeded deployment `d` went bad before the next deployment of its target: a
/// failed monitor, or a rollback.
fn went_bad(env: &[&Entry], d: &Entry) -> bool {
    if d.outcome != Verdict::Succeeded {
        return false;
    }
    env.iter()
        .filter(|e| e.started_ms > d.started_ms && same_target(e, d))
        .take_while(|e| !ships_change(e))
        .any(|e| {
            (e.kind == EntryKind::Monitor && e.outcome == Verdict::Failed)
                || matches!(e.kind, EntryKind::Rollback | EntryKind::AutomaticRollback)
        })
}

/// The `p`th percentile of sorted `values` (nearest rank); `None` when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}
