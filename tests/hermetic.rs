//! Hermetic directory inputs (issue 14, item 5): a dependency's directory output staged into a
//! dependent's sandbox is a real, read-only directory that leads nowhere outside itself, and a
//! hand edit inside a directory output under `flow-out/` is repaired by the next build.
//!
//! Each sandbox test runs twice: with the read-only binds of a private mount namespace (where
//! the kernel allows them; the default) and with the copying fallback (`FLOW_SANDBOX_MOUNTS=0`).
//!
//! Regression, issue 14: the input was a symlink into `flow-out/`. A dependent could write
//! through it (the dependency's materialized output changed, the next build said `[CACHED]` and
//! `flow cache verify` found nothing), read undeclared workspace files through `..`, and
//! `find DIR -type f` found nothing.

use std::path::Path;
use std::process::Command;

use crate::support::{flow_bin, Ws};

/// `//p:dir` makes the directory output `report/` (`a.txt`, `sub/b.txt`); `uses` is the command
/// of `//p:use`, which depends on it and writes `use.txt`.
fn workspace(uses: &str) -> Ws {
    Ws::new()
        .file("p/a.txt", "alpha\n")
        .file("p/undeclared.txt", "not an input\n")
        .file(
            "p/BUILD",
            &format!(
                r#"task(
    name = "dir",
    srcs = ["a.txt"],
    outs = ["report/"],
    cmd = "mkdir -p report/sub && cp a.txt report/a.txt && echo bravo > report/sub/b.txt",
)
task(name = "use", deps = [":dir"], outs = ["use.txt"], cmd = "{uses}")
"#
            ),
        )
}

/// One run of `flow ARGS` in `ws`: exit code, stdout, stderr. `mounts = false` forces the
/// copying fallback.
fn flow(ws: &Ws, mounts: bool, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(flow_bin());
    command
        .current_dir(ws.path())
        .args(["--color", "never"])
        .args(args)
        .env_remove("FLOW_CACHE_DIR")
        .env_remove("FLOW_SANDBOX_MOUNTS");
    if !mounts {
        command.env("FLOW_SANDBOX_MOUNTS", "0");
    }
    let out = command.output().expect("run flow");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn ok(run: (i32, String, String)) -> String {
    assert_eq!(run.0, 0, "flow failed:\n{}\n{}", run.1, run.2);
    run.1
}

fn read(ws: &Ws, rel: &str) -> String {
    std::fs::read_to_string(ws.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The materialized `report/` of `//p:dir` is what the command made.
#[track_caller]
fn report_is_intact(ws: &Ws) {
    assert_eq!(read(ws, "flow-out/p/report/a.txt"), "alpha\n");
    assert_eq!(read(ws, "flow-out/p/report/sub/b.txt"), "bravo\n");
    let entries = |dir: &str| {
        let mut names: Vec<String> = std::fs::read_dir(ws.path().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(entries("flow-out/p/report"), ["a.txt", "sub"]);
    assert_eq!(entries("flow-out/p/report/sub"), ["b.txt"]);
}

#[track_caller]
fn verify_is_clean(ws: &Ws) {
    let out = ok(flow(ws, true, &["cache", "verify"]));
    assert!(
        out.contains("no problems") && !out.contains("problem:"),
        "{out}"
    );
}

#[test]
fn a_dependent_cannot_modify_a_staged_directory_input() {
    for mounts in [true, false] {
        let ws = workspace(
            "echo evil >> $(location :dir)/a.txt; echo evil > $(location :dir)/sub/b.txt; \
             rm -f $(location :dir)/a.txt; touch $(location :dir)/new.txt; \
             cat $(location :dir)/sub/b.txt > use.txt",
        );
        let (code, out, err) = flow(&ws, mounts, &["build", "//p:use"]);
        if mounts {
            // Every write fails (read-only for root too); the command goes on and succeeds.
            assert_eq!(code, 0, "{out}\n{err}");
            assert_eq!(
                read(&ws, "flow-out/p/use.txt"),
                "bravo\n",
                "mounts: {mounts}"
            );
        } else {
            // The copy takes the writes, and the action fails for them, as it would on
            // another machine with binds (adversarial run: one key, two results otherwise).
            assert_eq!(code, 1, "{out}\n{err}");
            assert!(
                out.contains("[FAILED] //p:use (wrote into a directory input)"),
                "{out}"
            );
        }
        // Either way the dependency's output is untouched, and so is the cache.
        report_is_intact(&ws);
        verify_is_clean(&ws);
        let out = ok(flow(&ws, mounts, &["build", "//p:dir"]));
        assert!(out.contains("[CACHED] //p:dir"), "mounts: {mounts}: {out}");
        report_is_intact(&ws);
    }
}

#[test]
fn a_dependent_cannot_read_an_undeclared_file_through_a_directory_input() {
    for mounts in [true, false] {
        // In the sandbox `report/../../..` is the action's private directory; through the old
        // symlink it was the workspace root.
        let ws = workspace("cat $(location :dir)/../../../p/undeclared.txt > use.txt");
        let (code, out, _) = flow(&ws, mounts, &["build", "//p:use"]);
        assert_eq!(
            code, 1,
            "mounts: {mounts}: the undeclared file was read:\n{out}"
        );
        assert!(out.contains("[FAILED] //p:use"), "{out}");
        // Nor anything else beside the tree in `flow-out/`: `..` is the sandbox's package
        // directory, holding the input and the output being written.
        let ws = workspace("ls $(location :dir)/.. > use.txt");
        ok(flow(&ws, mounts, &["build", "//p:use"]));
        assert_eq!(
            read(&ws, "flow-out/p/use.txt"),
            "report\nuse.txt\n",
            "mounts: {mounts}"
        );
    }
}

#[test]
fn a_dependent_sees_the_files_of_a_directory_input_with_find() {
    for mounts in [true, false] {
        let ws = workspace("find $(location :dir) -type f | sort > use.txt");
        ok(flow(&ws, mounts, &["build", "//p:use"]));
        assert_eq!(
            read(&ws, "flow-out/p/use.txt"),
            "report/a.txt\nreport/sub/b.txt\n",
            "mounts: {mounts}"
        );
    }
}

/// Edits `flow-out/p/report/sub/b.txt` in place, keeping its size and mtime.
fn edit_by_hand(ws: &Ws) {
    let path = ws.path().join("flow-out/p/report/sub/b.txt");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    // Past the coarse timestamp tick of the materialization (see `flow_cache::TreeStamp`).
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&path, "BRAVO\n").unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(mtime).unwrap();
}

#[test]
fn a_hand_edit_inside_a_directory_output_is_repaired() {
    let ws = workspace("cat $(location :dir)/sub/b.txt > use.txt");
    ok(flow(&ws, true, &["build", "//p:use"]));
    edit_by_hand(&ws);
    // A fresh analysis: every cached action's outputs are checked.
    remove_records(ws.path());
    let out = ok(flow(&ws, true, &["build", "//p:use"]));
    assert!(out.contains("[CACHED] //p:dir"), "{out}");
    assert!(out.contains("[CACHED] //p:use"), "{out}");
    report_is_intact(&ws);
    // Added and removed files too.
    std::fs::write(ws.path().join("flow-out/p/report/extra.txt"), "").unwrap();
    std::fs::remove_file(ws.path().join("flow-out/p/report/a.txt")).unwrap();
    remove_records(ws.path());
    ok(flow(&ws, true, &["build", "//p:use"]));
    report_is_intact(&ws);
    verify_is_clean(&ws);
}

/// The same through the build record's no-op answer, which today stamps a directory output by
/// its marker only: the record must also check the tree's stamp (`flow_cache::TreeStamp`).
#[test]
fn a_hand_edit_inside_a_directory_output_is_repaired_by_a_build_from_the_record() {
    let ws = workspace("cat $(location :dir)/sub/b.txt > use.txt");
    // Sources older than the racy-edit window, so that the record answers the next builds.
    age(ws.path());
    crate::support::settle();
    ok(flow(&ws, true, &["build", "//p:use"]));
    ok(flow(&ws, true, &["build", "//p:use"]));
    edit_by_hand(&ws);
    ok(flow(&ws, true, &["build", "//p:use"]));
    report_is_intact(&ws);
}

/// Removes the build records (`.flow/analysis/`), so the next build analyses afresh.
fn remove_records(ws: &Path) {
    match std::fs::remove_dir_all(ws.join(".flow/analysis")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
        _ => {}
    }
}

/// Sets the mtime of everything under `dir` (but `flow-out/` and `.flow/`) two minutes back.
fn age(dir: &Path) {
    let when = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.ends_with("flow-out") || path.ends_with(".flow") {
            continue;
        }
        if path.is_dir() {
            age(&path);
        }
        std::fs::File::open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
    std::fs::File::open(dir)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

/// Regression (issue 14, second adversarial run): with the copy, a deletion, a `chmod` or an
/// entry created and removed again inside a directory input went unnoticed, so the copy
/// stored a success for a key that fails with binds. Each now fails the action either way.
#[test]
fn every_change_to_a_directory_input_fails_the_action_with_binds_or_the_copy() {
    let changes = [
        "rm -f $(location :dir)/a.txt",
        "chmod 777 $(location :dir)/a.txt",
        "mkdir $(location :dir)/tmp && rmdir $(location :dir)/tmp",
        "ln -s /etc/passwd $(location :dir)/ln && rm $(location :dir)/ln",
    ];
    for change in changes {
        for mounts in [true, false] {
            let ws = workspace(&format!("{change} && echo done > use.txt"));
            let (code, out, err) = flow(&ws, mounts, &["build", "//p:use"]);
            assert_eq!(
                code, 1,
                "mounts: {mounts}: `{change}` passed:\n{out}\n{err}"
            );
            report_is_intact(&ws);
        }
    }
}
