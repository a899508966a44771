//! Secret values and undeclared environment variables stay out of everything flow keeps or
//! prints, and out of the key: through the real binary, with distinctive values for a secret and
//! for a variable set in flow's environment but not declared:
//! - neither value is in any action key (the key JSON blobs read back from the CAS), any log,
//!   any database row, any file of the cache directory (database, WAL, blobs) or of `flow-out/`,
//!   nor in anything `flow build`, `flow log` or `flow explain` print;
//! - the undeclared variable does not reach the command, and changing it (or the secret's
//!   value) changes no key: the build stays cached;
//! - changing a declared `env` value in the BUILD file changes the key: `flow explain` names the
//!   variable, and the action and its dependent run again.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::support::{files_under, flow_bin, Ws};

const SECRET: &str = "FLOW_SECRETS_TEST_TOKEN";
const UNDECLARED: &str = "FLOW_SECRETS_TEST_UNDECLARED";

fn build_file(mode: &str) -> String {
    format!(
        r#"task(
    name = "deploy",
    secrets = ["{SECRET}"],
    env = {{"MODE": "{mode}"}},
    outs = ["o.txt"],
    cmd = "echo token=$${SECRET}; echo undeclared=[$${UNDECLARED}]; echo err=$${SECRET} >&2; echo mode=$$MODE > o.txt",
)
task(name = "after", deps = [":deploy"], outs = ["a.txt"], cmd = "cat $(location :deploy) > a.txt")
"#
    )
}

/// stdout and stderr of `flow ARGS` in `ws`, with `env` set (and nothing else of the test's
/// environment that could interfere).
fn flow(ws: &Ws, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(flow_bin())
        .current_dir(ws.path())
        .args(["--color", "never"])
        .args(args)
        .env_remove("FLOW_CACHE_DIR")
        .env_remove(SECRET)
        .env_remove(UNDECLARED)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Asserts that none of `values` occurs in `bytes`.
#[track_caller]
fn absent(bytes: &[u8], values: &[&str], what: &str) {
    for v in values {
        assert!(
            !bytes.windows(v.len()).any(|w| w == v.as_bytes()),
            "`{v}` found in {what}"
        );
    }
}

/// Every column of every row of every table of the cache database, as bytes.
fn database_cells(db: &Path) -> Vec<Vec<u8>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut cells = Vec::new();
    for t in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..n {
                use rusqlite::types::ValueRef;
                cells.push(match row.get_ref(i).unwrap() {
                    ValueRef::Text(b) | ValueRef::Blob(b) => b.to_vec(),
                    ValueRef::Integer(n) => n.to_string().into_bytes(),
                    ValueRef::Real(f) => f.to_string().into_bytes(),
                    ValueRef::Null => Vec::new(),
                });
            }
        }
    }
    cells
}

/// The action keys (parsed JSON) of every recorded run, read from the `action_keys` table.
fn recorded_keys(ws: &Ws) -> Vec<serde_json::Value> {
    let cache = ws.path().join(".flow");
    let conn = rusqlite::Connection::open(cache.join("flow.db")).unwrap();
    let keys: BTreeSet<Vec<u8>> = conn
        .prepare("SELECT key FROM action_runs")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    keys.iter()
        .map(|k| {
            let json: Vec<u8> = conn
                .query_row("SELECT json FROM action_keys WHERE key = ?1", [k], |r| {
                    r.get(0)
                })
                .expect("the key's JSON is in action_keys");
            serde_json::from_slice(&json).unwrap()
        })
        .collect()
}

/// Checks everything flow keeps: every file under the cache directory and `flow-out/`, every
/// database cell, every key.
#[track_caller]
fn nothing_kept(ws: &Ws, values: &[&str]) {
    for dir in [".flow", "flow-out"] {
        for f in files_under(&ws.path().join(dir)) {
            if let Ok(bytes) = std::fs::read(&f) {
                absent(&bytes, values, &f.display().to_string());
            }
        }
    }
    for cell in database_cells(&ws.path().join(".flow/flow.db")) {
        absent(&cell, values, "a database row");
    }
    let keys = recorded_keys(ws);
    assert!(!keys.is_empty());
    for key in keys {
        absent(key.to_string().as_bytes(), values, "an action key");
        if key["package"] == "p" && key["cmd"].as_str().unwrap().contains("token=") {
            assert_eq!(key["secrets"], serde_json::json!([SECRET]), "{key}");
            let env: BTreeSet<&str> = key["env"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(env, BTreeSet::from(["MODE", "PATH"]), "{key}");
        }
    }
}

#[test]
fn secrets_and_undeclared_variables_stay_out_of_keys_logs_and_the_cache() {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let secret = format!("s3cr3t-{stamp}");
    let undeclared = format!("ambient-{stamp}");
    let secret2 = format!("rotated-{stamp}");
    let undeclared2 = format!("changed-{stamp}");
    let values = [
        secret.as_str(),
        undeclared.as_str(),
        secret2.as_str(),
        undeclared2.as_str(),
    ];
    let ws = Ws::new().file("p/BUILD", &build_file("one"));
    let env = [(SECRET, secret.as_str()), (UNDECLARED, undeclared.as_str())];
    let mut printed = Vec::new();

    let (code, out) = flow(&ws, &["build"], &env);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("[RAN] //p:deploy") && out.contains("[RAN] //p:after"),
        "{out}"
    );
    printed.push(out);
    let (code, log) = flow(&ws, &["log", "//p:deploy"], &env);
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("token=***") && log.contains("err=***"),
        "{log}"
    );
    // Not declared: the command never sees it.
    assert!(log.contains("undeclared=[]"), "{log}");
    printed.push(log);
    let (code, explain) = flow(&ws, &["explain", "//p:deploy"], &env);
    assert_eq!(code, 0, "{explain}");
    assert!(explain.contains("up to date"), "{explain}");
    printed.push(explain);

    // Another value of the undeclared variable, then of the secret: no key changes.
    for env in [
        [
            (SECRET, secret.as_str()),
            (UNDECLARED, undeclared2.as_str()),
        ],
        [
            (SECRET, secret2.as_str()),
            (UNDECLARED, undeclared2.as_str()),
        ],
    ] {
        let (code, explain) = flow(&ws, &["explain", "//p:deploy"], &env);
        assert!(code == 0 && explain.contains("up to date"), "{explain}");
        printed.push(explain);
        let ws_run = flow(&ws, &["build"], &env);
        assert_eq!(ws_run.0, 0, "{}", ws_run.1);
        assert!(
            ws_run.1.contains("0 ran, 2 cached"),
            "a value outside the key reran something:\n{}",
            ws_run.1
        );
        printed.push(ws_run.1);
    }
    nothing_kept(&ws, &values);

    // A declared value is in the key: explain names it, and the action and its dependent run.
    ws.write("p/BUILD", build_file("two").as_bytes());
    let (code, explain) = flow(&ws, &["explain", "//p:deploy"], &env);
    assert_eq!(code, 0, "{explain}");
    assert!(
        explain.contains("would run") && explain.contains("`MODE`"),
        "{explain}"
    );
    printed.push(explain);
    let ws_run = ws.run(&["build"]);
    // Without the secret in flow's environment the action cannot run: it needs it.
    assert_eq!(ws_run.code, 1, "{}", ws_run.stdout);
    assert!(ws_run.stdout.contains(SECRET), "{}", ws_run.stdout);
    let (code, out) = flow(&ws, &["build"], &env);
    assert_eq!(code, 0, "{out}");
    printed.push(out);
    let run = crate::support::Run {
        code,
        stdout: printed.last().unwrap().clone(),
        stderr: String::new(),
    };
    assert_eq!(run.tagged("RAN"), ["//p:after", "//p:deploy"]);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/p/a.txt")).unwrap(),
        "mode=two\n"
    );
    let (_, log) = flow(&ws, &["log", "//p:deploy"], &env);
    printed.push(log);
    nothing_kept(&ws, &values);
    for text in &printed {
        absent(text.as_bytes(), &values, &format!("flow's output:\n{text}"));
    }
}

/// Regression (issue 15, item 14): the warning about files an action wrote outside its declared
/// outputs printed their names as they were, a secret's value included. They are masked as the
/// logs are (`***`), also where a write into a directory input fails the action.
#[test]
fn stray_write_names_mask_secrets() {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let secret = format!("s3cr3t-{stamp}");
    let ws = Ws::new().file("p/in/f.txt", "input\n").file(
        "p/BUILD",
        &format!(
            r#"task(
    name = "leak",
    secrets = ["{SECRET}"],
    outs = ["o.txt"],
    cmd = "echo o > o.txt; echo x > stray-$${SECRET}.txt; mkdir -p d-$${SECRET}; touch d-$${SECRET}/f",
)
task(name = "dir", srcs = glob(["in/**"]), outs = ["in-copy/"], cmd = "cp -r in in-copy")
task(
    name = "write_into",
    secrets = ["{SECRET}"],
    deps = [":dir"],
    outs = ["w.txt"],
    cmd = "echo w > w.txt; echo x > $(location :dir)/x-$${SECRET}",
)
"#
        ),
    );
    // With read-only binds, the write into the directory input fails in the command; with the
    // copy, flow finds it among the stray writes and fails the action naming it.
    for mounts in ["1", "0"] {
        let env = [(SECRET, secret.as_str()), ("FLOW_SANDBOX_MOUNTS", mounts)];
        let _ = std::fs::remove_dir_all(ws.path().join(".flow"));
        let (code, out) = flow(&ws, &["build", "-k"], &env);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(
                "`//p:leak` wrote files outside its declared outputs (not kept): `p/d-***/`, \
                 `p/stray-***.txt`"
            ),
            "{out}"
        );
        assert!(out.contains("in-copy/x-***"), "{out}");
        if mounts == "0" {
            assert!(
                out.contains("wrote `p/in-copy/x-***` into its directory input"),
                "{out}"
            );
        }
        absent(
            out.as_bytes(),
            &[secret.as_str()],
            &format!("flow's output:\n{out}"),
        );
        let (_, log) = flow(&ws, &["log", "//p:write_into"], &env);
        absent(
            log.as_bytes(),
            &[secret.as_str()],
            &format!("flow log:\n{log}"),
        );
    }
}
