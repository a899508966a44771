//! The CAS: bytes and files in and out, modes, take vs copy, corruption detection and repair.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::{mode, names, open, temp};
use crate::{CacheError, Digest, LARGE_FILE};

#[test]
fn bytes_round_trip_under_the_sharded_name() {
    let dir = temp();
    let cache = open(&dir);
    let cas = cache.cas();
    let d = cas.put_bytes(b"hello").unwrap();
    assert_eq!(d, Digest::of(b"hello"));
    let hex = d.to_string();
    let path = cas.path_of(&d);
    assert_eq!(
        path,
        cache.dir().join("cas").join(&hex[..2]).join(&hex[2..])
    );
    assert!(cas.contains(&d));
    assert_eq!(mode(&path), 0o444);
    assert_eq!(cas.read_verified(&d).unwrap(), b"hello");
    let ino = fs::metadata(&path).unwrap().ino();
    assert_eq!(cas.put_bytes(b"hello").unwrap(), d);
    assert_eq!(
        fs::metadata(&path).unwrap().ino(),
        ino,
        "an existing blob is not rewritten"
    );
    assert!(!cas.contains(&Digest::of(b"other")));
    assert!(names(cas.tmp_dir()).is_empty(), "no temp file left behind");
}

#[test]
fn temp_names_are_pid_counter_random() {
    let dir = temp();
    let cache = open(&dir);
    let a = cache.cas().temp_path();
    let b = cache.cas().temp_path();
    assert_ne!(a, b);
    assert_eq!(a.parent().unwrap(), cache.cas().tmp_dir());
    let name = a.file_name().unwrap().to_str().unwrap();
    let parts: Vec<&str> = name.split('-').collect();
    assert_eq!(parts.len(), 3, "{name}");
    assert_eq!(parts[0], std::process::id().to_string());
    assert_eq!(parts[2].len(), 16);
}

#[test]
fn files_are_copied_or_taken_with_their_executable_bit() {
    let dir = temp();
    let cache = open(&dir);
    let cas = cache.cas();
    let src = dir.path().join("tool.sh");
    fs::write(&src, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    let (d, size, exec) = cas.put_file(&src, false).unwrap();
    assert_eq!(
        (d, size, exec),
        (Digest::of(b"#!/bin/sh\necho hi\n"), 18, true)
    );
    assert!(src.exists(), "a copy leaves the source");
    assert_eq!(mode(&cas.path_of(&d)), 0o444);

    let plain = dir.path().join("plain.txt");
    fs::write(&plain, "data").unwrap();
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
    let (d2, _, exec2) = cas.put_file(&plain, true).unwrap();
    assert!(!exec2);
    assert!(!plain.exists(), "take moves the source away");
    assert_eq!(cas.read_verified(&d2).unwrap(), b"data");
    assert_eq!(mode(&cas.path_of(&d2)), 0o444);

    // Taking content that is already stored: the blob stays, the source goes.
    let again = dir.path().join("again.txt");
    fs::write(&again, "data").unwrap();
    let ino = fs::metadata(cas.path_of(&d2)).unwrap().ino();
    assert_eq!(cas.put_file(&again, true).unwrap().0, d2);
    assert!(!again.exists());
    assert_eq!(fs::metadata(cas.path_of(&d2)).unwrap().ino(), ino);

    let out = dir.path().join("restored/deep/tool.sh");
    cas.materialize_file(&d, 18, true, &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(mode(&out), 0o755);
    cas.materialize_file(&d2, 4, false, &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), b"data");
    assert_eq!(mode(&out), 0o644);
    assert_eq!(
        names(out.parent().unwrap()),
        ["tool.sh"],
        "no temp file left"
    );
    assert!(names(cas.tmp_dir()).is_empty());
}

#[test]
fn a_hard_linked_source_is_copied_not_taken() {
    let dir = temp();
    let cache = open(&dir);
    let src = dir.path().join("out.txt");
    let other = dir.path().join("source.txt");
    fs::write(&other, "shared").unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o644)).unwrap();
    fs::hard_link(&other, &src).unwrap();
    let (d, _, _) = cache.cas().put_file(&src, true).unwrap();
    assert_eq!(mode(&other), 0o644, "the other link keeps its mode");
    assert_ne!(
        fs::metadata(&other).unwrap().ino(),
        fs::metadata(cache.cas().path_of(&d)).unwrap().ino()
    );
    assert!(!src.exists());
}

#[test]
fn large_files_round_trip() {
    let dir = temp();
    let cache = open(&dir);
    let cas = cache.cas();
    let bytes: Vec<u8> = (0..LARGE_FILE as usize * 2 + 3)
        .map(|i| (i % 253) as u8)
        .collect();
    for take in [false, true] {
        let src = dir.path().join(format!("big-{take}"));
        fs::write(&src, &bytes).unwrap();
        let (d, size, _) = cas.put_file(&src, take).unwrap();
        assert_eq!((d, size), (Digest::of(&bytes), bytes.len() as u64));
        assert_eq!(src.exists(), !take);
        let out = dir.path().join(format!("out-{take}"));
        cas.materialize_file(&d, size, false, &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), bytes);
    }
}

#[test]
fn symlinks_and_directories_are_not_files() {
    let dir = temp();
    let cache = open(&dir);
    let target = dir.path().join("target.txt");
    fs::write(&target, "x").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for take in [false, true] {
        assert!(matches!(
            cache.cas().put_file(&link, take),
            Err(CacheError::UnsafePath { .. })
        ));
    }
    assert!(link.exists() && target.exists());
    assert!(matches!(
        cache.cas().put_file(dir.path(), false),
        Err(CacheError::WrongFileType { .. })
    ));
}

/// Makes the blob `d` hold other bytes, as a failing disk would.
pub(crate) fn corrupt(cache: &crate::Cache, d: &Digest) {
    let path = cache.cas().path_of(d);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] ^= 1;
    fs::write(&path, bytes).unwrap();
}

#[test]
fn a_corrupt_blob_is_detected_removed_and_repaired() {
    let dir = temp();
    let cache = open(&dir);
    let cas = cache.cas();
    let d = cas.put_bytes(b"precious content").unwrap();
    corrupt(&cache, &d);

    let dest = dir.path().join("out/file.txt");
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::write(&dest, "old").unwrap();
    match cas.materialize_file(&d, 16, false, &dest) {
        Err(CacheError::Corrupt { digest, .. }) => assert_eq!(digest, d),
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read(&dest).unwrap(), b"old", "dest untouched");
    assert_eq!(
        names(dest.parent().unwrap()),
        ["file.txt"],
        "no temp file left"
    );
    assert!(!cas.contains(&d), "the corrupt blob was removed");
    assert!(matches!(
        cas.read_verified(&d),
        Err(CacheError::Corrupt { .. })
    ));

    assert_eq!(cas.put_bytes(b"precious content").unwrap(), d);
    cas.materialize_file(&d, 16, false, &dest).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), b"precious content");

    corrupt(&cache, &d);
    assert!(matches!(
        cas.read_verified(&d),
        Err(CacheError::Corrupt { .. })
    ));
    assert!(!cas.contains(&d));
}

#[test]
fn materializing_replaces_a_directory_in_the_way() {
    let dir = temp();
    let cache = open(&dir);
    let d = cache.cas().put_bytes(b"file now").unwrap();
    let dest = dir.path().join("out");
    fs::create_dir_all(dest.join("was/a/dir")).unwrap();
    cache.cas().materialize_file(&d, 8, false, &dest).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), b"file now");
}

#[test]
fn taking_across_filesystems_copies_then_removes() {
    let dir = temp();
    let cache = open(&dir);
    // /dev/shm is a tmpfs on Linux; where it is missing or on the same device, nothing to test.
    let Ok(other) = tempfile::tempdir_in("/dev/shm") else {
        return;
    };
    let dev = |p: &std::path::Path| fs::metadata(p).unwrap().dev();
    if dev(other.path()) == dev(cache.dir()) {
        return;
    }
    let src = other.path().join("out.bin");
    fs::write(&src, "from another filesystem").unwrap();
    let (d, _, _) = cache.cas().put_file(&src, true).unwrap();
    assert!(!src.exists());
    assert_eq!(
        cache.cas().read_verified(&d).unwrap(),
        b"from another filesystem"
    );
    assert_eq!(mode(&cache.cas().path_of(&d)), 0o444);
}
