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
//! And special files in every stored location (`special_files_in_every_stored_location`, a
//! table of locations x kinds, below): FIFOs, links to devices and to outside files and
//! directories, directories where files belong and files where directories belong, in the cache
//! and under `flow-out/`; every command ends, never reads without end, never writes outside.
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

/// Regression (issue 15, item 7): a CAS blob that was a FIFO blocked the restore forever, and
/// one that was a link to `/dev/zero` was copied into `flow-out/` without end, though the
/// result records the blob's size. Now each is refused (one warning), moved out of the way,
/// and the action runs again; a blob of another size than recorded is refused the same way.
#[test]
fn a_blob_that_is_a_fifo_a_device_or_of_another_size_is_refused_and_rebuilt() {
    let ws = workspace(SPECIAL_FILES);
    quiet_ok(&ws.run(&["build"]));
    let blob = blob_path(&cache_dir(&ws), &Digest::of(b"in\n"));
    let sentinel = Sentinel::new();
    for special in [Special::Fifo, Special::DevZero] {
        let case = format!("{special:?}");
        unmaterialize(&ws, "p/f.txt");
        plant(&blob, special, &sentinel);
        let run = run_limited(&ws, &["build", "//p:f"], &case);
        assert_eq!(run.code, 0, "{case}: {}", run.stderr);
        one_warning(&run, &["//p:f", "cannot be restored", "running it again"]);
        assert_eq!(run.tagged("RAN"), ["//p:f"], "{case}");
        let got = std::fs::read(ws.path().join("flow-out/p/f.txt")).unwrap();
        assert_eq!(got, b"in\n", "{case}");
        assert!(
            std::fs::symlink_metadata(&blob).unwrap().is_file(),
            "{case}"
        );
    }
    // The right bytes and then more: the recorded size decides, before a byte is copied.
    std::fs::remove_file(&blob).unwrap();
    std::fs::write(&blob, b"in\nand more").unwrap();
    unmaterialize(&ws, "p/f.txt");
    let run = run_limited(&ws, &["build", "//p:f"], "longer");
    one_warning(&run, &["//p:f", "cannot be restored", "running it again"]);
    assert_eq!(run.tagged("RAN"), ["//p:f"]);
    assert_eq!(std::fs::read(&blob).unwrap(), b"in\n");
}

// ---------------------------------------------------------------------------------------------
// Special files in every stored location.
//
// Everything flow keeps between builds lives in the cache directory (`.flow/`: blobs and their
// shard directories, `cas/`, `tmp/`, `analysis/`, the database and its `-wal`, `-shm` and
// `-journal`, the evaluation snapshot, the build record) and below `flow-out/` (the lock file,
// outputs, directory outputs, their markers, the directories between them). A cache restored
// from elsewhere, or a hostile hand, can leave anything at any of those paths. The table below
// puts each kind of special file at each location in a freshly built workspace and builds:
// - every command ends (a hang is a failure after `LIMIT`, not a blocked test), within a
//   memory limit (an unbounded read of `/dev/zero` aborts the process instead of the machine);
// - the build succeeds and `flow-out/` equals a clean build's, or it fails with a clear
//   error and no panic; then the next build succeeds and equals a clean build (nothing stays
//   broken);
// - nothing outside the workspace is written or removed (a sentinel directory and the file in
//   it, the targets of the links, stay as they were), and `flow cache verify` (with and without
//   `--fix`), `cache stats`, `cache gc`, `log`, `explain` and `clean --cache` end too.
// Not a location here: the cache directory itself. It is the user's choice (`--cache-dir`, a
// link to a shared volume), followed if it is a link; anything but a directory there is a clear
// error (`golden::a_cache_directory_that_is_a_fifo`).

/// How long one command may take before it counts as hung.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The virtual memory one command may use (KiB, for `ulimit -v`): far above what these builds
/// need, far below what reading `/dev/zero` for `LIMIT` would take.
const MEMORY_KIB: u64 = 8 << 20;

const SPECIAL_FILES: &[(&str, &str)] = &[
    ("p/in.txt", "in\n"),
    (
        "p/BUILD",
        r#"task(name = "f", srcs = ["in.txt"], outs = ["f.txt"], cmd = "echo loud; cat in.txt > f.txt")
task(name = "t", outs = ["site/"], cmd = "mkdir -p site/sub && echo page > site/sub/index.html")
task(name = "deep", outs = ["sub/dir/d.txt"], cmd = "echo deep > sub/dir/d.txt")
task(name = "use", deps = [":f", ":t"], outs = ["use.txt"], cmd = "cat $(location :f) $(location :t)/sub/index.html > use.txt")
"#,
    ),
];

/// What is planted at a location.
#[derive(Clone, Copy, Debug)]
enum Special {
    /// A named pipe: opening it for reading waits for a writer, reading it waits for data.
    Fifo,
    /// A symlink to a character device that never ends.
    DevZero,
    /// A symlink to a character device that is always empty and swallows writes.
    DevNull,
    /// A symlink to a file outside the workspace (the sentinel's `victim`).
    OutsideFile,
    /// A symlink to a directory outside the workspace (the sentinel).
    OutsideDir,
    /// A directory (holding a file) where a file belongs.
    Dir,
    /// A regular file of garbage where a directory (or another file) belongs.
    File,
}

const SPECIALS: &[Special] = &[
    Special::Fifo,
    Special::DevZero,
    Special::DevNull,
    Special::OutsideFile,
    Special::OutsideDir,
    Special::Dir,
    Special::File,
];

/// Where something is planted: a path in the built workspace, and what to remove from
/// `flow-out/` first so that the build has to read it (restore from that blob, say).
struct Location {
    name: &'static str,
    path: fn(&Ws) -> PathBuf,
    unmaterialize: &'static [&'static str],
}

fn cache_dir(ws: &Ws) -> PathBuf {
    ws.path().join(".flow")
}

/// The one file in `.flow/analysis/` whose name ends with `suffix`.
fn analysis_file(ws: &Ws, suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(cache_dir(ws).join("analysis"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(suffix) && !name.starts_with('.')
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

/// The digest of the tree manifest `//p:t`'s result records.
fn manifest_of_t(ws: &Ws) -> Digest {
    let db = db(ws);
    let outputs: String = db
        .query_row(
            "SELECT r.outputs FROM action_results r JOIN action_runs a ON a.key = r.key
             WHERE a.label = '//p:t' ORDER BY a.id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&outputs).unwrap();
    Digest::from_hex(v[0]["digest"].as_str().unwrap()).unwrap()
}

const LOCATIONS: &[Location] = &[
    Location {
        name: "the blob of a file output",
        path: |ws| blob_path(&cache_dir(ws), &Digest::of(b"in\n")),
        unmaterialize: &["p/f.txt", "p/use.txt"],
    },
    Location {
        name: "the blob of a file in a directory output",
        path: |ws| blob_path(&cache_dir(ws), &Digest::of(b"page\n")),
        unmaterialize: &["p/site", "p/.site.flow-tree", "p/use.txt"],
    },
    Location {
        name: "the blob of a tree manifest",
        path: |ws| blob_path(&cache_dir(ws), &manifest_of_t(ws)),
        unmaterialize: &["p/site", "p/.site.flow-tree", "p/use.txt"],
    },
    Location {
        name: "the blob of a log",
        path: |ws| blob_path(&cache_dir(ws), &Digest::of(b"loud\n")),
        unmaterialize: &["p/f.txt"],
    },
    Location {
        name: "a blob's shard directory",
        path: |ws| {
            let blob = blob_path(&cache_dir(ws), &Digest::of(b"in\n"));
            blob.parent().unwrap().to_owned()
        },
        unmaterialize: &["p/f.txt", "p/use.txt"],
    },
    Location {
        name: "cas/",
        path: |ws| cache_dir(ws).join("cas"),
        unmaterialize: &["p/f.txt", "p/use.txt"],
    },
    Location {
        name: "tmp/",
        path: |ws| cache_dir(ws).join("tmp"),
        unmaterialize: &["p/f.txt"],
    },
    Location {
        name: "analysis/",
        path: |ws| cache_dir(ws).join("analysis"),
        unmaterialize: &["p/f.txt"],
    },
    Location {
        name: "the database",
        path: |ws| cache_dir(ws).join("flow.db"),
        unmaterialize: &["p/f.txt"],
    },
    Location {
        name: "the database's write-ahead log",
        path: |ws| cache_dir(ws).join("flow.db-wal"),
        unmaterialize: &["p/f.txt"],
    },
    Location {
        name: "the database's shared-memory index",
        path: |ws| cache_dir(ws).join("flow.db-shm"),
        unmaterialize: &["p/f.txt"],
    },
    Location {
        name: "the database's rollback journal",
        path: |ws| cache_dir(ws).join("flow.db-journal"),
        unmaterialize: &["p/f.txt"],
    },
    Location {
        name: "the evaluation snapshot",
        path: |ws| analysis_file(ws, ".json"),
        unmaterialize: &["p/f.txt"],
    },
    Location {
        name: "the build record",
        path: |ws| analysis_file(ws, ".rec"),
        unmaterialize: &["p/f.txt"],
    },
    Location {
        name: "a database moved aside",
        path: |ws| cache_dir(ws).join("flow.db.corrupt-1"),
        unmaterialize: &[],
    },
    Location {
        name: "a temp file",
        path: |ws| cache_dir(ws).join("tmp/1-0-0123456789abcdef"),
        unmaterialize: &[],
    },
    Location {
        name: "the lock file",
        path: |ws| ws.path().join("flow-out/.flow-lock"),
        unmaterialize: &[],
    },
    Location {
        name: "a file output",
        path: |ws| ws.path().join("flow-out/p/f.txt"),
        unmaterialize: &[],
    },
    Location {
        name: "a directory output",
        path: |ws| ws.path().join("flow-out/p/site"),
        unmaterialize: &[],
    },
    Location {
        name: "a directory output's marker",
        path: |ws| ws.path().join("flow-out/p/.site.flow-tree"),
        unmaterialize: &[],
    },
    Location {
        name: "a directory between flow-out/ and an output",
        path: |ws| ws.path().join("flow-out/p/sub"),
        unmaterialize: &[],
    },
    Location {
        name: "a package's directory under flow-out/",
        path: |ws| ws.path().join("flow-out/p"),
        unmaterialize: &[],
    },
    Location {
        // Where sandboxes go without a roomy tmpfs; `[build] sandbox_dir` names it here, so
        // that the builds of this case use it on a machine with one too.
        name: "the cache's sandbox/",
        path: |ws| {
            let sandboxes = cache_dir(ws).join("sandbox");
            let config = format!("[build]\nsandbox_dir = \"{}\"\n", sandboxes.display());
            std::fs::write(ws.path().join("flow.toml"), config).unwrap();
            sandboxes
        },
        unmaterialize: &["p/f.txt", "p/use.txt"],
    },
];

/// Removes whatever is at `path` (never following a link) and puts `special` there.
fn plant(path: &Path, special: Special, sentinel: &Sentinel) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    match special {
        Special::Fifo => nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap(),
        Special::DevZero => symlink("/dev/zero", path).unwrap(),
        Special::DevNull => symlink("/dev/null", path).unwrap(),
        Special::OutsideFile => symlink(sentinel.path().join("victim"), path).unwrap(),
        Special::OutsideDir => symlink(sentinel.path(), path).unwrap(),
        Special::Dir => {
            std::fs::create_dir(path).unwrap();
            std::fs::write(path.join("x"), "x\n").unwrap();
        }
        Special::File => std::fs::write(path, "garbage\n").unwrap(),
    }
}

/// A file, link, directory or special file below `flow-out/`, compared without reading
/// anything but regular files (a FIFO left there must not block the test).
#[derive(Debug, PartialEq, Eq)]
enum Found {
    File(Vec<u8>, u32),
    Link(PathBuf),
    Dir,
    Special,
}

fn found_under(dir: &Path) -> std::collections::BTreeMap<String, Found> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let found = if meta.file_type().is_symlink() {
                Found::Link(std::fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                stack.push(path.clone());
                Found::Dir
            } else if meta.is_file() {
                let bytes = if rel == LOCK_NAME {
                    Vec::new() // the holder's line changes with every build
                } else {
                    std::fs::read(&path).unwrap()
                };
                Found::File(bytes, meta.permissions().mode() & 0o7777)
            } else {
                Found::Special
            };
            out.insert(rel, found);
        }
    }
    out
}

const LOCK_NAME: &str = ".flow-lock";

/// Runs `flow ARGS` in `ws` with a time limit and a memory limit; panics on a hang, a panic,
/// or a crash (a signal, an exit code other than 0, 1 or 2).
fn run_limited(ws: &Ws, args: &[&str], case: &str) -> crate::support::Run {
    use std::io::Read;
    let mut child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("ulimit -v {MEMORY_KIB}; exec \"$0\" \"$@\""))
        .arg(crate::support::flow_bin())
        .args(["--color", "never", "-C"])
        .arg(ws.path())
        .args(args)
        .env_remove("FLOW_CACHE_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{case}: `flow {}` hung for {LIMIT:?}", args.join(" "));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let run = crate::support::Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert!(
        matches!(run.code, 0..=2) && !run.stderr.contains("panicked"),
        "{case}: `flow {}` crashed ({status}):\n{}\n{}",
        args.join(" "),
        run.stdout,
        run.stderr
    );
    run
}

/// One (location × special file) case, in a workspace of its own.
fn special_case(
    location: &Location,
    special: Special,
    clean: &std::collections::BTreeMap<String, Found>,
) {
    let case = format!("{special:?} at {}", location.name);
    let ws = workspace(SPECIAL_FILES);
    quiet_ok(&ws.run(&["build"]));
    let sentinel = Sentinel::new();
    std::fs::write(sentinel.path().join("victim"), "victim\n").unwrap();
    let path = (location.path)(&ws);
    for rel in location.unmaterialize {
        unmaterialize(&ws, rel);
    }
    plant(&path, special, &sentinel);
    let first = run_limited(&ws, &["build"], &case);
    if first.code == 0 {
        assert_eq!(
            &found_under(&ws.path().join("flow-out")),
            clean,
            "{case}: {}",
            first.stdout
        );
    } else {
        assert!(
            first.stderr.contains("error") || first.stdout.contains("FAILED"),
            "{case}: a failure must say why:\n{}\n{}",
            first.stdout,
            first.stderr
        );
    }
    // The commands that read the cache without building end too.
    let others: [&[&str]; 6] = [
        &["cache", "verify"],
        &["cache", "verify", "--fix"],
        &["cache", "stats"],
        &["cache", "gc", "--max-size", "1GiB"],
        &["log", "//p:f"],
        &["explain", "//p:f"],
    ];
    for command in others {
        unmaterialize(&ws, "p/f.txt");
        plant(&path, special, &sentinel);
        run_limited(&ws, command, &case);
    }
    let second = run_limited(&ws, &["build"], &case);
    assert_eq!(
        second.code, 0,
        "{case}: the second build failed:\nfirst:\n{}\n{}\nsecond:\n{}\n{}",
        first.stdout, first.stderr, second.stdout, second.stderr
    );
    assert_eq!(&found_under(&ws.path().join("flow-out")), clean, "{case}");
    sentinel.assert_untouched(&[("victim", "victim\n")]);
    // And emptying the cache removes what is there, never what a link leads to.
    plant(&path, special, &sentinel);
    let cleaned = run_limited(&ws, &["clean", "--cache"], &case);
    assert_eq!(cleaned.code, 0, "{case}: {}", cleaned.stderr);
    sentinel.assert_untouched(&[("victim", "victim\n")]);
    eprintln!(
        "{case}: first build exit {}, {} warning(s)",
        first.code,
        crate::corruption::warnings(&first).len()
    );
}

#[test]
fn special_files_in_every_stored_location() {
    let clean = {
        let ws = workspace(SPECIAL_FILES);
        quiet_ok(&ws.run(&["build"]));
        found_under(&ws.path().join("flow-out"))
    };
    let cases: Vec<(&Location, Special)> = LOCATIONS
        .iter()
        .flat_map(|l| SPECIALS.iter().map(move |s| (l, *s)))
        .collect();
    // Every case runs (on a few threads), and every failing one is reported at the end.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((location, special)) = cases.get(i) else {
                    break;
                };
                let run = std::panic::AssertUnwindSafe(|| special_case(location, *special, &clean));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failed.lock().unwrap().push(message);
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n\n")
    );
}
