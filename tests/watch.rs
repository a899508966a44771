//! `flow watch` as a child process: write files, read its output, assert behaviour (never
//! speed: every wait has a generous timeout).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use crate::support::{flow_bin, Ws};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A running `flow watch` and everything it printed (stdout and stderr, interleaved by line).
struct Watch {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watch {
    fn start(ws: &Ws) -> Watch {
        let mut child = Command::new(flow_bin())
            .args(["--color", "never", "-C"])
            .arg(ws.path())
            .args(["watch", "--debounce", "30"])
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

/// Labels tagged `[TAG]` in `lines`, sorted.
fn tagged(lines: &[String], tag: &str) -> Vec<String> {
    let prefix = format!("[{tag}] ");
    let mut out: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.split(' ').next().unwrap_or("").to_owned())
        .collect();
    out.sort();
    out
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
