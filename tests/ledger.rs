//! `flow ledger` on ledgers written by hand (one entry file each, as deploys write them), the
//! pins `flow clean --cache` keeps, and a ledger shared by two checkouts through a bare git
//! remote.

use std::path::Path;

use flow_cache::Digest;
use serde_json::{json, Value};

use crate::support::{golden, remote_and_clones, Ws};

/// 2024-05-07 14:00:00 UTC (a Tuesday), in milliseconds.
const T0: i64 = 1_715_090_400_000;
const HOUR: i64 = 3_600_000;

/// An entry as the ledger stores it.
#[allow(clippy::too_many_arguments)]
fn entry(id: &str, env: &str, kind: &str, outcome: &str, digest: &str, at: i64) -> Value {
    json!({
        "id": id,
        "environment": env,
        "label": format!("//:deploy_{env}"),
        "kind": kind,
        "outcome": outcome,
        "artifact": {
            "digest": digest, "kind": "file", "size": 12, "executable": false,
            "name": "app.tar", "label": "//app:bundle"
        },
        "commit": format!("{id}{}", "0".repeat(40 - id.len())),
        "commit_time": at / 1000 - 60,
        "branch": "main",
        "user": "alice",
        "started_ms": at,
        "ended_ms": at + 90_000,
        "reason": null,
        "approved_by": null
    })
}

fn write_entries(ws: &Ws, entries: &[Value]) {
    for e in entries {
        let name = format!(
            ".flow/ledger/entries/{}-{}.json",
            e["started_ms"],
            e["id"].as_str().unwrap()
        );
        ws.write(&name, serde_json::to_string_pretty(e).unwrap().as_bytes());
    }
}

fn hex(c: char) -> String {
    c.to_string().repeat(64)
}

fn history() -> Vec<Value> {
    let mut emergency = entry(
        "e5",
        "production",
        "emergency",
        "succeeded",
        &hex('e'),
        T0 + 4 * HOUR,
    );
    emergency["reason"] = json!("hotfix for INC-42");
    emergency["approved_by"] = json!("bob");
    let mut failed = entry(
        "f6",
        "production",
        "deploy",
        "failed",
        &hex('f'),
        T0 + 5 * HOUR,
    );
    failed["reason"] = json!("health check failed");
    vec![
        entry("a1", "staging", "deploy", "succeeded", &hex('a'), T0),
        entry(
            "b2",
            "production",
            "deploy",
            "succeeded",
            &hex('a'),
            T0 + HOUR,
        ),
        entry(
            "c3",
            "staging",
            "deploy",
            "succeeded",
            &hex('b'),
            T0 + 2 * HOUR,
        ),
        entry(
            "d4",
            "production",
            "deploy",
            "succeeded",
            &hex('b'),
            T0 + 3 * HOUR,
        ),
        emergency,
        failed,
        entry("g7", "qa", "deploy", "failed", &hex('c'), T0 + 6 * HOUR),
    ]
}

#[test]
fn what_is_live_where_and_an_environments_history() {
    let ws = Ws::new();
    write_entries(&ws, &history());
    let out = ws.run(&["ledger"]);
    assert_eq!(
        out.ok(),
        "production  eeeeeeeeeeee  //app:bundle  since 2024-05-07 18:01:30 UTC  commit e500000  by alice (emergency)\n\
         qa          nothing live  (last: failed deploy at 2024-05-07 20:00:00 UTC)\n\
         staging     bbbbbbbbbbbb  //app:bundle  since 2024-05-07 16:01:30 UTC  commit c300000  by alice (deploy)\n"
    );
    let out = ws.run(&["ledger", "production"]);
    assert_eq!(
        out.ok(),
        "2024-05-07 19:00:00 UTC  deploy              failed     ffffffffffff  //app:bundle  commit f600000 (main)  by alice  //:deploy_production  reason: health check failed\n\
         2024-05-07 18:00:00 UTC  emergency           succeeded  eeeeeeeeeeee  //app:bundle  commit e500000 (main)  by alice  //:deploy_production  approved by bob  reason: hotfix for INC-42  [live]\n\
         2024-05-07 17:00:00 UTC  deploy              succeeded  bbbbbbbbbbbb  //app:bundle  commit d400000 (main)  by alice  //:deploy_production\n\
         2024-05-07 15:00:00 UTC  deploy              succeeded  aaaaaaaaaaaa  //app:bundle  commit b200000 (main)  by alice  //:deploy_production\n"
    );
}

#[test]
fn json_prints_the_entries_oldest_first() {
    let ws = Ws::new();
    let all = history();
    write_entries(&ws, &all);
    let parsed: Value = serde_json::from_str(ws.run(&["ledger", "--json"]).ok()).unwrap();
    assert_eq!(parsed, Value::Array(all.clone()));
    let staging: Value =
        serde_json::from_str(ws.run(&["ledger", "staging", "--json"]).ok()).unwrap();
    assert_eq!(staging, json!([all[0], all[2]]));
}

#[test]
fn an_empty_ledger_says_so() {
    let ws = Ws::new();
    let out = ws.run(&["ledger"]);
    assert_eq!(out.ok(), "");
    assert!(
        out.stderr.contains("the deploy ledger is empty"),
        "{}",
        out.stderr
    );
    assert_eq!(ws.run(&["ledger", "--json"]).ok(), "[]\n");
}

#[test]
fn unknown_environment() {
    let ws = Ws::new();
    write_entries(&ws, &history());
    golden(
        "ledger_unknown_environment",
        ws.run(&["ledger", "prodution"]).bad_input(),
    );
    golden(
        "ledger_unknown_environment_far",
        ws.run(&["ledger", "europe-west"]).bad_input(),
    );
    let empty = Ws::new();
    golden(
        "ledger_empty_environment",
        empty.run(&["ledger", "staging"]).bad_input(),
    );
}

#[test]
fn bad_ledger_configuration() {
    let ws = Ws::new().file("flow.toml", "[ledger]\nremote = \"origin\"\nkeep = -3\n");
    golden("config_ledger_keep", ws.run(&["ledger"]).bad_input());
    let ws = Ws::new().file("flow.toml", "[ledger]\nremote = \"origin\"\n");
    golden("ledger_remote_outside_git", ws.run(&["ledger"]).bad_input());
}

/// `flow clean --cache` empties the cache but for the artifacts the ledger names as live or
/// previously live (up to `keep` per environment), which a rollback restores.
#[test]
fn clean_cache_keeps_the_artifacts_the_ledger_pins() {
    let ws = Ws::new().file("flow.toml", "[ledger]\nkeep = 1\n").file(
        "app/BUILD",
        "task(name = \"v1\", outs = [\"v1.txt\"], cmd = \"echo one > v1.txt\")\n\
             task(name = \"v2\", outs = [\"v2.txt\"], cmd = \"echo two > v2.txt\")\n\
             task(name = \"v3\", outs = [\"v3.txt\"], cmd = \"echo three > v3.txt\")\n\
             task(name = \"other\", outs = [\"other.txt\"], cmd = \"echo other > other.txt\")\n",
    );
    ws.run(&["build", "//app:all"]).ok();
    let digest = |text: &str| Digest::of(text.as_bytes()).to_string();
    let blob = |d: &str| ws.path().join(".flow/cas").join(&d[..2]).join(&d[2..]);
    let (v1, v2, v3, other) = (
        digest("one\n"),
        digest("two\n"),
        digest("three\n"),
        digest("other\n"),
    );
    for d in [&v1, &v2, &v3, &other] {
        assert!(blob(d).is_file(), "{d} cached");
    }
    // Live: v3; before it: v2, then v1 (beyond `keep = 1`).
    write_entries(
        &ws,
        &[
            entry("a1", "staging", "deploy", "succeeded", &v1, T0),
            entry("b2", "staging", "deploy", "succeeded", &v2, T0 + HOUR),
            entry("c3", "staging", "deploy", "succeeded", &v3, T0 + 2 * HOUR),
        ],
    );
    let out = ws.run(&["clean", "--cache"]);
    out.ok();
    assert!(
        out.stderr
            .contains("but for the 2 artifacts the deploy ledger pins for rollbacks"),
        "{}",
        out.stderr
    );
    assert!(
        blob(&v3).is_file() && blob(&v2).is_file(),
        "pinned blobs kept"
    );
    assert!(
        !blob(&v1).exists() && !blob(&other).exists(),
        "the rest removed"
    );
    assert_eq!(
        ws.run(&["ledger", "staging"]).ok().lines().count(),
        3,
        "the ledger stays"
    );
}

/// Two CI-like checkouts with empty `.flow/`: what one records, `flow ledger` in the other
/// shows, through `refs/flow/ledger` on a bare remote.
#[test]
fn two_checkouts_share_the_ledger_through_a_bare_remote() {
    let root = tempfile::tempdir().unwrap();
    let clones = remote_and_clones(
        root.path(),
        &[
            ("flow.toml", "[ledger]\nremote = \"origin\"\n"),
            (".gitignore", ".flow/\nflow-out/\n"),
        ],
        &["a", "b"],
    );
    let (a, b) = (clones[0].clone(), clones[1].clone());
    let remote = root.path().join("remote.git");
    let config = flow::delivery::ledger::LedgerConfig {
        remote: Some("origin".into()),
        keep: 5,
    };
    let mut no_warning = |w: String| panic!("{w}");
    let mut ledger = flow::delivery::ledger::Ledger::open(&a, &config, &mut no_warning).unwrap();
    let recorded: flow::delivery::ledger::Entry =
        serde_json::from_value(entry("a1", "staging", "deploy", "succeeded", &hex('a'), T0))
            .unwrap();
    ledger.record(recorded, &mut no_warning).unwrap();

    let run = |dir: &Path, args: &[&str]| {
        let out = std::process::Command::new(crate::support::flow_bin())
            .current_dir(dir)
            .args(["--color", "never"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(!b.join(".flow/ledger").exists());
    let shown = run(&b, &["ledger"]);
    assert!(
        shown.starts_with("staging  aaaaaaaaaaaa  //app:bundle  since 2024-05-07"),
        "{shown}"
    );
    assert!(
        b.join(".flow/ledger/entries/1715090400000-a1.json")
            .is_file(),
        "copied locally"
    );
    // The remote gone, B still answers from its local copy, with a warning.
    std::fs::rename(&remote, root.path().join("gone.git")).unwrap();
    let out = std::process::Command::new(crate::support::flow_bin())
        .current_dir(&b)
        .args(["--color", "never", "ledger"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), shown);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("warning: could not reach the ledger's remote `origin`"),
        "{stderr}"
    );
}
