//! `flow watch` as a child process: write files, read its output, assert behaviour (never
//! speed: every wait has a generous timeout).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use crate::support::{flow_bin, tagged, Ws};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A running `flow watch` and everything it printed (stdout and stderr, interleaved by line).
struct Watch {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watch {
    fn start(ws: &Ws) -> Watch {
        Watch::start_with(ws, &[])
    }

    /// `flow watch PATTERNS`, after its first cycle.
    fn start_with(ws: &Ws, patterns: &[&str]) -> Watch {
        let mut child = Command::new(flow_bin())
            .args(["--color", "never", "-C"])
            .arg(ws.path())
            .args(["watch", "--debounce", "30"])
            .args(patterns)
            .env_remove("FLOW_CACHE_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flow watch");
        let (tx, rx) = channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(line);
            }
        });
        let mut w = Watch {
            child,
            lines: rx,
            seen: Vec::new(),
        };
        w.cycle_end();
        w
    }

    /// Lines up to and including the first one matching `until`.
    #[track_caller]
    fn wait_for(&mut self, until: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    let done = until(&line);
                    got.push(line);
                    if done {
                        return got;
                    }
                }
                Err(_) => panic!(
                    "flow watch did not print the expected line within {TIMEOUT:?}; so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The lines of one cycle, up to its summary.
    #[track_caller]
    fn cycle_end(&mut self) -> Vec<String> {
        self.wait_for(|l| l.starts_with("flow: "))
    }

    /// Asserts that nothing is printed for `quiet`.
    #[track_caller]
    fn assert_quiet(&mut self, quiet: Duration) {
        if let Ok(line) = self.lines.recv_timeout(quiet) {
            panic!(
                "expected no output, got `{line}`; before:\n{}",
                self.seen.join("\n")
            );
        }
    }

    fn stop(mut self) -> i32 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("flow watch did not exit after Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two independent packages: `a` (gen → use) and `b` (other).
fn fixture() -> Ws {
    Ws::new()
        .file("a/a.txt", "one\n")
        .file("a/notes.md", "not an input\n")
        .file(
            "a/BUILD",
            "task(name = \"gen\", srcs = glob([\"*.txt\"]), outs = [\"gen.txt\"], cmd = \"cat $(SRCS) > gen.txt\")\n\
             task(name = \"use\", deps = [\":gen\"], outs = [\"use.txt\"], cmd = \"tr a-z A-Z < $(location :gen) > use.txt\")\n",
        )
        .file("b/b.txt", "two\n")
        .file("b/BUILD", "task(name = \"other\", srcs = [\"b.txt\"], outs = [\"o.txt\"], cmd = \"cat b.txt > o.txt\")\n")
}

#[test]
fn an_edit_reruns_exactly_the_affected_targets() {
    let ws = fixture();
    let mut w = Watch::start(&ws);
    ws.write("a/a.txt", b"one edited\n");
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//a:gen", "//a:use"], "{cycle:?}");
    assert!(
        cycle.iter().any(|l| l.contains("changed a/a.txt")),
        "{cycle:?}"
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/a/use.txt")).unwrap(),
        "ONE EDITED\n"
    );
    ws.write("b/b.txt", b"three\n");
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//b:other"], "{cycle:?}");
    assert_eq!(w.stop(), 130);
}

#[test]
fn a_same_bytes_save_or_an_unrelated_file_runs_nothing() {
    let ws = fixture();
    let mut w = Watch::start(&ws);
    ws.write("a/a.txt", b"one\n"); // the same bytes, a new mtime
    ws.write("a/notes.md", b"edited, but no target reads it\n");
    w.assert_quiet(Duration::from_millis(1500));
    // The next real edit is the only change reported.
    ws.write("b/b.txt", b"changed\n");
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//b:other"], "{cycle:?}");
    w.stop();
}

#[test]
fn a_new_file_matched_by_a_glob_reruns_its_target() {
    let ws = fixture();
    let mut w = Watch::start(&ws);
    ws.write("a/z.txt", b"zed\n");
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//a:gen", "//a:use"], "{cycle:?}");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/a/gen.txt")).unwrap(),
        "one\nzed\n"
    );
    w.stop();
}

#[test]
fn an_edited_build_file_adds_and_removes_targets() {
    let ws = fixture();
    let mut w = Watch::start(&ws);
    ws.write(
        "b/BUILD",
        b"task(name = \"other\", srcs = [\"b.txt\"], outs = [\"o.txt\"], cmd = \"cat b.txt > o.txt\")\n\
          task(name = \"extra\", srcs = [\"b.txt\"], outs = [\"e.txt\"], cmd = \"wc -c < b.txt > e.txt\")\n",
    );
    let cycle = w.cycle_end();
    assert!(
        cycle
            .iter()
            .any(|l| l == "flow watch: new targets: `//b:extra`"),
        "{cycle:?}"
    );
    assert_eq!(tagged(&cycle, "RAN"), ["//b:extra"], "{cycle:?}");
    ws.write("b/BUILD", b"task(name = \"other\", srcs = [\"b.txt\"], outs = [\"o.txt\"], cmd = \"cat b.txt > o.txt\")\n");
    let lines = w.wait_for(|l| l.starts_with("flow watch: removed targets"));
    assert!(lines.last().unwrap().contains("`//b:extra`"), "{lines:?}");
    w.stop();
}

#[test]
fn a_long_action_is_cancelled_and_rerun_when_its_input_changes() {
    let ws = Ws::new().file("s/in.txt", "first\n").file(
        "s/BUILD",
        "task(name = \"slow\", srcs = [\"in.txt\"], outs = [\"out.txt\"], cmd = \"sleep 3; cat in.txt > out.txt\")\n\
         task(name = \"quick\", cmd = \"true\")\n",
    );
    let mut w = Watch::start(&ws);
    // The initial build has finished; edit, and edit again while the slow action runs.
    ws.write("s/in.txt", b"second\n");
    // The slow action takes 3 s: 1.2 s later it is running.
    std::thread::sleep(Duration::from_millis(1200));
    ws.write("s/in.txt", b"third\n");
    let superseded = w.wait_for(|l| l.starts_with("flow: "));
    assert!(
        superseded.last().unwrap().starts_with("flow: superseded"),
        "{superseded:?}"
    );
    assert!(
        tagged(&superseded, "RAN").is_empty(),
        "the cancelled run is not reported as run: {superseded:?}"
    );
    let rerun = w.cycle_end();
    assert_eq!(tagged(&rerun, "RAN"), ["//s:slow"], "{rerun:?}");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/s/out.txt")).unwrap(),
        "third\n"
    );
    w.stop();
}

#[test]
fn a_build_syntax_error_is_reported_and_the_fix_recovers() {
    let ws = fixture();
    let mut w = Watch::start(&ws);
    ws.write("b/BUILD", b"task(name = \"other\",\n");
    let lines = w.wait_for(|l| l.starts_with("flow watch: waiting for changes"));
    assert!(lines.iter().any(|l| l.contains("b/BUILD:2:1")), "{lines:?}");
    ws.write("b/BUILD", b"task(name = \"other\", srcs = [\"b.txt\"], outs = [\"o.txt\"], cmd = \"cat b.txt b.txt > o.txt\")\n");
    let lines = w.wait_for(|l| l == "flow watch: the error is fixed");
    assert!(!lines.is_empty());
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//b:other"], "{cycle:?}");
    assert_eq!(w.stop(), 130);
}

/// Every file below `dir`, as (relative path, content), sorted.
fn tree(dir: &std::path::Path) -> Vec<(String, String)> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn outputs_deleted_or_edited_in_flow_out_are_restored_by_the_next_cycle() {
    // Tasks a cycle's changes cannot reach are carried over without being keyed; only the
    // ones whose outputs the watcher saw touched are checked again.
    let ws = fixture();
    let mut w = Watch::start(&ws);
    std::fs::write(ws.path().join("flow-out/a/gen.txt"), "tampered\n").unwrap();
    std::fs::remove_file(ws.path().join("flow-out/a/use.txt")).unwrap();
    // Changes under flow-out/ alone start no cycle.
    w.assert_quiet(Duration::from_millis(1000));
    ws.write("b/b.txt", b"three\n");
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//b:other"], "{cycle:?}");
    assert_eq!(
        tagged(&cycle, "CACHED"),
        ["//a:gen", "//a:use"],
        "{cycle:?}"
    );
    let out = ws.path().join("flow-out");
    assert_eq!(
        std::fs::read_to_string(out.join("a/gen.txt")).unwrap(),
        "one\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("a/use.txt")).unwrap(),
        "ONE\n"
    );
    // A whole package directory removed.
    std::fs::remove_dir_all(out.join("b")).unwrap();
    ws.write("a/a.txt", b"four\n");
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//a:gen", "//a:use"], "{cycle:?}");
    assert_eq!(tagged(&cycle, "CACHED"), ["//b:other"], "{cycle:?}");
    assert_eq!(
        std::fs::read_to_string(out.join("b/o.txt")).unwrap(),
        "three\n"
    );
    w.stop();
}

#[test]
fn watch_cycles_after_a_sequence_of_edits_equal_a_clean_build() {
    // A chain a → b → c, an independent d, and a group over c and d: edits upstream and
    // downstream, a revert to bytes the cache has seen, a deleted output.
    let ws = Ws::new()
        .file("a/in.txt", "a1\n")
        .file("a/BUILD", "task(name = \"a\", srcs = [\"in.txt\"], outs = [\"a.txt\"], cmd = \"cat in.txt > a.txt\")\n")
        .file("b/in.txt", "b1\n")
        .file("b/BUILD", "task(name = \"b\", srcs = [\"in.txt\"], deps = [\"//a\"], outs = [\"b.txt\"], cmd = \"cat $(location //a) in.txt > b.txt\")\n")
        .file("c/in.txt", "c1\n")
        .file("c/BUILD", "task(name = \"c\", srcs = [\"in.txt\"], deps = [\"//b\"], outs = [\"c.txt\"], cmd = \"cat $(location //b) in.txt | tr a-z A-Z > c.txt\")\n\
                          group(name = \"all\", deps = [\":c\", \"//d\"])\n\
                          task(name = \"top\", deps = [\":all\"], outs = [\"top.txt\"], cmd = \"cat c.txt ../d/d.txt > top.txt\")\n")
        .file("d/in.txt", "d1\n")
        .file("d/BUILD", "task(name = \"d\", srcs = [\"in.txt\"], outs = [\"d.txt\"], cmd = \"cat in.txt in.txt > d.txt\")\n");
    let mut w = Watch::start(&ws);
    let steps: [(&str, &[u8]); 6] = [
        ("c/in.txt", b"c2\n"),
        ("a/in.txt", b"a2\n"),
        ("d/in.txt", b"d2\n"),
        ("a/in.txt", b"a1\n"),
        ("b/in.txt", b"b2\n"),
        ("c/in.txt", b"c1\n"),
    ];
    for (i, (path, bytes)) in steps.iter().enumerate() {
        if i == 3 {
            std::fs::remove_file(ws.path().join("flow-out/d/d.txt")).unwrap();
        }
        ws.write(path, bytes);
        w.cycle_end();
    }
    w.stop();
    let watched = tree(&ws.path().join("flow-out"));
    assert!(
        watched.contains(&("c/top.txt".to_owned(), "A1\nB2\nC1\nd2\nd2\n".to_owned())),
        "{watched:?}"
    );
    std::fs::remove_dir_all(ws.path().join("flow-out")).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let cache = fresh.path().display().to_string();
    ws.run(&["--cache-dir", &cache, "build", "//..."]).ok();
    assert_eq!(tree(&ws.path().join("flow-out")), watched);
}

/// Regression (issue 14): a failing action ran again in every watch cycle although nothing it
/// reads had changed. It is reported failed again, without running, until its inputs change.
#[test]
fn a_failed_action_is_not_run_again_until_its_inputs_change() {
    // Outside the workspace, so that its writes are no events.
    let log = tempfile::tempdir().unwrap();
    let runs = log.path().join("runs.log");
    let ws = Ws::new()
        .file("a/a.txt", "one\n")
        .file(
            "a/BUILD",
            &format!(
                "task(name = \"bad\", srcs = [\"a.txt\"], cmd = \"echo ran >> {}; grep -q fixed a.txt\")\n",
                runs.display()
            ),
        )
        .file("b/b.txt", "two\n")
        .file("b/BUILD", "task(name = \"other\", srcs = [\"b.txt\"], outs = [\"o.txt\"], cmd = \"cat b.txt > o.txt\")\n");
    let count = || std::fs::read_to_string(&runs).map_or(0, |s| s.lines().count());
    let mut w = Watch::start(&ws);
    assert_eq!(count(), 1);
    ws.write("b/b.txt", b"three\n");
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//b:other"], "{cycle:?}");
    assert_eq!(tagged(&cycle, "FAILED"), ["//a:bad"], "{cycle:?}");
    assert!(
        cycle
            .iter()
            .any(|l| l.contains("unchanged since it failed, not run again")),
        "{cycle:?}"
    );
    assert_eq!(count(), 1, "the failed action ran again: {cycle:?}");
    ws.write("a/a.txt", b"fixed\n");
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//a:bad"], "{cycle:?}");
    assert_eq!(count(), 2);
    assert_eq!(w.stop(), 130);
}

/// A failure that `flow watch` keeps (above) gives way to a success stored meanwhile: after a
/// `flow build` in which the action passed (what it needed outside the workspace appeared), the
/// next cycle uses that result instead of reporting the old failure (adversarial run).
#[test]
fn a_kept_failure_gives_way_to_a_success_stored_meanwhile() {
    let outside = tempfile::tempdir().unwrap();
    let flag = outside.path().join("flag");
    let ws = Ws::new()
        .file("a/a.txt", "one\n")
        .file(
            "a/BUILD",
            &format!(
                "task(name = \"needs\", srcs = [\"a.txt\"], outs = [\"n.txt\"], cmd = \"test -e {} && cp a.txt n.txt\")\n",
                flag.display()
            ),
        )
        .file("b/b.txt", "two\n")
        .file("b/BUILD", "task(name = \"other\", srcs = [\"b.txt\"], outs = [\"o.txt\"], cmd = \"cat b.txt > o.txt\")\n");
    let mut w = Watch::start(&ws);
    std::fs::write(&flag, "").unwrap();
    let build = Command::new(flow_bin())
        .args(["--color", "never", "-C"])
        .arg(ws.path())
        .args(["build", "//a:needs"])
        .env_remove("FLOW_CACHE_DIR")
        .output()
        .unwrap();
    assert!(build.status.success(), "{build:?}");
    ws.write("b/b.txt", b"three\n");
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "FAILED"), Vec::<String>::new(), "{cycle:?}");
    assert!(cycle.iter().any(|l| l.starts_with("flow: ok")), "{cycle:?}");
    assert_eq!(w.stop(), 130);
}

/// Regression (issue 15, item 2): `flow watch` compared only digests after an event, so a
/// `chmod +x` of a source (the x bit is in the action key) ran nothing.
#[test]
fn a_chmod_of_a_source_reruns_its_action() {
    let ws = Ws::new().file("p/run.sh", "echo hi\n").file(
        "p/BUILD",
        "task(name = \"t\", srcs = [\"run.sh\"], outs = [\"o.txt\"], cmd = \"if test -x run.sh; then echo x; else echo -; fi > o.txt\")\n",
    );
    let mut w = Watch::start(&ws);
    let script = ws.path().join("p/run.sh");
    let out = || std::fs::read_to_string(ws.path().join("flow-out/p/o.txt")).unwrap();
    assert_eq!(out(), "-\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//p:t"], "{cycle:?}");
    assert_eq!(out(), "x\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "CACHED"), ["//p:t"], "{cycle:?}");
    assert_eq!(out(), "-\n");
    w.stop();
}

/// Regression (issue 15, items 3 and 4, in `flow watch`): an edit of a symlinked BUILD file's
/// target, or of a package's `.gitignore`, was not taken for a change of the graph: the watcher
/// saw a file no target reads and did nothing.
#[test]
fn an_edit_of_a_symlinked_build_files_target_or_of_a_gitignore_analyses_again() {
    let ws = Ws::new()
        .file(
            "shared/p.build",
            "task(name = \"t\", srcs = glob([\"*.in\"]), outs = [\"o.txt\"], cmd = \"cat $(SRCS) > o.txt\")\n",
        )
        .file("p/a.in", "a\n")
        .file("p/b.in", "b\n")
        .file("p/.gitignore", "b.in\n");
    std::os::unix::fs::symlink("../shared/p.build", ws.path().join("p/BUILD")).unwrap();
    let mut w = Watch::start(&ws);
    let out = || std::fs::read_to_string(ws.path().join("flow-out/p/o.txt")).unwrap();
    assert_eq!(out(), "a\n");
    ws.write("p/.gitignore", b"a.in\n");
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//p:t"], "{cycle:?}");
    assert_eq!(out(), "b\n");
    ws.write(
        "shared/p.build",
        b"task(name = \"t\", srcs = glob([\"*.in\"]), outs = [\"o.txt\"], cmd = \"cat $(SRCS) $(SRCS) > o.txt\")\n",
    );
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//p:t"], "{cycle:?}");
    assert_eq!(out(), "b\nb\n");
    w.stop();
}

/// An edit of the target of a source that is a symlink: the watcher names the target, which no
/// target reads; the link's readers run.
#[test]
fn an_edit_of_a_symlinked_sources_target_reruns_its_readers() {
    let ws = Ws::new().file("shared/words.txt", "one\n").file(
        "p/BUILD",
        "task(name = \"t\", srcs = [\"words.txt\"], outs = [\"o.txt\"], cmd = \"cat words.txt > o.txt\")\n",
    );
    std::os::unix::fs::symlink("../shared/words.txt", ws.path().join("p/words.txt")).unwrap();
    let mut w = Watch::start(&ws);
    ws.write("shared/words.txt", b"two\n");
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//p:t"], "{cycle:?}");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/p/o.txt")).unwrap(),
        "two\n"
    );
    w.stop();
}

/// Regression (issue 15, second adversarial run): the watcher dropped every event the root
/// `.gitignore` excludes, also for files the analysis or the plan reads: a source a nested
/// `.gitignore` re-includes (`!keep.txt`, which `glob()` lists), and the target of a symlinked
/// BUILD file in an ignored directory. Edits of either were never seen, and the next cycle
/// ran actions of the stale BUILD file.
#[test]
fn edits_of_files_read_despite_the_root_gitignore_are_seen() {
    let ws = Ws::new()
        .file(".gitignore", "p/*.txt\nreal/\n")
        .file("p/.gitignore", "!keep.txt\n")
        .file("p/keep.txt", "k1\n")
        .file("p/drop.txt", "d\n")
        .file(
            "real/BUILD.p",
            "task(name = \"a\", srcs = glob([\"*.txt\"]), outs = [\"a.out\"], cmd = \"cat $(SRCS) > $(OUTS)\")\n",
        );
    std::os::unix::fs::symlink("../real/BUILD.p", ws.path().join("p/BUILD")).unwrap();
    let mut w = Watch::start(&ws);
    let out = || std::fs::read_to_string(ws.path().join("flow-out/p/a.out")).unwrap();
    assert_eq!(out(), "k1\n");
    ws.write("p/keep.txt", b"k2\n");
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//p:a"], "{cycle:?}");
    assert_eq!(out(), "k2\n");
    ws.write(
        "real/BUILD.p",
        b"task(name = \"a\", srcs = glob([\"*.txt\"]), outs = [\"a.out\"], cmd = \"cat $(SRCS) | tr k K > $(OUTS)\")\n",
    );
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//p:a"], "{cycle:?}");
    assert_eq!(out(), "K2\n");
    w.stop();
}

/// Regression (issue 15, final adversarial run): a `sandbox = False` action writes its output
/// in the real tree before flow moves it to `flow-out/`; the watcher took that write for an
/// edit, superseded (killed) the very cycle writing it, and the file left behind then
/// collided with the output at every analysis: watch waited for good on an error no one made.
#[test]
fn the_real_tree_writes_of_an_unsandboxed_action_are_not_edits() {
    let ws = Ws::new().file("in.txt", "1\n").file(
        "BUILD",
        "task(name = \"u\", srcs = [\"in.txt\"], outs = [\"u.out\"], sandbox = False,\n\
         \x20    cmd = \"cat in.txt > $(OUTS); sleep 0.5\")\n",
    );
    let mut w = Watch::start(&ws);
    let out = || std::fs::read_to_string(ws.path().join("flow-out/u.out")).unwrap();
    assert_eq!(out(), "1\n", "{:?}", w.seen);
    ws.write("in.txt", b"2\n");
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//:u"], "{cycle:?}");
    assert!(!cycle.iter().any(|l| l.contains("superseded")), "{cycle:?}");
    assert_eq!(out(), "2\n");
    assert!(!ws.path().join("u.out").exists());
    w.stop();
    ws.run(&["build", "//..."]).ok();
}

/// `flow watch` delivers nothing: a deploy or a notification it reaches fails with a sentence
/// that says so, and runs no command (docs/delivery.md, "Limits").
#[test]
fn watch_runs_no_deploy_and_no_notification() {
    let ws = Ws::new()
        .file("flow.toml", "[environments.staging]\n")
        .file("a.txt", "one\n")
        .file(
            "BUILD",
            "task(name = \"art\", srcs = [\"a.txt\"], outs = [\"art.txt\"], cmd = \"cp a.txt art.txt\")\n\
             deploy(name = \"d\", environment = \"staging\", artifact = \":art\", cmd = \"touch $FLOW_WORKSPACE/deployed\")\n\
             notify(name = \"n\", on = [\"success\", \"failure\"], cmd = \"touch $FLOW_WORKSPACE/notified\")\n\
             group(name = \"release\", deps = [\":d\", \":n\"])\n",
        );
    let w = Watch::start_with(&ws, &["//:release"]);
    let first: Vec<String> = w.seen.clone();
    let said = "`flow watch` runs no deploy, monitor or notification";
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("[FAILED] //:d") && l.contains(said)),
        "{first:?}"
    );
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("[FAILED] //:n") && l.contains(said)),
        "{first:?}"
    );
    assert!(!ws.path().join("deployed").exists() && !ws.path().join("notified").exists());
    assert_eq!(w.stop(), 130);
}

/// An editor's save through a temp file (`sed -i` writes `sedXXXXXX` and renames it over the
/// file): the cycle's header names the file, not the temp file (issue 18).
#[test]
fn the_header_names_the_file_not_the_editors_temp_file() {
    let ws = fixture();
    let mut w = Watch::start(&ws);
    let temp = ws.path().join("a/sedAb3xYz");
    std::fs::write(&temp, "one saved\n").unwrap();
    std::fs::rename(&temp, ws.path().join("a/a.txt")).unwrap();
    let cycle = w.cycle_end();
    let header = cycle
        .iter()
        .find(|l| l.starts_with("flow watch: changed"))
        .unwrap_or_else(|| panic!("{cycle:?}"));
    assert_eq!(header, "flow watch: changed a/a.txt", "{cycle:?}");
    assert_eq!(w.stop(), 130);
}

/// The screen tells the truth (issue 18): started on an up-to-date workspace, watch says so
/// (it showed nothing); after a broken edit is reverted to content that passed before (its
/// result comes from the cache, silently), a summary says the state is ok again (the last
/// line on screen stayed `flow: FAILED`).
#[test]
fn the_last_line_on_screen_is_the_current_state() {
    let ws = Ws::new().file("p/in.txt", "good\n").file(
        "p/BUILD",
        "task(name = \"check\", srcs = [\"in.txt\"], cmd = \"! grep -q bad in.txt\")\n",
    );
    let built = ws.run(&["build"]);
    assert_eq!(built.code, 0, "{}", built.stderr);
    let mut w = Watch::start(&ws);
    let first = w.seen.last().cloned().unwrap_or_default();
    assert!(
        first.starts_with("flow: ok: 0 ran, 1 cached"),
        "{:?}",
        w.seen
    );
    ws.write("p/in.txt", b"bad\n");
    let broken = w.cycle_end();
    assert!(
        broken.last().unwrap().starts_with("flow: FAILED"),
        "{broken:?}"
    );
    ws.write("p/in.txt", b"good\n");
    let fixed = w.cycle_end();
    assert!(
        fixed
            .last()
            .unwrap()
            .starts_with("flow: ok: 0 ran, 1 cached"),
        "{fixed:?}"
    );
    assert_eq!(w.stop(), 130);
}

/// `flow watch | head -1`: once the reader is gone, the next cycle's output finds the pipe
/// broken and watch ends with 141, as a process killed by SIGPIPE (adversarial run: it watched
/// on forever, printing into nothing).
#[test]
fn watch_ends_when_its_reader_goes_away() {
    let ws = fixture();
    let mut child = Command::new(flow_bin())
        .args(["-C"])
        .arg(ws.path())
        .args(["watch", "--debounce", "30"])
        .env_remove("FLOW_CACHE_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read the first line, as `head -1` does, then go away.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("flow watch: initial build"), "{first}");
    drop(out);
    let deadline = Instant::now() + TIMEOUT;
    let mut n = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "flow watch printed on into nothing"
        );
        // Edits make cycles, and cycles print.
        n += 1;
        ws.write("a/a.txt", format!("edit {n}\n").as_bytes());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status.code(), Some(141));
}

/// A cycle says why it runs as soon as its first action starts, not when that action ends
/// (adversarial run: during an 8 s action the screen showed the previous cycle's summary), and
/// a save that breaks a BUILD file is named before its error.
#[test]
fn the_header_comes_when_the_cycle_starts() {
    let ws = Ws::new().file("s/in.txt", "1\n").file(
        "s/BUILD",
        "task(name = \"slow\", srcs = [\"in.txt\"], outs = [\"out.txt\"], cmd = \"sleep 2; cp in.txt out.txt\")\n",
    );
    let mut w = Watch::start(&ws);
    ws.write("s/in.txt", b"2\n");
    w.wait_for(|l| l.starts_with("flow watch: changed s/in.txt"));
    assert!(
        !ws.path().join("flow-out/s/out.txt").exists(),
        "the header came only after the action ended"
    );
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//s:slow"], "{cycle:?}");
    ws.write("s/BUILD", b"task(name = \"slow\",\n");
    // (The header is on stdout, the error on stderr: their order here is the reader threads'.)
    let mut broken = w.wait_for(|l| l.starts_with("flow watch: waiting for changes"));
    if !broken
        .iter()
        .any(|l| l.starts_with("flow watch: changed s/BUILD"))
    {
        broken.extend(w.wait_for(|l| l.starts_with("flow watch: changed s/BUILD")));
    }
    assert!(broken.iter().any(|l| l.starts_with("error")), "{broken:?}");
    assert_eq!(w.stop(), 130);
}

/// `flow watch` in a new workspace says it has no target yet and waits, rather than an error
/// (adversarial run), then builds the first target declared.
#[test]
fn watch_in_a_new_workspace_waits_for_a_first_target() {
    let ws = Ws::new();
    let mut w = Watch::start(&ws);
    assert!(
        w.seen
            .iter()
            .any(|l| l.starts_with("flow watch: the workspace has no target yet")),
        "{:?}",
        w.seen
    );
    ws.write("p/BUILD", b"task(name = \"first\", cmd = \"true\")\n");
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//p:first"], "{cycle:?}");
    assert_eq!(w.stop(), 130);
}

/// A directory that arrives whole (moved in, as `git checkout` or `mv` does; or made and
/// filled before its own watch exists) is walked: its BUILD file's targets are found, though
/// no event named that file (CI run: `mkdir p && echo ... > p/BUILD` was lost under load).
#[test]
fn a_package_directory_moved_in_whole_is_found() {
    let ws = fixture();
    let mut w = Watch::start(&ws);
    let outside = tempfile::tempdir().unwrap();
    let pkg = outside.path().join("newpkg");
    std::fs::create_dir(&pkg).unwrap();
    std::fs::write(pkg.join("BUILD"), "task(name = \"t\", cmd = \"true\")\n").unwrap();
    std::fs::rename(&pkg, ws.path().join("newpkg")).unwrap();
    let cycle = w.cycle_end();
    assert_eq!(tagged(&cycle, "RAN"), ["//newpkg:t"], "{cycle:?}");
    assert_eq!(w.stop(), 130);
}
