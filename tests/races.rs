//! Edits racing a build (issue 15): the key of a stored result describes the bytes its action
//! actually saw, whatever was saved while the build ran.
//!
//! Each test holds one action (the "gate") until the test has made its edit: the gate announces
//! itself with a marker file and waits for a second one, so the edit lands at a known moment,
//! after the build hashed its sources and before a dependent of the gate is staged.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::support::{flow_bin, wait_for_file, Ws};

/// Two marker files outside the workspace: the gate creates `running`, then waits for `go`.
struct Gate {
    dir: tempfile::TempDir,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn running(&self) -> PathBuf {
        self.dir.path().join("running")
    }

    fn go(&self) -> PathBuf {
        self.dir.path().join("go")
    }

    /// A shell fragment that announces the gate and waits until the test opens it.
    fn cmd(&self) -> String {
        format!(
            "touch {}; while [ ! -e {} ]; do sleep 0.02; done",
            self.running().display(),
            self.go().display()
        )
    }

    /// Waits until the gate is running, then lets `edit` happen, then opens the gate.
    fn hold_while(&self, edit: impl FnOnce()) {
        wait_for_file(&self.running());
        edit();
        std::fs::write(self.go(), "").unwrap();
    }
}

fn spawn_build(ws: &Path) -> Child {
    Command::new(flow_bin())
        .args(["--color", "never", "-C"])
        .arg(ws)
        .args(["build", "//..."])
        .env_remove("FLOW_CACHE_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    text
}

fn read(ws: &Ws, rel: &str) -> String {
    std::fs::read_to_string(ws.path().join(rel)).unwrap()
}

/// Regression (issue 15, item 1): a source saved between the build's hashing and its action's
/// staging (while a slow dependency ran) was staged with its new bytes, and the result was
/// stored under the old bytes' key. Reverting the file then restored the wrong output as
/// `[CACHED]`, here and in every checkout sharing the cache.
#[test]
fn a_source_saved_while_a_dependency_runs_never_poisons_the_cache() {
    let gate = Gate::new();
    let ws = Ws::new().file("p/b.txt", "old\n").file(
        "p/BUILD",
        &format!(
            "task(name = \"gate\", outs = [\"g.txt\"], cmd = \"{}; echo g > g.txt\")\n\
             task(name = \"b\", deps = [\":gate\"], srcs = [\"b.txt\"], outs = [\"out.txt\"],\n\
             \x20    cmd = \"cat b.txt > out.txt\")\n",
            gate.cmd()
        ),
    );
    let build = spawn_build(ws.path());
    gate.hold_while(|| ws.write("p/b.txt", b"new\n"));
    let racy = finish(build);
    // The action ran on what it was given; whatever it says, the output is what it saw.
    assert_eq!(read(&ws, "flow-out/p/out.txt"), "new\n", "{racy}");

    // The file goes back to the bytes the build hashed: their result was never computed.
    ws.write("p/b.txt", b"old\n");
    let back = ws.run(&["build", "//..."]);
    back.ok();
    assert_eq!(
        read(&ws, "flow-out/p/out.txt"),
        "old\n",
        "a result computed from `new` was stored under the key of `old`:\n{racy}\n{}",
        back.stdout
    );
    // And forward again: the result of `new` is found under the key of `new`.
    ws.write("p/b.txt", b"new\n");
    let again = ws.run(&["build", "//..."]);
    assert!(
        again.ok().contains("[CACHED] //p:b"),
        "the racy run's result was stored under the key of what it saw:\n{}",
        again.stdout
    );
    assert_eq!(read(&ws, "flow-out/p/out.txt"), "new\n");
}

/// Regression (issue 15, item 1, and the adversarial run after it), for actions that run in
/// the real tree (`sandbox = False`): nothing is staged, so when they read a source, or a
/// dependency's output under `flow-out/`, is unknown. A file that changed while the build ran
/// (before or after the action read it) fails the action and nothing is stored; a first fix
/// stored the result under the key of the bytes found after the run, which the action had not
/// read.
#[test]
fn a_file_changed_while_an_unsandboxed_action_runs_stores_nothing() {
    for edited in ["p/s.txt", "flow-out/p/a.txt"] {
        let gate = Gate::new();
        let ws = Ws::new().file("p/s.txt", "v1\n").file(
            "p/BUILD",
            &format!(
                "task(name = \"a\", srcs = [\"s.txt\"], outs = [\"a.txt\"], cmd = \"cat s.txt > a.txt\")\n\
                 task(name = \"c\", deps = [\":a\"], srcs = [\"s.txt\"], outs = [\"c.txt\"],\n\
                 \x20    sandbox = False, cmd = \"cat s.txt $(location :a) > c.txt; {}\")\n",
                gate.cmd()
            ),
        );
        let build = spawn_build(ws.path());
        gate.hold_while(|| ws.write(edited, b"v2\n"));
        let out = build.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{edited}: {stdout}");
        assert!(stdout.contains("nothing was stored"), "{edited}: {stdout}");
        if edited == "p/s.txt" {
            // The action read v1; a result for the key of v2 must come from v2.
            let again = ws.run(&["build", "//..."]);
            again.ok();
            assert_eq!(
                read(&ws, "flow-out/p/c.txt"),
                "v2\nv2\n",
                "{}",
                again.stdout
            );
        }
        ws.write("p/s.txt", b"v1\n");
        let back = ws.run(&["build", "//..."]);
        back.ok();
        assert_eq!(
            read(&ws, "flow-out/p/c.txt"),
            "v1\nv1\n",
            "{edited}: {}",
            back.stdout
        );
        assert_eq!(read(&ws, "flow-out/p/a.txt"), "v1\n", "{edited}");
    }
}

/// The warning a build prints when it re-keys a result, and the failure when a dependency's
/// output under `flow-out/` was replaced between its check and its staging.
#[test]
fn a_racing_edit_is_said_on_screen() {
    let gate = Gate::new();
    let ws = Ws::new().file("p/b.txt", "old\n").file(
        "p/BUILD",
        &format!(
            "task(name = \"gate\", outs = [\"g.txt\"], cmd = \"{}; echo g > g.txt\")\n\
             task(name = \"b\", deps = [\":gate\"], srcs = [\"b.txt\"], outs = [\"out.txt\"],\n\
             \x20    cmd = \"cat b.txt > out.txt\")\n",
            gate.cmd()
        ),
    );
    let build = spawn_build(ws.path());
    gate.hold_while(|| ws.write("p/b.txt", b"new\n"));
    let racy = finish(build);
    let warning: Vec<&str> = racy.lines().filter(|l| l.contains("warning")).collect();
    crate::support::golden("race_rekeyed_warning", &(warning.join("\n") + "\n"));
}

/// A dependency's output hand-edited under `flow-out/` while the build runs is never what a
/// dependent is given: it gets the dependency's stored output.
#[test]
fn an_output_edited_under_flow_out_while_the_build_runs_is_not_staged() {
    let gate = Gate::new();
    let ws = Ws::new().file(
        "p/BUILD",
        &format!(
            "task(name = \"a\", outs = [\"a.txt\"], cmd = \"echo real > a.txt\")\n\
             task(name = \"gate\", outs = [\"g.txt\"], cmd = \"{}; echo g > g.txt\")\n\
             task(name = \"c\", deps = [\":a\", \":gate\"], outs = [\"c.txt\"],\n\
             \x20    cmd = \"cat $(location :a) > c.txt\")\n",
            gate.cmd()
        ),
    );
    let build = spawn_build(ws.path());
    gate.hold_while(|| {
        let a = ws.path().join("flow-out/p/a.txt");
        wait_for_file(&a);
        std::fs::write(&a, "hand\n").unwrap();
    });
    let racy = finish(build);
    assert_eq!(read(&ws, "flow-out/p/c.txt"), "real\n", "{racy}");
    // The edit came after `a` was done: the next build repairs it, as any hand edit.
    ws.run(&["build", "//..."]).ok();
    assert_eq!(read(&ws, "flow-out/p/a.txt"), "real\n");
}

/// A dependency's directory output under `flow-out/` edited while a dependent runs (its bind
/// shows the edit live): the dependent's result is not stored, the build says why, and the next
/// build restores the tree and runs the dependent on it.
#[test]
fn a_directory_input_edited_while_its_dependent_runs_stores_nothing() {
    let gate = Gate::new();
    let ws = Ws::new().file(
        "p/BUILD",
        &format!(
            "task(name = \"gen\", outs = [\"d/\"], cmd = \"mkdir -p d && echo one > d/f.txt\")\n\
             task(name = \"use\", deps = [\":gen\"], outs = [\"u.txt\"],\n\
             \x20    cmd = \"{}; cat $(location :gen)/f.txt > u.txt\")\n",
            gate.cmd()
        ),
    );
    let build = spawn_build(ws.path());
    gate.hold_while(|| std::fs::write(ws.path().join("flow-out/p/d/f.txt"), "hand\n").unwrap());
    let out = build.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.contains("[FAILED]")).collect();
    crate::support::golden("race_dir_input_changed", &(failed.join("\n") + "\n"));
    let again = ws.run(&["build", "//..."]);
    assert!(again.ok().contains("[RAN] //p:use"), "{}", again.stdout);
    assert_eq!(read(&ws, "flow-out/p/u.txt"), "one\n");
    assert_eq!(read(&ws, "flow-out/p/d/f.txt"), "one\n");
}
