//! `--since REF` through the binary, on git fixtures made here: exactly the targets whose
//! static keys differ are selected (by content), whatever the kind of edit; a shallow clone
//! with enough history answers the same; one without REF gets an error saying how to fetch it.

use std::collections::BTreeSet;
use std::path::Path;

use proptest::prelude::*;

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

/// An edit of the generated workspace below.
#[derive(Clone, Debug)]
enum Edit {
    /// New bytes in `pK/x.txt`, read by `pK:gen`.
    Source(usize, String),
    /// A file nothing reads.
    Unread(usize),
    /// `pK:use`'s command.
    Command(usize),
}

fn chain_build(p: usize, variant: u32) -> String {
    let dep = if p == 0 {
        String::new()
    } else {
        format!(", \"//p{}:gen\"", p - 1)
    };
    format!(
        "task(name = \"gen\", srcs = [\"x.txt\"], outs = [\"g.txt\"], cmd = \"cp x.txt g.txt\")\n\
         task(name = \"use\", deps = [\":gen\"{dep}], cmd = \"cat $(location :gen) # {variant}\")\n"
    )
}

fn chain(n: usize) -> Ws {
    let mut ws = Ws::bare()
        .file("flow.toml", "")
        .file(".gitignore", ".flow/\nflow-out/\n");
    for p in 0..n {
        ws = ws
            .file(&format!("p{p}/x.txt"), &format!("{p}\n"))
            .file(&format!("p{p}/unread.txt"), "-\n")
            .file(&format!("p{p}/BUILD"), &chain_build(p, 0));
    }
    git(ws.path(), &["init", "-q", "-b", "main"]);
    commit(ws.path(), "base");
    ws
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// For random edits between two commits: `--since` selects exactly the targets the edits
    /// reach (so nothing whose static key is unchanged), and that is a superset of what a
    /// build after a build of the base runs.
    #[test]
    fn since_selects_what_the_edits_reach_and_covers_what_runs(
        n in 2usize..5,
        edits in proptest::collection::vec(
            proptest::prop_oneof![
                (0usize..5, "[a-z]{1,4}").prop_map(|(p, s)| Edit::Source(p, s)),
                (0usize..5).prop_map(Edit::Unread),
                (0usize..5).prop_map(Edit::Command),
            ],
            0..4,
        ),
    ) {
        let ws = chain(n);
        ws.run(&["build", "//..."]).ok();
        let mut expected = BTreeSet::new();
        for (i, edit) in edits.iter().enumerate() {
            match edit {
                Edit::Source(p, text) if *p < n => {
                    let old = std::fs::read_to_string(ws.path().join(format!("p{p}/x.txt"))).unwrap();
                    let new = format!("{text}\n");
                    if old != new {
                        ws.write(&format!("p{p}/x.txt"), new.as_bytes());
                        expected.insert(format!("//p{p}:gen"));
                        expected.insert(format!("//p{p}:use"));
                        if p + 1 < n {
                            expected.insert(format!("//p{}:use", p + 1));
                        }
                    }
                }
                Edit::Unread(p) if *p < n => ws.write(&format!("p{p}/unread.txt"), format!("{i}\n").as_bytes()),
                Edit::Command(p) if *p < n => {
                    ws.write(&format!("p{p}/BUILD"), chain_build(*p, i as u32 + 1).as_bytes());
                    expected.insert(format!("//p{p}:use"));
                }
                _ => {}
            }
        }
        commit(ws.path(), "edits");
        let selected = affected(&ws, "HEAD~1");
        prop_assert_eq!(&selected, &expected);
        let run = ws.run(&["build", "//..."]);
        let ran: BTreeSet<String> = run.tagged("RAN").into_iter().collect();
        prop_assert!(ran.is_subset(&selected), "ran {:?}, selected {:?}", ran, selected);
    }
}

/// `chmod +x` of a source is in the action key, and so affects its readers.
#[test]
fn a_chmod_of_a_source_affects_its_readers() {
    use std::os::unix::fs::PermissionsExt;
    let ws = fixture();
    let path = ws.path().join("other/o.txt");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(affected(&ws, "main"), set(&["//other:o"]));
}

/// The base is read without touching the repository: no worktree is left registered, the
/// index (what is staged) is as it was.
#[test]
fn the_base_is_read_without_touching_the_repository() {
    let ws = fixture();
    ws.write("lib/x.txt", b"staged\n");
    git(ws.path(), &["add", "lib/x.txt"]);
    ws.write("lib/x.txt", b"unstaged\n");
    let status = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .current_dir(ws.path())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (worktrees, staged) = (status(&["worktree", "list"]), status(&["diff", "--cached"]));
    assert_eq!(affected(&ws, "main"), set(&["//app:use", "//lib:gen"]));
    assert_eq!(status(&["worktree", "list"]), worktrees);
    assert_eq!(status(&["diff", "--cached"]), staged);
}

/// The base's files are written under the cache's `tmp/`, never the system's temp directory:
/// nothing is left there after a run, and what a run killed midway leaves is swept by the next
/// build (regression: a kill -9 left `flow-base-*` directories in `$TMPDIR`).
#[test]
fn a_killed_since_leaves_nothing_the_next_build_does_not_sweep() {
    let ws = fixture();
    ws.write("lib/x.txt", b"edited\n");
    let tmpdir = tempfile::tempdir().unwrap();
    let flow = |args: &[&str]| {
        let mut cmd = std::process::Command::new(crate::support::flow_bin());
        cmd.current_dir(ws.path())
            .args(args)
            .env("TMPDIR", tmpdir.path())
            .env_remove("FLOW_CACHE_DIR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    };
    assert!(flow(&["affected", "--since", "main"])
        .status()
        .unwrap()
        .success());
    for delay_ms in [5, 15, 30, 60, 120] {
        let mut child = flow(&["affected", "--since", "main"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(
        std::fs::read_dir(tmpdir.path()).unwrap().count(),
        0,
        "nothing in $TMPDIR"
    );
    assert!(flow(&["build", "--since", "main"])
        .status()
        .unwrap()
        .success());
    let left: Vec<_> = std::fs::read_dir(ws.path().join(".flow/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "swept: {left:?}");
    assert_eq!(std::fs::read_dir(tmpdir.path()).unwrap().count(), 0);
}

/// Regression (issue 17's benchmark): after two `--since` builds, an in-place edit of a source
/// that the previous plan did not read must still be selected. The build record stamps only the
/// plan's inputs, while under `--since` the selection depends on every file: it was reused, and
/// the build said `0 ran, N cached` while `flow affected` listed the edited target.
#[test]
fn an_edit_outside_the_last_since_plan_is_built() {
    let ws = fixture();
    // A source in a subdirectory: its package's directory listing does not change with it.
    ws.write("far/src/f.txt", b"f\n");
    ws.write(
        "far/BUILD",
        b"task(name = \"f\", srcs = [\"src/f.txt\"], cmd = \"cat src/f.txt\")\n",
    );
    commit(ws.path(), "far");
    ws.write("lib/x.txt", b"edited\n");
    // Every file older than the racy window, so that the record trusts its stamps.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The second build's record is written once the first one's outputs are old enough to be
    // trusted by their stamps.
    for _ in 0..2 {
        let run = ws.run(&["build", "--since", "main"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(ws.path().join("far/src/f.txt"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"more\n").unwrap();
    drop(f);
    let run = ws.run(&["build", "--since", "main"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("[RAN] //far:f"), "{}", run.stdout);
    assert_eq!(
        affected(&ws, "main"),
        set(&["//app:use", "//far:f", "//lib:gen"])
    );
}

/// A change for the quick-answer proptest below.
#[derive(Clone, Debug)]
enum Change {
    /// New bytes in `pK/x.txt` (read by `pK:gen`).
    Source(usize, String),
    /// `chmod +x pK/x.txt`.
    Chmod(usize),
    /// New bytes in a file nothing reads.
    Unread(usize),
    /// A new file in `pK` (tracked when committed, untracked otherwise).
    Add(usize),
    /// `pK/unread.txt` removed.
    Delete(usize),
    /// `pK:use`'s command edited.
    Build(usize),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// `--since` answers from git's diff when only sources changed (`affected/quick.rs`), and
    /// from static keys of both sides otherwise: for random changes, committed or left in the
    /// working tree, the answer is the same set as the static keys' (`FLOW_SINCE_FULL=1`).
    #[test]
    fn the_quick_answer_is_the_static_keys_answer(
        n in 2usize..5,
        changes in proptest::collection::vec(
            proptest::prop_oneof![
                4 => (0usize..5, "[a-z]{1,4}").prop_map(|(p, s)| Change::Source(p, s)),
                1 => (0usize..5).prop_map(Change::Chmod),
                2 => (0usize..5).prop_map(Change::Unread),
                1 => (0usize..5).prop_map(Change::Add),
                1 => (0usize..5).prop_map(Change::Delete),
                1 => (0usize..5).prop_map(Change::Build),
            ],
            0..4,
        ),
        committed in proptest::bool::ANY,
    ) {
        use std::os::unix::fs::PermissionsExt;
        let ws = chain(n);
        for (i, change) in changes.iter().enumerate() {
            let p = match change {
                Change::Source(p, _) | Change::Chmod(p) | Change::Unread(p) | Change::Add(p)
                | Change::Delete(p) | Change::Build(p) => *p,
            };
            if p >= n {
                continue;
            }
            match change {
                Change::Source(_, text) => ws.write(&format!("p{p}/x.txt"), format!("{text}\n").as_bytes()),
                Change::Chmod(_) => {
                    let path = ws.path().join(format!("p{p}/x.txt"));
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
                }
                Change::Unread(_) => {
                    if ws.path().join(format!("p{p}/unread.txt")).exists() {
                        ws.write(&format!("p{p}/unread.txt"), format!("{i}\n").as_bytes());
                    }
                }
                Change::Add(_) => ws.write(&format!("p{p}/new{i}.txt"), b"new\n"),
                Change::Delete(_) => {
                    let _ = std::fs::remove_file(ws.path().join(format!("p{p}/unread.txt")));
                }
                Change::Build(_) => ws.write(&format!("p{p}/BUILD"), chain_build(p, i as u32 + 1).as_bytes()),
            }
        }
        let base = if committed {
            commit(ws.path(), "changes");
            "HEAD~1"
        } else {
            "HEAD"
        };
        let answer = |full: &str| -> BTreeSet<String> {
            let run = ws.run_env(ws.path(), &["affected", "--since", base], &[("FLOW_SINCE_FULL", full)]);
            run.ok().lines().map(str::to_owned).collect()
        };
        prop_assert_eq!(answer("0"), answer("1"), "changes {:?}", changes);
    }
}

/// The quick answer is taken when only sources, BUILD or `.star` files changed in place (the
/// BUILD files' text at the commit evaluated over the same files), and not after a file is
/// added.
#[test]
fn only_source_edits_take_the_quick_answer() {
    let ws = chain(3);
    ws.write("p1/x.txt", b"edited\n");
    let how = |ws: &Ws| {
        let run = ws.run_env(
            ws.path(),
            &["affected", "--since", "HEAD"],
            &[("FLOW_PROFILE", "1")],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        (
            run.stdout.clone(),
            run.stderr.contains("affected set, from git's diff"),
        )
    };
    assert_eq!(
        how(&ws),
        ("//p1:gen\n//p1:use\n//p2:use\n".to_owned(), true)
    );
    ws.write("p0/BUILD", chain_build(0, 9).as_bytes());
    assert_eq!(
        how(&ws),
        ("//p0:use\n//p1:gen\n//p1:use\n//p2:use\n".to_owned(), true)
    );
    ws.write("p2/new.txt", b"new\n");
    git(ws.path(), &["add", "p2/new.txt"]);
    assert_eq!(
        how(&ws),
        ("//p0:use\n//p1:gen\n//p1:use\n//p2:use\n".to_owned(), false)
    );
}

/// Regression (adversarial run): where `git diff` does not show every change (file modes
/// ignored, entries assumed unchanged or skipped, line ends converted), the quick answer is not
/// taken, and `--since` still answers by content.
#[test]
fn a_repository_that_hides_changes_from_git_diff_is_answered_by_content() {
    use std::os::unix::fs::PermissionsExt;
    let answer = |ws: &Ws, full: &str| -> BTreeSet<String> {
        let run = ws.run_env(
            ws.path(),
            &["affected", "--since", "HEAD"],
            &[("FLOW_SINCE_FULL", full)],
        );
        run.ok().lines().map(str::to_owned).collect()
    };
    // `edited`: whether `p0/x.txt` differs by content from the commit's checkout.
    let check = |setup: &dyn Fn(&Ws), edited: bool| {
        let ws = chain(2);
        setup(&ws);
        let quick = answer(&ws, "0");
        assert_eq!(answer(&ws, "1"), quick);
        assert_eq!(quick.contains("//p0:gen"), edited, "{quick:?}");
    };
    check(
        &|ws| {
            git(ws.path(), &["config", "core.fileMode", "false"]);
            let path = ws.path().join("p0/x.txt");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        },
        true,
    );
    check(
        &|ws| {
            git(
                ws.path(),
                &["update-index", "--assume-unchanged", "p0/x.txt"],
            );
            ws.write("p0/x.txt", b"hidden\n");
        },
        true,
    );
    check(
        &|ws| {
            git(ws.path(), &["update-index", "--skip-worktree", "p0/x.txt"]);
            ws.write("p0/x.txt", b"hidden\n");
        },
        true,
    );
    // Git told not to trust the ctime: an edit keeping size and mtime is missed by its stat.
    check(
        &|ws| {
            git(ws.path(), &["config", "core.trustctime", "false"]);
            let path = ws.path().join("p0/x.txt");
            let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
            ws.write("p0/x.txt", b"9\n");
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(mtime).unwrap();
        },
        true,
    );
    // Checked out with CRLF line ends, the commit's `0\n` is `0\r\n`: as in the work tree.
    check(
        &|ws| {
            ws.write(".gitattributes", b"*.txt text eol=crlf\n");
            commit(ws.path(), "attributes");
            ws.write("p0/x.txt", b"0\r\n");
        },
        false,
    );
}

/// Regression (adversarial run): a committed source that is a symlink leading out of the
/// repository, or to an ignored file, dangled in the commit's copy, so the base did not evaluate
/// and every target counted as affected. Such a link now reaches the same file from the copy.
#[test]
fn a_source_linked_out_of_the_repository_is_not_always_affected() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("ext.txt"), "ext\n").unwrap();
    let ws = chain(2)
        .file("q/c.txt", "c\n")
        .file("q/ignored/i.txt", "i\n")
        .file(".gitignore", ".flow/\nflow-out/\nq/ignored/\n")
        .file(
            "q/BUILD",
            "task(name = \"ext\", srcs = [\"c.txt\", \"ext.txt\"], cmd = \"cat ext.txt\")\n\
             task(name = \"ign\", srcs = [\"ig.txt\"], cmd = \"cat ig.txt\")\n",
        );
    // Relative, as links in a repository are: `../../<outside>/ext.txt` (both in the temp dir).
    assert_eq!(outside.path().parent(), ws.path().parent());
    let name = outside.path().file_name().unwrap().to_str().unwrap();
    std::os::unix::fs::symlink(format!("../../{name}/ext.txt"), ws.path().join("q/ext.txt"))
        .unwrap();
    std::os::unix::fs::symlink("ignored/i.txt", ws.path().join("q/ig.txt")).unwrap();
    commit(ws.path(), "links");
    let run = ws.run(&["affected", "--since", "HEAD"]);
    assert_eq!((run.ok(), run.stderr.as_str()), ("", ""));
    std::fs::write(outside.path().join("ext.txt"), "changed\n").unwrap();
    assert_eq!(
        affected(&ws, "HEAD"),
        set(&[]),
        "the link reaches the same file on both sides"
    );
    ws.write("q/c.txt", b"edited\n");
    assert_eq!(affected(&ws, "HEAD"), set(&["//q:ext"]));
}

/// Regressions (third adversarial run): the quick answer and the static keys' must agree when
/// a BUILD or `.star` file is also a source, when one is reached through a link, when a module
/// is loaded from an ignored file, and when flow's own directory is not ignored.
#[test]
fn the_quick_answer_agrees_where_analysis_files_are_more_than_that() {
    let both = |ws: &Ws| -> (BTreeSet<String>, BTreeSet<String>) {
        let answer = |full: &str| -> BTreeSet<String> {
            let run = ws.run_env(
                ws.path(),
                &["affected", "--since", "HEAD"],
                &[("FLOW_SINCE_FULL", full)],
            );
            assert!(run.code == 0, "{}", run.stderr);
            run.stdout.lines().map(str::to_owned).collect()
        };
        (answer("0"), answer("1"))
    };
    let case = |files: &[(&str, &str)], ignore: &str, edit: &dyn Fn(&Ws), expect: &[&str]| {
        let mut ws = Ws::bare().file("flow.toml", "").file(".gitignore", ignore);
        for (path, text) in files {
            ws = ws.file(path, text);
        }
        for (path, text) in files {
            if let Some(target) = text.strip_prefix("->") {
                let p = ws.path().join(path);
                std::fs::remove_file(&p).unwrap();
                std::os::unix::fs::symlink(target, &p).unwrap();
            }
        }
        git(ws.path(), &["init", "-q", "-b", "main"]);
        commit(ws.path(), "base");
        edit(&ws);
        let (quick, full) = both(&ws);
        assert_eq!(quick, full, "{files:?}");
        assert_eq!(quick, set(expect), "{files:?}");
    };
    let ignore = ".flow/\nflow-out/\n";
    // A BUILD file read as a source, edited and then only chmod-ed.
    let build_src = [(
        "a/BUILD",
        "task(name = \"x\", srcs = glob([\"**\"]), cmd = \"cat BUILD\")\ntask(name = \"y\", cmd = \"echo 1\")\n",
    )];
    case(
        &build_src,
        ignore,
        &|ws| {
            let text = std::fs::read_to_string(ws.path().join("a/BUILD")).unwrap();
            ws.write("a/BUILD", text.replace("echo 1", "echo 2").as_bytes());
        },
        &["//a:x", "//a:y"],
    );
    case(
        &build_src,
        ignore,
        &|ws| {
            use std::os::unix::fs::PermissionsExt;
            let p = ws.path().join("a/BUILD");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        },
        &["//a:x"],
    );
    // A `.star` file read as a source.
    case(
        &[
            ("lib/defs.star", "C = 1\n"),
            (
                "lib/BUILD",
                "task(name = \"x\", srcs = [\"defs.star\"], cmd = \"cat defs.star\")\n",
            ),
        ],
        ignore,
        &|ws| ws.write("lib/defs.star", b"C = 2\n"),
        &["//lib:x"],
    );
    // A module reached through a link (the edit is to the link's target).
    case(
        &[
            ("b/impl.star", "C = \"one\"\n"),
            ("b/defs.star", "->impl.star"),
            ("b/BUILD", ""),
            (
                "a/BUILD",
                "load(\"//b:defs.star\", \"C\")\ntask(name = \"x\", cmd = \"echo \" + C)\n",
            ),
        ],
        ignore,
        &|ws| ws.write("b/impl.star", b"C = \"two\"\n"),
        &["//a:x"],
    );
    // A BUILD file that is a link to another package's.
    case(
        &[
            ("b/BUILD", "task(name = \"x\", cmd = \"echo one\")\n"),
            ("a/BUILD", "->../b/BUILD"),
        ],
        ignore,
        &|ws| ws.write("b/BUILD", b"task(name = \"x\", cmd = \"echo two\")\n"),
        &["//a:x", "//b:x"],
    );
    // flow's own directory not ignored (a source edit: the quick answer, the same).
    case(
        &[
            ("s/x.txt", "1\n"),
            (
                "s/BUILD",
                "task(name = \"x\", srcs = [\"x.txt\"], cmd = \"cat x.txt\")\n",
            ),
        ],
        "",
        &|ws| {
            ws.run(&["affected", "--since", "HEAD"]);
            ws.write("s/x.txt", b"2\n");
        },
        &["//s:x"],
    );
}

/// A module loaded from an ignored, uncommitted file: the commit cannot evaluate without it,
/// so both answers are "everything" (with a warning), never a narrower quick one.
#[test]
fn a_module_loaded_from_an_ignored_file_is_not_answered_quickly() {
    let ws = Ws::bare()
        .file("flow.toml", "")
        .file(".gitignore", ".flow/\nflow-out/\ngen/\n")
        .file("gen/BUILD", "")
        .file("gen/defs.star", "C = 1\n")
        .file("a/BUILD", "load(\"//gen:defs.star\", \"C\")\ntask(name = \"x\", cmd = \"echo %d\" % C)\ntask(name = \"y\", cmd = \"echo y\")\n");
    git(ws.path(), &["init", "-q", "-b", "main"]);
    commit(ws.path(), "base");
    ws.write("gen/defs.star", b"C = 2\n");
    let quick = ws.run_env(
        ws.path(),
        &["affected", "--since", "HEAD"],
        &[("FLOW_PROFILE", "1")],
    );
    let full = ws.run_env(
        ws.path(),
        &["affected", "--since", "HEAD"],
        &[("FLOW_SINCE_FULL", "1")],
    );
    assert_eq!(quick.stdout, full.stdout);
    assert!(
        !quick.stderr.contains("from git's diff"),
        "{}",
        quick.stderr
    );
}

/// Errors that say what is wrong with REF (third adversarial run: a tree, or a commit the
/// repository's history does not reach, was answered "fetch it").
#[test]
fn a_ref_that_is_no_commit_says_which_way_it_is_not() {
    let ws = fixture();
    let tree = ws.run(&["affected", "--since", "HEAD^{tree}"]);
    assert_eq!(tree.code, 2);
    crate::support::golden("since_not_a_commit", &tree.stderr);
    let short = ws.run(&["affected", "--since", "HEAD~5"]);
    assert_eq!(short.code, 2);
    crate::support::golden("since_history_too_short", &short.stderr);
}

/// The same where only the commit's text of a BUILD file loads the ignored module (the working
/// tree's no longer does): the commit's evaluation reads a file it does not hold.
#[test]
fn a_commits_load_of_an_ignored_module_is_not_answered_quickly() {
    let ws = Ws::bare()
        .file("flow.toml", "")
        .file(".gitignore", ".flow/\nflow-out/\ngen/\n")
        .file("gen/BUILD", "")
        .file("gen/defs.star", "C = 1\n")
        .file("a/BUILD", "load(\"//gen:defs.star\", \"C\")\ntask(name = \"x\", cmd = \"echo %d\" % C)\ntask(name = \"y\", cmd = \"echo y\")\n");
    git(ws.path(), &["init", "-q", "-b", "main"]);
    commit(ws.path(), "base");
    ws.write(
        "a/BUILD",
        b"task(name = \"x\", cmd = \"echo 1\")\ntask(name = \"y\", cmd = \"echo y\")\n",
    );
    let quick = ws.run(&["affected", "--since", "HEAD"]);
    let full = ws.run_env(
        ws.path(),
        &["affected", "--since", "HEAD"],
        &[("FLOW_SINCE_FULL", "1")],
    );
    assert_eq!(
        (quick.code, quick.stdout.as_str()),
        (full.code, full.stdout.as_str())
    );
}
