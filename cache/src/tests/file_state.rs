//! The file-state table: prefix loading per workspace, replace, empty saves.

use super::{open, temp};
use crate::{Digest, FileState};

fn state(n: u64) -> FileState {
    FileState {
        size: n,
        mtime_ns: 1_700_000_000_000_000_000 + n as i64,
        ctime_ns: 1_700_000_000_000_000_007 + n as i64,
        ino: u64::MAX - n, // inodes above i64::MAX survive the INTEGER column
        digest: Digest::of(&n.to_le_bytes()),
        recorded_at_ns: 1_700_000_000_100_000_000,
    }
}

#[test]
fn states_load_by_workspace_prefix_without_mixing() {
    let dir = temp();
    let cache = open(&dir);
    let rows: Vec<(String, FileState)> = [
        "/ws/a/BUILD",
        "/ws/a/src/x.py",
        "/ws/a-b/BUILD",
        "/ws/a0/BUILD",
        "/ws/ab/BUILD",
        "/ws/a",
        "/ws/b/BUILD",
    ]
    .iter()
    .enumerate()
    .map(|(i, p)| (p.to_string(), state(i as u64)))
    .collect();
    cache.save_file_states(&rows).unwrap();
    let a = cache.load_file_states("/ws/a/").unwrap();
    let mut paths: Vec<&str> = a.keys().map(String::as_str).collect();
    paths.sort();
    assert_eq!(paths, ["/ws/a/BUILD", "/ws/a/src/x.py"]);
    assert_eq!(a["/ws/a/src/x.py"], state(1));
    assert_eq!(cache.load_file_states("/ws/a-b/").unwrap().len(), 1);
    assert_eq!(cache.load_file_states("/nowhere/").unwrap().len(), 0);
    assert_eq!(cache.load_file_states("").unwrap().len(), rows.len());

    // Replace one row.
    cache
        .save_file_states(&[("/ws/a/BUILD".into(), state(42))])
        .unwrap();
    assert_eq!(
        cache.load_file_states("/ws/a/").unwrap()["/ws/a/BUILD"],
        state(42)
    );
}

#[test]
fn saving_nothing_writes_nothing() {
    let dir = temp();
    let cache = open(&dir);
    let changes = cache.conn().total_changes();
    cache.save_file_states(&[]).unwrap();
    assert_eq!(cache.conn().total_changes(), changes);
    assert!(cache.conn().is_autocommit());
}
