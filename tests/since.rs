//! `--since REF` through the binary, on git fixtures made here: exactly the targets whose
//! static keys differ are selected (by content), whatever the kind of edit; a shallow clone
//! with enough history answers the same; one without REF gets an error saying how to fetch it.

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::{git, Ws};

const PRELUDE_STAR: &str =
    "def checked(name, src):\n    task(name = name, srcs = [src], cmd = \"grep -q . \" + src)\n";

/// Three packages: `lib` (a source, a requirements file read by `deps` only), `app` (a task
/// using `//lib:gen`, and a macro from `//tools:defs.star`), `other`; committed on `main`.
fn fixture() -> Ws {
    let ws = Ws::bare()
        .file("flow.toml", "")
        .file(".gitignore", ".flow/\nflow-out/\n")
        .file("tools/BUILD", "")
        .file("tools/defs.star", PRELUDE_STAR)
        .file("lib/x.txt", "x\n")
        .file("lib/requirements.txt", "ruff==0.1\n")
        .file("lib/notes.md", "not read by anything\n")
        .file(
            "lib/BUILD",
            "task(name = \"gen\", srcs = [\"x.txt\"], outs = [\"g.txt\"], cmd = \"cp x.txt g.txt\")\n\
             task(name = \"deps\", srcs = [\"requirements.txt\"], cmd = \"grep -q ruff requirements.txt\")\n",
        )
        .file("app/a.txt", "a\n")
        .file(
            "app/BUILD",
            "load(\"//tools:defs.star\", \"checked\")\n\
             task(name = \"use\", deps = [\"//lib:gen\"], cmd = \"cat $(location //lib:gen)\")\n\
             checked(name = \"check\", src = \"a.txt\")\n",
        )
        .file("other/o.txt", "o\n")
        .file("other/BUILD", "task(name = \"o\", srcs = [\"o.txt\"], cmd = \"cat o.txt\")\n");
    git(ws.path(), &["init", "-q", "-b", "main"]);
    commit(ws.path(), "base");
    ws
}

fn commit(dir: &Path, message: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", message]);
}

fn affected(ws: &Ws, since: &str) -> BTreeSet<String> {
    let run = ws.run(&["affected", "--since", since]);
    run.ok().lines().map(str::to_owned).collect()
}

fn set(labels: &[&str]) -> BTreeSet<String> {
    labels.iter().map(|l| (*l).to_owned()).collect()
}

/// Each kind of edit selects exactly what reads it, transitively, and nothing else.
#[test]
fn each_kind_of_edit_selects_exactly_what_it_reaches() {
    type Edit<'a> = &'a dyn Fn(&Ws);
    let cases: [(&str, Edit, &[&str]); 7] = [
        ("nothing", &|_| {}, &[]),
        (
            "a file nothing reads",
            &|ws| ws.write("lib/notes.md", b"edited\n"),
            &[],
        ),
        (
            "a source",
            &|ws| ws.write("lib/x.txt", b"x2\n"),
            &["//lib:gen", "//app:use"],
        ),
        (
            "a whitespace-only source edit",
            &|ws| ws.write("app/a.txt", b"a \n"),
            &["//app:check"],
        ),
        (
            "a requirements file",
            &|ws| ws.write("lib/requirements.txt", b"ruff==0.2\n"),
            &["//lib:deps"],
        ),
        (
            "a BUILD edit",
            &|ws| {
                let build = std::fs::read_to_string(ws.path().join("other/BUILD")).unwrap();
                ws.write(
                    "other/BUILD",
                    build.replace("cat o.txt", "cat -n o.txt").as_bytes(),
                );
            },
            &["//other:o"],
        ),
        (
            "a .star macro edit",
            &|ws| {
                ws.write(
                    "tools/defs.star",
                    PRELUDE_STAR.replace("grep -q .", "grep -q a").as_bytes(),
                )
            },
            &["//app:check"],
        ),
    ];
    for (what, edit, expected) in cases {
        let ws = fixture();
        edit(&ws);
        assert_eq!(
            affected(&ws, "main"),
            set(expected),
            "{what} (working tree)"
        );
        // Committed, the same answer against the commit before.
        commit(ws.path(), what);
        assert_eq!(affected(&ws, "HEAD~1"), set(expected), "{what} (committed)");
    }
}

/// A renamed source and a deleted package: the readers of the new name are affected; a
/// deleted package's targets are simply gone (nothing to build), its dependents affected.
#[test]
fn a_rename_and_a_deleted_package() {
    let ws = fixture();
    std::fs::rename(ws.path().join("other/o.txt"), ws.path().join("other/p.txt")).unwrap();
    let build = std::fs::read_to_string(ws.path().join("other/BUILD")).unwrap();
    ws.write("other/BUILD", build.replace("o.txt", "p.txt").as_bytes());
    assert_eq!(affected(&ws, "main"), set(&["//other:o"]));
    let ws = fixture();
    std::fs::remove_dir_all(ws.path().join("other")).unwrap();
    assert_eq!(affected(&ws, "main"), set(&[]));
}

/// `flow build --since` builds the affected targets only, and says so when there are none.
#[test]
fn build_since_builds_only_the_affected_targets() {
    let ws = fixture();
    let none = ws.run(&["build", "--since", "main"]);
    assert!(
        none.ok()
            .contains("none of the 5 selected target(s) is affected since"),
        "{}",
        none.stdout
    );
    ws.write("lib/x.txt", b"x2\n");
    let run = ws.run(&["build", "--since", "main"]);
    let ran: BTreeSet<String> = run.tagged("RAN").into_iter().collect();
    assert_eq!(ran, set(&["//app:use", "//lib:gen"]), "{}", run.stdout);
}

/// A shallow clone with REF in its history answers the same; without it, a clear error that
/// says how to fetch it, never "everything".
#[test]
fn a_shallow_clone_answers_the_same_or_says_how_to_fetch() {
    let origin = fixture();
    origin.write("lib/x.txt", b"x2\n");
    commit(origin.path(), "second");
    origin.write("other/o.txt", b"o2\n");
    commit(origin.path(), "third");
    let url = format!("file://{}", origin.path().display());
    let deep = tempfile::tempdir().unwrap();
    git(deep.path(), &["clone", "-q", "--depth", "3", &url, "c"]);
    let clone = deep.path().join("c");
    let run = |args: &[&str]| {
        std::process::Command::new(crate::support::flow_bin())
            .arg("-C")
            .arg(&clone)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["affected", "--since", "HEAD~2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "//app:use\n//lib:gen\n//other:o\n"
    );
    let shallow = tempfile::tempdir().unwrap();
    git(shallow.path(), &["clone", "-q", "--depth", "1", &url, "c"]);
    let out = std::process::Command::new(crate::support::flow_bin())
        .arg("-C")
        .arg(shallow.path().join("c"))
        .args(["build", "--since", "HEAD~2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a commit of this clone (a shallow clone)"),
        "{stderr}"
    );
    assert!(stderr.contains("git fetch"), "{stderr}");
}
