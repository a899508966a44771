//! One build session (issue 14): the workspace lock held by `flow build`, `flow watch` and
//! `flow clean`, and the one reuse decision, seen through an action kind that is never reused
//! (`task(cache = False)`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{flow_bin, wait_for_file, Ws};

fn flow(ws: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(flow_bin());
    c.args(["--color", "never", "-C"])
        .arg(ws)
        .args(args)
        .env_remove("FLOW_CACHE_DIR")
        .env_remove("CI")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A producer of a directory output that announces itself and then takes its time, and a
/// consumer that lists the directory's files.
fn dir_ws(marker: &Path) -> Ws {
    Ws::new().file(
        "p/BUILD",
        &format!(
            "task(name = \"gen\", outs = [\"d/\"],\n\
             \x20    cmd = \"mkdir -p d && echo one > d/a.txt && touch {} && sleep 2 && echo two > d/b.txt\")\n\
             task(name = \"use\", deps = [\":gen\"], outs = [\"list.txt\"],\n\
             \x20    cmd = \"sleep 1; find $(location :gen) -type f | sort | xargs cat > list.txt\")\n",
            marker.display()
        ),
    )
}

#[test]
fn flow_clean_during_a_build_waits_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("started");
    let ws = dir_ws(&marker);
    let build = flow(ws.path(), &["build"]).spawn().unwrap();
    wait_for_file(&marker);
    let clean = flow(ws.path(), &["clean"]).output().unwrap();
    let build = build.wait_with_output().unwrap();
    assert!(build.status.success(), "{}", text(&build));
    assert!(clean.status.success(), "{}", text(&clean));
    let stderr = String::from_utf8_lossy(&clean.stderr);
    assert!(
        stderr
            .contains("flow: waiting for another flow command in this workspace (flow build, pid "),
        "{}",
        text(&clean)
    );
    // The clean came after the build: nothing is left, and the build itself saw the whole
    // directory (its result, cached, is restored whole by the next build).
    assert!(!ws.path().join("flow-out").exists(), "{}", text(&clean));
    let again = flow(ws.path(), &["build"]).output().unwrap();
    assert!(again.status.success(), "{}", text(&again));
    let list = std::fs::read_to_string(ws.path().join("flow-out/p/list.txt")).unwrap();
    assert_eq!(list, "one\ntwo\n", "{}", text(&again));
}

/// `flow watch`, reading its output lines on a thread.
struct Watch {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watch {
    fn start(ws: &Path) -> Watch {
        let mut child = flow(ws, &["watch", "--debounce", "30"]).spawn().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Watch {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    #[track_caller]
    fn wait_for(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(what);
                    self.seen.push(line);
                    if done {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no `{what}` from flow watch; so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn flow_build_while_a_watch_cycle_runs_waits_and_then_builds_correctly() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("started");
    let ws = dir_ws(&marker).file("p/in.txt", "x\n");
    let mut watch = Watch::start(ws.path());
    watch.wait_for("flow: ok");
    // The next cycle: an edit of the producer's command input re-runs it.
    std::fs::remove_file(&marker).unwrap();
    std::fs::write(
        ws.path().join("p/BUILD"),
        std::fs::read_to_string(ws.path().join("p/BUILD"))
            .unwrap()
            .replace("echo two", "echo three"),
    )
    .unwrap();
    wait_for_file(&marker);
    let build = flow(ws.path(), &["build"]).output().unwrap();
    assert!(build.status.success(), "{}", text(&build));
    assert!(
        String::from_utf8_lossy(&build.stderr)
            .contains("flow: waiting for another flow command in this workspace (flow watch, pid "),
        "{}",
        text(&build)
    );
    let list = std::fs::read_to_string(ws.path().join("flow-out/p/list.txt")).unwrap();
    assert_eq!(list, "one\nthree\n", "{}", text(&build));
    // A clean build of the same files agrees.
    drop(watch);
    let clean = Ws::new();
    clean.write(
        "p/BUILD",
        &std::fs::read(ws.path().join("p/BUILD")).unwrap(),
    );
    let fresh = flow(clean.path(), &["build"]).output().unwrap();
    assert!(fresh.status.success(), "{}", text(&fresh));
    assert_eq!(
        std::fs::read_to_string(clean.path().join("flow-out/p/list.txt")).unwrap(),
        list
    );
}

const UNCACHED: &str = "\
task(name = \"stamp\", outs = [\"n.txt\"], cache = False,\n\
\x20    cmd = \"echo same > n.txt\")\n\
task(name = \"after\", deps = [\":stamp\"], outs = [\"a.txt\"],\n\
\x20    cmd = \"cat $(location :stamp) > a.txt\")\n\
task(name = \"plain\", outs = [\"p.txt\"], cmd = \"echo p > p.txt\")\n";

#[test]
fn an_uncached_task_runs_in_every_build_even_one_the_record_would_answer_as_a_no_op() {
    let ws = Ws::new().file("p/BUILD", UNCACHED);
    let first = ws.run(&["build"]);
    let out = first.ok();
    assert!(out.contains("[RAN] //p:stamp"), "{out}");
    for _ in 0..2 {
        // Nothing changed: the record would make this a no-op, but `stamp` is never reused;
        // its output came out the same, so its dependent is cached (early cutoff).
        let again = ws.run(&["build"]);
        let out = again.ok();
        assert!(out.contains("[RAN] //p:stamp"), "{out}");
        assert!(out.contains("[CACHED] //p:after"), "{out}");
        assert!(out.contains("[CACHED] //p:plain"), "{out}");
    }
    // Deleting its output does not restore it from the cache either: it runs.
    std::fs::remove_dir_all(ws.path().join("flow-out")).unwrap();
    let out = ws.run(&["build", "//p:stamp"]);
    assert!(out.ok().contains("[RAN] //p:stamp"), "{}", out.ok());
    // `flow explain` says why.
    let explain = ws.run(&["explain", "//p:stamp"]);
    assert!(
        explain
            .ok()
            .contains("would run: `cache = False`: it runs in every build"),
        "{}",
        explain.ok()
    );
}

#[test]
fn explain_over_patterns_lists_the_decision_for_every_action() {
    let ws = Ws::new().file("p/BUILD", UNCACHED);
    let before = ws.run(&["explain", "//..."]);
    let out = before.ok();
    assert!(out.contains("[RUN] //p:plain (key "), "{out}");
    assert!(out.contains("[RUN] //p:stamp (`cache = False`"), "{out}");
    assert!(out.contains("[WAITS] //p:after (on `//p:stamp`"), "{out}");
    ws.run(&["build"]).ok();
    let after = ws.run(&["explain", "//..."]);
    let out = after.ok();
    // Carried when the build record vouches for the files (they are older than the racy
    // window), else cached.
    assert!(
        out.contains("[CARRIED] //p:plain") || out.contains("[CACHED] //p:plain (key "),
        "{out}"
    );
    assert!(out.contains("[RUN] //p:stamp (`cache = False`"), "{out}");
    assert!(out.contains("[WAITS] //p:after"), "{out}");
    // One target named: why it waits, even when what it waits on is never reused.
    let one = ws.run(&["explain", "//p:after"]);
    assert!(
        one.ok()
            .contains("`//p:stamp` would run: `cache = False`: it runs in every build"),
        "{}",
        one.ok()
    );
}

/// Every file under `dir` (relative path → bytes), the lock file left out. (Markers stay: their
/// bytes are the tree's digest, the same on every machine.)
fn outputs(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    crate::support::files_under(dir)
        .into_iter()
        .filter(|p| !p.ends_with(".flow-lock"))
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// No interleaving of `flow build`, a `flow watch` cycle and `flow clean` caches a result
/// computed from a directory input that changed under it: after rounds of edits with the three
/// running at once, a build of the workspace gives what a clean build of the same files gives,
/// and `flow cache verify` finds nothing wrong.
#[test]
fn builds_watch_cycles_and_cleans_at_once_cache_nothing_wrong() {
    let ws = Ws::new().file("p/in.txt", "0\n").file(
        "p/BUILD",
        "task(name = \"gen\", srcs = [\"in.txt\"], outs = [\"d/\"],\n\
         \x20    cmd = \"mkdir -p d && cp in.txt d/a.txt && sleep 0.3 && cp in.txt d/b.txt\")\n\
         task(name = \"use\", deps = [\":gen\"], outs = [\"sum.txt\"],\n\
         \x20    cmd = \"sleep 0.2; find $(location :gen) -type f | sort | xargs cat > sum.txt\")\n",
    );
    let mut watch = Watch::start(ws.path());
    watch.wait_for("flow: ok");
    for round in 1..=4 {
        ws.write("p/in.txt", format!("{round}\n").as_bytes());
        std::thread::sleep(Duration::from_millis(50 * round));
        let build = flow(ws.path(), &["build"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let clean = flow(ws.path(), &["clean"]).spawn().unwrap();
        ws.write("p/in.txt", format!("{round}{round}\n").as_bytes());
        let (build, clean) = (
            build.wait_with_output().unwrap(),
            clean.wait_with_output().unwrap(),
        );
        assert!(clean.status.success(), "{}", text(&clean));
        // A build may fail only because `flow clean` is not a failure: it must not.
        assert!(build.status.success(), "{}", text(&build));
    }
    drop(watch);
    let last = flow(ws.path(), &["build"]).output().unwrap();
    assert!(last.status.success(), "{}", text(&last));
    let fresh = Ws::new();
    for f in ["p/BUILD", "p/in.txt"] {
        fresh.write(f, &std::fs::read(ws.path().join(f)).unwrap());
    }
    let want = flow(fresh.path(), &["build"]).output().unwrap();
    assert!(want.status.success(), "{}", text(&want));
    assert_eq!(
        outputs(&ws.path().join("flow-out")),
        outputs(&fresh.path().join("flow-out")),
        "{}",
        text(&last)
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/p/sum.txt")).unwrap(),
        "44\n44\n"
    );
    let verify = flow(ws.path(), &["cache", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
}

/// Regression (issue 14, adversarial run; issue 15, item 9): SIGTERM or SIGHUP to `flow build`
/// left its running action alive, the workspace lock and the sandbox behind. Each now stops a
/// build as Ctrl-C does: the action's process group is killed, its sandbox removed, flow exits
/// 130, and the next build succeeds.
#[test]
fn sigterm_and_sighup_stop_a_build_as_ctrl_c_does() {
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let pid_file = tmp.path().join("pid");
        let sandboxes = tmp.path().join("sandboxes");
        let slow = tmp.path().join("slow");
        let ws = Ws::bare()
            .file(
                "flow.toml",
                &format!("[build]\nsandbox_dir = \"{}\"\n", sandboxes.display()),
            )
            .file(
                "p/BUILD",
                &format!(
                    "task(name = \"long\", outs = [\"a\"],\n\
                     \x20    cmd = \"echo $$$$ > {}; if [ -e {} ]; then sleep 40; fi; touch a\")\n",
                    pid_file.display(),
                    slow.display()
                ),
            );
        std::fs::write(&slow, "").unwrap();
        let build = flow(ws.path(), &["build"]).spawn().unwrap();
        wait_for_file(&pid_file);
        std::thread::sleep(Duration::from_millis(100));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(build.id() as i32), signal).unwrap();
        let out = build.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{signal}: {}", text(&out));
        let deadline = Instant::now() + Duration::from_secs(10);
        while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
            assert!(
                Instant::now() < deadline,
                "{signal}: the action outlived flow"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !ws.path().join("flow-out/.flow-lock").exists(),
            "{signal}: the lock file was left"
        );
        let left: Vec<_> = std::fs::read_dir(&sandboxes)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{signal}: sandboxes were left: {left:?}");
        std::fs::remove_file(&slow).unwrap();
        let again = flow(ws.path(), &["build"]).output().unwrap();
        assert_eq!(again.status.code(), Some(0), "{signal}: {}", text(&again));
    }
}

/// Regression (issue 14, adversarial run): a symlink planted at `flow-out/.flow-lock` was
/// followed, and its target overwritten with the lock holder's pid.
#[test]
fn a_link_planted_at_the_lock_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"x\", outs = [\"x.txt\"], cmd = \"echo x > x.txt\")\n",
    );
    std::fs::create_dir_all(ws.path().join("flow-out")).unwrap();
    std::os::unix::fs::symlink(&victim, ws.path().join("flow-out/.flow-lock")).unwrap();
    for args in [&["build"][..], &["clean"][..]] {
        let out = flow(ws.path(), args).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "precious\n",
            "{args:?}"
        );
    }
}

/// Regression (issue 14, adversarial run): `chmod +x` on an output under `flow-out/` was never
/// repaired, and a dependent's sandbox copy took the changed mode, so a result computed from it
/// was stored under a key that says the file is not executable.
#[test]
fn a_chmod_on_an_output_is_repaired_and_never_reaches_a_dependent() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"gen\", outs = [\"g.txt\"], cmd = \"echo data > $(OUTS)\")\n\
         task(name = \"probe\", deps = [\":gen\"], outs = [\"probe.txt\"],\n\
         \x20    cmd = \"if test -x $(location :gen); then echo exec; else echo noexec; fi > $(OUTS)\")\n",
    );
    ws.run(&["build", "//p:gen"]).ok();
    let g = ws.path().join("flow-out/p/g.txt");
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    std::fs::set_permissions(&g, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = ws.run(&["build", "//..."]);
    out.ok();
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/p/probe.txt")).unwrap(),
        "noexec\n",
        "{}",
        out.ok()
    );
    assert_eq!(mode(&g), 0o644, "{}", out.ok());
}

/// `flow clean` removes a `flow-out` that is a file (the name is flow's), and a build then works.
#[test]
fn flow_clean_removes_a_flow_out_that_is_a_file() {
    let ws = Ws::new()
        .file(
            "p/BUILD",
            "task(name = \"x\", outs = [\"x.txt\"], cmd = \"echo x > x.txt\")\n",
        )
        .file("flow-out", "a file\n");
    let clean = flow(ws.path(), &["clean"]).output().unwrap();
    assert!(clean.status.success(), "{}", text(&clean));
    assert!(!ws.path().join("flow-out").exists());
    ws.run(&["build"]).ok();
}

/// Regression (issue 14, found by the incremental proptest once `flow explain` ran before each
/// build): a command that writes nothing (`flow explain`, `flow query`) evaluated the edited
/// BUILD file and saved the snapshot, so the build that followed found the evaluation done and
/// did not sweep the output the edit had renamed away.
#[test]
fn an_output_renamed_away_is_swept_even_when_explain_or_query_evaluated_first() {
    for first in ["explain", "query"] {
        let ws = Ws::new().file(
            "p/BUILD",
            "task(name = \"x\", outs = [\"old.txt\"], cmd = \"echo x > $(OUTS)\")\n",
        );
        ws.run(&["build"]).ok();
        ws.write(
            "p/BUILD",
            b"task(name = \"x\", outs = [\"new.txt\"], cmd = \"echo x > $(OUTS)\")\n",
        );
        ws.run(&[first, "//..."]).ok();
        ws.run(&["build"]).ok();
        assert!(ws.path().join("flow-out/p/new.txt").exists(), "{first}");
        assert!(
            !ws.path().join("flow-out/p/old.txt").exists(),
            "{first}: the renamed output stayed"
        );
    }
}

/// The clock tests can set (`FLOW_NOW_MS`) is the one the build record reads: a no-op more
/// than an hour after the carried results were last marked used goes through the runner once
/// to mark them (for `flow cache gc`'s LRU order), then is a no-op again.
#[test]
fn the_settable_clock_drives_the_records_use_time_marking() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"x\", outs = [\"x.txt\"], cmd = \"echo x > $(OUTS)\")\n",
    );
    ws.run(&["build"]).ok();
    // Age the workspace past the racy window, so that the record vouches for it.
    std::thread::sleep(Duration::from_millis(2100));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let build = |at_ms: i64| {
        let out = flow(ws.path(), &["build"])
            .env("FLOW_PROFILE", "1")
            .env("FLOW_NOW_MS", at_ms.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Written by a build from analysis (marks at its own clock), so: a no-op.
    let build_from_analysis = build(now_ms);
    let noop = build(now_ms);
    assert!(
        !noop.contains("plan from the build record"),
        "{build_from_analysis}\n{noop}"
    );
    let later = now_ms + 2 * 60 * 60 * 1000;
    let marking = build(later);
    assert!(marking.contains("plan from the build record"), "{marking}");
    let noop_again = build(later);
    assert!(
        !noop_again.contains("plan from the build record"),
        "{noop_again}"
    );
}

/// Regression (review): `flow explain` of a group printed nothing when the build record
/// answered the build of that group as a no-op (the no-op lists actions only).
#[test]
fn explain_of_a_group_says_so_when_the_record_answers() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"x\", outs = [\"x.txt\"], cmd = \"echo x > $(OUTS)\")\n\
         group(name = \"everything\", deps = [\":x\"])\n",
    );
    ws.run(&["build", "//p:everything"]).ok();
    std::thread::sleep(Duration::from_millis(2100));
    // Twice: the first may still go through analysis (files younger than the racy window).
    for _ in 0..2 {
        ws.run(&["build", "//p:everything"]).ok();
        let out = ws.run(&["explain", "//p:everything"]);
        assert!(
            out.ok()
                .contains("//p:everything is a group: it runs nothing itself"),
            "{}",
            out.ok()
        );
    }
}

/// Regression (issue 14, second adversarial run): a FIFO planted at `flow-out/.flow-lock` made
/// two builds block forever reading it (and SIGTERM could not stop them).
#[test]
fn a_fifo_planted_at_the_lock_blocks_nothing() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"slow\", cmd = \"sleep 2\")\ntask(name = \"a\", outs = [\"a.out\"], cmd = \"echo a > a.out\")\n",
    );
    std::fs::create_dir_all(ws.path().join("flow-out")).unwrap();
    nix::unistd::mkfifo(
        &ws.path().join("flow-out/.flow-lock"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let first = flow(ws.path(), &["build", "//p:slow"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut second = flow(ws.path(), &["build", "//p:a"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("the second build hung on the FIFO");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", text(&first));
}

/// Regression (issue 15, item 15): an output under `flow-out/` set to mode 000 (`chmod 000`)
/// was not restored: the build took it as in place (the reuse decision compared only its x bit,
/// the build record only its size, mtime and inode, which a `chmod` keeps). Restored now,
/// whether the build comes from analysis or from the build record, like a file inside a
/// directory output.
#[test]
fn an_output_set_to_mode_000_is_restored() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"gen\", outs = [\"g.txt\"], cmd = \"echo data > $(OUTS)\")\n\
         task(name = \"tree\", outs = [\"t/\"], cmd = \"mkdir -p t && echo leaf > t/leaf.txt\")\n",
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let files = ["flow-out/p/g.txt", "flow-out/p/t/leaf.txt"];
    ws.run(&["build"]).ok();
    for from_record in [false, true] {
        if from_record {
            // Past the racy-edit window, so that the record answers the next build alone.
            std::thread::sleep(std::time::Duration::from_millis(2500));
            ws.run(&["build"]).ok();
        } else {
            std::fs::remove_dir_all(ws.path().join(".flow/analysis")).unwrap();
        }
        for f in files {
            let p = ws.path().join(f);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
        let out = ws.run(&["build"]);
        out.ok();
        for (f, text) in files.iter().zip(["data\n", "leaf\n"]) {
            let p = ws.path().join(f);
            assert_eq!(mode(&p), 0o644, "{f}, from the record: {from_record}");
            assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        }
    }
}

/// Regression (issue 15, adversarial run): `flow-out` as a link to a directory of other files
/// (outputs on a bigger disk, pointed at the wrong place) had every file there deleted by the
/// first build's sweep of what flow did not write. Such a link is refused; a link to an empty
/// directory is used, and stays usable.
#[test]
fn flow_out_linked_to_a_directory_of_other_files_deletes_nothing() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"a\", outs = [\"a.txt\"], cmd = \"echo a > a.txt\")\n",
    );
    let data = ws.path().join("elsewhere");
    std::fs::create_dir_all(data.join("mydata")).unwrap();
    std::fs::write(data.join("mydata/important.txt"), "precious\n").unwrap();
    std::fs::write(data.join("notes.txt"), "precious\n").unwrap();
    std::os::unix::fs::symlink(&data, ws.path().join("flow-out")).unwrap();
    let refused = ws.run(&["build", "//..."]);
    crate::support::golden("flow_out_linked_to_other_files", refused.bad_input());
    assert_eq!(
        std::fs::read_to_string(data.join("mydata/important.txt")).unwrap(),
        "precious\n"
    );
    assert!(data.join("notes.txt").exists());
    assert!(!data.join("p").exists(), "nothing may be written there");

    let empty = ws.path().join("bigdisk");
    std::fs::create_dir(&empty).unwrap();
    // A lock file a killed command left there is flow's own, not someone else's data.
    std::fs::write(empty.join(".flow-lock"), "").unwrap();
    std::fs::remove_file(ws.path().join("flow-out")).unwrap();
    std::os::unix::fs::symlink(&empty, ws.path().join("flow-out")).unwrap();
    for _ in 0..2 {
        ws.run(&["build", "//..."]).ok();
        assert_eq!(
            std::fs::read_to_string(empty.join("p/a.txt")).unwrap(),
            "a\n"
        );
    }
}

/// Regression (issue 15, adversarial run): `--events` naming a FIFO that no one reads blocked
/// `flow build` forever in `open`, before any signal handler was in place. It is an error at
/// once; with a reader, the events flow through it.
#[test]
fn events_to_a_fifo_without_a_reader_is_an_error_not_a_hang() {
    let ws = Ws::new().file(
        "p/BUILD",
        "task(name = \"a\", outs = [\"a.txt\"], cmd = \"echo a > a.txt\")\n",
    );
    let fifo = ws.path().join("events.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut child = flow(ws.path(), &["build", "--events", "events.fifo"])
        .current_dir(ws.path())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("flow build blocked on a FIFO without a reader");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr =
        String::from_utf8_lossy(&out.stderr).replace(&ws.path().display().to_string(), "$WS");
    crate::support::golden("events_fifo_without_reader", &stderr);

    // With a reader, the events arrive.
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || std::fs::read_to_string(fifo).unwrap()
    });
    std::thread::sleep(Duration::from_millis(200));
    let out = flow(ws.path(), &["build", "--events"])
        .arg(&fifo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(reader.join().unwrap().contains("//p:a"));
}

/// Regression (issue 15, adversarial run): a `flow.toml` that is a FIFO or a link to a device
/// was passed over ("no `flow.toml` found"), and in a workspace nested in another one, the
/// outer workspace was built instead. It marks the root, and is an error there.
#[test]
fn a_flow_toml_that_is_not_a_file_is_an_error_where_it_is() {
    let outer = Ws::new().file(
        "p/BUILD",
        "task(name = \"a\", outs = [\"a.txt\"], cmd = \"echo a > a.txt\")\n",
    );
    let inner = outer.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    nix::unistd::mkfifo(
        &inner.join("flow.toml"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let run = outer.run_in(&inner, &["build", "//..."]);
    crate::support::golden("flow_toml_fifo", run.bad_input());
    assert!(
        !outer.path().join("flow-out").exists(),
        "the outer workspace was built"
    );
}

/// Regression (issue 15, second adversarial run): a directory output set to mode 000 (or 700)
/// under `flow-out/` was never restored, from analysis or the record, and a dependent that ran
/// next stored the mode it saw (`ls -ld`) under the key a clean checkout computes. The tree's
/// stamp now holds its own mode.
#[test]
fn a_directory_output_whose_mode_changed_is_restored() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Ws::new().file("p/s.txt", "s\n").file("p/b.txt", "b\n").file(
        "p/BUILD",
        "task(name = \"a\", srcs = [\"s.txt\"], outs = [\"d/\"], cmd = \"mkdir -p d; cat s.txt > d/t\")\n\
         task(name = \"b\", srcs = [\"b.txt\"], deps = [\":a\"], outs = [\"b.out\"],\n\
         \x20    cmd = \"cat b.txt > $(OUTS); ls -ld $(location :a) | cut -c1-10 >> $(OUTS)\")\n",
    );
    ws.run(&["build", "//..."]).ok();
    let d = ws.path().join("flow-out/p/d");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let want = mode(&d);
    for (changed, again) in [(0o000, "b2\n"), (0o700, "b3\n")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(changed)).unwrap();
        ws.write("p/b.txt", again.as_bytes());
        ws.run(&["build", "//..."]).ok();
        assert_eq!(mode(&d), want, "mode {changed:o} was kept");
        let out = std::fs::read_to_string(ws.path().join("flow-out/p/b.out")).unwrap();
        assert_eq!(out, format!("{again}drwxr-xr-x\n"), "mode {changed:o}");
    }
}
