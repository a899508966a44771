//! The build record's byte format (docs/cache-format.md, "The build record"): `MAGIC`, the
//! blake3 of everything after it, the values' length, the values, then the postcard-encoded
//! head, results and plan.
//!
//! The values are what a build changes, at fixed widths ([`Slots`]): `touched_at_ms`, every
//! source's and output's state, every node's key, every staged output's digest, size and kind.
//! The postcard parts hold only what the plan fixes (paths, labels, stamps of analysis), with
//! the value fields `serde(skip)`ped, so that a build from the record can patch the values in
//! place ([`patch_file`]) and a reader can tell a half-patched file from its checksum.
//!
//! The checksum covers every byte after itself (the length, the values, the head, the results
//! and the plan; `MAGIC` is compared whole), so a flipped byte anywhere sets the record aside: a
//! checksum of the values alone let a damaged command in the plan through, and the next build
//! from the record ran it. Hashing the whole file instead of the values cost the example's no-op
//! (a 101 KB record) nothing measurable: 20.2 ms of CPU before and after (median of 101
//! alternating runs); a patch hashes the file it holds in memory.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use flow_cache::{Digest, FileState, OutputKind};
use flow_rules::snapshot::Stamp;
use serde::{Deserialize, Serialize};

use super::tools::ToolStamps;
use crate::plan::Action;
use crate::rebuilder::StagedOutput;

/// Bumped when the record's layout or meaning changes.
pub(super) const FORMAT: u32 = 8;
pub(super) const MAGIC: &[u8; 8] = b"flowrec\x08";
/// Where the checksummed bytes start: after `MAGIC` and the checksum.
pub(super) const SUMMED: usize = MAGIC.len() + 32;
/// `MAGIC`, the blake3 of the bytes from [`SUMMED`] on, the values' length in bytes (u64,
/// little-endian).
pub(super) const HEADER: usize = SUMMED + 8;
/// A file state in the values: size, mtime, inode, digest, when recorded, ctime.
pub(super) const ENTRY_BYTES: usize = 8 + 8 + 8 + 32 + 8 + 8;
/// A node's key in the values: 1 if present, the key.
pub(super) const KEY_BYTES: usize = 1 + 32;
/// A staged output in the values: digest, size, 1 if a tree, 1 if executable.
pub(super) const STAGED_BYTES: usize = 32 + 8 + 1 + 1;
/// Patched ranges of the values closer than this are written as one.
pub(super) const COALESCE: usize = 4096;

#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Head {
    pub(super) format: u32,
    /// The flow binary that wrote the record.
    pub(super) exe: Stamp,
    /// The patterns, as given (`//...` for none).
    pub(super) request: String,
    /// blake3 of `flow.toml`'s parsed settings.
    #[serde(with = "serde_bytes")]
    pub(super) config: [u8; 32],
    /// When the carried actions' cache entries were last marked used (ms since the epoch).
    #[serde(skip)]
    pub(super) touched_at_ms: i64,
    pub(super) analysis_taken_at_ns: i64,
    pub(super) root_entries: Vec<String>,
    /// Workspace-relative; a symlink stamped by its target (`Stamp::of`).
    pub(super) analysis: Vec<(String, Stamp)>,
    /// Every symlink the workspace walk met, and whether it led to a file.
    pub(super) links: Vec<(String, bool)>,
    pub(super) tools: ToolStamps,
    pub(super) sources: Vec<Entry>,
    pub(super) outputs: Vec<Entry>,
    /// The reuse decision's answer for "nothing changed", taken when the record was written
    /// from its plan and results (`Carried::compute` with an empty change set, then
    /// `covers`): the labels of the plan's tasks, in plan order, when it carries every one of
    /// them (the no-op prints them), `None` when some task would run anyway (a kind that is
    /// never reused). Neither can change while the record's plan stands.
    pub(super) unchanged_carries: Option<Vec<String>>,
}

/// A file state, workspace-relative. The path (and `dir`) are encoded with the head; the state
/// is one of the values.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) path: String,
    #[serde(skip)]
    pub(super) size: u64,
    #[serde(skip)]
    pub(super) mtime_ns: i64,
    #[serde(skip)]
    pub(super) ctime_ns: i64,
    #[serde(skip)]
    pub(super) ino: u64,
    #[serde(skip)]
    pub(super) digest: [u8; 32],
    #[serde(skip)]
    pub(super) recorded_at_ns: i64,
    /// For a directory output (this entry is its tree marker): the directory, which must still
    /// be a directory.
    pub(super) dir: Option<String>,
}

/// The plan: written by a build from analysis, copied as bytes by a build from the record.
#[derive(Serialize, Deserialize)]
pub(super) struct Body {
    pub nodes: Vec<Action>,
    pub requested: Vec<u32>,
    /// Tool name → identity, as the runner keys them.
    pub tools: Vec<(String, String)>,
}

/// What a node's last run left: patched for the nodes a build keyed. The key and the staged
/// outputs' contents are values; the rest is encoded after the head.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct NodeResult {
    /// The key of the task's result (`None` for a group).
    #[serde(skip)]
    pub(super) key: Option<[u8; 32]>,
    /// Its outputs as dependents see them.
    pub(super) staged: Vec<Staged>,
    /// Indices into `Head::outputs` of its outputs' states.
    pub(super) outputs: Vec<u32>,
}

#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Staged {
    pub(super) path: String,
    #[serde(skip)]
    pub(super) tree: bool,
    #[serde(skip)]
    pub(super) digest: [u8; 32],
    #[serde(skip)]
    pub(super) size: u64,
    #[serde(skip)]
    pub(super) executable: bool,
}

/// Device, inode and length of the record file a build read, so that its patch goes to that
/// file and no other.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) len: u64,
}

impl Entry {
    pub(super) fn from_state(path: String, s: &FileState, dir: Option<String>) -> Entry {
        Entry {
            path,
            size: s.size,
            mtime_ns: s.mtime_ns,
            ctime_ns: s.ctime_ns,
            ino: s.ino,
            digest: *s.digest.as_bytes(),
            recorded_at_ns: s.recorded_at_ns,
            dir,
        }
    }

    pub(super) fn state(&self) -> FileState {
        FileState {
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            ino: self.ino,
            digest: Digest::from_bytes(self.digest),
            recorded_at_ns: self.recorded_at_ns,
        }
    }
}

impl Staged {
    pub(super) fn of(o: &StagedOutput) -> Staged {
        let (tree, digest, size, executable) = match &o.kind {
            OutputKind::File {
                digest,
                size,
                executable,
            } => (false, digest, *size, *executable),
            OutputKind::Tree { digest, size } => (true, digest, *size, false),
        };
        Staged {
            path: o.path.clone(),
            tree,
            digest: *digest.as_bytes(),
            size,
            executable,
        }
    }

    pub(super) fn to_output(&self) -> StagedOutput {
        let digest = Digest::from_bytes(self.digest);
        StagedOutput {
            path: self.path.clone(),
            kind: if self.tree {
                OutputKind::Tree {
                    digest,
                    size: self.size,
                }
            } else {
                OutputKind::File {
                    digest,
                    size: self.size,
                    executable: self.executable,
                }
            },
        }
    }
}

/// Writes the `ranges` (offset, length) of the values of `bytes` (the whole record as read from
/// `path`, its values patched in memory) into the record at `path`, if it is still the file `id`
/// a build read, and then the checksum of `bytes`; false if it is not, or a write failed. Ranges
/// close together go in one write. A reader never trusts a half-patched record: until the
/// checksum is written, the file does not match it (and a build killed in between leaves a
/// record the next build ignores).
pub(super) fn patch_file(
    path: &Path,
    id: FileId,
    bytes: &[u8],
    mut ranges: Vec<(usize, usize)>,
) -> bool {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    // Never through a symlink, and never waiting on a FIFO swapped in since the read (opening
    // one for writing would wait for a reader): such a file is not the one read (`id`) anyway.
    let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    let now = f.metadata().ok().map(|m| FileId {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
    });
    if now != Some(id) {
        return false;
    }
    ranges.sort_unstable();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for (at, len) in ranges {
        match spans.last_mut() {
            Some((_, end)) if at <= *end + COALESCE => *end = (*end).max(at + len),
            _ => spans.push((at, at + len)),
        }
    }
    let Some(sum) = bytes.get(SUMMED..).map(blake3::hash) else {
        return false;
    };
    spans.iter().all(|&(a, b)| {
        bytes
            .get(HEADER + a..HEADER + b)
            .is_some_and(|v| f.write_all_at(v, (HEADER + a) as u64).is_ok())
    }) && f.write_all_at(sum.as_bytes(), MAGIC.len() as u64).is_ok()
}

/// Offsets in the values: `touched_at_ms`, then every source's state, every output's state,
/// every node's key, and every staged output, node after node.
pub(super) struct Slots {
    pub(super) sources: usize,
    pub(super) outputs: usize,
}

impl Slots {
    pub(super) fn of(head: &Head) -> Slots {
        Slots {
            sources: head.sources.len(),
            outputs: head.outputs.len(),
        }
    }

    pub(super) fn source(&self, i: usize) -> usize {
        8 + i * ENTRY_BYTES
    }

    pub(super) fn output(&self, i: usize) -> usize {
        8 + (self.sources + i) * ENTRY_BYTES
    }

    pub(super) fn key(&self, node: usize) -> usize {
        8 + (self.sources + self.outputs) * ENTRY_BYTES + node * KEY_BYTES
    }

    /// The `k`th staged output of all, with `nodes` nodes (`k` = everything: the values' length).
    pub(super) fn staged(&self, nodes: usize, k: usize) -> usize {
        self.key(nodes) + k * STAGED_BYTES
    }
}

/// For each node, how many staged outputs the nodes before it have; then the total.
pub(super) fn first_staged(results: &[NodeResult]) -> Vec<usize> {
    let mut first = Vec::with_capacity(results.len() + 1);
    let mut n = 0;
    for r in results {
        first.push(n);
        n += r.staged.len();
    }
    first.push(n);
    first
}

pub(super) fn put_entry(v: &mut [u8], e: &Entry) {
    v[..8].copy_from_slice(&e.size.to_le_bytes());
    v[8..16].copy_from_slice(&e.mtime_ns.to_le_bytes());
    v[16..24].copy_from_slice(&e.ino.to_le_bytes());
    v[24..56].copy_from_slice(&e.digest);
    v[56..64].copy_from_slice(&e.recorded_at_ns.to_le_bytes());
    v[64..72].copy_from_slice(&e.ctime_ns.to_le_bytes());
}

/// Reads the state of `e` from `v` (at least [`ENTRY_BYTES`] long: the caller checked).
pub(super) fn get_entry(v: &[u8], e: &mut Entry) {
    let word = |at: usize| <[u8; 8]>::try_from(&v[at..at + 8]).expect("8 bytes");
    e.size = u64::from_le_bytes(word(0));
    e.mtime_ns = i64::from_le_bytes(word(8));
    e.ino = u64::from_le_bytes(word(16));
    e.digest.copy_from_slice(&v[24..56]);
    e.recorded_at_ns = i64::from_le_bytes(word(56));
    e.ctime_ns = i64::from_le_bytes(word(64));
}

pub(super) fn put_key(v: &mut [u8], key: Option<[u8; 32]>) {
    v[0] = u8::from(key.is_some());
    v[1..33].copy_from_slice(&key.unwrap_or_default());
}

pub(super) fn get_key(v: &[u8]) -> Option<[u8; 32]> {
    (v[0] == 1).then(|| v[1..33].try_into().expect("32 bytes"))
}

pub(super) fn put_staged(v: &mut [u8], s: &Staged) {
    v[..32].copy_from_slice(&s.digest);
    v[32..40].copy_from_slice(&s.size.to_le_bytes());
    v[40] = u8::from(s.tree);
    v[41] = u8::from(s.executable);
}

pub(super) fn get_staged(v: &[u8], s: &mut Staged) {
    s.digest.copy_from_slice(&v[..32]);
    s.size = u64::from_le_bytes(v[32..40].try_into().expect("8 bytes"));
    s.tree = v[40] == 1;
    s.executable = v[41] == 1;
}

/// The length of the values if `bytes` starts with `MAGIC`, everything after the checksum
/// matches it, and holds that many values.
pub(super) fn checked_values(bytes: &[u8]) -> Option<usize> {
    let sum: [u8; 32] = bytes.strip_prefix(MAGIC)?.get(..32)?.try_into().ok()?;
    if blake3::hash(bytes.get(SUMMED..)?).as_bytes() != &sum {
        return None;
    }
    let len = usize::try_from(u64::from_le_bytes(
        bytes.get(SUMMED..HEADER)?.try_into().ok()?,
    ))
    .ok()?;
    bytes.get(HEADER..HEADER.checked_add(len)?)?;
    Some(len)
}

/// The whole record: `MAGIC`, the checksum, the values' length, the values, the head, the
/// results, the plan's bytes.
pub(super) fn encode(head: &Head, results: &[NodeResult], body: &[u8]) -> Option<Vec<u8>> {
    let slots = Slots::of(head);
    let first = first_staged(results);
    let nodes = results.len();
    let mut values = vec![0u8; slots.staged(nodes, first[nodes])];
    values[..8].copy_from_slice(&head.touched_at_ms.to_le_bytes());
    for (i, e) in head.sources.iter().enumerate() {
        put_entry(&mut values[slots.source(i)..], e);
    }
    for (i, e) in head.outputs.iter().enumerate() {
        put_entry(&mut values[slots.output(i)..], e);
    }
    for (i, r) in results.iter().enumerate() {
        put_key(&mut values[slots.key(i)..], r.key);
        let at = slots.staged(nodes, first[i]);
        for (k, st) in r.staged.iter().enumerate() {
            put_staged(&mut values[at + k * STAGED_BYTES..], st);
        }
    }
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&[0; 32]);
    bytes.extend_from_slice(&(values.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&values);
    bytes.extend(postcard::to_stdvec(head).ok()?);
    bytes.extend(postcard::to_stdvec(results).ok()?);
    bytes.extend_from_slice(body);
    let sum = blake3::hash(&bytes[SUMMED..]);
    bytes[MAGIC.len()..SUMMED].copy_from_slice(sum.as_bytes());
    Some(bytes)
}

/// Reads the head's values (`touched_at_ms`, the sources' and outputs' states) from `values`.
pub(super) fn read_head_values(values: &[u8], head: &mut Head) -> Option<()> {
    let slots = Slots::of(head);
    if values.len() < slots.key(0) {
        return None;
    }
    head.touched_at_ms = i64::from_le_bytes(values[..8].try_into().ok()?);
    for (i, e) in head.sources.iter_mut().enumerate() {
        get_entry(&values[slots.source(i)..], e);
    }
    for (i, e) in head.outputs.iter_mut().enumerate() {
        get_entry(&values[slots.output(i)..], e);
    }
    Some(())
}

/// Reads each node's key and staged outputs from `values` into `results`; `None` if the
/// values do not have the length the head and results give them.
pub(super) fn read_values(values: &[u8], head: &Head, results: &mut [NodeResult]) -> Option<()> {
    let slots = Slots::of(head);
    let first = first_staged(results);
    let count = results.len();
    if values.len() != slots.staged(count, first[count]) {
        return None;
    }
    for (i, r) in results.iter_mut().enumerate() {
        r.key = get_key(&values[slots.key(i)..]);
        let at = slots.staged(count, first[i]);
        for (k, s) in r.staged.iter_mut().enumerate() {
            get_staged(&values[at + k * STAGED_BYTES..], s);
        }
    }
    Some(())
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
