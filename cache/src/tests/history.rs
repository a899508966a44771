//! Build history: outcomes, last runs, durations, recent builds.

use super::{key, open, temp};
use crate::{ActionRun, BuildSummary, Digest, Outcome};

fn run(label: &str, outcome: Outcome, duration_ms: u64, finished_at_ms: i64) -> ActionRun {
    ActionRun {
        label: label.into(),
        key: key(duration_ms),
        outcome,
        duration_ms,
        exit_code: outcome.executed().then_some(0),
        stdout: Some(Digest::of(label.as_bytes())),
        stderr: None,
        workspace: "/ws".into(),
        finished_at_ms,
    }
}

#[test]
fn outcomes_round_trip_as_lowercase_text() {
    for o in Outcome::ALL {
        assert_eq!(Outcome::parse(o.as_str()), Some(o));
        assert_eq!(o.as_str(), o.as_str().to_lowercase());
    }
    assert_eq!(Outcome::TimedOut.to_string(), "timedout");
    assert_eq!(Outcome::parse("Ran"), None);
}

#[test]
fn last_runs_and_durations() {
    let dir = temp();
    let cache = open(&dir);
    let b1 = cache.begin_build("/ws", "build //...").unwrap();
    cache
        .record_runs(
            b1,
            &[
                run("//a:x", Outcome::Ran, 500, 1000),
                run("//a:y", Outcome::Flaky, 70, 1001),
                run("//a:z", Outcome::Skipped, 0, 1002),
            ],
        )
        .unwrap();
    cache.record_runs(b1, &[]).unwrap();
    let b2 = cache.begin_build("/ws", "build //a:x").unwrap();
    assert!(b2 > b1);
    cache
        .record_runs(
            b2,
            &[
                run("//a:x", Outcome::Cached, 0, 2000),
                run("//a:y", Outcome::Failed, 90, 0),
            ],
        )
        .unwrap();

    assert_eq!(
        cache.last_run("/ws", "//a:x").unwrap(),
        Some(run("//a:x", Outcome::Cached, 0, 2000))
    );
    let failed = cache.last_run("/ws", "//a:y").unwrap().unwrap();
    assert_eq!(failed.outcome, Outcome::Failed);
    assert!(failed.finished_at_ms > 1_600_000_000_000, "0 means now");
    assert_eq!(
        cache.last_successful_run("/ws", "//a:y").unwrap(),
        Some(run("//a:y", Outcome::Flaky, 70, 1001))
    );
    assert_eq!(cache.last_successful_run("/ws", "//a:z").unwrap(), None);
    assert_eq!(cache.last_run("/other", "//a:x").unwrap(), None);

    let durations = cache.durations("/ws").unwrap();
    assert_eq!(durations.len(), 2);
    assert_eq!(durations["//a:x"], 500, "the cached run measured nothing");
    assert_eq!(durations["//a:y"], 90);
    assert!(cache.durations("/other").unwrap().is_empty());
    let labels: Vec<String> = ["//a:x", "//a:y", "//a:z", "//a:none"]
        .map(String::from)
        .to_vec();
    assert_eq!(cache.durations_of("/ws", &labels).unwrap(), durations);

    // The latest key of each label, whatever the outcome: the same as `last_run`'s.
    let last = cache.last_keys("/ws").unwrap();
    assert_eq!(last.len(), 3);
    for label in ["//a:x", "//a:y", "//a:z"] {
        let run = cache.last_run("/ws", label).unwrap().unwrap();
        assert_eq!(last[label], run.key, "{label}");
    }
    assert_eq!(cache.last_keys_of("/ws", &labels).unwrap(), last);
    assert!(cache.last_keys("/other").unwrap().is_empty());
}

#[test]
fn builds_are_listed_newest_first_with_their_summary() {
    let dir = temp();
    let cache = open(&dir);
    let b1 = cache.begin_build("/ws", "build //...").unwrap();
    let summary = BuildSummary {
        outcome: "passed".into(),
        ran: 3,
        cached: 4,
        up_to_date: 5,
        failed: 0,
        skipped: 1,
        flaky: 2,
        duration_ms: 789,
    };
    cache.finish_build(b1, &summary).unwrap();
    let b2 = cache.begin_build("/ws2", "test //a").unwrap();
    let builds = cache.recent_builds(10).unwrap();
    assert_eq!(builds.iter().map(|b| b.id).collect::<Vec<_>>(), [b2, b1]);
    assert_eq!(builds[0].summary, None);
    assert_eq!(builds[0].finished_at_ms, None);
    assert_eq!(
        (builds[0].workspace.as_str(), builds[0].args.as_str()),
        ("/ws2", "test //a")
    );
    assert_eq!(builds[1].summary, Some(summary));
    assert!(builds[1].finished_at_ms.unwrap() >= builds[1].started_at_ms);
    assert_eq!(cache.recent_builds(1).unwrap().len(), 1);
}

#[test]
fn runs_need_an_existing_build() {
    let dir = temp();
    let cache = open(&dir);
    let err = cache
        .record_runs(999, &[run("//a:x", Outcome::Ran, 1, 0)])
        .unwrap_err();
    assert!(matches!(err, crate::CacheError::Sqlite { .. }), "{err}");
}
