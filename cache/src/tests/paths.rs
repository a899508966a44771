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
    for bad in [
        "", "/etc/x", "..", "../x", "a/../b", "a/..", "a//b", "a/", "./a", "a/./b", "a\0b", &long,
    ] {
        match check_relative_path(bad) {
            Err(CacheError::UnsafePath { path, .. }) => assert_eq!(path, bad),
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
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
    // A cycle cannot lead anywhere: the kernel gives up (ELOOP).
    check_symlink("loop1", "loop2/x", &links).unwrap();
}

#[test]
fn upper_bounds_of_prefixes() {
    assert_eq!(upper_bound("/ws/a/").as_deref(), Some("/ws/a0"));
    assert_eq!(upper_bound("ab").as_deref(), Some("ac"));
    assert_eq!(upper_bound("a\u{d7ff}").as_deref(), Some("a\u{e000}"));
    assert_eq!(upper_bound("a\u{10ffff}").as_deref(), Some("b"));
    assert_eq!(upper_bound(""), None);
}
