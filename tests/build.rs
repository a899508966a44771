//! `flow build` end to end: caching and its invalidation (edits, touches, early cutoff, a deleted
//! `flow-out/`, shared cache directories), the sandbox, failures and `-k`, timeouts, retries,
//! secrets, Ctrl-C, and the commands around the cache (`log`, `explain`, `clean`, `cache`).
//!
//! Status lines carry timings, so tests compare the *labels per tag* (`tags`) and the summary
//! line without its time (`summary`), both from `support`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{alive, files_under, flow_bin, golden, summary, tags, Run, Ws};

/// Asserts the exit code and exactly these labels per tag (tags not listed: no label).
#[track_caller]
fn expect(run: &Run, code: i32, want: &[(&str, &[&str])]) {
    let want: BTreeMap<String, Vec<String>> = want
        .iter()
        .filter(|(_, labels)| !labels.is_empty())
        .map(|(tag, labels)| {
            let mut labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
            labels.sort();
            (tag.to_string(), labels)
        })
        .collect();
    assert_eq!(
        tags(&run.stdout),
        want,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(
        run.code, code,
        "exit code; stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

/// `flow build ARGS` in `ws`.
fn build(ws: &Ws, args: &[&str]) -> Run {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    ws.run(&all)
}

/// The number of blobs in the CAS of the cache at `cache`.
fn blobs(cache: &Path) -> usize {
    files_under(&cache.join("cas")).len()
}

/// Relative path → contents of every file under `dir`.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    crate::support::file_tree(dir)
}

fn read(ws: &Ws, rel: &str) -> String {
    std::fs::read_to_string(ws.path().join(rel))
        .unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// The number of sandbox directories left where the build makes them (a tmpfs by default, see
/// `executor::sandbox_root`) and under `.flow/sandbox`.
fn sandboxes(ws: &Ws) -> usize {
    let cache = std::fs::canonicalize(ws.path()).unwrap().join(".flow");
    let root = flow::executor::sandbox_root(&cache, None);
    let count = |d: &Path| std::fs::read_dir(d).map_or(0, |d| d.count());
    count(&root)
        + if root == cache.join("sandbox") {
            0
        } else {
            count(&cache.join("sandbox"))
        }
}

/// Waits up to `limit` for `path` to exist.
fn wait_for_file(path: &Path, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits up to `limit` for `child` to exit; kills it and panics if it does not.
fn wait_with_limit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("flow did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Something no other test run uses, for secret values and scratch files.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// A chain `//a:gen` → `//a:use` → `//a:top` (each copies the previous output) and an unrelated
/// `//b:other`.
fn chain_ws() -> Ws {
    Ws::new()
        .file("a/a.txt", "alpha\n")
        .file(
            "a/BUILD",
            r#"task(name = "gen", srcs = ["a.txt"], outs = ["g.txt"], cmd = "cat a.txt > g.txt")
task(name = "use", deps = [":gen"], outs = ["u.txt"], cmd = "cat $(location :gen) > u.txt; echo used >> u.txt")
task(name = "top", deps = [":use"], outs = ["t.txt"], cmd = "cat $(location :use) > t.txt")
"#,
        )
        .file("b/b.txt", "beta\n")
        .file(
            "b/BUILD",
            r#"task(name = "other", srcs = ["b.txt"], outs = ["o.txt"], cmd = "cp b.txt o.txt")"#,
        )
}

const CHAIN: &[&str] = &["//a:gen", "//a:use", "//a:top", "//b:other"];

#[test]
fn second_build_is_all_cached_and_stores_nothing_new() {
    let ws = chain_ws();
    let first = build(&ws, &[]);
    expect(&first, 0, &[("RAN", CHAIN)]);
    assert_eq!(
        summary(&first),
        "flow: ok: 4 ran, 0 cached, 0 failed, 0 skipped, 0 flaky (4 actions)"
    );
    assert_eq!(read(&ws, "flow-out/a/t.txt"), "alpha\nused\n");
    assert_eq!(read(&ws, "flow-out/b/o.txt"), "beta\n");
    let cache = ws.path().join(".flow");
    let before = files_under(&cache.join("cas"));
    assert!(!before.is_empty());

    let second = build(&ws, &[]);
    expect(&second, 0, &[("CACHED", CHAIN)]);
    assert_eq!(
        summary(&second),
        "flow: ok: 0 ran, 4 cached, 0 failed, 0 skipped, 0 flaky (4 actions)"
    );
    assert_eq!(files_under(&cache.join("cas")), before, "new blobs");
}

#[test]
fn an_edit_reruns_exactly_the_affected_actions() {
    let ws = chain_ws();
    build(&ws, &[]).ok();
    ws.write("a/a.txt", b"ALPHA\n");
    let run = build(&ws, &[]);
    expect(
        &run,
        0,
        &[
            ("RAN", &["//a:gen", "//a:use", "//a:top"]),
            ("CACHED", &["//b:other"]),
        ],
    );
    assert_eq!(read(&ws, "flow-out/a/t.txt"), "ALPHA\nused\n");

    ws.write("b/b.txt", b"BETA\n");
    let run = build(&ws, &[]);
    expect(
        &run,
        0,
        &[
            ("RAN", &["//b:other"]),
            ("CACHED", &["//a:gen", "//a:use", "//a:top"]),
        ],
    );
    assert_eq!(read(&ws, "flow-out/b/o.txt"), "BETA\n");
}

#[test]
fn touching_a_file_without_changing_it_runs_nothing() {
    let ws = chain_ws();
    build(&ws, &[]).ok();
    // Same bytes, new mtime.
    ws.write("a/a.txt", b"alpha\n");
    expect(&build(&ws, &[]), 0, &[("CACHED", CHAIN)]);
    // `touch` to a time far from now (a different mtime whatever the clock's resolution).
    let status = Command::new("touch")
        .args(["-m", "-d", "2001-02-03 04:05:06"])
        .arg(ws.path().join("a/a.txt"))
        .arg(ws.path().join("b/b.txt"))
        .status()
        .unwrap();
    assert!(status.success());
    expect(&build(&ws, &[]), 0, &[("CACHED", CHAIN)]);
}

#[test]
fn early_cutoff_when_a_dependency_output_is_unchanged() {
    let ws = Ws::new().file("p/a.txt", "a b c\n").file(
        "p/BUILD",
        r#"task(name = "norm", srcs = ["a.txt"], outs = ["out/n.txt"], cmd = "tr -d ' ' < a.txt > out/n.txt")
task(name = "use", deps = [":norm"], outs = ["u.txt"], cmd = "cat $(location :norm) > u.txt")
"#,
    );
    expect(&build(&ws, &[]), 0, &[("RAN", &["//p:norm", "//p:use"])]);
    assert_eq!(read(&ws, "flow-out/p/u.txt"), "abc\n");
    ws.write("p/a.txt", b"a  b   c \n");
    expect(
        &build(&ws, &[]),
        0,
        &[("RAN", &["//p:norm"]), ("CACHED", &["//p:use"])],
    );
    assert_eq!(read(&ws, "flow-out/p/u.txt"), "abc\n");
    assert_eq!(read(&ws, "flow-out/p/out/n.txt"), "abc\n");
}

#[test]
fn deleting_flow_out_restores_everything_from_the_cache() {
    let ws = chain_ws();
    build(&ws, &[]).ok();
    let out = ws.path().join("flow-out");
    let before = tree(&out);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ["a/g.txt", "a/t.txt", "a/u.txt", "b/o.txt"]
    );
    std::fs::remove_dir_all(&out).unwrap();
    expect(&build(&ws, &[]), 0, &[("CACHED", CHAIN)]);
    assert_eq!(tree(&out), before);
}

/// Where an action of a build in `ws` ran: its working directory, which it writes to `pwd.txt`.
fn exec_dir(ws: &Ws) -> String {
    let run = build(ws, &["//p:pwd"]);
    expect(&run, 0, &[("RAN", &["//p:pwd"])]);
    read(ws, "flow-out/p/pwd.txt").trim().to_owned()
}

#[test]
fn sandboxes_go_where_configured_and_by_default_to_a_private_tmpfs_directory() {
    let pwd = r#"task(name = "pwd", outs = ["pwd.txt"], cmd = "pwd > pwd.txt")"#;
    // Configured.
    let elsewhere = tempfile::tempdir().unwrap();
    let configured = elsewhere.path().join("sb");
    let ws = Ws::new()
        .file(
            "flow.toml",
            &format!("[build]\nsandbox_dir = \"{}\"\n", configured.display()),
        )
        .file("p/BUILD", pwd);
    let dir = exec_dir(&ws);
    assert!(dir.starts_with(&configured.display().to_string()), "{dir}");
    assert_eq!(
        std::fs::read_dir(&configured).unwrap().count(),
        0,
        "sandbox left behind"
    );
    // By default: the directory `sandbox_root` names, a tmpfs one when this machine has room.
    let ws = Ws::new().file("p/BUILD", pwd);
    let cache = std::fs::canonicalize(ws.path()).unwrap().join(".flow");
    let root = flow::executor::sandbox_root(&cache, None);
    let dir = exec_dir(&ws);
    assert!(
        dir.starts_with(&root.display().to_string()),
        "{dir} not under {}",
        root.display()
    );
    if root != cache.join("sandbox") {
        use std::os::unix::fs::MetadataExt;
        // Emptied and removed when the build ends: one root per cache would pile up on the tmpfs.
        assert!(
            !root.exists(),
            "empty sandbox root left at {}",
            root.display()
        );
        let base = std::fs::symlink_metadata(root.parent().unwrap()).unwrap();
        assert!(
            base.is_dir() && base.mode() & 0o077 == 0,
            "{:o}",
            base.mode()
        );
        // What a dead flow left there is swept by the next build, and reported by verify.
        let stale = root.join("999999999-1");
        std::fs::create_dir_all(stale.join("exec")).unwrap();
        let verify = ws.run(&["cache", "verify"]);
        assert!(verify.stdout.contains("stale sandbox"), "{}", verify.stdout);
        build(&ws, &[]);
        assert!(!stale.exists(), "stale sandbox not swept");
    }
}

#[test]
fn an_undeclared_input_fails_in_the_sandbox() {
    let ws = Ws::new()
        .file("p/a.txt", "declared\n")
        .file("p/other.txt", "undeclared\n")
        .file(
            "p/BUILD",
            r#"task(name = "x", srcs = ["a.txt"], cmd = "cat a.txt other.txt")
task(name = "real_tree", srcs = ["a.txt"], cmd = "cat a.txt other.txt", sandbox = False)
"#,
        );
    let run = build(&ws, &["//p:x"]);
    expect(&run, 1, &[("FAILED", &["//p:x"])]);
    assert!(
        run.stdout.contains("[FAILED] //p:x (exit 1, ")
            && run
                .stdout
                .contains("\n    cat: other.txt: No such file or directory\n"),
        "{}",
        run.stdout
    );
    assert_eq!(
        summary(&run),
        "flow: FAILED: 0 ran, 0 cached, 1 failed, 0 skipped, 0 flaky (1 actions)"
    );
    // Opting out of the sandbox reads the real tree.
    expect(
        &build(&ws, &["//p:real_tree"]),
        0,
        &[("RAN", &["//p:real_tree"])],
    );
}

#[test]
fn a_missing_declared_output_fails_naming_it() {
    let ws = Ws::new().file(
        "p/BUILD",
        r#"task(name = "x", outs = ["made.txt", "never.txt"], cmd = "echo ok > made.txt")"#,
    );
    let run = build(&ws, &[]);
    expect(&run, 1, &[("FAILED", &["//p:x"])]);
    assert!(
        run.stdout
            .contains("[FAILED] //p:x (declared outputs missing)\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\n    flow: declared output `never.txt` was not created\n"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("`made.txt` was not"), "{}", run.stdout);
    // What it did write is kept, marked as from a failed run (tests/failed_outputs.rs).
    assert!(ws.path().join("flow-out/p/.made.txt.flow-failed").exists());
    // Not cached: it fails again.
    expect(&build(&ws, &[]), 1, &[("FAILED", &["//p:x"])]);
}

#[test]

fn a_missing_declared_output_is_reported_once() {
    let ws = Ws::new().file(
        "p/BUILD",
        r#"task(name = "x", outs = ["never.txt"], cmd = "true")"#,
    );
    let run = build(&ws, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout
            .matches("declared output `never.txt` was not created")
            .count(),
        1,
        "{}",
        run.stdout
    );
}

#[test]
fn a_failure_is_not_cached() {
    let ws = Ws::new().file(
        "p/BUILD",
        r#"task(name = "bad", cmd = "echo attempt-marker; exit 3")"#,
    );
    for _ in 0..2 {
        let run = build(&ws, &[]);
        expect(&run, 1, &[("FAILED", &["//p:bad"])]);
        assert!(
            run.stdout.contains("[FAILED] //p:bad (exit 3, ")
                && run.stdout.contains("\n    attempt-marker\n"),
            "{}",
            run.stdout
        );
        assert_eq!(
            summary(&run),
            "flow: FAILED: 0 ran, 0 cached, 1 failed, 0 skipped, 0 flaky (1 actions)"
        );
    }
}

#[test]
fn a_failure_stops_the_build_unless_keep_going() {
    // `bad` heads a chain, so critical-path order starts it first with `-j 1`.
    let ws = Ws::new().file(
        "p/BUILD",
        r#"task(name = "bad", cmd = "echo boom; exit 1")
task(name = "d1", deps = [":bad"], cmd = "true")
task(name = "d2", deps = [":d1"], cmd = "true")
task(name = "d3", deps = [":d2"], cmd = "true")
task(name = "good", outs = ["g.txt"], cmd = "echo good > g.txt")
"#,
    );
    let run = build(&ws, &["-j", "1"]);
    expect(
        &run,
        1,
        &[
            ("FAILED", &["//p:bad"]),
            ("SKIPPED", &["//p:d1", "//p:d2", "//p:d3"]),
        ],
    );
    assert!(
        run.stdout
            .contains("[SKIPPED] //p:d1 (dependency failed)\n"),
        "{}",
        run.stdout
    );
    assert_eq!(
        summary(&run),
        "flow: FAILED: 0 ran, 0 cached, 1 failed, 3 skipped, 0 flaky, 1 not started (5 actions)"
    );
    assert!(!ws.path().join("flow-out/p/g.txt").exists());

    let run = build(&ws, &["-j", "1", "-k"]);
    expect(
        &run,
        1,
        &[
            ("FAILED", &["//p:bad"]),
            ("SKIPPED", &["//p:d1", "//p:d2", "//p:d3"]),
            ("RAN", &["//p:good"]),
        ],
    );
    assert_eq!(
        summary(&run),
        "flow: FAILED: 1 ran, 0 cached, 1 failed, 3 skipped, 0 flaky (5 actions)"
    );
    assert_eq!(read(&ws, "flow-out/p/g.txt"), "good\n");
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let ws = Ws::new();
    let pid_file = ws.path().join("bg.pid");
    let ws = ws.file(
        "p/BUILD",
        &format!(
            r#"task(name = "slow", timeout = 1, cmd = "sleep 30 & echo $$! > {}; sleep 30")"#,
            pid_file.display()
        ),
    );
    let start = Instant::now();
    let run = build(&ws, &[]);
    let took = start.elapsed();
    expect(&run, 1, &[("FAILED", &["//p:slow"])]);
    assert!(
        run.stdout
            .contains("[FAILED] //p:slow (timed out after 1.0s"),
        "{}",
        run.stdout
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "background process {pid} survived the timeout");
    assert_eq!(sandboxes(&ws), 0, "sandbox left behind");
}

/// `flow ARGS` in `ws` with extra environment variables.
fn run_with_env(ws: &Ws, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(flow_bin())
        .current_dir(ws.path())
        .args(["--color", "never"])
        .args(args)
        .env_remove("FLOW_CACHE_DIR")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn secret_values_never_reach_output_or_cache() {
    let secret = format!("hunter2-{}", unique());
    let ws = Ws::new().file(
        "p/BUILD",
        r#"task(
    name = "leaky",
    secrets = ["FLOW_TEST_SECRET"],
    cmd = "echo out=$FLOW_TEST_SECRET; echo err=$FLOW_TEST_SECRET >&2; exit 1",
)
task(
    name = "quiet",
    secrets = ["FLOW_TEST_SECRET"],
    outs = ["o.txt"],
    cmd = "echo passed=$FLOW_TEST_SECRET; echo done > o.txt",
)
"#,
    );
    let env = [("FLOW_TEST_SECRET", secret.as_str())];
    let run = run_with_env(&ws, &["build", "-k"], &env);
    expect(
        &run,
        1,
        &[("FAILED", &["//p:leaky"]), ("RAN", &["//p:quiet"])],
    );
    assert!(
        run.stdout.contains("\n    out=***\n") && run.stdout.contains("\n    err=***\n"),
        "{}",
        run.stdout
    );
    let mut seen = vec![run];
    seen.push(run_with_env(&ws, &["build", "-k"], &env));
    for label in ["//p:leaky", "//p:quiet"] {
        let log = run_with_env(&ws, &["log", label], &env);
        assert_eq!(log.code, 0, "{}", log.stderr);
        let text = format!("{}{}", log.stdout, log.stderr);
        assert!(text.contains("=***"), "`flow log {label}`:\n{text}");
        seen.push(log);
    }
    for run in &seen {
        assert!(
            !run.stdout.contains(&secret) && !run.stderr.contains(&secret),
            "secret printed:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
    let files = files_under(&ws.path().join(".flow"));
    assert!(files.iter().any(|f| f.ends_with("flow.db")), "{files:?}");
    for f in files
        .iter()
        .chain(files_under(&ws.path().join("flow-out")).iter())
    {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is stored in {}",
            f.display()
        );
    }
}

#[test]
fn two_checkouts_share_one_cache_dir() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().display().to_string();
    let a = chain_ws();
    let b = chain_ws();
    let args = ["--cache-dir", cache_dir.as_str(), "build"];
    expect(&a.run(&args), 0, &[("RAN", CHAIN)]);
    expect(&b.run(&args), 0, &[("CACHED", CHAIN)]);
    assert_eq!(
        tree(&b.path().join("flow-out")),
        tree(&a.path().join("flow-out"))
    );
    assert_eq!(read(&b, "flow-out/a/t.txt"), "alpha\nused\n");
    assert!(!a.path().join(".flow").exists() && !b.path().join(".flow").exists());
    assert!(blobs(cache.path()) > 0);
}

#[test]
fn a_pass_on_retry_is_flaky() {
    let ws = Ws::new();
    let counter = ws.path().join("counter");
    let ws = ws.file(
        "p/BUILD",
        &format!(
            r#"task(
    name = "t",
    retries = 2,
    cmd = "n=$$(cat {c} 2>/dev/null || echo 0); n=$$((n + 1)); echo $$n > {c}; echo attempt $$n; test $$n -ge 2",
)
"#,
            c = counter.display()
        ),
    );
    let run = build(&ws, &[]);
    expect(&run, 0, &[("FLAKY", &["//p:t"])]);
    assert!(
        run.stdout.contains("[FLAKY] //p:t (passed on attempt 2, "),
        "{}",
        run.stdout
    );
    assert_eq!(
        summary(&run),
        "flow: ok: 0 ran, 0 cached, 0 failed, 0 skipped, 1 flaky (1 actions)"
    );
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "2\n");
}

#[test]
fn log_replays_the_last_run() {
    let ws = Ws::new().file(
        "p/BUILD",
        r#"task(name = "x", cmd = "echo to-stdout; echo to-stderr >&2")"#,
    );
    let none = ws.run(&["log", "//p:x"]);
    assert_eq!(none.code, 2, "{}", none.stderr);
    assert!(
        none.stderr.contains("`//p:x` has no recorded run"),
        "{}",
        none.stderr
    );

    expect(&build(&ws, &[]), 0, &[("RAN", &["//p:x"])]);
    let log = ws.run(&["log", "//p:x"]);
    assert_eq!(log.code, 0, "{}", log.stderr);
    assert_eq!(log.stdout, "to-stdout\n");
    assert!(
        log.stderr.starts_with("flow: last run of //p:x: ran (")
            && log.stderr.ends_with("to-stderr\n"),
        "{}",
        log.stderr
    );

    // A cached build: the same logs.
    expect(&build(&ws, &[]), 0, &[("CACHED", &["//p:x"])]);
    let log = ws.run(&["log", "//p:x"]);
    assert_eq!(log.stdout, "to-stdout\n");

    ws.write(
        "p/BUILD",
        br#"task(name = "x", cmd = "echo broke-out; echo broke-err >&2; exit 4")"#,
    );
    expect(&build(&ws, &[]), 1, &[("FAILED", &["//p:x"])]);
    let log = ws.run(&["log", "//p:x"]);
    assert_eq!(log.code, 0, "{}", log.stderr);
    assert_eq!(log.stdout, "broke-out\n");
    assert!(
        log.stderr.starts_with("flow: last run of //p:x: failed (")
            && log.stderr.ends_with("broke-err\n"),
        "{}",
        log.stderr
    );
}

#[test]

fn log_after_a_cache_hit_replays_the_result_that_was_used() {
    let ws = Ws::new().file("p/a.txt", "v1\n").file(
        "p/BUILD",
        r#"task(name = "x", srcs = ["a.txt"], cmd = "cat a.txt")"#,
    );
    expect(&build(&ws, &[]), 0, &[("RAN", &["//p:x"])]);
    ws.write("p/a.txt", b"v2\n");
    expect(&build(&ws, &[]), 0, &[("RAN", &["//p:x"])]);
    assert_eq!(ws.run(&["log", "//p:x"]).stdout, "v2\n");
    // Back to v1: the first result is used again, so its log is the last run's.
    ws.write("p/a.txt", b"v1\n");
    expect(&build(&ws, &[]), 0, &[("CACHED", &["//p:x"])]);
    let log = ws.run(&["log", "//p:x"]);
    assert_eq!(log.stdout, "v1\n", "stderr:\n{}", log.stderr);
}

#[test]
fn explain_names_what_changed() {
    let build_file = |mode: &str| {
        format!(
            r#"task(name = "x", srcs = ["a.txt"], env = {{"MODE": "{mode}"}}, outs = ["o.txt"], cmd = "cat a.txt > o.txt")"#
        )
    };
    let ws = Ws::new()
        .file("pkg/a.txt", "one\n")
        .file("pkg/BUILD", &build_file("fast"));
    let explain = |ws: &Ws| {
        let r = ws.run(&["explain", "//pkg:x"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout
    };
    let never = explain(&ws);
    assert!(never.starts_with("//pkg:x would run (key "), "{never}");
    assert!(
        never.contains("it has never run successfully here"),
        "{never}"
    );

    build(&ws, &[]).ok();
    let fresh = explain(&ws);
    assert!(
        fresh.starts_with("//pkg:x is up to date: the next build would not run it"),
        "{fresh}"
    );

    ws.write("pkg/a.txt", b"two\n");
    let edited = explain(&ws);
    assert!(edited.starts_with("//pkg:x would run (key "), "{edited}");
    assert!(edited.contains("input changed: `pkg/a.txt`"), "{edited}");
    assert!(!edited.contains("env"), "{edited}");

    build(&ws, &[]).ok();
    assert!(explain(&ws).contains("is up to date"));

    ws.write("pkg/BUILD", build_file("slow").as_bytes());
    let env = explain(&ws);
    assert!(env.starts_with("//pkg:x would run (key "), "{env}");
    assert!(
        env.contains("env changed: `MODE`: `fast` -> `slow`"),
        "{env}"
    );
    assert!(!env.contains("input changed"), "{env}");
}

#[test]
fn directory_outputs_and_expansions() {
    let ws = Ws::new()
        .file("a/seed.txt", "seed\n")
        .file(
            "a/BUILD",
            r#"task(
    name = "gen",
    srcs = ["seed.txt"],
    outs = ["dir/", "top.txt"],
    cmd = "mkdir -p dir/sub && cp $(SRCS) dir/one.txt && echo two > dir/sub/two.txt && echo $(OUTS) > top.txt",
)
"#,
        )
        .file("b/in file.txt", "spaced\n")
        .file(
            "b/BUILD",
            r#"task(
    name = "list",
    srcs = ["in file.txt"],
    deps = ["//a:gen"],
    outs = ["list.txt"],
    cmd = "cat $(SRCS) > $(OUTS); echo $(locations //a:gen) >> $(OUTS); cat $(locations //a:gen) 2>/dev/null >> $(OUTS); find -L ../a/dir -type f | sort >> $(OUTS); cat ../a/dir/sub/two.txt >> $(OUTS)",
)
"#,
        );
    let run = build(&ws, &[]);
    expect(&run, 0, &[("RAN", &["//a:gen", "//b:list"])]);
    assert_eq!(read(&ws, "flow-out/a/dir/one.txt"), "seed\n");
    assert_eq!(read(&ws, "flow-out/a/dir/sub/two.txt"), "two\n");
    assert_eq!(read(&ws, "flow-out/a/top.txt"), "dir top.txt\n");
    assert_eq!(
        read(&ws, "flow-out/b/list.txt"),
        "spaced\n../a/dir ../a/top.txt\ndir top.txt\n../a/dir/one.txt\n../a/dir/sub/two.txt\ntwo\n"
    );
    let out = ws.path().join("flow-out");
    let before = tree(&out);
    std::fs::remove_dir_all(&out).unwrap();
    expect(&build(&ws, &[]), 0, &[("CACHED", &["//a:gen", "//b:list"])]);
    assert_eq!(tree(&out), before);
}

#[test]
fn clean_and_clean_cache() {
    let ws = chain_ws();
    build(&ws, &[]).ok();
    let out = ws.path().join("flow-out");
    let cache = ws.path().join(".flow");
    let before = tree(&out);

    let clean = ws.run(&["clean"]);
    assert_eq!(clean.code, 0, "{}", clean.stderr);
    assert_eq!(clean.stderr, "flow: removed `$WS/flow-out`\n");
    assert!(!out.exists());
    assert!(blobs(&cache) > 0);
    expect(&build(&ws, &[]), 0, &[("CACHED", CHAIN)]);
    assert_eq!(tree(&out), before);

    let clean = ws.run(&["clean", "--cache"]);
    assert_eq!(clean.code, 0, "{}", clean.stderr);
    assert_eq!(
        clean.stderr,
        "flow: removed `$WS/flow-out`\nflow: emptied the cache at `$WS/.flow`\n"
    );
    assert!(!out.exists());
    assert_eq!(blobs(&cache), 0);
    expect(&build(&ws, &[]), 0, &[("RAN", CHAIN)]);
    assert_eq!(tree(&out), before);
}

/// The value of `name:` in `flow cache stats`.
fn stat(stats: &str, name: &str) -> String {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no `{name}` in:\n{stats}"))
        .trim()
        .to_owned()
}

#[test]
fn cache_stats_and_gc() {
    let ws = chain_ws();
    let empty = ws.run(&["cache", "stats"]);
    assert_eq!(stat(empty.ok(), "action results"), "0");
    assert!(
        stat(&empty.stdout, "blobs").starts_with("0 "),
        "{}",
        empty.stdout
    );

    build(&ws, &[]).ok();
    let stats = ws.run(&["cache", "stats"]);
    let stats = stats.ok();
    assert_eq!(stat(stats, "cache"), "$WS/.flow");
    assert_eq!(stat(stats, "action results"), "4");
    assert_eq!(stat(stats, "builds"), "1");
    assert_eq!(stat(stats, "action runs"), "4");
    // Sources and materialized outputs.
    let states: usize = stat(stats, "file states").parse().unwrap();
    assert!(states >= 2, "{stats}");
    assert!(!stat(stats, "blobs").starts_with("0 "), "{stats}");

    let gc = ws.run(&["cache", "gc", "--max-size", "0"]);
    assert!(
        gc.ok().starts_with("flow: removed 4 result(s) and "),
        "{}",
        gc.stdout
    );
    assert_eq!(
        stat(ws.run(&["cache", "stats"]).ok(), "action results"),
        "0"
    );
    expect(&build(&ws, &[]), 0, &[("RAN", CHAIN)]);
    assert_eq!(
        stat(ws.run(&["cache", "stats"]).ok(), "action results"),
        "4"
    );
}

/// Issue 14: `action_runs` was never pruned. `flow cache gc` keeps each target's last 10 runs
/// (and its last success) and says how many it pruned (golden `cache_gc_prunes_history`).
#[test]
fn cache_gc_prunes_the_history() {
    let ws = Ws::new().file(
        "p/BUILD",
        r#"task(name = "x", srcs = ["in.txt"], outs = ["o.txt"], cmd = "cp in.txt o.txt")"#,
    );
    for i in 0..12 {
        ws.write("p/in.txt", format!("{i}\n").as_bytes());
        expect(&build(&ws, &[]), 0, &[("RAN", &["//p:x"])]);
    }
    assert_eq!(stat(ws.run(&["cache", "stats"]).ok(), "action runs"), "12");
    let gc = ws.run(&["cache", "gc", "--max-size", "1GiB"]);
    let pruned: Vec<&str> = gc.ok().lines().skip(1).collect();
    crate::support::golden("cache_gc_prunes_history", &(pruned.join("\n") + "\n"));
    assert_eq!(stat(ws.run(&["cache", "stats"]).ok(), "action runs"), "10");
    let log = ws.run(&["log", "//p:x"]);
    assert!(
        log.stderr.contains("last run of //p:x: ran"),
        "{}",
        log.stderr
    );
    // Nothing left to prune: no second line.
    assert_eq!(
        ws.run(&["cache", "gc", "--max-size", "1GiB"])
            .ok()
            .lines()
            .count(),
        1
    );
}

#[test]
fn ctrl_c_exits_130_and_caches_nothing() {
    let ws = Ws::new();
    let started = ws.path().join("started");
    let shell_pid = ws.path().join("shell.pid");
    let later = ws.path().join("later-ran");
    // The first run waits to be interrupted; a later one (same key) passes at once. With one
    // job slot, `later` (after `a_wait` in the queue: same cost, label order) is staged and
    // waits for the slot: Ctrl-C turns it away unstarted.
    let ws = ws.file(
        "p/BUILD",
        &format!(
            r#"task(name = "a_wait", outs = ["o.txt"], cmd = "echo ok > o.txt; if [ -e {s} ]; then exit 0; fi; echo $$$$ > {p}; touch {s}; sleep 30")
task(name = "later", outs = ["l.txt"], cmd = "touch {l}; echo l > l.txt")"#,
            s = started.display(),
            p = shell_pid.display(),
            l = later.display()
        ),
    );
    let mut child = Command::new(flow_bin())
        .current_dir(ws.path())
        .args(["--color", "never", "build", "-j", "1"])
        .env_remove("FLOW_CACHE_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for_file(&started, Duration::from_secs(10)),
        "the action never started"
    );
    // The runner polls its Ctrl-C handler once the action is handed out; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_with_limit(&mut child, Duration::from_secs(10));
    assert!(start.elapsed() < Duration::from_secs(10));
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        status.code(),
        Some(130),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tags(&stdout).is_empty(), "{stdout}");
    assert!(
        stdout.starts_with(
            "flow: interrupted: 0 ran, 0 cached, 0 failed, 0 skipped, 0 flaky, 1 not started"
        ),
        "{stdout}"
    );
    assert!(
        !later.exists(),
        "a command waiting for the slot ran after Ctrl-C"
    );
    let pid: i32 = std::fs::read_to_string(&shell_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "the action's shell {pid} survived Ctrl-C");
    assert!(!ws.path().join("flow-out/p/o.txt").exists());
    assert_eq!(sandboxes(&ws), 0, "sandbox left behind");

    expect(
        &build(&ws, &[]),
        0,
        &[("RAN", &["//p:a_wait", "//p:later"])],
    );
    assert_eq!(read(&ws, "flow-out/p/o.txt"), "ok\n");
}

#[test]
fn building_a_missing_package_is_bad_input() {
    let ws = chain_ws();
    let run = build(&ws, &["//nope/..."]);
    assert_eq!(run.stdout, "");
    golden("build_no_package", run.bad_input());
    assert!(!ws.path().join("flow-out").exists());
}

/// Regression: `-j 2` after the patterns was taken for a pattern (patterns accepted hyphen
/// values). Exclusions now go after `--`, as in Bazel.
#[test]
fn options_after_patterns_and_exclusions_after_double_dash() {
    let ws = Ws::new()
        .file("a/BUILD", "task(name = \"x\", cmd = \"true\")\n")
        .file("b/BUILD", "task(name = \"y\", cmd = \"true\")\n");
    let run = ws.run(&["build", "//...", "-j", "2"]);
    assert!(run.ok().contains("[RAN] //a:x"), "{}", run.stdout);
    let ws = Ws::new()
        .file("a/BUILD", "task(name = \"x\", cmd = \"true\")\n")
        .file("b/BUILD", "task(name = \"y\", cmd = \"true\")\n");
    let run = ws.run(&["build", "-j", "1", "--", "//...", "-//b/..."]);
    let out = run.ok();
    assert!(
        out.contains("[RAN] //a:x") && !out.contains("//b:y"),
        "{out}"
    );
}

/// Regression: a failed `sandbox = False` action left its declared outputs in the source tree,
/// and the next analysis refused them as outputs that collide with source files.
#[test]
fn a_failed_unsandboxed_action_leaves_no_output_in_the_source_tree() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"x\", outs = [\"o.txt\"], cmd = \"echo half > o.txt; exit 1\", sandbox = False)\n",
    );
    let first = ws.run(&["build"]);
    assert_eq!(first.code, 1, "{}", first.stdout);
    assert!(
        !ws.path().join("p/o.txt").exists(),
        "the failed run's output stayed in the tree"
    );
    let second = ws.run(&["build"]);
    assert_eq!(
        second.code, 1,
        "a build failure, not bad input: {}",
        second.stderr
    );
    assert!(
        second.stdout.contains("[FAILED] //p:x"),
        "{}",
        second.stdout
    );
}

/// Regression: the marker beside a directory output was `.NAME.flow-tree`, too long a file name
/// for an output named with 245 bytes or more, so such an output could never be restored.
#[test]
fn a_directory_output_with_a_long_name_is_restored() {
    let name = "d".repeat(250);
    let ws = Ws::new().file(
        "p/BUILD",
        &format!("task(name = \"x\", outs = [\"{name}/\"], cmd = \"echo hi > {name}/f.txt\")\n"),
    );
    ws.run(&["build"]).ok();
    std::fs::remove_dir_all(ws.path().join("flow-out")).unwrap();
    let again = ws.run(&["build"]);
    assert!(again.ok().contains("[CACHED] //p:x"), "{}", again.stdout);
    let f = ws.path().join("flow-out/p").join(&name).join("f.txt");
    assert_eq!(std::fs::read_to_string(f).unwrap(), "hi\n");
    // And a third build finds it up to date without touching it.
    let third = ws.run(&["build"]);
    assert!(third.ok().contains("0 ran, 1 cached"), "{}", third.stdout);
}

/// Regression (issue 15, item 15): 10,000 paths in `$(SRCS)` failed with "Argument list too
/// long" (Linux takes at most 128 KiB in one argument, and `sh -c CMD` is one) and gave no way
/// round it. The failure now says so and names `$(SRCS_FILE)`; a command that reads the same
/// 10,000 sources from `$(SRCS_FILE)` works, in the sandbox and in the real tree, names with a
/// space or a quote included (one path a line, as it is).
#[test]
fn ten_thousand_sources_go_through_srcs_file() {
    let ws = Ws::new();
    let src = ws.path().join("p/src");
    std::fs::create_dir_all(&src).unwrap();
    let mut expected = String::new();
    let mut names: Vec<String> = (0..10_000).map(|i| format!("source-{i:05}.txt")).collect();
    names.push("with space.txt".into());
    names.push("it's.txt".into());
    names.sort();
    for name in &names {
        std::fs::write(src.join(name), format!("{name}\n")).unwrap();
        expected.push_str(&format!("{name}\n"));
    }
    let via_file = "xargs -d '\\n' cat < $(SRCS_FILE) > file.txt && wc -l < $(SRCS_FILE) > n.txt";
    ws.write(
        "p/BUILD",
        format!(
            r#"task(name = "args", srcs = glob(["src/*"]), outs = ["args.txt"], cmd = "cat $(SRCS) > $(OUTS)")
task(name = "file", srcs = glob(["src/*"]), outs = ["file.txt", "n.txt"], cmd = "{via_file}")
task(name = "tree", srcs = glob(["src/*"]), outs = ["tree.txt"], cmd = "xargs -d '\\n' cat < $(SRCS_FILE) > tree.txt", sandbox = False)
"#
        )
        .as_bytes(),
    );
    let run = ws.run(&["build", "-k"]);
    expect(
        &run,
        1,
        &[
            ("FAILED", &["//p:args"]),
            ("RAN", &["//p:file", "//p:tree"]),
        ],
    );
    assert!(
        run.stdout.contains(
            "[FAILED] //p:args (could not start: argument list too long: the command is 205 KiB \
             after expansion, and the kernel takes at most 128 KiB in one argument; pass long \
             lists of sources in a file with `$(SRCS_FILE)` (one path a line) instead of \
             `$(SRCS)`)"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(read(&ws, "flow-out/p/file.txt"), expected);
    assert_eq!(read(&ws, "flow-out/p/n.txt").trim(), "10002");
    assert_eq!(read(&ws, "flow-out/p/tree.txt"), expected);
    // The file is the action's own: nothing of it is left in the workspace or `flow-out/`.
    assert!(!ws.path().join("p/flow-srcs.txt").exists());
    // The key holds the expansion's text, not a path of this machine: cached next time.
    let again = ws.run(&["build", "//p:file", "//p:tree"]);
    expect(&again, 0, &[("CACHED", &["//p:file", "//p:tree"])]);
}

/// `py_library` copies its sources through `$(SRCS_FILE)` (a package of thousands of files
/// would pass the kernel's limit with `$(SRCS)`): names with a space or a quote, nested
/// directories and `strip_prefix` come out as before.
#[test]
fn py_library_copies_its_sources_through_srcs_file() {
    let ws = Ws::new();
    for (rel, text) in [
        ("lib/src/pkg/__init__.py", ""),
        ("lib/src/pkg/a b.py", "A = 1\n"),
        ("lib/src/pkg/sub/it's.py", "B = 2\n"),
    ] {
        ws.write(rel, text.as_bytes());
    }
    ws.write(
        "lib/BUILD",
        b"load(\"@flow//rules:python.star\", \"py_library\")\n\
          py_library(name = \"lib\", srcs = glob([\"src/**/*.py\"]), strip_prefix = \"src\")\n",
    );
    build(&ws, &[]).ok();
    let copied = tree(&ws.path().join("flow-out/lib/lib.pylib"));
    let names: Vec<&str> = copied.keys().map(String::as_str).collect();
    assert_eq!(names, ["pkg/__init__.py", "pkg/a b.py", "pkg/sub/it's.py"]);
    assert_eq!(copied["pkg/sub/it's.py"], b"B = 2\n");
}
