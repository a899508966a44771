//! Garbage collection (least recently used) and `clear`.
//!
//! `gc(max_bytes)`:
//! 0. prune the history: each label's last [`crate::RUNS_KEPT_PER_LABEL`] runs and its last
//!    successful one stay, and the serialized keys those need (`Cache::prune_history`,
//!    `history.rs`); this happens whatever the CAS weighs;
//! 1. remove temp files older than [`STALE_TEMP`] (left by killed processes);
//! 2. walk `cas/`; if it holds at most `max_bytes`, stop;
//! 3. load every action result, oldest `last_used_at` first, and the blobs each one needs: its
//!    outputs, the entries listed in its tree manifests, its logs. Blobs named by the
//!    [`PROTECTED_RUNS`] most recent `action_runs` (logs and key) and blobs modified within
//!    [`GRACE`] (a concurrent build may be about to record them) are pinned, and so are the
//!    artifacts the deploy ledger pins (`pins.rs`: a tree with its manifest's entries);
//! 4. count what the live set weighs (blobs needed by some result, or pinned), and drop results
//!    from the oldest until it fits in `max_bytes` (or none is left);
//! 5. delete the dropped rows in one IMMEDIATE transaction, only where `last_used_at` is still
//!    what was read (a row touched or replaced meanwhile stays, and so do its blobs);
//! 6. delete every blob that is neither needed nor pinned, re-checking its mtime just before.
//!
//! Why blobs cannot vanish under a concurrent build: storing a blob that already exists
//! refreshes its mtime when older than `cas::REFRESH_AFTER` (5 min) < [`GRACE`] (10 min), and
//! step 6 re-reads the mtime. A restore racing a `gc` can still find a blob gone: it then gets
//! `Corrupt`, and the engine runs the action again.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::time::{Duration, SystemTime};

use rusqlite::params;

use crate::action_cache::OutputEntry;
use crate::error::sql_err;
use crate::manifest::TreeEntryKind;
use crate::stats::{list_blobs, read_dir};
use crate::{Cache, CacheError, Digest, OutputKind};

/// Blobs modified more recently than this are never collected.
pub const GRACE: Duration = Duration::from_secs(10 * 60);
/// The logs and keys of this many most recent action runs are never collected.
pub const PROTECTED_RUNS: usize = 1000;
/// Temp files older than this belong to no live process and are removed.
pub const STALE_TEMP: Duration = Duration::from_secs(60 * 60);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// `action_runs` rows pruned from the history (step 0).
    pub removed_runs: u64,
    pub removed_results: u64,
    pub removed_blobs: u64,
    pub removed_bytes: u64,
    /// The CAS's size afterwards.
    pub remaining_bytes: u64,
}

/// An action result as `gc` sees it: its row identity and the blobs it needs.
struct Held {
    key: Vec<u8>,
    last_used_at: i64,
    blobs: HashSet<Digest>,
}

impl Cache {
    /// Shrinks the CAS to at most `max_bytes` where possible, dropping the least recently used
    /// action results first (see the module docs).
    pub fn gc(&self, max_bytes: u64) -> Result<GcReport, CacheError> {
        let pruned = self.prune_history()?;
        remove_stale_temps(self)?;
        let blobs = list_blobs(self.cas())?;
        let total: u64 = blobs.iter().map(|b| b.size).sum();
        let mut report = GcReport {
            removed_runs: pruned.runs,
            remaining_bytes: total,
            ..GcReport::default()
        };
        if total <= max_bytes {
            return Ok(report);
        }
        let held = self.held_results()?;
        let mut pinned = self.pinned_by_runs()?;
        pinned.extend(self.pinned_blobs()?);
        let fresh = |m: SystemTime| m.elapsed().map_or(true, |age| age < GRACE);
        pinned.extend(blobs.iter().filter(|b| fresh(b.modified)).map(|b| b.digest));
        let mut refs: HashMap<Digest, u32> = HashMap::new();
        for h in &held {
            for d in &h.blobs {
                *refs.entry(*d).or_default() += 1;
            }
        }
        let size: HashMap<Digest, u64> = blobs.iter().map(|b| (b.digest, b.size)).collect();
        let live = |d: &Digest, refs: &HashMap<Digest, u32>| {
            pinned.contains(d) || refs.get(d).is_some_and(|n| *n > 0)
        };
        let mut live_bytes: u64 = blobs
            .iter()
            .filter(|b| live(&b.digest, &refs))
            .map(|b| b.size)
            .sum();
        let mut dropped = 0;
        while live_bytes > max_bytes && dropped < held.len() {
            for d in &held[dropped].blobs {
                let n = refs.get_mut(d).expect("counted above");
                *n -= 1;
                if *n == 0 && !pinned.contains(d) {
                    live_bytes -= size.get(d).copied().unwrap_or(0);
                }
            }
            dropped += 1;
        }
        let kept_by_race = self.delete_results(&held[..dropped], &mut report)?;
        for h in kept_by_race {
            for d in &h.blobs {
                *refs.entry(*d).or_default() += 1;
            }
        }
        for b in &blobs {
            if live(&b.digest, &refs) {
                continue;
            }
            // Re-check: a concurrent store may have refreshed it since the walk.
            let still_old = fs::symlink_metadata(&b.path)
                .ok()
                .and_then(|m| m.modified().ok())
                .is_some_and(|m| !fresh(m));
            if still_old && fs::remove_file(&b.path).is_ok() {
                report.removed_blobs += 1;
                report.removed_bytes += b.size;
            }
        }
        report.remaining_bytes = total - report.removed_bytes;
        Ok(report)
    }

    /// Removes every blob, temp file, action result, file state and history row, and the damaged
    /// databases an earlier open moved aside; keeps the schema, the pins and the blobs they keep
    /// (`pins.rs`). For `flow clean --cache`. Returns how many pinned artifacts were kept.
    pub fn clear(&self) -> Result<usize, CacheError> {
        crate::db::remove_moved_aside(&self.dir().join(crate::DB_FILE))?;
        self.write("clear", |tx| {
            tx.execute_batch(
                "DELETE FROM action_runs; DELETE FROM action_latest; DELETE FROM builds; \
                 DELETE FROM action_results; DELETE FROM file_state; DELETE FROM action_keys; \
                 DELETE FROM sha256_of;",
            )
            .map_err(sql_err("clear"))
        })?;
        // Best effort: give the space back; another process reading the cache may prevent it.
        let _ = self.with_conn(|conn| conn.execute_batch("VACUUM").map_err(sql_err("vacuum")));
        let kept = self.pinned_blobs()?;
        for path in read_dir(self.cas().tmp_dir())? {
            remove_any(&path)?;
        }
        for shard in read_dir(self.cas().root())? {
            let prefix = shard.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let prefix = prefix.to_owned();
            if kept.is_empty() || !shard.is_dir() {
                remove_any(&shard)?;
                continue;
            }
            let mut left = false;
            for path in read_dir(&shard)? {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                match Digest::from_hex(&format!("{prefix}{name}")) {
                    Some(d) if kept.contains(&d) => left = true,
                    _ => remove_any(&path)?,
                }
            }
            if !left {
                remove_any(&shard)?;
            }
        }
        Ok(self.pins()?.len())
    }

    /// Every action result, least recently used first, with the blobs it needs.
    fn held_results(&self) -> Result<Vec<Held>, CacheError> {
        /// key, last_used_at, outputs JSON, stdout, stderr: undecoded.
        type Row = (Vec<u8>, i64, String, [Option<Vec<u8>>; 2]);
        let rows: Vec<Row> = self.with_conn(|conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT key, last_used_at, outputs, stdout, stderr FROM action_results \
                     ORDER BY last_used_at, key",
                )
                .map_err(sql_err("gc: read results"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, [r.get(3)?, r.get(4)?]))
                })
                .map_err(sql_err("gc: read results"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql_err("gc: read results"))
        })?;
        let mut manifests: HashMap<Digest, Vec<Digest>> = HashMap::new();
        let mut held = Vec::with_capacity(rows.len());
        for (key, last_used_at, outputs, logs) in rows {
            let mut blobs = HashSet::new();
            blobs.extend(logs.iter().flatten().filter_map(|b| Digest::from_slice(b)));
            let outputs: Vec<OutputEntry> = serde_json::from_str(&outputs).unwrap_or_default();
            for o in outputs {
                blobs.insert(*o.kind.digest());
                if let OutputKind::Tree { digest, .. } = o.kind {
                    let entries = manifests.entry(digest).or_insert_with(|| {
                        // A missing or corrupt manifest names nothing: its result is broken.
                        let entries = self.cas().tree_entries(&digest).unwrap_or_default();
                        entries
                            .into_iter()
                            .filter_map(|e| match e.kind {
                                TreeEntryKind::File { digest, .. } => Some(digest),
                                _ => None,
                            })
                            .collect()
                    });
                    blobs.extend(entries.iter().copied());
                }
            }
            held.push(Held {
                key,
                last_used_at,
                blobs,
            });
        }
        Ok(held)
    }

    /// Logs and keys of the most recent action runs.
    fn pinned_by_runs(&self) -> Result<HashSet<Digest>, CacheError> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare("SELECT key, stdout, stderr FROM action_runs ORDER BY id DESC LIMIT ?1")
                .map_err(sql_err("gc: read runs"))?;
            let rows = stmt
                .query_map([PROTECTED_RUNS as i64], |r| {
                    Ok([r.get::<_, Option<Vec<u8>>>(0)?, r.get(1)?, r.get(2)?])
                })
                .map_err(sql_err("gc: read runs"))?;
            let mut pinned = HashSet::new();
            for row in rows {
                let row = row.map_err(sql_err("gc: read runs"))?;
                pinned.extend(row.iter().flatten().filter_map(|b| Digest::from_slice(b)));
            }
            Ok(pinned)
        })
    }

    /// Deletes the rows of `drop` still unchanged; returns those a concurrent build kept alive.
    fn delete_results<'a>(
        &self,
        drop: &'a [Held],
        report: &mut GcReport,
    ) -> Result<Vec<&'a Held>, CacheError> {
        if drop.is_empty() {
            return Ok(Vec::new());
        }
        let (kept, removed) = self.write("gc: delete results", |tx| {
            let mut stmt = tx
                .prepare("DELETE FROM action_results WHERE key = ?1 AND last_used_at = ?2")
                .map_err(sql_err("gc: delete results"))?;
            let (mut kept, mut removed) = (Vec::new(), 0);
            for h in drop {
                match stmt
                    .execute(params![h.key, h.last_used_at])
                    .map_err(sql_err("gc: delete results"))?
                {
                    0 => kept.push(h),
                    _ => removed += 1,
                }
            }
            Ok((kept, removed))
        })?;
        report.removed_results += removed;
        Ok(kept)
    }
}

/// Removes a file or a whole directory.
fn remove_any(path: &std::path::Path) -> Result<(), CacheError> {
    let removed = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    removed.map_err(crate::error::io_err("remove", path))
}

/// Removes entries of `tmp/` older than [`STALE_TEMP`].
fn remove_stale_temps(cache: &Cache) -> Result<(), CacheError> {
    for path in read_dir(cache.cas().tmp_dir())? {
        let old = fs::symlink_metadata(&path)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP);
        if old {
            let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
        }
    }
    Ok(())
}
