//! The history batch: what one build writes to the database besides results (which workers
//! store as they finish). Collected during the build and written at its end in a few batched
//! transactions: file states, action keys (for `flow explain`), action runs (for `flow log` and
//! durations), and the use times of the results reused (for `flow cache gc`'s LRU order). A
//! no-op writes (almost) nothing.

use std::collections::HashMap;
use std::time::Duration;

use flow_cache::{ActionRun, BuildSummary, Cache, CaseRun, Digest, Outcome};

use crate::clock::Clock;
use crate::hasher::FileHasher;
use crate::reporter::{Reporter, Summary};

pub(super) struct HistoryBatch {
    build_id: Option<i64>,
    workspace: String,
    clock: Clock,
    runs: Vec<ActionRun>,
    /// Results reused this build: their use times are updated.
    hits: Vec<Digest>,
    /// Keys of the actions handed to the executor, as JSON.
    key_jsons: Vec<(Digest, Vec<u8>)>,
    /// Label → the key history names last (an action merely up to date writes no run row).
    last_keys: HashMap<String, Digest>,
    /// The test cases of the actions that ran (`collect_cases`).
    cases: Vec<CaseRun>,
}

/// The most test cases recorded for one build: the history stays small however large the
/// test suites (a flaky case among more is still found in the next build that records it).
const CASES_PER_BUILD: usize = 20_000;

/// One finished (or reused) action as history records it.
pub(super) struct RunRow {
    pub outcome: Outcome,
    pub took: Duration,
    pub exit: Option<i32>,
    pub stdout: Option<Digest>,
    pub stderr: Option<Digest>,
}

impl RunRow {
    /// A result reused from the cache: no time, exit 0.
    pub fn cached(stdout: Option<Digest>, stderr: Option<Digest>) -> RunRow {
        RunRow {
            outcome: Outcome::Cached,
            took: Duration::ZERO,
            exit: Some(0),
            stdout,
            stderr,
        }
    }
}

impl HistoryBatch {
    /// Starts the build's history row (a failure is warned about and only costs history).
    pub fn begin(
        cache: &Cache,
        workspace: &str,
        clock: Clock,
        last_keys: HashMap<String, Digest>,
        reporter: &Reporter,
    ) -> HistoryBatch {
        let args = std::env::args().collect::<Vec<_>>().join(" ");
        let build_id = cache
            .begin_build(workspace, &args)
            .map_err(|e| reporter.warn(&format!("cannot record this build in the history: {e}")))
            .ok();
        HistoryBatch {
            build_id,
            workspace: workspace.to_owned(),
            clock,
            runs: Vec::new(),
            hits: Vec::new(),
            key_jsons: Vec::new(),
            last_keys,
            cases: Vec::new(),
        }
    }

    pub fn run(&mut self, label: String, key: Digest, row: RunRow) {
        self.runs.push(ActionRun {
            label,
            key,
            outcome: row.outcome,
            duration_ms: row.took.as_millis() as u64,
            exit_code: row.exit,
            stdout: row.stdout,
            stderr: row.stderr,
            workspace: self.workspace.clone(),
            finished_at_ms: self.clock.now_ms(),
        });
    }

    /// A cached result was used for `label`: recorded as a run when it was restored or is
    /// not the result history names last (`flow log` replays it); marked used either way.
    pub fn reused(&mut self, label: &str, key: Digest, restored: bool, row: RunRow) {
        if restored || self.last_keys.get(label) != Some(&key) {
            self.run(label.to_owned(), key, row);
        }
        self.hits.push(key);
    }

    /// A carried result: marked used only when `touch` (see `record`'s touch interval).
    pub fn carried(&mut self, key: Digest, touch: bool) {
        if touch {
            self.hits.push(key);
        }
    }

    pub fn key_json(&mut self, key: Digest, json: Vec<u8>) {
        self.key_jsons.push((key, json));
    }

    /// The test cases of every action that ran, failed or passed on a retry, from its JUnit
    /// outputs under `out_root` (a failed action's outputs are kept there too): passed, or
    /// failed / in error; skipped cases are not recorded.
    pub fn collect_cases(&mut self, plan: &crate::plan::Plan, out_root: &std::path::Path) {
        use crate::reports::junit_file::{parse_junit_within, Budget, CaseResult};
        let mut budget = Budget::new(CASES_PER_BUILD);
        let executed: HashMap<&str, &ActionRun> = self
            .runs
            .iter()
            .filter(|r| r.outcome.executed())
            .map(|r| (r.label.as_str(), r))
            .collect();
        if executed.is_empty() {
            return;
        }
        let mut found = Vec::new();
        for action in plan
            .nodes
            .iter()
            .filter(|a| a.outs.iter().any(|o| o.ends_with(".xml")))
        {
            let Some(run) = executed.get(action.label.to_string().as_str()) else {
                continue;
            };
            for out in action.outs.iter().filter(|o| o.ends_with(".xml")) {
                let path = out_root.join(crate::expand::join_path(&action.package, out));
                let small = std::fs::symlink_metadata(&path).is_ok_and(|m| {
                    m.is_file() && m.len() <= crate::gates::reports::MAX_REPORT_BYTES
                });
                let Some(bytes) = small.then(|| std::fs::read(&path).ok()).flatten() else {
                    continue;
                };
                let Ok(Some(suites)) = parse_junit_within(&bytes, &mut budget) else {
                    continue;
                };
                for case in suites.iter().flat_map(|s| s.cases.iter()) {
                    let passed = match case.result {
                        CaseResult::Passed => true,
                        CaseResult::Failed { .. } | CaseResult::Error { .. } => false,
                        CaseResult::Skipped { .. } => continue,
                    };
                    let name = match case.classname.is_empty() {
                        true => case.name.clone(),
                        false => format!("{}.{}", case.classname, case.name),
                    };
                    found.push(CaseRun {
                        label: run.label.clone(),
                        key: run.key,
                        name,
                        passed,
                        finished_at_ms: run.finished_at_ms,
                    });
                }
            }
        }
        self.cases = found;
    }

    /// Writes everything in a few transactions; failures are warnings.
    pub fn save(
        self,
        cache: &Cache,
        hasher: &FileHasher,
        summary: &Summary,
        took: Duration,
        reporter: &Reporter,
    ) {
        let profile = crate::profile::Profile::from_env();
        let warn = |what: &str, e: flow_cache::CacheError| reporter.warn(&format!("{what}: {e}"));
        if let Err(e) = cache.save_file_states(&hasher.take_changed()) {
            warn("cannot save file states", e);
        }
        profile.mark("run: save: file states");
        if let Err(e) = cache.save_keys(&self.key_jsons) {
            warn("cannot save action keys", e);
        }
        profile.mark("run: save: keys");
        if let Some(id) = self.build_id {
            if let Err(e) = cache.record_runs(id, &self.runs) {
                warn("cannot record action history", e);
            }
            if let Err(e) = cache.record_cases(id, &self.workspace, &self.cases) {
                warn("cannot record test cases", e);
            }
        }
        profile.mark("run: save: runs");
        if let Err(e) = cache.touch_actions(&self.hits) {
            warn("cannot update cache use times", e);
        }
        profile.mark("run: save: use times");
        if let Some(id) = self.build_id {
            let outcome = if summary.interrupted {
                "interrupted"
            } else if summary.failed > 0 {
                "failed"
            } else {
                "ok"
            };
            let _ = cache.finish_build(
                id,
                &BuildSummary {
                    outcome: outcome.into(),
                    ran: summary.ran as u64,
                    cached: summary.cached as u64,
                    up_to_date: 0,
                    failed: summary.failed as u64,
                    skipped: summary.skipped as u64,
                    flaky: summary.flaky as u64,
                    duration_ms: took.as_millis() as u64,
                },
            );
        }
    }
}
