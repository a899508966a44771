//! The evaluation snapshot's file (docs/cache-format.md, "The evaluation snapshot"): one line
//! `flow-snapshot <blake3 of every byte after the line, 64 hex>`, then the snapshot as JSON
//! (`flow_rules::snapshot::Snapshot`).
//!
//! The snapshot holds every target's command, sources and outputs, and the file listing that
//! `glob()` answered from; a build from it runs those commands as they are written. Without a
//! checksum a flipped byte in a stored command was run and its wrong output cached (a flip in
//! `tr a-z A-Z` ran `tr a-z B-Z`), a flipped source name was reported as missing, and `flow cache
//! verify` said "no problems". So the digest covers every byte after the first line, the first
//! line is compared whole, and a file that does not match is treated as no snapshot at all: the
//! workspace is evaluated again (silently, as for a stale snapshot) and a sound one written.

use std::path::{Path, PathBuf};

use flow_cache::regular::{read_regular, Links};
use flow_cache::{Problem, ProblemKind};

/// What the first line holds before the digest.
const MAGIC: &[u8] = b"flow-snapshot ";
/// The first line's length: `MAGIC`, 64 hex characters, a newline.
const HEADER: usize = MAGIC.len() + 64 + 1;

/// The largest evaluation snapshot read: far above the snapshot of a 100,000-target workspace;
/// a larger file is not one flow wrote.
const MAX_BYTES: u64 = 1 << 30;

/// The file's bytes for the snapshot `json`.
pub fn seal(json: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + json.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(blake3::hash(json).to_hex().as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(json);
    bytes
}

/// The JSON in a snapshot file's `bytes`, if the first line is one flow writes and holds the
/// digest of everything after it; else why not.
pub fn unseal(bytes: &[u8]) -> Result<&[u8], &'static str> {
    let (header, json) = bytes
        .split_at_checked(HEADER)
        .ok_or("it is too short to be one")?;
    let hex = header
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.strip_suffix(b"\n"))
        .ok_or("it does not start as one does")?;
    if hex != blake3::hash(json).to_hex().as_bytes() {
        return Err("it does not match its checksum");
    }
    Ok(json)
}

/// The JSON of the snapshot at `path`, if it is a regular file (not a link, a FIFO or a device,
/// which would block or never end) and sound ([`unseal`]).
pub fn read(path: &Path) -> Option<Vec<u8>> {
    let mut bytes = read_regular(path, Links::Refuse, MAX_BYTES).ok()?;
    unseal(&bytes).ok()?;
    bytes.drain(..HEADER);
    Some(bytes)
}

/// For `flow cache verify`: every file named `*.json` in `<cache>/analysis/` (the snapshots of
/// every workspace sharing the cache) that a build would not use as a snapshot, as a problem;
/// with `fix`, removed (the next build of its workspace evaluates it again).
pub fn check_all(cache: &Path, fix: bool) -> Vec<Problem> {
    let Ok(entries) = std::fs::read_dir(cache.join("analysis")) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut problems = Vec::new();
    for path in paths {
        let why = match read_regular(&path, Links::Refuse, MAX_BYTES) {
            Ok(bytes) => match unseal(&bytes) {
                Ok(_) => continue,
                Err(why) => why,
            },
            Err(e) if flow_cache::regular::is_not_regular(&e) => "it is not a regular file",
            Err(_) => "it cannot be read",
        };
        let mut problem = Problem::new(
            ProblemKind::Snapshot,
            format!(
                "the evaluation snapshot `{}` is damaged ({why}); the next build evaluates the \
                 workspace again",
                path.display()
            ),
        );
        if fix {
            problem.outcome(std::fs::remove_file(&path).map_err(|e| e.to_string()));
        }
        problems.push(problem);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_damaged_byte_is_refused() {
        let json = br#"{"format":2,"cmd":"cat $(SRCS) | tr a-z A-Z > $(OUTS)"}"#;
        let sealed = seal(json);
        assert_eq!(unseal(&sealed), Ok(&json[..]));
        for at in 0..sealed.len() {
            for bit in 0..8 {
                let mut bytes = sealed.clone();
                bytes[at] ^= 1 << bit;
                assert!(unseal(&bytes).is_err(), "a flip of bit {bit} at byte {at}");
            }
        }
        for len in 0..sealed.len() {
            assert!(unseal(&sealed[..len]).is_err(), "cut at {len}");
        }
        assert!(unseal(json).is_err(), "a snapshot without the line");
    }
}
