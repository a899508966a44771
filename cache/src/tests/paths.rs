//! Path safety: relative output paths, symlinks followed through a tree, range bounds.

use std::collections::HashMap;

use crate::file_state::upper_bound;
use crate::paths::check_symlink;
use crate::{check_relative_path, CacheError};

#[test]
fn relative_paths_that_cannot_escape_pass() {
    for ok in ["a", "a/b.txt", "dir/sub/x", ".hidden", "a..b", "..."] {
        check_relative_path(ok).unwrap();
    }
}

#[test]
fn unsafe_relative_paths_are_refused() {
    let long = "a/".repeat(2049);
    let long_name = format!("d/{}", "n".repeat(256));
    for bad in [
        "", "/etc/x", "..", "../x", "a/../b", "a/..", "a//b", "a/", "./a", "a/./b", "a\0b", &long,
        &long_name,
    ] {
        match check_relative_path(bad) {
            Err(CacheError::UnsafePath { path, .. }) => assert_eq!(path, bad),
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
}

#[test]
fn a_255_byte_name_is_the_longest_accepted() {
    check_relative_path(&format!("d/{}", "n".repeat(255))).unwrap();
    let err = check_relative_path(&"n".repeat(256))
        .unwrap_err()
        .to_string();
    assert!(err.contains("longer than 255 bytes"), "{err}");
}

#[test]
fn symlinks_are_followed_through_the_tree() {
    let links: HashMap<&str, &str> = [
        ("top", "a/b"),
        ("a/up", ".."),
        ("a/b/up2", "../.."),
        ("c", "d/e/.."),
        ("d/e", ".."),
        ("loop1", "loop2/x"),
        ("loop2", "loop1/y"),
    ]
    .into_iter()
    .collect();
    check_symlink("top", "a/b", &links).unwrap();
    check_symlink("a/up", "..", &links).unwrap();
    check_symlink("a/b/up2", "../..", &links).unwrap();
    check_symlink("x", "a/up/a/up", &links).unwrap();
    // Each hop alone stays inside; together they climb out.
    check_symlink("c", "d/e/..", &links).unwrap_err();
    check_symlink("x", "a/up/..", &links).unwrap_err();
    check_symlink("x", "/abs", &links).unwrap_err();
    check_symlink("x/y", "../../z", &links).unwrap_err();
    // A cycle cannot be shown to stay inside: refused, like any chain over the kernel's limit.
    let err = check_symlink("loop1", "loop2/x", &links).unwrap_err();
    assert!(err.to_string().contains("symlink hops"), "{err}");
}

#[test]
fn a_chain_longer_than_the_kernel_follows_is_refused() {
    // l0 -> l1 -> ... -> l41 -> ../..: the last hop escapes. A checker that stopped following
    // after 40 hops and accepted what it had would let it through, and a resolver without the
    // kernel's limit (Python's realpath) would then leave the tree.
    let names: Vec<String> = (0..=41).map(|i| format!("l{i}")).collect();
    let mut links: HashMap<&str, &str> = names
        .windows(2)
        .map(|w| (w[0].as_str(), w[1].as_str()))
        .collect();
    links.insert("l41", "../..");
    let err = check_symlink("l0", "l1", &links).unwrap_err();
    assert!(err.to_string().contains("symlink hops"), "{err}");
    // A chain within the limit that stays inside is fine.
    let short: HashMap<&str, &str> = [("s0", "s1"), ("s1", "s2"), ("s2", "file")]
        .into_iter()
        .collect();
    check_symlink("s0", "s1", &short).unwrap();
}

#[test]
fn upper_bounds_of_prefixes() {
    assert_eq!(upper_bound("/ws/a/").as_deref(), Some("/ws/a0"));
    assert_eq!(upper_bound("ab").as_deref(), Some("ac"));
    assert_eq!(upper_bound("a\u{d7ff}").as_deref(), Some("a\u{e000}"));
    assert_eq!(upper_bound("a\u{10ffff}").as_deref(), Some("b"));
    assert_eq!(upper_bound(""), None);
}
