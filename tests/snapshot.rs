//! The evaluation snapshot (`.flow/analysis/<ws>.json`, `engine/snapshot_file.rs`): a build
//! without a build record takes its targets, commands and file listing from it when nothing
//! evaluation depends on changed. A damaged snapshot must never be used: a flipped byte anywhere
//! is caught by its checksum, and the workspace is evaluated again, silently.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::corruption::{snapshot, warnings, workspace};
use crate::support::{env_number, summary_counts, Rng, Ws};

/// A glob (so the listing matters), a command and a dependency in one package.
const FILES: &[(&str, &str)] = &[
    ("p/s.txt", "src\n"),
    (
        "p/BUILD",
        r#"
task(name = "up", srcs = glob(["*.txt"]), outs = ["o.txt"], cmd = "cat $(SRCS) | tr a-z A-Z > $(OUTS)")
task(name = "n", deps = [":up"], outs = ["n.txt"], cmd = "wc -c < $(location :up) > $(OUTS)")
"#,
    ),
];

/// The one evaluation snapshot in the workspace's cache.
fn snapshot_file(ws: &Ws) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(ws.path().join(".flow/analysis"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// Removes the build records, so that the next build reads the snapshot.
fn forget_records(ws: &Ws) {
    for e in std::fs::read_dir(ws.path().join(".flow/analysis"))
        .unwrap()
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "rec") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

/// Flips bit `bit` of byte `at` of `path` in place: the same inode, the same size and the same
/// mtime as before, as a disk or a stray write would leave it.
fn flip_in_place(path: &Path, at: usize, bit: u32) -> Vec<u8> {
    let before = std::fs::metadata(path).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 1 << bit;
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    f.write_all(&bytes[at..=at]).unwrap();
    f.set_modified(before.modified().unwrap()).unwrap();
    drop(f);
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(
        (after.ino(), after.len(), after.mtime(), after.mtime_nsec()),
        (
            before.ino(),
            before.len(),
            before.mtime(),
            before.mtime_nsec()
        )
    );
    bytes
}

/// A workspace built clean, aged (so that its files' stamps are trusted), built again (so the
/// snapshot holds trusted stamps), and `flow-out/` of the clean build.
fn built() -> (
    Ws,
    std::collections::BTreeMap<String, crate::corruption::Entry>,
) {
    let ws = workspace(FILES);
    ws.run(&["build"]).ok();
    let clean = snapshot(&ws.path().join("flow-out"));
    crate::record::age(ws.path());
    ws.run(&["build"]).ok();
    (ws, clean)
}

/// Regression (issue 15, item 6 follow-up): the evaluation snapshot had no checksum. Flipped
/// bytes in it (forced by deleting the build record) ran corrupted commands (`tr a-z A-Z` as
/// `tr a-z B-Z`, its wrong output cached with exit 0), named sources that do not exist and
/// showed misleading expansion errors. A flip of any byte (every byte of the first line and of
/// a stored command, seeded positions elsewhere; every byte with `FLOW_SNAPSHOT_FLIPS=0`), in
/// place with the mtime kept, sets the snapshot aside: the build succeeds with the outcomes and
/// `flow-out/` of a clean build, runs nothing, warns nothing, and writes a sound snapshot.
#[test]
fn a_flipped_byte_anywhere_in_the_snapshot_sets_it_aside() {
    let (ws, clean) = built();

    // Control: without a flip, the build takes the snapshot as it is (it is not rewritten).
    let path = snapshot_file(&ws);
    let sound = std::fs::read(&path).unwrap();
    forget_records(&ws);
    let control = ws.run(&["build"]);
    control.ok();
    let all_cached = summary_counts(&control);
    assert!(all_cached.contains(" 0 ran, 2 cached"), "{all_cached}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        sound,
        "the snapshot was not used"
    );

    // Every byte of the command where it is stored (the target's `cmd`, the package's text),
    // every byte of the first line, the first and last of the rest, seeded others.
    let command = b"tr a-z A-Z";
    let mut positions: Vec<usize> = (0..sound.len() - command.len())
        .filter(|&i| &sound[i..i + command.len()] == command)
        .flat_map(|i| i..i + command.len())
        .rev()
        .collect();
    assert_eq!(
        positions.len(),
        2 * command.len(),
        "the snapshot holds the command twice"
    );
    let first_line = sound.iter().position(|&b| b == b'\n').unwrap_or(0);
    positions.extend(0..=first_line);
    positions.extend([first_line + 1, sound.len() - 1]);
    let mut rng = Rng(0x5eed_5a95_0000_0015);
    match env_number("FLOW_SNAPSHOT_FLIPS", 60) {
        0 => positions = (0..sound.len()).collect(),
        n => positions.extend((0..n).map(|_| rng.below(sound.len()))),
    }

    for p in positions {
        let path = snapshot_file(&ws);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        let p = p.min(len - 1);
        let bit = rng.below(8) as u32;
        let damaged = flip_in_place(&path, p, bit);
        forget_records(&ws);
        let run = ws.run(&["build"]);
        let what = format!("a flip of bit {bit} at byte {p} of {len}");
        assert_eq!(run.code, 0, "{what} failed the build:\n{}", run.stderr);
        assert_eq!(
            summary_counts(&run),
            all_cached,
            "{what} changed the build:\n{}",
            run.stdout
        );
        assert_eq!(
            snapshot(&ws.path().join("flow-out")),
            clean,
            "{what} changed `flow-out/`"
        );
        assert_eq!(warnings(&run), Vec::<String>::new(), "{what}");
        assert!(
            std::fs::read(snapshot_file(&ws)).unwrap() != damaged,
            "{what} was used (the workspace was not evaluated again)"
        );
    }
}

/// Regression (issue 15, item 6 follow-up): `flow cache verify` said "no problems" with a
/// damaged evaluation snapshot. It reports it (golden `cache_verify_damaged_snapshot`), exits
/// 1, and `--fix` removes it; the next build evaluates the workspace again.
#[test]
fn verify_reports_and_removes_a_damaged_snapshot() {
    let (ws, clean) = built();
    let path = snapshot_file(&ws);
    let sound = ws.run(&["cache", "verify"]);
    assert_eq!(sound.code, 0, "{}", sound.stdout);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    flip_in_place(&path, len / 2, 3);

    let run = ws.run(&["cache", "verify"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let name = path.file_name().unwrap().to_str().unwrap();
    let text = run
        .stdout
        .replace(name, "<ws>.json")
        .replace(|c: char| c.is_ascii_digit(), "N");
    crate::support::golden("cache_verify_damaged_snapshot", &text);

    let fixed = ws.run(&["cache", "verify", "--fix"]);
    assert_eq!(fixed.code, 0, "{}\n{}", fixed.stdout, fixed.stderr);
    assert!(
        fixed.stdout.contains("fixed: the evaluation snapshot"),
        "{}",
        fixed.stdout
    );
    assert!(!path.exists(), "--fix left the damaged snapshot");
    let after = ws.run(&["cache", "verify"]);
    assert_eq!(after.code, 0, "{}", after.stdout);

    ws.run(&["build"]).ok();
    assert_eq!(snapshot(&ws.path().join("flow-out")), clean);
    assert!(path.exists(), "the build wrote a new snapshot");
}
