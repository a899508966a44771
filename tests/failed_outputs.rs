//! Outputs of failed runs (`engine/failed.rs`, docs/build.md "Outputs of a failed run"): a
//! failed action's declared outputs are kept under `flow-out/`, marked, never cached, and
//! replaced by the next run or restore; `flow clean` removes them; nothing is followed out of
//! the output tree.

use std::path::Path;

use crate::support::{tags, Run, Ws};

/// A test that copies `mode.txt` to `report.xml` and fails unless it says `pass`; only a
/// passing run writes `extra.txt`.
const REPORTING: &str = r#"task(
    name = "t",
    srcs = ["mode.txt"],
    outs = ["report.xml", "extra.txt"],
    cmd = "cp mode.txt report.xml; grep -q pass mode.txt || exit 1; echo extra > extra.txt",
)
"#;

fn build(ws: &Ws, args: &[&str]) -> Run {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    ws.run(&all)
}

/// The labels `run` printed with `tag`.
fn tagged(run: &Run, tag: &str) -> Vec<String> {
    tags(&run.stdout).remove(tag).unwrap_or_default()
}

#[track_caller]
fn expect_tag(run: &Run, code: i32, tag: &str, label: &str) {
    assert_eq!(
        (run.code, tagged(run, tag)),
        (code, vec![label.to_string()]),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
}

fn read(ws: &Ws, rel: &str) -> Option<String> {
    std::fs::read_to_string(ws.path().join(rel)).ok()
}

fn exists(ws: &Ws, rel: &str) -> bool {
    std::fs::symlink_metadata(ws.path().join(rel)).is_ok()
}

#[test]
fn a_failed_run_keeps_its_report_marked_and_never_cached() {
    let ws = Ws::new()
        .file("p/BUILD", REPORTING)
        .file("p/mode.txt", "pass\n");
    expect_tag(&build(&ws, &[]), 0, "RAN", "//p:t");
    assert_eq!(read(&ws, "flow-out/p/report.xml").unwrap(), "pass\n");
    assert!(exists(&ws, "flow-out/p/extra.txt"));

    ws.write("p/mode.txt", b"fail 1\n");
    let failed = build(&ws, &[]);
    expect_tag(&failed, 1, "FAILED", "//p:t");
    // The failed run's bytes, not the earlier success's; what it did not write is gone.
    assert_eq!(read(&ws, "flow-out/p/report.xml").unwrap(), "fail 1\n");
    assert!(!exists(&ws, "flow-out/p/extra.txt"));
    let marker = read(&ws, "flow-out/p/.report.xml.flow-failed").unwrap();
    assert_eq!(marker, "from a failed run of //p:t: exit 1\n");
    assert!(!exists(&ws, "flow-out/p/.extra.txt.flow-failed"));
    assert!(
        failed.stdout.contains(
            "    flow: outputs of this failed run kept in flow-out/p/ (marked by \
             .NAME.flow-failed, never cached): report.xml\n"
        ),
        "{}",
        failed.stdout
    );

    // Another target's build (an analysis and its sweep of undeclared outputs) keeps them.
    ws.write(
        "q/BUILD",
        b"task(name = \"ok\", outs = [\"o\"], cmd = \"touch o\")\n",
    );
    expect_tag(&build(&ws, &["//q:ok"]), 0, "RAN", "//q:ok");
    assert_eq!(read(&ws, "flow-out/p/report.xml").unwrap(), "fail 1\n");
    assert!(exists(&ws, "flow-out/p/.report.xml.flow-failed"));

    // The same failing content again: never a no-op nor `[CACHED]`, it runs and fails again.
    let again = build(&ws, &["//p:t"]);
    expect_tag(&again, 1, "FAILED", "//p:t");
    assert_eq!(read(&ws, "flow-out/p/report.xml").unwrap(), "fail 1\n");

    // Reverted: the success is restored from the cache, and the marker goes.
    ws.write("p/mode.txt", b"pass\n");
    let restored = build(&ws, &["//p:t"]);
    expect_tag(&restored, 0, "CACHED", "//p:t");
    assert_eq!(read(&ws, "flow-out/p/report.xml").unwrap(), "pass\n");
    assert_eq!(read(&ws, "flow-out/p/extra.txt").unwrap(), "extra\n");
    assert!(!exists(&ws, "flow-out/p/.report.xml.flow-failed"));
    // And the build after it is a no-op that leaves it so.
    expect_tag(&build(&ws, &["//p:t"]), 0, "CACHED", "//p:t");
    assert!(!exists(&ws, "flow-out/p/.report.xml.flow-failed"));

    // A failure, then a new success that runs: the marker goes, the bytes are the new ones.
    ws.write("p/mode.txt", b"fail 2\n");
    expect_tag(&build(&ws, &["//p:t"]), 1, "FAILED", "//p:t");
    assert!(exists(&ws, "flow-out/p/.report.xml.flow-failed"));
    ws.write("p/mode.txt", b"pass 2\n");
    expect_tag(&build(&ws, &["//p:t"]), 0, "RAN", "//p:t");
    assert_eq!(read(&ws, "flow-out/p/report.xml").unwrap(), "pass 2\n");
    assert!(!exists(&ws, "flow-out/p/.report.xml.flow-failed"));

    // `flow clean` removes a failed run's outputs with the rest.
    ws.write("p/mode.txt", b"fail 3\n");
    expect_tag(&build(&ws, &["//p:t"]), 1, "FAILED", "//p:t");
    assert_eq!(ws.run(&["clean"]).code, 0);
    assert!(!exists(&ws, "flow-out/p"));
}

/// Exit 0 without every declared output is a failure too: what it did write is kept.
#[test]
fn a_directory_output_of_a_failed_run_is_kept_without_its_links() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "secret\n").unwrap();
    let ws = Ws::new().file(
        "p/BUILD",
        &format!(
            "task(name = \"t\", outs = [\"d/\", \"never.txt\"], cmd = \"mkdir -p d/sub; \
             echo a > d/sub/a.txt; ln -s {}/secret d/link\")\n",
            outside.path().display()
        ),
    );
    let run = build(&ws, &[]);
    expect_tag(&run, 1, "FAILED", "//p:t");
    assert_eq!(read(&ws, "flow-out/p/d/sub/a.txt").unwrap(), "a\n");
    assert!(!exists(&ws, "flow-out/p/d/link"));
    assert!(exists(&ws, "flow-out/p/.d.flow-failed"));
    // Never passed for a finished tree: no tree marker.
    assert!(!exists(&ws, "flow-out/p/.d.flow-tree"));
    assert!(run.stdout.contains("never cached): d/\n"), "{}", run.stdout);
}

/// A hostile failed run: an output that is a symlink out of the sandbox, an output below a
/// directory swapped for a symlink; and `flow-out/p` itself swapped for a link before the run.
/// Nothing is read or written through a link.
#[test]
fn a_failed_run_is_never_followed_out_of_the_output_tree() {
    let outside = tempfile::tempdir().unwrap();
    let o = outside.path();
    std::fs::write(o.join("secret"), "secret\n").unwrap();
    std::fs::create_dir(o.join("dir")).unwrap();
    std::fs::write(o.join("dir/r.xml"), "outside\n").unwrap();
    std::fs::create_dir(o.join("planted")).unwrap();
    let ws = Ws::new().file(
        "p/BUILD",
        &format!(
            "task(name = \"t\", outs = [\"link.xml\", \"sub/r.xml\", \"ok.xml\"], cmd = \"ln -s \
             {o}/secret link.xml; rmdir sub; ln -s {o}/dir sub; echo ok > ok.xml; exit 1\")\n",
            o = o.display()
        ),
    );
    std::fs::create_dir(ws.path().join("flow-out")).unwrap();
    std::os::unix::fs::symlink(o.join("planted"), ws.path().join("flow-out/p")).unwrap();
    let run = build(&ws, &[]);
    expect_tag(&run, 1, "FAILED", "//p:t");
    assert!(!exists(&ws, "flow-out/p/link.xml"));
    assert!(!exists(&ws, "flow-out/p/sub/r.xml"));
    assert!(run
        .stdout
        .contains("output `link.xml` of the failed run was not kept: it is a symlink"));
    assert!(run.stdout.contains(
        "output `sub/r.xml` of the failed run was not kept: a directory on its path is a symlink"
    ));
    // What could be kept is, in a real directory, and nothing went through the planted link.
    assert_eq!(read(&ws, "flow-out/p/ok.xml").unwrap(), "ok\n");
    assert!(std::fs::symlink_metadata(ws.path().join("flow-out/p"))
        .unwrap()
        .is_dir());
    assert_eq!(std::fs::read_dir(o.join("planted")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_to_string(o.join("secret")).unwrap(),
        "secret\n"
    );
    assert_eq!(
        std::fs::read_to_string(o.join("dir/r.xml")).unwrap(),
        "outside\n"
    );
}

/// `sandbox = False`: the outputs are moved out of the package directory (left there, they
/// would pass for sources) to `flow-out/`, marked; the next success replaces them.
#[test]
fn a_failed_unsandboxed_run_moves_its_outputs_under_flow_out() {
    let build_file = |cmd: &str| {
        format!(
            "task(name = \"x\", srcs = [\"in.txt\"], outs = [\"o.txt\", \"d/\"], cmd = \"{cmd}\", \
             sandbox = False)\n"
        )
    };
    let ws = Ws::new()
        .file(
            "p/BUILD",
            &build_file("mkdir -p d; cp in.txt d/f; cp in.txt o.txt; exit 1"),
        )
        .file("p/in.txt", "half\n");
    let run = build(&ws, &[]);
    expect_tag(&run, 1, "FAILED", "//p:x");
    assert!(!exists(&ws, "p/o.txt") && !exists(&ws, "p/d"));
    assert_eq!(read(&ws, "flow-out/p/o.txt").unwrap(), "half\n");
    assert_eq!(read(&ws, "flow-out/p/d/f").unwrap(), "half\n");
    assert!(exists(&ws, "flow-out/p/.o.txt.flow-failed"));
    assert!(exists(&ws, "flow-out/p/.d.flow-failed"));
    // Not a collision with sources at the next analysis: it runs and fails again.
    expect_tag(&build(&ws, &[]), 1, "FAILED", "//p:x");

    ws.write(
        "p/BUILD",
        build_file("mkdir -p d; cp in.txt d/f; cp in.txt o.txt").as_bytes(),
    );
    ws.write("p/in.txt", b"whole\n");
    expect_tag(&build(&ws, &[]), 0, "RAN", "//p:x");
    assert_eq!(read(&ws, "flow-out/p/o.txt").unwrap(), "whole\n");
    assert_eq!(read(&ws, "flow-out/p/d/f").unwrap(), "whole\n");
    assert!(!exists(&ws, "flow-out/p/.o.txt.flow-failed"));
    assert!(!exists(&ws, "flow-out/p/.d.flow-failed"));
    assert!(Path::new(&ws.path().join("flow-out/p/.d.flow-tree")).exists());
}

/// Many failed actions of one package keep their outputs at once: each one's marker has its
/// own temp file (CI run: two at once shared one name, and one output was "not kept: No such
/// file or directory").
#[test]
fn failed_actions_of_one_package_keep_their_outputs_at_once() {
    let mut build = String::new();
    for i in 0..12 {
        build.push_str(&format!(
            "task(name = \"f{i}\", outs = [\"r{i}.xml\"], cmd = \"echo {i} > r{i}.xml; exit 1\")\n"
        ));
    }
    let ws = Ws::new().file("p/BUILD", &build);
    for round in 0..3 {
        let run = ws.run(&["build", "-k", "-j", "12", "//p:all"]);
        assert_eq!(run.code, 1);
        assert!(
            !run.stdout.contains("was not kept"),
            "round {round}: {}",
            run.stdout
        );
        for i in 0..12 {
            let kept = ws.path().join(format!("flow-out/p/r{i}.xml"));
            assert_eq!(std::fs::read_to_string(&kept).unwrap(), format!("{i}\n"));
        }
    }
}
