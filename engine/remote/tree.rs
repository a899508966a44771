//! Directory outputs as REAPI `Tree`s: a root `Directory` and every `Directory` below it, each
//! naming its files (with their remote digests), subdirectories (by the digest of their
//! `Directory` message) and symbolic links, sorted by name as REAPI asks.
//!
//! flow's own tree manifest (`flow_cache::TreeEntry`, every file and empty directory by path)
//! becomes a `Tree` when a result is uploaded ([`to_tree`]) and is built back from one when a
//! result is read ([`from_tree`]). What comes from a server is checked before any of it is
//! used: every name is one path component (not empty, `.`, `..`, nor holding `/` or NUL), every
//! subdirectory digest names a `Directory` of the tree, and a tree may not unfold into more than
//! [`MAX_ENTRIES`] entries or [`MAX_DEPTH`] levels (a small tree naming one directory many times
//! could otherwise unfold without end). The manifest built from it is validated again by the
//! cache (`put_manifest`: paths, links that stay inside the tree).

use std::collections::{BTreeMap, HashMap};

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use flow_cache::{TreeEntry, TreeEntryKind};
use prost::Message;

use super::HashFunction;

/// The most entries a tree read from a server may unfold into.
pub const MAX_ENTRIES: usize = 1_000_000;

/// The deepest a tree read from a server may be.
pub const MAX_DEPTH: usize = 256;

/// One entry of a tree read from a server: a file by its remote digest, a link or an empty
/// directory.
#[derive(Clone, Debug, PartialEq)]
pub enum RemoteEntry {
    File {
        path: String,
        digest: re::Digest,
        executable: bool,
    },
    Symlink {
        path: String,
        target: String,
    },
    EmptyDir {
        path: String,
    },
}

/// The `Tree` of `entries` (a manifest's), with `digest_of` giving each file's remote digest.
pub fn to_tree(
    function: HashFunction,
    entries: &[TreeEntry],
    mut digest_of: impl FnMut(&flow_cache::Digest) -> re::Digest,
) -> re::Tree {
    let mut dirs: BTreeMap<String, re::Directory> = BTreeMap::new();
    dirs.insert(String::new(), re::Directory::default());
    let parent_and_name = |path: &str| match path.rsplit_once('/') {
        Some((parent, name)) => (parent.to_owned(), name.to_owned()),
        None => (String::new(), path.to_owned()),
    };
    for e in entries {
        // Every ancestor is a directory of the tree.
        let mut at = e.path.as_str();
        while let Some((parent, _)) = at.rsplit_once('/') {
            dirs.entry(parent.to_owned()).or_default();
            at = parent;
        }
        let (parent, name) = parent_and_name(&e.path);
        match &e.kind {
            TreeEntryKind::File {
                digest, executable, ..
            } => dirs.entry(parent).or_default().files.push(re::FileNode {
                name,
                digest: Some(digest_of(digest)),
                is_executable: *executable,
                ..Default::default()
            }),
            TreeEntryKind::Symlink { target } => {
                dirs.entry(parent)
                    .or_default()
                    .symlinks
                    .push(re::SymlinkNode {
                        name,
                        target: target.clone(),
                        ..Default::default()
                    })
            }
            TreeEntryKind::Dir => {
                dirs.entry(e.path.clone()).or_default();
            }
        }
    }
    // Deepest first, so a directory's digest is known before its parent's message is made.
    let mut paths: Vec<String> = dirs.keys().cloned().collect();
    paths.sort_by_key(|p| std::cmp::Reverse(depth(p)));
    let mut children = Vec::new();
    let mut root = re::Directory::default();
    for path in paths {
        let mut dir = dirs.remove(&path).expect("each directory once");
        dir.files.sort_by(|a, b| a.name.cmp(&b.name));
        dir.directories.sort_by(|a, b| a.name.cmp(&b.name));
        dir.symlinks.sort_by(|a, b| a.name.cmp(&b.name));
        if path.is_empty() {
            root = dir;
            continue;
        }
        let (parent, name) = parent_and_name(&path);
        let digest = function.digest(&dir.encode_to_vec());
        dirs.get_mut(&parent)
            .expect("parents are kept until their children are done")
            .directories
            .push(re::DirectoryNode {
                name,
                digest: Some(digest),
            });
        children.push(dir);
    }
    re::Tree {
        root: Some(root),
        children,
    }
}

fn depth(path: &str) -> usize {
    match path.is_empty() {
        true => 0,
        false => path.matches('/').count() + 1,
    }
}

/// The entries of a `Tree` read from a server, checked (module docs).
pub fn from_tree(function: HashFunction, tree: &re::Tree) -> Result<Vec<RemoteEntry>, String> {
    let root = tree.root.as_ref().ok_or("the tree has no root")?;
    let by_digest: HashMap<(String, i64), &re::Directory> = tree
        .children
        .iter()
        .map(|d| {
            let digest = function.digest(&d.encode_to_vec());
            ((digest.hash, digest.size_bytes), d)
        })
        .collect();
    let mut out = Vec::new();
    unfold(root, "", 0, &by_digest, &mut out)?;
    Ok(out)
}

fn unfold(
    dir: &re::Directory,
    prefix: &str,
    depth: usize,
    by_digest: &HashMap<(String, i64), &re::Directory>,
    out: &mut Vec<RemoteEntry>,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("the tree is deeper than {MAX_DEPTH} levels"));
    }
    let path = |name: &str| -> Result<String, String> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(format!("`{prefix}{name}` is not a name inside the tree"));
        }
        Ok(format!("{prefix}{name}"))
    };
    for f in &dir.files {
        out.push(RemoteEntry::File {
            path: path(&f.name)?,
            digest: f.digest.clone().ok_or("a file of the tree has no digest")?,
            executable: f.is_executable,
        });
    }
    for l in &dir.symlinks {
        out.push(RemoteEntry::Symlink {
            path: path(&l.name)?,
            target: l.target.clone(),
        });
    }
    if out.len() > MAX_ENTRIES {
        return Err(format!(
            "the tree unfolds into more than {MAX_ENTRIES} entries"
        ));
    }
    for d in &dir.directories {
        let sub_path = path(&d.name)?;
        let digest = d
            .digest
            .as_ref()
            .ok_or("a directory of the tree has no digest")?;
        let sub = by_digest
            .get(&(digest.hash.clone(), digest.size_bytes))
            .ok_or_else(|| format!("`{sub_path}` names a directory the tree does not hold"))?;
        let at = out.len();
        unfold(sub, &format!("{sub_path}/"), depth + 1, by_digest, out)?;
        if out.len() == at {
            out.push(RemoteEntry::EmptyDir { path: sub_path });
        }
        if out.len() > MAX_ENTRIES {
            return Err(format!(
                "the tree unfolds into more than {MAX_ENTRIES} entries"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_cache::Digest;

    fn file(path: &str, content: &[u8], executable: bool) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            kind: TreeEntryKind::File {
                digest: Digest::of(content),
                size: content.len() as u64,
                executable,
            },
        }
    }

    #[test]
    fn a_manifest_goes_to_a_tree_and_back() {
        let f = HashFunction::Sha256;
        let entries = vec![
            file("a.txt", b"a", false),
            file("bin/run", b"#!", true),
            file("deep/er/x", b"x", false),
            TreeEntry {
                path: "deep/link".into(),
                kind: TreeEntryKind::Symlink {
                    target: "er/x".into(),
                },
            },
            TreeEntry {
                path: "empty".into(),
                kind: TreeEntryKind::Dir,
            },
        ];
        let tree = to_tree(f, &entries, |d| re::Digest {
            hash: d.to_string(),
            size_bytes: 1,
        });
        // Children by name, sorted: REAPI's canonical form.
        let root = tree.root.as_ref().unwrap();
        let names: Vec<&str> = root.directories.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["bin", "deep", "empty"]);
        assert_eq!(tree.children.len(), 4);
        let back = from_tree(f, &tree).unwrap();
        let mut paths: Vec<String> = back
            .iter()
            .map(|e| match e {
                RemoteEntry::File { path, .. }
                | RemoteEntry::Symlink { path, .. }
                | RemoteEntry::EmptyDir { path } => path.clone(),
            })
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            ["a.txt", "bin/run", "deep/er/x", "deep/link", "empty"]
        );
        assert!(back.contains(&RemoteEntry::File {
            path: "bin/run".into(),
            digest: re::Digest {
                hash: Digest::of(b"#!").to_string(),
                size_bytes: 1
            },
            executable: true,
        }));
    }

    #[test]
    fn trees_that_could_escape_or_unfold_without_end_are_refused() {
        let f = HashFunction::Sha256;
        let named = |name: &str| re::Tree {
            root: Some(re::Directory {
                files: vec![re::FileNode {
                    name: name.into(),
                    digest: Some(f.digest(b"x")),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            children: vec![],
        };
        for bad in ["..", ".", "", "a/b", "x\0y"] {
            assert!(from_tree(f, &named(bad)).is_err(), "{bad:?}");
        }
        // A directory naming one the tree does not hold.
        let dangling = re::Tree {
            root: Some(re::Directory {
                directories: vec![re::DirectoryNode {
                    name: "d".into(),
                    digest: Some(f.digest(b"nothing")),
                }],
                ..Default::default()
            }),
            children: vec![],
        };
        assert!(from_tree(f, &dangling)
            .unwrap_err()
            .contains("does not hold"));
        // Each level names the one below twice: 2^40 entries from 40 small messages.
        let mut children = vec![named("leaf").root.unwrap()];
        for _ in 0..40 {
            let below = f.digest(&children.last().unwrap().encode_to_vec());
            children.push(re::Directory {
                directories: ["a", "b"]
                    .iter()
                    .map(|n| re::DirectoryNode {
                        name: (*n).into(),
                        digest: Some(below.clone()),
                    })
                    .collect(),
                ..Default::default()
            });
        }
        let root = children.pop().unwrap();
        let bomb = re::Tree {
            root: Some(root),
            children,
        };
        assert!(from_tree(f, &bomb).unwrap_err().contains("more than"));
    }
}
