//! The ledger's local home: `entries/<started_ms>-<id>.json` under [`super::ledger_dir`], one
//! JSON object per file. Writes go through a temp file in the same directory and a rename, so a
//! reader sees a whole entry or none, and two processes recording at once need no lock.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::Entry;
use crate::error::Error;

/// The directory of the entry files.
pub(super) fn entries_dir(ledger: &Path) -> PathBuf {
    ledger.join("entries")
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |e| Error::Io {
        path,
        action,
        error: e.to_string(),
    }
}

/// Whether `name` is a name the ledger gives an entry file (what may be copied from a shared
/// tree into the local directory: never a path, never a hidden or temp file).
pub(super) fn is_entry_name(name: &str) -> bool {
    name.ends_with(".json")
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Whether a temp file is older than any live writer's (a write takes milliseconds).
fn is_stale(entry: &fs::DirEntry) -> bool {
    const STALE: std::time::Duration = std::time::Duration::from_secs(3600);
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE)
}

/// Every entry file name in the local directory, sorted (temp files left by a killed writer
/// an hour ago or more are removed on the way).
pub(super) fn names(ledger: &Path) -> Result<Vec<String>, Error> {
    let dir = entries_dir(ledger);
    let read = match fs::read_dir(&dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&dir, "read")(e)),
    };
    let mut names = Vec::new();
    for entry in read {
        let entry = entry.map_err(io(&dir, "read"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if is_entry_name(name) {
            names.push(name.to_owned());
        } else if name.starts_with(".tmp-") && is_stale(&entry) {
            // Left by a writer killed before its rename: its entry was never recorded.
            let _ = fs::remove_file(entry.path());
        }
    }
    names.sort();
    Ok(names)
}

/// An entry file larger than this is not one flow wrote (an entry is a few hundred bytes).
const MAX_ENTRY_BYTES: u64 = 64 << 10;

/// Reads every entry, ordered by `(started_ms, id)`. A file that is not a ledger entry (it does
/// not parse, is not a regular file — a symlink, a directory, a FIFO —, is too large, or holds
/// a field no entry flow writes could: control characters, a digest that is not 64 hex
/// digits) is skipped with a warning and stays where it is: one bad file never blocks a
/// deploy or a rollback.
pub(super) fn read_all(ledger: &Path, warn: &mut dyn FnMut(String)) -> Result<Vec<Entry>, Error> {
    let dir = entries_dir(ledger);
    let mut entries = Vec::new();
    for name in names(ledger)? {
        let path = dir.join(&name);
        let skip = |why: String| {
            format!(
                "skipped the ledger entry `{}`: it is not a ledger entry ({why})",
                path.display()
            )
        };
        match read_entry(&path) {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => {}
            Err(why) => warn(skip(why)),
        }
    }
    entries.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    // A copy of an entry under another file name is the same entry.
    let mut ids = std::collections::HashSet::new();
    entries.retain(|e| ids.insert(e.id.clone()));
    Ok(entries)
}

/// One entry file: `Ok(None)` when it vanished meanwhile.
fn read_entry(path: &Path) -> Result<Option<Entry>, String> {
    use std::io::Read;
    let (file, meta) =
        match flow_cache::regular::open_regular(path, flow_cache::regular::Links::Refuse) {
            Ok(opened) => opened,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
    if meta.len() > MAX_ENTRY_BYTES {
        return Err(format!("{} bytes", meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    entry.check()?;
    Ok(Some(entry))
}

/// Writes `entry` as its own file.
pub(super) fn write(ledger: &Path, entry: &Entry) -> Result<(), Error> {
    let mut bytes = serde_json::to_vec_pretty(entry).expect("an entry serializes");
    bytes.push(b'\n');
    write_file(ledger, &entry.file_name(), &bytes)
}

/// Writes the entry file `name` with `bytes` (temp file + rename); an existing file is
/// replaced by the same content, since names are unique.
pub(super) fn write_file(ledger: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let dir = entries_dir(ledger);
    fs::create_dir_all(&dir).map_err(io(&dir, "create directory"))?;
    let tmp = dir.join(format!(".tmp-{}", super::new_id()));
    let written = fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp, "write")(e));
    }
    let dest = dir.join(name);
    fs::rename(&tmp, &dest).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io(&dest, "write")(e)
    })
}
