//! Pins: the artifacts the deploy ledger names as live or previously live in an environment,
//! which must stay in the CAS for a rollback long after the action results that produced them
//! were collected. The engine replaces the whole set ([`Cache::set_pins`]) from its ledger; this
//! crate never learns what an environment is.
//!
//! Invariants: `gc` never removes a pinned blob, nor, for a pinned tree, its manifest's entries;
//! `clear` (`flow clean --cache`) keeps them and the pins themselves, so that what the ledger
//! names stays restorable. A pinned digest missing from the CAS pins nothing.

use std::collections::HashSet;

use rusqlite::params;

use crate::error::sql_err;
use crate::manifest::TreeEntryKind;
use crate::{Cache, CacheError, Digest};

impl Cache {
    /// Replaces the set of pinned artifacts: `(digest, is_tree)`, where a tree's digest is its
    /// manifest's.
    pub fn set_pins(&self, pins: &[(Digest, bool)]) -> Result<(), CacheError> {
        self.write("set pins", |tx| {
            tx.execute("DELETE FROM pins", [])
                .map_err(sql_err("set pins"))?;
            let mut stmt = tx
                .prepare("INSERT OR REPLACE INTO pins (digest, is_tree) VALUES (?1, ?2)")
                .map_err(sql_err("set pins"))?;
            for (digest, is_tree) in pins {
                stmt.execute(params![digest, *is_tree as i64])
                    .map_err(sql_err("set pins"))?;
            }
            Ok(())
        })
    }

    /// The pinned artifacts, as [`Cache::set_pins`] last set them.
    pub fn pins(&self) -> Result<Vec<(Digest, bool)>, CacheError> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare("SELECT digest, is_tree FROM pins ORDER BY digest")
                .map_err(sql_err("read pins"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, Digest>(0)?, r.get::<_, i64>(1)? != 0))
                })
                .map_err(sql_err("read pins"))?;
            rows.collect::<Result<_, _>>().map_err(sql_err("read pins"))
        })
    }

    /// Every blob the pins keep: each pinned blob and, for a tree, the files its manifest lists
    /// (a missing or corrupt manifest keeps nothing more).
    pub(crate) fn pinned_blobs(&self) -> Result<HashSet<Digest>, CacheError> {
        let mut kept = HashSet::new();
        for (digest, is_tree) in self.pins()? {
            kept.insert(digest);
            if is_tree {
                let entries = self.cas().tree_entries(&digest).unwrap_or_default();
                kept.extend(entries.into_iter().filter_map(|e| match e.kind {
                    TreeEntryKind::File { digest, .. } => Some(digest),
                    _ => None,
                }));
            }
        }
        Ok(kept)
    }
}
