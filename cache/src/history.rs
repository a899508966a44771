//! Build history: one `builds` row per build and one `action_runs` row per action outcome.
//!
//! 1. [`Cache::begin_build`] inserts the build (started now, not finished) and returns its id;
//! 2. [`Cache::record_runs`] appends the build's action outcomes, in batches, one transaction each;
//! 3. [`Cache::finish_build`] stores the summary and the finish time.
//!
//! Readers: `flow explain` and `flow log` ([`Cache::last_run`], [`Cache::last_successful_run`]),
//! the scheduler's critical path ([`Cache::durations`]), `flow history` ([`Cache::recent_builds`]).
//! A build killed before step 3 keeps `finished_at = NULL` and reads back with `summary: None`.
//!
//! Pruning ([`Cache::prune_history`], step 0 of every `gc`), from what the readers need:
//! 1. per workspace and label, the [`RUNS_KEPT_PER_LABEL`] most recent `action_runs` rows stay
//!    (`flow log` reads the latest), and so does the most recent successful one, however old
//!    (`flow explain` compares with it); every other row goes. `durations` and `last_keys` read
//!    `action_latest`, one row per label, which pruning leaves alone;
//! 2. a finished build none of whose runs is left goes too, unless it is one of the
//!    [`BUILDS_KEPT`] most recent (a no-op build records no run but is still history). A build
//!    still running (or killed) is never removed: its runs may not be recorded yet;
//! 3. `action_keys` keeps the keys of the [`crate::PROTECTED_RUNS`] most recent runs (as `gc`
//!    pins their logs) and of each label's most recent successful run, which `flow explain`
//!    diffs against.
//!
//! All three in one IMMEDIATE transaction: a concurrent build's `record_runs` waits for it.
//!
//! Admitted limit: `action_latest` keeps one row for every label ever recorded, removed targets
//! included, until [`Cache::clear`].

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};

use crate::cache::Begun;
use crate::db::now_ms;
use crate::error::sql_err;
use crate::{Cache, CacheError, Digest, Outcome};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionRun {
    pub label: String,
    pub key: Digest,
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub exit_code: Option<i32>,
    pub stdout: Option<Digest>,
    pub stderr: Option<Digest>,
    pub workspace: String,
    /// Unix milliseconds; 0 when recording means "now".
    pub finished_at_ms: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildSummary {
    pub outcome: String,
    pub ran: u64,
    pub cached: u64,
    pub up_to_date: u64,
    pub failed: u64,
    pub skipped: u64,
    pub flaky: u64,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildRow {
    pub id: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub workspace: String,
    pub args: String,
    /// `None` while running, or when the build was killed before it finished.
    pub summary: Option<BuildSummary>,
}

const RUN_COLUMNS: &str =
    "label, key, outcome, duration_ms, exit_code, stdout, stderr, workspace, finished_at";

/// The outcomes of a successful run, whose key `flow explain` compares with.
const SUCCESSFUL: &str = "outcome IN ('ran', 'cached', 'flaky')";

/// How many of each label's most recent runs (per workspace) `gc` keeps in `action_runs`.
pub const RUNS_KEPT_PER_LABEL: usize = 10;

/// How many of the most recent builds `gc` keeps even when none of their runs is left.
pub const BUILDS_KEPT: usize = 100;

/// What [`Cache::prune_history`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub runs: u64,
    pub builds: u64,
    pub keys: u64,
}

impl Cache {
    /// Records the start of a build; returns its id.
    pub fn begin_build(&self, workspace: &str, args: &str) -> Result<i64, CacheError> {
        let started_at = now_ms();
        let id = self.write("begin build", |tx| {
            tx.execute(
                "INSERT INTO builds (started_at, workspace, args) VALUES (?1, ?2, ?3)",
                params![started_at, workspace, args],
            )
            .map_err(sql_err("begin build"))?;
            Ok(tx.last_insert_rowid())
        })?;
        // Carried into a database that replaces a damaged one until the build finishes.
        self.begun().push(Begun {
            id,
            started_at,
            workspace: workspace.to_owned(),
            args: args.to_owned(),
        });
        Ok(id)
    }

    pub fn finish_build(&self, build_id: i64, s: &BuildSummary) -> Result<(), CacheError> {
        let finished = self.write("finish build", |tx| {
            tx.execute(
                "UPDATE builds SET finished_at = ?2, outcome = ?3, ran = ?4, cached = ?5, \
                 up_to_date = ?6, failed = ?7, skipped = ?8, flaky = ?9, duration_ms = ?10 \
                 WHERE id = ?1",
                params![
                    build_id,
                    now_ms(),
                    s.outcome,
                    s.ran as i64,
                    s.cached as i64,
                    s.up_to_date as i64,
                    s.failed as i64,
                    s.skipped as i64,
                    s.flaky as i64,
                    s.duration_ms as i64
                ],
            )
            .map_err(sql_err("finish build"))?;
            Ok(())
        });
        self.begun().retain(|b| b.id != build_id);
        finished
    }

    /// Saves serialized action keys (digest → JSON) for `flow explain`, in one transaction;
    /// keys already saved are left as they are.
    pub fn save_keys(&self, keys: &[(Digest, Vec<u8>)]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write("save action keys", |tx| {
            let mut stmt = tx
                .prepare_cached("INSERT OR IGNORE INTO action_keys (key, json) VALUES (?1, ?2)")
                .map_err(sql_err("save action keys"))?;
            for (key, json) in keys {
                stmt.execute(params![key, json])
                    .map_err(sql_err("save action keys"))?;
            }
            Ok(())
        })
    }

    /// The serialized action key saved under `key`, if any.
    pub fn key_json(&self, key: &Digest) -> Result<Option<Vec<u8>>, CacheError> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT json FROM action_keys WHERE key = ?1")
                .map_err(sql_err("read action key"))?;
            let mut rows = stmt.query([key]).map_err(sql_err("read action key"))?;
            match rows.next().map_err(sql_err("read action key"))? {
                Some(row) => Ok(Some(row.get(0).map_err(sql_err("read action key"))?)),
                None => Ok(None),
            }
        })
    }

    /// Appends `runs` to the build `build_id` and updates `action_latest`, in one transaction;
    /// nothing for no runs.
    pub fn record_runs(&self, build_id: i64, runs: &[ActionRun]) -> Result<(), CacheError> {
        if runs.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        self.write("record runs", |tx| {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO action_runs (build_id, {RUN_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ))
                .map_err(sql_err("record runs"))?;
            let mut latest = tx
                .prepare_cached(
                    "INSERT INTO action_latest (workspace, label, key, duration_ms) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (workspace, label) DO UPDATE SET \
                     key = excluded.key, \
                     duration_ms = coalesce(excluded.duration_ms, action_latest.duration_ms)",
                )
                .map_err(sql_err("record runs"))?;
            for r in runs {
                let executed = r.outcome.executed().then_some(r.duration_ms as i64);
                latest
                    .execute(params![r.workspace, r.label, r.key, executed])
                    .map_err(sql_err("record runs"))?;
                let finished = if r.finished_at_ms == 0 {
                    now
                } else {
                    r.finished_at_ms
                };
                stmt.execute(params![
                    build_id,
                    r.label,
                    r.key,
                    r.outcome.as_str(),
                    r.duration_ms as i64,
                    r.exit_code,
                    r.stdout,
                    r.stderr,
                    r.workspace,
                    finished
                ])
                .map_err(sql_err("record runs"))?;
            }
            Ok(())
        })
    }

    /// The most recent run of `label` in `workspace`, whatever its outcome.
    pub fn last_run(&self, workspace: &str, label: &str) -> Result<Option<ActionRun>, CacheError> {
        self.one_run(workspace, label, "")
    }

    /// The most recent run of `label` that ran, was cached or was flaky.
    pub fn last_successful_run(
        &self,
        workspace: &str,
        label: &str,
    ) -> Result<Option<ActionRun>, CacheError> {
        self.one_run(workspace, label, &format!("AND {SUCCESSFUL}"))
    }

    /// Removes the history no reader needs (see the module docs): old `action_runs`, the builds
    /// left without runs, the serialized keys no kept run needs.
    pub fn prune_history(&self) -> Result<Pruned, CacheError> {
        const OP: &str = "gc: prune history";
        // Each label's most recent successful run, kept whatever its age.
        let last_successes =
            format!("SELECT max(id) FROM action_runs WHERE {SUCCESSFUL} GROUP BY workspace, label");
        self.write(OP, |tx| {
            let runs = tx
                .execute(
                    &format!(
                        "DELETE FROM action_runs WHERE id IN (SELECT id FROM (SELECT id, \
                         row_number() OVER (PARTITION BY workspace, label ORDER BY id DESC) AS n \
                         FROM action_runs) WHERE n > ?1) AND id NOT IN ({last_successes})"
                    ),
                    [RUNS_KEPT_PER_LABEL as i64],
                )
                .map_err(sql_err(OP))?;
            let builds = tx
                .execute(
                    "DELETE FROM builds WHERE finished_at IS NOT NULL \
                     AND id NOT IN (SELECT id FROM builds ORDER BY id DESC LIMIT ?1) \
                     AND NOT EXISTS (SELECT 1 FROM action_runs r WHERE r.build_id = builds.id)",
                    [BUILDS_KEPT as i64],
                )
                .map_err(sql_err(OP))?;
            // The test cases of runs no longer kept.
            tx.execute(
                "DELETE FROM case_runs WHERE NOT EXISTS (SELECT 1 FROM action_runs r \
                 WHERE r.build_id = case_runs.build_id AND r.label = case_runs.label)",
                [],
            )
            .map_err(sql_err(OP))?;
            let keys = tx
                .execute(
                    &format!(
                        "DELETE FROM action_keys WHERE key NOT IN \
                         (SELECT key FROM action_runs ORDER BY id DESC LIMIT ?1) \
                         AND key NOT IN (SELECT key FROM action_runs WHERE id IN \
                         ({last_successes}))"
                    ),
                    [crate::PROTECTED_RUNS as i64],
                )
                .map_err(sql_err(OP))?;
            Ok(Pruned {
                runs: runs as u64,
                builds: builds as u64,
                keys: keys as u64,
            })
        })
    }

    /// Every run in `workspace` that finished at or after `since_ms` (unix ms), oldest first:
    /// what `flow metrics` counts. (History is pruned by `gc`: see the module docs.)
    pub fn runs_since(&self, workspace: &str, since_ms: i64) -> Result<Vec<ActionRun>, CacheError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM action_runs WHERE workspace = ?1 AND finished_at >= ?2 \
             ORDER BY id"
        );
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&sql).map_err(sql_err("read history"))?;
            let raw = stmt
                .query_map(rusqlite::params![workspace, since_ms], raw_run)
                .map_err(sql_err("read history"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_err("read history"))?;
            raw.into_iter().map(RawRun::decode).collect()
        })
    }

    /// The runs recorded for build `build_id`, in the order they were recorded.
    pub fn runs_of_build(&self, build_id: i64) -> Result<Vec<ActionRun>, CacheError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM action_runs WHERE build_id = ?1 ORDER BY id");
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&sql).map_err(sql_err("read history"))?;
            let raw = stmt
                .query_map([build_id], raw_run)
                .map_err(sql_err("read history"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_err("read history"))?;
            raw.into_iter().map(RawRun::decode).collect()
        })
    }

    fn one_run(
        &self,
        ws: &str,
        label: &str,
        filter: &str,
    ) -> Result<Option<ActionRun>, CacheError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM action_runs WHERE workspace = ?1 AND label = ?2 {filter} \
             ORDER BY id DESC LIMIT 1"
        );
        self.with_conn(|conn| {
            let raw = conn
                .prepare_cached(&sql)
                .and_then(|mut stmt| stmt.query_row([ws, label], raw_run).optional())
                .map_err(sql_err("read history"))?;
            raw.map(RawRun::decode).transpose()
        })
    }

    /// label → duration of its most recent run that executed (ran, failed, flaky, timed out);
    /// cached runs, whose duration says nothing about the command, are left out. One row per
    /// label (`action_latest`), however long the history.
    pub fn durations(&self, workspace: &str) -> Result<HashMap<String, u64>, CacheError> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT label, duration_ms FROM action_latest \
                 WHERE workspace = ?1 AND duration_ms IS NOT NULL",
                )
                .map_err(sql_err("read durations"))?;
            let rows = stmt
                .query_map([workspace], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                })
                .map_err(sql_err("read durations"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql_err("read durations"))
        })
    }

    /// `durations` for these labels only: one point lookup each, for a build that keys a few
    /// actions of a large workspace.
    pub fn durations_of(
        &self,
        workspace: &str,
        labels: &[String],
    ) -> Result<HashMap<String, u64>, CacheError> {
        self.latest_of(workspace, labels, "duration_ms", "read durations", |v| {
            v.as_i64().ok().map(|ms| ms.max(0) as u64)
        })
    }

    /// `last_keys` for these labels only (see `durations_of`).
    pub fn last_keys_of(
        &self,
        workspace: &str,
        labels: &[String],
    ) -> Result<HashMap<String, Digest>, CacheError> {
        self.latest_of(workspace, labels, "key", "read history", |v| {
            v.as_blob().ok().and_then(Digest::from_slice)
        })
    }

    /// `column` of `action_latest` for each of `labels` that has a value `decode` accepts.
    fn latest_of<T>(
        &self,
        workspace: &str,
        labels: &[String],
        column: &str,
        op: &'static str,
        decode: impl Fn(rusqlite::types::ValueRef<'_>) -> Option<T>,
    ) -> Result<HashMap<String, T>, CacheError> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {column} FROM action_latest WHERE workspace = ?1 AND label = ?2"
                ))
                .map_err(sql_err(op))?;
            let mut out = HashMap::new();
            for label in labels {
                let mut rows = stmt.query(params![workspace, label]).map_err(sql_err(op))?;
                if let Some(row) = rows.next().map_err(sql_err(op))? {
                    let value = row.get_ref(0).map_err(sql_err(op))?;
                    if let Some(v) = decode(value) {
                        out.insert(label.clone(), v);
                    }
                }
            }
            Ok(out)
        })
    }

    /// label → the key of its most recent run in `workspace`, whatever the outcome: most keys
    /// of a build are these, so their results can be fetched in bulk.
    pub fn last_keys(&self, workspace: &str) -> Result<HashMap<String, Digest>, CacheError> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT label, key FROM action_latest WHERE workspace = ?1")
                .map_err(sql_err("read history"))?;
            let rows = stmt
                .query_map([workspace], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(sql_err("read history"))?;
            let mut out = HashMap::new();
            for row in rows {
                let (label, key) = row.map_err(sql_err("read history"))?;
                if let Some(d) = Digest::from_slice(&key) {
                    out.insert(label, d);
                }
            }
            Ok(out)
        })
    }

    /// The latest `limit` builds, newest first.
    pub fn recent_builds(&self, limit: usize) -> Result<Vec<BuildRow>, CacheError> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, started_at, finished_at, workspace, args, outcome, ran, cached, \
                 up_to_date, failed, skipped, flaky, duration_ms FROM builds \
                 ORDER BY id DESC LIMIT ?1",
                )
                .map_err(sql_err("read builds"))?;
            let rows = stmt
                .query_map([limit.min(i64::MAX as usize) as i64], |r| {
                    let finished_at_ms: Option<i64> = r.get(2)?;
                    let n = |i| {
                        r.get::<_, Option<i64>>(i)
                            .map(|v| v.unwrap_or(0).max(0) as u64)
                    };
                    let summary = match finished_at_ms {
                        None => None,
                        Some(_) => Some(BuildSummary {
                            outcome: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                            ran: n(6)?,
                            cached: n(7)?,
                            up_to_date: n(8)?,
                            failed: n(9)?,
                            skipped: n(10)?,
                            flaky: n(11)?,
                            duration_ms: n(12)?,
                        }),
                    };
                    Ok(BuildRow {
                        id: r.get(0)?,
                        started_at_ms: r.get(1)?,
                        finished_at_ms,
                        workspace: r.get(3)?,
                        args: r.get(4)?,
                        summary,
                    })
                })
                .map_err(sql_err("read builds"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql_err("read builds"))
        })
    }
}

/// An `action_runs` row before its outcome text is checked.
struct RawRun(ActionRun, String);

fn raw_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRun> {
    let run = ActionRun {
        label: r.get(0)?,
        key: r.get(1)?,
        outcome: Outcome::Ran,
        duration_ms: r.get::<_, i64>(3)?.max(0) as u64,
        exit_code: r.get(4)?,
        stdout: r.get(5)?,
        stderr: r.get(6)?,
        workspace: r.get(7)?,
        finished_at_ms: r.get(8)?,
    };
    Ok(RawRun(run, r.get(2)?))
}

impl RawRun {
    fn decode(self) -> Result<ActionRun, CacheError> {
        let RawRun(mut run, outcome) = self;
        run.outcome = Outcome::parse(&outcome).ok_or_else(|| CacheError::BadRow {
            table: "action_runs",
            reason: format!("unknown outcome `{outcome}`"),
        })?;
        Ok(run)
    }
}
