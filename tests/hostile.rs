//! Hostile cache content never writes outside `flow-out/`. A cache directory may be shared or
//! restored from elsewhere, so every result is data to check, not to trust. Through the real
//! binary, with results forged in the SQLite database (under the key of the target's last run,
//! read from `action_runs`) and tree manifests forged in the CAS:
//! - output paths that are absolute, hold `..`, are longer than 4096 bytes, have a 300-byte
//!   segment or a newline, are not the declared ones, or have the wrong kind;
//! - tree manifests with entries escaping through `..` or an absolute path, symlinks to outside
//!   (absolute, relative, through a chain of symlinks, through a chain longer than the kernel
//!   follows), an entry below a symlink, an over-long path, an unknown key;
//! - `flow-out/pkg`, a directory below it, an output, a tree or a tree's marker swapped for a
//!   symlink to a sentinel outside the workspace before a restore.
//!
//! Each forged result is refused with one warning line and the action runs again (the build
//! succeeds); each swapped link is replaced by a real directory or file. A sentinel directory
//! outside the workspace, the target of every escape, stays empty (or unchanged) throughout.
//!
//! Also the regressions found on the way: an output with a 250-byte name could not be restored
//! (the temp file's name was too long); an output `gen` that became `gen/a.txt` failed forever
//! (the old file blocked the directory); a result listing none of the declared outputs, and a
//! directory output swapped for a link, passed as up to date; clearing old outputs before a run
//! deleted through a linked directory, outside the workspace.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use flow_cache::Digest;

use crate::corruption::{blob_path, one_warning, quiet_ok, snapshot, workspace, Entry};
use crate::support::Ws;

const FILES: &[(&str, &str)] = &[(
    "p/BUILD",
    r#"task(name = "f", outs = ["f.txt"], cmd = "echo fine > f.txt")
task(name = "t", outs = ["site/"], cmd = "mkdir -p site/sub && echo page > site/sub/index.html")
task(name = "deep", outs = ["sub/dir/d.txt"], cmd = "echo deep > sub/dir/d.txt")
"#,
)];

/// A directory outside the workspace (a sibling of it in the temp directory) that every escape
/// aims at; it must stay as it was made.
struct Sentinel {
    dir: tempfile::TempDir,
}

impl Sentinel {
    fn new() -> Sentinel {
        Sentinel {
            dir: tempfile::Builder::new()
                .prefix("flow-sentinel")
                .tempdir()
                .unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn name(&self) -> String {
        self.path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// The sentinel as seen from a directory `depth` levels below the workspace's parent: from
    /// `<ws>/flow-out/p` (depth 3) it is `../../../<name>`.
    fn relative(&self, depth: usize) -> String {
        format!("{}{}", "../".repeat(depth), self.name())
    }

    #[track_caller]
    fn assert_untouched(&self, expected: &[(&str, &str)]) {
        let found: Vec<(String, Entry)> = snapshot(self.path()).into_iter().collect();
        let expected: Vec<(String, Entry)> = expected
            .iter()
            .map(|(name, text)| {
                (
                    name.to_string(),
                    Entry::File {
                        bytes: text.as_bytes().to_vec(),
                        executable: false,
                    },
                )
            })
            .collect();
        assert_eq!(found, expected, "something outside flow-out/ was changed");
    }
}

/// A workspace holding `FILES`, built once, and a sentinel beside it.
fn built() -> (Ws, Sentinel) {
    let ws = workspace(FILES);
    // The relative escapes count levels from the temp directory both live in.
    assert_eq!(
        ws.path().parent(),
        Some(std::env::temp_dir().as_path()),
        "the workspace is directly in the temp directory"
    );
    quiet_ok(&ws.run(&["build"]));
    (ws, Sentinel::new())
}

fn db(ws: &Ws) -> rusqlite::Connection {
    rusqlite::Connection::open(ws.path().join(".flow/flow.db")).unwrap()
}

/// Replaces the `outputs` JSON of the result `label` last ran with.
fn forge_outputs(ws: &Ws, label: &str, outputs: &str) {
    let db = db(ws);
    let key: Vec<u8> = db
        .query_row(
            "SELECT key FROM action_runs WHERE label = ?1 ORDER BY id DESC LIMIT 1",
            [label],
            |r| r.get(0),
        )
        .unwrap();
    let changed = db
        .execute(
            "UPDATE action_results SET outputs = ?1 WHERE key = ?2",
            rusqlite::params![outputs, key],
        )
        .unwrap();
    assert_eq!(changed, 1, "no result for {label}");
}

/// Stores `bytes` in the CAS of `ws` as flow would (named by their digest, read-only).
fn put_blob(ws: &Ws, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    let path = blob_path(&ws.path().join(".flow"), &d);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if !path.exists() {
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    d
}

fn file_output(path: &str, content: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "path": path,
        "kind": "file",
        "digest": Digest::of(content).to_string(),
        "size": content.len(),
        "executable": false,
    })
}

/// Removes `rel` below `flow-out/` (file, link or directory), so that the next build restores.
fn unmaterialize(ws: &Ws, rel: &str) {
    let path = ws.path().join("flow-out").join(rel);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path).unwrap(),
        Ok(_) => std::fs::remove_file(&path).unwrap(),
        Err(_) => {}
    }
}

/// Builds `label`, which must be refused from the cache with one warning, run again, and leave
/// `flow-out/p/<out>` holding `content`.
#[track_caller]
fn refused_and_rerun(ws: &Ws, label: &str, out: &str, content: &str, case: &str) {
    let run = ws.run(&["build", label]);
    assert_eq!(run.code, 0, "{case}:\n{}\n{}", run.stdout, run.stderr);
    eprintln!("case: {case}");
    one_warning(&run, &[label, "cannot be restored", "running it again"]);
    assert_eq!(run.tagged("RAN"), [label], "{case}:\n{}", run.stdout);
    let got = std::fs::read_to_string(ws.path().join("flow-out/p").join(out)).unwrap();
    assert_eq!(got, content, "{case}");
}

#[test]
fn forged_output_paths_are_refused() {
    let (ws, sentinel) = built();
    let abs = sentinel.path().join("abs.txt").display().to_string();
    let up = format!("{}/up.txt", sentinel.relative(3));
    let up_inside = format!("x/../../../../{}/y", sentinel.name());
    let long = format!("{}f.txt", "a/".repeat(2100));
    let long_segment = "n".repeat(300);
    let fine = b"fine\n";
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("absolute", serde_json::json!([file_output(&abs, fine)])),
        ("dot-dot", serde_json::json!([file_output(&up, fine)])),
        (
            "dot-dot inside",
            serde_json::json!([file_output(&up_inside, fine)]),
        ),
        (
            "over 4096 bytes",
            serde_json::json!([file_output(&long, fine)]),
        ),
        (
            "300-byte segment",
            serde_json::json!([file_output(&long_segment, fine)]),
        ),
        (
            "an extra output",
            serde_json::json!([file_output("f.txt", fine), file_output(&up, fine)]),
        ),
        (
            "a newline",
            serde_json::json!([file_output("f.txt\nwarning: forged", fine)]),
        ),
        (
            "a tree where a file is declared",
            serde_json::json!([{"path": "f.txt", "kind": "tree",
                "digest": put_blob(&ws, br#"{"entries":[]}"#).to_string(), "size": 0}]),
        ),
    ];
    for (case, outputs) in cases {
        forge_outputs(&ws, "//p:f", &outputs.to_string());
        unmaterialize(&ws, "p/f.txt");
        refused_and_rerun(&ws, "//p:f", "f.txt", "fine\n", case);
        sentinel.assert_untouched(&[]);
    }
    // The newline never starts a line of its own.
    assert!(!ws.path().join("flow-out/p/f.txt\nwarning: forged").exists());
}

/// A tree result for `//p:t` whose manifest has `entries` (JSON).
fn forge_tree(ws: &Ws, manifest: &str) {
    let m = put_blob(ws, manifest.as_bytes());
    let outputs = serde_json::json!([{"path": "site", "kind": "tree",
        "digest": m.to_string(), "size": 5}]);
    forge_outputs(ws, "//p:t", &outputs.to_string());
}

fn file_entry(path: &str, content: &[u8]) -> String {
    serde_json::json!({"path": path, "digest": Digest::of(content).to_string(),
        "size": content.len(), "executable": false})
    .to_string()
}

fn link_entry(path: &str, target: &str) -> String {
    serde_json::json!({"path": path, "symlink": target}).to_string()
}

#[test]
fn forged_tree_manifests_are_refused() {
    let (ws, sentinel) = built();
    let page = b"page\n";
    put_blob(&ws, page);
    let index = file_entry("sub/index.html", page);
    // From `flow-out/p/site/`, the sentinel is four levels up.
    let up = sentinel.relative(4);
    let abs = sentinel.path().display().to_string();
    // l0 -> l1 -> ... -> l41 -> ../..: escapes only after more hops than the kernel follows.
    let mut long_chain: Vec<String> = (0..41)
        .map(|i| link_entry(&format!("l{i:02}"), &format!("l{:02}", i + 1)))
        .collect();
    long_chain.push(link_entry("l41", "../.."));
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "a file entry through ..",
            vec![file_entry(&format!("{up}/t.txt"), page), index.clone()],
        ),
        (
            "an absolute file entry",
            vec![file_entry(&format!("{abs}/t.txt"), page), index.clone()],
        ),
        (
            "an absolute symlink",
            vec![link_entry("out", &abs), index.clone()],
        ),
        (
            "a symlink through ..",
            vec![link_entry("out", &up), index.clone()],
        ),
        (
            "a chain of symlinks that escapes",
            vec![
                link_entry("a", "b/../.."),
                link_entry("b", "sub"),
                index.clone(),
            ],
        ),
        (
            "a chain of symlinks to the sentinel",
            vec![
                link_entry("a", "b"),
                link_entry("b", "c"),
                link_entry("c", &up),
                index.clone(),
            ],
        ),
        ("a chain longer than the kernel follows", {
            let mut v = long_chain.clone();
            v.push(index.clone());
            v
        }),
        (
            "a file below a symlink to outside",
            vec![
                link_entry("out", &up),
                file_entry("out/t.txt", page),
                index.clone(),
            ],
        ),
        (
            "a file below a symlink inside",
            vec![
                link_entry("in", "sub"),
                file_entry("in/t.txt", page),
                index.clone(),
            ],
        ),
        (
            "an entry over 4096 bytes",
            vec![
                file_entry(&format!("{}x", "d/".repeat(2100)), page),
                index.clone(),
            ],
        ),
    ];
    for (case, mut entries) in cases {
        entries.sort();
        forge_tree(&ws, &format!("{{\"entries\":[{}]}}", entries.join(",")));
        unmaterialize(&ws, "p/site");
        refused_and_rerun(&ws, "//p:t", "site/sub/index.html", "page\n", case);
        sentinel.assert_untouched(&[]);
    }
    // An unknown key: an older flow must not half-understand a newer manifest.
    forge_tree(&ws, &format!("{{\"entries\":[{index}],\"extra\":1}}"));
    unmaterialize(&ws, "p/site");
    refused_and_rerun(&ws, "//p:t", "site/sub/index.html", "page\n", "unknown key");
    sentinel.assert_untouched(&[]);
}

/// Swaps `flow-out/<rel>` for a symlink to `target`, builds, and checks that everything is
/// restored from the cache into real directories and files, with no warning.
#[track_caller]
fn swapped_for_a_link(ws: &Ws, rel: &str, target: &Path) {
    unmaterialize(ws, rel);
    symlink(target, ws.path().join("flow-out").join(rel)).unwrap();
    let run = ws.run(&["build"]);
    quiet_ok(&run);
    assert_eq!(
        run.tagged("RAN"),
        Vec::<String>::new(),
        "{rel}:\n{}",
        run.stdout
    );
    let out = ws.path().join("flow-out/p");
    for (file, content) in [
        ("f.txt", "fine\n"),
        ("site/sub/index.html", "page\n"),
        ("sub/dir/d.txt", "deep\n"),
    ] {
        assert_eq!(
            std::fs::read_to_string(out.join(file)).unwrap(),
            content,
            "{rel}"
        );
    }
    // Every directory and output below flow-out/ is real again.
    for (path, entry) in snapshot(&ws.path().join("flow-out")) {
        assert!(
            !matches!(entry, Entry::Link(_)),
            "{rel}: `{path}` is still a link"
        );
    }
}

/// Waits out the evaluation snapshot's 2 s racy window and builds once more, so that the next
/// builds take their evaluation from the snapshot. Otherwise each build after a change under
/// `flow-out/` evaluates afresh, and the sweep of undeclared files (`engine/stale.rs`) removes
/// a link at an undeclared path before any restore could meet it: the restore's own defences
/// would go untested.
fn settle(ws: &Ws) {
    std::thread::sleep(std::time::Duration::from_millis(2500));
    quiet_ok(&ws.run(&["build"]));
}

#[test]
fn links_swapped_into_flow_out_are_never_followed() {
    let (ws, sentinel) = built();
    settle(&ws);
    // A package directory, a directory below it, a directory output.
    swapped_for_a_link(&ws, "p", sentinel.path());
    sentinel.assert_untouched(&[]);
    swapped_for_a_link(&ws, "p/sub", sentinel.path());
    sentinel.assert_untouched(&[]);
    // (A directory output is judged by its marker alone: without the marker gone, the swap
    // goes unnoticed; see `a_directory_output_swapped_for_a_link_is_replaced`.)
    unmaterialize(&ws, "p/.site.flow-tree");
    swapped_for_a_link(&ws, "p/site", sentinel.path());
    sentinel.assert_untouched(&[]);
    // A link to a file outside, as an output and as a directory output's marker: replaced,
    // not written through.
    std::fs::write(sentinel.path().join("victim"), "victim\n").unwrap();
    swapped_for_a_link(&ws, "p/f.txt", &sentinel.path().join("victim"));
    sentinel.assert_untouched(&[("victim", "victim\n")]);
    unmaterialize(&ws, "p/site");
    swapped_for_a_link(&ws, "p/.site.flow-tree", &sentinel.path().join("victim"));
    sentinel.assert_untouched(&[("victim", "victim\n")]);
    // A relative link that climbs out of the workspace.
    unmaterialize(&ws, "p/sub/dir/d.txt");
    swapped_for_a_link(&ws, "p/sub", Path::new(&sentinel.relative(3)));
    sentinel.assert_untouched(&[("victim", "victim\n")]);
}

/// Regression: a directory output swapped for a link, its marker intact, was taken as up to
/// date (`Rebuilder::is_materialized` read the marker only), so the link stayed: dependents
/// staged the directory through it, reading (and able to write) the sentinel.
#[test]
fn a_directory_output_swapped_for_a_link_is_replaced() {
    let (ws, sentinel) = built();
    swapped_for_a_link(&ws, "p/site", sentinel.path());
    sentinel.assert_untouched(&[]);
}

/// Regression: a result that lists none of the declared outputs was taken as up to date
/// (`Rebuilder::is_materialized` checked the outputs the result lists, and there are none), so
/// the build passed without `flow-out/p/f.txt` and dependents got no input.
#[test]
fn a_result_missing_its_declared_output_is_refused() {
    let (ws, _sentinel) = built();
    forge_outputs(&ws, "//p:f", "[]");
    unmaterialize(&ws, "p/f.txt");
    refused_and_rerun(&ws, "//p:f", "f.txt", "fine\n", "no outputs");
}

/// Regression: an action that runs first clears its old outputs from `flow-out/`
/// (`engine/stale.rs`, `clear_outputs`). With `flow-out/p` swapped for a link to a directory
/// outside the workspace, that removal followed the link and deleted the sentinel's `f.txt`, a
/// file flow never wrote.
/// (After a fresh evaluation the sweep of undeclared files removes the link first, so the
/// build must come from the evaluation snapshot: nothing but a source changes.)
#[test]
fn clearing_old_outputs_never_deletes_through_a_link() {
    let ws = workspace(&[
        ("p/in.txt", "1\n"),
        (
            "p/BUILD",
            r#"task(name = "f", srcs = ["in.txt"], outs = ["f.txt"], cmd = "cat in.txt > f.txt")"#,
        ),
    ]);
    let sentinel = Sentinel::new();
    quiet_ok(&ws.run(&["build"]));
    settle(&ws);
    std::fs::write(sentinel.path().join("f.txt"), "victim\n").unwrap();
    unmaterialize(&ws, "p");
    symlink(sentinel.path(), ws.path().join("flow-out/p")).unwrap();
    ws.write("p/in.txt", b"2\n");
    quiet_ok(&ws.run(&["build"]));
    sentinel.assert_untouched(&[("f.txt", "victim\n")]);
    let got = std::fs::read_to_string(ws.path().join("flow-out/p/f.txt")).unwrap();
    assert_eq!(got, "2\n");
}

/// Regression: the temp file beside an output was named `.<name>.flow-tmp-<unique>`, which
/// for a name of ~230 bytes or more exceeds the 255-byte limit: the output could be produced
/// but never stored or restored ("cannot store its outputs").
#[test]
fn an_output_with_a_250_byte_name_is_stored_and_restored() {
    let name = "n".repeat(250);
    let ws = workspace(&[(
        "p/BUILD",
        &format!(r#"task(name = "x", outs = ["{name}"], cmd = "echo long > {name}")"#),
    )]);
    let run = ws.run(&["build"]);
    quiet_ok(&run);
    unmaterialize(&ws, "p");
    let run = ws.run(&["build"]);
    quiet_ok(&run);
    assert_eq!(run.tagged("CACHED").len(), 1, "{}", run.stdout);
    let got = std::fs::read_to_string(ws.path().join("flow-out/p").join(&name)).unwrap();
    assert_eq!(got, "long\n");
}

/// Regression: an output declared `gen` and later `gen/a.txt` left the file `flow-out/p/gen`
/// where the directory was needed: the action ran and then failed on every build ("cannot
/// create directory ... File exists"). Fixed in the restore (`real_dest` replaces a file in the
/// way); since then the sweep of undeclared outputs after a BUILD change removes it too.
#[test]
fn an_output_file_that_becomes_a_directory_is_restored() {
    let ws = workspace(&[(
        "p/BUILD",
        r#"task(name = "g", outs = ["gen"], cmd = "echo file > gen")"#,
    )]);
    quiet_ok(&ws.run(&["build"]));
    ws.write(
        "p/BUILD",
        br#"task(name = "g", outs = ["gen/a.txt"], cmd = "echo nested > gen/a.txt")"#,
    );
    quiet_ok(&ws.run(&["build"]));
    let got = std::fs::read_to_string(ws.path().join("flow-out/p/gen/a.txt")).unwrap();
    assert_eq!(got, "nested\n");
}

/// Nothing the tests above forged made flow write into the workspace outside `flow-out/` either.
#[test]
fn forged_results_leave_the_workspace_alone() {
    let (ws, sentinel) = built();
    let before: Vec<PathBuf> = crate::support::files_under(ws.path())
        .into_iter()
        .filter(|p| {
            !p.starts_with(ws.path().join(".flow")) && !p.starts_with(ws.path().join("flow-out"))
        })
        .collect();
    let outputs = serde_json::json!([file_output("../BUILD2", b"fine\n")]);
    forge_outputs(&ws, "//p:f", &outputs.to_string());
    unmaterialize(&ws, "p/f.txt");
    refused_and_rerun(
        &ws,
        "//p:f",
        "f.txt",
        "fine\n",
        "into the package's source directory",
    );
    let outputs = serde_json::json!([file_output("../../p/BUILD", b"fine\n")]);
    forge_outputs(&ws, "//p:f", &outputs.to_string());
    unmaterialize(&ws, "p/f.txt");
    refused_and_rerun(&ws, "//p:f", "f.txt", "fine\n", "over a BUILD file");
    let after: Vec<PathBuf> = crate::support::files_under(ws.path())
        .into_iter()
        .filter(|p| {
            !p.starts_with(ws.path().join(".flow")) && !p.starts_with(ws.path().join("flow-out"))
        })
        .collect();
    assert_eq!(before, after);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("p/BUILD")).unwrap(),
        FILES[0].1
    );
    sentinel.assert_untouched(&[]);
}
