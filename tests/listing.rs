//! The workspace walk (`rules/src/listing.rs`) and what depends on it (issue 15): only the
//! workspace's `.gitignore` files exclude, names are listed as they are, `glob()` returns files
//! only, and analysis is done again whenever a file that decides the listing or the evaluation
//! changes — a symlinked BUILD or `.star` file's target, any `.gitignore` — through the
//! evaluation snapshot and through the build record alike.
//!
//! Each test *ages* the workspace first (mtimes a minute back, links included, then a pause for
//! the ctimes: `settle`), so that the stamps the next builds take are trusted at once: a stale
//! answer then shows instead of being hidden by the racy-edit window.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{settle, tags, Ws};

/// Sets the mtime of every entry under `root` (symlinks themselves, not their targets; not
/// `.flow/` or `flow-out/`) a minute back, then waits until the ctimes that set are settled.
fn age(root: &Path) {
    let then = SystemTime::now() - Duration::from_secs(60);
    let since = then.duration_since(UNIX_EPOCH).unwrap();
    let when = nix::sys::time::TimeSpec::from_duration(since);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name();
            if name == ".flow" || name == "flow-out" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &e.path(),
                &when,
                &when,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        }
    }
    settle();
}

fn link(ws: &Ws, target: &str, rel: &str) {
    let at = ws.path().join(rel);
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, at).unwrap();
}

/// `flow build //...`, which must succeed: label → tag.
fn build(ws: &Ws) -> std::collections::BTreeMap<String, Vec<String>> {
    tags(ws.run(&["build", "//..."]).ok())
}

fn out(ws: &Ws, rel: &str) -> String {
    std::fs::read_to_string(ws.path().join("flow-out").join(rel)).unwrap()
}

/// The `srcs` of `label` as `flow query --output json` gives them.
fn srcs(ws: &Ws, label: &str) -> Vec<String> {
    let run = ws.run(&["query", label, "--output", "json"]);
    let json: serde_json::Value = serde_json::from_str(run.ok()).unwrap();
    json[0]["srcs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Regression (issue 15, item 3): a BUILD file that is a symlink was stamped as the link, not its
/// target, so an edit of the target was never seen (by the build record nor by the evaluation
/// snapshot) until `.flow/analysis` was deleted; the same for a symlinked `.star` file.
#[test]
fn an_edit_of_a_symlinked_build_or_star_files_target_is_seen() {
    let ws = Ws::new()
        .file(
            "shared/p.build",
            "load(\"//defs:words.star\", \"WORD\")\n\
             task(name = \"t\", outs = [\"o.txt\"], cmd = \"echo one \" + WORD + \" > o.txt\")\n",
        )
        .file("shared/words.star", "WORD = \"alpha\"\n");
    link(&ws, "../shared/p.build", "p/BUILD");
    link(&ws, "../shared/words.star", "defs/words.star");
    age(ws.path());
    build(&ws);
    assert_eq!(build(&ws)["CACHED"], ["//p:t"]);
    assert_eq!(out(&ws, "p/o.txt"), "one alpha\n");

    // Through the build record (the last build wrote one).
    ws.write(
        "shared/p.build",
        b"load(\"//defs:words.star\", \"WORD\")\n\
          task(name = \"t\", outs = [\"o.txt\"], cmd = \"echo two \" + WORD + \" > o.txt\")\n",
    );
    assert_eq!(build(&ws)["RAN"], ["//p:t"]);
    assert_eq!(out(&ws, "p/o.txt"), "two alpha\n");
    ws.write("shared/words.star", b"WORD = \"beta\"\n");
    assert_eq!(build(&ws)["RAN"], ["//p:t"]);
    assert_eq!(out(&ws, "p/o.txt"), "two beta\n");

    // Through the evaluation snapshot alone (`flow query` keeps no build record).
    age(ws.path());
    assert_eq!(ws.run(&["query", "//..."]).ok(), "//p:t\n");
    assert_eq!(ws.run(&["query", "//..."]).ok(), "//p:t\n");
    ws.write(
        "shared/p.build",
        b"load(\"//defs:words.star\", \"WORD\")\ntask(name = \"u\" + WORD, cmd = \"true\")\n",
    );
    assert_eq!(ws.run(&["query", "//..."]).ok(), "//p:ubeta\n");
    ws.write("shared/words.star", b"WORD = \"gamma\"\n");
    assert_eq!(ws.run(&["query", "//..."]).ok(), "//p:ugamma\n");
}

/// Regression (issue 15, item 4): `.ignore` files excluded files from the listing although the
/// docs say only `.gitignore` counts, and an edit of one left `glob()` stale; an edit of a
/// `.gitignore` outside every package (here the root's) or of one that ignores itself was not
/// seen either. Now only the workspace's `.gitignore` files exclude (not `.ignore`, not
/// `.git/info/exclude`), and each of them is stamped.
#[test]
fn only_gitignore_files_exclude_and_an_edit_of_any_of_them_is_seen() {
    let ws = Ws::new()
        .file("p/a.in", "a\n")
        .file("p/b.in", "b\n")
        .file("p/c.in", "c\n")
        .file("p/.ignore", "a.in\n")
        .file(".git/info/exclude", "p/a.in\n")
        .file(".gitignore", "p/b.in\n")
        .file("p/sub/.gitignore", ".gitignore\n")
        .file("p/sub/d.in", "d\n")
        .file(
            "p/BUILD",
            "task(name = \"t\", srcs = glob([\"**/*.in\"]), outs = [\"o.txt\"], cmd = \"cat $(SRCS) > o.txt\")\n",
        );
    age(ws.path());
    assert_eq!(srcs(&ws, "//p:t"), ["a.in", "c.in", "sub/d.in"]);
    build(&ws);
    assert_eq!(build(&ws)["CACHED"], ["//p:t"]);
    assert_eq!(out(&ws, "p/o.txt"), "a\nc\nd\n");

    // An `.ignore` file is an ordinary file: editing it changes nothing.
    ws.write("p/.ignore", b"c.in\n");
    assert_eq!(build(&ws)["CACHED"], ["//p:t"]);
    // The root `.gitignore`, in no package.
    ws.write(".gitignore", b"p/c.in\n");
    assert_eq!(build(&ws)["RAN"], ["//p:t"]);
    assert_eq!(out(&ws, "p/o.txt"), "a\nb\nd\n");
    // A `.gitignore` that ignores itself.
    ws.write("p/sub/.gitignore", b".gitignore\nd.in\n");
    assert_eq!(build(&ws)["RAN"], ["//p:t"]);
    assert_eq!(out(&ws, "p/o.txt"), "a\nb\n");
    age(ws.path());
    assert_eq!(srcs(&ws, "//p:t"), ["a.in", "b.in"]);
    ws.write("p/sub/.gitignore", b".gitignore\n");
    assert_eq!(srcs(&ws, "//p:t"), ["a.in", "b.in", "sub/d.in"]);
}

/// Regression (issue 15, item 12): the listing turned `\` in file names into `/`, so `glob()`
/// returned paths that do not exist (`x/y.in` for the file `x\y.in`), and a file named
/// `..\q\BUILD` made a package `//p/../q` that broke the build. A `\` is an ordinary character.
#[test]
fn file_names_with_backslashes_are_listed_as_they_are() {
    let ws = Ws::new()
        .file("p/a.in", "a\n")
        .file("p/x\\y.in", "xy\n")
        .file("p/..\\q\\BUILD", "task(name = \"evil\", cmd = \"true\")\n")
        .file("q/BUILD", "task(name = \"u\", cmd = \"true\")\n")
        .file(
            "p/BUILD",
            "task(name = \"t\", srcs = glob([\"**/*.in\"]), outs = [\"o.txt\"], cmd = \"cat $(SRCS) > o.txt\")\n",
        );
    assert_eq!(ws.run(&["query", "//..."]).ok(), "//p:t\n//q:u\n");
    assert_eq!(srcs(&ws, "//p:t"), ["a.in", "x\\y.in"]);
    assert_eq!(build(&ws)["RAN"], ["//p:t", "//q:u"]);
    assert_eq!(out(&ws, "p/o.txt"), "a\nxy\n");
}

/// Regression (issue 15, item 13): `glob()` returned symlinks to directories (a venv's
/// `lib64 -> lib`) and dangling ones, although the docs say files only; the task then failed
/// with "cannot read source". A symlink to a file is a file; any other symlink is skipped, and
/// one whose target appears or changes kind changes the listing.
#[test]
fn glob_returns_files_and_symlinks_to_files_only() {
    let ws = Ws::new()
        .file("p/lib/a.in", "a\n")
        .file(".gitignore", "hidden/\n")
        .file("hidden/.keep", "")
        .file(
            "p/BUILD",
            "task(name = \"t\", srcs = glob([\"**/*.in\", \"lib64\"]), outs = [\"o.txt\"], cmd = \"cat $(SRCS) > o.txt\")\n",
        );
    link(&ws, "lib", "p/lib64");
    link(&ws, "lib/a.in", "p/link.in");
    link(&ws, "../hidden/n.in", "p/dangling.in");
    link(&ws, "lib", "p/dir.in");
    age(ws.path());
    assert_eq!(srcs(&ws, "//p:t"), ["lib/a.in", "link.in"]);
    build(&ws);
    assert_eq!(build(&ws)["CACHED"], ["//p:t"]);
    assert_eq!(out(&ws, "p/o.txt"), "a\na\n");
    // The dangling link's target appears, in a directory the walk does not enter: the link
    // leads to a file now, although no walked directory changed.
    std::fs::write(ws.path().join("hidden/n.in"), "n\n").unwrap();
    assert_eq!(build(&ws)["RAN"], ["//p:t"]);
    assert_eq!(out(&ws, "p/o.txt"), "n\na\na\n");
}
