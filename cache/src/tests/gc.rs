//! Garbage collection (LRU order, pinned and shared blobs, temp files, history pruning), stats
//! and clear.

use std::fs;

use super::{age, key, names, open, temp};
use crate::{
    ActionResult, ActionRun, BuildSummary, Cache, Digest, GcReport, Outcome, OutputEntry,
    OutputKind, BUILDS_KEPT, PROTECTED_RUNS, RUNS_KEPT_PER_LABEL,
};

const DAY: u64 = 24 * 3600;

fn blob(cache: &Cache, fill: u8, len: usize) -> Digest {
    let d = cache.cas().put_bytes(&vec![fill; len]).unwrap();
    age(&cache.cas().path_of(&d), DAY);
    d
}

fn files(digests: &[Digest]) -> ActionResult {
    ActionResult {
        exit_code: 0,
        outputs: digests
            .iter()
            .enumerate()
            .map(|(i, d)| OutputEntry {
                path: format!("out/{i}"),
                kind: OutputKind::File {
                    digest: *d,
                    size: 0,
                    executable: false,
                },
            })
            .collect(),
        stdout: None,
        stderr: None,
        duration_ms: 1,
    }
}

fn set_last_used(cache: &Cache, k: &Digest, days_ago: i64) {
    let at = crate::db::now_ms() - days_ago * DAY as i64 * 1000;
    cache
        .conn()
        .execute(
            "UPDATE action_results SET last_used_at = ?1 WHERE key = ?2",
            rusqlite::params![at, k],
        )
        .unwrap();
}

#[test]
fn least_recently_used_results_go_first_and_shared_blobs_survive() {
    let dir = temp();
    let cache = open(&dir);
    let own_a = blob(&cache, b'a', 1000);
    let own_b = blob(&cache, b'b', 1000);
    let shared = blob(&cache, b's', 500);
    let orphan = blob(&cache, b'o', 300);
    let fresh_orphan = cache.cas().put_bytes(&[b'f'; 200]).unwrap();
    cache.put_action(&key(1), &files(&[own_a, shared])).unwrap();
    cache.put_action(&key(2), &files(&[own_b, shared])).unwrap();
    set_last_used(&cache, &key(1), 2);
    set_last_used(&cache, &key(2), 1);

    let report = cache.gc(1800).unwrap();
    assert_eq!(
        report,
        GcReport {
            removed_runs: 0,
            removed_results: 1,
            removed_blobs: 2,
            removed_bytes: 1300,
            remaining_bytes: 1700,
        }
    );
    let left = cache.get_actions(&[key(1), key(2)]).unwrap();
    assert_eq!(left.keys().collect::<Vec<_>>(), [&key(2)]);
    let cas = cache.cas();
    assert!(!cas.contains(&own_a) && !cas.contains(&orphan));
    assert!(cas.contains(&own_b) && cas.contains(&shared));
    assert!(
        cas.contains(&fresh_orphan),
        "modified within the grace period"
    );
    assert_eq!(cache.stats().unwrap().blob_bytes, 1700);

    // Under the limit, nothing happens.
    let again = cache.gc(1_000_000).unwrap();
    assert_eq!(again.removed_blobs + again.removed_results, 0);
    assert_eq!(again.remaining_bytes, 1700);
}

#[test]
fn tree_entries_logs_and_recent_runs_keep_their_blobs() {
    let dir = temp();
    let cache = open(&dir);
    let src = dir.path().join("tree");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/f.txt"), vec![b't'; 400]).unwrap();
    let (manifest, size) = cache.cas().put_tree(&src, false).unwrap();
    let entry = Digest::of(&[b't'; 400]);
    let log = blob(&cache, b'l', 100);
    let run_log = blob(&cache, b'r', 100);
    let key_blob = cache.cas().put_bytes(b"serialized action key").unwrap();
    let orphan = blob(&cache, b'o', 1000);
    for d in [manifest, entry, key_blob] {
        age(&cache.cas().path_of(&d), DAY);
    }
    let result = ActionResult {
        exit_code: 0,
        outputs: vec![OutputEntry {
            path: "tree".into(),
            kind: OutputKind::Tree {
                digest: manifest,
                size,
            },
        }],
        stdout: Some(log),
        stderr: None,
        duration_ms: 5,
    };
    cache.put_action(&key(7), &result).unwrap();
    let build = cache.begin_build("/ws", "build").unwrap();
    let run = ActionRun {
        label: "//a:old".into(),
        key: key_blob,
        outcome: Outcome::Failed,
        duration_ms: 3,
        exit_code: Some(1),
        stdout: None,
        stderr: Some(run_log),
        workspace: "/ws".into(),
        finished_at_ms: 0,
    };
    cache.record_runs(build, &[run]).unwrap();

    let report = cache.gc(1500).unwrap();
    assert_eq!((report.removed_results, report.removed_blobs), (0, 1));
    assert!(!cache.cas().contains(&orphan));
    for d in [manifest, entry, log, run_log, key_blob] {
        assert!(cache.cas().contains(&d), "{d}");
    }

    // With no room at all, every result goes, and so does every old blob not pinned by a run.
    let report = cache.gc(0).unwrap();
    assert_eq!(report.removed_results, 1);
    for d in [manifest, entry, log] {
        assert!(!cache.cas().contains(&d));
    }
    assert!(cache.cas().contains(&run_log) && cache.cas().contains(&key_blob));
}

#[test]
fn stale_temp_files_are_removed() {
    let dir = temp();
    let cache = open(&dir);
    let stale = cache.cas().temp_path();
    let live = cache.cas().temp_path();
    fs::write(&stale, "s").unwrap();
    fs::write(&live, "l").unwrap();
    age(&stale, 2 * 3600);
    cache.gc(u64::MAX).unwrap();
    assert!(!stale.exists() && live.exists());
}

#[test]
fn stats_count_everything_and_clear_empties_it() {
    let dir = temp();
    let cache = open(&dir);
    let d = cache.cas().put_bytes(b"12345").unwrap();
    cache.cas().put_bytes(b"678").unwrap();
    cache.put_action(&key(1), &files(&[d])).unwrap();
    let state = crate::FileState {
        size: 5,
        mtime_ns: 1,
        ctime_ns: 1,
        ino: 2,
        digest: d,
        recorded_at_ns: 3,
    };
    cache.save_file_states(&[("/ws/f".into(), state)]).unwrap();
    let build = cache.begin_build("/ws", "").unwrap();
    let run = ActionRun {
        label: "//:x".into(),
        key: key(1),
        outcome: Outcome::Ran,
        duration_ms: 1,
        exit_code: Some(0),
        stdout: None,
        stderr: None,
        workspace: "/ws".into(),
        finished_at_ms: 0,
    };
    cache.record_runs(build, &[run]).unwrap();
    let stats = cache.stats().unwrap();
    assert_eq!(
        (
            stats.blobs,
            stats.blob_bytes,
            stats.action_results,
            stats.file_states
        ),
        (2, 8, 1, 1)
    );
    assert_eq!((stats.builds, stats.action_runs), (1, 1));
    assert!(stats.db_bytes > 0);

    fs::write(cache.cas().temp_path(), "partial").unwrap();
    assert_eq!(cache.clear().unwrap(), 0);
    let stats = cache.stats().unwrap();
    assert_eq!(
        stats,
        crate::CacheStats {
            db_bytes: stats.db_bytes,
            ..Default::default()
        }
    );
    assert!(names(cache.cas().root()).is_empty() && names(cache.cas().tmp_dir()).is_empty());
    // Still usable.
    let d = cache.cas().put_bytes(b"after").unwrap();
    cache.put_action(&key(1), &files(&[d])).unwrap();
    assert_eq!(cache.get_actions(&[key(1)]).unwrap().len(), 1);
}

fn history_run(workspace: &str, label: &str, outcome: Outcome, key: Digest) -> ActionRun {
    ActionRun {
        label: label.into(),
        key,
        outcome,
        duration_ms: 7,
        exit_code: outcome.executed().then_some(0),
        stdout: None,
        stderr: None,
        workspace: workspace.into(),
        finished_at_ms: 0,
    }
}

/// Records `runs` as one finished build.
fn finished_build(cache: &Cache, runs: &[ActionRun]) {
    let build = cache.begin_build(&runs[0].workspace, "build").unwrap();
    cache.record_runs(build, runs).unwrap();
    cache.finish_build(build, &BuildSummary::default()).unwrap();
}

/// Issue 14: `action_runs` grew by one row per action per build forever. `gc` keeps each label's
/// last runs and its last successful one, the builds that still have runs or are recent, and the
/// serialized keys `flow explain` needs; what the readers see does not change.
#[test]
fn gc_prunes_the_history_to_what_its_readers_need() {
    let dir = temp();
    let cache = open(&dir);
    // Sizes the scenario below relies on.
    assert_eq!(
        (RUNS_KEPT_PER_LABEL, BUILDS_KEPT, PROTECTED_RUNS),
        (10, 100, 1000)
    );
    let running = cache.begin_build("/ws", "build").unwrap();
    // //a:x in /ws: one success, then 14 failures, a build each.
    finished_build(&cache, &[history_run("/ws", "//a:x", Outcome::Ran, key(1))]);
    for i in 0..14 {
        let run = history_run("/ws", "//a:x", Outcome::Failed, key(100 + i));
        finished_build(&cache, &[run]);
    }
    // //a:y in /ws: three runs, all kept.
    let y: Vec<_> = (0..3)
        .map(|i| history_run("/ws", "//a:y", Outcome::Cached, key(200 + i)))
        .collect();
    finished_build(&cache, &y);
    // //a:z in /other: 1,100 runs, 11 in each of 100 builds.
    for b in 0..100 {
        let runs: Vec<_> = (0..11)
            .map(|i| history_run("/other", "//a:z", Outcome::Ran, key(10_000 + b * 11 + i)))
            .collect();
        finished_build(&cache, &runs);
    }
    for k in [key(1), key(100), key(10_000)] {
        cache.save_keys(&[(k, b"{}".to_vec())]).unwrap();
    }
    let readers = |cache: &Cache| {
        (
            cache.last_run("/ws", "//a:x").unwrap(),
            cache.last_successful_run("/ws", "//a:x").unwrap(),
            cache.last_run("/other", "//a:z").unwrap(),
            cache.durations("/ws").unwrap(),
            cache.last_keys("/other").unwrap(),
        )
    };
    let before = readers(&cache);
    assert_eq!(cache.stats().unwrap().action_runs, 15 + 3 + 1100);
    assert_eq!(cache.stats().unwrap().builds, 1 + 15 + 1 + 100);

    let report = cache.gc(u64::MAX).unwrap();
    assert_eq!(report.removed_runs, 4 + 1090);
    assert_eq!(readers(&cache), before);
    let stats = cache.stats().unwrap();
    assert_eq!(stats.action_runs, (10 + 1) + 3 + 10);
    // The builds of the four pruned failures go; /other's 99 builds without runs are among the
    // 100 most recent and stay, and so does the build still running.
    assert_eq!(stats.builds, 117 - 4);
    let builds = cache.recent_builds(1000).unwrap();
    assert!(builds
        .iter()
        .any(|b| b.id == running && b.summary.is_none()));
    // The key of //a:x's last success stays for `flow explain`, though 1,100 runs came after it.
    assert!(cache.key_json(&key(1)).unwrap().is_some());
    assert!(cache.key_json(&key(100)).unwrap().is_none());
    assert!(cache.key_json(&key(10_000)).unwrap().is_none());

    let again = cache.gc(u64::MAX).unwrap();
    assert_eq!(again.removed_runs, 0);
    assert_eq!(readers(&cache), before);
}
