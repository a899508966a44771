//! Unit tests of the cache, on real temp directories (no mocks), one file per concept.

mod action_cache;
mod cas;
mod concurrency;
mod damage;
mod errors;
mod file_state;
mod gc;
mod history;
mod migrations;
mod paths;
mod pins;
mod tree;
mod verify;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tempfile::TempDir;

use crate::{ActionResult, Cache, Digest, OutputEntry, OutputKind};

pub(crate) fn temp() -> TempDir {
    tempfile::tempdir().unwrap()
}

pub(crate) fn open(dir: &TempDir) -> Cache {
    Cache::open(&dir.path().join("cache")).unwrap()
}

/// Sets the mtime of `path` to `secs` seconds ago.
pub(crate) fn age(path: &Path, secs: u64) {
    let when = SystemTime::now() - Duration::from_secs(secs);
    fs::File::open(path).unwrap().set_modified(when).unwrap();
}

pub(crate) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

pub(crate) fn key(n: u64) -> Digest {
    Digest::of(format!("action key {n}").as_bytes())
}

/// A successful result with one file output.
pub(crate) fn file_result(digest: Digest, size: u64) -> ActionResult {
    ActionResult {
        exit_code: 0,
        outputs: vec![OutputEntry {
            path: "out/a.txt".into(),
            kind: OutputKind::File {
                digest,
                size,
                executable: false,
            },
        }],
        stdout: None,
        stderr: None,
        duration_ms: 12,
    }
}

/// Names of the entries of `dir`, sorted.
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Cache>();
    check::<crate::Cas>();
}
