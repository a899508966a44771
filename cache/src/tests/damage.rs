//! Damage and hostile layouts: a store replaces a damaged blob, a damaged database is moved
//! aside (once, even when several openers meet it), a garbage WAL is reported, and destinations
//! below an output root are made of real directories.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

use super::{names, open, temp};
use crate::{real_dest, Cache, CacheError, Digest, LARGE_FILE};

/// Moves everything the WAL holds into `flow.db` and empties the WAL, as a checkpoint does: flow
/// keeps the WAL between commands, and these tests damage the database file itself.
fn checkpoint(cache_dir: &std::path::Path) {
    let conn = rusqlite::Connection::open(cache_dir.join("flow.db")).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
}

fn overwrite(path: &std::path::Path, bytes: &[u8]) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(path, bytes).unwrap();
}

#[test]
fn storing_again_replaces_a_damaged_small_blob() {
    let dir = temp();
    let cache = open(&dir);
    let cas = cache.cas();
    let d = cas.put_bytes(b"hello").unwrap();
    let path = cas.path_of(&d);
    for damaged in [&b"hellO"[..], b"hel", b"", b"hello!"] {
        overwrite(&path, damaged);
        assert_eq!(cas.put_bytes(b"hello").unwrap(), d);
        assert_eq!(fs::read(&path).unwrap(), b"hello", "{damaged:?} was kept");
    }
    // The same through put_file, moved and copied.
    for take in [true, false] {
        overwrite(&path, b"HELLO");
        let src = dir.path().join(format!("src-{take}"));
        fs::write(&src, b"hello").unwrap();
        assert_eq!(cas.put_file(&src, take).unwrap().0, d);
        assert_eq!(fs::read(&path).unwrap(), b"hello");
    }
    assert!(names(cas.tmp_dir()).is_empty(), "no temp file left behind");
}

#[test]
fn a_large_blob_is_checked_by_size_only() {
    let dir = temp();
    let cache = open(&dir);
    let cas = cache.cas();
    let big = vec![7u8; LARGE_FILE as usize + 10];
    let d = cas.put_bytes(&big).unwrap();
    let path = cas.path_of(&d);
    // Another size: replaced.
    overwrite(&path, &big[..100]);
    cas.put_bytes(&big).unwrap();
    assert_eq!(fs::read(&path).unwrap(), big);
    // Same size, other bytes: not re-read on store (a restore's verified copy catches it).
    let mut flipped = big.clone();
    flipped[5] = 8;
    overwrite(&path, &flipped);
    cas.put_bytes(&big).unwrap();
    assert_eq!(fs::read(&path).unwrap(), flipped);
    assert!(matches!(
        cas.materialize_file(&d, big.len() as u64, false, &dir.path().join("out")),
        Err(CacheError::Corrupt { .. })
    ));
    cas.put_bytes(&big).unwrap();
    assert_eq!(fs::read(&path).unwrap(), big);
}

/// The databases moved aside in the cache directory (`flow.db.corrupt-<ms>`, not their logs).
fn aside(dir: &std::path::Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with("flow.db.corrupt-") && !n.ends_with("-wal"))
        .collect()
}

#[test]
fn a_garbage_database_is_moved_aside_and_replaced() {
    let dir = temp();
    let cache_dir = dir.path().join("cache");
    let key = super::key(1);
    {
        let cache = open(&dir);
        cache
            .put_action(&key, &super::file_result(Digest::of(b"x"), 1))
            .unwrap();
        assert!(cache.notices().is_empty());
    }
    fs::write(cache_dir.join("flow.db"), vec![0x5a; 8192]).unwrap();
    fs::write(cache_dir.join("flow.db-wal"), b"").unwrap();
    fs::write(cache_dir.join("flow.db-shm"), vec![1; 100]).unwrap();
    let cache = open(&dir);
    assert_eq!(cache.notices().len(), 1, "{:?}", cache.notices());
    let notice = &cache.notices()[0];
    assert!(notice.contains("file is not a database"), "{notice}");
    let moved = aside(&cache_dir);
    assert_eq!(moved.len(), 1);
    assert!(notice.contains(&moved[0]), "{notice}");
    assert_eq!(
        fs::read(cache_dir.join(&moved[0])).unwrap(),
        vec![0x5a; 8192]
    );
    // Its log went with it (replayed into the new database it would mix the two).
    assert!(cache_dir.join(format!("{}-wal", moved[0])).exists());
    // The new database is empty and works.
    assert!(cache.get_actions(&[key]).unwrap().is_empty());
    cache
        .put_action(&key, &super::file_result(Digest::of(b"x"), 1))
        .unwrap();
    drop(cache);
    let cache = open(&dir);
    assert!(cache.notices().is_empty(), "{:?}", cache.notices());
    assert_eq!(cache.get_actions(&[key]).unwrap().len(), 1);
}

#[test]
fn stats_count_moved_aside_databases_and_clear_removes_them() {
    let dir = temp();
    let cache_dir = dir.path().join("cache");
    drop(open(&dir));
    for bytes in [8192, 4096] {
        checkpoint(&cache_dir);
        fs::write(cache_dir.join("flow.db"), vec![0x5a; bytes]).unwrap();
        let cache = open(&dir);
        assert_eq!(cache.notices().len(), 1, "{:?}", cache.notices());
    }
    let cache = open(&dir);
    assert_eq!(aside(&cache_dir).len(), 2);
    let stats = cache.stats().unwrap();
    // The logs moved with them weigh nothing here (checkpointed), and are not databases.
    assert_eq!(
        (stats.moved_aside, stats.moved_aside_bytes),
        (2, 8192 + 4096)
    );
    fs::write(cache_dir.join("flow.db.corrupted-by-hand"), b"not ours").unwrap();
    assert_eq!(cache.clear().unwrap(), 0);
    let left: Vec<String> = names(&cache_dir)
        .into_iter()
        .filter(|n| n.contains("corrupt"))
        .collect();
    assert_eq!(
        left,
        ["flow.db.corrupted-by-hand"],
        "only what flow moved aside goes"
    );
    let stats = cache.stats().unwrap();
    assert_eq!((stats.moved_aside, stats.moved_aside_bytes), (0, 0));
}

#[test]
fn a_truncated_database_is_moved_aside() {
    let dir = temp();
    let cache_dir = dir.path().join("cache");
    {
        let cache = open(&dir);
        let results: Vec<_> = (0..200).map(super::key).collect();
        for k in &results {
            cache
                .put_action(k, &super::file_result(Digest::of(b"x"), 1))
                .unwrap();
        }
    }
    checkpoint(&cache_dir);
    let db = cache_dir.join("flow.db");
    let len = fs::metadata(&db).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let cache = open(&dir);
    assert_eq!(cache.notices().len(), 1, "{:?}", cache.notices());
    assert!(cache.notices()[0].contains("malformed"));
    assert_eq!(aside(&cache_dir).len(), 1);
}

#[test]
fn openers_meeting_one_damaged_database_repair_it_once() {
    let dir = temp();
    let cache_dir = dir.path().join("cache");
    drop(open(&dir));
    checkpoint(&cache_dir);
    fs::write(cache_dir.join("flow.db"), vec![0x42; 4096]).unwrap();
    let notices: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| Cache::open(&cache_dir).unwrap().notices().len()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(notices, 1, "exactly one opener repairs and reports");
    assert_eq!(aside(&cache_dir).len(), 1);
}

#[test]
fn a_garbage_wal_is_reported_and_an_empty_one_is_not() {
    let dir = temp();
    let cache_dir = dir.path().join("cache");
    drop(open(&dir));
    fs::write(cache_dir.join("flow.db-wal"), b"").unwrap();
    assert!(open(&dir).notices().is_empty());
    fs::write(cache_dir.join("flow.db-wal"), vec![0x17; 5000]).unwrap();
    let cache = open(&dir);
    assert_eq!(cache.notices().len(), 1);
    assert!(cache.notices()[0].contains("flow.db-wal"));
    assert!(aside(&cache_dir).is_empty(), "the database itself is fine");
    cache
        .put_action(&super::key(3), &super::file_result(Digest::of(b"x"), 1))
        .unwrap();
}

#[test]
fn real_dest_replaces_links_and_files_on_the_way() {
    let dir = temp();
    let root = dir.path().join("out");
    let outside = dir.path().join("outside");
    fs::create_dir_all(root.join("a")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    symlink(&outside, root.join("a/b")).unwrap();
    fs::write(root.join("file"), b"x").unwrap();
    let dest = real_dest(&root, "a/b/c/out.txt").unwrap();
    assert_eq!(dest, root.join("a/b/c/out.txt"));
    assert!(fs::symlink_metadata(root.join("a/b")).unwrap().is_dir());
    assert!(root.join("a/b/c").is_dir());
    let dest = real_dest(&root, "file/inner").unwrap();
    assert!(root.join("file").is_dir());
    assert!(!dest.exists(), "only the directories are made");
    // What is at the destination itself is left for the materializer to replace.
    symlink(&outside, root.join("a/link")).unwrap();
    real_dest(&root, "a/link").unwrap();
    assert!(fs::symlink_metadata(root.join("a/link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(names(&outside).is_empty());
    for bad in ["../x", "/abs", "a/../../x", ""] {
        assert!(matches!(
            real_dest(&root, bad),
            Err(CacheError::UnsafePath { .. })
        ));
    }
}

#[test]
fn materializing_replaces_a_link_at_the_destination() {
    let dir = temp();
    let cache = open(&dir);
    let cas = cache.cas();
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim"), b"victim").unwrap();
    let d = cas.put_bytes(b"good").unwrap();
    let dest = dir.path().join("out/f");
    fs::create_dir_all(dir.path().join("out")).unwrap();
    symlink(outside.join("victim"), &dest).unwrap();
    cas.materialize_file(&d, 4, false, &dest).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), b"good");
    assert!(fs::symlink_metadata(&dest).unwrap().is_file());
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"victim");
    // A tree too: the link is moved aside, never followed.
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/x"), b"x").unwrap();
    let (m, _) = cas.put_tree(&src, false).unwrap();
    let tree = dir.path().join("out/tree");
    symlink(&outside, &tree).unwrap();
    cas.materialize_tree(&m, &tree).unwrap();
    assert!(fs::symlink_metadata(&tree).unwrap().is_dir());
    assert_eq!(names(&outside), vec!["victim".to_owned()]);
}

#[test]
fn a_255_byte_output_name_materializes() {
    let dir = temp();
    let cache = open(&dir);
    let cas = cache.cas();
    let d = cas.put_bytes(b"long").unwrap();
    let name = "n".repeat(255);
    let dest = real_dest(&dir.path().join("out"), &format!("p/{name}")).unwrap();
    cas.materialize_file(&d, 4, false, &dest).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), b"long");
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("x"), b"x").unwrap();
    let (m, _) = cas.put_tree(&src, false).unwrap();
    let tree = dir.path().join("out/p").join("t".repeat(255));
    cas.materialize_tree(&m, &tree).unwrap();
    cas.materialize_tree(&m, &tree).unwrap();
    assert_eq!(fs::read(tree.join("x")).unwrap(), b"x");
}

/// Regression (issue 15, item 10): a damaged page that opening does not read (a table's) failed
/// every statement that read it, and the database was never moved aside. The statement that
/// meets it moves the database aside, runs again on an empty one, and the build begun before
/// still records its runs and its end there.
#[test]
fn a_page_damaged_behind_the_schema_is_moved_aside_where_a_statement_meets_it() {
    use crate::{ActionRun, BuildSummary, Outcome};
    let dir = temp();
    let cache_dir = dir.path().join("cache");
    let key = super::key(1);
    {
        let cache = open(&dir);
        cache
            .put_action(&key, &super::file_result(Digest::of(b"x"), 1))
            .unwrap();
    }
    checkpoint(&cache_dir);
    let db = cache_dir.join("flow.db");
    let root: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'action_results'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut bytes = fs::read(&db).unwrap();
    let at = (root as usize - 1) * 4096;
    bytes[at..at + 4096].fill(0xa5);
    fs::write(&db, bytes).unwrap();

    let cache = open(&dir);
    assert!(
        cache.notices().is_empty(),
        "opening does not read that page"
    );
    let reported = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = reported.clone();
    cache.report_notices(move |n| sink.lock().unwrap().push(n.to_owned()));
    let build = cache.begin_build("/ws", "build").unwrap();
    // The damaged page: moved aside, the lookup answered by the empty database.
    assert!(cache.get_actions(&[key]).unwrap().is_empty());
    assert_eq!(aside(&cache_dir).len(), 1);
    let notices = cache.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("malformed"), "{notices:?}");
    assert_eq!(
        *reported.lock().unwrap(),
        notices,
        "reported as it happened"
    );
    // The build begun before goes on in the new database.
    let run = ActionRun {
        label: "//p:a".into(),
        key,
        outcome: Outcome::Ran,
        duration_ms: 5,
        exit_code: Some(0),
        stdout: None,
        stderr: None,
        workspace: "/ws".into(),
        finished_at_ms: 0,
    };
    cache.record_runs(build, &[run]).unwrap();
    let summary = BuildSummary {
        outcome: "ok".into(),
        ran: 1,
        cached: 0,
        up_to_date: 0,
        failed: 0,
        skipped: 0,
        flaky: 0,
        duration_ms: 9,
    };
    cache.finish_build(build, &summary).unwrap();
    let builds = cache.recent_builds(10).unwrap();
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0].id, build);
    assert!(builds[0].finished_at_ms.is_some());
    assert!(cache.last_run("/ws", "//p:a").unwrap().is_some());
    assert_eq!(cache.notices().len(), 1, "repaired once");
}

/// Two handles meet the same damaged page: the first moves the database aside, the second
/// (whose connection is on the moved file) finds a new file at the path, leaves it, and goes
/// on with it.
#[test]
fn handles_meeting_one_damaged_page_move_the_database_aside_once() {
    let dir = temp();
    let cache_dir = dir.path().join("cache");
    let key = super::key(1);
    open(&dir)
        .put_action(&key, &super::file_result(Digest::of(b"x"), 1))
        .unwrap();
    checkpoint(&cache_dir);
    let db = cache_dir.join("flow.db");
    let mut bytes = fs::read(&db).unwrap();
    // Page 2: the first table of the schema, `action_results`.
    bytes[4096..8192].fill(0x3c);
    fs::write(&db, bytes).unwrap();
    let (a, b) = (open(&dir), open(&dir));
    assert!(a.get_actions(&[key]).unwrap().is_empty());
    assert!(b.get_actions(&[key]).unwrap().is_empty());
    assert_eq!(aside(&cache_dir).len(), 1, "{:?}", names(&cache_dir));
    assert_eq!(a.notices().len(), 1);
    assert!(b.notices().is_empty(), "{:?}", b.notices());
    // Both write to the same new database.
    a.put_action(&key, &super::file_result(Digest::of(b"y"), 1))
        .unwrap();
    assert_eq!(b.get_actions(&[key]).unwrap().len(), 1);
}

/// Regression (issue 15, item 7): restoring from a blob that is a FIFO waited for a writer
/// forever, and from a link to `/dev/zero` copied without end. A blob that is not a regular
/// file, or not of the recorded size, is `Corrupt` at once, moved out of the way, and never
/// read; storing the content again repairs it.
#[test]
fn a_blob_that_is_not_a_regular_file_of_its_size_is_corrupt_and_never_read() {
    let dir = temp();
    let cache = open(&dir);
    let cas = cache.cas();
    let d = cas.put_bytes(b"good").unwrap();
    let path = cas.path_of(&d);
    let dest = dir.path().join("out/f");
    let fifo = |p: &std::path::Path| {
        let made = std::process::Command::new("mkfifo")
            .arg(p)
            .status()
            .unwrap();
        assert!(made.success());
    };
    type Plant<'a> = &'a dyn Fn(&std::path::Path);
    let plants: [(&str, Plant); 4] = [
        ("a FIFO", &fifo),
        ("a link to /dev/zero", &|p| symlink("/dev/zero", p).unwrap()),
        ("a directory", &|p| fs::create_dir(p).unwrap()),
        ("a longer file", &|p| {
            fs::write(p, b"good and more").unwrap()
        }),
    ];
    for (what, plant) in plants {
        fs::remove_file(&path).unwrap();
        plant(&path);
        let reads: [&dyn Fn() -> Result<Vec<u8>, CacheError>; 2] = [
            &|| {
                cas.materialize_file(&d, 4, false, &dest)
                    .map(|_| Vec::new())
            },
            &|| cas.read_verified(&d),
        ];
        for read in reads {
            let result = read();
            assert!(
                matches!(result, Err(CacheError::Corrupt { .. })),
                "{what}: {result:?}"
            );
            assert!(
                fs::symlink_metadata(&path).is_err(),
                "{what}: not moved away"
            );
            plant(&path);
        }
        assert!(!dest.exists(), "{what}");
        fs::remove_file(&path)
            .or_else(|_| fs::remove_dir(&path))
            .unwrap();
        assert_eq!(cas.put_bytes(b"good").unwrap(), d);
    }
    // A forged result recording another size: refused without copying.
    assert!(matches!(
        cas.materialize_file(&d, 5, false, &dest),
        Err(CacheError::Corrupt { .. })
    ));
}
