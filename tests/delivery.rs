//! Delivery through the real binary: deploys, monitors, rollbacks, windows, branch rules,
//! notifications, services and the shared ledger (issue 16's "Done means").
//!
//! Most tests use small workspaces whose deploy copies the artifact into
//! `$FLOW_WORKSPACE/envs/ENV/live` and appends a line to `envs/ENV/runs` (so a test sees whether
//! and what it ran); one (`the_example_delivers_end_to_end`) runs the real `examples/monorepo`
//! pipeline: its tests, scans and boundary checks, blue-green deploys to local environments
//! served over HTTP, monitors and rollbacks. The clock is set with `FLOW_NOW_MS`, a minute later
//! at each command, as a real clock would be.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    alive, git, golden, remote_and_clones, summary_counts, wait_for_file, Run, Ws,
};

/// 2024-05-07 15:00 UTC, a Tuesday: 11:00 in New York, inside production's window.
const TUESDAY: i64 = 1_715_094_000_000;
/// 2024-05-11 15:00 UTC, a Saturday.
const SATURDAY: i64 = 1_715_439_600_000;
const MINUTE: i64 = 60_000;

/// The clock of one test: each command runs a minute after the one before.
struct Clock(Cell<i64>);

impl Clock {
    fn at(ms: i64) -> Clock {
        Clock(Cell::new(ms))
    }

    fn tick(&self) -> String {
        let now = self.0.get();
        self.0.set(now + MINUTE);
        now.to_string()
    }
}

/// `flow ARGS` in the workspace root at the clock's next minute, with `env` set too.
fn flow_env(ws: &Ws, clock: &Clock, args: &[&str], env: &[(&str, &str)]) -> Run {
    flow_in(ws, ws.path(), clock, args, env)
}

fn flow(ws: &Ws, clock: &Clock, args: &[&str]) -> Run {
    flow_env(ws, clock, args, &[])
}

fn flow_in(ws: &Ws, dir: &Path, clock: &Clock, args: &[&str], env: &[(&str, &str)]) -> Run {
    let now = clock.tick();
    let mut all = vec![("FLOW_NOW_MS", now.as_str()), ("USER", "ci-bot")];
    all.extend_from_slice(env);
    ws.run_env(dir, args, &all)
}

fn show(run: &Run) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        run.code, run.stdout, run.stderr
    )
}

#[track_caller]
fn ok(run: &Run) -> &Run {
    assert_eq!(run.code, 0, "{}", show(run));
    run
}

/// Makes `dir` a git checkout of branch `branch` with everything in it committed once.
fn commit_all(dir: &Path, branch: &str) {
    git(dir, &["init", "-q", "-b", branch]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "release"]);
}

/// Waits up to `limit` for process `pid` to end; whether it did.
fn ends_within(pid: i32, limit: Duration) -> bool {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ledger_json(ws: &Ws, clock: &Clock, env: &str) -> Vec<Value> {
    let run = flow(ws, clock, &["ledger", env, "--json"]);
    match serde_json::from_str(ok(&run).stdout.as_str()).unwrap() {
        Value::Array(entries) => entries,
        other => panic!("not a list: {other}"),
    }
}

/// `(kind, outcome)` of each ledger entry, oldest first.
fn kinds(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pair(kind: &str, outcome: &str) -> (String, String) {
    (kind.to_owned(), outcome.to_owned())
}

// ---------------------------------------------------------------------------------------------
// A small workspace
// ---------------------------------------------------------------------------------------------

const ENVIRONMENTS: &str = "[environments.staging]\n\n\
[environments.production]\nwindow = \"Tue-Thu 10:00-16:00 America/New_York\"\n\n\
[environments.vault]\nwindow = \"Tue-Thu 10:00-16:00 America/New_York\"\nemergency_approval = true\n";

/// The deploy command of the small workspaces: the artifact becomes `envs/ENV/live`, and
/// `envs/ENV/runs` gets a line `KIND DIGEST` per run.
const DEPLOY_CMD: &str = "d=$FLOW_WORKSPACE/envs/$FLOW_ENVIRONMENT && mkdir -p $d && cp $(ARTIFACT) $d/live && echo \"$FLOW_DEPLOY_KIND $FLOW_ARTIFACT_DIGEST\" >> $d/runs";

fn app_build() -> String {
    format!(
        r#"task(name = "bundle", srcs = ["version.txt"], outs = ["app.txt"], cmd = "cp version.txt app.txt")

CMD = "{cmd}"

deploy(name = "staging", environment = "staging", artifact = ":bundle", cmd = CMD)
deploy(name = "production", environment = "production", artifact = ":bundle", cmd = CMD, branches = ["main"])
deploy(name = "vault", environment = "vault", artifact = ":bundle", cmd = CMD)

monitor(
    name = "watch_staging",
    target = ":staging",
    probe = "grep -q healthy $FLOW_WORKSPACE/envs/staging/live",
    interval = "1s",
    duration = "2s",
    on_failure = "rollback",
)

group(name = "everything", deps = [":bundle", ":staging", ":production"])
"#,
        cmd = DEPLOY_CMD.replace('"', "\\\"")
    )
}

/// A workspace with environments staging (any time), production (Tue-Thu 10-16 New York,
/// `main` only) and vault (the same window, emergencies need an approver); a git checkout of
/// `branch`.
fn app(branch: &str) -> Ws {
    let ws = Ws::bare()
        .file("flow.toml", ENVIRONMENTS)
        .file(".gitignore", ".flow/\nflow-out/\nenvs/\n")
        .file("app/BUILD", &app_build())
        .file("app/version.txt", "v1 healthy\n");
    commit_all(ws.path(), branch);
    ws
}

/// The lines of `envs/ENV/runs`: one per run of a deploy command there.
fn runs(ws: &Ws, env: &str) -> Vec<String> {
    match std::fs::read_to_string(ws.path().join("envs").join(env).join("runs")) {
        Ok(text) => text.lines().map(str::to_owned).collect(),
        Err(_) => Vec::new(),
    }
}

fn live(ws: &Ws, env: &str) -> String {
    read(&ws.path().join("envs").join(env).join("live"))
}

/// `[LIVE]` runs nothing, a new artifact deploys, `flow rollback` runs twice when asked twice,
/// and a deploy of the artifact a rollback moved away from deploys again although its artifact
/// target is cached.
#[test]
fn a_deploy_runs_once_per_artifact_and_again_after_a_rollback() {
    let ws = app("main");
    let clock = Clock::at(TUESDAY);
    let first = flow(&ws, &clock, &["build", "//app:staging"]);
    assert_eq!(
        ok(&first).tagged("DEPLOYED"),
        ["//app:staging"],
        "{}",
        show(&first)
    );
    assert_eq!(live(&ws, "staging"), "v1 healthy\n");
    assert_eq!(runs(&ws, "staging").len(), 1);

    let again = flow(&ws, &clock, &["build", "//app:staging"]);
    assert_eq!(
        ok(&again).tagged("LIVE"),
        ["//app:staging"],
        "{}",
        show(&again)
    );
    assert!(
        again
            .stdout
            .contains("live in staging since 2024-05-07 15:00 UTC"),
        "{}",
        again.stdout
    );
    assert!(again.tagged("DEPLOYED").is_empty(), "{}", again.stdout);
    assert_eq!(runs(&ws, "staging").len(), 1, "a live artifact ran again");
    assert!(
        summary_counts(&again).starts_with("flow: ok: 0 ran, 1 cached"),
        "{}",
        again.stdout
    );

    ws.write("app/version.txt", b"v2 healthy\n");
    let v2 = flow(&ws, &clock, &["build", "//app:staging"]);
    assert_eq!(
        ok(&v2).tagged("DEPLOYED"),
        ["//app:staging"],
        "{}",
        show(&v2)
    );
    assert_eq!(live(&ws, "staging"), "v2 healthy\n");

    // Rolled back, twice: each time one artifact further back, never forward to the one
    // just left; then there is nothing earlier.
    ws.write("app/version.txt", b"v3 healthy\n");
    ok(&flow(&ws, &clock, &["build", "//app:staging"]));
    assert_eq!(live(&ws, "staging"), "v3 healthy\n");
    let back = flow(&ws, &clock, &["rollback", "staging"]);
    ok(&back);
    assert!(
        back.stdout
            .contains("[ROLLED BACK] //app:staging to staging"),
        "{}",
        show(&back)
    );
    assert_eq!(live(&ws, "staging"), "v2 healthy\n");
    ok(&flow(&ws, &clock, &["rollback", "staging"]));
    assert_eq!(live(&ws, "staging"), "v1 healthy\n");
    let nothing = flow(&ws, &clock, &["rollback", "staging"]);
    assert_eq!(nothing.code, 2, "{}", show(&nothing));
    assert!(
        nothing
            .stderr
            .contains("has nothing earlier to roll back to"),
        "{}",
        show(&nothing)
    );
    assert_eq!(live(&ws, "staging"), "v1 healthy\n");
    let kinds_now: Vec<String> = runs(&ws, "staging")
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds_now,
        ["deploy", "deploy", "deploy", "rollback", "rollback"]
    );

    // v3's bundle is rebuilt from its sources (v3 is still there), v1 is live: it deploys.
    let redeploy = flow(&ws, &clock, &["build", "//app:staging"]);
    ok(&redeploy);
    assert_eq!(
        redeploy.tagged("CACHED"),
        ["//app:bundle"],
        "{}",
        redeploy.stdout
    );
    assert_eq!(
        redeploy.tagged("DEPLOYED"),
        ["//app:staging"],
        "{}",
        redeploy.stdout
    );
    assert_eq!(live(&ws, "staging"), "v3 healthy\n");
    let entries = ledger_json(&ws, &clock, "staging");
    assert_eq!(
        kinds(&entries),
        [
            pair("deploy", "succeeded"),
            pair("deploy", "succeeded"),
            pair("deploy", "succeeded"),
            pair("rollback", "succeeded"),
            pair("rollback", "succeeded"),
            pair("deploy", "succeeded"),
        ]
    );
    let commit = entries[0]["commit"].as_str().unwrap();
    assert_eq!(commit.len(), 40, "the git commit is recorded");
    assert_eq!(entries[0]["branch"], "main");
    assert_eq!(entries[0]["commit_time"], 1_715_000_000);
    assert_eq!(entries[0]["user"], "ci-bot");
}

/// A monitor whose probe fails rolls the environment back to the previous artifact and records
/// both; the build fails.
#[test]
fn a_failing_monitor_rolls_back_automatically() {
    let ws = app("main");
    let clock = Clock::at(TUESDAY);
    let v1 = flow(
        &ws,
        &clock,
        &["build", "//app:staging", "//app:watch_staging"],
    );
    assert!(
        ok(&v1)
            .stdout
            .contains("[HEALTHY] //app:watch_staging (staging"),
        "{}",
        show(&v1)
    );
    ws.write("app/version.txt", b"v2 broken\n");
    let v2 = flow(
        &ws,
        &clock,
        &["build", "//app:staging", "//app:watch_staging"],
    );
    assert_eq!(v2.code, 1, "{}", show(&v2));
    assert_eq!(v2.tagged("DEPLOYED"), ["//app:staging"], "{}", v2.stdout);
    assert_eq!(
        v2.tagged("FAILED"),
        ["//app:watch_staging"],
        "{}",
        v2.stdout
    );
    assert!(v2.stdout.contains("(automatic rollback)"), "{}", v2.stdout);
    assert_eq!(live(&ws, "staging"), "v1 healthy\n", "rolled back");
    let entries = ledger_json(&ws, &clock, "staging");
    assert_eq!(
        kinds(&entries),
        [
            pair("deploy", "succeeded"),
            pair("monitor", "succeeded"),
            pair("deploy", "succeeded"),
            pair("monitor", "failed"),
            pair("automatic-rollback", "succeeded"),
        ]
    );
    assert_eq!(entries[4]["artifact"], entries[0]["artifact"]);
    // A rollback never returns to an artifact a monitor found unhealthy.
    let back = flow(&ws, &clock, &["rollback", "staging"]);
    assert_ne!(back.code, 0, "{}", show(&back));
    assert_eq!(live(&ws, "staging"), "v1 healthy\n");
}

/// On a Saturday a production deploy is refused before anything runs, with the next opening;
/// `--emergency --reason` passes and the ledger records it with the reason and the user.
#[test]
fn outside_its_window_a_deploy_is_refused_unless_an_emergency() {
    let ws = app("main");
    let clock = Clock::at(SATURDAY);
    let refused = flow(&ws, &clock, &["build", "//app:production"]);
    golden("deploy_outside_window", refused.bad_input());
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert!(runs(&ws, "production").is_empty());
    assert!(
        !ws.path().join("flow-out/app/app.txt").exists(),
        "nothing built"
    );
    assert!(
        !ws.path().join(".flow/ledger/entries").exists(),
        "nothing recorded"
    );

    // Staging has no window.
    ok(&flow(&ws, &clock, &["build", "//app:staging"]));

    let emergency = flow(
        &ws,
        &clock,
        &[
            "build",
            "//app:production",
            "--emergency",
            "--reason",
            "INC-42: payments down",
        ],
    );
    assert_eq!(
        ok(&emergency).tagged("DEPLOYED"),
        ["//app:production"],
        "{}",
        show(&emergency)
    );
    let entries = ledger_json(&ws, &clock, "production");
    assert_eq!(kinds(&entries), [pair("emergency", "succeeded")]);
    assert_eq!(entries[0]["reason"], "INC-42: payments down");
    assert_eq!(entries[0]["user"], "ci-bot");
    assert_eq!(entries[0]["approved_by"], Value::Null);
    let table = flow(&ws, &clock, &["ledger", "production"]);
    assert!(ok(&table).stdout.contains("emergency"), "{}", table.stdout);
}

/// Where the environment asks for an approval, `--emergency` without `--approved-by` is
/// refused; with it, the approver is recorded.
#[test]
fn an_emergency_needs_the_approval_its_environment_asks_for() {
    let ws = app("main");
    let clock = Clock::at(SATURDAY);
    let args = ["build", "//app:vault", "--emergency", "--reason", "hotfix"];
    let refused = flow(&ws, &clock, &args);
    golden("deploy_emergency_without_approval", refused.bad_input());
    assert!(runs(&ws, "vault").is_empty());
    let mut approved = args.to_vec();
    approved.extend(["--approved-by", "bob"]);
    ok(&flow(&ws, &clock, &approved));
    let entries = ledger_json(&ws, &clock, "vault");
    assert_eq!(kinds(&entries), [pair("emergency", "succeeded")]);
    assert_eq!(entries[0]["approved_by"], "bob");
    assert_eq!(entries[0]["reason"], "hotfix");
}

/// `branches = ["main"]`: a deploy from another branch is refused before anything runs, even
/// inside the window; staging (no branch rule) deploys from it.
#[test]
fn a_deploy_from_another_branch_is_refused() {
    let ws = app("feature/login");
    let clock = Clock::at(TUESDAY);
    let refused = flow(&ws, &clock, &["build", "//app:production"]);
    golden("deploy_wrong_branch", refused.bad_input());
    assert!(runs(&ws, "production").is_empty());
    // Both refusals at once, on a Saturday.
    let both = flow_in(
        &ws,
        ws.path(),
        &Clock::at(SATURDAY),
        &["build", "//app:production"],
        &[],
    );
    let text = both.bad_input();
    assert!(
        text.contains("outside its deployment window")
            && text.contains("from branch `feature/login`"),
        "{text}"
    );
    ok(&flow(&ws, &clock, &["build", "//app:staging"]));
    assert_eq!(runs(&ws, "staging").len(), 1);
}

/// `//...`, `:all` and a group reached by a wildcard never deploy; naming the group does.
#[test]
fn wildcards_never_deploy_even_through_a_group() {
    let ws = app("main");
    let clock = Clock::at(TUESDAY);
    for pattern in ["//...", "//app:all", "//app/..."] {
        let run = flow(&ws, &clock, &["build", pattern]);
        ok(&run);
        assert_eq!(
            run.tagged("RAN").len() + run.tagged("CACHED").len(),
            1,
            "{}",
            run.stdout
        );
        assert!(
            run.tagged("DEPLOYED").is_empty() && run.tagged("LIVE").is_empty(),
            "{}",
            run.stdout
        );
        assert!(!ws.path().join("envs").exists(), "{pattern} deployed");
        assert!(
            !ws.path().join(".flow/ledger/entries").exists(),
            "{pattern} recorded"
        );
    }
    let named = flow(&ws, &clock, &["build", "//app:everything"]);
    assert_eq!(
        ok(&named).tagged("DEPLOYED"),
        ["//app:production", "//app:staging"],
        "{}",
        named.stdout
    );
}

/// Two CI-like checkouts, each with an empty cache, share the ledger through a bare remote:
/// what A deployed, B finds live (`[LIVE]`, nothing run).
#[test]
fn two_checkouts_with_empty_caches_share_the_ledger() {
    let root = Ws::bare();
    let flow_toml = format!("{ENVIRONMENTS}\n[ledger]\nremote = \"origin\"\n");
    let build = app_build();
    let clones = remote_and_clones(
        root.path(),
        &[
            ("flow.toml", &flow_toml),
            (".gitignore", ".flow/\nflow-out/\nenvs/\n"),
            ("app/BUILD", &build),
            ("app/version.txt", "v1 healthy\n"),
        ],
        &["a", "b"],
    );
    let (a, b) = (clones[0].clone(), clones[1].clone());
    let clock = Clock::at(TUESDAY);
    let build = |dir: &Path, cache: &str| {
        let cache = root.path().join(cache);
        flow_in(
            &root,
            dir,
            &clock,
            &[
                "--cache-dir",
                cache.to_str().unwrap(),
                "build",
                "//app:staging",
            ],
            &[],
        )
    };
    let in_a = build(&a, "cache-a");
    assert_eq!(
        ok(&in_a).tagged("DEPLOYED"),
        ["//app:staging"],
        "{}",
        show(&in_a)
    );
    let in_b = build(&b, "cache-b");
    ok(&in_b);
    assert_eq!(
        in_b.tagged("RAN"),
        ["//app:bundle"],
        "B's cache was empty: {}",
        in_b.stdout
    );
    assert_eq!(in_b.tagged("LIVE"), ["//app:staging"], "{}", show(&in_b));
    assert!(!b.join("envs").exists(), "B ran the deploy again");
    // A new version deployed from B is live for A.
    std::fs::write(b.join("app/version.txt"), "v2 healthy\n").unwrap();
    let v2 = build(&b, "cache-b");
    assert_eq!(
        ok(&v2).tagged("DEPLOYED"),
        ["//app:staging"],
        "{}",
        show(&v2)
    );
    let shown = flow_in(&root, &a, &clock, &["ledger", "staging", "--json"], &[]);
    let entries: Vec<Value> = serde_json::from_str(&ok(&shown).stdout).unwrap();
    assert_eq!(entries.len(), 2, "{}", shown.stdout);
}

// ---------------------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------------------

/// An HTTP endpoint on 127.0.0.1 that answers `200` to one POST; the join handle yields the
/// request line and the body.
fn receiver() -> (u16, std::thread::JoinHandle<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        let (head, length) = loop {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the request ended early");
            data.extend_from_slice(&buf[..n]);
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                data.drain(..end + 4);
                break (head, length);
            }
        };
        while data.len() < length {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the body ended early");
            data.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        let line = head.lines().next().unwrap_or_default().to_owned();
        (line, String::from_utf8(data).unwrap())
    });
    (port, handle)
}

const POST_PY: &str = r#"import os, sys, urllib.request
url = os.environ["HOOK_URL"]
print("posting to " + url)
sys.stderr.write("token " + url + "\n")
body = open(os.environ["FLOW_EVENT"], "rb").read()
request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
urllib.request.urlopen(request, timeout=10).read()
sys.exit(int(os.environ.get("EXIT", "0")))
"#;

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    crate::support::files_under(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// A notify target posts flow's event (the deploy and its ledger entry) to a local webhook
/// whose URL is a secret; the secret appears in no output, log, cache file or event.
#[test]
fn a_notification_posts_its_event_with_the_secret_masked() {
    let ws = app("main").file("app/post.py", POST_PY);
    let build = read(&ws.path().join("app/BUILD"))
        + "\nnotify(name = \"tell\", on = [\"deploy\", \"failure\"], cmd = \"python3 -B post.py\", \
           srcs = [\"post.py\"], secrets = [\"HOOK_URL\"])\n";
    ws.write("app/BUILD", build.as_bytes());
    let token = format!("s3cr3t{}", std::process::id());
    let (port, received) = receiver();
    let url = format!("http://127.0.0.1:{port}/hooks/{token}");
    let clock = Clock::at(TUESDAY);
    let run = flow_env(
        &ws,
        &clock,
        &["build", "//app:staging", "//app:tell"],
        &[("HOOK_URL", &url)],
    );
    ok(&run);
    assert!(
        run.stdout.contains("[NOTIFIED] //app:tell (deploy)"),
        "{}",
        run.stdout
    );
    let (line, body) = received.join().unwrap();
    assert_eq!(line, format!("POST /hooks/{token} HTTP/1.1"));
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["outcome"], "success", "{event}");
    assert_eq!(
        event["events"],
        serde_json::json!(["success", "deploy"]),
        "{event}"
    );
    assert_eq!(event["failed"], serde_json::json!([]), "{event}");
    assert_eq!(event["branch"], "main", "{event}");
    assert_eq!(event["user"], "ci-bot", "{event}");
    let ledger = event["ledger"].as_array().unwrap();
    assert_eq!(ledger.len(), 1, "{event}");
    assert_eq!(ledger[0]["environment"], "staging");
    assert_eq!(ledger[0]["kind"], "deploy");
    assert!(!body.contains(&token), "the event names the secret: {body}");
    // (A notify's own log: see a_failed_notification_has_its_log_in_flow_log.)
    let log = flow_env(&ws, &clock, &["log", "//app:tell"], &[("HOOK_URL", &url)]);
    let deploy_log = flow(&ws, &clock, &["log", "//app:staging"]);
    for (what, text) in [
        ("stdout", &run.stdout),
        ("stderr", &run.stderr),
        ("flow log stdout", &log.stdout),
        ("flow log stderr", &log.stderr),
        ("the deploy's log", &ok(&deploy_log).stdout),
    ] {
        assert!(!text.contains(&token), "the secret in {what}:\n{text}");
    }
    assert_eq!(
        files_containing(ws.path(), &token),
        Vec::<PathBuf>::new(),
        "files holding the secret"
    );
}

/// A notify on failure runs although its dependency failed, with the failure in its event; one
/// whose events did not happen stays quiet.
#[test]
fn a_notification_on_failure_runs_when_its_dependency_failed() {
    let ws = Ws::new();
    let root = ws.path().display().to_string();
    ws.write(
        "n/BUILD",
        format!(
            "task(name = \"bad\", outs = [\"x\"], cmd = \"echo broken; exit 3\")\n\
             notify(name = \"on_failure\", on = [\"failure\"], deps = [\":bad\"], \
                    cmd = \"cp $FLOW_EVENT {root}/failure.json\")\n\
             notify(name = \"on_success\", on = [\"success\", \"deploy\"], deps = [\":bad\"], \
                    cmd = \"cp $FLOW_EVENT {root}/success.json\")\n"
        )
        .as_bytes(),
    );
    let clock = Clock::at(TUESDAY);
    let run = flow(&ws, &clock, &["build", "//n:on_failure", "//n:on_success"]);
    assert_eq!(run.code, 1, "{}", show(&run));
    assert!(
        run.stdout.contains("[NOTIFIED] //n:on_failure (failure)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("[QUIET] //n:on_success"),
        "{}",
        run.stdout
    );
    assert!(!ws.path().join("success.json").exists());
    let event: Value = serde_json::from_str(&read(&ws.path().join("failure.json"))).unwrap();
    assert_eq!(event["outcome"], "failure", "{event}");
    assert_eq!(event["failed"], serde_json::json!(["//n:bad"]), "{event}");
    // Never cached: the same build notifies again.
    std::fs::remove_file(ws.path().join("failure.json")).unwrap();
    let again = flow(&ws, &clock, &["build", "//n:on_failure"]);
    assert_eq!(again.code, 1);
    assert!(ws.path().join("failure.json").exists(), "{}", again.stdout);
}

/// A notify that fails shows its output's tail and points at `flow log`, which must then show
/// the whole log, secrets masked.
#[test]
fn a_failed_notification_has_its_log_in_flow_log() {
    let ws = Ws::new().file(
        "n/BUILD",
        "notify(name = \"leak\", on = [\"success\"], secrets = [\"HOOK_URL\"], \
         cmd = \"for i in $$(seq 1 40); do echo line $$i $HOOK_URL; done; exit 1\")\n",
    );
    let token = format!("tok{}x", std::process::id());
    let clock = Clock::at(TUESDAY);
    let env = [("HOOK_URL", token.as_str())];
    let run = flow_env(&ws, &clock, &["build", "//n:leak"], &env);
    assert_eq!(run.code, 1, "{}", show(&run));
    assert!(!run.stdout.contains(&token), "{}", run.stdout);
    assert!(run.stdout.contains("line 40 ***"), "{}", run.stdout);
    let log = flow_env(&ws, &clock, &["log", "//n:leak"], &env);
    assert_eq!(
        log.code,
        0,
        "the hint `flow log //n:leak` leads nowhere: {}",
        show(&log)
    );
    assert!(log.stdout.contains("line 1 ***\n"), "{}", log.stdout);
    assert!(!log.stdout.contains(&token), "{}", log.stdout);
}

// ---------------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------------

/// A server that counts its starts (`starts`), writes its pid (`service.pid`) and listens only
/// after half a second, so a dependent that ran before it was ready would find nothing.
const SERVER_PY: &str = r#"import http.server, os, sys, time
root = os.environ["FLOW_WORKSPACE"]
with open(os.path.join(root, "starts"), "a") as f:
    f.write("start\n")
with open(os.path.join(root, "service.pid"), "w") as f:
    f.write(str(os.getpid()))
time.sleep(0.5)
class Pong(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"pong")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Pong).serve_forever()
"#;

/// A workspace with service `//svc:pong` and dependents: `a` and `b` ask it once (no retry),
/// `bad` asks it and fails, `slow` asks it (then `asked` exists) and sleeps.
fn service_ws() -> Ws {
    let port = free_port();
    let ws = Ws::new().file("svc/server.py", SERVER_PY);
    let ask = format!(
        "python3 -c \\\"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=5).read().decode())\\\""
    );
    let asked = ws.path().join("asked");
    ws.write(
        "svc/BUILD",
        format!(
            r#"service(
    name = "pong",
    start = "exec python3 -B server.py {port}",
    ready = "http://127.0.0.1:{port}/",
    srcs = ["server.py"],
    timeout = "20s",
)
task(name = "a", deps = [":pong"], outs = ["a.txt"], cmd = "{ask} > a.txt")
task(name = "b", deps = [":pong"], outs = ["b.txt"], cmd = "{ask} > b.txt")
task(name = "bad", deps = [":pong"], outs = ["bad.txt"], cmd = "{ask}; exit 1")
task(name = "slow", deps = [":pong"], outs = ["slow.txt"], cmd = "{ask} > {asked}; sleep 30; touch slow.txt")
"#,
            asked = asked.display()
        )
        .as_bytes(),
    );
    ws
}

fn service_pid(ws: &Ws) -> i32 {
    read(&ws.path().join("service.pid")).trim().parse().unwrap()
}

/// Started once for both dependents, ready before they run, stopped after them; after a
/// failing dependent, stopped too.
#[test]
fn a_service_is_started_once_ready_first_and_stopped_after() {
    let ws = service_ws();
    let clock = Clock::at(TUESDAY);
    let run = flow(&ws, &clock, &["build", "-j", "2", "//svc:a", "//svc:b"]);
    assert_eq!(
        ok(&run).tagged("RAN"),
        ["//svc:a", "//svc:b"],
        "{}",
        show(&run)
    );
    assert_eq!(read(&ws.path().join("starts")), "start\n", "started once");
    assert_eq!(read(&ws.path().join("flow-out/svc/a.txt")), "pong\n");
    assert_eq!(read(&ws.path().join("flow-out/svc/b.txt")), "pong\n");
    let pid = service_pid(&ws);
    assert!(
        ends_within(pid, Duration::from_secs(2)),
        "the service outlived the build"
    );

    // Cached dependents need no service: it does not start.
    ok(&flow(&ws, &clock, &["build", "//svc:a", "//svc:b"]));
    assert_eq!(read(&ws.path().join("starts")), "start\n");

    let failed = flow(&ws, &clock, &["build", "//svc:bad"]);
    assert_eq!(failed.code, 1, "{}", show(&failed));
    assert!(
        failed.stdout.contains("pong"),
        "the dependent reached it: {}",
        failed.stdout
    );
    assert_eq!(read(&ws.path().join("starts")), "start\nstart\n");
    let pid = service_pid(&ws);
    assert!(
        ends_within(pid, Duration::from_secs(2)),
        "the service outlived a failure"
    );
}

/// Ctrl-C while a dependent runs: flow exits 130 and no process of the service remains.
#[test]
fn ctrl_c_stops_a_service() {
    let ws = service_ws();
    let mut child = Command::new(crate::support::flow_bin())
        .current_dir(ws.path())
        .args(["--color", "never", "build", "//svc:slow"])
        .env_remove("FLOW_CACHE_DIR")
        .env("FLOW_NOW_MS", TUESDAY.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&ws.path().join("asked"));
    std::thread::sleep(Duration::from_millis(300));
    let pid = service_pid(&ws);
    assert!(
        alive(pid),
        "the service should run while its dependent does"
    );
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("flow did not exit after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(130));
    assert!(
        ends_within(pid, Duration::from_secs(1)),
        "the service survived Ctrl-C"
    );
}

// ---------------------------------------------------------------------------------------------
// The example
// ---------------------------------------------------------------------------------------------

const ENVIRONMENTS_OF_THE_EXAMPLE: [&str; 2] = ["staging", "production"];

/// The HTTP servers of the example's local environments: stopped (the example's
/// `serve-stop`) when dropped, and `stop` checks that none remains.
struct Servers<'a>(&'a Ws);

impl Servers<'_> {
    fn dir(&self, env: &str) -> PathBuf {
        self.0.path().join(".environments").join(env)
    }

    fn pid(&self, env: &str) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir(env).join("server.pid")).ok()?;
        text.trim().parse().ok()
    }

    /// `GET PATH` on the server of `env`: (status, JSON body).
    fn get(&self, env: &str, path: &str) -> (u16, Value) {
        let port = read(&self.dir(env).join("server.port"));
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", port.trim().parse::<u16>().unwrap()))
                .unwrap_or_else(|e| panic!("{env}'s server does not answer: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (
            status,
            serde_json::from_str(body).unwrap_or(Value::String(body.into())),
        )
    }

    /// The version (artifact digest) `env` serves.
    fn version(&self, env: &str) -> String {
        let (status, body) = self.get(env, "/");
        assert_eq!(status, 200, "{body}");
        body["version"]
            .as_str()
            .unwrap_or_else(|| panic!("no version in {body}"))
            .to_owned()
    }

    fn stop_all(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for env in ENVIRONMENTS_OF_THE_EXAMPLE {
            let Some(pid) = self.pid(env) else { continue };
            pids.push(pid);
            let _ = Command::new("python3")
                .current_dir(self.0.path().join("src/packages/deployment"))
                .args(["-B", "-m", "deployment.infrastructure.cli", "serve-stop"])
                .args(["--environment", env, "--root"])
                .arg(self.0.path().join(".environments"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        pids
    }

    /// Stops the servers; asserts that no process of them remains.
    fn stop(&self) {
        for pid in self.stop_all() {
            assert!(
                ends_within(pid, Duration::from_secs(10)),
                "server {pid} still runs"
            );
        }
    }
}

impl Drop for Servers<'_> {
    fn drop(&mut self) {
        for pid in self.stop_all() {
            if !ends_within(pid, Duration::from_secs(10)) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

fn live_digest(ws: &Ws, clock: &Clock, env: &str) -> String {
    let entries = ledger_json(ws, clock, env);
    let live = entries
        .iter()
        .rev()
        .find(|e| e["kind"] != "monitor" && e["outcome"] == "succeeded")
        .unwrap_or_else(|| panic!("nothing live in {env}: {entries:?}"));
    live["artifact"]["digest"].as_str().unwrap().to_owned()
}

/// The real example, end to end: `//...` deploys nothing; staging deploys once its tests, scans
/// and boundary checks pass, and again only with a new artifact; production blue-green, inside
/// its window; `flow rollback production` twice runs twice; a release whose `/health` fails is
/// caught by staging's monitor and rolled back (the server serves the previous version again).
/// Slow the first time on a machine: the example's tools come from PyPI (see prelude.rs).
#[test]
fn the_example_delivers_end_to_end() {
    let ws = crate::prelude::example();
    commit_all(ws.path(), "main");
    let servers = Servers(&ws);
    let clock = Clock::at(TUESDAY);
    let cache = crate::prelude::shared_cache();
    let build = |targets: &[&str]| {
        let mut args = vec!["--cache-dir", cache.to_str().unwrap(), "build", "-j", "2"];
        args.extend_from_slice(targets);
        flow(&ws, &clock, &args)
    };
    const PKG: &str = "//src/packages/deployment";
    let label = |name: &str| format!("{PKG}:{name}");

    let all = build(&["//..."]);
    ok(&all);
    for tag in ["DEPLOYED", "LIVE", "HEALTHY", "NOTIFIED", "QUIET", "ROLLED"] {
        assert!(
            all.tagged(tag).is_empty(),
            "//... ran an effect:\n{}",
            all.stdout
        );
    }
    assert!(!ws.path().join(".environments").exists(), "//... deployed");
    assert!(
        !ws.path().join(".flow/ledger/entries").exists(),
        "//... recorded"
    );

    // v1 to staging; the same again runs nothing.
    let v1 = build(&[&label("deploy_staging")]);
    assert_eq!(
        ok(&v1).tagged("DEPLOYED"),
        [label("deploy_staging")],
        "{}",
        show(&v1)
    );
    let digest1 = live_digest(&ws, &clock, "staging");
    assert_eq!(servers.version("staging"), digest1);
    let again = build(&[&label("deploy_staging")]);
    assert_eq!(
        ok(&again).tagged("LIVE"),
        [label("deploy_staging")],
        "{}",
        show(&again)
    );
    assert!(
        summary_counts(&again).starts_with("flow: ok: 0 ran"),
        "{}",
        again.stdout
    );

    // v1 to production (after staging's monitor), blue-green, and its monitor.
    let prod1 = build(&[&label("deploy_production"), &label("monitor_production")]);
    ok(&prod1);
    assert_eq!(
        prod1.tagged("DEPLOYED"),
        [label("deploy_production")],
        "{}",
        prod1.stdout
    );
    assert_eq!(
        prod1.tagged("HEALTHY"),
        [label("monitor_production"), label("monitor_staging")],
        "{}",
        prod1.stdout
    );
    assert_eq!(servers.version("production"), digest1);

    // A code change in a package the bundle ships: a new artifact, deployed to both.
    let module = ws.path().join("src/packages/mlops/mlops/__init__.py");
    let text = read(&module) + "\nRELEASE = 2\n";
    std::fs::write(&module, text).unwrap();
    let v2 = build(&[&label("deploy_production"), &label("monitor_production")]);
    ok(&v2);
    assert_eq!(
        v2.tagged("DEPLOYED"),
        [label("deploy_production"), label("deploy_staging")],
        "{}",
        show(&v2)
    );
    let digest2 = live_digest(&ws, &clock, "production");
    assert_ne!(digest2, digest1);
    assert_eq!(servers.version("staging"), digest2);
    assert_eq!(servers.version("production"), digest2);

    // `flow rollback production`, twice: v1, then (nothing is before v1) v2 again, named by
    // its digest; two entries.
    let back = flow(
        &ws,
        &clock,
        &[
            "--cache-dir",
            cache.to_str().unwrap(),
            "rollback",
            "production",
        ],
    );
    assert!(
        ok(&back).stdout.contains("[ROLLED BACK]"),
        "{}",
        show(&back)
    );
    assert_eq!(servers.version("production"), digest1);
    let back = flow(
        &ws,
        &clock,
        &[
            "--cache-dir",
            cache.to_str().unwrap(),
            "rollback",
            "production",
            "--to",
            &digest2[..12],
        ],
    );
    assert!(
        ok(&back).stdout.contains("[ROLLED BACK]"),
        "{}",
        show(&back)
    );
    assert_eq!(servers.version("production"), digest2);
    let rollbacks = ledger_json(&ws, &clock, "production")
        .iter()
        .filter(|e| e["kind"] == "rollback" && e["outcome"] == "succeeded")
        .count();
    assert_eq!(rollbacks, 2);

    // A release whose /health fails: staging's monitor rolls it back to v2.
    let health = ws
        .path()
        .join("src/packages/deployment/deployment/application/health.py");
    let text = read(&health) + "\nREQUIRED_PACKAGES += (\"payments\",)\n";
    std::fs::write(&health, text).unwrap();
    let bad = build(&[&label("deploy_staging"), &label("monitor_staging")]);
    assert_eq!(bad.code, 1, "{}", show(&bad));
    assert_eq!(
        bad.tagged("DEPLOYED"),
        [label("deploy_staging")],
        "{}",
        bad.stdout
    );
    assert_eq!(
        bad.tagged("FAILED"),
        [label("monitor_staging")],
        "{}",
        bad.stdout
    );
    assert!(
        bad.stdout.contains("(automatic rollback)"),
        "{}",
        bad.stdout
    );
    assert_eq!(
        servers.version("staging"),
        digest2,
        "staging serves v2 again"
    );
    assert_eq!(servers.get("staging", "/health").0, 200);
    let entries = ledger_json(&ws, &clock, "staging");
    let tail = &entries[entries.len() - 3..];
    assert_eq!(
        kinds(tail),
        [
            pair("deploy", "succeeded"),
            pair("monitor", "failed"),
            pair("automatic-rollback", "succeeded"),
        ],
        "{entries:?}"
    );
    let digest3 = tail[0]["artifact"]["digest"].as_str().unwrap();
    assert!(digest3 != digest2 && digest3 != digest1);
    assert_eq!(tail[1]["artifact"]["digest"], digest3);
    assert_eq!(tail[2]["artifact"]["digest"], digest2.as_str());
    assert_eq!(tail[0]["branch"], "main");
    servers.stop();
}

/// Regression (found by the example, whose deploys wait for each package's tests directly and
/// through its `:checks` group): an action that reaches a dependency twice, directly and through
/// a group, failed with "input ... is declared twice".
#[test]
fn a_dependency_reached_twice_is_staged_once() {
    let ws = Ws::new()
        .file("flow.toml", "[environments.staging]\n")
        .file(
            "a/BUILD",
            "task(name = \"t\", outs = [\"r.txt\"], cmd = \"echo r > r.txt\")\n\
             group(name = \"g\", deps = [\":t\"])\n\
             task(name = \"bundle\", outs = [\"app.txt\"], cmd = \"echo 1 > app.txt\")\n\
             task(name = \"user\", deps = [\":t\", \":g\"], outs = [\"u.txt\"], \
                  cmd = \"cat $(location :t) > u.txt\")\n\
             deploy(name = \"d\", environment = \"staging\", artifact = \":bundle\", \
                    deps = [\":t\", \":g\"], cmd = \"cat $(location :t)\")\n",
        );
    let clock = Clock::at(TUESDAY);
    let run = flow(&ws, &clock, &["build", "//a:user", "//a:d"]);
    ok(&run);
    assert_eq!(read(&ws.path().join("flow-out/a/u.txt")), "r\n");
    assert_eq!(run.tagged("DEPLOYED"), ["//a:d"], "{}", run.stdout);
}

/// A deploy with `live`: when the ledger says its artifact is live but the environment says
/// otherwise (someone emptied it), the environment wins: a warning, and the deploy runs; when
/// they agree, `[LIVE]` runs nothing; when `live` itself fails, the ledger is trusted.
#[test]
fn the_environment_wins_over_the_ledger_when_live_disagrees() {
    let build = format!(
        "task(name = \"bundle\", srcs = [\"version.txt\"], outs = [\"app.txt\"], cmd = \"cp version.txt app.txt\")\n\
         deploy(name = \"staging\", environment = \"staging\", artifact = \":bundle\", \
         cmd = \"{cmd} && echo $FLOW_ARTIFACT_DIGEST > $FLOW_WORKSPACE/envs/staging/digest\", \
         live = \"cat $FLOW_WORKSPACE/envs/staging/digest\")\n",
        cmd = DEPLOY_CMD.replace('"', "\\\"")
    );
    let ws = Ws::bare()
        .file("flow.toml", ENVIRONMENTS)
        .file("app/BUILD", &build)
        .file("app/version.txt", "v1 healthy\n");
    let clock = Clock::at(TUESDAY);
    ok(&flow(&ws, &clock, &["build", "//app:staging"]));
    assert_eq!(runs(&ws, "staging").len(), 1);
    let again = flow(&ws, &clock, &["build", "//app:staging"]);
    assert!(
        ok(&again).stdout.contains("[LIVE] //app:staging"),
        "{}",
        show(&again)
    );
    assert_eq!(runs(&ws, "staging").len(), 1);
    // The environment lost its release: the ledger is not believed over it.
    let digest = ws.path().join("envs/staging/digest");
    std::fs::write(&digest, "").unwrap();
    let emptied = flow(&ws, &clock, &["build", "//app:staging"]);
    assert!(
        ok(&emptied).stdout.contains("[DEPLOYED] //app:staging"),
        "{}",
        show(&emptied)
    );
    assert!(
        emptied
            .stderr
            .contains("its `live` command says nothing is: deploying it again")
            || emptied
                .stdout
                .contains("its `live` command says nothing is: deploying it again"),
        "{}",
        show(&emptied)
    );
    assert_eq!(runs(&ws, "staging").len(), 2);
    // `live` failing: the ledger is trusted, with a warning.
    std::fs::remove_file(&digest).unwrap();
    let unknown = flow(&ws, &clock, &["build", "//app:staging"]);
    assert!(
        ok(&unknown).stdout.contains("[LIVE] //app:staging"),
        "{}",
        show(&unknown)
    );
    assert!(
        show(&unknown).contains("the ledger is trusted"),
        "{}",
        show(&unknown)
    );
    assert_eq!(runs(&ws, "staging").len(), 2);
}

/// A service's `stop` command runs, to its end, in every build: the stop begun when its last
/// dependent settles is waited for before flow exits (it was cut short now and then).
#[test]
fn a_services_stop_runs_to_its_end_in_every_build() {
    let ws = Ws::bare().file("flow.toml", "").file(
        "s/BUILD",
        "service(name = \"db\", start = \"exec sleep 1011\", ready = \"true\", \
         stop = \"echo begin >> ../stops.log; sleep 0.3; echo end >> ../stops.log\")\n\
         task(name = \"t\", deps = [\":db\"], cmd = \"true\", cache = False)\n",
    );
    for _ in 0..5 {
        ws.run(&["build", "//s:t"]).ok();
    }
    let log = read(&ws.path().join("stops.log"));
    assert_eq!(log, "begin\nend\n".repeat(5), "{log}");
}

/// A service that dies because something else holds its port fails its dependents, although
/// its ready probe passed (the other process answered it): they would test something else.
#[test]
fn a_service_whose_port_another_process_answers_fails_its_dependents() {
    let port = free_port();
    let mut other = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the other server never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ws = Ws::bare().file("flow.toml", "").file(
        "s/BUILD",
        &format!(
            "service(name = \"web\", start = \"exec python3 -m http.server {port} --bind 127.0.0.1\", \
             ready = \"http://127.0.0.1:{port}/\")\n\
             task(name = \"t\", deps = [\":web\"], cmd = \"true\", cache = False)\n"
        ),
    );
    let run = ws.run(&["build", "//s:t"]);
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(run.code, 1, "{}", show(&run));
    assert!(
        run.stdout.contains("something else answers it"),
        "{}",
        show(&run)
    );
}

/// Files in the ledger's directory that are not entries flow wrote (a directory, a link to a
/// device, an entry with control characters or a digest that is not one) are skipped with a
/// warning: they never block a deploy, a rollback or `flow ledger`, nor reach the terminal.
#[test]
fn hostile_ledger_files_are_skipped_not_obeyed() {
    let ws = app("main");
    let clock = Clock::at(TUESDAY);
    ok(&flow(&ws, &clock, &["build", "//app:staging"]));
    let entries = ws.path().join(".flow/ledger/entries");
    std::fs::create_dir(entries.join("0000000000001-dir.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", entries.join("0000000000002-zero.json")).unwrap();
    let mut forged: Value = ledger_json(&ws, &clock, "staging")[0].clone();
    forged["id"] = "forged".into();
    forged["environment"] = "staging\u{1b}[2J\nproduction  fake".into();
    std::fs::write(
        entries.join("0000000000003-forged.json"),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    forged["environment"] = "staging".into();
    forged["artifact"]["digest"] = "abc".into();
    std::fs::write(
        entries.join("0000000000004-short.json"),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    let listed = flow(&ws, &clock, &["ledger"]);
    ok(&listed);
    assert!(
        !listed.stdout.contains('\u{1b}') && !listed.stdout.contains("fake"),
        "{}",
        show(&listed)
    );
    assert_eq!(
        listed.stderr.matches("skipped the ledger entry").count(),
        4,
        "{}",
        show(&listed)
    );
    ws.write("app/version.txt", b"v2 healthy\n");
    let v2 = flow(&ws, &clock, &["build", "//app:staging"]);
    assert_eq!(
        ok(&v2).tagged("DEPLOYED"),
        ["//app:staging"],
        "{}",
        show(&v2)
    );
    ok(&flow(&ws, &clock, &["rollback", "staging"]));
    assert_eq!(live(&ws, "staging"), "v1 healthy\n");
}

/// Two deploys ship to one environment (an API and a web front end): each has its own live
/// artifact, so each is `[LIVE]` on its own, and a rollback of the environment asks which;
/// a rollback stages the old artifact where `$(ARTIFACT)` now points, although it was built
/// under another name.
#[test]
fn two_deploys_to_one_environment_and_a_renamed_artifact() {
    let ws = Ws::bare()
        .file("flow.toml", ENVIRONMENTS)
        .file("v.txt", "api-1\n")
        .file("w.txt", "web-1\n")
        .file(
            "BUILD",
            "task(name = \"api\", srcs = [\"v.txt\"], outs = [\"api-1.0.whl\"], cmd = \"cp v.txt api-1.0.whl\")\n\
             task(name = \"web\", srcs = [\"w.txt\"], outs = [\"web.txt\"], cmd = \"cp w.txt web.txt\")\n\
             deploy(name = \"deploy_api\", environment = \"staging\", artifact = \":api\", \
             cmd = \"cat $(ARTIFACT) >> $FLOW_WORKSPACE/api.log\")\n\
             deploy(name = \"deploy_web\", environment = \"staging\", artifact = \":web\", \
             cmd = \"cat $(ARTIFACT) >> $FLOW_WORKSPACE/web.log\")\n",
        );
    let clock = Clock::at(TUESDAY);
    ok(&flow(&ws, &clock, &["build", "//:deploy_api"]));
    ok(&flow(&ws, &clock, &["build", "//:deploy_web"]));
    let again = flow(&ws, &clock, &["build", "//:deploy_api", "//:deploy_web"]);
    assert_eq!(
        ok(&again).tagged("LIVE"),
        ["//:deploy_api", "//:deploy_web"],
        "{}",
        show(&again)
    );
    // The API's next release is built under another name.
    let build = read(&ws.path().join("BUILD")).replace("api-1.0.whl", "api-1.1.whl");
    ws.write("BUILD", build.as_bytes());
    ws.write("v.txt", b"api-2\n");
    ok(&flow(&ws, &clock, &["build", "//:deploy_api"]));
    let ambiguous = flow(&ws, &clock, &["rollback", "staging"]);
    assert_eq!(ambiguous.code, 2, "{}", show(&ambiguous));
    assert!(
        ambiguous
            .stderr
            .contains("several deploys ship to `staging`"),
        "{}",
        show(&ambiguous)
    );
    let back = flow(&ws, &clock, &["rollback", "//:deploy_api"]);
    assert!(
        ok(&back).stdout.contains("[ROLLED BACK] //:deploy_api"),
        "{}",
        show(&back)
    );
    assert_eq!(read(&ws.path().join("api.log")), "api-1\napi-2\napi-1\n");
    assert_eq!(read(&ws.path().join("web.log")), "web-1\n");
}

/// A monitor probes right away and then every `interval` until `duration`: duration ÷
/// interval + 1 probes (it once stopped one interval early).
#[test]
fn a_monitor_probes_duration_over_interval_plus_one_times() {
    let ws = Ws::bare().file("flow.toml", ENVIRONMENTS).file("v.txt", "1\n").file(
        "BUILD",
        "task(name = \"art\", srcs = [\"v.txt\"], outs = [\"a.txt\"], cmd = \"cp v.txt a.txt\")\n\
         deploy(name = \"d\", environment = \"staging\", artifact = \":art\", cmd = \"true\")\n\
         monitor(name = \"m\", target = \":d\", probe = \"echo probe >> $FLOW_WORKSPACE/probes.log\", \
         interval = \"1s\", duration = \"2s\")\n",
    );
    let clock = Clock::at(TUESDAY);
    let run = flow(&ws, &clock, &["build", "//:m"]);
    assert!(
        ok(&run).stdout.contains("3 probe(s) passed"),
        "{}",
        show(&run)
    );
    assert_eq!(read(&ws.path().join("probes.log")).lines().count(), 3);
}

/// `flow rollback` stops on Ctrl-C as a build does (its command is killed, exit 130); a
/// deploy whose BUILD now ships to another environment is not rolled back with the old
/// environment's history.
#[test]
fn a_rollback_stops_on_ctrl_c_and_never_ships_to_another_environment() {
    let ws = app("main");
    let clock = Clock::at(TUESDAY);
    ok(&flow(&ws, &clock, &["build", "//app:staging"]));
    ws.write("app/version.txt", b"v2 healthy\n");
    ok(&flow(&ws, &clock, &["build", "//app:staging"]));
    // The deploy's command now takes a while: Ctrl-C during the rollback.
    let slow = read(&ws.path().join("app/BUILD")).replace(
        "deploy(name = \"staging\", environment = \"staging\", artifact = \":bundle\", cmd = CMD)",
        "deploy(name = \"staging\", environment = \"staging\", artifact = \":bundle\", cmd = \"sleep 30 && \" + CMD)",
    );
    ws.write("app/BUILD", slow.as_bytes());
    let child = Command::new(crate::support::flow_bin())
        .args(["-C"])
        .arg(ws.path())
        .args(["rollback", "staging"])
        .env("FLOW_NOW_MS", clock.tick())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "Ctrl-C was not prompt"
    );
    assert_eq!(
        live(&ws, "staging"),
        "v2 healthy\n",
        "nothing was rolled back"
    );
    // The deploy now ships to production: the rollback of staging is refused, nothing runs.
    let moved = read(&ws.path().join("app/BUILD")).replace(
        "deploy(name = \"staging\", environment = \"staging\"",
        "deploy(name = \"staging\", environment = \"production\"",
    );
    ws.write("app/BUILD", moved.as_bytes());
    let refused = flow(&ws, &clock, &["rollback", "staging"]);
    assert_eq!(refused.code, 2, "{}", show(&refused));
    assert!(
        refused
            .stderr
            .contains("deploys to `production` now, not to `staging`"),
        "{}",
        show(&refused)
    );
    assert!(runs(&ws, "production").is_empty());
}

/// A secret typed in `--reason` or `--approved-by` is masked in the ledger for every deploy
/// of the build, not only those that declare it.
#[test]
fn an_emergency_reason_never_records_a_secret() {
    let build = app_build().replace(
        "deploy(name = \"vault\", environment = \"vault\", artifact = \":bundle\", cmd = CMD)",
        "deploy(name = \"vault\", environment = \"vault\", artifact = \":bundle\", cmd = CMD, secrets = [\"VAULT_TOKEN\"])",
    );
    let ws = app("main");
    ws.write("app/BUILD", build.as_bytes());
    let clock = Clock::at(SATURDAY);
    let secret = "s3cr3t-token-value";
    let run = flow_env(
        &ws,
        &clock,
        &[
            "build",
            "--emergency",
            "--reason",
            &format!("INC-1 {secret}"),
            "--approved-by",
            &format!("bob {secret}"),
            "//app:vault",
            "//app:staging",
        ],
        &[("VAULT_TOKEN", secret)],
    );
    ok(&run);
    let listed = flow_env(
        &ws,
        &clock,
        &["ledger", "--json"],
        &[("VAULT_TOKEN", secret)],
    );
    let text = ok(&listed).stdout.clone();
    assert!(text.contains("INC-1"), "{text}");
    assert!(!text.contains(secret), "{text}");
    assert!(files_containing(&ws.path().join(".flow/ledger"), secret).is_empty());
}
