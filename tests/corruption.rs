//! A damaged cache is noticed, reported in one warning line, and repaired by running again;
//! bad bytes never reach `flow-out/`. Through the real binary:
//! - a blob with a flipped byte, truncated, emptied, or missing (a recorded result pointing at
//!   nothing), for a file output and for a file inside a directory output: the restore refuses
//!   it, the action runs again, the blob is stored again under its name, `flow-out/` equals a
//!   clean build's;
//! - storing content whose blob is damaged replaces the blob (the store does not keep it);
//! - a truncated database, a garbage database: moved aside as `flow.db.corrupt-<ms>`, an empty
//!   one started, everything runs again, and the next build is all cached;
//! - a garbage write-ahead log: reported, ignored by SQLite, nothing lost;
//! - a full disk (a 512 KiB tmpfs holding the cache): the action fails naming the path, no blob
//!   and no result for that content exist, no temp file is left, and once there is room again
//!   the same build succeeds.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use flow_cache::Digest;

use crate::support::{files_under, Run, Ws};

/// A file, symlink or directory under `flow-out/`, as compared between two builds.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    File { bytes: Vec<u8>, executable: bool },
    Link(PathBuf),
    Dir,
}

/// Relative path → entry, for everything below `dir` (empty if it does not exist). Symlinks are
/// read, never followed.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let entry = if meta.file_type().is_symlink() {
                Entry::Link(std::fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                stack.push(path.clone());
                Entry::Dir
            } else {
                Entry::File {
                    bytes: std::fs::read(&path).unwrap(),
                    executable: meta.permissions().mode() & 0o111 != 0,
                }
            };
            out.insert(rel, entry);
        }
    }
    out
}

/// A workspace holding `files`.
pub fn workspace(files: &[(&str, &str)]) -> Ws {
    let ws = Ws::new();
    for (path, text) in files {
        ws.write(path, text.as_bytes());
    }
    ws
}

/// `flow-out/` of a clean build (fresh workspace, fresh cache) of `files`.
pub fn clean_outputs(files: &[(&str, &str)]) -> BTreeMap<String, Entry> {
    let ws = workspace(files);
    ws.run(&["build"]).ok();
    snapshot(&ws.path().join("flow-out"))
}

/// Every `warning:` line a run printed, on stdout or stderr.
pub fn warnings(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .chain(run.stderr.lines())
        .filter(|l| l.starts_with("warning:"))
        .map(str::to_owned)
        .collect()
}

/// Asserts exactly one warning line, containing every one of `needles`.
#[track_caller]
pub fn one_warning(run: &Run, needles: &[&str]) {
    let w = warnings(run);
    assert_eq!(
        w.len(),
        1,
        "expected one warning line:\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    for n in needles {
        assert!(w[0].contains(n), "`{n}` not in the warning: {}", w[0]);
    }
}

/// Asserts a successful build that printed no warning.
#[track_caller]
pub fn quiet_ok(run: &Run) {
    run.ok();
    assert!(
        warnings(run).is_empty(),
        "unexpected warning:\n{}\n{}",
        run.stdout,
        run.stderr
    );
}

/// Where the blob with the content `bytes` lives in the cache `.flow/` of `ws`.
pub fn blob_of(ws: &Ws, bytes: &[u8]) -> PathBuf {
    blob_path(&ws.path().join(".flow"), &Digest::of(bytes))
}

pub fn blob_path(cache: &Path, d: &Digest) -> PathBuf {
    let hex = d.to_string();
    cache.join("cas").join(&hex[..2]).join(&hex[2..])
}

/// Overwrites a (read-only) blob; a test running as root would not need the chmod.
fn write_blob(path: &Path, bytes: &[u8]) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(path, bytes).unwrap();
}

const FILES: &[(&str, &str)] = &[
    ("p/in.txt", "input\n"),
    (
        "p/BUILD",
        r#"task(name = "a", outs = ["a.txt"], cmd = "echo alpha > a.txt")
task(name = "b", deps = [":a"], srcs = ["in.txt"], outs = ["b.txt"], cmd = "cat $(location :a) in.txt > b.txt")
task(
    name = "site",
    outs = ["site/"],
    cmd = "mkdir -p site/sub && printf 'page\\n' > site/sub/index.html && ln -s sub/index.html site/home",
)
"#,
    ),
];

/// How a blob is damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// One byte changed, the size kept.
    FlipByte,
    Truncate,
    Empty,
    /// The recorded result points at a blob that is not there.
    Delete,
}

fn damage(path: &Path, how: Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    match how {
        Damage::FlipByte => {
            bytes[0] ^= 0x20;
            write_blob(path, &bytes);
        }
        Damage::Truncate => write_blob(path, &bytes[..bytes.len() / 2]),
        Damage::Empty => write_blob(path, b""),
        Damage::Delete => std::fs::remove_file(path).unwrap(),
    }
}

/// Damages the blob of `content` (the output of `label`), deletes `flow-out/` so that a restore
/// happens, and checks the next build: one warning naming the blob, `label` runs again, the
/// others are restored, `flow-out/` equals a clean build's, and the blob is whole again.
fn damaged_blob_is_rebuilt(
    ws: &Ws,
    clean: &BTreeMap<String, Entry>,
    how: Damage,
    label: &str,
    content: &[u8],
) {
    let blob = blob_of(ws, content);
    assert!(blob.is_file(), "no blob {}", blob.display());
    damage(&blob, how);
    std::fs::remove_dir_all(ws.path().join("flow-out")).unwrap();
    let run = ws.run(&["build"]);
    run.ok();
    let hex = Digest::of(content).to_string();
    one_warning(&run, &[label, &hex, "missing or corrupt"]);
    assert_eq!(run.tagged("RAN"), [label], "{how:?}:\n{}", run.stdout);
    assert_eq!(run.tagged("CACHED").len(), 2, "{}", run.stdout);
    assert_eq!(
        &snapshot(&ws.path().join("flow-out")),
        clean,
        "{how:?} of {label}"
    );
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        content,
        "the blob was not stored again"
    );
    // And the repaired cache serves a plain restore without complaint.
    std::fs::remove_dir_all(ws.path().join("flow-out")).unwrap();
    let run = ws.run(&["build"]);
    quiet_ok(&run);
    assert_eq!(run.tagged("CACHED").len(), 3, "{}", run.stdout);
    assert_eq!(&snapshot(&ws.path().join("flow-out")), clean);
}

fn damaged_blobs(how: Damage) {
    let clean = clean_outputs(FILES);
    let ws = workspace(FILES);
    ws.run(&["build"]).ok();
    // A file output, then a file inside a directory output.
    damaged_blob_is_rebuilt(&ws, &clean, how, "//p:a", b"alpha\n");
    damaged_blob_is_rebuilt(&ws, &clean, how, "//p:site", b"page\n");
}

#[test]
fn a_blob_with_a_flipped_byte_is_refused_and_rebuilt() {
    damaged_blobs(Damage::FlipByte);
}

#[test]
fn a_truncated_blob_is_refused_and_rebuilt() {
    damaged_blobs(Damage::Truncate);
}

#[test]
fn an_emptied_blob_is_refused_and_rebuilt() {
    damaged_blobs(Damage::Empty);
}

#[test]
fn a_result_whose_blob_is_missing_is_a_miss() {
    damaged_blobs(Damage::Delete);
}

#[test]
fn a_damaged_tree_manifest_is_refused_and_rebuilt() {
    let clean = clean_outputs(FILES);
    let ws = workspace(FILES);
    ws.run(&["build"]).ok();
    // The manifest is the blob that starts with `{"entries":`.
    let manifest = files_under(&ws.path().join(".flow/cas"))
        .into_iter()
        .find(|p| std::fs::read(p).unwrap().starts_with(b"{\"entries\":"))
        .expect("a tree manifest blob");
    damage(&manifest, Damage::Truncate);
    std::fs::remove_dir_all(ws.path().join("flow-out")).unwrap();
    let run = ws.run(&["build"]);
    run.ok();
    one_warning(&run, &["//p:site", "missing or corrupt"]);
    assert_eq!(run.tagged("RAN"), ["//p:site"]);
    assert_eq!(snapshot(&ws.path().join("flow-out")), clean);
}

/// Regression: a store of content whose blob already existed kept the blob without looking at
/// it, so a damaged blob stayed, and the result recorded next pointed at bad bytes.
#[test]
fn storing_content_whose_blob_is_damaged_replaces_the_blob() {
    let ws = workspace(FILES);
    ws.run(&["build"]).ok();
    let blob = blob_of(&ws, b"alpha\n");
    let original = std::fs::read_to_string(ws.path().join("p/BUILD")).unwrap();
    for (round, how) in [Damage::FlipByte, Damage::Truncate].into_iter().enumerate() {
        damage(&blob, how);
        // `flow-out/` still holds the good output, so nothing restores (or notices) yet; a new
        // command that writes the same bytes stores them again.
        let edited = original.replace(
            "echo alpha > a.txt",
            &format!("echo alpha > a.txt; true {round}"),
        );
        ws.write("p/BUILD", edited.as_bytes());
        let run = ws.run(&["build"]);
        quiet_ok(&run);
        assert_eq!(run.tagged("RAN"), ["//p:a"], "{}", run.stdout);
        assert_eq!(
            std::fs::read(&blob).unwrap(),
            b"alpha\n",
            "{how:?}: the damaged blob was kept"
        );
        // So a restore now finds nothing wrong.
        std::fs::remove_dir_all(ws.path().join("flow-out")).unwrap();
        let run = ws.run(&["build"]);
        quiet_ok(&run);
        assert_eq!(run.tagged("RAN"), Vec::<String>::new(), "{}", run.stdout);
    }
}

/// Regression: a dependency whose output is up to date under `flow-out/` was staged into its
/// dependents' sandboxes from its CAS blob, unverified, so a damaged blob became the input of a
/// dependent that ran, and its wrong output was cached under a right key.
#[test]
fn a_damaged_dependency_blob_never_reaches_a_dependent() {
    let ws = workspace(FILES);
    ws.run(&["build"]).ok();
    damage(&blob_of(&ws, b"alpha\n"), Damage::FlipByte);
    ws.write("p/in.txt", b"input 2\n");
    ws.run(&["build"]).ok();
    let mut files: Vec<(&str, &str)> = FILES.to_vec();
    files[0] = ("p/in.txt", "input 2\n");
    assert_eq!(snapshot(&ws.path().join("flow-out")), clean_outputs(&files));
}

/// Builds `FILES`, lets `spoil` damage the database while no flow runs, and checks that the next
/// build warns once with `needles`, runs everything again, and leaves a usable cache.
fn spoiled_database(spoil: impl FnOnce(&Path), needles: &[&str], everything_reruns: bool) {
    let clean = clean_outputs(FILES);
    let ws = workspace(FILES);
    ws.run(&["build"]).ok();
    let cache = ws.path().join(".flow");
    // flow keeps the WAL between commands; these cases damage a database whose log has been
    // checkpointed into it (as SQLite does whenever the log passes 1,000 pages).
    let conn = rusqlite::Connection::open(cache.join("flow.db")).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(conn);
    spoil(&cache);
    let run = ws.run(&["build"]);
    run.ok();
    one_warning(&run, needles);
    let (ran, cached) = (run.tagged("RAN").len(), run.tagged("CACHED").len());
    if everything_reruns {
        assert_eq!((ran, cached), (3, 0), "{}", run.stdout);
        let aside: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("flow.db.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        let stamp = aside[0].trim_start_matches("flow.db.corrupt-");
        assert!(stamp.parse::<u64>().is_ok(), "{aside:?}");
        assert!(
            run.stderr.contains(&aside[0]),
            "the warning names the new name:\n{}",
            run.stderr
        );
    } else {
        assert_eq!((ran, cached), (0, 3), "{}", run.stdout);
    }
    assert_eq!(snapshot(&ws.path().join("flow-out")), clean);
    // The new database works: the next build is all cached, without a warning.
    let run = ws.run(&["build"]);
    quiet_ok(&run);
    assert_eq!(run.tagged("CACHED").len(), 3, "{}", run.stdout);
    std::fs::remove_dir_all(ws.path().join("flow-out")).unwrap();
    let run = ws.run(&["build"]);
    quiet_ok(&run);
    assert_eq!(run.tagged("CACHED").len(), 3, "{}", run.stdout);
    assert_eq!(snapshot(&ws.path().join("flow-out")), clean);
}

#[test]
fn a_truncated_database_is_moved_aside() {
    spoiled_database(
        |cache| {
            let db = cache.join("flow.db");
            let len = std::fs::metadata(&db).unwrap().len();
            assert!(len > 4096, "{len}");
            let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
            f.set_len(len - 4096).unwrap();
        },
        &["flow.db", "damaged", "malformed", "moved it aside"],
        true,
    );
}

#[test]
fn a_garbage_database_is_moved_aside() {
    spoiled_database(
        |cache| {
            let junk: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
            std::fs::write(cache.join("flow.db"), junk).unwrap();
        },
        &["flow.db", "damaged", "not a database", "moved it aside"],
        true,
    );
}

#[test]
fn a_garbage_write_ahead_log_is_reported_and_ignored() {
    spoiled_database(
        |cache| {
            // No flow runs, and the log was checkpointed (see `spoiled_database`).
            let junk: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 253) as u8).collect();
            std::fs::write(cache.join("flow.db-wal"), junk).unwrap();
        },
        &["flow.db-wal", "damaged"],
        false,
    );
}

/// At most one warning line; if there is one, it contains every one of `needles`.
#[track_caller]
fn at_most_one_warning(run: &Run, needles: &[&str]) -> bool {
    let w = warnings(run);
    assert!(w.len() <= 1, "{}\n{}", run.stdout, run.stderr);
    for line in &w {
        for n in needles {
            assert!(line.contains(n), "`{n}` not in the warning: {line}");
        }
    }
    !w.is_empty()
}

/// Regression (issue 15, item 10): one damaged page in `flow.db` made every build fail, since
/// SQLite reports damage only when a statement reads the page, not at open, so the database
/// was not moved aside as the docs promise; `flow cache verify` exited 2 without a hint.
/// Generator: every page of a database that several builds wrote (the header and schema page,
/// every table's and index's root, the free list) is overwritten in turn with 4096 seeded
/// garbage bytes, the build record removed (so that the build goes through the database) and an
/// input edited (so that the build reads results, stores one and records history). The build
/// must succeed and equal a clean build, with at most one warning (the database moved aside,
/// its results run again); so must the next one. `flow cache verify` then finds whatever damage
/// the builds did not meet (a problem, exit 1, and the hint to use `--fix`), and `--fix` moves
/// it aside.
#[test]
fn a_damaged_page_anywhere_in_the_database_is_moved_aside_and_the_build_succeeds() {
    use crate::support::{env_number, Rng};
    const PAGE: usize = 4096;
    let mut second_files: Vec<(&str, &str)> = FILES.to_vec();
    second_files[0] = ("p/in.txt", "input 2\n");
    let clean = [clean_outputs(FILES), clean_outputs(&second_files)];
    let ws = workspace(FILES);
    let cache = ws.path().join(".flow");
    for text in ["input 2\n", "input\n"] {
        ws.write("p/in.txt", text.as_bytes());
        ws.run(&["build"]).ok();
    }
    let conn = rusqlite::Connection::open(cache.join("flow.db")).unwrap();
    // A history long enough for tables and indexes of several levels and overflow pages: keys
    // as `flow explain` keeps them, runs of labels that no longer exist.
    for i in 0..300u32 {
        let json = format!(
            "{{\"old\": {i}, \"pad\": \"{}\"}}",
            "x".repeat(if i == 0 { 20_000 } else { 600 })
        );
        conn.execute(
            "INSERT INTO action_keys (key, json) VALUES (?1, ?2)",
            rusqlite::params![
                Digest::of(json.as_bytes()).as_bytes().to_vec(),
                json.into_bytes()
            ],
        )
        .unwrap();
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let pages: usize = conn
        .query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
        .unwrap() as usize;
    let roots: Vec<(String, i64)> = conn
        .prepare("SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    drop(conn);
    assert!(
        roots.iter().any(|(n, _)| n.starts_with("sqlite_autoindex")),
        "{roots:?}"
    );
    assert!(roots.iter().all(|&(_, p)| p as usize <= pages), "{roots:?}");
    let good = std::fs::read(cache.join("flow.db")).unwrap();
    assert_eq!(good.len(), pages * PAGE);

    let mut rng = Rng(0x5eed_0000_0000_0010);
    // The header and schema page, every root, then seeded others (`FLOW_DB_PAGES`, default
    // 12; `0` for every page).
    let mut damaged: Vec<usize> = std::iter::once(1)
        .chain(roots.iter().map(|&(_, p)| p as usize))
        .collect();
    match env_number("FLOW_DB_PAGES", 12) as usize {
        0 => damaged.extend(1..=pages),
        n => damaged.extend((0..n).map(|_| 1 + rng.below(pages))),
    }
    damaged.sort_unstable();
    damaged.dedup();
    let mut state = 0;
    let mut met = 0;
    for page in damaged {
        let what = roots
            .iter()
            .find(|&&(_, p)| p as usize == page)
            .map_or("", |(n, _)| n.as_str());
        let what = format!("page {page} of {pages} ({what})");
        // No flow runs: the database, its log and index, the record, the moved-aside copies.
        for e in std::fs::read_dir(&cache).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("flow.db") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        for e in std::fs::read_dir(cache.join("analysis")).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "rec") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        let mut bytes = good.clone();
        for b in &mut bytes[(page - 1) * PAGE..page * PAGE] {
            *b = rng.next() as u8;
        }
        std::fs::write(cache.join("flow.db"), &bytes).unwrap();
        state = 1 - state;
        ws.write(
            "p/in.txt",
            if state == 1 { b"input 2\n" } else { b"input\n" },
        );

        let run = ws.run(&["build"]);
        assert_eq!(run.code, 0, "{what}:\n{}\n{}", run.stdout, run.stderr);
        if at_most_one_warning(&run, &["flow.db", "damaged", "moved it aside"]) {
            met += 1;
        }
        assert_eq!(
            snapshot(&ws.path().join("flow-out")),
            clean[state],
            "{what}"
        );
        let again = ws.run(&["build"]);
        assert_eq!(again.code, 0, "{what}:\n{}\n{}", again.stdout, again.stderr);
        at_most_one_warning(&again, &["flow.db", "damaged", "moved it aside"]);
        assert_eq!(
            snapshot(&ws.path().join("flow-out")),
            clean[state],
            "{what}"
        );

        // What the builds did not meet, verify finds, and `--fix` repairs.
        let verify = ws.run(&["cache", "verify"]);
        if verify.code != 0 {
            assert_eq!(
                verify.code, 1,
                "{what}:\n{}\n{}",
                verify.stdout, verify.stderr
            );
            assert!(
                verify.stdout.contains("is damaged")
                    && verify
                        .stdout
                        .contains("`flow cache verify --fix` repairs what it can"),
                "{what}:\n{}",
                verify.stdout
            );
            let fix = ws.run(&["cache", "verify", "--fix"]);
            assert_eq!(fix.code, 0, "{what}:\n{}\n{}", fix.stdout, fix.stderr);
            assert!(
                fix.stdout.contains("fixed: the cache database"),
                "{}",
                fix.stdout
            );
            quiet_ok(&ws.run(&["cache", "verify"]));
        }
        quiet_ok(&ws.run(&["build"]));
        assert_eq!(
            snapshot(&ws.path().join("flow-out")),
            clean[state],
            "{what}"
        );
    }
    assert!(met > 0, "no build met the damage");
}

/// Regression (issue 15, item 10): `flow cache verify` exited 2 with SQLite's "malformed" and
/// no hint when a page of the database was damaged. It reports the damage as a problem and
/// says how to repair it (golden `cache_verify_damaged_page`).
#[test]
fn verify_reports_a_damaged_page_with_what_to_do() {
    let ws = workspace(FILES);
    ws.run(&["build"]).ok();
    let db = ws.path().join(".flow/flow.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let root: i64 = conn
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'action_results'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(&db).unwrap();
    let at = (root as usize - 1) * 4096;
    bytes[at..at + 4096].fill(0xa5);
    std::fs::write(&db, bytes).unwrap();
    let run = ws.run(&["cache", "verify"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let text = run.stdout.replace(|c: char| c.is_ascii_digit(), "N");
    crate::support::golden("cache_verify_damaged_page", &text);
}

/// Issue 14: the damaged databases moved aside (`flow.db.corrupt-*`) were never removed.
/// `flow cache stats` counts them, weighs them and says how to remove them (golden
/// `cache_stats_moved_aside`); `flow clean --cache` removes them.
#[test]
fn moved_aside_databases_are_reported_by_stats_and_removed_by_clean() {
    let ws = workspace(FILES);
    let cache = ws.path().join(".flow");
    ws.run(&["build"]).ok();
    let conn = rusqlite::Connection::open(cache.join("flow.db")).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(conn);
    std::fs::write(cache.join("flow.db"), vec![0x5a; 20_000]).unwrap();
    let stats = ws.run(&["cache", "stats"]);
    one_warning(&stats, &["moved it aside"]);
    let moved: Vec<&str> = stats
        .ok()
        .lines()
        .skip_while(|l| !l.starts_with("moved aside:"))
        .collect();
    crate::support::golden("cache_stats_moved_aside", &(moved.join("\n") + "\n"));

    ws.run(&["clean", "--cache"]).ok();
    let left: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("flow.db.corrupt-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let stats = ws.run(&["cache", "stats"]);
    quiet_ok(&stats);
    assert!(!stats.stdout.contains("moved aside"), "{}", stats.stdout);
}

/// A tmpfs mounted for the length of a test; unmounted on drop, panics included.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` (`512k`) at `dir`; `Err` with the reason when not permitted.
    fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Mount(dir.to_owned()))
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a child still has a file open): detach it now, it goes when released.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// The cache on a 512 KiB file system; the sandboxes (inside the cache directory) on a roomy one
/// mounted below it, so that commands can write their outputs and only flow's store into the CAS
/// runs out of space. Outputs of 700 KB (stored through memory) and 2 MB (through a file copy).
///
/// Needs `mount` (root or CAP_SYS_ADMIN); elsewhere it says why and skips. `ulimit -f` is no
/// substitute: RLIMIT_FSIZE is inherited by the action's command, which would hit the limit
/// writing its output before flow's store ever did.
#[test]
fn a_full_disk_fails_the_action_clearly_and_records_nothing() {
    let ws = workspace(&[(
        "p/BUILD",
        // `small` is stored before the others start: with a slot given back when a command
        // exits, its store could otherwise meet theirs filling the disk.
        r#"task(name = "big", deps = [":small"], outs = ["big.bin"], cmd = "head -c 700000 /dev/zero | tr '\\0' b > big.bin")
task(name = "huge", deps = [":small"], outs = ["huge.bin"], cmd = "head -c 2000000 /dev/zero | tr '\\0' h > huge.bin")
task(name = "small", outs = ["s.txt"], cmd = "echo small > s.txt")
"#,
    )]);
    let cache = ws.path().join(".flow");
    let small_disk = match Mount::tmpfs(&cache, "512k") {
        Ok(m) => m,
        Err(why) => {
            // Only where mounting is not permitted (not root, no CAP_SYS_ADMIN).
            eprintln!("skipping the disk-full test: cannot mount a tmpfs here ({why})");
            return;
        }
    };
    let _sandboxes = Mount::tmpfs(&cache.join("sandbox"), "64m").expect("second tmpfs");
    let big = vec![b'b'; 700_000];
    let huge = vec![b'h'; 2_000_000];

    let run = ws.run(&["build", "-k"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.tagged("RAN"), ["//p:small"], "{}", run.stdout);
    for label in ["//p:big", "//p:huge"] {
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("[FAILED] {label} ")))
            .unwrap_or_else(|| panic!("{label} did not fail:\n{}", run.stdout));
        assert!(
            // (`Run` writes the workspace as `$WS`, and `/tmp` as `$TMP`.)
            line.contains("no space left on the device holding `$WS/.flow"),
            "{line}"
        );
    }
    for content in [&big, &huge] {
        assert!(!blob_of(&ws, content).exists(), "a blob was stored");
    }
    let leftovers = files_under(&cache.join("tmp"));
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
    let db = rusqlite::Connection::open(cache.join("flow.db")).unwrap();
    let results: i64 = db
        .query_row("SELECT count(*) FROM action_results", [], |r| r.get(0))
        .unwrap();
    assert_eq!(results, 1, "only //p:small has a result");
    drop(db);

    // Room again: the failed actions run (nothing was recorded for them) and succeed.
    small_disk.resize("16m");
    let run = ws.run(&["build"]);
    run.ok();
    assert_eq!(run.tagged("RAN"), ["//p:big", "//p:huge"], "{}", run.stdout);
    assert_eq!(
        std::fs::read(ws.path().join("flow-out/p/big.bin")).unwrap(),
        big
    );
    assert_eq!(
        std::fs::read(ws.path().join("flow-out/p/huge.bin")).unwrap(),
        huge
    );
    assert!(blob_of(&ws, &huge).is_file());
}
