//! Pins: what the deploy ledger names stays through `gc` and `clear`.

use std::fs;

use super::{age, key, names, open, temp};
use crate::{Cache, Digest};

const DAY: u64 = 24 * 3600;

fn old_blob(cache: &Cache, fill: u8, len: usize) -> Digest {
    let d = cache.cas().put_bytes(&vec![fill; len]).unwrap();
    age(&cache.cas().path_of(&d), DAY);
    d
}

/// A pinned file blob, a pinned tree (its manifest and its entry), and unpinned blobs and a
/// result: the latter go, the former stay.
fn scenario(dir: &tempfile::TempDir, cache: &Cache) -> (Vec<Digest>, Vec<Digest>) {
    let artifact = old_blob(cache, b'a', 1000);
    let src = dir.path().join("bundle");
    fs::create_dir_all(src.join("lib")).unwrap();
    fs::write(src.join("lib/app.py"), vec![b't'; 700]).unwrap();
    let (manifest, _) = cache.cas().put_tree(&src, false).unwrap();
    let entry = Digest::of(&[b't'; 700]);
    for d in [manifest, entry] {
        age(&cache.cas().path_of(&d), DAY);
    }
    let orphan = old_blob(cache, b'o', 900);
    let output = old_blob(cache, b'r', 800);
    cache
        .put_action(&key(1), &super::file_result(output, 800))
        .unwrap();
    cache
        .set_pins(&[(artifact, false), (manifest, true)])
        .unwrap();
    (vec![artifact, manifest, entry], vec![orphan, output])
}

#[test]
fn gc_keeps_a_pinned_file_and_a_pinned_trees_blobs() {
    let dir = temp();
    let cache = open(&dir);
    let (kept, gone) = scenario(&dir, &cache);
    let report = cache.gc(0).unwrap();
    assert_eq!(report.removed_results, 1);
    assert_eq!(report.removed_blobs, 2);
    for d in &kept {
        assert!(cache.cas().contains(d), "pinned {d} was collected");
    }
    for d in &gone {
        assert!(!cache.cas().contains(d), "{d} was kept");
    }
    // Unpinned, they go too.
    cache.set_pins(&[]).unwrap();
    cache.gc(0).unwrap();
    assert!(names(cache.cas().root())
        .iter()
        .all(|shard| { names(&cache.cas().root().join(shard)).is_empty() }));
}

#[test]
fn set_pins_replaces_the_set() {
    let dir = temp();
    let cache = open(&dir);
    cache.set_pins(&[(key(1), false), (key(2), true)]).unwrap();
    cache.set_pins(&[(key(3), true)]).unwrap();
    assert_eq!(cache.pins().unwrap(), vec![(key(3), true)]);
}

#[test]
fn clear_keeps_pinned_artifacts_and_their_pins() {
    let dir = temp();
    let cache = open(&dir);
    let (kept, gone) = scenario(&dir, &cache);
    fs::write(cache.cas().temp_path(), "partial").unwrap();
    assert_eq!(cache.clear().unwrap(), 2);
    for d in &kept {
        assert!(cache.cas().contains(d), "pinned {d} was removed");
    }
    for d in &gone {
        assert!(!cache.cas().contains(d), "{d} was kept");
    }
    assert!(names(cache.cas().tmp_dir()).is_empty());
    assert_eq!(cache.stats().unwrap().action_results, 0);
    assert_eq!(cache.pins().unwrap().len(), 2);
    // The kept tree is still whole: it materializes.
    let dest = dir.path().join("restored");
    cache.cas().materialize_tree(&kept[1], &dest).unwrap();
    assert_eq!(fs::read(dest.join("lib/app.py")).unwrap(), vec![b't'; 700]);
    // Without pins, clear empties `cas/`.
    cache.set_pins(&[]).unwrap();
    assert_eq!(cache.clear().unwrap(), 0);
    assert!(names(cache.cas().root()).is_empty());
}
