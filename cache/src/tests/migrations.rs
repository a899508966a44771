//! Opening, pragmas and migrations; a newer schema is refused.

use rusqlite::Connection;

use super::temp;
use crate::{Cache, CacheError, DB_FILE, MIGRATIONS};

fn pragma<T: rusqlite::types::FromSql>(cache: &Cache, name: &str) -> T {
    cache
        .conn()
        .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn opening_twice_migrates_once_and_configures_the_connection() {
    let dir = temp();
    let first = Cache::open(dir.path()).unwrap();
    assert_eq!(
        pragma::<i64>(&first, "user_version"),
        MIGRATIONS.len() as i64
    );
    first
        .put_action(&super::key(1), &super::file_result(super::key(2), 1))
        .unwrap();
    drop(first);
    let cache = Cache::open(dir.path()).unwrap();
    assert_eq!(
        pragma::<i64>(&cache, "user_version"),
        MIGRATIONS.len() as i64
    );
    assert_eq!(
        cache.get_actions(&[super::key(1)]).unwrap().len(),
        1,
        "data kept"
    );
    assert_eq!(pragma::<String>(&cache, "journal_mode"), "wal");
    assert_eq!(pragma::<i64>(&cache, "synchronous"), 1, "NORMAL");
    assert_eq!(pragma::<i64>(&cache, "cache_size"), -65536);
    assert_eq!(pragma::<i64>(&cache, "foreign_keys"), 1);
    assert_eq!(pragma::<i64>(&cache, "busy_timeout"), 30_000);
    assert!(dir.path().join("cas").is_dir() && dir.path().join("tmp").is_dir());
    assert_eq!(cache.dir(), dir.path());
}

#[test]
fn a_database_from_a_newer_flow_is_refused() {
    let dir = temp();
    drop(Cache::open(dir.path()).unwrap());
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Cache::open(dir.path()).err().expect("refused");
    match &err {
        CacheError::SchemaTooNew {
            found, supported, ..
        } => assert_eq!((*found, *supported), (99, MIGRATIONS.len() as i64)),
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("schema version 99"), "{message}");
    assert!(message.contains("upgrade flow"), "{message}");
}

#[test]
fn an_empty_database_file_is_migrated() {
    let dir = temp();
    drop(Connection::open(dir.path().join(DB_FILE)).unwrap());
    let cache = Cache::open(dir.path()).unwrap();
    assert_eq!(cache.stats().unwrap().action_results, 0);
}

/// A version-2 cache (no `action_latest`) with history: opening it fills the table from the
/// history, so durations and last keys read the same before and after the upgrade.
#[test]
fn version_2_history_fills_the_latest_runs_table_and_keeps_the_keys() {
    let dir = temp();
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    for migration in &MIGRATIONS[..2] {
        conn.execute_batch(migration).unwrap();
    }
    conn.pragma_update(None, "user_version", 2).unwrap();
    conn.execute(
        "INSERT INTO builds (id, started_at, workspace, args) VALUES (1, 0, '/ws', '')",
        [],
    )
    .unwrap();
    // (workspace, label, key byte, outcome, duration), oldest first.
    let rows = [
        ("/ws", "//a:x", 1u8, "ran", 500),
        ("/ws", "//a:y", 2, "flaky", 70),
        ("/ws", "//a:x", 3, "cached", 0),
        ("/ws", "//a:y", 4, "failed", 90),
        ("/ws", "//a:z", 5, "skipped", 0),
        ("/other", "//a:x", 6, "ran", 40),
    ];
    for (ws, label, k, outcome, ms) in rows {
        conn.execute(
            "INSERT INTO action_runs (build_id, label, key, outcome, duration_ms, workspace, \
             finished_at) VALUES (1, ?1, ?2, ?3, ?4, ?5, 0)",
            rusqlite::params![label, [k; 32].to_vec(), outcome, ms, ws],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO action_keys (key, json) VALUES (?1, ?2)",
        rusqlite::params![[9u8; 32].to_vec(), b"{\"version\":1}".to_vec()],
    )
    .unwrap();
    drop(conn);

    let cache = Cache::open(dir.path()).unwrap();
    let nine = crate::Digest::from_slice(&[9u8; 32]).unwrap();
    assert_eq!(
        cache.key_json(&nine).unwrap().as_deref(),
        Some(&b"{\"version\":1}"[..]),
        "serialized keys are kept"
    );
    cache.save_keys(&[(nine, b"other".to_vec())]).unwrap();
    assert_eq!(
        cache.key_json(&nine).unwrap().as_deref(),
        Some(&b"{\"version\":1}"[..]),
        "a saved key is left as it is"
    );
    assert_eq!(
        pragma::<i64>(&cache, "user_version"),
        MIGRATIONS.len() as i64
    );
    let durations = cache.durations("/ws").unwrap();
    assert_eq!(durations.len(), 2, "{durations:?}");
    assert_eq!(durations["//a:x"], 500, "a cached run measures nothing");
    assert_eq!(durations["//a:y"], 90);
    let last = cache.last_keys("/ws").unwrap();
    let byte = |label: &str| last[label].as_bytes()[0];
    assert_eq!((byte("//a:x"), byte("//a:y"), byte("//a:z")), (3, 4, 5));
    assert_eq!(last.len(), 3);
    assert_eq!(cache.durations("/other").unwrap()["//a:x"], 40);
}

/// The WAL stays when the last connection closes (no checkpoint, no fsync), and the next
/// opener reads what it holds.
#[test]
fn the_log_stays_between_commands_and_is_read_back() {
    let dir = temp();
    let cache = Cache::open(dir.path()).unwrap();
    cache
        .put_action(&super::key(7), &super::file_result(super::key(8), 1))
        .unwrap();
    drop(cache);
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    let kept = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 0, "the log was checkpointed and removed on close");
    let cache = Cache::open(dir.path()).unwrap();
    assert_eq!(cache.get_actions(&[super::key(7)]).unwrap().len(), 1);
}
