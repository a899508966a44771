//! `TreeEntry` and the tree manifest: the blob that describes a directory output.
//!
//! Format (JSON, UTF-8, entries sorted by `path`, keys in this order):
//!
//! ```json
//! {"entries":[
//!   {"path":"a/b.txt","digest":"<64 hex>","size":12,"executable":false},
//!   {"path":"a/link","symlink":"b.txt"},
//!   {"path":"empty","dir":true}
//! ]}
//! ```
//!
//! Directories that hold something are implied by their entries; only empty ones are listed.
//! The manifest is stored in the CAS like any blob, and a tree output is named by the manifest's
//! digest, so equal trees have equal digests.
//!
//! Every manifest read back is validated before any of it touches the disk ([`validate`]):
//! paths pass [`check_relative_path`], no path appears twice, no entry lies below a file or a
//! symlink entry (so materializing never writes through a symlink), and every symlink resolves
//! inside the tree ([`crate::paths`]). Unknown keys are refused, not ignored: an older flow must
//! not half-understand a newer manifest.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::paths::{check_relative_path, check_symlink};
use crate::{CacheError, Digest};

/// One entry of a tree manifest; `path` is relative to the tree's root, `/`-separated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    pub path: String,
    pub kind: TreeEntryKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeEntryKind {
    File {
        digest: Digest,
        size: u64,
        executable: bool,
    },
    /// A relative symlink whose target stays inside the tree.
    Symlink { target: String },
    /// An empty directory.
    Dir,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    entries: Vec<RawEntry>,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    executable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    symlink: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dir: Option<bool>,
}

/// The manifest bytes for `entries` (sorted here, so the digest does not depend on walk order).
pub(crate) fn encode(entries: &mut [TreeEntry]) -> Vec<u8> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let raw = RawManifest {
        entries: entries
            .iter()
            .map(|e| {
                let path = e.path.clone();
                match &e.kind {
                    TreeEntryKind::File {
                        digest,
                        size,
                        executable,
                    } => RawEntry {
                        path,
                        digest: Some(*digest),
                        size: Some(*size),
                        executable: Some(*executable),
                        ..RawEntry::default()
                    },
                    TreeEntryKind::Symlink { target } => RawEntry {
                        path,
                        symlink: Some(target.clone()),
                        ..RawEntry::default()
                    },
                    TreeEntryKind::Dir => RawEntry {
                        path,
                        dir: Some(true),
                        ..RawEntry::default()
                    },
                }
            })
            .collect(),
    };
    serde_json::to_vec(&raw).expect("a manifest always serializes")
}

/// Parses and [`validate`]s the manifest blob `digest` whose content is `bytes`.
pub(crate) fn decode(digest: &Digest, bytes: &[u8]) -> Result<Vec<TreeEntry>, CacheError> {
    let bad = |reason: String| CacheError::BadManifest {
        digest: *digest,
        reason,
    };
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let mut entries = Vec::with_capacity(raw.entries.len());
    for e in raw.entries {
        let kind = match e {
            RawEntry {
                digest: Some(digest),
                size: Some(size),
                executable,
                symlink: None,
                dir: None,
                ..
            } => TreeEntryKind::File {
                digest,
                size,
                executable: executable.unwrap_or(false),
            },
            RawEntry {
                digest: None,
                size: None,
                executable: None,
                symlink: Some(target),
                dir: None,
                ..
            } => TreeEntryKind::Symlink { target },
            RawEntry {
                digest: None,
                size: None,
                executable: None,
                symlink: None,
                dir: Some(true),
                ..
            } => TreeEntryKind::Dir,
            _ => {
                return Err(bad(format!(
                    "the entry `{}` is not exactly one of a file, a symlink or a directory",
                    e.path
                )))
            }
        };
        entries.push(TreeEntry { path: e.path, kind });
    }
    validate(&entries)?;
    Ok(entries)
}

/// Refuses (`UnsafePath`) any entry that could write or point outside the tree's root.
pub(crate) fn validate(entries: &[TreeEntry]) -> Result<(), CacheError> {
    let mut kinds: HashMap<&str, &TreeEntryKind> = HashMap::with_capacity(entries.len());
    for e in entries {
        check_relative_path(&e.path)?;
        if kinds.insert(&e.path, &e.kind).is_some() {
            return Err(CacheError::unsafe_path(
                &e.path,
                "appears twice in the tree",
            ));
        }
    }
    let mut links = HashMap::new();
    for e in entries {
        for (i, _) in e.path.match_indices('/') {
            let ancestor = &e.path[..i];
            if let Some(TreeEntryKind::File { .. } | TreeEntryKind::Symlink { .. }) =
                kinds.get(ancestor)
            {
                return Err(CacheError::unsafe_path(
                    &e.path,
                    format!("lies below `{ancestor}`, which is not a directory"),
                ));
            }
        }
        if let TreeEntryKind::Symlink { target } = &e.kind {
            links.insert(e.path.as_str(), target.as_str());
        }
    }
    for (link, target) in &links {
        check_symlink(link, target, &links)?;
    }
    Ok(())
}
