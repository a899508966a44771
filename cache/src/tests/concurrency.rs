//! Two handles on one cache directory, as two flow processes would share it.

use std::sync::{Arc, Barrier};
use std::thread;

use super::{file_result, key, temp};
use crate::{ActionRun, Cache, Digest, FileState, Outcome};

/// Two handles on one directory (as two flow processes would have) writing at once.
#[test]
fn two_handles_share_one_directory() {
    let dir = temp();
    let path = dir.path().join("shared-cache");
    let barrier = Arc::new(Barrier::new(2));
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let path = path.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait(); // open at the same time: both may try to create the schema
                let cache = Cache::open(&path).unwrap();
                let build = cache.begin_build("/ws", &format!("worker {t}")).unwrap();
                for i in 0..150u64 {
                    let n = t * 1000 + i;
                    let blob = cache.cas().put_bytes(&n.to_le_bytes()).unwrap();
                    cache.put_action(&key(n), &file_result(blob, 8)).unwrap();
                    let states: Vec<(String, FileState)> = (0..20)
                        .map(|f| {
                            let state = FileState {
                                size: f,
                                mtime_ns: i as i64,
                                ctime_ns: i as i64,
                                ino: f,
                                digest: Digest::of(&f.to_le_bytes()),
                                recorded_at_ns: i as i64,
                            };
                            (format!("/ws{t}/file{f}"), state)
                        })
                        .collect();
                    cache.save_file_states(&states).unwrap();
                    let run = ActionRun {
                        label: format!("//w{t}:a{i}"),
                        key: key(n),
                        outcome: Outcome::Ran,
                        duration_ms: i,
                        exit_code: Some(0),
                        stdout: None,
                        stderr: None,
                        workspace: "/ws".into(),
                        finished_at_ms: 0,
                    };
                    cache.record_runs(build, &[run]).unwrap();
                    assert!(cache.get_actions(&[key(n)]).unwrap().contains_key(&key(n)));
                    cache.touch_actions(&[key(n)]).unwrap();
                }
                assert_eq!(
                    cache.load_file_states(&format!("/ws{t}/")).unwrap().len(),
                    20
                );
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let cache = Cache::open(&path).unwrap();
    let stats = cache.stats().unwrap();
    assert_eq!((stats.action_results, stats.file_states), (300, 40));
    assert_eq!(
        (stats.builds, stats.action_runs, stats.blobs),
        (2, 300, 300)
    );
}

/// Many handles opening a new cache directory at the same instant: turning a new database
/// into WAL mode needs its exclusive lock, and SQLite answers a connection that would
/// deadlock waiting for it with `SQLITE_BUSY` at once, without its busy handler (seen in CI:
/// "enable WAL ... database is locked" from one of six builds sharing a new cache).
#[test]
fn many_handles_open_a_new_directory_at_once() {
    for round in 0..40 {
        let dir = temp();
        let path = dir.path().join("shared-cache");
        let barrier = Arc::new(Barrier::new(8));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    Cache::open(&path).map(drop).map_err(|e| e.to_string())
                })
            })
            .collect();
        for w in workers {
            if let Err(e) = w.join().unwrap() {
                panic!("round {round}: {e}");
            }
        }
    }
}
