//! The action cache: action key digest → `ActionResult` (table `action_results`).
//!
//! 1. The engine computes the keys of every action it may run and asks [`Cache::get_actions`]
//!    once, in bulk (chunks of [`IN_CHUNK`] keys per `SELECT … IN (…)`): point lookups cost
//!    ~5 µs each, so one query per action would dominate a no-op build.
//! 2. Each action that ran and succeeded is stored with [`Cache::put_action`].
//! 3. At the end of a build the hits are passed to [`Cache::touch_actions`], which feeds the LRU
//!    of `gc`. It writes only rows last used more than [`TOUCH_AFTER_MS`] ago, and opens no write
//!    transaction at all when there are none, so a repeated no-op build writes nothing.
//!
//! Invariants: only results with `exit_code == 0` are served (failures are never cache hits);
//! a row whose `outputs` JSON or digests do not decode is treated as a miss, and the next
//! successful run replaces it.

use std::collections::HashMap;

use rusqlite::params_from_iter;
use serde::{Deserialize, Serialize};

use crate::db::{now_ms, placeholders, IN_CHUNK};
use crate::error::sql_err;
use crate::{Cache, CacheError, Digest};

/// `touch_actions` leaves rows used within this many milliseconds alone.
pub const TOUCH_AFTER_MS: i64 = 60 * 60 * 1000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub exit_code: i32,
    pub outputs: Vec<OutputEntry>,
    pub stdout: Option<Digest>,
    pub stderr: Option<Digest>,
    pub duration_ms: u64,
}

/// One declared output. In JSON: `{"path":"out/a.txt","kind":"file","digest":…,"size":…,
/// "executable":…}` or `{"path":"out/dir","kind":"tree","digest":…,"size":…}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputEntry {
    /// As declared: package-relative, no trailing slash. Check it with
    /// [`crate::check_relative_path`] before joining it to an output root.
    pub path: String,
    #[serde(flatten)]
    pub kind: OutputKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OutputKind {
    File {
        digest: Digest,
        size: u64,
        executable: bool,
    },
    Tree {
        /// The digest of the manifest blob.
        digest: Digest,
        /// Total bytes of the tree's files.
        size: u64,
    },
}

impl OutputKind {
    pub fn digest(&self) -> &Digest {
        match self {
            OutputKind::File { digest, .. } | OutputKind::Tree { digest, .. } => digest,
        }
    }
}

impl ActionResult {
    /// The blobs this result names directly: outputs (a tree's manifest, not its entries) and logs.
    pub fn blobs(&self) -> impl Iterator<Item = Digest> + '_ {
        self.outputs
            .iter()
            .map(|o| *o.kind.digest())
            .chain(self.stdout)
            .chain(self.stderr)
    }
}

impl Cache {
    /// The successful cached results among `keys`; absent keys are misses.
    pub fn get_actions(
        &self,
        keys: &[Digest],
    ) -> Result<HashMap<Digest, ActionResult>, CacheError> {
        self.with_conn(|conn| {
            let mut found = HashMap::new();
            for chunk in keys.chunks(IN_CHUNK) {
                let sql = format!(
                "SELECT key, exit_code, outputs, stdout, stderr, duration_ms FROM action_results \
                 WHERE exit_code = 0 AND key IN ({})",
                placeholders(chunk.len())
            );
                let mut stmt = conn.prepare_cached(&sql).map_err(sql_err("get actions"))?;
                let rows = stmt
                    .query_map(params_from_iter(chunk), |r| {
                        Ok((
                            r.get::<_, Digest>(0),
                            r.get::<_, i32>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Option<Digest>>(3),
                            r.get::<_, Option<Digest>>(4),
                            r.get::<_, i64>(5)?,
                        ))
                    })
                    .map_err(sql_err("get actions"))?;
                for row in rows {
                    let (key, exit_code, outputs, stdout, stderr, duration_ms) =
                        row.map_err(sql_err("get actions"))?;
                    let (Ok(key), Ok(outputs), Ok(stdout), Ok(stderr)) =
                        (key, serde_json::from_str(&outputs), stdout, stderr)
                    else {
                        continue; // damaged row: a miss, replaced by the next put_action
                    };
                    let result = ActionResult {
                        exit_code,
                        outputs,
                        stdout,
                        stderr,
                        duration_ms: duration_ms.max(0) as u64,
                    };
                    found.insert(key, result);
                }
            }
            Ok(found)
        })
    }

    /// Stores (or replaces) the result of `key`; created and last used now.
    pub fn put_action(&self, key: &Digest, result: &ActionResult) -> Result<(), CacheError> {
        self.put_actions(&[(*key, result.clone())])
    }

    /// Stores (or replaces) each `(key, result)`, all in one transaction: a run killed before
    /// the commit leaves none of them, never a part of one.
    pub fn put_actions(&self, results: &[(Digest, ActionResult)]) -> Result<(), CacheError> {
        if results.is_empty() {
            return Ok(());
        }
        let rows: Vec<String> = results
            .iter()
            .map(|(_, r)| serde_json::to_string(&r.outputs).expect("outputs always serialize"))
            .collect();
        let now = now_ms();
        self.write("put action", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO action_results (key, exit_code, outputs, stdout, \
                     stderr, duration_ms, created_at, last_used_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                )
                .map_err(sql_err("put action"))?;
            for ((key, result), outputs) in results.iter().zip(&rows) {
                stmt.execute(rusqlite::params![
                    key,
                    result.exit_code,
                    outputs,
                    result.stdout,
                    result.stderr,
                    result.duration_ms as i64,
                    now,
                ])
                .map_err(sql_err("put action"))?;
            }
            crate::failpoint("before-commit");
            Ok(())
        })
    }

    /// Marks `keys` as used now, for the LRU of `gc`; writes only rows older than an hour.
    pub fn touch_actions(&self, keys: &[Digest]) -> Result<(), CacheError> {
        let now = now_ms();
        let stale_before = now - TOUCH_AFTER_MS;
        let stale = self.with_conn(|conn| {
            let mut stale = Vec::new();
            for chunk in keys.chunks(IN_CHUNK) {
                let sql = format!(
                    "SELECT key FROM action_results WHERE last_used_at < ? AND key IN ({})",
                    placeholders(chunk.len())
                );
                let mut stmt = conn
                    .prepare_cached(&sql)
                    .map_err(sql_err("touch actions"))?;
                let params = std::iter::once(&stale_before as &dyn rusqlite::ToSql)
                    .chain(chunk.iter().map(|k| k as &dyn rusqlite::ToSql));
                let rows = stmt
                    .query_map(params_from_iter(params), |r| r.get::<_, Vec<u8>>(0))
                    .map_err(sql_err("touch actions"))?;
                for key in rows {
                    stale.push(key.map_err(sql_err("touch actions"))?);
                }
            }
            Ok(stale)
        })?;
        if stale.is_empty() {
            return Ok(());
        }
        self.write("touch actions", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE action_results SET last_used_at = ?1 \
                     WHERE key = ?2 AND last_used_at < ?3",
                )
                .map_err(sql_err("touch actions"))?;
            for key in &stale {
                stmt.execute(rusqlite::params![now, key, stale_before])
                    .map_err(sql_err("touch actions"))?;
            }
            Ok(())
        })
    }
}
