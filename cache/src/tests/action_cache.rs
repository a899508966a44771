//! Action cache: round trips, failures not served, bulk lookup, `touch_actions` writing nothing when fresh.

use rusqlite::Connection;

use super::{file_result, key, open, temp};
use crate::{ActionResult, Cache, Digest, OutputEntry, OutputKind, DB_FILE};

fn rich_result() -> ActionResult {
    ActionResult {
        exit_code: 0,
        outputs: vec![
            OutputEntry {
                path: "bin/tool".into(),
                kind: OutputKind::File {
                    digest: Digest::of(b"tool"),
                    size: 4,
                    executable: true,
                },
            },
            OutputEntry {
                path: "site".into(),
                kind: OutputKind::Tree {
                    digest: Digest::of(b"manifest"),
                    size: 1234,
                },
            },
        ],
        stdout: Some(Digest::of(b"out")),
        stderr: None,
        duration_ms: 4321,
    }
}

#[test]
fn results_round_trip_and_failures_are_not_served() {
    let dir = temp();
    let cache = open(&dir);
    cache.put_action(&key(1), &rich_result()).unwrap();
    let failed = ActionResult {
        exit_code: 2,
        ..file_result(Digest::of(b"x"), 1)
    };
    cache.put_action(&key(2), &failed).unwrap();
    let got = cache.get_actions(&[key(1), key(2), key(3)]).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[&key(1)], rich_result());
    // Replacing a result.
    cache
        .put_action(&key(1), &file_result(Digest::of(b"y"), 1))
        .unwrap();
    assert_eq!(
        cache.get_actions(&[key(1)]).unwrap()[&key(1)].outputs.len(),
        1
    );
    assert!(cache.get_actions(&[]).unwrap().is_empty());
}

#[test]
fn outputs_are_stored_as_flat_json() {
    let json = serde_json::to_string(&rich_result().outputs[1]).unwrap();
    let d = Digest::of(b"manifest");
    assert_eq!(
        json,
        format!(r#"{{"path":"site","kind":"tree","digest":"{d}","size":1234}}"#)
    );
}

#[test]
fn bulk_lookup_of_1200_keys() {
    let dir = temp();
    let cache = open(&dir);
    for n in 0..1200 {
        cache
            .put_action(&key(n), &file_result(Digest::of(&n.to_le_bytes()), n))
            .unwrap();
    }
    let mut keys: Vec<Digest> = (0..1300).map(key).collect();
    keys.push(key(5)); // a duplicate is harmless
    let got = cache.get_actions(&keys).unwrap();
    assert_eq!(got.len(), 1200);
    assert_eq!(
        got[&key(1199)],
        file_result(Digest::of(&1199u64.to_le_bytes()), 1199)
    );
}

fn data_version(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
        .unwrap()
}

fn last_used(cache: &Cache, k: &Digest) -> i64 {
    cache
        .conn()
        .query_row(
            "SELECT last_used_at FROM action_results WHERE key = ?1",
            [k],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn touching_fresh_results_writes_nothing() {
    let dir = temp();
    let cache = open(&dir);
    for n in 0..3 {
        cache
            .put_action(&key(n), &file_result(Digest::of(b"x"), 1))
            .unwrap();
    }
    let observer = Connection::open(cache.dir().join(DB_FILE)).unwrap();
    let before = data_version(&observer);
    let changes = cache.conn().total_changes();
    cache
        .touch_actions(&[key(0), key(1), key(2), key(9)])
        .unwrap();
    assert_eq!(
        data_version(&observer),
        before,
        "no commit by any connection"
    );
    assert_eq!(cache.conn().total_changes(), changes);

    // A result last used two hours ago is refreshed; the fresh ones are left alone.
    let two_hours_ago = crate::db::now_ms() - 2 * 3600 * 1000;
    cache
        .conn()
        .execute(
            "UPDATE action_results SET last_used_at = ?1 WHERE key = ?2",
            rusqlite::params![two_hours_ago, key(0)],
        )
        .unwrap();
    let fresh = last_used(&cache, &key(1));
    let before = data_version(&observer);
    cache.touch_actions(&[key(0), key(1)]).unwrap();
    assert_ne!(data_version(&observer), before);
    assert!(last_used(&cache, &key(0)) > two_hours_ago + 3600 * 1000);
    assert_eq!(last_used(&cache, &key(1)), fresh);
}
