//! A killed or crashed build leaves the cache consistent, and several builds at once never step
//! on each other. Through the real binary:
//! - each fail point (`FLOW_FAILPOINT`, see `cache/src/failpoint.rs`) aborts a build there; the
//!   next build, with no cleanup, succeeds, its `flow-out/` equals a clean build's (fresh
//!   directory, fresh cache), and `flow cache verify` finds nothing wrong; right after the abort,
//!   `verify` may list orphans, `verify --fix` removes them, and `verify` is then clean;
//! - `kill -9` at seeded random moments of builds of ~30 short tasks;
//! - six processes, in six checkouts, building overlapping targets over one cache directory;
//! - two builds in one workspace: the second waits for the first, and says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{flow_bin, Rng, Ws};

/// `flow --color never -C DIR ARGS` with the cache in `cache` (default: `DIR/.flow`) and the
/// fail point `failpoint` armed, if any.
fn flow(dir: &Path, cache: Option<&Path>, failpoint: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(flow_bin());
    cmd.args(["--color", "never", "-C"])
        .arg(dir)
        .env_remove("FLOW_CACHE_DIR")
        .env_remove("FLOW_FAILPOINT")
        .stdin(Stdio::null());
    if let Some(cache) = cache {
        cmd.arg("--cache-dir").arg(cache);
    }
    if let Some(name) = failpoint {
        cmd.env("FLOW_FAILPOINT", name);
    }
    cmd.args(args);
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to the end and asserts success.
#[track_caller]
fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run flow");
    assert!(out.status.success(), "flow failed:\n{}", text(&out));
    out
}

/// `flow build` in `dir`, which must succeed.
#[track_caller]
fn build_ok(dir: &Path, cache: Option<&Path>) -> Output {
    ok(&mut flow(dir, cache, None, &["build"]))
}

/// Asserts that `flow cache verify` finds nothing wrong.
#[track_caller]
fn assert_verified(dir: &Path, cache: Option<&Path>) {
    let out = flow(dir, cache, None, &["cache", "verify"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(": no problems") && !stdout.contains("problem:"),
        "verify is not clean:\n{}",
        text(&out)
    );
}

/// Right after a crash: `verify` may list only what dead processes left (never a bad result or
/// a corrupt blob); `verify --fix` removes it; then `verify` is clean.
#[track_caller]
fn fix_after_crash(dir: &Path, cache: Option<&Path>) {
    let out = flow(dir, cache, None, &["cache", "verify"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in stdout.lines().filter(|l| l.starts_with("problem: ")) {
        assert!(
            [
                "orphaned temp file",
                "stale sandbox",
                "leftover of an interrupted restore"
            ]
            .iter()
            .any(|k| line.contains(k)),
            "a crash damaged the cache: {line}\n{}",
            text(&out)
        );
    }
    assert_eq!(
        out.status.success(),
        !stdout.contains("problem: "),
        "{}",
        text(&out)
    );
    let fixed = ok(&mut flow(dir, cache, None, &["cache", "verify", "--fix"]));
    let fixed_out = String::from_utf8_lossy(&fixed.stdout);
    assert!(!fixed_out.contains("problem: "), "{}", text(&fixed));
    assert_verified(dir, cache);
}

/// What `flow-out/` holds: relative path → file content, `-> target` for a symlink, `/` for a
/// directory. Empty when it does not exist.
fn outputs(ws: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let ty = e.file_type().unwrap();
            if ty.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, format!("-> {}", target.display()).into_bytes());
            } else if ty.is_dir() {
                out.insert(rel, b"/".to_vec());
                walk(root, &path, out);
            } else {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let root = ws.join("flow-out");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// Writes `files` into a fresh workspace.
fn workspace(files: &[(String, String)]) -> Ws {
    let ws = Ws::new();
    for (rel, contents) in files {
        ws.write(rel, contents.as_bytes());
    }
    ws
}

/// `flow-out/` of a clean build of `files` in a fresh directory with a fresh cache (`-j 8`:
/// the tasks mostly sleep, and the number of jobs changes no output).
fn clean_outputs(files: &[(String, String)]) -> BTreeMap<String, Vec<u8>> {
    let ws = workspace(files);
    ok(&mut flow(ws.path(), None, None, &["build", "-j", "8"]));
    outputs(ws.path())
}

/// Asserts `dir`'s `flow-out/` equals a clean build's of `files`.
#[track_caller]
fn assert_outputs_clean(dir: &Path, files: &[(String, String)]) {
    let got = outputs(dir);
    let want = clean_outputs(files);
    if got != want {
        let show = |m: &BTreeMap<String, Vec<u8>>| {
            m.iter()
                .map(|(k, v)| format!("  {k}: {:?}\n", String::from_utf8_lossy(v)))
                .collect::<String>()
        };
        panic!(
            "flow-out differs from a clean build's\n--- clean\n{}--- got\n{}",
            show(&want),
            show(&got)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Fail points

/// Files outputs, a tree output with a symlink, a dependency chain and a check; `version` is
/// the content of the one source everything reads.
fn pipeline(version: &str) -> Vec<(String, String)> {
    let files = [
        ("lib/words.txt", format!("{version}\nbeta\nalpha\n")),
        (
            "lib/BUILD",
            "task(name = \"gen\", srcs = [\"words.txt\"], outs = [\"sorted.txt\", \"count.txt\"], \
             cmd = \"sort words.txt > sorted.txt && wc -l < words.txt > count.txt\")\n\
             task(name = \"site\", srcs = [\"words.txt\"], outs = [\"site/\"], \
             cmd = \"mkdir -p site/sub site/empty && cp words.txt site/sub/w.txt && \
             echo index > site/index.html && ln -s sub/w.txt site/link\")\n"
                .to_owned(),
        ),
        (
            "app/BUILD",
            "task(name = \"use\", deps = [\"//lib:gen\", \"//lib:site\"], outs = [\"report.txt\"], \
             cmd = \"cat $(locations //lib:gen) $(location //lib:site)/sub/w.txt > report.txt\")\n\
             task(name = \"check\", deps = [\":use\"], cmd = \"grep -q alpha $(location :use)\")\n"
                .to_owned(),
        ),
    ];
    files.into_iter().map(|(p, c)| (p.to_owned(), c)).collect()
}

/// Builds v1, edits to v2, and runs a build that must die at `name`.
fn crash_at(name: &str) -> (Ws, Vec<(String, String)>) {
    let ws = workspace(&pipeline("one"));
    build_ok(ws.path(), None);
    let v2 = pipeline("two");
    for (rel, contents) in &v2 {
        ws.write(rel, contents.as_bytes());
    }
    let out = flow(ws.path(), None, Some(name), &["build", "-j", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the build survived:\n{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("flow: failpoint `{name}` reached")),
        "the fail point was not reached:\n{}",
        text(&out)
    );
    (ws, v2)
}

/// The next build repairs everything by itself.
fn next_build_repairs(name: &str) {
    let (ws, v2) = crash_at(name);
    build_ok(ws.path(), None);
    assert_outputs_clean(ws.path(), &v2);
    assert_verified(ws.path(), None);
    // And it stays so.
    let again = build_ok(ws.path(), None);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(" 0 ran,"),
        "{}",
        text(&again)
    );
}

/// `verify --fix` right after the crash, then a build.
fn verify_fix_repairs(name: &str) {
    let (ws, v2) = crash_at(name);
    fix_after_crash(ws.path(), None);
    build_ok(ws.path(), None);
    assert_outputs_clean(ws.path(), &v2);
    assert_verified(ws.path(), None);
}

#[test]
fn crash_after_run() {
    next_build_repairs("after-run");
    verify_fix_repairs("after-run");
}

#[test]
fn crash_mid_blob() {
    next_build_repairs("mid-blob");
    verify_fix_repairs("mid-blob");
}

#[test]
fn crash_before_commit() {
    next_build_repairs("before-commit");
    verify_fix_repairs("before-commit");
}

#[test]
fn crash_mid_materialize() {
    next_build_repairs("mid-materialize");
    verify_fix_repairs("mid-materialize");
}

/// Half way through writing the temp file of an output restored into `flow-out/`.
#[test]
fn crash_mid_output() {
    next_build_repairs("mid-output");
    verify_fix_repairs("mid-output");
}

/// Regression: a crash after a directory output was replaced but before its `.NAME.flow-tree`
/// marker was rewritten left the old marker (and its trusted file state) beside the new tree;
/// reverting the edit then made the next build take the new tree for the old one and keep it.
#[test]
fn tree_marker_is_cleared_before_its_tree_is_replaced() {
    let tree = |v: &str| {
        vec![
            ("p/in.txt".to_owned(), format!("{v}\n")),
            (
                "p/BUILD".to_owned(),
                "task(name = \"t\", srcs = [\"in.txt\"], outs = [\"site/\"], \
                 cmd = \"mkdir -p site && cp in.txt site/in.txt\")\n"
                    .to_owned(),
            ),
        ]
    };
    let v1 = tree("one");
    let ws = workspace(&v1);
    build_ok(ws.path(), None);
    ws.write("p/in.txt", b"two\n");
    let out = flow(ws.path(), None, Some("mid-materialize"), &["build"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    ws.write("p/in.txt", b"one\n");
    build_ok(ws.path(), None);
    assert_outputs_clean(ws.path(), &v1);
    assert_verified(ws.path(), None);
}

/// A blob damaged on disk: `verify` names it and the results that need it; `--fix` removes them
/// all; the next build runs those actions again and repairs the store.
#[test]
fn verify_finds_and_fixes_a_corrupt_blob() {
    let v1 = pipeline("one");
    let ws = workspace(&v1);
    build_ok(ws.path(), None);
    let blob = |content: &[u8]| -> PathBuf {
        let hex = blake3::hash(content).to_hex().to_string();
        ws.path().join(".flow/cas").join(&hex[..2]).join(&hex[2..])
    };
    // `site/sub/w.txt` inside the tree (the same bytes as `words.txt`, also the input of
    // `//lib:gen`, which does not store it).
    let path = blob(b"one\nbeta\nalpha\n");
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, b"one\nbeta\nALPHA\n").unwrap();

    let out = flow(ws.path(), None, None, &["cache", "verify"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let problems: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("problem: "))
        .collect();
    assert_eq!(problems.len(), 2, "{}", text(&out));
    assert!(
        problems.iter().any(|l| l.contains("corrupt blob")),
        "{stdout}"
    );
    assert!(
        problems
            .iter()
            .any(|l| l.contains("file `sub/w.txt` of output `site`") && l.contains("corrupt")),
        "{stdout}"
    );

    let fixed = ok(&mut flow(
        ws.path(),
        None,
        None,
        &["cache", "verify", "--fix"],
    ));
    assert!(
        String::from_utf8_lossy(&fixed.stdout).contains("2 problem(s), all fixed"),
        "{}",
        text(&fixed)
    );
    assert_verified(ws.path(), None);
    std::fs::remove_dir_all(ws.path().join("flow-out")).unwrap();
    let rebuilt = build_ok(ws.path(), None);
    let stdout = String::from_utf8_lossy(&rebuilt.stdout);
    assert!(stdout.contains("[RAN] //lib:site"), "{stdout}");
    assert!(stdout.contains("[CACHED] //lib:gen"), "{stdout}");
    assert_outputs_clean(ws.path(), &v1);
    assert_verified(ws.path(), None);
}

// ---------------------------------------------------------------------------------------------
// kill -9 at random moments

/// 30 tasks of ~20 ms: ten chains of three (`a` → `b` → `c`), files and directory outputs;
/// `edit` changes the sources of some chains.
fn thirty_tasks(edit: u64) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for i in 0..10u64 {
        let pkg = format!("p{i}");
        let version = if i % 3 == edit % 3 { edit } else { 0 };
        files.push((format!("{pkg}/in.txt"), format!("{pkg} v{version}\n")));
        files.push((
            format!("{pkg}/BUILD"),
            "task(name = \"a\", srcs = [\"in.txt\"], outs = [\"a.txt\"], \
             cmd = \"sleep 0.02; cat in.txt > a.txt\")\n\
             task(name = \"b\", deps = [\":a\"], outs = [\"b/\"], \
             cmd = \"sleep 0.02; mkdir -p b/d; cat $(location :a) > b/d/f.txt; echo b > b/g.txt\")\n\
             task(name = \"c\", deps = [\":b\"], outs = [\"c.txt\"], \
             cmd = \"sleep 0.02; cat $(location :b)/d/f.txt $(location :b)/g.txt > c.txt\")\n"
                .to_owned(),
        ));
    }
    files
}

/// Each round edits some sources, starts a build, waits until it holds the workspace lock
/// (analysis is done: from there on it writes), lets it run for a seeded delay of 0–300 ms and
/// kills it with SIGKILL. Odd rounds then check that `verify` finds only orphans; every round
/// then builds, compares with a clean build and verifies.
#[test]
fn kill_dash_nine_at_random_moments() {
    let mut rng = Rng(0x6b69_6c6c_2d39);
    let ws = workspace(&thirty_tasks(0));
    let lock = ws.path().join("flow-out/.flow-lock");
    let mut killed_while_building = 0;
    for round in 1..=8u64 {
        let files = thirty_tasks(round);
        for (rel, contents) in &files {
            ws.write(rel, contents.as_bytes());
        }
        // Spread over 0–300 ms: one slice of ~37 ms per round, a seeded point in it.
        let delay = Duration::from_millis((round - 1) * 37 + rng.below(38) as u64);
        let mut child = flow(ws.path(), None, None, &["build"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let holding = format!("pid {}\n", child.id());
        let start = Instant::now();
        while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&holding))
            && child.try_wait().unwrap().is_none()
            && start.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_while_building += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // SIGKILL gives flow no chance to stop its actions: let them (~20 ms each) finish.
        std::thread::sleep(Duration::from_millis(50));
        if round % 2 == 1 {
            fix_after_crash(ws.path(), None);
        }
        let out = build_ok(ws.path(), None);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("flow: ok: "),
            "round {round} ({delay:?}):\n{}",
            text(&out)
        );
        assert_outputs_clean(ws.path(), &files);
        assert_verified(ws.path(), None);
    }
    assert!(
        killed_while_building >= 3,
        "only {killed_while_building} of 8 builds were killed while building"
    );
}

// ---------------------------------------------------------------------------------------------
// Concurrent invocations

/// A dozen tasks in three packages; `round` changes the sources of one package.
fn shared(round: u64) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for (i, pkg) in ["a", "b", "c"].iter().enumerate() {
        let version = if i as u64 == round % 3 { round } else { 0 };
        files.push((format!("{pkg}/src.txt"), format!("{pkg} {version}\n")));
        files.push((
            format!("{pkg}/BUILD"),
            "task(name = \"one\", srcs = [\"src.txt\"], outs = [\"one.txt\"], \
             cmd = \"sleep 0.01; cat src.txt > one.txt\")\n\
             task(name = \"tree\", srcs = [\"src.txt\"], outs = [\"tree/\"], \
             cmd = \"mkdir -p tree/x; cp src.txt tree/x/s.txt; echo t > tree/t.txt\")\n\
             task(name = \"two\", deps = [\":one\", \":tree\"], outs = [\"two.txt\"], \
             cmd = \"cat $(location :one) $(location :tree)/x/s.txt > two.txt\")\n\
             task(name = \"test\", deps = [\":two\"], cmd = \"grep -q . $(location :two)\")\n"
                .to_owned(),
        ));
    }
    files
}

#[test]
fn six_processes_share_one_cache_dir() {
    let cache = tempfile::tempdir().unwrap();
    // Identical checkouts building everything, and overlapping subsets.
    let targets: [&[&str]; 6] = [
        &["//..."],
        &["//..."],
        &["//a/...", "//b/..."],
        &["//b/...", "//c/..."],
        &["//c:two", "//a:test"],
        &["//..."],
    ];
    let checkouts: Vec<Ws> = targets.iter().map(|_| workspace(&shared(0))).collect();
    for round in 0..3u64 {
        let files = shared(round);
        for ws in &checkouts {
            for (rel, contents) in &files {
                ws.write(rel, contents.as_bytes());
            }
            let _ = std::fs::remove_dir_all(ws.path().join("flow-out"));
        }
        let children: Vec<Child> = checkouts
            .iter()
            .zip(targets)
            .map(|(ws, t)| {
                let mut args = vec!["build"];
                args.extend_from_slice(t);
                flow(ws.path(), Some(cache.path()), None, &args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let results: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        for ((out, ws), t) in results.iter().zip(&checkouts).zip(targets) {
            assert!(out.status.success(), "round {round}, {t:?}:\n{}", text(out));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !stderr.lines().any(|l| l.contains("locked")),
                "round {round}, {t:?}:\n{}",
                text(out)
            );
            // The same targets built alone, serially, with a cache of their own.
            let serial = workspace(&files);
            let mut args = vec!["build", "-j", "1"];
            args.extend_from_slice(t);
            ok(&mut flow(serial.path(), None, None, &args));
            assert_eq!(
                outputs(ws.path()),
                outputs(serial.path()),
                "round {round}, {t:?}"
            );
        }
        let tmp: Vec<_> = std::fs::read_dir(cache.path().join("tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(tmp.is_empty(), "round {round}: left in tmp/: {tmp:?}");
        assert_verified(checkouts[0].path(), Some(cache.path()));
    }
}

// ---------------------------------------------------------------------------------------------
// Two builds in one workspace

/// Waits up to `limit` for `path` to hold `needle`.
fn wait_for_text(path: &Path, needle: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_second_build_in_the_same_workspace_waits_for_the_first() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"slow\", outs = [\"o.txt\"], cmd = \"sleep 2; echo done > o.txt\")\n",
    );
    let first = flow(ws.path(), None, None, &["build"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id();
    let lock = ws.path().join("flow-out/.flow-lock");
    assert!(
        wait_for_text(&lock, &format!("pid {pid}\n"), Duration::from_secs(20)),
        "the first build never took the workspace lock"
    );
    let second = flow(ws.path(), None, None, &["build"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", text(&first));
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("[RAN] //p:slow"),
        "{}",
        text(&first)
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    let waiting: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("flow: waiting for another flow command in this workspace"))
        .collect();
    assert_eq!(waiting.len(), 1, "{}", text(&second));
    let prefix = format!(
        "flow: waiting for another flow command in this workspace (flow build, pid {pid}, started "
    );
    assert!(waiting[0].starts_with(&prefix), "{}", waiting[0]);
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("[CACHED] //p:slow"),
        "{}",
        text(&second)
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/p/o.txt")).unwrap(),
        "done\n"
    );
    assert!(!lock.exists(), "the lock file outlived the builds");
}
