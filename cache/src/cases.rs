//! The test cases of the test actions that ran, from their JUnit outputs: one row per case and
//! run (`case_runs`), so that `flow metrics --flaky` finds the test cases that both passed and
//! failed under one action key. Written with the build's runs, pruned with them.

use rusqlite::params;

use crate::error::sql_err;
use crate::{Cache, CacheError, Digest};

/// One test case of one run of a test action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseRun {
    pub label: String,
    pub key: Digest,
    /// `classname.name`, as the JUnit file gives them.
    pub name: String,
    pub passed: bool,
    /// Unix milliseconds.
    pub finished_at_ms: i64,
}

impl Cache {
    /// Appends the test cases of build `build_id`'s runs, in one transaction.
    pub fn record_cases(
        &self,
        build_id: i64,
        workspace: &str,
        cases: &[CaseRun],
    ) -> Result<(), CacheError> {
        if cases.is_empty() {
            return Ok(());
        }
        self.write("record test cases", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO case_runs \
                     (build_id, workspace, label, key, name, passed, finished_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql_err("record test cases"))?;
            for c in cases {
                stmt.execute(params![
                    build_id,
                    workspace,
                    c.label,
                    c.key,
                    c.name,
                    c.passed,
                    c.finished_at_ms
                ])
                .map_err(sql_err("record test cases"))?;
            }
            Ok(())
        })
    }

    /// The test cases recorded in `workspace` at or after `since_ms`, oldest first.
    pub fn cases_since(&self, workspace: &str, since_ms: i64) -> Result<Vec<CaseRun>, CacheError> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT label, key, name, passed, finished_at FROM case_runs \
                     WHERE workspace = ?1 AND finished_at >= ?2 ORDER BY id",
                )
                .map_err(sql_err("read test cases"))?;
            let rows = stmt
                .query_map(params![workspace, since_ms], |r| {
                    Ok(CaseRun {
                        label: r.get(0)?,
                        key: r.get(1)?,
                        name: r.get(2)?,
                        passed: r.get(3)?,
                        finished_at_ms: r.get(4)?,
                    })
                })
                .map_err(sql_err("read test cases"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(sql_err("read test cases"))
        })
    }
}
