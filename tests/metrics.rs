//! `flow metrics` on a ledger written by hand (the answers worked out in the comments) and on
//! a history made by real builds, a flaky target included.

use serde_json::{json, Value};

use crate::support::Ws;

const H: i64 = 3_600_000;
const DAY: i64 = 24 * H;
/// The clock of these tests: day 10, 00:00 UTC after the epoch's start of the fixture.
const NOW: i64 = 1_800_000_000_000;

fn entry(
    id: &str,
    kind: &str,
    outcome: &str,
    start: i64,
    end: i64,
    commit_s: Option<i64>,
) -> Value {
    json!({
        "id": id, "environment": "production",
        "label": if kind == "monitor" { "//d:watch" } else { "//d:deploy" },
        "kind": kind, "outcome": outcome,
        "artifact": {"digest": "a".repeat(64), "kind": "file", "size": 1, "executable": false,
                     "name": "app.whl", "label": "//d:bundle"},
        "commit": commit_s.map(|_| "c".repeat(40)), "commit_time": commit_s,
        "branch": "main", "user": "alice", "started_ms": start, "ended_ms": end,
        "reason": null, "approved_by": null
    })
}

fn ledger_ws() -> Ws {
    let t0 = NOW - 7 * DAY;
    let entries = [
        // A deploy of a commit 2 h old, and a deploy whose monitor fails after 10 min, rolled
        // back automatically 5 min later.
        entry(
            "a",
            "deploy",
            "succeeded",
            t0,
            t0 + 60_000,
            Some((t0 + 60_000 - 2 * H) / 1000),
        ),
        entry(
            "b",
            "deploy",
            "succeeded",
            t0 + DAY,
            t0 + DAY,
            Some((t0 + DAY - 4 * H) / 1000),
        ),
        entry(
            "b-m",
            "monitor",
            "failed",
            t0 + DAY,
            t0 + DAY + 600_000,
            None,
        ),
        entry(
            "b-r",
            "automatic-rollback",
            "succeeded",
            t0 + DAY + 600_000,
            t0 + DAY + 900_000,
            None,
        ),
        // Before the period (40 days ago): not counted.
        entry(
            "old",
            "deploy",
            "failed",
            NOW - 40 * DAY,
            NOW - 40 * DAY,
            None,
        ),
    ];
    let mut ws = Ws::new().file(
        "flow.toml",
        "[environments.production]\n[environments.staging]\n",
    );
    for e in &entries {
        ws = ws.file(
            &format!(
                ".flow/ledger/entries/{}-{}.json",
                e["started_ms"],
                e["id"].as_str().unwrap()
            ),
            &serde_json::to_string(e).unwrap(),
        );
    }
    ws
}

#[test]
fn dora_from_the_ledger() {
    let ws = ledger_ws();
    let now = NOW.to_string();
    let run = ws.run_env(ws.path(), &["metrics", "--json"], &[("FLOW_NOW_MS", &now)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let m: Value = serde_json::from_str(&run.stdout).unwrap();
    let prod = m["delivery"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["environment"] == "production")
        .unwrap();
    // Deployments a and b in 30 days; lead times 2 h and 4 h (median by nearest rank: 2 h);
    // b went bad (failed monitor, rolled back): 1 of 2; b-m restored by b-r 5 min after it
    // ended.
    assert_eq!(prod["deployments"], 2);
    assert_eq!(prod["lead_time_median_s"], 7200.0);
    assert_eq!(prod["lead_time_p90_s"], 14400.0);
    assert_eq!(
        (prod["failed_changes"].clone(), prod["attempts"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(prod["change_failure_rate"], 0.5);
    assert_eq!(prod["time_to_restore_median_s"], 300.0);
    let text = ws.run_env(
        ws.path(),
        &["metrics", "--env", "production"],
        &[("FLOW_NOW_MS", &now)],
    );
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout.contains(
            "  production: 2 deployment(s), 0.07 a day; lead time median 2h00m (p90 4h00m); \
             change failure rate 50% (1 of 2); time to restore median 5m (1 of 1 failure(s) restored)"
        ),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains("staging"), "{}", text.stdout);
    // The period: with --days 3, only what started in the last 3 days (nothing).
    let short = ws.run_env(
        ws.path(),
        &["metrics", "--json", "--days", "3"],
        &[("FLOW_NOW_MS", &now)],
    );
    let m: Value = serde_json::from_str(&short.stdout).unwrap();
    assert_eq!(m["delivery"][0]["deployments"], 0);
    let bad = ws.run(&["metrics", "--env", "prod"]);
    assert_eq!(bad.code, 2);
    crate::support::golden("metrics_unknown_environment", &bad.stderr);
}

/// Real builds: a target that failed and then passed with the same key (it reads a file it
/// does not declare) is flaky, and so is one that passed on a retry.
#[test]
fn flaky_targets_from_the_history() {
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("ready");
    let retry_marker = marker_dir.path().join("tried");
    let ws = Ws::new().file(
        "t/BUILD",
        &format!(
            "task(name = \"racy\", cmd = \"test -e {}\")\n\
             task(name = \"retried\", cmd = \"test -e {r} || {{ touch {r}; exit 1; }}\", retries = 1)\n\
             task(name = \"steady\", srcs = [\"in.txt\"], cmd = \"cat in.txt\")\n",
            marker.display(),
            r = retry_marker.display()
        ),
    )
    .file("t/in.txt", "1\n");
    assert_eq!(ws.run(&["build", "-k", "//t:all"]).code, 1);
    std::fs::write(&marker, "").unwrap();
    assert_eq!(ws.run(&["build", "//t:all"]).code, 0);
    let run = ws.run(&["metrics", "--flaky", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let flaky: Value = serde_json::from_str(&run.stdout).unwrap();
    let labels: Vec<&str> = flaky
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["//t:racy", "//t:retried"], "{}", run.stdout);
    // An edit and its revert: the revert is answered from the cache.
    ws.write("t/in.txt", b"2\n");
    assert_eq!(ws.run(&["build", "//t:all"]).code, 0);
    ws.write("t/in.txt", b"1\n");
    assert_eq!(ws.run(&["build", "//t:all"]).code, 0);
    // Runs recorded: 3 (first build) + 1 (racy again; the others carried over by the build
    // record, which records nothing) + 1 (steady on the edit) + 1 (steady from the cache).
    let all = ws.run(&["metrics"]);
    assert!(
        all.stdout
            .contains("  cache hit rate: 17% (1 of 6 runs reused)"),
        "{}",
        all.stdout
    );
}

/// `[test] quarantine`: a quarantined target's failure is a `[QUARANTINED]` warning that fails
/// no build (without `-k` the others still run), its dependents skip, and the history still
/// records the failure (for `flow log` and `flow metrics`): the outcome changes, not the record.
#[test]
fn quarantine_changes_the_outcome_not_the_record() {
    let ws = Ws::new()
        .file("flow.toml", "[test]\nquarantine = [\"//t:flaky\"]\n")
        .file(
            "t/BUILD",
            "task(name = \"flaky\", cmd = \"echo boom; exit 1\")\n\
             task(name = \"after\", deps = [\":flaky\"], cmd = \"true\")\n\
             task(name = \"other\", cmd = \"true\")\n",
        );
    let run = ws.run(&["build", "-j", "1", "//t:all"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("[QUARANTINED] //t:flaky (failed, not failing the build: exit 1, "),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("\n    boom\n"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("[SKIPPED] //t:after (dependency failed)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("[RAN] //t:other"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("flow: ok: 1 ran, 0 cached, 0 failed, 1 skipped, 0 flaky, 1 quarantined"),
        "{}",
        run.stdout
    );
    let log = ws.run(&["log", "//t:flaky"]);
    assert!(
        log.stderr
            .starts_with("flow: last run of //t:flaky: failed"),
        "{}",
        log.stderr
    );
    // Not quarantined: the same failure fails the build.
    ws.write("flow.toml", b"");
    assert_eq!(ws.run(&["build", "//t:all"]).code, 1);
}

#[test]
fn a_bad_quarantine_entry_is_a_config_error() {
    let ws = Ws::new().file("flow.toml", "[test]\nquarantine = [\"t:flaky\"]\n");
    let run = ws.run(&["build"]);
    assert_eq!(run.code, 2);
    crate::support::golden("quarantine_not_a_label", &run.stderr);
}

/// A test case that failed and then passed under one key (its test reads a file it does not
/// declare) is a flaky test case, read from the JUnit output of each run; a case that always
/// passed is not.
#[test]
fn a_flaky_test_case_is_found_in_the_history() {
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("ready");
    let junit = |clock: &str| {
        format!(
            "<testsuite name=\\\"t\\\"><testcase classname=\\\"t\\\" name=\\\"test_stable\\\"/>\
             <testcase classname=\\\"t\\\" name=\\\"test_clock\\\">{clock}</testcase></testsuite>"
        )
    };
    let ws = Ws::new().file(
        "t/BUILD",
        &format!(
            "task(name = \"unit\", outs = [\"junit.xml\"], cmd = \"if test -e {m}; then \
             echo '{pass}' > junit.xml; else echo '{fail}' > junit.xml; exit 1; fi\")\n",
            m = marker.display(),
            pass = junit(""),
            fail = junit("<failure message=\\\"late\\\"/>"),
        ),
    );
    assert_eq!(ws.run(&["build", "//t:unit"]).code, 1);
    std::fs::write(&marker, "").unwrap();
    assert_eq!(ws.run(&["build", "//t:unit"]).code, 0);
    let run = ws.run(&["metrics", "--flaky", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let flaky: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(flaky[0]["label"], "//t:unit", "{}", run.stdout);
    assert_eq!(
        flaky[0]["cases"],
        serde_json::json!([{"name": "t.test_clock", "passed": 1, "failed": 1}]),
        "{}",
        run.stdout
    );
    let text = ws.run(&["metrics", "--flaky"]);
    assert!(
        text.stdout
            .contains("      test case t.test_clock: 1 passed, 1 failed\n"),
        "{}",
        text.stdout
    );
}
