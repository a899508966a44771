//! `Cache::verify`, `Cache::sweep_orphans` and `sweep_leftovers`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{file_result, key, open, temp};
use crate::verify::owner_pid;
use crate::{
    sweep_leftovers, ActionResult, Cache, Digest, OutputEntry, OutputKind, ProblemKind,
    VerifyReport,
};

/// A pid no process has (above Linux's largest `pid_max`).
const DEAD: u32 = 999_999_999;

fn kinds(report: &VerifyReport) -> Vec<ProblemKind> {
    report.problems.iter().map(|p| p.kind).collect()
}

fn tree_result(manifest: Digest, size: u64) -> ActionResult {
    ActionResult {
        exit_code: 0,
        outputs: vec![OutputEntry {
            path: "site".into(),
            kind: OutputKind::Tree {
                digest: manifest,
                size,
            },
        }],
        stdout: None,
        stderr: None,
        duration_ms: 1,
    }
}

/// Overwrites the read-only blob `d` with `bytes`.
fn damage(cache: &Cache, d: &Digest, bytes: &[u8]) {
    let path = cache.cas().path_of(d);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&path, bytes).unwrap();
}

#[test]
fn a_sound_cache_has_no_problems() {
    let dir = temp();
    let cache = open(&dir);
    let d = cache.cas().put_bytes(b"hello").unwrap();
    let log = cache.cas().put_bytes(b"log").unwrap();
    let mut result = file_result(d, 5);
    result.stdout = Some(log);
    cache.put_action(&key(1), &result).unwrap();
    let src = dir.path().join("tree");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/a.txt"), b"aaa").unwrap();
    std::os::unix::fs::symlink("sub/a.txt", src.join("link")).unwrap();
    let (manifest, size) = cache.cas().put_tree(&src, false).unwrap();
    cache
        .put_action(&key(2), &tree_result(manifest, size))
        .unwrap();
    let report = cache.verify(false).unwrap();
    assert_eq!(report.problems, vec![]);
    assert_eq!(report.results, 2);
    assert_eq!(report.blobs, 4);
    assert!(report.is_sound());
}

#[test]
fn a_missing_blob_makes_a_bad_result_which_fix_deletes() {
    let dir = temp();
    let cache = open(&dir);
    let gone = Digest::of(b"never stored");
    cache.put_action(&key(1), &file_result(gone, 12)).unwrap();
    let kept = cache.cas().put_bytes(b"kept").unwrap();
    cache.put_action(&key(2), &file_result(kept, 4)).unwrap();

    let report = cache.verify(false).unwrap();
    assert_eq!(kinds(&report), [ProblemKind::BadResult]);
    let line = report.problems[0].to_string();
    assert!(line.contains(&key(1).to_string()), "{line}");
    assert!(line.contains("output `out/a.txt` needs blob"), "{line}");
    assert!(line.contains("which is missing"), "{line}");
    assert!(!report.is_sound());
    // Without --fix nothing changed.
    assert_eq!(cache.get_actions(&[key(1)]).unwrap().len(), 1);

    let fixed = cache.verify(true).unwrap();
    assert!(fixed.is_sound(), "{fixed:?}");
    assert!(fixed.problems[0].fixed);
    assert!(cache.get_actions(&[key(1)]).unwrap().is_empty());
    assert_eq!(cache.get_actions(&[key(2)]).unwrap().len(), 1);
    assert_eq!(cache.verify(false).unwrap().problems, vec![]);
}

#[test]
fn a_corrupt_blob_and_the_results_needing_it_are_removed() {
    let dir = temp();
    let cache = open(&dir);
    let src = dir.path().join("tree");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("inner.txt"), b"inner").unwrap();
    let (manifest, size) = cache.cas().put_tree(&src, false).unwrap();
    cache
        .put_action(&key(1), &tree_result(manifest, size))
        .unwrap();
    let inner = Digest::of(b"inner");
    damage(&cache, &inner, b"INNER");

    let report = cache.verify(false).unwrap();
    let mut found = kinds(&report);
    found.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(found, [ProblemKind::BadResult, ProblemKind::CorruptBlob]);
    let text: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        text.iter()
            .any(|l| l.contains("file `inner.txt` of output `site`") && l.contains("corrupt")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|l| l.starts_with(&format!("corrupt blob {inner}"))),
        "{text:?}"
    );

    let fixed = cache.verify(true).unwrap();
    assert!(fixed.is_sound(), "{fixed:?}");
    assert!(!cache.cas().path_of(&inner).exists());
    assert!(cache.get_actions(&[key(1)]).unwrap().is_empty());
    assert_eq!(cache.verify(false).unwrap().problems, vec![]);
}

#[test]
fn damaged_rows_and_wrong_sizes_are_bad_results() {
    let dir = temp();
    let cache = open(&dir);
    let d = cache.cas().put_bytes(b"four").unwrap();
    cache.put_action(&key(1), &file_result(d, 5)).unwrap(); // the blob holds 4 bytes
    cache.put_action(&key(2), &file_result(d, 4)).unwrap();
    cache
        .conn()
        .execute(
            "UPDATE action_results SET outputs = 'not json' WHERE key = ?1",
            [key(2)],
        )
        .unwrap();
    let mut unsafe_path = file_result(d, 4);
    unsafe_path.outputs[0].path = "../escape".into();
    cache.put_action(&key(3), &unsafe_path).unwrap();

    let report = cache.verify(false).unwrap();
    assert_eq!(kinds(&report), [ProblemKind::BadResult; 3], "{report:?}");
    let text = report
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("records 5 bytes, but its blob"), "{text}");
    assert!(text.contains("its outputs do not decode"), "{text}");
    assert!(text.contains("`..`"), "{text}");
    assert!(cache.verify(true).unwrap().is_sound());
    assert_eq!(cache.verify(false).unwrap().results, 0);
}

#[test]
fn orphans_of_dead_processes_are_found_and_swept() {
    let dir = temp();
    let cache = open(&dir);
    let tmp = cache.cas().tmp_dir();
    let orphan = tmp.join(format!("{DEAD}-3-0123456789abcdef"));
    let live = tmp.join(format!("{}-3-0123456789abcdef", std::process::id()));
    fs::write(&orphan, b"half").unwrap();
    fs::write(&live, b"in use").unwrap();
    let sandbox = cache.dir().join("sandbox");
    let stale = sandbox.join(format!("{DEAD}-0"));
    let running = sandbox.join(format!("{}-0", std::process::id()));
    fs::create_dir_all(stale.join("exec/locked")).unwrap();
    fs::write(stale.join("exec/locked/f"), b"x").unwrap();
    fs::set_permissions(stale.join("exec/locked"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::create_dir_all(&running).unwrap();

    let report = cache.verify(false).unwrap();
    assert_eq!(
        kinds(&report),
        [ProblemKind::OrphanTemp, ProblemKind::StaleSandbox]
    );
    assert!(report.problems[0]
        .to_string()
        .contains(&format!("process {DEAD} is gone")));
    assert_eq!(cache.sweep_orphans().unwrap(), 2);
    assert!(!orphan.exists() && !stale.exists());
    assert!(live.exists() && running.exists());
    assert_eq!(cache.verify(false).unwrap().problems, vec![]);
}

#[test]
fn leftovers_beside_outputs_are_found_but_not_inside_directory_outputs() {
    let dir = temp();
    let out = dir.path().join("flow-out");
    let unique = |pid: u32| format!("{pid}-7-00000000deadbeef");
    let put = |rel: &str| {
        let p = out.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, b"x").unwrap();
    };
    put(&format!("pkg/sub/.flow-tmp-{}", unique(DEAD)));
    put(&format!("pkg/.a.txt.flow-tmp-{}", unique(DEAD)));
    put(&format!("pkg/.flow-old-{}/old/file", unique(DEAD)));
    put(&format!("pkg/.flow-tmp-{}", unique(std::process::id())));
    put(&format!("pkg/site/.flow-tmp-{}", unique(DEAD))); // inside a directory output
    put("pkg/.site.flow-tree");
    put("pkg/.flow-tmp-not-a-unique-name");

    let found = sweep_leftovers(&out, false);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found.iter().all(|p| p.kind == ProblemKind::Leftover));
    let fixed = sweep_leftovers(&out, true);
    assert!(fixed.iter().all(|p| p.fixed), "{fixed:?}");
    assert_eq!(sweep_leftovers(&out, false), vec![]);
    assert!(out
        .join(format!("pkg/.flow-tmp-{}", unique(std::process::id())))
        .exists());
    assert!(out
        .join(format!("pkg/site/.flow-tmp-{}", unique(DEAD)))
        .exists());
    assert!(sweep_leftovers(Path::new("/nonexistent/flow-out"), true).is_empty());
}

#[test]
fn owner_pids_parse_only_unique_names() {
    assert_eq!(owner_pid("123-4-0123456789abcdef"), Some(123));
    assert_eq!(owner_pid("123-4-0123456789abcde"), None);
    assert_eq!(owner_pid("123-4-0123456789abcdef-x"), None);
    assert_eq!(owner_pid("x-4-0123456789abcdef"), None);
    assert_eq!(owner_pid(""), None);
}

#[test]
fn a_real_unique_name_names_this_process() {
    let dir = temp();
    let cache = open(&dir);
    let name = cache.cas().unique_name();
    assert_eq!(owner_pid(&name), Some(std::process::id()));
}
