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
