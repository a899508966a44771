//! DORA and action metrics on small fixtures whose answers are worked out by hand in each test.

use super::dora::{dora, percentile};
use super::*;
use crate::delivery::ledger::{Artifact, ArtifactKind, Entry, EntryKind, Verdict};

const H: i64 = 3_600_000;
const DAY: i64 = 24 * H;

fn entry(
    id: &str,
    kind: EntryKind,
    outcome: Verdict,
    start: i64,
    end: i64,
    commit_s: Option<i64>,
) -> Entry {
    Entry {
        id: id.to_owned(),
        environment: "production".to_owned(),
        label: match kind {
            EntryKind::Monitor => "//d:watch".to_owned(),
            _ => "//d:deploy".to_owned(),
        },
        kind,
        outcome,
        artifact: Artifact {
            digest: "0".repeat(64),
            kind: ArtifactKind::File,
            size: 1,
            executable: false,
            name: "app.whl".to_owned(),
            label: "//d:bundle".to_owned(),
        },
        commit: commit_s.map(|_| "abc".to_owned()),
        commit_time: commit_s,
        branch: None,
        user: "alice".to_owned(),
        started_ms: start,
        ended_ms: end,
        reason: None,
        approved_by: None,
    }
}

/// A week of production: hand-computed answers below.
fn week() -> Vec<Entry> {
    use EntryKind::*;
    use Verdict::*;
    vec![
        // Day 0: a deploy of a commit made 2 h before it ended; healthy.
        entry(
            "a",
            Deploy,
            Succeeded,
            10 * H,
            10 * H + 60_000,
            Some((10 * H + 60_000 - 2 * H) / 1000),
        ),
        entry(
            "a-m",
            Monitor,
            Succeeded,
            10 * H + 60_000,
            10 * H + 120_000,
            None,
        ),
        // Day 1: a deploy (commit 4 h old) whose monitor fails 10 min after; rolled back
        // automatically 5 min later.
        entry(
            "b",
            Deploy,
            Succeeded,
            DAY + 10 * H,
            DAY + 10 * H,
            Some((DAY + 6 * H) / 1000),
        ),
        entry(
            "b-m",
            Monitor,
            Failed,
            DAY + 10 * H,
            DAY + 10 * H + 600_000,
            None,
        ),
        entry(
            "b-r",
            AutomaticRollback,
            Succeeded,
            DAY + 10 * H + 600_000,
            DAY + 10 * H + 900_000,
            None,
        ),
        // Day 2: a deploy that fails outright; fixed by a deploy 1 h later (commit 1 h old).
        entry(
            "c",
            Deploy,
            Failed,
            2 * DAY,
            2 * DAY + 60_000,
            Some((2 * DAY - H) / 1000),
        ),
        entry(
            "d",
            Deploy,
            Succeeded,
            2 * DAY + H,
            2 * DAY + H + 60_000,
            Some((2 * DAY + 60_000) / 1000),
        ),
        // Outside the period (day 9): not counted.
        entry(
            "z",
            Deploy,
            Succeeded,
            9 * DAY,
            9 * DAY,
            Some(9 * DAY / 1000),
        ),
    ]
}

#[test]
fn dora_over_a_week_of_production() {
    let d = dora(&week(), "production", 0, 7 * DAY);
    // Deployments: a, b, d succeeded (c failed, z is outside): 3 in 7 days.
    assert_eq!(d.deployments, 3);
    assert!((d.deployments_per_day - 3.0 / 7.0).abs() < 1e-9);
    // Lead times: a 2 h, b 4 h, d (ended 2d+1h+1m, commit 2d+1m) 1 h → sorted 1, 2, 4 h.
    assert_eq!(d.lead_time_median_s, Some(2.0 * 3600.0));
    assert_eq!(d.lead_time_p90_s, Some(4.0 * 3600.0));
    // Attempts a, b, c, d; failed changes: b (monitor failed, rolled back) and c (failed).
    assert_eq!((d.attempts, d.failed_changes), (4, 2));
    assert_eq!(d.change_failure_rate, Some(0.5));
    // Failures: b-m (restored by b-r 5 min after it ended) and c (restored by d, which ended
    // 1 h after c ended): median of 300 s and 3600 s, nearest rank → 300 s.
    assert_eq!((d.failures, d.restored), (2, 2));
    assert_eq!(d.time_to_restore_median_s, Some(300.0));
    // Another environment has nothing.
    let none = dora(&week(), "staging", 0, 7 * DAY);
    assert_eq!((none.deployments, none.change_failure_rate), (0, None));
}

#[test]
fn percentiles_by_nearest_rank() {
    assert_eq!(percentile(&[], 50.0), None);
    assert_eq!(percentile(&[5.0], 90.0), Some(5.0));
    assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
    assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 90.0), Some(4.0));
}

fn run(label: &str, key: u8, outcome: Outcome, ms: u64) -> ActionRun {
    ActionRun {
        label: label.to_owned(),
        key: flow_cache::Digest::of(&[key]),
        outcome,
        duration_ms: ms,
        exit_code: None,
        stdout: None,
        stderr: None,
        workspace: "/w".to_owned(),
        finished_at_ms: 0,
    }
}

#[test]
fn hit_rate_slowest_most_run_and_flaky() {
    use Outcome::*;
    let runs = vec![
        run("//a:test", 1, Ran, 3000),
        run("//a:test", 1, Failed, 5000),
        run("//a:test", 2, Ran, 1000),
        run("//b:lint", 1, Cached, 0),
        run("//b:lint", 1, Cached, 0),
        run("//b:lint", 2, Ran, 200),
        run("//c:e2e", 1, Flaky, 9000),
        run("//d:skip", 1, Skipped, 0),
    ];
    let a = actions(&runs, &[]);
    // 7 decided (the skipped one is not), 2 of them cached.
    assert_eq!((a.runs, a.cached), (7, 2));
    assert!((a.cache_hit_rate.unwrap() - 2.0 / 7.0).abs() < 1e-9);
    // Medians: c:e2e 9 s; a:test of 1, 3, 5 s → 3 s; b:lint 0.2 s.
    let slow: Vec<(&str, f64)> = a
        .slowest
        .iter()
        .map(|t| (t.label.as_str(), t.median_s))
        .collect();
    assert_eq!(
        slow,
        [("//c:e2e", 9.0), ("//a:test", 3.0), ("//b:lint", 0.2)]
    );
    assert_eq!(
        (a.most_run[0].label.as_str(), a.most_run[0].runs),
        ("//a:test", 3)
    );
    // a:test passed and failed under key 1; c:e2e passed on a retry.
    let flaky: Vec<(&str, usize, usize, usize)> = a
        .flaky
        .iter()
        .map(|f| (f.label.as_str(), f.passed, f.failed, f.retried))
        .collect();
    assert_eq!(flaky, [("//a:test", 2, 1, 0), ("//c:e2e", 1, 0, 1)]);
}
